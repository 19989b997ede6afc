/**
 * The `candump -L` log format (can-utils), one frame a line:
 *
 *   (1635188455.020850) can0 18F00E00#821639C4FFFFFFFF   29-bit data frame
 *   (1635188455.021900) can1 123#1122                    11-bit data frame
 *   (1635188455.021900) can1 123#R / 123#R5              remote frame, optional requested DLC
 *   (1635188455.021900) can1 123##3001122                CAN FD, flags nibble (bit 0 BRS, bit 1 ESI) then data
 *   (1635188455.021900) can1 20000004#0004000000000000   error frame (CAN_ERR_FLAG set in the 8-digit ID)
 *   (1635188455.021900) can1 123#1122334455667788_9      classic frame with a raw DLC 9..F (ignored here)
 *
 * Parsing is a hot path (replay and benchmarks run tens of thousands of lines), so it scans character codes by hand
 * instead of using regexes or `split`, and fills a caller-owned frame instead of returning a new object.
 */
import { StringDecoder } from 'node:string_decoder';
import { CAN_EFF_MASK, CAN_MAX_DLEN, CAN_SFF_MASK, CANFD_MAX_DLEN, createFrame, type CanFrame, type FrameSink } from './frame.js';

/** CAN_ERR_FLAG of the Linux socketcan ID word; candump writes it into the 8-digit ID of error frames. */
export const CAN_ERR_FLAG = 0x20000000;

/** A line that is not valid `candump -L` output. */
export class CandumpParseError extends Error {
  override readonly name = 'CandumpParseError';
  /** The offending line as read (without its newline). Very long lines are kept whole here, truncated in `message`. */
  readonly line: string;
  /** 1-based line number, when the caller knows it. */
  readonly lineNo: number | undefined;
  /** 1-based column the problem was found at, when it is about one position. */
  readonly column: number | undefined;
  /** What is wrong, without the location and line text. */
  readonly reason: string;

  constructor(reason: string, line: string, lineNo?: number, column?: number) {
    const where = lineNo === undefined ? '' : `line ${lineNo}: `;
    const at = column === undefined ? '' : ` at column ${column}`;
    const shown = line.length > 120 ? `${line.slice(0, 120)}… (${line.length} chars)` : line;
    super(`${where}${reason}${at}: ${JSON.stringify(shown)}`);
    this.line = line;
    this.lineNo = lineNo;
    this.column = column;
    this.reason = reason;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Lookup tables

/** Character code → nibble value, -1 for anything that is not a hex digit (either case). */
const NIBBLE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) NIBBLE[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  NIBBLE[0x41 + i] = 10 + i;
  NIBBLE[0x61 + i] = 10 + i;
}

const HEX_DIGIT = '0123456789ABCDEF';
const HEX_BYTE: string[] = [];
for (let i = 0; i < 256; i++) HEX_BYTE.push(HEX_DIGIT[i >> 4]! + HEX_DIGIT[i & 15]!);

/** Payload length → true when it is a valid CAN FD length. */
const FD_LENGTH_OK = new Uint8Array(CANFD_MAX_DLEN + 1);
for (const n of [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64]) FD_LENGTH_OK[n] = 1;

const POW10 = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
const MAX_FRACTION_DIGITS = 9;
const MAX_SECONDS_DIGITS = 12;
const MAX_CACHED_BUSES = 32;

const CH_TAB = 0x09;
const CH_CR = 0x0d;
const CH_SPACE = 0x20;
const CH_HASH = 0x23;
const CH_LPAREN = 0x28;
const CH_RPAREN = 0x29;
const CH_DOT = 0x2e;
const CH_0 = 0x30;
const CH_9 = 0x39;
const CH_R = 0x52;
const CH_r = 0x72;
const CH_UNDERSCORE = 0x5f;
const CH_BOM = 0xfeff;

function nibbleAt(text: string, i: number): number {
  const c = text.charCodeAt(i);
  return c < 128 ? NIBBLE[c]! : -1;
}

function isBlank(c: number): boolean {
  return c === CH_SPACE || c === CH_TAB || c === CH_CR;
}

// ---------------------------------------------------------------------------------------------------------------------
// Parser

/**
 * A `candump -L` line parser with its own payload buffers.
 *
 * The frame's `data` is a view this parser reuses: one Uint8Array per payload length (0..64), so it stays valid only
 * until this parser parses the next line. Sinks that keep frames must copy them (`cloneFrame`). Sources that may parse
 * while an earlier frame is still waiting to be delivered (real-time replay) should own a parser each.
 */
export class CandumpLineParser {
  private readonly buffers = new Array<Uint8Array | undefined>(CANFD_MAX_DLEN + 1);
  /** Bus names seen so far, so a line's bus is matched in place instead of allocating a new string each time. */
  private readonly buses: string[] = [];
  // The line being parsed, kept in fields (not a closure) so error reporting costs nothing per line.
  private text = '';
  private start = 0;
  private end = 0;
  private lineEnd = 0;
  private lineNo: number | undefined = undefined;

