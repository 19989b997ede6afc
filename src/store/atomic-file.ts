/**
 * Replacing a small file so that, at every moment and across a power cut, it is either the old file or the complete
 * new one (the replay anchor, the collection override, the outbox's sequence sidecar, certificate and key files):
 *
 *   1. the temporary name beside the target (same folder, so the rename cannot cross file systems) is cleared: a
 *      file, link or FIFO someone left there is removed (the entry itself, never what a link points to); a folder
 *      there is an error, and stays;
 *   2. the temporary file is created exclusively without following links (O_CREAT | O_EXCL | O_NOFOLLOW): nothing
 *      placed at its name between the two steps is written through;
 *   3. it gets its owner (when one is given) and then its mode exactly, whatever the umask (chown clears set-id bits,
 *      so the mode comes after it): the mode given, or with `keepMode` the mode the file had;
 *   4. the content is written in full and fsynced, the file renamed over the target, and the folder fsynced.
 *
 * Failure: AtomicWriteError, one line naming the file (and the temporary name or the folder when the problem is
 * there), with the cause's errno `code` (ENOSPC, EACCES...) so callers can tell a storage failure. Before the rename
 * the target is untouched and the temporary file this call created is removed. After it the file is the new one
 * whatever happens: a folder that cannot be flushed throws with `replaced` true, or is ignored with
 * `folderSync: 'best-effort'` (the file system commits the rename at its next commit anyway).
 */
import { closeSync, constants, fchmodSync, fchownSync, fsyncSync, lstatSync, openSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface AtomicWriteOptions {
  /** Permission bits of the new file (e.g. 0o600), set exactly whatever the umask. */
  mode: number;
  /** A regular file already at the target keeps its permission bits; `mode` is then only for a new file. */
  keepMode?: boolean;
  /** Numeric owner to give the file (a tool writing into an image, as root); default: as the process creates it. */
  owner?: { uid: number; gid: number };
  /**
   * The temporary name, beside the target. Default `.<name>.<pid>.tmp` in the target's folder (`<name>.<pid>.tmp` when
   * the name already starts with a dot): hidden, and two processes writing the same file do not clear each other's.
   * A caller whose own cleanup must find a leftover after a crash names it (a fixed name).
   */
  temporary?: string;
  /**
   * What a failure to fsync the folder after the rename means: 'required' (default) throws (the caller must not go on
   * as if the change survived a power cut), 'best-effort' ignores it (the file is in place either way).
   */
  folderSync?: 'required' | 'best-effort';
}

/** A file that could not be replaced; the message names it and says why, in one line. */
export class AtomicWriteError extends Error {
  override readonly name = 'AtomicWriteError';
  constructor(
    /** The target. */
    readonly file: string,
    message: string,
    /** The cause's errno code (ENOSPC, EACCES, EISDIR...), when it had one. */
    readonly code: string | undefined,
    /** True when the new content is in place and only the folder's fsync failed. */
    readonly replaced: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The temporary name `atomicWriteFile` uses for `file` unless told another. */
export function defaultTemporaryName(file: string): string {
  const name = path.basename(file);
  return path.join(path.dirname(file), `${name.startsWith('.') ? '' : '.'}${name}.${process.pid}.tmp`);
}

/** Replaces `file` with `content` (a string is UTF-8), atomically and durably; see the file comment. */
export function atomicWriteFile(file: string, content: string | Uint8Array, options: AtomicWriteOptions): void {
  const temporary = options.temporary ?? defaultTemporaryName(file);
  const mode = options.keepMode ? (existingMode(file) ?? options.mode) : options.mode;
  const fail = (what: string, err: unknown): AtomicWriteError =>
    new AtomicWriteError(file, `cannot write ${file}: ${what} (${reason(err)}); the file is unchanged`, errnoCode(err), false, { cause: err });

  try {
    unlinkSync(temporary);
  } catch (err) {
    // Nothing there (a read-only file system refuses even that with EROFS): the create below says what is wrong.
    if (errnoCode(err) !== 'ENOENT' && exists(temporary)) throw fail(`its temporary name ${temporary} cannot be cleared`, err);
  }
  let fd: number;
  try {
    // 0600 until the mode below: nobody else can open the file before its owner and mode are right.
    fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    throw fail(`cannot create ${temporary}`, err);
  }
  let step = `cannot give ${temporary} its owner and mode`;
  try {
    try {
      if (options.owner) fchownSync(fd, options.owner.uid, options.owner.gid);
      fchmodSync(fd, mode);
      step = `writing ${temporary} failed`;
      writeFileSync(fd, content); // all of it: a short write is retried, a full disk throws
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    removeQuietly(temporary);
    throw fail(step, err);
  }
  try {
    renameSync(temporary, file);
  } catch (err) {
    removeQuietly(temporary);
    throw fail(`cannot rename ${temporary} over it`, err);
  }
  const folder = path.dirname(path.resolve(file));
  try {
    syncFolder(folder);
  } catch (err) {
    if (options.folderSync === 'best-effort') return;
    throw new AtomicWriteError(
      file,
      `${file} is replaced, but its folder ${folder} cannot be flushed (${reason(err)}): the change may not survive a power cut`,
      errnoCode(err),
      true,
      { cause: err },
    );
  }
}

/** fsync of a folder, so a rename or a removal in it survives a power cut. Throws the error as it came. */
export function syncFolder(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The permission bits of the regular file at `file`; undefined for nothing, a link or anything else there. */
function existingMode(file: string): number | undefined {
  try {
    const stats = lstatSync(file);
    return stats.isFile() ? stats.mode & 0o777 : undefined;
  } catch {
    return undefined;
  }
}

function exists(file: string): boolean {
  try {
    lstatSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Only the file this call created: a failure to remove it changes nothing about the target. */
function removeQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // left as a temporary file; the next write to the same name clears it
  }
}

function errnoCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** `ENOSPC: no space left on device`: Node's message without the system call and path it appends. */
function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = errnoCode(err);
  return code !== undefined && err.message.startsWith(`${code}: `) ? err.message.replace(/, \w+(?: '.*')?$/, '') : err.message;
}
