/**
 * `npm run bench -- realrate [--json]`: the built agent as a head unit runs it: a separate process
 * (`telematics-agent run --config <file>`), fed at the rate a bus delivers, for long enough to be in a steady state.
 *
 * On this host (replay, paced), the agent started as its systemd unit starts it (node with AGENT_NODE_FLAGS):
 *  - the real J1939 truck log (css_j1939_demo.dbc), replayed in a loop by the `replay` source at a speed that gives
 *    1,000, 4,000, 8,000 and 16,000 frames/s, and four such buses at 8,000 frames/s each;
 *  - production configuration: an external broker (Debian's mosquitto, mutual TLS, client certificates, the fleet
 *    ACL), health on (report and status page), the collection rules of the pipeline benchmark, a SQLite outbox; its
 *    stdout is a journal as under systemd (JOURNAL_STREAM), so no live status line is drawn;
 *  - baseline in the same run: the agent decoding alone (no collection, outbox or uplink) at 8,000 frames/s;
 *  - idle: the same production configuration on a bus carrying about one frame a second.
 *  For each run: CPU share of one core (user + system from /proc/PID/stat) over WINDOW_S seconds after WARMUP_S of
 *  warm-up, the largest resident set (VmRSS) sampled each second of that window and the peak (VmHWM), and the frame
 *  rate the agent itself counted (its /status page). Start times, from the spawn of the process: to the info line
 *  `first frame decoded` and to `uplink: connected` (TLS to the broker on this machine); the median over the runs.
 *
 * In the test VM (the kernel has vcan; the host's has not), one boot:
 *  - the agent as a process with a `socketcan` source on a vcan, the same DBC, collection and outbox (no uplink:
 *    the VM's emulated CPU is for the receive path), fed by `cangen -g` at 1,000, 4,000 and 8,000 frames/s (EEC1, so
 *    every frame passes the DBC's kernel filters and is decoded), and candump at the same rates: CPU share of each
 *    over the send, and their ratio. Under emulation cangen may reach less than the target: the rate reached is
 *    reported;
 *  - the `socketcan` benchmark (bench/socketcan.ts: drain of a queued burst, CPU per frame at a fixed rate, each
 *    against candump): socketcan_drain_ratio and socketcan_cpu_ratio_vs_candump.
 *
 * The outbox drain after a dead zone against a bare publish loop: the `pipeline` benchmark's drain_ratio.
 *
 * Everything is measured in one run; compare ratios, not absolute figures from another machine. The frame rates the
 * replay reaches are reported beside the targets.
 */
import { AGENT_NODE_FLAGS } from '../src/agent/node-flags.js';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Mosquitto, TestPki, freePort } from '../test/support/mosquitto.js';
import { TRUCK_BATCH, TRUCK_DBC, TRUCK_LOG, truckRules } from './pipeline.js';
import { candumpCpu, cangenAtRate, cpuMicros } from './socketcan.js';
import { makeTempDir } from '../test/support/temp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const testdata = process.env.TELEMATICS_SHARED_TESTDATA ?? path.resolve(root, '..', 'shared', 'testdata');
const CLI = path.join(root, 'dist', 'src', 'cli', 'main.js');
const WARMUP_S = Number(process.env.REALRATE_WARMUP_S ?? 10);
const WINDOW_S = Number(process.env.REALRATE_WINDOW_S ?? 20);
const RATES = [1000, 4000, 8000, 16_000];
const DEVICE_ID = 'bench-realrate';

/** The pipeline benchmark's collection, each bus with its own rules. */
function collectionFor(buses: readonly string[]): unknown {
  return { batch: TRUCK_BATCH, format: 'cbor', rules: buses.flatMap((bus) => truckRules(bus)) };
}

interface RunSpec {
  label: string;
  buses: number;
  /** Frames per second per bus the replay is paced to. */
  rate: number;
  /** false: the baseline, decoding only. */
  production: boolean;
}

interface RunResult {
  label: string;
  targetFps: number;
  fps: number;
  cpuPct: number;
  rssMb: number;
  hwmMb: number;
  /** RssAnon and RssFile when the resident set was largest. */
  anonMb: number;
  fileMb: number;
  firstFrameS: number;
  connectedS: number | undefined;
}

/**
 * VmRSS and VmHWM of a process, MB; and the resident set's two parts: RssAnon (the process's own memory: the V8 heap,
 * malloc) and RssFile (pages of the node binary and libraries, which the kernel can drop and load again, and shares
 * with any other node process).
 */
