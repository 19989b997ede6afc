/**
 * `npm run bench -- fleet [--json] [--cars=N]`: the simulated fleet (`telematics-ops simulate`, src/fleet/) against
 * Debian's mosquitto with the shipped configuration (TLS, client certificates, the ACLs; test/support/mosquitto.ts),
 * with the backend's subscriber recording every message. Default 1,000 cars, each sending a telemetry message every
 * 10 s (a periodic rule at 1 Hz over a 1 Hz simulated bus).
 *
 * - connect_all_s: from the simulator's first car starting (its certificates made) until every car is connected.
 * - msgs_per_s, acked_share: telemetry received by the backend per second over a steady window of WINDOW_S; the share
 *   of the messages committed by the cars that the broker acknowledged by the window's end.
 * - The reconnection storm: the broker is restarted (SIGTERM, BROKER_DOWN_S down, then started again: same port,
 *   persistence on); each
 *   TCP connection it accepts is counted per second from its log (`New connection from`, one per attempt, before TLS),
 *   until every car is back (`New client connected ... as <id>` for each): storm_peak_connects_per_s and
 *   reconnect_all_s with the agent's full-jitter backoff; then the simulator is started again with `--no-jitter` (each
 *   car waits the backoff's whole ceiling) and the restart repeated: storm_peak_connects_per_s_no_jitter.
 * - lost: per car, the data-stream numbers from the first the backend received to the last the outbox gave, less
 *   those received and those still in the outbox at the stop, plus any announced lost. Must be 0.
 * - rss_mb_per_car, cpu_ms_per_car_per_min: the simulator process's resident memory and CPU time over the steady
 *   window, divided by the cars (its own base included: the marginal cost of a car is lower).
 *
 * The simulator and the broker are given open-files limits for the fleet (prlimit): about ten files per car in the
 * simulator (a socket and three SQLite files with their WAL), one per connection in the broker.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { decodeAgentMessage } from '../src/contract/decoder.js';
import { FILES_PER_CAR } from '../src/fleet/fleet-profile.js';
import { writeIssued } from '../src/pki/dev-ca.js';
import { BackendSubscriber, Mosquitto, TestPki } from '../test/support/mosquitto.js';
import { OPS_CLI } from '../test/support/programs.js';
import { makeTempDir } from '../test/support/temp.js';
import { delay, waitFor } from '../test/support/wait.js';

const DEFAULT_CARS = 1000;
/** The steady window over which throughput and cost are measured, seconds. */
const WINDOW_S = 60;
/** How long the broker stays down in a restart: long enough for the cars' first attempts to fail and back off. */
const BROKER_DOWN_S = 5;
/** Everything that waits for the fleet (first certificates for a thousand cars included) gives up after this. */
const PATIENCE_MS = 15 * 60_000;

export interface FleetBenchResult {
  cars: number;
  connect_all_s: number;
  msgs_per_s: number;
  acked_share: number;
  storm_peak_connects_per_s: number;
  storm_peak_connects_per_s_no_jitter: number;
  reconnect_all_s: number;
  reconnect_all_s_no_jitter: number;
  lost: number;
  rss_mb_per_car: number;
  cpu_ms_per_car_per_min: number;
}

interface StatusLine {
  type: 'status';
  connected: number;
  committed: number;
  acknowledged: number;
  cpuMsPerCarPerS: number;
  rssKbPerCar: number;
}

/** The simulator as a child process, its JSON lines read as they come. */
class Simulator {
  readonly statuses: { at: number; status: StatusLine }[] = [];
  summary: { deviceId: string; lastSeq: number; buffered: number }[] | undefined;
  startedAt: number | undefined;
  private readonly exited: Promise<void>;
  private stderr = '';

  constructor(readonly child: ChildProcess) {
    let pending = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = JSON.parse(pending.slice(0, nl)) as { type: string; message?: string };
        pending = pending.slice(nl + 1);
        if (line.type === 'status') this.statuses.push({ at: performance.now(), status: line as unknown as StatusLine });
        else if (line.type === 'summary') this.summary = (line as unknown as { cars: Simulator['summary'] }).cars;
        else if (line.type === 'progress' && line.message?.startsWith('starting ')) this.startedAt = performance.now();
      }
    });
    // The cars' warnings (reconnections during the storm): kept short, shown if the run fails.
    child.stderr!.on('data', (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString('utf8')).slice(-4000)));
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  static start(args: string[], cars: number): Simulator {
    const files = 64 + FILES_PER_CAR * cars;
    const child = spawn('prlimit', [`--nofile=${files}:${files}`, process.execPath, OPS_CLI, 'simulate', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return new Simulator(child);
  }

  get latest(): StatusLine | undefined {
    return this.statuses.at(-1)?.status;
  }

  get log(): string {
    return this.stderr;
  }

  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    await this.exited;
  }
}

