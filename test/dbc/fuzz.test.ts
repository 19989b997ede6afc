/**
 * Mutation fuzzing of the DBC parser and codec with inputs built from the real files in testdata/dbc.
 *
 * Every case must end in a Database or a DbcParseError; a parsed case must compile, and decoding random payloads of
 * each of its messages must return values or throw a DecodeError. Any other exception fails the test, and so does a
 * hang: the cases run in a worker thread that a watchdog terminates when one case takes too long.
 *
 * Reproduce a failure with the seed and case index from its message:
 *   DBC_FUZZ_SEED=<seed> DBC_FUZZ_CASE=<index> node --test dist/test/dbc/fuzz.test.js
 * DBC_FUZZ_CASES sets the number of cases (default 10000), DBC_FUZZ_HANG_MS the watchdog's limit per case.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import {
  compileDatabase,
  DbcParseError,
  DecodeError,
  decodeDbcBytes,
  parseDbc,
  type CompiledDatabase,
  type Database,
  type MessageCodec,
} from '../../src/dbc/index.js';
import { seededRandom, type SeededRandom } from '../support/random.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, sharedDbcFiles } from '../support/shared.js';

const DEFAULT_SEED = 0x0dbcf022;
const DEFAULT_CASES = 10_000;
/** A single case taking longer than this is a hang (DBC_FUZZ_HANG_MS overrides it, to try the watchdog). */
const HANG_MS = Number(process.env.DBC_FUZZ_HANG_MS ?? 15_000);

interface Job {
  kind: 'dbc-fuzz';
  seed: number;
  first: number;
  count: number;
  files: string[];
  /** [0] = index of the case running now, [1] = cases finished. */
  progress: SharedArrayBuffer;
}

interface Failure {
  index: number;
  stage: 'parse' | 'compile' | 'decode' | 'decodeInto' | 'invariant';
  file: string;
  window: string;
  mutations: string[];
  error: string;
}

interface Outcome {
  parsed: number;
  rejected: number;
  decodedFrames: number;
  decodeErrors: number;
  messagesCompiled: number;
  failures: Failure[];
  /** Failures that are defects already reported (see `knownDefect`), by kind. */
  known: Record<string, { count: number; example: Failure }>;
  slowest: { index: number; ms: number };
}

// ---------------------------------------------------------------------------------------------------------------------
// seeded randomness

/** Each case gets its own generator, so one case can be rerun alone. */
function caseRandom(seed: number, index: number): SeededRandom {
  let h = Math.imul(seed ^ 0x85ebca6b, 0xc2b2ae35) ^ Math.imul(index + 1, 0x27d4eb2f);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  return seededRandom(h ^ (h >>> 13));
}

// ---------------------------------------------------------------------------------------------------------------------
// mutations, on the bytes of a window of lines

const HUGE_AND_ODD_NUMBERS = [
  '4294967295',
  '4294967296',
  '2147483648',
  '2147483647',
  '536870911',
  '-1',
  '-2147483649',
  '0',
  '1',
  '7',
  '8',
  '63',
  '64',
  '65',
  '511',
  '512',
  '9007199254740993',
  '18446744073709551616',
  '1e308',
  '1e309',
  '-1e309',
  '4.9e-324',
  '-0',
  '0.0',
  '1.',
  '.5',
  '3.14159',
  '-273.15',
  '1E+2',
  'NaN',
  'Infinity',
  '0x1F',
  'abc',
  '',
  '--1',
  '1e',
  '+7',
  '1.2.3',
];

const INJECTED = [
  '"',
  ';',
  ':',
  '|',
  '@',
  '\0',
  '\\',
  '\r',
  '\n',
  '\r\n',
  '//',
  '(',
  ')',
  '[',
  ']',
  ',',
  '-',
  '+',
  '\t',
  ' M ',
  ' m1 ',
  ' m0M ',
  'BO_ ',
  ' SG_ ',
  'CM_ ',
  '\\"',
];
const RAW_BYTES = [0x00, 0xff, 0xfe, 0x80, 0x9f, 0xc3, 0xe2, 0xef, 0xbb, 0xbf, 0xed, 0xa0];
const NAMES = ['__proto__', 'constructor', 'toString', 'prototype', '2017_5', 'BO_', 'SG_', 'VECTOR__INDEPENDENT_SIG_MSG', 'x'.repeat(300)];

