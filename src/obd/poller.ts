/**
 * Polls Mode 01 PIDs at per-PID intervals and hands out decoded samples.
 *
 * Each (ECU, PID) pair has its own schedule. When PIDs of one ECU fall due, they travel together in one physical
 * request (up to 6, or one at a time for ECUs that refuse multi-PID requests). A budget caps the requests and frames
 * the poller causes per second: when the schedule asks for more, requests are delayed and the poller reports that it
 * is behind. PIDs an ECU advertises but does not return are asked again less and less often (exponential backoff up
 * to a cap); PIDs no ECU advertises are never asked for, and reported once.
 */
import { systemClock, type IsoTpClock } from '../can/isotp.js';
import { ObdRequestError, type EcuPidReadings, type ObdEcuInfo } from './can-client.js';
import { MAX_PIDS_PER_REQUEST, MODE01_PIDS, MODE01_PIDS_BY_KEY, type PidDefinition, type PidValue } from './j1979.js';

export interface PidPollSpec {
  /** PID number or its J1979 key, e.g. 0x0C or 'rpm'. */
  pid: number | string;
  /** How often to read it (ms). */
  intervalMs: number;
  /** Read it from this ECU only; default: from every ECU that reports it as supported. */
  ecu?: number;
}

export interface PidPollerConfig {
  pids: readonly PidPollSpec[];
  /** Bus load the poller may cause; unset limits do not apply. */
  budget?: {
    maxRequestsPerSecond?: number;
    /** Counts our frames and the ECUs' answers, flow control included. */
    maxFramesPerSecond?: number;
  };
  backoff?: {
    /** Longest wait before asking again for a PID that was not returned (ms). Default 60 000. */
    maxMs?: number;
  };
}

export interface PidSample {
  /** Unix time in seconds (as CanFrame.ts) at which the answer arrived. */
  ts: number;
  ecu: number;
  pid: number;
  /** J1979 key, e.g. 'rpm'. */
  name: string;
  value: PidValue;
  unit: string;
}

export interface PidPollerStatus {
  running: boolean;
  /** The schedule asks for more than the budget or the bus allows: some PID has missed a whole interval. */
  behind: boolean;
  /** How late the latest request went out, relative to the due time of its most overdue PID (ms). */
  lagMs: number;
  /** Requests that went out a whole interval (or more) after their most overdue PID was due. */
  lateReads: number;
  /** Requests and frames caused so far. */
  requests: number;
  frames: number;
  samples: number;
  /** (ECU, PID) pairs being polled. */
  polled: number;
  /** Pairs currently waiting out a backoff. */
  backedOff: number;
  /** Configured PIDs that no ECU (or not the configured ECU) supports. */
  unsupported: number;
}

export interface UnsupportedPid {
  pid: number;
  name: string;
  /** The configured ECU, or null when no ECU supports it. */
  ecu: number | null;
}

export interface PidPollerHandlers {
  onSample(sample: PidSample): void;
  /** Once per configured PID that will never be asked for. */
  onUnsupported?(pid: UnsupportedPid): void;
  /** When the poller falls behind and when it catches up again. */
  onBehind?(behind: boolean, status: PidPollerStatus): void;
  /** Failed requests and discoveries (the poller carries on), and exceptions thrown by the other handlers. */
  onError?(error: Error): void;
}

/** What the poller needs of an OBD client; ObdCanClient is one. */
export interface PidReader {
  readonly ecus: readonly ObdEcuInfo[];
  readonly counters: { readonly requests: number; readonly framesSent: number; readonly framesReceived: number };
  discover(options?: { signal?: AbortSignal }): Promise<readonly ObdEcuInfo[]>;
  readPids(pids: readonly number[], options: { ecu: number; signal?: AbortSignal }): Promise<EcuPidReadings[]>;
  isSinglePidOnly(ecu: number): boolean;
}

export interface PidPollerOptions {
  clock?: IsoTpClock;
  /** First wait before discovering again when no ECU answered (ms); doubles up to the backoff cap. Default 1000. */
  rediscoverMs?: number;
}

interface Slot {
  ecu: number;
  def: PidDefinition;
  intervalMs: number;
  due: number;
  /** Reads in a row that did not return the PID. */
  failures: number;
}

/** A PID due within this share of its interval rides along with a request that goes out anyway. */
const PACK_AHEAD = 0.25;

export class PidPoller {
  private readonly reader: PidReader;
  private readonly specs: { def: PidDefinition; intervalMs: number; ecu?: number }[];
  private readonly handlers: PidPollerHandlers;
  private readonly clock: IsoTpClock;
  private readonly maxRps: number;
  private readonly maxFps: number;
  private readonly backoffCapMs: number;
  private readonly rediscoverMs: number;

  private slots: Slot[] = [];
  private unsupportedCount = 0;
  private running = false;
  private stopper: AbortController | null = null;
  private sleepTimer: unknown = null;
  private wake: (() => void) | null = null;
  private requestFreeAt = 0;
  private frameFreeAt = 0;
  private behind = false;
  private lagMs = 0;
  private lateReads = 0;
  private lastLateAt = Number.NEGATIVE_INFINITY;
  private requests = 0;
  private frames = 0;
  private samples = 0;

