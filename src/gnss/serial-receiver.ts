/**
 * A GNSS receiver on a serial line (a USB receiver, a UART, the NMEA port of a cellular modem such as a Quectel
 * EG25-G): keeps the port open, finds its baud rate, and turns what it sends into fixes (one per epoch,
 * src/gnss/fix-assembler.ts).
 *
 * Kept connected, never failing: a port that is not there yet, goes away (unplugged) or is refused is a state the
 * receiver waits in, retrying with a growing delay (1 s up to 30 s), and one `onState` call per change says why. The
 * baud rate, when not configured, is found by listening at each candidate rate in turn until intact sentences arrive
 * (a rate that only gives noise or checksum failures is wrong). A receiver that stops sending while its port stays
 * open is `silent` (its last fix goes stale: the position's age says so); one that sends but has no fix gives fixes
 * of mode 1. A quiet line also ends the epoch in hand, so that a receiver's last fix is out without waiting for the
 * next epoch.
 *
 * The serialport package is imported when the port is first opened: a car without a receiver never loads it.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { SerialPort } from 'serialport';
import { FixAssembler, type FixAssemblerCounters } from './fix-assembler.js';
import type { GnssFix } from './fix.js';
import { NmeaReader, type NmeaReaderCounters } from './nmea-reader.js';

/** Waits `ms`, or less when `signal` aborts; never rejects. */
const pause = (ms: number, signal: AbortSignal): Promise<void> => delay(ms, undefined, { signal }).catch(() => undefined);

/** Rates tried when none is configured, most likely first: 9600 is most receivers' default, 4800 the NMEA standard's. */
export const GNSS_BAUD_RATES: readonly number[] = [9600, 4800, 115200, 38400, 57600, 19200, 230400];

export type ReceiverState =
  /** Not started, or stopped. */
  | 'idle'
  /** Opening the port, or listening for the baud rate. */
  | 'opening'
  /** No such port (not plugged in), refused, or no rate gave sentences: retrying. */
  | 'missing'
  /** Sentences arrive. */
  | 'receiving'
  /** The port is open but nothing intact has arrived for `silenceMs`. */
  | 'silent';

export interface SerialReceiverOptions {
  readonly path: string;
  /** Fixed rate; when unset, GNSS_BAUD_RATES are tried. */
  readonly baudRate?: number;
  /** How long each rate is listened to for intact sentences, ms. Default 2500: a 1 Hz receiver sends at least one cycle in it. */
  readonly probeMs?: number;
  /** Silence after which the receiver is `silent`, ms. Default 3000. */
  readonly silenceMs?: number;
  /** A quiet line this long ends the epoch in hand, ms. Default 200. */
  readonly quietMs?: number;
  /** The week-rollover floor (FixAssemblerOptions.dateFloor). */
  readonly dateFloor?: number | null;
  readonly onFix: (fix: GnssFix) => void;
  /** Each change of state, with the reason for `missing` and the rate for `receiving`. */
  readonly onState?: (state: ReceiverState, detail: { reason?: string; baudRate?: number }) => void;
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;

export interface ReceiverCounters {
  readonly line: NmeaReaderCounters;
  readonly epochs: FixAssemblerCounters;
  /** Times the port was opened and found receiving. */
  connects: number;
}

export class SerialGnssReceiver {
  private stateNow: ReceiverState = 'idle';
  private baudNow: number | undefined;
  private readonly assembler: FixAssembler;
  private readonly reader: NmeaReader;
  private port: SerialPort | null = null;
  private quietTimer: NodeJS.Timeout | undefined;
  private lastSentenceAt = 0;
  private connects = 0;

  constructor(private readonly options: SerialReceiverOptions) {
    this.assembler = new FixAssembler({ onFix: (fix) => options.onFix(fix), dateFloor: options.dateFloor });
    this.reader = new NmeaReader((sentence) => {
      this.lastSentenceAt = Date.now();
      this.assembler.push(sentence);
    });
  }

  get state(): ReceiverState {
    return this.stateNow;
  }

  /** The rate in use while receiving. */
  get baudRate(): number | undefined {
    return this.baudNow;
  }

  get counters(): ReceiverCounters {
    return { line: this.reader.counters, epochs: this.assembler.counters, connects: this.connects };
  }

  /** Reads until `signal` aborts; never rejects. */
  async run(signal: AbortSignal): Promise<void> {
    let retryMs = RETRY_MIN_MS;
    while (!signal.aborted) {
      this.setState('opening', {});
      const outcome = await this.connect(signal);
      if (signal.aborted) break;
      if (outcome.ok) {
        retryMs = RETRY_MIN_MS;
        const lost = await this.receive(signal);
        if (signal.aborted) break;
        this.setState('missing', { reason: lost });
      } else this.setState('missing', { reason: outcome.reason });
      await pause(retryMs, signal);
      retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
    }
    await this.closePort();
    this.assembler.flush();
    this.setState('idle', {});
  }

