/**
 * The reference decoder as the package's entry point (`import('telematics-agent')` from a folder that has the package
 * in its node_modules), and `telematics-ops watch` against a real mosquitto: a car (its certificate, the agent's own
 * codec) publishes, watch prints each message decoded, as text or JSON lines, and a shared subscription splits the
 * messages among three watchers, each message to exactly one. Then the same against the default run itself (the
 * shipped config, the mosquitto it starts, `--certs-dir` as the README has it): its telemetry printed decoded, and its
 * stream split by `--share` among three watchers exactly as a plain subscriber receives it.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pathToFileURL } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import { encodeMessage } from '../../src/uplink/codec.js';
import type { MessageHeader, Sample } from '../../src/collect/sample.js';
import { AgentProcess } from '../support/agent-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { contractChecker } from '../support/contract.js';
import { brokerLine, DEFAULT_DEVICE, defaultRunConfig, defaultRunPki } from '../support/default-run.js';
import { mosquittoPath } from '../support/mosquitto.js';
import { startWatch, type Watcher } from '../support/ops-watch.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

const DEVICE = 'car-1';

function telemetryPayload(seq: number, format: 'cbor' | 'json' = 'cbor'): Uint8Array {
  const header: MessageHeader = { deviceId: DEVICE, seq, kind: 'telemetry', priority: 3, createdAt: 1_767_225_600_000 + seq };
  const samples: Sample[] = [
    { ts: 1_767_225_599.5, signal: 'can0.EEC1.EngineSpeed', value: 1520.5 },
    { ts: 1_767_225_599.6, signal: 'can0.CCVS1.WheelBasedVehicleSpeed', value: 52.3 },
    { ts: 1_767_225_599.7, signal: 'can0.EEC1.EngineSpeed', value: 1530 },
    { ts: 1_767_225_599.8, signal: 'can0.ETC2.TransmissionCurrentGear', value: 'D\u001b[2J' },
  ];
  return encodeMessage(header, samples, format);
}

const RESULT = {
  deviceId: DEVICE,
  id: 'cmd-1',
  command: 'ping',
  ts: 1_767_225_600_000,
  seq: 7,
  status: 'REJECTED',
  reason: 'expired',
  message: 'expired before it arrived',
  detail: { issuedAt: 1, expiresAt: 2, deviceTime: 3 },
};
const STATUS = { online: true, birthSeq: 1_767_225_600_000, ts: 1_767_225_600_000 };

describe('[17.watch] the reference decoder, as the package', () => {
  it("[17.watch] import('telematics-agent') decodes a real binary telemetry payload, a result and a status, and names the topic and field of a message off the contract", async () => {
    const dir = makeTempDir('decoder-consumer-');
    mkdirSync(path.join(dir, 'node_modules'));
    symlinkSync(repoRoot, path.join(dir, 'node_modules', 'telematics-agent'), 'dir');
    writeFileSync(path.join(dir, 'consumer.mjs'), "export * from 'telematics-agent';\n");
    type Decoder = typeof import('../../src/contract/decoder.js');
    const pkg = (await import(pathToFileURL(path.join(dir, 'consumer.mjs')).href)) as Decoder;

    const telemetry = pkg.decodeAgentMessage(`vehicles/${DEVICE}/telemetry`, telemetryPayload(42));
    assert.equal(telemetry.kind, 'telemetry');
    assert.equal(telemetry.deviceId, DEVICE);
    assert.ok(telemetry.kind === 'telemetry');
    assert.equal(telemetry.format, 'cbor');
    assert.deepEqual(
      { ...telemetry.message, samples: telemetry.message.samples.map((s) => [s.signal, s.value]) },
      {
        deviceId: DEVICE,
        seq: 42,
        kind: 'telemetry',
        priority: 3,
        createdAt: 1_767_225_600_042,
        samples: [
          ['can0.EEC1.EngineSpeed', 1520.5],
          ['can0.EEC1.EngineSpeed', 1530],
          ['can0.CCVS1.WheelBasedVehicleSpeed', 52.3],
          ['can0.ETC2.TransmissionCurrentGear', 'D\u001b[2J'],
        ],
      },
    );
    const json = pkg.decodeAgentMessage(`vehicles/${DEVICE}/telemetry`, telemetryPayload(43, 'json'));
    assert.ok(json.kind === 'telemetry' && json.format === 'json' && json.message.seq === 43);

    const result = pkg.decodeAgentMessage(`vehicles/${DEVICE}/commands/cmd-1/result`, Buffer.from(JSON.stringify(RESULT)));
    assert.deepEqual(result, { deviceId: DEVICE, kind: 'result', message: RESULT });
    const status = pkg.decodeAgentMessage(`vehicles/${DEVICE}/status`, Buffer.from(JSON.stringify(STATUS)));
    assert.deepEqual(status, { deviceId: DEVICE, kind: 'status', message: STATUS });

    // Off the contract: a ContractError naming the topic and the field.
    const off = (topic: string, payload: Uint8Array | string, pattern: RegExp): void => {
      assert.throws(
        () => pkg.decodeAgentMessage(topic, typeof payload === 'string' ? Buffer.from(payload) : payload),
        (err: unknown) => err instanceof pkg.ContractError && pattern.test(err.message),
        topic,
      );
    };
    off(`vehicles/${DEVICE}/commands/cmd-1/result`, JSON.stringify({ ...RESULT, ts: -1 }), /^vehicles\/car-1\/commands\/cmd-1\/result: .*\bts: /);
    off(`vehicles/car-2/telemetry`, telemetryPayload(44), /^vehicles\/car-2\/telemetry: deviceId: "car-1" is not the topic's car-2$/);
    off(`vehicles/${DEVICE}/events`, telemetryPayload(45), /kind: telemetry on the events topic/);
    off(`vehicles/${DEVICE}/telemetry`, Uint8Array.of(0x01, 0xff), /binary payload does not decode/);
    off(`vehicles/${DEVICE}/status`, '{"online":"yes"}', /^vehicles\/car-1\/status: not a status message of the contract/);
    off(`vehicles/${DEVICE}/weather`, '{}', /not a topic of the contract/);
    // The contract's files ship beside it, under the package's name.
    const manifest = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { exports: Record<string, unknown>; files: string[] };
    assert.equal(manifest.exports['./contract/*'], './contract/*');
    assert.ok(manifest.files.includes('contract'));
  });
});

describe('[17.watch] telematics-ops watch', () => {
  // No backend subscriber of the fixture: some messages here are off the contract on purpose.
  const fixture = withBroker({ backend: false });
  let car: MqttClient | undefined;
  fixture.beforeStop(() => car?.endAsync(true));

  const connection = (): string[] => {
    const backend = fixture.pki.backend();
    return ['--broker', fixture.broker.backendUrl, '--cert', backend.certFile, '--key', backend.keyFile, '--ca', fixture.pki.caFile];
  };
  const carClient = async (): Promise<MqttClient> => {
    if (car) return car;
    const files = fixture.pki.client(DEVICE);
    car = await mqtt.connectAsync(fixture.broker.url, {
      protocolVersion: 5,
      clientId: DEVICE,
      reconnectPeriod: 0,
      ca: readFileSync(fixture.pki.caFile),
      cert: readFileSync(files.certFile),
      key: readFileSync(files.keyFile),
      rejectUnauthorized: true,
    });
    return car;
  };

  it('[17.watch] watch --count prints each message decoded: binary telemetry with its signal names and values, a result, a status, and a message off the contract as such; car-sent control characters escaped', async () => {
    const watcher = startWatch(['--device', DEVICE, '--count', '4', ...connection()]);
    await watcher.subscribed;
    const client = await carClient();
    await client.publishAsync(`vehicles/${DEVICE}/telemetry`, Buffer.from(telemetryPayload(100)), { qos: 1 });
    await client.publishAsync(`vehicles/${DEVICE}/commands/cmd-1/result`, JSON.stringify(RESULT), { qos: 1 });
    await client.publishAsync(`vehicles/${DEVICE}/status`, JSON.stringify(STATUS), { qos: 1 });
    await client.publishAsync(`vehicles/${DEVICE}/telemetry`, Buffer.from([0x01, 0xff]), { qos: 1 });
    assert.equal(await watcher.exited, 0, watcher.stderr());
    const lines = watcher.lines();
    assert.equal(lines.length, 4, lines.join('\n'));
    const time = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z';
    assert.match(
      lines[0]!,
      new RegExp(
        `^${time} vehicles/car-1/telemetry seq=100 telemetry p3 4 samples: can0\\.EEC1\\.EngineSpeed=1530 \\(last of 2\\) can0\\.CCVS1\\.WheelBasedVehicleSpeed=52\\.3 can0\\.ETC2\\.TransmissionCurrentGear="D\\\\u001b\\[2J"$`,
      ),
    );
    assert.ok(!lines.join('\n').includes('\u001b'), 'no raw escape character reaches the terminal');
    assert.match(lines[1]!, new RegExp(`^${time} vehicles/car-1/commands/cmd-1/result cmd-1 REJECTED expired ping: expired before it arrived$`));
    assert.match(lines[2]!, new RegExp(`^${time} vehicles/car-1/status online birthSeq=1767225600000$`));
    assert.match(lines[3]!, new RegExp(`^${time} vehicles/car-1/telemetry NOT IN CONTRACT: binary payload does not decode`));
  });

  it('[17.watch] watch --json prints one JSON object per line, {topic, kind, message}, each message valid against the published contract', async () => {
    const watcher = startWatch(['--json', '--count', '3', ...connection()]);
    await watcher.subscribed;
    const client = await carClient();
    await client.publishAsync(`vehicles/${DEVICE}/telemetry`, Buffer.from(telemetryPayload(200)), { qos: 1 });
    await client.publishAsync(`vehicles/${DEVICE}/telemetry`, Buffer.from(telemetryPayload(201, 'json')), { qos: 1 });
    await client.publishAsync(`vehicles/${DEVICE}/commands/cmd-1/result`, JSON.stringify(RESULT), { qos: 1 });
    assert.equal(await watcher.exited, 0, watcher.stderr());
    const objects = watcher.lines().map((line) => JSON.parse(line) as { topic: string; kind: string; message: { seq: number } });
    assert.deepEqual(
      objects.map((o) => [o.topic, o.kind, o.message.seq]),
      [
        ['vehicles/car-1/telemetry', 'telemetry', 200],
        ['vehicles/car-1/telemetry', 'telemetry', 201],
        ['vehicles/car-1/commands/cmd-1/result', 'result', 7],
      ],
    );
    const checker = contractChecker();
    assert.deepEqual(checker.problems('telemetry-decoded', objects[0]!.message), []);
    assert.deepEqual(checker.problems('telemetry', objects[1]!.message), []);
    assert.deepEqual(checker.problems('result', objects[2]!.message), []);
  });

  it('[17.watch] --share: three watchers in one share group split 60 telemetry messages, each delivered to exactly one of them', async () => {
    const watchers = [0, 1, 2].map(() => startWatch(['--json', '--share', 'ingest', ...connection()]));
    try {
      await Promise.all(watchers.map((w) => w.subscribed));
      const client = await carClient();
      const seqs = Array.from({ length: 60 }, (_, i) => 1000 + i);
      for (const seq of seqs) await client.publishAsync(`vehicles/${DEVICE}/telemetry`, Buffer.from(telemetryPayload(seq)), { qos: 1 });
      const total = (): number => watchers.reduce((n, w) => n + w.lines().length, 0);
      await waitFor(() => total() >= 60, 'the 60 messages among the three watchers', 30_000);
      for (const w of watchers) w.child.kill('SIGTERM');
      assert.deepEqual(await Promise.all(watchers.map((w) => w.exited)), [0, 0, 0]);
      const got = watchers.map((w) => w.lines().map((line) => (JSON.parse(line) as { message: { seq: number } }).message.seq));
      const all = got.flat().sort((a, b) => a - b);
      assert.deepEqual(all, seqs, 'every message exactly once among them');
      for (const [i, own] of got.entries()) assert.ok(own.length > 0, `watcher ${i} got none: ${got.map((g) => g.length).join(', ')}`);
    } finally {
      for (const w of watchers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    }
  });
});

/** The kind and sequence number of each `watch --json` line. */
function watched(lines: string[]): { topic: string; kind: string; seq: number | undefined }[] {
  return lines.map((line) => {
    const { topic, kind, message } = JSON.parse(line) as { topic: string; kind: string; message: { seq?: number } };
    return { topic, kind, seq: message.seq };
  });
}