  constructor(reader: PidReader, config: PidPollerConfig, handlers: PidPollerHandlers, options: PidPollerOptions = {}) {
    this.reader = reader;
    this.handlers = handlers;
    this.clock = options.clock ?? systemClock;
    this.specs = config.pids.map((spec, k) => {
      const def = typeof spec.pid === 'string' ? MODE01_PIDS_BY_KEY.get(spec.pid) : MODE01_PIDS.get(spec.pid);
      if (def === undefined) throw new RangeError(`poller: pids[${k}]: ${String(spec.pid)} is not a J1979 Mode 01 PID`);
      if (!Number.isFinite(spec.intervalMs) || spec.intervalMs <= 0) throw new RangeError(`poller: pids[${k}] (${def.key}): intervalMs must be positive`);
      return spec.ecu === undefined ? { def, intervalMs: spec.intervalMs } : { def, intervalMs: spec.intervalMs, ecu: spec.ecu };
    });
    this.maxRps = limit('budget.maxRequestsPerSecond', config.budget?.maxRequestsPerSecond);
    this.maxFps = limit('budget.maxFramesPerSecond', config.budget?.maxFramesPerSecond);
    this.backoffCapMs = limit('backoff.maxMs', config.backoff?.maxMs ?? 60_000);
    this.rediscoverMs = limit('rediscoverMs', options.rediscoverMs ?? 1000);
  }

  get status(): PidPollerStatus {
    const now = this.clock.now();
    return {
      running: this.running,
      behind: this.behind,
      lagMs: this.lagMs,
      lateReads: this.lateReads,
      requests: this.requests,
      frames: this.frames,
      samples: this.samples,
      polled: this.slots.length,
      backedOff: this.slots.filter((s) => s.failures > 0 && s.due > now).length,
      unsupported: this.unsupportedCount,
    };
  }

  /**
   * Polls until `stop()` or `signal` aborts; discovers the ECUs first if the reader has not. Resolves once stopped,
   * with the request in flight aborted and no timer left.
   */
  async run(signal?: AbortSignal): Promise<void> {
    if (this.running) throw new Error('poller: already running');
    this.running = true;
    const stopper = new AbortController();
    this.stopper = stopper;
    const forward = (): void => stopper.abort();
    stopper.signal.addEventListener('abort', () => this.cancelSleep(), { once: true });
    if (signal?.aborted) stopper.abort();
    signal?.addEventListener('abort', forward, { once: true });
    try {
      if (await this.prepare(stopper.signal)) await this.poll(stopper.signal);
    } finally {
      signal?.removeEventListener('abort', forward);
      this.cancelSleep();
      this.stopper = null;
      this.running = false;
    }
  }

  stop(): void {
    this.stopper?.abort();
  }

  /** Finds the ECUs (retrying with backoff while none answers) and builds the schedule. False when stopped first. */
  private async prepare(signal: AbortSignal): Promise<boolean> {
    let wait = this.rediscoverMs;
    while (this.reader.ecus.length === 0) {
      if (signal.aborted) return false;
      try {
        await this.reader.discover({ signal });
      } catch (err) {
        if (signal.aborted) return false;
        this.report(err);
        await this.sleep(wait, signal);
        wait = Math.min(wait * 2, this.backoffCapMs);
      }
    }
    const ecus = this.reader.ecus;
    const start = this.clock.now();
    const slots = new Map<string, Slot>();
    this.unsupportedCount = 0;
    for (const spec of this.specs) {
      const holders = ecus.filter((e) => (spec.ecu === undefined || e.ecu === spec.ecu) && e.supportedPids.includes(spec.def.pid));
      if (holders.length === 0) {
        this.unsupportedCount++;
        this.call(() => this.handlers.onUnsupported?.({ pid: spec.def.pid, name: spec.def.key, ecu: spec.ecu ?? null }));
        continue;
      }
      for (const { ecu } of holders) {
        const key = `${ecu}:${spec.def.pid}`;
        const known = slots.get(key);
        // The same PID configured twice: the shorter interval wins.
        if (known) known.intervalMs = Math.min(known.intervalMs, spec.intervalMs);
        else slots.set(key, { ecu, def: spec.def, intervalMs: spec.intervalMs, due: start, failures: 0 });
      }
    }
    this.slots = [...slots.values()];
    return !signal.aborted;
  }

  private async poll(signal: AbortSignal): Promise<void> {
    while (!signal.aborted && this.slots.length > 0) {
      const now = this.clock.now();
      let first: Slot | null = null;
      for (const s of this.slots) if (first === null || s.due < first.due) first = s;
      if (first!.due > now) {
        await this.sleep(first!.due - now, signal);
        continue;
      }
      const freeAt = Math.max(this.requestFreeAt, this.frameFreeAt);
      if (freeAt > now) {
        await this.sleep(freeAt - now, signal);
        continue;
      }
      this.noteLag(now, first!);
      const batch = this.batchFor(first!, now);
      await this.read(batch, signal);
    }
    // Nothing to poll (every PID unsupported): stay until stopped, as a poller with work would.
    while (!signal.aborted) await this.sleep(this.backoffCapMs, signal);
  }

