/**
 * Helpers for the tests that run inside the SocketCAN VM (`*.vmtest.ts`, see scripts/vm/run-in-vm.sh): private vcan
 * interfaces per test file, the can-utils peers, and waiting until a peer is reading (waitFor is test/support/wait.ts).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, afterEach, before } from 'node:test';
import { promisify } from 'node:util';
import { waitFor } from './wait.js';

export const IN_VM = process.env.TELEMATICS_IN_VM === '1';

/** Runs a command and returns its stdout; throws with its stderr when it fails. */
export function run(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Runs a command without blocking the event loop: use it for anything that sends more frames than a socket's receive
 * buffer holds (a few hundred), which a blocked agent would never drain.
 */
export async function runAsync(cmd: string, ...args: string[]): Promise<string> {
  return (await promisify(execFile)(cmd, args, { encoding: 'utf8' })).stdout;
}

/**
 * cangen pinned to one CPU (`taskset -c 0 cangen ...`), for tests that check the order frames arrive in. A frame a
 * process sends on a CAN interface comes back to the host's own sockets through netif_rx on the CPU the sender runs
 * on (that CPU's backlog). When the sender moves to another CPU while the first one's receive work is deferred (to
 * ksoftirqd: it happens when the host stalls the VM's virtual CPU), the kernel itself delivers later frames first. That
 * is the likely cause of a loaded run seeing frame 191 arrive 11 frames late (not reproduced on demand). A CAN controller receives
 * from the bus on one CPU; pinning the sender makes vcan do the same, so these tests test the agent's receive path.
 */
export const CANGEN = ['taskset', '-c', '0', 'cangen'] as const;

/** run() of pinned cangen (CANGEN). */
export function cangen(...args: string[]): string {
  const [cmd, ...pinned] = CANGEN;
  return run(cmd, ...pinned, ...args);
}

/** runAsync() of pinned cangen (CANGEN). */
export async function cangenAsync(...args: string[]): Promise<string> {
  const [cmd, ...pinned] = CANGEN;
  return runAsync(cmd, ...pinned, ...args);
}

/** Closes what a test opened even when it fails, so a failed test cannot keep the VM's node process alive. */
export class Cleanup {
  private readonly tasks: (() => unknown)[] = [];
  add(task: () => unknown): void {
    this.tasks.push(task);
  }
  async run(): Promise<void> {
    for (const task of this.tasks.splice(0).reverse()) {
      try {
        await task();
      } catch {
        // best effort
      }
    }
  }
}

/** Creates (or recreates) a CAN FD capable vcan interface and brings it up. */
export function createVcan(name: string): void {
  deleteVcan(name);
  run('ip', 'link', 'add', 'dev', name, 'type', 'vcan');
  run('ip', 'link', 'set', name, 'mtu', '72', 'up');
}

export function deleteVcan(name: string): void {
  try {
    run('ip', 'link', 'del', name);
  } catch {
    // not there
  }
}

/**
 * The vcan interfaces of the enclosing describe(): `names` created in its before hook (and `absent` ones deleted, for
 * a test that creates them itself), all deleted in its after hook; `cleanup` run after each test.
 */
export function withVcan(names: string[], options: { absent?: string[]; cleanup?: Cleanup } = {}): void {
  const absent = options.absent ?? [];
  before(() => {
    for (const name of names) createVcan(name);
    for (const name of absent) deleteVcan(name);
  });
  const cleanup = options.cleanup;
  if (cleanup) afterEach(() => cleanup.run());
  after(() => {
    for (const name of [...names, ...absent]) deleteVcan(name);
  });
}

export function setLink(name: string, state: 'up' | 'down'): void {
  run('ip', 'link', 'set', name, state);
}

/** A background process whose stdout is collected; `done` resolves with it when the process exits. */
export function background(cmd: string, args: string[], stdin?: string): { child: ChildProcess; done: Promise<string> } {
  const child = spawn(cmd, args, { stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  if (stdin !== undefined) child.stdin!.end(stdin);
  const done = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0 || signal === 'SIGTERM' || signal === 'SIGINT') resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal}: ${err.trim()}`));
    });
  });
  return { child, done };
}

/**
 * Waits until a child process is blocked reading its socket (isotprecv, candump): from then on it is bound and cannot
 * miss a frame. A fixed sleep is not enough under emulation, where starting a process takes anything up to seconds.
 */
export async function waitUntilReading(child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const wchan = (): string => {
    try {
      return readFileSync(`/proc/${child.pid}/wchan`, 'utf8');
    } catch {
      return '';
    }
  };
  await waitFor(() => /wait_for_more_packets|recv|poll|select/.test(wchan()), `${child.spawnfile} to block on its socket`, timeoutMs);
}
