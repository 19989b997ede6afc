/**
 * The health report: the host (system.ts) and the agent's own counters, in one stable JSON shape (docs/health.md).
 * Units are in the field names; counters count since the agent started; rates are deltas over the period since the
 * previous report (`periodS`), so they are null in the first one.
 *
 * Everything here reads state the run already keeps (BusDecoder counters, the live buses, the OBD pollers, the data
 * path's health report and its uplink): taking a report costs a few property reads per bus, at the report interval.
 */
import type { BusDecoder } from '../dbc/bus-decoder.js';
import type { DataPath } from '../cli/data-path.js';
import type { LiveObdAdapter } from '../cli/live-adapter.js';
import type { LiveBus } from '../cli/live-bus.js';
import type { DeviceConfig } from '../config/device-config.js';
import type { SystemSample } from './system.js';

/** Bumped when a field changes meaning or goes away (adding fields keeps it). */
export const HEALTH_REPORT_VERSION = 1;

export interface BusHealth {
  name: string;
  /** sim, replay or socketcan. */
  source: string;
  frames: number;
  framesPerS: number | null;
  signalsPerS: number | null;
  unknownFrames: number;
  decodeErrors: number;
  malformedLogLines: number;
  /** SocketCAN buses only (null otherwise): error frames the controller reported, interface and controller state. */
  errorFrames: number | null;
  interfaceState: string | null;
  controllerState: string | null;
}

export interface ObdHealth {
  /** The bus or adapter name. */
  name: string;
  via: 'can' | 'elm327';
  /** A client to the ECUs exists (interface open, adapter ready). */
  connected: boolean;
  /** The adapter's state (elm327) or the interface's (can). */
  state: string;
  requests: number;
  /** Values the ECUs returned. */
  answers: number;
  unsupportedPids: number;
}

export interface OutboxHealth {
  messages: number;
  bytes: number;
  /** Age of the oldest message waiting; null when empty. */
  oldestAgeS: number | null;
  evicted: number;
  evictedBytes: number;
  expired: number;
  rejected: number;
  /** Damaged outbox files kept beside it for a person (counted against maxBytes), and their size. */
  setAsideFiles: number;
  setAsideBytes: number;
  /** Times the outbox file was found deleted or replaced under the running agent (its content carried over). */
  fileLostWhileRunning: number;
}

export interface UplinkHealth {
  state: string;
  url: string;
  /** Outbox messages the broker acknowledged (each deleted from the outbox). */
  acknowledged: number;
  acknowledgedPerS: number | null;
  /** Publishes sent, resends included. */
  sent: number;
  resent: number;
  refused: number;
  dropped: number;
  inflight: number;
  connectAttempts: number;
  connections: number;
  /** Connections after the first. */
  reconnects: number;
  /** Established connections that were lost. */
  losses: number;
  /** The data plan's budget is holding messages back. */
  throttled: boolean;
  heartbeat: {
    adaptive: boolean;
    /** The learned (adaptive) or configured keepalive interval. */
    intervalS: number;
    phase: string | null;
    network: string | null;
    rttMs: number | null;
    deadLinks: number;
  };
}

export interface CertificateHealth {
  /** ISO 8601. */
  notAfter: string | null;
  fingerprint256: string | null;
  daysLeft: number;
  /** daysLeft is at most health.certificateWarningDays. */
  expiringSoon: boolean;
}

export interface CommandHealth {
  received: number;
  accepted: number;
  succeeded: number;
  failed: number;
  timedOut: number;
  rejected: number;
  rejectedByReason: Record<string, number>;
  running: number;
  lostResults: number;
  /** Payloads that could not be answered: no readable ID and no usable response topic. */
  unanswerable: number;
  /** Payloads not validly signed whose rejection was not sent: beyond the answers allowed per minute. */
  unsignedNotAnswered: number;
}

export interface CollectorHealth {
  samples: number;
  batches: number;
  triggers: number;
  droppedBatches: number;
}

export interface AgentHealth {
  processUptimeS: number;
  rssBytes: number;
  heapUsedBytes: number;
  buses: BusHealth[];
  /** All buses together. */
  framesPerS: number | null;
  decodeErrors: number;
  obd: ObdHealth[];
  collector: CollectorHealth | null;
  outbox: OutboxHealth | null;
  uplink: UplinkHealth | null;
  certificate: CertificateHealth | null;
  commands: CommandHealth | null;
}

