/**
 * The serial line to an ELM327-compatible adapter: opens the port (probing the baud rate when none is configured),
 * sends one command at a time and hands back what the adapter answered up to its `>` prompt.
 *
 * It knows nothing of OBD: answers are returned as text for src/obd/elm327-response.ts to parse. What it does know is
 * how serial lines misbehave: NUL bytes and line noise between answers, an answer that never ends (the adapter hung,
 * or the baud rate is wrong), an answer that comes after we gave up on it, and the port vanishing (USB unplugged,
 * Bluetooth link lost), which is reported once through `onDisconnect`.
 *
 * The serialport package (with its native binding and parsers) is imported when a port is first opened: a car without
 * an ELM327 adapter never loads it.
 */
import type { SerialPort } from 'serialport';

/**
 * Rates tried when none is configured, most likely first: 38400 is the ELM327's default, 9600 its other pin-selected
 * default; clones and OBDLink-style adapters ship at 115200, 57600 or faster.
 */
export const ELM_BAUD_RATES: readonly number[] = [38400, 9600, 115200, 57600, 230400, 500000, 19200];

export type ElmLinkErrorCode =
  /** No such port (not plugged in, wrong path). */
  | 'no-port'
  /** The port exists but we may not open it (permissions, or another program holds it). */
  | 'port-denied'
  | 'open-failed'
  /** No baud rate gave an ELM prompt. */
  | 'no-adapter'
  /** The answer did not end with a prompt in time. */
  | 'timeout'
  /** The answer grew beyond any real one: the line is carrying noise, not answers. */
  | 'overflow'
  /** The port went away (unplugged) or failed while open. */
  | 'disconnected'
  | 'closed'
  | 'aborted';

