/**
 * `candump IF | telematics-agent decode -d DBC` on a real kernel (inside the VM): the real candump from can-utils,
 * started with the options people use (none, -ta, -td, -tA with -x and -a), prints the frames cansend sends, and decode
 * reads its output as it comes, while candump is still running. Each pipeline is a real pipe between two processes;
 * the interface is this file's own, so other *.vmtest files can run alongside.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { describe, it } from 'node:test';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { AGENT_CLI } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { Cleanup, run, waitUntilReading, withVcan } from '../support/vcan.js';
import { waitFor } from '../support/wait.js';

const IF = 'vt-dump0';
const cleanup = new Cleanup();

/** What a pipeline printed, and how its two ends finished. */
interface Pipeline {
  candump: ChildProcess;
  decode: ChildProcess;
  stdout: string;
  stderr: string;
  decodeExit: Promise<number | null>;
}

/**
 * `candump <options> IF | telematics-agent decode -d demo.dbc <decodeArgs>`, both killed after the test whatever
 * happens. candump writes straight into decode's standard input; this process keeps no end of that pipe, so candump's
 * exit is the end of decode's input, as in a shell.
 */
function pipeline(candumpOptions: string[], decodeArgs: string[] = []): Pipeline {
  const decode = spawn(process.execPath, [AGENT_CLI, 'decode', '-d', DEMO_DBC_PATH, ...decodeArgs], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
  const candump = spawn('candump', [...candumpOptions, IF], { stdio: ['ignore', decode.stdin, 'pipe'] });
  decode.stdin.destroy();
  cleanup.add(() => candump.kill('SIGKILL'));
  cleanup.add(() => decode.kill('SIGKILL'));
  const result: Pipeline = {
    candump,
    decode,
    stdout: '',
    stderr: '',
    decodeExit: new Promise((resolve) => decode.once('close', (code) => resolve(code))),
  };
  decode.stdout.setEncoding('utf8').on('data', (chunk: string) => (result.stdout += chunk));
  decode.stderr.setEncoding('utf8').on('data', (chunk: string) => (result.stderr += chunk));
  candump.stderr.setEncoding('utf8').on('data', (chunk: string) => (result.stderr += `candump: ${chunk}`));
  return result;
}

/** What cansend sends, in this order. */
const FRAMES = [
  '0C8#401F000000000000', // ENGINE_DATA: 2000 rpm, engine stopped
  '2C0#0201', // BODY_STATUS: ignition ON, driver's door open
  '12345678#11223344', // not in the DBC; from here on candump indents 11-bit IDs under the 29-bit one
  '0D0#6422000000000000', // VEHICLE_DYNAMICS: 88.04 km/h
  '2C0#R', // a remote request for BODY_STATUS
  '555##1001122334455667788990A0B', // CAN FD, 12 bytes, bit-rate switch; not in the DBC
];

describe('[16.cli] candump | decode on a real kernel', { timeout: 420_000 }, () => {
  withVcan([IF], { cleanup });

  it('[16.cli] the real candump (default, -ta, -td, -tA -x -a) piped into decode: every frame read and decoded while candump still runs', async () => {
    const plain = pipeline([]);
    const absolute = pipeline(['-ta'], ['--json']);
    const delta = pipeline(['-td']);
    const dated = pipeline(['-tA', '-x', '-a']);
    const all = [plain, absolute, delta, dated];
    for (const p of all) await waitUntilReading(p.candump, 90_000);
    const before = Date.now() / 1000;
    for (const frame of FRAMES) run('cansend', IF, frame);
    const after = Date.now() / 1000;
    // Decoded while candump still runs: decode prints what each chunk of the pipe holds, not at the end.
    for (const p of all) {
      await waitFor(() => p.stdout.split('\n').length > FRAMES.length, `${FRAMES.length} lines from ${p.candump.spawnargs.join(' ')} | decode`, 90_000);
      assert.equal(p.candump.exitCode, null, 'candump is still running');
    }
    for (const p of all) p.candump.kill('SIGINT');
    for (const p of all) assert.equal(await p.decodeExit, 0, p.stderr);
    for (const p of all) assert.equal(p.stderr, '', `${p.candump.spawnargs.join(' ')}: every line read`);

    const lines = plain.stdout.trimEnd().split('\n');
    assert.equal(lines.length, FRAMES.length, plain.stdout);
    // Each line as candump printed it, then what it decodes to.
    assert.match(lines[0]!, new RegExp(`^ +${IF} +0C8 +\\[8\\] +40 1F 00 00 00 00 00 00 :: ENGINE_DATA\\(EngineSpeed: 2000 rpm, .*EngineRunning: 'Stopped'`));
    assert.match(lines[1]!, new RegExp(`^ +${IF} +2C0 +\\[2\\] +02 01 :: BODY_STATUS\\(IgnitionState: 'ON', DriverSeatbelt: 'Unbuckled', DoorOpenFL: 'Open'`));
    assert.match(lines[2]!, new RegExp(`^ +${IF} +12345678 +\\[4\\] +11 22 33 44$`));
    assert.match(lines[3]!, /0D0 +\[8\] +64 22 00 00 00 00 00 00 :: VEHICLE_DYNAMICS\(VehicleSpeed: 88\.04 km\/h, /);
    assert.match(lines[4]!, /2C0 +\[0\] +remote request$/);
    assert.match(lines[5]!, /555 +\[12\] +00 11 22 33 44 55 66 77 88 99 0A 0B$/);

    const objects = absolute.stdout
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as { ts: number; bus: string; id: number; extended: boolean; name: string | null; signals: Record<string, unknown> });
    assert.deepEqual(
      objects.map((o) => [o.bus, o.id, o.extended, o.name]),
      [
        [IF, 0x0c8, false, 'ENGINE_DATA'],
        [IF, 0x2c0, false, 'BODY_STATUS'],
        [IF, 0x12345678, true, null],
        [IF, 0x0d0, false, 'VEHICLE_DYNAMICS'],
        [IF, 0x2c0, false, null],
        [IF, 0x555, false, null],
      ],
    );
    assert.equal(objects[0]!.signals.EngineSpeed, 2000);
    assert.equal(objects[1]!.signals.IgnitionState, 'ON');
    assert.equal(objects[3]!.signals.VehicleSpeed, 88.04);
    // -ta: the kernel's receive times, as candump printed them.
    for (const o of objects) assert.ok(o.ts >= before - 5 && o.ts <= after + 5, `ts ${o.ts} between ${before} and ${after}`);

    // -td: times since the previous frame; -tA -x -a: a local date, the direction and the FD flags, the ASCII column.
    assert.match(delta.stdout.split('\n')[0]!, new RegExp(`^ \\(\\d{3}\\.\\d{6}\\) +${IF} +0C8 +\\[8\\] +40 1F .* :: ENGINE_DATA\\(EngineSpeed: 2000 rpm`));
    const datedLines = dated.stdout.trimEnd().split('\n');
    assert.match(
      datedLines[0]!,
      /^ \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\) .*0C8 +\[8\] +40 1F 00 00 00 00 00 00 .*'@\.\.\.\.\.\.\.' :: ENGINE_DATA\(EngineSpeed: 2000 rpm/,
    );
    // A frame this host sent is TX to a socket on the same host (vcan loops it back).
    assert.match(datedLines[5]!, /[RT]X B - +555 +\[12\] +00 11 22 33 44 55 66 77 88 99 0A 0B$/);
  });
});
