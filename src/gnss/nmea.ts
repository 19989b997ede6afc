/**
 * NMEA 0183 as GNSS receivers send it: one sentence per line, `$<address>,<field>,...*<checksum>`, the checksum the
 * XOR of every character between `$` and `*`. This module checks a line and splits it into its talker, type and
 * fields, and reads the field types the position sentences share (latitude, longitude, time of day, date, numbers).
 *
 * Nothing here throws on input: a line that is not a whole, intact sentence (no `$`, no or a wrong checksum, a
 * character outside printable ASCII, longer than any real sentence) is a `SentenceProblem` the caller counts; a
 * field that does not read as its type (an empty field, `8960.000000` for a latitude) is `undefined`, never a guess.
 * Sentence-level meaning (which fields mean a fix) is src/gnss/fix-assembler.ts's.
 */

/** Longest line accepted, in characters: the standard's limit is 82; real receivers (RTK, NMEA 4.x GSV) go past it. */
export const MAX_SENTENCE_LENGTH = 200;

/** A checked sentence. */
export interface NmeaSentence {
  /** `GP`, `GL`, `GA`, `GB`, `GQ`, `GN` (any two letters); `P` for a proprietary sentence. */
  readonly talker: string;
  /** `GGA`, `RMC` ...; for a proprietary sentence the rest of its address (`GRME`, `QGSV`, `MTK001`). */
  readonly type: string;
  /** The fields after the address, as text (`fields[0]` is the first after the address). */
  readonly fields: readonly string[];
}

export type SentenceProblem =
  /** Not a sentence: no leading `$`, an address that is not one, or a character outside printable ASCII (line noise). */
  | 'not-a-sentence'
  /** No `*HH` at the end: a truncated line, or two lines run together. */
  | 'no-checksum'
  /** The checksum does not match: a corrupted line. */
  | 'bad-checksum'
  | 'too-long';

/** Checks `line` (without its line ending) and splits it, or says what is wrong with it. */
export function parseSentence(line: string): NmeaSentence | SentenceProblem {
  if (line.length > MAX_SENTENCE_LENGTH) return 'too-long';
  if (line.charCodeAt(0) !== 0x24 /* $ */) return 'not-a-sentence';
  const star = line.length - 3;
  let sum = 0;
  for (let i = 1; i < line.length; i++) {
    const code = line.charCodeAt(i);
    if (code < 0x20 || code > 0x7e) return 'not-a-sentence';
    if (i < star) sum ^= code;
  }
  if (star < 2 || line.charCodeAt(star) !== 0x2a /* * */) return line.includes('*') ? 'bad-checksum' : 'no-checksum';
  const stated = Number.parseInt(line.slice(star + 1), 16);
  if (!/^[0-9A-Fa-f]{2}$/.test(line.slice(star + 1)) || stated !== sum) return 'bad-checksum';
  const fields = line.slice(1, star).split(',');
  const address = fields.shift()!;
  if (!/^(?:[A-Z]{2}[A-Z0-9]{3}|P[A-Z0-9]{2,11})$/.test(address)) return 'not-a-sentence';
  if (address.startsWith('P')) return { talker: 'P', type: address.slice(1), fields };
  return { talker: address.slice(0, 2), type: address.slice(2), fields };
}

/** A field as a finite number, or undefined when it is empty or not a plain decimal number. */
export function numberField(text: string | undefined): number | undefined {
  if (text === undefined || !/^[+-]?(?:\d+\.?\d*|\.\d+)$/.test(text)) return undefined;
  return Number(text);
}

/**
 * An NMEA angle `dddmm.mmmm` with its hemisphere letter, in degrees (south and west negative); undefined when either
 * is missing, the minutes are 60 or more, or the angle is beyond `limit` (90 for latitude, 180 for longitude).
 */
export function angleField(text: string | undefined, hemisphere: string | undefined, limit: 90 | 180): number | undefined {
  if (text === undefined || !/^\d{3,5}(?:\.\d+)?$/.test(text)) return undefined;
  const positive = limit === 90 ? 'N' : 'E';
  const negative = limit === 90 ? 'S' : 'W';
  if (hemisphere !== positive && hemisphere !== negative) return undefined;
  const point = text.indexOf('.');
  const whole = point < 0 ? text : text.slice(0, point);
  // Degrees are everything before the two minute digits; the minutes keep all their decimals.
  const degrees = Number(whole.slice(0, -2));
  const minutes = Number(text.slice(whole.length - 2));
  if (minutes >= 60) return undefined;
  const value = degrees + minutes / 60;
  if (value > limit) return undefined;
  return hemisphere === negative ? -value : value;
}

/**
 * A time of day `hhmmss[.sss]` in milliseconds since midnight UTC; undefined when malformed. Second 60 is accepted
 * (a leap second's epoch): it is 86,400,000 ms or more only at 23:59:60.
 */
export function timeOfDayField(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const match = /^(\d\d)(\d\d)(\d\d(?:\.\d+)?)$/.exec(text);
  if (match === null) return undefined;
  const hours = Number(match[1]);
  const minutes = Number(match[2]);
  const seconds = Number(match[3]);
  if (hours > 23 || minutes > 59 || seconds >= 61) return undefined;
  return hours * 3_600_000 + minutes * 60_000 + Math.round(seconds * 1000);
}

/** Where each sentence that carries a time of day has it: GLL fifth, the others first. */
const TIME_FIELD: Readonly<Record<string, number>> = { GGA: 0, RMC: 0, GNS: 0, ZDA: 0, GST: 0, GLL: 4 };

/**
 * The text of a sentence's time-of-day field: undefined for a sentence that carries none (GSA, GSV, proprietary
 * ones), '' for one that carries it empty (a receiver without time).
 */
export function timeFieldOf(sentence: NmeaSentence): string | undefined {
  if (sentence.talker === 'P') return undefined;
  const at = TIME_FIELD[sentence.type];
  return at === undefined ? undefined : (sentence.fields[at] ?? '');
}

/** A calendar date as days since 1970-01-01 (UTC). */
export type DayNumber = number;

/** The day number of a valid UTC date, or undefined when the date does not exist. */
export function dayNumber(year: number, month: number, day: number): DayNumber | undefined {
  if (!Number.isInteger(year) || !Number.isInteger(month) || !Number.isInteger(day) || month < 1 || month > 12 || day < 1) return undefined;
  const ms = Date.UTC(year, month - 1, day);
  if (new Date(ms).getUTCDate() !== day) return undefined;
  return ms / 86_400_000;
}

/**
 * RMC's date `ddmmyy`. Two-digit years 80-99 are 1980-1999 and 00-79 are 2000-2079 (GPS time begins in 1980, and a
 * receiver with no time yet reports 1980).
 */
export function rmcDateField(text: string | undefined): DayNumber | undefined {
  if (text === undefined) return undefined;
  const match = /^(\d\d)(\d\d)(\d\d)$/.exec(text);
  if (match === null) return undefined;
  const yy = Number(match[3]);
  return dayNumber(yy >= 80 ? 1900 + yy : 2000 + yy, Number(match[2]), Number(match[1]));
}

/** `$<body>*HH`: a sentence with its checksum (the simulated receiver's, and the tests'). `body` is without `$`. */
export function sentenceLine(body: string): string {
  let sum = 0;
  for (let i = 0; i < body.length; i++) sum ^= body.charCodeAt(i);
  return `$${body}*${sum.toString(16).toUpperCase().padStart(2, '0')}`;
}
