/**
 * The decode stage for one bus: every frame through the compiled database into one buffer of latest values, with plain
 * counters. This is the agent's hot path: per frame one table lookup, one generated decoder writing into a
 * preallocated Float64Array and a few increments; no allocation, no logging.
 */
import type { CanFrame, FrameSink } from '../can/frame.js';
import type { CompiledDatabase, MessageCodec } from './codec.js';

/** Decoding state of one bus: its database, the latest value of every signal, and plain counters. */
export class BusDecoder {
  /** Latest physical value per database slot; NaN until the signal has been received. */
  readonly values: Float64Array;
  frames = 0;
  signals = 0;
  /** Frames no message of the DBC describes (including remote and error frames). */
  unknownFrames = 0;
  /** Frames of a known message that could not be decoded (too short, undefined multiplexer value). */
  decodeErrors = 0;
  /** Malformed lines skipped by a log replay. */
  badLogLines = 0;

  constructor(
    readonly name: string,
    readonly database: CompiledDatabase,
  ) {
    this.values = new Float64Array(database.slotCount).fill(NaN);
  }

  /**
   * Decodes one frame into `values` and counts it; returns the message's codec when the frame was decoded, so a later
   * stage (the collector) can see which signals just changed without looking the frame up again.
   */
  decode(frame: CanFrame): MessageCodec | undefined {
    this.frames++;
    const codec = frame.error || frame.remote ? undefined : this.database.find(frame.id, frame.extended);
    if (codec === undefined) {
      this.unknownFrames++;
      return undefined;
    }
    const written = codec.decodeInto(frame.data, this.values);
    if (written < 0) {
      this.decodeErrors++;
      return undefined;
    }
    this.signals += written;
    return codec;
  }

  readonly sink: FrameSink = (frame) => {
    this.decode(frame);
  };
}