  /**
   * Parses one line into `frame`. Returns false (frame untouched) for a blank line or a `#` comment, true for a frame.
   * Throws CandumpParseError for anything else; the frame's fields are then unchanged, but its previous `data` view
   * may have been overwritten.
   */
  parse(line: string, frame: CanFrame, lineNo?: number): boolean {
    return this.parseRange(line, 0, line.length, frame, lineNo);
  }

  /** Like `parse`, for the line `text[start, end)`: lets callers parse a whole buffer without slicing out each line. */
  parseRange(text: string, start: number, end: number, frame: CanFrame, lineNo?: number): boolean {
    const lineEnd = end;
    // Trim: tolerate CRLF files and stray spaces/tabs around the line, and a byte-order mark at the very start.
    while (end > start && isBlank(text.charCodeAt(end - 1))) end--;
    let i = start;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (!isBlank(c) && c !== CH_BOM) break;
      i++;
    }
    if (i === end) return false;
    if (text.charCodeAt(i) === CH_HASH) return false;
    this.text = text;
    this.start = start;
    this.end = end;
    this.lineEnd = lineEnd;
    this.lineNo = lineNo;

    // (seconds.fraction)
    if (text.charCodeAt(i) !== CH_LPAREN) this.fail('expected "(" starting the timestamp, e.g. "(1635188455.020850)"', i);
    i++;
    let seconds = 0;
    const secStart = i;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < CH_0 || c > CH_9) break;
      seconds = seconds * 10 + (c - CH_0);
      i++;
    }
    if (i === secStart) this.fail(`expected timestamp seconds, found ${this.charAt(i)}`, i);
    if (i - secStart > MAX_SECONDS_DIGITS) this.fail('timestamp seconds have too many digits', secStart);
    if (i >= end || text.charCodeAt(i) !== CH_DOT) this.fail(`expected "." in the timestamp, found ${this.charAt(i)}`, i);
    i++;
    let fraction = 0;
    const fracStart = i;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < CH_0 || c > CH_9) break;
      fraction = fraction * 10 + (c - CH_0);
      i++;
    }
    const fracDigits = i - fracStart;
    if (fracDigits === 0) this.fail(`expected timestamp fraction digits, found ${this.charAt(i)}`, i);
    if (fracDigits > MAX_FRACTION_DIGITS) this.fail('timestamp fraction has more than 9 digits', fracStart);
    if (i >= end || text.charCodeAt(i) !== CH_RPAREN) this.fail(`expected ")" closing the timestamp, found ${this.charAt(i)}`, i);
    i++;
    // One division of an exact integer gives the correctly rounded value (same as Number("…")) while it fits in 2^53.
    const scaled = seconds * POW10[fracDigits]! + fraction;
    const ts = scaled <= Number.MAX_SAFE_INTEGER ? scaled / POW10[fracDigits]! : seconds + fraction / POW10[fracDigits]!;

    // interface
    let sep = i;
    while (i < end && isBlank(text.charCodeAt(i))) i++;
    if (i === sep || i >= end) this.fail('expected a space and the interface name after the timestamp', i);
    const busStart = i;
    while (i < end && !isBlank(text.charCodeAt(i))) i++;
    const busEnd = i;
    sep = i;
    while (i < end && isBlank(text.charCodeAt(i))) i++;
    if (i === sep || i >= end) this.fail('expected a space and the frame (ID#DATA) after the interface name', i);

    // identifier
    const idStart = i;
    let rawId = 0;
    while (i < end && i - idStart < 9) {
      const n = nibbleAt(text, i);
      if (n < 0) break;
      rawId = rawId * 16 + n; // arithmetic, not bit operations: 8 digits can exceed int32
      i++;
    }
    const idDigits = i - idStart;
    if (i >= end) this.fail('missing "#" between CAN ID and data', i);
    if (text.charCodeAt(i) !== CH_HASH) {
      if (idDigits > 8) this.fail('CAN ID must have 3 (11-bit) or 8 (29-bit) hex digits, found more than 8', idStart);
      this.fail(`invalid character ${this.charAt(i)} in CAN ID (expected hex digits then "#")`, i);
    }
    let id = rawId;
    let extended = false;
    let error = false;
    if (idDigits === 3) {
      if (rawId > CAN_SFF_MASK) this.fail(`11-bit CAN ID 0x${rawId.toString(16).toUpperCase()} exceeds 0x7FF`, idStart);
    } else if (idDigits === 8) {
      if (rawId > 0x3fffffff) this.fail('CAN ID has EFF/RTR flag bits set (only the error flag 0x20000000 may be)', idStart);
      if (rawId >= CAN_ERR_FLAG) {
        error = true;
        id = rawId - CAN_ERR_FLAG;
      } else {
        extended = true;
      }
    } else {
      const found = idDigits > 8 ? 'more than 8' : String(idDigits);
      this.fail(`CAN ID must have 3 (11-bit) or 8 (29-bit) hex digits, found ${found}`, idStart);
    }
    i++; // past '#'

    let fd = false;
    let fdFlags = 0;
    let remote = false;
    let dlc: number;
    let data: Uint8Array;

    const c0 = i < end ? text.charCodeAt(i) : -1;
    if (c0 === CH_HASH) {
      // CAN FD: ##<flags nibble><data>. The whole nibble is kept, so newer flags (e.g. FDF 0x4) round-trip too.
      if (error) this.fail('error frames cannot be CAN FD frames', i);
      i++;
      fdFlags = i < end ? nibbleAt(text, i) : -1;
      if (fdFlags < 0) this.fail(`expected a hex CAN FD flags digit after "##", found ${this.charAt(i)}`, i);
      i++;
      fd = true;
      const digits = end - i;
      const len = digits >> 1;
      if (digits & 1 || len > CANFD_MAX_DLEN || !FD_LENGTH_OK[len]) {
        this.checkHex(i, end); // a stray character is the more useful message
        if (digits & 1) this.fail(`data has an odd number of hex digits (${digits})`, i);
        if (len > CANFD_MAX_DLEN) this.fail(`CAN FD payload of ${len} bytes exceeds ${CANFD_MAX_DLEN}`, i);
        this.fail(`CAN FD payload of ${len} bytes is not a valid FD length (0-8, 12, 16, 20, 24, 32, 48, 64)`, i);
      }
      data = this.decodeHex(i, len);
      dlc = len;
    } else if (c0 === CH_R || c0 === CH_r) {
      // Remote frame: R, optional requested length 0..8, optional _<raw dlc>.
      if (error) this.fail('error frames cannot be remote frames', i);
      i++;
      remote = true;
      dlc = 0;
      if (i < end && text.charCodeAt(i) !== CH_UNDERSCORE) {
        const c = text.charCodeAt(i);
        if (c < CH_0 || c > CH_0 + CAN_MAX_DLEN) this.fail(`remote frame DLC must be a digit 0-8, found ${this.charAt(i)}`, i);
        dlc = c - CH_0;
        i++;
      }
      this.checkRawDlc(i);
      data = this.buffer(0);
    } else {
      // Classic data, up to 8 bytes, optionally followed by _<raw dlc 9..F>: that is ignored, the payload length stays.
      // The suffix can only be the last two characters; looking just there keeps this O(line) inside a big buffer.
      const dataEnd = end - i >= 2 && text.charCodeAt(end - 2) === CH_UNDERSCORE ? end - 2 : end;
      const digits = dataEnd - i;
      const len = digits >> 1;
      if (digits & 1 || len > CAN_MAX_DLEN) {
        this.checkHex(i, dataEnd);
        if (digits & 1) this.fail(`data has an odd number of hex digits (${digits})`, i);
        this.fail(`classic CAN payload of ${len} bytes exceeds ${CAN_MAX_DLEN} (CAN FD frames use "##")`, i);
      }
      this.checkRawDlc(dataEnd);
      data = this.decodeHex(i, len);
      dlc = len;
    }

    frame.ts = ts;
    frame.bus = this.internBus(busStart, busEnd);
    frame.id = id;
    frame.extended = extended;
    frame.fd = fd;
    frame.fdFlags = fdFlags;
    frame.remote = remote;
    frame.error = error;
    frame.dlc = dlc;
    frame.data = data;
    this.text = ''; // do not keep a large chunk alive between calls
    return true;
  }

  private fail(reason: string, at: number): never {
    const line = this.text.slice(this.start, this.lineEnd);
    this.text = '';
    throw new CandumpParseError(reason, line, this.lineNo, at - this.start + 1);
  }

  private charAt(i: number): string {
    return i >= this.end ? 'end of line' : JSON.stringify(this.text[i]);
  }

  private checkHex(from: number, to: number): void {
    for (let k = from; k < to; k++) {
      if (nibbleAt(this.text, k) < 0) this.fail(`invalid hex digit ${this.charAt(k)} in data`, k);
    }
  }

  /** Accepts the end of the line, or `_` plus one hex digit (a raw DLC some candump versions append) ending it. */
  private checkRawDlc(i: number): void {
    if (i === this.end) return;
    if (this.text.charCodeAt(i) !== CH_UNDERSCORE) this.fail(`unexpected ${this.charAt(i)} after the frame`, i);
    if (i + 2 !== this.end || nibbleAt(this.text, i + 1) < 0) {
      this.fail('expected exactly one hex digit (raw DLC) after "_" at the end of the line', i);
    }
  }

  private decodeHex(i: number, len: number): Uint8Array {
    const text = this.text;
    const out = this.buffer(len);
    for (let k = 0; k < len; k++, i += 2) {
      const hi = nibbleAt(text, i);
      if (hi < 0) this.fail(`invalid hex digit ${this.charAt(i)} in data`, i);
      const lo = nibbleAt(text, i + 1);
      if (lo < 0) this.fail(`invalid hex digit ${this.charAt(i + 1)} in data`, i + 1);
      out[k] = (hi << 4) | lo;
    }
    return out;
  }

  private buffer(len: number): Uint8Array {
    let b = this.buffers[len];
    if (b === undefined) {
      b = new Uint8Array(len);
      this.buffers[len] = b;
    }
    return b;
  }

  private internBus(start: number, end: number): string {
    const text = this.text;
    const len = end - start;
    const buses = this.buses;
    outer: for (let b = 0; b < buses.length; b++) {
      const name = buses[b]!;
      if (name.length !== len) continue;
      for (let k = 0; k < len; k++) if (name.charCodeAt(k) !== text.charCodeAt(start + k)) continue outer;
      return name;
    }
    const name = text.slice(start, end);
    // Bounded so a log with endless distinct names cannot grow it; such logs just pay for a slice per line.
    if (buses.length < MAX_CACHED_BUSES) buses.push(name);
    return name;
  }
}

