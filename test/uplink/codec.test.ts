/**
 * Payload codec: exact JSON round trips, lossless binary round trips (property test over seeded random batches),
 * the binary layout as a plain CBOR reader sees it (what a backend in another language does), corrupt input always a
 * PayloadError (mutation fuzz), and the sizes on real decoded truck data.
 *
 * The worked example in docs/payload-format.md is the one asserted in 'the documented example' below.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { describe, it } from 'node:test';
import { decode as decodeCbor, encode as encodeCbor } from 'cborg';
import { parseCandumpText } from '../../src/can/candump.js';
import type { MessageHeader, Sample } from '../../src/collect/sample.js';
import { compileDatabase, loadDbcFile } from '../../src/dbc/index.js';
import {
  BINARY_LAYOUT_VERSION,
  bytesPerSample,
  decodeMessage,
  encodeMessage,
  ENVELOPE_CBOR,
  ENVELOPE_CBOR_DEFLATE,
  MAX_INFLATED_BYTES,
  PayloadError,
  type PayloadFormat,
} from '../../src/uplink/codec.js';
import { seededRandom } from '../support/random.js';
import { sharedTestdata } from '../support/shared.js';

// ---- helpers ----

/** Seeded (the simulator's generator), good enough to spread test cases; a failure names its seed and case. */
function rng(seed: number) {
  const random = seededRandom(seed);
  /** Any double from 64 random bits: subnormals, huge, NaN with payloads, ±Infinity. */
  const anyDouble = (): number => {
    const view = new DataView(new ArrayBuffer(8));
    view.setUint32(0, random.int(0, 0xffffffff));
    view.setUint32(4, random.int(0, 0xffffffff));
    return view.getFloat64(0);
  };
  return Object.assign(random, { anyDouble });
}
type Rng = ReturnType<typeof rng>;

const usRound = (ts: number): number => Math.round(ts * 1e6) / 1e6;

/** What a binary round trip must give: grouped by signal in order of first appearance, ts to the microsecond. */
function expectedBinary(samples: readonly Sample[]): Sample[] {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const g = groups.get(s.signal) ?? [];
    g.push({ ts: usRound(s.ts), signal: s.signal, value: s.value });
    groups.set(s.signal, g);
  }
  return [...groups.values()].flat();
}

/** A reader written from docs/payload-format.md alone, with cborg and zlib: what a backend does. */
function readPerDocs(bytes: Uint8Array): { item: unknown[]; samples: Sample[] } {
  const body = bytes.subarray(1);
  const plain = bytes[0] === 0x02 ? inflateRawSync(body) : body;
  assert.ok(bytes[0] === 0x01 || bytes[0] === 0x02);
  const item = decodeCbor(plain) as unknown[];
  const series = item[8] as [string, number, number[], (number | string)[]][];
  const samples: Sample[] = [];
  for (const [name, step, deltas, values] of series) {
    let us = item[7] as number;
    let m = 0;
    deltas.forEach((d, i) => {
      us += d;
      let value = values[i]!;
      if (step !== 0) {
        m += value as number;
        value = m * step;
      }
      samples.push({ ts: us / 1e6, signal: name, value });
    });
  }
  return { item, samples };
}

const SIGNALS = ['can0.EEC1.EngineSpeed', 'can0.CCVS1.WheelBasedVehicleSpeed', 'can1.BMS.Soc', 'obd.obd.rpm', 'can0.GEAR.State', 'can0.ÜBER.Wärme'];
const ENUM_NAMES = ['PARK', 'REVERSE', 'NEUTRAL', 'DRIVE', 'Not available', 'Fehler: Öldruck', ''];
const FACTORS = [1, 0.1, 0.25, 0.05, 0.125, 0.00390625, 0.4, 0.001, 0.5, 0.03125, 0.2, 0.01, 1e-7, 0.3, 0.0625, 1 / 3];
const OFFSETS = [0, 0, 0, -40, -273, -125, 0.5, -1e5];
const SPECIALS = [-0, NaN, Infinity, -Infinity, 0, 2 ** 53, -(2 ** 53), Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, Number.MIN_VALUE, Number.MAX_VALUE];

