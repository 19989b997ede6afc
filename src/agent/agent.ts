/**
 * The agent, assembled in one place: the composition root. `Agent.open` loads the bus DBCs, builds each bus's decoder
 * and source (through the source plug-ins, src/agent/sources/), the adapters, the status signals, the data path
 * (collection, outbox, uplink, remote commands) and health; `run` runs the sources until the duration passes, `stop`
 * (or the run's signal) is called, or every source has ended; `close` commits what is open, closes the session and
 * returns the summary. `snapshot()` is the one view of the agent's state the status line, the status page, /metrics,
 * the health report and getStatus read.
 *
 * Failure: anything wrong with the config's files (a DBC, a status signal no DBC has, an outbox or identity that
 * cannot be used) makes `open` throw, naming it, before any source reads a frame; what `open` had opened by then is
 * closed again. Once running, a device that comes and goes (an interface, an adapter, the broker) is a state, not a
 * failure; a source that fails stops the others, and `run` rejects with its error once all have stopped.
 *
 * The frame path is the hot path of the whole agent: per frame one table lookup, one generated decoder writing into a
 * preallocated Float64Array, the collector's watch, and a few counter increments. No allocation, no logging; the
 * snapshot reads the buffers and counters when asked, never per frame.
 *
 * The log: each component gets its own child of the logger and says at which level it logs (src/health/log.ts). Made
 * here: one per bus and adapter (component: its name, which begins each of its messages), `config`, `status`, `data`,
 * `health`, `systemd`, `commands` (the restart) and `logs` (the remote log's own trouble); the data path makes its own
 * (`outbox`, `uplink`, `commands`, `broker`, `pki`, `identity`). Once per run and bus, at info, the bus that decoded its
 * first frame says how long after the process's start that was (the wake-up time; `uplink: connected`, at info, is the
 * other half).
 */
import type { StatusReport } from '../commands/handlers/get-status.js';
import path from 'node:path';
import type { CanBus } from '../can/bus.js';
import type { FrameSink } from '../can/frame.js';
import { Collector } from '../collect/collector.js';
import type { CommandContext } from '../commands/handler.js';
import { applyCollectionOverride } from '../config/collection-override.js';
import { DeviceConfigError, type DeviceConfig } from '../config/device-config.js';
import { LAST_ERROR_MAX_CHARS, type LastError } from '../contract/health.js';
import { BusDecoder } from '../dbc/bus-decoder.js';
import { compileDatabase, DbcParseError, loadDbcFile } from '../dbc/index.js';
import { j1939Declaration } from '../dbc/protocol.js';
import { loggingConfig } from '../health/log-config.js';
import type { ComponentLog, Logger } from '../health/log.js';
import type { ShutdownProgress } from '../health/log-shutdown.js';
import { Health } from '../health/monitor.js';
import { REMOTE_LOG_COMPONENT, RemoteLog } from '../health/remote-log.js';
import { createSystemdNotifier } from '../health/watchdog.js';
import type { ObdClient } from '../obd/client.js';
import type { CompiledDatabase } from '../dbc/codec.js';
import type { SystemSample } from '../contract/health.js';
import { createCommandContext, obdPollIntervals } from './command-context.js';
import { DataPath, type DataPathSummary } from './data-path.js';
import type { ObdPollingSummary } from './obd-polling.js';
import { dataPathText, FrameRates, takeSnapshot, type AgentSnapshot } from './snapshot.js';
import { adapterType, busSourceType } from './sources/registry.js';
import type { Adapter, BusSource } from './sources/source-type.js';
import { statusSignals, type StatusSignal } from './status-signals.js';

/** Between a restart request and the stop: time for the command's result to reach the broker. */
const RESTART_DELAY_MS = 1000;
/**
 * `sink`, saying once at info level when the bus has decoded its first frame (one its DBC describes), with the seconds
 * since the process started: the wake-up time a car pays after every resume (the realrate benchmark reads this line).
 * Three counter reads per frame until then, one boolean test after; an idle bus costs nothing.
 */