const defaultParser = new CandumpLineParser();

/**
 * Parses one `candump -L` line into the caller-owned `frame` (reuse one frame for a whole log). Returns false for a
 * blank line or comment (frame untouched), true for a frame; throws CandumpParseError for a malformed line, quoting
 * it and `lineNo` when given.
 *
 * `frame.data` is a buffer shared by every call of this function (one per payload length): it is valid only until the
 * next call. Copy it (`cloneFrame`) to keep it. Code that interleaves several logs should use its own CandumpLineParser.
 */
export function parseCandumpLine(line: string, frame: CanFrame, lineNo?: number): boolean {
  return defaultParser.parseRange(line, 0, line.length, frame, lineNo);
}

// ---------------------------------------------------------------------------------------------------------------------
// Formatter

function idHex8(id: number): string {
  return HEX_BYTE[(id >>> 24) & 0xff]! + HEX_BYTE[(id >>> 16) & 0xff]! + HEX_BYTE[(id >>> 8) & 0xff]! + HEX_BYTE[id & 0xff]!;
}

/** `(%010u.%06u)` like candump, from the number of microseconds so float noise in `ts` never shows. */
function formatTimestamp(ts: number): string {
  if (!(ts >= 0) || !Number.isFinite(ts)) throw new RangeError(`cannot format timestamp ${ts}`);
  const micros = Math.round(ts * 1e6);
  const seconds = Math.floor(micros / 1e6);
  const us = micros - seconds * 1e6;
  return String(seconds).padStart(10, '0') + '.' + String(us).padStart(6, '0');
}

