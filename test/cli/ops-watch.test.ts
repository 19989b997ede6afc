/**
 * The reference decoder as the package's entry point (`import('telematics-agent')` from a folder that has the package
 * in its node_modules), and `telematics-ops watch` against a real mosquitto: a car (its certificate, the agent's own
 * codec) publishes, watch prints each message decoded, as text or JSON lines, and a shared subscription splits the
 * messages among three watchers, each message to exactly one.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import { encodeMessage } from '../../src/uplink/codec.js';
import type { MessageHeader, Sample } from '../../src/collect/sample.js';
import { withBroker } from '../support/broker-fixture.js';
import { contractChecker } from '../support/contract.js';
import { OPS_CLI } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

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

interface Watcher {
  child: ChildProcess;
  lines(): string[];
  stderr(): string;
  subscribed: Promise<void>;
  exited: Promise<number | null>;
}

function startWatch(args: string[]): Watcher {
  const child = spawn(process.execPath, [OPS_CLI, 'watch', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const subscribed = new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (stderr.includes('watching ')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`watch exited (${code}) before it subscribed: ${stderr}`)));
  });
  subscribed.catch(() => undefined);
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, lines: () => stdout.split('\n').filter((l) => l !== ''), stderr: () => stderr, subscribed, exited };
}

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
        `^${time} vehicles/car-1/telemetry seq=100 telemetry p3 4 samples: can0\\.EEC1\\.EngineSpeed=1520\\.5 can0\\.EEC1\\.EngineSpeed=1530 can0\\.CCVS1\\.WheelBasedVehicleSpeed=52\\.3 can0\\.ETC2\\.TransmissionCurrentGear="D\\\\u001b\\[2J"$`,
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
