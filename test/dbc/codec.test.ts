/**
 * Compiled codec on hand-written DBC snippets with hand-computed values, plus ~1000 random signal layouts checked
 * against a bit-by-bit reference implementation written here (no shared data needed).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compileDatabase,
  DECODE_BAD_MULTIPLEXER,
  DECODE_TOO_SHORT,
  DECODE_UNPACKABLE,
  DecodeError,
  EncodeError,
  parseDbc,
  pgnOfFrameId,
  type CompiledDatabase,
  type MessageCodec,
  type SignalValue,
} from '../../src/dbc/index.js';
import { seededRandom, type SeededRandom } from '../support/random.js';

// ---------------------------------------------------------------------------------------------------------------------
// helpers

const HEADER = 'VERSION ""\n\nNS_ :\n\nBS_:\n\nBU_: ECU\n\n';

function compile(body: string, j1939 = false): CompiledDatabase {
  const db = parseDbc(HEADER + body, { file: 'codec.dbc', strict: true });
  return compileDatabase(db, { j1939 });
}

function codecOf(db: CompiledDatabase, name: string): MessageCodec {
  const codec = db.byName(name);
  assert.ok(codec, `no message ${name}`);
  return codec;
}

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

function decodeError(fn: () => unknown, detail: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DecodeError, `expected DecodeError, got ${String(err)}`);
    assert.match(err.message, detail);
    return true;
  });
}

function encodeError(fn: () => unknown, detail: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof EncodeError, `expected EncodeError, got ${String(err)}`);
    assert.match(err.message, detail);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------------------------------
// reference implementation: one bit at a time, straight from the DBC definition

type Order = 'intel' | 'motorola';

/**
 * Payload bit (byte * 8 + bit, bit 0 = least significant) of each value bit, least significant value bit first.
 * Intel: value bit k is payload bit start + k. Motorola: start is the MSB; each following (less significant) bit is the
 * next lower bit of the same byte, and after bit 0 of a byte comes bit 7 of the next byte.
 */
function referenceBits(start: number, length: number, order: Order): number[] {
  const bits: number[] = [];
  if (order === 'intel') {
    for (let k = 0; k < length; k++) bits.push(start + k);
    return bits;
  }
  let position = start;
  for (let k = 0; k < length; k++) {
    bits.push(position);
    position = position % 8 === 0 ? position + 15 : position - 1;
  }
  return bits.reverse();
}

function referenceExtract(data: Uint8Array, bits: number[], signed: boolean): bigint {
  let value = 0n;
  bits.forEach((bit, k) => {
    if ((data[bit >> 3]! >> (bit & 7)) & 1) value |= 1n << BigInt(k);
  });
  return signed ? BigInt.asIntN(bits.length, value) : value;
}

function referenceInsert(data: Uint8Array, bits: number[], raw: bigint): void {
  const unsigned = BigInt.asUintN(bits.length, raw);
  bits.forEach((bit, k) => {
    const mask = 1 << (bit & 7);
    if ((unsigned >> BigInt(k)) & 1n) data[bit >> 3]! |= mask;
    else data[bit >> 3]! &= ~mask;
  });
}

/** Integers as the decoder returns them: a number while exact, a BigInt beyond 2^53. */
function exact(value: bigint): number | bigint {
  return value >= -9007199254740991n && value <= 9007199254740991n ? Number(value) : value;
}

function reinterpret(raw: bigint, length: 32 | 64): number {
  const view = new DataView(new ArrayBuffer(8));
  if (length === 32) {
    view.setUint32(0, Number(BigInt.asUintN(32, raw)));
    return view.getFloat32(0);
  }
  view.setBigUint64(0, BigInt.asUintN(64, raw));
  return view.getFloat64(0);
}

