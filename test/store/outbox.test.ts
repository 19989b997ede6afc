/**
 * The SQLite outbox on real database files: send order, acknowledgement, sequence numbers that never repeat, the byte
 * and age bounds, a corrupt file moved aside, a full disk, and kill -9 at random moments.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { MessageKind, Priority } from '../../src/collect/sample.js';
import { ROW_OVERHEAD_BYTES, SqliteOutbox, type OutboxError, type OutboxItem, type OutboxOptions } from '../../src/store/outbox.js';
import { makeTempDir } from '../support/temp.js';
import { createPrng } from '../../src/sim/drive-cycle.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const NONE: ReadonlySet<number> = new Set();

/** A payload of `size` bytes that starts with its sequence number, so a stored message can be matched to its number. */
function payloadFor(seq: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  bytes.set(new TextEncoder().encode(`seq=${seq};`).subarray(0, size));
  return bytes;
}

function seqInPayload(payload: Uint8Array): number {
  const match = /^seq=(\d+);/.exec(new TextDecoder().decode(payload.subarray(0, 32)));
  assert.ok(match, 'payload does not start with its sequence number');
  return Number(match[1]);
}

function item(priority: Priority, size = 100, createdAt = Date.now(), kind: MessageKind = 'telemetry'): OutboxItem {
  return { kind, priority, createdAt, encode: (seq) => payloadFor(seq, size) };
}

interface Opened {
  outbox: SqliteOutbox;
  problems: OutboxError[];
}

function open(file: string, options: Partial<OutboxOptions> = {}): Opened {
  const problems: OutboxError[] = [];
  const outbox = SqliteOutbox.open({
    path: file,
    maxBytes: 10_000_000,
    maxAgeMs: 24 * 3600 * 1000,
    onProblem: (err) => problems.push(err),
    ...options,
  });
  return { outbox, problems };
}

function dbFile(prefix: string): string {
  return path.join(makeTempDir(prefix), 'outbox.db');
}

/** Every sequence number stored in the file, read with a separate connection. */
function storedSeqs(file: string): number[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[], { seq: number }>('SELECT seq FROM message ORDER BY seq').all().map((row) => row.seq);
  } finally {
    db.close();
  }
}

function peekAll(outbox: SqliteOutbox, skip: ReadonlySet<number> = NONE): number[] {
  return outbox.peek(1_000_000, Number.MAX_SAFE_INTEGER, skip).map((record) => record.seq);
}

/** Whether this process may mount a tmpfs (root on Linux, outside a restricted container): probed once. */
function canMountTmpfs(): boolean {
  const probe = makeTempDir('outbox-mount-probe-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'ignore' });
  } catch {
    return false;
  }
  execFileSync('umount', [probe], { stdio: 'ignore' });
  return true;
}

