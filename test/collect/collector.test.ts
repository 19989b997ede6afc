/** Collection rules on the demo DBC: exact samples for known frame sequences, triggers, batching, config. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createFrame, type CanFrame } from '../../src/can/frame.js';
import { Collector, CollectorConfigError, type CollectorOptions } from '../../src/collect/collector.js';
import { collectionConfigSchema, type CollectionConfig } from '../../src/collect/config.js';
import type { SampleBatch } from '../../src/collect/sample.js';
import { DeviceConfigError, parseDeviceConfig } from '../../src/config/device-config.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile, parseDbc, type CompiledDatabase } from '../../src/dbc/index.js';
import { DEMO_DBC_PATH, SimulatedVehicle } from '../../src/sim/vehicle.js';
import { CandumpReplaySource } from '../../src/can/replay.js';
import { encodeMessage } from '../../src/uplink/codec.js';
import { messageFrame } from '../support/frames.js';
import {
  TRUCK_BUS,
  TRUCK_DBC,
  TRUCK_LOG,
  truckFilesMissing,
  truckSamplesFromDecoder,
  truckSamplesFromText,
  truckSkipReason,
} from '../support/truck-recording.js';
import { delay } from '../support/wait.js';

const START = 1_700_000_000;
const database: CompiledDatabase = compileDatabase(loadDbcFile(DEMO_DBC_PATH));

/** A collector on one demo bus `can0`, with a wall clock the test moves, recording every batch. */
function setup(collection: unknown, options: Partial<CollectorOptions> = {}) {
  const config: CollectionConfig = collectionConfigSchema.parse(collection);
  const bus = new BusDecoder('can0', database);
  const batches: SampleBatch[] = [];
  const clock = { ms: 0 };
  const collector = new Collector({ config, buses: [bus], onBatch: (b) => batches.push(b), now: () => clock.ms, ...options });
  const sink = collector.sinkFor(0);
  const frame: CanFrame = createFrame();
  frame.bus = 'can0';
  /** Sends one frame of `message` with these signal values (others 0) at START + ms/1000. */
  const send = (message: string, values: Record<string, number>, ms: number): void => {
    const codec = database.byName(message)!;
    const all: Record<string, number> = {};
    for (const s of codec.message.signals) all[s.name] = 0;
    frame.id = codec.message.id;
    frame.extended = codec.message.extended;
    frame.data = codec.encode({ ...all, ...values });
    frame.dlc = frame.data.length;
    frame.ts = START + ms / 1000;
    sink(frame);
  };
  const samples = () => batches.flatMap((b) => b.samples);
  return { collector, bus, batches, clock, send, samples };
}

/** The time `send` gives a frame at `ms`. */
const at = (ms: number): number => START + ms / 1000;
const round = (x: number | string, decimals = 3): number => Math.round(Number(x) * 10 ** decimals) / 10 ** decimals;
/** Sample times as ms since START. */
const msOf = (ts: number): number => Math.round((ts - START) * 1000);

describe('collector: change rules', () => {
  it('deadband 0.5 sends exactly the values that moved more than 0.5 from the last one sent', () => {
    const { collector, send, samples } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [{ name: 'speed', signals: ['VehicleSpeed'], mode: 'change', deadband: { absolute: 0.5 } }],
    });
    const sequence = [10, 10.2, 10.4, 10.51, 10.6, 11.2, 11.0, 10.69, 10.7, 10.7, 10.18];
    sequence.forEach((v, i) => send('VEHICLE_DYNAMICS', { VehicleSpeed: v }, i * 20));
    collector.flush();
    assert.deepEqual(
      samples().map((s) => [msOf(s.ts), s.signal, round(s.value, 2)]),
      [
        [0, 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 10],
        [60, 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 10.51],
        [100, 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 11.2],
        [140, 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 10.69],
        [200, 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 10.18],
      ],
    );
    assert.equal(collector.stats.samplesIn, sequence.length);
    assert.equal(collector.stats.samplesEmitted, 5);
    assert.equal(collector.stats.rules[0]!.samples, 5);
  });

  it('relative deadband scales with the last value sent; without a deadband any change is sent', () => {
    const { collector, send, samples } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [
        { name: 'rpm', signals: ['ENGINE_DATA.EngineSpeed'], mode: 'change', deadband: { relative: 0.1 } },
        { name: 'gear', signals: ['TRANSMISSION.GearEngaged'], mode: 'change' },
      ],
    });
    [1000, 1050, 1101, 1200, 1212, 1000].forEach((v, i) => send('ENGINE_DATA', { EngineSpeed: v }, i * 10));
    [1, 1, 2, 2, 2, 3, 2].forEach((g, i) => send('TRANSMISSION', { GearEngaged: g }, 100 + i * 50));
    collector.flush();
    const by = (name: string) =>
      samples()
        .filter((s) => s.signal.endsWith(name))
        .map((s) => [msOf(s.ts), s.value]);
    // 1101: +101 > 100; 1200: +99 <= 110.1; 1212: +111 > 110.1; 1000: -212 > 121.2
    assert.deepEqual(by('EngineSpeed'), [
      [0, 1000],
      [20, 1101],
      [40, 1212],
      [50, 1000],
    ]);
    assert.deepEqual(by('GearEngaged'), [
      [100, 1],
      [200, 2],
      [350, 3],
      [400, 2],
    ]);
  });

  it('minimum interval: at most one sample per interval, the next change after it goes out', () => {
    const { collector, send, samples } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [{ name: 'counter', signals: ['EngineDataCounter'], mode: 'change', minIntervalMs: 250 }],
    });
    for (let i = 0; i < 100; i++) send('ENGINE_DATA', { EngineDataCounter: i % 16 }, i * 10);
    collector.flush();
    assert.deepEqual(
      samples().map((s) => [msOf(s.ts), s.value]),
      [0, 250, 500, 750].map((ms) => [ms, (ms / 10) % 16]),
    );
  });
});

