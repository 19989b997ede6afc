/**
 * `telematics-ops simulate` against Debian's mosquitto with the shipped configuration (TLS, client certificates, the
 * devices' and the backend's ACLs; test/support/mosquitto.ts): a small fleet, run as a child process of the built
 * CLI, as an operator runs it (its own event loop, apart from the test's backend and operator clients). Every car
 * comes online (its retained status birth, seen by a fresh backend subscriber, and by `telematics-ops fleet`), sends
 * telemetry that the broker fixture's backend checks against the contract, answers a signed ping sent to the whole
 * fleet by `telematics-ops send --where` (each car's outcome tracked in the command journal), and after a broker restart (same port,
 * persistence on) reconnects with the agent's backoff; the backend then proves that nothing committed was lost: per
 * car, the data-stream numbers received plus those announced lost cover the first to the last, and with what is still
 * in the car's outbox at the stop account for every number the outbox gave. Three `telematics-ops watch --share`
 * consumers split the fleet's telemetry, and one stopped leaves its share to the others without a message lost.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeAgentMessage } from '../../src/contract/decoder.js';
import { carIds } from '../../src/fleet/fleet-profile.js';
import { writeIssued } from '../../src/pki/dev-ca.js';
import { withBroker } from '../support/broker-fixture.js';
import { CommandPki } from '../support/commands.js';
import { BackendSubscriber } from '../support/mosquitto.js';
import { OPS_CLI, runProgram } from '../support/programs.js';
import { startWatch, type Watcher } from '../support/ops-watch.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

const CARS = 24;
const IDS = carIds(CARS, 'sim-');

/** What the backend received of one car's data stream: the numbers, and those its loss notices announce. */
function dataStreamOf(backend: BackendSubscriber, deviceId: string): { seqs: Set<number>; lost: { first: number; last: number; reason: string }[] } {
  const seqs = new Set<number>();
  const lost: { first: number; last: number; reason: string }[] = [];
  for (const m of backend.messages) {
    if (!m.topic.startsWith(`vehicles/${deviceId}/`)) continue;
    const kind = m.topic.slice(`vehicles/${deviceId}/`.length);
    if (kind !== 'telemetry' && kind !== 'events' && kind !== 'loss') continue;
    const decoded = decodeAgentMessage(m.topic, m.payload);
    if (decoded.kind === 'telemetry' || decoded.kind === 'events') seqs.add(decoded.message.seq);
    else if (decoded.kind === 'loss') {
      seqs.add(decoded.message.seq);
      for (const range of decoded.message.lost) lost.push({ first: range.first, last: range.last, reason: range.reason });
    }
  }
  return { seqs, lost };
}

/** A program's `--json` output: one object per line. */
const jsonLines = <T>(text: string): T[] =>
  text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as T);

/** The highest data-stream number received from the car (0: none). */
function lastSeqOf(backend: BackendSubscriber, deviceId: string): number {
  return Math.max(0, ...dataStreamOf(backend, deviceId).seqs);
}

/** The simulator's stdout, one JSON object per line (--json). */
class SimulatorProcess {
  readonly lines: Record<string, unknown>[] = [];
  stderr = '';
  exitCode: number | null | undefined;
  private readonly exited: Promise<void>;

  constructor(readonly child: ChildProcess) {
    let pending = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString('utf8')));
    this.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        this.exitCode = code;
        resolve();
      }),
    );
  }

  /** SIGTERM, then its exit. */
  async stop(): Promise<void> {
    if (this.exitCode === undefined) this.child.kill('SIGTERM');
    await this.exited;
  }
}

