/**
 * `telematics-agent run`: the agent's main loop. Reads every configured bus from its source (simulated vehicle, log
 * replay or a live SocketCAN interface), decodes each frame into one value buffer per bus, polls OBD-II PIDs where
 * configured, and shows a one-line live status.
 *
 * The frame path is the hot path of the whole agent: per frame one table lookup, one generated decoder writing into a
 * preallocated Float64Array, and a few counter increments. No allocation, no logging; the status line reads the
 * buffers and counters on its own timer.
 */
import { fstatSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import type { FrameSink, FrameSource } from '../can/frame.js';
import { CandumpReplaySource } from '../can/replay.js';
import { Collector } from '../collect/collector.js';
import { RESTART_EXIT_CODE } from '../agent/exit-codes.js';
import { applyCollectionOverride } from '../config/collection-override.js';
import { DeviceConfigError, loadDeviceConfig, type BusConfig, type DeviceConfig, type SocketCanSourceConfig } from '../config/device-config.js';
import { BusDecoder } from '../dbc/bus-decoder.js';
import { compileDatabase, DbcParseError, loadDbcFile, type CompiledDatabase } from '../dbc/index.js';
import { SimulatedVehicle } from '../sim/vehicle.js';
import type { CommandContext } from '../commands/handler.js';
import { createCommandContext } from './command-context.js';
import { loggingConfig } from '../health/log-config.js';
import { Logger } from '../health/log.js';
import { ShutdownWatch, type ShutdownProgress } from '../health/log-shutdown.js';
import { REMOTE_LOG_COMPONENT, RemoteLog } from '../health/remote-log.js';
import { Health } from '../health/monitor.js';
import { createSystemdNotifier } from '../health/watchdog.js';
import { DataPath, type DataPathSummary } from './data-path.js';
import { LiveObdAdapter } from './live-adapter.js';
import { LiveBus, type ObdPollingSummary } from './live-bus.js';
import { formatStatusValue, resolveStatusSignal, type StatusSignal } from './status-signal.js';
import { forTerminal } from './terminal-text.js';

/** Between a restart request and the stop: time for the command's result to reach the broker. */
const RESTART_DELAY_MS = 1000;

/** The demo config shipped with the package; this file runs as dist/src/cli/run.js. */
export const DEFAULT_CONFIG_PATH = fileURLToPath(new URL('../../../device-config/default.json', import.meta.url));

interface Totals {
  frames: number;
  signals: number;
  unknownFrames: number;
  errors: number;
}

function totals(buses: BusDecoder[]): Totals {
  const t = { frames: 0, signals: 0, unknownFrames: 0, errors: 0 };
  for (const bus of buses) {
    t.frames += bus.frames;
    t.signals += bus.signals;
    t.unknownFrames += bus.unknownFrames;
    t.errors += bus.decodeErrors + bus.badLogLines;
  }
  return t;
}

/** Where the status goes: process.stdout, or anything shaped like it (tests). */
export interface StatusOutput {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface RunAgentOptions {
  config: DeviceConfig;
  /** The file the config came from, to name it in errors (a bus whose DBC is unusable). */
  configFile?: string;
  /** Stop after this many seconds; default: until aborted or every source has ended. */
  durationS?: number;
  signal?: AbortSignal;
  output: StatusOutput;
  /**
   * Diagnostics (DBC warnings, malformed log lines, interface and controller state changes, OBD trouble) as plain
   * text, at the levels `logging.level` lets through (no verbose start), instead of the log on stderr.
   */
  warn?: (message: string) => void;
  /** The log to write to (the `run` command's, which also logs its stop); default one from the config's `logging`. */
  logger?: Logger;
  /** Told where the stop is, for the `run` command's shutdown deadline. */
  shutdown?: ShutdownProgress;
  /** false: no live status line, only the summary at the end (the `run` command writing into the journal). */
  statusLines?: boolean;
  /** Receives the context remote commands act through, once the run's parts exist. */
  onCommandContext?: (context: CommandContext) => void;
}

export interface BusSummary {
  name: string;
  source: string;
  frames: number;
  signals: number;
  unknownFrames: number;
  decodeErrors: number;
  badLogLines: number;
  /** SocketCAN buses: error frames the controller reported, and the interface state when the run stopped. */
  errorFrames?: number;
  interfaceState?: string;
  /** Buses with OBD polling. */
  obd?: ObdPollingSummary;
}

export interface AdapterSummary {
  name: string;
  port: string;
  /** The adapter's state when the run stopped. */
  state: string;
  obd: ObdPollingSummary;
}

export interface RunSummary {
  elapsedS: number;
  buses: BusSummary[];
  adapters: AdapterSummary[];
  /** With a collection section: samples, messages, what was published and what is still buffered. */
  dataPath?: DataPathSummary;
  /** The run stopped because a remote command asked for a restart (exit with RESTART_EXIT_CODE). */
  restartRequested?: boolean;
}

function createSource(bus: BusConfig, database: CompiledDatabase, decoder: BusDecoder, live: LiveBus | undefined): FrameSource {
  const source = bus.source;
  switch (source.type) {
    case 'socketcan':
      return live!.source;
    case 'sim':
      return new SimulatedVehicle({ database, bus: bus.name, speed: source.speed, seed: source.seed, realtime: true });
    case 'replay': {
      return new CandumpReplaySource(source.file, {
        speed: source.speed,
        realtime: true,
        // The log's interface names (can0, can1…) are the recording's; here the frames belong to this bus.
        busName: () => bus.name,
        onError: () => {
          decoder.badLogLines++;
        },
      });
    }
  }
}

/** Runs a bus's source until it ends or `signal` aborts; a looping replay starts over at the end of its log. */
async function runSource(bus: BusConfig, source: FrameSource, sink: FrameSink, signal: AbortSignal): Promise<void> {
  const looping = bus.source.type === 'replay' && bus.source.loop && source instanceof CandumpReplaySource ? source : undefined;
  do {
    await source.run(sink, signal);
    // An empty log must not spin: stop once a pass delivers nothing.
  } while (looping !== undefined && !signal.aborted && looping.frames > 0);
}

/** Runs the agent on a loaded config until the duration passes, `signal` aborts, or every source has ended. */
export async function runAgent(options: RunAgentOptions): Promise<RunSummary> {
  const { output } = options;
  let config = options.config;
  const logging = loggingConfig(config.logging);
  const logger = options.logger ?? new Logger(options.warn ? { config: logging, lines: options.warn } : { config: logging });
  // The modules keep their `warn(message)` callback; the logger gives each message its level and component.
  const warn = logger.diagnostic;
  // Warnings and errors also go to vehicles/<id>/logs; made now so that what the start says is kept until connected.
  const remoteLog =
    config.uplink && logging.remote.enabled
      ? new RemoteLog({ config: logging.remote, report: (level, msg) => logger.log(level, REMOTE_LOG_COMPONENT, msg) })
      : undefined;
  const stopRemoteFeed = remoteLog ? logger.onEntry(logging.remote.level, (entry) => remoteLog.add(entry)) : undefined;
  const buses: BusDecoder[] = [];
  const sources: FrameSource[] = [];
  /** Per bus: its live parts when it is a SocketCAN bus. */
  const live: (LiveBus | undefined)[] = [];
  for (const [index, bus] of config.buses.entries()) {
    let db;
    try {
      db = loadDbcFile(bus.dbc, { strict: bus.strictDbc ?? false });
    } catch (err) {
      // A bus whose DBC is unusable (unreadable, malformed, no message in it) is refused before anything starts,
      // named as a config problem is: the key that names the file, then what is wrong with the file.
      if (err instanceof DbcParseError) throw new DeviceConfigError(options.configFile ?? 'device config', [`buses[${index}].dbc: ${err.message}`]);
      throw err;
    }
    for (const w of db.warnings) warn(`${bus.name}: ${path.basename(w.file)}:${w.line}:${w.column}: warning: ${w.message}`);
    const decoder = new BusDecoder(bus.name, compileDatabase(db, { j1939: bus.j1939 ?? false }));
    buses.push(decoder);
    const liveBus = isSocketCanBus(bus) ? new LiveBus(bus, decoder.database, warn) : undefined;
    live.push(liveBus);
    sources.push(createSource(bus, decoder.database, decoder, liveBus));
  }
  // The collection rules a setConfig command left in the state folder replace the config's, if the buses serve them.
  config = applyCollectionOverride(config, (collection) => new Collector({ config: collection, buses, onBatch: () => undefined }), {
    warn,
    info: (message) => logger.info('config', message),
  });
  const liveBuses = live.filter((l): l is LiveBus => l !== undefined);
  const adapters = config.obdAdapters.map((adapter) => new LiveObdAdapter(adapter, warn));
  const statusSignals: StatusSignal[] = [];
  for (const name of config.status?.signals ?? []) {
    const found = resolveStatusSignal(buses, name);
    if (!found) throw new Error(`status.signals: no bus DBC has a signal '${name}'`);
    statusSignals.push(found);
  }

  /** The latest numeric OBD values, for commands (captureSnapshot, preconditions). */
  const obdValues = new Map<string, number>();
  /** When each arrived, unix ms: preconditions refuse stale values. */
  const obdReceivedAt = new Map<string, number>();
  const stop = new AbortController();
  let restartRequested = false;
  let restartTimer: NodeJS.Timeout | undefined;
  let dataPath: DataPath | undefined;
  // Built before the data path, which hands it to the command dispatcher; it reaches the data path through `dataPath`.
  const commandContext = createCommandContext({
    config,
    buses,
    live,
    adapters,
    obdValues,
    obdReceivedAt,
    dataPath: () => dataPath,
    setLogLevel: (level) => logger.setLevel(level),
    requestRestart: () => {
      if (restartTimer !== undefined || stop.signal.aborted) return;
      warn('restart requested by a remote command: stopping');
      restartTimer = setTimeout(() => {
        restartRequested = true;
        stop.abort();
      }, RESTART_DELAY_MS);
    },
  });

  // Opened before the sources start, so an unusable outbox or identity fails the run before anything is read.
  try {
    dataPath = config.collection ? await DataPath.open(config, buses, warn, { commandContext }) : undefined;
  } catch (err) {
    stopRemoteFeed?.();
    remoteLog?.close();
    if (!options.logger) logger.close();
    throw err;
  }
  if (remoteLog && dataPath?.uplink) remoteLog.attach(dataPath.uplink.session);
  if (dataPath) {
    const outboxStats = dataPath.outbox.stats();
    logger.debug('data', `data path open: ${config.collection!.rules.length} collection rules, ${outboxStats.messages} messages waiting in the outbox`, {
      rules: config.collection!.rules.map((r) => r.name),
      outbox: config.outbox!.path,
      ...(dataPath.uplink ? { uplink: dataPath.uplink.url } : {}),
    });
  }
  const offer = (name: string, value: number, ts: number): void => {
    obdValues.set(name, value);
    obdReceivedAt.set(name, ts * 1000);
    // `collector` is read per value: setConfig may have replaced it.
    dataPath?.collector.offer(name, value, ts);
  };
  live.forEach((liveBus, i) => liveBus?.obd?.forwardValues(config.buses[i]!.name, offer));
  for (const adapter of adapters) adapter.obd.forwardValues(adapter.config.name, offer);
  // The health report at health.intervalS (published, and on the local status page); never fails the run.
  // The context first: without a data path the caller gets it before runAgent's first await.
  options.onCommandContext?.(commandContext);
  const health = await Health.start({ config, buses, live, adapters, obdValues, statusSignals, dataPath, warn });
  const onOuterAbort = (): void => stop.abort();
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  if (options.signal?.aborted) stop.abort();
  const durationTimer =
    options.durationS === undefined ? undefined : setTimeout(() => stop.abort(), options.durationS * 1000);

  const started = performance.now();
  const tty = output.isTTY === true;
  let lastAt = started;
  let last = totals(buses);
  let statusShown = false;
  const showStatus = (): void => {
    const now = performance.now();
    const current = totals(buses);
    const seconds = Math.max(1e-3, (now - lastAt) / 1000);
    const framesPerS = Math.round((current.frames - last.frames) / seconds);
    const signalsPerS = Math.round((current.signals - last.signals) / seconds);
    lastAt = now;
    last = current;
    const wanted = options.statusLines !== false;
    const debug = logger.enabled('debug');
    // Under systemd with no debug there is nothing to show: no line built, no outbox query.
    if (!wanted && !debug) return;
    const dataText = dataPath?.statusText();
    // Once per status interval, not per frame: the rates in the log while debugging (the verbose start).
    if (debug) {
      logger.debug('status', 'status', {
        framesPerS,
        signalsPerS,
        unknownFrames: current.unknownFrames,
        errors: current.errors,
        ...(dataText !== undefined ? { data: dataText } : {}),
      });
    }
    if (!wanted) return;
    let line = `${framesPerS} frames/s, ${signalsPerS} signals/s, ${current.unknownFrames} unknown, ${current.errors} errors`;
    for (const bus of liveBuses) line += ` | ${bus.statusText()}`;
    if (statusSignals.length > 0) {
      line += ' | ' + statusSignals.map((s) => `${s.signal.name} ${formatStatusValue(s)}`).join(', ');
    }
    for (const bus of liveBuses) if (bus.obd) line += ` | ${bus.obd.statusText()}`;
    for (const adapter of adapters) line += ` | ${adapter.statusText()} | ${adapter.obd.statusText()}`;
    if (dataText !== undefined) line += ` | ${dataText}`;
    // DBC labels and units, interface and adapter names: shown, never interpreted by the terminal.
    line = forTerminal(line);
    if (tty) {
      // Redraw in place; a line wider than the terminal would wrap and break the redraw, so cut it.
      const width = output.columns && output.columns > 1 ? output.columns - 1 : Infinity;
      output.write(`\r${line.length > width ? line.slice(0, width) : line}\x1b[K`);
    } else output.write(`${line}\n`);
    statusShown = true;
  };
  const statusTimer = setInterval(showStatus, config.status?.intervalMs ?? 1000);

  const runs = sources.map((source, i) => runSource(config.buses[i]!, source, dataPath ? dataPath.sinkFor(i) : buses[i]!.sink, stop.signal));
  // OBD polling never ends a run by itself, and never fails it: it reports its trouble and carries on.
  for (const bus of liveBuses) if (bus.obd) runs.push(bus.obd.run(stop.signal));
  for (const adapter of adapters) runs.push(adapter.obd.run(stop.signal));
  // Under systemd (Type=notify): ready now that the data path is open and the sources run; watchdog pings from here.
  const notifier = createSystemdNotifier({ warn });
  notifier.ready();
  let failure: unknown;
  try {
    // The first failure stops every other source too; otherwise wait until all have ended.
    await Promise.all(runs.map((run) => run.catch((err: unknown) => {
      failure ??= err;
      stop.abort();
    })));
  } finally {
    notifier.stopping();
    clearInterval(statusTimer);
    if (durationTimer) clearTimeout(durationTimer);
    if (restartTimer) clearTimeout(restartTimer);
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
  // No report once the data path starts closing; the status page closes with it.
  const healthClosing = health.close();
  const elapsedS = (performance.now() - started) / 1000;
  const shutdown = options.shutdown;
  shutdown?.step('committing open batches to the outbox');
  shutdown?.pending(() => ({
    ...(dataPath?.uplink ? { session: dataPath.uplink.session.state, inflight: dataPath.uplink.publisher.stats.inflight } : {}),
    ...(remoteLog ? { logEntriesUnsent: remoteLog.stats.queued } : {}),
  }));
  // Folded log entries go out ahead of the session's DISCONNECT.
  remoteLog?.flush();
  stopRemoteFeed?.();
  // Whatever ended the run, the open batches go to the outbox before the process ends: close() commits them before
  // its first await, so they are on disk once it has been called.
  const closing = dataPath?.close();
  shutdown?.committed();
  shutdown?.step('closing the MQTT session (offline status, DISCONNECT) and the outbox');
  const dataPathSummary = await closing;
  await healthClosing;
  remoteLog?.close();
  shutdown?.step('writing the summary');
  if (!options.logger) logger.close();

  if (tty && statusShown) output.write('\n');
  const summary: RunSummary = {
    elapsedS,
    buses: buses.map((bus, i) => {
      const entry: BusSummary = {
        name: bus.name,
        source: sources[i]!.name,
        frames: bus.frames,
        signals: bus.signals,
        unknownFrames: bus.unknownFrames,
        decodeErrors: bus.decodeErrors,
        badLogLines: bus.badLogLines,
      };
      const liveBus = live[i];
      if (liveBus) {
        entry.errorFrames = liveBus.source.health.counters.errorFrames;
        entry.interfaceState = liveBus.lastState;
        if (liveBus.obd) entry.obd = liveBus.obd.summary();
      }
      return entry;
    }),
    adapters: adapters.map((adapter) => ({ name: adapter.config.name, port: adapter.config.port, state: adapter.lastState, obd: adapter.obd.summary() })),
    ...(dataPathSummary ? { dataPath: dataPathSummary } : {}),
    ...(restartRequested ? { restartRequested } : {}),
  };
  output.write(`stopped after ${elapsedS.toFixed(1)} s\n`);
  for (const bus of summary.buses) {
    const badLines = bus.badLogLines > 0 ? `, ${bus.badLogLines} malformed log lines` : '';
    const errorFrames = bus.errorFrames !== undefined ? `, ${bus.errorFrames} error frames` : '';
    output.write(
      `  ${forTerminal(`${bus.name} (${bus.source})`)}: ${bus.frames} frames, ${bus.signals} signals, ` +
        `${bus.unknownFrames} unknown frames, ${bus.decodeErrors} decode errors${badLines}${errorFrames}\n`,
    );
    if (bus.obd) {
      const unsupported = bus.obd.unsupported > 0 ? `, ${bus.obd.unsupported} PID${bus.obd.unsupported === 1 ? '' : 's'} not supported` : '';
      output.write(`  ${forTerminal(bus.name)} OBD: ${bus.obd.samples} samples from ${bus.obd.requests} requests${unsupported}\n`);
    }
  }
  for (const adapter of summary.adapters) {
    const unsupported = adapter.obd.unsupported > 0 ? `, ${adapter.obd.unsupported} PID${adapter.obd.unsupported === 1 ? '' : 's'} not supported` : '';
    output.write(`  ${forTerminal(`${adapter.name} (${adapter.port}, ${adapter.state})`)}: ${adapter.obd.samples} samples from ${adapter.obd.requests} requests${unsupported}\n`);
  }
  if (dataPathSummary) {
    const d = dataPathSummary;
    const uplink = d.uplink ? `, ${d.published} published to ${d.uplink.url}` : '';
    const evicted = d.outbox.evicted.count > 0 ? `, ${d.outbox.evicted.count} evicted` : '';
    output.write(`  data: ${d.samples} samples in ${d.messages} messages${uplink}, ${d.buffered} buffered${evicted}\n`);
  }
  if (failure !== undefined) throw failure;
  return summary;
}

function isSocketCanBus(bus: BusConfig): bus is BusConfig & { source: SocketCanSourceConfig } {
  return bus.source.type === 'socketcan';
}

/** Whether stdout is the systemd journal: JOURNAL_STREAM names its device and inode (systemd.exec(5)). */
export function stdoutIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const stream = env.JOURNAL_STREAM;
  if (!stream) return false;
  try {
    const stat = fstatSync(1);
    return stream === `${stat.dev}:${stat.ino}`;
  } catch {
    return false;
  }
}

function parseDuration(text: string): number {
  const seconds = Number(text);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return seconds;
}

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('read the configured buses, decode every frame and show a live status line')
    .option('-c, --config <file>', 'device config (JSON)', DEFAULT_CONFIG_PATH)
    .option('-d, --duration <seconds>', 'stop after this many seconds', parseDuration)
    .action(async (opts: { config: string; duration?: number }) => {
      const config = loadDeviceConfig(opts.config);
      const logger = new Logger({ config: config.logging });
      // The status line and the summary are for whoever watches: a stdout that cannot be written (a full disk, a
      // closed pipe) must not end the agent through an unhandled 'error' event.
      process.stdout.on('error', () => undefined);
      const interrupt = new AbortController();
      // SIGTERM/SIGINT: stop the sources, commit open batches, close the session cleanly, all within the deadline.
      const shutdown = new ShutdownWatch(logger);
      const onSignal = (signal: NodeJS.Signals): void => {
        shutdown.begin(signal);
        interrupt.abort();
      };
      // `once`: a second Ctrl-C gets node's default handling and ends the process at once.
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        // Under systemd the status line would be a journal entry every second, on flash, for years: the health
        // report and the status page say the same.
        const statusLines = !stdoutIsJournal();
        const summary = await runAgent({ config, configFile: opts.config, durationS: opts.duration, signal: interrupt.signal, output: process.stdout, logger, shutdown, statusLines });
        if (summary.restartRequested) process.exitCode = RESTART_EXIT_CODE;
      } finally {
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
        logger.close();
      }
      if (shutdown.started) {
        shutdown.finish();
        // Everything that matters is done: a socket a hung broker never closed must not keep the process up.
        process.exit(process.exitCode ?? 0);
      }
    });
}
