/**
 * Reads a file that someone else may have placed: an image being flashed, or a file in the agent's writable state
 * folder. Only a regular file of bounded size is read. The file is opened without following a final symbolic link
 * (O_NOFOLLOW) and without waiting (O_NONBLOCK: a FIFO opens at once instead of waiting forever for a writer), and is
 * checked on the open descriptor (fstat), so what is checked is what is read.
 *
 * Failure: RegularFileError, whose `problem` says why and whose message is one short clause without the path (the
 * caller names the file the way its user knows it: "/etc/passwd in /mnt/image").
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';

export type RegularFileProblem = 'missing' | 'symlink' | 'not-regular' | 'too-large' | 'unreadable';

export class RegularFileError extends Error {
  override readonly name = 'RegularFileError';
  constructor(
    readonly problem: RegularFileProblem,
    message: string,
  ) {
    super(message);
  }
}

/** How much of the file to read: all of it up to a size cap, or only its first bytes (a header) whatever its size. */
export type ReadLimit = { maxBytes: number } | { firstBytes: number };

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** What a non-regular file is, for the error message. */
function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return 'a folder';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSocket()) return 'a socket';
  return 'not a regular file';
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} bytes`;
}

/** The file's bytes (see the file comment); throws RegularFileError. */
export function readRegularFile(file: string, limit: ReadLimit): Buffer {
  let fd: number;
  try {
    fd = openSync(file, OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new RegularFileError('missing', 'does not exist');
    // O_NOFOLLOW on a link: ELOOP on Linux (EMLINK on some BSDs).
    if (code === 'ELOOP' || code === 'EMLINK') throw new RegularFileError('symlink', 'is a symbolic link, which is not followed');
    throw new RegularFileError('unreadable', `cannot be opened (${code ?? (err as Error).message})`);
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new RegularFileError('not-regular', `is ${kindOf(stats)}, not a regular file`);
    const wanted = 'maxBytes' in limit ? stats.size : Math.min(stats.size, limit.firstBytes);
    if ('maxBytes' in limit && stats.size > limit.maxBytes) {
      throw new RegularFileError('too-large', `is ${formatBytes(stats.size)}, more than the ${formatBytes(limit.maxBytes)} it may be`);
    }
    const buffer = Buffer.alloc(wanted);
    let done = 0;
    while (done < wanted) {
      const n = readSync(fd, buffer, done, wanted - done, done);
      if (n === 0) break; // shrank while being read: what is there
      done += n;
    }
    return done === wanted ? buffer : buffer.subarray(0, done);
  } catch (err) {
    if (err instanceof RegularFileError) throw err;
    throw new RegularFileError('unreadable', `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  } finally {
    closeSync(fd);
  }
}
