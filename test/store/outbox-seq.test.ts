/**
 * The outbox's two numberings and its loss notices, on real database files: the data stream (telemetry, events, loss
 * notices) is contiguous, command results count on their own, nothing takes a number it does not keep (an oversize
 * message, a batch a full disk refuses), a restart and a kill -9 continue exactly; every loss (evicted, expired,
 * refused, the file lost) is announced with exact ranges, merged, capped and coarsened; an outbox file of the previous
 * version opens with every message and its number.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Priority } from '../../src/collect/sample.js';
import { decodeLossNotice, type LossNotice } from '../../src/store/loss-notice.js';
import { ROW_OVERHEAD_BYTES, SqliteOutbox, type OutboxItem } from '../../src/store/outbox.js';
import type { OutboxRecord } from '../../src/store/outbox-queue.js';
import { openOutbox, outboxFile, payloadFor, storedNotices } from '../support/outbox-files.js';
import { seededRandom } from '../support/random.js';
import { canMount, fillUp, mountTmpfs } from '../support/state-files.js';
import { makeTempDir } from '../support/temp.js';
import { delay } from '../support/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const NONE: ReadonlySet<number> = new Set();

function data(priority: Priority, size = 100, createdAt = Date.now()): OutboxItem {
  return { kind: priority % 2 ? 'events' : 'telemetry', priority, createdAt, encode: (seq) => payloadFor(seq, size) };
}

function result(size = 100): OutboxItem {
  return { kind: 'result', priority: 7, createdAt: Date.now(), topic: 'vehicles/car-1/results/r', encode: (seq) => payloadFor(seq, size) };
}

function peekAll(outbox: SqliteOutbox): OutboxRecord[] {
  return outbox.peek(1_000_000, Number.MAX_SAFE_INTEGER, NONE);
}

interface StoredRow {
  id: number;
  seq: number;
  kind: string;
}

/** The rows of the file, read with a separate connection (seq NULL: a message of the previous version, numbered by its id). */
function storedRows(file: string): StoredRow[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[], StoredRow>('SELECT id, coalesce(seq, id) AS seq, kind FROM message ORDER BY id').all();
  } finally {
    db.close();
  }
}

/** The numbers the notices' ranges announce, exact ones and upper bounds apart. */
function announced(notices: readonly LossNotice[]): { exact: number[]; bounds: { first: number; last: number }[] } {
  const exact: number[] = [];
  const bounds: { first: number; last: number }[] = [];
  for (const notice of notices) {
    for (const range of notice.lost) {
      assert.equal(range.count, range.last - range.first + 1, JSON.stringify(range));
      if (range.exact) for (let seq = range.first; seq <= range.last; seq++) exact.push(seq);
      else bounds.push({ first: range.first, last: range.last });
    }
  }
  return { exact: exact.sort((a, b) => a - b), bounds };
}

function range(first: number, last: number): number[] {
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

function reservedData(file: string): { data: number; results: number; lowest: number | undefined } {
  const values = new Map(
    readFileSync(`${file}.seq`, 'utf8')
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => line.split(' ') as [string, string]),
  );
  const lowest = values.get('data-lowest-waiting');
  return { data: Number(values.get('data')), results: Number(values.get('results')), lowest: lowest === undefined ? undefined : Number(lowest) };
}