/**
 * Formats a frame as a `candump -L` line (no newline); the inverse of parseCandumpLine for every line candump writes.
 * Throws RangeError for a frame that cannot exist (e.g. 9 bytes of classic data, an ID out of range).
 */
export function formatCandumpLine(frame: CanFrame): string {
  const { id, data } = frame;
  let out = '(' + formatTimestamp(frame.ts) + ') ' + frame.bus + ' ';
  if (frame.error) {
    if (!(id >= 0 && id <= CAN_EFF_MASK) || !Number.isInteger(id)) throw new RangeError(`error class 0x${id.toString(16)} out of range`);
    out += idHex8((id | CAN_ERR_FLAG) >>> 0) + '#';
  } else if (frame.extended) {
    if (!(id >= 0 && id <= CAN_EFF_MASK) || !Number.isInteger(id)) throw new RangeError(`29-bit CAN ID 0x${id.toString(16)} out of range`);
    out += idHex8(id) + '#';
  } else {
    if (!(id >= 0 && id <= CAN_SFF_MASK) || !Number.isInteger(id)) throw new RangeError(`11-bit CAN ID 0x${id.toString(16)} out of range`);
    out += HEX_DIGIT[id >> 8]! + HEX_BYTE[id & 0xff]! + '#';
  }
  if (frame.remote) {
    if (!(frame.dlc >= 0 && frame.dlc <= CAN_MAX_DLEN)) throw new RangeError(`remote frame DLC ${frame.dlc} out of range 0-8`);
    // candump omits a zero length: "123#R".
    return frame.dlc > 0 ? out + 'R' + HEX_DIGIT[frame.dlc] : out + 'R';
  }
  if (frame.fd) {
    if (!(data.length <= CANFD_MAX_DLEN && FD_LENGTH_OK[data.length])) throw new RangeError(`invalid CAN FD payload length ${data.length}`);
    if (!(frame.fdFlags >= 0 && frame.fdFlags <= 15)) throw new RangeError(`CAN FD flags ${frame.fdFlags} do not fit one hex digit`);
    out += '#' + HEX_DIGIT[frame.fdFlags];
  } else if (data.length > CAN_MAX_DLEN) {
    throw new RangeError(`classic CAN payload of ${data.length} bytes exceeds ${CAN_MAX_DLEN}`);
  }
  for (let k = 0; k < data.length; k++) out += HEX_BYTE[data[k]!]!;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// Whole texts

const textParser = new CandumpLineParser();

/**
 * Parses a whole `candump -L` text synchronously, delivering each frame to `sink` (one reused frame object; its data
 * is valid during the call only). Malformed lines are passed to `onError` (if any) and skipped.
 */
export function parseCandumpText(text: string, sink: FrameSink, onError?: (err: CandumpParseError) => void): { frames: number; errors: number } {
  const frame = createFrame();
  let frames = 0;
  let errors = 0;
  let lineNo = 0;
  let pos = 0;
  const length = text.length;
  while (pos < length) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = length;
    lineNo++;
    let ok = false;
    try {
      ok = textParser.parseRange(text, pos, nl, frame, lineNo);
    } catch (err) {
      if (!(err instanceof CandumpParseError)) throw err;
      errors++;
      onError?.(err);
    }
    // The sink runs outside the try so its own exceptions are not mistaken for parse errors.
    if (ok) {
      frames++;
      sink(frame);
    }
    pos = nl + 1;
  }
  return { frames, errors };
}