export interface HealthReport {
  version: number;
  deviceId: string;
  /** Reports taken since the agent started, from 1: a gap means one was not received. */
  seq: number;
  /** When the report was taken, ms since the epoch. */
  tsMs: number;
  /** The configured interval. */
  intervalS: number;
  /** What the rates cover: seconds since the previous report; null in the first. */
  periodS: number | null;
  system: SystemSample;
  agent: AgentHealth;
}

/** The parts of the run the agent part is read from. */
export interface AgentSources {
  config: DeviceConfig;
  buses: readonly BusDecoder[];
  /** Per bus, in config order: its live parts when it is a SocketCAN bus. */
  live: readonly (LiveBus | undefined)[];
  adapters: readonly LiveObdAdapter[];
  dataPath: DataPath | undefined;
}

interface Baseline {
  at: number;
  frames: number[];
  signals: number[];
  acknowledged: number;
}

/** Takes the agent part, remembering the counters so that the next one has rates over the period between them. */
export class AgentHealthProbe {
  private baseline: Baseline | null = null;

  constructor(private readonly sources: AgentSources) {}

  /** `now`: performance.now() of the report. Returns the part and the period its rates cover (null the first time). */
  take(now: number): { agent: AgentHealth; periodS: number | null } {
    const { config, buses, live, adapters, dataPath } = this.sources;
    const previous = this.baseline;
    const periodS = previous && now > previous.at ? (now - previous.at) / 1000 : null;
    const rate = (current: number, before: number | undefined): number | null =>
      periodS === null || before === undefined ? null : round((current - before) / periodS, 2);

    const busHealth = buses.map((bus, i): BusHealth => {
      const liveBus = live[i];
      return {
        name: bus.name,
        source: config.buses[i]?.source.type ?? 'unknown',
        frames: bus.frames,
        framesPerS: rate(bus.frames, previous?.frames[i]),
        signalsPerS: rate(bus.signals, previous?.signals[i]),
        unknownFrames: bus.unknownFrames,
        decodeErrors: bus.decodeErrors,
        malformedLogLines: bus.badLogLines,
        errorFrames: liveBus ? liveBus.source.health.counters.errorFrames : null,
        interfaceState: liveBus ? liveBus.source.state : null,
        controllerState: liveBus ? liveBus.source.health.state : null,
      };
    });
    const totalFrames = buses.reduce((sum, bus) => sum + bus.frames, 0);
    const previousFrames = previous?.frames.reduce((sum, n) => sum + n, 0);

    const obd: ObdHealth[] = [];
    live.forEach((liveBus) => {
      if (!liveBus?.obd) return;
      const s = liveBus.obd.summary();
      obd.push({ name: liveBus.bus.name, via: 'can', connected: liveBus.obd.client !== undefined, state: liveBus.source.state, requests: s.requests, answers: s.samples, unsupportedPids: s.unsupported });
    });
    for (const adapter of adapters) {
      const s = adapter.obd.summary();
      obd.push({ name: adapter.config.name, via: 'elm327', connected: adapter.obd.client !== undefined, state: adapter.lastState, requests: s.requests, answers: s.samples, unsupportedPids: s.unsupported });
    }

    const fromDataPath = dataPath ? readDataPath(dataPath, config) : null;
    const acknowledged = dataPath?.uplink?.publisher.stats.acknowledged ?? 0;
    const uplink = fromDataPath?.uplink ?? null;
    if (uplink) uplink.acknowledgedPerS = rate(acknowledged, previous?.acknowledged);

    const memory = process.memoryUsage();
    this.baseline = { at: now, frames: buses.map((b) => b.frames), signals: buses.map((b) => b.signals), acknowledged };
    return {
      periodS: periodS === null ? null : round(periodS, 3),
      agent: {
        processUptimeS: round(process.uptime(), 1),
        rssBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        buses: busHealth,
        framesPerS: rate(totalFrames, previousFrames),
        decodeErrors: buses.reduce((sum, bus) => sum + bus.decodeErrors, 0),
        obd,
        collector: fromDataPath?.collector ?? null,
        outbox: fromDataPath?.outbox ?? null,
        uplink,
        certificate: fromDataPath?.certificate ?? null,
        commands: fromDataPath?.commands ?? null,
      },
    };
  }
}