function memoryMb(pid: number): { rss: number; hwm: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024, anon: kb('RssAnon') / 1024, file: kb('RssFile') / 1024 };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The truck log's own rate, frames per second as recorded. */
function recordedRate(logFile: string): number {
  const stamps = readFileSync(logFile, 'utf8')
    .split('\n')
    .map((line) => /^\((\d+\.\d+)\)/.exec(line)?.[1])
    .filter((ts): ts is string => ts !== undefined)
    .map(Number);
  return (stamps.length - 1) / (stamps[stamps.length - 1]! - stamps[0]!);
}

class AgentProcess {
  readonly child: ChildProcess;
  readonly spawnedAt = performance.now();
  firstFrameS: number | undefined;
  connectedS: number | undefined;
  /** Set by a caller's poll (see waitFor). */
  ready = false;
  private readonly tail: string[] = [];
  private exited = false;

  constructor(configFile: string) {
    // As under systemd (the production case): stdout is the journal, so `run` draws no status line every second. Its
    // JOURNAL_STREAM names the journal's device and inode; here a file stands in. The log (stderr) is read here.
    const stdoutFile = `${configFile}.stdout`;
    const stdout = openSync(stdoutFile, 'w');
    const { dev, ino } = fstatSync(stdout);
    // With the V8 options a car's systemd unit starts it with (src/agent/node-flags.ts).
    this.child = spawn(process.execPath, [...AGENT_NODE_FLAGS, CLI, 'run', '--config', configFile], {
      stdio: ['ignore', stdout, 'pipe'],
      env: { ...process.env, JOURNAL_STREAM: `${dev}:${ino}` },
    });
    closeSync(stdout);
    this.child.on('exit', () => (this.exited = true));
    for (const stream of [this.child.stderr!]) {
      let buffered = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        buffered += chunk;
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          this.line(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
        }
      });
    }
  }

  private line(line: string): void {
    const seconds = (performance.now() - this.spawnedAt) / 1000;
    if (this.firstFrameS === undefined && line.includes('first frame decoded')) this.firstFrameS = seconds;
    if (this.connectedS === undefined && line.includes('uplink: connected')) this.connectedS = seconds;
    this.tail.push(line);
    if (this.tail.length > 20) this.tail.shift();
  }

  get pid(): number {
    if (this.exited) throw new Error(`realrate benchmark: the agent exited early:\n${this.tail.join('\n')}`);
    return this.child.pid!;
  }

  /** Waits until `what()`, calling `poll` (if any) before each look. */
  async waitFor(what: () => boolean, label: string, timeoutMs = 30_000, poll?: () => Promise<void>): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      await poll?.();
      if (what()) return;
      void this.pid; // throws if the agent died
      if (performance.now() > deadline) throw new Error(`realrate benchmark: no ${label} after ${timeoutMs} ms:\n${this.tail.join('\n')}`);
      await sleep(poll ? 100 : 5);
    }
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

