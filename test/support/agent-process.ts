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
 * The messages waiting in an outbox file, read-only (the agent may be running, or lie dead after a kill -9 with its WAL
 * beside the file: SQLite reads the committed transactions from the WAL either way). Those its `delivered` journal
 * lists are left out: the broker acknowledged them, and the outbox deletes them at the latest at its next open.
 */
export function outboxRows(file: string): OutboxRow[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[], OutboxRow>('SELECT seq, priority, kind FROM message WHERE id NOT IN (SELECT id FROM delivered) ORDER BY seq').all();
  } finally {
    db.close();
  }
}

export interface AgentProcessOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** How long `waitForStderr`/`waitForStdout` wait unless told otherwise. Default 10 s. */
  waitTimeoutMs?: number;
}

/** The compiled CLI in the background (`run --config FILE`, or any other command), its output collected as it comes. */
export class AgentProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly child: ChildProcess;
  private readonly waitTimeoutMs: number;

  private constructor(
    readonly args: readonly string[],
    options: AgentProcessOptions,
  ) {
    this.waitTimeoutMs = options.waitTimeoutMs ?? 10_000;
    this.child = spawn(process.execPath, [AGENT_CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      ...(options.env !== undefined ? { env: options.env } : {}),
    });
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => this.child.once('close', (code, signal) => resolve({ code, signal })));
  }

  /** `telematics-agent run --config configFile ...extraArgs`. */
  static start(configFile: string, extraArgs: string[] = []): AgentProcess {
    return new AgentProcess(['run', '--config', configFile, ...extraArgs], {});
  }

  /** `telematics-agent <args>`: a simulator, `decode` on an interface, a `run` with options of its own. */
  static command(args: string[], options: AgentProcessOptions = {}): AgentProcess {
    return new AgentProcess(args, options);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves once stderr matches (a RegExp) or contains (a string); fails, with what it said, on timeout or if it exits first. */
  async waitForStderr(pattern: RegExp | string, timeoutMs = this.waitTimeoutMs): Promise<void> {
    await this.waitForOutput('stderr', pattern, timeoutMs);
  }

  /** As waitForStderr, on stdout. */
  async waitForStdout(pattern: RegExp | string, timeoutMs = this.waitTimeoutMs): Promise<void> {
    await this.waitForOutput('stdout', pattern, timeoutMs);
  }

  private async waitForOutput(stream: 'stdout' | 'stderr', pattern: RegExp | string, timeoutMs: number): Promise<void> {
    const seen = (): boolean => (typeof pattern === 'string' ? this[stream].includes(pattern) : pattern.test(this[stream]));
    const what = `${typeof pattern === 'string' ? JSON.stringify(pattern) : pattern} on the ${stream} of ${this.args[0]}`;
    try {
      await waitFor(() => seen() || !this.running, what, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}:\n${this.stderr}`);
    }
    if (!seen()) throw new Error(`${this.args.join(' ')} exited before ${what}:\n${this.stderr}\n${this.stdout}`);
  }

  /** Sends `signal` and waits for the process to end. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }
}