describe('[18.sim] telematics-ops simulate: a simulated fleet against mosquitto with TLS, client certificates and the ACL', () => {
  // The broker may open more files than a car count's worth of connections: raised as for the benchmark.
  const fixture = withBroker({ quiet: true, openFiles: 4096 });
  const commandPki = new CommandPki();
  const state = makeTempDir('fleet-sim-');
  let simulator: SimulatorProcess | undefined;
  const backendConnection = (): string[] => {
    const files = fixture.pki.backend();
    return ['--broker', fixture.broker.backendUrl, '--cert', files.certFile, '--key', files.keyFile, '--ca', fixture.pki.caFile];
  };

  before(() => {
    // The simulator issues the cars' certificates with the broker's device CA (the test PKI's), key and all.
    const ca = writeIssued(path.join(state, 'ca'), 'device-ca', fixture.pki.ca);
    const child = spawn(
      process.execPath,
      [
        OPS_CLI,
        'simulate',
        ...['--cars', String(CARS), '--broker', fixture.broker.url, '--ca-cert', ca.certFile, '--ca-key', ca.keyFile],
        ...['--command-ca', commandPki.caFile, '--state', path.join(state, 'fleet'), '--seed', '7'],
        // Telemetry each second at 2 Hz, so that the test sees a steady stream; the backoff's ceiling at 2 s, so that
        // the reconnection after the restart is quick yet the agent's own (full jitter).
        ...['--rate', '2', '--batch', '1', '--reconnect-max', '2000', '--status-interval', '1', '--json'],
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    simulator = new SimulatorProcess(child);
    fixture.beforeStop(() => simulator?.stop());
  });

  after(async () => {
    await simulator?.stop();
  });

  it('[18.sim] every car comes online (its retained status birth, and in telematics-ops fleet) and sends telemetry, every message in the contract', async () => {
    const backend = fixture.backend;
    // First certificates for 24 cars (RSA keys on the thread pool) on a loaded machine: generous.
    await waitFor(() => IDS.every((id) => backend.on(id, 'telemetry').length >= 2), `telemetry from every car (stderr: ${simulator?.stderr ?? ''})`, 120_000);
    // A backend that connects now gets each car's retained birth: online.
    const late = await BackendSubscriber.connect(fixture.broker, fixture.pki, 'vehicles/+/status');
    try {
      await late.waitFor(() => IDS.every((id) => late.on(id, 'status').length > 0), 'a retained status of every car', 10_000);
      for (const id of IDS) {
        const status = late.on(id, 'status')[0]!;
        assert.equal(status.retain, true, `${id}: the status is retained`);
        assert.equal((JSON.parse(status.payload.toString('utf8')) as { online: boolean }).online, true, `${id} is online`);
      }
    } finally {
      await late.close();
    }
    assert.deepEqual(backend.contractViolations, []);
    // As the operator sees them: `telematics-ops fleet` lists every car online.
    const view = await runProgram('telematics-ops', ['fleet', '--json', '--device', 'sim-*', ...backendConnection()]);
    assert.equal(view.status, 0, view.stderr);
    const cars = (JSON.parse(view.stdout) as { cars: { deviceId: string; state: string; problems: string[] }[] }).cars;
    assert.deepEqual(
      cars.map((c) => `${c.deviceId} ${c.state} ${c.problems.length}`),
      IDS.map((id) => `${id} online 0`),
    );
    // Each car drives its own cycle (seed 7 + i): the cars do not all send the same values.
    const odometers = new Set(
      IDS.map((id) => {
        for (const m of backend.on(id, 'telemetry')) {
          const decoded = decodeAgentMessage(m.topic, m.payload);
          const odometer = decoded.kind === 'telemetry' ? decoded.message.samples.find((s) => s.signal.endsWith('Odometer')) : undefined;
          if (odometer) return odometer.value;
        }
        return undefined;
      }),
    );
    assert.equal(odometers.size, CARS, `odometers: ${[...odometers].join(', ')}`);
    const status = simulator!.lines.filter((line) => line.type === 'status').at(-1);
    assert.ok(status, 'the simulator reports its status');
    assert.equal(status.cars, CARS);
  });

  it('[18.sim] a signed ping to every car (send --where, tracked) gets a final result from each, in the command journal', async () => {
    const journal = path.join(state, 'commands.db');
    const operator = ['--operator-cert', commandPki.operatorFiles.certFile, '--operator-key', commandPki.operatorFiles.keyFile];
    const run = await runProgram('telematics-ops', [
      'send',
      ...['--where', 'online', '--where', 'device=sim-*', '-c', 'ping', '--wait', '--timeout', '60', '--json', '--journal', journal],
      ...backendConnection(),
      ...operator,
    ]);
    assert.equal(run.status, 0, run.stderr + run.stdout);
    const outcomes = jsonLines<{ device: string; id: string; status: string }>(run.stdout);
    assert.deepEqual(
      outcomes.map((o) => `${o.device} ${o.status}`).sort(),
      IDS.map((id) => `${id} SUCCEEDED`),
    );
    assert.equal(run.stderr, `${CARS} cars: ${CARS} succeeded (exit 0)\n`);
    // Each car's outcome is tracked: one journal entry per car, its lifecycle through to SUCCEEDED.
    const history = await runProgram('telematics-ops', ['history', '--json', '--limit', String(CARS + 10), '--journal', journal]);
    assert.equal(history.status, 0, history.stderr);
    const entries = jsonLines<{ id: string; deviceId: string; state: string }>(history.stdout);
    assert.deepEqual(
      entries.map((e) => `${e.deviceId} ${e.state}`).sort(),
      IDS.map((id) => `${id} SUCCEEDED`),
    );
    assert.deepEqual(new Set(entries.map((e) => e.id)), new Set(outcomes.map((o) => o.id)));
  });

  it("[18.share] three watch --share consumers split the fleet's telemetry, each message to one of them; one is stopped and the others take over, nothing lost", async () => {
    const { backend } = fixture;
    const group = `fleet-${process.pid}`;
    const watchers = [0, 1, 2].map(() => startWatch(['--share', group, '--json', ...backendConnection()]));
    try {
      await Promise.all(watchers.map((w) => w.subscribed));
      /** The telemetry a watcher printed: `<topic> <seq>` per message. */
      const received = (w: Watcher): string[] =>
        w
          .lines()
          .map((line) => JSON.parse(line) as { topic: string; kind: string; message: { seq: number } })
          .filter((m) => m.kind === 'telemetry')
          .map((m) => `${m.topic} ${m.message.seq}`);
      const telemetry = (): string[] =>
        backend.messages
          .filter((m) => m.topic.endsWith('/telemetry'))
          .map((m) => {
            const decoded = decodeAgentMessage(m.topic, m.payload);
            return `${m.topic} ${decoded.kind === 'telemetry' ? decoded.message.seq : -1}`;
          });
      // The window: from a moment after the three subscribed (what was published before may have reached fewer).
      await delay(1000);
      const from = telemetry().length;
      await waitFor(() => telemetry().length - from >= 60, 'telemetry while the three consume', 60_000);

      // One consumer stops (SIGINT, as an operator stops it): it drains what it was given and exits 0.
      watchers[1]!.child.kill('SIGINT');
      assert.equal(await watchers[1]!.exited, 0, watchers[1]!.stderr());
      const atStop = watchers.map((w) => received(w).length);
      const stoppedAt = telemetry().length;
      await waitFor(() => telemetry().length - stoppedAt >= 60, 'telemetry after one consumer stopped', 60_000);
      const to = telemetry().length;
      const window = telemetry().slice(from, to);
      const union = (): string[] => watchers.flatMap(received);
      await waitFor(() => new Set(union()).size >= new Set([...union(), ...window]).size, 'every message of the window at one of the consumers', 30_000);
      for (const w of [watchers[0]!, watchers[2]!]) {
        w.child.kill('SIGINT');
        assert.equal(await w.exited, 0, w.stderr());
      }

      // Each message once, to one consumer of the group, and none of the window missing.
      const all = union();
      const counts = new Map<string, number>();
      for (const key of all) counts.set(key, (counts.get(key) ?? 0) + 1);
      assert.deepEqual(
        [...counts].filter(([, n]) => n > 1),
        [],
        'no message to two consumers',
      );
      const got = new Set(all);
      assert.deepEqual(
        window.filter((key) => !got.has(key)),
        [],
        'every message of the window reached a consumer',
      );
      // All three took a share while they ran, and the two left took over the stopped one's.
      assert.ok(
        atStop.every((n) => n > 5),
        `shares before the stop: ${atStop.join(', ')}`,
      );
      const after = watchers.map((w) => received(w).length);
      assert.equal(after[1], atStop[1], 'the stopped consumer got nothing more');
      assert.ok(after[0]! > atStop[0]! && after[2]! > atStop[2]!, `shares after the stop: ${atStop.join(', ')} -> ${after.join(', ')}`);
    } finally {
      for (const w of watchers) w.child.kill('SIGKILL');
    }
  });

  it('[18.sim] after a broker restart every car reconnects, and nothing committed is lost', async () => {
    const { broker, backend } = fixture;
    const before = new Map(IDS.map((id) => [id, { seq: lastSeqOf(backend, id), births: backend.on(id, 'status').length }]));
    await broker.restart();
    // Each car is back: a new birth, and data numbered beyond what came before the restart.
    await waitFor(
      () =>
        IDS.every((id) => {
          const was = before.get(id)!;
          const births = backend.on(id, 'status').slice(was.births);
          return births.some((m) => (JSON.parse(m.payload.toString('utf8')) as { online: boolean }).online) && lastSeqOf(backend, id) > was.seq;
        }),
      'every car to reconnect and send again after the restart',
      120_000,
    );
    await simulator!.stop();
    assert.equal(simulator!.exitCode, 0, simulator!.stderr);
    const summary = simulator!.lines.find((line) => line.type === 'summary') as { cars: { deviceId: string; lastSeq: number; buffered: number }[] } | undefined;
    assert.ok(summary, 'the simulator prints its summary at the stop');
    assert.equal(summary.cars.length, CARS);
    for (const car of summary.cars) {
      const { seqs, lost } = dataStreamOf(backend, car.deviceId);
      assert.deepEqual(lost, [], `${car.deviceId}: no data announced lost`);
      // The outbox numbers from where the car's stream begins (not 1): first..last as received.
      const first = Math.min(...seqs);
      const last = Math.max(...seqs);
      const missing: number[] = [];
      for (let s = first; s <= last && missing.length < 10; s++) if (!seqs.has(s)) missing.push(s);
      assert.deepEqual(missing, [], `${car.deviceId}: every number from the first (${first}) to the last (${last}) received`);
      // What the outbox numbered and the backend did not get is still in the outbox, for the next run.
      assert.ok(car.lastSeq >= last, `${car.deviceId}: the outbox gave up to ${car.lastSeq}, the backend got ${last}`);
      assert.ok(
        seqs.size + car.buffered >= car.lastSeq - first + 1,
        `${car.deviceId}: ${seqs.size} received + ${car.buffered} buffered < ${car.lastSeq - first + 1} numbered from ${first} to ${car.lastSeq}`,
      );
    }
    assert.deepEqual(backend.contractViolations, []);
  });
});
