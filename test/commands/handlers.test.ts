/**
 * The command handlers other than ping and getStatus, run against the agent's real command context: bus decoders fed
 * by the simulated vehicle, the SQLite outbox and collector of a real data path, a device config file in a temp
 * folder, an in-memory CAN bus standing in for a SocketCAN interface (the VM tests cover the kernel), and the ELM327
 * simulator on a pseudo-terminal behind a full `runAgent`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MemoryCanBus } from '../../src/can/bus.js';
import type { CanFrame } from '../../src/can/frame.js';
import { createCommandContext } from '../../src/agent/command-context.js';
import { DataPath } from '../../src/agent/data-path.js';
import { RESTART_EXIT_CODE } from '../../src/agent/exit-codes.js';
import { takeSnapshot } from '../../src/agent/snapshot.js';
import { runAgent } from '../../src/cli/run.js';
import { freshnessConfigSchema } from '../../src/commands/config.js';
import { CommandFailure, type CommandContext, type CommandHandler, type CommandRun } from '../../src/commands/handler.js';
import { HANDLERS } from '../../src/commands/handlers/index.js';
import { readCollectionOverride } from '../../src/config/collection-override.js';
import { loadDeviceConfig, parseDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile, type CompiledDatabase } from '../../src/dbc/index.js';
import type { LogLevel } from '../../src/health/log-config.js';
import { Logger } from '../../src/health/log.js';
import { DEMO_DBC_PATH, SimulatedVehicle } from '../../src/sim/vehicle.js';
import { decodeMessage } from '../../src/uplink/codec.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { contractChecker } from '../support/contract.js';
import { elmOnPty, type ElmRig } from '../support/elm327.js';
import { RECORDED_VIN } from '../support/elm327-recording.js';
import { messageFrame } from '../support/frames.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

const handler = (name: string): CommandHandler<unknown> => {
  const found = HANDLERS.find((h) => h.name === name);
  assert.ok(found, `no handler ${name} in the registry`);
  return found;
};

let runs = 0;
function commandRun(): CommandRun & { progressed: Record<string, unknown>[] } {
  const progressed: Record<string, unknown>[] = [];
  return { id: `test-${++runs}`, signal: new AbortController().signal, progress: (d) => progressed.push(d ?? {}), progressed };
}

const contract = contractChecker();

/**
 * Validates the params as the dispatcher does, then runs the handler; its result (as JSON, as the car sends it) and
 * each progress report must match the published `commands/<name>.result` and `.progress` schemas ([17.contract]).
 */
async function execute(name: string, params: unknown, context: CommandContext): Promise<unknown> {
  const h = handler(name);
  const parsed = h.params.safeParse(params);
  if (!parsed.success) throw new Error(`bad params for ${name}: ${parsed.error.message}`);
  const run = commandRun();
  const result = await h.run(parsed.data, context, run);
  if (result !== undefined) assert.deepEqual(contract.problems(`commands/${name}.result`, JSON.parse(JSON.stringify(result))), [], `${name}'s result`);
  for (const report of run.progressed) assert.deepEqual(contract.problems(`commands/${name}.progress`, report), [], `${name}'s progress`);
  return result;
}

async function failure(name: string, params: unknown, context: CommandContext): Promise<CommandFailure> {
  try {
    await execute(name, params, context);
  } catch (err) {
    if (err instanceof CommandFailure) return err;
    throw err;
  }
  assert.fail(`${name} succeeded where it should have failed`);
}

const INITIAL_COLLECTION = {
  batch: { maxSamples: 50, maxDelayMs: 1000 },
  format: 'json',
  rules: [{ name: 'speed', mode: 'periodic', intervalMs: 500, signals: ['VehicleSpeed'] }],
};

const ALLOWED_SIGNALS = [
  { bus: 'can1', message: 'BODY_STATUS', signal: 'TrunkOpen', min: 0, max: 1 },
  { bus: 'can1', message: 'ENGINE_DATA', signal: 'ThrottlePosition', min: 0, max: 50, precondition: 'can0.VEHICLE_DYNAMICS.VehicleSpeed < 400' },
  { bus: 'can1', message: 'ENGINE_DATA', signal: 'EngineLoad' },
  { bus: 'can1', message: 'ECU_DIAG_STATUS', signal: 'MilOn' },
  { bus: 'can1', message: 'BRAKE_STATUS', signal: 'AbsActive', precondition: 'can0.VEHICLE_DYNAMICS.VehicleSpeed > 1000' },
  { bus: 'can1', message: 'NO_SUCH_MESSAGE', signal: 'X' },
  { bus: 'can0', message: 'BODY_STATUS', signal: 'TrunkOpen' },
  { bus: 'rec0', message: 'BODY_STATUS', signal: 'TrunkOpen' },
];

