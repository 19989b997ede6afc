/** The `decode` and `dbc` commands, run as a user runs them: the compiled CLI in a child process. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { hasSharedTestdata, NO_SHARED_TESTDATA, repoRoot, sharedTestdata } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const cli = path.join(repoRoot, 'dist', 'src', 'cli', 'main.js');

function run(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [cli, ...args], { input, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const skip = hasSharedTestdata() ? false : NO_SHARED_TESTDATA;
const truckLog = sharedTestdata('logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
const j1939Dbc = sharedTestdata('dbc', 'css_j1939_demo.dbc');

describe('telematics-agent decode', { skip }, () => {
  it('decodes the real truck log by PGN: one JSON object per frame, engine speed at idle 646..654 rpm', () => {
    const { status, stdout, stderr } = run(['decode', '--dbc', j1939Dbc, '--log', truckLog, '--j1939', '--json']);
    assert.equal(status, 0, stderr);
    const objects = stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(objects.length, 57849);
    const eec1 = objects.filter((o) => o.name === 'EEC1');
    assert.ok(eec1.length > 1000, `${eec1.length} EEC1 frames`);
    for (const o of eec1) {
      const rpm = (o.signals as Record<string, number>).EngineSpeed!;
      assert.ok(rpm >= 646 && rpm <= 654, `EngineSpeed ${rpm} at ${o.ts}`);
      assert.equal(o.extended, true);
      assert.equal(o.bus === 'can0' || o.bus === 'can1', true);
    }
    const unknown = objects.filter((o) => o.name === null);
    assert.ok(unknown.length > 0, 'frames the DBC does not know have name null');
    assert.deepEqual(Object.keys(objects[0]!), ['ts', 'bus', 'id', 'extended', 'name', 'signals']);
  });

  it('without PGN matching the same log decodes nothing (the DBC is written for another source address)', () => {
    const { status, stdout } = run(['decode', '--dbc', j1939Dbc, '--log', truckLog, '--json']);
    assert.equal(status, 0);
    assert.ok(!stdout.includes('"name":"EEC1"'));
  });

  it('reads standard input and prints one line per frame in text form', () => {
    const input = [
      '(1635188455.029900) can0 0CF00400#607D84481400F084',
      '(1635188455.030900) can0 0CFEF100#F7000004000000FF',
      '(1635188455.031000) can1 123#1122',
    ].join('\n');
    const { status, stdout } = run(['decode', '--dbc', j1939Dbc, '--j1939'], input);
    assert.equal(status, 0);
    const lines = stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    assert.equal(lines[0], '(1635188455.029900) can0 0CF00400#607D84481400F084 :: EEC1(EngineSpeed: 649 rpm)');
    assert.match(lines[1]!, /^\(1635188455\.030900\) can0 0CFEF100#F7000004000000FF :: CCVS1\(WheelBasedVehicleSpeed: 0 km\/h\)$/);
    assert.equal(lines[2], '(1635188455.031000) can1 123#1122');
  });

  it('reports malformed lines on stderr, skips them and carries on', () => {
    const input = ['(1.000000) can0 0CF00400#607D84481400F084', 'garbage here', '(2.000000) can0 0CF00400#607D84481400F084'].join('\n');
    const { status, stdout, stderr } = run(['decode', '--dbc', j1939Dbc, '--j1939', '--json'], input);
    assert.equal(status, 0);
    assert.equal(stdout.trim().split('\n').length, 2);
    assert.match(stderr, /line 2:/);
  });

  it('reports frames that fail to decode as {ts, bus, id, error}', () => {
    const dir = makeTempDir('decode-');
    const dbc = path.join(dir, 'mux.dbc');
    writeFileSync(
      dbc,
      ['BO_ 256 Mux: 2 ECU', ' SG_ Sel M : 0|8@1+ (1,0) [0|0] "" X', ' SG_ A m1 : 8|8@1+ (1,0) [0|0] "" X', ''].join('\n'),
    );
    const { status, stdout } = run(['decode', '--dbc', dbc, '--json'], '(1.5) can0 100#0107\n(1.6) can0 100#0207\n');
    assert.equal(status, 0);
    const [ok, bad] = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(ok, { ts: 1.5, bus: 'can0', id: 256, extended: false, name: 'Mux', signals: { Sel: 1, A: 7 } });
    assert.deepEqual(Object.keys(bad!), ['ts', 'bus', 'id', 'error']);
    assert.match(String(bad!.error), /expected multiplexer id 1, but got 2/);
  });

  it('fails with a clear message for a missing DBC file', () => {
    const { status, stderr } = run(['decode', '--dbc', '/nonexistent.dbc', '--log', truckLog]);
    assert.equal(status, 1);
    assert.match(stderr, /\/nonexistent\.dbc.*cannot read DBC file/);
  });
});

describe('telematics-agent dbc', { skip }, () => {
  it('summarises messages, signals, multiplexing and warnings', () => {
    const { status, stdout } = run(['dbc', sharedTestdata('dbc', 'multiplex_2.dbc'), '--signals']);
    assert.equal(status, 0);
    assert.match(stdout, /4 messages \(4 extended ID, 0 CAN FD, 4 J1939, 4 multiplexed\), 19 signals/);
    assert.match(stdout, /S1: bit 4, 4 bits, Intel, signed \[S0=0, multiplexer\]/);
  });

  it('shows what lenient mode tolerated, and strict mode rejects it with file:line:column', () => {
    const file = sharedTestdata('dbc', 'unparseable_by_cantools', 'toyota_radar_dsu_tssp.dbc');
    const lenient = run(['dbc', file]);
    assert.equal(lenient.status, 0);
    assert.match(lenient.stdout, /tolerated: CM_ statement without its closing ';'/);
    const strict = run(['dbc', file, '--strict']);
    assert.equal(strict.status, 1);
    assert.match(strict.stderr, /toyota_radar_dsu_tssp\.dbc:138:\d+: .*rejected in strict mode/);
  });
});
