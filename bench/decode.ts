/**
 * `npm run bench -- decode`: DBC decoding throughput.
 *  (a) 200,000 seeded random frames over every decodable message of toyota_nodsu_pt_generated.dbc, into objects;
 *  (b) the same frames into the zero-allocation slot buffer;
 *  (c) the real J1939 truck log, parsed from candump text and decoded (PGN matching) into the buffer.
 * Baseline, same run: an interpreted bit-by-bit decoder on the frames of (a).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCandumpLine } from '../src/can/candump.js';
import { createFrame } from '../src/can/frame.js';
import { compileDatabase, loadDbcFile, type MessageCodec } from '../src/dbc/index.js';
import { layoutProblems } from '../src/dbc/layout.js';
import { decodeInterpreted } from './interpreted-decoder.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const testdata = process.env.TELEMATICS_SHARED_TESTDATA ?? path.resolve(root, '..', 'shared', 'testdata');
const FRAMES = 200_000;
const ROUNDS = 7;

/** Small seeded generator (xorshift32), so every run decodes the same frames. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Best-of-N frames per second of `run`, which processes `count` frames per call. */
function measure(count: number, run: () => number): { fps: number; check: number } {
  let best = Infinity;
  let check = 0;
  run(); // warm-up: the first call compiles and optimises
  for (let round = 0; round < ROUNDS; round++) {
    const start = process.hrtime.bigint();
    check += run();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    best = Math.min(best, seconds);
  }
  return { fps: count / best, check };
}

export function runDecodeBenchmark(json: boolean): void {
  const dbcFile = path.join(testdata, 'dbc', 'toyota_nodsu_pt_generated.dbc');
  const logFile = path.join(testdata, 'logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
  let dbText: string;
  try {
    dbText = readFileSync(logFile, 'utf8');
  } catch {
    throw new Error(`the decode benchmark needs the shared test data (${testdata}); set TELEMATICS_SHARED_TESTDATA`);
  }

  const toyota = compileDatabase(loadDbcFile(dbcFile));
  const messages: MessageCodec[] = toyota.messages.filter((m) => m.message.signals.length > 0 && layoutProblems(m.message).length === 0);
  const next = random(0x70707);
  const frameCodecs = new Array<MessageCodec>(FRAMES);
  const frameIds = new Int32Array(FRAMES);
  const payloads = new Array<Uint8Array>(FRAMES);
  let signalsTotal = 0;
  for (let i = 0; i < FRAMES; i++) {
    const codec = messages[next() % messages.length]!;
    const data = new Uint8Array(codec.message.length);
    for (let b = 0; b < data.length; b++) data[b] = next() & 0xff;
    frameCodecs[i] = codec;
    frameIds[i] = codec.message.id;
    payloads[i] = data;
  }
  const buffer = new Float64Array(toyota.slotCount);
  for (let i = 0; i < FRAMES; i++) signalsTotal += toyota.find(frameIds[i]!, false)!.decodeInto(payloads[i]!, buffer);
  const signalsPerFrame = signalsTotal / FRAMES;

  // Decoded objects are kept in a ring, so the engine cannot drop their allocation as unused.
  const ring: unknown[] = new Array(1024);
  const objects = measure(FRAMES, () => {
    let n = 0;
    for (let i = 0; i < FRAMES; i++) {
      ring[i & 1023] = toyota.find(frameIds[i]!, false)!.decode(payloads[i]!);
      n++;
    }
    return n;
  });
  const bufferRun = measure(FRAMES, () => {
    let n = 0;
    for (let i = 0; i < FRAMES; i++) n += toyota.find(frameIds[i]!, false)!.decodeInto(payloads[i]!, buffer);
    return n;
  });
  const baselineFrames = FRAMES / 4;
  const baseline = measure(baselineFrames, () => {
    let n = 0;
    for (let i = 0; i < baselineFrames; i++) {
      ring[i & 1023] = decodeInterpreted(frameCodecs[i]!.message, payloads[i]!);
      n++;
    }
    return n;
  });

  // (c) real log: text -> frames -> J1939 PGN lookup -> buffer
  const truck = compileDatabase(loadDbcFile(path.join(testdata, 'dbc', 'css_j1939_demo.dbc')), { j1939: true });
  const truckBuffer = new Float64Array(truck.slotCount);
  const lines = dbText.split('\n');
  const frame = createFrame();
  let logFrames = 0;
  let logDecoded = 0;
  for (const line of lines) if (parseCandumpLine(line, frame)) logFrames++;
  const log = measure(logFrames, () => {
    let decoded = 0;
    for (let i = 0; i < lines.length; i++) {
      if (!parseCandumpLine(lines[i]!, frame)) continue;
      const codec = truck.find(frame.id, frame.extended);
      if (codec !== undefined && codec.decodeInto(frame.data, truckBuffer) > 0) decoded++;
    }
    logDecoded = decoded;
    return decoded;
  });

  const result = {
    objects_fps: Math.round(objects.fps),
    buffer_fps: Math.round(bufferRun.fps),
    log_fps: Math.round(log.fps),
    signals_per_frame: Number(signalsPerFrame.toFixed(2)),
    objects_signals_per_s: Math.round(objects.fps * signalsPerFrame),
    buffer_signals_per_s: Math.round(bufferRun.fps * signalsPerFrame),
    baseline_interpreted_fps: Math.round(baseline.fps),
    objects_vs_baseline: Number((objects.fps / baseline.fps).toFixed(1)),
    buffer_vs_baseline: Number((bufferRun.fps / baseline.fps).toFixed(1)),
    log_frames: logFrames,
    log_frames_decoded: logDecoded,
    messages: messages.length,
    frames: FRAMES,
    node: process.version,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const f = (n: number): string => n.toLocaleString('en-US');
  process.stdout.write(
    [
      `decode benchmark (one core, best of ${ROUNDS} rounds)`,
      `  (a) objects: ${f(result.objects_fps)} frames/s, ${f(result.objects_signals_per_s)} signals/s` +
        ` (${result.objects_vs_baseline}x the interpreted baseline)`,
      `  (b) buffer:  ${f(result.buffer_fps)} frames/s, ${f(result.buffer_signals_per_s)} signals/s` +
        ` (${result.buffer_vs_baseline}x the interpreted baseline)`,
      `  (c) truck log text -> J1939 decode: ${f(result.log_fps)} frames/s (${f(logFrames)} frames, ${f(logDecoded)} decoded)`,
      `  baseline, interpreted bit-by-bit decoder: ${f(result.baseline_interpreted_fps)} frames/s`,
      `  ${result.messages} messages of toyota_nodsu_pt_generated.dbc, ${f(FRAMES)} frames, ${result.signals_per_frame} signals/frame`,
      '',
    ].join('\n'),
  );
}
