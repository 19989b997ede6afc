/**
 * A client of gpsd's JSON protocol (https://gpsd.io/gpsd_json.html), for cars where gpsd owns the receiver: connects
 * to its TCP port (2947), asks for reports (`?WATCH={"enable":true,"json":true}`), and turns them into the same
 * GnssFix the serial source makes, one per epoch.
 *
 * gpsd reports as it reads: several TPV objects per epoch (one after each sentence that changed something), then SKY.
 * The client keeps the epoch's latest TPV and SKY and hands the fix out when a TPV of another epoch (another `time`)
 * arrives, or when gpsd has been quiet for `quietMs` (the epoch's reports come in one burst); a TPV without a time
 * belongs to the epoch in hand (gpsd drops the time within an epoch when a sentence leaves it empty). A report of an epoch
 * already handed out is counted as late and dropped, as the NMEA assembler does. Fields follow gpsd's TPV names, so
 * the mapping is direct; gpsd leaves `status` out for a plain GPS fix, which is status 1 here.
 *
 * Kept connected, never failing: gpsd not running, refusing, restarting or closing the connection is a state the
 * client waits in and retries (1 s growing to 30 s), with one `onState` call per change. Input is bounded: a line over
 * MAX_LINE_BYTES (no gpsd report is near it) or JSON that does not parse is counted and skipped, never thrown.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Socket } from 'node:net';
import type { FixStatus, GnssFix } from './fix.js';

/** Waits `ms`, or less when `signal` aborts; never rejects. */
const pause = (ms: number, signal: AbortSignal): Promise<void> => delay(ms, undefined, { signal }).catch(() => undefined);

/** gpsd's default port. */
export const GPSD_PORT = 2947;
/** Longest report line accepted: a SKY with every satellite of four constellations is under 16 KiB. */
const MAX_LINE_BYTES = 64 * 1024;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;

export type GpsdState =
  | 'idle'
  | 'connecting'
  /** Not reachable (refused, no route, closed by gpsd): retrying. */
  | 'missing'
  /** Connected and watching; reports arrive. */
  | 'receiving'
  /** Connected, but no report for `silenceMs` (gpsd has no receiver, or the receiver is quiet). */
  | 'silent';

export interface GpsdClientOptions {
  readonly host: string;
  readonly port?: number;
  readonly onFix: (fix: GnssFix) => void;
  readonly onState?: (state: GpsdState, detail: { reason?: string; version?: string }) => void;
  /** Quiet after which the epoch in hand is handed out, ms. Default 150. */
  readonly quietMs?: number;
  /** Silence after which the client is `silent`, ms. Default 3000. */
  readonly silenceMs?: number;
}

export interface GpsdCounters {
  reports: number;
  fixes: number;
  /** Reports of an epoch already handed out. */
  late: number;
  /** Lines that were not JSON, or too long. */
  badLines: number;
  connects: number;
  /** gpsd's ERROR reports. */
  errors: number;
}

/** A TPV or SKY report as gpsd sends it (the fields the client reads). */
interface Report {
  class?: unknown;
  [field: string]: unknown;
}

const TPV_NUMBERS = ['lat', 'lon', 'altMSL', 'altHAE', 'geoidSep', 'speed', 'track', 'magvar', 'epx', 'epy', 'epv', 'eph', 'dgpsAge', 'dgpsSta'] as const;
const POSITION_FIELDS = new Set(['lat', 'lon', 'altMSL', 'altHAE', 'speed', 'track']);
const SKY_NUMBERS = ['hdop', 'vdop', 'pdop', 'uSat', 'nSat'] as const;

