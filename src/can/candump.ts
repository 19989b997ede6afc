/**
 * The text formats candump (can-utils) prints, one frame a line.
 *
 * Its log format, `candump -L` (and `-l` files), which replay, the tests and the benchmarks read:
 *
 *   (1635188455.020850) can0 18F00E00#821639C4FFFFFFFF   29-bit data frame
 *   (1635188455.021900) can1 123#1122                    11-bit data frame
 *   (1635188455.021900) can1 123#R / 123#R5              remote frame, optional requested DLC
 *   (1635188455.021900) can1 123##3001122                CAN FD, flags nibble (bit 0 BRS, bit 1 ESI) then data
 *   (1635188455.021900) can1 20000004#0004000000000000   error frame (CAN_ERR_FLAG set in the 8-digit ID)
 *   (1635188455.021900) can1 123#1122334455667788_9      classic frame with a raw DLC 9..F (ignored here)
 *
 * And, for a parser made with `{ consoleFormat: true }` (what `decode` reads), the console format candump prints by
 * default, detected line by line. The ID is 3 hex digits (11-bit) or 8 (29-bit, or an error frame); a classic frame's
 * length is one digit in brackets, a CAN FD frame's two:
 *
 *     can0  123   [8]  11 22 33 44 55 66 77 88           no timestamp (the frame's ts is NaN)
 *    (1700000000.123456)  can0  1F334455   [3]  01 02 03   -ta: absolute
 *    (000.000120)  can0  123   [2]  11 22                 -td / -tz: relative (delta, or since the first frame)
 *    (2023-10-25 12:00:00.123456)  can0  123   [0]        -tA: local date and time (read in this machine's zone)
 *     can0  123   [4]  remote request                     remote frame, requested length 4
 *     can0  123  [12]  00 11 22 33 44 55 66 77 88 99 AA BB   CAN FD
 *     can0  RX B -  123  [08]  ...                        -x: direction, bit-rate switch (B), error state (E)
 *     can0  20000004   [8]  00 04 00 00 00 00 00 00   ERRORFRAME   (-e adds tab-indented detail lines: skipped)
 *
 * It also takes what candump's view options add: `-a` (the ASCII column after the bytes), `-i` (bytes as 8 binary
 * digits), `-S` (bytes in reverse order joined by backquotes), `-8` (a raw DLC in braces, `{F}`), `-c` (colour
 * escape sequences), `-e`, and a `-L -x` line's trailing ` R`/` T`. CAN XL frames are refused, naming them.
 *
 * Parsing is a hot path (replay and benchmarks run tens of thousands of lines), so it scans character codes by hand
 * instead of using regexes or `split`, and fills a caller-owned frame instead of returning a new object; the console
 * format allocates nothing per line either (a `-tA` date costs one Date per minute of the log).
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
const CH_ESC = 0x1b;
const CH_QUOTE = 0x27;
const CH_MINUS = 0x2d;
const CH_COLON = 0x3a;
const CH_SEMICOLON = 0x3b;
const CH_B = 0x42;
const CH_E = 0x45;
const CH_T = 0x54;
const CH_X = 0x58;
const CH_LBRACKET = 0x5b;
const CH_RBRACKET = 0x5d;
const CH_BACKQUOTE = 0x60;
const CH_m = 0x6d;
const CH_LBRACE = 0x7b;
const CH_RBRACE = 0x7d;

/** What the console format prints after a remote frame's length, after an error frame's bytes, and as a notice. */
const REMOTE_REQUEST = 'remote request';
const ERRORFRAME = 'ERRORFRAME';
const DROPCOUNT = 'DROPCOUNT:';

function nibbleAt(text: string, i: number): number {
  const c = text.charCodeAt(i);
  return c < 128 ? NIBBLE[c]! : -1;
}

function isBlank(c: number): boolean {
  return c === CH_SPACE || c === CH_TAB || c === CH_CR;
}

function isDigit(c: number): boolean {
  return c >= CH_0 && c <= CH_9;
}

/** The exact double of `seconds.fraction` (one division of an exact integer, as Number("…") rounds) while it fits 2^53. */
function secondsOf(seconds: number, fraction: number, fractionDigits: number): number {
  const scaled = seconds * POW10[fractionDigits]! + fraction;
  return scaled <= Number.MAX_SAFE_INTEGER ? scaled / POW10[fractionDigits]! : seconds + fraction / POW10[fractionDigits]!;
}