describe('collector: periodic rules', () => {
  it('sends each signal once per interval, on the grid, with its own timestamps (simulated car)', async () => {
    const { collector, bus, samples } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [
        { name: '1s', signals: ['VehicleSpeed', 'EngineSpeed'], mode: 'periodic', intervalMs: 1000, priority: 2 },
        { name: 'battery', signals: ['BatteryVoltage', 'EngineHours'], mode: 'periodic', intervalMs: 500 },
      ],
    });
    const car = new SimulatedVehicle({ database, bus: 'can0', realtime: false, durationS: 10, startTime: START });
    await car.run(collector.sinkFor(0));
    collector.flush();
    const times = (signal: string) =>
      samples()
        .filter((s) => s.signal === signal)
        .map((s) => msOf(s.ts));
    // VEHICLE_DYNAMICS is message 1 of the demo bus: its frames are at 1, 21, 41... ms.
    assert.deepEqual(times('can0.VEHICLE_DYNAMICS.VehicleSpeed'), [1, 1001, 2001, 3001, 4001, 5001, 6001, 7001, 8001, 9001]);
    assert.deepEqual(times('can0.ENGINE_DATA.EngineSpeed'), [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]);
    // ECU_DIAG_STATUS (250 ms cycle) walks pages 0-3: BatteryVoltage is only in page 0 frames (every second), EngineHours
    // only in page 1: a periodic rule must not re-send a value from another page's frame.
    assert.deepEqual(times('can0.ECU_DIAG_STATUS.BatteryVoltage'), [1, 1001, 2001, 3001, 4001, 5001, 6001, 7001, 8001, 9001]);
    assert.deepEqual(times('can0.ECU_DIAG_STATUS.EngineHours'), [251, 1251, 2251, 3251, 4251, 5251, 6251, 7251, 8251, 9251]);
    // The sampled value is the decoded value of that frame.
    const speeds = samples().filter((s) => s.signal === 'can0.VEHICLE_DYNAMICS.VehicleSpeed');
    assert.ok(speeds.every((s) => typeof s.value === 'number' && s.value >= 0));
    assert.equal(collector.stats.samplesEmitted, 40);
    assert.ok(bus.frames > 1000 && bus.unknownFrames === 0 && bus.decodeErrors === 0);
  });

  it('decodes exactly as BusDecoder.sink does', async () => {
    const { collector, bus } = setup({ rules: [{ name: 'all', signals: ['VehicleSpeed'], mode: 'change' }] });
    const plain = new BusDecoder('can0', database);
    const a = new SimulatedVehicle({ database, bus: 'can0', realtime: false, durationS: 3, startTime: START });
    const b = new SimulatedVehicle({ database, bus: 'can0', realtime: false, durationS: 3, startTime: START });
    await a.run(collector.sinkFor(0));
    await b.run(plain.sink);
    assert.deepEqual([bus.frames, bus.signals, bus.unknownFrames, bus.decodeErrors], [plain.frames, plain.signals, plain.unknownFrames, plain.decodeErrors]);
    assert.deepEqual([...bus.values], [...plain.values]);
  });
});

