/**
 * Text that came from outside (a DBC or log file, the bus, a serial adapter, the network) made safe to print on a
 * terminal. Such text may hold escape sequences that recolour, clear or retitle the terminal, move the cursor over
 * earlier lines, or (bidi overrides) show characters in another order than they are: every CLI line and text log
 * line that quotes it goes through here.
 *
 * `forTerminal` shows each control character as an escape (`\x1b`, `\n`, `\u202e`): visible, one line, never
 * interpreted. `jsonForTerminal` does the same for JSON text, where JSON.stringify already escapes C0 but leaves DEL,
 * C1 and the bidi controls raw: it writes them as `\u00NN`, so the JSON still parses to exactly the same value.
 * Neither fails; clean text (the usual case) is returned as it is, without a copy.
 *
 * `terminalColumns` and `cutToColumns` measure such text in terminal columns (wide characters take two, combining
 * marks none), for lines that must fit a terminal's width (the live status line).
 */

/**
 * What is escaped: C0 (including tab and newline), DEL, C1 (0x9B is a one-byte CSI for many terminals), the Arabic
 * letter mark, left/right marks, line and paragraph separators, bidi embeddings, overrides and isolates.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'g');
/** In JSON text: the same set minus C0 (JSON.stringify escapes those itself, and they cannot appear raw in JSON). */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
const UNSAFE_IN_JSON_ALL = new RegExp(UNSAFE_IN_JSON.source, 'g');

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named !== undefined) return named;
  const code = c.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

function unicodeEscape(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/** `text` with every terminal control character shown as an escape (`\x1b`, `\n`, `\x9b`, `\u202e`). */
export function forTerminal(text: string): string {
  return UNSAFE.test(text) ? text.replace(UNSAFE_ALL, escapeChar) : text;
}

/** Like forTerminal, line by line: the line breaks of a multi-line message stay, everything else is escaped. */
export function linesForTerminal(text: string): string {
  return UNSAFE.test(text) ? text.split('\n').map(forTerminal).join('\n') : text;
}

/** JSON text (from JSON.stringify) with DEL, C1 and bidi controls as `\u00NN` escapes: still the same JSON value. */
export function jsonForTerminal(json: string): string {
  return UNSAFE_IN_JSON.test(json) ? json.replace(UNSAFE_IN_JSON_ALL, unicodeEscape) : json;
}

/**
 * Characters a terminal shows in no column of their own: combining marks (they sit on the character before), format
 * characters (zero-width space and joiners), variation selectors.
 */
const ZERO_WIDTH = /^[\p{Mn}\p{Me}\p{Cf}\ufe00-\ufe0f]$/u;

/** East Asian wide and fullwidth characters and the emoji blocks: two columns each (what wcwidth says of them). */
function isWide(code: number): boolean {
  return (
    (code >= 0x1100 && code <= 0x115f) ||
    (code >= 0x2e80 && code <= 0xa4cf && code !== 0x303f) ||
    (code >= 0xac00 && code <= 0xd7a3) ||
    (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) ||
    (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) ||
    (code >= 0x1f300 && code <= 0x1f64f) ||
    (code >= 0x1f680 && code <= 0x1f6ff) ||
    (code >= 0x1f900 && code <= 0x1f9ff) ||
    (code >= 0x20000 && code <= 0x3fffd)
  );
}

function charColumns(char: string): number {
  const code = char.codePointAt(0)!;
  if (code < 0x300) return 1;
  if (ZERO_WIDTH.test(char)) return 0;
  return isWide(code) ? 2 : 1;
}

/**
 * The columns `text` takes on a terminal, for text without control characters (what forTerminal returns): one per
 * character, two for wide ones, none for combining marks. Not the length in UTF-16 units: `°` is one column, `€` one,
 * a CJK label two per character.
 */
export function terminalColumns(text: string): number {
  let columns = 0;
  for (const char of text) columns += charColumns(char);
  return columns;
}

/** The longest start of `text` that fits in `columns` columns, never splitting a character (or a surrogate pair). */
export function cutToColumns(text: string, columns: number): string {
  let used = 0;
  let end = 0;
  for (const char of text) {
    used += charColumns(char);
    if (used > columns) break;
    end += char.length;
  }
  return text.slice(0, end);
}
