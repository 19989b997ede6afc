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
 * Losing the memory never reopens the window for a replay. Beside the file, an anchor (`.<file name>.anchor`, JSON,
 * replaced atomically and fsynced) keeps what must survive the file: that the agent has run, which memory it kept
 * (a random ID also stored in the database), and a horizon that no command taken was issued after. The horizon
 * advances before an ID is recorded, a minute ahead of the command's signed issue time, so a burst of commands costs
 * one anchor write. When the database is corrupt, missing, empty (truncated to 0 bytes) or not the one the anchor
 * names, while the anchor says the agent has run, the file is moved aside, a fresh one started, an error logged, and
 * commands issued before a floor are refused ('before-reset'): their IDs may have been in the lost file. The floor is
 * the horizon (never the car's clock alone, which may say 1970 on a car without an RTC), and never earlier than the
 * signed times known from outside (`knownSince`: the notBefore of the certificates the car trusts). Without a
 * readable anchor it is the car's clock, or that, whichever is later.
 *
 * The same file keeps the commands running now, with their result route: after a crash or a power cut the agent
 * finds the ones it never finished and reports them FAILED ('interrupted'), so every accepted command gets a final
 * result even when the process dies under it.
 */
import type Database from 'better-sqlite3';
import { randomInt } from 'node:crypto';
import path from 'node:path';
import { readRegularFile, RegularFileError } from '../config/regular-file.js';
import { atomicWriteFile } from '../store/atomic-file.js';
import { DamagedStateFile, pruneSetAside, setAside, StateDatabase, STATE_FILE_MODE } from '../store/state-database.js';

export type ReplayVerdict =
  | { fresh: true }
  /** `duplicate`: the same bytes again (a QoS 1 redelivery, or a replay of them); `reused`: another command with an ID already taken; `before-reset`: issued before the memory was lost. */
  | { fresh: false; why: 'duplicate' | 'reused' | 'before-reset'; message: string };

/** What the replay guard reports of itself: the line, and whether it is an error or a warning (see onProblem). */
export type ReplayProblemListener = (message: string, severity: 'error' | 'warn') => void;

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
  /**
   * One line per problem, with how bad it is: `error` for a memory lost and started afresh (corrupt, missing, empty)
   * or deleted under the running agent (commands from before a floor are refused from now on); `warn` for an anchor
   * written again from an intact file.
   */
  onProblem?: ReplayProblemListener;
  /**
   * The latest signed time known from outside this file (unix ms): the notBefore of the certificates the car trusts.
   * A floor is never set earlier.
   */
  knownSince?: number;
}

/** What survives the loss of the database (see the module comment). */
interface Anchor {
  v: 1;
  /** The ID of the memory (database) this anchor vouches for. */
  memory: number;
  /** No command taken was issued after this (unix ms). */
  horizon: number;
}

/** How far ahead of a command's issue time the horizon is written: a burst of commands costs one anchor write. */
export const ANCHOR_AHEAD_MS = 60_000;