describe('collector: every-sample rules', () => {
  it("[17.every] every decoded value of each listed signal, with its frame's time, in order: repeats kept, nothing merged, nothing invented", () => {
    const { collector, send, batches } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [
        { name: 'raw', signals: ['VehicleSpeed', 'EngineSpeed'], mode: 'every' },
        // What "periodic with 1 ms" gave: two frames within a millisecond become one sample.
        { name: 'fast', signals: ['VehicleSpeed'], mode: 'periodic', intervalMs: 1, priority: 1 },
      ],
    });
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 10 }, 0);
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 10 }, 20); // the same value again: a sample again
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 10.5 }, 20.5); // half a millisecond later: a sample of its own
    send('ENGINE_DATA', { EngineSpeed: 800 }, 25);
    send('BRAKE_STATUS', { BrakePressure: 50 }, 30); // no rule reads it
    // Five silent seconds: nothing is repeated meanwhile, nothing is made up for them.
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 0 }, 5030);
    collector.flush();
    const batchesOf = (priority: number) => batches.filter((b) => b.priority === priority).flatMap((b) => b.samples);
    assert.deepEqual(
      batchesOf(3).map((s) => [s.ts, s.signal, round(s.value, 2)]),
      [
        [at(0), 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 10],
        [at(20), 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 10],
        [at(20.5), 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 10.5],
        [at(25), 'can0.ENGINE_DATA.EngineSpeed', 800],
        [at(5030), 'can0.VEHICLE_DYNAMICS.VehicleSpeed', 0],
      ],
    );
    assert.deepEqual(
      batchesOf(1).map((s) => msOf(s.ts)),
      [0, 20, 5030],
      'periodic with 1 ms merges the frames 0.5 ms apart',
    );
    assert.equal(collector.stats.rules[0]!.samples, 5);
  });

  it('[17.every] a multiplexed signal is a sample only from the frames that carry its page', () => {
    const { collector, send, samples } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [{ name: 'diag', signals: ['BatteryVoltage', 'EngineHours'], mode: 'every' }],
    });
    // Pages 0, 1, 2, 3, 0, 1 in turn, 250 ms apart, as the ECU sends them.
    const pages: Record<string, number>[] = [
      { BatteryVoltage: 12.5 },
      { EngineHours: 100 },
      { ActiveDtcCount: 1 },
      { SoftwareMajor: 2 },
      { BatteryVoltage: 12.5 },
      { EngineHours: 100.05 },
    ];
    pages.forEach((values, i) => send('ECU_DIAG_STATUS', { DiagPage: i % 4, ...values }, i * 250));
    collector.flush();
    assert.deepEqual(
      samples().map((s) => [msOf(s.ts), s.signal, round(s.value, 2)]),
      [
        [0, 'can0.ECU_DIAG_STATUS.BatteryVoltage', 12.5],
        [250, 'can0.ECU_DIAG_STATUS.EngineHours', 100],
        [1000, 'can0.ECU_DIAG_STATUS.BatteryVoltage', 12.5],
        [1250, 'can0.ECU_DIAG_STATUS.EngineHours', 100.05],
      ],
    );
  });

  it('[17.every] a signal under a multiplexer that is itself multiplexed is a sample only when both select it (every and periodic alike)', () => {
    // Page selects SubPage (Page 0), SubPage selects Deep (SubPage 1) or Shallow (SubPage 2); Page 1 carries Other in
    // the same bits.
    const nested = compileDatabase(
      parseDbc(
        [
          'VERSION ""',
          'BS_:',
          'BU_: ECU',
          'BO_ 1792 PAGED: 8 ECU',
          ' SG_ Page M : 0|4@1+ (1,0) [0|15] "" Vector__XXX',
          ' SG_ SubPage m0M : 4|4@1+ (1,0) [0|15] "" Vector__XXX',
          ' SG_ Deep m1 : 8|8@1+ (1,0) [0|255] "" Vector__XXX',
          ' SG_ Other m1 : 8|8@1+ (1,0) [0|255] "" Vector__XXX',
          ' SG_ Shallow m2 : 8|8@1+ (1,0) [0|255] "" Vector__XXX',
          'SG_MUL_VAL_ 1792 SubPage Page 0-0;',
          'SG_MUL_VAL_ 1792 Deep SubPage 1-1;',
          'SG_MUL_VAL_ 1792 Shallow SubPage 2-2;',
          'SG_MUL_VAL_ 1792 Other Page 1-1;',
          '',
        ].join('\n'),
        { file: 'nested.dbc' },
      ),
    );
    const bus = new BusDecoder('can0', nested);
    const batches: SampleBatch[] = [];
    const collector = new Collector({
      config: collectionConfigSchema.parse({
        batch: { maxSamples: 1000, maxDelayMs: 60000 },
        rules: [
          { name: 'deep', signals: ['Deep'], mode: 'every' },
          { name: 'deep-1ms', signals: ['Deep'], mode: 'periodic', intervalMs: 1, priority: 1 },
        ],
      }),
      buses: [bus],
      onBatch: (b) => batches.push(b),
      now: () => 0,
    });
    const sink = collector.sinkFor(0);
    const codec = nested.byName('PAGED')!;
    const payloads = [
      [0x10, 7], // Page 0, SubPage 1: Deep = 7
      [0x01, 9], // Page 1: Other = 9; SubPage is not in this frame (its bits read 0, its last value was 1)
      [0x20, 5], // Page 0, SubPage 2: Shallow, no Deep
      [0x10, 8], // Page 0, SubPage 1: Deep = 8
    ];
    payloads.forEach((bytes, i) => sink(messageFrame(codec, Uint8Array.from([...bytes, 0, 0, 0, 0, 0, 0]), { ts: at(i * 10), bus: 'can0' })));
    collector.flush();
    const of = (priority: number) => batches.filter((b) => b.priority === priority).flatMap((b) => b.samples.map((s) => [msOf(s.ts), s.value]));
    assert.deepEqual(of(3), [
      [0, 7],
      [30, 8],
    ]);
    assert.deepEqual(of(1), [
      [0, 7],
      [30, 8],
    ]);
    assert.equal(bus.decodeErrors, 0);
  });

  it('[17.every] a NaN a float signal carries is a sample too (a change rule passes it over)', () => {
    const floats = compileDatabase(
      parseDbc(
        [
          'VERSION ""',
          'BS_:',
          'BU_: ECU',
          'BO_ 1793 FLOATS: 4 ECU',
          ' SG_ Pressure : 0|32@1- (1,0) [0|0] "" Vector__XXX',
          'SIG_VALTYPE_ 1793 Pressure : 1;',
          '',
        ].join('\n'),
        { file: 'floats.dbc' },
      ),
    );
    const batches: SampleBatch[] = [];
    const collector = new Collector({
      config: collectionConfigSchema.parse({
        batch: { maxSamples: 1000, maxDelayMs: 60000 },
        rules: [
          { name: 'raw', signals: ['Pressure'], mode: 'every' },
          { name: 'moved', signals: ['Pressure'], mode: 'change', priority: 1 },
        ],
      }),
      buses: [new BusDecoder('can0', floats)],
      onBatch: (b) => batches.push(b),
      now: () => 0,
    });
    const sink = collector.sinkFor(0);
    const codec = floats.byName('FLOATS')!;
    [1.5, NaN, 2].forEach((value, i) => {
      const data = new Uint8Array(4);
      new DataView(data.buffer).setFloat32(0, value, true);
      sink(messageFrame(codec, data, { ts: at(i * 10), bus: 'can0' }));
    });
    collector.flush();
    const of = (priority: number) => batches.filter((b) => b.priority === priority).flatMap((b) => b.samples.map((s) => [msOf(s.ts), s.value]));
    assert.deepEqual(of(3), [
      [0, 1.5],
      [10, NaN],
      [20, 2],
    ]);
    assert.deepEqual(of(1), [
      [0, 1.5],
      [20, 2],
    ]);
  });

  it('[17.every] OBD values: each value offered is a sample, repeats included', () => {
    const { collector, samples } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [{ name: 'obd', signals: ['obd.rpm'], mode: 'every' }],
    });
    collector.offer('obd.obd.rpm', 800, START);
    collector.offer('obd.obd.rpm', 800, START + 0.1);
    collector.offer('obd.obd.speed', 50, START + 0.15); // no rule reads it
    collector.offer('obd.obd.rpm', 820.5, START + 0.2);
    collector.flush();
    assert.deepEqual(samples(), [
      { ts: START, signal: 'obd.obd.rpm', value: 800 },
      { ts: START + 0.1, signal: 'obd.obd.rpm', value: 800 },
      { ts: START + 0.2, signal: 'obd.obd.rpm', value: 820.5 },
    ]);
  });

  it("[17.every] batches close at maxSamples and carry the rule's priority, apart from the other rules' batches", () => {
    const { collector, send, batches } = setup({
      batch: { maxSamples: 4, maxDelayMs: 60000 },
      rules: [
        { name: 'raw', signals: ['VehicleSpeed'], mode: 'every', priority: 6 },
        { name: 'counter', signals: ['EngineDataCounter'], mode: 'change', priority: 1 },
      ],
    });
    for (let i = 0; i < 10; i++) {
      send('VEHICLE_DYNAMICS', { VehicleSpeed: 50 }, i * 20);
      send('ENGINE_DATA', { EngineDataCounter: i % 2 }, i * 20 + 10);
    }
    assert.deepEqual(
      batches.map((b) => [b.kind, b.priority, b.samples.length]),
      [
        ['telemetry', 6, 4],
        ['telemetry', 1, 4],
        ['telemetry', 6, 4],
        ['telemetry', 1, 4],
      ],
    );
    collector.flush();
    assert.deepEqual(
      batches.slice(4).map((b) => [b.priority, b.samples.length]),
      [
        [6, 2],
        [1, 2],
      ],
    );
    assert.ok(batches.filter((b) => b.priority === 6).every((b) => b.samples.every((s) => s.signal === 'can0.VEHICLE_DYNAMICS.VehicleSpeed')));
    assert.deepEqual(
      collector.stats.rules.map((r) => [r.name, r.mode, r.samples]),
      [
        ['raw', 'every', 10],
        ['counter', 'change', 10],
      ],
    );
  });

  it(
    "[17.every] the real truck recording through the replay source: 13,991 samples, the frames' times, the decoder's values, batches of 500",
    { skip: truckSkipReason() },
    async (t) => {
      assert.deepEqual(truckFilesMissing(), [], 'the truck recording is in the shared test data');
      const truck = compileDatabase(loadDbcFile(TRUCK_DBC), { j1939: true });
      const bus = new BusDecoder(TRUCK_BUS, truck);
      const batches: SampleBatch[] = [];
      const config = collectionConfigSchema.parse({
        rules: [
          { name: 'raw', signals: ['EEC1.EngineSpeed', 'CCVS1.WheelBasedVehicleSpeed'], mode: 'every', priority: 6 },
          { name: 'summary', signals: ['EEC1.EngineSpeed', 'CCVS1.WheelBasedVehicleSpeed'], mode: 'periodic', intervalMs: 1000, priority: 2 },
        ],
      });
      assert.equal(config.batch.maxSamples, 500, 'the default batch size');
      // The wall clock stands still: batches close by their size, and at the end.
      const collector = new Collector({ config, buses: [bus], onBatch: (b) => batches.push(b), now: () => 0 });
      const replay = new CandumpReplaySource(TRUCK_LOG, { busName: () => TRUCK_BUS });
      await replay.run(collector.sinkFor(0));
      collector.flush();

      // Independently of the agent's parser and decoder: the log's frames of the DBC's parameter groups.
      const fromText = truckSamplesFromText();
      assert.equal(fromText.length, 13_991);
      const fromDecoder = truckSamplesFromDecoder(truck);
      const every = batches.filter((b) => b.priority === 6);
      const got = every.flatMap((b) => b.samples);
      assert.equal(got.length, 13_991);
      assert.deepEqual(got, fromDecoder, "the decoder's values, with the frames' times, in the log's order");
      got.forEach((s, i) => {
        const expected = fromText[i]!;
        if (Math.round(s.ts * 1e6) !== expected.us || s.signal !== expected.signal || s.value !== expected.value)
          assert.deepEqual([Math.round(s.ts * 1e6), s.signal, s.value], [expected.us, expected.signal, expected.value], `sample ${i}`);
      });
      // Batches of the default 500, the last one closed at the end; all of the rule's priority, none mixed in.
      assert.deepEqual(
        every.map((b) => b.samples.length),
        [...Array.from({ length: 27 }, () => 500), 491],
      );
      assert.ok(batches.every((b) => b.kind === 'telemetry' && (b.priority === 6 || b.priority === 2)));
      const summary = batches.filter((b) => b.priority === 2).flatMap((b) => b.samples);
      assert.ok(summary.length > 200 && summary.length < 300, `${summary.length} periodic samples`);
      assert.equal(collector.stats.rules[0]!.samples, 13_991);

      // The cost quoted in README.md and docs/payload-format.md: samples per second of the recording, wire bytes per
      // sample of these very batches in each format.
      const seconds = (fromText[fromText.length - 1]!.us - fromText[0]!.us) / 1e6;
      const wire = (format: 'cbor' | 'json') =>
        every.reduce(
          (sum, b, i) =>
            sum +
            encodeMessage(
              { deviceId: 'truck-0012', seq: 1_000 + i, kind: 'telemetry', priority: 6, createdAt: Math.round(b.samples.at(-1)!.ts * 1000) },
              b.samples,
              format,
            ).length,
          0,
        ) / got.length;
      const cbor = wire('cbor');
      const json = wire('json');
      t.diagnostic(
        `${got.length} samples in ${seconds.toFixed(1)} s: ${(got.length / seconds).toFixed(1)} samples/s; wire bytes per sample at batch 500: cbor ${cbor.toFixed(2)}, json ${json.toFixed(1)}`,
      );
      assert.ok(cbor < json / 10, `cbor ${cbor} against json ${json}`);
    },
  );
});

