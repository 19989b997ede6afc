/**
 * Compiled message codecs. Each message's decoder is generated once as specialised JavaScript (one expression per
 * signal, bit positions and scaling folded into constants, a `switch` per multiplexer), so the per-frame work is a
 * handful of integer operations with no interpretation of the DBC.
 *
 * Semantics follow the reference decoder whose golden vectors the tests use: scaling is exactly `raw * factor + offset`
 * in double precision, integers beyond 2^53 are exact BigInts, only the active multiplexer branch is returned, and a
 * multiplexer value the DBC does not define makes the whole frame a decode error.
 */
import { endianness } from 'node:os';
import { layoutTree, nodeIsUnpackable, signalBytes, type BytePart, type LayoutNode } from './layout.js';
import type { Database, MessageDef, SignalDef, SignalValue } from './model.js';

export class DecodeError extends Error {
  constructor(
    readonly messageName: string,
    detail: string,
  ) {
    super(`${messageName}: ${detail}`);
    this.name = 'DecodeError';
  }
}

export class EncodeError extends Error {
  constructor(
    readonly messageName: string,
    detail: string,
  ) {
    super(`${messageName}: ${detail}`);
    this.name = 'EncodeError';
  }
}

/** Negative results of `decodeInto`. */
export const DECODE_TOO_SHORT = -1;
export const DECODE_BAD_MULTIPLEXER = -2;
export const DECODE_UNPACKABLE = -3;

export interface DecodeOptions {
  /** Replace values that have a value-table label by the label. */
  choices?: boolean;
  /** Apply factor and offset (default). `false` returns raw integers. */
  scaling?: boolean;
}

export interface EncodeOptions {
  /** Values are physical (default); `false` means they are raw integers. */
  scaling?: boolean;
}

export interface CompileOptions {
  /** Match extended frames by J1939 PGN (priority, source address and PDU1 destination ignored). */
  j1939?: boolean;
}

type Mode = 'scaled' | 'raw' | 'choices' | 'buffer';
type GeneratedDecoder = (d: Uint8Array, out?: Float64Array) => Record<string, SignalValue> | number;

const TWO_32 = 4294967296;

/** State shared with generated code: scratch views for float reinterpretation and the last multiplexer failure. */
interface DecoderEnv {
  U32: Uint32Array;
  F32: Float32Array;
  F64: Float64Array;
  C: (Map<number, string> | undefined)[];
  W: typeof wideValue;
  S: typeof scaleExact;
  fail: { mux: string; value: number };
}

const scratch = new ArrayBuffer(8);
const U32 = new Uint32Array(scratch);
const F32 = new Float32Array(scratch);
const F64 = new Float64Array(scratch);
const LITTLE_ENDIAN_HOST = endianness() === 'LE';
const LO_WORD = LITTLE_ENDIAN_HOST ? 0 : 1;
const HI_WORD = LITTLE_ENDIAN_HOST ? 1 : 0;

/** A raw value of more than 53 bits from its two 32-bit halves: a number when exact, otherwise a BigInt. */
function wideValue(hi: number, lo: number, length: number, signed: boolean): number | bigint {
  if (signed && hi >= 2 ** (length - 33)) hi -= 2 ** (length - 32);
  if (hi >= -2097152 && hi < 2097152) {
    const value = hi * TWO_32 + lo;
    if (Number.isSafeInteger(value)) return value;
  }
  return (BigInt(hi) << 32n) + BigInt(lo);
}

/**
 * `raw * factor + offset` where the inputs may leave the exact double range: integer scaling stays exact (BigInt beyond
 * 2^53), fractional scaling is done in double precision as the reference does.
 */
function scaleExact(raw: number | bigint, factor: number, offset: number, integerScaling: boolean): number | bigint {
  if (integerScaling) {
    if (factor === 1 && offset === 0) return raw;
    const exact = BigInt(raw) * BigInt(factor) + BigInt(offset);
    return exact >= -9007199254740991n && exact <= 9007199254740991n ? Number(exact) : exact;
  }
  return Number(raw) * factor + offset;
}

function literal(x: number): string {
  if (Object.is(x, -0)) return '(-0)';
  const text = String(x);
  return x < 0 ? `(${text})` : text;
}

