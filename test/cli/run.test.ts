/** `telematics-agent run`: the compiled CLI as a user runs it, and the run loop in-process for the TTY status line. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runAgent } from '../../src/cli/run.js';
import { loggingConfigSchema } from '../../src/health/log-config.js';
import { Logger } from '../../src/health/log.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { loadDeviceConfig, parseDeviceConfig } from '../../src/config/device-config.js';
import { compileDatabase, loadDbcFile } from '../../src/dbc/index.js';
import { DEMO_DBC_PATH, SimulatedVehicle } from '../../src/sim/vehicle.js';
import { AgentProcess } from '../support/agent-process.js';
import { AGENT_CLI, runProgramSync } from '../support/programs.js';
import { messageFrame } from '../support/frames.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, repoRoot, sharedTestdata } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const defaultConfig = path.join(repoRoot, 'device-config', 'default.json');

/** Status lines (not the summary) of non-TTY output. */
function statusLines(stdout: string): string[] {
  return stdout.split('\n').filter((line) => line.includes('frames/s'));
}

describe('telematics-agent run', () => {
  it('runs the default config for 2 s: live status with frame rate and the configured signals, then a summary', () => {
    // From another folder: the default config is found next to the installed package, not in the working directory.
    const result = runProgramSync('telematics-agent', ['run', '--duration', '2'], { cwd: tmpdir() });
    assert.equal(result.status, 0, result.stderr);
    // The log is JSON lines. Besides the debug lines of the verbose start, it only says what the data path set up (the
    // development PKI on a first run, the development broker, mosquitto, with its ports and MQTT 5, the link), when the first frame was decoded, and where
    // the status page is (or, when another agent holds its port, that it runs without it).
    for (const line of result.stderr.split('\n').filter(Boolean)) {
      const entry = JSON.parse(line) as { level: string; msg: string };
      if (entry.level === 'debug') continue;
      assert.notEqual(entry.level, 'error', line);
      assert.match(
        entry.msg,
        /^(created a development (backend )?CA in |the development PKI folder .* made it 0700$|created a development command CA and operator 'ops-dev' in |broker: mosquitto \d+\.\d+\.\d+ on mqtts:\/\/localhost:8883 \(cars\) and mqtts:\/\/localhost:8884 \(backend, certificates in \/.*\/certs\/dev\), MQTT 5$|uplink: connected to mqtts:\/\/localhost:8883$|can0: first frame decoded \d+\.\d{3} s after the process started$|health: status page on http:\/\/127\.0\.0\.1:8089\/$|health: cannot serve the status page on 127\.0\.0\.1:8089: the port is in use; running without it$)/,
      );
    }
    const lines = statusLines(result.stdout);
    assert.ok(lines.length >= 1, result.stdout);
    // The first line once frames flow: on a busy machine the first one may come before the simulator's first tick.
    const first = lines.find((line) => !line.startsWith('0 frames/s')) ?? lines[0]!;
    const rate = /^(\d+) frames\/s, (\d+) signals\/s, (\d+) unknown, (\d+) errors \| /.exec(first);
    assert.ok(rate, first);
    // The demo DBC sends 294 frames per second; allow for late timers at start-up and on a busy machine.
    assert.ok(Number(rate[1]) > 150 && Number(rate[1]) < 450, first);
    assert.ok(Number(rate[2]) > 1000, first);
    assert.equal(rate[3], '0');
    assert.equal(rate[4], '0');
    // Parked with the ignition off at first: stationary, engine stopped, lever in P; odometer and fuel are the car's;
    // the simulated receiver's fix where the demo route begins (Karlsplatz), or none yet in the first second.
    assert.match(
      first,
      /VehicleSpeed 0\.00 km\/h, EngineSpeed 0\.0 rpm, GearEngaged P, CoolantTemp -?\d+ degC, FuelLevel \d+\.\d %, Odometer \d+\.\d km \| gnss (3D 48\.1390,11\.5659|no fix yet) \| uplink (connecting|connected), heartbeat \d+ s( \((learning|holding)\))?, \d+ published, \d+ buffered \(\d+ k?B\)$/,
    );
    assert.match(
      result.stdout,
      /stopped after 2\.\d s\n {2}can0 \(sim:demo\): \d+ frames, \d+ signals, 0 unknown frames, 0 decode errors\n {2}gnss \(simulated, receiving\): 3D 48\.1390,11\.5659\n {2}data: \d+ samples in \d+ messages, \d+ published to mqtts:\/\/localhost:8883, \d+ buffered\n$/,
    );
    const frames = Number(/can0 \(sim:demo\): (\d+) frames/.exec(result.stdout)![1]);
    assert.ok(frames > 450 && frames < 700, `${frames} frames in 2 s`);
  });

  it('writes no live status line into the systemd journal (JOURNAL_STREAM is its stdout), only the summary', () => {
    const dir = makeTempDir('run-journal-');
    const config = path.join(dir, 'sim.json');
    writeFileSync(
      config,
      JSON.stringify({
        deviceId: 'journal-test',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
        status: { intervalMs: 100, signals: [] },
      }),
    );
    const run = (journal: boolean): string => {
      const out = path.join(dir, `stdout-${journal}.txt`);
      const fd = openSync(out, 'w');
      try {
        const { dev, ino } = fstatSync(fd);
        // As systemd starts a service whose stdout is the journal: JOURNAL_STREAM=<device>:<inode> of that stream.
        const env = { ...process.env, JOURNAL_STREAM: journal ? `${dev}:${ino}` : `${dev}:${ino + 1}` };
        const result = spawnSync(process.execPath, [AGENT_CLI, 'run', '--config', config, '--duration', '1'], {
          env,
          stdio: ['ignore', fd, 'pipe'],
          encoding: 'utf8',
        });
        assert.equal(result.status, 0, result.stderr);
      } finally {
        closeSync(fd);
      }
      return readFileSync(out, 'utf8');
    };
    const journal = run(true);
    assert.equal(statusLines(journal).length, 0, journal);
    assert.match(journal, /^stopped after 1\.\d s\n {2}can0 \(sim:demo\): [1-9]\d* frames/);
    // Another stream named in JOURNAL_STREAM (stdout redirected elsewhere): the status lines are there.
    assert.ok(statusLines(run(false)).length >= 5);
  });

  it('stops cleanly on SIGTERM and SIGINT with the final summary, exit code 0', async () => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const agent = AgentProcess.start(defaultConfig);
      // Signal once the agent is demonstrably running.
      await agent.waitForStdout('frames/s', 30_000);
      const { code } = await agent.stop(signal);
      const { stdout } = agent;
      assert.equal(code, 0, `${signal}: ${stdout}`);
      assert.match(stdout, /stopped after \d+\.\d s\n {2}can0 \(sim:demo\): [1-9]\d* frames/);
    }
  });

  it('rejects a bad config with the field at fault, exit code 1', () => {
    const dir = makeTempDir('run-config-');
    const file = path.join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ deviceId: 'x', buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 'fast' } }] }));
    const result = runProgramSync('telematics-agent', ['run', '--config', file, '--duration', '1']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /bad\.json: buses\[0\]\.source\.speed: expected number, got "fast"/);

    const unknownSignal = path.join(dir, 'signal.json');
    writeFileSync(
      unknownSignal,
      JSON.stringify({ deviceId: 'x', buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }], status: { signals: ['NoSuchSignal'] } }),
    );
    const second = runProgramSync('telematics-agent', ['run', '--config', unknownSignal, '--duration', '1']);
    assert.equal(second.status, 1);
    assert.match(second.stderr, /status\.signals: no bus DBC has a signal 'NoSuchSignal'/);

    const duration = runProgramSync('telematics-agent', ['run', '--duration', '-3']);
    assert.equal(duration.status, 1);
    assert.match(duration.stderr, /expected a positive number of seconds/);
  });
});