/** The data path's part, from its own health report (outbox, collector, commands, certificate) and its uplink. */
function readDataPath(
  dataPath: DataPath,
  config: DeviceConfig,
): Pick<AgentHealth, 'collector' | 'outbox' | 'uplink' | 'certificate' | 'commands'> {
  const report = dataPath.healthReport();
  const now = Date.now();

  const o = record(report.outbox);
  const evicted = record(o?.evicted);
  const oldest = count(o?.oldestCreatedAt, NaN);
  const outbox: OutboxHealth | null = o
    ? {
        messages: count(o.messages),
        bytes: count(o.bytes),
        oldestAgeS: Number.isFinite(oldest) ? round(Math.max(0, now - oldest) / 1000, 1) : null,
        evicted: count(evicted?.count),
        evictedBytes: count(evicted?.bytes),
        expired: count(o.expired),
        rejected: count(o.rejected),
        setAsideFiles: count(record(o.setAside)?.files),
        setAsideBytes: count(record(o.setAside)?.bytes),
        fileLostWhileRunning: count(o.fileLostWhileRunning),
      }
    : null;

  const c = record(report.collector);
  const collector: CollectorHealth | null = c
    ? { samples: count(c.samples), batches: count(c.batches), triggers: count(c.triggers), droppedBatches: count(c.droppedBatches) }
    : null;

  const d = record(report.commands);
  let commands: CommandHealth | null = null;
  if (d) {
    const byReason: Record<string, number> = {};
    for (const [reason, n] of Object.entries(record(d.rejected) ?? {})) byReason[reason] = count(n);
    commands = {
      received: count(d.received),
      accepted: count(d.accepted),
      succeeded: count(d.succeeded),
      failed: count(d.failed),
      timedOut: count(d.timedOut),
      rejected: Object.values(byReason).reduce((sum, n) => sum + n, 0),
      rejectedByReason: byReason,
      running: count(d.running),
      lostResults: count(d.lostResults),
      unanswerable: count(d.unanswerable),
      unsignedNotAnswered: count(d.unsignedNotAnswered),
    };
  }

  return { outbox, collector, commands, certificate: readCertificate(report.certificate), uplink: readUplink(dataPath, config) };
}

/**
 * The certificate part the data path reports once it knows its identity: `{ notAfter, daysLeft, expiringSoon, ... }`
 * (expiringSoon against health.certificateWarningDays, which the data path's daily check warns by too).
 */
function readCertificate(value: unknown): CertificateHealth | null {
  const cert = record(value);
  const daysLeft = cert?.daysLeft;
  if (!cert || typeof daysLeft !== 'number' || !Number.isFinite(daysLeft)) return null;
  let notAfter: string | null = null;
  const raw = cert.notAfter;
  const date = raw instanceof Date ? raw : typeof raw === 'number' || typeof raw === 'string' ? new Date(raw) : null;
  if (date && Number.isFinite(date.getTime())) notAfter = date.toISOString();
  const fingerprint256 = typeof cert.fingerprint256 === 'string' ? cert.fingerprint256 : null;
  return { notAfter, fingerprint256, daysLeft: round(daysLeft, 1), expiringSoon: cert.expiringSoon === true };
}

function readUplink(dataPath: DataPath, config: DeviceConfig): UplinkHealth | null {
  const uplink = dataPath.uplink;
  if (!uplink) return null;
  const counters = uplink.session.counters;
  const stats = uplink.publisher.stats;
  const beat = uplink.heartbeat?.status();
  return {
    state: uplink.session.state,
    url: uplink.url,
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
    throttled: uplink.throttle.state.limited,
    heartbeat: beat
      ? { adaptive: true, intervalS: beat.intervalS, phase: beat.phase, network: beat.network, rttMs: beat.rttMs === null ? null : Math.round(beat.rttMs), deadLinks: beat.deadLinks }
      : { adaptive: false, intervalS: config.uplink?.keepaliveS ?? 60, phase: null, network: null, rttMs: null, deadLinks: 0 },
  };
}

function record(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

function count(value: unknown, otherwise = 0): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : otherwise;
}

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

/** Assembles the report from its two parts. */
export function healthReport(parts: { deviceId: string; seq: number; tsMs: number; intervalS: number; periodS: number | null; system: SystemSample; agent: AgentHealth }): HealthReport {
  return { version: HEALTH_REPORT_VERSION, ...parts };
}
