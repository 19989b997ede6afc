/**
 * The SQLite outbox on real database files: send order, acknowledgement, sequence numbers that never repeat, the byte
 * and age bounds, a corrupt file moved aside, a full disk, and kill -9 at random moments; the file deleted or replaced
 * under the running outbox, the modes of the files it creates, links and FIFOs planted at its names, a truncated file,
 * the files set aside, a full disk's log lines and a read-only folder (real mounts, as root).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Priority } from '../../src/collect/sample.js';
import { ROW_OVERHEAD_BYTES, SqliteOutbox, type OutboxError, type OutboxItem, type OutboxOptions } from '../../src/store/outbox.js';
import { openOutbox, outboxFile, payloadFor, storedNotices, type OpenedOutbox } from '../support/outbox-files.js';
import { seededRandom } from '../support/random.js';
import { makeTempDir } from '../support/temp.js';
import { canMount, fillUp, makeReadOnly, mkfifo, modeOf, mountTmpfs, openInChild } from '../support/state-files.js';
import { delay } from '../support/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const NONE: ReadonlySet<number> = new Set();

function seqInPayload(payload: Uint8Array): number {
  const match = /^seq=(\d+);/.exec(new TextDecoder().decode(payload.subarray(0, 32)));
  assert.ok(match, 'payload does not start with its sequence number');
  return Number(match[1]);
}

function item(priority: Priority, size = 100, createdAt = Date.now(), kind: OutboxItem['kind'] = 'telemetry'): OutboxItem {
  return { kind, priority, createdAt, encode: (seq) => payloadFor(seq, size) };
}

/** What the sidecar `<file>.seq` reserves for the data stream (its `data <n>` line). */
function reservedData(file: string): number {
  const line = readFileSync(`${file}.seq`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('data '));
  assert.ok(line, `no data line in ${file}.seq`);
  return Number(line.slice('data '.length));
}

/** Every sequence number stored in the file, read with a separate connection. */
function storedSeqs(file: string): number[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare<[], { seq: number }>('SELECT seq FROM message ORDER BY seq')
      .all()
      .map((row) => row.seq);
  } finally {
    db.close();
  }
}

/** The sequence numbers of every message a peek hands out, in send order (`skip`: queue ids). */
function peekAll(outbox: SqliteOutbox, skip: ReadonlySet<number> = NONE): number[] {
  return outbox.peek(1_000_000, Number.MAX_SAFE_INTEGER, skip).map((record) => record.seq);
}

/** Acknowledges every message waiting, as the publisher would once the broker has them. */
function acknowledgeAll(outbox: SqliteOutbox): void {
  for (const record of outbox.peek(1_000_000, Number.MAX_SAFE_INTEGER, NONE)) outbox.acknowledge(record.id);
}