describe('[17.watch] telematics-ops watch on the default run', { skip: mosquittoPath() === null ? 'mosquitto is not installed' : false }, () => {
  const START_MS = 60_000;

  function startAgent(t: TestContext, batchMaxDelayMs?: number): AgentProcess {
    const dir = makeTempDir('watch-default-');
    const agent = AgentProcess.command(['run', '--config', defaultRunConfig(dir, { port: 0, batchMaxDelayMs })], { waitTimeoutMs: START_MS });
    t.after(() => agent.stop('SIGKILL'));
    return agent;
  }
  /** What a backend developer types for npm start's broker: --certs-dir (and here, the test's backend port). */
  const connection = (backendPort: number): string[] => ['--certs-dir', defaultRunPki(), '--broker', `localhost:${backendPort}`];

  it('[17.watch] prints the default run as it is shipped, decoded: its status, and its CBOR telemetry as signal=value pairs of the demo DBC', async (t) => {
    const agent = startAgent(t);
    await agent.waitForStderr(/uplink: connected to /);
    const { backendPort } = brokerLine(agent.stderr);
    const watcher = startWatch(['--device', DEFAULT_DEVICE, ...connection(backendPort)]);
    t.after(() => watcher.child.kill('SIGKILL'));
    await watcher.subscribed;
    const telemetry = (): string[] => watcher.lines().filter((line) => line.includes(`vehicles/${DEFAULT_DEVICE}/telemetry `));
    await waitFor(() => telemetry().length >= 2, 'two telemetry messages of the default run', START_MS);
    watcher.child.kill('SIGTERM');
    assert.equal(await watcher.exited, 0, watcher.stderr());
    const time = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z';
    // The retained birth first, then telemetry: the driving rule's signals by their DBC names, with numbers.
    assert.match(watcher.lines()[0]!, new RegExp(`^${time} vehicles/${DEFAULT_DEVICE}/status online birthSeq=\\d+$`));
    const driving = telemetry().find((line) => line.includes(' p3 '));
    assert.ok(driving, telemetry().join('\n'));
    assert.match(driving, new RegExp(`^${time} vehicles/${DEFAULT_DEVICE}/telemetry seq=\\d+ telemetry p3 \\d+ samples: `));
    for (const signal of ['VehicleSpeed', 'EngineSpeed', 'FuelLevel', 'Odometer']) {
      assert.match(driving, new RegExp(` can0\\.[A-Z_]+\\.${signal}=-?\\d+(\\.\\d+)?(e[-+]\\d+)?( \\(last of \\d+\\))?( |$)`), signal);
    }
    assert.ok(!watcher.lines().some((line) => line.includes('NOT IN CONTRACT')), watcher.lines().join('\n'));
  });

  it("[17.watch] --share: three watchers split the default run's telemetry, each message to exactly one of them, as a plain subscriber sees it all", async (t) => {
    // Batches every 300 ms instead of 5 s, so that the stream is long enough to split in a few seconds.
    const agent = startAgent(t, 300);
    await agent.waitForStderr(/uplink: connected to /);
    const { backendPort } = brokerLine(agent.stderr);
    const reference = startWatch(['--json', '--device', DEFAULT_DEVICE, ...connection(backendPort)]);
    const sharers = [0, 1, 2].map(() => startWatch(['--json', '--share', 'ingest', '--device', DEFAULT_DEVICE, ...connection(backendPort)]));
    const all = [reference, ...sharers];
    t.after(() => all.forEach((w) => w.child.kill('SIGKILL')));
    await Promise.all(all.map((w) => w.subscribed));
    const telemetrySeqs = (w: Watcher): number[] =>
      watched(w.lines())
        .filter((m) => m.kind === 'telemetry' && m.topic === `vehicles/${DEFAULT_DEVICE}/telemetry`)
        .map((m) => m.seq!);
    // What counts is what the car published once all four were subscribed: the messages after the newest any of them
    // has a second later (the car is connected, so it publishes each batch as it commits it).
    await delay(1000);
    const first = Math.max(0, ...all.flatMap(telemetrySeqs));
    await waitFor(() => telemetrySeqs(reference).filter((seq) => seq > first).length >= 30, '30 telemetry messages', START_MS);
    // The window: from there to the newest the plain subscriber has now; the sharers' copies of it may still be on the way.
    const last = Math.max(...telemetrySeqs(reference));
    const inWindow = (seq: number): boolean => seq > first && seq <= last;
    const expected = telemetrySeqs(reference)
      .filter(inWindow)
      .sort((a, b) => a - b);
    const shared = (): number[] =>
      sharers
        .flatMap(telemetrySeqs)
        .filter(inWindow)
        .sort((a, b) => a - b);
    await waitFor(() => shared().length >= expected.length, "the window's messages among the sharers", START_MS);
    await delay(500); // time for a duplicate, were there one, to arrive
    for (const w of all) w.child.kill('SIGTERM');
    assert.deepEqual(await Promise.all(all.map((w) => w.exited)), [0, 0, 0, 0]);
    assert.deepEqual(shared(), expected, 'every telemetry message exactly once among the three');
    const counts = sharers.map((w) => telemetrySeqs(w).filter(inWindow).length);
    assert.ok(
      counts.every((n) => n > 0),
      `a sharer got none: ${counts.join(', ')}`,
    );
    t.diagnostic(`${expected.length} telemetry messages of the default run, split ${counts.join(' + ')} among the three sharers, none twice`);
  });
});