/** A data path on the demo DBC: can0 the simulated car, can1 a SocketCAN bus (captured), rec0 a recording. */
interface Rig {
  dir: string;
  configFile: string;
  config: DeviceConfig;
  buses: BusDecoder[];
  database: CompiledDatabase;
  dataPath: DataPath;
  context: CommandContext;
  canBus: MemoryCanBus;
  obdValues: Map<string, number>;
  logLevels: LogLevel[];
  restarts: number;
  /** The last VEHICLE_DYNAMICS payload the simulated car sent. */
  lastDynamics: Uint8Array | undefined;
  /** Frame time where the next drive starts: the rules work in frame time, which must not go back. */
  clock: number;
  /** Runs the simulated car flat out for `seconds` of its time into the data path. */
  drive(seconds: number, seed?: number): Promise<void>;
}

async function openRig(): Promise<Rig> {
  const dir = makeTempDir('commands-');
  const log = path.join(dir, 'drive.log');
  writeFileSync(log, '(1700000000.000000) can0 2C0#0200\n');
  const document = {
    deviceId: 'handler-test',
    buses: [
      { name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', seed: 1 } },
      { name: 'can1', dbc: DEMO_DBC_PATH, source: { type: 'socketcan', interface: 'vcan7' } },
      { name: 'rec0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: 'drive.log' } },
    ],
    status: { intervalMs: 1000, signals: ['VehicleSpeed'] },
    collection: INITIAL_COLLECTION,
    outbox: { path: 'var/outbox.db', writeIntervalMs: 50 },
  };
  const configFile = path.join(dir, 'device.json');
  writeFileSync(configFile, JSON.stringify(document, null, 2));
  const loaded = loadDeviceConfig(configFile);
  // The commands section belongs to the command subsystem's schema; the handlers only read its allow-list.
  // Values stay fresh for a minute here: these tests are about the allow-list, not about a busy machine's pauses.
  const config = { ...loaded, commands: { allowedSignals: ALLOWED_SIGNALS, freshness: freshnessConfigSchema.parse({ minMs: 60_000 }) } } as DeviceConfig;
  const database = compileDatabase(loadDbcFile(DEMO_DBC_PATH, { strict: true }));
  const buses = config.buses.map((bus) => new BusDecoder(bus.name, database));
  const dataPath = await DataPath.open(config, buses, new Logger({ lines: () => undefined }));
  const canBus = new MemoryCanBus('vcan7');
  const obdValues = new Map<string, number>();
  const rig: Rig = {
    dir,
    configFile,
    config,
    buses,
    database,
    dataPath,
    canBus,
    obdValues,
    logLevels: [],
    restarts: 0,
    lastDynamics: undefined,
    clock: 1_700_000_000,
    context: undefined as unknown as CommandContext,
    async drive(seconds, seed = 1) {
      const sink = dataPath.sinkFor(0);
      const dynamics = database.byName('VEHICLE_DYNAMICS')!.message.id;
      const car = new SimulatedVehicle({ database, bus: 'can0', realtime: false, durationS: seconds, seed, startTime: rig.clock });
      rig.clock += seconds + 1;
      await car.run((frame: CanFrame) => {
        if (frame.id === dynamics) rig.lastDynamics = frame.data.slice();
        sink(frame);
      });
    },
  };
  rig.context = createCommandContext({
    config,
    buses,
    obdValues,
    snapshot: () => takeSnapshot({ config, buses, obdValues, dataPath }),
    statusReport: () => {
      throw new Error('getStatus is not run in this test');
    },
    dataPath,
    setLogLevel: (level) => rig.logLevels.push(level),
    requestRestart: () => rig.restarts++,
    openCanBus: (ifname) => {
      assert.equal(ifname, 'vcan7');
      return canBus;
    },
  });
  return rig;
}

/** Where setConfig keeps the collection rules: beside the outbox. */
function overrideFile(rig: Rig): string {
  return path.join(path.dirname(rig.config.outbox!.path), 'collection-override.json');
}

/** Samples the collector's rules have taken (batched or not yet). */
function ruleSamples(collector: DataPath['collector']): number {
  return collector.stats.rules.reduce((sum, rule) => sum + rule.samples, 0);
}

function outboxSignals(file: string): Set<string> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare<[], { payload: Buffer }>('SELECT payload FROM message ORDER BY seq').all();
    return new Set(rows.flatMap((row) => decodeMessage(new Uint8Array(row.payload), 'json').samples.map((s) => s.signal)));
  } finally {
    db.close();
  }
}