export interface CandumpParserOptions {
  /**
   * Also read candump's console output (its default format, with or without a `-t` timestamp), deciding per line;
   * `-L` lines are read as ever. Off for replay, which needs the log format's absolute times.
   */
  consoleFormat?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------------
// Parser

/**
 * A `candump -L` line parser with its own payload buffers; with `{ consoleFormat: true }` it reads candump's console
 * output too.
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
  private readonly consoleFormat: boolean;
  /** The last frame was an error frame of the console format: `-e` detail lines (tab-indented) may follow it. */
  private afterErrorFrame = false;
  // What classifyId found besides the ID, in fields so that both line formats share it without an object per line.
  private idExtended = false;
  private idError = false;
  /** The seconds a console timestamp scanned to (a field, so scanning it returns only its end). */
  private scannedTs = 0;
  /** A `-tA` date's minute and its Unix time: one Date per minute of a log, not one per line. */
  private minuteKey = -1;
  private minuteTs = 0;
  /** The last frame came from a console-format line (false: a `-L` line). */
  consoleLine = false;

  constructor(options: CandumpParserOptions = {}) {
    this.consoleFormat = options.consoleFormat ?? false;
  }

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
    if (this.consoleFormat) {
      // `candump -e` writes an error frame's details on lines of their own, each starting with a tab.
      if (this.afterErrorFrame && text.charCodeAt(start) === CH_TAB) {
        this.text = '';
        return false;
      }
      if (!this.looksLikeLogLine(i, end)) return this.parseConsoleLine(i, end, frame);
      // `candump -L -x` appends the direction: " R" (received) or " T" (sent by this host).
      const last = text.charCodeAt(end - 1);
      if ((last === CH_R || last === CH_T) && isBlank(text.charCodeAt(end - 2))) {
        end -= 2;
        while (isBlank(text.charCodeAt(end - 1))) end--;
        this.end = end;
      }
      this.consoleLine = false;
      this.afterErrorFrame = false;
    }

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
    const ts = secondsOf(seconds, fraction, fracDigits);

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
    if (idDigits !== 3 && idDigits !== 8) {
      const found = idDigits > 8 ? 'more than 8' : String(idDigits);
      this.fail(`CAN ID must have 3 (11-bit) or 8 (29-bit) hex digits, found ${found}`, idStart);
    }
    const id = this.classifyId(rawId, idDigits, idStart);
    const { idExtended: extended, idError: error } = this;
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

  /** A `-L` line starts "(seconds.fraction) interface ID#"; anything else is read as the console format. */
  private looksLikeLogLine(i: number, end: number): boolean {
    const text = this.text;
    if (text.charCodeAt(i) !== CH_LPAREN) return false;
    let from = ++i;
    while (i < end && isDigit(text.charCodeAt(i))) i++;
    if (i === from || text.charCodeAt(i) !== CH_DOT) return false;
    from = ++i;
    while (i < end && isDigit(text.charCodeAt(i))) i++;
    if (i === from || text.charCodeAt(i) !== CH_RPAREN) return false;
    from = ++i;
    while (i < end && isBlank(text.charCodeAt(i))) i++;
    if (i === from) return false;
    from = i;
    while (i < end && !isBlank(text.charCodeAt(i))) i++;
    if (i === from) return false;
    from = i;
    while (i < end && isBlank(text.charCodeAt(i))) i++;
    if (i === from) return false;
    while (i < end && nibbleAt(text, i) >= 0) i++;
    return i < end && text.charCodeAt(i) === CH_HASH;
  }

