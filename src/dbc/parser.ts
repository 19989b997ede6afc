/**
 * DBC parser. Reads the whole grammar real files use and builds a `Database`. References between statements (comments,
 * attributes, value tables, multiplexing, value types) are collected first and resolved at the end, so statements may
 * come in any order.
 *
 * Lenient mode (the default) accepts the deviations real tool chains produce and reports each kind once as a warning;
 * `strict` turns each of them into a parse error.
 */
import { readFileSync } from 'node:fs';
import { layoutProblems } from './layout.js';
import type { AttributeDefinition, AttributeValue, Database, DbcWarning, EnvironmentVariable, MessageDef, NodeDef, SignalDef } from './model.js';
import { DbcParseError, Scanner } from './scanner.js';

export { DbcParseError } from './scanner.js';

export interface DbcParseOptions {
  /** Name used in errors and warnings. */
  file?: string;
  /** Reject every deviation from the DBC grammar instead of tolerating it with a warning. */
  strict?: boolean;
}

const EXTENDED_FLAG = 0x80000000;
const ID_MASK_29 = 0x1fffffff;

/** Statements this parser reads. Others in `SKIPPED` are valid DBC it does not need and skips. */
const SKIPPED = new Set([
  'CAT_DEF_',
  'CAT_',
  'FILTER',
  'SGTYPE_',
  'SGTYPE_VAL_',
  'BA_DEF_SGTYPE_',
  'BA_SGTYPE_',
  'SIG_TYPE_REF_',
  'SIGTYPE_VALTYPE_',
  'EV_DATA_',
  'ENVVAR_DATA_',
  'BU_SG_REL_',
  'BU_EV_REL_',
  'BU_BO_REL_',
  'BA_REL_',
  'BA_DEF_DEF_REL_',
  'NS_DESC_',
  'SIG_GROUP_',
]);
const KEYWORDS = new Set([
  ...SKIPPED,
  'VERSION',
  'NS_',
  'BS_',
  'BU_',
  'BO_',
  'SG_',
  'CM_',
  'BA_DEF_',
  'BA_DEF_REL_',
  'BA_DEF_DEF_',
  'BA_',
  'VAL_',
  'VAL_TABLE_',
  'SIG_VALTYPE_',
  'SG_MUL_VAL_',
  'BO_TX_BU_',
  'EV_',
]);

type ObjectRef =
  | { kind: 'network' }
  | { kind: 'node'; name: string }
  | { kind: 'message'; rawId: number; missingSignal?: boolean }
  | { kind: 'signal'; rawId: number; signal: string }
  | { kind: 'envvar'; name: string };

interface Located {
  line: number;
  column: number;
}

/** Byte-order marks: the encoding they declare, and their length. */
const BOMS: { bytes: number[]; encoding: 'utf-8' | 'utf-16le' | 'utf-16be' }[] = [
  { bytes: [0xef, 0xbb, 0xbf], encoding: 'utf-8' },
  { bytes: [0xff, 0xfe], encoding: 'utf-16le' },
  { bytes: [0xfe, 0xff], encoding: 'utf-16be' },
];

/**
 * Decodes DBC bytes. A byte-order mark decides: UTF-16 LE or BE (what some Windows tools save, "Unicode" in their
 * dialogs), or UTF-8. Otherwise, and after a UTF-8 mark: UTF-8 when the bytes are valid UTF-8, else Windows-1252
 * (which covers latin-1 text). Throws a DbcParseError naming `file` for UTF-16 that is not valid UTF-16 (an odd
 * number of bytes, a broken surrogate pair): guessing another encoding there would only produce nonsense.
 */
export function decodeDbcBytes(bytes: Uint8Array, file = '<dbc>'): { text: string; encoding: string } {
  const bom = BOMS.find((b) => b.bytes.length <= bytes.length && b.bytes.every((byte, i) => bytes[i] === byte));
  if (bom !== undefined && bom.encoding !== 'utf-8') {
    try {
      return { text: new TextDecoder(bom.encoding, { fatal: true, ignoreBOM: true }).decode(bytes.subarray(2)), encoding: bom.encoding };
    } catch {
      const label = bom.encoding.toUpperCase();
      throw new DbcParseError(
        file,
        1,
        1,
        `starts with a ${label} byte-order mark but is not valid ${label} (an odd number of bytes or a broken surrogate pair)`,
      );
    }
  }
  const body = bom === undefined ? bytes : bytes.subarray(bom.bytes.length);
  try {
    return { text: new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body), encoding: 'utf-8' };
  } catch {
    return { text: decodeWindows1252(body), encoding: 'windows-1252' };
  }
}

