/**
 * Sends DBC messages on a bus: encodes named signal values through the compiled database and puts the frame on an
 * endpoint, under a token-bucket rate limit, so a remote command or a misbehaving rule cannot flood a vehicle bus.
 */
import type { CompiledDatabase } from '../dbc/codec.js';
import type { SignalValue } from '../dbc/model.js';
import type { CanEndpoint } from './bus.js';

export class FrameWriteError extends Error {
  override name = 'FrameWriteError';
  constructor(
    readonly code: 'unknown-message' | 'rate-limited' | 'encode' | 'send',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface FrameWriterOptions {
  /** Sustained frames per second. Default 100. */
  maxFramesPerSecond?: number;
  /** Frames that may go out back to back before the sustained rate applies. Default 10. */
  burst?: number;
  /** Millisecond clock, injectable for tests. */
  now?: () => number;
}

export class CanFrameWriter {
  /** Frames sent and frames refused by the rate limit. */
  sent = 0;
  refused = 0;
  private readonly rate: number;
  private readonly burst: number;
  private readonly now: () => number;
  private tokens: number;
  private refilledAt: number;

  constructor(
    private readonly endpoint: CanEndpoint,
    private readonly database: CompiledDatabase,
    options: FrameWriterOptions = {},
  ) {
    this.rate = options.maxFramesPerSecond ?? 100;
    this.burst = options.burst ?? 10;
    if (!(this.rate > 0) || !(this.burst >= 1)) throw new RangeError('frame writer: maxFramesPerSecond must be > 0 and burst >= 1');
    this.now = options.now ?? (() => performance.now());
    this.tokens = this.burst;
    this.refilledAt = this.now();
  }

  /**
   * Encodes `values` (signal name → physical value or choice label; absent signals take their start value) into the
   * message named `messageName` and sends it. Throws `FrameWriteError` and sends nothing when the message is unknown,
   * a value is outside the DBC range or does not fit, the rate limit is reached or the bus refuses the frame.
   */
  send(messageName: string, values: Record<string, SignalValue>): void {
    const codec = this.database.byName(messageName);
    if (!codec) throw new FrameWriteError('unknown-message', `no message '${messageName}' in the bus database`);
    // What goes onto a vehicle bus stays inside the range the DBC declares ([0|0] declares none), not just inside the
    // signal's bits: an actuator told 200 % is a fault even when 200 fits.
    for (const signal of codec.message.signals) {
      const value = Object.hasOwn(values, signal.name) ? values[signal.name] : undefined;
      if (typeof value !== 'number' || signal.minimum >= signal.maximum) continue;
      if (value < signal.minimum || value > signal.maximum) {
        throw new FrameWriteError('encode', `${messageName}: ${signal.name} = ${value} is outside [${signal.minimum}, ${signal.maximum}]`);
      }
    }
    let payload: Uint8Array;
    try {
      payload = codec.encode(values);
    } catch (err) {
      throw new FrameWriteError('encode', `${messageName}: ${(err as Error).message}`, { cause: err });
    }
    this.take(messageName);
    const { message } = codec;
    try {
      this.endpoint.send(message.id, message.extended, payload, message.fd);
    } catch (err) {
      throw new FrameWriteError('send', `${messageName}: ${(err as Error).message}`, { cause: err });
    }
    this.sent++;
  }

  private take(what: string): void {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) / 1000) * this.rate);
    this.refilledAt = now;
    if (this.tokens < 1) {
      this.refused++;
      throw new FrameWriteError('rate-limited', `${what}: rate limit of ${this.rate} frames/s reached`);
    }
    this.tokens -= 1;
  }
}
