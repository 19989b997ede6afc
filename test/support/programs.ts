/**
 * The project's programs as the tests run them, each a child process run to its end: the agent's command line
 * (`telematics-agent`, dist/src/cli/main.js), the operators' (`telematics-ops`, dist/src/cli/ops.js), the firmware
 * engineers' (`telematics-provision`, dist/src/cli/provision.js) and their scripts (`scripts/<name>`). `runProgramSync` blocks; `runProgram` waits without blocking the event loop,
 * for a program that talks to something living in the test's own process (a simulator on a pty, a broker client).
 * A program that keeps running while the test talks to it is test/support/agent-process.ts's (`telematics-agent run`)
 * or the test's own.
 *
 * `telematics-ops` keeps a command journal (src/fleet/command-journal.ts) under $XDG_STATE_HOME: a test that gives no
 * `env` runs it with XDG_STATE_HOME in a temporary folder of its own, never the user's journal.
 *
 * Failure: the program's own failure is the result (its exit status and output), never an exception; a program still
 * running after `timeoutMs` is killed (SIGKILL) and comes back with `timedOut` and status null. Only a program that
 * cannot be started at all (missing file) rejects/throws.
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './shared.js';
import { makeTempDir } from './temp.js';

/** The compiled command lines, as package.json's `bin` names them. */
export const AGENT_CLI = path.join(repoRoot, 'dist', 'src', 'cli', 'main.js');
export const OPS_CLI = path.join(repoRoot, 'dist', 'src', 'cli', 'ops.js');
export const PROVISION_CLI = path.join(repoRoot, 'dist', 'src', 'cli', 'provision.js');

/** `telematics-agent`, `telematics-ops`, `telematics-provision`, or a script of scripts/ by its path (`scripts/dev-pki`). */
export type Program = 'telematics-agent' | 'telematics-ops' | 'telematics-provision' | `scripts/${string}`;

export interface ProgramRun {
  /** The exit status; null when the program was killed (by the timeout or a signal of its own). */
  status: number | null;
  stdout: string;
  stderr: string;
  /** Killed at `timeoutMs`: it hung. */
  timedOut: boolean;
}

export interface ProgramOptions {
  /** Kill the program (SIGKILL) after this long. Default 60 s: far beyond any test's program, short of a hang's cost. */
  timeoutMs?: number;
  /** Written to its stdin, which is then closed; default: no stdin. */
  input?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

const DEFAULT_TIMEOUT_MS = 60_000;

let stateHome: string | undefined;
/** The environment of a program run without one: the tests', with telematics-ops' journal kept out of the user's. */
function defaultEnv(program: Program): NodeJS.ProcessEnv | undefined {
  if (program !== 'telematics-ops') return undefined;
  stateHome ??= makeTempDir('ops-state-');
  return { ...process.env, XDG_STATE_HOME: stateHome, TELEMATICS_OPS_JOURNAL: '' };
}
/** What a test may print (a decode of a whole drive log): spawnSync's 1 MB default would cut it off. */
const MAX_OUTPUT_BYTES = 256 * 1024 * 1024;

/** The executable and its first arguments: the CLIs run under this node, the scripts as they are (their shebang). */
function command(program: Program, args: readonly string[]): [string, string[]] {
  if (program === 'telematics-agent') return [process.execPath, [AGENT_CLI, ...args]];
  if (program === 'telematics-ops') return [process.execPath, [OPS_CLI, ...args]];
  if (program === 'telematics-provision') return [process.execPath, [PROVISION_CLI, ...args]];
  return [path.join(repoRoot, program), [...args]];
}

function envOf(program: Program, options: ProgramOptions): { env?: NodeJS.ProcessEnv } {
  const env = options.env ?? defaultEnv(program);
  return env !== undefined ? { env } : {};
}

/** Runs `program` to its end, blocking the event loop meanwhile. */
export function runProgramSync(program: Program, args: readonly string[], options: ProgramOptions = {}): ProgramRun {
  const [file, argv] = command(program, args);
  const result = spawnSync(file, argv, {
    encoding: 'utf8',
    timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    maxBuffer: MAX_OUTPUT_BYTES,
    ...(options.input !== undefined ? { input: options.input } : {}),
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...envOf(program, options),
  });
  const error: NodeJS.ErrnoException | undefined = result.error;
  if (error && error.code !== 'ETIMEDOUT') throw error;
  return { status: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '', timedOut: error?.code === 'ETIMEDOUT' };
}

/** Runs `program` to its end; the event loop goes on meanwhile. */
export function runProgram(program: Program, args: readonly string[], options: ProgramOptions = {}): Promise<ProgramRun> {
  const [file, argv] = command(program, args);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      ...envOf(program, options),
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    if (options.input !== undefined) child.stdin!.end(options.input);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    // 'close', not 'exit': the output is complete only once the pipes have closed.
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, timedOut });
    });
  });
}