function announceFirstFrame(sink: FrameSink, bus: BusDecoder, log: ComponentLog): FrameSink {
  let seen = false;
  return (frame) => {
    sink(frame);
    if (seen || bus.frames - bus.unknownFrames - bus.decodeErrors === 0) return;
    seen = true;
    log.info(`first frame decoded ${process.uptime().toFixed(3)} s after the process started`);
  };
}

export interface AgentOptions {
  /** The file the config came from, to name it in errors (a bus whose DBC is unusable). */
  configFile?: string;
  /** The log: each component logs through its own child; setLogLevel sets its level. */
  logger: Logger;
  /**
   * Receives the context remote commands act through as soon as it exists: without a collection section, before
   * `open` first waits; with one, once the data path is open.
   */
  onCommandContext?: (context: CommandContext) => void;
  /** The CAN bus setSignal writes through on a socketcan bus; default a SocketCanBus on the interface (tests: a MemoryCanBus). */
  openCanBus?: (interfaceName: string) => CanBus;
  /**
   * false: the rates of each status interval are not logged at debug, because the live status line already shows
   * them on the terminal the log writes to (`run` on a terminal). Default true (the journal, a pipe, a file).
   */
  logStatus?: boolean;
  /** Parts shared with other agents in the same process (the simulated fleet). */
  shared?: SharedAgentParts;
}

/**
 * What several agents in one process share (the simulated fleet, src/fleet/): each part given is used instead of the
 * agent's own. A single agent passes none and works as before.
 */
export interface SharedAgentParts {
  /** Compiled DBCs by file and options: each DBC is parsed and compiled once for every agent that has it. */
  databases?: Map<string, CompiledDatabase>;
  /** The host part of the health report: one sampler for the process, not one per agent. */
  sampleSystem?: () => Promise<SystemSample>;
  /** The network the agents are on (the adaptive heartbeat's memory key): not looked up, nor watched, per agent. */
  network?: string;
  /**
   * The reconnect backoff's source of jitter, [0, 1): default Math.random (full jitter). A constant turns the jitter
   * off, for the fleet benchmark's comparison of a reconnection storm with and without it; never for a car.
   */
  reconnectRandom?: () => number;
}

export interface RunOptions {
  /** Stops the run when it aborts. */
  signal?: AbortSignal;
  /** Stop after this many seconds; default: until stopped or every source has ended. */
  durationS?: number;
}

export interface BusSummary {
  name: string;
  /** What delivered its frames: `sim:demo`, `replay:drive.log`, `socketcan:can0`. */
  source: string;
  frames: number;
  signals: number;
  unknownFrames: number;
  decodeErrors: number;
  badLogLines: number;
  /** Buses with a link (SocketCAN): error frames the controller reported, and the interface state when the run stopped. */
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
  /** Zeros for an adapter that polls no OBD-II. */
  obd: ObdPollingSummary;
  /** Whether it polls OBD-II (an ELM327), or yields other values (a GNSS receiver). */
  polls: boolean;
  /** Its status line's words when the run stopped (`gnss 3D 48.1429,11.5807`). */
  text: string;
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

export class Agent {
  private dataPath: DataPath | undefined;
  private health: Health | undefined;
  private context: CommandContext | undefined;
  /** The latest numeric OBD values by collector name, and when each arrived (unix ms): commands read them. */
  private readonly obdValues = new Map<string, number>();
  private readonly obdReceivedAt = new Map<string, number>();
  /** How often each OBD value is polled (ms), for the snapshot: the page marks a value stale by it. */
  private readonly obdIntervals: ReadonlyMap<string, number>;
  private readonly adapters: Adapter[];
  private readonly stopping = new AbortController();
  private restartRequested = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private runTimes: { startedAt: number; endedAt: number | undefined } | undefined;
  private closing: Promise<RunSummary> | undefined;
  /** Stops the log's listeners (the remote log's feed, the last error). */
  private stopLogListeners: (() => void) | undefined;
  private lastError: { entry: LastError | null } = { entry: null };