describe('SQLite outbox', () => {
  it('peeks by priority (highest first), then sequence number, leaving out the skip set, within maxCount and maxBytes', () => {
    const { outbox } = openOutbox(outboxFile('outbox-order-'));
    const priorities: Priority[] = [1, 7, 1, 3, 7, 0, 3];
    const base = Date.now();
    const { seqs, ids, rejected } = outbox.append(priorities.map((priority, i) => item(priority, 100 + i, base + i, i % 2 ? 'events' : 'telemetry')));
    assert.equal(rejected, 0);
    assert.equal(seqs.length, 7);
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[0]! + i, 'consecutive within a batch');
    const s = (i: number): number => seqs[i]!;

    const all = outbox.peek(100, 1_000_000, NONE);
    assert.deepEqual(
      all.map((r) => r.seq),
      [s(1), s(4), s(3), s(6), s(0), s(2), s(5)],
    );
    const first = all[0]!;
    assert.deepEqual(
      { kind: first.kind, priority: first.priority, createdAt: first.createdAt, size: first.payload.byteLength },
      { kind: 'events', priority: 7, createdAt: base + 1, size: 101 },
    );
    for (const record of all) assert.equal(seqInPayload(record.payload), record.seq, 'encode was given the stored number');

    // The skip set names queue ids, as the publisher's in-flight set does.
    assert.deepEqual(peekAll(outbox, new Set([ids[1]!, ids[3]!])), [s(4), s(6), s(0), s(2), s(5)]);
    assert.deepEqual(
      outbox.peek(2, 1_000_000, NONE).map((r) => r.seq),
      [s(1), s(4)],
    );
    // 101 + 104 bytes fit in 210, the third (103) does not.
    assert.deepEqual(
      outbox.peek(100, 210, NONE).map((r) => r.seq),
      [s(1), s(4)],
    );
    // Always one message when any waits, even one bigger than maxBytes.
    assert.deepEqual(
      outbox.peek(100, 10, NONE).map((r) => r.seq),
      [s(1)],
    );
    assert.deepEqual(outbox.peek(0, 1_000_000, NONE), []);
    assert.equal(outbox.pending, 7);
    assert.deepEqual(outbox.peek(10, 1_000_000, new Set(ids)), []);
    outbox.close();
  });

  it('[19.drain] peeks on after a position in the send order: the rest of its priority, then the lower ones, with the same skips and bounds', () => {
    const { outbox } = openOutbox(outboxFile('outbox-order-after-'), { ackFlushMs: 60_000 });
    const priorities: Priority[] = [1, 7, 1, 3, 7, 0, 3, 3];
    const { seqs, ids } = outbox.append(priorities.map((priority) => item(priority, 100)));
    const s = (i: number): number => seqs[i]!;
    const order = [s(1), s(4), s(3), s(6), s(7), s(0), s(2), s(5)];
    const records = outbox.peek(100, 1_000_000, NONE);
    assert.deepEqual(
      records.map((r) => r.seq),
      order,
    );
    const after = (k: number, skip: ReadonlySet<number> = NONE, maxCount = 100, maxBytes = 1_000_000): number[] =>
      outbox.peek(maxCount, maxBytes, skip, records[k]).map((r) => r.seq);
    for (let k = 0; k < records.length; k++) assert.deepEqual(after(k), order.slice(k + 1), `after the ${k + 1}th`);
    // Within a priority, across priorities, with a skip set, and an acknowledged message left out.
    assert.deepEqual(after(2, new Set([ids[7]!])), [s(6), s(0), s(2), s(5)]);
    outbox.acknowledge(ids[0]!);
    assert.deepEqual(after(4), [s(2), s(5)]);
    assert.deepEqual(after(2, NONE, 2), [s(6), s(7)]);
    assert.deepEqual(after(2, NONE, 100, 150), [s(6)], 'the bytes bound, one message at least');
    // A position that no longer exists (deleted) still places the walk.
    outbox.flushAcknowledgements();
    assert.deepEqual(
      outbox.peek(100, 1_000_000, NONE, { priority: 1, id: ids[0]! }).map((r) => r.seq),
      [s(2), s(5)],
    );
    outbox.close();
  });

  it('calls onAppend listeners after a stored batch, until unsubscribed', () => {
    const { outbox } = openOutbox(outboxFile('outbox-listen-'));
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
    const file = outboxFile('outbox-ack-');
    let { outbox } = openOutbox(file, { ackFlushMs: 60_000 });
    const { seqs, ids } = outbox.append([item(2), item(2), item(5), item(0)]);
    const [a, b, c, d] = seqs as [number, number, number, number];
    // Acknowledged by queue id; what is stored and handed out is checked by sequence number.
    const [ia, ib, ic] = ids as [number, number, number];

    outbox.acknowledge(ic);
    outbox.acknowledge(ic);
    outbox.acknowledge(999_999);
    assert.equal(outbox.pending, 3);
    assert.deepEqual(peekAll(outbox), [a, b, d], 'not handed out again even before the deletion is flushed');
    assert.equal(outbox.stats().acknowledged, 1);
    assert.ok(storedSeqs(file).includes(c), 'deletion is batched, not written per acknowledgement');

    // The next append carries the pending deletion in its own transaction.
    const [e] = outbox.append([item(1)]).seqs as [number];
    assert.ok(!storedSeqs(file).includes(c));
    assert.deepEqual(peekAll(outbox), [a, b, e, d]);

    outbox.acknowledge(ia);
    outbox.flushAcknowledgements();
    assert.ok(!storedSeqs(file).includes(a));
    outbox.acknowledge(ib);
    outbox.close(); // close flushes
    ({ outbox } = openOutbox(file));
    assert.deepEqual(peekAll(outbox), [e, d]);
    assert.equal(outbox.pending, 2);
    outbox.acknowledge(ia); // already gone: ignored
    assert.equal(outbox.pending, 2);
    outbox.close();
  });

  it('flushes acknowledgements on a timer', async () => {
    const file = outboxFile('outbox-ack-timer-');
    const { outbox } = openOutbox(file, { ackFlushMs: 20 });
    const appended = outbox.append([item(1), item(1)]);
    const a = appended.seqs[0]!;
    outbox.acknowledge(appended.ids[0]!);
    await delay(80);
    assert.ok(!storedSeqs(file).includes(a));
    assert.equal(outbox.stats().messages, 1);
    outbox.close();
  });

  it('sequence numbers persist across close and reopen and never repeat, even after everything was deleted', () => {
    const file = outboxFile('outbox-seq-');
    const seen: number[] = [];
    for (let round = 0; round < 3; round++) {
      const { outbox } = openOutbox(file);
      const { seqs } = outbox.append([item(3), item(1), item(4)]);
      seen.push(...seqs);
      if (round === 1) acknowledgeAll(outbox);
      outbox.close();
    }
    // Everything deleted, then reopened: the counter lives in the meta table, not in max(seq).
    const { outbox } = openOutbox(file);
    acknowledgeAll(outbox);
    outbox.close();
    const again = openOutbox(file);
    seen.push(...again.outbox.append([item(1)]).seqs);
    again.outbox.close();
    assert.equal(new Set(seen).size, seen.length, 'no sequence number repeats');
    assert.deepEqual(
      [...seen].sort((x, y) => x - y),
      seen,
      'always increasing',
    );
  });

  it('a new database starts above a wall-clock floor (ms × 1000), as well as above the sidecar reservation', () => {
    const before = Date.now() * 1000;
    const file = outboxFile('outbox-floor-');
    const { outbox } = openOutbox(file);
    const [first] = outbox.append([item(1)]).seqs as [number];
    assert.ok(first >= before && Number.isSafeInteger(first));
    outbox.close();
    assert.ok(reservedData(file) > first, 'the sidecar holds a number above every one handed out');
  });

  it('evicts the lowest priority first, oldest first within it, and counts evictions by priority', () => {
    // [17.seq] Command results: evicted by the same rule, and announced by no loss notice, so none takes room here
    // (the data stream's evictions and their notice: the [17.seq] tests below).
    const cost = 100 + ROW_OVERHEAD_BYTES;
    const { outbox } = openOutbox(outboxFile('outbox-evict-'), { maxBytes: cost * 10 });
    const item = (priority: Priority): OutboxItem => ({ kind: 'result', priority, createdAt: Date.now(), encode: (seq) => payloadFor(seq, 100) });
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
    const { outbox } = openOutbox(outboxFile('outbox-oversize-'), { maxBytes: 1000 });
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
    const file = outboxFile('outbox-age-');
    const { outbox } = openOutbox(file, { maxAgeMs: 10_000, clock: () => now });
    const old = outbox.append([item(7, 50, now - 500), item(1, 50, now)]).seqs;
    now += 9_000;
    const fresh = outbox.append([item(1, 50, now)]).seqs;
    assert.equal(outbox.stats().expired, 0);
    assert.equal(outbox.stats().oldestCreatedAt, 1_000_000 - 500);
    now += 2_000; // the first two messages are now 11.5 s and 11 s old, the third 2 s
    const late = outbox.append([item(2, 50, now), item(2, 50, now - 60_000)]).seqs;
    // [17.seq] The expired messages are announced by a loss notice (priority 7), numbered next in the data stream.
    const notices = storedNotices(file);
    assert.equal(notices.length, 1);
    assert.deepEqual(notices[0]!.lost, [
      { first: old[0], last: old[1], count: 2, reason: 'expired', exact: true },
      { first: late[1], last: late[1], count: 1, reason: 'expired', exact: true },
    ]);
    assert.equal(notices[0]!.seq, late[1]! + 1);
    assert.deepEqual(peekAll(outbox), [notices[0]!.seq, late[0], ...fresh]);
    const stats = outbox.stats();
    assert.equal(stats.expired, 3, 'two aged out, one was already too old when appended');
    assert.equal(stats.messages, 3, 'two, and the notice');
    assert.equal(stats.oldestCreatedAt, 1_009_000);
    assert.ok(!storedSeqs(file).includes(old[0]!));
    outbox.close();
  });

  for (const damage of ['garbage written over it', 'truncated to half', 'truncated to 100 bytes'] as const) {
    it(`moves a corrupt database (${damage}) aside with a clear error, starts a fresh one, and keeps numbering above the old`, () => {
      const file = outboxFile('outbox-corrupt-');
      let { outbox } = openOutbox(file);
      const old: number[] = [];
      for (let i = 0; i < 20; i++) old.push(...outbox.append(Array.from({ length: 10 }, () => item(1, 400))).seqs);
      outbox.close();
      const size = statSync(file).size;
      if (damage === 'garbage written over it') writeFileSync(file, Buffer.alloc(size, 0x5a));
      else truncateSync(file, damage === 'truncated to half' ? Math.floor(size / 2) : 100);

      let problems: OutboxError[];
      ({ outbox, problems } = openOutbox(file));
      assert.equal(problems.length, 1);
      const problem = problems[0]!;
      assert.equal(problem.reason, 'corrupt-file-moved-aside');
      assert.match(problem.message, /is corrupt or not a database \(SQLITE_(NOTADB|CORRUPT)[^)]*\); moved it aside as .*outbox\.db\.corrupt-/);
      const stats = outbox.stats();
      assert.equal(stats.corruptFilesMovedAside, 1);
      assert.equal(stats.lastProblem?.message, problem.message);
      // [17.seq] Only the loss notice waits: from the lowest number that may have been waiting (the sidecar's bound)
      // to the last one that can have been handed out, an upper bound.
      assert.equal(stats.messages, 1);
      const [notice] = storedNotices(file);
      assert.ok(notice);
      assert.deepEqual(notice.lost, [{ first: old[0], last: notice.seq - 1, count: notice.seq - old[0]!, reason: 'outbox-lost', exact: false }]);
      const aside = readdirSync(path.dirname(file)).filter((name) => name.startsWith('outbox.db.corrupt-') && !/-(wal|shm)$/.test(name));
      assert.equal(aside.length, 1);
      assert.equal(
        statSync(path.join(path.dirname(file), aside[0]!)).size,
        damage === 'truncated to 100 bytes' ? 100 : damage === 'truncated to half' ? Math.floor(size / 2) : size,
      );

      const fresh = outbox.append([item(1), item(2)]).seqs;
      assert.equal(fresh.length, 2);
      assert.ok(fresh[0]! > Math.max(...old), 'numbering continues above the moved-aside file');
      assert.equal(fresh[0], notice.seq + 1, 'and on from the notice, without a gap');
      outbox.close();
      ({ outbox, problems } = openOutbox(file));
      assert.equal(problems.length, 0, 'the fresh file is healthy');
      assert.deepEqual(peekAll(outbox), [notice.seq, fresh[1], fresh[0]]);
      outbox.close();
    });
  }

  it('without the sidecar either, a fresh database after corruption still numbers above the old (clock floor)', () => {
    const file = outboxFile('outbox-corrupt-nosidecar-');
    let { outbox } = openOutbox(file);
    const old = outbox.append([item(1), item(1)]).seqs;
    outbox.close();
    writeFileSync(file, Buffer.alloc(statSync(file).size, 0xa5));
    unlinkSync(`${file}.seq`);
    ({ outbox } = openOutbox(file));
    const [next] = outbox.append([item(1)]).seqs as [number];
    assert.ok(next > Math.max(...old));
    outbox.close();
  });

  const mountable = canMount;
  it(
    mountable
      ? 'full disk (a real 512 KiB tmpfs): appends are rejected and counted, reading and acknowledging go on, appends resume once space is freed'
      : 'full disk (PRAGMA max_page_count: mounting a tmpfs is not permitted here): appends are rejected and counted, reading and acknowledging go on, appends resume once space is freed',
    () => {
      const dir = makeTempDir('outbox-full-');
      if (mountable) execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', dir]);
      const opened: SqliteOutbox[] = [];
      const openOnDisk = (options: Partial<OutboxOptions>): OpenedOutbox => {
        const result = openOutbox(path.join(dir, 'outbox.db'), options);
        opened.push(result.outbox);
        return result;
      };
      try {
        const filler = path.join(dir, 'filler');
        if (mountable) writeFileSync(filler, Buffer.alloc(300 * 1024));
        let { outbox, problems } = openOnDisk(mountable ? { ackFlushMs: 60_000 } : { ackFlushMs: 60_000, maxPageCount: 48 });
        const stored: number[] = [];
        const storedIds: number[] = [];
        let refused: { seqs: number[]; ids: number[]; rejected: number } | undefined;
        for (let i = 0; i < 500 && !refused; i++) {
          const result = outbox.append(Array.from({ length: 10 }, () => item(1, 1000)));
          if (result.rejected > 0) refused = result;
          else {
            stored.push(...result.seqs);
            storedIds.push(...result.ids);
          }
        }
        assert.ok(refused, 'the disk never filled');
        assert.ok(stored.length > 0, 'nothing fitted before the disk was full');
        assert.deepEqual(refused, { seqs: [], ids: [], rejected: 10 });
        assert.equal(outbox.append(Array.from({ length: 10 }, () => item(1, 1000))).rejected, 10, 'still refused, still no crash');
        let stats = outbox.stats();
        assert.equal(stats.rejected, 20);
        assert.equal(stats.rejectedOversize, 0);
        assert.equal(stats.messages, stored.length);
        assert.ok(
          problems.some((p) => p.reason === 'append-failed' && /SQLITE_FULL/.test(p.message)),
          problems.map((p) => p.message).join('\n'),
        );
        assert.match(stats.lastProblem?.message ?? '', /rejected/);

        // Reading and acknowledging still work on the full disk.
        assert.deepEqual(peekAll(outbox), stored);
        for (const id of storedIds.slice(0, 30)) outbox.acknowledge(id);
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
    const file = outboxFile('outbox-kill-');
    const random = seededRandom(20240605);
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
        await delay(random() * 200);
      } else {
        await new Promise<void>((resolve) => {
          child.stdout.once('data', () => resolve());
          child.once('close', () => resolve());
        });
        await delay(random() * 100);
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
      const { outbox, problems } = openOutbox(file, { maxBytes: 1_000_000_000, maxAgeMs: 365 * 24 * 3600 * 1000 });
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
    const { outbox } = openOutbox(outboxFile('outbox-disk-'), { maxBytes: 100_000_000 });
    const random = seededRandom(7);
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

  it('[19.drain] a message evicted or expired after a peek handed it out: acknowledging it changes nothing, the counts stay exact', () => {
    // Command results: no loss notice takes room, so the byte counts are whole messages.
    let now = 1_000_000;
    const cost = 100 + ROW_OVERHEAD_BYTES;
    const { outbox } = openOutbox(outboxFile('outbox-ack-evicted-'), { maxBytes: cost * 10, maxAgeMs: 10_000, clock: () => now, ackFlushMs: 60_000 });
    outbox.append(Array.from({ length: 10 }, () => item(1, 100, now, 'result')));
    const handedOut = outbox.peek(10, Number.MAX_SAFE_INTEGER, NONE);
    assert.equal(handedOut.length, 10);

    // Two of priority 2 push out the two oldest of priority 1, which the peek handed out.
    outbox.append([item(2, 100, now, 'result'), item(2, 100, now, 'result')]);
    assert.equal(outbox.stats().evicted.count, 2);
    outbox.acknowledge(handedOut[0]!.id);
    outbox.acknowledge(handedOut[1]!.id);
    assert.equal(outbox.pending, 10);
    assert.equal(outbox.unflushedAcknowledgements, 0);
    assert.equal(outbox.stats().bytes, cost * 10);
    assert.equal(outbox.stats().acknowledged, 0);

    // Everything stored so far ages out at the next append.
    now += 11_000;
    const [fresh] = outbox.append([item(1, 100, now, 'result')]).ids as [number];
    assert.equal(outbox.stats().expired, 10);
    outbox.acknowledge(handedOut[2]!.id);
    assert.equal(outbox.pending, 1);
    assert.equal(outbox.stats().bytes, cost);

    outbox.acknowledge(fresh);
    assert.equal(outbox.pending, 0);
    assert.equal(outbox.stats().bytes, 0);
    outbox.flushAcknowledgements();
    const stats = outbox.stats();
    assert.equal(stats.messages, 0);
    assert.equal(stats.bytes, 0);
    assert.equal(stats.acknowledged, 1);
    outbox.close();
  });

  it('[19.drain] recorded acknowledgements survive a kill -9: their messages are deleted at the next open, not sent again', async () => {
    const file = outboxFile('outbox-journal-kill-');
    const outboxModule = pathToFileURL(path.join(here, '..', '..', 'src', 'store', 'outbox.js')).href;
    // The child acknowledges the first 10 of 30 and records them, acknowledges 5 more without recording, and dies.
    const script = `
      const { SqliteOutbox } = await import(${JSON.stringify(outboxModule)});
      const outbox = SqliteOutbox.open({ path: ${JSON.stringify(file)}, deviceId: 'car-1', maxBytes: 10_000_000, maxAgeMs: 86_400_000, ackFlushMs: 60_000 });
      const items = Array.from({ length: 30 }, () => ({ kind: 'telemetry', priority: 1, createdAt: Date.now(), encode: (seq) => new TextEncoder().encode('seq=' + seq + ';') }));
      const { ids, seqs } = outbox.append(items);
      process.stdout.write(JSON.stringify(seqs) + '\\n');
      outbox.peek(30, Number.MAX_SAFE_INTEGER, new Set());
      for (const id of ids.slice(0, 10)) outbox.acknowledge(id);
      outbox.recordAcknowledgements();
      for (const id of ids.slice(10, 15)) outbox.acknowledge(id);
      process.kill(process.pid, 'SIGKILL');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, sig) => resolve(sig)));
    assert.equal(signal, 'SIGKILL', stderr);
    const seqs = JSON.parse(stdout.split('\n')[0]!) as number[];
    assert.equal(seqs.length, 30);
    assert.equal(storedSeqs(file).length, 30, 'nothing was deleted before the kill');

    const { outbox, problems } = openOutbox(file);
    assert.deepEqual(problems, []);
    assert.deepEqual(peekAll(outbox), seqs.slice(10), 'the recorded ten are gone; the five acknowledged unrecorded come again');
    assert.equal(outbox.pending, 20);
    assert.deepEqual(storedSeqs(file), seqs.slice(10));
    const db = new Database(file, { readonly: true, fileMustExist: true });
    assert.equal(db.prepare<[], { n: number }>('SELECT count(*) AS n FROM delivered').get()?.n, 0, 'the journal is emptied with its deletion');
    db.close();
    outbox.close();
  });

  it('[19.drain] recording acknowledgements every 10 writes less than half what deleting them every 10 did', (t) => {
    // The publisher's pattern now (a record per half window of mosquitto's 20, the deletes at the flush timer) against
    // its old one (a delete transaction per half window), over the same 2,000 messages of 120 bytes.
    const drain = (record: boolean): number => {
      const { outbox } = openOutbox(outboxFile('outbox-journal-disk-'), { ackFlushMs: 60_000 });
      for (let i = 0; i < 20; i++) outbox.append(batch(100, 120));
      const before = outbox.stats().diskWrites.bytes;
      for (const message of outbox.peek(2000, Number.MAX_SAFE_INTEGER, NONE)) {
        outbox.acknowledge(message.id);
        if (record && outbox.unflushedAcknowledgements >= 10) outbox.recordAcknowledgements();
        if (!record && outbox.unflushedAcknowledgements >= 10) outbox.flushAcknowledgements();
        if (record && outbox.stats().acknowledged % 1000 === 0) outbox.flushAcknowledgements();
      }
      outbox.flushAcknowledgements();
      const { diskWrites, messages } = outbox.stats();
      assert.equal(messages, 0);
      outbox.close();
      return diskWrites.source === 'none' ? Number.NaN : (diskWrites.bytes - before) / 2000;
    };
    const deleting = drain(false);
    const recording = drain(true);
    t.diagnostic(`bytes written per message acknowledged: ${deleting.toFixed(0)} deleting every 10, ${recording.toFixed(0)} recording every 10`);
    if (Number.isNaN(deleting)) return; // no I/O counters here
    assert.ok(recording < deleting / 2, `${recording} against ${deleting}`);
  });

  it('[19.drain] the revision moves with every append, drop and carry-over, never with an acknowledgement', () => {
    const file = outboxFile('outbox-revision-');
    const { outbox } = openOutbox(file, { ackFlushMs: 60_000 });
    let revision = outbox.revision;
    const moved = (what: string): void => {
      assert.notEqual(outbox.revision, revision, `${what} moves the revision`);
      revision = outbox.revision;
    };
    const { ids } = outbox.append(batch(5));
    moved('an append');
    outbox.peek(5, Number.MAX_SAFE_INTEGER, NONE);
    outbox.acknowledge(ids[0]!);
    outbox.flushAcknowledgements();
    outbox.acknowledge(ids[1]!);
    assert.equal(outbox.revision, revision, 'acknowledgements, flushed or not, leave it');
    assert.equal(outbox.drop(ids[2]!), true);
    moved('a drop (and its loss notice)');
    unlinkSync(file);
    outbox.verifyFile();
    assert.equal(outbox.stats().fileLostWhileRunning, 1);
    moved('a carry-over to a new file');
    outbox.close();
  });
});

/** Every (non-acknowledged) sequence number the outbox hands out, sorted. */
function waiting(outbox: SqliteOutbox): number[] {
  return peekAll(outbox).sort((a, b) => a - b);
}

/** A batch of `count` messages of priority 1. */
function batch(count: number, size = 100): OutboxItem[] {
  return Array.from({ length: count }, () => item(1, size));
}

describe('SQLite outbox: its file deleted or replaced under the running agent', () => {
  for (const loss of ['the file deleted', 'the file and its -wal and -shm deleted', 'the whole folder deleted'] as const) {
    it(`[14.7] ${loss} while messages wait: an error names the file, committing goes on, and every message is in the new file, also after a restart`, () => {
      const dir = makeTempDir('outbox-deleted-');
      const file = path.join(dir, 'state', 'outbox.db');
      let { outbox, problems } = openOutbox(file, { ackFlushMs: 60_000 });
      const appended = outbox.append(batch(20));
      const before = appended.seqs;
      outbox.acknowledge(appended.ids[0]!);
      outbox.acknowledge(appended.ids[1]!);
      outbox.flushAcknowledgements();
      outbox.acknowledge(appended.ids[2]!); // acknowledged, not yet deleted from the file: must not come back

      if (loss === 'the file deleted') unlinkSync(file);
      else if (loss === 'the file and its -wal and -shm deleted') for (const suffix of ['', '-wal', '-shm']) unlinkSync(file + suffix);
      else rmSync(path.dirname(file), { recursive: true });
      assert.equal(existsSync(file), false);

      // The next write transaction finds it out, before it commits anything into the deleted file.
      const after: number[] = [];
      for (let i = 0; i < 5; i++) after.push(...outbox.append(batch(10)).seqs);
      assert.equal(after.length, 50);
      const lost = problems.filter((p) => p.reason === 'file-lost');
      assert.equal(lost.length, 1, problems.map((p) => p.message).join('\n'));
      assert.equal(
        lost[0]!.message,
        `outbox: ${file} was deleted while the agent was running: its 17 waiting message(s) and the sequence counters were carried over to a new file at the same path; nothing was lost`,
      );
      assert.equal(lost[0]!.severity, 'error', 'an error line in the log, not a warning');
      assert.equal(outbox.stats().fileLostWhileRunning, 1);

      const expected = [...before.slice(3), ...after];
      assert.deepEqual(waiting(outbox), expected);
      assert.deepEqual(storedSeqs(file), expected, 'in the file at the path, read by another connection');
      assert.equal(modeOf(file), 0o600);
      assert.ok(reservedData(file) > Math.max(...after), 'the sidecar is back, above every number');
      outbox.close();

      ({ outbox, problems } = openOutbox(file));
      assert.deepEqual(problems, []);
      assert.deepEqual(waiting(outbox), expected, 'nothing lost at exit');
      const [next] = outbox.append([item(1)]).seqs as [number];
      assert.ok(next > Math.max(...after), 'numbering continues above everything handed out');
      outbox.close();
    });
  }

  it('[14.7] deleted with nothing appended afterwards: close finds it and carries the messages over, nothing is lost at exit', () => {
    const file = outboxFile('outbox-deleted-close-');
    let { outbox, problems } = openOutbox(file);
    const seqs = outbox.append(batch(7)).seqs;
    unlinkSync(file);
    outbox.close();
    assert.deepEqual(
      problems.map((p) => p.reason),
      ['file-lost'],
    );
    ({ outbox, problems } = openOutbox(file));
    assert.deepEqual(waiting(outbox), seqs);
    outbox.close();
  });

  it('[14.7] replaced by another file (renamed over it): that file is moved aside untouched, the outbox keeps its own messages', () => {
    const dir = makeTempDir('outbox-replaced-');
    const file = path.join(dir, 'outbox.db');
    let { outbox, problems } = openOutbox(file);
    const seqs = outbox.append(batch(12)).seqs;
    // Another database (an old backup put back, say) renamed into the outbox's place.
    const other = path.join(dir, 'backup.db');
    const foreign = new Database(other);
    foreign.exec("CREATE TABLE note (text TEXT); INSERT INTO note VALUES ('not the outbox')");
    foreign.close();
    const foreignBytes = readFileSync(other);
    renameSync(other, file);

    const more = outbox.append(batch(3)).seqs;
    const lost = problems.filter((p) => p.reason === 'file-lost');
    assert.equal(lost.length, 1);
    const aside = /moved aside as (\S+)\)/.exec(lost[0]!.message)?.[1];
    assert.ok(aside, lost[0]!.message);
    assert.match(
      lost[0]!.message,
      new RegExp(
        `^outbox: ${escapeRe(file)} was replaced by another file \\(moved aside as ${escapeRe(file)}\\.replaced-[\\dT-]+Z\\) while the agent was running: its 12 waiting`,
      ),
    );
    assert.deepEqual(readFileSync(aside), foreignBytes, 'the file found in its place is kept as it was');
    assert.deepEqual(storedSeqs(file), [...seqs, ...more]);
    outbox.close();
    ({ outbox, problems } = openOutbox(file));
    assert.deepEqual(waiting(outbox), [...seqs, ...more]);
    assert.deepEqual(outbox.stats().setAside, { files: 1, bytes: foreignBytes.length });
    outbox.close();
  });

  it('[14.7] a carry-over cut short by a crash (the copy made, not yet renamed) is finished at the next start', () => {
    const dir = makeTempDir('outbox-carry-crash-');
    const file = path.join(dir, 'outbox.db');
    let { outbox, problems } = openOutbox(file);
    const seqs = outbox.append(batch(5)).seqs;
    outbox.close();
    // What a crash between the copy and the rename leaves: the copy, the file gone.
    const db = new Database(file);
    db.prepare('VACUUM INTO ?').run(`${file}.carry-over`);
    db.close();
    unlinkSync(file);
    ({ outbox, problems } = openOutbox(file));
    assert.deepEqual(
      problems.map((p) => p.message),
      [`outbox: ${file} was put back from ${file}.carry-over: the agent stopped while it was carrying a deleted or replaced outbox over`],
    );
    assert.deepEqual(waiting(outbox), seqs);
    assert.equal(existsSync(`${file}.carry-over`), false);
    outbox.close();
  });

  it(
    '[14.7] carrying over on a full disk fails: said once, the messages stay readable, and it succeeds once there is room',
    { skip: !canMount && 'mounting a tmpfs is not permitted here' },
    () => {
      const dir = makeTempDir('outbox-carry-full-');
      const unmount = mountTmpfs(dir, '4m');
      const opened: SqliteOutbox[] = [];
      try {
        const file = path.join(dir, 'outbox.db');
        const { outbox, problems } = openOutbox(file, { ackFlushMs: 60_000 });
        opened.push(outbox);
        const seqs: number[] = [];
        for (let i = 0; i < 20; i++) seqs.push(...outbox.append(batch(10, 1000)).seqs);
        unlinkSync(file); // its space stays taken while the connection holds it
        const filler = path.join(dir, 'filler');
        fillUp(filler); // what is left, so the copy cannot be written
        for (let i = 0; i < 3; i++) outbox.append(batch(1, 1000));
        const failed = problems.filter((p) => p.reason === 'file-lost');
        assert.equal(failed.length, 1, 'said once, not at every write');
        assert.match(
          failed[0]!.message,
          /was deleted while the agent was running, and carrying its 200 waiting message\(s\) over to a new file failed \(.*\): they are kept in the deleted file while the agent runs/,
        );
        assert.deepEqual(waiting(outbox).slice(0, 200), seqs, 'still readable through the open connection');
        assert.equal(existsSync(`${file}.carry-over`), false, 'the partial copy is removed');

        rmSync(filler);
        const more = outbox.append(batch(2, 1000)).seqs;
        assert.equal(more.length, 2);
        const lost = problems.filter((p) => p.reason === 'file-lost');
        assert.equal(lost.length, 2);
        assert.match(lost[1]!.message, /was deleted while the agent was running: its \d+ waiting message\(s\) and the sequence counters were carried over/);
        assert.deepEqual(
          storedSeqs(file).filter((seq) => seqs.includes(seq) || more.includes(seq)),
          [...seqs, ...more],
        );
      } finally {
        for (const outbox of opened) outbox.close();
        unmount();
      }
    },
  );
});

describe('SQLite outbox: the files it creates', () => {
  for (const umask of [0o000, 0o022, 0o277]) {
    it(`[14.L4] the outbox, its -wal and -shm and its .seq sidecar are created 0600, its folder 0750, under umask ${umask.toString(8).padStart(3, '0')}`, () => {
      const dir = path.join(makeTempDir('outbox-modes-'), 'var');
      const file = path.join(dir, 'outbox.db');
      const previous = process.umask(umask);
      let outbox: SqliteOutbox;
      try {
        ({ outbox } = openOutbox(file));
        outbox.append([item(1)]);
      } finally {
        process.umask(previous);
      }
      try {
        for (const name of ['outbox.db', 'outbox.db-wal', 'outbox.db-shm', 'outbox.db.seq']) {
          assert.equal(modeOf(path.join(dir, name)).toString(8), '600', name);
        }
        assert.equal(modeOf(dir) & ~umask & 0o777, 0o750 & ~umask, 'the folder: 0750 less the umask');
      } finally {
        outbox.close();
      }
    });
  }

  it('[14.L4] an outbox file left 0644 by an older agent is narrowed to 0600 at open', () => {
    const file = outboxFile('outbox-narrow-');
    let { outbox } = openOutbox(file);
    outbox.close();
    chmodSync(file, 0o644);
    ({ outbox } = openOutbox(file));
    assert.equal(modeOf(file), 0o600);
    assert.equal(modeOf(`${file}-wal`), 0o600);
    outbox.close();
  });

  for (const at of ['', '-wal', '-shm', '-journal'] as const) {
    it(`[14.L4] a symbolic link planted at outbox.db${at} is not followed: the open is refused, naming it, and its target is untouched`, () => {
      const dir = makeTempDir('outbox-link-');
      const file = path.join(dir, 'outbox.db');
      if (at !== '') openOutbox(file).outbox.close(); // an outbox that exists, as after a normal stop
      const victim = path.join(dir, 'victim');
      writeFileSync(victim, 'precious\n');
      if (at === '') rmSync(file, { force: true });
      symlinkSync(victim, file + at);
      assert.throws(
        () => openOutbox(file),
        (err: Error) => {
          assert.equal(
            err.message,
            at === ''
              ? `outbox.path: ${file} is a symbolic link, not a database file: refusing to open it (remove it, or point outbox.path at a file)`
              : `outbox.path: ${file + at} is a symbolic link: SQLite would follow or block on it; refusing to open ${file} (remove outbox.db${at})`,
          );
          return true;
        },
      );
      assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    });
  }

  it("[14.L4] a symbolic link planted at the sidecar's temporary file (outbox.db.seq.tmp) is removed, not written through", () => {
    const dir = makeTempDir('outbox-seq-tmp-link-');
    const file = path.join(dir, 'outbox.db');
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    symlinkSync(victim, `${file}.seq.tmp`);
    const { outbox } = openOutbox(file);
    const [seq] = outbox.append([item(1)]).seqs as [number]; // the first append reserves numbers in the sidecar
    outbox.close();
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    assert.ok(lstatSync(`${file}.seq`).isFile());
    assert.ok(reservedData(file) > seq);
    assert.equal(modeOf(`${file}.seq`), 0o600);
    assert.equal(existsSync(`${file}.seq.tmp`), false);
  });

  it('[14.L4] the sidecar (outbox.db.seq) as a symbolic link is not read through, and is replaced by a file', () => {
    const dir = makeTempDir('outbox-seq-link-');
    const file = path.join(dir, 'outbox.db');
    const planted = path.join(dir, 'planted');
    writeFileSync(planted, '9000000000000000\n');
    symlinkSync(planted, `${file}.seq`);
    const before = Date.now() * 1000;
    const { outbox } = openOutbox(file);
    const [seq] = outbox.append([item(1)]).seqs as [number];
    outbox.close();
    assert.ok(seq >= before && seq < 9_000_000_000_000_000, `numbered from the clock floor, not from the planted file (${seq})`);
    assert.equal(readFileSync(planted, 'utf8'), '9000000000000000\n');
    assert.ok(lstatSync(`${file}.seq`).isFile());
  });

  for (const at of ['.seq', '-wal'] as const) {
    it(`[14.L4] a FIFO planted at outbox.db${at} does not block the agent`, async () => {
      const dir = makeTempDir('outbox-fifo-');
      const file = path.join(dir, 'outbox.db');
      if (at === '-wal') openOutbox(file).outbox.close();
      mkfifo(file + at);
      const result = await openInChild('outbox', file);
      assert.equal(result.timedOut, false, `opening the outbox blocked on the FIFO at ${file + at}`);
      if (at === '.seq') assert.ok(Number.isSafeInteger(result.firstSeq), JSON.stringify(result));
      else
        assert.equal(result.error, `outbox.path: ${file}-wal is a FIFO: SQLite would follow or block on it; refusing to open ${file} (remove outbox.db-wal)`);
    });
  }

  it('[14.L4] the temporary files a new outbox is made under (outbox.db.new) and a carry-over writes (outbox.db.carry-over) are not followed either', () => {
    const dir = makeTempDir('outbox-temp-link-');
    const file = path.join(dir, 'outbox.db');
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    const planted = [`${file}.new`, `${file}.new-journal`, `${file}.new-wal`, `${file}.carry-over`, `${file}.carry-over-journal`, `${file}.carry-over-wal`];
    for (const name of planted) symlinkSync(victim, name);
    const { outbox, problems } = openOutbox(file);
    assert.equal(problems.length, 0);
    const seqs = outbox.append(batch(3)).seqs;
    unlinkSync(file);
    seqs.push(...outbox.append(batch(2)).seqs); // carried over through outbox.db.carry-over
    assert.deepEqual(
      problems.map((p) => p.reason),
      ['file-lost'],
    );
    outbox.close();
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    for (const name of planted) assert.equal(existsSync(name), false, `${name} removed`);
    assert.deepEqual(storedSeqs(file), seqs);
  });
});

describe('SQLite outbox: a truncated file and the files set aside', () => {
  it('[14.L5] an outbox truncated to 0 bytes: the start warns, naming the file, and numbering continues above the old', () => {
    const file = outboxFile('outbox-empty-');
    let { outbox, problems } = openOutbox(file);
    const old = outbox.append(batch(3)).seqs;
    outbox.close();
    truncateSync(file, 0);
    ({ outbox, problems } = openOutbox(file));
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.reason, 'empty-at-open');
    // [15.4] Its messages are lost: an error line in the log.
    assert.equal(problems[0]!.severity, 'error');
    assert.match(
      problems[0]!.message,
      new RegExp(
        `^outbox: ${escapeRe(file)} was empty \\(0 bytes\\) at start: the messages it held were lost \\(the file was truncated\\); starting with an empty outbox, sequence numbers continue above the old ones \\(from \\d+\\)$`,
      ),
    );
    // [17.seq] What waits is the loss notice of the numbers that may have been in the file.
    assert.equal(outbox.pending, 1);
    const [notice] = storedNotices(file);
    assert.ok(notice);
    assert.deepEqual(notice.lost, [{ first: old[0], last: notice.seq - 1, count: notice.seq - old[0]!, reason: 'outbox-lost', exact: false }]);
    const [next] = outbox.append([item(1)]).seqs as [number];
    assert.ok(next > Math.max(...old));
    assert.equal(next, notice.seq + 1);
    outbox.close();
    // A new outbox (nothing there before) says nothing: the agent never leaves a 0-byte file of its own.
    const fresh = openOutbox(outboxFile('outbox-fresh-'));
    assert.deepEqual(fresh.problems, []);
    fresh.outbox.close();
  });

  it('[14.L5] corrupt files moved aside: at most 3 are kept, the oldest removed first, each removal said', () => {
    const file = outboxFile('outbox-aside-count-');
    let now = Date.UTC(2024, 5, 1);
    const asides = (): string[] =>
      readdirSync(path.dirname(file))
        .filter((name) => name.startsWith('outbox.db.corrupt-'))
        .sort();
    const removed: string[] = [];
    const moved: string[] = [];
    for (let round = 1; round <= 5; round++) {
      const { outbox, problems } = openOutbox(file, { clock: () => now });
      outbox.append([item(1)]);
      outbox.close();
      for (const p of problems) {
        if (p.reason === 'set-aside-removed') removed.push(p.message);
        if (p.reason === 'corrupt-file-moved-aside') moved.push(/moved it aside as (\S+) and/.exec(p.message)![1]!);
      }
      writeFileSync(file, Buffer.alloc(8192, 0x5a));
      now += 3_600_000;
    }
    const { outbox, problems } = openOutbox(file, { clock: () => now });
    for (const p of problems) {
      if (p.reason === 'set-aside-removed') removed.push(p.message);
      if (p.reason === 'corrupt-file-moved-aside') moved.push(/moved it aside as (\S+) and/.exec(p.message)![1]!);
    }
    assert.equal(moved.length, 5);
    assert.deepEqual(
      asides(),
      moved.slice(2).map((f) => path.basename(f)),
      'the newest 3 kept',
    );
    assert.deepEqual(
      removed,
      moved
        .slice(0, 2)
        .map((f) => `outbox: removed ${f} (8192 bytes, set aside earlier): set-aside files count against outbox.maxBytes and at most 3 are kept`),
    );
    assert.deepEqual(outbox.stats().setAside, { files: 3, bytes: 3 * 8192 });
    outbox.close();
  });

  it('[14.L5] files set aside count against maxBytes: as messages need the room, the oldest set-aside file goes, never a message', () => {
    const file = outboxFile('outbox-aside-bytes-');
    let now = Date.UTC(2024, 5, 1);
    const asideSize = 40_000;
    for (let round = 0; round < 3; round++) {
      openOutbox(file, { clock: () => now }).outbox.close();
      writeFileSync(file, Buffer.alloc(asideSize, 0xa5));
      now += 60_000;
    }
    const maxBytes = 200_000;
    const { outbox, problems } = openOutbox(file, { clock: () => now, maxBytes });
    const aside = (): string[] =>
      problems.filter((p) => p.reason === 'corrupt-file-moved-aside').map((p) => /moved it aside as (\S+) and/.exec(p.message)![1]!);
    assert.equal(aside().length, 1, 'the third moved aside at this open');
    assert.deepEqual(outbox.stats().setAside, { files: 3, bytes: 3 * asideSize }, 'all three fit in maxBytes beside an empty outbox');
    const setAsideNames = readdirSync(path.dirname(file))
      .filter((name) => name.startsWith('outbox.db.corrupt-'))
      .sort();
    const cost = 10_000 + ROW_OVERHEAD_BYTES;
    // [17.seq] The loss notice for the file moved aside at this open waits too, and counts.
    const noticeBytes = outbox.stats().bytes;
    assert.equal(outbox.stats().messages, 1);
    const kept: number[] = [];
    for (let i = 1; i <= 19; i++) {
      outbox.append([item(1, 10_000)]);
      const stats = outbox.stats();
      assert.equal(stats.bytes, i * cost + noticeBytes);
      assert.ok(stats.bytes + stats.setAside.bytes <= maxBytes, `message ${i}: ${stats.bytes} + ${stats.setAside.bytes} > ${maxBytes}`);
      kept.push(stats.setAside.files);
    }
    // 8 messages (80 512 bytes) leave room for 2 of the 40 000-byte files, 12 for 1, 16 for none.
    assert.deepEqual(kept, [3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0]);
    assert.equal(outbox.stats().evicted.count, 0, 'no message made room for a set-aside file');
    assert.deepEqual(
      problems.filter((p) => p.reason === 'set-aside-removed').map((p) => p.message),
      setAsideNames.map(
        (name) =>
          `outbox: removed ${path.join(path.dirname(file), name)} (${asideSize} bytes, set aside earlier): set-aside files count against outbox.maxBytes and at most 3 are kept`,
      ),
      'oldest first',
    );
    outbox.close();
  });
});

function escapeRe(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

describe('SQLite outbox: a full disk and a read-only folder', () => {
  it(
    canMount
      ? '[14.L6] a full disk (a real 512 KiB tmpfs) is said in one line when it starts, a count every minute, one line when writing works again'
      : '[14.L6] a full disk (PRAGMA max_page_count: mounting a tmpfs is not permitted here) is said in one line when it starts, a count every minute, one line when writing works again',
    () => {
      const dir = makeTempDir('outbox-full-fold-');
      const unmount = canMount ? mountTmpfs(dir, '512k') : () => undefined;
      let now = Date.UTC(2024, 5, 1, 12);
      const opened: SqliteOutbox[] = [];
      try {
        const filler = path.join(dir, 'filler');
        if (canMount) writeFileSync(filler, Buffer.alloc(300 * 1024));
        const { outbox, problems } = openOutbox(path.join(dir, 'outbox.db'), {
          clock: () => now,
          ackFlushMs: 60_000,
          ...(canMount ? {} : { maxPageCount: 48 }),
        });
        opened.push(outbox);
        // One append per second, as the data path's write timer does.
        const appendEverySecond = (): number => {
          now += 1000;
          return outbox.append(batch(10, 1000)).rejected;
        };
        let stored = 0;
        while (appendEverySecond() === 0) stored++;
        assert.ok(stored > 0);
        const started = now;
        assert.deepEqual(
          problems.map((p) => [p.reason, p.message]),
          [
            [
              'append-failed',
              'outbox: 10 message(s) rejected: SQLITE_FULL: database or disk is full; while it lasts, failures are counted and reported every 60 s',
            ],
          ],
        );
        assert.equal(problems[0]!.severity, 'error');

        for (let i = 0; i < 59; i++) assert.equal(appendEverySecond(), 10);
        assert.equal(problems.length, 1, `no line per failure:\n${problems.map((p) => p.message).join('\n')}`);

        assert.equal(appendEverySecond(), 10); // 60 s after the first failure
        assert.equal(problems.length, 2);
        assert.equal(
          problems[1]!.message,
          `outbox: writes still failing (SQLITE_FULL): 600 more message(s) rejected in the last 60 s; 610 rejected since ${new Date(started).toISOString()}`,
        );
        assert.equal(problems[1]!.severity, 'error');
        for (let i = 0; i < 30; i++) appendEverySecond();
        assert.equal(problems.length, 2, 'the next count a minute later, not before');

        if (canMount) rmSync(filler);
        else {
          // Without a tmpfs: the quota lifted is the room coming back.
          (outbox as unknown as { file: { db: Database.Database } }).file.db.pragma('max_page_count = 100000');
        }
        assert.equal(appendEverySecond(), 0);
        assert.equal(problems.length, 3);
        assert.equal(problems[2]!.reason, 'write-recovered');
        assert.equal(problems[2]!.message, `outbox: writing works again after 91 s of failures (SQLITE_FULL); 910 message(s) could not be stored meanwhile`);
        assert.equal(problems[2]!.severity, 'warn');
        assert.equal(outbox.stats().rejected, 910, 'every rejected message counted');
        assert.equal(outbox.pending, stored * 10 + 10);

        // A new run of failures starts with its own first line again.
        if (canMount) fillUp(filler);
        else (outbox as unknown as { file: { db: Database.Database } }).file.db.pragma('max_page_count = 48');
        while (appendEverySecond() === 0);
        assert.equal(problems.length, 4);
        assert.match(problems[3]!.message, /^outbox: 10 message\(s\) rejected: SQLITE_FULL/);
      } finally {
        for (const outbox of opened) outbox.close();
        unmount();
      }
    },
  );

  for (const state of ['an outbox already there', 'no outbox yet', 'its folder missing'] as const) {
    it(`[14.L7] a read-only state folder (${state}): the error names outbox.path and the file`, { skip: !canMount && 'mounting is not permitted here' }, () => {
      const root = makeTempDir('outbox-readonly-');
      const dir = path.join(root, 'state');
      mkdirSync(dir);
      const file = state === 'its folder missing' ? path.join(dir, 'var', 'outbox.db') : path.join(dir, 'outbox.db');
      if (state === 'an outbox already there') {
        const { outbox } = openOutbox(file);
        outbox.append([item(1)]);
        outbox.close();
      }
      const writable = makeReadOnly(dir);
      try {
        assert.throws(
          () => openOutbox(file),
          (err: Error) => {
            if (state === 'its folder missing') {
              assert.equal(err.message, `outbox.path: cannot create the folder ${path.dirname(file)} for ${file}: EROFS (${dir} is not writable)`);
            } else if (state === 'no outbox yet') {
              assert.equal(err.message, `outbox.path: cannot create ${file}: the folder ${dir} is not writable (EROFS)`);
            } else {
              assert.equal(
                err.message,
                `outbox.path: cannot open ${file}: SQLITE_CANTOPEN: unable to open database file (the folder ${dir} is not writable (EROFS): SQLite creates outbox.db-wal and -shm beside the file)`,
              );
            }
            return true;
          },
        );
      } finally {
        writable();
      }
    });
  }
});
