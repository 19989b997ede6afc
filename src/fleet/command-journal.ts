/**
 * The operator's local command journal (docs/fleet-operations.md, "Tracked commands"): one SQLite file recording every
 * command `telematics-ops` sends or signs, before it leaves (id, device, name, params, issuedAt, expiresAt, operator,
 * broker), and each step of its lifecycle as it becomes known: the car's results (status, reason, message, detail,
 * ts, seq; a copy with a (device, seq) already recorded is dropped, results being at least once), and what the tool
 * itself found out (sent, queued, no such car, no result in time, signed and not sent).
 *
 * Where it lives: `--journal FILE`, else `$TELEMATICS_OPS_JOURNAL`, else `$XDG_STATE_HOME/telematics-ops/commands.db`
 * (`~/.local/state/...`). The file is opened as the agent's state files are (src/store/state-database.ts): created
 * 0600, never through a link or a FIFO; its folder is made 0700. The schema is versioned (PRAGMA user_version): a
 * journal of a newer version is refused rather than misread, and later versions migrate older ones in MIGRATIONS.
 *
 * Failure: a journal that cannot be opened (damaged, unwritable, a link in the way, a newer version) throws
 * JournalError, one line naming the file; the caller refuses to send untracked unless told (`--no-journal`). A write
 * that fails later throws the same, naming the file.
 */
import type Database from 'better-sqlite3';
import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FINAL_STATUSES, type CommandResult, type CommandStatus } from '../commands/result.js';
import { DamagedStateFile, StateDatabase } from '../store/state-database.js';

/** The journal's folder mode: the operator's own (it names cars and what was sent to them). */
export const JOURNAL_DIR_MODE = 0o700;

/** What the tool itself records of a command, beside the car's results. */
export const OPS_STATES = ['SIGNED', 'SENT', 'QUEUED', 'UNDELIVERED', 'NO_SUCH_CAR', 'NO_RESULT'] as const;
export type OpsState = (typeof OPS_STATES)[number];

/** A command's state as the journal knows it: the car's latest word, or the tool's. */
export type JournalState = CommandStatus | OpsState;

export interface JournalCommand {
  id: string;
  deviceId: string;
  name: string;
  params: unknown;
  issuedAt: number;
  expiresAt: number | undefined;
  /** The operator certificate's subject CN that signed it. */
  operator: string | undefined;
  /** The broker it was published to; undefined: signed for another tool (`sign`), not sent by telematics-ops. */
  broker: string | undefined;
}

/** One step of a command's lifecycle. `source` says who said it: the car (a result) or the tool. */
export interface JournalStep {
  source: 'car' | 'ops';
  status: JournalState;
  reason?: string;
  message?: string;
  detail?: unknown;
  /** The car's time for a result, the tool's for its own steps (unix ms). */
  ts: number;
  /** The car's result seq (results that went through its outbox). */
  seq?: number;
}

export interface JournalEntry extends JournalCommand {
  steps: JournalStep[];
  /** The first final result (the first counts: a later `interrupted` after a real one is noise); else the latest step. */
  state: JournalState;
  final: JournalStep | undefined;
}

export class JournalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'JournalError';
  }
}

/** The schema version this code writes. */
export const JOURNAL_VERSION = 1;