  private constructor(
    /** The running config: the collection rules setConfig left in the state folder in place of the file's. */
    readonly config: DeviceConfig,
    private readonly options: AgentOptions,
    private readonly buses: readonly BusDecoder[],
    private readonly sources: readonly BusSource[],
    private readonly signals: { signals: StatusSignal[]; configured: boolean },
    private readonly remoteLog: RemoteLog | undefined,
  ) {
    // Values reach the collector through `offer`: the data path is opened after the adapters are made.
    const offer = (name: string, value: number, ts: number): void => this.offer(name, value, ts);
    this.adapters = config.obdAdapters.map((entry) => adapterType(entry).create(entry, { log: options.logger.child(entry.name, { prefix: true }), offer }));
    sources.forEach((source, i) => source.obd?.forwardValues(config.buses[i]!.name, offer));
    this.obdIntervals = obdPollIntervals(config);
  }

  /**
   * Builds the agent from a loaded config and opens its data path and health; nothing reads a frame until `run`.
   * Throws (see the file comment) when the config's files cannot be used.
   */
  static async open(config: DeviceConfig, options: AgentOptions): Promise<Agent> {
    const { logger } = options;
    const logging = loggingConfig(config.logging);
    // Warnings and errors also go to vehicles/<id>/logs; made now so that what the start says is kept until connected.
    // Its own trouble goes to the local log only, at the level it gives (component `logs`, which it never publishes).
    const remoteLogLog = logger.child(REMOTE_LOG_COMPONENT);
    const remoteLog =
      config.uplink && logging.remote.enabled ? new RemoteLog({ config: logging.remote, report: (level, msg) => remoteLogLog[level](msg) }) : undefined;
    const stopRemoteFeed = remoteLog ? logger.onEntry(logging.remote.level, (entry) => remoteLog.add(entry)) : undefined;
    // The latest error, for the health report (the fleet view lists it per car): kept whatever the local level.
    const lastError: { entry: LastError | null } = { entry: null };
    const stopLastError = logger.onEntry('error', (entry) => {
      lastError.entry = { ts: entry.time, component: entry.component, msg: entry.msg.slice(0, LAST_ERROR_MAX_CHARS) };
    });
    let agent: Agent | undefined;
    try {
      const buses: BusDecoder[] = [];
      const sources: BusSource[] = [];
      for (const [index, bus] of config.buses.entries()) {
        // The bus's log: its name is the component and begins each message (`can0: ...`).
        const busLog = logger.child(bus.name, { prefix: true });
        const cacheKey = `${bus.dbc}\0${bus.strictDbc ?? false}\0${bus.j1939 ?? ''}`;
        let compiled = options.shared?.databases?.get(cacheKey);
        if (compiled === undefined) {
          let db;
          try {
            db = loadDbcFile(bus.dbc, { strict: bus.strictDbc ?? false });
          } catch (err) {
            // A bus whose DBC is unusable (unreadable, malformed, no message in it) is refused before anything starts,
            // named as a config problem is: the key that names the file, then what is wrong with the file.
            if (err instanceof DbcParseError) throw new DeviceConfigError(options.configFile ?? 'device config', [`buses[${index}].dbc: ${err.message}`]);
            throw err;
          }
          // What the DBC deviates in was tolerated (strictDbc off): warnings.
          for (const w of db.warnings) busLog.warn(`${path.basename(w.file)}:${w.line}:${w.column}: warning: ${w.message}`);
          // A J1939 DBC decodes nothing without PGN matching: it is on when the DBC declares J1939, unless the config says.
          const declared = bus.j1939 === undefined ? j1939Declaration(db) : undefined;
          if (declared !== undefined)
            busLog.info(`the DBC is a J1939 database (${declared}): frames are matched by PGN from any source address (j1939: false turns it off)`);
          compiled = compileDatabase(db, { j1939: bus.j1939 ?? declared !== undefined });
          // Compiled once per process when shared: the generated decoders hold no state (each bus has its own values).
          options.shared?.databases?.set(cacheKey, compiled);
        }
        const decoder = new BusDecoder(bus.name, compiled);
        buses.push(decoder);
        sources.push(busSourceType(bus.source).create(bus, { decoder, log: busLog }));
      }
      // The collection rules a setConfig command left in the state folder replace the config's, if the buses serve them.
      const running = applyCollectionOverride(
        config,
        (collection) => new Collector({ config: collection, buses, onBatch: () => undefined }),
        logger.child('config'),
      );
      const signals = statusSignals(running.status?.signals ?? [], buses);
      agent = new Agent(running, options, buses, sources, signals, remoteLog);
      agent.stopLogListeners = () => {
        stopRemoteFeed?.();
        stopLastError();
      };
      agent.lastError = lastError;
      await agent.openDataPath();
      return agent;
    } catch (err) {
      // Whatever opened before the failure is closed again (the data path only when a later step failed).
      await agent?.dataPath?.close().catch(() => undefined);
      await agent?.health?.close();
      stopRemoteFeed?.();
      stopLastError();
      remoteLog?.close();
      throw err;
    }
  }

