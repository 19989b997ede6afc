/**
 * Payload codecs: a batch of samples and its header, as the bytes of one MQTT message. Two formats (the device config
 * picks one; docs/payload-format.md describes both with examples):
 *
 * JSON (`json`): readable UTF-8, one object per message, samples as objects in their original order:
 *   {"deviceId":"demo-001","seq":42,"kind":"telemetry","priority":3,"createdAt":1700000000123,
 *    "samples":[{"ts":1700000000.1,"signal":"can0.VEHICLE_DYNAMICS.VehicleSpeed","value":52.3}, ...]}
 *   `trigger` ({"rule","ts"}) is present for events only. ts is unix seconds as the agent holds it (no rounding).
 *
 * Binary (`cbor`): a one-byte envelope, then a CBOR (RFC 8949) data item, deflated or not:
 *
 *   byte 0     0x01: the rest is the CBOR item as is;  0x02: the rest is the CBOR item compressed with raw DEFLATE
 *              (RFC 1951, no zlib or gzip header). Compression is used only when it makes the message smaller.
 *   CBOR item  an array of 9 elements:
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
 * Numbers are CBOR integers (major type 0/1) when integral and within ±2^53, otherwise floats (major type 7) in the
 * shortest width that holds the value exactly: the codec never rounds a value. Written with cborg.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { decode as decodeCbor, encode as encodeCbor } from 'cborg';
import type { MessageHeader, MessageKind, Priority, Sample } from '../collect/sample.js';

export type PayloadFormat = 'json' | 'cbor';

export const BINARY_LAYOUT_VERSION = 1;
export const ENVELOPE_CBOR = 0x01;
export const ENVELOPE_CBOR_DEFLATE = 0x02;
/** Below this, deflate's own overhead (and its CPU) does not pay. */
const COMPRESS_MIN_BYTES = 64;
/** Steps the encoder tries for a numeric series, in order; common DBC factors. 1 comes first: integers. */
const STEPS = [1, 0.5, 0.25, 0.1, 0.2, 0.4, 0.05, 0.125, 0.0625, 0.03125, 0.01, 0.02, 0.005, 0.001, 1e-4, 1e-5, 1e-6, 1e-7];

export class PayloadError extends Error {
  override readonly name = 'PayloadError';
}

const KINDS: readonly MessageKind[] = ['telemetry', 'events'];

export function encodeMessage(header: MessageHeader, samples: readonly Sample[], format: PayloadFormat): Uint8Array {
  return format === 'json' ? encodeJson(header, samples) : encodeBinary(header, samples);
}

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
  if (typeof body !== 'object' || body === null) throw new PayloadError('not a JSON message object');
  const o = body as Record<string, unknown>;
  const header = checkHeader(o.deviceId, o.seq, o.kind, o.priority, o.createdAt);
  if (o.trigger !== undefined) header.trigger = checkTrigger(o.trigger);
  if (!Array.isArray(o.samples)) throw new PayloadError('samples: expected an array');
  const samples = o.samples.map((s: unknown, i): Sample => {
    const x = (s ?? {}) as Record<string, unknown>;
    if (typeof x.ts !== 'number' || typeof x.signal !== 'string' || (typeof x.value !== 'number' && typeof x.value !== 'string')) {
      throw new PayloadError(`samples[${i}]: expected {ts: number, signal: string, value: number | string}`);
    }
    return { ts: x.ts, signal: x.signal, value: x.value };
  });
  return { header, samples };
}

function checkHeader(deviceId: unknown, seq: unknown, kind: unknown, priority: unknown, createdAt: unknown): MessageHeader {
  if (typeof deviceId !== 'string') throw new PayloadError('deviceId: expected a string');
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) throw new PayloadError('seq: expected an integer');
  if (kind !== 'telemetry' && kind !== 'events') throw new PayloadError('kind: expected telemetry or events');
  if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < 0 || priority > 7) throw new PayloadError('priority: expected 0-7');
  if (typeof createdAt !== 'number') throw new PayloadError('createdAt: expected a number');
  return { deviceId, seq, kind, priority: priority as Priority, createdAt };
}

