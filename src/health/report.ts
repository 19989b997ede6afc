/**
 * The health report: the host (system.ts) and the agent's own counters, in one stable JSON shape (docs/health.md).
 * Units are in the field names; counters count since the agent started; rates are deltas over the period since the
 * previous report (`periodS`), so they are null in the first one.
 *
 * The agent part is read from the agent's snapshot (src/agent/snapshot.ts), which reads state the run already keeps:
 * taking it costs a few property reads per bus. The report takes it at its interval; the live view behind /status and
 * /metrics (monitor.ts) takes the same part per request, with rates over the last second or more.
 */
import { PACKAGE_VERSION } from '../agent/package-version.js';
import type { AgentSnapshot, DataPathSnapshot } from '../agent/snapshot.js';
import type { DeviceConfig } from '../config/device-config.js';
import { CLOCK_OFFSET_WARN_MS, type PositionReading } from '../gnss/position.js';
import {
  HEALTH_REPORT_VERSION,
  type AgentHealth,
  type BusHealth,
  type CertificateHealth,
  type CollectorHealth,
  type CommandHealth,
  type GnssHealth,
  type HealthReport,
  type ObdHealth,
  type OutboxHealth,
  type UplinkHealth,
} from '../contract/health.js';

// The shapes are the contract's (src/contract/health.ts): one schema for the report, /status and getStatus.
export { HEALTH_REPORT_VERSION } from '../contract/health.js';
export type {
  AgentHealth,
  BusHealth,
  CertificateHealth,
  CollectorHealth,
  CommandHealth,
  GnssHealth,
  HealthReport,
  ObdHealth,
  OutboxHealth,
  UplinkHealth,
} from '../contract/health.js';

/** A position source's health: its latest fix, its last position and how old it is, and the clock check. */
function gnssHealth(name: string, via: string, state: string, reading: PositionReading, now: number): GnssHealth {
  const fix = reading.fix;
  const last = reading.lastPosition;
  const offset = reading.clockOffsetMs;
  return {
    name,
    via,
    state,
    mode: fix?.mode ?? 0,
    status: fix?.status ?? 0,
    lat: last?.lat ?? null,
    lon: last?.lon ?? null,
    altMSL: last?.altMSL ?? null,
    speed: last?.speed ?? null,
    track: last?.track ?? null,
    uSat: fix?.uSat ?? null,
    nSat: fix?.nSat ?? null,
    hdop: fix?.hdop ?? null,
    fixTime: last?.time !== undefined ? new Date(last.time).toISOString() : null,
    positionAgeS: reading.positionAt !== null ? round(Math.max(0, now - reading.positionAt) / 1000, 1) : null,
    clockOffsetS: offset !== null ? round(offset / 1000, 3) : null,
    clockWarning: offset !== null && Math.abs(offset) > CLOCK_OFFSET_WARN_MS,
    fixes: reading.fixes,
  };
}

/** The counters rates are measured from, at one reading. */
interface Counts {
  at: number;
  frames: number[];
  signals: number[];
  acknowledged: number;
}

/** Rates over one period; null where the period or a counter's start is missing. */
interface Rates {
  periodS: number | null;
  frames: (number | null)[];
  signals: (number | null)[];
  framesTotal: number | null;
  acknowledged: number | null;
}

const NO_RATES: Rates = { periodS: null, frames: [], signals: [], framesTotal: null, acknowledged: null };

/**
 * Takes the agent part, with its rates over the period since the reading before.
 *
 * `minPeriodMs` 0 (the report): every take ends one period and starts the next. Above 0 (the live view that /status
 * and /metrics read: the page asks every second, a Prometheus scraper at its own pace, both at once): a take sooner
 * than that after the period's start shows the rates last measured, so that two requests a few ms apart do not get
 * rates over a few ms, nor one reader's request cut short the other's period.
 */
export class AgentHealthProbe {
  private baseline: Counts | null = null;
  private rates: Rates = NO_RATES;

  /** `config`: the running device config (the configured keepalive, when the heartbeat is not adaptive). */
  constructor(
    private readonly config: DeviceConfig,
    private readonly minPeriodMs = 0,
  ) {}