  /** The due PIDs of `first`'s ECU, most overdue first, plus some nearly due ones, up to one request's worth. */
  private batchFor(first: Slot, now: number): Slot[] {
    const size = this.reader.isSinglePidOnly(first.ecu) ? 1 : MAX_PIDS_PER_REQUEST;
    const candidates = this.slots
      .filter((s) => s.ecu === first.ecu && s.due - now <= (s.failures === 0 ? s.intervalMs * PACK_AHEAD : 0))
      .sort((a, b) => a.due - b.due);
    return candidates.slice(0, size);
  }

  private async read(batch: Slot[], signal: AbortSignal): Promise<void> {
    const ecu = batch[0]!.ecu;
    const before = this.reader.counters;
    const startedAt = this.clock.now();
    let answer: EcuPidReadings | undefined;
    let failure: unknown = null;
    try {
      const result = await this.reader.readPids(
        batch.map((s) => s.def.pid),
        { ecu, signal },
      );
      answer = result.find((r) => r.ecu === ecu);
    } catch (err) {
      failure = err;
    }
    const after = this.reader.counters;
    this.charge(startedAt, after.requests - before.requests, after.framesSent + after.framesReceived - before.framesSent - before.framesReceived);
    if (signal.aborted) return;
    // An ECU refusing PIDs it advertised is handled by the backoff; anything else is worth a report.
    const error = failure ?? answer?.error;
    if (error && !(error instanceof ObdRequestError && error.negative?.isUnsupportedRequest)) this.report(error);

    const now = this.clock.now();
    const ts = Date.now() / 1000;
    const got = new Map<number, PidValue>();
    for (const reading of answer?.readings ?? []) got.set(reading.pid, reading.value);
    for (const slot of batch) {
      if (got.has(slot.def.pid)) {
        slot.failures = 0;
        // Keep the rhythm; after a delay longer than a whole interval, start a new one rather than catch up in a burst.
        const next = slot.due + slot.intervalMs;
        slot.due = next > now ? next : now + slot.intervalMs;
        this.samples++;
        const sample: PidSample = { ts, ecu, pid: slot.def.pid, name: slot.def.key, value: got.get(slot.def.pid)!, unit: slot.def.unit };
        this.call(() => this.handlers.onSample(sample));
      } else {
        slot.failures++;
        slot.due = now + Math.min(this.backoffCapMs, slot.intervalMs * 2 ** slot.failures);
      }
    }
  }

  /** Books what a request cost against the budget: the next request waits until the budget has room again. */
  private charge(startedAt: number, requests: number, frames: number): void {
    this.requests += requests;
    this.frames += frames;
    if (this.maxRps > 0) this.requestFreeAt = Math.max(this.requestFreeAt, startedAt) + (requests * 1000) / this.maxRps;
    if (this.maxFps > 0) this.frameFreeAt = Math.max(this.frameFreeAt, startedAt) + (frames * 1000) / this.maxFps;
  }

  /**
   * Behind as soon as a request goes out a whole interval late; caught up once none has for a while (a second, or two
   * of the longest interval). A late read restarts its PID's rhythm, so the lag of single reads says little by itself.
   */
  private noteLag(now: number, first: Slot): void {
    const lag = Math.max(0, now - first.due);
    this.lagMs = lag;
    if (lag >= first.intervalMs) {
      this.lateReads++;
      this.lastLateAt = now;
    }
    const calm = Math.max(1000, 2 * Math.max(...this.slots.map((s) => s.intervalMs)));
    const behind = now - this.lastLateAt < calm;
    if (behind === this.behind) return;
    this.behind = behind;
    this.call(() => this.handlers.onBehind?.(behind, this.status));
  }

  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.wake = resolve;
      this.sleepTimer = this.clock.setTimeout(
        () => {
          this.sleepTimer = null;
          this.wake = null;
          resolve();
        },
        Math.max(1, Math.ceil(ms)),
      );
    });
  }

  private cancelSleep(): void {
    if (this.sleepTimer !== null) this.clock.clearTimeout(this.sleepTimer);
    this.sleepTimer = null;
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private report(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.call(() => this.handlers.onError?.(error), false);
  }

  /** Runs a handler: one that throws must not stop the polling. */
  private call(fn: () => void, forward = true): void {
    try {
      fn();
    } catch (err) {
      if (forward) this.report(err);
    }
  }
}

/** A budget or duration setting: a positive number, or 0 when unset. */
function limit(name: string, value: number | undefined): number {
  if (value === undefined) return 0;
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`poller: ${name} must be a positive number`);
  return value;
}
