/**
 * Health in a run: every `health.intervalS` the report (host + agent) is taken, published to
 * vehicles/<deviceId>/health while the uplink is connected, and kept for the local endpoint. The local endpoint
 * (http-server.ts) is live: /status and /metrics read the agent's snapshot (src/agent/snapshot.ts) per request, with
 * rates over the last second or more; only the host's values (systeminformation's probes, which take up to seconds)
 * come from the latest report, dated by it.
 *
 * Nothing here runs per frame: the report is taken at its interval, and /status and /metrics read a handful of values
 * per request. Reports are scheduled one after the other (never overlapping, however slow the host is to answer) on a
 * fixed cadence, skipping a slot rather than bunching up after a slow sample.
 */
import type { LiveStatus } from '../contract/status-page.js';
import type { SystemSample } from '../contract/health.js';
import type { StatusReport } from '../commands/handlers/get-status.js';
import path from 'node:path';
import type { AgentSnapshot } from '../agent/snapshot.js';
import type { DeviceConfig } from '../config/device-config.js';
import { HEALTH_DEFAULTS, type HealthConfig } from './config.js';
import { ValueFreshness } from './freshness.js';
import { HealthHttpServer } from './http-server.js';
import type { ComponentLog } from './log.js';
import { renderMetrics } from './metrics.js';
import { AgentHealthProbe, healthReport, type HealthReport } from './report.js';
import { SystemSampler } from './system.js';

export interface HealthOptions {
  config: DeviceConfig;
  /** The agent's state now. */
  snapshot: () => AgentSnapshot;
  /** Publishes a report (the run has an uplink); without it, reports are only kept for the local endpoint. */
  publish?: (report: HealthReport) => void;
  /** The `health` component's log: the status page's address at info, each distinct problem once at warn. */
  log: Pick<ComponentLog, 'info' | 'warn'>;
  /**
   * The host part of each report from this instead of a sampler of its own: agents sharing a process (the simulated
   * fleet) share one host. Never rejects, as SystemSampler.sample does not.
   */
  sampleSystem?: () => Promise<SystemSample>;
}

/** The live view's rates cover at least this long: the page asks every second, a scraper at its own pace. */
const LIVE_RATE_PERIOD_MS = 900;

/** GET /status: the values a technician watches, read now, and the latest report (its shape is the contract's). */
export type { LiveStatus } from '../contract/status-page.js';

export class Health {
  /** The latest report; the one taken at start (seq 0, local only) until the first interval has passed. */
  latest: HealthReport | null = null;
  http: HealthHttpServer | null = null;
  private readonly settings: HealthConfig;
  private readonly sampler: Pick<SystemSampler, 'sample' | 'close'>;
  private readonly agent: AgentHealthProbe;
  /** The agent part of /status and /metrics, its rates over the last second or more. */
  private readonly live: AgentHealthProbe;
  private readonly freshness: ValueFreshness;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private nextAt = 0;
  private seq = 0;
  private closed = false;
  private lastProblem = '';

  private constructor(private readonly options: HealthOptions) {
    const { config } = options;
    this.settings = config.health ?? HEALTH_DEFAULTS;
    this.intervalMs = this.settings.intervalS * 1000;
    // The disk that matters is the one the outbox fills; without one, the agent's working directory.
    const diskPath = config.outbox ? path.dirname(config.outbox.path) : process.cwd();
    const sampleSystem = options.sampleSystem;
    this.sampler = sampleSystem
      ? { sample: sampleSystem, close: () => undefined }
      : new SystemSampler({ diskPath, timeoutMs: Math.min(5000, Math.max(500, this.intervalMs / 2)) });
    this.agent = new AgentHealthProbe(config);
    this.live = new AgentHealthProbe(config, LIVE_RATE_PERIOD_MS);
    this.freshness = new ValueFreshness(config, Date.now());
  }

  /** Publishes reports (the run has an uplink). */
  private get publishes(): boolean {
    return this.options.publish !== undefined;
  }