describe('SQLite outbox', () => {
  it('peeks by priority (highest first), then sequence number, leaving out the skip set, within maxCount and maxBytes', () => {
    const { outbox } = open(dbFile('outbox-order-'));
    const priorities: Priority[] = [1, 7, 1, 3, 7, 0, 3];
    const base = Date.now();
    const { seqs, rejected } = outbox.append(priorities.map((priority, i) => item(priority, 100 + i, base + i, i % 2 ? 'events' : 'telemetry')));
    assert.equal(rejected, 0);
    assert.equal(seqs.length, 7);
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[0]! + i, 'consecutive within a batch');
    const s = (i: number): number => seqs[i]!;

    const all = outbox.peek(100, 1_000_000, NONE);
    assert.deepEqual(all.map((r) => r.seq), [s(1), s(4), s(3), s(6), s(0), s(2), s(5)]);
    const first = all[0]!;
    assert.deepEqual(
      { kind: first.kind, priority: first.priority, createdAt: first.createdAt, size: first.payload.byteLength },
      { kind: 'events', priority: 7, createdAt: base + 1, size: 101 },
    );
    for (const record of all) assert.equal(seqInPayload(record.payload), record.seq, 'encode was given the stored number');

    assert.deepEqual(peekAll(outbox, new Set([s(1), s(3)])), [s(4), s(6), s(0), s(2), s(5)]);
    assert.deepEqual(outbox.peek(2, 1_000_000, NONE).map((r) => r.seq), [s(1), s(4)]);
    // 101 + 104 bytes fit in 210, the third (103) does not.
    assert.deepEqual(outbox.peek(100, 210, NONE).map((r) => r.seq), [s(1), s(4)]);
    // Always one message when any waits, even one bigger than maxBytes.
    assert.deepEqual(outbox.peek(100, 10, NONE).map((r) => r.seq), [s(1)]);
    assert.deepEqual(outbox.peek(0, 1_000_000, NONE), []);
    assert.equal(outbox.pending, 7);
    assert.deepEqual(outbox.peek(10, 1_000_000, new Set(seqs)), []);
    outbox.close();
  });

  it('calls onAppend listeners after a stored batch, until unsubscribed', () => {
    const { outbox } = open(dbFile('outbox-listen-'));
    let calls = 0;
    const unsubscribe = outbox.onAppend(() => calls++);
    outbox.append([item(1), item(2)]);
    assert.equal(calls, 1);
    outbox.append([]);
    assert.equal(calls, 1);
    unsubscribe();
    outbox.append([item(1)]);
    assert.equal(calls, 1);
    outbox.close();
  });

  it('acknowledge hides the message at once, deletes it from the file, never hands it out again; unknown numbers are ignored', () => {
    const file = dbFile('outbox-ack-');
    let { outbox } = open(file, { ackFlushMs: 60_000 });
    const { seqs } = outbox.append([item(2), item(2), item(5), item(0)]);
    const [a, b, c, d] = seqs as [number, number, number, number];

    outbox.acknowledge(c);
    outbox.acknowledge(c);
    outbox.acknowledge(999_999);
    assert.equal(outbox.pending, 3);
    assert.deepEqual(peekAll(outbox), [a, b, d], 'not handed out again even before the deletion is flushed');
    assert.equal(outbox.stats().acknowledged, 1);
    assert.ok(storedSeqs(file).includes(c), 'deletion is batched, not written per acknowledgement');

    // The next append carries the pending deletion in its own transaction.
    const [e] = outbox.append([item(1)]).seqs as [number];
    assert.ok(!storedSeqs(file).includes(c));
    assert.deepEqual(peekAll(outbox), [a, b, e, d]);

    outbox.acknowledge(a);
    outbox.flushAcknowledgements();
    assert.ok(!storedSeqs(file).includes(a));
    outbox.acknowledge(b);
    outbox.close(); // close flushes
    ({ outbox } = open(file));
    assert.deepEqual(peekAll(outbox), [e, d]);
    assert.equal(outbox.pending, 2);
    outbox.acknowledge(a); // already gone: ignored
    assert.equal(outbox.pending, 2);
    outbox.close();
  });

  it('flushes acknowledgements on a timer', async () => {
    const file = dbFile('outbox-ack-timer-');
    const { outbox } = open(file, { ackFlushMs: 20 });
    const [a] = outbox.append([item(1), item(1)]).seqs as [number];
    outbox.acknowledge(a);
    await new Promise((resolve) => setTimeout(resolve, 80));
    assert.ok(!storedSeqs(file).includes(a));
    assert.equal(outbox.stats().messages, 1);
    outbox.close();
  });

  it('sequence numbers persist across close and reopen and never repeat, even after everything was deleted', () => {
    const file = dbFile('outbox-seq-');
    const seen: number[] = [];
    for (let round = 0; round < 3; round++) {
      const { outbox } = open(file);
      const { seqs } = outbox.append([item(3), item(1), item(4)]);
      seen.push(...seqs);
      if (round === 1) {
        for (const seq of peekAll(outbox)) outbox.acknowledge(seq);
      }
      outbox.close();
    }
    // Everything deleted, then reopened: the counter lives in the meta table, not in max(seq).
    const { outbox } = open(file);
    for (const seq of peekAll(outbox)) outbox.acknowledge(seq);
    outbox.close();
    const again = open(file);
    seen.push(...again.outbox.append([item(1)]).seqs);
    again.outbox.close();
    assert.equal(new Set(seen).size, seen.length, 'no sequence number repeats');
    assert.deepEqual([...seen].sort((x, y) => x - y), seen, 'always increasing');
  });

  it('a new database starts above a wall-clock floor (ms × 1000), as well as above the sidecar reservation', () => {
    const before = Date.now() * 1000;
    const file = dbFile('outbox-floor-');
    const { outbox } = open(file);
    const [first] = outbox.append([item(1)]).seqs as [number];
    assert.ok(first >= before && Number.isSafeInteger(first));
    outbox.close();
    assert.ok(Number(readFileSync(`${file}.seq`, 'utf8')) > first, 'the sidecar holds a number above every one handed out');
  });

  it('evicts the lowest priority first, oldest first within it, and counts evictions by priority', () => {
    const cost = 100 + ROW_OVERHEAD_BYTES;
    const { outbox } = open(dbFile('outbox-evict-'), { maxBytes: cost * 10 });
    const priorities: Priority[] = [3, 1, 1, 5, 0, 0, 3, 1, 0, 5];
    const first = outbox.append(priorities.map((p) => item(p))).seqs;
    const s = (i: number): number => first[i]!;
    assert.equal(outbox.stats().evicted.count, 0);
    assert.equal(outbox.stats().bytes, cost * 10);

    // One over: the oldest priority-0 message goes.
    const [n1] = outbox.append([item(3)]).seqs as [number];
    assert.deepEqual(new Set(peekAll(outbox)), new Set([...first.filter((seq) => seq !== s(4)), n1]));

    // Three over: the two remaining priority-0 messages, then the oldest priority-1 one.
    const three = outbox.append([item(2), item(2), item(2)]).seqs;
    assert.deepEqual(peekAll(outbox), [s(3), s(9), s(0), s(6), n1, ...three, s(2), s(7)]);

    let stats = outbox.stats();
    assert.equal(stats.evicted.count, 4);
    assert.equal(stats.evicted.bytes, 4 * cost);
    assert.deepEqual(stats.evicted.byPriority[0], { count: 3, bytes: 3 * cost });
    assert.deepEqual(stats.evicted.byPriority[1], { count: 1, bytes: cost });
    assert.deepEqual(stats.evicted.byPriority[2], { count: 0, bytes: 0 });
    assert.equal(stats.messages, 10);
    assert.equal(stats.bytes, 10 * cost);

    // New messages of a lower priority than everything stored are themselves the lowest, oldest: they go at once.
    const low = outbox.append([item(0), item(0)]);
    assert.equal(low.seqs.length, 2);
    assert.ok(!peekAll(outbox).some((seq) => low.seqs.includes(seq)));
    stats = outbox.stats();
    assert.deepEqual(stats.evicted.byPriority[0], { count: 5, bytes: 5 * cost });
    assert.equal(stats.appended, 16);
    outbox.close();
  });

  it('rejects (and counts) a message bigger than maxBytes by itself; the rest of its batch is stored', () => {
    const { outbox } = open(dbFile('outbox-oversize-'), { maxBytes: 1000 });
    const result = outbox.append([item(1, 200), item(7, 1000), item(1, 300)]);
    assert.equal(result.rejected, 1);
    assert.equal(result.seqs.length, 2);
    assert.equal(outbox.pending, 2);
    const stats = outbox.stats();
    assert.equal(stats.rejected, 1);
    assert.equal(stats.rejectedOversize, 1);
    assert.equal(stats.evicted.count, 0);
    outbox.close();
  });

  it('deletes messages older than maxAgeMs at append and counts them as expired', () => {
    let now = 1_000_000;
    const file = dbFile('outbox-age-');
    const { outbox } = open(file, { maxAgeMs: 10_000, clock: () => now });
    const old = outbox.append([item(7, 50, now - 500), item(1, 50, now)]).seqs;
    now += 9_000;
    const fresh = outbox.append([item(1, 50, now)]).seqs;
    assert.equal(outbox.stats().expired, 0);
    assert.equal(outbox.stats().oldestCreatedAt, 1_000_000 - 500);
    now += 2_000; // the first two messages are now 11.5 s and 11 s old, the third 2 s
    const late = outbox.append([item(2, 50, now), item(2, 50, now - 60_000)]).seqs;
    assert.deepEqual(peekAll(outbox), [late[0], ...fresh]);
    const stats = outbox.stats();
    assert.equal(stats.expired, 3, 'two aged out, one was already too old when appended');
    assert.equal(stats.messages, 2);
    assert.equal(stats.oldestCreatedAt, 1_009_000);
    assert.ok(!storedSeqs(file).includes(old[0]!));
    outbox.close();
  });

  for (const damage of ['garbage written over it', 'truncated to half', 'truncated to 100 bytes'] as const) {
    it(`moves a corrupt database (${damage}) aside with a clear error, starts a fresh one, and keeps numbering above the old`, () => {
      const file = dbFile('outbox-corrupt-');
      let { outbox } = open(file);
      const old: number[] = [];
      for (let i = 0; i < 20; i++) old.push(...outbox.append(Array.from({ length: 10 }, () => item(1, 400))).seqs);
      outbox.close();
      const size = statSync(file).size;
      if (damage === 'garbage written over it') writeFileSync(file, Buffer.alloc(size, 0x5a));
      else truncateSync(file, damage === 'truncated to half' ? Math.floor(size / 2) : 100);

      let problems: OutboxError[];
      ({ outbox, problems } = open(file));
      assert.equal(problems.length, 1);
      const problem = problems[0]!;
      assert.equal(problem.reason, 'corrupt-file-moved-aside');
      assert.match(problem.message, /is corrupt or not a database \(SQLITE_(NOTADB|CORRUPT)[^)]*\); moved it aside as .*outbox\.db\.corrupt-/);
      const stats = outbox.stats();
      assert.equal(stats.corruptFilesMovedAside, 1);
      assert.equal(stats.lastProblem?.message, problem.message);
      assert.equal(stats.messages, 0);
      const aside = readdirSync(path.dirname(file)).filter((name) => name.startsWith('outbox.db.corrupt-') && !/-(wal|shm)$/.test(name));
      assert.equal(aside.length, 1);
      assert.equal(statSync(path.join(path.dirname(file), aside[0]!)).size, damage === 'truncated to 100 bytes' ? 100 : damage === 'truncated to half' ? Math.floor(size / 2) : size);

      const fresh = outbox.append([item(1), item(2)]).seqs;
      assert.equal(fresh.length, 2);
      assert.ok(fresh[0]! > Math.max(...old), 'numbering continues above the moved-aside file');
      outbox.close();
      ({ outbox, problems } = open(file));
      assert.equal(problems.length, 0, 'the fresh file is healthy');
      assert.deepEqual(peekAll(outbox), [fresh[1], fresh[0]]);
      outbox.close();
    });
  }

  it('without the sidecar either, a fresh database after corruption still numbers above the old (clock floor)', () => {
    const file = dbFile('outbox-corrupt-nosidecar-');
    let { outbox } = open(file);
    const old = outbox.append([item(1), item(1)]).seqs;
    outbox.close();
    writeFileSync(file, Buffer.alloc(statSync(file).size, 0xa5));
    unlinkSync(`${file}.seq`);
    ({ outbox } = open(file));
    const [next] = outbox.append([item(1)]).seqs as [number];
    assert.ok(next > Math.max(...old));
    outbox.close();
  });

  const mountable = canMountTmpfs();
  it(
    mountable
      ? 'full disk (a real 512 KiB tmpfs): appends are rejected and counted, reading and acknowledging go on, appends resume once space is freed'
      : 'full disk (PRAGMA max_page_count: mounting a tmpfs is not permitted here): appends are rejected and counted, reading and acknowledging go on, appends resume once space is freed',
    () => {
      const dir = makeTempDir('outbox-full-');
      if (mountable) execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', dir]);
      const opened: SqliteOutbox[] = [];
      const openOnDisk = (options: Partial<OutboxOptions>): Opened => {
        const result = open(path.join(dir, 'outbox.db'), options);
        opened.push(result.outbox);
        return result;
      };
      try {
        const filler = path.join(dir, 'filler');
        if (mountable) writeFileSync(filler, Buffer.alloc(300 * 1024));
        let { outbox, problems } = openOnDisk(mountable ? { ackFlushMs: 60_000 } : { ackFlushMs: 60_000, maxPageCount: 48 });
        const stored: number[] = [];
        let refused: { seqs: number[]; rejected: number } | undefined;
        for (let i = 0; i < 500 && !refused; i++) {
          const result = outbox.append(Array.from({ length: 10 }, () => item(1, 1000)));
          if (result.rejected > 0) refused = result;
          else stored.push(...result.seqs);
        }
        assert.ok(refused, 'the disk never filled');
        assert.ok(stored.length > 0, 'nothing fitted before the disk was full');
        assert.deepEqual(refused, { seqs: [], rejected: 10 });
        assert.equal(outbox.append(Array.from({ length: 10 }, () => item(1, 1000))).rejected, 10, 'still refused, still no crash');
        let stats = outbox.stats();
        assert.equal(stats.rejected, 20);
        assert.equal(stats.rejectedOversize, 0);
        assert.equal(stats.messages, stored.length);
        assert.ok(problems.some((p) => p.reason === 'append-failed' && /SQLITE_FULL/.test(p.message)), problems.map((p) => p.message).join('\n'));
        assert.match(stats.lastProblem?.message ?? '', /rejected/);

        // Reading and acknowledging still work on the full disk.
        assert.deepEqual(peekAll(outbox), stored);
        const acked = stored.slice(0, 30);
        for (const seq of acked) outbox.acknowledge(seq);
        assert.deepEqual(peekAll(outbox), stored.slice(30));
        assert.equal(outbox.pending, stored.length - 30);
        outbox.flushAcknowledgements(); // may fail on the full disk: reported, retried, never thrown
        assert.deepEqual(peekAll(outbox), stored.slice(30));

        // Space comes back: the next append simply works.
        if (mountable) rmSync(filler);
        const after = outbox.append(Array.from({ length: 10 }, () => item(1, 1000)));
        assert.equal(after.rejected, 0);
        assert.equal(after.seqs.length, 10);
        assert.ok(after.seqs[0]! > Math.max(...stored));
        outbox.close();

        ({ outbox, problems } = openOnDisk(mountable ? {} : { maxPageCount: 48 }));
        assert.equal(problems.length, 0);
        assert.deepEqual(peekAll(outbox), [...stored.slice(30), ...after.seqs]);
        stats = outbox.stats();
        assert.equal(stats.messages, stored.length - 30 + 10);
        outbox.close();
      } finally {
        // An open database would keep the mount busy (and hide the test's own failure behind umount's).
        for (const outbox of opened) outbox.close();
        if (mountable) execFileSync('umount', [dir]);
      }
    },
  );

  it('kill -9 at 20 random moments (seeded): every batch reported committed is in the file, numbering continues without reuse', async () => {
    const writer = path.join(here, 'outbox-writer.js');
    assert.ok(existsSync(writer), `${writer} missing: run npm run build`);
    const file = dbFile('outbox-kill-');
    const random = createPrng(20240605);
    const committed = new Set<number>();
    let highest = 0;
    let roundsWithCommits = 0;
    for (let round = 0; round < 20; round++) {
      const durability = (['full', 'normal', 'off'] as const)[round % 3]!;
      const child = spawn(process.execPath, [writer, file, durability, String(round + 1)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
      // One run in four at any moment of start-up (maybe before the file is even open), the others at a random
      // moment of the append loop, up to 100 ms after its first commit.
      if (round % 4 === 3) {
        await new Promise((resolve) => setTimeout(resolve, random() * 200));
      } else {
        await new Promise<void>((resolve) => {
          child.stdout.once('data', () => resolve());
          child.once('close', () => resolve());
        });
        await new Promise((resolve) => setTimeout(resolve, random() * 100));
      }
      child.kill('SIGKILL');
      await exited;
      assert.equal(stderr, '', `writer reported: ${stderr}`);

      const printed = stdout
        .split('\n')
        .slice(0, -1) // a line is complete only with its newline
        .flatMap((line) => line.split(' ').map(Number));
      if (printed.length > 0) roundsWithCommits++;
      for (const seq of printed) {
        assert.ok(!committed.has(seq), `sequence number ${seq} handed out twice`);
        assert.ok(seq > highest, `sequence number ${seq} not above ${highest}`);
        committed.add(seq);
      }
      highest = Math.max(highest, ...printed);

      // Reopen as the agent would after the crash: nothing committed is missing, nothing renumbered.
      const { outbox, problems } = open(file, { maxBytes: 1_000_000_000, maxAgeMs: 365 * 24 * 3600 * 1000 });
      assert.deepEqual(problems, []);
      const stored = new Set(storedSeqs(file));
      const missing = [...committed].filter((seq) => !stored.has(seq));
      assert.deepEqual(missing, [], `round ${round} (${durability}): committed messages lost`);
      const records = outbox.peek(5, Number.MAX_SAFE_INTEGER, NONE);
      for (const record of records) assert.equal(seqInPayload(record.payload), record.seq);
      const [next] = outbox.append([item(1, 200)]).seqs as [number];
      assert.ok(next > Math.max(highest, ...stored), 'numbering continues above everything stored');
      committed.add(next);
      highest = next;
      outbox.close();
    }
    assert.ok(roundsWithCommits >= 15, `only ${roundsWithCommits} of 20 runs got as far as committing`);
  });

  it('measures the bytes it writes to disk per message (batches of 50 messages of ~1 KB)', (t) => {
    const { outbox } = open(dbFile('outbox-disk-'), { maxBytes: 100_000_000 });
    const random = createPrng(7);
    for (let batch = 0; batch < 100; batch++) {
      outbox.append(Array.from({ length: 50 }, (_, i) => item((i % 3) as Priority, 800 + Math.floor(random() * 400))));
    }
    const { diskWrites, appended } = outbox.stats();
    outbox.close();
    assert.equal(appended, 5000);
    t.diagnostic(`${diskWrites.perAppendedMessage.toFixed(0)} bytes written per message (${diskWrites.source} counter)`);
    if (diskWrites.source !== 'none') {
      // At least the payload once (the WAL), and not absurdly more (WAL + checkpoint, pages partly filled).
      assert.ok(diskWrites.perAppendedMessage > 1000, String(diskWrites.perAppendedMessage));
      assert.ok(diskWrites.perAppendedMessage < 10_000, String(diskWrites.perAppendedMessage));
    }
  });
});