/**
 * Windows-1252 differs from latin-1 only in 0x80-0x9F (€, curly quotes, Š ...). Decoded here because some Node 20
 * releases' TextDecoder('windows-1252') returns latin-1 for that range. Undefined code points keep their C1 value.
 */
const CP1252_HIGH = [
  0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d,
  0x2022, 0x2013, 0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
];

function decodeWindows1252(bytes: Uint8Array): string {
  const codes = new Uint16Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    codes[i] = b >= 0x80 && b < 0xa0 ? CP1252_HIGH[b - 0x80]! : b;
  }
  let text = '';
  for (let i = 0; i < codes.length; i += 8192) text += String.fromCharCode(...codes.subarray(i, i + 8192));
  return text;
}

/**
 * Reads and parses a DBC file. A file that defines no message is an error too: it would decode nothing, and a bus
 * running with it would report every frame as unknown while looking healthy.
 */
export function loadDbcFile(path: string, options: Omit<DbcParseOptions, 'file'> = {}): Database {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new DbcParseError(path, 0, 0, `cannot read DBC file: ${(err as Error).message}`);
  }
  const db = parseDbc(bytes, { ...options, file: path });
  if (db.messages.length === 0) {
    // UTF-16 without its byte-order mark reads as text with a NUL after every ASCII character.
    const hint = db.encoding === 'utf-8' && bytes.includes(0) ? '; it holds NUL bytes: UTF-16 without a byte-order mark? Save it as UTF-8' : '';
    throw new DbcParseError(path, 0, 0, `no message (BO_) found in this DBC file (read as ${db.encoding})${hint}`);
  }
  return db;
}

export function parseDbc(input: string | Uint8Array, options: DbcParseOptions = {}): Database {
  const { text, encoding } = typeof input === 'string' ? { text: input, encoding: 'utf-8' } : decodeDbcBytes(input, options.file);
  return new DbcParser(text, options.file ?? '<dbc>', options.strict ?? false, encoding).parse();
}

class DbcParser {
  private readonly s: Scanner;
  private readonly db: Database;
  private readonly messagesByRawId = new Map<number, MessageDef>();
  private lastMessage: MessageDef | undefined;
  private readonly toleratedKinds = new Map<string, { warning: DbcWarning; count: number }>();
  private readonly warnings: DbcWarning[] = [];

  // Collected while reading, resolved at the end.
  private readonly comments: { ref: ObjectRef; text: string; at: Located }[] = [];
  private readonly attributeValues: { name: string; ref: ObjectRef; value: AttributeValue; at: Located }[] = [];
  private readonly attributeDefaults = new Map<string, AttributeValue>();
  private readonly signalChoices: { rawId: number; signal: string; choices: Map<number, string>; at: Located }[] = [];
  private readonly valueTypes: { rawId: number; signal: string; type: number; at: Located }[] = [];
  private readonly muxValues: { rawId: number; signal: string; mux: string; ranges: [number, number][]; at: Located }[] = [];
  private readonly transmitters: { rawId: number; nodes: string[]; at: Located }[] = [];
  /** Multiplexer indicator as written (`M`, `m3`, `m3M`), per signal, until multiplexing is resolved. */
  private readonly muxIndicators = new Map<SignalDef, string>();

  constructor(
    text: string,
    file: string,
    private readonly strict: boolean,
    encoding: string,
  ) {
    this.s = new Scanner(text, file);
    this.db = {
      file,
      version: '',
      encoding,
      nodes: [],
      messages: [],
      valueTables: new Map(),
      attributeDefinitions: new Map(),
      attributes: {},
      environmentVariables: [],
      signalGroups: [],
      warnings: this.warnings,
    };
  }

