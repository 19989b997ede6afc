/**
 * The whole data path of `telematics-agent run`, with real parts only: candump replays through the DBC decoder and the
 * collection rules, the SQLite outbox file, the mutual-TLS uplink to the embedded aedes broker (the default run's
 * fallback; the default run on mosquitto is test/agent/development-broker.test.ts) or to a real mosquitto (TLS, client certificates as usernames, ACL), and the agent as a child process where it has to
 * die (kill -9) or fail at start (exit code).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import Database from 'better-sqlite3';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { RunSummary } from '../../src/agent/agent.js';
import { runAgent } from '../../src/cli/run.js';
import { parseDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { createDevCa, devCaFromPem, issueDeviceCertificate, writeIssued } from '../../src/pki/dev-ca.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { decodeLossNotice } from '../../src/store/loss-notice.js';
import { decodeMessage } from '../../src/uplink/codec.js';
import { AgentProcess, outboxRows, writeConfig } from '../support/agent-process.js';
import { startBroker } from '../support/broker-fixture.js';
import { candumpLine, le16 } from '../support/drive-log.js';
import { freePort, TestPki, type ReceivedMessage } from '../support/mosquitto.js';
import { seededRandom } from '../support/random.js';
import { repoRoot, sharedTestdata } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';
import { identifyNetwork } from '../../src/uplink/network-identity.js';
import { OperatorClient } from '../../src/commands/operator-client.js';

/** The backend's broker identity in a development PKI folder. */
function dev509(certsDir: string): { certFile: string; keyFile: string; caFile: string } {
  return { certFile: path.join(certsDir, 'backend.crt'), keyFile: path.join(certsDir, 'backend.key'), caFile: path.join(certsDir, 'ca.crt') };
}

const ENGINE_DATA = 0x0c8;
const VEHICLE_DYNAMICS = 0x0d0;
/** An identifier the demo DBC does not know: frames that keep a replay alive without feeding any rule. */
const IDLE_ID = 0x7ff;

/** waitFor for conditions that cost something (opening the outbox file): checked every 50 ms, not every 2. */
async function pollUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await delay(50);
  }
}

/** The per-network memory the heartbeat left, read as an operator would with sqlite3. */
function memoryRows(file: string): { network: string; interval_s: number; phase: string }[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[], { network: string; interval_s: number; phase: string }>('SELECT network, interval_s, phase FROM network_heartbeat').all();
  } finally {
    db.close();
  }
}

function decoded(message: ReceivedMessage): ReturnType<typeof decodeMessage> {
  return decodeMessage(message.payload, 'cbor');
}

/** Collects what `run` prints, for the status lines and the summary. */
function capture(): { write(text: string): void; text: string } {
  const out = {
    text: '',
    write(text: string) {
      out.text += text;
    },
  };
  return out;
}

/** A client of the embedded broker with the given certificate; resolves on CONNACK, rejects on the first error. */
function connectClient(url: string, tls: { ca: string; cert: string; key: string }, clientId: string): { client: MqttClient; connected: Promise<void> } {
  const options: IClientOptions = {
    protocolVersion: 4,
    clientId,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ca: readFileSync(tls.ca),
    cert: readFileSync(tls.cert),
    key: readFileSync(tls.key),
    rejectUnauthorized: true,
  };
  const client = mqtt.connect(url, options);
  const connected = new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
    client.once('close', () => reject(new Error('connection closed before CONNACK')));
  });
  return { client, connected };
}

