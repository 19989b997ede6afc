/**
 * ELM327 answers as text to per-ECU OBD messages, with no I/O: the serial driver hands over what the adapter sent for
 * one command (up to the `>` prompt) and gets back the service payloads (`41 0C 0B B8`) that src/obd/j1979.ts decodes.
 *
 * Error contract: `parseElmResponse` and the helpers return a value or throw an `ElmResponseError` with a `code`;
 * nothing else escapes, whatever the input. ISO-TP violations (missing or out-of-order consecutive frames, a message
 * that stops short) are 'data-error'; text that is not hex, or a frame shorter than its PCI says, is 'garbage'.
 */

export type ElmErrorCode =
  | 'no-data'
  | 'unknown-command'
  | 'unable-to-connect'
  | 'can-error'
  | 'bus-init-error'
  | 'stopped'
  | 'buffer-full'
  | 'bus-busy'
  | 'data-error'
  | 'fb-error'
  | 'lv-reset'
  | 'garbage';

export class ElmResponseError extends Error {
  override readonly name = 'ElmResponseError';
  constructor(
    readonly code: ElmErrorCode,
    message: string,
    /** The offending line (or the whole answer), as the adapter sent it. */
    readonly text: string,
  ) {
    super(`${code}: ${message}: ${JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text)}`);
  }
}

/** CAN 11-bit, CAN 29-bit, or the pre-CAN protocols (J1850 PWM/VPW, ISO 9141-2, ISO 14230-4 KWP). */
export type ProtocolFamily = 'can11' | 'can29' | 'legacy';

export interface ElmMessage {
  /** Header / source address in hex: `7E8`, `18DAF110`, `10` (legacy source byte); '' when headers are off. */
  ecu: string;
  /** The reassembled service payload, starting with the response service byte. */
  data: Uint8Array;
}

export interface ElmResponse {
  messages: ElmMessage[];
  /** `SEARCHING...` came first: the adapter was looking for the protocol (slow first answer after ATSP0). */
  searching: boolean;
  /** `BUS INIT: ...OK` came first (legacy protocols). */
  busInit: boolean;
}

export interface ElmParseOptions {
  /** The command sent; a first line equal to it (echo on) is dropped. Without it only AT echoes are recognised. */
  command?: string;
  /** Protocol family when known (from ATDPN). Needed to read 29-bit and legacy headers. */
  protocol?: ProtocolFamily;
  /**
   * ATH1 state. Undefined: detected per line, which only works for 11-bit CAN headers (3 hex digits make the
   * line odd-length); 29-bit and legacy headers are bytes like the data and need `headers: true`.
   */
  headers?: boolean;
}

/** Whole-line adapter messages that end an answer without data. */
const ERROR_LINES: ReadonlyArray<[RegExp, ElmErrorCode]> = [
  [/^NO ?DATA$/, 'no-data'],
  [/^\?$/, 'unknown-command'],
  [/^UNABLE ?TO ?CONNECT$/, 'unable-to-connect'],
  [/^CAN ?ERROR$/, 'can-error'],
  [/^BUS ?INIT:.*ERROR$/, 'bus-init-error'],
  [/^STOPPED$/, 'stopped'],
  [/^BUFFER ?FULL$/, 'buffer-full'],
  [/^BUS ?BUSY$/, 'bus-busy'],
  // The ELM appends `<DATA ERROR` / `<RX ERROR` to the line it could not verify, so these match anywhere.
  [/(^|<)DATA ?ERROR$/, 'data-error'],
  [/<RX ?ERROR$/, 'data-error'],
  [/^FB ?ERROR$/, 'fb-error'],
  [/^LV ?RESET$/, 'lv-reset'],
];

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}

const HEX = /^[0-9A-F]*$/;