  parse(): Database {
    const s = this.s;
    while (!s.atEnd()) {
      const line = s.line;
      const column = s.column;
      const keyword = s.peekIdentifier();
      if (keyword === undefined) throw s.expected('a DBC keyword (BO_, SG_, CM_, BA_, VAL_ ...)');
      s.identifier();
      this.statement(keyword, { line, column });
    }
    this.resolve();
    for (const { warning, count } of this.toleratedKinds.values()) {
      this.warnings.push(count > 1 ? { ...warning, message: `${warning.message} (and ${count - 1} more like it)` } : warning);
    }
    this.warnings.sort((a, b) => a.line - b.line || a.column - b.column);
    return this.db;
  }

  private warn(at: Located, message: string): void {
    this.warnings.push({ file: this.s.file, line: at.line, column: at.column, message });
  }

  /** A deviation from the grammar: an error in strict mode, otherwise one warning per kind with a count. */
  private tolerate(kind: string, at: Located, message: string): void {
    if (this.strict) throw new DbcParseError(this.s.file, at.line, at.column, `${message} (rejected in strict mode)`);
    this.notice(kind, at, `tolerated: ${message}`);
  }

  /**
   * A reference to something the file does not define (a comment or value table for a signal that is not there):
   * legal to load, dropped, and reported once per kind so a large file does not flood the log.
   */
  private notice(kind: string, at: Located, message: string): void {
    const seen = this.toleratedKinds.get(kind);
    if (seen) seen.count++;
    else this.toleratedKinds.set(kind, { warning: { file: this.s.file, ...at, message }, count: 1 });
  }

  private here(): Located {
    this.s.skipSpace();
    return { line: this.s.line, column: this.s.column };
  }

  /** A name; one starting with a digit is tolerated (real files have `2017_5`), as opendbc's parser does. */
  private name(what: string): string {
    const at = this.here();
    const name = this.s.identifier(what);
    if (name.charCodeAt(0) >= 48 && name.charCodeAt(0) <= 57) {
      this.tolerate('name-starts-with-digit', at, `${what} '${name}' starts with a digit`);
    }
    return name;
  }

  private endStatement(keyword: string): void {
    const s = this.s;
    const before = s.lastEnd;
    if (s.accept(';')) return;
    s.reset(before);
    const at = { line: s.line, column: s.column };
    if (s.nextIsUnindentedOnNewLine()) {
      this.tolerate(`missing-semicolon-${keyword}`, at, `${keyword} statement without its closing ';'`);
      return;
    }
    s.skipInline();
    throw s.expected(`';' to end the ${keyword} statement`);
  }