  /** One line of candump's console format (see the top of this file), from its first character `i`. */
  private parseConsoleLine(i: number, end: number, frame: CanFrame): boolean {
    const text = this.text;
    if (text.startsWith(DROPCOUNT, i)) this.fail('candump says it dropped frames here (its DROPCOUNT notice), not a frame', i);
    i = this.skipGap(i);
    let ts = NaN;
    if (text.charCodeAt(i) === CH_LPAREN) {
      const at = this.consoleTimestamp(i + 1);
      ts = this.scannedTs;
      i = this.skipGap(at);
      if (i === at) this.fail(`expected a space and the interface name after the timestamp, found ${this.charAt(i)}`, i);
    }

    const busStart = i;
    i = this.tokenEnd(i);
    const busEnd = i;
    if (busEnd === busStart) this.fail(`expected the interface name, found ${this.charAt(i)}`, i);
    i = this.skipGap(i);
    if (i === busEnd || i >= end) this.fail('expected a space and the CAN ID after the interface name', i);

    // -x: "RX" or "TX", then "B" (bit-rate switch) or "-", then "E" (error state indicator) or "-".
    let fdFlags = 0;
    const d = text.charCodeAt(i);
    if ((d === CH_R || d === CH_T) && text.charCodeAt(i + 1) === CH_X && this.tokenEnd(i) === i + 2) {
      i = this.skipGap(i + 2);
      const brs = text.charCodeAt(i);
      if ((brs !== CH_MINUS && brs !== CH_B) || this.tokenEnd(i) !== i + 1)
        this.fail(`expected "B" or "-" (bit-rate switch) after the direction, found ${this.charAt(i)}`, i);
      i = this.skipGap(i + 1);
      const esi = text.charCodeAt(i);
      if ((esi !== CH_MINUS && esi !== CH_E) || this.tokenEnd(i) !== i + 1)
        this.fail(`expected "E" or "-" (error state indicator), found ${this.charAt(i)}`, i);
      fdFlags = (brs === CH_B ? 1 : 0) | (esi === CH_E ? 2 : 0);
      i = this.skipGap(i + 1);
    }

    // identifier: 3 hex digits (11-bit) or 8 (29-bit, or an error frame's class)
    const idStart = i;
    let rawId = 0;
    while (i < end && i - idStart < 9) {
      const n = nibbleAt(text, i);
      if (n < 0) break;
      rawId = rawId * 16 + n;
      i++;
    }
    const idDigits = i - idStart;
    if (idDigits !== 3 && idDigits !== 8) {
      const found = idStart >= end ? 'end of line' : JSON.stringify(text.slice(idStart, this.tokenEnd(idStart)).slice(0, 20));
      this.fail(`expected the CAN ID (3 or 8 hex digits) after the interface name, found ${found}`, idStart);
    }
    if (this.tokenEnd(i) !== i) this.fail(`invalid character ${this.charAt(i)} in CAN ID`, i);
    const id = this.classifyId(rawId, idDigits, idStart);
    const { idExtended: extended, idError: error } = this;
    const afterId = i;
    i = this.skipGap(i);
    if (i === afterId || i >= end) this.fail('expected a space and the data length ("[8]") after the CAN ID', i);

    // length: [N] classic, [NN] CAN FD, {X} a classic frame's raw DLC (-8); [NNNN] would be CAN XL
    const open = text.charCodeAt(i);
    const lengthAt = i;
    let len = 0;
    let fd = false;
    if (open === CH_LBRACKET) {
      i++;
      const from = i;
      while (i < end && isDigit(text.charCodeAt(i))) len = len * 10 + (text.charCodeAt(i++) - CH_0);
      const digits = i - from;
      if (digits === 0 || text.charCodeAt(i) !== CH_RBRACKET) this.fail(`expected the data length as digits in brackets, found ${this.charAt(i)}`, i);
      i++;
      if (digits === 1) {
        if (len > CAN_MAX_DLEN) this.fail(`classic CAN length ${len} exceeds ${CAN_MAX_DLEN}`, from);
      } else if (digits === 2) {
        if (len > CANFD_MAX_DLEN || !FD_LENGTH_OK[len]) this.fail(`CAN FD length ${len} is not a valid FD length (0-8, 12, 16, 20, 24, 32, 48, 64)`, from);
        fd = true;
      } else if (digits === 4) {
        this.fail('CAN XL frames (a 4-digit length) are not supported', lengthAt);
      } else {
        this.fail(`the data length must be 1 digit (classic CAN) or 2 (CAN FD), found ${digits}`, from);
      }
    } else if (open === CH_LBRACE) {
      const dlc = nibbleAt(text, i + 1);
      if (dlc < 0 || text.charCodeAt(i + 2) !== CH_RBRACE) this.fail('expected a raw DLC as one hex digit in braces, e.g. "{F}"', i);
      len = dlc > CAN_MAX_DLEN ? CAN_MAX_DLEN : dlc; // DLC 9..F still means 8 bytes on classic CAN
      i += 3;
    } else {
      this.fail(`expected the data length in brackets ("[8]") after the CAN ID, found ${this.charAt(i)}`, i);
    }
    if (error && fd) this.fail('error frames cannot be CAN FD frames', lengthAt);
    if (this.tokenEnd(i) !== i) this.fail(`unexpected ${this.charAt(i)} after the data length`, i);
    const afterLength = i;
    i = this.skipGap(i);

    let remote = false;
    let data: Uint8Array;
    if (!fd && text.startsWith(REMOTE_REQUEST, i)) {
      if (error) this.fail('error frames cannot be remote frames', i);
      remote = true;
      data = this.buffer(0);
      i += REMOTE_REQUEST.length;
    } else {
      if (len > 0 && i === afterLength) this.fail('expected a space and the data bytes after the data length', i);
      data = this.buffer(len);
      // Bytes as two hex digits (or, with -i, eight binary digits), separated by spaces; with -S in reverse order,
      // joined by backquotes.
      let reversed = false;
      for (let k = 0; k < len; k++) {
        if (i >= end) this.fail(`the line ends after ${k} of ${len} data bytes`, i);
        if (k > 0) {
          if (text.charCodeAt(i) === CH_BACKQUOTE) {
            reversed = true;
            i++;
          } else {
            const at = i;
            i = this.skipGap(i);
            if (i === at) this.fail(`expected a space before data byte ${k + 1}, found ${this.charAt(i)}`, i);
          }
        }
        const hi = nibbleAt(text, i);
        const lo = hi < 0 ? -1 : nibbleAt(text, i + 1);
        if (lo >= 0 && this.byteEnd(i + 2)) {
          data[k] = (hi << 4) | lo;
          i += 2;
          continue;
        }
        let bits = 0;
        let n = 0;
        for (; n < 8; n++) {
          const c = text.charCodeAt(i + n);
          if (c !== CH_0 && c !== CH_0 + 1) break;
          bits = (bits << 1) | (c - CH_0);
        }
        if (n !== 8 || !this.byteEnd(i + 8)) {
          const found = i >= end ? 'end of line' : JSON.stringify(text.slice(i, this.tokenEnd(i)).slice(0, 20));
          this.fail(`expected data byte ${k + 1} of ${len} (two hex digits), found ${found}`, i);
        }
        data[k] = bits;
        i += 8;
      }
      if (reversed) data.reverse();
      // After the bytes: "ERRORFRAME" for an error frame, or -a's ASCII column in quotes (' or `), to the line's end.
      const afterData = len === 0 ? afterLength : i;
      i = this.skipGap(i);
      if (i < end && i > afterData) {
        const c = text.charCodeAt(i);
        if (error && text.startsWith(ERRORFRAME, i)) i += ERRORFRAME.length;
        else if (c === CH_QUOTE || c === CH_BACKQUOTE) i = end;
      }
    }
    i = this.skipGap(i);
    if (i < end) this.fail(`unexpected ${this.charAt(i)} after the ${remote ? 'remote request' : `${len} data bytes`}`, i);

    frame.ts = ts;
    frame.bus = this.internBus(busStart, busEnd);
    frame.id = id;
    frame.extended = extended;
    frame.fd = fd;
    frame.fdFlags = fd ? fdFlags : 0;
    frame.remote = remote;
    frame.error = error;
    frame.dlc = len; // a remote frame's requested length
    frame.data = data;
    this.consoleLine = true;
    this.afterErrorFrame = error;
    this.text = '';
    return true;
  }