  /** Starts the first period at `now` without taking a part: the live view's, when the agent opens. */
  start(now: number, snapshot: AgentSnapshot): void {
    this.baseline = countsOf(now, snapshot);
    this.rates = NO_RATES;
  }

  /**
   * `now`: performance.now() of the reading; `snapshot`: the agent's state at that moment. Returns the part and the
   * period its rates cover (null before a period has passed).
   */
  take(now: number, snapshot: AgentSnapshot): { agent: AgentHealth; periodS: number | null } {
    const previous = this.baseline;
    if (previous === null || now - previous.at >= this.minPeriodMs) {
      const counts = countsOf(now, snapshot);
      this.rates = previous && now > previous.at ? ratesBetween(previous, counts) : NO_RATES;
      this.baseline = counts;
    }
    const rates = this.rates;
    const { buses, adapters } = snapshot;

    const busHealth = buses.map((bus, i): BusHealth => ({
      name: bus.name,
      source: bus.source,
      frames: bus.frames,
      framesPerS: rates.frames[i] ?? null,
      signalsPerS: rates.signals[i] ?? null,
      unknownFrames: bus.unknownFrames,
      decodeErrors: bus.decodeErrors,
      malformedLogLines: bus.badLogLines,
      errorFrames: bus.link ? bus.link.errorFrames : null,
      kernelDrops: bus.link?.kernelDrops ?? null,
      interfaceState: bus.link ? bus.link.state : null,
      controllerState: bus.link ? bus.link.controllerState : null,
    }));

    const obd: ObdHealth[] = [];
    for (const bus of buses) {
      if (!bus.obd) continue;
      const o = bus.obd;
      obd.push({
        name: bus.name,
        via: 'can',
        connected: o.connected,
        state: bus.link?.state ?? 'unknown',
        requests: o.requests,
        answers: o.samples,
        unsupportedPids: o.unsupported,
      });
    }
    for (const adapter of adapters) {
      if (!adapter.obd) continue;
      const o = adapter.obd;
      obd.push({
        name: adapter.name,
        via: adapter.type,
        connected: o.connected,
        state: adapter.state,
        requests: o.requests,
        answers: o.samples,
        unsupportedPids: o.unsupported,
      });
    }

    const gnss: GnssHealth[] = [];
    for (const adapter of adapters) if (adapter.position) gnss.push(gnssHealth(adapter.name, adapter.type, adapter.state, adapter.position, now));

    const fromDataPath = snapshot.dataPath ? readDataPath(snapshot.dataPath, this.config) : null;
    const uplink = fromDataPath?.uplink ?? null;
    if (uplink) uplink.acknowledgedPerS = rates.acknowledged;

    const memory = process.memoryUsage();
    return {
      periodS: rates.periodS,
      agent: {
        version: PACKAGE_VERSION,
        processUptimeS: round(process.uptime(), 1),
        rssBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        buses: busHealth,
        framesPerS: rates.framesTotal,
        decodeErrors: buses.reduce((sum, bus) => sum + bus.decodeErrors, 0),
        obd,
        gnss,
        collector: fromDataPath?.collector ?? null,
        outbox: fromDataPath?.outbox ?? null,
        uplink,
        certificate: fromDataPath?.certificate ?? null,
        commands: fromDataPath?.commands ?? null,
        lastError: snapshot.lastError,
      },
    };
  }
}

function countsOf(at: number, snapshot: AgentSnapshot): Counts {
  return {
    at,
    frames: snapshot.buses.map((b) => b.frames),
    signals: snapshot.buses.map((b) => b.signals),
    acknowledged: snapshot.dataPath?.link?.publisher.acknowledged ?? 0,
  };
}

/** Per second between two readings (`after` later than `before`); a bus without a starting count has no rate. */
function ratesBetween(before: Counts, after: Counts): Rates {
  const periodS = (after.at - before.at) / 1000;
  const rate = (current: number, start: number | undefined): number | null => (start === undefined ? null : round((current - start) / periodS, 2));
  const total = (list: number[]): number => list.reduce((sum, n) => sum + n, 0);
  return {
    periodS: round(periodS, 3),
    frames: after.frames.map((n, i) => rate(n, before.frames[i])),
    signals: after.signals.map((n, i) => rate(n, before.signals[i])),
    framesTotal: rate(total(after.frames), total(before.frames)),
    acknowledged: rate(after.acknowledged, before.acknowledged),
  };
}