function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('latin1');
}

function splitLines(bytes: Uint8Array): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x0a) {
      lines.push(Buffer.from(bytes.subarray(start, i + 1)));
      start = i + 1;
    }
  }
  if (start < bytes.length) lines.push(Buffer.from(bytes.subarray(start)));
  return lines;
}

function splice(bytes: Buffer, at: number, remove: number, insert: Uint8Array | string): Buffer {
  const middle = typeof insert === 'string' ? Buffer.from(insert, 'latin1') : Buffer.from(insert);
  return Buffer.concat([bytes.subarray(0, at), middle, bytes.subarray(at + remove)]);
}

/** Tokens of one kind in the text, as [start, end) byte ranges (latin1 keeps bytes and characters aligned). */
function tokens(bytes: Buffer, pattern: RegExp): [number, number][] {
  const found: [number, number][] = [];
  for (const m of latin1(bytes).matchAll(pattern)) found.push([m.index, m.index + m[0].length]);
  return found;
}

/** A statement that references what the window defines, so resolution code sees unusual but well-formed input. */
function referencingStatement(bytes: Buffer, r: SeededRandom): string {
  const text = latin1(bytes);
  const ids = [...text.matchAll(/^BO_ (\d+) /gm)].map((m) => m[1]!);
  const signals = [...text.matchAll(/^[ \t]+SG_ (\w+)/gm)].map((m) => m[1]!);
  const id = ids.length > 0 ? r.pick(ids) : String(r.int(0, 2048));
  const sig = signals.length > 0 ? r.pick(signals) : 'S';
  const other = signals.length > 0 ? r.pick(signals) : 'M';
  const low = r.int(0, 20);
  switch (r.int(0, 7)) {
    case 0:
      return `SG_MUL_VAL_ ${id} ${sig} ${other} ${low}-${low + r.int(0, 6)}, ${low + 10}-${low + 10 + r.int(0, 3)};\n`;
    case 1:
      return `SIG_VALTYPE_ ${id} ${sig} : ${r.int(0, 3)};\n`;
    case 2:
      return `VAL_ ${id} ${sig} ${r.int(-3, 3)} "a" ${r.pick(['1', '-1', '1.5', '1e9', '99999999999999999999'])} "b" ;\n`;
    case 3:
      return `BA_DEF_ SG_ "GenSigStartValue" FLOAT 0 1;\nBA_ "GenSigStartValue" SG_ ${id} ${sig} ${r.pick(['0', '1', '-1', '1.5', '1e300', '255'])};\n`;
    case 4:
      return `BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","StandardCAN_FD","ExtendedCAN_FD","J1939PG";\nBA_ "VFrameFormat" BO_ ${id} ${r.int(0, 6)};\n`;
    case 5:
      return `CM_ SG_ ${id} ${sig} "${r.pick(['x', '', 'a\nb', 'unterminated'])}";\n`;
    case 6:
      return `BO_TX_BU_ ${id} : ${sig},${other};\n`;
    default:
      return `BA_DEF_ BO_ "GenMsgCycleTime" INT 0 1;\nBA_ "GenMsgCycleTime" BO_ ${id} ${r.pick(['10', '-5', '0', '1e3'])};\n`;
  }
}

