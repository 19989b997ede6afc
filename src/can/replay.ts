/**
 * Replays a `candump -L` log (a file or a stream such as stdin) as a FrameSource, either as fast as possible or paced
 * by the log's own timestamps.
 */
import { createReadStream } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { CandumpLineParser, CandumpLineSplitter, CandumpParseError } from './candump.js';
import { createFrame, SOURCE_READ_INTERVAL_MS, type FrameSink, type FrameSource } from './frame.js';

export { CandumpParseError, parseCandumpText } from './candump.js';

export interface CandumpReplayOptions {
  /** Playback speed in real-time mode: 1 = as recorded, 2 = twice as fast. Default 1. Ignored unless `realtime`. */
  speed?: number;
  /** true: pace frames by the log's timestamps. false (default): deliver as fast as the sink takes them. */
  realtime?: boolean;
  /** Renames interfaces, e.g. `(bus) => bus === 'can0' ? 'vehicle' : bus`. Called once per distinct name. */
  busName?: (original: string) => string;
  /** Receives each malformed line, which is skipped; replay continues. Without it they are only counted (`errors`). */
  onError?: (err: CandumpParseError) => void;
  /**
   * Real time: how much later than due a wait for an early frame ends, so that one wake-up delivers every frame due
   * meanwhile (frames come at most this late, never early; their timestamps are the log's). Default
   * SOURCE_READ_INTERVAL_MS, as a live bus is read. 0: on time.
   */
  coalesceMs?: number;
}

/** In as-fast-as-possible mode, give timers and abort handlers a turn at least this often (ms). */
const YIELD_EVERY_MS = 10;

export class CandumpReplaySource implements FrameSource {
  readonly name: string;
  /** Frames delivered by the last (or current) run. */
  frames = 0;
  /** Malformed lines skipped by the last (or current) run. */
  errors = 0;

  private readonly input: string | Readable;
  private readonly speed: number;
  private readonly realtime: boolean;
  private readonly busName: ((original: string) => string) | undefined;
  private readonly onError: ((err: CandumpParseError) => void) | undefined;
  private readonly coalesceMs: number;
  private streamUsed = false;

  /** `input` is a file path, or a Readable (bytes or strings) such as `process.stdin`. */
  constructor(input: string | Readable, options: CandumpReplayOptions = {}) {
    const speed = options.speed ?? 1;
    if (!(speed > 0) || !Number.isFinite(speed)) throw new RangeError(`replay speed must be a positive number, got ${speed}`);
    this.input = input;
    this.speed = speed;
    this.realtime = options.realtime ?? false;
    this.busName = options.busName;
    this.onError = options.onError;
    const coalesceMs = options.coalesceMs ?? SOURCE_READ_INTERVAL_MS;
    if (!(coalesceMs >= 0) || !Number.isFinite(coalesceMs)) throw new RangeError(`replay coalesceMs must be 0 or more, got ${coalesceMs}`);
    this.coalesceMs = coalesceMs;
    this.name = typeof input === 'string' ? `replay:${path.basename(input)}` : input === (process.stdin as Readable) ? 'replay:stdin' : 'replay:stream';
  }

  /**
   * Replays the log into `sink`. Resolves at the end of the log, or promptly once `signal` aborts. Rejects if the
   * input cannot be read, or if `sink` or `onError` throws. A file can be replayed again; a stream only once.
   */
  async run(sink: FrameSink, signal?: AbortSignal): Promise<void> {
    if (typeof this.input !== 'string') {
      if (this.streamUsed) throw new Error(`${this.name}: a stream can only be replayed once`);
      this.streamUsed = true;
    }
    this.frames = 0;
    this.errors = 0;
    if (signal?.aborted) return;

    const owned = typeof this.input === 'string';
    const stream: Readable = owned ? createReadStream(this.input, { highWaterMark: 64 * 1024 }) : this.input;
    try {
      await this.pump(stream, sink, signal);
    } finally {
      // Only close what we opened: a caller's stream (stdin) stays theirs.
      if (owned) stream.destroy();
    }
  }

  private async pump(stream: Readable, sink: FrameSink, signal: AbortSignal | undefined): Promise<void> {
    const pause = new Pause(signal);
    try {
      await this.pumpWith(stream, sink, signal, pause);
    } finally {
      pause.close();
    }
  }

