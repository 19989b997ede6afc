/**
 * `npm run bench -- socketcan [--json]`: the SocketCAN source (the project's addon, native/can-rx) beside candump in
 * the same VM and run, two ways.
 *
 * Drain: how fast each drains a burst the kernel has queued. Method, identical for both consumers: open the socket,
 * keep the consumer from reading while `cangen -g 0` puts a burst of BURST frames on a vcan (the agent: node's event
 * loop is blocked in execFileSync; candump: SIGSTOP), then let it go and time how long it takes to have every frame.
 * The receive buffers are large enough for the whole burst (rmem_default for candump, SO_RCVBUF for the agent): what
 * is measured is the drain rate, and any loss is reported, not hidden. Best of ROUNDS. The agent runs twice, with
 * kernel timestamps (control messages, the default) and without.
 *
 * CPU at a fixed rate: `cangen -g 0.125` sends RATE_FRAMES frames at about 8,000 a second (the rate a saturated
 * 1 Mbit/s bus carries) while the agent's source, then candump (printing to /dev/null, as a logger would), reads
 * them; each one's user+system time over the run comes from /proc/PID/stat (the agent is this process), divided by
 * the frames it received. The rate cangen reached is reported: under emulation it may fall short of 8,000.
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
/** The agent's socket buffer for the drain: room for the whole burst (about 1 KiB of buffer per frame). */
const DRAIN_BUFFER_BYTES = 64 << 20;
/** Frames at the fixed rate: 10 s at 8,000 frames/s, long enough for /proc's 10 ms CPU ticks. */
const RATE_FRAMES = 80_000;
const RATE_GAP_MS = '0.125';

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
  const source = new SocketCanSource({ interface: IF, timestamps, receiveBufferBytes: DRAIN_BUFFER_BYTES });
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

export interface CpuResult {
  /** Frames the consumer received, and the rate cangen reached. */
  received: number;
  fps: number;
  /** User+system CPU time over the run, microseconds, per frame received. */
  cpuUsPerFrame: number;
}

let ticksPerS = 0;

/** utime + stime of a process, microseconds (/proc/PID/stat fields 14 and 15, after the parenthesised name). */
export function cpuMicros(pid: number | 'self'): number {
  ticksPerS ||= Number(sh('getconf', 'CLK_TCK').trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / ticksPerS) * 1e6;
}

const rateArgs = [IF, '-g', RATE_GAP_MS, '-n', String(RATE_FRAMES), '-I', '123', '-L', '8', '-D', 'i', '-p', '10'];

/** Starts cangen at the fixed rate without blocking the event loop; the promise resolves with the seconds it took. */
export function cangenAtRate(args: readonly string[] = rateArgs): Promise<number> {
  const start = performance.now();
  const cangen = spawn('cangen', args, { stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    cangen.on('error', reject);
    cangen.on('exit', (code) => (code === 0 ? resolve((performance.now() - start) / 1000) : reject(new Error(`cangen exited with ${code}`))));
  });
}

async function agentCpu(): Promise<CpuResult> {
  let received = 0;
  let checksum = 0;
  const source = new SocketCanSource({ interface: IF });
  const abort = new AbortController();
  const running = source.run((frame) => {
    checksum += frame.data[0]!;
    received++;
  }, abort.signal);
  await source.whenOpen();
  const sending = cangenAtRate();
  // After the fork, which is this process's cost but not the receive path's.
  const cpu0 = cpuMicros('self');
  const seconds = await sending;
  // Whatever is still queued arrives within one coalescing interval.
  for (let i = 0; i < 200 && received + source.health.kernelDrops < RATE_FRAMES; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  const cpu = cpuMicros('self') - cpu0;
  abort.abort();
  await running;
  if (checksum < 0) throw new Error('unreachable');
  return { received, fps: RATE_FRAMES / seconds, cpuUsPerFrame: cpu / Math.max(1, received) };
}

/** candump (printing to a file, as a logger would) reading what `cangen` sends with `args` on `ifname`. */
export async function candumpCpu(ifname = IF, args: readonly string[] = rateArgs): Promise<CpuResult> {
  const frames = Number(args[args.indexOf('-n') + 1]);
  const out = '/tmp/bench-candump-rate.log';
  const candump = spawn('sh', ['-c', `exec candump ${ifname} > ${out}`], { stdio: 'ignore' });
  const pid = candump.pid!;
  const blocked = (): boolean => {
    try {
      return /wait_for_more_packets|select|poll/.test(readFileSync(`/proc/${pid}/wchan`, 'utf8'));
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 1000 && !blocked(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  const cpu0 = cpuMicros(pid);
  const seconds = await cangenAtRate(args);
  // Drained when it blocks on its socket again.
  for (let i = 0; i < 200 && !blocked(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  const cpu = cpuMicros(pid) - cpu0;
  const exited = new Promise<void>((resolve) => candump.on('exit', () => resolve()));
  candump.kill('SIGTERM');
  await exited;
  const received = readFileSync(out, 'utf8').split('\n').filter(Boolean).length;
  return { received, fps: frames / seconds, cpuUsPerFrame: cpu / Math.max(1, received) };
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
  const agentAtRate = await agentCpu();
  const candumpAtRate = await candumpCpu();
  const drainRatio = Number((a.fps / c.fps).toFixed(2));
  const result = {
    burst_frames: BURST,
    rounds: ROUNDS,
    agent_fps: Math.round(a.fps),
    agent_received: a.received,
    agent_fps_without_kernel_timestamps: Math.round(n.fps),
    candump_fps: Math.round(c.fps),
    candump_received: c.received,
    ratio: drainRatio,
    cpus: Number(sh('nproc').trim()),
    socketcan_drain_ratio: drainRatio,
    rate_frames: RATE_FRAMES,
    rate_fps: Math.round(agentAtRate.fps),
    agent_rate_received: agentAtRate.received,
    agent_cpu_us_per_frame: Number(agentAtRate.cpuUsPerFrame.toFixed(3)),
    candump_rate_fps: Math.round(candumpAtRate.fps),
    candump_rate_received: candumpAtRate.received,
    candump_cpu_us_per_frame: Number(candumpAtRate.cpuUsPerFrame.toFixed(3)),
    socketcan_cpu_ratio_vs_candump: Number((agentAtRate.cpuUsPerFrame / Math.max(1e-9, candumpAtRate.cpuUsPerFrame)).toFixed(2)),
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
      `socketcan: CPU per frame at a fixed rate, ${RATE_FRAMES} frames from cangen -g ${RATE_GAP_MS} (user+system from /proc/PID/stat)`,
      `  agent   ${result.agent_cpu_us_per_frame} µs/frame, ${agentAtRate.received}/${RATE_FRAMES} received at ${result.rate_fps.toLocaleString('en')} frames/s`,
      `  candump ${result.candump_cpu_us_per_frame} µs/frame, ${candumpAtRate.received}/${RATE_FRAMES} received at ${result.candump_rate_fps.toLocaleString('en')} frames/s`,
      `  agent / candump = ${result.socketcan_cpu_ratio_vs_candump}`,
      '',
    ].join('\n'),
  );
}
