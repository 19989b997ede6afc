/**
 * `npm run bench -- gnss [--json]`: what position costs.
 *
 * - Bytes per fix: the simulated car's receiver (src/sim/gnss-receiver.ts) drives the demo route for ten minutes at
 *   1 Hz; every fix goes through the NMEA reader, the assembler and the position's values into a collector with a
 *   periodic 1 s rule on `gnss.lat` and `gnss.lon`, and the batches are encoded as the uplink sends them (binary CBOR
 *   and JSON, `src/uplink/codec.ts`), at 5 fixes a message (the default config's 5 s batches) and 60.
 * - CPU of a 10 Hz receiver: an hour of its NMEA (36,000 epochs, made beforehand) read, assembled, offered and
 *   collected in this process, in µs of CPU per epoch and as a share of one core at 10 epochs a second; the baseline
 *   in the same run is splitting the same text into lines, the least any NMEA reader does.
 * Wake-ups are not in it: a serial receiver wakes the agent once per burst (src/gnss/serial-receiver.ts).
 */
import { Collector } from '../src/collect/collector.js';
import type { Sample, SampleBatch } from '../src/collect/sample.js';
import { FixAssembler } from '../src/gnss/fix-assembler.js';
import { NmeaReader } from '../src/gnss/nmea-reader.js';
import { PositionTracker } from '../src/gnss/position.js';
import { SimulatedReceiver } from '../src/sim/gnss-receiver.js';
import { encodeMessage } from '../src/uplink/codec.js';

const T0 = Date.UTC(2026, 11, 7, 12);

/** `seconds` epochs of the simulated receiver at `rateHz`, as the text it writes. */
function recording(seconds: number, rateHz: number): string[] {
  const receiver = new SimulatedReceiver({ seed: 1 });
  receiver.step(20); // the car drives off after about 16 s
  const epochs: string[] = [];
  for (let k = 0; k < seconds * rateHz; k++) {
    epochs.push(`${receiver.epoch(T0 + (k * 1000) / rateHz).join('\r\n')}\r\n`);
    receiver.step(1 / rateHz);
  }
  return epochs;
}

/** A reader, assembler and position whose values go to `offer`, stamped with the receiver's time. */
function pipeline(offer: (name: string, value: number, ts: number) => void): { feed: (text: string) => void; clock: { now: number } } {
  const clock = { now: T0 };
  const position = new PositionTracker('gnss', offer, () => clock.now);
  const assembler = new FixAssembler({ dateFloor: null, onFix: (fix) => position.take(fix) });
  const reader = new NmeaReader((sentence) => assembler.push(sentence));
  return {
    clock,
    feed(text) {
      reader.write(text);
      assembler.flush();
    },
  };
}

function bytesPerFix(epochs: readonly string[], perMessage: number): { cbor: number; json: number; fixes: number } {
  const batches: SampleBatch[] = [];
  const collector = new Collector({
    config: {
      batch: { maxSamples: perMessage * 2, maxDelayMs: 3_600_000 },
      rules: [{ name: 'position', mode: 'periodic', intervalMs: 1000, priority: 4, signals: ['gnss.lat', 'gnss.lon'] }],
    },
    buses: [],
    onBatch: (batch) => batches.push(batch),
  });
  const { feed, clock } = pipeline((name, value, ts) => collector.offer(name, value, ts));
  epochs.forEach((text, k) => {
    clock.now = T0 + k * 1000;
    feed(text);
  });
  collector.flush();
  const samples: Sample[] = batches.flatMap((b) => b.samples);
  const fixes = samples.length / 2;
  let cbor = 0;
  let json = 0;
  for (let k = 0, seq = 1; k < samples.length; k += perMessage * 2, seq++) {
    const part = samples.slice(k, k + perMessage * 2);
    const header = { deviceId: 'demo-vehicle-001', seq, kind: 'telemetry' as const, priority: 4 as const, createdAt: T0 };
    cbor += encodeMessage(header, part, 'cbor').length;
    json += encodeMessage(header, part, 'json').length;
  }
  return { cbor: cbor / fixes, json: json / fixes, fixes };
}

function cpuUs(run: () => void): number {
  const before = process.cpuUsage();
  run();
  const used = process.cpuUsage(before);
  return used.user + used.system;
}

export function runGnssBenchmark(json: boolean): void {
  const track = recording(600, 1);
  const at5 = bytesPerFix(track, 5);
  const at60 = bytesPerFix(track, 60);

  const hour = recording(3600, 10);
  let lines = 0;
  let values = 0;
  const collector = new Collector({
    config: {
      batch: { maxSamples: 500, maxDelayMs: 5000 },
      rules: [{ name: 'position', mode: 'periodic', intervalMs: 1000, priority: 4, signals: ['gnss.lat', 'gnss.lon'] }],
    },
    buses: [],
    onBatch: () => undefined,
  });
  // Warm both paths first, then the best of three passes each.
  const split = (): void => {
    for (const text of hour) lines += text.split('\r\n').length;
  };
  const parse = (): void => {
    const { feed, clock } = pipeline((name, value, ts) => {
      values++;
      collector.offer(name, value, ts);
    });
    hour.forEach((text, k) => {
      clock.now = T0 + k * 100;
      feed(text);
    });
  };
  split();
  parse();
  const splitUs = Math.min(cpuUs(split), cpuUs(split), cpuUs(split)) / hour.length;
  const parseUs = Math.min(cpuUs(parse), cpuUs(parse), cpuUs(parse)) / hour.length;
  const result = {
    bytes_per_fix_cbor_5: Number(at5.cbor.toFixed(1)),
    bytes_per_fix_json_5: Number(at5.json.toFixed(1)),
    bytes_per_fix_cbor_60: Number(at60.cbor.toFixed(1)),
    bytes_per_fix_json_60: Number(at60.json.toFixed(1)),
    fixes: at5.fixes,
    us_per_epoch: Number(parseUs.toFixed(2)),
    us_per_epoch_split_baseline: Number(splitUs.toFixed(2)),
    ratio_vs_split: Number((parseUs / splitUs).toFixed(1)),
    cpu_pct_at_10hz: Number(((parseUs * 10) / 1e4).toFixed(3)),
  };
  if (lines === 0 || values === 0) throw new Error('nothing was read');
  if (json) {
    process.stdout.write(`${JSON.stringify({ gnss: result })}\n`);
    return;
  }
  process.stdout.write(
    [
      'gnss: position through the pipeline (simulated receiver on the demo route)',
      `  bytes per fix (lat+lon, 1 Hz, ${result.fixes} fixes): ${result.bytes_per_fix_cbor_5} binary, ${result.bytes_per_fix_json_5} JSON at 5 fixes a message; ${result.bytes_per_fix_cbor_60} binary, ${result.bytes_per_fix_json_60} JSON at 60`,
      `  10 Hz receiver: ${result.us_per_epoch} µs CPU per epoch (read, assemble, offer, collect), ${result.ratio_vs_split}x splitting its lines (${result.us_per_epoch_split_baseline} µs): ${result.cpu_pct_at_10hz}% of one core`,
      '',
    ].join('\n'),
  );
}
