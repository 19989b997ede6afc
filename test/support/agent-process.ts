/**
 * The agent as a real process: `telematics-agent run --config FILE`, the compiled CLI as a child process, so it can be
 * killed -9 like a car losing power, signalled like systemd stops it, and read on stderr. Device configs written to
 * temp files for it, and a read-only look into its outbox file the way an operator would inspect it with sqlite3.
 * An agent inside the test's own process is test/support/agent-in-process.ts; a program run to its end
 * (`telematics-agent decode`, `telematics-ops`, the scripts) is test/support/programs.ts's.
 *
 * Failure: `waitForStderr` fails with what the agent said when it times out or the agent exits first; `stop` never
 * throws (a process already gone just reports how it ended).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AGENT_CLI } from './programs.js';
import { waitFor } from './wait.js';

/** Writes `config` as `<dir>/<name>.json` and returns the file. */
export function writeConfig(dir: string, name: string, config: object): string {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

export interface OutboxRow {
  seq: number;
  priority: number;
  kind: string;
}

/**
 * The messages in an outbox file, read-only (the agent may be running, or lie dead after a kill -9 with its WAL
 * beside the file: SQLite reads the committed transactions from the WAL either way).
 */
export function outboxRows(file: string): OutboxRow[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[], OutboxRow>('SELECT seq, priority, kind FROM message ORDER BY seq').all();
  } finally {
    db.close();
  }
}

/** The compiled CLI running `run --config FILE`, its output collected. */
export class AgentProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => (this.stdout += chunk));
    child.stderr!.on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  }

  static start(configFile: string, extraArgs: string[] = []): AgentProcess {
    return new AgentProcess(spawn(process.execPath, [AGENT_CLI, 'run', '--config', configFile, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves once stderr matches; fails (with what the agent said) on timeout or if the agent exits first. */
  async waitForStderr(pattern: RegExp, timeoutMs = 10_000): Promise<void> {
    try {
      await waitFor(() => pattern.test(this.stderr) || !this.running, `${pattern} on the agent's stderr`, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}:\n${this.stderr}`);
    }
    if (!pattern.test(this.stderr)) throw new Error(`agent exited before ${pattern}:\n${this.stderr}\n${this.stdout}`);
  }

  /** Sends `signal` and waits for the process to end. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }
}
