/**
 * What the heartbeat learned about each network, kept in a small SQLite file of its own, so a car does not relearn
 * its home carrier after every ignition. One row per network (the key says which: interface, and operator or SSID
 * where known). It is a cache: a damaged file is moved aside and started afresh, a failed write is reported and the
 * run goes on; the worst outcome is learning once more.
 *
 * Written only when the learned state changes (a few times while learning, then rarely), never per heartbeat.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import type { HeartbeatMemory, HeartbeatPhase } from './heartbeat.js';

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
    private readonly db: Database.Database,
    private readonly onProblem: (message: string) => void,
  ) {}

  /** Opens (or creates) the file; a file SQLite cannot use is moved aside as `<file>.corrupt-<time>` first. */
  static open(file: string, onProblem: (message: string) => void = () => undefined): LinkMemory {
    mkdirSync(path.dirname(file), { recursive: true });
    let db: Database.Database;
    try {
      db = openDatabase(file);
    } catch (err) {
      const aside = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      for (const suffix of ['', '-wal', '-shm']) if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
      onProblem(`link memory: ${file} is unusable (${(err as Error).message}); moved it aside as ${aside}, learning starts afresh`);
      db = openDatabase(file);
    }
    return new LinkMemory(file, db, onProblem);
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

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function openDatabase(file: string): Database.Database {
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    // A lost last update after a power cut only means one more probe: no fsync per write.
    db.pragma('synchronous = NORMAL');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error(`quick_check: ${String(check)}`);
    db.exec(`CREATE TABLE IF NOT EXISTS network_heartbeat (
      network TEXT PRIMARY KEY,
      interval_s REAL NOT NULL,
      last_good_s REAL,
      known_bad_s REAL,
      phase TEXT NOT NULL,
      cycles_left INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    )`);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

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
