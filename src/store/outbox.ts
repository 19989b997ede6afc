/**
 * The SQLite outbox: every encoded message is committed here before the uplink may publish it, and deleted only once
 * the broker has acknowledged it, so a kill -9 or a power cut loses nothing that `append` returned.
 *
 * Layout: one `message` row per message (the sequence number is the rowid), one `meta` row holding the next sequence
 * number. An index on (priority DESC, seq) serves both the send order and the eviction order (one priority at a time,
 * oldest first); an index on created_at serves age expiry.
 *
 * Flash wear: a whole batch is one transaction (WAL frames for the touched pages only); acknowledgements are gathered
 * and deleted together, riding on the next append's transaction or a timer, whichever comes first.
 */
import Database from 'better-sqlite3';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Priority } from '../collect/sample.js';
import { MAX_PRIORITY, MIN_PRIORITY } from '../collect/sample.js';
import { DiskWriteMeter, type DiskWriteSource } from './disk-usage.js';
import type { OutboxKind, OutboxQueue, OutboxRecord, SeqFilter } from './outbox-queue.js';

/**
 * How hard a commit is pushed to the disk (PRAGMA synchronous, always with the WAL journal):
 *  - 'full': the WAL is fsynced at every commit: a committed batch survives a power cut.
 *  - 'normal' (default): the WAL is fsynced only at checkpoints: a power cut may lose the last few committed batches,
 *    but the database is never corrupted; a process crash (kill -9) loses nothing, the OS holds the writes.
 *  - 'off': no fsync at all: survives a process crash only; a power cut may lose recent batches or corrupt the file
 *    (which the next open then moves aside).
 */
export type Durability = 'full' | 'normal' | 'off';

/**
 * What a message is counted as against `maxBytes` besides its payload: the table cell (rowid, record header, priority,
 * kind, created_at), the entries in the two indexes and the page slack around them. An estimate: the database file
 * also holds free pages and overflow-page tails.
 */
export const ROW_OVERHEAD_BYTES = 64;

/** Sequence numbers reserved in the sidecar file at a time (one small fsynced file write per block). */
const SEQ_RESERVE_BLOCK = 100_000;

/** 1000 pages of 4 KiB: hot pages (meta, index tails) rewritten by many batches reach the database file once per
 * checkpoint, not once per batch. */
const WAL_AUTOCHECKPOINT_PAGES = 1000;
/** The WAL file is cut back to this size after a checkpoint, so it does not keep a burst's size on a small disk. */
const JOURNAL_SIZE_LIMIT_BYTES = 8 * 1024 * 1024;
const DEFAULT_ACK_FLUSH_MS = 500;

export interface OutboxOptions {
  path: string;
  /** Payload plus ROW_OVERHEAD_BYTES per message, summed over the messages kept. */
  maxBytes: number;
  /** Messages created longer ago are deleted at the next append (counted as expired). */
  maxAgeMs: number;
  durability?: Durability;
  /** Unix milliseconds; Date.now by default. */
  clock?: () => number;
  /** Problems the outbox handled itself (corrupt file moved aside, a batch rejected on a full disk...). */
  onProblem?: (err: OutboxError) => void;
  /** Acknowledgements are deleted together at most this long after the first of them (default 500 ms). */
  ackFlushMs?: number;
  /** Caps the database file at this many pages (PRAGMA max_page_count): a hard quota below the filesystem's. */
  maxPageCount?: number;
}

export interface OutboxItem {
  kind: OutboxKind;
  priority: Priority;
  /** Unix milliseconds. */
  createdAt: number;
  /** The encoded message, given the sequence number it must carry. */
  encode(seq: number): Uint8Array;
  /** Its own topic (command results), instead of the kind's. */
  topic?: string;
  /** MQTT 5 correlation data to publish it with. */
  correlation?: Uint8Array;
}