describe('runAgent', () => {
  it('redraws one status line in place on a terminal, fitted to its width, and shows labels and units', async () => {
    const config = parseDeviceConfig(
      {
        deviceId: 'tty-test',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 20, seed: 2 } }],
        status: { intervalMs: 100, signals: ['VehicleSpeed', 'BODY_STATUS.IgnitionState', 'GNSS_POSITION.Latitude'] },
      },
      { file: 'inline', baseDir: repoRoot },
    );
    const onTerminal = async (columns: number, durationS: number) => {
      let written = '';
      const output = { isTTY: true, columns, write: (text: string) => (written += text) };
      const summary = await runAgent({ config, durationS, output });
      const [live, ...rest] = written.split('\n');
      const redraws = live!.split('\r').slice(1);
      for (const redraw of redraws) {
        assert.ok(redraw.endsWith('\x1b[K'), JSON.stringify(redraw));
        assert.ok(redraw.length - 3 <= columns - 1, `${redraw.length - 3} characters on ${columns} columns`);
      }
      return { summary, live: live!, rest, redraws };
    };

    // [16.terminal] 60 columns: the frame rate, the errors and the first signal; IgnitionState would not fit whole, so
    // it and all after it are left out (never cut in the middle).
    const narrow = await onTerminal(60, 0.6);
    assert.ok(narrow.redraws.length >= 2, JSON.stringify(narrow.redraws));
    for (const redraw of narrow.redraws) assert.match(redraw, /^\d+ frames\/s, 0 errors \| VehicleSpeed \d+\.\d\d km\/h\x1b\[K$/);

    const { summary, live, rest, redraws } = await onTerminal(200, 0.75);
    // Every 100 ms, so about 7; a busy machine may skip some.
    assert.ok(redraws.length >= 3, `${redraws.length} redraws`);
    // At 20× the car gets through the start-up within the run: ignition labels from the value table.
    assert.match(live, /IgnitionState (OFF|ACC|ON|START)/);
    assert.match(live, /Latitude 48\.\d{7} deg/);
    assert.match(rest.join('\n'), /^stopped after \d+\.\d s\n {2}can0 \(sim:demo\): \d+ frames/);
    const bus = summary.buses[0]!;
    // 0.75 s at 20× is 15 s of simulated time: 294 frames per simulated second. The simulator keeps up with the wall
    // clock, so a run that stopped late (a busy machine) has a few more, never more than its elapsed time allows.
    assert.ok(bus.frames >= 0.6 * 15 * 294 && bus.frames <= 20 * 294 * summary.elapsedS + 60, `${bus.frames} frames in ${summary.elapsedS} s`);
    assert.equal(bus.unknownFrames, 0);
    assert.equal(bus.decodeErrors, 0);
  });

  it('loads the default config through loadDeviceConfig and stops when aborted', async () => {
    const config = loadDeviceConfig(defaultConfig);
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 300);
    let written = '';
    const summary = await runAgent({ config, signal: stop.signal, output: { write: (text: string) => (written += text) } });
    assert.ok(summary.elapsedS < 2, `${summary.elapsedS} s`);
    assert.match(written, /^stopped after \d+\.\d s\n/);
  });
});

