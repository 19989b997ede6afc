/**
 * candump -L parsing and formatting: every line of the real logs round-trips exactly; the synthetic cases cover the
 * frame kinds the real logs lack (remote, FD, error) and malformed input, which must throw CandumpParseError only.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CandumpLineParser, CandumpParseError, formatCandumpLine, parseCandumpLine, parseCandumpText } from '../../src/can/candump.js';
import { cloneFrame, createFrame, type CanFrame } from '../../src/can/frame.js';
import { hexBytes, hexText } from '../support/hex.js';
import { seededRandom } from '../support/random.js';
import { hasSharedTestdata, sharedTestdata } from '../support/shared.js';

const SKIP = '../shared/testdata not found';

/** The real logs and what they hold (counted independently with awk/grep). */
const LOGS = [
  { file: 'css_j1939_truck_11111111_00000012_00000001.candump.log', frames: 57_849, buses: { can0: 45_571, can1: 12_278 }, standard: 12_278 },
  { file: 'css_j1939_tp_FCBF0606_00003482_00000001.candump.log', frames: 1_815, buses: { can0: 1_815 }, standard: 0 },
  { file: 'css_uds_hyundai_17BD1DB7_00000006_00000170.candump.log', frames: 2_010, buses: { can0: 2_010 }, standard: 2_010 },
  { file: 'css_uds_nissan_leaf_2F6913DB_00000004_00000001.candump.log', frames: 5_588, buses: { can0: 221, can1: 5_367 }, standard: 5_588 },
];

function parse(line: string, lineNo?: number): CanFrame {
  const frame = createFrame();
  assert.equal(parseCandumpLine(line, frame, lineNo), true);
  return cloneFrame(frame);
}

/** Asserts that `line` is rejected with a CandumpParseError whose message contains `fragment`. */
function rejects(line: string, fragment: string | RegExp, lineNo?: number): CandumpParseError {
  let caught: unknown;
  try {
    parseCandumpLine(line, createFrame(), lineNo);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof CandumpParseError, `expected CandumpParseError for ${JSON.stringify(line)}, got ${String(caught)}`);
  assert.equal(caught.line, line);
  assert.equal(caught.name, 'CandumpParseError');
  if (typeof fragment === 'string') assert.ok(caught.message.includes(fragment), `message ${JSON.stringify(caught.message)} lacks ${fragment}`);
  else assert.match(caught.message, fragment);
  return caught;
}

describe('candump -L real logs', () => {
  for (const log of LOGS) {
    it(`${log.file}: every line parses and formats back identically`, (t) => {
      if (!hasSharedTestdata()) return t.skip(SKIP);
      const lines = readFileSync(sharedTestdata('logs', log.file), 'utf8').split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      const frame = createFrame();
      const buses: Record<string, number> = {};
      let frames = 0;
      let standard = 0;
      let previousTs = -Infinity;
      for (let n = 0; n < lines.length; n++) {
        const line = lines[n]!;
        assert.equal(parseCandumpLine(line, frame, n + 1), true, `line ${n + 1}`);
        frames++;
        buses[frame.bus] = (buses[frame.bus] ?? 0) + 1;
        if (!frame.extended) standard++;
        assert.equal(frame.fd || frame.remote || frame.error, false);
        assert.equal(frame.data.length, frame.dlc);
        // Same double as the decimal text: microseconds survive.
        assert.equal(frame.ts, Number(line.slice(1, line.indexOf(')'))));
        assert.ok(frame.ts >= previousTs, `line ${n + 1}: timestamps go backwards`);
        previousTs = frame.ts;
        const formatted = formatCandumpLine(frame);
        if (formatted !== line) assert.equal(formatted, line, `line ${n + 1}`);
      }
      assert.equal(frames, log.frames);
      assert.deepEqual(buses, log.buses);
      assert.equal(standard, log.standard);
    });
  }

  it('truck log: first frame decoded field by field, and parseCandumpText agrees with the line parser', (t) => {
    if (!hasSharedTestdata()) return t.skip(SKIP);
    const text = readFileSync(sharedTestdata('logs', LOGS[0]!.file), 'utf8');
    const first = parse(text.slice(0, text.indexOf('\n')));
    assert.deepEqual(first, {
      ts: 1635188455.02085,
      bus: 'can0',
      id: 0x18f00e00,
      extended: true,
      fd: false,
      fdFlags: 0,
      remote: false,
      error: false,
      dlc: 8,
      data: hexBytes('821639C4FFFFFFFF'),
    });

    let eec1 = 0;
    let can1Standard = 0;
    const result = parseCandumpText(text, (f) => {
      if (f.id === 0x0cf00400 && f.extended) eec1++;
      if (f.bus === 'can1' && !f.extended && f.id <= 0x7ff) can1Standard++;
    });
    assert.deepEqual(result, { frames: 57_849, errors: 0 });
    assert.equal(eec1, 12_719); // grep -c ' 0CF00400#'
    assert.equal(can1Standard, 12_278);
  });
});

