/**
 * The agent's state at one moment, as one typed plain object: what the status line, the status page, /metrics, the
 * health report and the getStatus command all read, each in its own documented shape. Built from the counters the run
 * keeps anyway (the decoders', the sources' and pollers' status, the data path's report): taking one costs a few
 * property reads per bus and one outbox statistics call, at the pace of whoever asks (once a second for the status
 * line and the page, once per scrape for /metrics), never per frame.
 *
 * `takeSnapshot` never throws for a part that is missing: a context built for a test without sources or data path
 * gets a snapshot without them.
 */
import type { DeviceConfig } from '../config/device-config.js';
import type { LastError } from '../contract/health.js';
import type { BusDecoder } from '../dbc/bus-decoder.js';
import { MODE01_PIDS_BY_KEY } from '../obd/j1979.js';
import { heartbeatText } from '../uplink/keepalive.js';
import type { DataPath, DataPathSnapshot } from './data-path.js';
import { formatPidValue, type ObdPollingStatus } from './obd-polling.js';
import { adapterType } from './sources/registry.js';
import type { Adapter, BusLinkStatus, BusSource } from './sources/source-type.js';
import { formatStatusValue, type StatusSignal } from './status-signals.js';
import type { PositionReading } from '../gnss/position.js';

export type { DataPathSnapshot } from './data-path.js';

export interface BusSnapshot {
  name: string;
  /** The source's type: sim, replay, socketcan, or one registered at run time. */
  source: string;
  /** What delivers its frames: `sim:demo`, `replay:drive.log`, `socketcan:can0`. */
  sourceName: string;
  frames: number;
  signals: number;
  unknownFrames: number;
  decodeErrors: number;
  /** Malformed lines of a replayed log, skipped. */
  badLogLines: number;
  /** The link to a controller (SocketCAN buses); null for sources without one. */
  link: BusLinkStatus | null;
  /** The OBD-II poller on this bus (`buses[].obd`); null without one. */
  obd: ObdPollingStatus | null;
}

export interface AdapterSnapshot {
  name: string;
  /** The adapter's type: elm327, or one registered at run time. */
  type: string;
  /** Its state (an ELM327's: idle, ready…); once the run has stopped, the state before it closed. */
  state: string;
  /** Where it is reached (a serial port). */
  port: string;
  /** The status line's words for it: `obd ready (ELM327 v1.5)`. */
  text: string;
  obd: ObdPollingStatus | null;
  /** A position source's latest fix and its age; null for other adapters. */
  position: PositionReading | null;
}

export interface SignalSnapshot {
  /** As configured in status.signals, or `[bus.]Message.Signal` for the defaults. */
  name: string;
  /** The DBC signal's own name (what the status line shows). */
  signal: string;
  /** Null until a value was received. */
  value: number | null;
  /** A value-table label, or the value to the signal's resolution with its unit; '–' before any value. */
  text: string;
  /**
   * When the frame that carried the latest value was received, unix ms, by the source's clock (a replayed log's own
   * time); null before any value.
   */
  receivedAt: number | null;
  /** How often a value is expected, ms: its message's GenMsgCycleTime; null when the DBC gives none. */
  periodMs: number | null;
}

export interface ObdValueSnapshot {
  /** `<adapter or bus>.obd.<key>`, the name the collection rules get it under. */
  name: string;
  value: number;
  /** The value to one decimal with its J1979 unit: `812 rpm`. */
  text: string;
  /** When it arrived, unix ms. */
  receivedAt: number | null;
  /** How often it is polled, ms; null when the config does not say (a PID asked for by number only). */
  periodMs: number | null;
}

export interface AgentSnapshot {
  deviceId: string;
  /** When it was taken, unix ms. */
  ts: number;
  /** In config order. */
  buses: BusSnapshot[];
  /** `obdAdapters`, in config order. */
  adapters: AdapterSnapshot[];
  /** The latest numeric OBD-II values, by the name the collector gets them under (`<adapter or bus>.obd.<key>`). */
  obd: ObdValueSnapshot[];
  /** The status signals: status.signals, or (`signalsConfigured` false) the first signals of the bus DBCs. */
  signals: SignalSnapshot[];
  /** True when `signals` are the configured status.signals, which the status line shows. */
  signalsConfigured: boolean;
  /** With a collection section. */
  dataPath: DataPathSnapshot | null;
  /** The latest error-level log entry since the start (the health report's `agent.lastError`); null while none. */
  lastError: LastError | null;
}

/** The parts a snapshot is taken from; every one but the config and the decoders may be absent. */
export interface SnapshotParts {
  config: DeviceConfig;
  /** The decoders of the buses, in config order. */
  buses: readonly BusDecoder[];
  /** Per bus, in config order: its created source. */
  sources?: readonly BusSource[];
  /** Per adapter, in config order. */
  adapters?: readonly Adapter[];
  /** The latest OBD values, by collector name; when each arrived (unix ms) and how often each is polled (ms). */
  obdValues?: ReadonlyMap<string, number>;
  obdReceivedAt?: ReadonlyMap<string, number>;
  obdIntervals?: ReadonlyMap<string, number>;
  signals?: { signals: readonly StatusSignal[]; configured: boolean };
  dataPath?: DataPath | undefined;
  lastError?: LastError | null;
}