  /** The context remote commands act through. */
  get commandContext(): CommandContext {
    if (this.context === undefined) throw new Error('the agent is not open');
    return this.context;
  }

  /** The agent's state now (src/agent/snapshot.ts). */
  snapshot(): AgentSnapshot {
    return takeSnapshot({
      config: this.config,
      buses: this.buses,
      sources: this.sources,
      adapters: this.adapters,
      obdValues: this.obdValues,
      obdReceivedAt: this.obdReceivedAt,
      obdIntervals: this.obdIntervals,
      signals: this.signals,
      dataPath: this.dataPath,
      lastError: this.lastError.entry,
    });
  }

  /**
   * Runs the sources and pollers until the duration passes, `stop` is called or `options.signal` aborts, or every
   * source has ended. Rejects with the first source's failure once every source has stopped. Runs once.
   */
  async run(options: RunOptions = {}): Promise<void> {
    if (this.runTimes !== undefined || this.closing !== undefined) throw new Error('the agent has already run');
    const stop = this.stopping;
    const onOuterAbort = (): void => stop.abort();
    options.signal?.addEventListener('abort', onOuterAbort, { once: true });
    if (options.signal?.aborted) stop.abort();
    const durationTimer = options.durationS === undefined ? undefined : setTimeout(() => stop.abort(), options.durationS * 1000);
    this.runTimes = { startedAt: performance.now(), endedAt: undefined };
    const statusTimer = this.logStatusRates();

    const runs = this.sources.map((source, i) => {
      const bus = this.buses[i]!;
      const sink = this.dataPath ? this.dataPath.sinkFor(i) : bus.sink;
      return source.run(announceFirstFrame(sink, bus, this.options.logger.child(bus.name, { prefix: true })), stop.signal);
    });
    // OBD polling never ends a run by itself, and never fails it: it reports its trouble and carries on.
    for (const source of this.sources) if (source.obd) runs.push(source.obd.run(stop.signal));
    for (const adapter of this.adapters) runs.push(adapter.run(stop.signal));
    // Under systemd (Type=notify): ready now that the data path is open and the sources run; watchdog pings from here.
    const notifier = createSystemdNotifier({ warn: this.options.logger.child('systemd').warn });
    notifier.ready();
    let failure: { error: unknown } | undefined;
    try {
      // The first failure stops every other source too; otherwise wait until all have ended.
      await Promise.all(
        runs.map((run) =>
          run.catch((err: unknown) => {
            failure ??= { error: err };
            stop.abort();
          }),
        ),
      );
    } finally {
      notifier.stopping();
      clearInterval(statusTimer);
      if (durationTimer) clearTimeout(durationTimer);
      if (this.restartTimer) clearTimeout(this.restartTimer);
      options.signal?.removeEventListener('abort', onOuterAbort);
      this.runTimes.endedAt = performance.now();
    }
    if (failure) throw failure.error;
  }

  /** Stops the run: the sources end, `run` resolves. */
  stop(): void {
    this.stopping.abort();
  }

