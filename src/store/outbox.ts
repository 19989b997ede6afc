/**
 * The SQLite outbox: every encoded message is committed here before the uplink may publish it, and deleted only once
 * the broker has acknowledged it, so a kill -9 or a power cut loses nothing that `append` returned.
 *
 * Two numberings (src/store/outbox-queue.ts): the data stream (telemetry, events, loss notices) and the results
 * stream (command results) each count on by one per message stored, across restarts and a kill -9; a message too big
 * to store, or a batch a full disk refuses, takes no number. So the data stream has a gap only where the agent lost
 * data, and every such loss is announced by a loss notice (src/store/loss-notice.ts), itself a data-stream message
 * (priority 7, never evicted or expired), recorded in the same transaction as the deletion that loses the data:
 *  - evicted (the outbox full) and expired (too old), at append;
 *  - refused (the broker refused it for good: `drop`, called by the publisher);
 *  - outbox-lost (the file damaged, emptied or deleted while the agent was stopped), at open: an upper bound, from the
 *    lower bound the sidecar holds to the last number that can have been handed out.
 * While a notice has not been handed out by `peek`, further losses are merged into it (re-encoded in place), so they do
 * not pile up; MAX_RANGES_PER_NOTICE ranges at most, then a new one, as long as the notices take less than 1/16 of
 * maxBytes; beyond that the open notice's closest ranges are merged into upper bounds (`exact: false`).
 *
 * Layout: one `message` row per message: `id` (the rowid: the queue's key, in insertion order), `seq` (its number in
 * its stream, NULL for messages stored before the two numberings, whose number is their id), priority, kind,
 * created_at, payload, and a result's topic and correlation. `meta` holds the next number of each stream; `delivered`
 * the ids of acknowledged messages not yet deleted (the journal below). An index on
 * (priority DESC, id) serves both the send order and the eviction order (one priority at a time, oldest first); an
 * index on created_at serves age expiry; a partial index finds the loss notices.
 *
 * Never reused: the sidecar `<path>.seq` reserves numbers of both streams ahead of those handed out (and the lowest
 * data-stream number that may still be waiting): a new database after a lost file continues above it, and above a
 * wall-clock floor when the sidecar is gone too.
 *
 * Flash wear: a whole batch is one transaction (WAL frames for the touched pages only); acknowledgements are gathered
 * and deleted together, riding on the next append's transaction or a timer, whichever comes first. The publisher makes
 * them durable sooner, a few at a time (recordAcknowledgements): their ids go into the `delivered` journal, one page
 * of WAL instead of the table's and both indexes' pages a delete rewrites; the journal is emptied with the deletion
 * of its messages, and a start after a crash deletes what it lists before anything is handed out.
 *
 * The file is opened through src/store/state-database.ts (mode 0600, no link followed, errors naming `outbox.path`).
 * Once per write transaction (and at close) the outbox checks that the path still names its file: a file deleted or
 * replaced under the running agent is reported as an error, and what the open connection still holds is carried over
 * to a new file at the path, so nothing committed is lost at exit. Write failures (a full disk) are folded: one line
 * when they start, a count every FAILURE_REPORT_MS while they go on, one line when writing works again.
 */
import Database from 'better-sqlite3';
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import type { Priority } from '../collect/sample.js';
import { MAX_PRIORITY, MIN_PRIORITY } from '../collect/sample.js';
import { atomicWriteFile } from './atomic-file.js';
import { DiskWriteMeter, type DiskWriteSource } from './disk-usage.js';
import {
  addLostRange,
  coarsenLostRanges,
  decodeLossNotice,
  encodeLossNotice,
  MAX_RANGES_PER_NOTICE,
  NOTICE_BYTES,
  RANGE_BYTES,
  type LossReason,
  type LostRange,
} from './loss-notice.js';
import { DamagedStateFile, pruneSetAside, setAside, StateDatabase, STATE_FILE_MODE, type PathChange } from './state-database.js';
import { streamOf, type IdFilter, type OutboxKind, type OutboxQueue, type OutboxRecord, type SendPosition, type SeqStream } from './outbox-queue.js';

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

/** Sequence numbers reserved in the sidecar file at a time, per stream (one small fsynced file write per block). */
const SEQ_RESERVE_BLOCK = 100_000;
/** Numbers reserved before an append for the loss notices it may write (more are reserved inside if needed). */
const NOTICE_SEQS_AHEAD = 4;
/**
 * Loss notices may take this share of maxBytes (1/16) before further losses are coarsened into the open notice
 * instead of starting new ones: notices are never evicted, so they are bounded this way. Small outboxes get fewer
 * ranges per notice (at least MIN_RANGES_PER_NOTICE), so that one notice fits its share too.
 */
const NOTICE_SHARE = 16;
const MIN_RANGES_PER_NOTICE = 16;

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
/** The sidecar holds a few short lines: anything longer is not ours. */
const SEQ_SIDECAR_MAX_BYTES = 512;

/** The meta rows holding each stream's next number (`next_seq` was the one counter before the two numberings). */
const NEXT_SEQ_KEY: Record<SeqStream, string> = { data: 'next_data_seq', results: 'next_result_seq' };
const OLD_NEXT_SEQ_KEY = 'next_seq';

export interface OutboxOptions {
  path: string;
  /** The device: the loss notices name it, as every message does. */
  deviceId: string;
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
  /** Loss notices are the outbox's own. */
  kind: Exclude<OutboxKind, 'loss'>;
  priority: Priority;
  /** Unix milliseconds. */
  createdAt: number;
  /** The encoded message, given the sequence number (of its kind's stream) it must carry. */
  encode(seq: number): Uint8Array;
  /** Its own topic (command results), instead of the kind's. */
  topic?: string;
  /** MQTT 5 correlation data to publish it with. */
  correlation?: Uint8Array;
}