/** The agent's state now. */
export function takeSnapshot(parts: SnapshotParts): AgentSnapshot {
  const { config, buses, sources = [], adapters = [], dataPath } = parts;
  return {
    deviceId: config.deviceId,
    ts: Date.now(),
    buses: buses.map((bus, i): BusSnapshot => {
      const source = sources[i];
      const type = config.buses[i]?.source.type ?? 'unknown';
      return {
        name: bus.name,
        source: type,
        sourceName: source?.frames.name ?? type,
        frames: bus.frames,
        signals: bus.signals,
        unknownFrames: bus.unknownFrames,
        decodeErrors: bus.decodeErrors,
        badLogLines: bus.badLogLines,
        link: source?.link() ?? null,
        obd: source?.obd?.status() ?? null,
      };
    }),
    adapters: adapters.map((adapter, i): AdapterSnapshot => {
      const entry = config.obdAdapters[i]!;
      const { position, ...status } = adapter.status();
      return { name: entry.name, type: adapterType(entry).type, ...status, obd: adapter.obd?.status() ?? null, position: position ?? null };
    }),
    // The values adapters offer hold GNSS fields too (`<name>.gnss.<key>`): only OBD PIDs are OBD values.
    obd: [...(parts.obdValues ?? [])]
      .filter(([name]) => name.includes('.obd.'))
      .map(([name, value]): ObdValueSnapshot => ({
        name,
        value,
        text: formatPidValue(value, MODE01_PIDS_BY_KEY.get(name.slice(name.lastIndexOf('.obd.') + 5))?.unit ?? ''),
        receivedAt: parts.obdReceivedAt?.get(name) ?? null,
        periodMs: parts.obdIntervals?.get(name) ?? null,
      })),
    signals: (parts.signals?.signals ?? []).map((entry): SignalSnapshot => {
      const value = entry.bus.values[entry.slot]!;
      // Frame times are seconds; 0 is the decoder's "never".
      const at = entry.bus.receivedAt[entry.slot]!;
      return {
        name: entry.name,
        signal: entry.signal.name,
        value: Number.isNaN(value) ? null : value,
        text: formatStatusValue(entry, value),
        receivedAt: at > 0 ? at * 1000 : null,
        periodMs: entry.periodMs,
      };
    }),
    signalsConfigured: parts.signals?.configured ?? false,
    dataPath: dataPath?.snapshot() ?? null,
    lastError: parts.lastError ?? null,
  };
}

/** What rates are computed from: a bus's counters (a BusDecoder, a BusSnapshot). */
interface BusCounts {
  readonly frames: number;
  readonly signals: number;
}

/** Frames and signals decoded, all buses together, and their rates between two calls. */
export class FrameRates {
  private at = performance.now();
  private frames: number;
  private signals: number;

  /** Counts from `buses`' counters now. */
  constructor(buses: readonly BusCounts[]) {
    this.frames = sum(buses, 'frames');
    this.signals = sum(buses, 'signals');
  }

  /** The rates since the previous call (or since construction), per second, rounded. */
  next(buses: readonly BusCounts[]): { framesPerS: number; signalsPerS: number } {
    const now = performance.now();
    const frames = sum(buses, 'frames');
    const signals = sum(buses, 'signals');
    const seconds = Math.max(1e-3, (now - this.at) / 1000);
    const rates = { framesPerS: Math.round((frames - this.frames) / seconds), signalsPerS: Math.round((signals - this.signals) / seconds) };
    this.at = now;
    this.frames = frames;
    this.signals = signals;
    return rates;
  }
}

function sum(buses: readonly BusCounts[], key: keyof BusCounts): number {
  let n = 0;
  for (const bus of buses) n += bus[key];
  return n;
}

/** The data path's part of the status line: `uplink connected, heartbeat 42 s, 1204 published, 3 buffered (12 kB)`. */
export function dataPathText(dataPath: DataPathSnapshot): string {
  const { outbox } = dataPath.report;
  const buffered = `${outbox.messages} buffered (${formatBytes(outbox.bytes)})`;
  const link = dataPath.link;
  if (!link) return `${dataPath.messages} messages, ${buffered}`;
  const limited = link.throttled ? ', budget exhausted' : '';
  const heartbeat = link.heartbeat ? `, ${heartbeatText(link.heartbeat)}` : '';
  return `uplink ${link.state}${heartbeat}, ${link.publisher.acknowledged} published, ${buffered}${limited}`;
}

/** A byte count as the status line shows it: `512 B`, `12 kB`, `3.4 MB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