describe('collector: trigger rules', () => {
  /** Speed frames every 100 ms (at 0, 100…), brake frames every 100 ms at 50, 150…; speed 120 from 3 s, brake 90 in
   * [5050, 8050) and from 9050 ms, 10 otherwise. */
  function replay(send: (m: string, v: Record<string, number>, ms: number) => void, untilMs = 12000): void {
    for (let ms = 0; ms < untilMs; ms += 50) {
      if (ms % 100 === 0) send('VEHICLE_DYNAMICS', { VehicleSpeed: ms >= 3000 ? 120 : 50 }, ms);
      else send('BRAKE_STATUS', { BrakePressure: (ms >= 5050 && ms < 8050) || ms >= 9050 ? 90 : 10 }, ms);
    }
  }
  const rule = (trigger: Record<string, unknown>) => ({
    batch: { maxSamples: 1000, maxDelayMs: 60000 },
    rules: [
      {
        name: 'hard-brake',
        signals: ['VehicleSpeed', 'BrakePressure'],
        mode: 'trigger',
        priority: 6,
        trigger: { when: 'VehicleSpeed > 100 && BrakePressure > 80', ...trigger },
      },
    ],
  });

  it('captures exactly the frames from preMs before to postMs after the trigger, as one events batch', () => {
    const { collector, send, batches } = setup(rule({ preMs: 1000, postMs: 500, minIntervalMs: 5000 }));
    replay(send);
    collector.flush();
    assert.equal(batches.length, 1, 'the edge at 9050 ms is within minIntervalMs of 5050 ms');
    const event = batches[0]!;
    assert.equal(event.kind, 'events');
    assert.equal(event.priority, 6);
    assert.deepEqual(event.trigger && [event.trigger.rule, msOf(event.trigger.ts)], ['hard-brake', 5050]);
    const got = event.samples.map((s) => [msOf(s.ts), s.signal.split('.').pop(), round(s.value, 1)]);
    const expected: [number, string | undefined, number][] = [];
    for (let ms = 4050; ms <= 5550; ms += 50) {
      if (ms % 100 === 0) expected.push([ms, 'VehicleSpeed', 120]);
      else expected.push([ms, 'BrakePressure', ms >= 5050 ? 90 : 10]);
    }
    assert.deepEqual(got, expected);
    assert.equal(got.length, 31);
    assert.equal(collector.stats.triggersFired, 1);
    assert.equal(collector.stats.rules[0]!.suppressed, 1);
    assert.equal(collector.stats.rules[0]!.samples, 31);
  });

  it('rising edge fires once while the condition stays true, and again after it was false', () => {
    const { collector, send, batches } = setup(rule({ preMs: 200, postMs: 100 }));
    replay(send);
    collector.flush();
    assert.deepEqual(
      batches.map((b) => msOf(b.trigger!.ts)),
      [5050, 9050],
    );
    // preMs 200: 4850..5050; postMs 100: ..5150
    assert.deepEqual(
      batches[0]!.samples.map((s) => msOf(s.ts)),
      [4850, 4900, 4950, 5000, 5050, 5100, 5150],
    );
    assert.equal(collector.stats.rules[0]!.suppressed, 0);
  });

  it('without rising edge fires on every change of its signals while true, at most once per minIntervalMs', () => {
    const { collector, send, batches } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [
        {
          name: 'overspeed',
          signals: ['VehicleSpeed'],
          mode: 'trigger',
          trigger: { when: 'VehicleSpeed >= 100', risingEdge: false, minIntervalMs: 1000 },
        },
      ],
    });
    // Speed rises 1 km/h every 100 ms from 95: true from 500 ms on, a change every frame.
    for (let i = 0; i < 40; i++) send('VEHICLE_DYNAMICS', { VehicleSpeed: 95 + i }, i * 100);
    collector.flush();
    assert.deepEqual(
      batches.map((b) => msOf(b.trigger!.ts)),
      [500, 1500, 2500, 3500],
    );
    // preMs and postMs 0: the firing frame's own value only.
    assert.deepEqual(
      batches.map((b) => b.samples.map((s) => round(s.value, 2))),
      [[100], [110], [120], [130]],
    );
    // 35 frames with the condition true (500 ms to 3900 ms), 4 of them fired.
    assert.equal(collector.stats.rules[0]!.suppressed, 35 - 4);
  });

  it('closes a capture whose signals went quiet on the timer, and one still open at flush', () => {
    const { collector, send, batches, clock } = setup(rule({ preMs: 100, postMs: 500 }));
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 130 }, 0);
    send('BRAKE_STATUS', { BrakePressure: 85 }, 50);
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 130 }, 100);
    assert.equal(batches.length, 0);
    clock.ms = 1400;
    collector.tick();
    assert.equal(batches.length, 0, 'postMs + 1 s of wall time have not passed');
    clock.ms = 1500;
    collector.tick();
    assert.equal(batches.length, 1);
    assert.deepEqual(
      batches[0]!.samples.map((s) => msOf(s.ts)),
      [0, 50, 100],
    );
    send('BRAKE_STATUS', { BrakePressure: 10 }, 2000);
    send('BRAKE_STATUS', { BrakePressure: 85 }, 2050);
    collector.flush();
    assert.equal(batches.length, 2);
    assert.deepEqual(
      batches[1]!.samples.map((s) => msOf(s.ts)),
      [2000, 2050],
    );
  });

  it('conditions may read signals the rule does not capture, and OBD values', () => {
    const { collector, send, batches } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [{ name: 'rev', signals: ['CoolantTemp'], mode: 'trigger', trigger: { when: 'obd.rpm > 4000 && ENGINE_DATA.EngineSpeed > 1000', preMs: 2000 } }],
    });
    send('ENGINE_TEMPS', { CoolantTemp: 90 }, 0);
    send('ENGINE_DATA', { EngineSpeed: 4200 }, 10);
    collector.offer('obd.obd.rpm', 3000, START + 0.02);
    assert.equal(batches.length, 0);
    collector.offer('obd.obd.rpm', 4500, START + 0.03);
    assert.equal(batches.length, 1);
    assert.deepEqual(batches[0]!.samples, [{ ts: START, signal: 'can0.ENGINE_TEMPS.CoolantTemp', value: 90 }]);
  });
});

