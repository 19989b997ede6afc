/**
 * OBD-II polling in the agent: a PID poller (src/obd/poller.ts) kept going over a link to the car that comes and
 * goes (a SocketCAN interface, an ELM327 adapter), its latest readings for the status line, and its values handed on
 * to the collector as `<source>.obd.<key>`. The source plug-ins (src/agent/sources/) open the link; this runs it.
 *
 * Never fails the agent: a link that is down pauses polling, OBD trouble is reported once per kind and polling
 * carries on. Nothing here runs per CAN frame.
 */
import type { ComponentLog } from '../health/log.js';
import { ObdRequestError } from '../obd/can-client.js';
import type { ObdClient } from '../obd/client.js';
import { resolveObdPid, type ObdConfig } from '../obd/config.js';
import type { PidValue } from '../obd/j1979.js';
import { PidPoller, type PidSample, type UnsupportedPid } from '../obd/poller.js';

/** Latest reading of one (ECU, PID). */
interface LatestReading {
  order: number;
  ecu: number;
  name: string;
  value: PidValue;
  unit: string;
}

export interface ObdPollingSummary {
  samples: number;
  requests: number;
  unsupported: number;
}

/** An OBD poller as the agent's snapshot shows it (src/agent/snapshot.ts). */
export interface ObdPollingStatus extends ObdPollingSummary {
  /** A client to the ECUs exists: the link (interface, adapter) is up. */
  connected: boolean;
  /** The status line's words: `OBD rpm 812, speed 42 km/h`, or what it waits for. */
  text: string;
}

/** What the poller reads through (also what remote commands use: DTCs, VIN), and how the owner closes it. */
export interface ObdConnection {
  readonly reader: ObdClient;
  close(): void;
}

/** Opens the connection; `onLinkChange(true)` when requests can go through, `false` when they cannot. */
export type ObdConnector = (onLinkChange: (open: boolean) => void) => ObdConnection;

/** What an OBD poller is configured with, on a bus or an adapter. */
export type ObdPollingConfig = Pick<ObdConfig, 'pids' | 'budget' | 'backoff'>;

/** An OBD-II poller, paused while its link to the car (CAN interface, ELM327 adapter) is down. */
export class ObdPolling {
  private readonly latest = new Map<number, LatestReading>();
  private readonly order: Map<number, number>;
  private readonly reportedUnsupported = new Set<string>();
  private lastProblem: string | null = null;
  private linkOpen = false;
  private openWaiters: (() => void)[] = [];
  private endRound: (() => void) | null = null;
  private poller: PidPoller | null = null;
  private connection: ObdConnection | null = null;
  private multipleEcus = false;

  constructor(
    private readonly config: ObdPollingConfig,
    private readonly connect: ObdConnector,
    /** The bus's or adapter's log: trouble at warn, recovery at info. */
    private readonly log: Pick<ComponentLog, 'info' | 'warn'>,
    /** What the poller waits for while the link is down, for the status line: 'the interface', 'the adapter'. */
    private readonly linkName: string,
  ) {
    // Config order is display order; the config has been validated, so every PID resolves.
    this.order = new Map(config.pids.map((spec, k) => [resolveObdPid(spec.pid)!.pid, k]));
  }

  /** Polls until `signal` aborts. Never rejects: OBD trouble is reported, once per kind, and polling carries on. */
  async run(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    const connection = this.connect(this.onLinkChange);
    this.connection = connection;
    const poller = new PidPoller(
      connection.reader,
      {
        pids: this.config.pids,
        ...(this.config.budget ? { budget: this.config.budget } : {}),
        ...(this.config.backoff ? { backoff: this.config.backoff } : {}),
      },
      {
        onSample: this.onSample,
        onUnsupported: this.onUnsupported,
        onBehind: (behind) => {
          if (behind) this.log.warn('OBD polling is behind schedule: the budget or the bus cannot carry the configured intervals');
          else this.log.info('OBD polling is on schedule again');
        },
        onError: this.onError,
      },
    );
    this.poller = poller;
    const wakeOnAbort = (): void => this.wakeWaiters();
    signal.addEventListener('abort', wakeOnAbort, { once: true });
    try {
      while (!signal.aborted) {
        await this.untilLinkOpen(signal);
        if (signal.aborted) break;
        const round = new AbortController();
        const endRound = (): void => round.abort();
        this.endRound = endRound;
        signal.addEventListener('abort', endRound, { once: true });
        try {
          await poller.run(round.signal);
        } catch (err) {
          // Not expected (the poller reports through onError); pause rather than spin, and keep the agent running.
          this.onError(err instanceof Error ? err : new Error(String(err)));
          await pause(5000, signal);
        } finally {
          signal.removeEventListener('abort', endRound);
          this.endRound = null;
        }
      }
    } finally {
      signal.removeEventListener('abort', wakeOnAbort);
      this.connection = null;
      connection.close();
    }
  }

