/**
 * `npm run bench -- socketcan [--json]`: how fast the SocketCAN source drains a burst the kernel has queued, beside
 * candump draining the same burst in the same VM and run.
 *
 * Method, identical for both consumers: open the socket, keep the consumer from reading while `cangen -g 0` puts a
 * burst of BURST frames on a vcan (the agent: node's event loop is blocked in execFileSync; candump: SIGSTOP), then
 * let it go and time how long it takes to have every frame. The socket receive buffer is raised (rmem_default) so the
 * whole burst fits: what is measured is the drain rate, and any loss is reported, not hidden. Best of ROUNDS.
 * The agent runs twice, with kernel timestamps (one SIOCGSTAMP ioctl per frame, the default) and without.
 *
 * Needs a kernel with vcan: on a host without one it reruns itself inside the test VM (scripts/vm/run-in-vm.sh).
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SocketCanSource } from '../src/can/socketcan.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const IF = 'vbench0';
const BURST = 20_000;
const ROUNDS = 5;

interface DrainResult {
  fps: number;
  received: number;
}

function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const burstArgs = [IF, '-g', '0', '-n', String(BURST), '-I', '123', '-L', '8', '-D', 'i', '-p', '10'];

async function agentDrain(timestamps: boolean): Promise<DrainResult> {
  let received = 0;
  let checksum = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => (done = resolve));
  const source = new SocketCanSource({ interface: IF, timestamps });
  const abort = new AbortController();
  const running = source.run((frame) => {
    checksum += frame.data[0]!; // touch the payload, as a consumer would
    if (++received === BURST) done();
  }, abort.signal);
  await source.whenOpen();
  sh('cangen', ...burstArgs); // synchronous: the event loop reads nothing until the whole burst is queued
  const start = performance.now();
  const timeout = setTimeout(done, 10_000);
  await finished;
  const elapsed = performance.now() - start;
  clearTimeout(timeout);
  abort.abort();
  await running;
  if (checksum < 0) throw new Error('unreachable');
  return { fps: (received / elapsed) * 1000, received };
}

async function candumpDrain(): Promise<DrainResult> {
  const out = '/tmp/bench-candump.log';
  const candump = spawn('sh', ['-c', `exec candump -n ${BURST} ${IF} > ${out}`], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => candump.on('exit', () => resolve()));
  // Wait until it is blocked on its socket, then freeze it while the burst is queued.
  for (let i = 0; i < 1000; i++) {
    let wchan = '';
    try {
      wchan = readFileSync(`/proc/${candump.pid}/wchan`, 'utf8');
    } catch {
      // not started yet
    }
    if (/wait_for_more_packets|select|poll/.test(wchan)) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  candump.kill('SIGSTOP');
  sh('cangen', ...burstArgs);
  const start = performance.now();
  candump.kill('SIGCONT');
  const timeout = setTimeout(() => candump.kill('SIGTERM'), 10_000);
  await exited;
  const elapsed = performance.now() - start;
  clearTimeout(timeout);
  const received = readFileSync(out, 'utf8').split('\n').filter(Boolean).length;
  return { fps: (received / elapsed) * 1000, received };
}

function best(results: DrainResult[]): DrainResult {
  return results.reduce((a, b) => (b.received > a.received || (b.received === a.received && b.fps > a.fps) ? b : a));
}

export async function runSocketCanBenchmark(json: boolean): Promise<void> {
  if (process.env.TELEMATICS_IN_VM !== '1') {
    // Rerun inside the VM, where the kernel has vcan.
    const args = ['node', path.join(root, 'dist', 'bench', 'main.js'), 'socketcan', ...(json ? ['--json'] : [])];
    execFileSync(path.join(root, 'scripts', 'vm', 'run-in-vm.sh'), args, { cwd: root, stdio: 'inherit' });
    return;
  }
  // Room for the whole burst in each socket's receive buffer (a CAN frame costs about 1 KiB of buffer).
  writeFileSync('/proc/sys/net/core/rmem_max', String(64 << 20));
  writeFileSync('/proc/sys/net/core/rmem_default', String(64 << 20));
  try {
    sh('ip', 'link', 'del', IF);
  } catch {
    // not there
  }
  sh('ip', 'link', 'add', 'dev', IF, 'type', 'vcan');
  sh('ip', 'link', 'set', IF, 'up');

  const agent: DrainResult[] = [];
  const agentNoTs: DrainResult[] = [];
  const candump: DrainResult[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    agent.push(await agentDrain(true));
    agentNoTs.push(await agentDrain(false));
    candump.push(await candumpDrain());
  }
  const a = best(agent);
  const n = best(agentNoTs);
  const c = best(candump);
  const result = {
    burst_frames: BURST,
    rounds: ROUNDS,
    agent_fps: Math.round(a.fps),
    agent_received: a.received,
    agent_fps_without_kernel_timestamps: Math.round(n.fps),
    candump_fps: Math.round(c.fps),
    candump_received: c.received,
    ratio: Number((a.fps / c.fps).toFixed(2)),
    cpus: Number(sh('nproc').trim()),
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(
    [
      `socketcan: drain a queued burst of ${BURST} frames from vcan (best of ${ROUNDS}, qemu VM, ${result.cpus} vCPUs)`,
      `  agent   ${result.agent_fps.toLocaleString('en')} frames/s, ${a.received}/${BURST} received (kernel timestamps, the default)`,
      `  agent   ${result.agent_fps_without_kernel_timestamps.toLocaleString('en')} frames/s, ${n.received}/${BURST} received (timestamps: false)`,
      `  candump ${result.candump_fps.toLocaleString('en')} frames/s, ${c.received}/${BURST} received`,
      `  agent / candump = ${result.ratio}`,
      '',
    ].join('\n'),
  );
}
