/**
 * CandumpReplaySource: complete and ordered delivery from files and streams, real-time pacing (loose timing bounds
 * only, never a tight one), abort, and malformed lines reported without stopping the replay.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { CandumpParseError, formatCandumpLine, parseCandumpText } from '../../src/can/candump.js';
import { cloneFrame, type CanFrame } from '../../src/can/frame.js';
import { SOURCE_READ_INTERVAL_MS } from '../../src/can/frame.js';
import { CandumpReplaySource } from '../../src/can/replay.js';
import { hasSharedTestdata, sharedTestdata } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const SKIP = '../shared/testdata not found';
const TRUCK = 'css_j1939_truck_11111111_00000012_00000001.candump.log';

const tmp = makeTempDir('candump-replay-');
after(() => rmSync(tmp, { recursive: true, force: true }));

function writeLog(name: string, text: string): string {
  const file = path.join(tmp, name);
  writeFileSync(file, text);
  return file;
}

/** `count` frames `stepMs` apart in log time, on can0, ID 0x100 + index, payload = index. */
function syntheticLog(count: number, stepMs: number, t0 = 1700000000): string[] {
  const lines: string[] = [];
  for (let k = 0; k < count; k++) {
    const ts = (Math.round(t0 * 1e6) + Math.round(k * stepMs * 1000)) / 1e6;
    lines.push(`(${ts.toFixed(6)}) can0 ${(0x100 + (k % 0x600)).toString(16).toUpperCase()}#${(k & 0xff).toString(16).padStart(2, '0').toUpperCase()}`);
  }
  return lines;
}

async function collect(source: CandumpReplaySource, signal?: AbortSignal): Promise<string[]> {
  const out: string[] = [];
  await source.run((f) => out.push(formatCandumpLine(f)), signal);
  return out;
}