  /**
   * Stops what still runs, commits the open batches, closes the session (offline status, DISCONNECT), the outbox and
   * health, and returns the summary. `shutdown` is told the steps (the `run` command's deadline). Closes once; later
   * calls return the same summary.
   */
  close(shutdown?: ShutdownProgress): Promise<RunSummary> {
    this.closing ??= this.closeOnce(shutdown);
    return this.closing;
  }

  private async closeOnce(shutdown: ShutdownProgress | undefined): Promise<RunSummary> {
    this.stop();
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const endedAt = this.runTimes?.endedAt ?? performance.now();
    const elapsedS = this.runTimes ? (endedAt - this.runTimes.startedAt) / 1000 : 0;
    // Taken before anything closes: the sources have stopped, their counters are final.
    const final = takeSnapshot({ config: this.config, buses: this.buses, sources: this.sources, adapters: this.adapters });
    const dataPath = this.dataPath;
    shutdown?.step('committing open batches to the outbox');
    shutdown?.pending(() => ({
      ...(dataPath?.uplink ? { session: dataPath.uplink.session.state, inflight: dataPath.uplink.publisher.stats.inflight } : {}),
      ...(this.remoteLog ? { logEntriesUnsent: this.remoteLog.stats.queued } : {}),
    }));
    // No report once the data path starts closing; the status page closes with it.
    const healthClosing = this.health?.close();
    // Folded log entries go out ahead of the session's DISCONNECT.
    this.remoteLog?.flush();
    this.stopLogListeners?.();
    // Whatever ended the run, the open batches go to the outbox: close() commits them before its first await, so they
    // are on disk once it has been called.
    const dataPathClosing = dataPath?.close();
    shutdown?.committed();
    shutdown?.step('closing the MQTT session (offline status, DISCONNECT) and the outbox');
    let dataPathResult: DataPathSummary | undefined;
    try {
      dataPathResult = await dataPathClosing;
    } finally {
      await healthClosing;
      this.remoteLog?.close();
    }
    shutdown?.step('writing the summary');
    return {
      elapsedS,
      buses: final.buses.map((bus) => {
        const entry: BusSummary = {
          name: bus.name,
          source: bus.sourceName,
          frames: bus.frames,
          signals: bus.signals,
          unknownFrames: bus.unknownFrames,
          decodeErrors: bus.decodeErrors,
          badLogLines: bus.badLogLines,
        };
        if (bus.link) {
          entry.errorFrames = bus.link.errorFrames;
          entry.interfaceState = bus.link.state;
        }
        if (bus.obd) entry.obd = { samples: bus.obd.samples, requests: bus.obd.requests, unsupported: bus.obd.unsupported };
        return entry;
      }),
      adapters: final.adapters.map((adapter) => ({
        name: adapter.name,
        port: adapter.port,
        state: adapter.state,
        obd: adapter.obd
          ? { samples: adapter.obd.samples, requests: adapter.obd.requests, unsupported: adapter.obd.unsupported }
          : { samples: 0, requests: 0, unsupported: 0 },
        polls: adapter.obd !== null,
        text: adapter.text,
      })),
      ...(dataPathResult ? { dataPath: dataPathResult } : {}),
      ...(this.restartRequested ? { restartRequested: true } : {}),
    };
  }