/** A value generator for one series: how real signals behave (DBC scaled, integers, floats, enums, specials). */
function seriesValues(r: Rng): () => number | string {
  switch (r.int(0, 6)) {
    case 0:
    case 1: {
      const factor = r.pick(FACTORS);
      const offset = r.pick(OFFSETS);
      const bits = r.int(1, 32);
      const signed = r.next() < 0.3;
      let raw = r.int(signed ? -(2 ** (bits - 1)) : 0, 2 ** (bits - 1));
      // Slowly moving, as a physical signal: small raw steps.
      return () => {
        raw += r.int(-3, 3);
        return raw * factor + offset;
      };
    }
    case 2:
      return () => r.int(-(2 ** 31), 2 ** 31) * (r.next() < 0.05 ? 2 ** 22 : 1); // up to 2^53
    case 3:
      return () => r.anyDouble();
    case 4:
      return () => r.pick(ENUM_NAMES);
    case 5:
      return () => (r.next() < 0.5 ? r.pick(ENUM_NAMES) : r.int(-5, 5) * 0.5);
    default:
      return () => (r.next() < 0.5 ? r.pick(SPECIALS) : r.int(-100, 100) * 0.1);
  }
}

function randomBatch(r: Rng): { header: MessageHeader; samples: Sample[] } {
  const signals = SIGNALS.slice(0, r.int(1, SIGNALS.length));
  const gens = new Map(signals.map((s) => [s, seriesValues(r)]));
  let ts = 1.5e9 + r.int(0, 4e8) + r.int(0, 999_999) / 1e6;
  const samples: Sample[] = [];
  const n = r.int(0, r.next() < 0.1 ? 600 : 120);
  for (let i = 0; i < n; i++) {
    const signal = r.pick(signals);
    // Mostly forward by whole µs; sometimes back in time (a late OBD answer), sometimes a sub-µs clock reading.
    ts += r.next() < 0.05 ? -r.int(0, 5000) / 1e6 : r.int(0, 100_000) / 1e6;
    samples.push({ ts: r.next() < 0.1 ? ts + r.next() / 1e6 : ts, signal, value: gens.get(signal)!() });
  }
  const header: MessageHeader = {
    deviceId: r.pick(['demo-001', 'truck-0012', 'ÄÖÜ-car', '']),
    seq: r.next() < 0.1 ? Number.MAX_SAFE_INTEGER - r.int(0, 10) : r.int(0, 1e9),
    kind: r.next() < 0.3 ? 'events' : 'telemetry',
    priority: r.int(0, 7) as MessageHeader['priority'],
    createdAt: 1_700_000_000_000 + r.int(0, 1e9),
  };
  if (header.kind === 'events') header.trigger = { rule: r.pick(['harsh-brake', 'overheat']), ts: usRound(ts) };
  return { header, samples };
}

function assertRejects(bytes: Uint8Array, format: PayloadFormat, message: RegExp): void {
  assert.throws(
    () => decodeMessage(bytes, format),
    (err: unknown) => {
      assert.ok(err instanceof PayloadError, `expected a PayloadError, got ${String(err)}`);
      assert.match(err.message, message);
      return true;
    },
  );
}

const withEnvelope = (envelope: number, body: Uint8Array): Uint8Array => Uint8Array.from([envelope, ...body]);

const HEADER: MessageHeader = { deviceId: 'truck-0012', seq: 42, kind: 'telemetry', priority: 3, createdAt: 1635188455050 };
/** The first EEC1 frames of the truck log, decoded: the documented example. */
const EXAMPLE: Sample[] = [
  { ts: 1635188455.0299, signal: 'can0.EEC1.EngineSpeed', value: 649 },
  { ts: 1635188455.0389, signal: 'can0.EEC1.EngineSpeed', value: 649.25 },
  { ts: 1635188455.04985, signal: 'can0.EEC1.EngineSpeed', value: 649.25 },
];
const EXAMPLE_HEX =
  '01' +
  '89' +
  '01' +
  '6a747275636b2d30303132' +
  '182a' +
  '00' +
  '03' +
  '1b0000017cb8d3b68a' +
  'f6' +
  '1b0005cf31fb00bc8c' +
  '81' +
  '84' +
  '7563616e302e454543312e456e67696e655370656564' +
  'f93400' +
  '83' +
  '00' +
  '192328' +
  '192ac6' +
  '83' +
  '190a24' +
  '01' +
  '00';

