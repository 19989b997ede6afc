/** The firmware engineers' scripts (scripts/) as the tests run them: a child process, its exit code and output. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './shared.js';

export interface ScriptRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runScript(name: string, args: string[]): ScriptRun {
  const result = spawnSync(path.join(repoRoot, 'scripts', name), args, { encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}