  private statement(keyword: string, at: Located): void {
    const s = this.s;
    switch (keyword) {
      case 'VERSION':
        this.db.version = s.string('the version string');
        return;
      case 'NS_':
        s.accept(':');
        // The new-symbols list: indented names, or names on the NS_ line itself.
        while (!s.nextIsUnindentedOnNewLine() && s.peekIdentifier() !== undefined) s.identifier();
        return;
      case 'BS_':
        s.expect(':', "':' after BS_");
        if (!s.skipInline()) {
          s.unsigned('the baud rate');
          if (s.accept(':')) {
            s.unsigned('BTR1');
            s.expect(',', "',' between BTR1 and BTR2");
            s.unsigned('BTR2');
          }
        }
        return;
      case 'BU_':
        s.expect(':', "':' after BU_");
        // Node names on the BU_ line, and on indented continuation lines.
        for (;;) {
          if (s.skipInline()) {
            if (s.nextIsUnindentedOnNewLine()) break;
            const word = s.peekIdentifier();
            if (word === undefined || KEYWORDS.has(word)) break;
          }
          if (s.text[s.pos] === ',') {
            s.pos++;
            continue;
          }
          this.db.nodes.push({ name: this.name('a node name'), attributes: {} });
        }
        return;
      case 'VAL_TABLE_': {
        const tableName = this.name('a value table name');
        this.db.valueTables.set(tableName, this.choiceList());
        this.endStatement(keyword);
        return;
      }
      case 'BO_':
        this.message(at);
        return;
      case 'SG_':
        this.signal(at);
        return;
      case 'CM_':
        this.comment(at);
        return;
      case 'BA_DEF_':
      case 'BA_DEF_REL_':
        this.attributeDefinition(keyword);
        return;
      case 'BA_DEF_DEF_': {
        const name = s.string('the attribute name');
        const value = s.peekIsString() ? s.string() : s.number('the default value').value;
        this.attributeDefaults.set(name, value);
        this.endStatement(keyword);
        return;
      }
      case 'BA_':
        this.attribute(at);
        return;
      case 'VAL_':
        this.valueDescriptions(at);
        return;
      case 'SIG_VALTYPE_': {
        const rawId = s.unsigned('a message ID');
        const signal = this.name('a signal name');
        s.accept(':');
        const type = s.unsigned('the value type (0 integer, 1 float32, 2 float64)');
        this.valueTypes.push({ rawId, signal, type, at });
        this.endStatement(keyword);
        return;
      }
      case 'SG_MUL_VAL_': {
        const rawId = s.unsigned('a message ID');
        const signal = this.name('a signal name');
        const mux = this.name('the multiplexer signal name');
        const ranges: [number, number][] = [];
        do {
          const low = s.unsigned('the low end of a multiplexer value range');
          s.expect('-', "'-' in a multiplexer value range (as in 2-5)");
          const high = s.unsigned('the high end of a multiplexer value range');
          if (high < low || high - low > 65535) throw s.error(`multiplexer value range ${low}-${high} is not usable`);
          ranges.push([low, high]);
        } while (s.accept(','));
        this.muxValues.push({ rawId, signal, mux, ranges, at });
        this.endStatement(keyword);
        return;
      }
      case 'BO_TX_BU_': {
        const rawId = s.unsigned('a message ID');
        s.expect(':', "':' after the message ID");
        const nodes: string[] = [];
        while (!s.peekIsString() && s.peekChar() !== ';' && s.peekIdentifier() !== undefined) {
          nodes.push(this.name('a node name'));
          s.accept(',');
        }
        this.transmitters.push({ rawId, nodes, at });
        this.endStatement(keyword);
        return;
      }
      case 'EV_': {
        // Environment variables carry no frames: a malformed one is skipped in lenient mode, never fatal.
        const start = s.mark();
        try {
          this.environmentVariable();
        } catch (err) {
          if (this.strict || !(err instanceof DbcParseError)) throw err;
          s.reset(start);
          s.skipStatement((w) => KEYWORDS.has(w));
          this.tolerate('malformed-EV_', at, `malformed EV_ statement skipped (${err.detail})`);
        }
        return;
      }
      default:
        if (SKIPPED.has(keyword)) {
          if (!s.skipStatement((w) => KEYWORDS.has(w))) {
            this.tolerate(`missing-semicolon-${keyword}`, at, `${keyword} statement without its closing ';'`);
          }
          return;
        }
        this.tolerate(`unknown-${keyword}`, at, `unknown statement '${keyword}' skipped`);
        s.skipStatement((w) => KEYWORDS.has(w));
    }
  }

  /** `(value "label")*` up to the statement's end. */
  private choiceList(): Map<number, string> {
    const s = this.s;
    const choices = new Map<number, string>();
    while (s.peekIsNumber()) {
      const value = s.number('a value').value;
      choices.set(value, s.string('the label for this value'));
    }
    return choices;
  }

  private message(at: Located): void {
    const s = this.s;
    const rawId = s.unsigned('the message ID');
    if (rawId > 0xffffffff) throw s.error(`message ID ${rawId} does not fit in 32 bits`, at.line, at.column);
    const name = this.name('the message name');
    s.expect(':', "':' after the message name");
    const lengthAt = this.here();
    const length = s.unsigned('the message length in bytes');
    if (length > 64) {
      throw s.error(`message ${name} is ${length} bytes long; CAN FD allows at most 64`, lengthAt.line, lengthAt.column);
    }
    const senders: string[] = [];
    if (!s.skipInline()) senders.push(this.name('the sending node'));
    let id: number;
    let extended: boolean;
    if (rawId >= EXTENDED_FLAG) {
      id = rawId & ID_MASK_29;
      extended = true;
      if (rawId - EXTENDED_FLAG > ID_MASK_29 && name !== 'VECTOR__INDEPENDENT_SIG_MSG') {
        this.warn(at, `message ${name}: ID ${rawId} has bits above the 29-bit range; they are ignored`);
      }
    } else if (rawId > 0x7ff) {
      this.tolerate(
        'id-without-extended-flag',
        at,
        `message ${name}: ID 0x${rawId.toString(16)} is above 0x7FF without the extended flag (bit 31); read as a 29-bit ID`,
      );
      id = rawId & ID_MASK_29;
      extended = true;
    } else {
      id = rawId;
      extended = false;
    }
    const message: MessageDef = {
      id,
      extended,
      name,
      length,
      senders,
      signals: [],
      attributes: {},
      fd: length > 8,
      j1939: false,
      line: at.line,
    };
    if (this.messagesByRawId.has(rawId)) {
      this.tolerate('duplicate-message', at, `message ID ${rawId} (${name}) is defined twice; the later one is used`);
      const index = this.db.messages.indexOf(this.messagesByRawId.get(rawId)!);
      this.db.messages.splice(index, 1);
    }
    this.messagesByRawId.set(rawId, message);
    this.db.messages.push(message);
    this.lastMessage = message;
  }