describe('command handlers on the agent context', () => {
  let rig: Rig;
  before(async () => {
    rig = await openRig();
    await rig.drive(3);
  });
  after(async () => {
    await rig.dataPath.close();
  });

  it('registers every handler once, each with a parameter schema and a timeout', () => {
    const names = HANDLERS.map((h) => h.name);
    for (const name of ['getConfig', 'setConfig', 'readDtcs', 'clearDtcs', 'readVin', 'captureSnapshot', 'setSignal', 'setLogLevel', 'restartAgent']) {
      assert.equal(names.filter((n) => n === name).length, 1, name);
      const h = handler(name);
      assert.ok(h.defaultTimeoutMs >= 1000 && h.defaultTimeoutMs <= 60_000, `${name}: ${h.defaultTimeoutMs}`);
    }
    // Unknown parameters are refused by the schemas (strict objects), never ignored.
    assert.equal(handler('restartAgent').params.safeParse({ now: true }).success, false);
    assert.equal(handler('setLogLevel').params.safeParse({ level: 'verbose' }).success, false);
    assert.equal(handler('setSignal').params.safeParse({ message: 'A', signal: 'B', value: Number.POSITIVE_INFINITY }).success, false);
  });

  describe('captureSnapshot', () => {
    it('returns the decoded values under every name a collection rule may use', async () => {
      const expected = rig.database.byName('VEHICLE_DYNAMICS')!.decode(rig.lastDynamics!) as Record<string, number>;
      rig.obdValues.set('obd.obd.coolantTemp', 91);
      const result = (await execute(
        'captureSnapshot',
        {
          signals: [
            'VehicleSpeed',
            'VEHICLE_DYNAMICS.YawRate',
            'can0.VEHICLE_DYNAMICS.LongitudinalAccel',
            'obd.coolantTemp',
            'obd.obd.coolantTemp',
            'can1.BODY_STATUS.TrunkOpen',
            'NoSuchSignal',
          ],
        },
        rig.context,
      )) as { ts: number; values: Record<string, number | null>; unavailable: string[] };
      assert.equal(result.values.VehicleSpeed, expected.VehicleSpeed);
      assert.equal(result.values['VEHICLE_DYNAMICS.YawRate'], expected.YawRate);
      assert.equal(result.values['can0.VEHICLE_DYNAMICS.LongitudinalAccel'], expected.LongitudinalAccel);
      assert.equal(result.values['obd.coolantTemp'], 91);
      assert.equal(result.values['obd.obd.coolantTemp'], 91);
      // can1 never received a frame; NoSuchSignal names nothing: both are reported, not guessed.
      assert.deepEqual(result.unavailable, ['can1.BODY_STATUS.TrunkOpen', 'NoSuchSignal']);
      assert.equal(result.values.NoSuchSignal, null);
      assert.ok(Math.abs(result.ts - Date.now()) < 5000);
    });

    it('fails with unknown-signal when none of the names has a value', async () => {
      const err = await failure('captureSnapshot', { signals: ['Nope', 'ENGINE_DATA.Nope'] }, rig.context);
      assert.equal(err.reason, 'unknown-signal');
      assert.match(err.message, /Nope, ENGINE_DATA\.Nope/);
    });
  });

  describe('getConfig', () => {
    it('returns the running config, whole or one section', async () => {
      const whole = (await execute('getConfig', {}, rig.context)) as { config: DeviceConfig };
      assert.equal(whole.config.deviceId, 'handler-test');
      assert.deepEqual(
        whole.config.buses.map((b) => b.name),
        ['can0', 'can1', 'rec0'],
      );
      const section = (await execute('getConfig', { section: 'collection' }, rig.context)) as { section: string; value: { rules: { name: string }[] } };
      assert.deepEqual(
        section.value.rules.map((r) => r.name),
        ['speed'],
      );
      assert.deepEqual(await execute('getConfig', { section: 'uplink' }, rig.context), { section: 'uplink', value: null });
      // A copy: what a handler does with it cannot change the agent's config.
      whole.config.buses.length = 0;
      assert.equal(rig.config.buses.length, 3);
    });
  });

  describe('setConfig', () => {
    it('[14.9] applies new rules without a restart, keeps the old batches, and keeps them in the override file (config.json untouched)', async () => {
      const before = readFileSync(rig.configFile);
      const oldCollector = rig.dataPath.collector;
      const messagesBefore = rig.dataPath.outbox.stats().messages;
      const collection = {
        batch: { maxSamples: 20, maxDelayMs: 500 },
        format: 'json',
        rules: [
          { name: 'engine', mode: 'periodic', intervalMs: 200, signals: ['EngineSpeed', 'ENGINE_TEMPS.CoolantTemp'] },
          { name: 'gear', mode: 'change', signals: ['GearEngaged'] },
        ],
      };
      const result = await execute('setConfig', { collection }, rig.context);
      assert.deepEqual(result, { applied: 'collection', rules: 2 });

      // The old collector's open batch went to the outbox before the swap; the new one takes the running sink.
      assert.notEqual(rig.dataPath.collector, oldCollector);
      assert.ok(rig.dataPath.outbox.stats().messages > messagesBefore, 'the old open batches were committed');
      assert.deepEqual(
        rig.dataPath.collector.stats.rules.map((r) => r.name),
        ['engine', 'gear'],
      );
      await rig.drive(3, 2);
      rig.dataPath.collector.close();
      rig.dataPath.commitBatches();
      rig.dataPath.collector.start();
      const signals = outboxSignals(rig.config.outbox!.path);
      assert.ok(signals.has('can0.VEHICLE_DYNAMICS.VehicleSpeed'), 'samples of the old rule');
      assert.ok(signals.has('can0.ENGINE_DATA.EngineSpeed'), 'samples of the new rule');
      assert.ok(signals.has('can0.ENGINE_TEMPS.CoolantTemp'));

      // The device config is not rewritten; the override beside the outbox holds the new section as sent, alone,
      // and no temporary file is left beside it.
      assert.deepEqual(readFileSync(rig.configFile), before);
      assert.deepEqual(JSON.parse(readFileSync(overrideFile(rig), 'utf8')), { collection });
      assert.deepEqual(readdirSync(rig.dir).sort(), ['device.json', 'drive.log', 'var']);
      assert.deepEqual(
        readdirSync(path.dirname(overrideFile(rig))).filter((name) => name.endsWith('.tmp')),
        [],
      );
      // It loads: the next start runs the new rules.
      assert.deepEqual(
        readCollectionOverride(overrideFile(rig))!.rules.map((r) => r.name),
        ['engine', 'gear'],
      );
      const shown = (await execute('getConfig', { section: 'collection' }, rig.context)) as { value: { rules: { name: string }[] } };
      assert.deepEqual(
        shown.value.rules.map((r) => r.name),
        ['engine', 'gear'],
      );
    });

    it('a reader in another process sees the old file or the new one, never a mix, while the rules change', async () => {
      const rules = (n: number): unknown => ({ rules: [{ name: `r${n}`, mode: 'periodic', intervalMs: 100 + n, signals: ['EngineSpeed'] }] });
      // Reads the file as fast as it can until told to stop; reports what it saw.
      const reader = spawn(
        process.execPath,
        [
          '-e',
          `const fs = require('node:fs'); let reads = 0, bad = 0, names = new Set(), stop = false, ready = false;
           process.stdin.on('data', () => { stop = true; });
           (function loop() {
             for (let k = 0; k < 200; k++) {
               try { const c = JSON.parse(fs.readFileSync(process.argv[1], 'utf8')); names.add(c.collection.rules[0].name); reads++; }
               catch (e) { bad++; }
             }
             if (reads > 0 && !ready) { ready = true; process.stdout.write('ready\\n'); }
             if (stop) { process.stdout.write(JSON.stringify({ reads, bad, names: [...names] })); process.exit(0); }
             setImmediate(loop);
           })();`,
          overrideFile(rig),
        ],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      );
      let out = '';
      reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise((resolve) => reader.on('exit', resolve));
      // Node takes a while to start on a busy machine: the rules change only once the reader is reading.
      await waitFor(() => out.includes('ready\n'), 'the reader to start reading', 10_000);
      for (let n = 0; n < 40; n++) {
        await execute('setConfig', { collection: rules(n) }, rig.context);
        await delay(2);
      }
      await execute(
        'setConfig',
        {
          collection: {
            batch: { maxSamples: 20, maxDelayMs: 500 },
            format: 'json',
            rules: [
              { name: 'engine', mode: 'periodic', intervalMs: 200, signals: ['EngineSpeed', 'ENGINE_TEMPS.CoolantTemp'] },
              { name: 'gear', mode: 'change', signals: ['GearEngaged'] },
            ],
          },
        },
        rig.context,
      );
      reader.stdin.end('stop\n');
      await exited;
      const seen = JSON.parse(out.slice(out.indexOf('ready\n') + 'ready\n'.length)) as { reads: number; bad: number; names: string[] };
      assert.equal(seen.bad, 0, `${seen.bad} of ${seen.reads + seen.bad} reads saw a partial file`);
      assert.ok(seen.reads > 100, `${seen.reads} reads`);
      assert.ok(seen.names.length > 2, `saw ${seen.names.join(', ')}`);
      assert.deepEqual(readdirSync(rig.dir).sort(), ['device.json', 'drive.log', 'var']);
    });

    it('refuses rules naming a signal no bus has: apply-failed, old collector and file untouched', async () => {
      const file = readFileSync(rig.configFile);
      const running = rig.dataPath.collector;
      const err = await failure(
        'setConfig',
        { collection: { rules: [{ name: 'typo', mode: 'periodic', intervalMs: 100, signals: ['VehicleSpede'] }] } },
        rig.context,
      );
      assert.equal(err.reason, 'apply-failed');
      assert.match(err.message, /collection\.rules\[0\] \(typo\)\.signals\[0\]: no bus DBC has a signal 'VehicleSpede'/);
      assert.equal(rig.dataPath.collector, running);
      assert.deepEqual(readFileSync(rig.configFile), file);
      const before = ruleSamples(running);
      await rig.drive(1, 3);
      assert.ok(ruleSamples(running) > before, 'the old rules still collect');
    });

    it('refuses a section the schema rejects: invalid-config, naming the field', async () => {
      const file = readFileSync(rig.configFile);
      const running = rig.dataPath.collector;
      const err = await failure('setConfig', { collection: { batch: { maxSamples: 0 }, rules: [] } }, rig.context);
      assert.equal(err.reason, 'invalid-config');
      assert.match(err.message, /collection\.batch\.maxSamples/);
      assert.ok(Array.isArray((err.detail as { problems: string[] }).problems));
      const dup = await failure(
        'setConfig',
        {
          collection: {
            rules: [
              { name: 'a', mode: 'change', signals: ['GearEngaged'] },
              { name: 'a', mode: 'change', signals: ['GearEngaged'] },
            ],
          },
        },
        rig.context,
      );
      assert.equal(dup.reason, 'invalid-config');
      assert.match(dup.message, /duplicate rule name 'a'/);
      assert.equal(rig.dataPath.collector, running);
      assert.deepEqual(readFileSync(rig.configFile), file);
    });

    it('[14.L10] refuses a section that would claim more memory than its budget: invalid-config with the reason, nothing changed', async () => {
      const file = readFileSync(rig.configFile);
      const running = rig.dataPath.collector;
      const greedy = {
        rules: Array.from({ length: 10 }, (_, i) => ({
          name: `t${i}`,
          mode: 'trigger',
          signals: ['VehicleSpeed'],
          trigger: { when: 'VehicleSpeed > 200', bufferSamples: 1_000_000 },
        })),
      };
      const err = await failure('setConfig', { collection: greedy }, rig.context);
      assert.equal(err.reason, 'invalid-config');
      assert.match(
        err.message,
        /^collection: the rules would hold up to 1160 MB in memory, over the budget of 64 MB \(maxMemoryMB\): trigger 't0' 116 MB \(1000000 buffered samples\)/,
      );
      assert.equal(rig.dataPath.collector, running);
      assert.deepEqual(readFileSync(rig.configFile), file);
    });

    it('puts the old collector back when the file cannot be written', async () => {
      const file = readFileSync(rig.configFile);
      const running = rig.dataPath.collector;
      const samples = ruleSamples(running);
      // A folder where the temporary file would go: the write fails for real, after the new collector was swapped in.
      const blocker = path.join(path.dirname(overrideFile(rig)), `.collection-override.json.${process.pid}.tmp`);
      const override = readFileSync(overrideFile(rig));
      mkdirSync(blocker);
      try {
        const err = await failure('setConfig', { collection: { rules: [{ name: 'fuel', mode: 'change', signals: ['FuelLevel'] }] } }, rig.context);
        assert.equal(err.reason, 'apply-failed');
        assert.match(err.message, /cannot write the collection rules to .*collection-override\.json: .*; the previous rules stay in force/);
        assert.deepEqual(readFileSync(overrideFile(rig)), override);
      } finally {
        rmdirSync(blocker);
      }
      assert.equal(rig.dataPath.collector, running);
      assert.deepEqual(readFileSync(rig.configFile), file);
      assert.deepEqual(
        running.stats.rules.map((r) => r.name),
        ['engine', 'gear'],
      );
      await rig.drive(1, 4);
      assert.ok(ruleSamples(running) > samples, 'the restored collector collects again');
      const health = rig.dataPath.healthReport() as { collector: { samples: number } };
      assert.ok(health.collector.samples >= running.stats.samplesEmitted);
    });
  });

  describe('setSignal', () => {
    // The allow-list's preconditions read can0's speed, and refuse a stale one: the car's latest speed, sent now.
    beforeEach(() => {
      const dynamics = rig.database.byName('VEHICLE_DYNAMICS')!;
      const data = rig.lastDynamics ?? dynamics.encode({ VehicleSpeed: 30 });
      rig.dataPath.sinkFor(0)(messageFrame(dynamics, data, { ts: Date.now() / 1000, bus: 'can0' }));
    });

    /** Frames put on the captured SocketCAN bus from now on, decoded with the DBC. */
    function listen(): { frames: CanFrame[]; decoded(name: string): Record<string, number>[] } {
      const endpoint = rig.canBus.open();
      const frames: CanFrame[] = [];
      endpoint.onFrame((frame) => frames.push({ ...frame, data: frame.data.slice() }));
      return {
        frames,
        decoded: (name) => {
          const codec = rig.database.byName(name)!;
          return frames.filter((f) => f.id === codec.message.id).map((f) => codec.decode(f.data) as Record<string, number>);
        },
      };
    }

    it('encodes one frame with the DBC, the other signals as last received', async () => {
      // can1 has seen a BODY_STATUS frame: ignition on, driver door open.
      const body = rig.database.byName('BODY_STATUS')!;
      const sink = rig.dataPath.sinkFor(1);
      sink({
        ts: Date.now() / 1000,
        bus: 'can1',
        id: body.message.id,
        extended: false,
        fd: false,
        fdFlags: 0,
        remote: false,
        error: false,
        dlc: 2,
        data: body.encode({ IgnitionState: 2, DoorOpenFL: 1 }),
      });
      const capture = listen();
      const result = await execute('setSignal', { bus: 'can1', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 }, rig.context);
      assert.deepEqual(result, { bus: 'can1', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 });
      await waitFor(() => capture.frames.length === 1, 'the frame on the bus', 2000);
      assert.equal(capture.frames[0]!.id, 0x2c0);
      assert.equal(capture.frames[0]!.extended, false);
      assert.deepEqual(capture.decoded('BODY_STATUS'), [
        { IgnitionState: 2, DriverSeatbelt: 0, DoorOpenFL: 1, DoorOpenFR: 0, DoorOpenRL: 0, DoorOpenRR: 0, TrunkOpen: 1 },
      ]);
      // The bus name may be left out when one bus allows the signal; the value is scaled by the DBC (0.4 %/bit).
      await execute('setSignal', { message: 'ENGINE_DATA', signal: 'ThrottlePosition', value: 42.4 }, rig.context);
      await waitFor(() => capture.frames.length === 2, 'the second frame', 2000);
      assert.ok(Math.abs(capture.decoded('ENGINE_DATA')[0]!.ThrottlePosition! - 42.4) < 1e-9);
      assert.equal(capture.frames[1]!.data[2], 106);
    });

    it('selects the multiplexer page of a multiplexed signal', async () => {
      const capture = listen();
      await execute('setSignal', { bus: 'can1', message: 'ECU_DIAG_STATUS', signal: 'MilOn', value: 1 }, rig.context);
      await waitFor(() => capture.frames.length === 1, 'the frame on the bus', 2000);
      const [decoded] = capture.decoded('ECU_DIAG_STATUS');
      assert.equal(decoded!.DiagPage, 2);
      assert.equal(decoded!.MilOn, 1);
    });

    it('refuses what the allow-list, the ranges and the preconditions do not permit, and sends nothing', async () => {
      const capture = listen();
      const cases: [unknown, string, RegExp][] = [
        [
          { bus: 'can1', message: 'BODY_STATUS', signal: 'DoorOpenFL', value: 1 },
          'signal-not-allowed',
          /can1\.BODY_STATUS\.DoorOpenFL is not in commands\.allowedSignals/,
        ],
        [{ bus: 'can9', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 }, 'signal-not-allowed', /can9\.BODY_STATUS\.TrunkOpen/],
        [{ message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 }, 'unknown-bus', /allowed on several buses \(can1, can0, rec0\): name the bus/],
        [{ bus: 'can1', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 2 }, 'out-of-range', /= 2 is outside the allowed \[0, 1\]/],
        [{ bus: 'can1', message: 'ENGINE_DATA', signal: 'ThrottlePosition', value: 50.4 }, 'out-of-range', /outside the allowed \[0, 50\]/],
        // No range in the allow-list: the DBC's [0|100] still applies.
        [{ bus: 'can1', message: 'ENGINE_DATA', signal: 'EngineLoad', value: 120 }, 'out-of-range', /EngineLoad = 120 is outside \[0, 100\]/],
        [
          { bus: 'can1', message: 'BRAKE_STATUS', signal: 'AbsActive', value: 1 },
          'precondition-failed',
          /can0\.VEHICLE_DYNAMICS\.VehicleSpeed > 1000 \(can0\.VEHICLE_DYNAMICS\.VehicleSpeed = [\d.]+\) does not hold/,
        ],
        [{ bus: 'can1', message: 'NO_SUCH_MESSAGE', signal: 'X', value: 1 }, 'unknown-signal', /the bus DBC has no message 'NO_SUCH_MESSAGE'/],
        [{ bus: 'rec0', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 }, 'bus-unavailable', /rec0 replays a recording/],
      ];
      for (const [params, reason, message] of cases) {
        const err = await failure('setSignal', params, rig.context);
        assert.equal(err.reason, reason, `${JSON.stringify(params)}: ${err.message}`);
        assert.match(err.message, message);
      }
      const precondition = await failure('setSignal', { bus: 'can1', message: 'BRAKE_STATUS', signal: 'AbsActive', value: 1 }, rig.context);
      const speed = rig.context.readSignal('can0.VEHICLE_DYNAMICS.VehicleSpeed');
      assert.equal(typeof speed, 'number');
      assert.deepEqual((precondition.detail as { values: Record<string, unknown> }).values, { 'can0.VEHICLE_DYNAMICS.VehicleSpeed': speed });
      await delay(20);
      assert.equal(capture.frames.length, 0);
    });

    it('writes to the simulated bus by delivering the frame to its receiver', async () => {
      assert.notEqual(rig.context.readSignal('can0.BODY_STATUS.TrunkOpen'), 1);
      await execute('setSignal', { bus: 'can0', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 }, rig.context);
      assert.equal(rig.context.readSignal('can0.BODY_STATUS.TrunkOpen'), 1);
    });

    it('reports a SocketCAN bus that is down as bus-unavailable', async () => {
      rig.canBus.up = false;
      try {
        const err = await failure('setSignal', { bus: 'can1', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 0 }, rig.context);
        assert.equal(err.reason, 'bus-unavailable');
        assert.match(err.message, /vcan7: network is down/);
      } finally {
        rig.canBus.up = true;
      }
    });
  });

  describe('setLogLevel, restartAgent', () => {
    it('hand the level and the restart request to the agent', async () => {
      assert.deepEqual(await execute('setLogLevel', { level: 'error' }, rig.context), { level: 'error' });
      assert.deepEqual(rig.logLevels, ['error']);
      assert.deepEqual(await execute('restartAgent', {}, rig.context), { restarting: true });
      assert.equal(rig.restarts, 1);
    });
  });

  describe('OBD handlers without an OBD connection', () => {
    it('fail with obd-unavailable', async () => {
      for (const name of ['readVin', 'readDtcs', 'clearDtcs']) {
        const err = await failure(name, {}, rig.context);
        assert.equal(err.reason, 'obd-unavailable', name);
      }
    });
  });
});