function finite(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** A TPV report as a fix (without SKY's fields); undefined when it is not one (no valid mode). */
export function fixOfTpv(report: Report): GnssFix | undefined {
  const mode = report.mode;
  if (mode !== 0 && mode !== 1 && mode !== 2 && mode !== 3) return undefined;
  const status = finite(report.status);
  const fix: GnssFix = {
    mode: mode,
    status: (status !== undefined && Number.isInteger(status) && status >= 0 && status <= 8 ? status : mode >= 2 ? 1 : 0) as FixStatus,
  };
  if (typeof report.time === 'string') {
    const time = Date.parse(report.time);
    if (!Number.isNaN(time)) fix.time = time;
  }
  for (const key of TPV_NUMBERS) {
    // gpsd's `alt` is altMSL under its old name; a fix without a position carries none of the position's fields.
    const value = finite(report[key]) ?? (key === 'altMSL' ? finite(report.alt) : undefined);
    if (value === undefined || (mode < 2 && POSITION_FIELDS.has(key))) continue;
    fix[key] = value;
  }
  if (fix.lat !== undefined && (fix.lat < -90 || fix.lat > 90)) return { mode: 1, status: 0 };
  if (fix.lon !== undefined && (fix.lon < -180 || fix.lon > 180)) return { mode: 1, status: 0 };
  return fix;
}

export class GpsdClient {
  readonly counters: GpsdCounters = { reports: 0, fixes: 0, late: 0, badLines: 0, connects: 0, errors: 0 };
  private stateNow: GpsdState = 'idle';
  private socket: Socket | null = null;
  private buffer = '';
  private pending: GnssFix | null = null;
  private pendingSky: Partial<GnssFix> = {};
  /** `time` of the epoch last handed out (undefined for one without time). */
  private emittedTime: number | undefined | null = null;
  private quietTimer: NodeJS.Timeout | undefined;
  private lastReportAt = 0;
  private version: string | undefined;

  constructor(private readonly options: GpsdClientOptions) {}

  get state(): GpsdState {
    return this.stateNow;
  }

  /** Where gpsd is, for status and logs: `127.0.0.1:2947`. */
  get address(): string {
    return `${this.options.host}:${this.options.port ?? GPSD_PORT}`;
  }

  /** Reads until `signal` aborts; never rejects. */
  async run(signal: AbortSignal): Promise<void> {
    let retryMs = RETRY_MIN_MS;
    while (!signal.aborted) {
      this.setState('connecting', {});
      const reason = await this.session(signal);
      if (signal.aborted) break;
      if (this.counters.reports > 0) retryMs = RETRY_MIN_MS;
      this.setState('missing', { reason });
      await pause(retryMs, signal);
      retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
    }
    this.handOut();
    this.setState('idle', {});
  }

  private setState(state: GpsdState, detail: { reason?: string; version?: string }): void {
    if (state === this.stateNow && detail.reason === undefined) return;
    this.stateNow = state;
    this.options.onState?.(state, detail);
  }

  /** One connection: resolves with why it ended. */
  private session(signal: AbortSignal): Promise<string> {
    return new Promise((resolve) => {
      const socket = new Socket();
      this.socket = socket;
      this.buffer = '';
      const silenceMs = this.options.silenceMs ?? 3000;
      let watchdog: NodeJS.Timeout | undefined;
      let ended = false;
      const end = (reason: string): void => {
        if (ended) return;
        ended = true;
        clearInterval(watchdog);
        clearTimeout(this.quietTimer);
        signal.removeEventListener('abort', onAbort);
        this.handOut();
        socket.destroy();
        this.socket = null;
        resolve(reason);
      };
      const onAbort = (): void => end('stopped');
      signal.addEventListener('abort', onAbort, { once: true });
      socket.setEncoding('latin1');
      socket.on('error', (err: NodeJS.ErrnoException) =>
        end(`gpsd at ${this.address}: ${err.code === 'ECONNREFUSED' ? 'not running (connection refused)' : err.message}`),
      );
      socket.on('close', () => end(`gpsd at ${this.address} closed the connection`));
      socket.on('data', (chunk: string) => this.onData(chunk));
      socket.connect(this.options.port ?? GPSD_PORT, this.options.host, () => {
        this.counters.connects++;
        this.lastReportAt = Date.now();
        socket.write('?WATCH={"enable":true,"json":true};\n');
        this.setState('receiving', this.version !== undefined ? { version: this.version } : {});
        watchdog = setInterval(
          () => {
            const silent = Date.now() - this.lastReportAt > silenceMs;
            if (silent && this.stateNow === 'receiving') this.setState('silent', {});
          },
          Math.min(500, silenceMs / 2),
        );
      });
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline);
      this.buffer = this.buffer.slice(newline + 1);
      this.onLine(line);
    }
    if (this.buffer.length > MAX_LINE_BYTES) {
      this.counters.badLines++;
      this.buffer = '';
    }
    clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => this.handOut(), this.options.quietMs ?? 150);
  }

  private onLine(line: string): void {
    const text = line.trim();
    if (text === '') return;
    let report: Report;
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      report = parsed as Report;
    } catch {
      this.counters.badLines++;
      return;
    }
    this.counters.reports++;
    this.lastReportAt = Date.now();
    if (this.stateNow === 'silent') this.setState('receiving', {});
    switch (report.class) {
      case 'VERSION':
        if (typeof report.release === 'string') this.version = report.release;
        return;
      case 'ERROR':
        this.counters.errors++;
        return;
      case 'TPV':
        this.onTpv(report);
        return;
      case 'SKY':
        for (const key of SKY_NUMBERS) {
          const value = finite(report[key]);
          if (value !== undefined) this.pendingSky[key] = value;
        }
        return;
      default:
        return;
    }
  }

  private onTpv(report: Report): void {
    const fix = fixOfTpv(report);
    if (fix === undefined) return;
    // Another epoch: another time. A TPV without a time after one with a time is the same epoch, where gpsd has just
    // read a sentence that leaves the time empty (it takes the time back); the latest report of an epoch wins.
    if (this.pending !== null && this.pending.time !== fix.time && fix.time !== undefined) this.handOut();
    if (this.pending === null && this.emittedTime !== null && fix.time !== undefined && fix.time === this.emittedTime) {
      this.counters.late++;
      return;
    }
    this.pending = fix;
  }

  /** Hands out the epoch in hand, with the SKY that came with it. */
  private handOut(): void {
    const fix = this.pending;
    const sky = this.pendingSky;
    this.pending = null;
    this.pendingSky = {};
    if (fix === null) return;
    Object.assign(fix, sky);
    this.emittedTime = fix.time;
    this.counters.fixes++;
    this.options.onFix(fix);
  }
}