describe('collector: OBD values', () => {
  it('offer feeds rules naming obd.<key>; samples carry the offered name', () => {
    const { collector, samples } = setup({
      batch: { maxSamples: 1000, maxDelayMs: 60000 },
      rules: [{ name: 'obd', signals: ['obd.rpm', 'elm.obd.speed'], mode: 'change', deadband: { absolute: 50 } }],
    });
    collector.offer('obd.obd.rpm', 800, START);
    collector.offer('obd.obd.rpm', 820, START + 1);
    collector.offer('obd.obd.rpm', 900, START + 2);
    collector.offer('obd.obd.coolantTemp', 90, START + 2); // no rule reads it
    collector.offer('obd.obd.speed', 50, START + 3); // another adapter than the rule names
    collector.offer('elm.obd.speed', 50, START + 4);
    collector.flush();
    assert.deepEqual(samples(), [
      { ts: START, signal: 'obd.obd.rpm', value: 800 },
      { ts: START + 2, signal: 'obd.obd.rpm', value: 900 },
      { ts: START + 4, signal: 'elm.obd.speed', value: 50 },
    ]);
    assert.equal(collector.stats.samplesIn, 4);
  });
});

describe('collector: batching', () => {
  it('closes telemetry batches at maxSamples, per priority', () => {
    const { collector, send, batches } = setup({
      batch: { maxSamples: 4, maxDelayMs: 60000 },
      rules: [
        { name: 'counter', signals: ['EngineDataCounter'], mode: 'change', priority: 1 },
        { name: 'speed', signals: ['VehicleSpeed'], mode: 'change', priority: 5 },
      ],
    });
    for (let i = 0; i < 10; i++) send('ENGINE_DATA', { EngineDataCounter: i }, i * 10);
    for (let i = 0; i < 3; i++) send('VEHICLE_DYNAMICS', { VehicleSpeed: i }, i * 10);
    assert.deepEqual(
      batches.map((b) => [b.kind, b.priority, b.samples.length]),
      [
        ['telemetry', 1, 4],
        ['telemetry', 1, 4],
      ],
    );
    collector.flush();
    // flush: highest priority first
    assert.deepEqual(
      batches.slice(2).map((b) => [b.priority, b.samples.length]),
      [
        [5, 3],
        [1, 2],
      ],
    );
    assert.deepEqual(
      batches[0]!.samples.map((s) => s.value),
      [0, 1, 2, 3],
    );
    assert.equal(collector.stats.batches, 4);
    assert.equal(collector.stats.samplesEmitted, 13);
  });

  it('closes a batch maxDelayMs after its first sample, on tick', () => {
    const { collector, send, batches, clock } = setup({
      batch: { maxSamples: 100, maxDelayMs: 1000 },
      rules: [{ name: 'speed', signals: ['VehicleSpeed'], mode: 'change' }],
    });
    clock.ms = 5000;
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 1 }, 0);
    clock.ms = 5600;
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 2 }, 600);
    collector.tick();
    assert.equal(batches.length, 0);
    clock.ms = 6000;
    collector.tick();
    assert.equal(batches.length, 1);
    assert.equal(batches[0]!.samples.length, 2);
    collector.tick();
    assert.equal(batches.length, 1, 'no empty batches');
  });

  it('closes a batch when its estimated size reaches maxBytes', () => {
    const { collector, send, batches } = setup({
      batch: { maxSamples: 10000, maxDelayMs: 60000, maxBytes: 256 },
      rules: [{ name: 'counter', signals: ['EngineDataCounter'], mode: 'change' }],
    });
    for (let i = 0; i < 100; i++) send('ENGINE_DATA', { EngineDataCounter: i % 16 }, i * 10);
    collector.flush();
    // 64 header + 8 + 32 name + 8 per sample: the 19th sample reaches 256 bytes.
    assert.deepEqual(
      batches.map((b) => b.samples.length),
      [19, 19, 19, 19, 19, 5],
    );
  });

  it('starts and stops its timer', async () => {
    const { collector, send, batches, clock } = setup(
      { batch: { maxSamples: 100, maxDelayMs: 40 }, rules: [{ name: 'speed', signals: ['VehicleSpeed'], mode: 'change' }] },
      { tickMs: 10 },
    );
    collector.start();
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 1 }, 0);
    clock.ms = 100;
    await delay(50);
    assert.equal(batches.length, 1);
    send('VEHICLE_DYNAMICS', { VehicleSpeed: 2 }, 10);
    collector.close();
    assert.equal(batches.length, 2);
  });
});