function checkTrigger(trigger: unknown): { rule: string; ts: number } {
  const t = (trigger ?? {}) as Record<string, unknown>;
  if (typeof t.rule !== 'string' || typeof t.ts !== 'number') throw new PayloadError('trigger: expected {rule: string, ts: number}');
  return { rule: t.rule, ts: t.ts };
}

// ---- binary ----

const toUs = (ts: number): number => Math.round(ts * 1e6);

/** The step whose integer multiples reproduce every value exactly, or 0 (values sent as they are). */
function seriesStep(values: readonly (number | string)[]): number {
  for (const step of STEPS) {
    let fits = true;
    for (const v of values) {
      if (typeof v !== 'number') return 0;
      const m = Math.round(v / step);
      // Object.is: -0 must come back as -0, which an integer multiple cannot give.
      if (!Number.isSafeInteger(m) || !Object.is(m * step, v)) {
        fits = false;
        break;
      }
    }
    if (fits) return step;
  }
  return 0;
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
      previous = us;
    }
    const values: (number | string)[] = list.map((s) => s.value);
    const step = seriesStep(values);
    if (step > 0) {
      let previousM = 0;
      for (let i = 0; i < values.length; i++) {
        const m = Math.round((values[i] as number) / step);
        values[i] = m - previousM;
        previousM = m;
      }
    }
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
  const plain = encodeCbor(item);
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

function decodeBinary(bytes: Uint8Array): { header: MessageHeader; samples: Sample[] } {
  if (bytes.length < 2) throw new PayloadError('binary message too short');
  const body = bytes.subarray(1);
  let plain: Uint8Array;
  if (bytes[0] === ENVELOPE_CBOR) plain = body;
  else if (bytes[0] === ENVELOPE_CBOR_DEFLATE) {
    try {
      plain = inflateRawSync(body);
    } catch (err) {
      throw new PayloadError(`corrupt deflate stream: ${(err as Error).message}`);
    }
  } else throw new PayloadError(`unknown envelope byte 0x${(bytes[0] ?? 0).toString(16)}`);
  let item: unknown;
  try {
    item = decodeCbor(plain);
  } catch (err) {
    throw new PayloadError(`corrupt CBOR: ${(err as Error).message}`);
  }
  if (!Array.isArray(item) || item.length !== 9) throw new PayloadError('expected a CBOR array of 9 elements');
  const [version, deviceId, seq, kindCode, priority, createdAt, trigger, baseUs, series] = item as unknown[];
  if (version !== BINARY_LAYOUT_VERSION) throw new PayloadError(`unsupported layout version ${String(version)}`);
  const header = checkHeader(deviceId, seq, typeof kindCode === 'number' ? KINDS[kindCode] : undefined, priority, createdAt);
  if (trigger !== null && trigger !== undefined) {
    if (!Array.isArray(trigger) || typeof trigger[0] !== 'string' || typeof trigger[1] !== 'number') throw new PayloadError('trigger: expected [rule, tsUs]');
    header.trigger = { rule: trigger[0], ts: trigger[1] / 1e6 };
  }
  if (typeof baseUs !== 'number' || !Array.isArray(series)) throw new PayloadError('expected baseUs and series');
  const samples: Sample[] = [];
  series.forEach((entry: unknown, k) => {
    if (!Array.isArray(entry) || entry.length !== 4) throw new PayloadError(`series[${k}]: expected [name, step, tsDeltas, values]`);
    const [name, step, deltas, values] = entry as unknown[];
    if (typeof name !== 'string' || typeof step !== 'number' || !Array.isArray(deltas) || !Array.isArray(values) || deltas.length !== values.length) {
      throw new PayloadError(`series[${k}]: malformed`);
    }
    let us = baseUs;
    let m = 0;
    for (let i = 0; i < deltas.length; i++) {
      const d = deltas[i] as unknown;
      const v = values[i] as unknown;
      if (typeof d !== 'number') throw new PayloadError(`series[${k}]: timestamp delta ${i} is not a number`);
      us += d;
      let value: number | string;
      if (step > 0) {
        if (typeof v !== 'number') throw new PayloadError(`series[${k}]: value delta ${i} is not a number`);
        m += v;
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
