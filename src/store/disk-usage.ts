/**
 * Bytes the outbox writes to disk, for "bytes written to flash per sample".
 *
 * better-sqlite3 runs every statement synchronously on the calling thread, WAL appends and automatic checkpoints
 * included, so the growth of that thread's I/O counters across an outbox call is what the call wrote. The counters
 * are the kernel's per-thread ones in /proc/thread-self/io (per thread, so the libuv pool and other threads do not
 * count):
 *  - `write_bytes`: bytes the thread sent towards the block device (page-granular, charged when a page of the page
 *    cache is dirtied, so a write counts even before writeback). This is the flash wear figure, and it is non-zero
 *    on a disk-backed filesystem (ext4 here).
 *  - `wchar`: bytes handed to write(2). Filesystems without a block device (tmpfs) leave write_bytes at 0; there the
 *    meter falls back to wchar, which is what would have reached the disk.
 * Where /proc is missing (not Linux) the meter reports source 'none' and 0 bytes.
 */
import { openSync, readSync } from 'node:fs';

export type DiskWriteSource = 'block' | 'syscall' | 'none';

interface IoCounters {
  writeBytes: number;
  wchar: number;
}

const IO_FILE = '/proc/thread-self/io';
// Compiled once: the meter reads the file around every outbox transaction.
const WRITE_BYTES = /^write_bytes:\s*(\d+)/m;
const WCHAR = /^wchar:\s*(\d+)/m;
/** The file is seven short lines (about 130 bytes). */
const IO_TEXT_MAX = 512;

/**
 * The file stays open, read again from its start each time (procfs renders it afresh at offset 0): an open and a close
 * around every read cost the drain, which flushes acknowledgements every few messages, five times the read itself.
 * Opened on first use in this thread (module state is per thread, as /proc/thread-self is), one descriptor for the
 * life of the thread; undefined where there is no such file, null before the first try.
 */
let ioFile: { fd: number; buffer: Buffer } | undefined | null = null;

function readIoCounters(): IoCounters | undefined {
  if (ioFile === null) {
    try {
      ioFile = { fd: openSync(IO_FILE, 'r'), buffer: Buffer.alloc(IO_TEXT_MAX) };
    } catch {
      ioFile = undefined;
    }
  }
  if (ioFile === undefined) return undefined;
  let text: string;
  try {
    const length = readSync(ioFile.fd, ioFile.buffer, 0, IO_TEXT_MAX, 0);
    text = ioFile.buffer.toString('latin1', 0, length);
  } catch {
    return undefined;
  }
  const field = (pattern: RegExp): number => {
    const match = pattern.exec(text);
    return match ? Number(match[1]) : 0;
  };
  return { writeBytes: field(WRITE_BYTES), wchar: field(WCHAR) };
}

/** Accumulates what the current thread writes while `measure` runs its callback. */
export class DiskWriteMeter {
  private blockBytes = 0;
  private syscallBytes = 0;
  private readonly available = readIoCounters() !== undefined;

  measure<T>(work: () => T): T {
    if (!this.available) return work();
    const before = readIoCounters();
    try {
      return work();
    } finally {
      const after = readIoCounters();
      if (before && after) {
        this.blockBytes += after.writeBytes - before.writeBytes;
        this.syscallBytes += after.wchar - before.wchar;
      }
    }
  }

  /** Block-device bytes when the filesystem reports any, else bytes handed to write(2). */
  get bytes(): number {
    return this.blockBytes > 0 ? this.blockBytes : this.syscallBytes;
  }

  get source(): DiskWriteSource {
    if (!this.available) return 'none';
    return this.blockBytes > 0 || this.syscallBytes === 0 ? 'block' : 'syscall';
  }
}