/** The data path's part, from its report (outbox, collector, commands, certificate) and its link. */
function readDataPath(dataPath: DataPathSnapshot, config: DeviceConfig): Pick<AgentHealth, 'collector' | 'outbox' | 'uplink' | 'certificate' | 'commands'> {
  const report = dataPath.report;
  const now = Date.now();

  const o = report.outbox;
  const oldest = o.oldestCreatedAt ?? NaN;
  const outbox: OutboxHealth = {
    messages: o.messages,
    bytes: o.bytes,
    oldestAgeS: Number.isFinite(oldest) ? round(Math.max(0, now - oldest) / 1000, 1) : null,
    evicted: o.evicted.count,
    evictedBytes: o.evicted.bytes,
    expired: o.expired,
    rejected: o.rejected,
    setAsideFiles: o.setAside.files,
    setAsideBytes: o.setAside.bytes,
    fileLostWhileRunning: o.fileLostWhileRunning,
    nextSeq: o.nextSeq,
    lossNotices: o.lossNotices,
    lostAnnounced: o.lostAnnounced,
  };

  const c = report.collector;
  const collector: CollectorHealth = { samples: c.samples, batches: c.batches, triggers: c.triggers, droppedBatches: c.droppedBatches };

  const d = report.commands;
  let commands: CommandHealth | null = null;
  if (d) {
    const byReason: Record<string, number> = {};
    for (const [reason, n] of Object.entries(d.rejected)) byReason[reason] = count(n);
    commands = {
      received: d.received,
      accepted: d.accepted,
      succeeded: d.succeeded,
      failed: d.failed,
      timedOut: d.timedOut,
      rejected: Object.values(byReason).reduce((sum, n) => sum + n, 0),
      rejectedByReason: byReason,
      running: d.running,
      lostResults: d.lostResults,
      unanswerable: d.unanswerable,
      unsignedNotAnswered: d.unsignedNotAnswered,
    };
  }

  return { outbox, collector, commands, certificate: readCertificate(report.certificate), uplink: readUplink(dataPath, config) };
}

/**
 * The certificate part the data path reports once it knows its identity: `{ notAfter, daysLeft, expiringSoon, ... }`
 * (expiringSoon against health.certificateWarningDays, which the data path's daily check warns by too).
 */
function readCertificate(cert: DataPathSnapshot['report']['certificate']): CertificateHealth | null {
  if (!cert || !Number.isFinite(cert.daysLeft)) return null;
  const date = new Date(cert.notAfter);
  const notAfter = Number.isFinite(date.getTime()) ? date.toISOString() : null;
  return { notAfter, fingerprint256: cert.fingerprint256, daysLeft: round(cert.daysLeft, 1), expiringSoon: cert.expiringSoon === true };
}

function readUplink(dataPath: DataPathSnapshot, config: DeviceConfig): UplinkHealth | null {
  const link = dataPath.link;
  if (!link) return null;
  const { counters, publisher: stats, heartbeat: beat } = link;
  return {
    state: link.state,
    url: link.url,
    acknowledged: stats.acknowledged,
    acknowledgedPerS: null,
    sent: stats.published,
    resent: stats.resent,
    refused: stats.refused,
    dropped: stats.dropped,
    inflight: stats.inflight,
    connectAttempts: counters.attempts,
    connections: counters.connections,
    reconnects: Math.max(0, counters.connections - 1),
    losses: counters.losses,
    throttled: link.throttled,
    heartbeat: beat
      ? {
          adaptive: true,
          intervalS: beat.intervalS,
          phase: beat.phase,
          network: beat.network,
          rttMs: beat.rttMs === null ? null : Math.round(beat.rttMs),
          deadLinks: beat.deadLinks,
        }
      : { adaptive: false, intervalS: config.uplink?.keepaliveS ?? 60, phase: null, network: null, rttMs: null, deadLinks: 0 },
  };
}

function count(value: unknown, otherwise = 0): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : otherwise;
}

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

/** Assembles the report from its two parts. */
export function healthReport(parts: Omit<HealthReport, 'version'>): HealthReport {
  return { version: HEALTH_REPORT_VERSION, ...parts };
}