function mutate(input: Buffer, r: SeededRandom, log: string[]): Buffer {
  let bytes = input;
  const at = (): number => r.int(0, Math.max(0, bytes.length - 1));
  const kind = r.int(0, 13);
  switch (kind) {
    case 0: {
      if (bytes.length === 0) break;
      const i = at();
      const bit = r.int(0, 7);
      bytes = Buffer.from(bytes);
      bytes[i]! ^= 1 << bit;
      log.push(`flip bit ${bit} of byte ${i}`);
      break;
    }
    case 1: {
      const i = at();
      const inserted = Uint8Array.from({ length: r.int(1, 4) }, () => (r.chance(0.6) ? r.pick(RAW_BYTES) : r.int(0, 255)));
      bytes = splice(bytes, i, 0, inserted);
      log.push(`insert bytes ${Buffer.from(inserted).toString('hex')} at ${i}`);
      break;
    }
    case 2: {
      const i = at();
      const n = r.int(1, 16);
      bytes = splice(bytes, i, n, '');
      log.push(`delete ${n} bytes at ${i}`);
      break;
    }
    case 3: {
      const i = at();
      bytes = bytes.subarray(0, i);
      log.push(`truncate at ${i}`);
      break;
    }
    case 4:
    case 5:
    case 6: {
      const lines = splitLines(bytes);
      if (lines.length === 0) break;
      const i = r.int(0, lines.length - 1);
      if (kind === 4) {
        const to = r.chance(0.5) ? i + 1 : r.int(0, lines.length);
        lines.splice(to, 0, lines[i]!);
        log.push(`duplicate line ${i + 1} to ${to + 1}`);
      } else if (kind === 5) {
        lines.splice(i, 1);
        log.push(`delete line ${i + 1}`);
      } else {
        const j = r.int(0, lines.length - 1);
        [lines[i], lines[j]] = [lines[j]!, lines[i]!];
        log.push(`swap lines ${i + 1} and ${j + 1}`);
      }
      bytes = Buffer.concat(lines);
      break;
    }
    case 7:
    case 8: {
      const numbers = tokens(bytes, /[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?/g);
      if (numbers.length === 0) break;
      const [s, e] = r.pick(numbers);
      const replacement = r.chance(0.3) ? `${r.chance(0.3) ? '-' : ''}${'9'.repeat(r.int(17, 400))}` : r.pick(HUGE_AND_ODD_NUMBERS);
      log.push(
        `number '${latin1(bytes.subarray(s, e))}' at ${s} -> '${replacement.length > 30 ? `${replacement.slice(0, 12)}…(${replacement.length} chars)` : replacement}'`,
      );
      bytes = splice(bytes, s, e - s, replacement);
      break;
    }
    case 9:
    case 10: {
      // Next to a token boundary, where the grammar is most sensitive.
      const boundaries = tokens(bytes, /[ :|@(),[\]";]/g);
      const i = boundaries.length > 0 && r.chance(0.7) ? r.pick(boundaries)[r.int(0, 1)]! : at();
      const injected = r.pick(INJECTED);
      bytes = splice(bytes, i, r.chance(0.3) ? 1 : 0, injected);
      log.push(`inject ${JSON.stringify(injected)} at ${i}`);
      break;
    }
    case 11: {
      const words = tokens(bytes, /[A-Za-z_][A-Za-z0-9_]*/g);
      if (words.length === 0) break;
      const [s, e] = r.pick(words);
      const name = r.pick(NAMES);
      log.push(`word '${latin1(bytes.subarray(s, e))}' at ${s} -> '${name.slice(0, 30)}'`);
      bytes = splice(bytes, s, e - s, name);
      break;
    }
    case 12: {
      // A multiplexer indicator on a signal: simple, multiplexed, or nested.
      const signals = tokens(bytes, /^[ \t]+SG_ \w+ ?(?:[Mm]\d*M?)? ?:/gm);
      if (signals.length === 0) break;
      const [s, e] = r.pick(signals);
      const name = /SG_ (\w+)/.exec(latin1(bytes.subarray(s, e)))![1]!;
      const indicator = r.pick(['', 'M', `m${r.int(0, 4)}`, `m${r.int(0, 4)}M`]);
      log.push(`signal ${name} at ${s} gets indicator '${indicator}'`);
      bytes = splice(bytes, s, e - s, ` SG_ ${name} ${indicator}${indicator ? ' ' : ''}:`);
      break;
    }
    default: {
      const statement = referencingStatement(bytes, r);
      bytes = Buffer.concat([bytes, Buffer.from(statement, 'latin1')]);
      log.push(`append ${JSON.stringify(statement)}`);
    }
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------------------
// one case

interface Source {
  name: string;
  lines: Buffer[];
  /** Lines that start a message, good places for a window to begin. */
  messageStarts: number[];
}

function loadSources(files: string[]): Source[] {
  return files.map((file) => {
    const lines = splitLines(readFileSync(file));
    const messageStarts: number[] = [];
    lines.forEach((line, i) => {
      if (line[0] === 0x42 && latin1(line.subarray(0, 4)) === 'BO_ ') messageStarts.push(i);
    });
    return {
      name: path.basename(path.dirname(file)) === 'dbc' ? path.basename(file) : path.join(path.basename(path.dirname(file)), path.basename(file)),
      lines,
      messageStarts,
    };
  });
}

interface CaseInput {
  bytes: Buffer;
  file: string;
  window: string;
  mutations: string[];
  j1939: boolean;
  random: SeededRandom;
}

function buildCase(sources: Source[], seed: number, index: number): CaseInput {
  const r = caseRandom(seed, index);
  const source = r.pick(sources);
  const total = source.lines.length;
  let start = 0;
  let end = total;
  if (total > 50) {
    const size = r.int(50, 300);
    start = source.messageStarts.length > 0 && r.chance(0.7) ? r.pick(source.messageStarts) : r.int(0, total - 1);
    start = Math.min(start, Math.max(0, total - size));
    end = Math.min(total, start + size);
  }
  let bytes: Buffer = Buffer.concat(source.lines.slice(start, end));
  const mutations: string[] = [];
  const count = r.int(1, 4);
  for (let m = 0; m < count; m++) bytes = mutate(bytes, r, mutations);
  return { bytes, file: source.name, window: `lines ${start + 1}-${end}`, mutations, j1939: r.chance(0.3), random: r };
}

/** Failures that are defects already reported, so the fuzzer keeps finding new ones: kind, or undefined. */
function knownDefect(err: unknown, codec: MessageCodec | undefined, stage: Failure['stage']): string | undefined {
  if (!codec || !(err instanceof Error)) return undefined;
  const signals = codec.message.signals;
  if (
    err instanceof RangeError &&
    /cannot be converted to a BigInt because it is not an integer/.test(err.message) &&
    signals.some((s) => s.integerScaling && (!Number.isFinite(s.factor) || !Number.isFinite(s.offset)))
  ) {
    return 'decode: BigInt(Infinity) for an integer factor/offset too large for a double';
  }
  if (
    stage === 'decodeInto' &&
    err instanceof TypeError &&
    /Cannot convert a BigInt value to a number/.test(err.message) &&
    signals.some((s) => s.valueType === 'integer' && s.length <= 53 && s.integerScaling && !(s.factor === 1 && s.offset === 0))
  ) {
    return 'decodeInto: BigInt from exact integer scaling written into the Float64Array';
  }
  return undefined;
}

function checkPosition(where: { line: number; column: number }, lines: string[], what: string): string | undefined {
  if (!Number.isInteger(where.line) || where.line < 1 || where.line > lines.length) return `${what} line ${where.line} outside 1..${lines.length}`;
  const length = lines[where.line - 1]!.length;
  if (!Number.isInteger(where.column) || where.column < 1 || where.column > length + 1) {
    return `${what} column ${where.column} outside 1..${length + 1} of line ${where.line}`;
  }
  return undefined;
}

function runCase(sources: Source[], seed: number, index: number, outcome: Outcome): void {
  const input = buildCase(sources, seed, index);
  const r = input.random;
  const fileName = `fuzz-${index}.dbc`;
  const fail = (stage: Failure['stage'], err: unknown, codec?: MessageCodec): void => {
    const failure: Failure = {
      index,
      stage,
      file: input.file,
      window: input.window,
      mutations: input.mutations,
      error: err instanceof Error ? `${err.name}: ${err.message}\n${(err.stack ?? '').split('\n').slice(1, 5).join('\n')}` : String(err),
    };
    const known = knownDefect(err, codec, stage);
    if (known) {
      const entry = (outcome.known[known] ??= { count: 0, example: failure });
      entry.count++;
    } else outcome.failures.push(failure);
  };
  const lines = decodeDbcBytes(input.bytes).text.split('\n');

  let db: Database;
  try {
    db = parseDbc(input.bytes, { file: fileName });
  } catch (err) {
    if (!(err instanceof DbcParseError)) return fail('parse', err);
    outcome.rejected++;
    const bad =
      checkPosition(err, lines, 'DbcParseError') ??
      (err.file !== fileName || !err.message.startsWith(`${fileName}:${err.line}:${err.column}: `) || err.detail.length === 0
        ? `DbcParseError message '${err.message}' does not start with ${fileName}:line:column`
        : undefined);
    if (bad) fail('invariant', new Error(`${bad}: ${err.message}`));
    return;
  }
  outcome.parsed++;
  for (const w of db.warnings) {
    const bad = checkPosition(w, lines, 'warning');
    if (bad) return fail('invariant', new Error(`${bad}: ${w.message}`));
  }

  let compiled: CompiledDatabase;
  try {
    compiled = compileDatabase(db, { j1939: input.j1939 });
  } catch (err) {
    return fail('compile', err);
  }
  outcome.messagesCompiled += compiled.messages.length;
  const buffer = new Float64Array(compiled.slotCount);
  for (const codec of compiled.messages) {
    const length = codec.message.length;
    for (let k = 0; k < 2; k++) {
      const size = r.chance(0.85) ? length : r.chance(0.5) ? r.int(0, Math.max(0, length - 1)) : 64;
      const data = Uint8Array.from({ length: size }, () => (r.chance(0.2) ? r.pick([0, 0xff, 0x80, 0x7f]) : r.int(0, 255)));
      const options = r.pick([{}, { scaling: false }, { choices: true }] as const);
      let decodedOk: boolean;
      outcome.decodedFrames++;
      try {
        const values = codec.decode(data, options);
        if (typeof values !== 'object' || values === null) throw new Error(`decode returned ${String(values)}`);
        decodedOk = true;
      } catch (err) {
        if (!(err instanceof DecodeError)) return fail('decode', err, codec);
        outcome.decodeErrors++;
        decodedOk = false;
      }
      try {
        const written = codec.decodeInto(data, buffer);
        if (typeof written !== 'number' || !Number.isInteger(written)) throw new Error(`decodeInto returned ${String(written)}`);
        if (decodedOk !== written >= 0) {
          throw new Error(`decode ${decodedOk ? 'succeeded' : 'failed'} but decodeInto returned ${written} for ${Buffer.from(data).toString('hex')}`);
        }
      } catch (err) {
        return fail('decodeInto', err, codec);
      }
    }
  }
}

function runJob(job: Job): Outcome {
  const sources = loadSources(job.files);
  const progress = new Int32Array(job.progress);
  const outcome: Outcome = {
    parsed: 0,
    rejected: 0,
    decodedFrames: 0,
    decodeErrors: 0,
    messagesCompiled: 0,
    failures: [],
    known: {},
    slowest: { index: -1, ms: 0 },
  };
  for (let index = job.first; index < job.first + job.count; index++) {
    Atomics.store(progress, 0, index);
    const started = performance.now();
    runCase(sources, job.seed, index, outcome);
    const ms = performance.now() - started;
    if (ms > outcome.slowest.ms) outcome.slowest = { index, ms };
    Atomics.add(progress, 1, 1);
  }
  return outcome;
}

// ---------------------------------------------------------------------------------------------------------------------
// worker side: run the job and report

if (!isMainThread && (workerData as Job | undefined)?.kind === 'dbc-fuzz') {
  parentPort!.postMessage(runJob(workerData as Job));
}

// ---------------------------------------------------------------------------------------------------------------------
// test side

/** Runs the job in a worker under a watchdog; rejects with the case index when a case hangs or the worker dies. */
function runInWorker(job: Job): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: job, resourceLimits: { maxOldGenerationSizeMb: 1024 } });
    const progress = new Int32Array(job.progress);
    let lastDone = -1;
    let lastChange = Date.now();
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      fn();
    };
    const watchdog = setInterval(() => {
      const done = Atomics.load(progress, 1);
      if (done !== lastDone) {
        lastDone = done;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > HANG_MS) {
        const index = Atomics.load(progress, 0);
        finish(() => {
          void worker.terminate();
          reject(
            new Error(`seed ${job.seed} case ${index} did not finish within ${HANG_MS} ms (hang); rerun with DBC_FUZZ_SEED=${job.seed} DBC_FUZZ_CASE=${index}`),
          );
        });
      }
    }, 250);
    worker.once('message', (outcome: Outcome) => finish(() => resolve(outcome)));
    worker.once('error', (err) => {
      const index = Atomics.load(progress, 0);
      finish(() =>
        reject(new Error(`seed ${job.seed} case ${index}: the worker died: ${String(err)}; rerun with DBC_FUZZ_SEED=${job.seed} DBC_FUZZ_CASE=${index}`)),
      );
    });
    worker.once('exit', (code) => finish(() => reject(new Error(`fuzz worker exited with code ${code} before reporting`))));
  });
}