export class ElmLinkError extends Error {
  override readonly name = 'ElmLinkError';
  constructor(
    readonly code: ElmLinkErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ElmSerialLinkOptions {
  /** `/dev/ttyUSB0`, `/dev/rfcomm0`, `/dev/serial/by-id/...`. */
  path: string;
  /** Fixed rate; when unset, `baudRates` are tried in turn until one gets a prompt. */
  baudRate?: number;
  baudRates?: readonly number[];
  /** How long each probed rate has to produce a prompt (ms). Default 1000. */
  probeTimeoutMs?: number;
  /** After a timed-out command, how long to wait for its late prompt before the next command (ms). Default 300. */
  drainMs?: number;
  /** Longest answer accepted (bytes). Default 16384: a real answer (BUFFER FULL comes at 256 bytes per line) is far less. */
  maxAnswerBytes?: number;
}

export interface ElmLinkCounters {
  commands: number;
  timeouts: number;
  bytesIn: number;
  bytesOut: number;
  /** Bytes that arrived with no command waiting (noise, or answers we had given up on). */
  strayBytes: number;
}

interface Pending {
  command: string;
  text: string;
  resolve: (answer: string) => void;
  reject: (err: ElmLinkError) => void;
  timer: ReturnType<typeof setTimeout>;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
}

const PROMPT = 0x3e; // '>'
/**
 * What a rate is probed with: harmless, and answered by every implementation (some ignore lines holding control
 * characters without even a prompt). Never a bare CR, which repeats the adapter's last command (maybe a Mode 04).
 */
const PROBE = 'ATI';

export class ElmSerialLink {
  readonly path: string;
  private readonly fixedRate: number | undefined;
  private readonly rates: readonly number[];
  private readonly probeTimeoutMs: number;
  private readonly drainMs: number;
  private readonly maxAnswer: number;

  private port: SerialPort | null = null;
  private rate: number | null = null;
  private pending: Pending | null = null;
  /** A command timed out and its prompt has not come yet: wait for it before sending the next one. */
  private unsynced = false;
  /** The drain's wake-up: true when the prompt came, false when the link failed. */
  private promptWaiter: ((prompted: boolean) => void) | null = null;
  private queueTail: Promise<unknown> = Promise.resolve();
  private closing = false;
  private readonly disconnectListeners = new Set<(err: ElmLinkError) => void>();
  private readonly stats: ElmLinkCounters = { commands: 0, timeouts: 0, bytesIn: 0, bytesOut: 0, strayBytes: 0 };

  constructor(options: ElmSerialLinkOptions) {
    if (typeof options.path !== 'string' || options.path === '') throw new RangeError('ELM327 link: path is required');
    this.path = options.path;
    this.fixedRate = options.baudRate;
    this.rates = options.baudRates ?? ELM_BAUD_RATES;
    if (this.fixedRate === undefined && this.rates.length === 0) throw new RangeError('ELM327 link: no baud rate to try');
    this.probeTimeoutMs = options.probeTimeoutMs ?? 1000;
    this.drainMs = options.drainMs ?? 300;
    this.maxAnswer = options.maxAnswerBytes ?? 16384;
  }

  get isOpen(): boolean {
    return this.port !== null && !this.closing;
  }

  /** The rate in use once open. */
  get baudRate(): number | null {
    return this.rate;
  }

  get counters(): ElmLinkCounters {
    return { ...this.stats };
  }

  /** Called once when the port goes away or fails while open (never for `close()`). Returns an unsubscribe. */
  onDisconnect(listener: (err: ElmLinkError) => void): () => void {
    this.disconnectListeners.add(listener);
    return () => this.disconnectListeners.delete(listener);
  }

  /** Opens the port; without a configured rate, tries each until the adapter prompts. Resolves with the rate. */
  async open(signal?: AbortSignal): Promise<number> {
    if (this.port) throw new ElmLinkError('open-failed', `${this.path} is already open`);
    this.closing = false;
    // A configured rate is checked the same way: a wrong one must say so, not look like a hung adapter.
    const candidates = this.fixedRate !== undefined ? [this.fixedRate] : this.rates;
    await this.openPort(candidates[0]!);
    for (const rate of candidates) {
      if (signal?.aborted) break;
      try {
        if (rate !== this.currentRate()) await this.setRate(rate);
        if (await this.probe(signal)) {
          this.rate = rate;
          return rate;
        }
      } catch (err) {
        await this.close();
        throw err instanceof ElmLinkError ? err : new ElmLinkError('open-failed', `${this.path}: ${String(err)}`, { cause: err });
      }
    }
    await this.close();
    if (signal?.aborted) throw new ElmLinkError('aborted', 'open aborted');
    throw new ElmLinkError(
      'no-adapter',
      `no ELM327 prompt on ${this.path} at ${candidates.join(', ')} baud: is an OBD adapter on this port, and powered (plugged into the car)?`,
    );
  }

  /**
   * Sends `command` (without the CR) and resolves with everything the adapter sent before its prompt. Commands queue:
   * only one is ever outstanding, as the ELM327 requires.
   */
  command(command: string, timeoutMs: number, signal?: AbortSignal): Promise<string> {
    const run = async (): Promise<string> => {
      if (!this.port || this.closing) throw new ElmLinkError('closed', `${this.path} is not open`);
      if (signal?.aborted) throw new ElmLinkError('aborted', 'command aborted');
      if (this.unsynced) await this.drain();
      return this.send(command, timeoutMs, signal);
    };
    const next = this.queueTail.then(run, run);
    this.queueTail = next.catch(() => undefined);
    return next;
  }

  /** Closes the port; a command in flight rejects with 'closed'. */
  async close(): Promise<void> {
    const port = this.port;
    if (!port) return;
    this.closing = true;
    this.failPending(new ElmLinkError('closed', `${this.path} closed`));
    this.port = null;
    this.rate = null;
    this.unsynced = false;
    port.removeAllListeners('data');
    if (!port.isOpen) return;
    await new Promise<void>((resolve) => port.close(() => resolve()));
  }

  // ---- port ----

  private async openPort(baudRate: number): Promise<void> {
    const { SerialPort } = await import('serialport');
    return new Promise((resolve, reject) => {
      const port = new SerialPort({ path: this.path, baudRate, autoOpen: false });
      port.open((err) => {
        if (err) {
          reject(openError(this.path, err));
          return;
        }
        this.port = port;
        port.on('data', (chunk: Buffer) => this.onData(chunk));
        // A port that fails while open is gone for us: report once and let the owner reopen it.
        port.on('error', (e: Error) => this.lost(e));
        port.on('close', (e: (Error & { disconnected?: boolean }) | null) => {
          if (e) this.lost(e);
        });
        resolve();
      });
    });
  }

  private currentRate(): number | undefined {
    return this.port?.baudRate;
  }

  private setRate(baudRate: number): Promise<void> {
    const port = this.port!;
    return new Promise((resolve, reject) =>
      port.update({ baudRate }, (err) =>
        err ? reject(new ElmLinkError('open-failed', `${this.path}: cannot set ${baudRate} baud: ${err.message}`, { cause: err })) : resolve(),
      ),
    );
  }

  /** True when the adapter prompts at the current rate. Whatever it sends before the prompt is of no interest. */
  private async probe(signal: AbortSignal | undefined): Promise<boolean> {
    // Total silence earns a second try: an adapter still booting (or a line still being set up) drops the first
    // command. Noise is an answer of sorts: the rate is wrong, and asking again would not change that.
    for (let attempt = 0; attempt < 2; attempt++) {
      const bytesBefore = this.stats.bytesIn;
      try {
        await this.send(PROBE, this.probeTimeoutMs, signal);
        return true;
      } catch (err) {
        if (!(err instanceof ElmLinkError) || (err.code !== 'timeout' && err.code !== 'overflow')) throw err;
        // A slow adapter (or a busy host) may still answer: its late prompt is the answer, and it must not be taken
        // for the answer to the next command (the retry's, then ATZ's: every answer one command late). So wait a
        // second window for it before judging.
        if (err.code === 'timeout' && (await this.drain(this.probeTimeoutMs))) return true;
        this.unsynced = false;
        if (this.stats.bytesIn > bytesBefore) return false;
      }
    }
    return false;
  }

  private lost(cause: Error): void {
    if (this.closing || !this.port) return;
    const err = new ElmLinkError('disconnected', `${this.path}: the port went away (${cause.message || 'closed'}): unplugged?`, { cause });
    const port = this.port;
    this.port = null;
    this.rate = null;
    this.closing = true;
    this.failPending(err);
    port.removeAllListeners('data');
    if (port.isOpen) port.close(() => undefined);
    for (const listener of this.disconnectListeners) {
      try {
        listener(err);
      } catch {
        // A listener's failure must not hide the disconnect from the others.
      }
    }
  }

  // ---- one command ----

  private send(command: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<string> {
    const port = this.port;
    if (!port) return Promise.reject(new ElmLinkError('closed', `${this.path} is not open`));
    return new Promise<string>((resolve, reject) => {
      const pending: Pending = {
        command,
        text: '',
        resolve,
        reject,
        timer: setTimeout(() => {
          this.stats.timeouts++;
          // The adapter may still be working on it (a slow search): its prompt will come later and must be skipped.
          this.unsynced = true;
          this.finish(pending, new ElmLinkError('timeout', `no prompt within ${timeoutMs} ms after ${JSON.stringify(command)}`));
        }, timeoutMs),
        signal,
        onAbort: null,
      };
      if (signal) {
        pending.onAbort = () => {
          this.unsynced = true;
          this.finish(pending, new ElmLinkError('aborted', 'command aborted'));
        };
        signal.addEventListener('abort', pending.onAbort, { once: true });
      }
      this.pending = pending;
      this.stats.commands++;
      const line = `${command}\r`;
      this.stats.bytesOut += line.length;
      port.write(line, 'latin1', (err) => {
        if (err) this.finish(pending, new ElmLinkError('disconnected', `${this.path}: write failed: ${err.message}`, { cause: err }));
      });
    });
  }

  private finish(pending: Pending, outcome: string | ElmLinkError): void {
    if (this.pending !== pending) return;
    this.pending = null;
    clearTimeout(pending.timer);
    if (pending.onAbort) pending.signal?.removeEventListener('abort', pending.onAbort);
    if (typeof outcome === 'string') pending.resolve(outcome);
    else pending.reject(outcome);
  }

  private failPending(err: ElmLinkError): void {
    if (this.pending) this.finish(this.pending, err);
    this.promptWaiter?.(false);
  }

  /**
   * Waits (at most `waitMs`) for the prompt of the command that timed out, discarding what comes with it; resolves
   * with whether the prompt came.
   */
  private async drain(waitMs = this.drainMs): Promise<boolean> {
    const prompted = await new Promise<boolean>((resolve) => {
      const done = (came: boolean): void => {
        clearTimeout(timer);
        this.promptWaiter = null;
        resolve(came);
      };
      const timer = setTimeout(() => done(false), waitMs);
      this.promptWaiter = done;
    });
    this.unsynced = false;
    return prompted;
  }

  private onData(chunk: Buffer): void {
    this.stats.bytesIn += chunk.length;
    const pending = this.pending;
    if (!pending) {
      this.stats.strayBytes += chunk.length;
      if (chunk.includes(PROMPT)) this.promptWaiter?.(true);
      return;
    }
    const promptAt = chunk.indexOf(PROMPT);
    const upTo = promptAt < 0 ? chunk.length : promptAt;
    // NULs are what some clones send at power-up and between answers; they are never part of one.
    pending.text += chunk.toString('latin1', 0, upTo).replace(/\0/g, '');
    if (promptAt >= 0) {
      // Anything after the prompt belongs to nothing we asked (the adapter speaks only when spoken to).
      this.stats.strayBytes += chunk.length - promptAt - 1;
      this.finish(pending, pending.text);
      return;
    }
    if (pending.text.length > this.maxAnswer) {
      this.unsynced = true;
      this.finish(pending, new ElmLinkError('overflow', `more than ${this.maxAnswer} bytes without a prompt after ${JSON.stringify(pending.command)}`));
    }
  }
}

function openError(path: string, err: Error & { code?: string }): ElmLinkError {
  const text = err.message;
  if (/ENOENT|No such file/i.test(text)) return new ElmLinkError('no-port', `${path}: no such serial port (is the adapter plugged in?)`, { cause: err });
  if (/EACCES|Permission denied/i.test(text)) {
    return new ElmLinkError('port-denied', `${path}: permission denied (run as a member of the port's group, usually dialout)`, { cause: err });
  }
  if (/EBUSY|lock|Resource temporarily unavailable/i.test(text)) {
    return new ElmLinkError('port-denied', `${path}: in use by another program`, { cause: err });
  }
  return new ElmLinkError('open-failed', `${path}: ${text}`, { cause: err });
}