describe('CandumpReplaySource, as fast as possible', () => {
  it('delivers every frame of the real truck log, in file order', async (t) => {
    if (!hasSharedTestdata()) return t.skip(SKIP);
    const file = sharedTestdata('logs', TRUCK);
    const expected = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    const errors: CandumpParseError[] = [];
    const source = new CandumpReplaySource(file, { onError: (e) => errors.push(e) });
    assert.equal(source.name, `replay:${TRUCK}`);
    const got = await collect(source);
    assert.equal(got.length, 57_849);
    assert.equal(source.frames, 57_849);
    assert.deepEqual(errors, []);
    assert.equal(source.errors, 0);
    // Element by element, so a failure names the first differing line instead of dumping two 57k arrays.
    for (let k = 0; k < got.length; k++) if (got[k] !== expected[k]) assert.equal(got[k], expected[k], `frame ${k + 1}`);
    assert.equal(got.filter((l) => l.includes(' can0 ')).length, 45_571);
  });

  it('reads a file with comments, blank lines, CRLF and no final newline', async () => {
    const file = writeLog('mixed.log', '# recorded on the bench\r\n(1.000000) can0 123#11\r\n\r\n(2.500000) can1 00000456#R3\r\n(3.000000) can0 7FF##1AABB');
    const source = new CandumpReplaySource(file);
    assert.deepEqual(await collect(source), ['(0000000001.000000) can0 123#11', '(0000000002.500000) can1 00000456#R3', '(0000000003.000000) can0 7FF##1AABB']);
    // A file can be replayed again.
    assert.equal((await collect(source)).length, 3);
  });

  it('reads a stream whose chunks split lines and multi-byte characters', async () => {
    const text = Buffer.from('(1.000000) bús0 123#01\n(2.000000) bús0 124#0202\n(3.000000) can1 125#030303\n', 'utf8');
    const chunks: Buffer[] = [];
    for (let at = 0; at < text.length; at += 7) chunks.push(text.subarray(at, at + 7)); // 7 splits the 2-byte "ú"
    const source = new CandumpReplaySource(Readable.from(chunks));
    assert.equal(source.name, 'replay:stream');
    assert.deepEqual(await collect(source), ['(0000000001.000000) bús0 123#01', '(0000000002.000000) bús0 124#0202', '(0000000003.000000) can1 125#030303']);
    await assert.rejects(
      source.run(() => {}),
      /only be replayed once/,
    );
  });

  it('renames buses, calling the mapper once per distinct name', async () => {
    const calls: string[] = [];
    const lines = ['(1.000000) can0 123#01', '(2.000000) can1 123#02', '(3.000000) can0 123#03', '(4.000000) can1 123#04'];
    const source = new CandumpReplaySource(Readable.from([lines.join('\n')]), {
      busName: (bus) => {
        calls.push(bus);
        return bus === 'can0' ? 'powertrain' : `x-${bus}`;
      },
    });
    const buses: string[] = [];
    await source.run((f) => buses.push(f.bus));
    assert.deepEqual(buses, ['powertrain', 'x-can1', 'powertrain', 'x-can1']);
    assert.deepEqual(calls, ['can0', 'can1']);
  });

  it('reports a malformed line mid-stream to onError and replays the rest', async () => {
    const lines = syntheticLog(10, 1);
    lines.splice(4, 0, '(1700000000.004000) can0 123#ABC'); // line 5: odd digit count
    lines.splice(8, 0, 'garbage'); // line 9
    const errors: CandumpParseError[] = [];
    const frames: CanFrame[] = [];
    const source = new CandumpReplaySource(writeLog('bad.log', lines.join('\n') + '\n'), { onError: (e) => errors.push(e) });
    await source.run((f) => frames.push(cloneFrame(f)));
    assert.equal(frames.length, 10);
    assert.deepEqual(
      frames.map((f) => f.data[0]),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.deepEqual(
      errors.map((e) => [e.lineNo, e.line]),
      [
        [5, '(1700000000.004000) can0 123#ABC'],
        [9, 'garbage'],
      ],
    );
    assert.match(errors[0]!.message, /^line 5: data has an odd number of hex digits \(3\)/);
    assert.equal(source.errors, 2);
    assert.equal(source.frames, 10);
  });

  it('skips an over-long garbage line once and goes on', async () => {
    const errors: CandumpParseError[] = [];
    const text = '(1.000000) can0 123#01\n' + 'Z'.repeat(200_000) + '\n(2.000000) can0 123#02\n';
    const chunks: string[] = [];
    for (let at = 0; at < text.length; at += 10_000) chunks.push(text.slice(at, at + 10_000));
    const source = new CandumpReplaySource(Readable.from(chunks), { onError: (e) => errors.push(e) });
    assert.deepEqual(await collect(source), ['(0000000001.000000) can0 123#01', '(0000000002.000000) can0 123#02']);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.lineNo, 2);
    assert.match(errors[0]!.message, /line longer than/);
  });

  it('stops promptly when aborted during an endless in-memory stream', async () => {
    function* endless(): Generator<string> {
      for (let k = 0; ; k++) yield `(${1 + k}.000000) can0 123#01\n`;
    }
    const source = new CandumpReplaySource(Readable.from(endless()));
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const started = performance.now();
    let frames = 0;
    await source.run(() => frames++, controller.signal);
    assert.ok(performance.now() - started < 2000, 'abort was not honoured');
    assert.ok(frames > 0);
    assert.equal(source.frames, frames);
  });

  it('stops when aborted while waiting for input, leaving the caller’s stream open', async () => {
    const input = new PassThrough();
    input.write('(1.000000) can0 123#01\n');
    const source = new CandumpReplaySource(input);
    const controller = new AbortController();
    const frames: string[] = [];
    setTimeout(() => controller.abort(), 30);
    await source.run((f) => frames.push(formatCandumpLine(f)), controller.signal);
    assert.deepEqual(frames, ['(0000000001.000000) can0 123#01']);
    assert.equal(input.destroyed, false);
    input.destroy();
  });

  it('resolves at once with an already aborted signal', async () => {
    let frames = 0;
    await new CandumpReplaySource(writeLog('one.log', '(1.000000) can0 123#01\n')).run(() => frames++, AbortSignal.abort());
    assert.equal(frames, 0);
  });

  it('rejects for a missing file and for a bad speed', async () => {
    await assert.rejects(
      new CandumpReplaySource(path.join(tmp, 'nope.log')).run(() => {}),
      { code: 'ENOENT' },
    );
    for (const speed of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => new CandumpReplaySource('x.log', { speed }), RangeError);
    }
  });
});

