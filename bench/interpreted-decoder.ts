/**
 * Baseline for the decode benchmark: a straightforward decoder that walks the DBC model bit by bit for every frame,
 * as a decoder without compilation does. It handles what the benchmark frames need (integer signals, no multiplexing).
 */
import type { MessageDef, SignalValue } from '../src/dbc/index.js';

export function decodeInterpreted(message: MessageDef, data: Uint8Array): Record<string, SignalValue> {
  const out: Record<string, SignalValue> = {};
  for (const signal of message.signals) {
    let raw = 0;
    if (signal.byteOrder === 'little_endian') {
      for (let k = signal.length - 1; k >= 0; k--) {
        const bit = signal.startBit + k;
        raw = raw * 2 + ((data[bit >> 3]! >> (bit & 7)) & 1);
      }
    } else {
      let bit = signal.startBit;
      for (let k = 0; k < signal.length; k++) {
        raw = raw * 2 + ((data[bit >> 3]! >> (bit & 7)) & 1);
        bit = (bit & 7) === 0 ? bit + 15 : bit - 1;
      }
    }
    if (signal.signed && raw >= 2 ** (signal.length - 1)) raw -= 2 ** signal.length;
    out[signal.name] = raw * signal.factor + signal.offset;
  }
  return out;
}