function mask(count: number): number {
  return 2 ** count - 1;
}

/** OR-combines byte runs whose result fits in 32 bits (positions relative to `base`). */
function intGroup(parts: BytePart[], base: number): string {
  if (parts.length === 0) return '0';
  let reaches32 = false;
  const terms = parts.map((p) => {
    let term = `d[${p.byte}]`;
    if (p.shift) term = `(${term} >> ${p.shift})`;
    if (p.shift + p.count < 8) term = `(${term} & ${mask(p.count)})`;
    const position = p.position - base;
    if (position) term = `(${term} << ${position})`;
    if (position + p.count === 32) reaches32 = true;
    return term;
  });
  const expr = terms.join(' | ');
  return reaches32 ? `((${expr}) >>> 0)` : terms.length > 1 ? `(${expr})` : expr;
}

/** Splits byte runs at value bit 32, so each half can be combined with 32-bit integer operations. */
function splitAt32(parts: BytePart[]): { low: BytePart[]; high: BytePart[] } {
  const low: BytePart[] = [];
  const high: BytePart[] = [];
  for (const p of parts) {
    if (p.position + p.count <= 32) low.push(p);
    else if (p.position >= 32) high.push(p);
    else {
      const lowCount = 32 - p.position;
      low.push({ byte: p.byte, shift: p.shift, count: lowCount, position: p.position });
      high.push({ byte: p.byte, shift: p.shift + lowCount, count: p.count - lowCount, position: 32 });
    }
  }
  return { low, high };
}

interface SignalCode {
  /** Statements that compute the raw value into `r<i>`. */
  raw: string;
  /** The raw variable. */
  rawVar: string;
  /** Expression for the physical value. */
  scaled: string;
  /** The raw value may be a BigInt. */
  wide: boolean;
  /** The physical value may be a BigInt (a wide raw, or integer scaling that leaves the exact double range). */
  exact: boolean;
}

function signalCode(signal: SignalDef, index: number): SignalCode {
  const parts = signalBytes(signal);
  const L = signal.length;
  const v = `r${index}`;
  let raw: string;
  let wide = false;
  if (signal.valueType === 'float32') {
    raw = `U32[0] = ${intGroup(parts, 0)}; const ${v} = F32[0];`;
  } else if (signal.valueType === 'float64') {
    const { low, high } = splitAt32(parts);
    raw = `U32[${LO_WORD}] = ${intGroup(low, 0)}; U32[${HI_WORD}] = ${intGroup(high, 32)}; const ${v} = F64[0];`;
  } else if (L <= 32) {
    let expr = intGroup(parts, 0);
    if (signal.signed) expr = L === 32 ? `(${expr} | 0)` : `((${expr} << ${32 - L}) >> ${32 - L})`;
    raw = `const ${v} = ${expr};`;
  } else {
    const { low, high } = splitAt32(parts);
    const lo = intGroup(low, 0);
    const hi = intGroup(high, 32);
    // `lo` is already unsigned: intGroup adds `>>> 0` when a run reaches bit 31.
    if (L <= 53) {
      raw = `let ${v} = ${hi} * ${TWO_32} + ${lo};`;
      if (signal.signed) raw += ` if (${v} >= ${2 ** (L - 1)}) ${v} -= ${2 ** L};`;
    } else {
      wide = true;
      raw = `const ${v} = W(${hi}, ${lo}, ${L}, ${signal.signed});`;
    }
  }
  const { factor, offset, integerScaling } = signal;
  let scaled: string;
  if (signal.valueType !== 'integer') {
    scaled = factor === 1 && offset === 0 ? v : `${v} * ${literal(factor)} + ${literal(offset)}`;
  } else if (factor === 1 && offset === 0) {
    scaled = integerScaling || !wide ? v : `S(${v}, 1, 0, false)`;
  } else if (wide || (integerScaling && (L + Math.log2(Math.abs(factor) + 1) + 1 > 53 || Math.abs(offset) > 2 ** 52))) {
    scaled = `S(${v}, ${literal(factor)}, ${literal(offset)}, ${integerScaling})`;
  } else {
    scaled = `${v} * ${literal(factor)} + ${literal(offset)}`;
  }
  return { raw, rawVar: v, scaled, wide, exact: wide || scaled.startsWith('S(') };
}