describe('parseCandumpLine', () => {
  it('tells 11-bit from 29-bit IDs by digit count', () => {
    const std = parse('(1.000000) can0 123#DEADBEEF');
    assert.equal(std.id, 0x123);
    assert.equal(std.extended, false);
    assert.deepEqual([...std.data], [0xde, 0xad, 0xbe, 0xef]);
    assert.equal(std.dlc, 4);

    const ext = parse('(1.000000) can0 00000123#DEADBEEF');
    assert.equal(ext.id, 0x123);
    assert.equal(ext.extended, true);

    assert.equal(parse('(1.000000) can0 7FF#').id, 0x7ff);
    assert.equal(parse('(1.000000) can0 7FF#').dlc, 0);
    assert.equal(parse('(1.000000) can0 1FFFFFFF#00').id, 0x1fffffff);
    assert.equal(parse('(1.000000) can0 000#00').id, 0);
    // Lowercase hex is accepted (canplayer does), and written back in candump's uppercase.
    const lower = parse('(1.000000) can0 0cf00400#f0ff7d0000ffffff');
    assert.equal(lower.id, 0x0cf00400);
    assert.equal(formatCandumpLine(lower), '(0000000001.000000) can0 0CF00400#F0FF7D0000FFFFFF');
  });

  it('keeps microsecond timestamps exactly', () => {
    assert.equal(parse('(1635188455.020850) can0 123#').ts, 1635188455.02085);
    assert.equal(parse('(1635188455.000001) can0 123#').ts, 1635188455.000001);
    assert.equal(parse('(0000000000.500000) can0 123#').ts, 0.5);
    assert.equal(formatCandumpLine(parse('(1635188455.999999) can0 123#')), '(1635188455.999999) can0 123#');
    // Nanosecond logs parse; candump's own format writes microseconds.
    assert.equal(formatCandumpLine(parse('(1635188455.123456789) can0 123#')), '(1635188455.123457) can0 123#');
  });

  it('parses remote frames with and without a requested length', () => {
    const r0 = parse('(1.000000) can0 123#R');
    assert.equal(r0.remote, true);
    assert.equal(r0.dlc, 0);
    assert.equal(r0.data.length, 0);
    const r5 = parse('(1.000000) vcan1 1FFFFFFF#R5');
    assert.deepEqual([r5.remote, r5.extended, r5.id, r5.dlc, r5.data.length, r5.bus], [true, true, 0x1fffffff, 5, 0, 'vcan1']);
    assert.equal(parse('(1.000000) can0 123#r8').dlc, 8);
    assert.equal(formatCandumpLine(r0), '(0000000001.000000) can0 123#R');
    assert.equal(formatCandumpLine(r5), '(0000000001.000000) vcan1 1FFFFFFF#R5');
  });

  it('parses CAN FD frames with flags and a 64-byte payload', () => {
    const payload = Array.from({ length: 64 }, (_, k) => (k * 37 + 5) & 0xff);
    const line = `(1700000000.123456) can2 18DAF110##3${hexText(payload, '')}`;
    const fd = parse(line);
    assert.deepEqual(
      [fd.fd, fd.fdFlags, fd.fdFlags & 1, fd.fdFlags & 2, fd.id, fd.extended, fd.dlc, fd.data.length],
      [true, 3, 1, 2, 0x18daf110, true, 64, 64],
    );
    assert.deepEqual([...fd.data], payload);
    assert.equal(formatCandumpLine(fd), line);

    for (const len of [0, 1, 8, 12, 16, 20, 24, 32, 48]) {
      const l = `(1.000000) can0 123##1${'A5'.repeat(len)}`;
      const f = parse(l);
      assert.deepEqual([f.fd, f.fdFlags, f.extended, f.dlc, f.data.length], [true, 1, false, len, len]);
      assert.equal(formatCandumpLine(f), `(0000000001.000000) can0 123##1${'A5'.repeat(len)}`);
    }
    // BRS only / no flags / a newer flag nibble (FDF 0x4) all survive a round trip.
    assert.equal(parse('(1.000000) can0 123##0').fdFlags, 0);
    assert.equal(parse('(1.000000) can0 123##211').fdFlags, 2);
    assert.equal(formatCandumpLine(parse('(1.000000) can0 123##511')), '(0000000001.000000) can0 123##511');
  });

  it('parses error frames: CAN_ERR_FLAG stripped, class bits in id', () => {
    const line = '(1635188455.020850) can0 20000004#0004000000000000';
    const e = parse(line);
    assert.deepEqual([e.error, e.id, e.extended, e.remote, e.fd, e.dlc], [true, 0x4, false, false, false, 8]);
    assert.deepEqual([...e.data], [0, 4, 0, 0, 0, 0, 0, 0]);
    assert.equal(formatCandumpLine(e), line);
    const busOff = parse('(1.000000) can0 20000040#0000000000000000');
    assert.equal(busOff.id, 0x40);
    assert.equal(formatCandumpLine(busOff), '(0000000001.000000) can0 20000040#0000000000000000');
  });

  it('ignores the raw-DLC suffix "_<dlc>"', () => {
    const f = parse('(1.000000) can0 123#1122_9');
    assert.deepEqual([f.dlc, [...f.data]], [2, [0x11, 0x22]]);
    assert.equal(formatCandumpLine(f), '(0000000001.000000) can0 123#1122');
    assert.equal(parse('(1.000000) can0 123#1122334455667788_F').dlc, 8);
    assert.equal(parse('(1.000000) can0 123#R8_C').dlc, 8);
  });

  it('returns false for blank lines and comments, and tolerates CRLF and surrounding spaces', () => {
    const frame = createFrame();
    for (const line of ['', '   ', '\r', '\t', '# comment', '  # indented comment']) {
      assert.equal(parseCandumpLine(line, frame), false, JSON.stringify(line));
    }
    assert.deepEqual(frame, createFrame()); // untouched
    assert.equal(parse('(1.000000) can0 123#11\r').dlc, 1);
    assert.equal(parse('  (1.000000)  can0\t123#11  ').bus, 'can0');
  });

  it('reuses one data buffer per payload length, sized to the payload', () => {
    const parser = new CandumpLineParser();
    const frame = createFrame();
    parser.parse('(1.000000) can0 123#0102030405060708', frame);
    const first = frame.data;
    assert.equal(first.length, 8);
    parser.parse('(1.000000) can0 124#1112', frame);
    assert.equal(frame.data.length, 2);
    parser.parse('(1.000000) can0 125#2122232425262728', frame);
    assert.equal(frame.data, first); // same object again
    assert.deepEqual([...first], [0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]);
    // A separate parser has separate buffers.
    const other = createFrame();
    new CandumpLineParser().parse('(1.000000) can0 126#3132333435363738', other);
    assert.notEqual(other.data, first);
    assert.equal(first[0], 0x21);
  });
});