// ---- tests ----

describe('JSON payload', () => {
  it('round-trips header (trigger included) and samples exactly, in order', () => {
    const header: MessageHeader = {
      deviceId: 'demo-001',
      seq: 7,
      kind: 'events',
      priority: 6,
      createdAt: 1700000000123,
      trigger: { rule: 'harsh-brake', ts: 1700000000.087654 },
    };
    const samples: Sample[] = [
      { ts: 1700000000.1234567, signal: 'can0.VEHICLE_DYNAMICS.VehicleSpeed', value: 52.300000000000004 },
      { ts: 1700000000.0001, signal: 'can0.GEAR.State', value: 'DRIVE' },
      { ts: 1700000000.1234567, signal: 'can0.VEHICLE_DYNAMICS.VehicleSpeed', value: -1e-300 },
      { ts: 1700000000.2, signal: 'obd.obd.rpm', value: 2 ** 53 },
    ];
    const bytes = encodeMessage(header, samples, 'json');
    const text = Buffer.from(bytes).toString('utf8');
    assert.ok(
      text.startsWith(
        '{"deviceId":"demo-001","seq":7,"kind":"events","priority":6,"createdAt":1700000000123,"trigger":{"rule":"harsh-brake","ts":1700000000.087654},"samples":[{"ts":1700000000.1234567,',
      ),
      text,
    );
    assert.deepEqual(decodeMessage(bytes, 'json'), { header, samples });
    const telemetry = { ...header, kind: 'telemetry' as const, trigger: undefined };
    delete telemetry.trigger;
    assert.deepEqual(decodeMessage(encodeMessage(telemetry, [], 'json'), 'json'), { header: telemetry, samples: [] });
  });

  it('is exact for every finite random batch (2000 seeded batches)', () => {
    const r = rng(0x15_0a);
    for (let k = 0; k < 2000; k++) {
      const { header, samples } = randomBatch(r);
      const finite = samples.filter((s) => typeof s.value === 'string' || (Number.isFinite(s.value) && !Object.is(s.value, -0)));
      assert.deepEqual(decodeMessage(encodeMessage(header, finite, 'json'), 'json'), { header, samples: finite }, `batch ${k}`);
    }
  });

  it('writes NaN and ±Infinity as null, read back as NaN, and -0 as 0 (JSON has neither)', () => {
    const samples: Sample[] = [NaN, Infinity, -Infinity, -0].map((value, i) => ({ ts: 1700000000 + i, signal: 'x', value }));
    const bytes = encodeMessage(HEADER, samples, 'json');
    assert.match(
      Buffer.from(bytes).toString(),
      /"samples":\[\{"ts":1700000000,"signal":"x","value":null\},\{"ts":1700000001,"signal":"x","value":null\},\{"ts":1700000002,"signal":"x","value":null\},\{"ts":1700000003,"signal":"x","value":0\}\]/,
    );
    assert.deepEqual(
      decodeMessage(bytes, 'json').samples.map((s) => s.value),
      [NaN, NaN, NaN, 0],
    );
  });
});

