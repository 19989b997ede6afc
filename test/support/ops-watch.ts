/**
 * `telematics-ops watch` as a backend developer runs it: the compiled CLI as a child process, its standard output
 * collected line by line, `subscribed` settled once it says on stderr that it is watching (rejected, with its stderr,
 * if it exits first), `exited` with its exit code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { OPS_CLI } from './programs.js';

export interface Watcher {
  child: ChildProcess;
  lines(): string[];
  stderr(): string;
  subscribed: Promise<void>;
  exited: Promise<number | null>;
}

export function startWatch(args: string[]): Watcher {
  const child = spawn(process.execPath, [OPS_CLI, 'watch', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const subscribed = new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (stderr.includes('watching ')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`watch exited (${code}) before it subscribed: ${stderr}`)));
  });
  subscribed.catch(() => undefined);
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, lines: () => stdout.split('\n').filter((l) => l !== ''), stderr: () => stderr, subscribed, exited };
}