async function framesCounted(port: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/status`);
  const status = (await response.json()) as { buses: { frames: number }[] };
  return status.buses.reduce((sum, bus) => sum + bus.frames, 0);
}

export async function runRealRateBenchmark(json: boolean): Promise<void> {
  if (process.env.TELEMATICS_IN_VM === '1') {
    process.stdout.write(`${JSON.stringify(await vmMeasurements())}\n`);
    return;
  }
  const dbcFile = TRUCK_DBC;
  const logFile = TRUCK_LOG;
  let recorded: number;
  try {
    recorded = recordedRate(logFile);
  } catch {
    throw new Error(`the realrate benchmark needs the shared test data (${testdata}); set TELEMATICS_SHARED_TESTDATA`);
  }
  const progress = (line: string): void => {
    if (!json) process.stderr.write(`${line}\n`);
  };
  const dir = makeTempDir('bench-realrate-');
  const pki = new TestPki('realrate bench CA');
  const broker = await Mosquitto.start({ pki, quiet: true });
  let runIndex = 0;

  const writeConfig = (spec: RunSpec, httpPort: number): string => {
    const buses = Array.from({ length: spec.buses }, (_, i) => `can${i}`);
    const config: Record<string, unknown> = {
      deviceId: DEVICE_ID,
      buses: buses.map((name) => ({
        name,
        dbc: dbcFile,
        j1939: true,
        source: { type: 'replay', file: logFile, speed: spec.rate / recorded, loop: true },
      })),
      health: { http: { enabled: true, port: httpPort } },
      // Steady state: the verbose start (debug for the first 300 s of a run) is over.
      logging: { verboseForS: 0 },
    };
    if (spec.production) {
      Object.assign(config, {
        collection: collectionFor(buses),
        outbox: { path: path.join(dir, `outbox-${runIndex}.db`) },
        uplink: { url: broker.url, ...pki.identityFiles(DEVICE_ID) },
      });
    }
    const file = path.join(dir, `config-${runIndex++}.json`);
    writeFileSync(file, JSON.stringify(config, null, 2));
    return file;
  };

  const measure = async (spec: RunSpec): Promise<RunResult> => {
    const port = await freePort();
    const agent = new AgentProcess(writeConfig(spec, port));
    try {
      await agent.waitFor(() => agent.firstFrameS !== undefined, 'first decoded frame');
      if (spec.production) await agent.waitFor(() => agent.connectedS !== undefined, 'connected uplink');
      await sleep(WARMUP_S * 1000);
      const cpu0 = cpuMicros(agent.pid);
      const frames0 = await framesCounted(port);
      const t0 = performance.now();
      let largest = { rss: 0, hwm: 0, anon: 0, file: 0 };
      for (let s = 0; s < WINDOW_S; s++) {
        await sleep(1000);
        const now = memoryMb(agent.pid);
        if (now.rss > largest.rss) largest = now;
      }
      const frames1 = await framesCounted(port);
      const cpu1 = cpuMicros(agent.pid);
      const seconds = (performance.now() - t0) / 1000;
      const result: RunResult = {
        label: spec.label,
        targetFps: spec.rate * spec.buses,
        fps: (frames1 - frames0) / seconds,
        cpuPct: ((cpu1 - cpu0) / 1e6 / seconds) * 100,
        rssMb: largest.rss,
        hwmMb: memoryMb(agent.pid).hwm,
        anonMb: largest.anon,
        fileMb: largest.file,
        firstFrameS: agent.firstFrameS!,
        connectedS: agent.connectedS,
      };
      progress(
        `  ${result.label.padEnd(34)} ${Math.round(result.fps).toLocaleString('en').padStart(7)} frames/s  ` +
          `CPU ${result.cpuPct.toFixed(2).padStart(5)}%  RSS ${result.rssMb.toFixed(1)} MB (peak ${result.hwmMb.toFixed(1)}; ` +
          `anonymous ${result.anonMb.toFixed(1)}, file pages ${result.fileMb.toFixed(1)})`,
      );
      return result;
    } finally {
      await agent.stop();
    }
  };

  const median = (values: number[]): number => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const round = (value: number, digits: number): number => Number(value.toFixed(digits));

  let runs: RunResult[];
  try {
    progress(
      `realrate: the built agent as a process, replaying the truck log (recorded at ${Math.round(recorded)} frames/s), ${WARMUP_S} s warm-up, ${WINDOW_S} s window`,
    );
    runs = [
      await measure({ label: 'idle (about 1 frame/s)', buses: 1, rate: 1, production: true }),
      await measure({ label: 'decode only at 8,000 (baseline)', buses: 1, rate: 8000, production: false }),
    ];
    for (const rate of RATES) runs.push(await measure({ label: `production at ${rate.toLocaleString('en')}`, buses: 1, rate, production: true }));
    runs.push(await measure({ label: 'production, 4 buses at 8,000 each', buses: 4, rate: 8000, production: true }));
  } finally {
    await broker.stop();
  }
  const byLabel = (label: string): RunResult => runs.find((r) => r.label === label)!;
  const at8k = byLabel('production at 8,000');
  const x4 = byLabel('production, 4 buses at 8,000 each');
  const idle = byLabel('idle (about 1 frame/s)');
  const decodeOnly = byLabel('decode only at 8,000 (baseline)');

  // The SocketCAN receive path in the VM, and the outbox drain: their own benchmarks, in this run.
  progress('realrate: in the VM, the agent on a vcan fed by cangen, candump beside it, and the socketcan benchmark ...');
  const vm = inVm();
  const socketcan = vm.socketcan;
  for (const r of vm.rates) {
    progress(
      `  socketcan, target ${r.target_fps.toLocaleString('en').padStart(6)} frames/s: cangen reached ${r.fps.toLocaleString('en')}; ` +
        `agent CPU ${r.agent_cpu_pct}% (${r.agent_received} received, RSS ${r.agent_rss_mb} MB), candump ${r.candump_cpu_pct}%: ratio ${r.cpu_ratio_vs_candump}`,
    );
  }
  progress('realrate: the pipeline benchmark, for the drain ratio ...');
  const pipeline = subBenchmark('pipeline');

  const result = {
    rates: runs.map((r) => ({
      run: r.label,
      target_fps: r.targetFps,
      fps: Math.round(r.fps),
      cpu_pct: round(r.cpuPct, 2),
      rss_mb: round(r.rssMb, 1),
      peak_rss_mb: round(r.hwmMb, 1),
      anon_mb: round(r.anonMb, 1),
      file_mb: round(r.fileMb, 1),
    })),
    cpu_pct_at_8k: round(at8k.cpuPct, 2),
    cpu_pct_at_8k_x4: round(x4.cpuPct, 2),
    cpu_pct_at_8k_decode_only: round(decodeOnly.cpuPct, 2),
    cpu_us_per_frame_at_8k: round((at8k.cpuPct / 100 / at8k.fps) * 1e6, 3),
    rss_mb_at_8k: round(at8k.rssMb, 1),
    rss_mb_idle: round(idle.rssMb, 1),
    anon_mb_at_8k: round(at8k.anonMb, 1),
    anon_mb_idle: round(idle.anonMb, 1),
    socketcan_rates: vm.rates,
    socketcan_drain_ratio: socketcan.socketcan_drain_ratio as number,
    socketcan_cpu_ratio_vs_candump: socketcan.socketcan_cpu_ratio_vs_candump as number,
    start_to_first_frame_s: round(median(runs.map((r) => r.firstFrameS)), 3),
    start_to_connected_s: round(median(runs.flatMap((r) => (r.connectedS === undefined ? [] : [r.connectedS]))), 3),
    drain_ratio: pipeline.drain_ratio as number,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(
    [
      `realrate: one bus at 8,000 frames/s, production configuration: CPU ${result.cpu_pct_at_8k}% of one core (${result.cpu_us_per_frame_at_8k} µs/frame), RSS ${result.rss_mb_at_8k} MB (anonymous ${result.anon_mb_at_8k})`,
      `  decoding alone at the same rate (baseline): CPU ${result.cpu_pct_at_8k_decode_only}%`,
      `  four buses at 8,000 frames/s each: CPU ${result.cpu_pct_at_8k_x4}%`,
      `  idle: RSS ${result.rss_mb_idle} MB (anonymous ${result.anon_mb_idle})`,
      `  start to first decoded frame ${result.start_to_first_frame_s} s, to a connected uplink ${result.start_to_connected_s} s (median of ${runs.length} starts)`,
      `  SocketCAN in the VM: drain agent/candump ${result.socketcan_drain_ratio}, CPU per frame agent/candump ${result.socketcan_cpu_ratio_vs_candump} (source in the benchmark's process)`,
      ...vm.rates.map(
        (r) =>
          `  SocketCAN in the VM, the agent as a process at ${r.fps.toLocaleString('en')} frames/s (target ${r.target_fps.toLocaleString('en')}): CPU ${r.agent_cpu_pct}% vs candump ${r.candump_cpu_pct}% (ratio ${r.cpu_ratio_vs_candump})`,
      ),
      `  outbox drain / bare publish loop ${result.drain_ratio}`,
      '',
    ].join('\n'),
  );
}