/** The anchor file of the replay memory `file`: hidden beside it, so that `rm commands.db*` leaves it. */
export function anchorPath(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.anchor`);
}

export class ReplayGuard {
  private statements: ReplayStatements;
  /** The latest issuedAt of a command taken (unix ms): the purge horizon's cap. */
  private maxIssuedAt: number;
  private readonly now: () => number;
  private lastPurge = 0;
  /** Commands issued before this (unix ms) are refused: the memory of them was lost. 0: none. */
  readonly notBefore: number;

  /** The anchor's horizon, as written (unix ms). */
  private horizon: number;

  private constructor(
    private readonly store: StateDatabase,
    now: () => number,
    private readonly anchorFile: string,
    private readonly memory: number,
    horizon: number,
    private readonly onProblem: ReplayProblemListener | undefined,
  ) {
    this.now = now;
    this.horizon = horizon;
    this.statements = prepareStatements(store.db);
    this.notBefore = metaValue(store.db, 'not_before') ?? 0;
    this.maxIssuedAt = metaValue(store.db, 'max_issued_at') ?? 0;
  }

  static open(options: ReplayGuardOptions): ReplayGuard {
    const now = options.now ?? Date.now;
    const file = options.path;
    const anchorFile = anchorPath(file);
    const anchor = readAnchor(anchorFile);
    /** What happened to the memory, when it was lost. */
    let lost: string | undefined;
    let aside: string | undefined;
    let store: StateDatabase;
    try {
      store = StateDatabase.open(file, STATE_OPTIONS);
    } catch (err) {
      if (!(err instanceof DamagedStateFile)) throw err;
      lost = `is corrupt (${err.message})`;
      aside = setAside(file, 'corrupt', now());
      store = StateDatabase.open(file, STATE_OPTIONS);
    }
    if (lost === undefined) {
      if (store.found === 'empty') lost = 'is empty (0 bytes: truncated)';
      else if (store.found === 'created' && anchor.state !== 'absent') lost = 'is missing';
      else if (store.found === 'existing' && anchor.state === 'ok' && metaValue(store.db, 'memory') !== anchor.memory) {
        store.close();
        lost = 'is not the one the agent kept (its anchor names another: the file was replaced or made anew)';
        aside = setAside(file, 'replaced', now());
        store = StateDatabase.open(file, STATE_OPTIONS);
      }
    }
    // Files set aside are evidence for a person, kept in bounded number.
    pruneSetAside(file, { keep: MAX_SET_ASIDE_FILES });
    const db = store.db;
    const setMeta = db.prepare<[string, number]>('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
    let memory = metaValue(db, 'memory');
    const hadMemory = memory !== undefined;
    if (memory === undefined) {
      memory = randomInt(2 ** 47);
      setMeta.run('memory', memory);
    }
    const known = options.knownSince ?? 0;
    let horizon = Math.max(metaValue(db, 'max_issued_at') ?? 0, metaValue(db, 'not_before') ?? 0, anchor.state === 'ok' ? anchor.horizon : 0);
    if (lost !== undefined) {
      // Every ID the lost file held was issued at or before the anchor's horizon. Without an anchor, the car's clock
      // is all there is, and the certificates' signed times keep it from a 1970 of a car without an RTC.
      const floor = Math.max(anchor.state === 'ok' ? anchor.horizon + 1 : now(), known);
      setMeta.run('not_before', floor);
      horizon = Math.max(horizon, floor);
      const evidence = anchor.state === 'absent' ? '' : ` (the agent has run before: ${anchorFile})`;
      options.onProblem?.(
        `commands: the replay memory ${file} ${lost}${evidence}; ${aside ? `moved it aside as ${aside}, ` : ''}started a new one: commands issued before ${new Date(floor).toISOString()} are refused (they cannot be told from replays)`,
        'error',
      );
    } else if (anchor.state === 'unreadable') {
      options.onProblem?.(`commands: the replay anchor ${anchorFile} is unreadable (${anchor.reason}); written again from ${file}, which is intact`, 'warn');
    } else if (anchor.state === 'absent' && hadMemory) {
      options.onProblem?.(`commands: the replay anchor ${anchorFile} was missing; written again from ${file}, which is intact`, 'warn');
    }
    if (anchor.state !== 'ok' || anchor.memory !== memory || anchor.horizon < horizon) writeAnchor(anchorFile, { v: 1, memory, horizon });
    return new ReplayGuard(store, now, anchorFile, memory, horizon, options.onProblem);
  }

  /**
   * Records `id` (with the digest of the signed bytes) until `until` (unix ms), atomically with the check: true the
   * first time, a verdict saying why not after that.
   */
  remember(id: string, digest: string, issuedAt: number, until: number): ReplayVerdict {
    const now = this.now();
    // The file deleted or replaced under the running agent: its content (every ID) is carried over to a new file.
    const change = this.store.verifyPath(now);
    if (change) {
      this.statements = prepareStatements(this.store.db);
      this.onProblem?.(
        `commands: the replay memory ${this.store.file} was ${change.found} while the agent ran; carried its IDs over to a new file${change.movedAside ? ` (the file found there moved aside as ${change.movedAside})` : ''}`,
        'error',
      );
    }
    const { purge, rememberFresh, lookup } = this.statements;
    if (issuedAt < this.notBefore) {
      return {
        fresh: false,
        why: 'before-reset',
        message: `issued before ${new Date(this.notBefore).toISOString()}, when the replay memory was reset: it cannot be told from a replay`,
      };
    }
    // The anchor first: at every moment its horizon covers every ID the file holds, so losing the file loses no ID.
    if (issuedAt > this.horizon) {
      const horizon = issuedAt + ANCHOR_AHEAD_MS;
      writeAnchor(this.anchorFile, { v: 1, memory: this.memory, horizon });
      this.horizon = horizon;
    }
    // Either way: a clock set back must not hold the purges off until it catches up.
    if (Math.abs(now - this.lastPurge) > PURGE_EVERY_MS) {
      // This command's issue time is signed and checked too: real time has reached it.
      purge.run(Math.min(now, Math.max(this.maxIssuedAt, issuedAt)));
      this.lastPurge = now;
    }
    if (rememberFresh(id, digest, until, now, issuedAt, this.maxIssuedAt)) {
      this.maxIssuedAt = Math.max(this.maxIssuedAt, issuedAt);
      return { fresh: true };
    }
    const seen = lookup.get(id);
    const when = seen ? new Date(seen.received_at).toISOString() : 'before';
    if (seen?.digest === digest) return { fresh: false, why: 'duplicate', message: `command ${id} was already received at ${when} (a redelivery or a replay)` };
    return { fresh: false, why: 'reused', message: `the command ID ${id} was already used at ${when} by another command` };
  }

  /** Notes that command `id` runs now, with where its result goes; fsynced before it runs. */
  started(id: string, name: string, route: { topic: string; correlation?: Buffer }): void {
    this.statements.insertRunning.run(id, name, route.topic, route.correlation ?? null, this.now());
  }

  /** Notes that command `id` has its final result stored. */
  finished(id: string): void {
    if (this.store.db.open) this.statements.deleteRunning.run(id);
  }

  /** The commands noted as running and never finished: running when the agent last died. */
  interrupted(): InterruptedCommand[] {
    const rows = this.store.db
      .prepare<[], { id: string; name: string; topic: string; correlation: Buffer | null; started_at: number }>(
        'SELECT id, name, topic, correlation, started_at FROM running ORDER BY started_at',
      )
      .all();
    return rows.map((row) => ({
      id: row.id,
      name: row.name,
      topic: row.topic,
      ...(row.correlation ? { correlation: row.correlation } : {}),
      startedAt: row.started_at,
    }));
  }

  /** IDs remembered now (for tests and health). */
  get size(): number {
    return this.store.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM seen').get()!.n;
  }

  close(): void {
    this.store.close();
  }
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, digest TEXT NOT NULL, expires_at INTEGER NOT NULL, received_at INTEGER NOT NULL) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS seen_expiry ON seen (expires_at);
  CREATE TABLE IF NOT EXISTS running (id TEXT PRIMARY KEY, name TEXT NOT NULL, topic TEXT NOT NULL, correlation BLOB, started_at INTEGER NOT NULL) WITHOUT ROWID;
`;

/** 0600, no link followed, errors naming the key and the file (src/store/state-database.ts); every commit fsynced. */
const STATE_OPTIONS = { configKey: 'commands.replayDbPath', synchronous: 'FULL', setup: (db: Database.Database) => db.exec(SCHEMA) } as const;

/** Damaged or replaced replay memories kept beside the file for a person to look at. */
const MAX_SET_ASIDE_FILES = 3;

interface ReplayStatements {
  /** Records an ID and raises max_issued_at with it, in one transaction (one fsync); false when the ID is known. */
  rememberFresh: (id: string, digest: string, until: number, now: number, issuedAt: number, maxIssuedAt: number) => boolean;
  lookup: Database.Statement<[string], { digest: string; received_at: number }>;
  purge: Database.Statement<[number]>;
  insertRunning: Database.Statement<[string, string, string, Buffer | null, number]>;
  deleteRunning: Database.Statement<[string]>;
}

/** The statements on `db` (prepared again on the new connection after a carry-over). */
function prepareStatements(db: Database.Database): ReplayStatements {
  const insert = db.prepare<[string, string, number, number]>('INSERT OR IGNORE INTO seen (id, digest, expires_at, received_at) VALUES (?, ?, ?, ?)');
  const saveMaxIssued = db.prepare<[number]>("INSERT OR REPLACE INTO meta (key, value) VALUES ('max_issued_at', ?)");
  return {
    rememberFresh: db.transaction((id: string, digest: string, until: number, now: number, issuedAt: number, maxIssuedAt: number) => {
      if (insert.run(id, digest, until, now).changes !== 1) return false;
      if (issuedAt > maxIssuedAt) saveMaxIssued.run(issuedAt);
      return true;
    }),
    lookup: db.prepare('SELECT digest, received_at FROM seen WHERE id = ?'),
    purge: db.prepare('DELETE FROM seen WHERE expires_at < ?'),
    insertRunning: db.prepare('INSERT OR REPLACE INTO running (id, name, topic, correlation, started_at) VALUES (?, ?, ?, ?, ?)'),
    deleteRunning: db.prepare('DELETE FROM running WHERE id = ?'),
  };
}

function metaValue(db: Database.Database, key: string): number | undefined {
  return db.prepare<[string], { value: number }>('SELECT value FROM meta WHERE key = ?').get(key)?.value;
}

type AnchorState = { state: 'absent' } | { state: 'unreadable'; reason: string } | ({ state: 'ok' } & Anchor);

function readAnchor(file: string): AnchorState {
  let text: string;
  try {
    // A few dozen bytes of JSON; never through a link, never blocked on a FIFO planted there.
    text = readRegularFile(file, { maxBytes: 4096 }).toString('utf8');
  } catch (err) {
    if (err instanceof RegularFileError) return err.problem === 'missing' ? { state: 'absent' } : { state: 'unreadable', reason: err.message };
    return { state: 'unreadable', reason: (err as Error).message };
  }
  try {
    const json = JSON.parse(text) as Partial<Anchor>;
    if (json.v === 1 && Number.isSafeInteger(json.memory) && Number.isSafeInteger(json.horizon))
      return { state: 'ok', v: 1, memory: json.memory!, horizon: json.horizon! };
    return { state: 'unreadable', reason: 'not an anchor of this version' };
  } catch (err) {
    return { state: 'unreadable', reason: (err as Error).message };
  }
}

/**
 * Replaces the anchor so that it is at every moment the old one or the new one, durably (src/store/atomic-file.ts:
 * a temporary file created new, never through something placed at its name, fsynced, renamed over, the folder
 * fsynced; a folder that cannot be flushed is an error: the horizon must survive a power cut before a command runs).
 */
function writeAnchor(file: string, anchor: Anchor): void {
  atomicWriteFile(file, `${JSON.stringify(anchor)}\n`, { mode: STATE_FILE_MODE });
}