  private signal(at: Located): void {
    const s = this.s;
    const message = this.lastMessage;
    if (!message) throw s.error('SG_ before any BO_: a signal must follow its message', at.line, at.column);
    const name = this.name('the signal name');
    let indicator: string | undefined;
    if (s.peekChar() !== ':') {
      const muxAt = this.here();
      indicator = s.identifier("a multiplexer indicator (M, m<n> or m<n>M) or ':'");
      if (!/^(M|m\d+M?)$/.test(indicator)) {
        throw s.error(`expected a multiplexer indicator (M, m<n> or m<n>M) or ':', found '${indicator}'`, muxAt.line, muxAt.column);
      }
    }
    s.expect(':', "':' after the signal name");
    const startAt = this.here();
    const startBit = s.unsigned('the start bit');
    s.expect('|', "'|' between start bit and length");
    const lengthAt = this.here();
    const length = s.unsigned('the signal length in bits');
    if (length < 1 || length > 64) {
      throw s.error(`signal ${name}: length ${length} is outside 1..64 bits`, lengthAt.line, lengthAt.column);
    }
    if (startBit > 511) {
      throw s.error(`signal ${name}: start bit ${startBit} is beyond a 64-byte payload`, startAt.line, startAt.column);
    }
    s.expect('@', "'@' before the byte order");
    const order = s.text[s.pos];
    if (order !== '0' && order !== '1') throw s.expected("byte order '0' (Motorola) or '1' (Intel)");
    s.pos++;
    const sign = s.text[s.pos];
    if (sign !== '+' && sign !== '-') throw s.expected("'+' (unsigned) or '-' (signed)");
    s.pos++;
    s.expect('(', "'(' before factor and offset");
    const factor = s.number('the factor');
    s.expect(',', "',' between factor and offset");
    const offset = s.number('the offset');
    s.expect(')', "')' after factor and offset");
    s.expect('[', "'[' before minimum and maximum");
    const minimum = s.number('the minimum').value;
    s.expect('|', "'|' between minimum and maximum");
    const maximum = s.number('the maximum').value;
    s.expect(']', "']' after minimum and maximum");
    const unit = s.string('the unit string');
    const receivers: string[] = [];
    while (!s.skipInline()) {
      if (s.text[s.pos] === ',') {
        s.pos++;
        continue;
      }
      receivers.push(this.name('a receiving node'));
    }
    if (factor.value === 0) this.warn(at, `signal ${name} of message ${message.name} has a factor of 0`);
    const signal: SignalDef = {
      name,
      startBit,
      length,
      byteOrder: order === '0' ? 'big_endian' : 'little_endian',
      signed: sign === '-',
      valueType: 'integer',
      factor: factor.value,
      offset: offset.value,
      // Integer literals keep scaling exact (BigInt beyond 2^53); one too large for a double falls back to doubles.
      integerScaling: factor.isInteger && offset.isInteger && Number.isFinite(factor.value) && Number.isFinite(offset.value),
      minimum,
      maximum,
      unit,
      receivers,
      isMultiplexer: indicator !== undefined && indicator.endsWith('M'),
      attributes: {},
      line: at.line,
    };
    if (message.signals.some((other) => other.name === name)) {
      this.tolerate('duplicate-signal', at, `signal ${name} appears twice in message ${message.name}`);
    }
    if (indicator) this.muxIndicators.set(signal, indicator);
    message.signals.push(signal);
  }