/** Another suite of `npm run bench`, run as a child with --json; its figures. */
function subBenchmark(suite: string): Record<string, unknown> {
  const out = execFileSync(process.execPath, [path.join(root, 'dist', 'bench', 'main.js'), suite, '--json'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  return lastJson(out, `the ${suite} benchmark`);
}

interface VmRate {
  target_fps: number;
  /** The rate cangen reached. */
  fps: number;
  agent_received: number;
  agent_cpu_pct: number;
  agent_rss_mb: number;
  candump_received: number;
  candump_cpu_pct: number;
  cpu_ratio_vs_candump: number;
}

/** Boots the VM once for the measurements that need a kernel with vcan. */
function inVm(): { rates: VmRate[]; socketcan: Record<string, unknown> } {
  const out = execFileSync(
    path.join(root, 'scripts', 'vm', 'run-in-vm.sh'),
    [process.execPath, path.join(root, 'dist', 'bench', 'main.js'), 'realrate', '--json'],
    {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, VM_ENV: 'TELEMATICS_SHARED_TESTDATA' },
      maxBuffer: 64 << 20,
    },
  );
  return lastJson(out, 'realrate (in the VM)') as { rates: VmRate[]; socketcan: Record<string, unknown> };
}

const VM_IF = 'vrate0';
/** Seconds of traffic at each rate: long enough for /proc's 10 ms CPU ticks. */
const VM_SEND_S = 10;

/** Inside the VM: the agent process and candump at fixed cangen rates, then the socketcan benchmark. */
async function vmMeasurements(): Promise<{ rates: VmRate[]; socketcan: Record<string, unknown> }> {
  const sh = (...args: string[]): void => void execFileSync(args[0]!, args.slice(1), { stdio: 'ignore' });
  try {
    sh('ip', 'link', 'del', VM_IF);
  } catch {
    // not there
  }
  sh('ip', 'link', 'add', 'dev', VM_IF, 'type', 'vcan');
  sh('ip', 'link', 'set', VM_IF, 'up');
  const dbcFile = TRUCK_DBC;
  const dir = makeTempDir('bench-realrate-vm-');
  const rates: VmRate[] = [];
  for (const target of [1000, 4000, 8000]) {
    const frames = target * VM_SEND_S;
    // EEC1 (PGN 61444, engine speed) from address 0: the DBC's kernel filters pass it, the decoder decodes it.
    const args = [VM_IF, '-g', (1000 / target).toFixed(3), '-n', String(frames), '-e', '-I', '0CF00400', '-L', '8', '-D', 'i'];
    const port = await freePort();
    const configFile = path.join(dir, `config-${target}.json`);
    writeFileSync(
      configFile,
      JSON.stringify({
        deviceId: DEVICE_ID,
        buses: [{ name: 'can0', dbc: dbcFile, j1939: true, source: { type: 'socketcan', interface: VM_IF } }],
        health: { http: { enabled: true, port } },
        collection: collectionFor(['can0']),
        outbox: { path: path.join(dir, `outbox-${target}.db`) },
      }),
    );
    const agent = new AgentProcess(configFile);
    let agentResult: { received: number; cpuPct: number; rssMb: number; seconds: number };
    try {
      // Ready when its status page answers (the source is open by then: the data path opens before the page).
      await agent.waitFor(
        () => agent.ready,
        'status page',
        120_000,
        async () => {
          agent.ready = await framesCounted(port).then(
            () => true,
            () => false,
          );
        },
      );
      await sleep(1000);
      const before = await framesCounted(port);
      const cpu0 = cpuMicros(agent.pid);
      const seconds = await cangenAtRate(args);
      // What is still queued arrives within a read interval or two.
      let received = 0;
      for (let i = 0; i < 100; i++) {
        received = (await framesCounted(port)) - before;
        if (received >= frames) break;
        await sleep(20);
      }
      const cpu = cpuMicros(agent.pid) - cpu0;
      agentResult = { received, cpuPct: (cpu / 1e6 / seconds) * 100, rssMb: memoryMb(agent.pid).rss, seconds };
    } finally {
      await agent.stop();
    }
    const candump = await candumpCpu(VM_IF, args);
    const candumpPct = ((candump.cpuUsPerFrame * candump.received) / 1e6 / (frames / candump.fps)) * 100;
    rates.push({
      target_fps: target,
      fps: Math.round(frames / agentResult.seconds),
      agent_received: agentResult.received,
      agent_cpu_pct: Number(agentResult.cpuPct.toFixed(2)),
      agent_rss_mb: Number(agentResult.rssMb.toFixed(1)),
      candump_received: candump.received,
      candump_cpu_pct: Number(candumpPct.toFixed(2)),
      cpu_ratio_vs_candump: Number((agentResult.cpuPct / Math.max(1e-9, candumpPct)).toFixed(2)),
    });
  }
  sh('ip', 'link', 'del', VM_IF);
  return { rates, socketcan: subBenchmark('socketcan') };
}

function lastJson(out: string, what: string): Record<string, unknown> {
  const line = out
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (line === undefined) throw new Error(`realrate benchmark: ${what} printed no JSON`);
  return JSON.parse(line) as Record<string, unknown>;
}