/** Splits on any CR/LF mix, trims, drops empty lines and a trailing prompt. */
function splitLines(raw: string): string[] {
  if (typeof raw !== 'string') throw new ElmResponseError('garbage', 'answer is not a string', String(raw));
  let text = raw;
  const prompt = text.lastIndexOf('>');
  if (prompt >= 0 && text.slice(prompt + 1).trim() === '') text = text.slice(0, prompt);
  return text
    .split(/\r\n|\r|\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

const normalise = (s: string): string => s.replace(/\s+/g, '').toUpperCase();

/** Drops the command echo (ATE1) from the front. */
function stripEcho(lines: string[], command: string | undefined): string[] {
  if (lines.length === 0) return lines;
  const first = normalise(lines[0]!);
  if (command !== undefined && first === normalise(command) && first !== '') return lines.slice(1);
  // An AT command is never an answer, so it can only be an echo even when the command is not given.
  if (command === undefined && /^AT[A-Z@]/.test(first)) return lines.slice(1);
  return lines;
}

/** The error code of an adapter message line, or null for anything else. */
function errorCodeOf(line: string): ElmErrorCode | null {
  const upper = line.toUpperCase();
  for (const [re, code] of ERROR_LINES) if (re.test(upper)) return code;
  return null;
}

/** Lines common to every answer: echo stripped, SEARCHING/BUS INIT flags, adapter errors thrown. */
function preprocess(raw: string, command: string | undefined): { lines: string[]; searching: boolean; busInit: boolean } {
  const lines = stripEcho(splitLines(raw), command);
  let searching = false;
  let busInit = false;
  const rest: string[] = [];
  for (const line of lines) {
    const upper = line.toUpperCase();
    if (/^SEARCHING\.*$/.test(upper)) {
      searching = true;
      continue;
    }
    const code = errorCodeOf(line);
    if (code !== null) throw new ElmResponseError(code, 'adapter reported an error', line);
    if (/^BUS ?INIT:/.test(upper)) {
      busInit = true;
      continue;
    }
    rest.push(line);
  }
  return { lines: rest, searching, busInit };
}

/** Hex text to bytes; null if it is not an even number of hex digits. */
function hexBytes(text: string): Uint8Array | null {
  if (text.length % 2 !== 0 || !HEX.test(text)) return null;
  const out = new Uint8Array(text.length / 2);
  for (let k = 0; k < out.length; k++) out[k] = parseInt(text.slice(2 * k, 2 * k + 2), 16);
  return out;
}

/**
 * A data line to its digits, checking the token shape when spaces are on: every token is one byte, except that the
 * first may be an 11-bit CAN ID (3 digits). A half-printed byte (`0B B`) is therefore caught even with spaces on.
 */
function lineDigits(line: string): string | null {
  const upper = line.toUpperCase();
  const tokens = upper.split(/\s+/);
  if (tokens.length > 1) {
    for (let k = 0; k < tokens.length; k++) {
      const t = tokens[k]!;
      if (!HEX.test(t) || !(t.length === 2 || (k === 0 && t.length === 3))) return null;
    }
  } else if (!HEX.test(upper)) return null;
  return tokens.join('');
}

interface Frame {
  ecu: string;
  /** Bytes after the header (CAN: PCI + data; legacy: data without the checksum). */
  bytes: Uint8Array;
  can: boolean;
}

/** Splits one headers-on line into header and bytes, by protocol family. */
function headerFrame(line: string, digits: string, family: ProtocolFamily | undefined): Frame {
  let kind = family;
  if (kind === undefined) {
    // Only the odd length of an 11-bit ID is visible in the text; 29-bit J1979 responses come from 18DAF1xx.
    if (digits.length % 2 === 1) kind = 'can11';
    else if (/^18D[AB]/.test(digits)) kind = 'can29';
    else kind = 'legacy';
  }
  const headerDigits = kind === 'can11' ? 3 : kind === 'can29' ? 8 : 6;
  const bytes = hexBytes(digits.slice(headerDigits));
  if (digits.length <= headerDigits || bytes === null) throw new ElmResponseError('garbage', 'not a header and hex bytes', line);
  if (kind !== 'legacy') return { ecu: digits.slice(0, headerDigits), bytes, can: true };
  // Legacy: priority, target, source, data…, checksum. The ELM has already checked the checksum (else <DATA ERROR).
  if (bytes.length < 2) throw new ElmResponseError('garbage', 'legacy frame without data and checksum', line);
  return { ecu: digits.slice(4, 6), bytes: bytes.subarray(0, bytes.length - 1), can: false };
}

/** Classic CAN carries 8 bytes; the ELM327 talks nothing else. */
const CAN_FRAME = 8;

interface Assembly {
  slot: number;
  length: number;
  data: number[];
  nextSeq: number;
  line: string;
}

/** Headers on: ISO-TP single, first and consecutive frames, reassembled per ECU, in order of first appearance. */
function parseWithHeaders(lines: string[], family: ProtocolFamily | undefined): ElmMessage[] {
  const out: (ElmMessage | null)[] = [];
  const pending = new Map<string, Assembly>();
  for (const line of lines) {
    const digits = lineDigits(line);
    if (digits === null) throw new ElmResponseError('garbage', 'not hex', line);
    const frame = headerFrame(line, digits, family);
    const b = frame.bytes;
    if (!frame.can) {
      out.push({ ecu: frame.ecu, data: b.slice() });
      continue;
    }
    if (b.length > CAN_FRAME) throw new ElmResponseError('garbage', 'more than 8 bytes in a CAN frame', line);
    const pci = b[0]! >> 4;
    const open = pending.get(frame.ecu);
    if (pci === 0) {
      const n = b[0]! & 0x0f;
      if (n === 0 || n > b.length - 1) throw new ElmResponseError('garbage', 'single frame shorter than its length byte', line);
      if (open) throw new ElmResponseError('data-error', `ECU ${frame.ecu} sent a single frame in the middle of a multi-frame message`, line);
      // Bytes past the length are CAN padding, which real adapters print.
      out.push({ ecu: frame.ecu, data: b.slice(1, 1 + n) });
    } else if (pci === 1) {
      if (b.length !== CAN_FRAME) throw new ElmResponseError('garbage', 'first frame is not 8 bytes', line);
      const length = ((b[0]! & 0x0f) << 8) | b[1]!;
      if (length < CAN_FRAME) throw new ElmResponseError('data-error', `first frame announces ${length} bytes, which fit a single frame`, line);
      if (open) throw new ElmResponseError('data-error', `ECU ${frame.ecu} started a new message before finishing the last`, line);
      out.push(null);
      pending.set(frame.ecu, { slot: out.length - 1, length, data: Array.from(b.subarray(2)), nextSeq: 1, line });
    } else if (pci === 2) {
      if (!open) throw new ElmResponseError('data-error', `consecutive frame from ECU ${frame.ecu} without a first frame`, line);
      const seq = b[0]! & 0x0f;
      if (seq !== open.nextSeq) throw new ElmResponseError('data-error', `consecutive frame ${seq} where ${open.nextSeq} was due (frame lost)`, line);
      const remaining = open.length - open.data.length;
      // Only the last frame may be short; a short frame before it means a truncated line.
      if (b.length - 1 < Math.min(remaining, CAN_FRAME - 1)) throw new ElmResponseError('garbage', 'consecutive frame cut short', line);
      open.data.push(...b.subarray(1, 1 + Math.min(remaining, b.length - 1)));
      open.nextSeq = (open.nextSeq + 1) & 0x0f;
      if (open.data.length === open.length) {
        out[open.slot] = { ecu: frame.ecu, data: Uint8Array.from(open.data) };
        pending.delete(frame.ecu);
      }
    } else {
      throw new ElmResponseError('garbage', `unexpected ISO-TP frame type ${pci}`, line);
    }
  }
  for (const [ecu, open] of pending) {
    throw new ElmResponseError('data-error', `message from ECU ${ecu} stopped at ${open.data.length} of ${open.length} bytes`, open.line);
  }
  return out as ElmMessage[];
}

/**
 * Headers off: one message per line, or the CAN multi-frame form the ELM prints itself — a line with the byte count
 * (`014`, 3 digits) and then `0:`, `1:` … frames of 6, then 7 bytes each, the index wrapping after F.
 */
function parseWithoutHeaders(lines: string[]): ElmMessage[] {
  const out: ElmMessage[] = [];
  let open: { length: number; data: number[]; next: number; line: string } | null = null;
  for (const line of lines) {
    const upper = line.toUpperCase();
    const indexed = /^([0-9A-F]):\s*(.*)$/.exec(upper);
    if (indexed) {
      const digits = lineDigits(indexed[2]!);
      const bytes = digits === null ? null : hexBytes(digits);
      if (bytes === null || bytes.length === 0) throw new ElmResponseError('garbage', 'frame line is not hex', line);
      if (!open) throw new ElmResponseError('data-error', 'frame line without a byte-count line', line);
      const index = parseInt(indexed[1]!, 16);
      if (index !== open.next) throw new ElmResponseError('data-error', `frame ${index} where ${open.next} was due (frame lost)`, line);
      const capacity = index === 0 && open.data.length === 0 ? 6 : 7;
      const remaining = open.length - open.data.length;
      if (bytes.length > capacity) throw new ElmResponseError('garbage', `more than ${capacity} bytes in a frame line`, line);
      if (bytes.length < Math.min(remaining, capacity)) throw new ElmResponseError('garbage', 'frame line cut short', line);
      open.data.push(...bytes.subarray(0, Math.min(remaining, bytes.length)));
      open.next = (open.next + 1) & 0x0f;
      if (open.data.length === open.length) {
        out.push({ ecu: '', data: Uint8Array.from(open.data) });
        open = null;
      }
      continue;
    }
    if (open) throw new ElmResponseError('data-error', `multi-frame message stopped at ${open.data.length} of ${open.length} bytes`, line);
    const digits = lineDigits(upper);
    if (digits !== null && digits.length === 3) {
      const length = parseInt(digits, 16);
      if (length < CAN_FRAME) throw new ElmResponseError('data-error', `byte count ${length} fits a single frame`, line);
      open = { length, data: [], next: 0, line };
      continue;
    }
    const bytes = digits === null ? null : hexBytes(digits);
    if (bytes === null) throw new ElmResponseError('garbage', 'not hex bytes', line);
    out.push({ ecu: '', data: bytes });
  }
  if (open) throw new ElmResponseError('data-error', `multi-frame message stopped at ${open.data.length} of ${open.length} bytes`, open.line);
  return out;
}

/** Whether a line carries a header when the caller did not say: only an 11-bit CAN ID shows (odd digit count). */
function looksLikeCan11Header(line: string): boolean {
  if (/^[0-9A-F]:/i.test(line)) return false;
  const digits = lineDigits(line);
  return digits !== null && digits.length % 2 === 1 && digits.length > 3;
}

/** One OBD answer to per-ECU messages. Throws `ElmResponseError` for adapter errors and for anything unreadable. */
export function parseElmResponse(raw: string, options: ElmParseOptions = {}): ElmResponse {
  const { lines, searching, busInit } = preprocess(raw, options.command);
  if (lines.length === 0) throw new ElmResponseError('garbage', 'answer holds no data', typeof raw === 'string' ? raw : '');
  const headers = options.headers ?? (options.protocol !== 'can29' && options.protocol !== 'legacy' && lines.some(looksLikeCan11Header));
  const messages = headers ? parseWithHeaders(lines, options.protocol) : parseWithoutHeaders(lines);
  return { messages, searching, busInit };
}

// ---------------------------------------------------------------------------------------------------------------
// AT command answers

/** The single answer line of an AT command, echo and blank lines dropped, adapter errors thrown. */
function singleLine(raw: string, command: string | undefined, what: string): string {
  const { lines } = preprocess(raw, command);
  if (lines.length !== 1) throw new ElmResponseError('garbage', `expected one ${what} line, got ${lines.length}`, typeof raw === 'string' ? raw : '');
  return lines[0]!;
}

/** `OK` (ATE0, ATSP0, ATH1 …); throws otherwise. */
export function expectOk(raw: string, command?: string): void {
  const line = singleLine(raw, command, 'OK');
  if (line.toUpperCase() !== 'OK') throw new ElmResponseError('garbage', 'expected OK', line);
}

export interface ElmVersion {
  /** `ELM327`, or null when the adapter printed only the version. */
  device: string | null;
  /** `1.5`, `2.1`. */
  version: string;
  major: number;
  minor: number;
}

/** ATI / ATZ: `ELM327 v1.5`, or a bare `v2.1`. The last line that carries a version wins (ATZ prints blank lines first). */
export function parseElmVersion(raw: string, command?: string): ElmVersion {
  const { lines } = preprocess(raw, command);
  for (let k = lines.length - 1; k >= 0; k--) {
    const m = /^(?:(\S+)\s+)?v(\d+)\.(\d+)\S*$/i.exec(lines[k]!);
    if (m) return { device: m[1] ?? null, version: `${Number(m[2])}.${m[3]}`, major: Number(m[2]), minor: Number(m[3]) };
  }
  throw new ElmResponseError('garbage', 'no version in the answer', typeof raw === 'string' ? raw : '');
}

/** ATRV: `12.4V` to volts. */
export function parseVoltage(raw: string, command?: string): number {
  const line = singleLine(raw, command, 'voltage');
  const m = /^(\d{1,2}(?:\.\d{1,2})?)\s*V$/i.exec(line);
  if (!m) throw new ElmResponseError('garbage', 'not a voltage', line);
  return Number(m[1]);
}

export interface ElmProtocol {
  /** 0 (automatic, nothing found yet) to 12 (0xC). */
  number: number;
  /** The protocol was found by the automatic search (ATSP0), so the adapter may search again after a failure. */
  auto: boolean;
  /** As ATDP prints it, without `AUTO, `. */
  description: string;
  /** null for protocol 0 (no protocol yet). */
  family: ProtocolFamily | null;
}

/** ATSPn / ATDPN protocol numbers, with ATDP's descriptions. */
export const ELM_PROTOCOLS: ReadonlyArray<{ number: number; description: string; family: ProtocolFamily | null }> = [
  { number: 0x0, description: 'AUTO', family: null },
  { number: 0x1, description: 'SAE J1850 PWM', family: 'legacy' },
  { number: 0x2, description: 'SAE J1850 VPW', family: 'legacy' },
  { number: 0x3, description: 'ISO 9141-2', family: 'legacy' },
  { number: 0x4, description: 'ISO 14230-4 (KWP 5BAUD)', family: 'legacy' },
  { number: 0x5, description: 'ISO 14230-4 (KWP FAST)', family: 'legacy' },
  { number: 0x6, description: 'ISO 15765-4 (CAN 11/500)', family: 'can11' },
  { number: 0x7, description: 'ISO 15765-4 (CAN 29/500)', family: 'can29' },
  { number: 0x8, description: 'ISO 15765-4 (CAN 11/250)', family: 'can11' },
  { number: 0x9, description: 'ISO 15765-4 (CAN 29/250)', family: 'can29' },
  { number: 0xa, description: 'SAE J1939 (CAN 29/250)', family: 'can29' },
  // USER1/USER2 default to 11-bit IDs; ATPB can change that, which this table cannot know.
  { number: 0xb, description: 'USER1 (CAN 11/125)', family: 'can11' },
  { number: 0xc, description: 'USER2 (CAN 11/50)', family: 'can11' },
];

/** ATDPN: `A6` (found by the automatic search) or `6`. */
export function parseProtocolNumber(raw: string, command?: string): ElmProtocol {
  const line = singleLine(raw, command, 'protocol');
  const m = /^(A?)([0-9A-C])$/i.exec(line);
  if (!m) throw new ElmResponseError('garbage', 'not a protocol number', line);
  const entry = ELM_PROTOCOLS[parseInt(m[2]!, 16)]!;
  return { number: entry.number, auto: m[1] !== '' || entry.number === 0, description: entry.description, family: entry.family };
}

/** ATDP: `AUTO, ISO 15765-4 (CAN 11/500)` or `ISO 9141-2`. */
export function parseProtocolDescription(raw: string, command?: string): ElmProtocol {
  const line = singleLine(raw, command, 'protocol');
  const m = /^(AUTO,?\s*)?(.*)$/i.exec(line)!;
  const text = m[2]!.replace(/\s+/g, ' ').trim().toUpperCase();
  const entry = text === '' ? ELM_PROTOCOLS[0] : ELM_PROTOCOLS.find((p) => p.number !== 0 && p.description === text);
  if (!entry) throw new ElmResponseError('garbage', 'unknown protocol description', line);
  return { number: entry.number, auto: m[1] !== undefined || entry.number === 0, description: entry.description, family: entry.family };
}

/** For messages and logs: `7E8: 41 0C 0B B8`. */
export function formatElmMessage(message: ElmMessage): string {
  return `${message.ecu === '' ? '-' : message.ecu}: ${Array.from(message.data, hex2).join(' ')}`;
}