describe('binary payload: round trip', () => {
  it('is lossless for special, negative, scaled, large and text values; groups by signal; ts to the µs', () => {
    const values: (number | string)[] = [
      -0,
      0,
      NaN,
      Infinity,
      -Infinity,
      -1,
      -273.15,
      12.5,
      3 * 0.1,
      7 * 0.05,
      11 * 0.25,
      1001 * 0.00390625,
      2 ** 53,
      -(2 ** 53),
      Number.MAX_SAFE_INTEGER,
      -Number.MAX_SAFE_INTEGER,
      2 ** 64,
      Number.MIN_VALUE,
      -Number.MAX_VALUE,
      'DRIVE',
      'Ölstand niedrig',
    ];
    const samples: Sample[] = [];
    values.forEach((value, i) => {
      samples.push({ ts: 1700000000 + i * 0.000001, signal: 'mixed', value });
      samples.push({ ts: 1700000000.5 - i * 0.0100013, signal: `only-${typeof value}`, value });
    });
    // Each kind of series alone too: all -0, all scaled, all big, safe integers whose differences are not safe.
    for (const [signal, list] of [
      ['neg-zero', [-0, -0]],
      ['scaled', [0.1, 0.2, 0.30000000000000004, -0.1]],
      ['big', [2 ** 53, 2 ** 53 - 1, -(2 ** 53)]],
      ['wide', [Number.MAX_SAFE_INTEGER, -(Number.MAX_SAFE_INTEGER - 1), 3]],
    ] as const) {
      list.forEach((value, i) => samples.push({ ts: 1700000001.0000005 + i * 0.0000015, signal, value }));
    }
    const decoded = decodeMessage(encodeMessage(HEADER, samples, 'cbor'), 'cbor');
    assert.deepEqual(decoded.header, HEADER);
    // deepStrictEqual compares numbers with Object.is: -0 is not 0, NaN is NaN.
    assert.deepEqual(decoded.samples, expectedBinary(samples));
    assert.deepEqual(
      decoded.samples.slice(0, 3).map((s) => s.value),
      [-0, 0, NaN],
    );
    assert.equal(decoded.samples.find((s) => s.signal === 'neg-zero' && Object.is(s.value, -0))?.ts, 1700000001.000001);
  });

  it('keeps the header, the trigger (to the µs) and empty batches', () => {
    const header: MessageHeader = {
      deviceId: '',
      seq: Number.MAX_SAFE_INTEGER,
      kind: 'events',
      priority: 7,
      createdAt: 0,
      trigger: { rule: 'overheat', ts: 1700000000.1234567 },
    };
    assert.deepEqual(decodeMessage(encodeMessage(header, [], 'cbor'), 'cbor'), {
      header: { ...header, trigger: { rule: 'overheat', ts: 1700000000.123457 } },
      samples: [],
    });
  });

  it('is lossless over 3000 seeded random batches, and a plain CBOR reader following the docs agrees', () => {
    const seed = 0xc0dec;
    const r = rng(seed);
    const envelopes = { [ENVELOPE_CBOR]: 0, [ENVELOPE_CBOR_DEFLATE]: 0 };
    let sampleCount = 0;
    for (let k = 0; k < 3000; k++) {
      const { header, samples } = randomBatch(r);
      const bytes = encodeMessage(header, samples, 'cbor');
      envelopes[bytes[0] as 1 | 2]++;
      sampleCount += samples.length;
      const decoded = decodeMessage(bytes, 'cbor');
      const where = `seed ${seed}, batch ${k}`;
      const expectedHeader = header.trigger ? { ...header, trigger: { ...header.trigger, ts: usRound(header.trigger.ts) } } : header;
      assert.deepEqual(decoded.header, expectedHeader, where);
      assert.deepEqual(decoded.samples, expectedBinary(samples), where);
      const docs = readPerDocs(bytes);
      assert.deepEqual(docs.samples, decoded.samples, where);
      assert.deepEqual(
        docs.item.slice(0, 7),
        [
          1,
          header.deviceId,
          header.seq,
          header.kind === 'events' ? 1 : 0,
          header.priority,
          header.createdAt,
          header.trigger ? [header.trigger.rule, Math.round(header.trigger.ts * 1e6)] : null,
        ],
        where,
      );
    }
    // Both envelopes were exercised, on a real amount of data.
    assert.ok(envelopes[ENVELOPE_CBOR] > 100 && envelopes[ENVELOPE_CBOR_DEFLATE] > 100, JSON.stringify(envelopes));
    assert.ok(sampleCount > 150_000, `${sampleCount} samples`);
  });
});

