/**
 * Turns the bytes of a receiver's serial line (or a recording of one) into checked NMEA sentences.
 *
 * Serial lines misbehave, and every way is counted, never thrown: bytes outside printable ASCII (binary protocol
 * output, noise at a wrong baud rate), a line cut short or two run together (a `$` inside a line starts a new
 * sentence; the cut one fails its checksum), a line longer than any sentence (held to MAX_SENTENCE_LENGTH, so
 * noise without line ends cannot grow memory), and checksum failures. Lines starting with `#` are comments (gpsd's
 * recordings carry them) and are skipped; empty lines are nothing.
 */
import { MAX_SENTENCE_LENGTH, parseSentence, type NmeaSentence, type SentenceProblem } from './nmea.js';

export interface NmeaReaderCounters {
  /** Sentences that passed their checksum. */
  sentences: number;
  /** Lines refused, by reason. */
  problems: Record<SentenceProblem, number>;
  bytes: number;
}

export class NmeaReader {
  readonly counters: NmeaReaderCounters = {
    sentences: 0,
    problems: { 'not-a-sentence': 0, 'no-checksum': 0, 'bad-checksum': 0, 'too-long': 0 },
    bytes: 0,
  };
  private line = '';
  /** The line in hand is already too long: skip to its end. */
  private overflowed = false;

  constructor(private readonly onSentence: (sentence: NmeaSentence) => void) {}

  /** Takes the next bytes (latin1: any byte value maps to one character, and noise stays noise). */
  write(chunk: Buffer | string): void {
    const text = typeof chunk === 'string' ? chunk : chunk.toString('latin1');
    this.counters.bytes += text.length;
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code === 0x0a || code === 0x0d) {
        this.append(text, start, i);
        this.endLine();
        start = i + 1;
      } else if (code === 0x24 /* $ */ && (i > start || this.line.length > 0)) {
        // A new sentence inside a line: what came before it is a line of its own (cut short, or noise).
        this.append(text, start, i);
        this.endLine();
        start = i;
      }
    }
    this.append(text, start, text.length);
  }

  /** The end of the input: a last line without its line ending is still read. */
  end(): void {
    this.endLine();
  }

  private append(text: string, from: number, to: number): void {
    if (to <= from || this.overflowed) return;
    if (this.line.length + (to - from) > MAX_SENTENCE_LENGTH) {
      this.overflowed = true;
      this.line = '';
      return;
    }
    this.line += text.slice(from, to);
  }

  private endLine(): void {
    const line = this.line;
    this.line = '';
    if (this.overflowed) {
      this.overflowed = false;
      this.counters.problems['too-long']++;
      return;
    }
    if (line.length === 0 || line.charCodeAt(0) === 0x23 /* # */) return;
    const parsed = parseSentence(line);
    if (typeof parsed === 'string') {
      this.counters.problems[parsed]++;
      return;
    }
    this.counters.sentences++;
    this.onSentence(parsed);
  }
}
