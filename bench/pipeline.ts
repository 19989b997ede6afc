/**
 * `npm run bench -- pipeline [--json]`: the whole data path on the real J1939 truck log (css_j1939_demo.dbc, PGN
 * matching), against Debian's mosquitto with TLS and client certificates on a loopback port.
 *
 *  1. Online: the log, looped LOOPS times with its timestamps shifted so the rules see one long drive, goes as fast as
 *     possible through decoding, the collection rules, the codec, the SQLite outbox and the MQTT publisher. Measured
 *     until the broker has acknowledged the last message: frames/s, CPU µs per frame (user + system of this
 *     process, which runs the whole agent side; the broker's own CPU is not counted), peak RSS. Baseline in the same
 *     run: the same frames through decoding alone (BusDecoder.sink), as CPU µs per frame.
 *  2. Offline ingest: the same replay with the broker stopped: messages committed to the outbox per second.
 *  3. Drain: the broker starts again and the agent empties the outbox: messages per second, beside a bare mqtt.js
 *     QoS 1 publish loop of the very same payloads with the same in-flight window, over the same TLS (the ratio); five
 *     rounds of both, alternating, the outbox file restored before each drain, their medians reported. The
 *     same window means the agent's: MAX_INFLIGHT capped by the Receive Maximum the broker announces (mosquitto's
 *     max_inflight_messages, 20 by default), as MQTT 5 requires of a client; mqtt.js does not cap it by itself.
 *  4. Wire bytes per sample: one JSON object per sample, JSON batched as the config batches, and the binary codec
 *     batched (the config's format); disk bytes written per sample by the outbox (its I/O counter, see
 *     src/store/disk-usage.ts).
 *  5. Collection modes: the online run of step 1 again with one rule on the two signals, first `periodic` at 1 s (the
 *     baseline), then `every` (each decoded value a sample): CPU µs per frame of each and their ratio, and what each
 *     sample beyond the periodic ones costs (the CPU difference over the sample difference), measured in the same run.
 */
