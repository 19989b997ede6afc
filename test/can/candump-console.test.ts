/**
 * candump's console output (what it prints without -L), as `decode` reads it: the recorded lines below are written
 * from can-utils' documented layout (lib.c's long frame format, candump.c's timestamp and interface columns), and the
 * real truck log is printed in that layout with every -t mode and read back frame for frame. The real candump's own
 * output is read in the VM (test/cli/candump-pipe.vmtest.ts).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CAN_ERR_FLAG, CandumpLineParser, CandumpParseError } from '../../src/can/candump.js';
import { cloneFrame, createFrame, type CanFrame } from '../../src/can/frame.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, sharedTestdata } from '../support/shared.js';

const truckLog = sharedTestdata('logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');

/** The frames of `lines`, read by one console-format parser; each with whether it came from a console line. */
function readAll(lines: string[]): { frame: CanFrame; console: boolean }[] {
  const parser = new CandumpLineParser({ consoleFormat: true });
  const frame = createFrame();
  const out: { frame: CanFrame; console: boolean }[] = [];
  lines.forEach((line, n) => {
    if (parser.parse(line, frame, n + 1)) out.push({ frame: cloneFrame(frame), console: parser.consoleLine });
  });
  return out;
}

function one(line: string): CanFrame {
  const frames = readAll([line]);
  assert.equal(frames.length, 1, JSON.stringify(line));
  return frames[0]!.frame;
}

function refused(line: string, reason: string | RegExp): void {
  assert.throws(
    () => new CandumpLineParser({ consoleFormat: true }).parse(line, createFrame(), 7),
    (err: unknown) => {
      assert.ok(err instanceof CandumpParseError, String(err));
      assert.equal(err.line, line);
      if (typeof reason === 'string') assert.ok(err.message.startsWith(`line 7: ${reason}`), err.message);
      else assert.match(err.message, reason);
      return true;
    },
  );
}

/** The fields a test states, the rest as a fresh frame has them. */
function expected(fields: Omit<Partial<CanFrame>, 'data'> & { data?: number[] }): CanFrame {
  const frame = createFrame();
  const { data, ...rest } = fields;
  Object.assign(frame, rest);
  frame.data = new Uint8Array(data ?? []);
  if (fields.dlc === undefined) frame.dlc = frame.data.length;
  return frame;
}

const hex = (n: number, digits: number): string => n.toString(16).toUpperCase().padStart(digits, '0');

/**
 * A frame as candump prints it on the console (default view): " " [timestamp " "] " " interface, right-aligned to the
 * longest interface name, "  ", then the frame: the ID (3 or 8 digits; 3 indented by 5 once an extended frame was
 * seen), two spaces, " [n] " or "[nn] ", and " XX" per byte.
 */
function consoleLine(frame: CanFrame, stamp: string | undefined, width = 4, indentStandard = false): string {
  const id = frame.error ? hex(frame.id | CAN_ERR_FLAG, 8) : frame.extended ? hex(frame.id, 8) : `${indentStandard ? '     ' : ''}${hex(frame.id, 3)}`;
  const length = frame.fd ? `[${String(frame.data.length).padStart(2, '0')}] ` : ` [${frame.remote ? frame.dlc : frame.data.length}] `;
  const body = frame.remote ? ' remote request' : [...frame.data].map((b) => ` ${hex(b, 2)}`).join('');
  return ` ${stamp === undefined ? '' : `${stamp} `} ${frame.bus.padStart(width)}  ${id}  ${length}${body}`;
}

const micros = (ts: number): number => Math.round(ts * 1e6);
const seconds = (us: number, digits: number): string => `${String(Math.floor(us / 1e6)).padStart(digits, '0')}.${String(us % 1e6).padStart(6, '0')}`;
/** -tA: the local date and time, as candump's strftime("%Y-%m-%d %H:%M:%S") and ".%06lu" print it. */
function localDate(us: number): string {
  const d = new Date(Math.floor(us / 1e6) * 1000);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `(${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(us % 1e6).padStart(6, '0')})`;
}

