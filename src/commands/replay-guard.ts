/**
 * Remembers the IDs of the commands the car has taken, in SQLite, across restarts: a captured command sent again is
 * REJECTED as 'replayed'. An ID is kept until the command could no longer be valid anyway (its expiry plus the clock
 * skew allowance), then purged: the table stays as small as the commands of the last maxLifetimeS.
 *
 * The purge does not trust the car's clock alone: a clock that jumps a year ahead (a bad GNSS or RTC fix) and back
 * must not forget IDs still valid in real time. It forgets only what expired before the latest issue time of a
 * command taken: a signed time that real time has certainly reached.
 *
 * Each ID is recorded before the command runs, in a transaction fsynced at commit (synchronous FULL): a power cut
 * right after a command ran must not make it runnable again.
 *
 * A corrupt file is moved aside and a fresh one started, with a floor: commands issued before that moment are
 * refused (their IDs may have been in the lost file), so losing the memory never reopens the window for a replay.
 *
 * The same file keeps the commands running now, with their result route: after a crash or a power cut the agent
 * finds the ones it never finished and reports them FAILED ('interrupted'), so every accepted command gets a final
 * result even when the process dies under it.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';

export type ReplayVerdict =
  | { fresh: true }
  /** `duplicate`: the same bytes again (a QoS 1 redelivery, or a replay of them); `reused`: another command with an ID already taken; `before-reset`: issued before the memory was lost. */
  | { fresh: false; why: 'duplicate' | 'reused' | 'before-reset'; message: string };

const PURGE_EVERY_MS = 60_000;

/** A command that was running when the agent stopped without finishing it. */
export interface InterruptedCommand {
  id: string;
  name: string;
  topic: string;
  correlation?: Buffer;
  startedAt: number;
}

export interface ReplayGuardOptions {
  path: string;
  now?: () => number;
  /** A corrupt file moved aside (the guard carries on with a fresh one). */
  onProblem?: (message: string) => void;
}

export class ReplayGuard {
  private readonly insert: Database.Statement<[string, string, number, number]>;
  private readonly saveMaxIssued: Database.Statement<[number]>;
  /** The latest issuedAt of a command taken (unix ms): the purge horizon's cap. */
  private maxIssuedAt: number;
  private readonly rememberFresh: (id: string, digest: string, until: number, now: number, issuedAt: number) => boolean;
  private readonly lookup: Database.Statement<[string], { digest: string; received_at: number }>;
  private readonly purge: Database.Statement<[number]>;
  private readonly insertRunning: Database.Statement<[string, string, string, Buffer | null, number]>;
  private readonly deleteRunning: Database.Statement<[string]>;
  private readonly now: () => number;
  private lastPurge = 0;
  /** Commands issued before this (unix ms) are refused: the memory of them was lost. 0: none. */
  readonly notBefore: number;

  private constructor(private readonly db: Database.Database, now: () => number) {
    this.now = now;
    this.insert = db.prepare('INSERT OR IGNORE INTO seen (id, digest, expires_at, received_at) VALUES (?, ?, ?, ?)');
    this.lookup = db.prepare('SELECT digest, received_at FROM seen WHERE id = ?');
    this.purge = db.prepare('DELETE FROM seen WHERE expires_at < ?');
    this.insertRunning = db.prepare('INSERT OR REPLACE INTO running (id, name, topic, correlation, started_at) VALUES (?, ?, ?, ?, ?)');
    this.deleteRunning = db.prepare('DELETE FROM running WHERE id = ?');
    this.notBefore = db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'not_before'").get()?.value ?? 0;
    this.maxIssuedAt = db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'max_issued_at'").get()?.value ?? 0;
    this.saveMaxIssued = db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('max_issued_at', ?)");
    // One transaction, one fsync: the ID and the horizon together.
    this.rememberFresh = db.transaction((id: string, digest: string, until: number, now: number, issuedAt: number) => {
      if (this.insert.run(id, digest, until, now).changes !== 1) return false;
      if (issuedAt > this.maxIssuedAt) this.saveMaxIssued.run(issuedAt);
      return true;
    });
  }