import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import mqtt, { type IConnackPacket } from 'mqtt';
import { parseCandumpLine } from '../src/can/candump.js';
import { cloneFrame, createFrame, type CanFrame } from '../src/can/frame.js';
import { DataPath } from '../src/agent/data-path.js';
import type { Sample } from '../src/collect/sample.js';
import { parseDeviceConfig, type DeviceConfig } from '../src/config/device-config.js';
import { BusDecoder } from '../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile } from '../src/dbc/index.js';
import { Logger } from '../src/health/log.js';
import { bytesPerSample, decodeMessage } from '../src/uplink/codec.js';
import { Mosquitto, TestPki } from '../test/support/mosquitto.js';
import { makeTempDir } from '../test/support/temp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const testdata = process.env.TELEMATICS_SHARED_TESTDATA ?? path.resolve(root, '..', 'shared', 'testdata');
/** The real J1939 truck: its DBC and its recording (the shared test data). */
export const TRUCK_DBC = path.join(testdata, 'dbc', 'css_j1939_demo.dbc');
export const TRUCK_LOG = path.join(testdata, 'logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
const LOOPS = 8;
/** Frames handed over per turn of the event loop: the timers (outbox writes, batch ages) and the socket get their turn. */
const CHUNK = 4096;
const DEVICE_ID = 'bench-truck';
const MAX_INFLIGHT = 64;
const BATCH_SAMPLES = 500;
/** Offline ingest and drain: smaller messages and more loops, so the outbox holds thousands of messages. */
const DRAIN_BATCH_SAMPLES = 25;
const DRAIN_LOOPS = 24;
/** Drain and bare loop, each this many times (alternating, from the same outbox file): their medians are reported. */
const DRAIN_ROUNDS = 5;

/**
 * Collection as a fleet would configure a truck: every change of the two signals, a 1 s summary, an overspeed event.
 * With `bus`, the rules are that bus's (names prefixed, signals qualified), so that several buses can each have them.
 */
export function truckRules(bus?: string) {
  const engine = bus === undefined ? 'EngineSpeed' : `${bus}.EEC1.EngineSpeed`;
  const speed = bus === undefined ? 'WheelBasedVehicleSpeed' : `${bus}.CCVS1.WheelBasedVehicleSpeed`;
  const name = (rule: string): string => (bus === undefined ? rule : `${bus}-${rule}`);
  return [
    { name: name('raw'), mode: 'change', priority: 2, signals: [engine, speed] },
    { name: name('summary'), mode: 'periodic', priority: 4, intervalMs: 1000, signals: [engine, speed] },
    {
      name: name('overspeed'),
      mode: 'trigger',
      priority: 6,
      signals: [engine, speed],
      trigger: { when: `${speed} > 60 && ${engine} > 1200`, preMs: 1000, postMs: 1000, minIntervalMs: 5000 },
    },
  ];
}

export const TRUCK_BATCH = { maxSamples: BATCH_SAMPLES, maxDelayMs: 5000 };
const COLLECTION = { batch: TRUCK_BATCH, format: 'cbor', rules: truckRules() };

/** Step 5: one rule on the two signals, the baseline and every sample. */
const MODE_SIGNALS = ['EngineSpeed', 'WheelBasedVehicleSpeed'];
const PERIODIC_ONLY = { ...COLLECTION, rules: [{ name: 'summary', mode: 'periodic', priority: 3, intervalMs: 1000, signals: MODE_SIGNALS }] };
const EVERY_ONLY = { ...COLLECTION, rules: [{ name: 'raw', mode: 'every', priority: 3, signals: MODE_SIGNALS }] };

interface Replay {
  frames: CanFrame[];
  /** Seconds from the first frame to the last, plus one frame gap: loop k is shifted by k times this. */
  span: number;
  firstTs: Float64Array;
}

function loadReplay(logFile: string): Replay {
  const frames: CanFrame[] = [];
  const scratch = createFrame();
  for (const line of readFileSync(logFile, 'utf8').split('\n')) if (parseCandumpLine(line, scratch)) frames.push(cloneFrame(scratch));
  const span = frames[frames.length - 1]!.ts - frames[0]!.ts + 0.01;
  return { frames, span, firstTs: Float64Array.from(frames, (f) => f.ts) };
}

/** Feeds the replay LOOPS times into `sink`, yielding to the event loop every CHUNK frames. */
async function feed(replay: Replay, sink: (frame: CanFrame) => void, loops: number, startLoop = 0): Promise<number> {
  const { frames, firstTs, span } = replay;
  let count = 0;
  for (let k = startLoop; k < startLoop + loops; k++) {
    const shift = k * span;
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i]!;
      frame.ts = firstTs[i]! + shift;
      sink(frame);
      if (++count % CHUNK === 0) await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return count;
}

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`pipeline benchmark: timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const cpuUs = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

function makeConfig(
  dir: string,
  pki: TestPki,
  broker: Mosquitto,
  dbcFile: string,
  logFile: string,
  outbox: string,
  batchSamples = BATCH_SAMPLES,
  collection: typeof COLLECTION | typeof PERIODIC_ONLY = COLLECTION,
): DeviceConfig {
  return parseDeviceConfig(
    {
      deviceId: DEVICE_ID,
      buses: [{ name: 'can0', dbc: dbcFile, j1939: true, source: { type: 'replay', file: logFile } }],
      collection: { ...collection, batch: { ...collection.batch, maxSamples: batchSamples } },
      outbox: { path: outbox, durability: 'normal', writeIntervalMs: 1000 },
      uplink: { url: broker.url, ...pki.identityFiles(DEVICE_ID), maxInflight: MAX_INFLIGHT, reconnect: { initialMs: 50, maxMs: 200 } },
    },
    { file: 'pipeline-bench', baseDir: dir },
  );
}

export async function runPipelineBenchmark(json: boolean): Promise<void> {
  const dbcFile = TRUCK_DBC;
  const logFile = TRUCK_LOG;
  let replay: Replay;
  try {
    replay = loadReplay(logFile);
  } catch {
    throw new Error(`the pipeline benchmark needs the shared test data (${testdata}); set TELEMATICS_SHARED_TESTDATA`);
  }
  const database = compileDatabase(loadDbcFile(dbcFile), { j1939: true });
  const dir = makeTempDir('bench-pipeline-');
  const pki = new TestPki('pipeline bench CA');
  const broker = await Mosquitto.start({ pki, quiet: true });
  const logger = new Logger({
    lines: (message) => {
      if (!json && !/^uplink: (connected|disconnected)/.test(message)) process.stderr.write(`${message}\n`);
    },
  });
  const silent = new Logger({ lines: () => undefined });
  try {
    // Baseline: decoding alone, same frames, same loops.
    const decodeOnly = new BusDecoder('can0', database);
    await feed(replay, decodeOnly.sink, 1); // warm-up
    const cpu0 = cpuUs();
    const baselineFrames = await feed(replay, decodeOnly.sink, LOOPS);
    const baselineUsPerFrame = (cpuUs() - cpu0) / baselineFrames;

    // 1. Online, whole path.
    const online = await measureOnline(makeConfig(dir, pki, broker, dbcFile, logFile, path.join(dir, 'online.db')), database, replay, logger);
    const { frames, seconds, samples, messages, diskBytes, diskSource } = online;
    const onlineUsPerFrame = online.cpuUs / frames;

    // 2. Offline ingest: the broker is down, everything goes to the outbox.
    await broker.stop();
    const offlineDb = path.join(dir, 'offline.db');
    const offline = makeConfig(dir, pki, broker, dbcFile, logFile, offlineDb, DRAIN_BATCH_SAMPLES);
    const offlinePath = await DataPath.open(offline, [new BusDecoder('can0', database)], silent);
    const t1 = performance.now();
    await feed(replay, offlinePath.sinkFor(0), DRAIN_LOOPS, 1);
    offlinePath.collector.flush();
    offlinePath.commitBatches();
    const ingestSeconds = (performance.now() - t1) / 1000;
    const stored = offlinePath.outbox.pending;
    await offlinePath.close();

    // The payloads waiting, for the bare publish loop and for the wire-size figures.
    const reader = new Database(offlineDb, { readonly: true });
    const payloads = (reader.prepare('SELECT payload FROM message ORDER BY seq').all() as { payload: Buffer }[]).map((r) => r.payload);
    reader.close();
    const allSamples: Sample[] = [];
    for (const payload of payloads) for (const s of decodeMessage(payload, 'cbor').samples) allSamples.push(s);
    allSamples.sort((a, b) => a.ts - b.ts);

    // 3. Drain on reconnect, beside the bare loop, DRAIN_ROUNDS times from the same outbox file: each drain lasts a
    // fraction of a second, so one round is at the mercy of whatever else the machine does at that moment.
    await broker.start();
    const snapshot = path.join(dir, 'offline-snapshot');
    for (const suffix of ['', '.seq']) copyFileSync(offlineDb + suffix, snapshot + suffix);
    const rounds: { drainRate: number; bareRate: number; window: number }[] = [];
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      if (round > 0) for (const suffix of ['', '.seq']) copyFileSync(snapshot + suffix, offlineDb + suffix);
      const drainRate = await drainOutbox(offline, database, silent);
      // Baseline: a bare mqtt.js QoS 1 loop of the same payloads, same window, same TLS (connection set up first).
      const { rate: bareRate, window } = await barePublish(broker, pki, payloads);
      rounds.push({ drainRate, bareRate, window });
    }
    const drainRate = median(rounds.map((r) => r.drainRate));
    const bare = median(rounds.map((r) => r.bareRate));
    const bareWindow = rounds[0]!.window;

    // 5. Collection modes: the online path again, one rule on the two signals: periodic (the baseline), then every.
    const periodic = await measureOnline(
      makeConfig(dir, pki, broker, dbcFile, logFile, path.join(dir, 'periodic.db'), BATCH_SAMPLES, PERIODIC_ONLY),
      database,
      replay,
      silent,
    );
    const every = await measureOnline(
      makeConfig(dir, pki, broker, dbcFile, logFile, path.join(dir, 'every.db'), BATCH_SAMPLES, EVERY_ONLY),
      database,
      replay,
      silent,
    );
    const modeFigures = (m: OnlineRun) => ({
      cpu_us_per_frame: round(m.cpuUs / m.frames, 3),
      samples: m.samples,
      messages: m.messages,
      cpu_us_per_sample: round(m.cpuUs / m.samples, 3),
    });

    const result = {
      frames_per_s: Math.round(frames / seconds),
      cpu_us_per_frame: round(onlineUsPerFrame, 3),
      decode_only_cpu_us_per_frame: round(baselineUsPerFrame, 3),
      peak_rss_mb: round(process.resourceUsage().maxRSS / 1024, 1),
      samples,
      messages,
      ingest_per_s: Math.round(stored / ingestSeconds),
      drain_per_s: Math.round(drainRate),
      bare_publish_per_s: Math.round(bare),
      bare_publish_window: bareWindow,
      drain_ratio: round(median(rounds.map((r) => r.drainRate / r.bareRate)), 2),
      bytes_per_sample_json: round(bytesPerSample(allSamples, 1, 'json'), 1),
      bytes_per_sample_json_batched: round(bytesPerSample(allSamples, BATCH_SAMPLES, 'json'), 2),
      bytes_per_sample_binary: round(bytesPerSample(allSamples, BATCH_SAMPLES, 'cbor'), 2),
      disk_bytes_per_sample: round(diskBytes / samples, 2),
      disk_source: diskSource,
      cores_for_32k_fps_pct: round(((onlineUsPerFrame * 32_000) / 1e6) * 100, 2),
      modes: {
        periodic: modeFigures(periodic),
        every: modeFigures(every),
        every_to_periodic_cpu: round(every.cpuUs / every.frames / (periodic.cpuUs / periodic.frames), 2),
        every_cpu_us_per_extra_sample: round((every.cpuUs - periodic.cpuUs) / (every.samples - periodic.samples), 3),
      },
    };
    if (json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      return;
    }
    const lines = [
      `pipeline: truck log (${replay.frames.length} frames) looped ${LOOPS}x through decode, collection, outbox and TLS MQTT into mosquitto`,
      `  online           ${result.frames_per_s} frames/s, ${result.cpu_us_per_frame} CPU µs/frame (decode alone: ${result.decode_only_cpu_us_per_frame}); ` +
        `${samples} samples in ${messages} messages; 32,000 frames/s would take ${result.cores_for_32k_fps_pct} % of a core`,
      `  peak RSS         ${result.peak_rss_mb} MB`,
      `  offline ingest   ${result.ingest_per_s} messages/s into the outbox (${stored} messages of ${DRAIN_BATCH_SAMPLES} samples, the log looped ${DRAIN_LOOPS}x with the broker down)`,
      `  drain            ${result.drain_per_s} messages/s; bare mqtt.js QoS 1 loop of the same payloads, ${bareWindow} in flight, ${result.bare_publish_per_s}/s (ratio ${result.drain_ratio})`,
      `  wire bytes/sample  JSON one per message ${result.bytes_per_sample_json}, JSON batched ${result.bytes_per_sample_json_batched}, binary batched ${result.bytes_per_sample_binary}`,
      `  disk bytes/sample  ${result.disk_bytes_per_sample} (${diskSource} counter)`,
      `  modes            one rule on the two signals, online as above: periodic 1 s ${result.modes.periodic.cpu_us_per_frame} CPU µs/frame ` +
        `(${periodic.samples} samples), every ${result.modes.every.cpu_us_per_frame} CPU µs/frame (${every.samples} samples, ` +
        `${result.modes.every.cpu_us_per_sample} µs per sample); ratio ${result.modes.every_to_periodic_cpu}, ` +
        `${result.modes.every_cpu_us_per_extra_sample} CPU µs per sample beyond the periodic ones`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await broker.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Step 3's drain: the agent's data path on the offline outbox, the broker up again; messages acknowledged per second,
 * timed from the connection (the TLS handshake and the birth message are the same for one message or thousands; the
 * publisher starts at that moment) until the outbox is empty.
 */
async function drainOutbox(config: DeviceConfig, database: ReturnType<typeof compileDatabase>, logger: Logger): Promise<number> {
  const dataPath = await DataPath.open(config, [new BusDecoder('can0', database)], logger);
  try {
    const uplink = dataPath.uplink!;
    let connectedAt = uplink.session.state === 'connected' ? performance.now() : Number.NaN;
    const off = uplink.session.onStateChange((change) => {
      if (change.state === 'connected' && Number.isNaN(connectedAt)) connectedAt = performance.now();
    });
    await until(() => !Number.isNaN(connectedAt), 10_000, 'the reconnection');
    off();
    await until(() => dataPath.outbox.pending === 0, 120_000, 'the drain');
    return uplink.publisher.stats.acknowledged / ((performance.now() - connectedAt) / 1000);
  } finally {
    await dataPath.close();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** One online measurement (step 1's method): the replay LOOPS times through the whole path until all is acknowledged. */
interface OnlineRun {
  frames: number;
  seconds: number;
  /** User + system CPU of this process over the measurement, µs. */
  cpuUs: number;
  samples: number;
  messages: number;
  diskBytes: number;
  diskSource: string;
}

async function measureOnline(config: DeviceConfig, database: ReturnType<typeof compileDatabase>, replay: Replay, logger: Logger): Promise<OnlineRun> {
  const dataPath = await DataPath.open(config, [new BusDecoder('can0', database)], logger);
  try {
    const uplink = dataPath.uplink!;
    await until(() => uplink.session.state === 'connected', 10_000, 'the broker connection');
    await feed(replay, dataPath.sinkFor(0), 1); // warm-up, drained before the measurement
    dataPath.collector.flush();
    dataPath.commitBatches();
    await until(() => dataPath.outbox.pending === 0, 60_000, 'the warm-up drain');
    const acknowledgedBefore = uplink.publisher.stats.acknowledged;
    const samplesBefore = dataPath.collector.stats.samplesEmitted;
    const diskBefore = dataPath.outbox.stats().diskWrites.bytes;
    const cpu0 = cpuUs();
    const t0 = performance.now();
    const frames = await feed(replay, dataPath.sinkFor(0), LOOPS, 1);
    dataPath.collector.flush();
    dataPath.commitBatches();
    await until(() => dataPath.outbox.pending === 0, 120_000, 'the broker to acknowledge everything');
    return {
      frames,
      seconds: (performance.now() - t0) / 1000,
      cpuUs: cpuUs() - cpu0,
      samples: dataPath.collector.stats.samplesEmitted - samplesBefore,
      messages: uplink.publisher.stats.acknowledged - acknowledgedBefore,
      diskBytes: dataPath.outbox.stats().diskWrites.bytes - diskBefore,
      diskSource: dataPath.outbox.stats().diskWrites.source,
    };
  } finally {
    await dataPath.close();
  }
}

/**
 * Messages per second of a plain mqtt.js QoS 1 publish loop with `window` outstanding: MAX_INFLIGHT, capped by the
 * broker's Receive Maximum as the agent's is (a client may not have more unacknowledged; mosquitto tolerates it, so
 * an uncapped loop would be measuring a wider window than the agent may use).
 */
async function barePublish(broker: Mosquitto, pki: TestPki, payloads: Buffer[]): Promise<{ rate: number; window: number }> {
  const files = pki.identityFiles(DEVICE_ID);
  const client = mqtt.connect(broker.url, {
    protocolVersion: 5,
    clientId: `${DEVICE_ID}-bare`,
    cert: readFileSync(files.certFile),
    key: readFileSync(files.keyFile),
    ca: readFileSync(files.caFile),
    reconnectPeriod: 0,
  });
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  const window = Math.min(MAX_INFLIGHT, connack.properties?.receiveMaximum ?? MAX_INFLIGHT);
  const topic = `vehicles/${DEVICE_ID}/telemetry`;
  const start = performance.now();
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    let inflight = 0;
    let done = 0;
    const pump = (): void => {
      while (inflight < window && next < payloads.length) {
        inflight++;
        client.publish(topic, payloads[next++]!, { qos: 1 }, (err) => {
          if (err) return reject(err);
          inflight--;
          if (++done === payloads.length) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const rate = payloads.length / ((performance.now() - start) / 1000);
  await client.endAsync();
  return { rate, window };
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