describe('malformed lines', () => {
  const cases: [string, string | RegExp][] = [
    ['(1.000000) can0 123#GG', 'invalid hex digit "G" in data at column 21'],
    ['(1.000000) can0 123#11G2', 'invalid hex digit "G"'],
    ['(1.000000) can0 123#112', 'odd number of hex digits (3)'],
    ['(1.000000) can0 123', 'missing "#"'],
    ['(1.000000) can0 123-1122', 'invalid character "-" in CAN ID'],
    ['(1.000000) can0 123#112233445566778899', 'classic CAN payload of 9 bytes exceeds 8'],
    ['(1.000000) can0 123##1112233445566778899', 'CAN FD payload of 9 bytes is not a valid FD length'],
    ['(1.000000) can0 123##0' + '00'.repeat(65), 'CAN FD payload of 65 bytes exceeds 64'],
    ['(1.000000) can0 123##', 'CAN FD flags digit'],
    ['(1.000000) can0 123##X00', 'CAN FD flags digit'],
    ['(1.000000) can0 12#00', 'CAN ID must have 3 (11-bit) or 8 (29-bit) hex digits, found 2'],
    ['(1.000000) can0 1234#00', 'found 4'],
    ['(1.000000) can0 123456789#00', 'found more than 8'],
    ['(1.000000) can0 1234567890123#00', 'found more than 8'],
    ['(1.000000) can0 800#00', '11-bit CAN ID 0x800 exceeds 0x7FF'],
    ['(1.000000) can0 80000123#00', 'flag bits'],
    ['(1.000000) can0 20000004##000', 'error frames cannot be CAN FD'],
    ['(1.000000) can0 20000004#R', 'error frames cannot be remote'],
    ['(1.000000) can0 123#R9', 'remote frame DLC must be a digit 0-8'],
    ['(1.000000) can0 123#11 22', 'invalid hex digit " "'],
    ['(1.000000) can0 123#1122_', 'invalid hex digit "_"'],
    ['(1.000000) can0 123#R5_', 'raw DLC'],
    ['(1.000000) can0 123#R5x', 'unexpected "x" after the frame'],
    ['(1.000000) can0 123#1122_99', 'invalid hex digit "_"'],
    ['(1.000000) can0', 'expected a space and the frame'],
    ['(1.000000)', 'interface name'],
    ['(1.000000)can0 123#00', 'interface name'],
    ['(1.000000 can0 123#00', 'expected ")" closing the timestamp'],
    ['(abc) can0 123#00', 'expected timestamp seconds, found "a"'],
    ['(1) can0 123#00', 'expected "." in the timestamp'],
    ['(1.) can0 123#00', 'timestamp fraction digits'],
    ['()', 'timestamp seconds'],
    ['1.000000 can0 123#00', 'expected "(" starting the timestamp'],
    ['can0 123#00', 'expected "("'],
    ['hello world', 'expected "("'],
    ['\u0000\u0001\u0002binary', 'expected "("'],
    ['(1.000000) can0 123#00 trailing', 'invalid hex digit " "'],
  ];
  for (const [line, fragment] of cases) {
    it(`rejects ${JSON.stringify(line.length > 60 ? line.slice(0, 60) + '…' : line)}`, () => {
      rejects(line, fragment);
    });
  }

  it('puts the line number, column and line text in the error', () => {
    const err = rejects('(1.000000) can0 123#GG', 'line 42: ', 42);
    assert.equal(err.lineNo, 42);
    assert.equal(err.column, 21);
    assert.equal(err.reason, 'invalid hex digit "G" in data');
    assert.equal(err.message, 'line 42: invalid hex digit "G" in data at column 21: "(1.000000) can0 123#GG"');
    const long = rejects('x'.repeat(10_000), '(10000 chars)');
    assert.ok(long.message.length < 300);
  });

  it('never throws anything but CandumpParseError on mutated real-looking lines', () => {
    // Deterministic mutation fuzz: anything that parses must also format and re-parse to the same frame.
    const random = seededRandom(0x2545f491);
    const rand = (n: number): number => random.int(0, n - 1);
    const seeds = [
      '(1635188455.020850) can0 18F00E00#821639C4FFFFFFFF',
      '(1.000000) can0 123#R5',
      '(1.000000) can0 123##3112233445566778899AABBCC',
      '(1.000000) can0 20000004#0004000000000000',
      '(1.000000) can0 123#1122_9',
    ];
    const alphabet = '0123456789ABCDEFabcdefRr#_(). \t\r\nxZ-\u00e9';
    const frame = createFrame();
    let parsed = 0;
    let rejected = 0;
    for (let k = 0; k < 20_000; k++) {
      const chars = [...seeds[rand(seeds.length)]!];
      for (let m = 1 + rand(3); m > 0; m--) {
        const at = rand(chars.length + 1);
        const op = rand(3);
        if (op === 0) chars.splice(at, 1);
        else if (op === 1) chars.splice(at, 0, alphabet[rand(alphabet.length)]!);
        else chars[at] = alphabet[rand(alphabet.length)]!;
      }
      const line = chars.join('');
      try {
        if (!parseCandumpLine(line, frame)) continue;
      } catch (err) {
        if (!(err instanceof CandumpParseError)) throw new Error(`${JSON.stringify(line)} threw ${String(err)}`);
        rejected++;
        continue;
      }
      parsed++;
      const copy = cloneFrame(frame);
      const again = createFrame();
      assert.equal(parseCandumpLine(formatCandumpLine(copy), again), true, line);
      // Timestamps with more than 6 decimals come back rounded to the microsecond candump writes.
      assert.ok(Math.abs(again.ts - copy.ts) <= 1e-6 + copy.ts * 1e-15, line);
      assert.deepEqual({ ...cloneFrame(again), ts: 0 }, { ...copy, ts: 0 }, line);
    }
    // Both outcomes occur, so the fuzz exercises the parser rather than one early exit.
    assert.ok(parsed > 1000 && rejected > 1000, `parsed ${parsed}, rejected ${rejected}`);
  });
});