describe('binary payload: layout as a standard CBOR reader sees it', () => {
  it('the documented example, byte for byte', () => {
    const bytes = encodeMessage(HEADER, EXAMPLE, 'cbor');
    assert.equal(Buffer.from(bytes).toString('hex'), EXAMPLE_HEX);
    assert.equal(bytes.length, 78);
    assert.deepEqual(decodeCbor(bytes.subarray(1)), [
      1,
      'truck-0012',
      42,
      0,
      3,
      1635188455050,
      null,
      1635188455029900,
      [['can0.EEC1.EngineSpeed', 0.25, [0, 9000, 10950], [2596, 1, 0]]],
    ]);
    assert.deepEqual(decodeMessage(bytes, 'cbor'), { header: HEADER, samples: EXAMPLE });
  });

  it('deflates a larger message (envelope 0x02, raw DEFLATE) into the same item', () => {
    const samples: Sample[] = [];
    for (let i = 0; i < 50; i++) {
      samples.push({ ts: 1700000000 + i * 0.01, signal: 'can0.EEC1.EngineSpeed', value: 800 + (i % 7) * 0.125 });
      samples.push({ ts: 1700000000.005 + i * 0.01, signal: 'can0.GEAR.State', value: i < 25 ? 'NEUTRAL' : 'DRIVE' });
    }
    const header: MessageHeader = { ...HEADER, kind: 'events', priority: 6, trigger: { rule: 'gear-change', ts: 1700000000.255 } };
    const bytes = encodeMessage(header, samples, 'cbor');
    assert.equal(bytes[0], ENVELOPE_CBOR_DEFLATE);
    const item = decodeCbor(inflateRawSync(bytes.subarray(1))) as unknown[];
    assert.deepEqual(item.slice(0, 8), [BINARY_LAYOUT_VERSION, 'truck-0012', 42, 1, 6, 1635188455050, ['gear-change', 1700000000255000], 1700000000000000]);
    const [speed, gear] = item[8] as [string, number, number[], unknown[]][];
    assert.deepEqual(speed!.slice(0, 2), ['can0.EEC1.EngineSpeed', 0.125]);
    assert.deepEqual(speed![2], [0, ...Array<number>(49).fill(10_000)]);
    assert.deepEqual(speed![3].slice(0, 9), [6400, 1, 1, 1, 1, 1, 1, -6, 1]);
    assert.deepEqual(gear!.slice(0, 2), ['can0.GEAR.State', 0]);
    assert.deepEqual(gear![2].slice(0, 3), [5000, 10_000, 10_000]);
    assert.deepEqual(gear![3].slice(23, 27), ['NEUTRAL', 'NEUTRAL', 'DRIVE', 'DRIVE']);
  });

  it('writes -0, NaN and ±Infinity as half floats, 2^53 as a float, safe integers as integers, 0.1 as a double', () => {
    const bytes = encodeMessage(
      HEADER,
      [-0, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 53 - 1), 0.1, 'A'].map((value, i) => ({ ts: 1 + i, signal: 'v', value })),
      'cbor',
    );
    const plain = bytes[0] === ENVELOPE_CBOR_DEFLATE ? inflateRawSync(bytes.subarray(1)) : bytes.subarray(1);
    const hex = Buffer.from(plain).toString('hex');
    // The values array: 8 items, step 0 (text forces the values as they are).
    assert.ok(hex.endsWith('88' + 'f98000' + 'f97e00' + 'f97c00' + 'f9fc00' + 'fa5a000000' + '3b001ffffffffffffe' + 'fb3fb999999999999a' + '6141'), hex);
  });
});