describe('SQLite outbox: sequence numbers', () => {
  it('[17.seq] telemetry and events are numbered contiguously, command results in their own stream; both continue exactly after a clean restart', () => {
    const file = outboxFile('seq-streams-');
    let { outbox } = openOutbox(file);
    const first = outbox.append([data(1), result(), data(2), data(3), result(), data(0)]);
    const dataSeqs = first.seqs.filter((_, i) => i !== 1 && i !== 4);
    const resultSeqs = [first.seqs[1]!, first.seqs[4]!];
    assert.deepEqual(dataSeqs, range(dataSeqs[0]!, dataSeqs[0]! + 3), 'results took no data number');
    assert.deepEqual(resultSeqs, [resultSeqs[0]!, resultSeqs[0]! + 1]);
    assert.equal(outbox.stats().nextSeq, dataSeqs[3]! + 1, 'the last data number assigned is nextSeq - 1');
    assert.equal(outbox.stats().nextResultSeq, resultSeqs[1]! + 1);
    // Each record carries its stream's number, and its payload was encoded with it.
    for (const record of peekAll(outbox)) assert.equal(new TextDecoder().decode(record.payload.subarray(0, 21)), `seq=${record.seq};`);
    outbox.close();

    ({ outbox } = openOutbox(file));
    const second = outbox.append([result(), data(5), data(5)]);
    assert.deepEqual(second.seqs, [resultSeqs[1]! + 1, dataSeqs[3]! + 1, dataSeqs[3]! + 2], 'no number skipped by the restart');
    // Everything delivered, then a restart: the numbering lives in the file, not in what waits.
    for (const record of peekAll(outbox)) outbox.acknowledge(record.id);
    outbox.close();
    ({ outbox } = openOutbox(file));
    assert.equal(outbox.stats().messages, 0);
    assert.deepEqual(outbox.append([data(1), result()]).seqs, [dataSeqs[3]! + 3, resultSeqs[1]! + 2]);
    outbox.close();
  });

  it('[17.seq] a message too big for the outbox takes no number: the next one gets it', () => {
    const { outbox } = openOutbox(outboxFile('seq-oversize-'), { maxBytes: 1000 });
    const stored = outbox.append([data(1, 200), data(7, 1000), data(1, 300), result(2000), result(100)]);
    assert.equal(stored.rejected, 2);
    assert.deepEqual(stored.seqs.slice(0, 2), [stored.seqs[0]!, stored.seqs[0]! + 1], 'the oversize message left no gap');
    const next = outbox.append([data(1, 100)]).seqs[0]!;
    assert.equal(next, stored.seqs[1]! + 1);
    assert.equal(outbox.stats().nextResultSeq, stored.seqs[2]! + 1, 'the oversize result took none either');
    assert.deepEqual(outbox.stats().losses, { notices: 0, messages: 0, outboxLost: 0 });
    outbox.close();
  });

  it(
    canMount
      ? '[17.seq] a full disk (a real tmpfs) takes no number: the batch is rejected whole and the numbering goes on where it was'
      : '[17.seq] a full disk (PRAGMA max_page_count: mounting is not permitted here) takes no number: the batch is rejected whole and the numbering goes on where it was',
    () => {
      const dir = makeTempDir('seq-full-');
      const unmount = canMount ? mountTmpfs(dir, '512k') : () => undefined;
      let outbox: SqliteOutbox | undefined;
      try {
        const filler = path.join(dir, 'filler');
        if (canMount) writeFileSync(filler, Buffer.alloc(300 * 1024));
        ({ outbox } = openOutbox(path.join(dir, 'outbox.db'), canMount ? {} : { maxPageCount: 48 }));
        const stored: number[] = [];
        let rejected = 0;
        while (rejected === 0) {
          const appended = outbox.append([data(1, 1000), data(2, 1000), result(1000)]);
          rejected = appended.rejected;
          stored.push(...appended.seqs.slice(0, 2));
        }
        assert.ok(stored.length > 0, 'nothing fitted before the disk was full');
        const before = outbox.stats();
        assert.equal(before.nextSeq, stored.at(-1)! + 1);
        for (let i = 0; i < 5; i++) assert.equal(outbox.append([data(1, 1000), result(1000)]).rejected, 2);
        assert.equal(outbox.stats().nextSeq, before.nextSeq, 'no data number used by the rejected batches');
        assert.equal(outbox.stats().nextResultSeq, before.nextResultSeq, 'no result number either');

        if (canMount) rmSync(filler);
        else (outbox as unknown as { file: { db: Database.Database } }).file.db.pragma('max_page_count = 100000');
        const after = outbox.append([data(1, 1000), result(1000)]);
        assert.deepEqual(after.seqs, [before.nextSeq, before.nextResultSeq]);
        assert.deepEqual(outbox.stats().losses, { notices: 0, messages: 0, outboxLost: 0 }, 'a rejected batch is not a loss of stored data');
        if (canMount) fillUp(filler);
      } finally {
        outbox?.close();
        unmount();
      }
    },
  );

  it('[17.seq] kill -9 at 12 random moments (seeded) while evicting, results mixed in: every data number from the first to nextSeq - 1 is waiting or announced, results are contiguous, both continue exactly', async () => {
    const writer = path.join(here, 'outbox-writer.js');
    assert.ok(existsSync(writer), `${writer} missing: run npm run build`);
    const file = outboxFile('seq-kill-');
    const random = seededRandom(20260117);
    // Small enough that most rounds evict (and announce) while they append.
    const maxBytes = 120_000;
    const printedData = new Set<number>();
    const printedResults = new Set<number>();
    /** Results acknowledged after earlier rounds (so they do not fill the outbox), as a backend would have them. */
    const deliveredResults = new Set<number>();
    let firstData: number | undefined;
    let firstResult: number | undefined;
    let evictingRounds = 0;
    for (let round = 0; round < 12; round++) {
      const durability = (['full', 'normal', 'off'] as const)[round % 3]!;
      const child = spawn(process.execPath, [writer, file, durability, String(round + 1), String(maxBytes), 'mixed'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
      await new Promise<void>((resolve) => {
        child.stdout.once('data', () => resolve());
        child.once('close', () => resolve());
      });
      await delay(random() * 150);
      child.kill('SIGKILL');
      await exited;
      assert.equal(stderr, '', `writer reported: ${stderr}`);
      for (const token of stdout.split('\n').slice(0, -1).join(' ').split(' ').filter(Boolean)) {
        const seq = Number(token.slice(2));
        (token.startsWith('r:') ? printedResults : printedData).add(seq);
      }

      // Reopen as the agent would after the crash.
      const { outbox, problems } = openOutbox(file, { maxBytes, maxAgeMs: 365 * 24 * 3600 * 1000 });
      assert.deepEqual(
        problems.map((p) => p.message),
        [],
      );
      const rows = storedRows(file);
      const notices = storedNotices(file);
      if (notices.length > 0) evictingRounds++;
      const waitingData = rows.filter((r) => r.kind !== 'result').map((r) => r.seq);
      const waitingResults = rows.filter((r) => r.kind === 'result').map((r) => r.seq);
      const lost = announced(notices);
      firstData ??= Math.min(...waitingData, ...lost.exact, ...lost.bounds.map((b) => b.first));
      firstResult ??= Math.min(...waitingResults);
      const next = outbox.stats();

      // The data stream: each number from the first to nextSeq - 1 is waiting (a message or a notice) or announced;
      // an exact announcement never names a message that still waits.
      const waitingSet = new Set(waitingData);
      const exactSet = new Set(lost.exact);
      for (const seq of lost.exact) assert.ok(!waitingSet.has(seq), `round ${round}: ${seq} announced lost but waiting`);
      const unaccounted = range(firstData, next.nextSeq - 1).filter(
        (seq) => !waitingSet.has(seq) && !exactSet.has(seq) && !lost.bounds.some((b) => b.first <= seq && seq <= b.last),
      );
      assert.deepEqual(unaccounted.slice(0, 10), [], `round ${round} (${durability}): ${unaccounted.length} data numbers neither waiting nor announced`);
      for (const seq of printedData) assert.ok(seq < next.nextSeq, `round ${round}: committed ${seq} not below nextSeq ${next.nextSeq}`);
      assert.equal(
        Math.max(...waitingData, ...lost.exact, ...lost.bounds.map((b) => b.last)),
        next.nextSeq - 1,
        `round ${round}: nextSeq is not one above the last number used`,
      );

      // The results stream: priority 7 results outlast the data here, so each one is waiting or was delivered.
      const results = new Set([...waitingResults, ...deliveredResults]);
      assert.deepEqual(
        range(firstResult, next.nextResultSeq - 1).filter((seq) => !results.has(seq)),
        [],
        `round ${round}: results not contiguous`,
      );
      for (const seq of printedResults) assert.ok(results.has(seq), `round ${round}: committed result ${seq} lost`);
      for (const record of peekAll(outbox).filter((r) => r.kind === 'result')) {
        outbox.acknowledge(record.id);
        deliveredResults.add(record.seq);
      }

      // Both continue exactly where they were.
      const appended = outbox.append([data(3, 200), result(200)]);
      assert.deepEqual(appended.seqs, [next.nextSeq, next.nextResultSeq]);
      printedData.add(next.nextSeq);
      printedResults.add(next.nextResultSeq);
      outbox.close();
    }
    assert.ok(evictingRounds >= 6, `only ${evictingRounds} of 12 rounds evicted`);
  });
});

describe('SQLite outbox: loss notices', () => {
  it('[17.seq] eviction: the notice names exactly the messages evicted (the lowest priority, oldest first) and is itself the next data number', () => {
    const cost = 100 + ROW_OVERHEAD_BYTES;
    const file = outboxFile('seq-evict-');
    const { outbox } = openOutbox(file, { maxBytes: cost * 20 });
    const priorities: Priority[] = [2, 0, 1, 0, 3, 0, 2, 0, 1, 0, 3, 0, 2, 1, 3, 1, 2, 3, 2, 3];
    const first = outbox.append(priorities.map((p) => data(p))).seqs;
    assert.equal(storedNotices(file).length, 0, 'full, not over: nothing lost');
    const [late] = outbox.append([data(4)]).seqs as [number];

    const [notice, ...more] = storedNotices(file);
    assert.ok(notice);
    assert.equal(more.length, 0);
    assert.equal(notice.seq, late + 1, 'the notice is numbered next in the data stream');
    assert.deepEqual([notice.deviceId, notice.kind], ['car-1', 'loss']);
    const evicted = announced([notice]).exact;
    const priorityZero = first.filter((_, i) => priorities[i] === 0);
    // One message over, plus the notice's own room: the oldest priority-0 messages, as many as that takes.
    assert.ok(evicted.length >= 2, `${evicted.length} evicted`);
    assert.deepEqual(evicted, priorityZero.slice(0, evicted.length), 'the lowest priority, oldest first');
    assert.ok(
      notice.lost.every((r) => r.reason === 'evicted' && r.exact),
      JSON.stringify(notice.lost),
    );
    const stats = outbox.stats();
    assert.equal(stats.evicted.count, evicted.length);
    assert.deepEqual(stats.losses, { notices: 1, messages: evicted.length, outboxLost: 0 });
    assert.ok(stats.bytes <= cost * 20, `${stats.bytes} bytes kept, the notice included`);
    const waiting = new Set(peekAll(outbox).map((r) => r.seq));
    assert.deepEqual(
      range(first[0]!, notice.seq).filter((seq) => !waiting.has(seq)),
      evicted,
      'every other number waits',
    );
    outbox.close();
  });

  it('[17.seq] expiry and eviction in one append: one notice, a range per reason, merged where they touch', () => {
    let now = 1_700_000_000_000;
    const cost = 100 + ROW_OVERHEAD_BYTES;
    const file = outboxFile('seq-both-');
    const { outbox } = openOutbox(file, { maxBytes: cost * 12, maxAgeMs: 60_000, clock: () => now });
    const old = outbox.append([data(1, 100, now), data(1, 100, now), data(1, 100, now)]).seqs;
    now += 30_000;
    const young = outbox.append(Array.from({ length: 9 }, () => data(0, 100, now))).seqs;
    now += 31_000; // the first three are now too old
    const newest = outbox.append(Array.from({ length: 4 }, () => data(5, 100, now))).seqs;
    const [notice] = storedNotices(file);
    assert.ok(notice);
    assert.equal(notice.seq, newest.at(-1)! + 1);
    const expired = notice.lost.filter((r) => r.reason === 'expired');
    const evicted = notice.lost.filter((r) => r.reason === 'evicted');
    assert.deepEqual(expired, [{ first: old[0], last: old[2], count: 3, reason: 'expired', exact: true }]);
    assert.equal(evicted.length, 1, JSON.stringify(notice.lost));
    assert.equal(evicted[0]!.first, young[0], 'the oldest priority-0 ones, in one merged range');
    assert.deepEqual(outbox.stats().losses, { notices: 1, messages: 3 + evicted[0]!.count, outboxLost: 0 });
    outbox.close();
  });

  it("[17.seq] drop (refused for good): a data message's loss is announced as refused, a result's is not, a loss notice is never dropped", () => {
    const file = outboxFile('seq-drop-');
    const { outbox } = openOutbox(file, { ackFlushMs: 60_000 });
    const appended = outbox.append([data(1), data(1), result(), data(2)]);
    const [a, , r] = appended.ids as [number, number, number, number];
    assert.equal(outbox.drop(a), true);
    assert.equal(outbox.drop(r), true);
    const [notice] = storedNotices(file);
    assert.ok(notice);
    assert.deepEqual(notice.lost, [{ first: appended.seqs[0], last: appended.seqs[0], count: 1, reason: 'refused', exact: true }]);
    assert.equal(notice.seq, appended.seqs[3]! + 1);
    assert.deepEqual(
      storedRows(file).map((row) => row.kind),
      ['events', 'telemetry', 'loss'],
    );
    const noticeRecord = peekAll(outbox).find((record) => record.kind === 'loss');
    assert.ok(noticeRecord);
    assert.equal(noticeRecord.priority, 7);
    assert.equal(outbox.drop(noticeRecord.id), false, 'the only record of the loss stays');
    assert.equal(outbox.drop(999_999), true, 'unknown: gone already');
    assert.deepEqual(outbox.stats().losses, { notices: 1, messages: 1, outboxLost: 0 });
    assert.equal(outbox.stats().dropped, 2);
    outbox.close();
  });

  it('[17.seq] until a notice is handed out (peek), further losses are merged into it (same number, re-encoded); after that a new notice starts', () => {
    const file = outboxFile('seq-merge-');
    const { outbox } = openOutbox(file);
    const appended = outbox.append(Array.from({ length: 8 }, () => data(1)));
    const s = appended.seqs;
    const id = appended.ids;
    outbox.drop(id[2]!);
    outbox.drop(id[4]!);
    outbox.drop(id[3]!); // joins the two into one range
    let notices = storedNotices(file);
    assert.equal(notices.length, 1);
    assert.deepEqual(notices[0]!.lost, [{ first: s[2], last: s[4], count: 3, reason: 'refused', exact: true }]);
    const firstNotice = notices[0]!.seq;
    assert.equal(firstNotice, s[7]! + 1);

    // Handed out: a backend may have it as it is, so it never changes again.
    const [handed] = outbox.peek(1, Number.MAX_SAFE_INTEGER, NONE);
    assert.ok(handed);
    assert.equal(handed.seq, firstNotice);
    const sent = Buffer.from(handed.payload).toString('utf8');
    outbox.drop(id[5]!);
    notices = storedNotices(file);
    assert.equal(notices.length, 2);
    assert.equal(JSON.stringify(notices[0]), JSON.stringify(decodeLossNotice(Buffer.from(sent))), 'the notice handed out is unchanged');
    assert.deepEqual(notices[1]!.lost, [{ first: s[5], last: s[5], count: 1, reason: 'refused', exact: true }]);
    assert.equal(notices[1]!.seq, firstNotice + 1);
    assert.deepEqual(outbox.stats().losses, { notices: 2, messages: 4, outboxLost: 0 });
    outbox.close();
  });

  it('[17.seq] a notice waiting at a restart is never changed again (it may have been sent before a crash): the next loss starts a new one', () => {
    const file = outboxFile('seq-restart-notice-');
    let { outbox } = openOutbox(file);
    const appended = outbox.append(Array.from({ length: 4 }, () => data(1)));
    outbox.drop(appended.ids[0]!);
    outbox.close();
    ({ outbox } = openOutbox(file));
    const [id1] = peekAll(outbox)
      .filter((r) => r.kind !== 'loss')
      .map((r) => r.id);
    outbox.drop(id1!);
    const notices = storedNotices(file);
    assert.equal(notices.length, 2);
    assert.deepEqual(
      notices.map((n) => n.lost.map((r) => [r.first, r.last])),
      [[[appended.seqs[0], appended.seqs[0]]], [[appended.seqs[1], appended.seqs[1]]]],
    );
    assert.equal(notices[1]!.seq, notices[0]!.seq + 1);
    outbox.close();
  });

  it('[17.seq] past 256 ranges a second notice starts; once the notices take their share of maxBytes (1/16), the open one is coarsened into upper bounds', () => {
    const file = outboxFile('seq-cap-');
    let { outbox } = openOutbox(file, { maxBytes: 100_000_000 });
    let appended = outbox.append(Array.from({ length: 600 }, () => data(1, 10)));
    // Every other one refused: 300 ranges of one number each, none touching.
    for (let i = 0; i < 600; i += 2) outbox.drop(appended.ids[i]!);
    let notices = storedNotices(file);
    assert.deepEqual(
      notices.map((n) => n.lost.length),
      [256, 44],
    );
    assert.deepEqual(
      announced(notices).exact,
      appended.seqs.filter((_, i) => i % 2 === 0),
    );
    assert.equal(notices[1]!.seq, notices[0]!.seq + 1, 'the second notice numbered right after the first');
    outbox.close();

    // A small outbox: 200 000 bytes leave the notices 12 500, room for one notice of 111 ranges.
    const small = outboxFile('seq-coarse-');
    ({ outbox } = openOutbox(small, { maxBytes: 200_000 }));
    appended = outbox.append(Array.from({ length: 300 }, () => data(1, 10)));
    const dropped = appended.seqs.filter((_, i) => i % 2 === 0);
    for (let i = 0; i < 300; i += 2) outbox.drop(appended.ids[i]!);
    notices = storedNotices(small);
    assert.equal(notices.length, 1, 'no second notice beyond the share');
    const ranges = notices[0]!.lost;
    assert.equal(ranges.length, 111);
    const lost = announced(notices);
    const covered = (seq: number): boolean => lost.exact.includes(seq) || lost.bounds.some((b) => b.first <= seq && seq <= b.last);
    for (const seq of dropped) assert.ok(covered(seq), `${seq} dropped but not announced`);
    const waiting = new Set(
      peekAll(outbox)
        .filter((r) => r.kind !== 'loss')
        .map((r) => r.seq),
    );
    for (const seq of lost.exact) assert.ok(!waiting.has(seq), `${seq} announced exactly but waiting`);
    assert.ok(lost.bounds.length > 0, 'some ranges coarsened');
    for (const bound of lost.bounds) assert.ok(ranges.some((r) => r.first === bound.first && r.exact === false && r.reason === 'refused'));
    assert.ok(outbox.stats().bytes <= 200_000);
    outbox.close();
  });

  it('[17.seq] an outbox deleted while the agent was stopped: an error at start, and a notice from the lowest number that may have waited (the sidecar) to the last that can have been handed out', () => {
    const file = outboxFile('seq-missing-');
    let { outbox, problems } = openOutbox(file);
    const appended = outbox.append(Array.from({ length: 10 }, () => data(1)));
    for (const id of appended.ids.slice(0, 4)) outbox.acknowledge(id);
    outbox.close();
    // Without its sidecar at a start, the first append writes it again, with the lowest number then waiting.
    unlinkSync(`${file}.seq`);
    ({ outbox, problems } = openOutbox(file));
    assert.deepEqual(problems, []);
    const more = outbox.append([data(2)]).seqs;
    assert.equal(reservedData(file).lowest, appended.seqs[4]);
    outbox.close();
    const reserved = reservedData(file);
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });

    ({ outbox, problems } = openOutbox(file));
    assert.deepEqual(
      problems.map((p) => [p.reason, p.severity]),
      [['missing-at-open', 'error']],
    );
    assert.match(
      problems[0]!.message,
      /^outbox: .*outbox\.db was missing at start although .*outbox\.db\.seq shows there was an outbox: the messages it held were lost/,
    );
    const [notice] = storedNotices(file);
    assert.ok(notice);
    assert.ok(notice.seq >= reserved.data, 'numbered above everything the old file can have handed out');
    assert.deepEqual(notice.lost, [
      { first: appended.seqs[4], last: notice.seq - 1, count: notice.seq - appended.seqs[4]!, reason: 'outbox-lost', exact: false },
    ]);
    assert.ok(notice.lost[0]!.last >= more[0]!);
    assert.deepEqual(outbox.stats().losses, { notices: 1, messages: 0, outboxLost: 1 });
    assert.equal(outbox.append([data(1)]).seqs[0], notice.seq + 1);
    outbox.close();

    // A first start (no sidecar, no file) announces nothing.
    const fresh = openOutbox(outboxFile('seq-first-'));
    assert.deepEqual(fresh.problems, []);
    assert.equal(fresh.outbox.stats().messages, 0);
    fresh.outbox.close();
  });
});

