/**
 * What the state-file tests set up on real file systems: a read-only folder (a read-only bind mount), a small full
 * tmpfs, FIFOs, modes as the kernel reports them, and the opener child (state-file-opener.ts) for traps that would
 * block a process (a FIFO read without a writer blocks inside SQLite, where no test timeout can reach).
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, lstatSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir } from './temp.js';

const storeTests = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'store');

/** The permission bits of `file` (lstat: a link is not followed). */
export function modeOf(file: string): number {
  return lstatSync(file).mode & 0o777;
}

export function mkfifo(file: string): void {
  execFileSync('mkfifo', [file]);
}

/** Whether this process may mount (root on Linux, outside a restricted container): probed once with a tmpfs. */
export const canMount: boolean = (() => {
  const probe = makeTempDir('state-mount-probe-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'ignore' });
  } catch {
    return false;
  }
  execFileSync('umount', [probe], { stdio: 'ignore' });
  return true;
})();

/** Makes `dir` read-only in place (a read-only bind mount of itself: even root cannot write); returns the undo. */
export function makeReadOnly(dir: string): () => void {
  execFileSync('mount', ['--bind', dir, dir]);
  try {
    execFileSync('mount', ['-o', 'remount,ro,bind', dir]);
  } catch (err) {
    execFileSync('umount', [dir]);
    throw err;
  }
  return () => execFileSync('umount', [dir]);
}

/** Mounts a tmpfs of `size` (e.g. '512k') on `dir`; returns the undo. */
export function mountTmpfs(dir: string, size: string): () => void {
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return () => execFileSync('umount', [dir]);
}

export interface OpenerResult {
  /** The error's message when opening failed. */
  error?: string;
  /** The first sequence number appended (outbox), when it opened. */
  firstSeq?: number;
  timedOut: boolean;
}

/**
 * Opens `kind` at `file` in a child process (dist/test/store/state-file-opener.js) and appends one message (outbox) or
 * remembers one network (link memory); a child still busy after `timeoutMs` is killed and reported as timed out.
 */
export async function openInChild(kind: 'outbox' | 'link-memory', file: string, timeoutMs = 15_000): Promise<OpenerResult> {
  const opener = path.join(storeTests, 'state-file-opener.js');
  if (!existsSync(opener)) throw new Error(`${opener} missing: run npm run build`);
  const child = spawn(process.execPath, [opener, kind, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  await new Promise<void>((resolve) => child.once('close', () => resolve()));
  clearTimeout(timer);
  if (timedOut) return { timedOut };
  const line = stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) throw new Error(`the opener said nothing usable: ${stdout}${stderr}`);
  return { ...(JSON.parse(line) as { error?: string; firstSeq?: number }), timedOut };
}

/** Writes `file` until the file system is full (ENOSPC), so nothing more fits beside it. */
export function fillUp(file: string): void {
  const fd = openSync(file, 'w');
  try {
    for (;;) writeSync(fd, Buffer.alloc(4096));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
}