/** Groups multiplexer values whose branches hold the same signals, so each distinct branch is generated once. */
function groupBranches(branches: Map<number, LayoutNode>): { ids: number[]; node: LayoutNode }[] {
  const groups = new Map<string, { ids: number[]; node: LayoutNode }>();
  for (const [id, node] of branches) {
    const key = JSON.stringify(describeNode(node));
    const group = groups.get(key);
    if (group) group.ids.push(id);
    else groups.set(key, { ids: [id], node });
  }
  return [...groups.values()];
}

function describeNode(node: LayoutNode): unknown {
  return [node.signals.map((s) => s.name), node.multiplexers.map((m) => [m.signal.name, [...m.branches].map(([id, n]) => [id, describeNode(n)])])];
}

export class MessageCodec {
  /** Signal index within `message.signals` -> database-wide slot. */
  readonly slots: Int32Array;
  readonly tree: LayoutNode;
  private readonly decoders: Partial<Record<Mode, GeneratedDecoder>> = {};
  private readonly env: DecoderEnv;
  private readonly signalIndex = new Map<SignalDef, number>();
  private reverseChoices: Map<SignalDef, Map<string, number>> | undefined;
  /** Zero-allocation decode into `out[slot]`; returns signals written or a negative DECODE_* code. */
  readonly decodeInto: (data: Uint8Array, out: Float64Array) => number;

  constructor(
    readonly message: MessageDef,
    firstSlot: number,
  ) {
    this.slots = new Int32Array(message.signals.length);
    message.signals.forEach((signal, i) => {
      this.slots[i] = firstSlot + i;
      this.signalIndex.set(signal, i);
    });
    this.tree = layoutTree(message);
    this.env = {
      U32,
      F32,
      F64,
      C: message.signals.map((s) => s.choices),
      W: wideValue,
      S: scaleExact,
      fail: { mux: '', value: 0 },
    };
    const buffer = this.decoder('buffer');
    this.decodeInto = buffer as (data: Uint8Array, out: Float64Array) => number;
  }

  /** Slot of a signal in the database-wide buffer, or -1. */
  slot(signalName: string): number {
    const i = this.message.signals.findIndex((s) => s.name === signalName);
    return i < 0 ? -1 : this.slots[i]!;
  }

  decode(data: Uint8Array, options: DecodeOptions = {}): Record<string, SignalValue> {
    const mode: Mode = options.scaling === false ? 'raw' : options.choices ? 'choices' : 'scaled';
    const result = this.decoder(mode)(data);
    if (typeof result === 'number') throw this.decodeError(result, data);
    return result;
  }

  /** Explains a negative `decodeInto` result. */
  decodeError(code: number, data: Uint8Array): DecodeError {
    switch (code) {
      case DECODE_TOO_SHORT:
        return new DecodeError(this.message.name, `${data.length} bytes of data, the message needs ${this.message.length}`);
      case DECODE_BAD_MULTIPLEXER: {
        const { mux, value } = this.env.fail;
        return new DecodeError(this.message.name, `expected multiplexer id ${this.validIds(mux)}, but got ${value}`);
      }
      default:
        return new DecodeError(this.message.name, 'unpacking failed: signals overlap or extend beyond the message');
    }
  }

  private validIds(muxName: string): string {
    const find = (node: LayoutNode): number[] | undefined => {
      for (const m of node.multiplexers) {
        if (m.signal.name === muxName) return [...m.branches.keys()];
        for (const branch of m.branches.values()) {
          const ids = find(branch);
          if (ids) return ids;
        }
      }
      return undefined;
    };
    const ids = (find(this.tree) ?? []).sort((a, b) => a - b).map(String);
    return ids.length > 1 ? `${ids.slice(0, -1).join(', ')} or ${ids[ids.length - 1]}` : (ids[0] ?? '(none)');
  }

  private decoder(mode: Mode): GeneratedDecoder {
    let fn = this.decoders[mode];
    if (!fn) {
      const body = this.generate(mode);
      // The body is generated here from parsed DBC numbers, with names only inside JSON.stringify'd literals.
      // eslint-disable-next-line @typescript-eslint/no-implied-eval
      const factory = new Function('env', `const {U32, F32, F64, C, W, S, fail} = env;\n${body}`) as (env: DecoderEnv) => GeneratedDecoder;
      fn = factory(this.env);
      this.decoders[mode] = fn;
    }
    return fn;
  }