describe('SQLite outbox: a power cut', () => {
  const thisBoot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const otherBoot = '00000000-0000-4000-8000-000000000000';

  /** An outbox with 6 data messages, closed, then left as a power cut could leave it: the run still open in `boot`. */
  function leftOpen(prefix: string, boot: string, lostCommits: number): { file: string; seqs: number[]; reserved: number } {
    const file = outboxFile(prefix);
    const { outbox } = openOutbox(file);
    const seqs = outbox.append(Array.from({ length: 6 }, () => data(1))).seqs;
    outbox.close();
    assert.match(readFileSync(`${file}.seq`, 'utf8'), /\nrun closed\n$/, 'a clean close says so');
    writeFileSync(`${file}.seq`, readFileSync(`${file}.seq`, 'utf8').replace('run closed', `run open ${boot}`));
    if (lostCommits > 0) {
      // What durability normal may lose at a power cut: the last commits, rows and counter together.
      const db = new Database(file);
      db.prepare('DELETE FROM message WHERE seq > ?').run(seqs.at(-1 - lostCommits)!);
      db.prepare("UPDATE meta SET value = value - ? WHERE key = 'next_data_seq'").run(lostCommits);
      db.close();
    }
    return { file, seqs, reserved: reservedData(file).data };
  }

  it('[17.seq] the last run still open in another boot (a power cut), durability normal: numbering continues above everything it can have handed out, and a notice announces the numbers that may be gone', () => {
    const { file, seqs, reserved } = leftOpen('seq-power-', otherBoot, 2);
    const { outbox, problems } = openOutbox(file, { durability: 'normal' });
    assert.deepEqual(
      problems.map((p) => [p.reason, p.severity]),
      [['unclean-stop', 'warn']],
    );
    assert.match(
      problems[0]!.message,
      /^outbox: the last run stopped without closing .*outbox\.db \(a power cut or a crash of the machine\), and durability 'normal' may have lost its last commits/,
    );
    const [notice] = storedNotices(file);
    assert.ok(notice);
    // The two numbers the file lost (maybe sent already: never to be reused) and the rest of the reservation.
    assert.deepEqual(notice.lost, [{ first: seqs[4], last: reserved - 1, count: reserved - seqs[4]!, reason: 'outbox-lost', exact: false }]);
    assert.equal(notice.seq, reserved);
    assert.equal(outbox.append([data(1)]).seqs[0], reserved + 1);
    assert.deepEqual(outbox.stats().losses, { notices: 1, messages: 0, outboxLost: 1 });
    outbox.close();
  });

  for (const [what, boot, durability] of [
    ['a kill -9 (the same boot)', thisBoot, 'normal'],
    ['another boot with durability full (every commit on disk)', otherBoot, 'full'],
  ] as const) {
    it(`[17.seq] the last run still open after ${what}: numbering continues exactly, nothing announced`, () => {
      const { file, seqs } = leftOpen('seq-power-ok-', boot, 0);
      const { outbox, problems } = openOutbox(file, { durability });
      assert.deepEqual(problems, []);
      assert.equal(outbox.append([data(1)]).seqs[0], seqs.at(-1)! + 1);
      assert.equal(storedNotices(file).length, 0);
      outbox.close();
    });
  }
});

