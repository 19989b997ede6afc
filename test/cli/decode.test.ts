/** The `decode` and `dbc` commands, run as a user runs them: the compiled CLI in a child process, fed a file or a pipe. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { AGENT_CLI, runProgramSync } from '../support/programs.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, sharedTestdata } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

const skip = hasSharedTestdata() ? false : NO_SHARED_TESTDATA;
const truckLog = sharedTestdata('logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
const j1939Dbc = sharedTestdata('dbc', 'css_j1939_demo.dbc');

describe('telematics-agent decode', { skip }, () => {
  it('decodes the real truck log by PGN: one JSON object per frame, engine speed at idle 646..654 rpm', () => {
    const { status, stdout, stderr } = runProgramSync('telematics-agent', ['decode', '--dbc', j1939Dbc, '--log', truckLog, '--j1939', '--json']);
    assert.equal(status, 0, stderr);
    const objects = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(objects.length, 57849);
    const eec1 = objects.filter((o) => o.name === 'EEC1');
    assert.ok(eec1.length > 1000, `${eec1.length} EEC1 frames`);
    for (const o of eec1) {
      const rpm = (o.signals as Record<string, number>).EngineSpeed!;
      assert.ok(rpm >= 646 && rpm <= 654, `EngineSpeed ${rpm} at ${String(o.ts)}`);
      assert.equal(o.extended, true);
      assert.equal(o.bus === 'can0' || o.bus === 'can1', true);
    }
    const unknown = objects.filter((o) => o.name === null);
    assert.ok(unknown.length > 0, 'frames the DBC does not know have name null');
    assert.deepEqual(Object.keys(objects[0]!), ['ts', 'bus', 'id', 'extended', 'name', 'signals']);
  });

  it('[16.cli] a J1939 DBC turns PGN matching on by itself and says so once; --no-j1939 turns it off, and the end says why nothing decoded', () => {
    // Before: without --j1939 this DBC decoded 0 of the 57,849 frames, silently, with exit status 0.
    const auto = runProgramSync('telematics-agent', ['decode', '-d', j1939Dbc, '-l', truckLog, '-j']);
    assert.equal(auto.status, 0, auto.stderr);
    const objects = auto.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { name: string | null; signals: Record<string, number> });
    assert.equal(objects.length, 57849);
    const eec1 = objects.filter((o) => o.name === 'EEC1');
    assert.ok(eec1.length > 1000, `${eec1.length} EEC1 frames`);
    assert.ok(eec1.every((o) => o.signals.EngineSpeed! >= 646 && o.signals.EngineSpeed! <= 654));
    assert.equal(
      auto.stderr,
      `${j1939Dbc} declares J1939 (ProtocolType "J1939"): 29-bit frames match by parameter group, ignoring priority and source address (--no-j1939: exact identifiers)\n`,
    );

    // Asked for explicitly: the same frames, and nothing to say.
    const explicit = runProgramSync('telematics-agent', ['decode', '--dbc', j1939Dbc, '--log', truckLog, '--json', '--j1939']);
    assert.equal(explicit.status, 0);
    assert.equal(explicit.stdout, auto.stdout);
    assert.equal(explicit.stderr, '');

    const off = runProgramSync('telematics-agent', ['decode', '--dbc', j1939Dbc, '--log', truckLog, '--json', '--no-j1939']);
    assert.equal(off.status, 0);
    assert.ok(!off.stdout.includes('"name":"EEC1"'));
    assert.equal(
      off.stderr,
      `none of the 57849 frames is a message of ${j1939Dbc} (--j1939 matches 29-bit frames by parameter group, ignoring priority and source address)\n`,
    );
  });

  it('reads standard input and prints one line per frame in text form', () => {
    const input = [
      '(1635188455.029900) can0 0CF00400#607D84481400F084',
      '(1635188455.030900) can0 0CFEF100#F7000004000000FF',
      '(1635188455.031000) can1 123#1122',
    ].join('\n');
    const { status, stdout } = runProgramSync('telematics-agent', ['decode', '--dbc', j1939Dbc, '--j1939'], { input });
    assert.equal(status, 0);
    const lines = stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    assert.equal(lines[0], '(1635188455.029900) can0 0CF00400#607D84481400F084 :: EEC1(EngineSpeed: 649 rpm)');
    assert.match(lines[1]!, /^\(1635188455\.030900\) can0 0CFEF100#F7000004000000FF :: CCVS1\(WheelBasedVehicleSpeed: 0 km\/h\)$/);
    assert.equal(lines[2], '(1635188455.031000) can1 123#1122');
  });

  it('reports malformed lines on stderr, skips them and carries on', () => {
    const input = ['(1.000000) can0 0CF00400#607D84481400F084', 'garbage here', '(2.000000) can0 0CF00400#607D84481400F084'].join('\n');
    const { status, stdout, stderr } = runProgramSync('telematics-agent', ['decode', '--dbc', j1939Dbc, '--j1939', '--json'], { input });
    assert.equal(status, 0);
    assert.equal(stdout.trim().split('\n').length, 2);
    assert.match(stderr, /line 2:/);
  });

  it('reports frames that fail to decode as {ts, bus, id, error}', () => {
    const dir = makeTempDir('decode-');
    const dbc = path.join(dir, 'mux.dbc');
    writeFileSync(dbc, ['BO_ 256 Mux: 2 ECU', ' SG_ Sel M : 0|8@1+ (1,0) [0|0] "" X', ' SG_ A m1 : 8|8@1+ (1,0) [0|0] "" X', ''].join('\n'));
    const { status, stdout } = runProgramSync('telematics-agent', ['decode', '--dbc', dbc, '--json'], { input: '(1.5) can0 100#0107\n(1.6) can0 100#0207\n' });
    assert.equal(status, 0);
    const [ok, bad] = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(ok, { ts: 1.5, bus: 'can0', id: 256, extended: false, name: 'Mux', signals: { Sel: 1, A: 7 } });
    assert.deepEqual(Object.keys(bad!), ['ts', 'bus', 'id', 'error']);
    assert.match(String(bad!.error), /expected multiplexer id 1, but got 2/);
  });

  it('fails with a clear message for a missing DBC file', () => {
    const { status, stderr } = runProgramSync('telematics-agent', ['decode', '--dbc', '/nonexistent.dbc', '--log', truckLog]);
    assert.equal(status, 1);
    assert.match(stderr, /\/nonexistent\.dbc.*cannot read DBC file/);
  });
});

describe('telematics-agent dbc', { skip }, () => {
  it('summarises messages, signals, multiplexing and warnings', () => {
    const { status, stdout } = runProgramSync('telematics-agent', ['dbc', sharedTestdata('dbc', 'multiplex_2.dbc'), '--signals']);
    assert.equal(status, 0);
    assert.match(stdout, /4 messages \(4 extended ID, 0 CAN FD, 4 J1939, 4 multiplexed\), 19 signals/);
    assert.match(stdout, /\nJ1939 database \(ProtocolType "J1939"\): decode matches its 29-bit messages by parameter group \(PGN\)\n/);
    assert.match(stdout, /S1: bit 4, 4 bits, Intel, signed \[S0=0, multiplexer\]/);
  });

  it('shows what lenient mode tolerated, and strict mode rejects it with file:line:column', () => {
    const file = sharedTestdata('dbc', 'unparseable_by_cantools', 'toyota_radar_dsu_tssp.dbc');
    const lenient = runProgramSync('telematics-agent', ['dbc', file]);
    assert.equal(lenient.status, 0);
    assert.match(lenient.stdout, /tolerated: CM_ statement without its closing ';'/);
    const strict = runProgramSync('telematics-agent', ['dbc', file, '--strict']);
    assert.equal(strict.status, 1);
    assert.match(strict.stderr, /toyota_radar_dsu_tssp\.dbc:138:\d+: .*rejected in strict mode/);
  });
});

describe('hostile input files and streams', () => {
  it('[14.8] dbc and decode read a UTF-16 DBC with a byte-order mark, and refuse a DBC with no message: exit 1, one line naming it', { skip }, () => {
    const dir = makeTempDir('decode-utf16-');
    const utf16 = path.join(dir, 'j1939-utf16.dbc');
    writeFileSync(utf16, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(readFileSync(j1939Dbc, 'utf8'), 'utf16le')]));
    const summary = runProgramSync('telematics-agent', ['dbc', utf16]);
    assert.equal(summary.status, 0, summary.stderr);
    assert.match(summary.stdout, /j1939-utf16\.dbc \(utf-16le/);
    const line = '(1635188455.029900) can0 0CF00400#607D84481400F084';
    const decoded = runProgramSync('telematics-agent', ['decode', '--dbc', utf16, '--j1939'], { input: `${line}\n` });
    assert.equal(decoded.status, 0, decoded.stderr);
    assert.equal(decoded.stdout, `${line} :: EEC1(EngineSpeed: 649 rpm)\n`);

    const empty = path.join(dir, 'nothing.dbc');
    writeFileSync(empty, 'VERSION "1.0"\nBU_: ECU\n');
    for (const args of [
      ['dbc', empty],
      ['decode', '--dbc', empty],
    ]) {
      const refused = runProgramSync('telematics-agent', args, { input: line });
      assert.equal(refused.status, 1, args.join(' '));
      assert.equal(refused.stdout, '');
      assert.equal(refused.stderr, `telematics-agent: ${empty}: no message (BO_) found in this DBC file (read as utf-8)\n`);
    }
  });

  it('[14.L8] decode fed an endless line on standard input stays bounded, reports the line and carries on: exit 0, no stack trace', { skip }, async () => {
    // The child reports its own peak resident memory when it exits. Before the fix it held the whole line (and an
    // endless one ended in an uncaught RangeError with a stack trace).
    const reportRss = `data:text/javascript,process.on('exit', () => process.stderr.write('maxRSS ' + process.resourceUsage().maxRSS + '\\n'))`;
    const decodeChild = async (
      input: () => AsyncGenerator<Buffer | string>,
    ): Promise<{ status: number | null; stdout: string; stderr: string[]; maxRssKb: number }> => {
      const child = spawn(process.execPath, ['--import', reportRss, AGENT_CLI, 'decode', '--dbc', j1939Dbc, '--j1939'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      await pipeline(Readable.from(input()), child.stdin);
      const status = await exited;
      const lines = stderr.trim().split('\n');
      const maxRssKb = Number(/^maxRSS (\d+)$/.exec(lines.pop()!)?.[1]);
      return { status, stdout, stderr: lines, maxRssKb };
    };
    const frame = '(1635188455.029900) can0 0CF00400#607D84481400F084';
    const megabyte = Buffer.alloc(1024 * 1024, 'A');
    const baseline = await decodeChild(async function* () {
      yield `${frame}\n${frame}\nnot a frame\n`;
    });
    assert.equal(baseline.status, 0, baseline.stderr.join('\n'));
    const hostile = await decodeChild(async function* () {
      yield `${frame}\n`;
      for (let i = 0; i < 64; i++) yield megabyte; // 64 MB without a newline
      yield `\n${frame}\nnot a frame\n`;
    });
    assert.equal(hostile.status, 0, hostile.stderr.join('\n').slice(0, 2000));
    // Holding the line would add at least its 64 MB to what decoding a few lines takes (it added some 150 MB).
    const grownMb = (hostile.maxRssKb - baseline.maxRssKb) / 1024;
    assert.ok(baseline.maxRssKb > 0 && grownMb < 64, `peak RSS ${Math.round(hostile.maxRssKb / 1024)} MB, ${Math.round(grownMb)} MB more than for three lines`);
    assert.equal(hostile.stdout, `${frame} :: EEC1(EngineSpeed: 649 rpm)\n`.repeat(2));
    assert.equal(hostile.stderr.length, 3, hostile.stderr.join('\n').slice(0, 2000));
    assert.match(hostile.stderr[0]!, /^warning: line 2: line longer than 65536 characters, skipped to its end: "A{120}"$/);
    assert.match(
      hostile.stderr[1]!,
      /^warning: line 4: expected the CAN ID \(3 or 8 hex digits\) after the interface name, found "a" at column 5: "not a frame"$/,
    );
    assert.equal(hostile.stderr[2], '2 malformed line(s) skipped');
  });

  it('[14.L9] dbc and decode show control characters from the DBC and the log escaped, never raw', () => {
    const dir = makeTempDir('decode-escapes-');
    const dbc = path.join(dir, 'hostile\x1b[2J.dbc');
    writeFileSync(
      dbc,
      [
        'VERSION "\x1b]0;owned\x07"',
        // U+009B is a one-character CSI for many terminals, and a letter-like character to the DBC grammar.
        'BO_ 256 Msg\u009b31m: 8 ECU',
        ' SG_ Speed : 0|8@1+ (1,0) [0|0] "km/h\x1b[31m" X',
        ' SG_ Gear : 8|8@1+ (1,0) [0|0] "" X',
        'VAL_ 256 Gear 1 "P\x1b[8m" 2 "D\u202eR" ;',
        'CM_ SG_ 256 Nope\u009b2J "refers to a signal that is not there";',
        '',
      ].join('\n'),
    );
    const raw = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]/;
    const summary = runProgramSync('telematics-agent', ['dbc', dbc, '--signals']);
    assert.equal(summary.status, 0, summary.stderr);
    assert.doesNotMatch(summary.stdout, raw);
    assert.match(summary.stdout, /hostile\\x1b\[2J\.dbc \(utf-8, version "\\x1b\]0;owned\\x07"\)/);
    assert.match(summary.stdout, /0x100 Msg\\x9b31m: 8 bytes/);
    assert.match(summary.stdout, /Speed: bit 0, 8 bits, Intel, unsigned km\/h\\x1b\[31m/);
    assert.match(summary.stdout, /signal Nope\\x9b2J/);

    const log = '(1.000000) can\x1b[2J0 100#0501000000000000\n(2.000000) can0 100#0502000000000000\n(3.000000) can0 1\x1b[31m\n';
    const text = runProgramSync('telematics-agent', ['decode', '--dbc', dbc, '--choices'], { input: log });
    assert.equal(text.status, 0, text.stderr);
    assert.doesNotMatch(text.stdout + text.stderr, raw);
    assert.deepEqual(text.stdout.trim().split('\n'), [
      "(0000000001.000000) can\\x1b[2J0 100#0501000000000000 :: Msg\\x9b31m(Speed: 5 km/h\\x1b[31m, Gear: 'P\\x1b[8m')",
      "(0000000002.000000) can0 100#0502000000000000 :: Msg\\x9b31m(Speed: 5 km/h\\x1b[31m, Gear: 'D\\u202eR')",
    ]);
    assert.match(
      text.stderr,
      /warning: line 3: expected the CAN ID \(3 or 8 hex digits\) after the interface name, found "1" at column 17: "\(3\.000000\) can0 1\\u001b\[31m"/,
    );
    // JSON stays JSON: the escapes parse back to the very same names and labels.
    const json = runProgramSync('telematics-agent', ['decode', '--dbc', dbc, '--choices', '--json'], { input: log });
    assert.doesNotMatch(json.stdout, raw);
    const objects = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { bus: string; name: string; signals: Record<string, unknown> });
    assert.deepEqual(
      objects.map((o) => [o.bus, o.name, o.signals.Gear]),
      [
        ['can\x1b[2J0', 'Msg\u009b31m', 'P\x1b[8m'],
        ['can0', 'Msg\u009b31m', 'D\u202eR'],
      ],
    );

    // An error quoting the file: the parse error's "found" text and the file name.
    const broken = path.join(dir, 'broken.dbc');
    writeFileSync(broken, 'BO_ 1 Msg\x1b[2J: 8 N\n');
    const failed = runProgramSync('telematics-agent', ['dbc', broken]);
    assert.equal(failed.status, 1);
    assert.equal(failed.stderr, `telematics-agent: ${broken}:1:10: expected ':' after the message name, found '\\x1b[2J:'\n`);
  });
});

describe('[16.cli] decode reads what candump prints, as it comes', () => {
  // candump's console output as it prints it: default (with the indent of 11-bit IDs after a 29-bit one), and -ta.
  const plain = [
    '  can0  0C8   [8]  40 1F 00 00 00 00 00 00',
    '  can0  18FEF100   [8]  F7 00 00 04 00 00 00 FF',
    '  can0       2C0   [2]  02 01',
    '  can0       555   [1]  00',
  ];
  const absolute = [
    ' (1700000000.000100)  can0  0C8   [8]  40 1F 00 00 00 00 00 00',
    ' (1700000000.010100)  can0  0D0   [8]  64 22 00 00 00 00 00 00',
    ' (1700000000.020100)  can0  2C0   [4]  remote request',
  ];

  it("[16.cli] decode reads candump's default and -ta output on standard input, printing each line as candump did; JSON has the times (null without)", () => {
    const text = runProgramSync('telematics-agent', ['decode', '-d', DEMO_DBC_PATH], { input: `${[...plain, ...absolute].join('\n')}\n` });
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stderr, '');
    assert.deepEqual(text.stdout.trimEnd().split('\n'), [
      "  can0  0C8   [8]  40 1F 00 00 00 00 00 00 :: ENGINE_DATA(EngineSpeed: 2000 rpm, ThrottlePosition: 0 %, EngineLoad: 0 %, EngineTorque: 0 Nm, EngineRunning: 'Stopped', FuelCutActive: 0, EngineDataCounter: 0)",
      '  can0  18FEF100   [8]  F7 00 00 04 00 00 00 FF',
      "  can0       2C0   [2]  02 01 :: BODY_STATUS(IgnitionState: 'ON', DriverSeatbelt: 'Unbuckled', DoorOpenFL: 'Open', DoorOpenFR: 'Closed', DoorOpenRL: 'Closed', DoorOpenRR: 'Closed', TrunkOpen: 'Closed')",
      '  can0       555   [1]  00',
      " (1700000000.000100)  can0  0C8   [8]  40 1F 00 00 00 00 00 00 :: ENGINE_DATA(EngineSpeed: 2000 rpm, ThrottlePosition: 0 %, EngineLoad: 0 %, EngineTorque: 0 Nm, EngineRunning: 'Stopped', FuelCutActive: 0, EngineDataCounter: 0)",
      " (1700000000.010100)  can0  0D0   [8]  64 22 00 00 00 00 00 00 :: VEHICLE_DYNAMICS(VehicleSpeed: 88.04 km/h, LongitudinalAccel: 0 m/s^2, YawRate: 0 deg/s, VehicleStandstill: 'Moving')",
      ' (1700000000.020100)  can0  2C0   [4]  remote request',
    ]);
    const json = runProgramSync('telematics-agent', ['decode', '-d', DEMO_DBC_PATH, '-j', '--no-choices'], { input: `${plain[2]}\n${absolute[1]}\n` });
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(
      json.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
      [
        {
          ts: null,
          bus: 'can0',
          id: 0x2c0,
          extended: false,
          name: 'BODY_STATUS',
          signals: { IgnitionState: 2, DriverSeatbelt: 0, DoorOpenFL: 1, DoorOpenFR: 0, DoorOpenRL: 0, DoorOpenRR: 0, TrunkOpen: 0 },
        },
        {
          ts: 1700000000.0101,
          bus: 'can0',
          id: 0xd0,
          extended: false,
          name: 'VEHICLE_DYNAMICS',
          signals: { VehicleSpeed: 88.04, LongitudinalAccel: 0, YawRate: 0, VehicleStandstill: 0 },
        },
      ],
    );
  });

  it('[16.cli] value-table labels are shown by default, as cantools shows them; --no-choices gives the numbers, in text and JSON', () => {
    const input = '(1.000000) can0 2C0#0201\n';
    const labels = runProgramSync('telematics-agent', ['decode', '--dbc', DEMO_DBC_PATH], { input });
    assert.match(labels.stdout, /BODY_STATUS\(IgnitionState: 'ON', DriverSeatbelt: 'Unbuckled', DoorOpenFL: 'Open'/);
    // --choices, the old way to ask for them, still works.
    assert.equal(runProgramSync('telematics-agent', ['decode', '--dbc', DEMO_DBC_PATH, '--choices'], { input }).stdout, labels.stdout);
    const numbers = runProgramSync('telematics-agent', ['decode', '--dbc', DEMO_DBC_PATH, '--no-choices'], { input });
    assert.match(numbers.stdout, /BODY_STATUS\(IgnitionState: 2, DriverSeatbelt: 0, DoorOpenFL: 1,/);
    const json = runProgramSync('telematics-agent', ['decode', '--dbc', DEMO_DBC_PATH, '--json'], { input });
    assert.equal((JSON.parse(json.stdout) as { signals: Record<string, unknown> }).signals.IgnitionState, 'ON');
  });

  it('[16.cli] exit status 1 when lines came and not one was a frame; 0 when some were, or when there was nothing to read', () => {
    const none = runProgramSync('telematics-agent', ['decode', '-d', DEMO_DBC_PATH], { input: 'hello\nworld\n' });
    assert.equal(none.status, 1);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /^warning: line 1: .*\nwarning: line 2: .*\n2 malformed line\(s\) skipped\nno line of standard input is a candump frame\n$/);
    const dir = makeTempDir('decode-');
    const log = path.join(dir, 'notes.txt');
    writeFileSync(log, 'not candump\n');
    const file = runProgramSync('telematics-agent', ['decode', '-d', DEMO_DBC_PATH, '-l', log]);
    assert.equal(file.status, 1);
    assert.match(file.stderr, new RegExp(`no line of ${log.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is a candump frame\\n$`));
    const some = runProgramSync('telematics-agent', ['decode', '-d', DEMO_DBC_PATH, '--log', '-'], { input: `hello\n${plain[0]}\n` });
    assert.equal(some.status, 0);
    assert.equal(some.stdout.split('\n').length, 2);
    const empty = runProgramSync('telematics-agent', ['decode', '-d', DEMO_DBC_PATH], { input: '' });
    assert.deepEqual([empty.status, empty.stdout, empty.stderr], [0, '', '']);
  });

  it('[16.cli] decode prints each frame as it comes from a pipe, without waiting for the end of the input (candump can0 | decode)', async () => {
    const child = spawn(process.execPath, [AGENT_CLI, 'decode', '-d', DEMO_DBC_PATH], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      // Each line is answered while the input stays open, as a live candump's would be.
      for (const [n, line] of plain.entries()) {
        child.stdin.write(`${line}\n`);
        await waitFor(() => stdout.split('\n').length === n + 2, `the decoded line ${n + 1} while the input is still open`, 30_000);
      }
      child.stdin.end();
      assert.equal(await exited, 0, stderr);
      assert.equal(stdout.trimEnd().split('\n').length, plain.length);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