export interface AppendResult {
  /** Sequence numbers of the messages stored, in the order given (a message evicted by a later one of the same batch
   * included). */
  seqs: number[];
  /** Messages not stored: the whole batch on a write failure, or single messages too big for the outbox. */
  rejected: number;
}

export interface EvictionCount {
  count: number;
  /** Counted as against maxBytes: payload plus ROW_OVERHEAD_BYTES per message. */
  bytes: number;
}

export interface OutboxStats {
  /** Messages waiting (acknowledged ones excluded even before their deletion is flushed). */
  messages: number;
  /** Their size as counted against maxBytes. */
  bytes: number;
  oldestCreatedAt: number | undefined;
  /** The sequence number the next stored message gets. */
  nextSeq: number;
  /** The counters below count since open. */
  appended: number;
  acknowledged: number;
  evicted: EvictionCount & { byPriority: EvictionCount[] };
  expired: number;
  /** Messages refused by append: write failures and oversize messages. */
  rejected: number;
  rejectedOversize: number;
  corruptFilesMovedAside: number;
  lastProblem: { at: number; message: string } | undefined;
  /** Bytes the outbox wrote to disk (see disk-usage.ts), and that divided by the messages appended. */
  diskWrites: { bytes: number; source: DiskWriteSource; perAppendedMessage: number };
}

export type OutboxErrorReason = 'corrupt-file-moved-aside' | 'append-failed' | 'acknowledge-failed';

export class OutboxError extends Error {
  constructor(
    readonly reason: OutboxErrorReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'OutboxError';
  }
}

interface MessageRow {
  seq: number;
  kind: string;
  priority: number;
  created_at: number;
  payload: Buffer;
  topic: string | null;
  correlation: Buffer | null;
}

interface SizeRow {
  seq: number;
  size: number;
}

/** Thrown when PRAGMA quick_check finds damage SQLite did not report as an error. */
class DamagedDatabase extends Error {}

/** Carries an exception from an item's encode out of the transaction, so it is not mistaken for a disk failure. */
class EncodeFailure {
  constructor(readonly cause: unknown) {}
}

function isCorruption(err: unknown): boolean {
  if (err instanceof DamagedDatabase) return true;
  if (!(err instanceof Database.SqliteError)) return false;
  return err.code.startsWith('SQLITE_CORRUPT') || err.code === 'SQLITE_NOTADB' || err.code === 'SQLITE_IOERR_SHORT_READ';
}

/** Errors of the disk or the database file: an append or flush that hits one is given up, the outbox carries on. */
function isStorageFailure(err: unknown): boolean {
  if (err instanceof Database.SqliteError) return true;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}