describe('formatCandumpLine', () => {
  it('writes candump’s layout for a frame built in code', () => {
    const frame = createFrame();
    Object.assign(frame, { ts: 1635188455.02085, bus: 'can0', id: 0x0cf00400, extended: true, dlc: 3, data: new Uint8Array([0, 0xab, 0xff]) });
    assert.equal(formatCandumpLine(frame), '(1635188455.020850) can0 0CF00400#00ABFF');
    Object.assign(frame, { extended: false, id: 0x7e8, dlc: 0, data: new Uint8Array(0) });
    assert.equal(formatCandumpLine(frame), '(1635188455.020850) can0 7E8#');
  });

  it('rejects frames that cannot be written', () => {
    const frame = createFrame();
    frame.bus = 'can0';
    assert.throws(() => formatCandumpLine({ ...frame, data: new Uint8Array(9) }), RangeError);
    assert.throws(() => formatCandumpLine({ ...frame, fd: true, data: new Uint8Array(9) }), RangeError);
    assert.throws(() => formatCandumpLine({ ...frame, id: 0x800 }), RangeError);
    assert.throws(() => formatCandumpLine({ ...frame, extended: true, id: 0x20000000 }), RangeError);
    assert.throws(() => formatCandumpLine({ ...frame, ts: -1 }), RangeError);
    assert.throws(() => formatCandumpLine({ ...frame, remote: true, dlc: 9 }), RangeError);
  });
});
