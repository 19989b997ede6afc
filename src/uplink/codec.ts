/**
 * Payload codecs: a batch of samples and its header, as the bytes of one MQTT message. Two formats (the device config
 * picks one; docs/payload-format.md describes both with examples):
 *
 * JSON (`json`): readable UTF-8, one object per message, samples as objects in their original order:
 *   {"deviceId":"demo-001","seq":42,"kind":"telemetry","priority":3,"createdAt":1700000000123,
 *    "samples":[{"ts":1700000000.1,"signal":"can0.VEHICLE_DYNAMICS.VehicleSpeed","value":52.3}, ...]}
 *   `trigger` ({"rule","ts"}) is present for events only. ts is unix seconds as the agent holds it (no rounding).
 *   JSON has no NaN or ±Infinity: such a value is written as null (as JSON.stringify does) and read back as NaN.
 *   -0 is written as 0.
 *
 * Binary (`cbor`): a one-byte envelope, then a CBOR (RFC 8949) data item, deflated or not:
 *
 *   byte 0     0x01: the rest is the CBOR item as is;  0x02: the rest is the CBOR item compressed with raw DEFLATE
 *              (RFC 1951, no zlib or gzip header). Compression is used only when it makes the message smaller.
 *   CBOR item  an array whose first element is the layout version; version 1 has 9 elements:
 *     [0] uint        layout version, 1
 *     [1] text        deviceId
 *     [2] uint        seq
 *     [3] uint        kind: 0 telemetry, 1 events
 *     [4] uint        priority 0-7
 *     [5] uint        createdAt, unix ms
 *     [6] null | [text rule, int tsUs]   the trigger (events), tsUs in unix µs
 *     [7] int         baseUs: unix µs of the first sample (0 when there are none)
 *     [8] array       series: one per signal, in order of the signal's first sample:
 *          [ text name, step, [int tsDelta...], [value...] ]
 *          tsDelta: µs; the series' first delta is from baseUs, each further one from the previous sample of the
 *            series (deltas may be negative).
 *          step = 0: values are the samples' values as they are (CBOR numbers or text).
 *          step > 0 (a float or int): values are integer deltas: m[0] = value[0], m[i] = m[i-1] + value[i], and the
 *            sample value is the IEEE-754 double product m[i] * step (computed in binary64, as any language's
 *            double multiplication does). The encoder chooses this form only when that product reproduces every
 *            value bit for bit, so it is lossless; DBC signals (raw × factor) almost always qualify, and their deltas
 *            are small integers of one or two bytes.
 *   Decoding gives the samples grouped by signal (in order of first appearance), each signal's samples in their
 *   original order, timestamps rounded to the microsecond.
 *
 * Numbers are CBOR integers (major type 0/1) when integral and safe (|n| < 2^53) and not -0, otherwise floats (major
 * type 7: half, single or double, the shortest that holds the value exactly, so -0, NaN and ±Infinity survive): the
 * codec never rounds a value. Written with cborg. Every integer the format holds (seq, µs, deltas) is a safe integer.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { decode as decodeCbor, encode as encodeCbor, Token, Type, type EncodeOptions } from 'cborg';
import type { MessageHeader, MessageKind, Priority, Sample } from '../collect/sample.js';

export type PayloadFormat = 'json' | 'cbor';

export const BINARY_LAYOUT_VERSION = 1;
export const ENVELOPE_CBOR = 0x01;
export const ENVELOPE_CBOR_DEFLATE = 0x02;
/** Below this, deflate's own overhead (and its CPU) does not pay. */
const COMPRESS_MIN_BYTES = 64;
/** Inflated size beyond which a message is refused: a few hundred bytes of deflate can expand to gigabytes. */
export const MAX_INFLATED_BYTES = 64 * 1024 * 1024;
/** Finest power-of-two step tried (2^-52): beyond it multiples are no longer safe integers for ordinary values. */
const MAX_STEP_EXPONENT = 52;
/**
 * Decimal steps the encoder tries when a series is not a multiple of a power of two (those are found exactly, so
 * 1, 0.5, 0.125, 1/256 ... need no list); common DBC factors.
 */
const DECIMAL_STEPS = [0.1, 0.2, 0.4, 0.05, 0.01, 0.02, 0.005, 0.001, 1e-4, 1e-5, 1e-6, 1e-7];

export class PayloadError extends Error {
  override readonly name = 'PayloadError';
}

const KINDS: readonly MessageKind[] = ['telemetry', 'events'];

