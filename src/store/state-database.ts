/**
 * The SQLite files the agent keeps its own state in (the outbox, the command replay memory, the link memory), opened
 * one way:
 *  - Created with mode 0600 whatever the process umask (SQLite gives the -wal and -shm files the main file's mode), and
 *    an older file found wider than that is narrowed. A new file is made complete under `<file>.new` and then renamed
 *    into place, so a 0-byte file at the path is never one the agent made: it was truncated (`found: 'empty'`).
 *  - Nothing at the path or at SQLite's companion files (-wal, -shm, -journal) is followed: a symbolic link, a FIFO or
 *    a folder there refuses the open, naming it. The agent's own temporary files (`<file>.new`, `<file>.carry-over`)
 *    are removed before use and created exclusively (O_EXCL | O_NOFOLLOW).
 *  - Every error names the config key and the file (`outbox.path: cannot open /var/lib/...: ...`), with what the folder
 *    or the file lacks when the cause is a permission or a read-only file system. A damaged file throws
 *    DamagedStateFile: the owner moves it aside (setAside) and opens a fresh one.
 *  - verifyPath (one stat; the owner calls it once per write transaction, never per frame) finds the file deleted or
 *    replaced by another under the running agent, and carries everything the open connection still holds over to a
 *    new file at the path (see carryOver), so nothing committed after the deletion is lost at exit.
 *  - Files set aside (`<file>.corrupt-<time>`, `<file>.replaced-<time>`) are kept in bounded number (pruneSetAside).
 */
import Database from 'better-sqlite3';
import {
  accessSync,
  chmodSync,
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  unlinkSync,
  type BigIntStats,
  type Stats,
} from 'node:fs';
import path from 'node:path';

/** The mode of every state file the agent creates: its own user only. */
export const STATE_FILE_MODE = 0o600;
/** The mode of a state folder the agent creates (as provisioning makes /var/lib/telematics-agent). */
export const STATE_DIR_MODE = 0o750;
/** SQLite's files beside the database. */
const COMPANIONS = ['-wal', '-shm', '-journal'] as const;

export type Synchronous = 'FULL' | 'NORMAL' | 'OFF';

export interface StateDatabaseOptions {
  /** The config key that names the file, for errors: `outbox.path`. */
  configKey: string;
  /** PRAGMA synchronous (always with the WAL journal). */
  synchronous: Synchronous;
  /** Further pragmas and the schema, run on every connection opened (a carry-over's too). Throws to refuse the file. */
  setup?: (db: Database.Database) => void;
}

/**
 * What was at the path when the file was opened: `created` (nothing: a new file), `empty` (a 0-byte file: one the
 * agent did not make, so a file whose content was lost, truncated), `existing` (a database).
 */
export type FoundAtOpen = 'created' | 'empty' | 'existing';

/** The file is damaged (SQLite says corrupt or not a database, or quick_check fails): set it aside and start afresh. */
export class DamagedStateFile extends Error {
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DamagedStateFile';
  }
}

/** Refused before SQLite saw it (a link, a FIFO...), or could not be opened: the message names key and file. */
export class StateFileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StateFileError';
  }
}

/** What verifyPath found. */
export interface PathChange {
  /** `deleted`: nothing at the path any more; `replaced`: another file is there. */
  found: 'deleted' | 'replaced';
  /** Where the file found in its place was moved (`replaced`). */
  movedAside?: string;
  /** true: the content is in a new file at the path, `db` is its connection. false: still only in the old connection. */
  carriedOver: boolean;
  /** Why the carry-over failed (it is tried again at the next verifyPath). */
  error?: string;
  /** The same failure was already returned once: the owner need not say it again. */
  repeated?: boolean;
}

/** A file's device and inode, as lstat sees them (a link put at the path is another file, never the one it names). */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
}

function identityOf(stats: BigIntStats | undefined): FileIdentity | undefined {
  return stats ? { dev: stats.dev, ino: stats.ino } : undefined;
}

