/**
 * `telematics-ops simulate`: a simulated fleet against a real broker (src/fleet/fleet-simulator.ts): N cars in this
 * process, each the agent with its own certificate (issued by --ca-cert/--ca-key, kept in --state), outbox, session and
 * command handling. It prints a status line every --status-interval seconds (cars connected, messages committed,
 * acknowledged and buffered, and what a car costs this process in CPU and memory), and, when stopped (SIGINT, SIGTERM,
 * --duration), closes every car as the agent stops and prints the summary: per car the last data-stream number its
 * outbox gave and what is still buffered in it.
 *
 * Failure: bad options or files get one line naming them and exit 1 before any car starts; an open-files limit too low
 * for the fleet is said before the start (each car holds a socket and its SQLite files).
 */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import type { CarSummary, FleetSimulator, FleetStatus } from '../fleet/fleet-simulator.js';
import { carIds, DEFAULT_BATCH_S, DEFAULT_FLEET_RATE_HZ, FILES_PER_CAR } from '../fleet/fleet-profile.js';

/** The cars' listener of the fleet broker (deploy/mosquitto) when --broker gives no port. */
const DEVICE_PORT = 8883;
/** Open files of the process itself (node, the DBC, the log). */
const FILES_BASE = 64;

export interface SimulateOptions {
  cars: number;
  broker: string;
  caCert: string;
  caKey: string;
  brokerCa?: string;
  commandCa?: string;
  state: string;
  seed: number;
  prefix: string;
  rate: number;
  batch: number;
  healthInterval?: number;
  reconnectMax?: number;
  /** commander's --no-jitter: false. */
  jitter: boolean;
  duration?: number;
  statusInterval: number;
  json?: boolean;
}

function positiveNumber(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError('expected a positive number');
  return value;
}

function wholeNumber(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return value;
}

function integer(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value)) throw new InvalidArgumentError('expected a whole number');
  return value;
}

/** mqtts://HOST[:PORT], HOST or HOST:PORT: the cars' listener (port 8883 when not given). */
export function deviceBrokerUrl(text: string): string {
  const bare = text.replace(/^mqtts:\/\//, '');
  if (/^[a-z]+:\/\//i.test(bare)) throw new InvalidArgumentError('the cars connect with mutual TLS: use mqtts://HOST[:PORT] or HOST[:PORT]');
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(bare);
  const port = match?.[2] === undefined ? DEVICE_PORT : Number(match[2]);
  if (!match || port < 1 || port > 65_535) throw new InvalidArgumentError('expected mqtts://HOST[:PORT], HOST or HOST:PORT');
  return `mqtts://${match[1]!}:${port}`;
}

/** The soft limit on open files of this process (ulimit -n), or null where /proc does not say. */
export function openFilesLimit(): number | null {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!line) return null;
    return line[1] === 'unlimited' ? Infinity : Number(line[1]);
  } catch {
    return null;
  }
}

/** Adds `simulate` to the program. */
export function addSimulateCommand(program: Command, out: (line: string) => void): void {
  program
    .command('simulate')
    .description(
      'run a simulated fleet against a broker: N cars in this process, each the agent itself (its own certificate, outbox, session, ' +
        'heartbeat and commands), driving the simulated vehicle; for load tests of a backend',
    )
    .requiredOption('-n, --cars <n>', 'how many cars', wholeNumber)
    .requiredOption('-b, --broker <url>', `the cars' listener: mqtts://HOST[:PORT], HOST or HOST:PORT (port ${DEVICE_PORT} when not given)`, deviceBrokerUrl)
    .requiredOption('--ca-cert <file>', "the CA that issues the cars' certificates (the broker's device CA; a test CA)")
    .requiredOption('--ca-key <file>', 'its private key')
    .option('--broker-ca <file>', "the CA the broker's certificate chains to (default: --ca-cert)")
    .option('--command-ca <file>', 'the command CA the cars pin: with it, the cars take signed commands')
    .option('-s, --state <dir>', 'keys, certificates and outboxes, one folder per car (a second run reuses them)', 'fleet-sim')
    .option('--seed <n>', 'car i drives the cycle seeded n + i', integer, 1)
    .option('--prefix <text>', 'device IDs are PREFIX0001, PREFIX0002, ...', 'sim-')
    .option(
      '--rate <hz>',
      "the simulated bus's rate: each CAN message at most this often (the full bus is about 300 frames/s)",
      positiveNumber,
      DEFAULT_FLEET_RATE_HZ,
    )
    .option('--batch <s>', 'each car sends its telemetry batch this often', positiveNumber, DEFAULT_BATCH_S)
    .option('--health-interval <s>', "each car's health report interval (default: the agent's, 300 s)", positiveNumber)
    .option('--reconnect-max <ms>', "the largest reconnect backoff ceiling (default: the agent's, 300000)", wholeNumber)
    .option('--no-jitter', "benchmarks only: reconnect after the backoff's whole ceiling, without the agent's full jitter")
    .option('-d, --duration <s>', 'stop after this long (default: until SIGINT or SIGTERM)', positiveNumber)
    .option('--status-interval <s>', 'a status line this often', positiveNumber, 10)
    .option('-j, --json', 'status lines and the summary as JSON, one object per line')
    .action(async (opts: SimulateOptions) => {
      process.exitCode = await simulate(opts, out);
    });
}