  private objectRef(): ObjectRef {
    const s = this.s;
    if (s.acceptKeyword('BU_')) return { kind: 'node', name: this.name('a node name') };
    if (s.acceptKeyword('BO_')) return { kind: 'message', rawId: s.unsigned('a message ID') };
    if (s.acceptKeyword('SG_')) {
      const rawId = s.unsigned('a message ID');
      if (s.peekIsString()) return { kind: 'message', rawId, missingSignal: true };
      return { kind: 'signal', rawId, signal: this.name('a signal name') };
    }
    if (s.acceptKeyword('EV_')) return { kind: 'envvar', name: this.name('an environment variable name') };
    return { kind: 'network' };
  }

  private comment(at: Located): void {
    const s = this.s;
    const ref = this.objectRef();
    if (ref.kind === 'message' && ref.missingSignal) {
      this.tolerate('signal-comment-without-signal', at, `CM_ SG_ ${ref.rawId} has no signal name; kept as the message's comment`);
    }
    const text = s.string('the comment text');
    this.comments.push({ ref, text, at });
    this.endStatement('CM_');
  }

  private attributeDefinition(keyword: string): void {
    const s = this.s;
    let objectType = '';
    const kind = s.peekIdentifier();
    if (kind !== undefined) objectType = s.identifier();
    const name = s.string('the attribute name');
    const typeAt = this.here();
    const valueType = s.identifier('the attribute type (INT, HEX, FLOAT, STRING, ENUM)');
    const definition: AttributeDefinition = { name, objectType, valueType: 'STRING' };
    switch (valueType) {
      case 'INT':
      case 'HEX':
      case 'FLOAT':
        definition.valueType = valueType;
        if (s.peekIsNumber()) {
          definition.minimum = s.number('the minimum').value;
          definition.maximum = s.number('the maximum').value;
        }
        break;
      case 'STRING':
        break;
      case 'ENUM':
        definition.valueType = 'ENUM';
        definition.enumValues = [];
        while (s.peekIsString()) {
          definition.enumValues.push(s.string());
          if (!s.accept(',')) break;
        }
        break;
      default:
        throw s.error(`expected the attribute type (INT, HEX, FLOAT, STRING, ENUM), found '${valueType}'`, typeAt.line, typeAt.column);
    }
    this.db.attributeDefinitions.set(name, definition);
    this.endStatement(keyword);
  }

  private attribute(at: Located): void {
    const s = this.s;
    const name = s.string('the attribute name');
    const ref = this.objectRef();
    const value: AttributeValue = s.peekIsString() ? s.string() : s.number('the attribute value').value;
    this.attributeValues.push({ name, ref, value, at });
    this.endStatement('BA_');
  }

  private valueDescriptions(at: Located): void {
    const s = this.s;
    if (s.peekIsNumber()) {
      const rawId = s.unsigned('a message ID');
      const signal = this.name('a signal name');
      this.signalChoices.push({ rawId, signal, choices: this.choiceList(), at });
    } else {
      // Value descriptions of an environment variable: read and dropped (environment variables carry no frames).
      this.name('an environment variable name');
      this.choiceList();
    }
    this.endStatement('VAL_');
  }

  private environmentVariable(): void {
    const s = this.s;
    const name = this.name('the environment variable name');
    s.expect(':', "':' after the environment variable name");
    const type = s.unsigned('the environment variable type');
    s.expect('[', "'['");
    const minimum = s.number('the minimum').value;
    s.expect('|', "'|'");
    const maximum = s.number('the maximum').value;
    s.expect(']', "']'");
    const unit = s.string('the unit');
    const initialValue = s.number('the initial value').value;
    const id = s.unsigned('the environment variable ID');
    const accessType = s.identifier('the access type');
    const accessNodes: string[] = [];
    while (s.peekIdentifier() !== undefined) {
      accessNodes.push(s.identifier());
      if (!s.accept(',')) break;
    }
    const envvar: EnvironmentVariable = { name, type, minimum, maximum, unit, initialValue, id, accessType, accessNodes };
    this.db.environmentVariables.push(envvar);
    this.endStatement('EV_');
  }