  private async pumpWith(stream: Readable, sink: FrameSink, signal: AbortSignal | undefined, pause: Pause): Promise<void> {
    // Own parser and frame per run: in real-time mode a parsed frame waits for its time, and the parser's payload
    // buffers must not be shared with anyone who could parse meanwhile.
    const parser = new CandumpLineParser();
    const frame = createFrame();
    // Bounded lines: an endless line (binary input, a log without newlines) is reported and skipped.
    const lines = new CandumpLineSplitter((err) => this.report(err));
    const remap = this.busName;
    const renamed = new Map<string, string>();
    const msPerLogSecond = 1000 / this.speed;
    const coalesceMs = this.coalesceMs;

    let firstTs = NaN; // log time of the first frame (real-time mode)
    let startWall = 0; // performance.now() when it was delivered
    let now = 0; // last performance.now() reading; refreshed only when a frame looks early, so due frames batch
    let lastYield = performance.now();

    /** Parses the current line into `frame` (renaming its bus); false for blank lines, comments and reported errors. */
    const parse = (): boolean => {
      try {
        if (!parser.parseRange(lines.text, lines.start, lines.end, frame, lines.lineNo)) return false;
      } catch (err) {
        if (!(err instanceof CandumpParseError)) throw err;
        this.report(err);
        return false;
      }
      if (remap !== undefined) {
        let name = renamed.get(frame.bus);
        if (name === undefined) {
          name = remap(frame.bus);
          renamed.set(frame.bus, name);
        }
        frame.bus = name;
      }
      return true;
    };

    /** Milliseconds until the parsed frame is due (real-time mode); 0 when it is due already. */
    const wait = (): number => {
      if (Number.isNaN(firstTs)) {
        firstTs = frame.ts;
        startWall = now = performance.now();
        return 0;
      }
      const due = startWall + (frame.ts - firstTs) * msPerLogSecond;
      if (due <= now) return 0;
      now = performance.now();
      return due > now ? due - now + coalesceMs : 0;
    };

    /** Delivers every complete line pushed so far. Returns false once aborted. */
    const deliver = async (): Promise<boolean> => {
      while (lines.next()) {
        if (parse()) {
          // The await only happens for an early frame: as-fast-as-possible replay stays a synchronous loop, and in
          // real time one timer covers every frame that is due by the time it fires.
          const ms = this.realtime ? wait() : 0;
          if (ms > 0) {
            await pause.sleep(ms);
            if (signal?.aborted) return false;
            now = performance.now();
          }
          this.frames++;
          sink(frame);
        }
        if (signal?.aborted) return false;
      }
      return true;
    };

    for (;;) {
      if (signal?.aborted) return;
      const chunk: unknown = stream.read();
      if (chunk === null) {
        const state = await readable(stream, signal);
        if (state === 'readable') continue;
        if (state === 'aborted') return;
        break; // ended
      }
      lines.push(chunk as string | Buffer);
      if (!(await deliver())) return;
      if (!this.realtime && performance.now() - lastYield > YIELD_EVERY_MS) {
        // A stream with data already buffered never leaves the microtask queue: let timers and abort handlers run.
        await new Promise<void>((resolve) => setImmediate(resolve));
        lastYield = performance.now();
      }
    }
    lines.finish();
    await deliver();
  }

  private report(err: CandumpParseError): void {
    this.errors++;
    this.onError?.(err);
  }
}

/**
 * Waits for `ms` or until `signal` aborts, whichever is first; never rejects. One abort listener for the life of the
 * object rather than one per wait (adding and removing an AbortSignal listener costs more than the wait's timer).
 */
class Pause {
  private resolve: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onAbort = (): void => this.wake();
  private readonly wakeFromTimer = (): void => this.wake();

  constructor(private readonly signal: AbortSignal | undefined) {
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  sleep(ms: number): Promise<void> {
    if (this.signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.timer = setTimeout(this.wakeFromTimer, ms);
    });
  }

  close(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.wake();
  }

  private wake(): void {
    clearTimeout(this.timer);
    const resolve = this.resolve;
    this.resolve = null;
    resolve?.();
  }
}

/**
 * Waits until `stream` has data to read, has ended, or `signal` aborts. Rejects with the stream's error.
 * Paused-mode reading (instead of `for await`) so an abort can stop waiting without destroying a caller's stream.
 */
function readable(stream: Readable, signal: AbortSignal | undefined): Promise<'readable' | 'ended' | 'aborted'> {
  if (stream.readableEnded || (stream.destroyed && !stream.errored)) return Promise.resolve('ended');
  if (stream.errored) return Promise.reject(stream.errored);
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onReadable = (): void => {
      cleanup();
      resolve('readable');
    };
    const onEnd = (): void => {
      cleanup();
      // 'close' right after an error: let the error win.
      if (stream.errored) reject(stream.errored);
      else resolve('ended');
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onAbort = (): void => {
      cleanup();
      resolve('aborted');
    };
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