  /** Source of the decoder for one output mode (exposed for inspection and tests). */
  generate(mode: Mode): string {
    const { message } = this;
    const lines: string[] = [];
    const flat = this.tree.multiplexers.length === 0;
    lines.push(`return function decode_${message.name.replace(/\W/g, '_')}(d, out) {`);
    lines.push(`if (d.length < ${message.length}) return ${DECODE_TOO_SHORT};`);
    if (mode === 'buffer') lines.push('let n = 0;');
    if (flat && mode !== 'buffer') {
      // One object literal: the common case, and the fastest shape for the engine.
      if (!nodeIsUnpackable(this.tree, message.length)) return `${lines.join('\n')}\nreturn ${DECODE_UNPACKABLE};\n};`;
      const entries: string[] = [];
      for (const signal of this.tree.signals) {
        const i = this.signalIndex.get(signal)!;
        const code = signalCode(signal, i);
        lines.push(code.raw);
        // A computed key defines an own property even for the name `__proto__` (a literal key would set the prototype).
        const key = signal.name === '__proto__' ? '["__proto__"]' : JSON.stringify(signal.name);
        entries.push(`${key}: ${this.valueExpr(signal, i, code, mode)}`);
      }
      lines.push(`return {${entries.join(', ')}};`, '};');
      return lines.join('\n');
    }
    if (mode !== 'buffer') lines.push('const o = {};');
    this.generateNode(this.tree, mode, lines);
    lines.push(mode === 'buffer' ? 'return n;' : 'return o;', '};');
    return lines.join('\n');
  }

  private valueExpr(signal: SignalDef, i: number, code: SignalCode, mode: Mode): string {
    if (mode === 'raw') return code.rawVar;
    if (mode === 'choices' && signal.choices && signal.choices.size > 0 && !code.wide) {
      return `(C[${i}].get(${code.rawVar}) ?? (${code.scaled}))`;
    }
    return code.scaled;
  }

  private generateNode(node: LayoutNode, mode: Mode, lines: string[]): void {
    if (!nodeIsUnpackable(node, this.message.length)) {
      lines.push(`return ${DECODE_UNPACKABLE};`);
      return;
    }
    const scaledVar = new Map<SignalDef, string>();
    for (const signal of node.signals) {
      const i = this.signalIndex.get(signal)!;
      const code = signalCode(signal, i);
      lines.push(code.raw);
      if (mode === 'buffer') {
        const value = code.exact ? `Number(${code.scaled})` : code.scaled;
        lines.push(`out[${this.slots[i]}] = ${value};`);
      } else {
        const value = this.valueExpr(signal, i, code, mode);
        lines.push(
          signal.name === '__proto__'
            ? `Object.defineProperty(o, "__proto__", {value: ${value}, enumerable: true, writable: true, configurable: true});`
            : `o[${JSON.stringify(signal.name)}] = ${value};`,
        );
      }
      if (signal.isMultiplexer) {
        lines.push(`const m${i} = Math.trunc(Number(${code.scaled}));`);
        scaledVar.set(signal, `m${i}`);
      }
    }
    if (mode === 'buffer') lines.push(`n += ${node.signals.length};`);
    for (const mux of node.multiplexers) {
      const muxVar = scaledVar.get(mux.signal)!;
      lines.push(`switch (${muxVar}) {`);
      for (const { ids, node: branch } of groupBranches(mux.branches)) {
        lines.push(`${ids.map((id) => `case ${literal(id)}:`).join(' ')} {`);
        this.generateNode(branch, mode, lines);
        lines.push('break; }');
      }
      lines.push(`default: fail.mux = ${JSON.stringify(mux.signal.name)}; fail.value = ${muxVar}; return ${DECODE_BAD_MULTIPLEXER};`, '}');
    }
  }

  // ---- encoding (not on the hot path: interpreted) ----

  encode(values: Record<string, SignalValue>, options: EncodeOptions = {}): Uint8Array {
    const out = new Uint8Array(this.message.length);
    this.encodeInto(values, out, options);
    return out;
  }