describe('[16.cli] candump console format', () => {
  it('[16.cli] reads the default format and every -t timestamp: 11-bit, 29-bit, no timestamp (ts NaN), absolute, relative, local date', () => {
    assert.deepEqual(
      one('  can0  123   [8]  11 22 33 44 55 66 77 88'),
      expected({ ts: NaN, bus: 'can0', id: 0x123, data: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88] }),
    );
    assert.deepEqual(one('  can0  1F334455   [3]  01 02 03'), expected({ ts: NaN, bus: 'can0', id: 0x1f334455, extended: true, data: [1, 2, 3] }));
    // Once candump has seen an extended frame it indents the 11-bit IDs under it.
    assert.deepEqual(one('  can0       7E8   [2]  02 41'), expected({ ts: NaN, bus: 'can0', id: 0x7e8, data: [2, 0x41] }));
    assert.deepEqual(one(' (1700000000.123456)  can0  123   [2]  11 22'), expected({ ts: 1700000000.123456, bus: 'can0', id: 0x123, data: [0x11, 0x22] }));
    assert.deepEqual(one(' (000.000120)  can0  123   [0]'), expected({ ts: 0.00012, bus: 'can0', id: 0x123 }));
    assert.deepEqual(one(' (1234.500000)  can0  123   [0]').ts, 1234.5);
    const local = one(' (2023-10-25 12:34:56.789012)  vcan0  123   [1]  FF');
    assert.equal(local.ts, new Date(2023, 9, 25, 12, 34, 56).getTime() / 1000 + 0.789012);
    assert.equal(local.bus, 'vcan0');
    // Interface names are right-aligned to the longest one candump has seen.
    assert.equal(one('   vcan1  123   [1]  00').bus, 'vcan1');
  });

  it('[16.cli] reads remote, CAN FD, error frames and what -x, -e, -a, -i, -S, -8 and -c add', () => {
    assert.deepEqual(one('  can0  123   [4]  remote request'), expected({ ts: NaN, bus: 'can0', id: 0x123, remote: true, dlc: 4 }));
    assert.deepEqual(one('  can0  12345678   [0]  remote request'), expected({ ts: NaN, bus: 'can0', id: 0x12345678, extended: true, remote: true, dlc: 0 }));
    const fdData = [0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb];
    assert.deepEqual(one('  can0  123  [12]  00 11 22 33 44 55 66 77 88 99 AA BB'), expected({ ts: NaN, bus: 'can0', id: 0x123, fd: true, data: fdData }));
    assert.deepEqual(
      one('  can0  12345678  [03]  11 22 33'),
      expected({ ts: NaN, bus: 'can0', id: 0x12345678, extended: true, fd: true, data: [0x11, 0x22, 0x33] }),
    );
    // -x: direction, then B (bit-rate switch) and E (error state indicator): the FD flags, bit 0 and bit 1.
    assert.deepEqual(one('  can0  RX B E  123  [02]  11 22'), expected({ ts: NaN, bus: 'can0', id: 0x123, fd: true, fdFlags: 3, data: [0x11, 0x22] }));
    assert.equal(one('  can0  TX B -  123  [02]  11 22').fdFlags, 1);
    assert.equal(one('  can0  RX - -  123   [2]  11 22').fdFlags, 0);
    // An error frame, then -e's details on tab-indented lines of their own: skipped, not counted as bad lines.
    const errors = readAll([
      '  can0  20000004   [8]  00 04 00 00 00 00 00 00   ERRORFRAME',
      '\tcontroller-problem{rx-error-warning}',
      '\terror-counter-tx-rx{{0}{96}}',
      '  can0  123   [1]  05',
    ]);
    assert.deepEqual(
      errors.map((f) => f.frame),
      [expected({ ts: NaN, bus: 'can0', id: 4, error: true, data: [0, 4, 0, 0, 0, 0, 0, 0] }), expected({ ts: NaN, bus: 'can0', id: 0x123, data: [5] })],
    );
    // -a: the bytes as ASCII after them, in quotes (which the text itself may hold).
    assert.deepEqual([...one("  can0  123   [4]  41 27 20 42               'A' B'").data], [0x41, 0x27, 0x20, 0x42]);
    assert.deepEqual([...one("  can0  123   [0]                            ''").data], []);
    // -i: bytes in binary. -S: bytes in reverse order, joined by backquotes (and its ASCII column between backquotes).
    assert.deepEqual([...one('  can0  123   [2]  00010001 11111110').data], [0x11, 0xfe]);
    assert.deepEqual([...one('  can0  123   [3]  33`22`11            `3"`').data], [0x11, 0x22, 0x33]);
    assert.deepEqual([...one('  can0  123   [2]  11111110`00010001').data], [0x11, 0xfe]);
    // -8: a classic frame's raw DLC in braces; 9..F still carry 8 bytes.
    assert.deepEqual(one('  can0  123   {F}  01 02 03 04 05 06 07 08'), expected({ ts: NaN, bus: 'can0', id: 0x123, data: [1, 2, 3, 4, 5, 6, 7, 8] }));
    assert.equal(one('  can0  123   {3}  01 02 03').dlc, 3);
    // -c: colour escape sequences around the interface (and, at level 3, the whole line).
    assert.deepEqual(one(' \x1b[1;34m (1.000000) \x1b[1;31mcan0\x1b[0m  123   [1]  11\x1b[0m'), expected({ ts: 1, bus: 'can0', id: 0x123, data: [0x11] }));
  });

  it("[16.cli] decides the format per line: -L lines (with -x's trailing R/T) and console lines mixed, each read as candump wrote it", () => {
    const frames = readAll([
      '(1635188455.029900) can0 0CF00400#607D84481400F084',
      '  can0  0CF00400   [8]  60 7D 84 48 14 00 F0 84',
      '# a comment',
      '',
      '(1635188455.030900) can1 123#1122 R',
      '(1635188455.031900) can1 123##3AABB T',
      ' (1635188455.032900)  can1  123   [2]  11 22',
    ]);
    assert.deepEqual(
      frames.map((f) => f.console),
      [false, true, false, false, true],
    );
    assert.deepEqual({ ...frames[0]!.frame, ts: NaN }, frames[1]!.frame);
    assert.deepEqual(frames[2]!.frame, expected({ ts: 1635188455.0309, bus: 'can1', id: 0x123, data: [0x11, 0x22] }));
    assert.deepEqual(frames[3]!.frame, expected({ ts: 1635188455.0319, bus: 'can1', id: 0x123, fd: true, fdFlags: 3, data: [0xaa, 0xbb] }));
    // Replay's parser reads -L only: a console line is an error there, as before.
    assert.throws(() => new CandumpLineParser().parse('  can0  123   [1]  11', createFrame()), /expected "\(" starting the timestamp/);
  });

  it(
    '[16.cli] the real truck log printed in the console format with each -t mode reads back frame for frame',
    { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA },
    () => {
      // Its first 20,000 frames: both buses, 11-bit and 29-bit identifiers.
      const lines = readFileSync(truckLog, 'utf8').split('\n', 20_000);
      const logged = readAll(lines).map((f) => f.frame);
      assert.equal(logged.length, 20_000);
      const first = micros(logged[0]!.ts);
      let previous = first;
      let seenExtended = false;
      const printed: Record<'none' | 'a' | 'z' | 'd' | 'A', string[]> = { none: [], a: [], z: [], d: [], A: [] };
      for (const frame of logged) {
        const us = micros(frame.ts);
        seenExtended ||= frame.extended;
        const line = (stamp: string | undefined): string => consoleLine(frame, stamp, 4, seenExtended);
        printed.none.push(line(undefined));
        printed.a.push(line(`(${seconds(us, 10)})`));
        printed.z.push(line(`(${seconds(us - first, 3)})`));
        printed.d.push(line(`(${seconds(us - previous, 3)})`));
        printed.A.push(line(localDate(us)));
        previous = us;
      }
      for (const [mode, text] of Object.entries(printed)) {
        const read = readAll(text);
        assert.equal(read.length, logged.length, mode);
        previous = first;
        for (let n = 0; n < logged.length; n++) {
          const { frame, console } = read[n]!;
          const original = logged[n]!;
          const us = micros(original.ts);
          const ts = { none: NaN, a: original.ts, A: original.ts, z: (us - first) / 1e6, d: (us - previous) / 1e6 }[mode as keyof typeof printed];
          previous = us;
          if (!console || frame.bus !== original.bus || frame.id !== original.id || frame.extended !== original.extended) {
            assert.fail(`-t${mode} line ${n + 1}: ${text[n]} read as ${JSON.stringify(frame)}`);
          }
          if (!(Number.isNaN(ts) ? Number.isNaN(frame.ts) : micros(frame.ts) === micros(ts)))
            assert.fail(`-t${mode} line ${n + 1}: ts ${frame.ts}, expected ${ts}`);
          if (frame.data.length !== original.data.length || frame.data.some((b, k) => b !== original.data[k])) assert.fail(`-t${mode} line ${n + 1}: data`);
        }
      }
    },
  );

  it('[16.cli] refuses what is not a frame with the reason and column: short data, a bad length, CAN XL, candump notices, garbage', () => {
    refused('  can0  123   [8]  11 22', 'the line ends after 2 of 8 data bytes at column 25');
    refused('  can0  123   [2]  11 22 33', 'unexpected "3" after the 2 data bytes');
    refused('  can0  123   [9]  11', 'classic CAN length 9 exceeds 8');
    refused('  can0  123  [09]  11', 'CAN FD length 9 is not a valid FD length');
    refused('  can0  123  [10]  11', 'CAN FD length 10 is not a valid FD length');
    refused('  can0  123   8  11', 'expected the data length in brackets ("[8]") after the CAN ID, found "8"');
    refused('  can0  123   [2]  1G 22', 'expected data byte 1 of 2 (two hex digits), found "1G"');
    refused('  can0  12345   [2]  11 22', 'expected the CAN ID (3 or 8 hex digits) after the interface name, found "12345"');
    refused('  can0  800   [0]', '11-bit CAN ID 0x800 exceeds 0x7FF');
    refused('  can0  123 [0003] (45|81:00:12345678) 11 22 33', 'CAN XL frames (a 4-digit length) are not supported');
    refused('  can0  20000004  [08]  00 00 00 00 00 00 00 00', 'error frames cannot be CAN FD frames');
    refused("DROPCOUNT: dropped 3 CAN frames on 'can0' socket (total drops 3)", 'candump says it dropped frames here (its DROPCOUNT notice), not a frame');
    refused(' (2023-13-25 12:00:00.000000)  can0  123   [0]', 'the date or time is out of range');
    refused(' (2023-02-30 12:00:00.000000)  can0  123   [0]', '2023-2-30 is not a date');
    refused(' (12.5  can0  123   [0]', 'expected ")" closing the timestamp, found " "');
    refused('garbage here', 'expected the CAN ID (3 or 8 hex digits) after the interface name, found "here" at column 9: "garbage here"');
    refused('  can0', 'expected a space and the CAN ID after the interface name');
    // -L lines are still held to the -L grammar.
    refused('(1.000000) can0 123#112', /odd number of hex digits/);
  });
});
