/**
 * CAN frames built from a DBC message, as a bus would deliver them: a classic data frame with the message's ID and
 * addressing, the payload given or encoded from signal values. Throws what the codec's encode throws (an unknown
 * signal, a value out of range).
 */
import type { CanFrame } from '../../src/can/frame.js';
import type { MessageCodec } from '../../src/dbc/codec.js';

/** A frame of `codec`'s message on `bus` at `ts` (seconds since the epoch), its payload `data` or `values` encoded. */
export function messageFrame(codec: MessageCodec, payload: Uint8Array | Record<string, number>, at: { ts: number; bus: string }): CanFrame {
  const data = payload instanceof Uint8Array ? payload : codec.encode(payload);
  return {
    ts: at.ts,
    bus: at.bus,
    id: codec.message.id,
    extended: codec.message.extended,
    fd: false,
    fdFlags: 0,
    remote: false,
    error: false,
    dlc: data.length,
    data,
  };
}