describe('CandumpReplaySource, real time', () => {
  it('paces by the log timestamps: 5 s of log at speed 100 takes about 50 ms', async () => {
    const lines = syntheticLog(101, 50); // 0 … 5 s
    const source = new CandumpReplaySource(writeLog('paced.log', lines.join('\n') + '\n'), { realtime: true, speed: 100 });
    const at: number[] = [];
    const ids: number[] = [];
    const started = performance.now();
    await source.run((f) => {
      at.push(performance.now() - started);
      ids.push(f.id);
    });
    const elapsed = performance.now() - started;
    assert.equal(at.length, 101);
    assert.deepEqual(
      ids,
      lines.map((_, k) => 0x100 + k),
    );
    assert.ok(elapsed >= 40, `finished after ${elapsed.toFixed(1)} ms, expected about 50`);
    assert.ok(elapsed < 3000, `took ${elapsed.toFixed(1)} ms, expected about 50`);
    // No frame early: frame k is due at k * 0.5 ms (80% bound, and timers have millisecond granularity).
    for (let k = 0; k < at.length; k++) assert.ok(at[k]! >= 0.8 * k * 0.5 - 2, `frame ${k} at ${at[k]!.toFixed(2)} ms`);
  });

  it('batches due frames instead of one timer per frame', async () => {
    // 2000 frames 0.1 ms apart = 200 ms at speed 1; one timer per frame would take 2000 × ≥1 ms.
    const source = new CandumpReplaySource(writeLog('dense.log', syntheticLog(2000, 0.1).join('\n')), { realtime: true });
    const started = performance.now();
    let frames = 0;
    await source.run(() => frames++);
    const elapsed = performance.now() - started;
    assert.equal(frames, 2000);
    assert.ok(elapsed >= 160, `finished after ${elapsed.toFixed(1)} ms, expected about 200`);
    assert.ok(elapsed < 1500, `took ${elapsed.toFixed(1)} ms: frames are not batched`);
  });

  it('[19.realrate] at 8,000 frames/s one wake-up delivers every frame due meanwhile (about one per SOURCE_READ_INTERVAL_MS), none early', async () => {
    // 4,000 frames 0.125 ms apart: half a second of a saturated bus.
    const source = new CandumpReplaySource(writeLog('saturated.log', syntheticLog(4000, 0.125).join('\n')), { realtime: true });
    const at: number[] = [];
    const started = performance.now();
    await source.run(() => at.push(performance.now() - started));
    assert.equal(at.length, 4000);
    // A wake-up is a run of deliveries without a pause between them. Half a second of bus is about 100 wake-ups of
    // SOURCE_READ_INTERVAL_MS (a loaded machine's late timers make fewer); a timer per frame that is early makes ~500.
    let wakeUps = 1;
    for (let k = 1; k < at.length; k++) if (at[k]! - at[k - 1]! > 0.5) wakeUps++;
    assert.ok(wakeUps <= (4000 * 0.125 * 1.2) / SOURCE_READ_INTERVAL_MS + 10, `${wakeUps} wake-ups in ${at.at(-1)!.toFixed(0)} ms`);
    // Never early: frame k is due k × 0.125 ms after the first (timers have millisecond granularity).
    for (let k = 0; k < at.length; k += 97)
      assert.ok(at[k]! - at[0]! >= k * 0.125 - 1, `frame ${k} at ${(at[k]! - at[0]!).toFixed(2)} ms, due at ${k * 0.125} ms`);
  });

  it('stops promptly when aborted during a long wait', async () => {
    const lines = ['(100.000000) can0 123#01', '(200.000000) can0 123#02', '(300.000000) can0 123#03'];
    const source = new CandumpReplaySource(writeLog('slow.log', lines.join('\n')), { realtime: true });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const started = performance.now();
    const got = await collect(source, controller.signal);
    const elapsed = performance.now() - started;
    assert.deepEqual(got, ['(0000000100.000000) can0 123#01']);
    assert.ok(elapsed >= 40 && elapsed < 1000, `returned after ${elapsed.toFixed(1)} ms`);
  });
});

describe('parseCandumpText', () => {
  it('counts frames and errors, reporting each error with its line number', () => {
    const seen: string[] = [];
    const errors: [number | undefined, string][] = [];
    const result = parseCandumpText(
      '# header\n(1.000000) can0 123#01\n(2.000000) can0 123#0\n\n(3.000000) can0 12345678#R\nnot a frame',
      (f) => seen.push(formatCandumpLine(f)),
      (e) => errors.push([e.lineNo, e.reason]),
    );
    assert.deepEqual(result, { frames: 2, errors: 2 });
    assert.deepEqual(seen, ['(0000000001.000000) can0 123#01', '(0000000003.000000) can0 12345678#R']);
    assert.deepEqual(errors, [
      [3, 'data has an odd number of hex digits (1)'],
      [6, 'expected "(" starting the timestamp, e.g. "(1635188455.020850)"'],
    ]);
  });
});
