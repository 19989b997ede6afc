/**
 * `npm run bench -- elm327 [--json]`: PID answers per second through a pseudo-terminal, from the project's ELM327
 * simulator (its own process, as an adapter is its own hardware: `telematics-agent sim-elm327`) to the agent's driver,
 * beside the limit the simulator's answer time allows: PIDs per request × 1000 / answer ms.
 *
 * Three runs, each best of ROUNDS windows of WINDOW_MS:
 *  - six PIDs per request (what the poller sends an adapter with multi-PID requests) at the simulator's default 25 ms;
 *  - one PID per request at 25 ms (adapters and ECUs without multi-PID requests);
 *  - one PID per request with no answer time at all: what the pty, the driver and the simulator cost by themselves.
 * Needs socat (scripts/install-test-deps.sh).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Elm327Client } from '../src/obd/elm327.js';
import { socatAvailable } from '../src/sim/elm327-pty.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'src', 'cli', 'main.js');
const ANSWER_MS = 25;
const WINDOW_MS = 2000;
const ROUNDS = 3;
/** Six PIDs the simulated engine ECU has: one full multi-PID request. */
const SIX_PIDS = [0x04, 0x05, 0x0c, 0x0d, 0x11, 0x2f];

interface Run {
  pidsPerS: number;
  requestsPerS: number;
}

async function startSimulator(link: string, answerMs: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cli, 'sim-elm327', '--link', link, '--answer-ms', String(answerMs)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const start = Date.now();
  while (!existsSync(link)) {
    if (child.exitCode !== null || Date.now() - start > 10_000) throw new Error(`sim-elm327 did not start: ${stderr.trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return child;
}

async function stopSimulator(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGINT');
  await exited;
}

/** Reads `pids` in a loop for a window; the best window of ROUNDS. */
async function measure(client: Elm327Client, pids: number[]): Promise<Run> {
  let best: Run = { pidsPerS: 0, requestsPerS: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    let answers = 0;
    const before = client.counters.requests;
    const start = performance.now();
    while (performance.now() - start < WINDOW_MS) {
      for (const entry of await client.readPids(pids)) answers += entry.readings.length;
    }
    const seconds = (performance.now() - start) / 1000;
    const run = { pidsPerS: answers / seconds, requestsPerS: (client.counters.requests - before) / seconds };
    if (run.pidsPerS > best.pidsPerS) best = run;
  }
  return best;
}

async function withAdapter<T>(answerMs: number, work: (client: Elm327Client) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-elm327-'));
  const link = path.join(dir, 'ttyELM');
  const sim = await startSimulator(link, answerMs);
  const client = new Elm327Client({ port: link, baudRate: 38400 });
  try {
    const info = await client.connect();
    if (!info.multiPid) throw new Error('the simulator should take multi-PID requests');
    return await work(client);
  } finally {
    client.close();
    await stopSimulator(sim);
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runElm327Benchmark(json: boolean): Promise<void> {
  if (!socatAvailable()) throw new Error('the elm327 benchmark needs socat: run scripts/install-test-deps.sh');
  const { multi, single } = await withAdapter(ANSWER_MS, async (client) => ({
    multi: await measure(client, SIX_PIDS),
    single: await measure(client, [0x0c]),
  }));
  const raw = await withAdapter(0, (client) => measure(client, [0x0c]));
  const limit = (SIX_PIDS.length * 1000) / ANSWER_MS;
  const singleLimit = 1000 / ANSWER_MS;
  const result = {
    pids_per_s: Math.round(multi.pidsPerS * 10) / 10,
    limit_per_s: limit,
    ratio: Math.round((multi.pidsPerS / limit) * 1000) / 1000,
    answer_ms: ANSWER_MS,
    pids_per_request: SIX_PIDS.length,
    single_pids_per_s: Math.round(single.pidsPerS * 10) / 10,
    single_limit_per_s: singleLimit,
    single_ratio: Math.round((single.pidsPerS / singleLimit) * 1000) / 1000,
    // Time each request costs beyond the simulator's answer time: pty, socat, serial I/O, parsing, decoding.
    overhead_ms: Math.round((1000 / single.requestsPerS - ANSWER_MS) * 100) / 100,
    raw_requests_per_s: Math.round(raw.requestsPerS),
    node: process.version,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(
    [
      `elm327: PID answers through a pty from the simulator (answer time ${ANSWER_MS} ms), best of ${ROUNDS} × ${WINDOW_MS} ms`,
      `  ${SIX_PIDS.length} PIDs per request: ${result.pids_per_s} PIDs/s, limit ${limit} (${(result.ratio * 100).toFixed(1)} %)`,
      `  1 PID per request:  ${result.single_pids_per_s} PIDs/s, limit ${singleLimit} (${(result.single_ratio * 100).toFixed(1)} %)`,
      `  overhead per request beyond the answer time: ${result.overhead_ms} ms`,
      `  no answer time at all: ${result.raw_requests_per_s} requests/s (pty, driver and simulator by themselves)`,
      '',
    ].join('\n'),
  );
}