  /**
   * The OBD client while its link to the car is up, for requests besides polling (remote commands: DTCs, VIN). The
   * client queues requests, so these wait for the poll in flight rather than interleave with it.
   */
  get client(): ObdClient | undefined {
    return this.linkOpen && this.connection !== null ? this.connection.reader : undefined;
  }

  /** `OBD rpm 812, speed 42 km/h`; the ECU is named when more than one answers. */
  statusText(): string {
    if (this.latest.size === 0) return this.linkOpen ? 'OBD waiting for ECUs' : `OBD waiting for ${this.linkName}`;
    const readings = [...this.latest.values()].sort((a, b) => a.order - b.order || a.ecu - b.ecu);
    return `OBD ${readings.map((r) => `${r.name}${this.multipleEcus ? `[${r.ecu}]` : ''} ${formatPidValue(r.value, r.unit)}`).join(', ')}`;
  }

  summary(): ObdPollingSummary {
    const status = this.poller?.status;
    return { samples: status?.samples ?? 0, requests: status?.requests ?? 0, unsupported: this.reportedUnsupported.size };
  }

  status(): ObdPollingStatus {
    return { connected: this.client !== undefined, ...this.summary(), text: this.statusText() };
  }

  private readonly onLinkChange = (open: boolean): void => {
    if (open === this.linkOpen) return;
    this.linkOpen = open;
    if (open) this.wakeWaiters();
    // Requests would only fail until the interface is back: stop this round and wait for it.
    else this.endRound?.();
  };

  private valueSink: ((name: string, value: number, ts: number) => void) | null = null;
  private valuePrefix = '';

  /** Hands every numeric PID value on as `<source>.obd.<key>` (the collection rules' name for it). */
  forwardValues(source: string, sink: (name: string, value: number, ts: number) => void): void {
    this.valuePrefix = `${source}.obd.`;
    this.valueSink = sink;
  }

  private readonly onSample = (sample: PidSample): void => {
    if (this.valueSink !== null && typeof sample.value === 'number') this.valueSink(this.valuePrefix + sample.name, sample.value, sample.ts);
    const key = sample.ecu * 256 + sample.pid;
    let reading = this.latest.get(key);
    if (reading === undefined) {
      reading = { order: this.order.get(sample.pid) ?? 256, ecu: sample.ecu, name: sample.name, value: sample.value, unit: sample.unit };
      this.latest.set(key, reading);
      this.multipleEcus = new Set([...this.latest.values()].map((r) => r.ecu)).size > 1;
    } else reading.value = sample.value;
    if (this.lastProblem !== null) {
      this.lastProblem = null;
      this.log.info('OBD: ECUs are answering again');
    }
  };

  private readonly onUnsupported = (pid: UnsupportedPid): void => {
    const key = `${pid.ecu ?? '*'}:${pid.pid}`;
    if (this.reportedUnsupported.has(key)) return;
    this.reportedUnsupported.add(key);
    const who = pid.ecu === null ? 'no ECU supports it' : `ECU ${pid.ecu} does not support it`;
    this.log.warn(`OBD: PID ${pid.name} (0x${pid.pid.toString(16).toUpperCase().padStart(2, '0')}) is not polled: ${who}`);
  };

  /** One line per kind of trouble (no answer, bus refused, malformed…), not one per failed request. */
  private readonly onError = (error: Error): void => {
    const kind = error instanceof ObdRequestError ? error.code : error.name;
    if (kind === this.lastProblem) return;
    this.lastProblem = kind;
    this.log.warn(`OBD: ${error.message}`);
  };

  private untilLinkOpen(signal: AbortSignal): Promise<void> {
    if (this.linkOpen || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.openWaiters.push(resolve));
  }

  private wakeWaiters(): void {
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const wake of waiters) wake();
  }
}

/** A PID value for the status line: numbers to one decimal with their unit, the rest as short text. */
export function formatPidValue(value: PidValue, unit: string): string {
  if (typeof value === 'number') {
    const shown = String(Math.round(value * 10) / 10);
    return unit ? `${shown} ${unit}` : shown;
  }
  if (value === null) return '–';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'string') return value;
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