describe('binary payload: corrupt input', () => {
  const valid = encodeMessage(HEADER, EXAMPLE, 'cbor');
  const big = encodeMessage(
    HEADER,
    Array.from({ length: 300 }, (_, i) => ({ ts: 1700000000 + i / 100, signal: `s${i % 4}`, value: Math.sin(i) })),
    'cbor',
  );
  const item = decodeCbor(valid.subarray(1)) as unknown[];
  const rewrap = (x: unknown): Uint8Array => withEnvelope(ENVELOPE_CBOR, encodeCbor(x));

  it('rejects truncated messages', () => {
    assert.equal(big[0], ENVELOPE_CBOR_DEFLATE);
    assertRejects(big.subarray(0, big.length / 2), 'cbor', /^corrupt deflate stream: unexpected end of file/);
    assertRejects(valid.subarray(0, valid.length - 1), 'cbor', /^corrupt CBOR: /);
    assertRejects(valid.subarray(0, 1), 'cbor', /^binary message too short \(1 bytes\)$/);
    assertRejects(new Uint8Array(0), 'cbor', /^binary message too short \(0 bytes\)$/);
  });

  it('rejects an unknown envelope byte, naming it', () => {
    assertRejects(withEnvelope(0x03, valid.subarray(1)), 'cbor', /^unknown envelope byte 0x03 \(expected 0x01 CBOR or 0x02 deflated CBOR\)$/);
    assertRejects(withEnvelope(0x7b, Buffer.from('"deviceId":"x"}')), 'cbor', /^unknown envelope byte 0x7b/);
  });

  it('rejects a garbage deflate stream, and one that inflates beyond the limit', () => {
    assertRejects(withEnvelope(ENVELOPE_CBOR_DEFLATE, Buffer.from('ff00ee11dd22cc33bb44', 'hex')), 'cbor', /^corrupt deflate stream: /);
    // Plain CBOR wrongly labelled deflated.
    assertRejects(withEnvelope(ENVELOPE_CBOR_DEFLATE, valid.subarray(1)), 'cbor', /^corrupt deflate stream: /);
    const bomb = withEnvelope(ENVELOPE_CBOR_DEFLATE, deflateRawSync(Buffer.alloc(MAX_INFLATED_BYTES + 1)));
    assert.ok(bomb.length < 100_000);
    assertRejects(bomb, 'cbor', /^corrupt deflate stream: /);
  });

  it('rejects a wrong array length and a wrong version (the version is named even at another length)', () => {
    assertRejects(rewrap(item.slice(0, 8)), 'cbor', /^expected a CBOR array of 9 elements, got 8$/);
    assertRejects(rewrap([...item, 0]), 'cbor', /^expected a CBOR array of 9 elements, got 10$/);
    assertRejects(rewrap([2, ...item.slice(1)]), 'cbor', /^unsupported layout version 2 \(this decoder reads 1\)$/);
    assertRejects(rewrap([2, ...item.slice(1), 'new field']), 'cbor', /^unsupported layout version 2/);
    assertRejects(rewrap({ version: 1 }), 'cbor', /^expected a CBOR array$/);
    assertRejects(withEnvelope(ENVELOPE_CBOR, Buffer.from('8901', 'hex')), 'cbor', /^corrupt CBOR: /);
    assertRejects(withEnvelope(ENVELOPE_CBOR, Buffer.concat([valid.subarray(1), Buffer.from([0])])), 'cbor', /^corrupt CBOR: /);
  });

  it('rejects bad fields with a message naming them', () => {
    const at = (i: number, v: unknown): Uint8Array => rewrap(item.map((x, j) => (j === i ? v : x)));
    const series = (s: unknown[]): Uint8Array => at(8, [s]);
    assertRejects(at(2, -1), 'cbor', /^seq: expected an integer 0 to 2\^53-1, got -1$/);
    assertRejects(
      withEnvelope(ENVELOPE_CBOR, Buffer.from(Buffer.from(valid.subarray(1)).toString('hex').replace('182a', '1b0020000000000000'), 'hex')),
      'cbor',
      /^seq: expected an integer/,
    );
    assertRejects(at(3, 2), 'cbor', /^kind: expected 0 \(telemetry\) or 1 \(events\), got 2$/);
    assertRejects(at(4, 8), 'cbor', /^priority: expected 0-7, got 8$/);
    assertRejects(at(6, ['rule']), 'cbor', /^trigger: expected null or \[rule, tsUs\]$/);
    assertRejects(at(7, 1.5), 'cbor', /^baseUs: expected an integer$/);
    assertRejects(series(['x', -1, [0], [1]]), 'cbor', /^series\[0\]: step -1 is not 0 or a positive number$/);
    assertRejects(series(['x', 0.25, [0, 1], [1]]), 'cbor', /^series\[0\]: expected two arrays of the same length/);
    assertRejects(series(['x', 0.25, [0.5], [1]]), 'cbor', /^series\[0\]: timestamp delta 0 is not an integer$/);
    assertRejects(series(['x', 0.25, [0], [1.5]]), 'cbor', /^series\[0\]: value delta 0 is not an integer$/);
    assertRejects(series(['x', 0.25, [0, 0], [2 ** 52, 2 ** 52]]), 'cbor', /^series\[0\]: value 1 out of range$/);
    assertRejects(series(['x', 0, [0], [null]]), 'cbor', /^series\[0\]: value 0 is neither number nor text$/);
    assertRejects(series([7, 0, [0], [1]]), 'cbor', /^series\[0\]: name is not text$/);
  });

  it('fuzz: 10,000 mutations of valid messages each decode or throw PayloadError', () => {
    const seed = 0xf022;
    const r = rng(seed);
    const bases: Uint8Array[] = [valid, big];
    for (let k = 0; k < 40; k++) bases.push(encodeMessage(randomBatch(r).header, randomBatch(r).samples, 'cbor'));
    const mutate = (bytes: Uint8Array): Uint8Array => {
      const b = Array.from(bytes);
      const count = r.int(1, 4);
      for (let n = 0; n < count; n++) {
        const at = r.int(0, Math.max(0, b.length - 1));
        switch (r.int(0, 5)) {
          case 0:
            b[at] = (b[at] ?? 0) ^ (1 << r.int(0, 7));
            break; // bit flip
          case 1:
            b[at] = r.int(0, 255);
            break; // byte set
          case 2:
            b.length = r.int(0, b.length);
            break; // truncate
          case 3:
            b.splice(at, 0, ...Array.from({ length: r.int(1, 9) }, () => r.int(0, 255)));
            break; // insert
          case 4:
            b.splice(at, r.int(1, 8));
            break; // delete
          default:
            b.splice(at, 0, ...b.slice(r.int(0, b.length), r.int(0, b.length))); // duplicate a stretch
        }
      }
      return Uint8Array.from(b);
    };
    let decoded = 0;
    let rejected = 0;
    for (let k = 0; k < 10_000; k++) {
      const base = r.pick(bases);
      let input: Uint8Array;
      // Mutating deflated bytes mostly breaks the stream; half the cases mutate the CBOR inside and wrap it again,
      // deflated or not, to reach the structural checks.
      if (r.next() < 0.5) input = mutate(base);
      else {
        const plain = base[0] === ENVELOPE_CBOR_DEFLATE ? inflateRawSync(base.subarray(1)) : base.subarray(1);
        const inner = mutate(plain);
        input = r.next() < 0.5 ? withEnvelope(ENVELOPE_CBOR, inner) : withEnvelope(ENVELOPE_CBOR_DEFLATE, deflateRawSync(inner));
      }
      try {
        decodeMessage(input, 'cbor');
        decoded++;
      } catch (err) {
        if (!(err instanceof PayloadError)) assert.fail(`seed ${seed}, case ${k}: ${String(err)} for ${Buffer.from(input).toString('hex')}`);
        rejected++;
      }
    }
    assert.equal(decoded + rejected, 10_000);
    assert.ok(decoded > 500 && rejected > 5000, `decoded ${decoded}, rejected ${rejected}`);
  });

  it('fuzz: 2,000 mutations of JSON messages each decode or throw PayloadError', () => {
    const r = rng(0x150f);
    const text = Buffer.from(encodeMessage({ ...HEADER, kind: 'events', trigger: { rule: 'r', ts: 1.5 } }, EXAMPLE, 'json')).toString();
    let rejected = 0;
    for (let k = 0; k < 2000; k++) {
      const chars = text.split('');
      for (let n = r.int(1, 3); n > 0; n--)
        chars.splice(r.int(0, chars.length), r.int(0, 3), r.pick(['', '{', '}', '[', ']', 'null', '"', ',', '1', '-', 'x', ':']));
      try {
        decodeMessage(Buffer.from(chars.join('')), 'json');
      } catch (err) {
        if (!(err instanceof PayloadError)) assert.fail(`case ${k}: ${String(err)} for ${chars.join('')}`);
        rejected++;
      }
    }
    assert.ok(rejected > 1000, `rejected ${rejected}`);
    assertRejects(Buffer.from('[1,2]'), 'json', /^not a JSON message object$/);
    assertRejects(Buffer.from('{"deviceId":"x","seq":1,"kind":"telemetry","priority":3,"createdAt":1,"samples":[7]}'), 'json', /^samples\[0\]: expected/);
  });
});

