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
 *
 * The file is opened through src/store/state-database.ts (mode 0600, no link followed, errors naming `outbox.path`).
 * Once per write transaction (and at close) the outbox checks that the path still names its file: a file deleted or
 * replaced under the running agent is reported as an error, and what the open connection still holds is carried over
 * to a new file at the path, so nothing committed is lost at exit. Write failures (a full disk) are folded: one line
 * when they start, a count every FAILURE_REPORT_MS while they go on, one line when writing works again.
 */
import Database from 'better-sqlite3';
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from 'node:fs';
import type { Priority } from '../collect/sample.js';
import { MAX_PRIORITY, MIN_PRIORITY } from '../collect/sample.js';
import { atomicWriteFile } from './atomic-file.js';
import { DiskWriteMeter, type DiskWriteSource } from './disk-usage.js';
import { DamagedStateFile, pruneSetAside, setAside, StateDatabase, STATE_FILE_MODE, type PathChange } from './state-database.js';
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
/** While writes keep failing (a full disk), one line with the count this often, not one per attempt. */
const FAILURE_REPORT_MS = 60_000;
/** Databases set aside (corrupt, or found in the outbox's place) kept beside it at most, newest first. */
export const MAX_SET_ASIDE_FILES = 3;
/** The sidecar holds one decimal number: anything longer is not ours. */
const SEQ_SIDECAR_MAX_BYTES = 32;

export interface OutboxOptions {
  path: string;
  /** Payload plus ROW_OVERHEAD_BYTES per message, summed over the messages kept. */
  maxBytes: number;
  /** Messages created longer ago are deleted at the next append (counted as expired). */
  maxAgeMs: number;
  durability?: Durability;
  /** Unix milliseconds; Date.now by default. */
  clock?: () => number;
  /** Problems the outbox handled itself (corrupt file moved aside, a batch rejected on a full disk...), each with its severity. */
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
  /** Databases set aside beside the outbox (corrupt, or found in its place), counted against maxBytes. */
  setAside: { files: number; bytes: number };
  /** Times the file was found deleted or replaced under the running agent (its content carried over). */
  fileLostWhileRunning: number;
  lastProblem: { at: number; message: string } | undefined;
  /** Bytes the outbox wrote to disk (see disk-usage.ts), and that divided by the messages appended. */
  diskWrites: { bytes: number; source: DiskWriteSource; perAppendedMessage: number };
}

export type OutboxErrorReason =
  | 'corrupt-file-moved-aside'
  | 'append-failed'
  | 'acknowledge-failed'
  /** Writing works again after failures (one line, with the count). */
  | 'write-recovered'
  /** The file was deleted or replaced under the running agent. */
  | 'file-lost'
  /** A 0-byte file at open: its messages were lost. */
  | 'empty-at-open'
  /** A database set aside was removed (their number and bytes are bounded). */
  | 'set-aside-removed';

/**
 * How bad a problem is, for whoever logs it: `error` when messages were lost or the file was taken from under the
 * running agent; `warn` when the outbox worked around it (a corrupt file moved aside, writing works again...).
 */
export type OutboxProblemSeverity = 'error' | 'warn';