/** Counts the broker's accepted connections per second and the cars connected, from a point in its log on. */
class ConnectionWatch {
  private readonly from: number;
  private readonly perSecond = new Map<number, number>();
  private readonly back = new Set<string>();
  private read: number;
  private readonly timer: NodeJS.Timeout;
  private readonly t0 = performance.now();
  allBackAt: number | undefined;

  constructor(
    private readonly broker: Mosquitto,
    private readonly cars: number,
  ) {
    this.from = broker.log.length;
    this.read = this.from;
    // Read every 50 ms: each new line is dated by when it was read (the test configuration logs no timestamps).
    this.timer = setInterval(() => this.poll(), 50);
  }

  private poll(): void {
    const text = this.broker.log.slice(this.read);
    const end = text.lastIndexOf('\n');
    if (end < 0) return;
    this.read += end + 1;
    const second = Math.floor((performance.now() - this.t0) / 1000);
    for (const line of text.slice(0, end).split('\n')) {
      if (line.startsWith('New connection from')) this.perSecond.set(second, (this.perSecond.get(second) ?? 0) + 1);
      const client = / as (\S+) \(/.exec(line);
      if (line.startsWith('New client connected') && client) this.back.add(client[1]!);
    }
    if (this.allBackAt === undefined && this.back.size >= this.cars) this.allBackAt = performance.now();
  }

  get peak(): number {
    return Math.max(0, ...this.perSecond.values());
  }

  get reconnectS(): number {
    return this.allBackAt === undefined ? NaN : (this.allBackAt - this.t0) / 1000;
  }

  get backCount(): number {
    return this.back.size;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Restarts the broker and measures the storm until every car is back. */
async function storm(broker: Mosquitto, cars: number): Promise<{ peak: number; reconnectS: number }> {
  await broker.stop();
  await delay(BROKER_DOWN_S * 1000);
  const watch = new ConnectionWatch(broker, cars);
  try {
    await broker.start();
    await waitFor(() => watch.allBackAt !== undefined, `every car back after the restart`, PATIENCE_MS);
    return { peak: watch.peak, reconnectS: watch.reconnectS };
  } finally {
    watch.stop();
  }
}

/** Data-stream numbers missing at the backend and not in the outbox at the stop, plus those announced lost. */
function countLost(backend: BackendSubscriber, summary: { deviceId: string; lastSeq: number; buffered: number }[]): number {
  const seqs = new Map<string, Set<number>>();
  let announced = 0;
  for (const m of backend.messages) {
    const match = /^vehicles\/([^/]+)\/(telemetry|events|loss)$/.exec(m.topic);
    if (!match) continue;
    const decoded = decodeAgentMessage(m.topic, m.payload);
    let set = seqs.get(match[1]!);
    if (!set) seqs.set(match[1]!, (set = new Set()));
    if (decoded.kind === 'telemetry' || decoded.kind === 'events') set.add(decoded.message.seq);
    else if (decoded.kind === 'loss') {
      set.add(decoded.message.seq);
      for (const range of decoded.message.lost) announced += range.count;
    }
  }
  let lost = announced;
  for (const car of summary) {
    const set = seqs.get(car.deviceId);
    if (!set || set.size === 0) continue;
    const first = Math.min(...set);
    lost += Math.max(0, car.lastSeq - first + 1 - set.size - car.buffered);
  }
  return lost;
}

export async function runFleetBenchmark(json: boolean): Promise<void> {
  const say = (line: string): void => {
    if (!json) process.stdout.write(`${line}\n`);
  };
  const carsArg = process.argv.find((a) => a.startsWith('--cars='));
  const cars = carsArg ? Number(carsArg.slice('--cars='.length)) : DEFAULT_CARS;
  if (!Number.isInteger(cars) || cars < 1) throw new Error(`--cars=: expected a whole number of at least 1, got ${carsArg}`);
  const pki = new TestPki('fleet bench CA');
  const dir = makeTempDir('fleet-bench-');
  const ca = writeIssued(path.join(dir, 'ca'), 'device-ca', pki.ca);
  const broker = await Mosquitto.start({ pki, quiet: true, openFiles: 2 * cars + 256 });
  const backend = await BackendSubscriber.connect(broker, pki);
  const args = (jitter: boolean): string[] => [
    ...['--cars', String(cars), '--broker', broker.url, '--ca-cert', ca.certFile, '--ca-key', ca.keyFile, '--state', path.join(dir, 'fleet')],
    // A status line every 5 s: each reads every car's snapshot, work the cost per car should not be dominated by.
    ...['--status-interval', '5', '--json', ...(jitter ? [] : ['--no-jitter'])],
  ];
  let simulator: Simulator | undefined;
  try {
    say(`fleet: ${cars} cars, a telemetry message each 10 s; the first run makes their certificates`);
    const connecting = new ConnectionWatch(broker, cars);
    simulator = Simulator.start(args(true), cars);
    const first = simulator;
    let connectAllS: number;
    try {
      await waitFor(() => first.startedAt !== undefined, `the simulator to start its cars (${first.log})`, PATIENCE_MS);
      await waitFor(() => connecting.allBackAt !== undefined, `every car connected (${connecting.backCount}): ${first.log}`, PATIENCE_MS);
      connectAllS = (connecting.allBackAt! - first.startedAt!) / 1000;
    } finally {
      connecting.stop();
    }
    // The status lines of the window: the first ones after every car connected.
    await waitFor(() => first.latest?.connected === cars, 'a status line with every car connected', PATIENCE_MS);
    say(`  all ${cars} connected in ${connectAllS.toFixed(1)} s`);

    // The steady window: the first messages of every car are out, the start's work done.
    const windowStart = performance.now();
    const receivedAtStart = backend.messages.filter((m) => m.topic.endsWith('/telemetry')).length;
    const statusAtStart = first.statuses.length;
    await waitFor(() => performance.now() - windowStart >= WINDOW_S * 1000, 'the steady window', WINDOW_S * 1000 + 10_000);
    const windowS = (performance.now() - windowStart) / 1000;
    const msgsPerS = (backend.messages.filter((m) => m.topic.endsWith('/telemetry')).length - receivedAtStart) / windowS;
    const window = first.statuses.slice(statusAtStart).map((s) => s.status);
    const end = window.at(-1)!;
    const ackedShare = end.committed > 0 ? end.acknowledged / end.committed : 0;
    const cpuMsPerCarPerMin = (window.reduce((sum, s) => sum + s.cpuMsPerCarPerS, 0) / window.length) * 60;
    const rssMbPerCar = end.rssKbPerCar / 1024;
    say(`  ${msgsPerS.toFixed(1)} telemetry messages/s at the backend, ${(ackedShare * 100).toFixed(1)} % of those committed acknowledged`);
    say(`  per car: ${cpuMsPerCarPerMin.toFixed(1)} ms CPU a minute, ${(rssMbPerCar * 1024).toFixed(0)} KB resident (the process's base included)`);

    const jittered = await storm(broker, cars);
    say(`  broker restart, full jitter: peak ${jittered.peak} connections/s, all back in ${jittered.reconnectS.toFixed(1)} s`);
    await simulator.stop();

    simulator = Simulator.start(args(false), cars);
    const second = simulator;
    await waitFor(() => second.latest?.connected === cars, `every car connected again (${second.latest?.connected ?? 0}): ${second.log}`, PATIENCE_MS);
    const plain = await storm(broker, cars);
    say(`  broker restart, no jitter:   peak ${plain.peak} connections/s, all back in ${plain.reconnectS.toFixed(1)} s`);
    await waitFor(() => (second.latest?.connected ?? 0) === cars, 'every car connected after the second restart', PATIENCE_MS);
    await simulator.stop();
    const summary = second.summary ?? [];
    const lost = countLost(backend, summary);
    say(`  lost: ${lost} messages`);

    const result: FleetBenchResult = {
      cars,
      connect_all_s: round(connectAllS, 1),
      msgs_per_s: round(msgsPerS, 1),
      acked_share: round(ackedShare, 4),
      storm_peak_connects_per_s: jittered.peak,
      storm_peak_connects_per_s_no_jitter: plain.peak,
      reconnect_all_s: round(jittered.reconnectS, 1),
      reconnect_all_s_no_jitter: round(plain.reconnectS, 1),
      lost,
      rss_mb_per_car: round(rssMbPerCar, 3),
      cpu_ms_per_car_per_min: round(cpuMsPerCarPerMin, 1),
    };
    if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await simulator?.stop();
    await backend.close();
    await broker.stop();
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