describe('runAgent with a replayed log', () => {
  // Three frames of the demo car, 10 ms apart, one of them unknown to the DBC and one malformed line.
  const dir = makeTempDir('run-replay-');
  const log = path.join(dir, 'drive.log');
  writeFileSync(
    log,
    [
      '(1700000000.000000) can1 0D0#6422000000000000', // VEHICLE_DYNAMICS: 0x2264 × 0.01 = 88.04 km/h
      '(1700000000.010000) can1 555#00',
      'not a candump line',
      '(1700000000.020000) can1 0C8#401F000000000000', // ENGINE_DATA: 2000 rpm
      '',
    ].join('\n'),
  );
  const configFor = (loop: boolean) =>
    parseDeviceConfig(
      {
        deviceId: 'replay-test',
        buses: [{ name: 'vehicle', dbc: DEMO_DBC_PATH, strictDbc: true, source: { type: 'replay', file: log, speed: 1, loop } }],
        status: { intervalMs: 100, signals: ['VehicleSpeed', 'EngineSpeed'] },
      },
      { file: 'inline', baseDir: dir },
    );

  it('ends by itself when the log ends, counting decoded, unknown and malformed input', async () => {
    let written = '';
    const summary = await runAgent({ config: configFor(false), durationS: 5, output: { write: (text: string) => (written += text) } });
    assert.ok(summary.elapsedS < 3, `${summary.elapsedS} s`);
    assert.deepEqual(summary.buses, [
      { name: 'vehicle', source: 'replay:drive.log', frames: 3, signals: 4 + 7, unknownFrames: 1, decodeErrors: 0, badLogLines: 1 },
    ]);
    assert.match(written, /vehicle \(replay:drive\.log\): 3 frames, 11 signals, 1 unknown frames, 0 decode errors, 1 malformed log lines/);
  });

  it('starts the log over when it loops, until stopped', async () => {
    let written = '';
    // Stopped once it has made more than ten passes (each 20 ms of log time, with its one unknown frame and bad line),
    // however long a loaded machine takes for them.
    const stop = new AbortController();
    let poll: NodeJS.Timeout | undefined;
    const summary = await runAgent({
      config: configFor(true),
      durationS: 120,
      signal: stop.signal,
      output: { write: (text: string) => (written += text) },
      onCommandContext: (context) => {
        poll = setInterval(() => {
          if (context.status().agent.buses[0]!.frames > 30) stop.abort();
        }, 20);
      },
    });
    clearInterval(poll);
    const bus = summary.buses[0]!;
    assert.ok(bus.frames > 30, `${bus.frames} frames`);
    assert.ok(Math.abs(bus.unknownFrames - bus.frames / 3) <= 1, `${bus.unknownFrames} unknown of ${bus.frames}`);
    assert.ok(Math.abs(bus.badLogLines - bus.frames / 3) <= 1, `${bus.badLogLines} bad lines for ${bus.frames} frames`);
    assert.match(written, /\| VehicleSpeed 88\.04 km\/h, EngineSpeed 2000\.0 rpm\n/);
  });
});