export interface AppendResult {
  /** Sequence numbers of the messages stored (each in its kind's stream), in the order given (a message evicted by a
   * later one of the same batch included). */
  seqs: number[];
  /** Their queue keys (what acknowledge and drop take), in the same order. */
  ids: number[];
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
  /** The number the next data-stream message gets: the last one assigned is nextSeq - 1. */
  nextSeq: number;
  /** The same for the results stream. */
  nextResultSeq: number;
  /** The counters below count since open. */
  appended: number;
  acknowledged: number;
  evicted: EvictionCount & { byPriority: EvictionCount[] };
  expired: number;
  /** Messages refused by append: write failures and oversize messages. */
  rejected: number;
  rejectedOversize: number;
  /** Messages dropped (the broker refused them for good). */
  dropped: number;
  /**
   * Loss notices: `notices` written (a notice merged into counts once), `messages` data-stream messages announced
   * lost one by one (evicted, expired, refused), `outboxLost` times a lost outbox file was announced (a range).
   */
  losses: { notices: number; messages: number; outboxLost: number };
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
  /** Dropping a refused message failed (it stays, and is tried again). */
  | 'drop-failed'
  /** Writing works again after failures (one line, with the count). */
  | 'write-recovered'
  /** The file was deleted or replaced under the running agent. */
  | 'file-lost'
  /** A 0-byte file at open: its messages were lost. */
  | 'empty-at-open'
  /** No file at open although the sidecar says there was an outbox: its messages were lost. */
  | 'missing-at-open'
  /** The last run ended without closing the outbox in another boot (a power cut): its last commits may be lost. */
  | 'unclean-stop'
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

/**
 * A message's row as peek reads it: raw (an array, in MESSAGE_COLUMNS' order), which better-sqlite3 builds in half the
 * time of an object with named fields; peek reads one per message drained.
 */
type MessageRow = [
  id: number,
  seq: number,
  kind: string,
  priority: number,
  createdAt: number,
  payload: Buffer,
  topic: string | null,
  correlation: Buffer | null,
];
const MESSAGE_COLUMNS = 'id, coalesce(seq, id) AS seq, kind, priority, created_at, payload, topic, correlation';

/** A peek being filled. */
interface PeekBatch {
  records: OutboxRecord[];
  bytes: number;
  maxCount: number;
  maxBytes: number;
}

interface SizeRow {
  id: number;
  seq: number;
  kind: string;
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
  if (kind === 'telemetry' || kind === 'events' || kind === 'loss' || kind === 'result') return kind;
  throw new Error(`outbox: unknown message kind '${kind}' in the database`);
}

function toPriority(priority: number): Priority {
  if (Number.isInteger(priority) && priority >= MIN_PRIORITY && priority <= MAX_PRIORITY) return priority as Priority;
  throw new Error(`outbox: priority ${priority} out of range in the database`);
}

/**
 * What the sidecar `<path>.seq` holds: per stream, a number above every number handed out; a number no data-stream
 * number still waiting (or announced in a waiting loss notice) was below when it was written; and whether the outbox
 * was open (since which boot of the machine) or closed cleanly. It outlives the database file, so a fresh database
 * (after corruption, or a deleted file) continues above the old numbering, and a lost file's notice knows where the
 * numbers that may have been lost start.
 */
interface SeqReservation {
  data: number;
  results: number;
  /** undefined: not known (the one-number format of older agents, or no sidecar). */
  dataLowestWaiting: number | undefined;
  /** `open` with the boot it was opened in (undefined: not known), `closed`, or undefined (older agents). */
  run: { state: 'open'; boot: string | undefined } | { state: 'closed' } | undefined;
  /** Whether a sidecar was read at all. */
  found: boolean;
}

const NO_RESERVATION: SeqReservation = { data: 0, results: 0, dataLowestWaiting: undefined, run: undefined, found: false };
const SIDECAR_KEYS = { data: 'data', results: 'results', lowest: 'data-lowest-waiting', run: 'run' } as const;

function positiveSafeInteger(text: string): number | undefined {
  if (!/^\d{1,16}$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

/** This boot of the machine (Linux): a process crash keeps it, a power cut or a reboot changes it. */
function currentBoot(): string | undefined {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return /^[0-9a-f-]{36}$/.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Parses the sidecar: `<key> <value>` lines (`data`, `results`, `data-lowest-waiting`: numbers; `run`: `open <boot>`
 * or `closed`; `#` starts a comment), or the single number older agents wrote (their one counter: a reservation for
 * both streams). Anything else: none.
 */
function parseSeqSidecar(text: string): SeqReservation {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (lines.length === 1 && !lines[0]!.includes(' ')) {
    const value = positiveSafeInteger(lines[0]!);
    return value === undefined ? NO_RESERVATION : { data: value, results: value, dataLowestWaiting: undefined, run: undefined, found: true };
  }
  const values = new Map<string, number>();
  let run: SeqReservation['run'];
  for (const line of lines) {
    const [key, value, ...rest] = line.split(/\s+/);
    if (key === SIDECAR_KEYS.run) {
      if (value === 'closed' && rest.length === 0) run = { state: 'closed' };
      else if (value === 'open' && rest.length <= 1) run = { state: 'open', boot: rest[0] === '-' ? undefined : rest[0] };
      else return NO_RESERVATION;
      continue;
    }
    const number = value === undefined ? undefined : positiveSafeInteger(value);
    if (key === undefined || number === undefined || rest.length > 0) return NO_RESERVATION;
    values.set(key, number);
  }
  const data = values.get(SIDECAR_KEYS.data);
  const results = values.get(SIDECAR_KEYS.results);
  if (data === undefined || results === undefined) return NO_RESERVATION;
  return { data, results, dataLowestWaiting: values.get(SIDECAR_KEYS.lowest), run, found: true };
}

/** Read without following a link and only if it is a small regular file (O_NONBLOCK: a FIFO put there cannot block). */
function readSeqSidecar(file: string): SeqReservation {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch {
    return NO_RESERVATION;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile() || stats.size > SEQ_SIDECAR_MAX_BYTES) return NO_RESERVATION;
    const buffer = Buffer.alloc(SEQ_SIDECAR_MAX_BYTES);
    const length = readSync(fd, buffer, 0, buffer.length, 0);
    return parseSeqSidecar(buffer.toString('utf8', 0, length));
  } catch {
    return NO_RESERVATION;
  } finally {
    closeSync(fd);
  }
}

function writeSeqSidecar(
  file: string,
  reservation: { data: number; results: number; dataLowestWaiting: number | undefined },
  run: 'open' | 'closed',
  boot: string | undefined,
): void {
  const lines = [
    "# telematics-agent outbox: every number handed out is below its stream's; no data number below data-lowest-waiting was waiting",
    `${SIDECAR_KEYS.data} ${reservation.data}`,
    `${SIDECAR_KEYS.results} ${reservation.results}`,
    ...(reservation.dataLowestWaiting !== undefined ? [`${SIDECAR_KEYS.lowest} ${reservation.dataLowestWaiting}`] : []),
    run === 'open' ? `${SIDECAR_KEYS.run} open ${boot ?? '-'}` : `${SIDECAR_KEYS.run} closed`,
  ];
  // Write-then-rename, both fsynced (src/store/atomic-file.ts): a power cut leaves either the old or the new numbers,
  // never torn ones, and a folder that cannot be flushed is an error (numbers are handed out only below what is on
  // disk). The temporary name (`<path>.seq.tmp`) is cleared first and created exclusively: a link placed there is
  // removed, never written through (rename replaces a link at the sidecar's own name, it does not follow it either).
  atomicWriteFile(file, `${lines.join('\n')}\n`, { mode: STATE_FILE_MODE, temporary: `${file}.tmp` });
}

/** Best effort: a number above every one recorded in a database that was moved aside (0 when it cannot be read). */
function readSeqFromDamaged(file: string): number {
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const read = (sql: string): number => {
      try {
        return db!.prepare<[], { value: number | null }>(sql).get()?.value ?? 0;
      } catch {
        return 0;
      }
    };
    const meta = read(`SELECT max(value) AS value FROM meta WHERE key IN ('${OLD_NEXT_SEQ_KEY}', '${NEXT_SEQ_KEY.data}', '${NEXT_SEQ_KEY.results}')`);
    // Before the two numberings the rowid was the number; since, `seq` is (the rowid being a smaller key).
    const byRow = read('SELECT max(rowid) AS value FROM message');
    const bySeq = read('SELECT max(seq) AS value FROM message');
    return Math.max(meta, byRow + 1, bySeq + 1);
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
      db.exec('CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID');
      // An older file is brought up to this layout before the indexes below name its columns.
      migrate(db);
      db.exec(`
        CREATE TABLE IF NOT EXISTS message (
          id INTEGER PRIMARY KEY,
          priority INTEGER NOT NULL,
          kind TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          payload BLOB NOT NULL,
          topic TEXT,
          correlation BLOB,
          seq INTEGER
        );
        CREATE INDEX IF NOT EXISTS message_send_order ON message (priority DESC, id);
        CREATE INDEX IF NOT EXISTS message_age ON message (created_at);
        CREATE INDEX IF NOT EXISTS message_loss ON message (id) WHERE kind = 'loss';
        CREATE TABLE IF NOT EXISTS delivered (id INTEGER PRIMARY KEY);
      `);
    },
  };
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Brings a file written by an older agent up to the current layout, in place, keeping every message and its number:
 *  - version 2 added the `topic` and `correlation` columns (command results), nullable, so the messages already
 *    stored go to their kind's topic;
 *  - version 3 (two numberings) renamed the rowid `seq` to `id` (the index on it follows) and added `seq`, NULL for
 *    the messages already stored (their number is their id), so no row is rewritten: an upgrade needs no free space
 *    the size of the outbox; the one counter `next_seq` becomes the next number of both streams (each continues
 *    above every number handed out, none is reused).
 */
function migrate(db: Database.Database): void {
  const columns = new Set(
    db
      .prepare<[], { name: string }>('PRAGMA table_info(message)')
      .all()
      .map((c) => c.name),
  );
  if (columns.size === 0) return; // a new file: the table is created as it is now
  db.transaction(() => {
    if (!columns.has('topic')) db.exec('ALTER TABLE message ADD COLUMN topic TEXT');
    if (!columns.has('correlation')) db.exec('ALTER TABLE message ADD COLUMN correlation BLOB');
    if (!columns.has('id')) {
      db.exec('ALTER TABLE message RENAME COLUMN seq TO id');
      db.exec('ALTER TABLE message ADD COLUMN seq INTEGER');
      const old = db.prepare<[string], { value: number }>('SELECT value FROM meta WHERE key = ?').get(OLD_NEXT_SEQ_KEY)?.value;
      if (old !== undefined) {
        const insert = db.prepare<[string, number]>('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)');
        insert.run(NEXT_SEQ_KEY.data, old);
        insert.run(NEXT_SEQ_KEY.results, old);
        db.prepare('DELETE FROM meta WHERE key = ?').run(OLD_NEXT_SEQ_KEY);
      }
    }
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

/** A loss notice being written: its row, its ranges, its payload's size as stored. */
interface Notice {
  id: number;
  seq: number;
  createdAt: number;
  ranges: LostRange[];
  /** Payload bytes as stored; 0 before its first write. */
  bytes: number;
  stored: boolean;
}

/** The state one write transaction works on: the in-memory totals change only once it has committed. */
interface Transaction {
  now: number;
  count: number;
  bytes: number;
  next: Record<SeqStream, number>;
  nextId: number;
  /** The notice further losses go into (the open one, or one this transaction started). */
  notice: Notice | undefined;
  /** Whether `notice` is this transaction's own copy (the open one is copied before its first change). */
  noticeOwned: boolean;
  noticeChanged: boolean;
  noticesStarted: number;
  lostAnnounced: number;
}

export class SqliteOutbox implements OutboxQueue {
  private readonly listeners = new Set<() => void>();
  private readonly meter = new DiskWriteMeter();
  /** Acknowledged messages (by id) not yet deleted from the file, with their counted size: hidden from peek and pending. */
  private readonly pendingAcks = new Map<number, number>();
  /** Those of them not yet in the `delivered` journal either: what a crash now would send again. */
  private unrecorded: number[] = [];
  /** Whether the journal may hold ids (it is emptied with the deletion of its messages). */
  private journalled = false;
  /**
   * The counted size of each message peek handed out and not yet acknowledged, dropped, evicted or expired: so an
   * acknowledgement (one per message drained) costs no query. Only ever a shortcut: an id not here is looked up.
   */
  private readonly handedOut = new Map<number, number>();
  /** OutboxQueue.revision: bumped by every commit that adds or deletes messages other than acknowledgements. */
  private changes = 0;
  private ackTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private storedCount = 0;
  private storedBytes = 0;
  /** The next number of each stream, and the next id. */
  private next: Record<SeqStream, number> = { data: 1, results: 1 };
  private nextId = 1;
  /** What the sidecar on disk reserves; `stale`: it must be written again before numbers are handed out (an older
   * format, or a write that failed). */
  private reserved: Record<SeqStream, number> & { dataLowestWaiting: number | undefined; stale: boolean } = {
    data: 0,
    results: 0,
    dataLowestWaiting: undefined,
    stale: true,
  };
  /** This boot of the machine, written with the reservation (see start: a power cut is told from a process crash). */
  private readonly boot = currentBoot();
  /** The loss notice not yet handed out by peek: further losses are merged into it. */
  private openNotice: Notice | undefined;
  /** Ranges per notice, and the bytes the notices may take before they are coarsened (NOTICE_SHARE). */
  private readonly rangeCap: number;
  private readonly noticeBudget: number;

  private appended = 0;
  private acknowledged = 0;
  private readonly evicted = { count: 0, bytes: 0, byPriority: Array.from({ length: MAX_PRIORITY + 1 }, () => ({ count: 0, bytes: 0 })) };
  private expired = 0;
  private rejected = 0;
  private rejectedOversize = 0;
  private dropped = 0;
  private readonly losses = { notices: 0, messages: 0, outboxLost: 0 };
  private corruptFilesMovedAside = 0;
  private lastProblem: { at: number; message: string } | undefined;

  private setAsideBytes = 0;
  private setAsideFiles = 0;
  private fileLostWhileRunning = 0;
  private readonly writeFailures: WriteFailures;

  // Prepared on the file's connection; prepared again when a carry-over gives a new one (attach).
  private insertMessage!: Database.Statement<[number, number, number, string, number, Uint8Array, string | null, Uint8Array | null]>;
  private updatePayload!: Database.Statement<[Uint8Array, number]>;
  private deleteMessage!: Database.Statement<[number]>;
  /** One statement (its own transaction) for a whole group: the ids as a JSON array. */
  private recordDelivered!: Database.Statement<[string]>;
  private clearDelivered!: Database.Statement<[]>;
  private messageSize!: Database.Statement<[number], { seq: number; kind: string; size: number }>;
  /** Plucked: the ids themselves, no row object per step. */
  private sendOrder!: Database.Statement<[], number>;
  private messageById!: Database.Statement<[number], MessageRow>;
  private samePriorityAfter!: Database.Statement<[number, number], MessageRow>;
  private lowerPriorities!: Database.Statement<[number], MessageRow>;
  private evictionOrder!: Database.Statement<[number], SizeRow>;
  private deleteExpired!: Database.Statement<[number], { id: number; seq: number; kind: string; priority: number; size: number }>;
  private oldest!: Database.Statement<[], { oldest: number | null }>;
  private ageOrder!: Database.Statement<[], { id: number; created_at: number }>;
  private firstDataRow!: Database.Statement<[], { seq: number }>;
  private lossPayloads!: Database.Statement<[], { payload: Buffer }>;
  private noticeBytes!: Database.Statement<[], { bytes: number }>;
  private writeMeta!: Database.Statement<[string, number]>;
  private appendTransaction!: (items: readonly OutboxItem[], now: number) => AppendOutcome;
  private dropTransaction!: (id: number, row: { seq: number; kind: string; size: number }, now: number) => Transaction;
  private flushAcksTransaction!: () => void;
  private readonly flushAcksInTransaction: () => void;

  /**
   * Opens (or creates) the outbox file. A damaged file is moved aside (reported, numbering continues above it, its
   * loss announced); any other failure throws, naming `outbox.path` and the file.
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
    const outbox = new SqliteOutbox(file, options);
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
    let announced: ReturnType<SqliteOutbox['start']>;
    try {
      announced = outbox.start(file.found, moved?.seqInAside);
    } catch (err) {
      // A file that cannot take its first write (a full disk): the start fails, naming it; the connection is not left open.
      file.close();
      throw new Error(`outbox.path: cannot start the outbox in ${options.path}: ${describe(err)}`, { cause: err });
    }
    if (announced === 'unclean-stop') {
      outbox.report(
        new OutboxError(
          'unclean-stop',
          // Maybe nothing was lost: only the last commits before the power cut can be.
          'warn',
          `outbox: the last run stopped without closing ${options.path} (a power cut or a crash of the machine), and durability ` +
            `'${options.durability ?? 'normal'}' may have lost its last commits: sequence numbers continue above every number it can have handed out ` +
            `(from ${outbox.next.data}), and a loss notice announces the ones that may be gone`,
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
            `starting with an empty outbox, sequence numbers continue above the old ones (from ${outbox.next.data})`,
        ),
      );
    } else if (announced === 'file-lost' && !moved) {
      outbox.report(
        new OutboxError(
          'missing-at-open',
          'error',
          `outbox: ${options.path} was missing at start although ${outbox.sidecarPath} shows there was an outbox: the messages it held were lost ` +
            `(the file was deleted while the agent was stopped); starting with an empty outbox, sequence numbers continue above the old ones (from ${outbox.next.data})`,
        ),
      );
    }
    outbox.pruneSetAside();
    return outbox;
  }

  private constructor(
    private readonly file: StateDatabase,
    private readonly options: OutboxOptions,
  ) {
    this.writeFailures = new WriteFailures(FAILURE_REPORT_MS);
    this.noticeBudget = options.maxBytes / NOTICE_SHARE;
    this.rangeCap = Math.max(MIN_RANGES_PER_NOTICE, Math.min(MAX_RANGES_PER_NOTICE, Math.floor((this.noticeBudget - NOTICE_BYTES) / RANGE_BYTES)));
    this.flushAcksInTransaction = () => {
      for (const id of this.pendingAcks.keys()) this.deleteMessage.run(id);
      if (this.journalled) this.clearDelivered.run();
    };
    this.attach(file.db);
  }

  /**
   * Reads the totals and the numbering from the file, and announces at once what the outbox may have lost while the
   * agent was not running (returned, for the caller's report):
   *  - `file-lost`: a new database where an outbox was before (a damaged, emptied or deleted file): it continues above
   *    everything this device may have numbered, with a notice for the numbers that may have been lost with the file;
   *  - `unclean-stop`: the last run ended without closing the outbox, in another boot of the machine (a power cut),
   *    and durability below `full` may have lost its last commits, some maybe sent already: the numbering continues
   *    above everything that run can have handed out, so no number is ever reused, with a notice for those numbers.
   */
  private start(found: StateDatabase['found'], seqInMovedAsideFile: number | undefined): 'file-lost' | 'unclean-stop' | undefined {
    const db = this.file.db;
    // Acknowledged before the last stop, recorded in the journal, not yet deleted: delivered, so deleted now, not sent again.
    if (db.prepare<[], { any: number }>('SELECT EXISTS (SELECT 1 FROM delivered) AS "any"').get()?.any === 1) {
      db.transaction(() => {
        db.prepare('DELETE FROM message WHERE id IN (SELECT id FROM delivered)').run();
        this.clearDelivered.run();
      })();
    }
    const totals = db
      .prepare<[], { count: number; payload: number | null; maxId: number | null; maxData: number | null; maxResults: number | null }>(
        `SELECT count(*) AS count, sum(length(payload)) AS payload, max(id) AS maxId,
                max(CASE WHEN kind <> 'result' THEN coalesce(seq, id) END) AS maxData,
                max(CASE WHEN kind = 'result' THEN coalesce(seq, id) END) AS maxResults
         FROM message`,
      )
      .get();
    this.storedCount = totals?.count ?? 0;
    this.storedBytes = (totals?.payload ?? 0) + this.storedCount * ROW_OVERHEAD_BYTES;
    this.nextId = (totals?.maxId ?? 0) + 1;
    const sidecar = readSeqSidecar(this.sidecarPath);
    // Stale: the first append writes it again (this run open, in this boot) before it hands out a number.
    this.reserved = { data: sidecar.data, results: sidecar.results, dataLowestWaiting: sidecar.dataLowestWaiting, stale: true };

    const meta = db.prepare<[string], { value: number }>('SELECT value FROM meta WHERE key = ?');
    const storedData = meta.get(NEXT_SEQ_KEY.data)?.value;
    const storedResults = meta.get(NEXT_SEQ_KEY.results)?.value;
    if (storedData !== undefined || storedResults !== undefined || this.storedCount > 0) {
      this.next = {
        data: Math.max(1, storedData ?? 0, (totals?.maxData ?? 0) + 1),
        results: Math.max(1, storedResults ?? 0, (totals?.maxResults ?? 0) + 1),
      };
      // A kill -9 keeps every commit (the OS holds the writes): the same boot, or durability full, continues exactly.
      const run = sidecar.run;
      const unclean = run?.state === 'open' && (run.boot === undefined || run.boot !== this.boot) && (this.options.durability ?? 'normal') !== 'full';
      if (!unclean) return undefined;
      const first = this.next.data;
      this.next = { data: Math.max(first, sidecar.data), results: Math.max(this.next.results, sidecar.results) };
      if (this.next.data === first) return undefined;
      this.announceAtOpen(first, this.next.data - 1, this.lowestWaitingDataSeq());
      return 'unclean-stop';
    }
    // A new database. Continue above everything this device may have numbered before: the sidecar's reservation, the
    // moved-aside file if it was still readable, and a wall-clock floor of ms × 1000 (a device cannot have stored 1000
    // messages per millisecond since any earlier database was created, so the floor is above them too; it covers a
    // lost sidecar as long as the clock is set).
    const clockFloor = Math.floor(this.now()) * 1000;
    const floor = Math.max(1, seqInMovedAsideFile ?? 0, Number.isSafeInteger(clockFloor) ? clockFloor : 0);
    this.next = { data: Math.max(floor, sidecar.data), results: Math.max(floor, sidecar.results) };
    // An outbox was here before (the sidecar is written only beside one that numbered messages), or a damaged or
    // emptied file was found: whatever waited in it is gone. Which numbers is not known: from the lowest that may
    // have been waiting (the sidecar's bound; 1 without one) to the last that can have been handed out.
    const lost = sidecar.found || seqInMovedAsideFile !== undefined || found === 'empty';
    const first = sidecar.dataLowestWaiting ?? 1;
    const last = this.next.data - 1;
    if (!lost || last < first) {
      this.writeMeta.run(NEXT_SEQ_KEY.data, this.next.data);
      this.writeMeta.run(NEXT_SEQ_KEY.results, this.next.results);
      return undefined;
    }
    this.announceAtOpen(first, last, first);
    return 'file-lost';
  }

  /**
   * At open: one notice for [first, last], an upper bound (`outbox-lost`), numbered next; the sidecar first reserves
   * its number (`lowest`: its lowest-waiting bound). If the sidecar cannot be written the notice is stored all the same
   * (its number is above everything handed out before) and the next append tries the sidecar again.
   */
  private announceAtOpen(first: number, last: number, lowest: number): void {
    try {
      this.writeReservation({ data: this.next.data + 1 + SEQ_RESERVE_BLOCK, results: this.next.results + SEQ_RESERVE_BLOCK }, lowest);
    } catch (err) {
      this.reserved = { data: this.next.data + 1, results: this.next.results, dataLowestWaiting: lowest, stale: true };
      this.lastProblem = { at: this.now(), message: `outbox: could not write ${this.sidecarPath}: ${describe(err)}` };
    }
    const tx = this.begin(this.now());
    this.file.db.transaction(() => {
      this.announce(tx, first, last, 'outbox-lost', false);
      this.finishLosses(tx);
      this.writeNumbering(tx, true);
    })();
    this.commitLosses(tx);
    this.next = tx.next;
    this.losses.outboxLost++;
  }

  /** Prepares the statements and transactions on `db` (the file's connection, new after a carry-over). */
  private attach(db: Database.Database): void {
    // A carried-over copy holds the same messages; its sizes are looked up afresh, and peeks are taken again, all the same.
    this.handedOut.clear();
    this.changes++;
    this.insertMessage = db.prepare('INSERT INTO message (id, seq, priority, kind, created_at, payload, topic, correlation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    this.updatePayload = db.prepare('UPDATE message SET payload = ? WHERE id = ?');
    this.deleteMessage = db.prepare('DELETE FROM message WHERE id = ?');
    this.recordDelivered = db.prepare('INSERT OR IGNORE INTO delivered (id) SELECT value FROM json_each(?)');
    this.clearDelivered = db.prepare('DELETE FROM delivered');
    this.messageSize = db.prepare('SELECT coalesce(seq, id) AS seq, kind, length(payload) AS size FROM message WHERE id = ?');
    // The walk in send order reads the index only; payloads are read for the messages actually handed out, not for
    // the in-flight ones skipped on the way (a window's worth at every peek).
    this.sendOrder = db.prepare<[], number>('SELECT id FROM message ORDER BY priority DESC, id ASC').pluck();
    this.messageById = db.prepare<[number], MessageRow>(`SELECT ${MESSAGE_COLUMNS} FROM message WHERE id = ?`).raw();
    // The send order continued after a position, both on the send-order index.
    this.samePriorityAfter = db
      .prepare<[number, number], MessageRow>(`SELECT ${MESSAGE_COLUMNS} FROM message WHERE priority = ? AND id > ? ORDER BY priority DESC, id ASC`)
      .raw();
    this.lowerPriorities = db.prepare<[number], MessageRow>(`SELECT ${MESSAGE_COLUMNS} FROM message WHERE priority < ? ORDER BY priority DESC, id ASC`).raw();
    // Loss notices are never evicted or expired: each is the only record of what it announces.
    this.evictionOrder = db.prepare(
      "SELECT id, coalesce(seq, id) AS seq, kind, length(payload) AS size FROM message WHERE priority = ? AND kind <> 'loss' ORDER BY id ASC",
    );
    this.deleteExpired = db.prepare(
      "DELETE FROM message WHERE created_at < ? AND kind <> 'loss' RETURNING id, coalesce(seq, id) AS seq, kind, priority, length(payload) AS size",
    );
    this.oldest = db.prepare('SELECT min(created_at) AS oldest FROM message');
    this.ageOrder = db.prepare('SELECT id, created_at FROM message ORDER BY created_at ASC');
    // Within the data stream numbers grow with the id: the first data row by id holds the lowest number waiting.
    this.firstDataRow = db.prepare("SELECT coalesce(seq, id) AS seq FROM message WHERE kind <> 'result' ORDER BY id ASC LIMIT 1");
    this.lossPayloads = db.prepare("SELECT payload FROM message WHERE kind = 'loss'");
    this.noticeBytes = db.prepare(`SELECT coalesce(sum(length(payload)), 0) + count(*) * ${ROW_OVERHEAD_BYTES} AS bytes FROM message WHERE kind = 'loss'`);
    this.writeMeta = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
    this.flushAcksTransaction = db.transaction(this.flushAcksInTransaction);
    this.appendTransaction = db.transaction((items: readonly OutboxItem[], now: number) => this.appendInTransaction(items, now));
    this.dropTransaction = db.transaction((id: number, row: { seq: number; kind: string; size: number }, now: number) => this.dropInTransaction(id, row, now));
  }

  /**
   * Whether the path still names the outbox's file (one stat: called once per write transaction, by append, by the
   * data path's write timer and at close). A file deleted or replaced under the running agent is reported as an
   * error, and everything the open connection still holds (the waiting messages, the sequence counters) is carried
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
      if (!readSeqSidecar(this.sidecarPath).found) {
        this.reserved.stale = true;
        try {
          this.reserveAhead(0, 0);
        } catch {
          // the database's meta rows still carry the counters; the next append writes the sidecar again (stale)
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
      return `outbox: ${file} ${what} while the agent was running: its ${waiting} and the sequence counters were carried over to a new file at the same path; nothing was lost`;
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
   * Stores a batch in one transaction, numbering each message in its stream, then enforces the age and size bounds,
   * announcing what they delete of the data stream. On a full disk or an I/O error the whole batch is rejected and
   * reported, never thrown, and no number is used; the next append simply tries again.
   */
  append(items: readonly OutboxItem[]): AppendResult {
    if (this.closed) throw new Error('outbox: append after close');
    if (items.length === 0) return { seqs: [], ids: [], rejected: 0 };
    this.verifyFile();
    const now = this.now();
    try {
      const outcome = this.meter.measure(() => {
        let results = 0;
        for (const item of items) if (item.kind === 'result') results++;
        this.reserveAhead(items.length - results + NOTICE_SEQS_AHEAD, results);
        return this.appendTransaction(items, now);
      });
      this.commitOutcome(outcome);
      this.writeWorked(now);
      if (this.setAsideBytes > 0 && this.storedBytes + this.setAsideBytes > this.options.maxBytes) this.pruneSetAside();
      if (outcome.seqs.length > 0 || outcome.tx.noticesStarted > 0) this.notifyAppend();
      return { seqs: outcome.seqs, ids: outcome.ids, rejected: outcome.oversize };
    } catch (err) {
      if (err instanceof EncodeFailure) throw err.cause;
      if (!isStorageFailure(err)) throw err;
      this.rejected += items.length;
      this.writeFailed(err, items.length, now, () => `outbox: ${items.length} message(s) rejected: ${describe(err)}`);
      return { seqs: [], ids: [], rejected: items.length };
    }
  }

  /** A failed write, folded (WriteFailures): reported at once when it starts a run, counted otherwise. */
  private writeFailed(err: unknown, messages: number, now: number, first: () => string, reason?: OutboxErrorReason): void {
    const said = this.writeFailures.failed(err, messages, now, first);
    const why: OutboxErrorReason = reason ?? (messages > 0 ? 'append-failed' : 'acknowledge-failed');
    if (said !== undefined) this.report(new OutboxError(why, said.severity, said.line, { cause: err }));
    else this.lastProblem = { at: now, message: `${describe(err)} (${messages > 0 ? `${messages} message(s) rejected` : 'deletion retried'}, folded)` };
  }

  private writeWorked(now: number): void {
    const line = this.writeFailures.succeeded(now);
    // Writing works again: what was lost was said (as errors) while it failed.
    if (line !== undefined) this.report(new OutboxError('write-recovered', 'warn', line));
  }

  /**
   * Before a write transaction: makes the sidecar reserve `data` and `results` more numbers than handed out (a block
   * beyond, so it is written once per SEQ_RESERVE_BLOCK messages), with the lowest data-stream number that may still be
   * waiting, read from the committed file.
   */
  private reserveAhead(data: number, results: number): void {
    const needData = this.next.data + data;
    const needResults = this.next.results + results;
    if (!this.reserved.stale && needData <= this.reserved.data && needResults <= this.reserved.results) return;
    this.writeReservation(
      {
        data: needData <= this.reserved.data ? this.reserved.data : needData + SEQ_RESERVE_BLOCK,
        results: needResults <= this.reserved.results ? this.reserved.results : needResults + SEQ_RESERVE_BLOCK,
      },
      this.lowestWaitingDataSeq(),
    );
  }

  /** Inside a transaction: a number about to be stored must be below the reservation (it usually is: reserveAhead). */
  private ensureReserved(stream: SeqStream, upTo: number): void {
    if (upTo <= this.reserved[stream]) return;
    // The lowest-waiting bound is not read here: this transaction's deletions are not committed yet. The one last
    // written stays true (that number never decreases), or none when none was.
    const reservation = { data: this.reserved.data, results: this.reserved.results };
    reservation[stream] = Math.max(reservation[stream], upTo + SEQ_RESERVE_BLOCK);
    this.writeReservation(reservation, this.reserved.dataLowestWaiting);
  }

  private writeReservation(reservation: Record<SeqStream, number>, dataLowestWaiting: number | undefined): void {
    const next = { data: Math.max(reservation.data, this.next.data), results: Math.max(reservation.results, this.next.results) };
    writeSeqSidecar(this.sidecarPath, { ...next, dataLowestWaiting }, 'open', this.boot);
    this.reserved = { ...next, dataLowestWaiting, stale: dataLowestWaiting === undefined };
  }

  /**
   * The lowest data-stream number still in the file: a message waiting (or acknowledged, not yet deleted), a loss
   * notice, or a number a notice announces (lost with the file, the notice would take that news with it). The next
   * number when there is none. It never decreases: what is stored later is numbered higher, and what a later notice
   * announces was waiting.
   */
  private lowestWaitingDataSeq(): number {
    let lowest = this.firstDataRow.get()?.seq ?? this.next.data;
    for (const { payload } of this.lossPayloads.iterate()) {
      try {
        for (const range of decodeLossNotice(payload).lost) lowest = Math.min(lowest, range.first);
      } catch {
        // written by this outbox: cannot happen; the row's own number is already counted above
      }
    }
    return Math.min(lowest, this.next.data);
  }

  private begin(now: number): Transaction {
    return {
      now,
      count: this.storedCount,
      bytes: this.storedBytes,
      next: { ...this.next },
      nextId: this.nextId,
      notice: this.openNotice,
      noticeOwned: false,
      noticeChanged: false,
      noticesStarted: 0,
      lostAnnounced: 0,
    };
  }

  /** The next number of `stream`, reserved on disk first. */
  private takeSeq(tx: Transaction, stream: SeqStream): number {
    const seq = tx.next[stream];
    this.ensureReserved(stream, seq + 1);
    tx.next[stream] = seq + 1;
    return seq;
  }

  /**
   * Adds [first, last] to the loss notice being written: a new notice when there is none, or when it is full and the
   * notices stored leave room for another; otherwise the full one is coarsened to take it.
   */
  private announce(tx: Transaction, first: number, last: number, reason: LossReason, exact: boolean): void {
    if (tx.notice && !tx.noticeOwned) {
      tx.notice = { ...tx.notice, ranges: tx.notice.ranges.slice() };
      tx.noticeOwned = true;
    }
    const current = tx.notice;
    if (current && !addLostRange(current.ranges, first, last, reason, exact, this.rangeCap)) {
      if (this.roomForAnotherNotice(current)) {
        this.saveNotice(tx, current);
        tx.notice = undefined;
      } else {
        coarsenLostRanges(current.ranges, first, last, reason, exact, this.rangeCap);
      }
    }
    if (!tx.notice) {
      // Its number comes after those it announces: the notice is the newest message of the stream.
      tx.notice = { id: tx.nextId++, seq: this.takeSeq(tx, 'data'), createdAt: tx.now, ranges: [], bytes: 0, stored: false };
      tx.noticeOwned = true;
      tx.noticesStarted++;
      addLostRange(tx.notice.ranges, first, last, reason, exact, this.rangeCap);
    }
    tx.noticeChanged = true;
    if (exact) tx.lostAnnounced += last - first + 1;
  }

  /** Whether the notices stored (this full one included) leave room in their share of maxBytes for one more. */
  private roomForAnotherNotice(full: Notice): boolean {
    const stored = this.noticeBytes.get()?.bytes ?? 0;
    const unsaved = full.stored ? 0 : NOTICE_BYTES + full.ranges.length * RANGE_BYTES + ROW_OVERHEAD_BYTES;
    return stored + unsaved + NOTICE_BYTES + this.rangeCap * RANGE_BYTES + ROW_OVERHEAD_BYTES <= this.noticeBudget;
  }

  /** Writes the notice's row (inserted, or its payload replaced), its size counted. */
  private saveNotice(tx: Transaction, notice: Notice): void {
    const payload = encodeLossNotice(this.options.deviceId, notice.seq, notice.createdAt, notice.ranges);
    if (notice.stored) {
      this.updatePayload.run(payload, notice.id);
      tx.bytes += payload.byteLength - notice.bytes;
    } else {
      this.insertMessage.run(notice.id, notice.seq, MAX_PRIORITY, 'loss', notice.createdAt, payload, null, null);
      tx.count++;
      tx.bytes += payload.byteLength + ROW_OVERHEAD_BYTES;
      notice.stored = true;
    }
    notice.bytes = payload.byteLength;
  }

  /** Writes the notice the losses went into, if they changed it. */
  private finishLosses(tx: Transaction): void {
    if (tx.notice && tx.noticeChanged) this.saveNotice(tx, tx.notice);
    tx.noticeChanged = false;
  }

  /** The streams' next numbers into meta, those that moved (or all). */
  private writeNumbering(tx: Transaction, all = false): void {
    for (const stream of ['data', 'results'] as const) {
      if (all || tx.next[stream] !== this.next[stream]) this.writeMeta.run(NEXT_SEQ_KEY[stream], tx.next[stream]);
    }
  }

  /** After the commit: the notice state and the loss counters. */
  private commitLosses(tx: Transaction): void {
    if (tx.noticeOwned) this.openNotice = tx.notice;
    this.nextId = tx.nextId;
    this.losses.notices += tx.noticesStarted;
    this.losses.messages += tx.lostAnnounced;
    this.storedCount = tx.count;
    this.storedBytes = tx.bytes;
  }

  private appendInTransaction(items: readonly OutboxItem[], now: number): AppendOutcome {
    const tx = this.begin(now);
    const outcome: AppendOutcome = { tx, seqs: [], ids: [], oversize: 0, expired: 0, evicted: [], acksFlushed: false };

    if (this.pendingAcks.size > 0) {
      this.flushAcksInTransaction();
      for (const size of this.pendingAcks.values()) tx.bytes -= size;
      tx.count -= this.pendingAcks.size;
      outcome.acksFlushed = true;
    }

    for (const item of items) {
      const stream = streamOf(item.kind);
      const seq = tx.next[stream];
      let payload: Uint8Array;
      try {
        payload = item.encode(seq);
      } catch (err) {
        throw new EncodeFailure(err);
      }
      const size = payload.byteLength + ROW_OVERHEAD_BYTES;
      if (size > this.options.maxBytes) {
        // Not stored, and its number stays free for the next message: a gap only where data was lost.
        outcome.oversize++;
        continue;
      }
      this.takeSeq(tx, stream);
      const id = tx.nextId++;
      this.insertMessage.run(
        id,
        seq,
        item.priority,
        item.kind,
        item.createdAt,
        payload,
        item.topic ?? null,
        item.correlation ? toBuffer(item.correlation) : null,
      );
      outcome.seqs.push(seq);
      outcome.ids.push(id);
      tx.count++;
      tx.bytes += size;
    }

    // Expiry after the inserts: a message already too old when appended goes at once, counted as expired.
    const cutoff = now - this.options.maxAgeMs;
    const oldest = this.oldest.get()?.oldest;
    if (oldest !== null && oldest !== undefined && oldest < cutoff) {
      for (const row of this.deleteExpired.all(cutoff)) {
        this.handedOut.delete(row.id);
        outcome.expired++;
        tx.count--;
        tx.bytes -= row.size + ROW_OVERHEAD_BYTES;
        if (streamOf(toKind(row.kind)) === 'data') this.announce(tx, row.seq, row.seq, 'expired', true);
      }
      this.finishLosses(tx);
    }

    // The notice of what is evicted takes room too: evict until everything, it included, fits (or only notices are left).
    while (tx.bytes > this.options.maxBytes) {
      const victims = this.chooseEvictions(tx.bytes - this.options.maxBytes);
      if (victims.length === 0) break;
      for (const victim of victims) {
        this.deleteMessage.run(victim.id);
        this.handedOut.delete(victim.id);
        tx.count--;
        tx.bytes -= victim.bytes;
        if (streamOf(toKind(victim.kind)) === 'data') this.announce(tx, victim.seq, victim.seq, 'evicted', true);
      }
      outcome.evicted.push(...victims);
      this.finishLosses(tx);
    }
    this.writeNumbering(tx);
    return outcome;
  }

  /** Lowest priority first, oldest first within a priority, until `excess` bytes are freed. Never a loss notice. */
  private chooseEvictions(excess: number): Victim[] {
    const victims: Victim[] = [];
    let freed = 0;
    for (let priority = MIN_PRIORITY; priority <= MAX_PRIORITY && freed < excess; priority++) {
      // Collected first, deleted after: the connection cannot run a DELETE while this query is being stepped.
      for (const row of this.evictionOrder.iterate(priority)) {
        const bytes = row.size + ROW_OVERHEAD_BYTES;
        victims.push({ id: row.id, seq: row.seq, kind: row.kind, priority, bytes });
        freed += bytes;
        if (freed >= excess) break;
      }
    }
    return victims;
  }

  private commitOutcome(outcome: AppendOutcome): void {
    this.changes++;
    // The totals already left them out (commitLosses takes the transaction's).
    if (outcome.acksFlushed) this.forgetAcknowledgements();
    this.commitLosses(outcome.tx);
    this.next = outcome.tx.next;
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

  peek(maxCount: number, maxBytes: number, skip: IdFilter, after?: SendPosition): OutboxRecord[] {
    if (this.closed || maxCount <= 0) return [];
    const batch: PeekBatch = { records: [], bytes: 0, maxCount, maxBytes };
    if (after === undefined) {
      // From the start: the ids alone, in the index, past what is in flight or acknowledged; each row read once taken.
      for (const id of this.sendOrder.iterate()) {
        if (skip.has(id) || this.pendingAcks.has(id)) continue;
        const row = this.messageById.get(id);
        if (row !== undefined && !this.take(batch, row)) break;
      }
      return batch.records;
    }
    // After a position: the rest of its priority, then the lower ones, whole rows in one walk each (what was in
    // flight or acknowledged lies before the position, so hardly a row is read for nothing).
    if (this.takeRows(batch, this.samePriorityAfter.iterate(after.priority, after.id), skip)) {
      this.takeRows(batch, this.lowerPriorities.iterate(after.priority), skip);
    }
    return batch.records;
  }

  /** Takes rows into the batch until it is full; false once it is (the walk is then ended early). */
  private takeRows(batch: PeekBatch, rows: IterableIterator<MessageRow>, skip: IdFilter): boolean {
    for (const row of rows) {
      if (skip.has(row[0]) || this.pendingAcks.has(row[0])) continue;
      if (!this.take(batch, row)) return false;
    }
    return true;
  }

  /** Adds the row to the batch; false when it did not fit or filled it. */
  private take(batch: PeekBatch, row: MessageRow): boolean {
    const [id, seq, kind, priority, createdAt, payload, topic, correlation] = row;
    const size = payload.byteLength;
    // Stop at the first message that does not fit rather than skipping ahead: the order is the contract.
    if (batch.records.length > 0 && batch.bytes + size > batch.maxBytes) return false;
    const record: OutboxRecord = { id, seq, kind: toKind(kind), priority: toPriority(priority), createdAt, payload };
    if (topic !== null) record.topic = topic;
    if (correlation !== null) record.correlation = correlation;
    batch.records.push(record);
    // Handed out: a backend may get it as it is now, so it never changes again; later losses go into a new notice.
    if (id === this.openNotice?.id) this.openNotice = undefined;
    this.handedOut.set(id, size + ROW_OVERHEAD_BYTES);
    batch.bytes += size;
    return batch.records.length < batch.maxCount;
  }

  /**
   * Marks the message delivered: hidden from peek at once, deleted from the file with the others acknowledged
   * within `ackFlushMs` (or by the next append). A crash before that flush re-sends them: duplicates the sequence
   * numbers let the consumer drop.
   */
  acknowledge(id: number): void {
    if (this.closed || this.pendingAcks.has(id)) return;
    let size = this.handedOut.get(id);
    if (size === undefined) {
      const row = this.messageSize.get(id);
      if (!row) return;
      size = row.size + ROW_OVERHEAD_BYTES;
    } else {
      this.handedOut.delete(id);
    }
    this.pendingAcks.set(id, size);
    this.unrecorded.push(id);
    this.acknowledged++;
    this.scheduleAckFlush();
  }

  /**
   * The broker refused the message for good: deleted now, unsent, with its loss announced (data stream) in the same
   * transaction. A loss notice is never dropped. On a write failure it stays (false): the caller may try again later.
   */
  drop(id: number): boolean {
    if (this.closed) return false;
    if (this.pendingAcks.has(id)) return true;
    // Deleted below, or kept after a write failure: either way looked up again if it is acknowledged after all.
    this.handedOut.delete(id);
    this.verifyFile();
    const row = this.messageSize.get(id);
    if (!row) return true;
    if (row.kind === 'loss') return false;
    const now = this.now();
    try {
      const tx = this.meter.measure(() => {
        this.reserveAhead(NOTICE_SEQS_AHEAD, 0);
        return this.dropTransaction(id, row, now);
      });
      this.commitLosses(tx);
      this.next = tx.next;
      this.dropped++;
      this.changes++;
      this.writeWorked(now);
      if (tx.noticesStarted > 0) this.notifyAppend();
      return true;
    } catch (err) {
      if (!isStorageFailure(err)) throw err;
      this.writeFailed(err, 0, now, () => `outbox: dropping refused message ${row.seq} (${row.kind}) failed, kept: ${describe(err)}`, 'drop-failed');
      return false;
    }
  }

  private dropInTransaction(id: number, row: { seq: number; kind: string; size: number }, now: number): Transaction {
    const tx = this.begin(now);
    this.deleteMessage.run(id);
    tx.count--;
    tx.bytes -= row.size + ROW_OVERHEAD_BYTES;
    if (streamOf(toKind(row.kind)) === 'data') this.announce(tx, row.seq, row.seq, 'refused', true);
    this.finishLosses(tx);
    this.writeNumbering(tx);
    return tx;
  }

  private scheduleAckFlush(): void {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      this.flushAcknowledgements();
    }, this.options.ackFlushMs ?? DEFAULT_ACK_FLUSH_MS);
    this.ackTimer.unref();
  }

  /**
   * Makes the acknowledgements since the last call durable with the smallest write: their ids go into the `delivered`
   * journal (a few bytes each, on one page), and their messages are deleted later with many others (the timer, the
   * next append, close; at open after a crash). A delete of a few messages rewrites the table's page and both indexes'
   * pages, and frees pages: about 28 KB of WAL for ten messages, against one 4 KB page here. On a write failure they
   * stay unrecorded, and the timer's flush tries again.
   */
  recordAcknowledgements(): void {
    if (this.closed || this.unrecorded.length === 0) return;
    const now = this.now();
    try {
      this.meter.measure(() => this.recordDelivered.run(JSON.stringify(this.unrecorded)));
    } catch (err) {
      if (!isStorageFailure(err)) throw err;
      const count = this.unrecorded.length;
      this.writeFailed(err, 0, now, () => `outbox: recording ${count} acknowledgement(s) failed, will retry: ${describe(err)}`);
      this.scheduleAckFlush();
      return;
    }
    this.writeWorked(now);
    this.unrecorded = [];
    this.journalled = true;
  }

  /** After a commit that deleted every acknowledged message and emptied the journal. */
  private forgetAcknowledgements(): void {
    this.pendingAcks.clear();
    this.unrecorded = [];
    this.journalled = false;
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
    this.forgetAcknowledgements();
  }

  get pending(): number {
    return this.storedCount - this.pendingAcks.size;
  }

  get revision(): number {
    return this.changes;
  }

  get unflushedAcknowledgements(): number {
    return this.unrecorded.length;
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
      nextSeq: this.next.data,
      nextResultSeq: this.next.results,
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
      dropped: this.dropped,
      losses: { ...this.losses },
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

  /**
   * Says in the sidecar that the outbox was closed cleanly, so the next start, in any boot, continues exactly. Best
   * effort: if it fails, a start after a power cut continues above the reservation instead (a gap, announced).
   */
  private markClosed(): void {
    try {
      const reservation = {
        data: Math.max(this.reserved.data, this.next.data),
        results: Math.max(this.reserved.results, this.next.results),
        dataLowestWaiting: this.lowestWaitingDataSeq(),
      };
      writeSeqSidecar(this.sidecarPath, reservation, 'closed', this.boot);
    } catch {
      // the sidecar still says open: the next start after a reboot announces the reservation as possibly lost
    }
  }

  private oldestWaiting(): number | undefined {
    if (this.pendingAcks.size === 0) return this.oldest.get()?.oldest ?? undefined;
    for (const row of this.ageOrder.iterate()) {
      if (!this.pendingAcks.has(row.id)) return row.created_at;
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
    this.markClosed();
    this.closed = true;
    this.listeners.clear();
    this.handedOut.clear();
    this.file.close();
  }
}

interface Victim {
  id: number;
  seq: number;
  kind: string;
  priority: number;
  bytes: number;
}

interface AppendOutcome {
  /** The transaction's state: totals, numbering, notice. */
  tx: Transaction;
  seqs: number[];
  ids: number[];
  oversize: number;
  expired: number;
  evicted: Victim[];
  acksFlushed: boolean;
}