// ---------------------------------------------------------------------------------------------------------------------
// Streams

/** Longest line worth buffering: a valid line is under 200 characters, so anything this long is garbage (or binary). */
export const MAX_CANDUMP_LINE_CHARS = 64 * 1024;

/**
 * Cuts a `candump -L` stream (bytes or text, chunk by chunk) into lines, never holding more than `maxLineChars` of an
 * unfinished line: a stream without newlines (binary, `yes | tr -d '\n'`) costs bounded memory. A longer line is
 * reported once to `onOverlong`, with its line number and start, and skipped up to its end; the lines after it keep
 * their numbers. Every reader of candump streams (replay, `decode`) goes through here.
 *
 * Lines are handed out in place, as `text[start, end)` (without the newline), so a parser reads them without a copy:
 *
 *   lines.push(chunk);
 *   while (lines.next()) parser.parseRange(lines.text, lines.start, lines.end, frame, lines.lineNo);
 *   ...
 *   lines.finish(); // then next() again: the last line may lack its newline
 */
export class CandumpLineSplitter {
  /** The text the current line lies in; valid until the next push() or finish(). */
  text = '';
  start = 0;
  end = 0;
  /** 1-based number of the current line (over-long lines count). */
  lineNo = 0;

  private readonly decoder = new StringDecoder('utf8');
  private pos = 0;
  /** The unfinished line carried into the next chunk. */
  private pending = '';
  /** Inside an over-long line: skipping to its end. */
  private discarding = false;
  private ended = false;
  /** The current text's tail has been kept: nothing more to hand out until the next push() or finish(). */
  private drained = false;