  /** Opens the data path (with a collection section) and health, and hands the command context over. */
  private async openDataPath(): Promise<void> {
    const { config, options } = this;
    const { logger } = options;
    const makeContext = (dataPath: DataPath | undefined): CommandContext =>
      createCommandContext({
        config,
        buses: this.buses,
        obdValues: this.obdValues,
        obdReceivedAt: this.obdReceivedAt,
        obdClient: () => this.obdClient(),
        snapshot: () => this.snapshot(),
        statusReport: () => this.statusReport(),
        dataPath,
        setLogLevel: (level) => logger.setLevel(level),
        requestRestart: () => this.requestRestart(),
        ...(options.openCanBus ? { openCanBus: options.openCanBus } : {}),
      });
    // Opened before the sources start, so an unusable outbox or identity fails the start before anything is read.
    if (config.collection) {
      this.dataPath = await DataPath.open(config, this.buses, logger, {
        commandContext: (dataPath) => (this.context = makeContext(dataPath)),
        ...(options.shared?.network !== undefined ? { network: options.shared.network } : {}),
        ...(options.shared?.reconnectRandom ? { reconnectRandom: options.shared.reconnectRandom } : {}),
      });
    } else this.context = makeContext(undefined);
    const dataPath = this.dataPath;
    if (this.remoteLog && dataPath?.uplink) this.remoteLog.attach(dataPath.uplink.session);
    if (dataPath) {
      const outboxStats = dataPath.outbox.stats();
      logger
        .child('data')
        .debug(`data path open: ${config.collection!.rules.length} collection rules, ${outboxStats.messages} messages waiting in the outbox`, {
          rules: config.collection!.rules.map((r) => r.name),
          outbox: config.outbox!.path,
          ...(dataPath.uplink ? { uplink: dataPath.uplink.url } : {}),
        });
    }
    // The context first: without a data path the caller gets it before open() first waits.
    options.onCommandContext?.(this.commandContext);
    // The health report at health.intervalS (published, and on the local status page); never fails the start.
    this.health = await Health.start({
      config,
      snapshot: () => this.snapshot(),
      ...(dataPath?.uplink ? { publish: (report: object) => dataPath.publishHealth(report) } : {}),
      log: logger.child('health'),
      ...(options.shared?.sampleSystem ? { sampleSystem: options.shared.sampleSystem } : {}),
    });
  }

  /** getStatus: the health monitor's live reading (health opens right after the data path; a command cannot come sooner). */
  private statusReport(): StatusReport {
    if (!this.health) throw new Error('the agent is still opening');
    return this.health.statusReport();
  }

  /** A value from an OBD poller or adapter: kept for commands, and offered to the collection rules. */
  private offer(name: string, value: number, ts: number): void {
    this.obdValues.set(name, value);
    this.obdReceivedAt.set(name, ts * 1000);
    // `collector` is read per value: setConfig may have replaced it.
    this.dataPath?.collector.offer(name, value, ts);
  }

  /** The OBD-II client of the first poller whose link is up: the buses' pollers first, then the adapters'. */
  private obdClient(): ObdClient | undefined {
    for (const source of this.sources) {
      const client = source.obd?.client;
      if (client) return client;
    }
    for (const adapter of this.adapters) {
      const client = adapter.obd?.client;
      if (client) return client;
    }
    return undefined;
  }

  private requestRestart(): void {
    if (this.restartTimer !== undefined || this.stopping.signal.aborted) return;
    // A warning: the agent stops, and the backend should see why.
    this.options.logger.child('commands').warn('restart requested by a remote command: stopping');
    this.restartTimer = setTimeout(() => {
      this.restartRequested = true;
      this.stop();
    }, RESTART_DELAY_MS);
  }

  /**
   * Once per status interval, not per frame: the rates in the log while debugging (the verbose start). Under systemd
   * with no debug there is nothing to do: no snapshot, no outbox query. Not at all when the live status line shows
   * them on the log's own terminal (`logStatus: false`): the same figures would be on one screen twice.
   */
  private logStatusRates(): NodeJS.Timeout | undefined {
    const { logger } = this.options;
    if (this.options.logStatus === false) return undefined;
    const log = logger.child('status');
    const rates = new FrameRates(this.buses);
    return setInterval(() => {
      const { framesPerS, signalsPerS } = rates.next(this.buses);
      if (!logger.enabled('debug')) return;
      const snapshot = this.snapshot();
      let unknownFrames = 0;
      let errors = 0;
      for (const bus of snapshot.buses) {
        unknownFrames += bus.unknownFrames;
        errors += bus.decodeErrors + bus.badLogLines;
      }
      log.debug('status', {
        framesPerS,
        signalsPerS,
        unknownFrames,
        errors,
        ...(snapshot.dataPath ? { data: dataPathText(snapshot.dataPath) } : {}),
      });
    }, this.config.status?.intervalMs ?? 1000);
  }
}
