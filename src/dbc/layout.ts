/**
 * Where a signal's bits sit in the payload, and which signals are present together (the multiplexing tree).
 * Shared by the parser (for overlap warnings) and the codec (to generate decoders and encoders).
 */
import type { MessageDef, SignalDef } from './model.js';

/** A run of a signal's bits inside one payload byte. */
export interface BytePart {
  /** Payload byte index. */
  byte: number;
  /** Lowest bit of the run inside the byte (0 = least significant). */
  shift: number;
  /** Number of bits in the run. */
  count: number;
  /** Position of the run's lowest bit inside the signal's raw value (0 = least significant). */
  position: number;
}

/**
 * The bytes a signal occupies, least significant run first.
 * Intel: bit k of the value is payload bit startBit + k (bit i = byte i>>3, bit i&7).
 * Motorola: startBit names the MSB in the DBC's sawtooth numbering; following bits run toward bit 0 of the byte and
 * continue at bit 7 of the next byte.
 */
export function signalBytes(signal: Pick<SignalDef, 'startBit' | 'length' | 'byteOrder'>): BytePart[] {
  const parts: BytePart[] = [];
  const { startBit, length } = signal;
  if (signal.byteOrder === 'little_endian') {
    let k = 0;
    while (k < length) {
      const bit = startBit + k;
      const byte = bit >> 3;
      const shift = bit & 7;
      const count = Math.min(8 - shift, length - k);
      parts.push({ byte, shift, count, position: k });
      k += count;
    }
  } else {
    // Network order: bit n = byte n>>3, bit 7-(n&7); the MSB is at network bit `first`.
    const first = (startBit & ~7) + (7 - (startBit & 7));
    let j = 0;
    while (j < length) {
      const n = first + j;
      const byte = n >> 3;
      const msbInByte = 7 - (n & 7);
      const count = Math.min(msbInByte + 1, length - j);
      const shift = msbInByte - count + 1;
      // bits j .. j+count-1 from the MSB are value bits length-1-j down to length-j-count
      parts.push({ byte, shift, count, position: length - j - count });
      j += count;
    }
    parts.reverse();
  }
  return parts;
}

/** Highest payload byte a signal touches, plus one. */
export function signalEndByte(signal: Pick<SignalDef, 'startBit' | 'length' | 'byteOrder'>): number {
  let end = 0;
  for (const part of signalBytes(signal)) end = Math.max(end, part.byte + 1);
  return end;
}

const MAX_LAYOUT_NODES = 65536;

/** Position of a signal's first bit in network order for Motorola, its start bit for Intel. */
function payloadOrder(signal: SignalDef): number {
  return signal.byteOrder === 'big_endian' ? (signal.startBit & ~7) + (7 - (signal.startBit & 7)) : signal.startBit;
}

/** One level of the multiplexing tree: the signals decoded together, and the multiplexers that pick sub-levels. */
export interface LayoutNode {
  signals: SignalDef[];
  multiplexers: MultiplexerBranches[];
}

export interface MultiplexerBranches {
  signal: SignalDef;
  /** Multiplexer value -> the level present for it. */
  branches: Map<number, LayoutNode>;
}

/**
 * Builds the multiplexing tree as a reference decoder does: a multiplexer's valid values are those its child signals
 * name, plus the values its value table labels (a labelled value with no children is still valid).
 */
export function layoutTree(message: MessageDef): LayoutNode {
  const children = new Map<string | undefined, SignalDef[]>();
  const idSets = new Map<SignalDef, Set<number>>();
  for (const signal of message.signals) {
    idSets.set(signal, new Set(signal.multiplexerIds ?? []));
    const list = children.get(signal.multiplexerSignal);
    if (list) list.push(signal);
    else children.set(signal.multiplexerSignal, [signal]);
  }
  // A hostile or broken file can make multiplexers refer to themselves or nest without end: a multiplexer is expanded
  // at most once on any path, and the whole tree is capped.
  let budget = MAX_LAYOUT_NODES;
  const path = new Set<string>();
  const build = (parent: string | undefined, muxId: number | undefined, depth: number): LayoutNode => {
    const node: LayoutNode = { signals: [], multiplexers: [] };
    budget--;
    for (const signal of children.get(parent) ?? []) {
      if (muxId !== undefined && !idSets.get(signal)!.has(muxId)) continue;
      node.signals.push(signal);
      if (!signal.isMultiplexer || depth > 16 || path.has(signal.name) || budget <= 0) continue;
      const ids = new Set<number>();
      for (const child of children.get(signal.name) ?? []) for (const id of child.multiplexerIds ?? []) ids.add(id);
      if (signal.choices) for (const id of signal.choices.keys()) ids.add(id);
      if (ids.size === 0) continue;
      const branches = new Map<number, LayoutNode>();
      path.add(signal.name);
      for (const id of [...ids].sort((a, b) => a - b)) branches.set(id, build(signal.name, id, depth + 1));
      path.delete(signal.name);
      node.multiplexers.push({ signal, branches });
    }
    // Multiplexers are checked in payload order (the reference sorts by start bit), so the same invalid frame
    // reports the same multiplexer.
    node.multiplexers.sort((a, b) => payloadOrder(a.signal) - payloadOrder(b.signal));
    return node;
  };
  return build(undefined, undefined, 0);
}

/** Pairs of signals decoded together whose bits overlap, and signals that run past the payload. */
export function layoutProblems(message: MessageDef, tree = layoutTree(message)): string[] {
  const problems = new Set<string>();
  const visit = (node: LayoutNode): void => {
    const owner = new Map<number, SignalDef>();
    for (const signal of node.signals) {
      for (const part of signalBytes(signal)) {
        if (part.byte >= message.length) {
          problems.add(`signal ${signal.name} extends beyond the ${message.length}-byte payload`);
        }
        for (let b = 0; b < part.count; b++) {
          const bit = part.byte * 8 + part.shift + b;
          const other = owner.get(bit);
          if (other && other !== signal) {
            problems.add(`signals ${other.name} and ${signal.name} overlap`);
          } else owner.set(bit, signal);
        }
      }
    }
    for (const mux of node.multiplexers) for (const branch of mux.branches.values()) visit(branch);
  };
  visit(tree);
  return [...problems];
}

/** True when the level's signals can be unpacked: no overlaps, all inside the payload. */
export function nodeIsUnpackable(node: LayoutNode, length: number): boolean {
  const used = new Set<number>();
  for (const signal of node.signals) {
    for (const part of signalBytes(signal)) {
      if (part.byte >= length) return false;
      for (let b = 0; b < part.count; b++) {
        const bit = part.byte * 8 + part.shift + b;
        if (used.has(bit)) return false;
        used.add(bit);
      }
    }
  }
  return true;
}