function sameFile(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean {
  return a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino;
}

function statIdentity(file: string): FileIdentity | undefined {
  return identityOf(lstatSync(file, { bigint: true, throwIfNoEntry: false }));
}

function lstatOrUndefined(file: string): Stats | undefined {
  return lstatSync(file, { throwIfNoEntry: false });
}

function kindOf(stats: Stats): string {
  if (stats.isSymbolicLink()) return 'a symbolic link';
  if (stats.isDirectory()) return 'a folder';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const CORRUPTION_CODES = new Set(['SQLITE_NOTADB', 'SQLITE_IOERR_SHORT_READ']);

/** Whether SQLite's error means the file's content is damaged (rather than unreachable). */
export function isCorruption(err: unknown): boolean {
  if (err instanceof DamagedStateFile) return true;
  if (!(err instanceof Database.SqliteError)) return false;
  return err.code.startsWith('SQLITE_CORRUPT') || CORRUPTION_CODES.has(err.code);
}

function unlinkIfThere(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if (code(err) !== 'ENOENT') throw err;
  }
}

/**
 * Removes the -wal, -shm and -journal at `file`'s names. Before a new database is put at a path: an old WAL beside it
 * would be replayed into it (SQLite cannot tell whose WAL it is). An open connection keeps its own files.
 */
function clearCompanions(file: string): void {
  for (const suffix of COMPANIONS) unlinkIfThere(file + suffix);
}

/**
 * Removes whatever is at one of the agent's own temporary names (a file left by a crash, or something placed there):
 * unlink removes a symbolic link itself, never its target.
 */
function clearTemporary(file: string): void {
  unlinkIfThere(file);
  clearCompanions(file);
}

/** Creates `file` empty with STATE_FILE_MODE exactly (fchmod: the umask may have taken bits off), never through a link. */
function createExclusive(file: string): void {
  const fd = openSync(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, STATE_FILE_MODE);
  try {
    fchmodSync(fd, STATE_FILE_MODE);
  } finally {
    closeSync(fd);
  }
}

/** fsync of a file (opened without following a link) or a folder, so a rename or a copy survives a power cut. */
function fsyncPath(file: string, flags = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW): void {
  const fd = openSync(file, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Narrows a file made wider than STATE_FILE_MODE (by an older agent, or by hand); a file of another owner is left. */
function narrowMode(file: string, stats: Stats): void {
  if ((stats.mode & 0o077) === 0 || (process.geteuid !== undefined && stats.uid !== process.geteuid())) return;
  try {
    chmodSync(file, STATE_FILE_MODE);
  } catch {
    // a read-only file system: the open below says what is wrong, if anything
  }
}

/**
 * The database file and its companions, checked without following anything: refuses (naming it) a link or a
 * non-regular file, narrows wide modes. Returns the main file's stats, undefined when it does not exist.
 */
function inspect(file: string, configKey: string): Stats | undefined {
  const main = lstatOrUndefined(file);
  if (main && !main.isFile()) {
    throw new StateFileError(`${configKey}: ${file} is ${kindOf(main)}, not a database file: refusing to open it (remove it, or point ${configKey} at a file)`);
  }
  for (const suffix of COMPANIONS) {
    const companion = lstatOrUndefined(file + suffix);
    if (companion && !companion.isFile()) {
      throw new StateFileError(
        `${configKey}: ${file + suffix} is ${kindOf(companion)}: SQLite would follow or block on it; refusing to open ${file} (remove ${path.basename(file + suffix)})`,
      );
    }
    if (companion) narrowMode(file + suffix, companion);
  }
  if (main) narrowMode(file, main);
  return main;
}

/** Why the folder or the file refuses writes (EROFS, EACCES), or undefined when both are writable. */
function unwritable(file: string): string | undefined {
  const dir = path.dirname(file);
  try {
    accessSync(dir, fsConstants.W_OK | fsConstants.X_OK);
  } catch (err) {
    return `the folder ${dir} is not writable (${code(err) ?? errorText(err)})`;
  }
  try {
    accessSync(file, fsConstants.R_OK | fsConstants.W_OK);
  } catch (err) {
    if (code(err) !== 'ENOENT') return `the file is not readable and writable (${code(err) ?? errorText(err)})`;
  }
  return undefined;
}

/**
 * Why a folder could not be made: the code of the nearest existing folder above it refusing writes (EROFS, EACCES), as
 * a recursive mkdir reports ENOENT for some of those.
 */
function mkdirFailure(dir: string, err: unknown): string {
  let parent = path.dirname(dir);
  while (parent !== path.dirname(parent) && !lstatOrUndefined(parent)) parent = path.dirname(parent);
  try {
    accessSync(parent, fsConstants.W_OK | fsConstants.X_OK);
  } catch (denied) {
    return `${code(denied) ?? errorText(denied)} (${parent} is not writable)`;
  }
  return code(err) ?? errorText(err);
}

function describeSqlite(err: unknown): string {
  if (err instanceof Database.SqliteError) return `${err.code}: ${err.message}`;
  return errorText(err);
}

/** A connection to `file` with the WAL journal, checked, set up. Throws DamagedStateFile or the error as it came. */
function connect(file: string, options: StateDatabaseOptions): Database.Database {
  const db = new Database(file);
  try {
    // The first statement reads the header: garbage fails here with SQLITE_NOTADB.
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new StateFileError(`${options.configKey}: ${file}: the WAL journal is not available (journal_mode is ${String(mode)})`);
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new DamagedStateFile(file, `quick_check: ${String(check)}`);
    db.pragma(`synchronous = ${options.synchronous}`);
    options.setup?.(db);
    return db;
  } catch (err) {
    db.close();
    if (isCorruption(err) && !(err instanceof DamagedStateFile)) throw new DamagedStateFile(file, describeSqlite(err), { cause: err });
    throw err;
  }
}

/**
 * The named form of an error met while opening `file` (damage and our own refusals pass as they are): the config key,
 * the file, SQLite's words or the system's code, and what refuses writes if something does.
 */
function named(err: unknown, file: string, configKey: string, creating: boolean): Error {
  if (err instanceof DamagedStateFile || err instanceof StateFileError) return err;
  const why = unwritable(file);
  if (err instanceof Database.SqliteError) {
    const hint = why ? ` (${why}: SQLite creates ${path.basename(file)}-wal and -shm beside the file)` : '';
    return new StateFileError(`${configKey}: cannot open ${file}: ${err.code}: ${err.message}${hint}`, { cause: err });
  }
  const reason = why ?? code(err) ?? errorText(err);
  return new StateFileError(`${configKey}: cannot ${creating ? 'create' : 'open'} ${file}: ${reason}`, { cause: err });
}

export class StateDatabase {
  private connection: Database.Database;
  /** The file this connection writes, and its -wal and -shm as they were at open (so a carry-over removes only them). */
  private opened: { main: FileIdentity; wal: FileIdentity | undefined; shm: FileIdentity | undefined };
  /** A carry-over that failed, kept until it succeeds. */
  private failing: { found: PathChange['found']; movedAside?: string; error: string } | undefined;
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly options: StateDatabaseOptions,
    opened: { db: Database.Database; main: FileIdentity },
    /** What was at the path at open. */
    readonly found: FoundAtOpen,
    /** A carry-over cut short (a crash) was finished at this open. */
    readonly finishedCarryOver: boolean,
  ) {
    this.connection = opened.db;
    this.opened = { main: opened.main, wal: statIdentity(`${file}-wal`), shm: statIdentity(`${file}-shm`) };
  }

  /**
   * Opens (or creates) the file. Throws DamagedStateFile when the content is damaged, StateFileError naming the
   * config key and the file for anything else (a link or a FIFO in the way, a read-only folder, a permission).
   */
  static open(file: string, options: StateDatabaseOptions): StateDatabase {
    const { configKey } = options;
    const dir = path.dirname(file);
    try {
      mkdirSync(dir, { recursive: true, mode: STATE_DIR_MODE });
    } catch (err) {
      throw new StateFileError(`${configKey}: cannot create the folder ${dir} for ${file}: ${mkdirFailure(dir, err)}`, { cause: err });
    }
    let creating = false;
    try {
      const finishedCarryOver = finishCarryOver(file);
      let main = inspect(file, configKey);
      let found: FoundAtOpen;
      if (!main) {
        creating = true;
        createComplete(file, options);
        creating = false;
        found = 'created';
        main = inspect(file, configKey);
        if (!main) throw new StateFileError(`${configKey}: ${file} vanished right after it was created`);
      } else {
        found = main.size === 0 ? 'empty' : 'existing';
      }
      const db = connect(file, options);
      const identity = statIdentity(file);
      if (!identity) {
        db.close();
        throw new StateFileError(`${configKey}: ${file} vanished while it was being opened`);
      }
      return new StateDatabase(file, options, { db, main: identity }, found, finishedCarryOver);
    } catch (err) {
      throw named(err, file, configKey, creating);
    }
  }

  /** The connection (a new one after a carry-over: prepare statements again then). */
  get db(): Database.Database {
    return this.connection;
  }

  /**
   * One stat: whether the path still names the file this connection writes. If the file was deleted, or another file
   * put in its place (moved aside as `<file>.replaced-<time>`), everything this connection still reads (the deleted
   * file lives on while it is open) is carried over to a new file at the path and `db` becomes its connection.
   * Returns undefined while the file is in place.
   */
  verifyPath(now: number = Date.now()): PathChange | undefined {
    if (this.closed) return undefined;
    let current: FileIdentity | undefined;
    try {
      current = statIdentity(this.file);
    } catch (err) {
      // ENOTDIR: the folder was replaced by a file, so ours is gone; anything else (EACCES) cannot be judged now.
      if (code(err) !== 'ENOTDIR') return undefined;
    }
    if (sameFile(current, this.opened.main)) return undefined;
    const previous = this.failing;
    const found = previous?.found ?? (current ? 'replaced' : 'deleted');
    let movedAside = previous?.movedAside;
    try {
      // A file put in our place is someone's: it goes aside whole, never mixed with ours.
      if (current)
        movedAside = setAside(this.file, 'replaced', now, {
          keepCompanion: (suffix, id) => sameFile(id, suffix === '-wal' ? this.opened.wal : this.opened.shm),
        });
      this.carryOver();
      this.failing = undefined;
      return { found, carriedOver: true, ...(movedAside !== undefined ? { movedAside } : {}) };
    } catch (err) {
      const error = `${describeSqlite(err)}`;
      this.failing = { found, error, ...(movedAside !== undefined ? { movedAside } : {}) };
      return { found, carriedOver: false, error, repeated: previous !== undefined, ...(movedAside !== undefined ? { movedAside } : {}) };
    }
  }

  /**
   * Copies the connection's whole content (VACUUM INTO: SQLite streams it, nothing is held in memory) to
   * `<file>.carry-over`, fsyncs it, removes the -wal/-shm names at the path (the old connection keeps its open files;
   * an old WAL beside the new file would be replayed into it), renames the copy into place and opens it; the old
   * connection is closed last, so a failure at any step leaves it working. A crash in between leaves the copy, which
   * the next open renames into place (finishCarryOver).
   */
  private carryOver(): void {
    const temporary = `${this.file}.carry-over`;
    mkdirSync(path.dirname(this.file), { recursive: true, mode: STATE_DIR_MODE });
    clearTemporary(temporary);
    createExclusive(temporary);
    try {
      this.connection.prepare('VACUUM INTO ?').run(temporary);
      fsyncPath(temporary);
    } catch (err) {
      clearTemporary(temporary);
      throw err;
    }
    clearCompanions(this.file);
    renameSync(temporary, this.file);
    fsyncPath(path.dirname(this.file), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    inspect(this.file, this.options.configKey);
    const db = connect(this.file, this.options);
    const main = statIdentity(this.file);
    const old = this.connection;
    this.connection = db;
    this.opened = { main: main!, wal: statIdentity(`${this.file}-wal`), shm: statIdentity(`${this.file}-shm`) };
    // SQLite sees its file moved: it neither checkpoints into it nor deletes anything by name.
    old.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.close();
  }
}

/**
 * A new database made complete (header, journal mode, schema) under `<file>.new`, then renamed into place: a crash
 * leaves either nothing at the path or a whole database, never a 0-byte file.
 */
function createComplete(file: string, options: StateDatabaseOptions): void {
  const temporary = `${file}.new`;
  clearTemporary(temporary);
  createExclusive(temporary);
  try {
    connect(temporary, options).close();
    // Nothing is at the path: a -wal or -shm there is the leftover of a deleted file.
    clearCompanions(file);
    renameSync(temporary, file);
  } catch (err) {
    clearTemporary(temporary);
    throw err;
  }
}

/** At open: a carry-over cut short by a crash left its complete copy and no file at the path: put it in place. */
function finishCarryOver(file: string): boolean {
  const temporary = `${file}.carry-over`;
  const copy = lstatOrUndefined(temporary);
  if (!copy) return false;
  if (copy.isFile() && copy.size > 0 && !lstatOrUndefined(file)) {
    // The WAL of the deleted file (if left) must not be replayed into the copy.
    clearCompanions(file);
    renameSync(temporary, file);
    return true;
  }
  clearTemporary(temporary);
  return false;
}

export type SetAsideKind = 'corrupt' | 'replaced';

/**
 * Renames the database and its -wal/-shm to `<file>.<kind>-<time>[-n][-wal|-shm]`; returns the new name of the
 * database. `keepCompanion` leaves a -wal/-shm in place (one that belongs to another connection). rename never follows
 * a link: whatever is at the names is moved as it is.
 */
export function setAside(
  file: string,
  kind: SetAsideKind,
  now: number,
  options: { keepCompanion?: (suffix: '-wal' | '-shm', id: FileIdentity | undefined) => boolean } = {},
): string {
  const stamp = new Date(now).toISOString().replace(/[:.]/g, '-');
  let aside = `${file}.${kind}-${stamp}`;
  for (let n = 1; lstatOrUndefined(aside) || lstatOrUndefined(`${aside}-wal`); n++) aside = `${file}.${kind}-${stamp}-${n}`;
  if (lstatOrUndefined(file)) renameSync(file, aside);
  for (const suffix of ['-wal', '-shm'] as const) {
    if (!lstatOrUndefined(file + suffix)) continue;
    if (options.keepCompanion?.(suffix, statIdentity(file + suffix))) continue;
    renameSync(file + suffix, aside + suffix);
  }
  return aside;
}

/** One database set aside, with its -wal/-shm: `bytes` is their sum. */
export interface SetAsideFile {
  file: string;
  bytes: number;
}

const SET_ASIDE_NAME = /^(.*)\.(corrupt|replaced)-(\d{4}-\d\d-\d\dT[\d-]+Z(?:-\d+)?)(-wal|-shm)?$/;

/** The databases set aside beside `file` (regular files only), oldest first. */
export function listSetAside(file: string): SetAsideFile[] {
  const dir = path.dirname(file);
  const base = path.basename(file);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const sets = new Map<string, { stamp: string; bytes: number }>();
  for (const name of names) {
    const match = SET_ASIDE_NAME.exec(name);
    if (!match || match[1] !== base) continue;
    const stats = lstatOrUndefined(path.join(dir, name));
    if (!stats?.isFile()) continue;
    const key = name.slice(0, name.length - (match[4]?.length ?? 0));
    const set = sets.get(key) ?? { stamp: match[3]!, bytes: 0 };
    set.bytes += stats.size;
    sets.set(key, set);
  }
  return [...sets.entries()]
    .sort(([a, x], [b, y]) => (x.stamp < y.stamp ? -1 : x.stamp > y.stamp ? 1 : a < b ? -1 : 1))
    .map(([key, set]) => ({ file: path.join(dir, key), bytes: set.bytes }));
}

/**
 * Keeps at most `keep` of the databases set aside beside `file`, and within `budgetBytes` together: the oldest are
 * removed first. Returns the ones removed, and the number and bytes of those kept.
 */
export function pruneSetAside(
  file: string,
  limits: { keep: number; budgetBytes?: number },
): { removed: SetAsideFile[]; kept: { files: number; bytes: number } } {
  const sets = listSetAside(file);
  let total = sets.reduce((sum, set) => sum + set.bytes, 0);
  const removed: SetAsideFile[] = [];
  while (sets.length > 0 && (sets.length > limits.keep || (limits.budgetBytes !== undefined && total > limits.budgetBytes))) {
    const oldest = sets.shift()!;
    for (const suffix of ['', '-wal', '-shm']) {
      try {
        unlinkSync(oldest.file + suffix);
      } catch (err) {
        if (code(err) !== 'ENOENT') throw err;
      }
    }
    total -= oldest.bytes;
    removed.push(oldest);
  }
  return { removed, kept: { files: sets.length, bytes: total } };
}
