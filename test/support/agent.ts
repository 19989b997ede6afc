/**
 * The agent as the data-path tests run it: device configs written to temp files, the compiled CLI as a child process
 * (so it can be killed -9 like a car losing power), hand-made candump logs, and a read-only look into the outbox file
 * the way an operator would inspect it with sqlite3.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { hexText } from './hex.js';
import { AGENT_CLI } from './programs.js';
import { delay } from './wait.js';

/** Writes `config` as `<dir>/<name>.json` and returns the file. */
export function writeConfig(dir: string, name: string, config: object): string {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** One `candump -L` line: `(ts) bus ID#DATA`, a standard identifier when it fits 11 bits. */
export function candumpLine(ts: number, id: number, data: readonly number[], bus = 'can0'): string {
  const idText = id <= 0x7ff ? id.toString(16).toUpperCase().padStart(3, '0') : id.toString(16).toUpperCase().padStart(8, '0');
  return `(${ts.toFixed(6)}) ${bus} ${idText}#${hexText(data, '')}`;
}

/** Little-endian unsigned 16-bit value at byte `at` of an 8-byte payload of zeros. */
export function le16(raw: number, at = 0, length = 8): number[] {
  const data = new Array<number>(length).fill(0);
  data[at] = raw & 0xff;
  data[at + 1] = (raw >> 8) & 0xff;
  return data;
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
    const start = performance.now();
    while (!pattern.test(this.stderr)) {
      if (!this.running) throw new Error(`agent exited before ${pattern}:\n${this.stderr}\n${this.stdout}`);
      if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${pattern} on the agent's stderr:\n${this.stderr}`);
      await delay(5);
    }
  }

  /** Sends `signal` and waits for the process to end. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }
}