describe('collection config', () => {
  it('fills in defaults', () => {
    const config = collectionConfigSchema.parse({
      rules: [{ name: 't', signals: ['VehicleSpeed'], mode: 'trigger', trigger: { when: 'VehicleSpeed > 1' } }],
    });
    assert.deepEqual(config.batch, { maxSamples: 500, maxDelayMs: 5000 });
    assert.equal(config.format, 'cbor');
    assert.deepEqual(config.rules[0], {
      name: 't',
      signals: ['VehicleSpeed'],
      mode: 'trigger',
      priority: 3,
      trigger: { when: 'VehicleSpeed > 1', risingEdge: true, preMs: 0, postMs: 0, minIntervalMs: 0 },
    });
  });

  it('rejects bad expressions with their column, duplicate names and fields of another mode', () => {
    const result = collectionConfigSchema.safeParse({
      rules: [
        { name: 'a', signals: ['x'], mode: 'trigger', trigger: { when: 'x > > 1' } },
        { name: 'a', signals: ['x'], mode: 'periodic', intervalMs: 100, deadband: { absolute: 1 } },
        { name: 'b', signals: [], mode: 'change', priority: 8 },
      ],
    });
    assert.equal(result.success, false);
    const issues = result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    assert.ok(
      issues.some((m) => m.startsWith('rules.0.trigger.when: invalid condition: column 5:')),
      issues.join('\n'),
    );
    assert.ok(
      issues.some((m) => m.startsWith('rules.1') && /deadband/.test(m)),
      issues.join('\n'),
    );
    assert.ok(
      issues.some((m) => m.startsWith('rules.2.signals')),
      issues.join('\n'),
    );
    assert.ok(
      issues.some((m) => m.startsWith('rules.2.priority')),
      issues.join('\n'),
    );
  });

  it('names unknown signals when the rules are compiled against the DBCs', () => {
    const cases: [unknown, RegExp][] = [
      [{ name: 'r', signals: ['NoSuchSignal'], mode: 'change' }, /rules\[0\] \(r\)\.signals\[0\]: no bus DBC has a signal 'NoSuchSignal'/],
      [{ name: 'r', signals: ['can1.ENGINE_DATA.EngineSpeed'], mode: 'change' }, /'can1\.ENGINE_DATA\.EngineSpeed'/],
      [{ name: 'r', signals: ['obd.nosuch'], mode: 'change' }, /'obd\.nosuch' \(OBD signals are obd\.<J1979 key>/],
      [
        { name: 'r', signals: ['VehicleSpeed'], mode: 'trigger', trigger: { when: 'VehicleSpeed > 1 && Sped < 3' } },
        /trigger\.when: column 21: unknown signal 'Sped'/,
      ],
    ];
    for (const [rule, message] of cases) {
      assert.throws(
        () => setup({ rules: [rule] }),
        (err: unknown) => err instanceof CollectorConfigError && message.test(err.message),
      );
    }
  });
});

describe('collection config: every-sample rules', () => {
  /** The problems the device config loader reports for `rules` on the demo bus. */
  const problems = (rules: unknown[]): string[] => {
    try {
      parseDeviceConfig(
        {
          deviceId: 'every-config',
          buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
          collection: { rules },
          outbox: { path: 'var/outbox.db' },
        },
        { file: 'config.json', baseDir: '/' },
      );
      return [];
    } catch (err) {
      if (!(err instanceof DeviceConfigError)) throw err;
      return err.problems;
    }
  };

  it('[17.every] the mode takes a name, signals and a priority, nothing else; its defaults', () => {
    const config = collectionConfigSchema.parse({ rules: [{ name: 'raw', signals: ['VehicleSpeed'], mode: 'every' }] });
    assert.deepEqual(config.rules[0], { name: 'raw', signals: ['VehicleSpeed'], mode: 'every', priority: 3 });
    assert.deepEqual(problems([{ name: 'raw', signals: ['VehicleSpeed'], mode: 'every', priority: 5 }]), []);
  });

  it('[17.every] an empty signal list, fields of another mode and a mode that does not exist are refused, naming the field', () => {
    assert.deepEqual(
      problems([
        { name: 'a', signals: [], mode: 'every' },
        { name: 'b', signals: ['VehicleSpeed'], mode: 'every', intervalMs: 1 },
        { name: 'c', signals: ['VehicleSpeed'], mode: 'all' },
      ]),
      [
        'collection.rules[0].signals: needs at least 1 entry',
        "collection.rules[1]: unknown field 'intervalMs'",
        'collection.rules[2].mode: expected "periodic" or "change" or "trigger" or "every", got "all"',
      ],
    );
  });

  it('[17.every] unknown signal names are refused when the rules are compiled against the DBCs, naming the rule and the entry', () => {
    for (const [signals, message] of [
      [['VehicleSpeed', 'EngineSpede'], "collection.rules[0] (raw).signals[1]: no bus DBC has a signal 'EngineSpede'"],
      [['obd.rpmm'], "collection.rules[0] (raw).signals[0]: no bus DBC has a signal 'obd.rpmm' (OBD signals are obd.<J1979 key>, e.g. obd.rpm)"],
    ] as const) {
      assert.throws(
        () => setup({ rules: [{ name: 'raw', signals, mode: 'every' }] }),
        (err: unknown) => err instanceof CollectorConfigError && err.message === message,
      );
    }
  });
});

describe('collection config: the memory it may claim', () => {
  const trigger = (name: string, fields: object, signals = ['VehicleSpeed']) => ({
    name,
    signals,
    mode: 'trigger',
    trigger: { when: 'VehicleSpeed > 1', ...fields },
  });
  /** The reason the schema gives for refusing `collection`, or undefined when it takes it. */
  const refusal = (collection: unknown): string | undefined => {
    const result = collectionConfigSchema.safeParse(collection);
    return result.success ? undefined : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
  };

  it('[14.L10] 10 triggers of 1,000,000 buffered samples each are refused, with what they would claim and the budget', () => {
    const greedy = { rules: Array.from({ length: 10 }, (_, i) => trigger(`brake${i}`, { bufferSamples: 1_000_000 })) };
    assert.equal(
      refusal(greedy),
      ': the rules would hold up to 1160 MB in memory, over the budget of 64 MB (maxMemoryMB): ' +
        "trigger 'brake0' 116 MB (1000000 buffered samples), trigger 'brake1' 116 MB (1000000 buffered samples), " +
        "trigger 'brake2' 116 MB (1000000 buffered samples), and 7 more; " +
        'lower trigger.bufferSamples, trigger.postMs or batch.maxSamples, or raise maxMemoryMB if the device has the memory',
    );
    // Open batches count too: eight priorities of 100,000 samples each.
    const batches = {
      batch: { maxSamples: 100_000 },
      rules: Array.from({ length: 8 }, (_, p) => ({ name: `p${p}`, signals: ['VehicleSpeed'], mode: 'change', priority: p })),
    };
    assert.match(refusal(batches) ?? '', /would hold up to 77 MB in memory, .*telemetry batches of 8 priorities 77 MB \(batch\.maxSamples 100000 each\)/);
    // A device with the memory says so: the same rules within a raised budget.
    assert.equal(refusal({ ...greedy, maxMemoryMB: 1200 }), undefined);
  });

  it('[14.L10] normal sections pass: a few triggers of tens of thousands of samples, batches of thousands', () => {
    assert.equal(
      refusal({
        batch: { maxSamples: 5000 },
        rules: [trigger('a', { bufferSamples: 100_000 }), trigger('b', { bufferSamples: 200_000 }), { name: 'c', signals: ['VehicleSpeed'], mode: 'change' }],
      }),
      undefined,
    );
    assert.equal(collectionConfigSchema.parse({}).maxMemoryMB, 64);
  });

  it('[14.L10] the collector counts what only the DBCs tell: default ring sizes and post windows, within the same budget', () => {
    // ENGINE_DATA is sent every 10 ms: an hour before the trigger is 360,000 values a signal, held twice over.
    const hourBefore = { rules: [trigger('hour', { preMs: 3_600_000 }, ['EngineSpeed'])] };
    assert.equal(refusal(hourBefore), undefined, 'the fields alone do not say');
    assert.throws(
      () => setup(hourBefore),
      (err: unknown) =>
        err instanceof CollectorConfigError &&
        /^collection: the rules would hold up to 84 MB in memory, over the budget of 64 MB \(maxMemoryMB\): trigger 'hour' 84 MB \(720002 buffered samples\)/.test(
          err.message,
        ),
    );
    const hourAfter = { rules: [trigger('after', { postMs: 3_600_000 }, ['EngineSpeed', 'ENGINE_DATA.ThrottlePosition'])] };
    assert.throws(
      () => setup(hourAfter),
      (err: unknown) =>
        err instanceof CollectorConfigError && /trigger 'after' 69 MB \(16 buffered samples and about 720002 in its 3600000 ms post window\)/.test(err.message),
    );
    // A minute either side fits.
    const { collector } = setup({ rules: [trigger('minute', { preMs: 60_000, postMs: 60_000 }, ['EngineSpeed'])] });
    collector.close();
  });
});
