/**
 * What the heartbeat learned about each network, kept in a small SQLite file of its own, so a car does not relearn
 * its home carrier after every ignition. One row per network (the key says which: interface, and operator or SSID
 * where known). It is a cache: a damaged file is moved aside and started afresh, a failed write is reported and the
 * run goes on; the worst outcome is learning once more.
 *
 * Written only when the learned state changes (a few times while learning, then rarely), never per heartbeat.
 *
 * Opened through src/store/state-database.ts, as the outbox is: mode 0600, nothing followed at the file or its
 * companions, errors naming `uplink.keepalive.memoryPath`; a file deleted or replaced while the agent runs is found at
 * the next write (and at close) and what the connection holds is carried over to a new file; at most
 * MAX_SET_ASIDE_FILES damaged files are kept.
 */
import type Database from 'better-sqlite3';
import { DamagedStateFile, pruneSetAside, setAside, StateDatabase, type PathChange, type StateDatabaseOptions } from '../store/state-database.js';
import type { HeartbeatMemory, HeartbeatPhase } from './heartbeat.js';

/** Damaged memory files kept beside it at most (the oldest removed first). */
const MAX_SET_ASIDE_FILES = 3;

export interface RememberedNetwork extends HeartbeatMemory {
  network: string;
  /** Unix milliseconds of the last change. */
  updatedAt: number;
}

interface Row {
  network: string;
  interval_s: number;
  last_good_s: number | null;
  known_bad_s: number | null;
  phase: string;
  cycles_left: number;
  updated_at: number;
}

export class LinkMemory {
  private constructor(
    readonly file: string,
    private readonly store: StateDatabase,
    private readonly onProblem: (message: string) => void,
  ) {}

  /**
   * Opens (or creates) the file; a file SQLite cannot use is moved aside as `<file>.corrupt-<time>` first. Throws
   * (naming uplink.keepalive.memoryPath and the file) when it cannot be opened at all. `onProblem` hears of each problem
   * later worked around (a file moved aside, a failed read or write): all warnings, the worst is learning once more.
   */
  static open(file: string, onProblem: (message: string) => void = () => undefined): LinkMemory {
    let store: StateDatabase;
    try {
      store = StateDatabase.open(file, STATE_OPTIONS);
    } catch (err) {
      if (!(err instanceof DamagedStateFile)) throw err;
      const aside = setAside(file, 'corrupt', Date.now());
      onProblem(`link memory: ${file} is unusable (${err.message}); moved it aside as ${aside}, learning starts afresh`);
      store = StateDatabase.open(file, STATE_OPTIONS);
    }
    try {
      for (const removed of pruneSetAside(file, { keep: MAX_SET_ASIDE_FILES }).removed) {
        onProblem(`link memory: removed ${removed.file} (set aside earlier): at most ${MAX_SET_ASIDE_FILES} are kept`);
      }
    } catch (err) {
      onProblem(`link memory: could not clean up the files set aside beside ${file}: ${(err as Error).message}`);
    }
    return new LinkMemory(file, store, onProblem);
  }

  private get db(): Database.Database {
    return this.store.db;
  }

  /** What was learned on `network`, if anything. */
  recall(network: string): RememberedNetwork | undefined {
    try {
      const row = this.db.prepare<[string], Row>('SELECT * FROM network_heartbeat WHERE network = ?').get(network);
      return row ? fromRow(row) : undefined;
    } catch (err) {
      this.onProblem(`link memory: cannot read ${this.file}: ${(err as Error).message}`);
      return undefined;
    }
  }

  remember(network: string, memory: HeartbeatMemory, at: number = Date.now()): void {
    this.verifyFile();
    try {
      this.db
        .prepare(
          `INSERT INTO network_heartbeat (network, interval_s, last_good_s, known_bad_s, phase, cycles_left, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (network) DO UPDATE SET interval_s = excluded.interval_s, last_good_s = excluded.last_good_s,
             known_bad_s = excluded.known_bad_s, phase = excluded.phase, cycles_left = excluded.cycles_left,
             updated_at = excluded.updated_at`,
        )
        .run(network, memory.intervalS, memory.lastGoodS, memory.knownBadS, memory.phase, memory.cyclesLeft, at);
    } catch (err) {
      this.onProblem(`link memory: cannot write ${this.file}: ${(err as Error).message}`);
    }
  }

  /** Every network remembered, most recently changed first. */
  networks(): RememberedNetwork[] {
    return this.db.prepare<[], Row>('SELECT * FROM network_heartbeat ORDER BY updated_at DESC, network').all().map(fromRow);
  }

  /** The file deleted or replaced under the running agent: what was learned is carried over (see StateDatabase). */
  private verifyFile(): void {
    const change = this.store.verifyPath();
    if (!change || (change.repeated && !change.carriedOver)) return;
    this.onProblem(describeChange(this.file, change));
  }

  close(): void {
    this.verifyFile();
    this.store.close();
  }
}

function describeChange(file: string, change: PathChange): string {
  const what = change.found === 'deleted' ? 'was deleted' : `was replaced by another file (moved aside as ${change.movedAside})`;
  return change.carriedOver
    ? `link memory: ${file} ${what} while the agent was running; what was learned was carried over to a new file at the same path`
    : `link memory: ${file} ${what} while the agent was running, and carrying what was learned over failed (${change.error}); trying again at the next change`;
}

const STATE_OPTIONS: StateDatabaseOptions = {
  configKey: 'uplink.keepalive.memoryPath',
  // A lost last update after a power cut only means one more probe: no fsync per write.
  synchronous: 'NORMAL',
  setup: (db) =>
    db.exec(`CREATE TABLE IF NOT EXISTS network_heartbeat (
      network TEXT PRIMARY KEY,
      interval_s REAL NOT NULL,
      last_good_s REAL,
      known_bad_s REAL,
      phase TEXT NOT NULL,
      cycles_left INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    )`),
};

function fromRow(row: Row): RememberedNetwork {
  return {
    network: row.network,
    intervalS: row.interval_s,
    lastGoodS: row.last_good_s,
    knownBadS: row.known_bad_s,
    phase: row.phase as HeartbeatPhase,
    cyclesLeft: row.cycles_left,
    updatedAt: row.updated_at,
  };
}