function describe(err: unknown): string {
  if (err instanceof Database.SqliteError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

function toKind(kind: string): OutboxKind {
  if (kind === 'telemetry' || kind === 'events' || kind === 'result') return kind;
  throw new Error(`outbox: unknown message kind '${kind}' in the database`);
}

function toPriority(priority: number): Priority {
  if (Number.isInteger(priority) && priority >= MIN_PRIORITY && priority <= MAX_PRIORITY) return priority as Priority;
  throw new Error(`outbox: priority ${priority} out of range in the database`);
}

/**
 * The sidecar `<path>.seq` holds a number above every sequence number handed out. It outlives the database file, so a
 * fresh database (after corruption, or a deleted file) continues above the old sequence instead of starting over.
 */
function readSeqSidecar(file: string): number {
  try {
    const value = Number(readFileSync(file, 'utf8').trim());
    return Number.isSafeInteger(value) && value > 0 ? value : 0;
  } catch {
    return 0;
  }
}

function writeSeqSidecar(file: string, value: number): void {
  // Write-then-rename, both fsynced: a power cut leaves either the old or the new number, never a torn one.
  const temp = `${file}.tmp`;
  writeFileSync(temp, `${value}\n`);
  const fd = openSync(temp, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, file);
  const dir = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** Best effort: the next sequence number recorded in a database that was moved aside (0 when it cannot be read). */
function readSeqFromDamaged(file: string): number {
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const meta = db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'next_seq'").get();
    const max = db.prepare<[], { seq: number | null }>('SELECT max(seq) AS seq FROM message').get();
    return Math.max(meta?.value ?? 0, (max?.seq ?? 0) + 1);
  } catch {
    return 0;
  } finally {
    try {
      db?.close();
    } catch {
      // a damaged file may fail to close cleanly; nothing left to do with it
    }
  }
}

/** Renames the database and its -wal/-shm to `<path>.corrupt-<timestamp>[-wal|-shm]`; returns the new name. */
function moveAside(file: string, now: number): string {
  const stamp = new Date(now).toISOString().replace(/[:.]/g, '-');
  let aside = `${file}.corrupt-${stamp}`;
  for (let n = 1; existsSync(aside); n++) aside = `${file}.corrupt-${stamp}-${n}`;
  for (const suffix of ['', '-wal', '-shm']) {
    if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
  }
  return aside;
}

const SYNCHRONOUS: Record<Durability, string> = { full: 'FULL', normal: 'NORMAL', off: 'OFF' };

/** Opens and checks the file, creating the schema if needed; throws (having closed it) if it is damaged. */
function openChecked(file: string, options: OutboxOptions): Database.Database {
  const db = new Database(file);
  try {
    // The first statement reads the header: garbage fails here with SQLITE_NOTADB.
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new Error(`outbox: ${file}: the WAL journal is not available (journal_mode is ${String(mode)})`);
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new DamagedDatabase(`quick_check: ${String(check)}`);
    db.pragma(`synchronous = ${SYNCHRONOUS[options.durability ?? 'normal']}`);
    db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
    db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT_BYTES}`);
    if (options.maxPageCount !== undefined) db.pragma(`max_page_count = ${options.maxPageCount}`);
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS message (
        seq INTEGER PRIMARY KEY,
        priority INTEGER NOT NULL,
        kind TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        payload BLOB NOT NULL,
        topic TEXT,
        correlation BLOB
      );
      CREATE INDEX IF NOT EXISTS message_send_order ON message (priority DESC, seq);
      CREATE INDEX IF NOT EXISTS message_age ON message (created_at);
    `);
    migrate(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Brings a file written by an older agent up to the current layout, in place: version 2 added the `topic` and
 * `correlation` columns (command results). Added as nullable columns, so the messages already stored stay as
 * they are and go to their kind's topic.
 */
function migrate(db: Database.Database): void {
  const columns = new Set(db.prepare<[], { name: string }>('PRAGMA table_info(message)').all().map((c) => c.name));
  db.transaction(() => {
    if (!columns.has('topic')) db.exec('ALTER TABLE message ADD COLUMN topic TEXT');
    if (!columns.has('correlation')) db.exec('ALTER TABLE message ADD COLUMN correlation BLOB');
  })();
}

export class SqliteOutbox implements OutboxQueue {
  private readonly listeners = new Set<() => void>();
  private readonly meter = new DiskWriteMeter();
  /** Acknowledged messages not yet deleted from the file, with their counted size: hidden from peek and pending. */
  private readonly pendingAcks = new Map<number, number>();
  private ackTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private storedCount: number;
  private storedBytes: number;
  private nextSeq: number;
  private seqReservedUpTo: number;

  private appended = 0;
  private acknowledged = 0;
  private readonly evicted = { count: 0, bytes: 0, byPriority: Array.from({ length: MAX_PRIORITY + 1 }, () => ({ count: 0, bytes: 0 })) };
  private expired = 0;
  private rejected = 0;
  private rejectedOversize = 0;
  private corruptFilesMovedAside = 0;
  private lastProblem: { at: number; message: string } | undefined;

  private readonly insertMessage: Database.Statement<[number, number, string, number, Uint8Array, string | null, Uint8Array | null]>;
  private readonly deleteMessage: Database.Statement<[number]>;
  private readonly messageSize: Database.Statement<[number], { size: number }>;
  private readonly sendOrder: Database.Statement<[], { seq: number }>;
  private readonly messageBySeq: Database.Statement<[number], MessageRow>;
  private readonly evictionOrder: Database.Statement<[number], SizeRow>;
  private readonly deleteExpired: Database.Statement<[number], { priority: number; size: number }>;
  private readonly oldest: Database.Statement<[], { oldest: number | null }>;
  private readonly ageOrder: Database.Statement<[], { seq: number; created_at: number }>;
  private readonly writeNextSeq: Database.Statement<[number]>;
  private readonly appendTransaction: (items: readonly OutboxItem[], now: number) => AppendOutcome;
  private readonly flushAcksInTransaction: () => void;
  private readonly flushAcksTransaction: () => void;

  static open(options: OutboxOptions): SqliteOutbox {
    if (!(options.maxBytes > 0)) throw new RangeError('outbox: maxBytes must be positive');
    if (!(options.maxAgeMs > 0)) throw new RangeError('outbox: maxAgeMs must be positive');
    const clock = options.clock ?? Date.now;
    let db: Database.Database;
    let moved: { aside: string; error: OutboxError; seqInAside: number } | undefined;
    try {
      db = openChecked(options.path, options);
    } catch (err) {
      if (!isCorruption(err)) throw err;
      const aside = moveAside(options.path, clock());
      const error = new OutboxError(
        'corrupt-file-moved-aside',
        `outbox: ${options.path} is corrupt or not a database (${describe(err)}); moved it aside as ${aside} and started an empty outbox`,
        { cause: err },
      );
      moved = { aside, error, seqInAside: readSeqFromDamaged(aside) };
      db = openChecked(options.path, options);
    }
    const outbox = new SqliteOutbox(db, options, moved?.seqInAside ?? 0);
    if (moved) {
      outbox.corruptFilesMovedAside++;
      outbox.report(moved.error);
    }
    return outbox;
  }

  private constructor(
    private readonly db: Database.Database,
    private readonly options: OutboxOptions,
    seqInMovedAsideFile: number,
  ) {
    this.insertMessage = db.prepare('INSERT INTO message (seq, priority, kind, created_at, payload, topic, correlation) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.deleteMessage = db.prepare('DELETE FROM message WHERE seq = ?');
    this.messageSize = db.prepare('SELECT length(payload) AS size FROM message WHERE seq = ?');
    // The walk in send order reads the index only; payloads are read for the messages actually handed out, not for
    // the in-flight ones skipped on the way (a window's worth at every peek).
    this.sendOrder = db.prepare('SELECT seq FROM message ORDER BY priority DESC, seq ASC');
    this.messageBySeq = db.prepare('SELECT seq, kind, priority, created_at, payload, topic, correlation FROM message WHERE seq = ?');
    this.evictionOrder = db.prepare('SELECT seq, length(payload) AS size FROM message WHERE priority = ? ORDER BY seq ASC');
    this.deleteExpired = db.prepare('DELETE FROM message WHERE created_at < ? RETURNING priority, length(payload) AS size');
    this.oldest = db.prepare('SELECT min(created_at) AS oldest FROM message');
    this.ageOrder = db.prepare('SELECT seq, created_at FROM message ORDER BY created_at ASC');
    this.writeNextSeq = db.prepare("INSERT INTO meta (key, value) VALUES ('next_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");

    const totals = db
      .prepare<[], { count: number; payload: number | null; maxSeq: number | null }>(
        'SELECT count(*) AS count, sum(length(payload)) AS payload, max(seq) AS maxSeq FROM message',
      )
      .get();
    this.storedCount = totals?.count ?? 0;
    this.storedBytes = (totals?.payload ?? 0) + this.storedCount * ROW_OVERHEAD_BYTES;
    this.seqReservedUpTo = readSeqSidecar(this.sidecarPath);

    const stored = db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'next_seq'").get()?.value;
    if (stored === undefined) {
      // A new database. Continue above everything this device may have numbered before: the sidecar's reservation,
      // the moved-aside file if it was still readable, and a wall-clock floor of ms × 1000 (a device cannot have
      // stored 1000 messages per millisecond since any earlier database was created, so the floor is above them
      // too; it covers a lost sidecar as long as the clock is set). Gaps are harmless: consumers only need
      // sequence numbers never to repeat.
      const clockFloor = Math.floor(this.now()) * 1000;
      this.nextSeq = Math.max(1, this.seqReservedUpTo, seqInMovedAsideFile, Number.isSafeInteger(clockFloor) ? clockFloor : 0);
      this.writeNextSeq.run(this.nextSeq);
    } else {
      this.nextSeq = Math.max(stored, (totals?.maxSeq ?? 0) + 1);
    }

    this.flushAcksInTransaction = () => {
      for (const seq of this.pendingAcks.keys()) this.deleteMessage.run(seq);
    };
    this.flushAcksTransaction = db.transaction(this.flushAcksInTransaction);
    this.appendTransaction = db.transaction((items: readonly OutboxItem[], now: number) => this.appendInTransaction(items, now));
  }

  private get sidecarPath(): string {
    return `${this.options.path}.seq`;
  }

  private now(): number {
    return (this.options.clock ?? Date.now)();
  }

  private report(error: OutboxError): void {
    this.lastProblem = { at: this.now(), message: error.message };
    this.options.onProblem?.(error);
  }

  /**
   * Stores a batch in one transaction, numbering each message, then enforces the age and size bounds. On a full
   * disk or an I/O error the whole batch is rejected and reported, never thrown; the next append simply tries again.
   */
  append(items: readonly OutboxItem[]): AppendResult {
    if (this.closed) throw new Error('outbox: append after close');
    if (items.length === 0) return { seqs: [], rejected: 0 };
    const now = this.now();
    try {
      const outcome = this.meter.measure(() => {
        this.reserveSeqs(items.length);
        return this.appendTransaction(items, now);
      });
      this.commitOutcome(outcome);
      if (outcome.seqs.length > 0) this.notifyAppend();
      return { seqs: outcome.seqs, rejected: outcome.oversize };
    } catch (err) {
      if (err instanceof EncodeFailure) throw err.cause;
      if (!isStorageFailure(err)) throw err;
      this.rejected += items.length;
      this.report(new OutboxError('append-failed', `outbox: ${items.length} message(s) rejected: ${describe(err)}`, { cause: err }));
      return { seqs: [], rejected: items.length };
    }
  }

  /** Before numbering past the sidecar's reservation, raise it on disk, so the sidecar is always ahead. */
  private reserveSeqs(count: number): void {
    const needed = this.nextSeq + count;
    if (needed <= this.seqReservedUpTo) return;
    const reserve = needed + SEQ_RESERVE_BLOCK;
    writeSeqSidecar(this.sidecarPath, reserve);
    this.seqReservedUpTo = reserve;
  }

  private appendInTransaction(items: readonly OutboxItem[], now: number): AppendOutcome {
    // Work on copies: the in-memory totals change only once the transaction has committed.
    let count = this.storedCount;
    let bytes = this.storedBytes;
    let nextSeq = this.nextSeq;
    const outcome: AppendOutcome = { seqs: [], oversize: 0, expired: 0, evicted: [], count: 0, bytes: 0, nextSeq: 0, acksFlushed: false };

    if (this.pendingAcks.size > 0) {
      this.flushAcksInTransaction();
      for (const size of this.pendingAcks.values()) bytes -= size;
      count -= this.pendingAcks.size;
      outcome.acksFlushed = true;
    }

    for (const item of items) {
      const seq = nextSeq++;
      let payload: Uint8Array;
      try {
        payload = item.encode(seq);
      } catch (err) {
        throw new EncodeFailure(err);
      }
      const size = payload.byteLength + ROW_OVERHEAD_BYTES;
      if (size > this.options.maxBytes) {
        // Its sequence number stays unused: a gap, never a repeat.
        outcome.oversize++;
        continue;
      }
      this.insertMessage.run(seq, item.priority, item.kind, item.createdAt, payload, item.topic ?? null, item.correlation ? toBuffer(item.correlation) : null);
      outcome.seqs.push(seq);
      count++;
      bytes += size;
    }
    this.writeNextSeq.run(nextSeq);

    // Expiry after the inserts: a message already too old when appended goes at once, counted as expired.
    const cutoff = now - this.options.maxAgeMs;
    const oldest = this.oldest.get()?.oldest;
    if (oldest !== null && oldest !== undefined && oldest < cutoff) {
      for (const row of this.deleteExpired.all(cutoff)) {
        outcome.expired++;
        count--;
        bytes -= row.size + ROW_OVERHEAD_BYTES;
      }
    }

    if (bytes > this.options.maxBytes) {
      const victims = this.chooseEvictions(bytes - this.options.maxBytes);
      for (const victim of victims) {
        this.deleteMessage.run(victim.seq);
        count--;
        bytes -= victim.bytes;
      }
      outcome.evicted = victims;
    }

    outcome.count = count;
    outcome.bytes = bytes;
    outcome.nextSeq = nextSeq;
    return outcome;
  }

  /** Lowest priority first, oldest (lowest seq) first within a priority, until `excess` bytes are freed. */
  private chooseEvictions(excess: number): Victim[] {
    const victims: Victim[] = [];
    let freed = 0;
    for (let priority = MIN_PRIORITY; priority <= MAX_PRIORITY && freed < excess; priority++) {
      // Collected first, deleted after: the connection cannot run a DELETE while this query is being stepped.
      for (const row of this.evictionOrder.iterate(priority)) {
        const bytes = row.size + ROW_OVERHEAD_BYTES;
        victims.push({ seq: row.seq, priority, bytes });
        freed += bytes;
        if (freed >= excess) break;
      }
    }
    return victims;
  }

  private commitOutcome(outcome: AppendOutcome): void {
    if (outcome.acksFlushed) this.pendingAcks.clear();
    this.storedCount = outcome.count;
    this.storedBytes = outcome.bytes;
    this.nextSeq = outcome.nextSeq;
    this.appended += outcome.seqs.length;
    this.rejected += outcome.oversize;
    this.rejectedOversize += outcome.oversize;
    this.expired += outcome.expired;
    for (const victim of outcome.evicted) {
      this.evicted.count++;
      this.evicted.bytes += victim.bytes;
      const byPriority = this.evicted.byPriority[victim.priority]!;
      byPriority.count++;
      byPriority.bytes += victim.bytes;
    }
  }

  private notifyAppend(): void {
    for (const listener of [...this.listeners]) {
      try {
        listener();
      } catch {
        // a listener's failure is its own; the messages are stored either way
      }
    }
  }

  peek(maxCount: number, maxBytes: number, skip: SeqFilter): OutboxRecord[] {
    if (this.closed || maxCount <= 0) return [];
    const records: OutboxRecord[] = [];
    let bytes = 0;
    for (const { seq } of this.sendOrder.iterate()) {
      if (skip.has(seq) || this.pendingAcks.has(seq)) continue;
      const row = this.messageBySeq.get(seq);
      if (row === undefined) continue;
      // Stop at the first message that does not fit rather than skipping ahead: the order is the contract.
      if (records.length > 0 && bytes + row.payload.byteLength > maxBytes) break;
      records.push({
        seq: row.seq,
        kind: toKind(row.kind),
        priority: toPriority(row.priority),
        createdAt: row.created_at,
        payload: row.payload,
        ...(row.topic !== null ? { topic: row.topic } : {}),
        ...(row.correlation !== null ? { correlation: row.correlation } : {}),
      });
      bytes += row.payload.byteLength;
      if (records.length >= maxCount) break;
    }
    return records;
  }

  /**
   * Marks the message delivered: hidden from peek at once, deleted from the file with the others acknowledged
   * within `ackFlushMs` (or by the next append). A crash before that flush re-sends them: duplicates the sequence
   * numbers let the consumer drop.
   */
  acknowledge(seq: number): void {
    if (this.closed || this.pendingAcks.has(seq)) return;
    const row = this.messageSize.get(seq);
    if (!row) return;
    this.pendingAcks.set(seq, row.size + ROW_OVERHEAD_BYTES);
    this.acknowledged++;
    this.scheduleAckFlush();
  }

  private scheduleAckFlush(): void {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      this.flushAcknowledgements();
    }, this.options.ackFlushMs ?? DEFAULT_ACK_FLUSH_MS);
    this.ackTimer.unref();
  }

  /** Deletes the acknowledged messages now, in one transaction. On a write failure they stay hidden and are retried. */
  flushAcknowledgements(): void {
    if (this.closed || this.pendingAcks.size === 0) return;
    try {
      this.meter.measure(() => this.flushAcksTransaction());
    } catch (err) {
      if (!isStorageFailure(err)) throw err;
      this.report(new OutboxError('acknowledge-failed', `outbox: deleting ${this.pendingAcks.size} acknowledged message(s) failed, will retry: ${describe(err)}`, { cause: err }));
      this.scheduleAckFlush();
      return;
    }
    for (const size of this.pendingAcks.values()) this.storedBytes -= size;
    this.storedCount -= this.pendingAcks.size;
    this.pendingAcks.clear();
  }

  get pending(): number {
    return this.storedCount - this.pendingAcks.size;
  }

  get unflushedAcknowledgements(): number {
    return this.pendingAcks.size;
  }

  onAppend(listener: () => void): () => void {
    // A wrapper per subscription, so the same function subscribed twice unsubscribes one at a time.
    const entry = (): void => listener();
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  stats(): OutboxStats {
    let pendingAckBytes = 0;
    for (const size of this.pendingAcks.values()) pendingAckBytes += size;
    const diskBytes = this.meter.bytes;
    return {
      messages: this.pending,
      bytes: this.storedBytes - pendingAckBytes,
      oldestCreatedAt: this.closed ? undefined : this.oldestWaiting(),
      nextSeq: this.nextSeq,
      appended: this.appended,
      acknowledged: this.acknowledged,
      evicted: {
        count: this.evicted.count,
        bytes: this.evicted.bytes,
        byPriority: this.evicted.byPriority.map((entry) => ({ ...entry })),
      },
      expired: this.expired,
      rejected: this.rejected,
      rejectedOversize: this.rejectedOversize,
      corruptFilesMovedAside: this.corruptFilesMovedAside,
      lastProblem: this.lastProblem ? { ...this.lastProblem } : undefined,
      diskWrites: {
        bytes: diskBytes,
        source: this.meter.source,
        perAppendedMessage: this.appended > 0 ? diskBytes / this.appended : 0,
      },
    };
  }

  private oldestWaiting(): number | undefined {
    if (this.pendingAcks.size === 0) return this.oldest.get()?.oldest ?? undefined;
    for (const row of this.ageOrder.iterate()) {
      if (!this.pendingAcks.has(row.seq)) return row.created_at;
    }
    return undefined;
  }

  /** Flushes pending acknowledgements and closes the file (SQLite checkpoints the WAL into it). */
  close(): void {
    if (this.closed) return;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.flushAcknowledgements();
    this.closed = true;
    this.listeners.clear();
    this.db.close();
  }
}

interface Victim {
  seq: number;
  priority: number;
  bytes: number;
}

interface AppendOutcome {
  seqs: number[];
  oversize: number;
  expired: number;
  evicted: Victim[];
  /** Totals after the transaction. */
  count: number;
  bytes: number;
  nextSeq: number;
  acksFlushed: boolean;
}