/** A status line's figures: the fleet's, and what a car costs this process. */
interface StatusLine extends FleetStatus {
  type: 'status';
  elapsedS: number;
  /** CPU time of this process per car and second of wall time, since the previous line. */
  cpuMsPerCarPerS: number;
  /** Resident memory of this process divided by the cars (the process's own base included). */
  rssKbPerCar: number;
}

export async function simulate(opts: SimulateOptions, out: (line: string) => void): Promise<number> {
  const say = (line: string): void => out(opts.json ? JSON.stringify({ type: 'progress', message: line }) : `simulate: ${line}`);
  const limit = openFilesLimit();
  const needed = FILES_BASE + FILES_PER_CAR * opts.cars;
  if (limit !== null && limit < needed)
    say(`warning: ${opts.cars} cars need about ${needed} open files and this process may open ${limit}: raise it first (ulimit -n ${needed})`);
  const started = performance.now();
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // Loaded here: the agent's modules are not needed by the other subcommands.
    const { FleetSimulator } = await import('../fleet/fleet-simulator.js');
    const fleet = await FleetSimulator.start({
      cars: opts.cars,
      brokerUrl: opts.broker,
      caCertFile: opts.caCert,
      caKeyFile: opts.caKey,
      ...(opts.brokerCa !== undefined ? { brokerCaFile: opts.brokerCa } : {}),
      ...(opts.commandCa !== undefined ? { commandCaFile: opts.commandCa } : {}),
      stateDir: opts.state,
      seed: opts.seed,
      prefix: opts.prefix,
      rateHz: opts.rate,
      batchS: opts.batch,
      ...(opts.healthInterval !== undefined ? { healthIntervalS: opts.healthInterval } : {}),
      ...(opts.reconnectMax !== undefined ? { reconnect: { maxMs: opts.reconnectMax } } : {}),
      jitter: opts.jitter,
      // The cars' warnings and errors, each with its device ID; stderr, so that stdout stays the status.
      log: (line) => process.stderr.write(`${line}\n`),
      progress: say,
    });
    const ids = carIds(opts.cars, opts.prefix);
    say(
      `${opts.cars} cars (${ids[0]!} … ${ids[ids.length - 1]!}) against ${opts.broker}: ${fleet.certificates.issued} certificates issued, ` +
        `${fleet.certificates.reused} reused from ${opts.state}`,
    );
    await runUntilStopped(fleet, opts, stop.signal, started, out);
    printSummary(await fleet.close(), opts, out);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  return 0;
}

/** Status lines until the duration passes or the signal aborts. */
async function runUntilStopped(fleet: FleetSimulator, opts: SimulateOptions, signal: AbortSignal, started: number, out: (line: string) => void): Promise<void> {
  let cpu = process.cpuUsage();
  let at = performance.now();
  const line = (): void => {
    const now = performance.now();
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    const status: StatusLine = {
      type: 'status',
      elapsedS: Math.round((now - started) / 100) / 10,
      ...fleet.status(),
      cpuMsPerCarPerS: round3((used.user + used.system) / 1000 / ((now - at) / 1000) / fleet.cars.length),
      rssKbPerCar: Math.round(process.memoryUsage.rss() / 1024 / fleet.cars.length),
    };
    at = now;
    out(opts.json ? JSON.stringify(status) : statusText(status));
  };
  await new Promise<void>((resolve) => {
    const timer = setInterval(line, opts.statusInterval * 1000);
    const durationTimer = opts.duration === undefined ? undefined : setTimeout(finish, opts.duration * 1000);
    function finish(): void {
      clearInterval(timer);
      if (durationTimer) clearTimeout(durationTimer);
      signal.removeEventListener('abort', finish);
      resolve();
    }
    if (signal.aborted) finish();
    else signal.addEventListener('abort', finish, { once: true });
  });
  line();
}

function statusText(s: StatusLine): string {
  return (
    `simulate: ${s.elapsedS} s: ${s.connected}/${s.cars} connected, ${s.committed} messages committed, ${s.acknowledged} acknowledged, ` +
    `${s.buffered} buffered, ${s.connects} connections, ${s.commands} commands; per car ${s.cpuMsPerCarPerS} ms CPU/s, ${s.rssKbPerCar} KB`
  );
}

function printSummary(summaries: CarSummary[], opts: SimulateOptions, out: (line: string) => void): void {
  if (opts.json) {
    out(JSON.stringify({ type: 'summary', cars: summaries }));
    return;
  }
  const buffered = summaries.reduce((sum, car) => sum + car.buffered, 0);
  const acknowledged = summaries.reduce((sum, car) => sum + car.acknowledged, 0);
  out(`simulate: stopped ${summaries.length} cars: ${acknowledged} messages acknowledged this run, ${buffered} left in the outboxes (sent next run)`);
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