describe('command handlers in a running agent', () => {
  const simBus = { name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } };

  it('restartAgent stops the run after a moment and marks it for the restart exit code; setLogLevel error silences warnings', async () => {
    for (const quiet of [false, true]) {
      const config = parseDeviceConfig({ deviceId: 'restart-test', buses: [simBus] }, { file: 'inline', baseDir: repoRoot });
      const warnings: string[] = [];
      let context: CommandContext | undefined;
      const started = performance.now();
      const running = runAgent({
        config,
        durationS: 20,
        output: { write: () => undefined },
        warn: (m) => warnings.push(m),
        onCommandContext: (c) => (context = c),
      });
      assert.ok(context, 'the context is handed over before the sources run');
      await delay(100);
      if (quiet) await execute('setLogLevel', { level: 'error' }, context);
      await execute('restartAgent', {}, context);
      const summary = await running;
      const tookMs = performance.now() - started;
      assert.equal(summary.restartRequested, true);
      assert.ok(tookMs > 900 && tookMs < 5000, `${tookMs} ms`);
      assert.ok(summary.buses[0]!.frames > 0);
      assert.equal(warnings.includes('restart requested by a remote command: stopping'), !quiet, warnings.join('\n'));
    }
    assert.equal(RESTART_EXIT_CODE, 75);
  });

  describe('with an ELM327 adapter', () => {
    let elm: ElmRig;
    before(async () => {
      elm = await elmOnPty({ ecus: [{ vin: RECORDED_VIN, dtcs: { stored: ['P0133', 'P0300'], pending: ['P0171'] } }] });
    });
    after(async () => {
      await elm.close();
    });

    it('readVin, readDtcs, clearDtcs and OBD values in captureSnapshot go through the polling adapter', async () => {
      const config = parseDeviceConfig(
        {
          deviceId: 'obd-test',
          buses: [simBus],
          obdAdapters: [{ name: 'obd', port: elm.path, pids: [{ pid: 'rpm', intervalMs: 100 }] }],
        },
        { file: 'inline', baseDir: repoRoot },
      );
      const agent = await InProcessAgent.start(config);
      const context = agent.context;
      try {
        await waitFor(() => context.obd() !== undefined && context.readSignal('obd.rpm') !== undefined, 'the adapter ready and polled', 15_000);
        const snapshot = (await execute('captureSnapshot', { signals: ['obd.rpm', 'obd.obd.rpm', 'VehicleSpeed'] }, context)) as {
          values: Record<string, unknown>;
        };
        assert.equal(snapshot.values['obd.rpm'], 750);
        assert.equal(snapshot.values['obd.obd.rpm'], 750);

        assert.deepEqual(await execute('readVin', {}, context), { vin: RECORDED_VIN, ecu: 0, ecus: [{ ecu: 0, vin: RECORDED_VIN }] });
        assert.deepEqual(await execute('readDtcs', {}, context), { kind: 'stored', dtcs: ['P0133', 'P0300'], ecus: [{ ecu: 0, dtcs: ['P0133', 'P0300'] }] });
        assert.deepEqual(await execute('readDtcs', { kind: 'pending' }, context), { kind: 'pending', dtcs: ['P0171'], ecus: [{ ecu: 0, dtcs: ['P0171'] }] });
        assert.deepEqual(await execute('clearDtcs', {}, context), { cleared: [0], ecus: [{ ecu: 0, cleared: true }] });
        assert.deepEqual(elm.sim.ecus[0]!.model.dtcs.stored, []);
        assert.deepEqual(await execute('readDtcs', {}, context), { kind: 'stored', dtcs: [], ecus: [{ ecu: 0, dtcs: [] }] });

        // An ECU that is not there: the request fails as a whole, with the driver's reason.
        const err = await failure('readVin', { ecu: 5 }, context);
        assert.equal(err.reason, 'obd-error');
        assert.match(err.message, /^reading the VIN: /);
      } finally {
        agent.stop();
      }
      const summary = await agent.close();
      assert.ok(summary.adapters[0]!.obd.samples > 0);
    });
  });
});
