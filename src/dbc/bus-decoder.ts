/**
 * The decode stage for one bus: every frame through the compiled database into one buffer of latest values, with plain
 * counters. This is the agent's hot path: per frame one table lookup, one generated decoder writing into a
 * preallocated Float64Array and a few increments; no allocation, no logging.
 *
 * Beside each value, when it arrived (the frame's timestamp, written into a second preallocated Float64Array): a
 * command's precondition must not trust a value the bus stopped sending long ago. A multiplexed signal's time moves
 * only when its page is in the frame (a loop over the message's signals, for multiplexed messages only).
 */
import type { CanFrame, FrameSink } from '../can/frame.js';
import type { CompiledDatabase, MessageCodec } from './codec.js';

/** Which signals of a multiplexed message a frame carries: each signal's multiplexer and the values selecting it. */
class MultiplexedPages {
  /** Signal indexes, every multiplexer before the signals it selects. */
  private readonly order: Int32Array;
  /** Per signal index: its multiplexer's signal index, -1 when always present. */
  private readonly selector: Int32Array;
  private readonly ids: Int32Array[];
  /** Per signal index, for the current frame: 1 when present. */
  private readonly present: Uint8Array;

  constructor(private readonly codec: MessageCodec) {
    const signals = codec.message.signals;
    const index = new Map(signals.map((s, i) => [s.name, i]));
    this.selector = Int32Array.from(signals, (s) => (s.multiplexerSignal === undefined ? -1 : (index.get(s.multiplexerSignal) ?? -1)));
    this.ids = signals.map((s) => Int32Array.from(s.multiplexerIds ?? []));
    this.present = new Uint8Array(signals.length);
    const order: number[] = [];
    const placed = new Uint8Array(signals.length);
    const place = (i: number, depth: number): void => {
      if (placed[i] || depth > signals.length) return;
      const selector = this.selector[i]!;
      if (selector >= 0) place(selector, depth + 1);
      placed[i] = 1;
      order.push(i);
    };
    signals.forEach((_, i) => place(i, 0));
    this.order = Int32Array.from(order);
  }

  /** Stamps `ts` on the signals the frame just decoded into `values` carried. */
  stamp(values: Float64Array, receivedAt: Float64Array, ts: number): void {
    const { slots } = this.codec;
    const { order, selector, ids, present } = this;
    for (let k = 0; k < order.length; k++) {
      const i = order[k]!;
      const mux = selector[i]!;
      const here = mux < 0 || (present[mux] === 1 && ids[i]!.includes(values[slots[mux]!]!));
      present[i] = here ? 1 : 0;
      if (here) receivedAt[slots[i]!] = ts;
    }
  }
}

/** Decoding state of one bus: its database, the latest value of every signal, and plain counters. */
export class BusDecoder {
  /** Latest physical value per database slot; NaN until the signal has been received. */
  readonly values: Float64Array;
  /** When each slot's value arrived: its frame's timestamp, unix seconds; 0 until received. */
  readonly receivedAt: Float64Array;
  /** Per slot of a multiplexed message's first signal: which signals a frame carries. */
  private readonly pages: (MultiplexedPages | undefined)[];
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
    this.receivedAt = new Float64Array(database.slotCount);
    this.pages = new Array<MultiplexedPages | undefined>(database.slotCount).fill(undefined);
    for (const codec of database.messages) {
      if (codec.slots.length > 0 && codec.message.signals.some((s) => s.multiplexerSignal !== undefined))
        this.pages[codec.slots[0]!] = new MultiplexedPages(codec);
    }
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
    const slots = codec.slots;
    if (slots.length > 0) {
      const first = slots[0]!;
      const pages = this.pages[first];
      if (pages === undefined) {
        // A message's slots are consecutive.
        const end = first + slots.length;
        for (let slot = first; slot < end; slot++) this.receivedAt[slot] = frame.ts;
      } else pages.stamp(this.values, this.receivedAt, frame.ts);
    }
    return codec;
  }

  readonly sink: FrameSink = (frame) => {
    this.decode(frame);
  };
}
