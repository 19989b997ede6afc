/**
 * Character-level reader for DBC text. The DBC grammar is context sensitive (`@1-`, `m3M`, `0|12`), so the parser
 * asks for the next item of the kind it expects instead of running a separate tokenizer.
 */

export class DbcParseError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly detail: string,
  ) {
    // Line 0: about the whole file (it cannot be read, it defines nothing), not a place in it.
    super(line > 0 ? `${file}:${line}:${column}: ${detail}` : `${file}: ${detail}`);
    this.name = 'DbcParseError';
  }
}

const enum Ch {
  Tab = 9,
  LF = 10,
  CR = 13,
  Space = 32,
  Quote = 34,
  Plus = 43,
  Minus = 45,
  Dot = 46,
  Slash = 47,
  Zero = 48,
  Nine = 57,
  Backslash = 92,
  Underscore = 95,
}

function isIdentChar(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= Ch.Zero && c <= Ch.Nine) || c === Ch.Underscore || c > 127;
}

function isDigit(c: number): boolean {
  return c >= Ch.Zero && c <= Ch.Nine;
}

export interface NumberToken {
  value: number;
  /** Written without a fraction or exponent (Python's int() would accept it). */
  isInteger: boolean;
  text: string;
}

export class Scanner {
  pos = 0;
  line = 1;
  private lineStart = 0;
  /** Where the last consumed item ended: a statement's missing `;` is judged from there, not after look-ahead. */
  lastEnd = { pos: 0, line: 1, lineStart: 0 };

  constructor(
    readonly text: string,
    readonly file: string,
  ) {}

  get column(): number {
    return this.pos - this.lineStart + 1;
  }

  atEnd(): boolean {
    this.skipSpace();
    return this.pos >= this.text.length;
  }

  error(detail: string, line = this.line, column = this.column): DbcParseError {
    return new DbcParseError(this.file, line, column, detail);
  }

  /** What stands at the current position, for "expected X, found Y" messages. */
  describeHere(): string {
    if (this.pos >= this.text.length) return 'end of file';
    const c = this.text.charCodeAt(this.pos);
    if (c === Ch.LF || c === Ch.CR) return 'end of line';
    let end = this.pos;
    while (end < this.text.length && end - this.pos < 24 && !/\s/.test(this.text[end]!)) end++;
    return `'${this.text.slice(this.pos, Math.max(end, this.pos + 1))}'`;
  }

  expected(what: string): DbcParseError {
    return this.error(`expected ${what}, found ${this.describeHere()}`);
  }

