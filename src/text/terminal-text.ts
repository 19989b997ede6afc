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