  private setState(state: ReceiverState, detail: { reason?: string; baudRate?: number }): void {
    if (state === this.stateNow && detail.reason === undefined) return;
    this.stateNow = state;
    this.options.onState?.(state, detail);
  }

  /** Opens the port at a rate that gives intact sentences; or why not. */
  private async connect(signal: AbortSignal): Promise<{ ok: true } | { ok: false; reason: string }> {
    const rates = this.options.baudRate !== undefined ? [this.options.baudRate] : GNSS_BAUD_RATES;
    const probeMs = this.options.probeMs ?? 2500;
    try {
      await this.openPort(rates[0]!);
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    for (const rate of rates) {
      if (signal.aborted || this.port === null) break;
      if (rate !== this.port.baudRate) {
        try {
          await new Promise<void>((resolve, reject) => this.port!.update({ baudRate: rate }, (err) => (err ? reject(err) : resolve())));
        } catch (err) {
          await this.closePort();
          return { ok: false, reason: `${this.options.path}: cannot set ${rate} baud: ${(err as Error).message}` };
        }
      }
      const before = this.reader.counters.sentences;
      const deadline = Date.now() + probeMs;
      // Two intact sentences: one could be luck of the noise (1 in 256 per line with a plausible shape).
      while (Date.now() < deadline && this.reader.counters.sentences - before < 2 && this.port !== null && !signal.aborted) await pause(50, signal);
      if (this.reader.counters.sentences - before >= 2) {
        this.baudNow = rate;
        this.connects++;
        return { ok: true };
      }
    }
    const path = this.options.path;
    const lost = this.port === null;
    await this.closePort();
    if (lost) return { ok: false, reason: `${path}: the port went away` };
    return {
      ok: false,
      reason:
        this.options.baudRate !== undefined
          ? `${path}: no NMEA sentences at ${this.options.baudRate} baud`
          : `${path}: no NMEA sentences at any of ${rates.join(', ')} baud (is it a GNSS receiver's NMEA port?)`,
    };
  }

  /** Receives until the port goes away (returns why) or `signal` aborts. */
  private async receive(signal: AbortSignal): Promise<string> {
    this.setState('receiving', { baudRate: this.baudNow! });
    const silenceMs = this.options.silenceMs ?? 3000;
    while (!signal.aborted && this.port !== null) {
      await pause(Math.min(500, silenceMs / 2), signal);
      if (this.port === null) break;
      const silent = Date.now() - this.lastSentenceAt > silenceMs;
      if (silent && this.stateNow === 'receiving') this.setState('silent', {});
      else if (!silent && this.stateNow === 'silent') this.setState('receiving', { baudRate: this.baudNow! });
    }
    this.baudNow = undefined;
    this.assembler.flush();
    return `${this.options.path}: the port went away (unplugged?)`;
  }

  private async openPort(baudRate: number): Promise<void> {
    const { SerialPort } = await import('serialport');
    await new Promise<void>((resolve, reject) => {
      const port = new SerialPort({ path: this.options.path, baudRate, autoOpen: false });
      port.open((err) => {
        if (err) {
          reject(new Error(openProblem(this.options.path, err)));
          return;
        }
        this.port = port;
        port.on('data', (chunk: Buffer) => this.onData(chunk));
        port.on('error', () => this.lost(port));
        port.on('close', () => this.lost(port));
        resolve();
      });
    });
  }

  private onData(chunk: Buffer): void {
    this.reader.write(chunk);
    // A quiet line ends the epoch in hand (restarted per chunk: cheap, at the few chunks a second a receiver sends).
    clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => this.assembler.flush(), this.options.quietMs ?? 200);
  }

  private lost(port: SerialPort): void {
    if (this.port !== port) return;
    this.port = null;
    clearTimeout(this.quietTimer);
    port.removeAllListeners('data');
    if (port.isOpen) port.close(() => undefined);
  }

  private async closePort(): Promise<void> {
    const port = this.port;
    this.port = null;
    clearTimeout(this.quietTimer);
    if (port === null) return;
    port.removeAllListeners();
    port.on('error', () => undefined);
    if (port.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }
}

function openProblem(path: string, err: Error): string {
  const text = err.message;
  if (/ENOENT|No such file/i.test(text)) return `${path}: no such serial port (is the receiver plugged in?)`;
  if (/EACCES|Permission denied/i.test(text)) return `${path}: permission denied (run as a member of the port's group, usually dialout)`;
  if (/EBUSY|lock|Resource temporarily unavailable/i.test(text)) return `${path}: in use by another program (gpsd? then use the gpsd source)`;
  return `${path}: ${text}`;
}