/** MIGRATIONS[v] takes a journal of version v to v + 1 (0: an empty file to the first version). */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE command (
     id TEXT PRIMARY KEY,
     device_id TEXT NOT NULL,
     name TEXT NOT NULL,
     params TEXT NOT NULL,
     issued_at INTEGER NOT NULL,
     expires_at INTEGER,
     operator TEXT,
     broker TEXT
   );
   CREATE INDEX command_by_device ON command (device_id, issued_at);
   CREATE INDEX command_by_time ON command (issued_at);
   CREATE TABLE step (
     n INTEGER PRIMARY KEY AUTOINCREMENT,
     command_id TEXT NOT NULL REFERENCES command (id),
     device_id TEXT NOT NULL,
     source TEXT NOT NULL CHECK (source IN ('car', 'ops')),
     status TEXT NOT NULL,
     reason TEXT,
     message TEXT,
     detail TEXT,
     ts INTEGER NOT NULL,
     seq INTEGER
   );
   CREATE INDEX step_by_command ON step (command_id, n);
   CREATE UNIQUE INDEX step_result_seq ON step (device_id, seq) WHERE seq IS NOT NULL;`,
];

/** Where the journal is when neither --journal nor $TELEMATICS_OPS_JOURNAL says. */
export function defaultJournalPath(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.XDG_STATE_HOME && path.isAbsolute(env.XDG_STATE_HOME) ? env.XDG_STATE_HOME : path.join(os.homedir(), '.local', 'state');
  return path.join(state, 'telematics-ops', 'commands.db');
}

/** The journal file: the option, else the environment's, else the default. */
export function journalPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (option !== undefined) return path.resolve(option);
  if (env.TELEMATICS_OPS_JOURNAL) return path.resolve(env.TELEMATICS_OPS_JOURNAL);
  return defaultJournalPath(env);
}

interface CommandRow {
  id: string;
  device_id: string;
  name: string;
  params: string;
  issued_at: number;
  expires_at: number | null;
  operator: string | null;
  broker: string | null;
}

interface StepRow {
  source: 'car' | 'ops';
  status: string;
  reason: string | null;
  message: string | null;
  detail: string | null;
  ts: number;
  seq: number | null;
}

const parseJson = (text: string | null): unknown => (text === null ? undefined : JSON.parse(text));

function migrate(file: string, db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > JOURNAL_VERSION) {
    throw new JournalError(
      `the command journal ${file} is of version ${version}, made by a newer telematics-ops (this one reads up to ${JOURNAL_VERSION}): use that version, or another --journal`,
    );
  }
  db.transaction(() => {
    for (let v = version; v < JOURNAL_VERSION; v++) db.exec(MIGRATIONS[v]!);
    db.pragma(`user_version = ${JOURNAL_VERSION}`);
  })();
}

export class CommandJournal {
  private readonly insertCommand: Database.Statement<[string, string, string, string, number, number | null, string | null, string | null]>;
  private readonly insertStep: Database.Statement<[string, string, string, string, string | null, string | null, string | null, number, number | null]>;

  private constructor(
    readonly file: string,
    private readonly store: StateDatabase,
  ) {
    const db = store.db;
    this.insertCommand = db.prepare(
      'INSERT INTO command (id, device_id, name, params, issued_at, expires_at, operator, broker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    // OR IGNORE: a result whose (device, seq) is recorded already is a copy (at least once delivery).
    this.insertStep = db.prepare(
      'INSERT OR IGNORE INTO step (command_id, device_id, source, status, reason, message, detail, ts, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
  }

  /** Opens (or creates) the journal at `file`; its folder is made 0700 if it is missing. Throws JournalError. */
  static open(file: string): CommandJournal {
    const dir = path.dirname(file);
    const existed = lstatSync(dir, { throwIfNoEntry: false }) !== undefined;
    try {
      mkdirSync(dir, { recursive: true, mode: JOURNAL_DIR_MODE });
      // mkdir's mode passes through the umask: a folder made here is set exactly.
      if (!existed) chmodSync(dir, JOURNAL_DIR_MODE);
    } catch (err) {
      throw new JournalError(`the command journal ${file}: cannot create its folder ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let store: StateDatabase;
    try {
      store = StateDatabase.open(file, { configKey: 'the command journal', synchronous: 'FULL', setup: (db) => migrate(file, db) });
    } catch (err) {
      if (err instanceof JournalError) throw err;
      // A refusal of migrate() comes back wrapped, naming the file twice: its own line says it all.
      if ((err as Error).cause instanceof JournalError) throw (err as Error).cause as JournalError;
      if (err instanceof DamagedStateFile) {
        throw new JournalError(`the command journal ${file} is damaged (${err.message}): move it aside to start a new one`, { cause: err });
      }
      throw new JournalError((err as Error).message, { cause: err });
    }
    return new CommandJournal(file, store);
  }

  private write<T>(what: string, run: () => T): T {
    try {
      return run();
    } catch (err) {
      throw new JournalError(`the command journal ${this.file}: cannot record ${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Records a command before it is published (or written out by `sign`), with its first step. */
  recordCommand(command: JournalCommand, first: OpsState, now = Date.now()): void {
    this.write(`command ${command.id}`, () =>
      this.store.db.transaction(() => {
        this.insertCommand.run(
          command.id,
          command.deviceId,
          command.name,
          JSON.stringify(command.params ?? {}),
          command.issuedAt,
          command.expiresAt ?? null,
          command.operator ?? null,
          command.broker ?? null,
        );
        this.insertStep.run(command.id, command.deviceId, 'ops', first, null, null, null, now, null);
      })(),
    );
  }

  /** Records what the tool found out (queued, no such car, no result in time), with the line it printed. */
  recordState(id: string, deviceId: string, state: OpsState, message: string | undefined, now = Date.now()): void {
    this.write(`the state of ${id}`, () => this.insertStep.run(id, deviceId, 'ops', state, null, message ?? null, null, now, null));
  }

  /** Records a result of command `id`; false when it was a copy of one recorded already (same device and seq). */
  recordResult(id: string, result: CommandResult): boolean {
    return this.write(`a result of ${id}`, () => {
      const detail = result.detail === undefined ? null : JSON.stringify(result.detail);
      const info = this.insertStep.run(
        id,
        result.deviceId,
        'car',
        result.status,
        result.reason ?? null,
        result.message ?? null,
        detail,
        result.ts,
        typeof result.seq === 'number' ? result.seq : null,
      );
      return info.changes > 0;
    });
  }

  /** The command and its lifecycle so far; undefined when the journal has no such ID. */
  get(id: string): JournalEntry | undefined {
    const row = this.store.db.prepare<[string], CommandRow>('SELECT * FROM command WHERE id = ?').get(id);
    return row === undefined ? undefined : this.entryOf(row);
  }

  /** Commands newest first, of one device or all. */
  history(options: { deviceId?: string; limit: number }): JournalEntry[] {
    const rows =
      options.deviceId === undefined
        ? this.store.db.prepare<[number], CommandRow>('SELECT * FROM command ORDER BY issued_at DESC, rowid DESC LIMIT ?').all(options.limit)
        : this.store.db
            .prepare<[string, number], CommandRow>('SELECT * FROM command WHERE device_id = ? ORDER BY issued_at DESC, rowid DESC LIMIT ?')
            .all(options.deviceId, options.limit);
    return rows.map((row) => this.entryOf(row));
  }

  private entryOf(row: CommandRow): JournalEntry {
    const steps = this.store.db
      .prepare<[string], StepRow>('SELECT source, status, reason, message, detail, ts, seq FROM step WHERE command_id = ? ORDER BY n')
      .all(row.id)
      .map((s): JournalStep => ({
        source: s.source,
        status: s.status as JournalState,
        ...(s.reason !== null ? { reason: s.reason } : {}),
        ...(s.message !== null ? { message: s.message } : {}),
        ...(s.detail !== null ? { detail: parseJson(s.detail) } : {}),
        ts: s.ts,
        ...(s.seq !== null ? { seq: s.seq } : {}),
      }));
    const final = steps.find((s) => s.source === 'car' && FINAL_STATUSES.has(s.status as CommandStatus));
    return {
      id: row.id,
      deviceId: row.device_id,
      name: row.name,
      params: parseJson(row.params),
      issuedAt: row.issued_at,
      expiresAt: row.expires_at ?? undefined,
      operator: row.operator ?? undefined,
      broker: row.broker ?? undefined,
      steps,
      final,
      state: final?.status ?? steps[steps.length - 1]?.status ?? 'SENT',
    };
  }

  close(): void {
    this.store.close();
  }
}