/** Throws PayloadError for a header or sample that the other side could not decode (never for a value: see above). */
export function encodeMessage(header: MessageHeader, samples: readonly Sample[], format: PayloadFormat): Uint8Array {
  checkHeader(header.deviceId, header.seq, header.kind, header.priority, header.createdAt);
  if (header.trigger !== undefined) checkTrigger(header.trigger);
  samples.forEach((s, i) => {
    if (typeof s.ts !== 'number' || !Number.isSafeInteger(toUs(s.ts))) throw new PayloadError(`samples[${i}]: ts ${String(s.ts)} is not a finite unix time`);
    if (typeof s.signal !== 'string') throw new PayloadError(`samples[${i}]: signal is not a string`);
    if (typeof s.value !== 'number' && typeof s.value !== 'string') throw new PayloadError(`samples[${i}]: value is neither number nor string`);
  });
  return format === 'json' ? encodeJson(header, samples) : encodeBinary(header, samples);
}

/** Throws PayloadError, and nothing else, for bytes that are not a valid message of `format`. */
export function decodeMessage(bytes: Uint8Array, format: PayloadFormat): { header: MessageHeader; samples: Sample[] } {
  return format === 'json' ? decodeJson(bytes) : decodeBinary(bytes);
}

// ---- JSON ----

function encodeJson(header: MessageHeader, samples: readonly Sample[]): Uint8Array {
  const body: Record<string, unknown> = {
    deviceId: header.deviceId,
    seq: header.seq,
    kind: header.kind,
    priority: header.priority,
    createdAt: header.createdAt,
  };
  if (header.trigger) body.trigger = { rule: header.trigger.rule, ts: header.trigger.ts };
  // NaN and ±Infinity become null here (JSON.stringify's rule); decodeJson reads null as NaN.
  body.samples = samples.map((s) => ({ ts: s.ts, signal: s.signal, value: s.value }));
  return Buffer.from(JSON.stringify(body), 'utf8');
}