describe('SQLite outbox: a file of the previous version', () => {
  it('[17.seq] opens with every waiting message and its number (rowid = seq, one counter, a one-number sidecar); both streams continue above it; the sidecar is rewritten in the new format', () => {
    const file = outboxFile('seq-migrate-');
    // Made as the previous version made it (src/store/outbox.ts before the two numberings).
    const old = new Database(file);
    old.pragma('journal_mode = WAL');
    old.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE message (seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL, kind TEXT NOT NULL, created_at INTEGER NOT NULL,
        payload BLOB NOT NULL, topic TEXT, correlation BLOB);
      CREATE INDEX message_send_order ON message (priority DESC, seq);
      CREATE INDEX message_age ON message (created_at);
    `);
    const base = 1_767_225_600_000_000;
    const now = Date.now();
    const insert = old.prepare('INSERT INTO message (seq, priority, kind, created_at, payload, topic, correlation) VALUES (?, ?, ?, ?, ?, ?, ?)');
    const rows: [number, number, string, string | null][] = [
      [base + 3, 7, 'result', 'vehicles/car-1/results/x'],
      [base + 4, 2, 'telemetry', null],
      [base + 5, 6, 'events', null],
      [base + 9, 2, 'telemetry', null],
    ];
    for (const [seq, priority, kind, topic] of rows)
      insert.run(seq, priority, kind, now, Buffer.from(payloadFor(seq, 50)), topic, topic ? Buffer.from('c') : null);
    old.prepare("INSERT INTO meta VALUES ('next_seq', ?)").run(base + 10);
    old.close();
    writeFileSync(`${file}.seq`, `${base + 100_010}\n`);

    const { outbox, problems } = openOutbox(file);
    assert.deepEqual(problems, []);
    const records = peekAll(outbox);
    assert.deepEqual(
      records.map((r) => [r.seq, r.kind, r.priority]),
      [
        [base + 3, 'result', 7],
        [base + 5, 'events', 6],
        [base + 4, 'telemetry', 2],
        [base + 9, 'telemetry', 2],
      ],
    );
    for (const record of records) assert.equal(new TextDecoder().decode(record.payload.subarray(0, 21)), `seq=${record.seq};`);
    assert.equal(records[0]!.topic, 'vehicles/car-1/results/x');
    assert.deepEqual(outbox.stats().losses, { notices: 0, messages: 0, outboxLost: 0 }, 'nothing was lost');
    assert.deepEqual([outbox.stats().nextSeq, outbox.stats().nextResultSeq], [base + 10, base + 10]);

    // Both streams continue above the old counter; a migrated message is acknowledged by its id like any other.
    const appended = outbox.append([data(1), result(), data(1)]);
    assert.deepEqual(appended.seqs, [base + 10, base + 10, base + 11]);
    outbox.acknowledge(records[2]!.id);
    outbox.flushAcknowledgements();
    assert.deepEqual(
      storedRows(file).map((r) => r.seq),
      [base + 3, base + 5, base + 9, base + 10, base + 10, base + 11],
    );
    const sidecar = reservedData(file);
    assert.ok(sidecar.data >= base + 100_010 && sidecar.results >= base + 100_010, JSON.stringify(sidecar));
    assert.equal(sidecar.lowest, base + 4, 'the lowest data number waiting when it was written (the result below it is not data)');
    outbox.close();

    // The migrated file opens again as it is.
    const again = openOutbox(file);
    assert.deepEqual(again.problems, []);
    assert.equal(peekAll(again.outbox).length, 6);
    again.outbox.close();
  });
});