  // ---- resolution ----

  private findSignal(rawId: number, name: string, at: Located, what: string): SignalDef | undefined {
    const message = this.messagesByRawId.get(rawId);
    if (!message) {
      this.notice(`unknown-message-${what}`, at, `${what} refers to message ID ${rawId}, which is not defined; ignored`);
      return undefined;
    }
    // The last definition wins for duplicate names, as it does in decoded output.
    for (let i = message.signals.length - 1; i >= 0; i--) if (message.signals[i]!.name === name) return message.signals[i];
    this.notice(`unknown-signal-${what}`, at, `${what} refers to signal ${name}, which message ${message.name} does not have; ignored`);
    return undefined;
  }

  private enumLabel(name: string, value: AttributeValue): AttributeValue {
    const def = this.db.attributeDefinitions.get(name);
    if (def?.valueType === 'ENUM' && typeof value === 'number') return def.enumValues?.[value] ?? value;
    return value;
  }

  private resolve(): void {
    const nodes = new Map<string, NodeDef>(this.db.nodes.map((n) => [n.name, n]));
    for (const [name, value] of this.attributeDefaults) {
      const def = this.db.attributeDefinitions.get(name);
      if (def) def.defaultValue = value;
    }

    for (const { ref, text, at } of this.comments) {
      switch (ref.kind) {
        case 'network':
          this.db.comment = text;
          break;
        case 'node': {
          const node = nodes.get(ref.name);
          if (node) node.comment = text;
          else this.notice('unknown-node-comment', at, `comment for node ${ref.name}, which BU_ does not list; ignored`);
          break;
        }
        case 'message': {
          const message = this.messagesByRawId.get(ref.rawId);
          // The last comment wins, as for signals; a stray signal comment only fills an empty message comment.
          if (message) message.comment = ref.missingSignal ? (message.comment ?? text) : text;
          else this.notice('unknown-message-CM_', at, `CM_ refers to message ID ${ref.rawId}, which is not defined; ignored`);
          break;
        }
        case 'signal': {
          const signal = this.findSignal(ref.rawId, ref.signal, at, 'CM_');
          if (signal) signal.comment = text;
          break;
        }
        case 'envvar': {
          const envvar = this.db.environmentVariables.find((e) => e.name === ref.name);
          if (envvar) envvar.comment = text;
          break;
        }
      }
    }

    for (const { name, ref, value: written, at } of this.attributeValues) {
      const value = this.enumLabel(name, written);
      switch (ref.kind) {
        case 'network':
          this.db.attributes[name] = value;
          break;
        case 'node': {
          const node = nodes.get(ref.name);
          if (node) node.attributes[name] = value;
          break;
        }
        case 'message': {
          const message = this.messagesByRawId.get(ref.rawId);
          if (message) message.attributes[name] = value;
          else this.notice('unknown-message-BA_', at, `BA_ refers to message ID ${ref.rawId}, which is not defined; ignored`);
          break;
        }
        case 'signal': {
          const signal = this.findSignal(ref.rawId, ref.signal, at, 'BA_');
          if (signal) signal.attributes[name] = value;
          break;
        }
        case 'envvar':
          break;
      }
    }

    for (const { rawId, signal: signalName, choices, at } of this.signalChoices) {
      const signal = this.findSignal(rawId, signalName, at, 'VAL_');
      if (signal) signal.choices = choices;
    }

    for (const { rawId, signal: signalName, type, at } of this.valueTypes) {
      const signal = this.findSignal(rawId, signalName, at, 'SIG_VALTYPE_');
      if (!signal) continue;
      if (type === 1 || type === 2) {
        const bits = type === 1 ? 32 : 64;
        if (signal.length !== bits) {
          this.tolerate(
            'float-length',
            at,
            `signal ${signalName} is declared ${type === 1 ? 'float32' : 'float64'} but is ${signal.length} bits long; read as an integer`,
          );
          continue;
        }
        signal.valueType = type === 1 ? 'float32' : 'float64';
      } else if (type !== 0) {
        this.tolerate('value-type', at, `SIG_VALTYPE_ ${type} for signal ${signalName} is not 0, 1 or 2; read as an integer`);
      }
    }

    for (const { rawId, nodes: senders, at } of this.transmitters) {
      const message = this.messagesByRawId.get(rawId);
      if (!message) {
        this.notice('unknown-message-BO_TX_BU_', at, `BO_TX_BU_ refers to message ID ${rawId}, which is not defined; ignored`);
        continue;
      }
      for (const sender of senders) if (!message.senders.includes(sender)) message.senders.push(sender);
    }

    this.resolveMultiplexing();
    this.resolveMessageAttributes();

    for (const message of this.db.messages) {
      if (message.name === 'VECTOR__INDEPENDENT_SIG_MSG') continue; // holds unused signals, never sent
      const problems = layoutProblems(message);
      if (problems.length > 0) {
        this.warn({ line: message.line, column: 1 }, `message ${message.name}: ${problems.join('; ')}; its frames will be rejected as decode errors`);
      }
    }
  }