describe('encoding refuses what the other side could not decode', () => {
  const one = (ts: number): Sample[] => [{ ts, signal: 'x', value: 1 }];
  for (const format of ['json', 'cbor'] as const) {
    it(`${format}: non-finite timestamps, bad header fields`, () => {
      const rejects = (header: MessageHeader, samples: Sample[], message: RegExp): void => {
        assert.throws(
          () => encodeMessage(header, samples, format),
          (err: unknown) => err instanceof PayloadError && message.test(err.message),
        );
      };
      rejects(HEADER, one(NaN), /^samples\[0\]: ts NaN is not a finite unix time$/);
      rejects(HEADER, one(Infinity), /^samples\[0\]: ts Infinity is not a finite unix time$/);
      rejects(HEADER, one(1e10), /^samples\[0\]: ts 10000000000 is not a finite unix time$/); // beyond 2^53 µs
      rejects({ ...HEADER, priority: 8 as MessageHeader['priority'] }, [], /^priority: expected 0-7, got 8$/);
      rejects({ ...HEADER, seq: 1.5 }, [], /^seq: expected an integer/);
      rejects({ ...HEADER, kind: 'status' as MessageHeader['kind'] }, [], /^kind: expected telemetry or events$/);
      rejects({ ...HEADER, trigger: { rule: 'r', ts: NaN } }, [], /^trigger: expected/);
    });
  }
  it('cbor: timestamps too far apart for a safe µs delta', () => {
    const samples: Sample[] = [
      { ts: -9e9, signal: 'x', value: 1 },
      { ts: 9e9, signal: 'x', value: 2 },
    ];
    assert.throws(
      () => encodeMessage(HEADER, samples, 'cbor'),
      /^PayloadError: samples of x: timestamps -9000000000000000 µs and 9000000000000000 µs too far apart$/,
    );
    // JSON has no deltas: fine there.
    assert.deepEqual(decodeMessage(encodeMessage(HEADER, samples, 'json'), 'json').samples, samples);
  });
});