  constructor(
    private readonly onOverlong: (err: CandumpParseError) => void,
    private readonly maxLineChars = MAX_CANDUMP_LINE_CHARS,
  ) {}

  /** Takes the next chunk; call next() until it returns false before pushing another. */
  push(chunk: string | Uint8Array): void {
    this.take(typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
  }

  /** The input has ended: what is left (a last line without its newline) becomes the last line(s). */
  finish(): void {
    this.ended = true;
    this.take(this.decoder.end());
  }

  /** Moves to the next complete line: true with `text[start, end)` and `lineNo` set, false when it needs more input. */
  next(): boolean {
    if (this.drained) return false;
    const text = this.text;
    while (this.pos < text.length) {
      let nl = text.indexOf('\n', this.pos);
      if (nl < 0) {
        if (!this.ended) break;
        nl = text.length; // the last line of the input may lack its newline
      }
      const start = this.pos;
      this.pos = nl + 1;
      if (this.discarding) {
        // The end of the over-long line: it was reported (and counted) when it was found.
        this.discarding = false;
        continue;
      }
      this.lineNo++;
      this.start = start;
      this.end = nl;
      return true;
    }
    this.keepTail();
    return false;
  }

  private take(chunk: string): void {
    this.text = this.pending.length === 0 ? chunk : this.pending + chunk;
    this.pending = '';
    this.pos = 0;
    this.drained = false;
  }

  /** Keeps the unfinished line for the next chunk, unless it is already too long to be a line. */
  private keepTail(): void {
    const { text, pos } = this;
    this.drained = true;
    this.text = '';
    this.pos = 0;
    // Inside an over-long line the tail is more of it: nothing to keep (and nothing to copy).
    this.pending = this.discarding || pos >= text.length ? '' : pos === 0 ? text : text.slice(pos);
    if (this.pending.length <= this.maxLineChars) return;
    // Its start is quoted (CandumpParseError shows 120 characters of it), not the megabytes after.
    const head = this.pending.slice(0, 120);
    this.discarding = true;
    this.pending = '';
    this.lineNo++;
    this.onOverlong(new CandumpParseError(`line longer than ${this.maxLineChars} characters, skipped to its end`, head, this.lineNo));
  }
}