  static open(options: ReplayGuardOptions): ReplayGuard {
    const now = options.now ?? Date.now;
    mkdirSync(path.dirname(options.path), { recursive: true });
    let db: Database.Database;
    let reset = false;
    try {
      db = openChecked(options.path);
    } catch (err) {
      if (!isCorruption(err)) throw new Error(`commands.replayDbPath: cannot open ${options.path}: ${(err as Error).message}`);
      const aside = moveAside(options.path, now());
      options.onProblem?.(
        `commands: the replay memory ${options.path} is corrupt (${(err as Error).message}); moved it aside as ${aside}: commands issued before now are refused`,
      );
      db = openChecked(options.path);
      reset = true;
    }
    if (reset) db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('not_before', ?)").run(now());
    return new ReplayGuard(db, now);
  }

  /**
   * Records `id` (with the digest of the signed bytes) until `until` (unix ms), atomically with the check: true the
   * first time, a verdict saying why not after that.
   */
  remember(id: string, digest: string, issuedAt: number, until: number): ReplayVerdict {
    const now = this.now();
    if (issuedAt < this.notBefore) {
      return { fresh: false, why: 'before-reset', message: `issued before ${new Date(this.notBefore).toISOString()}, when the replay memory was reset: it cannot be told from a replay` };
    }
    // Either way: a clock set back must not hold the purges off until it catches up.
    if (Math.abs(now - this.lastPurge) > PURGE_EVERY_MS) {
      // This command's issue time is signed and checked too: real time has reached it.
      this.purge.run(Math.min(now, Math.max(this.maxIssuedAt, issuedAt)));
      this.lastPurge = now;
    }
    if (this.rememberFresh(id, digest, until, now, issuedAt)) {
      this.maxIssuedAt = Math.max(this.maxIssuedAt, issuedAt);
      return { fresh: true };
    }
    const seen = this.lookup.get(id);
    const when = seen ? new Date(seen.received_at).toISOString() : 'before';
    if (seen?.digest === digest) return { fresh: false, why: 'duplicate', message: `command ${id} was already received at ${when} (a redelivery or a replay)` };
    return { fresh: false, why: 'reused', message: `the command ID ${id} was already used at ${when} by another command` };
  }

  /** Notes that command `id` runs now, with where its result goes; fsynced before it runs. */
  started(id: string, name: string, route: { topic: string; correlation?: Buffer }): void {
    this.insertRunning.run(id, name, route.topic, route.correlation ?? null, this.now());
  }

  /** Notes that command `id` has its final result stored. */
  finished(id: string): void {
    if (this.db.open) this.deleteRunning.run(id);
  }

  /** The commands noted as running and never finished: running when the agent last died. */
  interrupted(): InterruptedCommand[] {
    const rows = this.db
      .prepare<[], { id: string; name: string; topic: string; correlation: Buffer | null; started_at: number }>('SELECT id, name, topic, correlation, started_at FROM running ORDER BY started_at')
      .all();
    return rows.map((row) => ({ id: row.id, name: row.name, topic: row.topic, ...(row.correlation ? { correlation: row.correlation } : {}), startedAt: row.started_at }));
  }

  /** IDs remembered now (for tests and health). */
  get size(): number {
    return this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM seen').get()!.n;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function openChecked(file: string): Database.Database {
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Damaged(`quick_check: ${String(check)}`);
    db.pragma('synchronous = FULL');
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, digest TEXT NOT NULL, expires_at INTEGER NOT NULL, received_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS seen_expiry ON seen (expires_at);
      CREATE TABLE IF NOT EXISTS running (id TEXT PRIMARY KEY, name TEXT NOT NULL, topic TEXT NOT NULL, correlation BLOB, started_at INTEGER NOT NULL) WITHOUT ROWID;
    `);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

class Damaged extends Error {}

function isCorruption(err: unknown): boolean {
  if (err instanceof Damaged) return true;
  if (!(err instanceof Database.SqliteError)) return false;
  return err.code.startsWith('SQLITE_CORRUPT') || err.code === 'SQLITE_NOTADB';
}

function moveAside(file: string, now: number): string {
  const aside = `${file}.corrupt-${new Date(now).toISOString().replace(/[:.]/g, '-')}`;
  for (const suffix of ['', '-wal', '-shm']) if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
  return aside;
}