describe('run with a J1939 DBC', () => {
  it(
    '[16.cli] a bus whose DBC declares J1939 matches by PGN without a j1939 key, and says so once; j1939: false turns it off',
    { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA },
    async () => {
      const dbc = sharedTestdata('dbc', 'css_j1939_demo.dbc');
      const file = sharedTestdata('logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
      const run = async (j1939?: boolean) => {
        const lines: string[] = [];
        const logger = new Logger({ config: loggingConfigSchema.parse({ level: 'info', verboseForS: 0 }), lines: (line) => lines.push(line) });
        const bus = { name: 'truck', dbc, ...(j1939 === undefined ? {} : { j1939 }), source: { type: 'replay', file, speed: 1000 } };
        const config = parseDeviceConfig({ deviceId: 'j1939-test', buses: [bus] }, { file: 'inline', baseDir: repoRoot });
        const summary = await runAgent({ config, durationS: 30, logger, statusLines: false, output: { write: () => true } });
        return {
          bus: summary.buses[0]!,
          said: lines.filter((line) => line.includes('J1939 database')),
          firstFrame: lines.filter((line) => line.includes('first frame')),
        };
      };
      const declared = await run();
      // The truck log has 57,849 frames; the DBC's parameter groups come from other source addresses than the DBC's.
      assert.ok(declared.bus.frames - declared.bus.unknownFrames > 10_000, JSON.stringify(declared.bus));
      assert.deepEqual(declared.said, [
        'truck: the DBC is a J1939 database (ProtocolType "J1939"): frames are matched by PGN from any source address (j1939: false turns it off)',
      ]);
      // [19.realrate] The wake-up time, once per bus (what the realrate benchmark reads).
      assert.equal(declared.firstFrame.length, 1, declared.firstFrame.join('\n'));
      assert.match(declared.firstFrame[0]!, /^truck: first frame decoded \d+\.\d{3} s after the process started$/);
      const off = await run(false);
      assert.equal(off.bus.frames - off.bus.unknownFrames, 0, JSON.stringify(off.bus));
      assert.deepEqual(off.said, []);
    },
  );
});

describe('BusDecoder', () => {
  it('decodes frames into the bus buffer and counts unknown frames and decode errors', () => {
    const database = compileDatabase(loadDbcFile(DEMO_DBC_PATH));
    const decoder = new BusDecoder('can0', database);
    assert.ok(Number.isNaN(decoder.values[0]));
    const codec = database.byName('VEHICLE_DYNAMICS')!;
    const frame = messageFrame(codec, { VehicleSpeed: 87.65, LongitudinalAccel: -1.25, YawRate: 3.5 }, { ts: 0, bus: 'can0' });
    const { data } = frame;
    decoder.sink(frame);
    assert.equal(decoder.values[codec.slots[0]!], 87.65);
    assert.equal(decoder.values[codec.slots[1]!], -1.25);
    assert.equal(decoder.values[codec.slots[2]!], 3.5);
    decoder.sink({ ...frame, id: 0x7ff });
    decoder.sink({ ...frame, data: data.subarray(0, 4), dlc: 4 });
    decoder.sink({ ...frame, extended: true });
    assert.deepEqual(
      { frames: decoder.frames, signals: decoder.signals, unknown: decoder.unknownFrames, errors: decoder.decodeErrors },
      { frames: 4, signals: 4, unknown: 2, errors: 1 },
    );
  });

  it('decodes the full output of the simulator flat out: no unknown frames, no decode errors', async (t) => {
    const database = compileDatabase(loadDbcFile(DEMO_DBC_PATH));
    const decoder = new BusDecoder('can0', database);
    const vehicle = new SimulatedVehicle({ database, bus: 'can0', realtime: false, durationS: 600, startTime: 0 });
    const t0 = performance.now();
    await vehicle.run(decoder.sink);
    const seconds = (performance.now() - t0) / 1000;
    t.diagnostic(`${decoder.frames} frames simulated and decoded in ${seconds.toFixed(2)} s: ${Math.round(decoder.frames / seconds)} frames/s`);
    assert.equal(decoder.frames, 600 * 294);
    assert.equal(decoder.unknownFrames, 0);
    assert.equal(decoder.decodeErrors, 0);
    // The odometer in the buffer is the car's, to 0.1 km.
    const odometer = decoder.values[database.slotNames.indexOf('ODOMETER.Odometer')]!;
    assert.ok(Math.abs(odometer - vehicle.state.odometerKm) < 0.1 + 1e-6, `${odometer} vs ${vehicle.state.odometerKm}`);
  });
});

describe('run with hostile DBC files', () => {
  const dir = makeTempDir('run-dbc-');
  const log = path.join(dir, 'drive.log');
  writeFileSync(
    log,
    [
      '(1700000000.000000) can1 0D0#6422000000000000', // VEHICLE_DYNAMICS: 88.04 km/h
      '(1700000000.010000) can1 555#00', // not in the DBC
      '(1700000000.020000) can1 0C8#401F000000000000', // ENGINE_DATA: 2000 rpm
      '',
    ].join('\n'),
  );
  const configWith = (dbc: string, options: { log?: string; loop?: boolean; signals?: string[] } = {}) =>
    parseDeviceConfig(
      {
        deviceId: 'dbc-test',
        buses: [{ name: 'vehicle', dbc, source: { type: 'replay', file: options.log ?? log, speed: 1, loop: options.loop ?? false } }],
        status: { intervalMs: 100, signals: options.signals ?? [] },
      },
      { file: 'inline', baseDir: dir },
    );

  it('[14.8] a bus whose DBC is saved as UTF-16 (LE or BE, with its byte-order mark) decodes as with the original', async () => {
    const text = readFileSync(DEMO_DBC_PATH, 'utf8');
    const le = Buffer.from(text, 'utf16le');
    const copies = {
      'demo-utf16le.dbc': Buffer.concat([Buffer.from([0xff, 0xfe]), le]),
      'demo-utf16be.dbc': Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(le).swap16()]),
    };
    const original = await runAgent({ config: configWith(DEMO_DBC_PATH), durationS: 5, output: { write: () => undefined }, warn: () => undefined });
    assert.deepEqual(
      original.buses.map(({ frames, signals, unknownFrames }) => ({ frames, signals, unknownFrames })),
      [{ frames: 3, signals: 11, unknownFrames: 1 }],
    );
    for (const [name, bytes] of Object.entries(copies)) {
      writeFileSync(path.join(dir, name), bytes);
      const summary = await runAgent({ config: configWith(name), durationS: 5, output: { write: () => undefined }, warn: () => undefined });
      assert.deepEqual(summary.buses, original.buses, name);
    }
  });

  it('[14.8] refuses to start a bus whose DBC defines no message: exit 1, the config key and the file named', () => {
    writeFileSync(path.join(dir, 'nothing.dbc'), 'VERSION ""\n\nBS_:\n\nBU_: ECU\n');
    const file = path.join(dir, 'device.json');
    writeFileSync(file, JSON.stringify({ deviceId: 'x', buses: [{ name: 'can0', dbc: 'nothing.dbc', source: { type: 'sim' } }] }));
    const result = runProgramSync('telematics-agent', ['run', '--config', file, '--duration', '1']);
    assert.equal(result.status, 1, result.stderr);
    assert.equal(result.stdout, '');
    const errors = result.stderr.split('\n').filter((line) => line.startsWith('telematics-agent:'));
    assert.deepEqual(errors, [
      `telematics-agent: ${file}: buses[0].dbc: ${path.join(dir, 'nothing.dbc')}: no message (BO_) found in this DBC file (read as utf-8)`,
    ]);
  });

  it('[14.L9] a config error quoting what the file says shows its control characters escaped', () => {
    const file = path.join(dir, 'escapes.json');
    writeFileSync(file, JSON.stringify({ deviceId: 'x', buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }], 'colour\x1b[31m': 1 }));
    const result = runProgramSync('telematics-agent', ['run', '--config', file, '--duration', '1']);
    assert.equal(result.status, 1);
    assert.equal(result.stderr, `telematics-agent: ${file}: (top level): unknown field 'colour\\x1b[31m'\n`);
  });

  it('[14.L9] the status line and the summary show control characters from the DBC and the log file escaped', async () => {
    const dbc = path.join(dir, 'labels.dbc');
    writeFileSync(
      dbc,
      [
        'BO_ 208 VEHICLE_DYNAMICS: 8 ABS',
        ' SG_ Speed : 0|16@1+ (0.01,0) [0|0] "km/h\x1b[2J" X',
        ' SG_ Gear : 16|8@1+ (1,0) [0|0] "" X',
        'VAL_ 208 Gear 0 "P\x1b]0;owned\x07" ;',
        '',
      ].join('\n'),
    );
    const hostileLog = path.join(dir, 'drive\x1b[31m.log');
    writeFileSync(hostileLog, readFileSync(log));
    let written = '';
    // The log loops until the first status line is out.
    const stop = new AbortController();
    const output = {
      write: (t: string): void => {
        written += t;
        if (t.includes('frames/s')) stop.abort();
      },
    };
    await runAgent({
      config: configWith(dbc, { log: hostileLog, loop: true, signals: ['Speed', 'Gear'] }),
      signal: stop.signal,
      output,
      warn: () => undefined,
    });
    assert.doesNotMatch(written, /[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
    assert.match(written, /\| Speed 88\.04 km\/h\\x1b\[2J, Gear P\\x1b\]0;owned\\x07\n/);
    assert.match(written, / {2}vehicle \(replay:drive\\x1b\[31m\.log\): \d+ frames/);
  });
});
