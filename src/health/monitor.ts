/**
 * Health in a run: every `health.intervalS` the report (host + agent) is taken, published to
 * vehicles/<deviceId>/health while the uplink is connected, and kept for the local endpoint; the local endpoint
 * (http-server.ts) serves it with the live values a technician watches (status signals, link state, outbox).
 *
 * Nothing here runs per frame: the report is taken at its interval, and /status reads a handful of values per request.
 * Reports are scheduled one after the other (never overlapping, however slow the host is to answer) on a fixed
 * cadence, skipping a slot rather than bunching up after a slow sample.
 */
import path from 'node:path';
import type { DataPath } from '../cli/data-path.js';
import type { LiveObdAdapter } from '../cli/live-adapter.js';
import type { LiveBus } from '../cli/live-bus.js';
import { displayDecimals, formatStatusValue, type StatusSignal } from '../cli/status-signal.js';
import type { DeviceConfig } from '../config/device-config.js';
import type { BusDecoder } from '../dbc/bus-decoder.js';
import { HEALTH_DEFAULTS, type HealthConfig } from './config.js';
import { HealthHttpServer } from './http-server.js';
import { AgentHealthProbe, healthReport, type HealthReport } from './report.js';
import { SystemSampler } from './system.js';

/** Signals /status shows when the config names none (status.signals): the first of the bus DBCs. */
const DEFAULT_SIGNAL_COUNT = 12;

export interface HealthOptions {
  config: DeviceConfig;
  buses: readonly BusDecoder[];
  /** Per bus, in config order: its live parts when it is a SocketCAN bus. */
  live: readonly (LiveBus | undefined)[];
  adapters: readonly LiveObdAdapter[];
  /** The latest OBD values, by collector name. */
  obdValues: ReadonlyMap<string, number>;
  /** config.status.signals, resolved, in the same order. */
  statusSignals: readonly StatusSignal[];
  dataPath: DataPath | undefined;
  warn: (message: string) => void;
}

/** GET /status: the latest report and the values that change faster than it. */
export interface LiveStatus {
  deviceId: string;
  tsMs: number;
  link: { state: string; url: string | null; heartbeatS: number | null };
  /** `text` as the status line shows it (value-table label, or the value with its unit); value null until received. */
  signals: { name: string; value: number | null; text: string }[];
  obd: { name: string; value: number }[];
  /**
   * framesPerS between /status requests at least a second apart (the page asks every second); until then the latest
   * report's. errors: decode errors, malformed log lines and error frames. state: the SocketCAN interface's.
   */
  buses: { name: string; source: string; frames: number; framesPerS: number | null; errors: number; state: string | null }[];
  outbox: { messages: number; bytes: number; oldestAgeS: number | null } | null;
  report: HealthReport | null;
}

interface ShownSignal {
  name: string;
  entry: StatusSignal;
}

export class Health {
  /** The latest report; the one taken at start (seq 0, local only) until the first interval has passed. */
  latest: HealthReport | null = null;
  http: HealthHttpServer | null = null;
  private readonly settings: HealthConfig;
  private readonly sampler: SystemSampler;
  private readonly agent: AgentHealthProbe;
  private readonly signals: ShownSignal[];
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private nextAt = 0;
  private seq = 0;
  private closed = false;
  private lastProblem = '';
  /** The bus frame counts at an earlier /status request, and the rates since the one before. */
  private liveRates: { at: number; frames: number[]; perS: (number | null)[] } | null = null;

  private constructor(
    private readonly options: HealthOptions,
    /** Publishes reports (the run has an uplink). */
    private readonly publishes: boolean,
  ) {
    const { config, dataPath } = options;
    this.settings = config.health ?? HEALTH_DEFAULTS;
    this.intervalMs = this.settings.intervalS * 1000;
    // The disk that matters is the one the outbox fills; without one, the agent's working directory.
    const diskPath = config.outbox ? path.dirname(config.outbox.path) : process.cwd();
    this.sampler = new SystemSampler({ diskPath, timeoutMs: Math.min(5000, Math.max(500, this.intervalMs / 2)) });
    this.agent = new AgentHealthProbe({
      config,
      buses: options.buses,
      live: options.live,
      adapters: options.adapters,
      dataPath,
    });
    this.signals = shownSignals(config, options.buses, options.statusSignals);
  }

  /**
   * Starts health for a run: the report timer when there is an uplink to publish to or an endpoint to serve, and the
   * endpoint when health.http is enabled (without a health section: reports every 300 s, no endpoint). Never throws.
   */
  static async start(options: HealthOptions): Promise<Health> {
    const settings = options.config.health ?? HEALTH_DEFAULTS;
    const health = new Health(options, options.dataPath?.uplink !== undefined);
    const serves = settings.http.enabled;
    if (!health.publishes && !serves) return health;
    if (serves) {
      health.http = await HealthHttpServer.start(settings.http, { status: () => health.status(), report: () => health.latest }, options.warn);
      if (health.http) options.warn(`health: status page on ${health.http.url}`);
    }
    // The page could not start (port in use) and there is no uplink: a report would be taken for nobody.
    if (!health.publishes && !health.http) return health;
    // The counters' starting point, so the first interval's report has rates; with a page to fill, a whole report.
    const now = performance.now();
    if (health.http) health.take(false).catch(() => undefined);
    else health.agent.take(now);
    health.nextAt = now + health.intervalMs;
    health.schedule();
    return health;
  }