describe('reference implementation sanity', () => {
  it('Motorola bit order follows the sawtooth', () => {
    // start 20, 12 bits: byte 2 bits 4..0, then byte 3 bits 7..1 (MSB first; the list is LSB first)
    assert.deepEqual(referenceBits(20, 12, 'motorola'), [25, 26, 27, 28, 29, 30, 31, 16, 17, 18, 19, 20]);
    assert.deepEqual(referenceBits(7, 16, 'motorola').slice(-1), [7]);
    assert.equal(referenceExtract(bytes(0x12, 0x34), referenceBits(7, 16, 'motorola'), false), 0x1234n);
    assert.equal(referenceExtract(bytes(0x34, 0x12), referenceBits(0, 16, 'intel'), false), 0x1234n);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// hand-computed layouts

describe('Intel and Motorola signals crossing byte boundaries (hand-computed)', () => {
  const db = compile(`BO_ 256 Cross: 8 ECU
 SG_ Flag : 0|1@1+ (1,0) [0|1] "" ECU
 SG_ IntelA : 4|12@1+ (1,0) [0|4095] "" ECU
 SG_ MotoB : 20|12@0+ (1,0) [0|4095] "" ECU
 SG_ IntelS : 33|10@1- (1,0) [-512|511] "" ECU
 SG_ MotoS : 53|11@0- (1,0) [-1024|1023] "" ECU

BO_ 257 CrossScaled: 8 ECU
 SG_ IntelA : 4|12@1+ (0.5,-10) [0|0] "" ECU
 SG_ MotoB : 20|12@0+ (2,100) [0|0] "" ECU
`);
  // byte0 1010_0101  byte1 0x3C  byte2 010_11011  byte3 1110011_1  byte4 1000000_1  byte5 00111_110  byte6 10_111100  byte7 10001_011
  const data = bytes(0xa5, 0x3c, 0x5b, 0xe7, 0x81, 0x3e, 0xbc, 0x8b);

  it('decodes every signal', () => {
    assert.deepStrictEqual(codecOf(db, 'Cross').decode(data), {
      Flag: 1, // byte0 bit 0
      IntelA: 0x3ca, // byte0 bits 7..4 = 0xA, byte1 = 0x3C above them
      MotoB: 0xdf3, // byte2 bits 4..0 = 11011, then byte3 bits 7..1 = 1110011
      IntelS: -192, // byte4 bits 7..1 = 1000000, byte5 bits 2..0 = 110: 0b1101000000 = 832 - 1024
      MotoS: -111, // byte6 bits 5..0 = 111100, byte7 bits 7..3 = 10001: 0b11110010001 = 1937 - 2048
    });
  });

  it('scales raw * factor + offset', () => {
    assert.deepStrictEqual(codecOf(db, 'CrossScaled').decode(data), { IntelA: 475, MotoB: 7242 });
    assert.deepStrictEqual(codecOf(db, 'CrossScaled').decode(data, { scaling: false }), { IntelA: 970, MotoB: 3571 });
  });

  it('encodes back to the same bytes', () => {
    const cross = codecOf(db, 'Cross');
    // Into zeros: only the signals' bits are set (byte0 bits 3..1, byte2 bits 7..5, byte3 bit 0, ... stay 0).
    assert.deepStrictEqual(
      cross.encode({ Flag: 1, IntelA: 0x3ca, MotoB: 0xdf3, IntelS: -192, MotoS: -111 }),
      bytes(0xa1, 0x3c, 0x1b, 0xe6, 0x80, 0x06, 0x3c, 0x88),
    );
    // Bits no signal covers stay as the output buffer had them.
    const out = Uint8Array.from(data);
    cross.encodeInto({ Flag: 0, IntelA: 0, MotoB: 0, IntelS: 0, MotoS: 0 }, out);
    assert.deepStrictEqual(out, bytes(0x04, 0x00, 0x40, 0x01, 0x01, 0x38, 0x80, 0x03));
  });
});

describe('random layouts against the bit-by-bit reference', () => {
  const SEED = 0x5eed1234;
  interface Case {
    name: string;
    start: number;
    length: number;
    order: Order;
    signed: boolean;
    kind: 'integer' | 'float32' | 'float64';
    factor: number;
    offset: number;
    /** Written as integers: exact (BigInt) arithmetic expected. */
    integerScaling: boolean;
    bytes: number;
    bits: number[];
  }
  const random = seededRandom(SEED);
  const cases: Case[] = [];
  for (let i = 0; i < 1000; i++) {
    const messageBytes = random.next() < 0.2 ? 64 : 8;
    const length = random.next() < 0.15 ? random.pick([1, 31, 32, 33, 52, 53, 54, 63, 64]) : random.int(1, 64);
    const order: Order = random.next() < 0.5 ? 'intel' : 'motorola';
    let start: number;
    let bits: number[];
    for (;;) {
      start = order === 'intel' ? random.int(0, messageBytes * 8 - length) : random.int(0, messageBytes * 8 - 1);
      bits = referenceBits(start, length, order);
      if (bits.every((b) => b < messageBytes * 8)) break;
    }
    const kind = (length === 32 || length === 64) && random.next() < 0.3 ? (length === 32 ? 'float32' : 'float64') : 'integer';
    const scaling = random.int(0, 2);
    let factor = 1;
    let offset = 0;
    let integerScaling = true;
    if (scaling === 1) {
      factor = random.pick([2, 3, 5, -1, -7, 1000]);
      offset = random.int(-1000, 1000);
    } else if (scaling === 2) {
      factor = random.pick([0.1, 0.5, 0.25, 1.5e-3, 2.5]);
      offset = random.pick([0, 0.2, -40.5, 1e-3]);
      integerScaling = false;
    }
    cases.push({ name: `S${i}`, start, length, order, signed: random.next() < 0.5, kind, factor, offset, integerScaling, bytes: messageBytes, bits });
  }

  const text = cases
    .map((c, i) => {
      const literal = (x: number): string => (Number.isInteger(x) && !c.integerScaling ? `${x}.0` : String(x));
      return (
        `BO_ ${i + 1} M${i}: ${c.bytes} ECU\n` +
        ` SG_ ${c.name} : ${c.start}|${c.length}@${c.order === 'intel' ? 1 : 0}${c.signed ? '-' : '+'} (${literal(c.factor)},${literal(c.offset)}) [0|0] "" ECU\n`
      );
    })
    .join('\n');
  const valueTypes = cases.map((c, i) => (c.kind === 'integer' ? '' : `SIG_VALTYPE_ ${i + 1} ${c.name} : ${c.kind === 'float32' ? 1 : 2};\n`)).join('');
  const db = compile(`${text}\n${valueTypes}`);

  const expectedValue = (c: Case, raw: bigint, scaling: boolean): SignalValue => {
    if (c.kind !== 'integer') {
      const value = reinterpret(raw, c.length as 32 | 64);
      return scaling && !(c.factor === 1 && c.offset === 0) ? value * c.factor + c.offset : value;
    }
    if (!scaling) return exact(raw);
    if (c.integerScaling) return exact(raw * BigInt(c.factor) + BigInt(c.offset));
    return Number(raw) * c.factor + c.offset;
  };

  const payloadFor = (c: Case, round: number, rand: SeededRandom): Uint8Array => {
    const data = new Uint8Array(c.bytes);
    if (round === 0) for (let b = 0; b < data.length; b++) data[b] = rand.int(0, 255);
    else if (round === 1) data.fill(0xff);
    else {
      // Only the sign bit set, or only the bits below it: the extremes of the range.
      referenceInsert(data, c.bits, round === 2 ? 1n << BigInt(c.length - 1) : (1n << BigInt(c.length - 1)) - 1n);
    }
    return data;
  };

  /** Decodes every payload of every case on all three paths; `skip` leaves out the decodeInto check of some cases. */
  const checkAll = (decodeIntoOf: (c: Case) => boolean): number => {
    const rand = seededRandom(SEED ^ 0xabcdef);
    const buffer = new Float64Array(db.slotCount);
    let bigints = 0;
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const codec = db.find(i + 1, false)!;
      assert.equal(codec.message.name, `M${i}`);
      for (let round = 0; round < 4; round++) {
        const data = payloadFor(c, round, rand);
        const raw = referenceExtract(data, c.bits, c.signed);
        const where = `seed ${SEED} case ${i} round ${round} ${JSON.stringify({ ...c, bits: undefined })} data ${Buffer.from(data).toString('hex')}`;
        const scaled = expectedValue(c, raw, true);
        if (typeof scaled === 'bigint') bigints++;
        assert.deepStrictEqual(codec.decode(data), { [c.name]: scaled }, where);
        assert.deepStrictEqual(codec.decode(data, { scaling: false }), { [c.name]: expectedValue(c, raw, false) }, `${where} raw`);
        if (!decodeIntoOf(c)) continue;
        let written: number;
        try {
          written = codec.decodeInto(data, buffer);
        } catch (err) {
          assert.fail(`${where} decodeInto threw ${String(err)}`);
        }
        assert.equal(written, 1, where);
        assert.deepStrictEqual(buffer[codec.slot(c.name)], Number(scaled), `${where} decodeInto`);
      }
    }
    return bigints;
  };

  /** Raw of at most 53 bits whose integer scaling can pass 2^53: decodeInto hits a known defect there. */
  const narrowButExact = (c: Case): boolean =>
    c.kind === 'integer' && c.length <= 53 && c.integerScaling && !(c.factor === 1 && c.offset === 0) && c.length + Math.log2(Math.abs(c.factor) + 1) + 1 > 53;

  it(`decodes 4000 payloads of 1000 random layouts exactly as the reference (seed ${SEED})`, () => {
    const bigints = checkAll((c) => !narrowButExact(c));
    // Values above 2^53 really were exercised.
    assert.ok(bigints > 100, `only ${bigints} BigInt results`);
    assert.ok(cases.filter(narrowButExact).length < 50);
  });

  it('decodeInto of the random layouts whose integer scaling of a narrow raw passes 2^53', () => {
    checkAll(narrowButExact);
  });

  it('encodes what the reference packs, and decode(encode(v)) == v', () => {
    const rand = seededRandom(SEED ^ 0x123456);
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const codec = db.find(i + 1, false)!;
      const packed = new Uint8Array(c.bytes);
      for (let b = 0; b < packed.length; b++) packed[b] = rand.int(0, 255);
      const raw = referenceExtract(packed, c.bits, c.signed);
      const where = `seed ${SEED} case ${i} ${JSON.stringify({ ...c, bits: undefined })} data ${Buffer.from(packed).toString('hex')}`;
      const rawValues = codec.decode(packed, { scaling: false });
      const reencoded = codec.encode(rawValues, { scaling: false });
      if (c.kind === 'integer' || !Number.isNaN(rawValues[c.name])) {
        // Only the signal's own bits are written.
        const expected = new Uint8Array(c.bytes);
        referenceInsert(expected, c.bits, raw);
        assert.deepStrictEqual(reencoded, expected, where);
      }
      assert.deepStrictEqual(codec.decode(reencoded, { scaling: false }), rawValues, where);
      if (c.kind === 'integer' && (c.integerScaling || c.length <= 32)) {
        const scaled = codec.decode(packed);
        assert.deepStrictEqual(codec.decode(codec.encode(scaled)), scaled, `${where} scaled`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------------

describe('integers of up to 64 bits, exact as BigInt beyond 2^53', () => {
  const db = compile(`BO_ 512 U64: 8 ECU
 SG_ U64 : 0|64@1+ (1,0) [0|0] "" ECU

BO_ 513 S64: 8 ECU
 SG_ S64 : 0|64@1- (1,0) [0|0] "" ECU

BO_ 514 M64: 8 ECU
 SG_ M64 : 7|64@0+ (1,0) [0|0] "" ECU

BO_ 515 I60: 8 ECU
 SG_ I60 : 2|60@1- (1,0) [0|0] "" ECU

BO_ 516 U53: 8 ECU
 SG_ U53 : 0|53@1+ (1,0) [0|0] "" ECU

BO_ 517 Scaled64: 8 ECU
 SG_ Big : 0|64@1+ (3,-7) [0|0] "" ECU

BO_ 518 Scaled40: 8 ECU
 SG_ Small : 0|40@1+ (1000,5) [0|0] "" ECU

BO_ 519 Scaled40b: 8 ECU
 SG_ Large : 0|40@1+ (100000,0) [0|0] "" ECU

BO_ 520 Fraction64: 8 ECU
 SG_ Half : 0|64@1+ (0.5,0) [0|0] "" ECU
`);
  const ff = new Uint8Array(8).fill(0xff);
  const value = (name: string, data: Uint8Array): SignalValue => Object.values(codecOf(db, name).decode(data))[0]!;

  it('unsigned 64-bit', () => {
    assert.equal(value('U64', ff), 18446744073709551615n);
    assert.equal(value('U64', bytes(1, 0, 0, 0, 0, 0, 0, 0)), 1);
    assert.equal(value('U64', bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0)), 9007199254740991);
    assert.equal(value('U64', bytes(0, 0, 0, 0, 0, 0, 0x20, 0)), 9007199254740992n);
  });

  it('signed 64-bit', () => {
    assert.equal(value('S64', ff), -1);
    assert.equal(value('S64', bytes(0, 0, 0, 0, 0, 0, 0, 0x80)), -9223372036854775808n);
    assert.equal(value('S64', bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)), 9223372036854775807n);
    assert.equal(value('S64', bytes(1, 0, 0, 0, 0, 0, 0xe0, 0xff)), -9007199254740991);
    assert.equal(value('S64', bytes(0, 0, 0, 0, 0, 0, 0xe0, 0xff)), -9007199254740992n);
  });

  it('Motorola 64-bit', () => {
    assert.equal(value('M64', bytes(1, 2, 3, 4, 5, 6, 7, 8)), 0x0102030405060708n);
    assert.equal(value('M64', bytes(0, 0, 0, 0, 0, 0, 0, 0x2a)), 42);
  });

  it('60 and 53 bits', () => {
    assert.equal(value('I60', ff), -1);
    // bits 2..61: only bit 61 set (the sign bit) is -2^59
    assert.equal(value('I60', bytes(0, 0, 0, 0, 0, 0, 0, 0x20)), -(2n ** 59n));
    assert.equal(value('U53', ff), 2 ** 53 - 1);
  });

  it('integer scaling stays exact: BigInt where the result passes 2^53', () => {
    assert.equal(value('Scaled64', bytes(0, 0, 0, 0, 0, 0, 0, 0x80)), 27670116110564327417n); // 3 * 2^63 - 7
    assert.equal(value('Scaled64', bytes(5, 0, 0, 0, 0, 0, 0, 0)), 8);
    assert.equal(value('Scaled40', ff), 1099511627775005); // (2^40 - 1) * 1000 + 5 < 2^53
    assert.equal(value('Scaled40b', ff), 109951162777500000n); // (2^40 - 1) * 100000 > 2^53
    assert.equal(value('Scaled40b', bytes(3, 0, 0, 0, 0, 0, 0, 0)), 300000);
    assert.equal(typeof value('Scaled40b', bytes(3, 0, 0, 0, 0, 0, 0, 0)), 'number');
  });

  it('fractional scaling of a 64-bit value is done in doubles', () => {
    assert.equal(value('Fraction64', bytes(1, 0, 0, 0, 0, 0, 0, 0x80)), 4611686018427387904);
    assert.equal(value('Fraction64', bytes(3, 0, 0, 0, 0, 0, 0, 0)), 1.5);
  });

  it('decodeInto stores BigInts as the nearest double', () => {
    const buffer = new Float64Array(db.slotCount);
    const codec = codecOf(db, 'U64');
    assert.equal(codec.decodeInto(ff, buffer), 1);
    assert.equal(buffer[codec.slot('U64')], Number(2n ** 64n - 1n)); // 2^64 as a double
    const scaled = codecOf(db, 'Scaled64');
    assert.equal(scaled.decodeInto(bytes(0, 0, 0, 0, 0, 0, 0, 0x80), buffer), 1);
    assert.equal(buffer[scaled.slot('Big')], Number(27670116110564327417n)); // 3 * 2^63 as a double
  });

  it('BigInt values encode exactly', () => {
    const u64 = codecOf(db, 'U64');
    assert.deepStrictEqual(u64.encode({ U64: 0x0102030405060708n }), bytes(8, 7, 6, 5, 4, 3, 2, 1));
    assert.deepStrictEqual(codecOf(db, 'S64').encode({ S64: -9223372036854775808n }), bytes(0, 0, 0, 0, 0, 0, 0, 0x80));
    assert.deepStrictEqual(codecOf(db, 'M64').encode({ M64: 0x0102030405060708n }), bytes(1, 2, 3, 4, 5, 6, 7, 8));
    const scaled = codecOf(db, 'Scaled64');
    assert.deepStrictEqual(scaled.encode({ Big: 27670116110564327417n }), bytes(0, 0, 0, 0, 0, 0, 0, 0x80));
    encodeError(() => u64.encode({ U64: 18446744073709551616n }), /raw value 18446744073709551616 is outside 0\.\.18446744073709551615/);
  });
});

describe('scaling in doubles, floats', () => {
  const db = compile(`BO_ 300 Tenth: 8 ECU
 SG_ Tenth : 0|8@1+ (0.1,0) [0|25.5] "" ECU
 SG_ TenthOffset : 8|8@1+ (0.1,0.2) [0|0] "" ECU
 SG_ Temp : 16|8@1+ (1,-40) [-40|215] "degC" ECU
 SG_ IntAsFloat : 24|8@1+ (1.0,0.0) [0|0] "" ECU

BO_ 600 Floats: 8 ECU
 SG_ F32le : 0|32@1- (1,0) [0|0] "" ECU
 SG_ F32be : 39|32@0- (1,0) [0|0] "" ECU

BO_ 601 Double: 8 ECU
 SG_ F64 : 0|64@1- (1,0) [0|0] "" ECU

BO_ 602 DoubleBE: 8 ECU
 SG_ F64be : 7|64@0- (2,1) [0|0] "" ECU

SIG_VALTYPE_ 600 F32le : 1;
SIG_VALTYPE_ 600 F32be : 1;
SIG_VALTYPE_ 601 F64 : 2;
SIG_VALTYPE_ 602 F64be : 2;
`);

  it('raw * factor + offset in double precision', () => {
    const values = codecOf(db, 'Tenth').decode(bytes(3, 1, 0, 7, 0, 0, 0, 0));
    assert.deepStrictEqual(values, { Tenth: 0.30000000000000004, TenthOffset: 0.30000000000000004, Temp: -40, IntAsFloat: 7 });
    assert.equal(codecOf(db, 'Tenth').decode(bytes(7, 0, 0, 0, 0, 0, 0, 0)).Tenth, 0.7000000000000001);
    assert.deepStrictEqual(codecOf(db, 'Tenth').decode(bytes(3, 1, 255, 7, 0, 0, 0, 0), { scaling: false }), {
      Tenth: 3,
      TenthOffset: 1,
      Temp: 255,
      IntAsFloat: 7,
    });
  });

  it('float32 and float64, Intel and Motorola', () => {
    // 1.5f = 0x3FC00000 little-endian in bytes 0..3; -2.25f = 0xC0100000 big-endian in bytes 4..7
    assert.deepStrictEqual(codecOf(db, 'Floats').decode(bytes(0, 0, 0xc0, 0x3f, 0xc0, 0x10, 0, 0)), { F32le: 1.5, F32be: -2.25 });
    // 0.1f = 0x3DCCCCCD
    assert.deepStrictEqual(codecOf(db, 'Floats').decode(bytes(0xcd, 0xcc, 0xcc, 0x3d, 0x3d, 0xcc, 0xcc, 0xcd)), {
      F32le: Math.fround(0.1),
      F32be: Math.fround(0.1),
    });
    // -2.5 = 0xC004000000000000
    assert.deepStrictEqual(codecOf(db, 'Double').decode(bytes(0, 0, 0, 0, 0, 0, 0x04, 0xc0)), { F64: -2.5 });
    // 0.1 = 0x3FB999999999999A, big-endian, then * 2 + 1
    assert.deepStrictEqual(codecOf(db, 'DoubleBE').decode(bytes(0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a)), { F64be: 1.2 });
    assert.deepStrictEqual(codecOf(db, 'DoubleBE').decode(bytes(0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a), { scaling: false }), { F64be: 0.1 });
    // NaN and infinities come through as numbers.
    const special = codecOf(db, 'Floats').decode(bytes(0, 0, 0xc0, 0x7f, 0xff, 0x80, 0, 0));
    assert.ok(Number.isNaN(special.F32le));
    assert.equal(special.F32be, -Infinity);
  });

  it('floats encode and round-trip', () => {
    const floats = codecOf(db, 'Floats');
    assert.deepStrictEqual(floats.encode({ F32le: 1.5, F32be: -2.25 }), bytes(0, 0, 0xc0, 0x3f, 0xc0, 0x10, 0, 0));
    // (3 - 1) / 2 = 1.0 = 0x3FF0000000000000
    assert.deepStrictEqual(codecOf(db, 'DoubleBE').encode({ F64be: 3 }), bytes(0x3f, 0xf0, 0, 0, 0, 0, 0, 0));
    const v = { F64: -123.456e-7 };
    assert.deepStrictEqual(codecOf(db, 'Double').decode(codecOf(db, 'Double').encode(v)), v);
  });

  it('fractional scaling encodes by rounding to the nearest raw value', () => {
    const tenth = codecOf(db, 'Tenth');
    assert.deepStrictEqual(tenth.encode({ Tenth: 0.30000000000000004, TenthOffset: 0.5, Temp: 20, IntAsFloat: 9 }), bytes(3, 3, 60, 9, 0, 0, 0, 0));
    assert.deepStrictEqual(tenth.encode({ Tenth: 0.31 }).slice(0, 1), bytes(3));
  });
});

describe('value tables', () => {
  const db = compile(`BO_ 700 Gear: 8 ECU
 SG_ Gear : 0|4@1- (1,0) [-8|7] "" ECU
 SG_ Speed : 8|8@1+ (0.5,0) [0|127.5] "km/h" ECU

VAL_ 700 Gear -1 "R" 0 "N" 1 "D1" 2 "D2" ;
VAL_ 700 Speed 255 "invalid" ;
`);
  const gear = codecOf(db, 'Gear');

  it('labels only with { choices: true }', () => {
    assert.deepStrictEqual(gear.decode(bytes(0x0f, 0xff, 0, 0, 0, 0, 0, 0)), { Gear: -1, Speed: 127.5 });
    assert.deepStrictEqual(gear.decode(bytes(0x0f, 0xff, 0, 0, 0, 0, 0, 0), { choices: true }), { Gear: 'R', Speed: 'invalid' });
    assert.deepStrictEqual(gear.decode(bytes(0x05, 0x10, 0, 0, 0, 0, 0, 0), { choices: true }), { Gear: 5, Speed: 8 });
    assert.deepStrictEqual(gear.decode(bytes(0x0f, 0xff, 0, 0, 0, 0, 0, 0), { scaling: false }), { Gear: -1, Speed: 255 });
  });

  it('labels encode, unknown labels are an EncodeError', () => {
    assert.deepStrictEqual(gear.encode({ Gear: 'R', Speed: 'invalid' }), bytes(0x0f, 0xff, 0, 0, 0, 0, 0, 0));
    assert.deepStrictEqual(gear.encode({ Gear: 'D2', Speed: 8 }), bytes(0x02, 0x10, 0, 0, 0, 0, 0, 0));
    encodeError(() => gear.encode({ Gear: 'P' }), /signal Gear has no value labelled 'P'/);
    encodeError(() => gear.encode({ Speed: 'R' }), /signal Speed has no value labelled 'R'/);
  });
});

describe('multiplexing', () => {
  const simpleDb = compile(`BO_ 800 Simple: 8 ECU
 SG_ Mux M : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ Always : 56|8@1+ (1,0) [0|255] "" ECU
 SG_ A0 m0 : 8|16@1+ (1,0) [0|0] "" ECU
 SG_ B0 m0 : 24|8@1- (1,0) [0|0] "" ECU
 SG_ A1 m1 : 8|32@1+ (0.5,0) [0|0] "" ECU
 SG_ A1b m1 : 40|8@1+ (1,0) [0|0] "" ECU

VAL_ 800 Mux 0 "zero" 1 "one" 5 "five" ;
`);
  const simple = codecOf(simpleDb, 'Simple');

  it('simple: only the active branch is returned', () => {
    assert.deepStrictEqual(simple.decode(bytes(0, 0x34, 0x12, 0xfe, 0, 0, 0, 0x77)), { Mux: 0, A0: 0x1234, B0: -2, Always: 0x77 });
    assert.deepStrictEqual(simple.decode(bytes(1, 0x10, 0, 0, 0, 9, 0, 1)), { Mux: 1, A1: 8, A1b: 9, Always: 1 });
    // A value the value table names, with no signals of its own, is valid.
    assert.deepStrictEqual(simple.decode(bytes(5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2)), { Mux: 5, Always: 2 });
    assert.deepStrictEqual(simple.decode(bytes(1, 0x10, 0, 0, 0, 9, 0, 1), { choices: true }), { Mux: 'one', A1: 8, A1b: 9, Always: 1 });
  });

  it('simple: an undefined multiplexer value is a DecodeError, and a negative decodeInto code', () => {
    const data = bytes(2, 0, 0, 0, 0, 0, 0, 0);
    decodeError(() => simple.decode(data), /^Simple: expected multiplexer id 0, 1 or 5, but got 2$/);
    decodeError(() => simple.decode(data, { scaling: false }), /but got 2/);
    decodeError(() => simple.decode(data, { choices: true }), /but got 2/);
    assert.equal(simple.decodeInto(data, new Float64Array(simpleDb.slotCount)), DECODE_BAD_MULTIPLEXER);
    assert.ok(DECODE_BAD_MULTIPLEXER < 0);
  });

  const extDb = compile(`BO_ ${0x80000000 + 0x400} Ext: 8 ECU
 SG_ Top M : 0|4@1+ (1,0) [0|15] "" ECU
 SG_ Nested m1M : 4|4@1+ (1,0) [0|15] "" ECU
 SG_ InRange m2 : 8|8@1+ (1,0) [0|255] "" ECU
 SG_ Deep m0 : 16|8@1+ (1,0) [0|255] "" ECU
 SG_ Deeper m0 : 24|8@1+ (1,0) [0|255] "" ECU
 SG_ Free : 56|8@1+ (1,0) [0|255] "" ECU

BO_ 1024 Std400: 8 ECU
 SG_ Plain : 0|8@1+ (1,0) [0|255] "" ECU

SG_MUL_VAL_ ${0x80000000 + 0x400} Nested Top 1-1;
SG_MUL_VAL_ ${0x80000000 + 0x400} InRange Top 2-5, 7-7;
SG_MUL_VAL_ ${0x80000000 + 0x400} Deep Nested 0-1, 6-6;
SG_MUL_VAL_ ${0x80000000 + 0x400} Deeper Nested 3-4;
`);
  const ext = codecOf(extDb, 'Ext');
  const payload = (byte0: number): Uint8Array => bytes(byte0, 0xaa, 0x33, 0x44, 0, 0, 0, 0x99);

  it('extended (SG_MUL_VAL_ with ranges) and nested multiplexing', () => {
    assert.deepStrictEqual(ext.decode(payload(0x01)), { Top: 1, Nested: 0, Deep: 0x33, Free: 0x99 });
    assert.deepStrictEqual(ext.decode(payload(0x11)), { Top: 1, Nested: 1, Deep: 0x33, Free: 0x99 });
    assert.deepStrictEqual(ext.decode(payload(0x61)), { Top: 1, Nested: 6, Deep: 0x33, Free: 0x99 });
    assert.deepStrictEqual(ext.decode(payload(0x31)), { Top: 1, Nested: 3, Deeper: 0x44, Free: 0x99 });
    assert.deepStrictEqual(ext.decode(payload(0x41)), { Top: 1, Nested: 4, Deeper: 0x44, Free: 0x99 });
    for (const top of [2, 3, 4, 5, 7]) {
      assert.deepStrictEqual(ext.decode(payload(0xf0 | top)), { Top: top, InRange: 0xaa, Free: 0x99 }, `Top ${top}`);
    }
  });

  it('extended: undefined values at either level are DecodeErrors', () => {
    const buffer = new Float64Array(extDb.slotCount);
    decodeError(() => ext.decode(payload(0x21)), /^Ext: expected multiplexer id 0, 1, 3, 4 or 6, but got 2$/);
    decodeError(() => ext.decode(payload(0x06)), /^Ext: expected multiplexer id 1, 2, 3, 4, 5 or 7, but got 6$/);
    decodeError(() => ext.decode(payload(0x00)), /but got 0$/);
    assert.equal(ext.decodeInto(payload(0x21), buffer), DECODE_BAD_MULTIPLEXER);
    assert.equal(ext.decodeInto(payload(0x08), buffer), DECODE_BAD_MULTIPLEXER);
  });

  it('decodeInto writes the active branch into its slots and leaves the others alone', () => {
    const buffer = new Float64Array(extDb.slotCount);
    const slot = (name: string): number => ext.slot(name);
    assert.equal(extDb.slotOf('Ext.Deeper'), slot('Deeper'));
    assert.equal(extDb.slotOf('Std400.Plain'), codecOf(extDb, 'Std400').slot('Plain'));
    assert.equal(ext.slot('NoSuchSignal'), -1);
    assert.equal(new Set(['Top', 'Nested', 'InRange', 'Deep', 'Deeper', 'Free', 'Plain'].map((n) => extDb.slotOf(n))).size, 7);
    for (let round = 0; round < 10000; round++) {
      buffer.fill(-1);
      if (round % 2 === 0) {
        assert.equal(ext.decodeInto(payload(0x41), buffer), 4);
        assert.deepEqual([buffer[slot('Top')], buffer[slot('Nested')], buffer[slot('Deeper')], buffer[slot('Free')]], [1, 4, 0x44, 0x99]);
        assert.deepEqual([buffer[slot('Deep')], buffer[slot('InRange')]], [-1, -1]);
      } else {
        assert.equal(ext.decodeInto(payload(0x03), buffer), 3);
        assert.deepEqual([buffer[slot('Top')], buffer[slot('InRange')], buffer[slot('Free')]], [3, 0xaa, 0x99]);
        assert.deepEqual([buffer[slot('Nested')], buffer[slot('Deep')], buffer[slot('Deeper')]], [-1, -1, -1]);
      }
    }
  });

  it('encode picks the branch from the multiplexer value', () => {
    assert.deepStrictEqual(ext.encode({ Top: 1, Nested: 4, Deeper: 0x44, Free: 0x99 }), bytes(0x41, 0, 0, 0x44, 0, 0, 0, 0x99));
    assert.deepStrictEqual(ext.encode({ Top: 7, InRange: 5, Deeper: 0x44 }), bytes(0x07, 5, 0, 0, 0, 0, 0, 0));
    for (const byte0 of [0x01, 0x11, 0x61, 0x31, 0x41, 0x02, 0x05, 0x07]) {
      const v = ext.decode(payload(byte0));
      assert.deepStrictEqual(ext.decode(ext.encode(v)), v);
    }
    encodeError(() => ext.encode({ Top: 6 }), /multiplexer Top = 6 selects no branch; expected 1, 2, 3, 4, 5 or 7/);
    encodeError(() => ext.encode({ Top: 1, Nested: 2 }), /multiplexer Nested = 2 selects no branch/);
    assert.deepStrictEqual(simple.encode({ Mux: 'five', Always: 3 }), bytes(5, 0, 0, 0, 0, 0, 0, 3));
  });

  it('29-bit and 11-bit IDs with the same number are different messages', () => {
    assert.equal(extDb.find(0x400, true)?.message.name, 'Ext');
    assert.equal(extDb.find(0x400, false)?.message.name, 'Std400');
    assert.equal(ext.message.extended, true);
    assert.equal(ext.message.id, 0x400);
    assert.equal(extDb.find(0x401, true), undefined);
    assert.equal(extDb.find(0x7ff, false), undefined);
  });
});

describe('CAN FD and 29-bit identifiers', () => {
  const db = compile(`BO_ ${0x80000000 + 0x18fef100} Fd64: 64 ECU
 SG_ First : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ FarM : 463|16@0- (1,0) [0|0] "" ECU
 SG_ Far : 480|24@1+ (1,0) [0|0] "" ECU
 SG_ Last : 511|1@1+ (1,0) [0|1] "" ECU

BO_ 2047 Classic: 8 ECU
 SG_ X : 0|8@1+ (1,0) [0|255] "" ECU

BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","StandardCAN_FD","ExtendedCAN_FD";
BA_ "VFrameFormat" BO_ ${0x80000000 + 0x18fef100} 3;
`);
  const fd = db.find(0x18fef100, true)!;
  const data = new Uint8Array(64);
  data[0] = 7;
  data[57] = 0xff; // Motorola 16 bits from byte 57 bit 7: 0xFF38 = -200
  data[58] = 0x38;
  data.set([0x78, 0x56, 0x34], 60); // Intel 24 bits from bit 480
  data[63] = 0x80; // bit 511

  it('a 64-byte CAN FD message decodes signals in its last bytes', () => {
    assert.equal(fd.message.name, 'Fd64');
    assert.deepEqual([fd.message.fd, fd.message.length, fd.message.extended], [true, 64, true]);
    assert.deepStrictEqual(fd.decode(data), { First: 7, FarM: -200, Far: 0x345678, Last: 1 });
    const buffer = new Float64Array(db.slotCount);
    assert.equal(fd.decodeInto(data, buffer), 4);
    assert.deepEqual([buffer[fd.slot('First')], buffer[fd.slot('FarM')], buffer[fd.slot('Far')], buffer[fd.slot('Last')]], [7, -200, 0x345678, 1]);
    assert.deepStrictEqual(fd.encode({ First: 7, FarM: -200, Far: 0x345678, Last: 1 }), data);
  });

  it('data shorter than the message is a DecodeError', () => {
    decodeError(() => fd.decode(data.subarray(0, 63)), /^Fd64: 63 bytes of data, the message needs 64$/);
    decodeError(() => fd.decode(data.subarray(0, 8)), /8 bytes of data, the message needs 64/);
    assert.equal(fd.decodeInto(data.subarray(0, 8), new Float64Array(db.slotCount)), DECODE_TOO_SHORT);
    const classic = db.find(2047, false)!;
    decodeError(() => classic.decode(new Uint8Array(0)), /^Classic: 0 bytes of data, the message needs 8$/);
    // Longer data is fine: the rest is ignored.
    assert.deepStrictEqual(classic.decode(data), { X: 7 });
  });

  it('the database decodes a whole frame by its identifier, and says undefined for an unknown one', () => {
    assert.deepStrictEqual(db.decode({ id: 0x18fef100, extended: true, data }), {
      message: fd.message,
      signals: { First: 7, FarM: -200, Far: 0x345678, Last: 1 },
    });
    assert.equal(db.decode({ id: 0x123, extended: false, data }), undefined);
    assert.throws(() => db.decode({ id: 2047, extended: false, data: new Uint8Array(2) }), DecodeError);
  });

  it('29-bit lookup is by the identifier without the flag', () => {
    assert.equal(db.find(0x18fef100, false), undefined);
    assert.equal(db.find(0x98fef100, true), undefined);
    assert.equal(db.find(2047, true), undefined);
    assert.equal(db.find(2047, false)?.message.name, 'Classic');
  });

  it('encode into a buffer shorter than the message is an EncodeError', () => {
    encodeError(() => fd.encodeInto({ First: 1 }, new Uint8Array(8)), /output buffer of 8 bytes, the message needs 64/);
  });
});

describe('J1939 PGN matching', () => {
  const eec1 = 0x80000000 + 0x0cf004fe; // priority 3, PGN 0xF004 (PDU2), source 0xFE
  const request = 0x80000000 + 0x18eafffe; // priority 6, PGN 0xEA00 (PDU1), destination 0xFF, source 0xFE
  const text = `BO_ ${eec1} EEC1: 8 ECU
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" ECU

BO_ ${request} RQST: 3 ECU
 SG_ RequestedPGN : 0|24@1+ (1,0) [0|16777215] "" ECU

BO_ 256 Plain: 8 ECU
 SG_ X : 0|8@1+ (1,0) [0|255] "" ECU

BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","J1939PG";
BA_ "VFrameFormat" BO_ ${eec1} 3;
BA_ "VFrameFormat" BO_ ${request} 3;
`;

  it('PGN of a 29-bit identifier', () => {
    assert.equal(pgnOfFrameId(0x0cf004fe), 0xf004);
    assert.equal(pgnOfFrameId(0x0cf00400), 0xf004);
    assert.equal(pgnOfFrameId(0x18eafffe), 0xea00);
    assert.equal(pgnOfFrameId(0x18ea17f9), 0xea00);
    assert.equal(pgnOfFrameId(0x19f00400), 0x1f004); // data page bit kept
  });

  it('with { j1939: true } a frame from another source or priority finds the DBC message', () => {
    const db = compile(text, true);
    assert.equal(db.find(0x0cf00400, true)?.message.name, 'EEC1');
    assert.equal(db.find(0x18f00417, true)?.message.name, 'EEC1');
    assert.equal(db.find(0x0cf004fe, true)?.message.name, 'EEC1');
    assert.equal(db.find(0x0cf00400, true)?.message.j1939, true);
    assert.equal(db.find(0x0cf00500, true), undefined); // another PGN
    // PDU1 (PF < 240): the destination address is ignored too.
    assert.equal(db.find(0x18ea17f9, true)?.message.name, 'RQST');
    assert.equal(db.find(0x0cea00f9, true)?.message.name, 'RQST');
    assert.equal(db.find(0x18eb17f9, true), undefined);
    // Standard frames are unaffected.
    assert.equal(db.find(256, false)?.message.name, 'Plain');
    assert.equal(db.find(0x0cf00400 & 0x7ff, false), undefined);
    const frame = new Uint8Array([0, 0, 0, 0x40, 0x1f, 0, 0, 0]);
    assert.deepStrictEqual(db.find(0x0cf00400, true)!.decode(frame), { EngineSpeed: 1000 });
  });

  it('without the option only the exact identifier matches', () => {
    const db = compile(text);
    assert.equal(db.find(0x0cf00400, true), undefined);
    assert.equal(db.find(0x18ea17f9, true), undefined);
    assert.equal(db.find(0x0cf004fe, true)?.message.name, 'EEC1');
    assert.equal(db.find(0x18eafffe, true)?.message.name, 'RQST');
  });
});

describe('encode errors and round trips', () => {
  const db = compile(`BO_ 1000 Ranges: 8 ECU
 SG_ U8 : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ S8 : 8|8@1- (1,0) [-128|127] "" ECU
 SG_ Half : 16|8@1+ (0.5,0) [0|127.5] "" ECU
 SG_ Offset : 24|8@1- (1,-100) [0|0] "" ECU
 SG_ Start : 32|8@1+ (1,0) [0|0] "" ECU

BA_DEF_ SG_ "GenSigStartValue" INT 0 255;
BA_DEF_DEF_ "GenSigStartValue" 0;
BA_ "GenSigStartValue" SG_ 1000 Start 42;
`);
  const ranges = codecOf(db, 'Ranges');

  it('a raw value outside the signal is an EncodeError', () => {
    encodeError(() => ranges.encode({ U8: 256 }), /signal U8: raw value 256 is outside 0\.\.255 \(8 bits, unsigned\)/);
    encodeError(() => ranges.encode({ U8: -1 }), /raw value -1 is outside 0\.\.255/);
    encodeError(() => ranges.encode({ S8: -129 }), /signal S8: raw value -129 is outside -128\.\.127 \(8 bits, signed\)/);
    encodeError(() => ranges.encode({ S8: 128 }, { scaling: false }), /raw value 128 is outside -128\.\.127/);
    encodeError(() => ranges.encode({ Half: 128 }), /signal Half: raw value 256 is outside 0\.\.255/);
    encodeError(() => ranges.encode({ Offset: -229 }), /raw value -129 is outside -128\.\.127/);
    encodeError(() => ranges.encode({ U8: 1.5 }, { scaling: false }), /raw value 1\.5 is not an integer/);
    encodeError(() => ranges.encode({ U8: NaN }), /NaN is not a finite number/);
    encodeError(() => ranges.encode({ U8: Infinity }), /Infinity is not a finite number/);
  });

  it('encodes the extremes and the GenSigStartValue of absent signals', () => {
    assert.deepStrictEqual(ranges.encode({ U8: 255, S8: -128, Half: 127.5, Offset: 27 }), bytes(255, 0x80, 255, 127, 42, 0, 0, 0));
    assert.deepStrictEqual(ranges.encode({}), bytes(0, 0, 0, 0, 42, 0, 0, 0));
  });

  it('decode(encode(v)) == v, scaled and raw', () => {
    const random = seededRandom(77);
    for (let i = 0; i < 200; i++) {
      const data = Uint8Array.from({ length: 8 }, () => random.int(0, 255));
      data.fill(0, 5);
      const scaled = ranges.decode(data);
      assert.deepStrictEqual(ranges.encode(scaled), data, Buffer.from(data).toString('hex'));
      const raw = ranges.decode(data, { scaling: false });
      assert.deepStrictEqual(ranges.decode(ranges.encode(raw, { scaling: false }), { scaling: false }), raw);
    }
  });
});

describe('overlapping signals', () => {
  it('a message whose signals overlap fails to decode, on every path', () => {
    const db = parseDbc(`${HEADER}BO_ 1 Bad: 8 ECU\n SG_ A : 0|8@1+ (1,0) [0|0] "" ECU\n SG_ B : 4|8@1+ (1,0) [0|0] "" ECU\n`);
    assert.match(db.warnings[0]!.message, /signals A and B overlap/);
    const bad = compileDatabase(db).find(1, false)!;
    decodeError(() => bad.decode(new Uint8Array(8)), /^Bad: unpacking failed: signals overlap or extend beyond the message$/);
    decodeError(() => bad.decode(new Uint8Array(8), { scaling: false }), /unpacking failed/);
    assert.equal(bad.decodeInto(new Uint8Array(8), new Float64Array(2)), DECODE_UNPACKABLE);
  });
});

describe('signal names that are Object.prototype members', () => {
  const db = compile(`BO_ 900 Proto: 8 ECU
 SG_ __proto__ : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ constructor : 8|8@1+ (1,0) [0|255] "" ECU
 SG_ toString : 16|8@1+ (1,0) [0|255] "" ECU

BO_ 901 ProtoMux: 8 ECU
 SG_ Mux M : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ __proto__ m1 : 8|8@1+ (1,0) [0|255] "" ECU
 SG_ hasOwnProperty m1 : 16|8@1+ (1,0) [0|255] "" ECU

VAL_ 900 __proto__ 5 "five" ;
`);

  // JSON.parse makes __proto__ an own property, as the decoder must.
  const parseObject = (json: string): Record<string, SignalValue> => JSON.parse(json) as Record<string, SignalValue>;
  const check = (value: Record<string, SignalValue>, expected: Record<string, SignalValue>): void => {
    assert.equal(Object.getPrototypeOf(value), Object.prototype);
    assert.ok(Object.hasOwn(value, '__proto__'));
    assert.deepEqual(Object.keys(value).sort(), Object.keys(expected).sort());
    for (const [key, v] of Object.entries(expected)) {
      assert.deepStrictEqual(Object.getOwnPropertyDescriptor(value, key)?.value, v, key);
    }
  };

  it('__proto__ decodes as an own property (flat message, every mode)', () => {
    const proto = codecOf(db, 'Proto');
    const data = bytes(5, 6, 7, 0, 0, 0, 0, 0);
    check(proto.decode(data), parseObject('{"__proto__": 5, "constructor": 6, "toString": 7}'));
    check(proto.decode(data, { scaling: false }), parseObject('{"__proto__": 5, "constructor": 6, "toString": 7}'));
    check(proto.decode(data, { choices: true }), parseObject('{"__proto__": "five", "constructor": 6, "toString": 7}'));
  });

  it('__proto__ decodes as an own property (multiplexed message)', () => {
    const mux = codecOf(db, 'ProtoMux');
    check(mux.decode(bytes(1, 9, 10, 0, 0, 0, 0, 0)), parseObject('{"Mux": 1, "__proto__": 9, "hasOwnProperty": 10}'));
  });

  it('__proto__ encodes from an own property and has a slot', () => {
    const proto = codecOf(db, 'Proto');
    assert.deepStrictEqual(proto.encode(parseObject('{"__proto__": 5, "constructor": 6, "toString": 7}')), bytes(5, 6, 7, 0, 0, 0, 0, 0));
    const buffer = new Float64Array(db.slotCount);
    assert.equal(proto.decodeInto(bytes(5, 6, 7, 0, 0, 0, 0, 0), buffer), 3);
    assert.equal(buffer[proto.slot('__proto__')], 5);
    assert.equal(db.slotOf('Proto.__proto__'), proto.slot('__proto__'));
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// regressions: defects found by review and fixed

describe('fixed defects stay fixed', () => {
  it('decodeInto of a narrow signal whose integer scaling passes 2^53 stores a double', () => {
    const db = compile(`BO_ 519 Scaled40b: 8 ECU\n SG_ Large : 0|40@1+ (100000,0) [0|0] "" ECU\n`);
    const codec = db.find(519, false)!;
    const buffer = new Float64Array(db.slotCount);
    assert.equal(codec.decodeInto(new Uint8Array(8).fill(0xff), buffer), 1);
    assert.equal(buffer[0], 109951162777500000);
  });

  it('encode ignores inherited properties of the values object (a signal named toString is absent, not a function)', () => {
    const db = compile(`BO_ 1 Names: 8 ECU\n SG_ toString : 0|8@1+ (1,0) [0|0] "" ECU\n SG_ valueOf : 8|8@1+ (1,0) [0|0] "" ECU\n`);
    assert.deepStrictEqual(db.find(1, false)!.encode({}), new Uint8Array(8));
  });

  it('an integer scaling with an offset beyond 2^53 stays exact', () => {
    const db = compile(`BO_ 1 BigOffset: 8 ECU\n SG_ S : 0|8@1+ (1,100000000000000000) [0|0] "" ECU\n`);
    assert.equal(db.find(1, false)!.decode(bytes(5, 0, 0, 0, 0, 0, 0, 0)).S, 100000000000000005n);
  });

  it('a factor written as an integer too large for a double decodes or fails with a DecodeError', () => {
    const db = compile(`BO_ 1 Huge: 8 ECU\n SG_ S : 0|8@1+ (1${'0'.repeat(400)},0) [0|0] "" ECU\n`);
    const codec = db.find(1, false)!;
    try {
      codec.decode(bytes(1, 0, 0, 0, 0, 0, 0, 0));
    } catch (err) {
      assert.ok(err instanceof DecodeError, `got ${String(err)}`);
    }
  });

  it('encode errors are EncodeErrors: factor 0, a fractional value-table key, a fractional GenSigStartValue', () => {
    const db = compile(`BO_ 1 Zero: 8 ECU
 SG_ Z : 0|8@1+ (0,0) [0|0] "" ECU
BO_ 2 Label: 8 ECU
 SG_ L : 0|8@1+ (1,0) [0|0] "" ECU
BO_ 3 Start: 8 ECU
 SG_ T : 0|8@1+ (1,0) [0|0] "" ECU
VAL_ 2 L 1.5 "half" ;
BA_DEF_ SG_ "GenSigStartValue" FLOAT 0 10;
BA_ "GenSigStartValue" SG_ 3 T 1.5;
`);
    encodeError(() => db.find(1, false)!.encode({ Z: 3 }), /Z/);
    encodeError(() => db.find(2, false)!.encode({ L: 'half' }), /L/);
    encodeError(() => db.find(3, false)!.encode({}), /T/);
  });
});