  /**
   * Starts health for a run: the report timer when there is an uplink to publish to or an endpoint to serve, and the
   * endpoint when health.http is enabled (without a health section: reports every 300 s, no endpoint). Never throws.
   */
  static async start(options: HealthOptions): Promise<Health> {
    const settings = options.config.health ?? HEALTH_DEFAULTS;
    const health = new Health(options);
    const serves = settings.http.enabled;
    if (!health.publishes && !serves) return health;
    if (serves) {
      // The live rates' first period starts now: the page has rates a second after the start.
      health.live.start(performance.now(), options.snapshot());
      health.http = await HealthHttpServer.start(settings.http, { status: () => health.status(), metrics: () => health.metrics() }, options.log.warn);
      if (health.http) options.log.info(`health: status page on ${health.http.url}`);
    }
    // The page could not start (port in use) and there is no uplink: a report would be taken for nobody.
    if (!health.publishes && !health.http) return health;
    // The counters' starting point, so the first interval's report has rates; with a page to fill, a whole report.
    const now = performance.now();
    if (health.http) health.take(false).catch(() => undefined);
    else health.agent.take(now, options.snapshot());
    health.nextAt = now + health.intervalMs;
    health.schedule();
    return health;
  }

  /** The /status document. */
  status(): LiveStatus {
    const { config } = this.options;
    const snapshot = this.options.snapshot();
    const { agent } = this.live.take(performance.now(), snapshot);
    const now = snapshot.ts;
    const dataPath = snapshot.dataPath;
    const link = dataPath?.link;
    let outbox: LiveStatus['outbox'] = null;
    if (dataPath) {
      const { messages, bytes, oldestCreatedAt: oldest } = dataPath.report.outbox;
      outbox = { messages, bytes, oldestAgeS: oldest === null ? null : Math.max(0, Math.round((now - oldest) / 100) / 10) };
    }
    return {
      deviceId: config.deviceId,
      tsMs: now,
      link: link
        ? { state: link.state, url: link.url, heartbeatS: link.heartbeat?.intervalS ?? config.uplink?.keepaliveS ?? null }
        : { state: 'none', url: null, heartbeatS: null },
      signals: snapshot.signals.map(({ name, value, text, receivedAt, periodMs }) => ({
        name,
        value,
        text,
        ...this.freshness.of(`signal ${name}`, receivedAt, periodMs, now),
      })),
      obd: snapshot.obd.map(({ name, value, text, receivedAt, periodMs }) => ({
        name,
        value,
        text,
        ...this.freshness.of(`obd ${name}`, receivedAt, periodMs, now),
      })),
      buses: snapshot.buses.map((bus, i) => ({
        name: bus.name,
        source: bus.source,
        frames: bus.frames,
        framesPerS: agent.buses[i]?.framesPerS ?? null,
        errors: bus.decodeErrors + bus.badLogLines + (bus.link?.errorFrames ?? 0),
        state: bus.link ? bus.link.state : null,
      })),
      outbox,
      agent,
      report: this.latest,
    };
  }

  /**
   * What getStatus returns: the agent part read now (the live view's, as /status and /metrics read it), the host's
   * latest sample, and the detail behind the heartbeat and throttle fields.
   */
  statusReport(): StatusReport {
    const snapshot = this.options.snapshot();
    const { agent } = this.live.take(performance.now(), snapshot);
    const uplink = snapshot.dataPath?.report.uplink;
    return {
      deviceId: this.options.config.deviceId,
      tsMs: snapshot.ts,
      agent,
      system: this.latest?.system ?? null,
      heartbeat: uplink?.heartbeat ?? null,
      throttle: uplink?.throttle ?? null,
    };
  }

  /** The /metrics exposition: the agent read now, the host from the latest report. */
  metrics(): string {
    const { agent } = this.live.take(performance.now(), this.options.snapshot());
    return renderMetrics(agent, this.latest);
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
      if (report && this.options.publish) this.options.publish(report);
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
      agent = this.agent.take(performance.now(), this.options.snapshot());
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
    this.options.log.warn(`health: ${message}`);
  }
}