  /** Writes the message's signals into `out` (at least the message length); bits of absent branches are left as is. */
  encodeInto(values: Record<string, SignalValue>, out: Uint8Array, options: EncodeOptions = {}): void {
    if (out.length < this.message.length) {
      throw new EncodeError(this.message.name, `output buffer of ${out.length} bytes, the message needs ${this.message.length}`);
    }
    this.encodeNode(this.tree, values, out, options.scaling !== false, 0);
  }

  private encodeNode(node: LayoutNode, values: Record<string, SignalValue>, out: Uint8Array, scaling: boolean, depth: number): void {
    const muxValues = new Map<SignalDef, number>();
    for (const signal of node.signals) {
      // Own properties only: a signal named `toString` must not pick up Object.prototype's.
      const value = Object.hasOwn(values, signal.name) ? values[signal.name] : undefined;
      const raw = value === undefined ? this.checkRange(signal, signal.startValue ?? 0) : this.toRaw(signal, value, scaling);
      this.insert(signal, raw, out);
      if (signal.isMultiplexer) {
        const scaled = scaleExact(raw, signal.factor, signal.offset, signal.integerScaling);
        muxValues.set(signal, Math.trunc(Number(scaled)));
      }
    }
    for (const mux of node.multiplexers) {
      const muxValue = muxValues.get(mux.signal)!;
      const branch = mux.branches.get(muxValue);
      if (!branch) {
        throw new EncodeError(this.message.name, `multiplexer ${mux.signal.name} = ${muxValue} selects no branch; expected ${this.validIds(mux.signal.name)}`);
      }
      if (depth < 16) this.encodeNode(branch, values, out, scaling, depth + 1);
    }
  }

  private toRaw(signal: SignalDef, value: SignalValue, scaling: boolean): number | bigint {
    const name = this.message.name;
    if (typeof value === 'string') {
      this.reverseChoices ??= new Map();
      let reverse = this.reverseChoices.get(signal);
      if (!reverse) {
        reverse = new Map();
        for (const [raw, label] of signal.choices ?? []) if (!reverse.has(label)) reverse.set(label, raw);
        this.reverseChoices.set(signal, reverse);
      }
      const raw = reverse.get(value);
      if (raw === undefined) throw new EncodeError(name, `signal ${signal.name} has no value labelled '${value}'`);
      return this.checkRange(signal, raw);
    }
    if (scaling && signal.factor === 0) {
      throw new EncodeError(name, `signal ${signal.name} has a factor of 0; its physical value cannot be encoded`);
    }
    if (signal.valueType !== 'integer') {
      const physical = Number(value);
      return scaling && !(signal.factor === 1 && signal.offset === 0) ? (physical - signal.offset) / signal.factor : physical;
    }
    let raw: number | bigint;
    if (typeof value === 'bigint') {
      if (!scaling || (signal.factor === 1 && signal.offset === 0)) raw = value;
      else if (signal.integerScaling && signal.factor !== 0) raw = (value - BigInt(signal.offset)) / BigInt(signal.factor);
      else raw = Math.round((Number(value) - signal.offset) / signal.factor);
    } else {
      if (!Number.isFinite(value)) throw new EncodeError(name, `signal ${signal.name}: ${value} is not a finite number`);
      if (!scaling) {
        if (!Number.isInteger(value)) throw new EncodeError(name, `signal ${signal.name}: raw value ${value} is not an integer`);
        raw = value;
      } else if (signal.factor === 1 && signal.offset === 0) {
        raw = Number.isInteger(value) ? value : Math.round(value);
      } else {
        raw = Math.round((value - signal.offset) / signal.factor);
      }
    }
    return this.checkRange(signal, raw);
  }

  private checkRange(signal: SignalDef, raw: number | bigint): number | bigint {
    if (signal.valueType !== 'integer') return raw;
    if (typeof raw === 'number' && !Number.isInteger(raw)) {
      throw new EncodeError(this.message.name, `signal ${signal.name}: raw value ${raw} is not an integer`);
    }
    const L = BigInt(signal.length);
    const min = signal.signed ? -(1n << (L - 1n)) : 0n;
    const max = signal.signed ? (1n << (L - 1n)) - 1n : (1n << L) - 1n;
    const big = BigInt(raw);
    if (big < min || big > max) {
      throw new EncodeError(
        this.message.name,
        `signal ${signal.name}: raw value ${big} is outside ${min}..${max} (${signal.length} bits, ${signal.signed ? 'signed' : 'unsigned'})`,
      );
    }
    return raw;
  }

