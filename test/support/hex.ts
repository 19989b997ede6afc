/**
 * Bytes written as hex in tests, both ways: `hexBytes('41 0C 0B B8')` for what a test expects or feeds in, and
 * `hexText(bytes)` for bytes a test compares as text ('41 0C 0B B8', or 'DEADBEEF' with no separator, as candump
 * writes a frame's data).
 *
 * Failure: `hexBytes` throws, quoting the text, when it is not whole hex bytes (a typo in a fixture fails loudly
 * instead of becoming different bytes).
 */

/** `'41 0C 0B B8'`, `'410C0BB8'` or any whitespace between the bytes, to bytes. */
export function hexBytes(text: string): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  if (!/^([0-9A-Fa-f]{2})*$/.test(compact)) throw new Error(`not hex bytes: ${JSON.stringify(text)}`);
  return Uint8Array.from(compact.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

/** Bytes as upper-case hex pairs joined by `separator`: `41 0C 0B B8` by default. */
export function hexText(bytes: ArrayLike<number>, separator = ' '): string {
  return Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, '0')).join(separator);
}