describe('size on real decoded data (J1939 truck log)', () => {
  it('binary at batch 200 is far below one JSON object per sample, and lossless', (t) => {
    const log = sharedTestdata('logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
    const dbc = sharedTestdata('dbc', 'css_j1939_demo.dbc');
    // Fail, never skip: these figures are quoted in docs/payload-format.md.
    for (const file of [log, dbc]) assert.ok(existsSync(file), `shared test data missing: ${file} (expected ../shared/testdata beside the repository)`);
    // J1939 matching: the DBC's IDs carry SA 0xFE, the truck's frames other sources and priorities.
    const database = compileDatabase(loadDbcFile(dbc), { j1939: true });
    const samples: Sample[] = [];
    parseCandumpText(readFileSync(log, 'utf8'), (frame) => {
      const decoded = database.decode(frame);
      if (!decoded) return;
      for (const [name, value] of Object.entries(decoded.signals)) {
        // Samples hold doubles, as the collector's Float64Array does (only 64-bit raw signals decode to bigint).
        samples.push({ ts: frame.ts, signal: `${frame.bus}.${decoded.message.name}.${name}`, value: typeof value === 'bigint' ? Number(value) : value });
      }
    });
    assert.equal(samples.length, 13_991);
    assert.deepEqual([...new Set(samples.map((s) => s.signal))], ['can0.EEC1.EngineSpeed', 'can0.CCVS1.WheelBasedVehicleSpeed']);

    const json1 = bytesPerSample(samples, 1, 'json');
    const json200 = bytesPerSample(samples, 200, 'json');
    const cbor200 = bytesPerSample(samples, 200, 'cbor');
    t.diagnostic(
      `${samples.length} samples; bytes per sample: JSON batch 1 ${json1.toFixed(1)}, JSON batch 200 ${json200.toFixed(1)}, binary batch 200 ${cbor200.toFixed(2)}`,
    );
    assert.ok(cbor200 < json1 / 5, `binary ${cbor200} vs JSON ${json1}`);
    assert.ok(cbor200 < json200 / 5, `binary ${cbor200} vs JSON batched ${json200}`);

    // The figures come from messages that decode to the very samples.
    for (let i = 0; i < samples.length; i += 200) {
      const batch = samples.slice(i, i + 200);
      assert.deepEqual(decodeMessage(encodeMessage(HEADER, batch, 'cbor'), 'cbor').samples, expectedBinary(batch), `batch at ${i}`);
      assert.deepEqual(decodeMessage(encodeMessage(HEADER, batch, 'json'), 'json').samples, batch, `batch at ${i}`);
    }
  });
});