function decodeJson(bytes: Uint8Array): { header: MessageHeader; samples: Sample[] } {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new PayloadError(`not a JSON message: ${(err as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new PayloadError('not a JSON message object');
  const o = body as Record<string, unknown>;
  const header = checkHeader(o.deviceId, o.seq, o.kind, o.priority, o.createdAt);
  if (o.trigger !== undefined) header.trigger = checkTrigger(o.trigger);
  if (!Array.isArray(o.samples)) throw new PayloadError('samples: expected an array');
  const samples = o.samples.map((s: unknown, i): Sample => {
    const x = (typeof s === 'object' && s !== null ? s : {}) as Record<string, unknown>;
    const value = x.value === null ? NaN : x.value;
    if (typeof x.ts !== 'number' || typeof x.signal !== 'string' || (typeof value !== 'number' && typeof value !== 'string')) {
      throw new PayloadError(`samples[${i}]: expected {ts: number, signal: string, value: number | string | null}`);
    }
    return { ts: x.ts, signal: x.signal, value };
  });
  return { header, samples };
}

function checkHeader(deviceId: unknown, seq: unknown, kind: unknown, priority: unknown, createdAt: unknown): MessageHeader {
  if (typeof deviceId !== 'string') throw new PayloadError('deviceId: expected a string');
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) throw new PayloadError(`seq: expected an integer 0 to 2^53-1, got ${String(seq)}`);
  if (kind !== 'telemetry' && kind !== 'events') throw new PayloadError('kind: expected telemetry or events');
  if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < 0 || priority > 7)
    throw new PayloadError(`priority: expected 0-7, got ${String(priority)}`);
  if (typeof createdAt !== 'number' || !Number.isFinite(createdAt)) throw new PayloadError('createdAt: expected a finite number');
  return { deviceId, seq, kind, priority: priority as Priority, createdAt };
}

function checkTrigger(trigger: unknown): { rule: string; ts: number } {
  const t = (typeof trigger === 'object' && trigger !== null ? trigger : {}) as Record<string, unknown>;
  if (typeof t.rule !== 'string' || typeof t.ts !== 'number' || !Number.isFinite(t.ts))
    throw new PayloadError('trigger: expected {rule: string, ts: finite number}');
  return { rule: t.rule, ts: t.ts };
}

// ---- binary ----

/** Unix µs; `+ 0` turns -0 into 0, so every integer in the message is a CBOR integer. */
const toUs = (ts: number): number => Math.round(ts * 1e6) + 0;

/** cborg writes -0 as the integer 0; this keeps its sign (a half-precision float, f9 8000). */
const CBOR_OPTIONS: EncodeOptions = {
  typeEncoders: { number: (n: number) => (Object.is(n, -0) ? new Token(Type.float, -0) : null) },
};

/** The exponent e (0..MAX_STEP_EXPONENT) of the coarsest step 2^-e of which `v` is an integer multiple, or -1. */
function binaryExponent(v: number): number {
  let x = v;
  for (let e = 0; e <= MAX_STEP_EXPONENT; e++, x *= 2) if (Number.isInteger(x)) return e; // x * 2 is exact
  return -1;
}

/**
 * The integer deltas that give `values` as m * step (m the running sum, as the decoder computes it), or undefined
 * when some value does not come back bit for bit (-0, NaN, ±Infinity never do) or an integer is not safe.
 */
function stepDeltas(values: readonly number[], step: number): number[] | undefined {
  const deltas = new Array<number>(values.length);
  let m = 0;
  for (let i = 0; i < values.length; i++) {
    const target = Math.round(values[i]! / step);
    const d = target - m + 0;
    if (!Number.isSafeInteger(target) || !Number.isSafeInteger(d)) return undefined;
    m += d; // the decoder's sum, replayed: what it will multiply, not what we meant
    if (!Object.is(m * step, values[i])) return undefined;
    deltas[i] = d;
  }
  return deltas;
}

/** Step and the values to write for one series: the first step that is lossless, else 0 and the values as they are. */
function encodeValues(values: readonly (number | string)[]): [number, (number | string)[]] {
  if (values.some((v) => typeof v !== 'number')) return [0, values.slice()];
  const numbers = values as readonly number[];
  let exponent = 0;
  for (const v of numbers) {
    const e = binaryExponent(v);
    if (e < 0) {
      exponent = -1;
      break;
    }
    exponent = Math.max(exponent, e);
  }
  const steps = exponent >= 0 ? [2 ** -exponent, ...DECIMAL_STEPS] : DECIMAL_STEPS;
  for (const step of steps) {
    const deltas = stepDeltas(numbers, step);
    if (deltas) return [step, deltas];
  }
  return [0, values.slice()];
}

function encodeBinary(header: MessageHeader, samples: readonly Sample[]): Uint8Array {
  const baseUs = samples.length > 0 ? toUs(samples[0]!.ts) : 0;
  const bySignal = new Map<string, Sample[]>();
  for (const s of samples) {
    const list = bySignal.get(s.signal);
    if (list) list.push(s);
    else bySignal.set(s.signal, [s]);
  }
  const series: unknown[] = [];
  for (const [name, list] of bySignal) {
    const deltas = new Array<number>(list.length);
    let previous = baseUs;
    for (let i = 0; i < list.length; i++) {
      const us = toUs(list[i]!.ts);
      deltas[i] = us - previous;
      // Both within ±2^53 (checked in encodeMessage) but their difference may not be: the sum would not come back.
      if (!Number.isSafeInteger(deltas[i])) throw new PayloadError(`samples of ${name}: timestamps ${previous} µs and ${us} µs too far apart`);
      previous = us;
    }
    const [step, values] = encodeValues(list.map((s) => s.value));
    series.push([name, step, deltas, values]);
  }
  const item = [
    BINARY_LAYOUT_VERSION,
    header.deviceId,
    header.seq,
    KINDS.indexOf(header.kind),
    header.priority,
    header.createdAt,
    header.trigger ? [header.trigger.rule, toUs(header.trigger.ts)] : null,
    baseUs,
    series,
  ];
  const plain = encodeCbor(item, CBOR_OPTIONS);
  if (plain.length >= COMPRESS_MIN_BYTES) {
    const packed = deflateRawSync(plain);
    if (packed.length < plain.length) return withEnvelope(ENVELOPE_CBOR_DEFLATE, packed);
  }
  return withEnvelope(ENVELOPE_CBOR, plain);
}

function withEnvelope(kind: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(body.length + 1);
  out[0] = kind;
  out.set(body, 1);
  return out;
}

const hexByte = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;

function decodeBinary(bytes: Uint8Array): { header: MessageHeader; samples: Sample[] } {
  if (bytes.length < 2) throw new PayloadError(`binary message too short (${bytes.length} bytes)`);
  const body = bytes.subarray(1);
  let plain: Uint8Array;
  if (bytes[0] === ENVELOPE_CBOR) plain = body;
  else if (bytes[0] === ENVELOPE_CBOR_DEFLATE) {
    try {
      plain = inflateRawSync(body, { maxOutputLength: MAX_INFLATED_BYTES });
    } catch (err) {
      throw new PayloadError(`corrupt deflate stream: ${(err as Error).message}`);
    }
  } else throw new PayloadError(`unknown envelope byte ${hexByte(bytes[0]!)} (expected 0x01 CBOR or 0x02 deflated CBOR)`);
  let item: unknown;
  try {
    item = decodeCbor(plain);
  } catch (err) {
    throw new PayloadError(`corrupt CBOR: ${(err as Error).message}`);
  }
  if (!Array.isArray(item)) throw new PayloadError('expected a CBOR array');
  // The version first: a later layout may have another length, and "unsupported version" is what the reader needs.
  if (item[0] !== BINARY_LAYOUT_VERSION) throw new PayloadError(`unsupported layout version ${String(item[0])} (this decoder reads ${BINARY_LAYOUT_VERSION})`);
  if (item.length !== 9) throw new PayloadError(`expected a CBOR array of 9 elements, got ${item.length}`);
  const [, deviceId, seq, kindCode, priority, createdAt, trigger, baseUs, series] = item as unknown[];
  const kind = kindCode === 0 || kindCode === 1 ? KINDS[kindCode] : undefined;
  if (kind === undefined) throw new PayloadError(`kind: expected 0 (telemetry) or 1 (events), got ${String(kindCode)}`);
  const header = checkHeader(deviceId, seq, kind, priority, createdAt);
  if (trigger !== null) {
    if (!Array.isArray(trigger) || trigger.length !== 2 || typeof trigger[0] !== 'string' || !Number.isSafeInteger(trigger[1])) {
      throw new PayloadError('trigger: expected null or [rule, tsUs]');
    }
    header.trigger = { rule: trigger[0], ts: (trigger[1] as number) / 1e6 };
  }
  if (!Number.isSafeInteger(baseUs)) throw new PayloadError('baseUs: expected an integer');
  if (!Array.isArray(series)) throw new PayloadError('series: expected an array');
  const samples: Sample[] = [];
  series.forEach((entry: unknown, k) => {
    if (!Array.isArray(entry) || entry.length !== 4) throw new PayloadError(`series[${k}]: expected [name, step, tsDeltas, values]`);
    const [name, step, deltas, values] = entry as unknown[];
    if (typeof name !== 'string') throw new PayloadError(`series[${k}]: name is not text`);
    if (typeof step !== 'number' || !(step >= 0) || !Number.isFinite(step))
      throw new PayloadError(`series[${k}]: step ${String(step)} is not 0 or a positive number`);
    if (!Array.isArray(deltas) || !Array.isArray(values) || deltas.length !== values.length) {
      throw new PayloadError(`series[${k}]: expected two arrays of the same length (timestamp deltas, values)`);
    }
    let us = baseUs as number;
    let m = 0;
    for (let i = 0; i < deltas.length; i++) {
      const d = deltas[i] as unknown;
      const v = values[i] as unknown;
      if (!Number.isSafeInteger(d)) throw new PayloadError(`series[${k}]: timestamp delta ${i} is not an integer`);
      us += d as number;
      if (!Number.isSafeInteger(us)) throw new PayloadError(`series[${k}]: timestamp ${i} out of range`);
      let value: number | string;
      if (step > 0) {
        if (!Number.isSafeInteger(v)) throw new PayloadError(`series[${k}]: value delta ${i} is not an integer`);
        m += v as number;
        if (!Number.isSafeInteger(m)) throw new PayloadError(`series[${k}]: value ${i} out of range`);
        value = m * step;
      } else {
        if (typeof v !== 'number' && typeof v !== 'string') throw new PayloadError(`series[${k}]: value ${i} is neither number nor text`);
        value = v;
      }
      samples.push({ ts: us / 1e6, signal: name, value });
    }
  });
  return { header, samples };
}

/**
 * Wire bytes per sample when `samples` are sent in messages of `batchSize` samples in `format` (the last message may
 * be shorter). Headers are those a real device would send (a 12-character device id, growing seq).
 */
export function bytesPerSample(samples: readonly Sample[], batchSize: number, format: PayloadFormat): number {
  if (samples.length === 0) return 0;
  let total = 0;
  let seq = 1_000;
  for (let i = 0; i < samples.length; i += batchSize) {
    const batch = samples.slice(i, i + batchSize);
    const header: MessageHeader = {
      deviceId: 'demo-vehicle',
      seq: seq++,
      kind: 'telemetry',
      priority: 3,
      createdAt: Math.round(batch[batch.length - 1]!.ts * 1000),
    };
    total += encodeMessage(header, batch, format).length;
  }
  return total / samples.length;
}