/** A bare TLS 1.2 handshake with a client certificate: 'established', or the error code that ended it. */
function tlsHandshake(port: number, files: { ca: string; cert: string; key: string }): Promise<string> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      maxVersion: 'TLSv1.2',
      ca: readFileSync(files.ca),
      cert: readFileSync(files.cert),
      key: readFileSync(files.key),
    });
    socket.once('secureConnect', () => {
      socket.destroy();
      resolve('established');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/**
 * A candump log of the demo car: one idle frame at t0, then EngineSpeed and VehicleSpeed every `stepS` from
 * t0 + `startS`, then an idle frame at t0 + `idleUntilS` (the replay, paced in real time, lasts until then).
 */
function demoLog(
  file: string,
  t0: number,
  timing: { startS: number; points: number; stepS: number; idleUntilS: number },
  engine: (i: number) => number,
  speed: (i: number) => number,
): void {
  const lines = [candumpLine(t0, IDLE_ID, [0])];
  for (let i = 0; i < timing.points; i++) {
    const ts = t0 + timing.startS + i * timing.stepS;
    // ENGINE_DATA.EngineSpeed: bits 0-15, 0.25 rpm; VEHICLE_DYNAMICS.VehicleSpeed: bits 0-15, 0.01 km/h.
    lines.push(candumpLine(ts, ENGINE_DATA, le16(Math.round(engine(i) * 4))));
    lines.push(candumpLine(ts + 0.0005, VEHICLE_DYNAMICS, le16(Math.round(speed(i) * 100))));
  }
  lines.push(candumpLine(t0 + timing.idleUntilS, IDLE_ID, [0]));
  writeFileSync(file, `${lines.join('\n')}\n`);
}

describe('run: data path', () => {
  it(
    'default setup on aedes: the embedded broker gets the exact replayed values, a retained birth, refuses foreign CAs and foreign topics, and carries commands signed by the development operator',
    { timeout: 30_000 },
    async () => {
      const dir = makeTempDir('dp-embedded-');
      const deviceId = 'demo-vehicle-042';
      const port = await freePort();
      const url = `mqtts://localhost:${port}`;
      const t0 = 1_700_000_000;
      const log = path.join(dir, 'drive.log');
      // 10 frame pairs 100 ms apart, 5 s into the log (time for the backend to subscribe, even on a busy machine), then
      // 60 s of nothing: the run stays up until the test aborts it (a replay that ended would end the run before the
      // messages went out).
      const startS = 5;
      demoLog(
        log,
        t0,
        { startS, points: 10, stepS: 0.1, idleUntilS: 60 },
        (i) => 800 + 100 * i,
        (i) => 12.5 * i,
      );

      const config = parseDeviceConfig(
        {
          deviceId,
          buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, strictDbc: true, source: { type: 'replay', file: log } }],
          collection: {
            batch: { maxSamples: 5, maxDelayMs: 5000 },
            format: 'cbor',
            rules: [{ name: 'drive', mode: 'change', priority: 3, signals: ['EngineSpeed', 'VehicleSpeed'] }],
          },
          outbox: { path: 'var/outbox.db', writeIntervalMs: 100 },
          // aedes, the fallback without mosquitto (MQTT 3.1.1).
          uplink: { url, embeddedBroker: 'aedes', certsDir: 'certs' },
          // No caFile: the development command CA made at start, in certsDir.
          commands: { replayDbPath: 'var/commands.db' },
        },
        { file: 'embedded.json', baseDir: dir },
      );
      const certsDir = path.join(dir, 'certs');
      const warnings: string[] = [];
      let brokerListening!: () => void;
      const listening = new Promise<void>((resolve) => (brokerListening = resolve));
      const stop = new AbortController();
      const output = capture();
      const run = runAgent({
        config,
        signal: stop.signal,
        output,
        warn: (message) => {
          warnings.push(message);
          if (message.startsWith('broker: aedes')) brokerListening();
        },
      });
      await Promise.race([listening, run.then(() => assert.fail(`the run ended before its broker listened: ${warnings.join('\n')}`))]);
      // The run made the development PKI: the backend uses the certificate it wrote there.
      assert.equal(warnings[0], `created a development CA in ${certsDir} (for the embedded broker; not for production)`);
      assert.equal(warnings[1], `created a development backend CA in ${certsDir} (for the embedded broker; not for production)`);
      assert.equal(warnings[2], `created a development command CA and operator 'ops-dev' in ${certsDir} (not for production)`);
      // [17.mqtt5] The backend has its own listener, as on the fleet broker.
      const started = new RegExp(
        `^broker: aedes \\d+\\.\\d+\\.\\d+ \\(in-process\\) on ${url} \\(cars\\) and mqtts://localhost:(\\d+) \\(backend, certificates in ${certsDir}\\), MQTT 3\\.1\\.1$`,
      ).exec(warnings[3]!);
      assert.ok(started, warnings[3]);
      const backendPort = Number(started[1]);
      const backendUrl = `mqtts://localhost:${backendPort}`;
      // [14.L4] A folder of CA keys, made by the first run: its owner's alone, whatever the umask.
      assert.equal(statSync(certsDir).mode & 0o777, 0o700);
      const ca = path.join(certsDir, 'ca.crt');
      const backendTls = { ca, cert: path.join(certsDir, 'backend.crt'), key: path.join(certsDir, 'backend.key') };

      const clients: MqttClient[] = [];
      try {
        const backend = connectClient(backendUrl, backendTls, 'backend-live');
        clients.push(backend.client);
        await backend.connected;
        const received: ReceivedMessage[] = [];
        backend.client.on('message', (topic, payload, packet) => received.push({ topic, payload, retain: packet.retain, qos: packet.qos }));
        await backend.client.subscribeAsync('vehicles/#', { qos: 1 });

        // 20 samples (each value changes every frame), 5 per message: 4 telemetry messages.
        const telemetry = (): ReceivedMessage[] => received.filter((m) => m.topic === `vehicles/${deviceId}/telemetry`);
        await waitFor(() => telemetry().length >= 4, `4 telemetry messages (got ${telemetry().length}; ${warnings.join('; ')})`, 10_000);
        const messages = telemetry().map(decoded);
        const seqs = messages.map((m) => m.header.seq);
        for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! > seqs[i - 1]!, `seq increases: ${seqs.join(', ')}`);
        for (const { header, samples } of messages) {
          assert.equal(header.deviceId, deviceId);
          assert.equal(header.kind, 'telemetry');
          assert.equal(header.priority, 3);
          assert.equal(samples.length, 5);
          assert.ok(Math.abs(header.createdAt - Date.now()) < 60_000, `createdAt ${header.createdAt} is now`);
        }
        // Every value exactly as replayed, at its frame's log timestamp (to the µs).
        const all = messages.flatMap((m) => m.samples);
        const series = (name: string): Array<[number, number]> =>
          all.filter((s) => s.signal === name).map((s) => [Math.round((s.ts - t0) * 1e6), s.value as number]);
        assert.deepEqual(
          series('can0.ENGINE_DATA.EngineSpeed'),
          Array.from({ length: 10 }, (_, i) => [startS * 1e6 + i * 100_000, 800 + 100 * i]),
        );
        assert.deepEqual(
          series('can0.VEHICLE_DYNAMICS.VehicleSpeed').map(([ts, v]) => [ts, Math.round(v * 100) / 100]),
          Array.from({ length: 10 }, (_, i) => [startS * 1e6 + 500 + i * 100_000, 12.5 * i]),
        );
        assert.equal(all.length, 20);

        // The birth is retained: a client subscribing now still gets it, flagged as retained.
        const late = connectClient(backendUrl, backendTls, 'backend-late');
        clients.push(late.client);
        await late.connected;
        const status: ReceivedMessage[] = [];
        late.client.on('message', (topic, payload, packet) => status.push({ topic, payload, retain: packet.retain, qos: packet.qos }));
        await late.client.subscribeAsync(`vehicles/${deviceId}/status`, { qos: 1 });
        await waitFor(() => status.length >= 1, 'the retained birth', 5000);
        assert.equal(status[0]!.retain, true);
        const birth = JSON.parse(status[0]!.payload.toString('utf8')) as { online: boolean; birthSeq: number; ts: number };
        assert.equal(birth.online, true);
        assert.ok(Number.isInteger(birth.birthSeq) && birth.birthSeq >= 1, `birthSeq ${birth.birthSeq}`);
        assert.ok(Math.abs(birth.ts - Date.now()) < 60_000);

        // A certificate from another CA, even one naming this very device, does not get past the TLS handshake.
        const otherCaDir = path.join(dir, 'other-ca');
        const otherCa = createDevCa({ commonName: 'someone else' });
        const forged = writeIssued(otherCaDir, deviceId, issueDeviceCertificate(otherCa, deviceId));
        const intruderTls = connectClient(url, { ca, cert: forged.certFile, key: forged.keyFile }, 'forged');
        clients.push(intruderTls.client);
        const refusal = await intruderTls.connected.then(
          () => assert.fail('a certificate from a foreign CA was accepted'),
          (err: unknown) => err as Error & { code?: string },
        );
        assert.match(`${refusal.code ?? ''} ${refusal.message}`, /unknown ca|certificate|ECONNRESET|closed before CONNACK/i);
        // Under TLS 1.3 the client cannot tell the handshake failed (the server checks its certificate after the client
        // is done); under TLS 1.2 it can: the foreign certificate never gets a session, the run's own one does.
        assert.equal(await tlsHandshake(port, { ca, cert: forged.certFile, key: forged.keyFile }), 'ECONNRESET');
        assert.equal(await tlsHandshake(backendPort, backendTls), 'established');
        // [17.mqtt5] Each listener trusts one CA, as the fleet broker's: the backend's certificate is no car's.
        assert.equal(await tlsHandshake(port, backendTls), 'ECONNRESET');

        // Another device of the same CA may publish its own topics, and not this device's: aedes (MQTT 3.1.1, no
        // reason codes) answers the refused PUBLISH by closing the connection, without a PUBACK.
        const dev = devCaFromPem(readFileSync(ca, 'utf8'), readFileSync(path.join(certsDir, 'ca.key'), 'utf8'));
        const other = writeIssued(path.join(dir, 'other-device'), 'truck-007', issueDeviceCertificate(dev, 'truck-007'));
        const neighbour = connectClient(url, { ca, cert: other.certFile, key: other.keyFile }, 'truck-007');
        clients.push(neighbour.client);
        await neighbour.connected;
        await neighbour.client.publishAsync('vehicles/truck-007/telemetry', 'own topic', { qos: 1 });
        await waitFor(() => received.some((m) => m.payload.toString() === 'own topic'), "the neighbour's own message", 5000);
        let closed = false;
        neighbour.client.on('close', () => (closed = true));
        neighbour.client.on('error', () => undefined);
        let acked = false;
        neighbour.client.publish(`vehicles/${deviceId}/telemetry`, 'forged telemetry', { qos: 1 }, (err) => {
          if (!err) acked = true;
        });
        await waitFor(() => closed, 'the broker to close the connection of a device publishing to another device', 5000);
        await delay(200);
        assert.equal(acked, false, 'a refused publish is not acknowledged');
        assert.equal(received.filter((m) => m.payload.toString() === 'forged telemetry').length, 0, 'the backend never sees it');

        // A command as `telematics-ops send --certs-dir` sends it: the backend identity on the backend listener, the
        // development operator, MQTT 3.1.1 (aedes refuses 5; the client falls back), the result on the command's own
        // result topic.
        const ops = await OperatorClient.connect({ url: backendUrl, ...dev509(certsDir) });
        try {
          const operator = {
            certPem: readFileSync(path.join(certsDir, 'ops-dev.crt'), 'utf8'),
            keyPem: readFileSync(path.join(certsDir, 'ops-dev.key'), 'utf8'),
          };
          const outcome = await ops.send({ deviceId, name: 'ping', params: { echo: 'dev' } }, operator, { timeoutMs: 10_000 });
          assert.deepEqual(
            outcome.results.map((r) => r.status),
            ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED'],
          );
          assert.equal((outcome.final!.detail as { echo: string }).echo, 'dev');
          assert.ok(
            received.some((m) => m.topic === `vehicles/${deviceId}/commands/${outcome.id}/result`),
            'on the 3.1.1 result topic',
          );

          // The development signer answers on the backend listener: rotateCertificate works in the default run.
          const certFile = path.join(certsDir, `${deviceId}.crt`);
          const before = readFileSync(certFile, 'utf8');
          const rotated = await ops.send({ deviceId, name: 'rotateCertificate' }, operator, { timeoutMs: 20_000 });
          assert.equal(rotated.final?.status, 'SUCCEEDED', JSON.stringify(rotated.results));
          assert.notEqual(readFileSync(certFile, 'utf8'), before);
          assert.ok(
            received.some((m) => m.topic === `vehicles/${deviceId}/csr`),
            'the request went through the broker',
          );
          const again = await ops.send({ deviceId, name: 'ping' }, operator, { timeoutMs: 10_000 });
          assert.equal(again.final?.status, 'SUCCEEDED', 'connected with the new certificate');
        } finally {
          await ops.close();
        }
      } finally {
        for (const client of clients) await client.endAsync(true).catch(() => undefined);
        stop.abort();
      }
      const summary: RunSummary = await run;
      const d = summary.dataPath!;
      // 4 telemetry messages; published, those and the command results: 3 per ping, 6 for the rotation (its
      // IN_PROGRESS steps), more if some in flight at the reconnection went twice.
      assert.equal(d.samples, 20);
      assert.equal(d.messages, 4);
      assert.ok(d.published >= 16, `${d.published} published`);
      assert.equal(d.buffered, 0);
      assert.equal(d.uplink!.url, url);
      assert.match(output.text, new RegExp(`data: 20 samples in 4 messages, \\d+ published to ${url.replace(/[.:/]/g, '\\$&')}, 0 buffered\n$`));
      assert.ok(existsSync(path.join(certsDir, `${deviceId}.crt`)) && existsSync(path.join(certsDir, 'server.crt')));
    },
  );

  it('kill -9 at 20 random moments of a drain to mosquitto: every committed message reaches the backend', { timeout: 120_000 }, async (t) => {
    const dbc = sharedTestdata('dbc', 'css_j1939_demo.dbc');
    const truckLog = sharedTestdata('logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
    // Required data, not optional: without it this test would prove nothing, so it fails and says where it looked.
    assert.ok(existsSync(dbc) && existsSync(truckLog), `shared test data missing: ${dbc}, ${truckLog} (expected in ../shared beside ${repoRoot})`);
    const dir = makeTempDir('dp-kill-');
    const deviceId = 'truck-001';
    const outboxFile = path.join(dir, 'outbox.db');
    const bus = (speed: number) => ({ name: 'can0', dbc, j1939: true, source: { type: 'replay', file: truckLog, speed } });

    // Phase 1, offline: the 127 s truck log at 50× through a 1 ms periodic rule, 5 samples per message: ~2500 small
    // messages committed; the run ends with the log (and commits its last batches).
    const fill = writeConfig(dir, 'fill', {
      deviceId,
      buses: [bus(50)],
      collection: {
        batch: { maxSamples: 5, maxDelayMs: 1000 },
        rules: [
          { name: 'engine', mode: 'periodic', intervalMs: 1, priority: 3, signals: ['EngineSpeed'] },
          { name: 'speed', mode: 'change', priority: 5, signals: ['WheelBasedVehicleSpeed'] },
        ],
      },
      outbox: { path: outboxFile, writeIntervalMs: 200 },
    });
    const filling = AgentProcess.start(fill);
    const filled = await filling.exited;
    assert.equal(filled.code, 0, filling.stderr);
    const initial = outboxRows(outboxFile);
    const messagesLine = /data: (\d+) samples in (\d+) messages, (\d+) buffered/.exec(filling.stdout);
    assert.ok(messagesLine, filling.stdout);
    assert.equal(initial.length, Number(messagesLine[2]));
    assert.ok(initial.length > 2000, `${initial.length} messages in the outbox`);

    // Phase 2: mosquitto and a backend with a persistent QoS 1 session.
    const fleet = await startBroker();
    const { pki, broker, backend } = fleet;
    const agents: AgentProcess[] = [];
    t.after(async () => {
      // A failed assertion must not leave an agent running (and the test process waiting for it).
      for (const agent of agents) await agent.stop('SIGKILL');
      await fleet.close();
    });
    const maxInflight = 8;
    // 100 messages/s with a bucket of 36: a drain takes ~25 s, so each kill lands in the middle of one. The speed
    // rule keeps committing a message now and then, so kills also hit appends sharing the file with the drain.
    const drainConfig = (name: string, throttle: object) =>
      writeConfig(dir, name, {
        deviceId,
        buses: [bus(1)],
        collection: {
          batch: { maxSamples: 5, maxDelayMs: 1000 },
          rules: [{ name: 'speed', mode: 'change', priority: 5, signals: ['WheelBasedVehicleSpeed'] }],
        },
        outbox: { path: outboxFile, writeIntervalMs: 200 },
        uplink: { url: broker.url, ...pki.identityFiles(deviceId), maxInflight, reconnect: { initialMs: 100, maxMs: 500 }, throttle },
      });
    const drain = drainConfig('drain', { messagesPerHour: 360_000, burstFraction: 0.0001 });
    const telemetrySeqs = (): number[] => backend.on(deviceId, 'telemetry').map((m) => decoded(m).header.seq);

    const random = seededRandom(20240611);
    const committed = new Set<number>(initial.map((r) => r.seq));
    /** Messages the backend already had that were still in the file after a kill, so they must come again. */
    const mustComeAgain = new Set<number>();
    let resendsAtKills = 0;
    const kills: string[] = [];
    for (let k = 0; k < 20; k++) {
      const agent = AgentProcess.start(drain);
      agents.push(agent);
      // Timed from the connection, not the spawn: node's start-up (~0.5 s) would otherwise swallow most kills.
      const spawned = performance.now();
      await agent.waitForStderr(/uplink: connected to /);
      const connectMs = performance.now() - spawned;
      const waitMs = 100 + Math.floor(random() * 1400);
      await delay(waitMs);
      const { signal } = await agent.stop('SIGKILL');
      assert.equal(signal, 'SIGKILL');
      // What the dead agent had on the wire reaches the backend within a few ms on loopback.
      await delay(150);
      const rows = outboxRows(outboxFile);
      const had = new Set(telemetrySeqs());
      const resends = rows.filter((r) => had.has(r.seq));
      for (const row of resends) mustComeAgain.add(row.seq);
      resendsAtKills += resends.length;
      assert.ok(resends.length <= maxInflight, `kill ${k + 1}: ${resends.length} messages the backend had were still in the file (window ${maxInflight})`);
      for (const row of rows) committed.add(row.seq);
      kills.push(`connected after ${connectMs.toFixed(0)} ms, killed ${waitMs} ms later: ${rows.length} left, ${resends.length} to resend`);
    }
    const receivedBeforeFinal = new Set(telemetrySeqs()).size;
    assert.ok(receivedBeforeFinal > 500, `the killed runs drained something (${receivedBeforeFinal})`);

    // The last run drains everything, unthrottled (the kills are over; only the outcome matters now).
    const drainStarted = performance.now();
    const last = AgentProcess.start(drainConfig('final', {}));
    agents.push(last);
    await pollUntil(() => outboxRows(outboxFile).length === 0, 30_000, 'the outbox to empty');
    assert.equal((await last.stop('SIGTERM')).code, 0, last.stderr);
    const finalDrainS = (performance.now() - drainStarted) / 1000;

    const seqs = telemetrySeqs();
    const unique = new Set(seqs);
    const notReceived = (): number[] => {
      const received = new Set(telemetrySeqs());
      return [...committed].filter((s) => !received.has(s));
    };
    // The backend may still be taking the last PUBLISHes; give it a moment, then say what is missing if anything.
    await waitFor(() => notReceived().length === 0, 'every committed message at the backend', 5000).catch(() => undefined);
    const missing = notReceived();
    assert.deepEqual(missing, [], `${missing.length} of ${committed.size} committed messages never reached the backend`);
    for (const row of initial) assert.ok(unique.has(row.seq));

    const counts = new Map<number, number>();
    for (const s of telemetrySeqs()) counts.set(s, (counts.get(s) ?? 0) + 1);
    const duplicated = [...counts].filter(([, n]) => n > 1);
    const duplicates = duplicated.reduce((sum, [, n]) => sum + n - 1, 0);
    // Duplicates only ever come from kills: messages in flight, or acknowledged but not yet deleted (the publisher
    // counts those against its window). Each such message was in the file at a kill.
    for (const [seq] of duplicated) assert.ok(committed.has(seq), `duplicate ${seq} was never in the file at a kill`);
    // Each message received and still in the file at a kill came again; and a kill re-sends at most the in-flight
    // window, as the issue requires.
    for (const seq of mustComeAgain) assert.ok(counts.get(seq)! >= 2, `message ${seq} was acknowledged before a kill, kept in the file, and never sent again`);
    assert.ok(
      duplicates <= kills.length * maxInflight,
      `${duplicates} duplicates after ${kills.length} kills; at most ${maxInflight} (the in-flight window) per kill`,
    );
    t.diagnostic(
      `final drain ${finalDrainS.toFixed(1)} s; ${initial.length} messages filled; ${committed.size} seen committed at kills; ${unique.size} received, ${duplicates} duplicates ` +
        `(${mustComeAgain.size} acknowledged but not yet deleted at a kill, ${resendsAtKills} summed over kills); kills: ${kills.join(' | ')}`,
    );
  });

  it('broker down, then up: the outbox fills, then drains in order per priority, highest priority first, and ends empty', { timeout: 30_000 }, async (t) => {
    const dir = makeTempDir('dp-down-up-');
    const deviceId = 'car-down-up';
    const fleet = await startBroker();
    const { pki, broker, backend } = fleet;
    t.after(() => fleet.close());
    await broker.stop();

    const log = path.join(dir, 'drive.log');
    // 3 s of data (100 frame pairs per second), then idle until 6 s: the run ends by itself once it has drained.
    demoLog(
      log,
      1_700_000_000,
      { startS: 1, points: 300, stepS: 0.01, idleUntilS: 6 },
      (i) => 800 + i,
      (i) => i / 10,
    );
    const outboxFile = path.join(dir, 'outbox.db');
    const config = parseDeviceConfig(
      {
        deviceId,
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: log } }],
        status: { intervalMs: 100, signals: [] },
        collection: {
          // Batches close by count only (a wall-clock delay would close a short one when a loaded machine stalls
          // the run, and the counts below are exact): 5 samples each.
          batch: { maxSamples: 5, maxDelayMs: 60_000 },
          rules: [
            { name: 'engine', mode: 'periodic', intervalMs: 20, priority: 3, signals: ['EngineSpeed'] },
            { name: 'speed', mode: 'change', priority: 6, signals: ['VehicleSpeed'] },
          ],
        },
        outbox: { path: outboxFile, writeIntervalMs: 100 },
        uplink: { url: broker.url, ...pki.identityFiles(deviceId), maxInflight: 8, reconnect: { initialMs: 100, maxMs: 300 } },
      },
      { file: 'down-up.json', baseDir: dir },
    );
    const output = capture();
    const warnings: string[] = [];
    const run = runAgent({ config, output, warn: (m) => warnings.push(m) });
    const buffered = (): number[] =>
      [...output.text.matchAll(/uplink (?:connecting|disconnected), heartbeat 60 s \(learning\), 0 published, (\d+) buffered/g)].map((m) => Number(m[1]));
    await waitFor(() => buffered().filter((n) => n > 0).length >= 3 && buffered().at(-1)! >= 30, `the status to show a growing outbox:\n${output.text}`, 5000);
    const shown = buffered().filter((n) => n > 0);
    for (let i = 1; i < shown.length; i++) assert.ok(shown[i]! >= shown[i - 1]!, `buffered grows: ${shown.join(', ')}`);
    assert.ok(shown.at(-1)! > shown[0]!, `buffered grows: ${shown.join(', ')}`);
    assert.equal(backend.on(deviceId, 'telemetry').length, 0);
    assert.ok(
      warnings.some((w) => /^uplink: disconnected \(.*\), retrying in \d+\.\d s$/.test(w)),
      warnings.join('\n'),
    );

    const backlog = outboxRows(outboxFile);
    await broker.start();
    const summary = await run;
    await backend.waitFor(() => backend.on(deviceId, 'telemetry').length >= summary.dataPath!.messages, 'every message', 5000);

    const d = summary.dataPath!;
    // 150 engine samples (every 20 ms for 3 s) and 300 speed changes, 5 per message.
    assert.equal(d.samples, 450);
    assert.equal(d.messages, 90);
    assert.equal(d.published, 90);
    assert.equal(d.buffered, 0);
    assert.equal(outboxRows(outboxFile).length, 0);
    const received = backend.on(deviceId, 'telemetry').map((m) => decoded(m).header);
    assert.equal(received.length, 90, 'each message once: the broker was never lost mid-flight');
    for (const priority of [3, 6]) {
      const seqs = received.filter((h) => h.priority === priority).map((h) => h.seq);
      assert.equal(seqs.length, priority === 3 ? 30 : 60);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => a - b),
        `priority ${priority} in seq order`,
      );
    }
    // The backlog goes out highest priority first: its priority 6 messages all before its first priority 3 one.
    const inBacklog = new Set(backlog.map((r) => r.seq));
    const backlogOrder = received.filter((h) => inBacklog.has(h.seq)).map((h) => h.priority);
    assert.ok(backlog.length >= 10 && backlog.some((r) => r.priority === 3) && backlog.some((r) => r.priority === 6), `backlog ${JSON.stringify(backlog)}`);
    assert.deepEqual(
      backlogOrder,
      [...backlogOrder].sort((a, b) => b - a),
      `backlog order by priority: ${backlogOrder.join(',')}`,
    );
    assert.equal(backlogOrder.length, backlog.length);
    assert.ok(warnings.includes(`uplink: connected to ${broker.url}`), warnings.join('\n'));
  });

  it('the adaptive heartbeat in the status line, the warnings, the summary and the per-network memory beside the outbox', { timeout: 30_000 }, async (t) => {
    const dir = makeTempDir('dp-heartbeat-');
    const deviceId = 'car-heartbeat';
    const fleet = await startBroker({ backend: false });
    const { pki, broker } = fleet;
    t.after(() => fleet.close());
    const log = path.join(dir, 'drive.log');
    // Half a second of data, then idle until 11 s: the heartbeat learns while the car is idle (1 + 2 + 4 s of
    // heartbeats and the settling, with room for late timers).
    demoLog(
      log,
      1_700_000_000,
      { startS: 0.2, points: 30, stepS: 0.01, idleUntilS: 11 },
      (i) => 800 + i,
      (i) => i / 10,
    );
    const config = parseDeviceConfig(
      {
        deviceId,
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: log } }],
        status: { intervalMs: 100, signals: [] },
        collection: {
          batch: { maxSamples: 100, maxDelayMs: 100 },
          rules: [{ name: 'engine', mode: 'periodic', intervalMs: 20, priority: 3, signals: ['EngineSpeed'] }],
        },
        outbox: { path: path.join(dir, 'outbox.db'), writeIntervalMs: 100 },
        uplink: {
          url: broker.url,
          ...pki.identityFiles(deviceId),
          keepalive: { minIntervalS: 1, initialIntervalS: 1, maxIntervalS: 4, stepFactor: 2, holdCycles: 1 },
        },
      },
      { file: 'heartbeat.json', baseDir: dir },
    );
    const output = capture();
    const warnings: string[] = [];
    const summary = await runAgent({ config, output, warn: (m) => warnings.push(m) });

    const shown = [...new Set([...output.text.matchAll(/uplink connected, (heartbeat [^,]+), \d+ published/g)].map((m) => m[1]))];
    // The second interval is twice the idle time measured, so 2.0 s or, after a late timer, a little more.
    assert.equal(shown.length, 4, shown.join(' | '));
    assert.equal(shown[0], 'heartbeat 1.0 s (learning)');
    assert.match(shown[1]!, /^heartbeat 2\.\d s \(learning\)$/);
    assert.deepEqual(shown.slice(2), ['heartbeat 4.0 s (learning)', 'heartbeat 4.0 s']);
    const changes = warnings.filter((w) => w.startsWith('uplink: heartbeat '));
    assert.equal(changes.length, 3, warnings.join('\n'));
    // The network is this machine's default-route interface (systeminformation), as a car's would be.
    const network = await identifyNetwork();
    const on = network.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    assert.match(changes[0]!, new RegExp(`^uplink: heartbeat 1 s -> 2(\\.\\d+)? s on ${on} \\(survived, probe\\)$`));
    assert.match(changes[2]!, new RegExp(`^uplink: heartbeat 4 s -> 4 s on ${on} \\(settled, settled\\)$`));
    const heartbeat = summary.dataPath!.uplink!.heartbeat!;
    assert.equal(heartbeat.intervalS, 4);
    assert.equal(heartbeat.phase, 'settled');
    assert.equal(heartbeat.network, network);
    assert.equal(heartbeat.deadLinks, 0);
    assert.equal(heartbeat.lastDeadLink, null);
    assert.ok(heartbeat.heartbeats >= 3);
    assert.deepEqual(
      heartbeat.history.map((h) => h.reason),
      ['survived', 'survived', 'settled'],
    );
    assert.ok(heartbeat.rttMs !== null && heartbeat.livenessTimeoutMs === 5000);
    assert.match(broker.log, new RegExp(`as ${deviceId} \\(p5, c0, k4,`));
    const memory = memoryRows(path.join(dir, 'link-memory.db'));
    assert.deepEqual(memory, [{ network, interval_s: 4, phase: 'settled' }]);
  });

  it('a corrupt outbox file is moved aside with a clear warning; the run goes on and publishes', { timeout: 30_000 }, async (t) => {
    const dir = makeTempDir('dp-corrupt-');
    const deviceId = 'car-corrupt';
    const fleet = await startBroker();
    const { pki, broker, backend } = fleet;
    t.after(() => fleet.close());
    const outboxFile = path.join(dir, 'var', 'outbox.db');
    const garbage = Buffer.from('this is not an SQLite database, just what a bad flash block left behind\n'.repeat(100));
    mkdirSync(path.dirname(outboxFile), { recursive: true });
    writeFileSync(outboxFile, garbage);

    const log = path.join(dir, 'drive.log');
    demoLog(
      log,
      1_700_000_000,
      { startS: 0.5, points: 50, stepS: 0.02, idleUntilS: 3 },
      (i) => 1000 + 10 * i,
      (i) => i,
    );
    const config: DeviceConfig = parseDeviceConfig(
      {
        deviceId,
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: log } }],
        // Batches of exactly 10 samples, closed by count only (a wall-clock delay would split one on a loaded machine).
        collection: { batch: { maxSamples: 10, maxDelayMs: 60_000 }, rules: [{ name: 'engine', mode: 'change', signals: ['EngineSpeed'] }] },
        outbox: { path: outboxFile, writeIntervalMs: 100 },
        uplink: { url: broker.url, ...pki.identityFiles(deviceId) },
      },
      { file: 'corrupt.json', baseDir: dir },
    );
    const warnings: string[] = [];
    const summary = await runAgent({ config, output: capture(), warn: (m) => warnings.push(m) });

    const aside = readdirSync(path.dirname(outboxFile)).filter((f) => f.startsWith('outbox.db.corrupt-'));
    assert.equal(aside.length, 1, readdirSync(path.dirname(outboxFile)).join(', '));
    assert.match(aside[0]!, /^outbox\.db\.corrupt-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/);
    const asideFile = path.join(path.dirname(outboxFile), aside[0]!);
    assert.deepEqual(readFileSync(asideFile), garbage, 'the damaged file is kept as it was, for a post-mortem');
    assert.equal(
      warnings[0],
      `outbox: ${outboxFile} is corrupt or not a database (SQLITE_NOTADB: file is not a database); moved it aside as ${asideFile} and started an empty outbox`,
    );
    const d = summary.dataPath!;
    assert.equal(d.outbox.corruptFilesMovedAside, 1);
    assert.equal(d.samples, 50);
    assert.equal(d.messages, 5);
    // [17.seq] The 5 messages, and the loss notice of whatever the damaged file held.
    assert.equal(d.published, 6);
    assert.equal(d.buffered, 0);
    await backend.waitFor(() => backend.on(deviceId, 'telemetry').length >= 5, 'the 5 messages', 5000);
    const values = backend.on(deviceId, 'telemetry').flatMap((m) => decoded(m).samples.map((s) => s.value));
    assert.deepEqual(
      values,
      Array.from({ length: 50 }, (_, i) => 1000 + 10 * i),
    );
    await backend.waitFor(() => backend.on(deviceId, 'loss').length === 1, 'the loss notice', 5000);
    const notice = decodeLossNotice(backend.on(deviceId, 'loss')[0]!.payload);
    // With no sidecar, nothing is known of what the file held: every number below the new file's first may be gone.
    assert.deepEqual(notice.lost, [{ first: 1, last: notice.seq - 1, count: notice.seq - 1, reason: 'outbox-lost', exact: false }]);
    assert.deepEqual(
      backend.on(deviceId, 'telemetry').map((m) => decoded(m).header.seq),
      [1, 2, 3, 4, 5].map((i) => notice.seq + i),
      'the telemetry numbered on from the notice',
    );
  });

  it(
    "a bad identity fails the run at start, naming the file: missing key, another device's certificate, expired certificate",
    { timeout: 30_000 },
    async () => {
      const dir = makeTempDir('dp-identity-');
      const deviceId = 'truck-001';
      const pki = new TestPki();
      const own = pki.identityFiles(deviceId);
      const port = await freePort();
      const expired = writeIssued(
        dir,
        'expired',
        issueDeviceCertificate(pki.ca, deviceId, { notBefore: new Date(Date.now() - 400 * 86_400_000), notAfter: new Date(Date.now() - 30 * 86_400_000) }),
      );
      const someoneElse = pki.client('truck-999');
      const missingKey = path.join(dir, 'nowhere', 'truck-001.key');
      const cases: Array<{ name: string; files: { certFile: string; keyFile: string; caFile: string }; expected: RegExp }> = [
        { name: 'missing-key', files: { ...own, keyFile: missingKey }, expected: new RegExp(`private key ${escape(missingKey)}: no such file`) },
        {
          name: 'other-device',
          files: { ...someoneElse, caFile: pki.caFile },
          expected: new RegExp(`the certificate ${escape(someoneElse.certFile)} is for 'truck-999', not for device 'truck-001'`),
        },
        {
          name: 'expired',
          files: { ...expired, caFile: pki.caFile },
          expected: new RegExp(`client certificate ${escape(expired.certFile)}: expired on \\d{4}-\\d\\d-\\d\\dT`),
        },
      ];
      const log = path.join(dir, 'drive.log');
      demoLog(
        log,
        1_700_000_000,
        { startS: 0.5, points: 20, stepS: 0.01, idleUntilS: 2 },
        (i) => 900 + i,
        (i) => i,
      );
      await Promise.all(
        cases.map(async ({ name, files, expected }) => {
          const file = writeConfig(dir, name, {
            deviceId,
            buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: log } }],
            collection: { rules: [{ name: 'engine', mode: 'change', signals: ['EngineSpeed'] }] },
            outbox: { path: path.join(dir, `${name}.db`) },
            uplink: { url: `mqtts://localhost:${port}`, ...files },
          });
          const agent = AgentProcess.start(file);
          const { code } = await agent.exited;
          assert.equal(code, 1, `${name}: ${agent.stderr}`);
          // Besides the log's JSON lines (debug, in the verbose start: nothing at warn or above), one line: the failure.
          const all = agent.stderr.trimEnd().split('\n');
          const lines = all.filter((line) => !line.startsWith('{'));
          for (const line of all.filter((l) => l.startsWith('{'))) assert.equal((JSON.parse(line) as { level: string }).level, 'debug', line);
          assert.equal(lines.length, 1, `${name}: one line on stderr: ${agent.stderr}`);
          assert.match(lines[0]!, /^telematics-agent: /);
          assert.match(lines[0]!, expected, name);
          // Nothing was read: the identity is checked before the sources start.
          assert.equal(agent.stdout, '', `${name}: ${agent.stdout}`);
        }),
      );
    },
  );
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