  /** Skips white space and `//` comments, counting lines. Returns true if a line break was crossed. */
  skipSpace(): boolean {
    const text = this.text;
    let crossed = false;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c === Ch.LF) {
        this.pos++;
        this.line++;
        this.lineStart = this.pos;
        crossed = true;
      } else if (c === Ch.Space || c === Ch.Tab || c === Ch.CR || c === 0xfeff || c === 12 || c === 11) {
        this.pos++;
      } else if (c === Ch.Slash && text.charCodeAt(this.pos + 1) === Ch.Slash) {
        while (this.pos < text.length && text.charCodeAt(this.pos) !== Ch.LF) this.pos++;
      } else {
        break;
      }
    }
    return crossed;
  }

  /** Skips spaces and tabs on the current line only. Returns true if the line ends here. */
  skipInline(): boolean {
    const text = this.text;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c === Ch.Space || c === Ch.Tab || c === Ch.CR) this.pos++;
      else if (c === Ch.Slash && text.charCodeAt(this.pos + 1) === Ch.Slash) {
        while (this.pos < text.length && text.charCodeAt(this.pos) !== Ch.LF) this.pos++;
      } else break;
    }
    return this.pos >= text.length || text.charCodeAt(this.pos) === Ch.LF;
  }

  peekChar(): string {
    this.skipSpace();
    return this.text[this.pos] ?? '';
  }

  /** Consumes `ch` if it is next (after white space). */
  accept(ch: string): boolean {
    this.skipSpace();
    if (this.text[this.pos] === ch) {
      this.pos++;
      this.lastEnd = this.mark();
      return true;
    }
    return false;
  }

  expect(ch: string, what = `'${ch}'`): void {
    if (!this.accept(ch)) throw this.expected(what);
  }

  peekIdentifier(): string | undefined {
    this.skipSpace();
    let end = this.pos;
    while (end < this.text.length && isIdentChar(this.text.charCodeAt(end))) end++;
    return end > this.pos ? this.text.slice(this.pos, end) : undefined;
  }

  /** Reads an identifier. Identifiers may start with a digit here; the parser decides whether to tolerate it. */
  identifier(what = 'a name'): string {
    const id = this.peekIdentifier();
    if (id === undefined) throw this.expected(what);
    this.pos += id.length;
    this.lastEnd = this.mark();
    return id;
  }

  acceptKeyword(keyword: string): boolean {
    const id = this.peekIdentifier();
    if (id === keyword) {
      this.pos += id.length;
      return true;
    }
    return false;
  }

  peekIsNumber(): boolean {
    this.skipSpace();
    const c = this.text.charCodeAt(this.pos);
    if (isDigit(c)) return true;
    if (c === Ch.Minus || c === Ch.Plus || c === Ch.Dot) {
      const n = this.text.charCodeAt(this.pos + 1);
      return isDigit(n) || (n === Ch.Dot && isDigit(this.text.charCodeAt(this.pos + 2)));
    }
    return false;
  }

  number(what = 'a number'): NumberToken {
    this.skipSpace();
    const text = this.text;
    const start = this.pos;
    let p = this.pos;
    let isInteger = true;
    if (text.charCodeAt(p) === Ch.Minus || text.charCodeAt(p) === Ch.Plus) p++;
    const digitsStart = p;
    while (isDigit(text.charCodeAt(p))) p++;
    if (text.charCodeAt(p) === Ch.Dot) {
      isInteger = false;
      p++;
      while (isDigit(text.charCodeAt(p))) p++;
    }
    if (p === digitsStart || (p === digitsStart + 1 && text.charCodeAt(digitsStart) === Ch.Dot)) throw this.expected(what);
    const e = text.charCodeAt(p);
    if (e === 101 || e === 69) {
      let q = p + 1;
      if (text.charCodeAt(q) === Ch.Minus || text.charCodeAt(q) === Ch.Plus) q++;
      if (isDigit(text.charCodeAt(q))) {
        isInteger = false;
        while (isDigit(text.charCodeAt(q))) q++;
        p = q;
      }
    }
    // A number glued to letters (`12abc`) is not a number.
    if (isIdentChar(text.charCodeAt(p)) && text.charCodeAt(p) !== Ch.Underscore) throw this.expected(what);
    const token = text.slice(start, p);
    this.pos = p;
    this.lastEnd = this.mark();
    return { value: Number(token), isInteger, text: token };
  }

  /** An unsigned integer, as used for IDs, bit positions and lengths. */
  unsigned(what: string): number {
    this.skipSpace();
    const line = this.line;
    const column = this.column;
    const n = this.number(what);
    if (!n.isInteger || n.value < 0 || !Number.isSafeInteger(n.value)) {
      throw this.error(`expected ${what} (a non-negative integer), found '${n.text}'`, line, column);
    }
    return n.value;
  }

  integer(what: string): number {
    this.skipSpace();
    const line = this.line;
    const column = this.column;
    const n = this.number(what);
    if (!n.isInteger || !Number.isFinite(n.value)) {
      throw this.error(`expected ${what} (an integer), found '${n.text}'`, line, column);
    }
    return n.value;
  }

  peekIsString(): boolean {
    this.skipSpace();
    return this.text.charCodeAt(this.pos) === Ch.Quote;
  }

  /** A double-quoted string; `\"` and `\\` are escapes; it may span lines. */
  string(what = 'a quoted string'): string {
    this.skipSpace();
    const text = this.text;
    if (text.charCodeAt(this.pos) !== Ch.Quote) throw this.expected(what);
    const startLine = this.line;
    const startColumn = this.column;
    let p = this.pos + 1;
    let out = '';
    let chunkStart = p;
    for (;;) {
      if (p >= text.length) {
        throw this.error(`unterminated string (opened here, file ends before its closing '"')`, startLine, startColumn);
      }
      const c = text.charCodeAt(p);
      if (c === Ch.Quote) break;
      if (c === Ch.Backslash && (text.charCodeAt(p + 1) === Ch.Quote || text.charCodeAt(p + 1) === Ch.Backslash)) {
        out += text.slice(chunkStart, p);
        p++;
        chunkStart = p;
      } else if (c === Ch.LF) {
        this.line++;
        this.lineStart = p + 1;
      }
      p++;
    }
    out += text.slice(chunkStart, p);
    this.pos = p + 1;
    this.lastEnd = this.mark();
    return out;
  }

  /**
   * Skips to just after the next `;` outside strings (or to the start of the next line that begins with a keyword,
   * for a statement whose `;` is missing). Returns false if the statement ended without a `;`.
   */
  skipStatement(isKeywordAtLineStart: (word: string) => boolean): boolean {
    const text = this.text;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c === 59) {
        this.pos++;
        return true;
      }
      if (c === Ch.Quote) {
        try {
          this.string();
        } catch {
          this.pos = text.length;
        }
        continue;
      }
      if (c === Ch.Slash && text.charCodeAt(this.pos + 1) === Ch.Slash) {
        while (this.pos < text.length && text.charCodeAt(this.pos) !== Ch.LF) this.pos++;
        continue;
      }
      if (c === Ch.LF) {
        this.pos++;
        this.line++;
        this.lineStart = this.pos;
        const word = this.peekWordAtLineStart();
        if (word !== undefined && isKeywordAtLineStart(word)) return false;
        continue;
      }
      this.pos++;
    }
    return false;
  }

  /** The identifier at the very start of the current line (no indentation), without consuming it. */
  peekWordAtLineStart(): string | undefined {
    let end = this.pos;
    while (end < this.text.length && isIdentChar(this.text.charCodeAt(end))) end++;
    return end > this.pos ? this.text.slice(this.pos, end) : undefined;
  }

  mark(): { pos: number; line: number; lineStart: number } {
    return { pos: this.pos, line: this.line, lineStart: this.lineStart };
  }

  reset(mark: { pos: number; line: number; lineStart: number }): void {
    this.pos = mark.pos;
    this.line = mark.line;
    this.lineStart = mark.lineStart;
  }

  /** True if the next non-space item is on a later line and starts that line without indentation, or at the end. */
  nextIsUnindentedOnNewLine(): boolean {
    const save = this.mark();
    const crossed = this.skipSpace();
    const unindented = (crossed && this.pos === this.lineStart) || this.pos >= this.text.length;
    this.reset(save);
    return unindented;
  }
}