  private insert(signal: SignalDef, raw: number | bigint, out: Uint8Array): void {
    let bits: bigint;
    if (signal.valueType === 'float32') {
      F32[0] = Number(raw);
      bits = BigInt(U32[0]!);
    } else if (signal.valueType === 'float64') {
      F64[0] = Number(raw);
      bits = (BigInt(U32[HI_WORD]!) << 32n) | BigInt(U32[LO_WORD]!);
    } else {
      bits = BigInt.asUintN(signal.length, BigInt(raw));
    }
    for (const part of signalBytes(signal)) {
      const m = (1 << part.count) - 1;
      const chunk = Number((bits >> BigInt(part.position)) & BigInt(m));
      out[part.byte] = (out[part.byte]! & ~(m << part.shift)) | (chunk << part.shift);
    }
  }
}

/** J1939 parameter group number of a 29-bit identifier: priority and source address dropped, and for PDU1 formats
 * (PF < 240) the destination address too. */
export function pgnOfFrameId(id: number): number {
  const pgn = (id >>> 8) & 0x3ffff;
  return ((pgn >>> 8) & 0xff) < 240 ? pgn & 0x3ff00 : pgn;
}

export class CompiledDatabase {
  readonly messages: MessageCodec[] = [];
  readonly slotCount: number;
  /** Slot -> `Message.Signal`. */
  readonly slotNames: string[] = [];
  private readonly standard = new Array<MessageCodec | undefined>(2048).fill(undefined);
  private readonly extended = new Map<number, MessageCodec>();
  private readonly byPgn = new Map<number, MessageCodec>();
  private readonly names = new Map<string, MessageCodec>();
  /** Whether 29-bit frames are matched by parameter group (CompileOptions.j1939). */
  readonly j1939: boolean;

  constructor(
    readonly db: Database,
    options: CompileOptions = {},
  ) {
    this.j1939 = options.j1939 ?? false;
    let slot = 0;
    for (const message of db.messages) {
      const codec = new MessageCodec(message, slot);
      slot += message.signals.length;
      for (const signal of message.signals) this.slotNames.push(`${message.name}.${signal.name}`);
      this.messages.push(codec);
      this.names.set(message.name, codec);
      if (message.name === 'VECTOR__INDEPENDENT_SIG_MSG') continue; // a container for unused signals, never on a bus
      if (message.extended) {
        this.extended.set(message.id, codec);
        const pgn = pgnOfFrameId(message.id);
        if (!this.byPgn.has(pgn)) this.byPgn.set(pgn, codec);
      } else this.standard[message.id] = codec;
    }
    this.slotCount = slot;
  }

  find(id: number, extended: boolean): MessageCodec | undefined {
    if (!extended) return this.standard[id];
    const exact = this.extended.get(id);
    if (exact !== undefined || !this.j1939) return exact;
    return this.byPgn.get(pgnOfFrameId(id));
  }

  /**
   * The convenient path: a frame's signals by name, or undefined when no message of the database describes the frame.
   * Throws DecodeError for a frame of a known message that cannot be decoded.
   */
  decode(
    frame: { id: number; extended: boolean; data: Uint8Array },
    options?: DecodeOptions,
  ): { message: MessageDef; signals: Record<string, SignalValue> } | undefined {
    const codec = this.find(frame.id, frame.extended);
    return codec && { message: codec.message, signals: codec.decode(frame.data, options) };
  }

  byName(name: string): MessageCodec | undefined {
    return this.names.get(name);
  }

  /** Slot of `Message.Signal` (or of a bare signal name, first match), or -1. */
  slotOf(name: string): number {
    const exact = this.slotNames.indexOf(name);
    if (exact >= 0) return exact;
    return this.slotNames.findIndex((n) => n.endsWith(`.${name}`));
  }
}

export function compileDatabase(db: Database, options: CompileOptions = {}): CompiledDatabase {
  return new CompiledDatabase(db, options);
}