  private resolveMultiplexing(): void {
    const explicit = new Map<SignalDef, { mux: string; ranges: [number, number][] }[]>();
    for (const entry of this.muxValues) {
      const signal = this.findSignal(entry.rawId, entry.signal, entry.at, 'SG_MUL_VAL_');
      if (!signal) continue;
      const message = this.messagesByRawId.get(entry.rawId)!;
      if (!message.signals.some((s) => s.name === entry.mux)) {
        this.notice('unknown-mux-SG_MUL_VAL_', entry.at, `SG_MUL_VAL_ names multiplexer ${entry.mux}, which message ${message.name} does not have; ignored`);
        continue;
      }
      const list = explicit.get(signal) ?? [];
      list.push({ mux: entry.mux, ranges: entry.ranges });
      explicit.set(signal, list);
    }
    for (const message of this.db.messages) {
      const plainMux = message.signals.find((s) => this.muxIndicators.get(s) === 'M');
      for (const signal of message.signals) {
        const indicator = this.muxIndicators.get(signal);
        if (!indicator || indicator === 'M') continue;
        const entries = explicit.get(signal);
        if (entries && entries.length > 0) {
          signal.multiplexerSignal = entries[0]!.mux;
          const ids: number[] = [];
          for (const entry of entries) {
            if (entry.mux !== signal.multiplexerSignal) continue;
            for (const [low, high] of entry.ranges) for (let v = low; v <= high; v++) ids.push(v);
          }
          signal.multiplexerIds = [...new Set(ids)];
        } else {
          const muxId = Number(indicator.slice(1, indicator.endsWith('M') ? -1 : undefined));
          const parent = plainMux && plainMux !== signal ? plainMux : undefined;
          if (!parent) {
            this.tolerate(
              'mux-without-multiplexer',
              { line: signal.line, column: 1 },
              `signal ${signal.name} of message ${message.name} is multiplexed (${indicator}) but the message has no multiplexer signal M; read as always present`,
            );
            continue;
          }
          signal.multiplexerSignal = parent.name;
          signal.multiplexerIds = [muxId];
        }
      }
    }
  }

  private attributeOf(owner: Record<string, AttributeValue>, name: string): AttributeValue | undefined {
    if (name in owner) return owner[name];
    const def = this.db.attributeDefinitions.get(name);
    if (def?.defaultValue === undefined) return undefined;
    return def.valueType === 'ENUM' && typeof def.defaultValue === 'number' ? (def.enumValues?.[def.defaultValue] ?? def.defaultValue) : def.defaultValue;
  }

  private resolveMessageAttributes(): void {
    for (const message of this.db.messages) {
      const cycle = this.attributeOf(message.attributes, 'GenMsgCycleTime');
      if (typeof cycle === 'number' && cycle > 0) message.cycleTime = cycle;
      const format = this.attributeOf(message.attributes, 'VFrameFormat');
      if (typeof format === 'string') {
        if (format.endsWith('_FD')) message.fd = true;
        if (format === 'J1939PG') message.j1939 = true;
      }
      for (const signal of message.signals) {
        const start = this.attributeOf(signal.attributes, 'GenSigStartValue');
        if (typeof start === 'number' && Number.isFinite(start)) signal.startValue = start;
      }
    }
  }
}
