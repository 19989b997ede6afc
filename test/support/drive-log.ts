/**
 * Hand-made drive logs for the replay source: `candump -L` lines and the payloads they carry, so a test knows every
 * value the agent should decode from them.
 */
import { hexText } from './hex.js';

/** One `candump -L` line: `(ts) bus ID#DATA`, a standard identifier when it fits 11 bits. */
export function candumpLine(ts: number, id: number, data: readonly number[], bus = 'can0'): string {
  const idText = id <= 0x7ff ? id.toString(16).toUpperCase().padStart(3, '0') : id.toString(16).toUpperCase().padStart(8, '0');
  return `(${ts.toFixed(6)}) ${bus} ${idText}#${hexText(data, '')}`;
}

/** Little-endian unsigned 16-bit value at byte `at` of an 8-byte payload of zeros. */
export function le16(raw: number, at = 0, length = 8): number[] {
  const data = new Array<number>(length).fill(0);
  data[at] = raw & 0xff;
  data[at + 1] = (raw >> 8) & 0xff;
  return data;
}
