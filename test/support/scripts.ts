/** The firmware engineers' scripts (scripts/) as the tests run them: a child process, its exit code and output. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './shared.js';

export interface ScriptRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Killed at `timeoutMs` (it hung): code is null then. */
  timedOut: boolean;
}

export interface ScriptOptions {
  /** Kill the script (SIGKILL) after this long: for inputs that once made it hang. Default: no limit. */
  timeoutMs?: number;
}

export function runScript(name: string, args: string[], options: ScriptOptions = {}): ScriptRun {
  const result = spawnSync(path.join(repoRoot, 'scripts', name), args, {
    encoding: 'utf8',
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
  });
  const timedOut = (result.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  return { code: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '', timedOut };
}