export class OutboxError extends Error {
  constructor(
    readonly reason: OutboxErrorReason,
    readonly severity: OutboxProblemSeverity,
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

/** Carries an exception from an item's encode out of the transaction, so it is not mistaken for a disk failure. */
class EncodeFailure extends Error {
  constructor(cause: unknown) {
    super('an item could not be encoded', { cause });
  }
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
 * Read without following a link and only if it is a small regular file (O_NONBLOCK: a FIFO put there cannot block).
 */
function readSeqSidecar(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch {
    return 0;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile() || stats.size > SEQ_SIDECAR_MAX_BYTES) return 0;
    const buffer = Buffer.alloc(SEQ_SIDECAR_MAX_BYTES);
    const length = readSync(fd, buffer, 0, buffer.length, 0);
    const value = Number(buffer.toString('utf8', 0, length).trim());
    return Number.isSafeInteger(value) && value > 0 ? value : 0;
  } catch {
    return 0;
  } finally {
    closeSync(fd);
  }
}

function writeSeqSidecar(file: string, value: number): void {
  // Write-then-rename, both fsynced (src/store/atomic-file.ts): a power cut leaves either the old or the new number,
  // never a torn one, and a folder that cannot be flushed is an error (numbers are handed out only above what is on
  // disk). The temporary name (`<path>.seq.tmp`) is cleared first and created exclusively: a link placed there is
  // removed, never written through (rename replaces a link at the sidecar's own name, it does not follow it either).
  atomicWriteFile(file, `${value}\n`, { mode: STATE_FILE_MODE, temporary: `${file}.tmp` });
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

const SYNCHRONOUS: Record<Durability, 'FULL' | 'NORMAL' | 'OFF'> = { full: 'FULL', normal: 'NORMAL', off: 'OFF' };

/** How the outbox's file is opened (again after a carry-over): the pragmas and the schema. */
function stateOptions(options: OutboxOptions) {
  return {
    configKey: 'outbox.path',
    synchronous: SYNCHRONOUS[options.durability ?? 'normal'],
    setup: (db: Database.Database) => {
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
    },
  };
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
  const columns = new Set(
    db
      .prepare<[], { name: string }>('PRAGMA table_info(message)')
      .all()
      .map((c) => c.name),
  );
  db.transaction(() => {
    if (!columns.has('topic')) db.exec('ALTER TABLE message ADD COLUMN topic TEXT');
    if (!columns.has('correlation')) db.exec('ALTER TABLE message ADD COLUMN correlation BLOB');
  })();
}

/**
 * A run of failed writes with one cause (a full disk), told in three kinds of line: the first failure at once, then
 * the count every `reportMs` while it goes on (on the next failure after that: no timer), then one line at the first
 * write that works. Every failure is counted, none is lost from the lines.
 */
function failureCode(err: unknown): string {
  if (err instanceof Database.SqliteError) return err.code;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : describe(err);
}

class WriteFailures {
  private run:
    { cause: string; since: number; lastLine: number; messages: number; flushes: number; messagesSinceLine: number; flushesSinceLine: number } | undefined;

  constructor(private readonly reportMs: number) {}

  /**
   * A failed write: the line to say now, if any, an error once the run has rejected messages (a failed deletion alone
   * loses nothing: it is retried). `messages`: the messages rejected (0 for a failed deletion); `first`: the line of a
   * failure that starts a run. Runs are told apart by the error's code (SQLITE_FULL...).
   */
  failed(err: unknown, messages: number, now: number, first: () => string): { line: string; severity: OutboxProblemSeverity } | undefined {
    const cause = failureCode(err);
    const run = this.run;
    if (!run || run.cause !== cause) {
      const previous = run ? ` (after ${run.cause})` : '';
      this.run = { cause, since: now, lastLine: now, messages, flushes: messages === 0 ? 1 : 0, messagesSinceLine: 0, flushesSinceLine: 0 };
      const line = `${first()}${previous}; while it lasts, failures are counted and reported every ${Math.round(this.reportMs / 1000)} s`;
      return { line, severity: messages > 0 ? 'error' : 'warn' };
    }
    run.messages += messages;
    run.messagesSinceLine += messages;
    if (messages === 0) {
      run.flushes++;
      run.flushesSinceLine++;
    }
    if (now - run.lastLine < this.reportMs) return undefined;
    const line =
      `outbox: writes still failing (${cause}): ${run.messagesSinceLine} more message(s) rejected` +
      (run.flushesSinceLine > 0 ? `, ${run.flushesSinceLine} deletion(s) of acknowledged messages retried` : '') +
      ` in the last ${Math.round((now - run.lastLine) / 1000)} s; ${run.messages} rejected since ${new Date(run.since).toISOString()}`;
    run.lastLine = now;
    run.messagesSinceLine = 0;
    run.flushesSinceLine = 0;
    return { line, severity: run.messages > 0 ? 'error' : 'warn' };
  }

  /** A write that worked: the recovery line if writes were failing. */
  succeeded(now: number): string | undefined {
    const run = this.run;
    if (!run) return undefined;
    this.run = undefined;
    return `outbox: writing works again after ${Math.round((now - run.since) / 1000)} s of failures (${run.cause}); ${run.messages} message(s) could not be stored meanwhile`;
  }
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

  private setAsideBytes = 0;
  private setAsideFiles = 0;
  private fileLostWhileRunning = 0;
  private readonly writeFailures: WriteFailures;

  // Prepared on the file's connection; prepared again when a carry-over gives a new one (attach).
  private insertMessage!: Database.Statement<[number, number, string, number, Uint8Array, string | null, Uint8Array | null]>;
  private deleteMessage!: Database.Statement<[number]>;
  private messageSize!: Database.Statement<[number], { size: number }>;
  private sendOrder!: Database.Statement<[], { seq: number }>;
  private messageBySeq!: Database.Statement<[number], MessageRow>;
  private evictionOrder!: Database.Statement<[number], SizeRow>;
  private deleteExpired!: Database.Statement<[number], { priority: number; size: number }>;
  private oldest!: Database.Statement<[], { oldest: number | null }>;
  private ageOrder!: Database.Statement<[], { seq: number; created_at: number }>;
  private writeNextSeq!: Database.Statement<[number]>;
  private appendTransaction!: (items: readonly OutboxItem[], now: number) => AppendOutcome;
  private flushAcksTransaction!: () => void;
  private readonly flushAcksInTransaction: () => void;

  /**
   * Opens (or creates) the outbox file. A damaged file is moved aside (reported, numbering continues above it); any
   * other failure throws, naming `outbox.path` and the file.
   */
  static open(options: OutboxOptions): SqliteOutbox {
    if (!(options.maxBytes > 0)) throw new RangeError('outbox: maxBytes must be positive');
    if (!(options.maxAgeMs > 0)) throw new RangeError('outbox: maxAgeMs must be positive');
    const clock = options.clock ?? Date.now;
    let file: StateDatabase;
    let moved: { aside: string; error: OutboxError; seqInAside: number } | undefined;
    try {
      file = StateDatabase.open(options.path, stateOptions(options));
    } catch (err) {
      if (!(err instanceof DamagedStateFile)) throw err;
      const aside = setAside(options.path, 'corrupt', clock());
      const error = new OutboxError(
        'corrupt-file-moved-aside',
        'warn',
        `outbox: ${options.path} is corrupt or not a database (${err.message}); moved it aside as ${aside} and started an empty outbox`,
        { cause: err },
      );
      moved = { aside, error, seqInAside: readSeqFromDamaged(aside) };
      file = StateDatabase.open(options.path, stateOptions(options));
    }
    const outbox = new SqliteOutbox(file, options, moved?.seqInAside ?? 0);
    if (moved) {
      outbox.corruptFilesMovedAside++;
      outbox.report(moved.error);
    }
    if (file.finishedCarryOver) {
      outbox.report(
        new OutboxError(
          'file-lost',
          'warn',
          `outbox: ${options.path} was put back from ${options.path}.carry-over: the agent stopped while it was carrying a deleted or replaced outbox over`,
        ),
      );
    }
    if (file.found === 'empty') {
      // Only someone else makes a 0-byte file here: the agent creates its files whole (state-database.ts).
      outbox.report(
        new OutboxError(
          'empty-at-open',
          // Its messages are gone: lost data.
          'error',
          `outbox: ${options.path} was empty (0 bytes) at start: the messages it held were lost (the file was truncated); ` +
            `starting with an empty outbox, sequence numbers continue above the old ones (from ${outbox.nextSeq})`,
        ),
      );
    }
    outbox.pruneSetAside();
    return outbox;
  }

  private constructor(
    private readonly file: StateDatabase,
    private readonly options: OutboxOptions,
    seqInMovedAsideFile: number,
  ) {
    this.writeFailures = new WriteFailures(FAILURE_REPORT_MS);
    this.flushAcksInTransaction = () => {
      for (const seq of this.pendingAcks.keys()) this.deleteMessage.run(seq);
    };
    this.attach(file.db);
    const db = file.db;

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
  }

  /** Prepares the statements and transactions on `db` (the file's connection, new after a carry-over). */
  private attach(db: Database.Database): void {
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
    this.flushAcksTransaction = db.transaction(this.flushAcksInTransaction);
    this.appendTransaction = db.transaction((items: readonly OutboxItem[], now: number) => this.appendInTransaction(items, now));
  }

  /**
   * Whether the path still names the outbox's file (one stat: called once per write transaction, by append, by the
   * data path's write timer and at close). A file deleted or replaced under the running agent is reported as an
   * error, and everything the open connection still holds (the waiting messages, the sequence counter) is carried
   * over to a new file at the path; if that fails (a full disk) it is said once and tried again at the next call.
   */
  verifyFile(): void {
    if (this.closed) return;
    const change = this.file.verifyPath(this.now());
    if (!change) return;
    if (change.carriedOver) {
      this.attach(this.file.db);
      this.fileLostWhileRunning++;
      // The sidecar may have gone with the file: written again, so the numbering stays above everything handed out.
      if (readSeqSidecar(this.sidecarPath) < this.seqReservedUpTo) {
        try {
          writeSeqSidecar(this.sidecarPath, this.seqReservedUpTo);
        } catch {
          // the database's meta row still carries the counter; the next reservation writes the sidecar again
        }
      }
    }
    if (change.repeated && !change.carriedOver) return;
    // Loud even when carried over: someone or something deletes or replaces the agent's files while it runs.
    this.report(new OutboxError('file-lost', 'error', this.describeChange(change)));
    if (change.movedAside !== undefined) this.pruneSetAside();
  }

  private describeChange(change: PathChange): string {
    const file = this.options.path;
    const what = change.found === 'deleted' ? 'was deleted' : `was replaced by another file (moved aside as ${change.movedAside})`;
    const waiting = `${this.pending} waiting message(s)`;
    if (change.carriedOver) {
      return `outbox: ${file} ${what} while the agent was running: its ${waiting} and the sequence counter were carried over to a new file at the same path; nothing was lost`;
    }
    return (
      `outbox: ${file} ${what} while the agent was running, and carrying its ${waiting} over to a new file failed (${change.error}): ` +
      'they are kept in the deleted file while the agent runs (lost if it stops); trying again at every write'
    );
  }

  /**
   * Databases set aside beside the outbox count against maxBytes: they keep what the messages leave free, at most
   * MAX_SET_ASIDE_FILES of them; the oldest go first, each removal said.
   */
  private pruneSetAside(): void {
    try {
      const budget = Math.max(0, this.options.maxBytes - this.storedBytes);
      const { removed, kept } = pruneSetAside(this.options.path, { keep: MAX_SET_ASIDE_FILES, budgetBytes: budget });
      this.setAsideBytes = kept.bytes;
      this.setAsideFiles = kept.files;
      for (const set of removed) {
        this.report(
          new OutboxError(
            'set-aside-removed',
            'warn',
            `outbox: removed ${set.file} (${set.bytes} bytes, set aside earlier): set-aside files count against outbox.maxBytes and at most ${MAX_SET_ASIDE_FILES} are kept`,
          ),
        );
      }
    } catch (err) {
      this.report(
        new OutboxError('set-aside-removed', 'warn', `outbox: could not clean up the files set aside beside ${this.options.path}: ${describe(err)}`, {
          cause: err,
        }),
      );
    }
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
    this.verifyFile();
    const now = this.now();
    try {
      const outcome = this.meter.measure(() => {
        this.reserveSeqs(items.length);
        return this.appendTransaction(items, now);
      });
      this.commitOutcome(outcome);
      this.writeWorked(now);
      if (this.setAsideBytes > 0 && this.storedBytes + this.setAsideBytes > this.options.maxBytes) this.pruneSetAside();
      if (outcome.seqs.length > 0) this.notifyAppend();
      return { seqs: outcome.seqs, rejected: outcome.oversize };
    } catch (err) {
      if (err instanceof EncodeFailure) throw err.cause;
      if (!isStorageFailure(err)) throw err;
      this.rejected += items.length;
      this.writeFailed(err, items.length, now, () => `outbox: ${items.length} message(s) rejected: ${describe(err)}`);
      return { seqs: [], rejected: items.length };
    }
  }

  /** A failed write, folded (WriteFailures): reported at once when it starts a run, counted otherwise. */
  private writeFailed(err: unknown, messages: number, now: number, first: () => string): void {
    const said = this.writeFailures.failed(err, messages, now, first);
    const reason: OutboxErrorReason = messages > 0 ? 'append-failed' : 'acknowledge-failed';
    if (said !== undefined) this.report(new OutboxError(reason, said.severity, said.line, { cause: err }));
    else this.lastProblem = { at: now, message: `${describe(err)} (${messages > 0 ? `${messages} message(s) rejected` : 'deletion retried'}, folded)` };
  }

  private writeWorked(now: number): void {
    const line = this.writeFailures.succeeded(now);
    // Writing works again: what was lost was said (as errors) while it failed.
    if (line !== undefined) this.report(new OutboxError('write-recovered', 'warn', line));
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
    const now = this.now();
    try {
      this.meter.measure(() => this.flushAcksTransaction());
    } catch (err) {
      if (!isStorageFailure(err)) throw err;
      const count = this.pendingAcks.size;
      this.writeFailed(err, 0, now, () => `outbox: deleting ${count} acknowledged message(s) failed, will retry: ${describe(err)}`);
      this.scheduleAckFlush();
      return;
    }
    this.writeWorked(now);
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
      setAside: { files: this.setAsideFiles, bytes: this.setAsideBytes },
      fileLostWhileRunning: this.fileLostWhileRunning,
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

  /**
   * Makes sure the file is still in place (a deleted one would take its messages with it now), flushes pending
   * acknowledgements and closes the file (SQLite checkpoints the WAL into it).
   */
  close(): void {
    if (this.closed) return;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.verifyFile();
    this.flushAcknowledgements();
    this.closed = true;
    this.listeners.clear();
    this.file.close();
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