  /** The /status document. */
  status(): LiveStatus {
    const { config, dataPath, obdValues } = this.options;
    const uplink = dataPath?.uplink;
    let outbox: LiveStatus['outbox'] = null;
    if (dataPath) {
      const stats = dataPath.outbox.stats();
      const oldest = stats.oldestCreatedAt;
      outbox = { messages: stats.messages, bytes: stats.bytes, oldestAgeS: oldest === undefined ? null : Math.max(0, Math.round((Date.now() - oldest) / 100) / 10) };
    }
    return {
      deviceId: config.deviceId,
      tsMs: Date.now(),
      link: uplink
        ? { state: uplink.session.state, url: uplink.url, heartbeatS: uplink.heartbeat?.status().intervalS ?? config.uplink?.keepaliveS ?? null }
        : { state: 'none', url: null, heartbeatS: null },
      signals: this.signals.map(({ name, entry }) => {
        const value = entry.bus.values[entry.slot]!;
        return { name, value: Number.isNaN(value) ? null : value, text: formatStatusValue(entry, value) };
      }),
      obd: [...obdValues].map(([name, value]) => ({ name, value })),
      buses: this.liveBuses(),
      outbox,
      report: this.latest,
    };
  }

  private liveBuses(): LiveStatus['buses'] {
    const { buses, live, config } = this.options;
    const now = performance.now();
    const frames = buses.map((b) => b.frames);
    const previous = this.liveRates;
    if (!previous) {
      this.liveRates = { at: now, frames, perS: frames.map((_, i) => this.latest?.agent.buses[i]?.framesPerS ?? null) };
    } else if (now - previous.at >= 900) {
      const seconds = (now - previous.at) / 1000;
      this.liveRates = { at: now, frames, perS: frames.map((n, i) => Math.round((n - previous.frames[i]!) / seconds)) };
    }
    const perS = this.liveRates!.perS;
    return buses.map((bus, i) => {
      const liveBus = live[i];
      const errorFrames = liveBus ? liveBus.source.health.counters.errorFrames : 0;
      return {
        name: bus.name,
        source: config.buses[i]?.source.type ?? 'unknown',
        frames: bus.frames,
        framesPerS: perS[i] ?? this.latest?.agent.buses[i]?.framesPerS ?? null,
        errors: bus.decodeErrors + bus.badLogLines + errorFrames,
        state: liveBus ? liveBus.source.state : null,
      };
    });
  }

  /** Stops the reports and the endpoint. A sample still running is abandoned. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.sampler.close();
    await this.http?.close();
  }

  private schedule(): void {
    if (this.closed) return;
    const now = performance.now();
    // A sample that overran its slot skips to the next one: reports stay on their cadence and never overlap.
    while (this.nextAt <= now) this.nextAt += this.intervalMs;
    this.timer = setTimeout(() => void this.tick(), this.nextAt - now);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      const report = await this.take(true);
      if (report && this.publishes) this.options.dataPath?.publishHealth(report);
    } catch (err) {
      this.problem(`cannot publish the report: ${(err as Error).message}`);
    } finally {
      this.schedule();
    }
  }

  /** The agent part is read at once, then the host is sampled. Null when the run is closing. */
  private async take(scheduled: boolean): Promise<HealthReport | null> {
    const tsMs = Date.now();
    let agent: ReturnType<AgentHealthProbe['take']>;
    try {
      agent = this.agent.take(performance.now());
    } catch (err) {
      this.problem(`cannot read the agent's counters: ${(err as Error).message}`);
      return null;
    }
    const system = await this.sampler.sample();
    if (this.closed) return null;
    const report = healthReport({
      deviceId: this.options.config.deviceId,
      seq: scheduled ? ++this.seq : 0,
      tsMs,
      intervalS: this.settings.intervalS,
      periodS: agent.periodS,
      system,
      agent: agent.agent,
    });
    // An early report must not replace a scheduled one taken meanwhile.
    if (scheduled || this.latest === null || this.latest.seq === 0) this.latest = report;
    // No warning line here: the data path warns about the certificate's expiry itself; the report flags it.
    return report;
  }

  /** Says each distinct problem once. */
  private problem(message: string): void {
    if (message === this.lastProblem) return;
    this.lastProblem = message;
    this.options.warn(`health: ${message}`);
  }
}

/** The configured status signals under their configured names; without any, the first signals of the bus DBCs. */
function shownSignals(config: DeviceConfig, buses: readonly BusDecoder[], resolved: readonly StatusSignal[]): ShownSignal[] {
  const names = config.status?.signals ?? [];
  if (resolved.length > 0) return resolved.map((entry, i) => ({ name: names[i] ?? entry.signal.name, entry }));
  const shown: ShownSignal[] = [];
  for (const bus of buses) {
    const prefix = buses.length > 1 ? `${bus.name}.` : '';
    for (const codec of bus.database.messages) {
      codec.message.signals.forEach((signal, k) => {
        if (shown.length >= DEFAULT_SIGNAL_COUNT) return;
        shown.push({ name: `${prefix}${codec.message.name}.${signal.name}`, entry: { bus, slot: codec.slots[k]!, signal, decimals: displayDecimals(signal.factor) } });
      });
    }
  }
  return shown;
}