function describeFailure(seed: number, f: Failure): string {
  return (
    `seed ${seed} case ${f.index} [${f.stage}] ${f.file} ${f.window}; mutations: ${f.mutations.join(' | ')}\n` +
    `  ${f.error.replace(/\n/g, '\n  ')}\n` +
    `  rerun: DBC_FUZZ_SEED=${seed} DBC_FUZZ_CASE=${f.index} node --test dist/test/dbc/fuzz.test.js`
  );
}

if (isMainThread) {
  describe('DBC fuzzing with mutated real files', { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA }, () => {
    const seed = Number(process.env.DBC_FUZZ_SEED ?? DEFAULT_SEED) >>> 0;
    const only = process.env.DBC_FUZZ_CASE;
    const first = only !== undefined ? Number(only) : 0;
    const count = only !== undefined ? 1 : Number(process.env.DBC_FUZZ_CASES ?? DEFAULT_CASES);
    let outcome: Outcome | undefined;

    it(
      `${count} cases (seed ${seed}) end in a Database or a DbcParseError; parsed ones compile and decode or throw DecodeError`,
      { timeout: 600_000 },
      async (t) => {
        const files = sharedDbcFiles();
        assert.ok(files.length >= 20, `only ${files.length} DBC files`);
        t.diagnostic(`seed ${seed}, cases ${first}..${first + count - 1}, ${files.length} source files`);
        const started = Date.now();
        outcome = await runInWorker({ kind: 'dbc-fuzz', seed, first, count, files, progress: new SharedArrayBuffer(8) });
        t.diagnostic(
          `parsed ${outcome.parsed}, rejected with DbcParseError ${outcome.rejected}; ` +
            `${outcome.messagesCompiled} messages compiled, ${outcome.decodedFrames} frames decoded (${outcome.decodeErrors} DecodeError); ` +
            `slowest case ${outcome.slowest.index} took ${outcome.slowest.ms.toFixed(1)} ms; total ${((Date.now() - started) / 1000).toFixed(1)} s`,
        );
        for (const [kind, { count: n, example }] of Object.entries(outcome.known)) {
          t.diagnostic(`unexpected exception ${n} times: ${kind}; e.g. seed ${seed} case ${example.index}`);
        }
        assert.equal(outcome.parsed + outcome.rejected, count, 'every case ends in a Database or a DbcParseError');
        assert.ok(
          outcome.failures.length === 0,
          `${outcome.failures.length} failing cases; the first ones:\n${outcome.failures
            .slice(0, 5)
            .map((f) => describeFailure(seed, f))
            .join('\n')}`,
        );
        if (only === undefined) {
          // The mutations must leave enough intact inputs to reach the codec, and break enough to reach the errors.
          assert.ok(outcome.parsed > count / 10, `only ${outcome.parsed} of ${count} cases parsed`);
          assert.ok(outcome.rejected > count / 10, `only ${outcome.rejected} of ${count} cases were rejected`);
          assert.ok(outcome.decodedFrames > count, `only ${outcome.decodedFrames} frames decoded`);
        }
      },
    );

    it('no decode or decodeInto raises anything but DecodeError', () => {
      assert.ok(outcome, 'the fuzz run did not complete');
      const hits = Object.entries(outcome.known).map(([kind, { count: n, example }]) => `${n} x ${kind}\n${describeFailure(seed, example)}`);
      assert.deepEqual(hits, []);
    });
  });
}