  /**
   * The timestamp after "(" up to its ")": seconds with a fraction (-ta, -td, -tz), or a local date and time with a
   * fraction (-tA). Leaves the seconds in `scannedTs` and returns the index after the ")".
   */
  private consoleTimestamp(i: number): number {
    const text = this.text;
    const end = this.end;
    let value = 0;
    const from = i;
    while (i < end && isDigit(text.charCodeAt(i))) value = value * 10 + (text.charCodeAt(i++) - CH_0);
    const digits = i - from;
    if (digits === 0) this.fail(`expected timestamp digits after "(", found ${this.charAt(i)}`, i);
    let seconds = value;
    if (digits === 4 && text.charCodeAt(i) === CH_MINUS) {
      // (YYYY-MM-DD HH:MM:SS.ffffff), the local time candump ran in
      const month = this.twoDigits(i + 1, 'month');
      const day = this.twoDigits(i + 4, 'day');
      const hour = this.twoDigits(i + 7, 'hour');
      const minute = this.twoDigits(i + 10, 'minute');
      const second = this.twoDigits(i + 13, 'second');
      if (
        text.charCodeAt(i + 3) !== CH_MINUS ||
        text.charCodeAt(i + 6) !== CH_SPACE ||
        text.charCodeAt(i + 9) !== CH_COLON ||
        text.charCodeAt(i + 12) !== CH_COLON
      ) {
        this.fail('expected a date and time as "(YYYY-MM-DD HH:MM:SS.ffffff)"', from);
      }
      if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) this.fail('the date or time is out of range', from);
      seconds = this.localMinute(value, month, day, hour, minute, from) + second;
      i += 15;
    } else if (digits > MAX_SECONDS_DIGITS) {
      this.fail('timestamp seconds have too many digits', from);
    }
    if (text.charCodeAt(i) !== CH_DOT) this.fail(`expected "." in the timestamp, found ${this.charAt(i)}`, i);
    i++;
    let fraction = 0;
    const fracStart = i;
    while (i < end && isDigit(text.charCodeAt(i))) fraction = fraction * 10 + (text.charCodeAt(i++) - CH_0);
    const fracDigits = i - fracStart;
    if (fracDigits === 0) this.fail(`expected timestamp fraction digits, found ${this.charAt(i)}`, i);
    if (fracDigits > MAX_FRACTION_DIGITS) this.fail('timestamp fraction has more than 9 digits', fracStart);
    if (text.charCodeAt(i) !== CH_RPAREN) this.fail(`expected ")" closing the timestamp, found ${this.charAt(i)}`, i);
    this.scannedTs = secondsOf(seconds, fraction, fracDigits);
    return i + 1;
  }

  private twoDigits(i: number, what: string): number {
    const hi = this.text.charCodeAt(i);
    const lo = this.text.charCodeAt(i + 1);
    if (!isDigit(hi) || !isDigit(lo)) this.fail(`expected two digits of the ${what} in the timestamp`, i);
    return (hi - CH_0) * 10 + (lo - CH_0);
  }

  /** Unix seconds at the start of a local minute; the same minute again costs nothing. */
  private localMinute(year: number, month: number, day: number, hour: number, minute: number, at: number): number {
    const key = (((year * 13 + month) * 32 + day) * 24 + hour) * 60 + minute;
    if (key !== this.minuteKey) {
      const date = new Date(year, month - 1, day, hour, minute);
      if (date.getDate() !== day) this.fail(`${year}-${month}-${day} is not a date`, at);
      this.minuteKey = key;
      this.minuteTs = date.getTime() / 1000;
    }
    return this.minuteTs;
  }

  /** Skips spaces, tabs and colour escape sequences (`candump -c`: ESC [ digits;… m). */
  private skipGap(i: number): number {
    const text = this.text;
    const end = this.end;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (isBlank(c)) {
        i++;
        continue;
      }
      if (c !== CH_ESC || text.charCodeAt(i + 1) !== CH_LBRACKET) break;
      let k = i + 2;
      while (k < end && (isDigit(text.charCodeAt(k)) || text.charCodeAt(k) === CH_SEMICOLON)) k++;
      if (k >= end || text.charCodeAt(k) !== CH_m) break;
      i = k + 1;
    }
    return i;
  }

  /** The end of the word starting at `i`: the next space, tab or escape sequence, or the end of the line. */
  private tokenEnd(i: number): number {
    const text = this.text;
    const end = this.end;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (isBlank(c) || c === CH_ESC) break;
      i++;
    }
    return i;
  }

  /** A data byte may end here: the line's end, a space, an escape sequence, or -S's backquote. */
  private byteEnd(i: number): boolean {
    if (i >= this.end) return true;
    const c = this.text.charCodeAt(i);
    return isBlank(c) || c === CH_ESC || c === CH_BACKQUOTE;
  }

  /**
   * The frame ID of a 3- or 8-digit identifier, both formats alike: an 8-digit one is extended, or an error frame's
   * class when the error flag is set (idExtended, idError say which). Throws when the value cannot be one.
   */
  private classifyId(rawId: number, idDigits: number, idStart: number): number {
    this.idExtended = false;
    this.idError = false;
    if (idDigits === 3) {
      if (rawId > CAN_SFF_MASK) this.fail(`11-bit CAN ID 0x${rawId.toString(16).toUpperCase()} exceeds 0x7FF`, idStart);
      return rawId;
    }
    if (rawId > 0x3fffffff) this.fail('CAN ID has EFF/RTR flag bits set (only the error flag 0x20000000 may be)', idStart);
    if (rawId >= CAN_ERR_FLAG) {
      this.idError = true;
      return rawId - CAN_ERR_FLAG;
    }
    this.idExtended = true;
    return rawId;
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
