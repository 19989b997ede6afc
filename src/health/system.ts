/**
 * The host part of the health report: CPU load, memory, temperatures, the free space of the filesystem holding the
 * outbox (src/health/kernel-readings.ts), the network interfaces (which are up, which is the default route) and
 * uptime (kernelInterfaces below), all from the kernel's files on Linux. systeminformation gets most of them by
 * running shell commands, whose execSync held the event loop at every sample; off Linux it is still what is asked.
 *
 * On a head unit any of these may fail (no thermal zone, a missing tool) or hang (a wedged sysfs read, a slow child
 * process). Each probe is time-boxed and runs concurrently with the others; what fails or times out is null in the
 * sample and named in `failed`. A probe still running from an earlier sample is not started again, so a hung probe
 * never piles up calls. sample() never throws.
 *
 * systeminformation is imported only off Linux, at the first sample: it is large (some 12 MB resident). A sample
 * whose import fails has its probes failed.
 */
import type { DiskSample, InterfaceSample, SystemSample } from '../contract/health.js';
import { realpath, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Systeminformation } from 'systeminformation';
import { defaultInterface, KERNEL_FILES, kernelText, listedAsWireless } from '../uplink/network-identity.js';
import { cpuLoadReader, kernelFilesystem, kernelMemory, kernelTemperatures, mountContains } from './kernel-readings.js';

type SystemInformationModule = typeof import('systeminformation');
let loading: Promise<SystemInformationModule> | undefined;

/** systeminformation, imported once, on first use (its `exports.name = ...` are named exports to ESM). */
function systemInformation(): Promise<SystemInformationModule> {
  loading ??= import('systeminformation');
  return loading;
}

/** What the sampler asks the host; tests replace some of them to make a probe fail or hang. */
export interface SystemProbes {
  currentLoad(): Promise<Pick<Systeminformation.CurrentLoadData, 'currentLoad' | 'currentLoadUser' | 'currentLoadSystem'>>;
  mem(): Promise<Pick<Systeminformation.MemData, 'total' | 'available' | 'swaptotal' | 'swapused'>>;
  /** Degrees Celsius; null, absent, -1 or 0: no reading. */
  cpuTemperature(): Promise<{ main?: number | null; max?: number | null; cores?: number[]; chipset?: number | null }>;
  /** The filesystems, or at least the one holding `dir` (a real path). */
  fsSize(dir: string): Promise<Pick<Systeminformation.FsSizeData, 'fs' | 'type' | 'size' | 'available' | 'mount'>[]>;
  /** Fallback for a filesystem fsSize does not list (tmpfs, overlay quirks). */
  statfs(dir: string): Promise<{ totalBytes: number; freeBytes: number }>;
  networkInterfaces(): Promise<
    Pick<Systeminformation.NetworkInterfacesData, 'iface' | 'default' | 'ip4' | 'ip6' | 'mac' | 'internal' | 'operstate' | 'type' | 'speed'>[]
  >;
  uptimeS(): Promise<number>;
}

const LINUX = process.platform === 'linux';

/** The host's probes; each set has its own CPU load reader, so one sampler's interval is not shortened by another's. */
export function systemProbes(): SystemProbes {
  const linuxCpuLoad = LINUX ? cpuLoadReader() : null;
  return {
    currentLoad: async () => (linuxCpuLoad ? linuxCpuLoad() : (await systemInformation()).currentLoad()),
    mem: async () => (LINUX ? kernelMemory() : (await systemInformation()).mem()),
    cpuTemperature: async () => (LINUX ? kernelTemperatures() : (await systemInformation()).cpuTemperature()),
    fsSize: async (dir) => (LINUX ? [await kernelFilesystem(dir)] : (await systemInformation()).fsSize()),
    statfs: async (dir) => {
      const s = await statfs(dir);
      return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
    },
    networkInterfaces: async () => {
      if (LINUX) return kernelInterfaces();
      const list = await (await systemInformation()).networkInterfaces();
      return Array.isArray(list) ? list : [list];
    },
    // What systeminformation's time().uptime is, without the `date` and `ls` it runs (execSync) for the rest of time().
    uptimeS: async () => os.uptime(),
  };
}

type InterfaceReading = Awaited<ReturnType<SystemProbes['networkInterfaces']>>[number];

/**
 * The interfaces as systeminformation's networkInterfaces() describes them on Linux, read from the same sources:
 * os.networkInterfaces() (the list: interfaces with an address; the first IPv4 and IPv6 address, the MAC),
 * /sys/class/net/<iface>/operstate and speed, /proc/net/wireless and the default route (src/uplink/network-identity.ts).
 * systeminformation runs a shell script of some twenty `cat`s per interface, and `ip route`, with execSync: the
 * event loop stood still for 50-300 ms at every sample (frames waiting, the first one at start among them). Here it is
 * a few file reads; only a Wi-Fi interface's bitrate (`iw`), when the driver gives no speed, is not read (null).
 */
async function kernelInterfaces(): Promise<InterfaceReading[]> {
  const [defaultIface, wireless] = await Promise.all([defaultInterface(), kernelText(KERNEL_FILES.wireless)]);
  return Promise.all(
    Object.entries(os.networkInterfaces()).map(async ([name, addresses = []]) => {
      // An alias (`eth0:1`) is its interface's.
      const iface = name.split(':')[0]!.trim();
      const [operstateText, speedText] = await Promise.all([kernelText(KERNEL_FILES.operstate(iface)), kernelText(`/sys/class/net/${iface}/speed`)]);
      const operstate = operstateText.trim();
      const speed = Number.parseInt(speedText, 10);
      const type =
        iface === 'lo' || iface.startsWith('bond') ? 'virtual' : operstate === 'up' ? (listedAsWireless(wireless, iface) ? 'wireless' : 'wired') : 'unknown';
      return {
        iface,
        default: iface === defaultIface,
        ip4: addresses.find((a) => a.family === 'IPv4')?.address ?? '',
        ip6: addresses.find((a) => a.family === 'IPv6')?.address ?? '',
        mac: addresses.at(-1)?.mac ?? '',
        internal: addresses[0]?.internal === true || name.toLowerCase().includes('loopback'),
        operstate,
        type,
        speed: Number.isNaN(speed) ? null : speed,
      };
    }),
  );
}

// The shapes are the contract's (src/contract/health.ts).
export type { DiskSample, InterfaceSample, SystemSample } from '../contract/health.js';

export interface SystemSamplerOptions {
  /** The folder whose filesystem is reported (the outbox's). */
  diskPath: string;
  /** Longest wait for one probe, ms. Default 5000. */
  timeoutMs?: number;
  probes?: Partial<SystemProbes>;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: string };

/** One probe, time-boxed, never called again while an earlier call is still running, nor at all once closed. */
class TimeBoxed<T> {
  private running: Promise<T> | null = null;
  /** Ends the current wait (close()). */
  private cancel: ((err: Error) => void) | null = null;
  private closed = false;

  constructor(
    readonly name: string,
    private readonly call: () => Promise<T>,
    private readonly timeoutMs: number,
  ) {}

  /** `limitMs`: the wait, when less than the probe's own is left (the disk's probes share one time box). */
  async run(limitMs = this.timeoutMs): Promise<Outcome<T>> {
    if (this.closed) return { ok: false, error: 'sampler closed' };
    if (this.running) return { ok: false, error: `still running since an earlier sample` };
    let call: Promise<T>;
    try {
      call = Promise.resolve(this.call());
    } catch (err) {
      return { ok: false, error: errorText(err) };
    }
    this.running = call;
    call.then(
      () => this.settled(call),
      () => this.settled(call),
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${this.timeoutMs} ms`)), limitMs);
      // A wait must not keep a finished run alive.
      timer.unref();
      this.cancel = reject;
    });
    try {
      return { ok: true, value: await Promise.race([call, timeout]) };
    } catch (err) {
      return { ok: false, error: errorText(err) };
    } finally {
      clearTimeout(timer);
      this.cancel = null;
    }
  }

  /** Stops waiting (the call itself cannot be stopped): a hung probe must not hold the process at exit. */
  close(): void {
    this.closed = true;
    this.cancel?.(new Error('sampler closed'));
  }

  private settled(call: Promise<T>): void {
    if (this.running === call) this.running = null;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A finite number, or null (systeminformation reports missing sensors as null, -1 or NaN depending on the source). */
function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function percent(value: unknown): number | null {
  const p = num(value);
  return p === null ? null : Math.round(p * 10) / 10;
}

function temperature(value: unknown): number | null {
  const t = num(value);
  // -1 and 0 are systeminformation's "no reading" on some boards.
  return t === null || t <= 0 ? null : t;
}

export class SystemSampler {
  private readonly probes: { [K in keyof SystemProbes]: TimeBoxed<Awaited<ReturnType<SystemProbes[K]>>> };
  /** The outbox folder's real path: the first step of disk(). */
  private readonly diskDir: TimeBoxed<string>;
  /** What diskDir found at the current sample: the folder fsSize and statfs are asked about. */
  private diskRealPath = '';
  private readonly diskPath: string;
  private readonly timeoutMs: number;

  constructor(options: SystemSamplerOptions) {
    const probes = { ...systemProbes(), ...options.probes };
    const timeoutMs = options.timeoutMs ?? 5000;
    this.timeoutMs = timeoutMs;
    this.diskPath = options.diskPath;
    const box = <K extends keyof SystemProbes>(name: K, call: () => ReturnType<SystemProbes[K]>) =>
      new TimeBoxed(name, call as () => Promise<Awaited<ReturnType<SystemProbes[K]>>>, timeoutMs);
    this.probes = {
      currentLoad: box('currentLoad', () => probes.currentLoad()),
      mem: box('mem', () => probes.mem()),
      cpuTemperature: box('cpuTemperature', () => probes.cpuTemperature()),
      // Both on the folder disk() has just resolved.
      fsSize: box('fsSize', () => probes.fsSize(this.diskRealPath)),
      statfs: box('statfs', () => probes.statfs(this.diskRealPath)),
      networkInterfaces: box('networkInterfaces', () => probes.networkInterfaces()),
      uptimeS: box('uptimeS', () => probes.uptimeS()),
    };
    this.diskDir = new TimeBoxed('disk', async () => realpath(await existingAncestor(this.diskPath)), timeoutMs);
  }

  /** Asks every probe at once; resolves when all have answered, failed or timed out. Never rejects. */
  async sample(): Promise<SystemSample> {
    // The sample's time (sampleMs) includes the library's first import off Linux, as its start-up is part of the
    // first sample.
    const started = performance.now();
    // Loaded (the first time) outside the probes' time boxes: importing the library is not a probe hanging. If it
    // cannot load, each probe that needs it fails, named in `failed`.
    if (!LINUX) await systemInformation().catch(() => undefined);
    const tsMs = Date.now();
    const failed: string[] = [];
    const get = <T>(name: string, outcome: Outcome<T>): T | null => {
      if (outcome.ok) return outcome.value;
      failed.push(`${name}: ${outcome.error}`);
      return null;
    };
    const p = this.probes;
    const [load, mem, temps, disk, nets, uptime] = await Promise.all([
      p.currentLoad.run(),
      p.mem.run(),
      p.cpuTemperature.run(),
      this.disk(),
      p.networkInterfaces.run(),
      p.uptimeS.run(),
    ]);
    const cpu = get('currentLoad', load);
    const memory = get('mem', mem);
    const sensors = get('cpuTemperature', temps);
    const diskSample = get('disk', disk);
    const interfaces = get('networkInterfaces', nets)?.map(describeInterface) ?? null;
    const available = num(memory?.available);
    const total = num(memory?.total);
    return {
      tsMs,
      sampleMs: Math.round(performance.now() - started),
      failed,
      cpuLoadPercent: percent(cpu?.currentLoad),
      cpuUserPercent: percent(cpu?.currentLoadUser),
      cpuSystemPercent: percent(cpu?.currentLoadSystem),
      loadAverage1m: os.loadavg()[0]!,
      cpuCores: os.availableParallelism(),
      memTotalBytes: total,
      memAvailableBytes: available,
      memUsedBytes: total !== null && available !== null ? total - available : null,
      swapTotalBytes: num(memory?.swaptotal),
      swapUsedBytes: num(memory?.swapused),
      cpuTempC: temperature(sensors?.main),
      cpuTempMaxC: temperature(sensors?.max),
      chipsetTempC: temperature(sensors?.chipset),
      coreTempsC: (sensors?.cores ?? []).map(temperature).filter((t): t is number => t !== null),
      disk: diskSample,
      defaultInterface: interfaces?.find((i) => i.default)?.name ?? null,
      interfaces,
      uptimeS: num(get('uptime', uptime)),
    };
  }

  /** Ends the waits of a sample in progress (it resolves at once, the rest null); for the end of a run. */
  close(): void {
    this.diskDir.close();
    for (const probe of Object.values(this.probes)) probe.close();
  }

  /**
   * The filesystem holding diskPath: fsSize's entry with the longest mount point containing it, else statfs. One time
   * box for it all, like any other probe: its steps share the limit. fsSize and statfs are asked at once (statfs is one
   * system call), so a hung fsSize leaves the fallback its answer; one after the other they took twice the limit.
   */
  private async disk(): Promise<Outcome<DiskSample>> {
    const deadline = performance.now() + this.timeoutMs;
    const left = (): number => Math.max(0, deadline - performance.now());
    const where = await this.diskDir.run(left());
    if (!where.ok) return where;
    const dir = where.value;
    this.diskRealPath = dir;
    const [listed, fallback] = await Promise.all([this.probes.fsSize.run(left()), this.probes.statfs.run(left())]);
    if (listed.ok) {
      const mount = listed.value
        .filter((fs) => typeof fs.mount === 'string' && mountContains(fs.mount, dir))
        .sort((a, b) => b.mount.length - a.mount.length)[0];
      if (mount && num(mount.size) !== null && num(mount.available) !== null) {
        return { ok: true, value: diskSample(this.diskPath, mount.mount, mount.fs, mount.size, mount.available) };
      }
    }
    if (fallback.ok) return { ok: true, value: diskSample(this.diskPath, null, null, fallback.value.totalBytes, fallback.value.freeBytes) };
    return { ok: false, error: listed.ok ? fallback.error : `${listed.error}; statfs: ${fallback.error}` };
  }
}

function diskSample(dir: string, mount: string | null, filesystem: string | null, totalBytes: number, freeBytes: number): DiskSample {
  const usedPercent = totalBytes > 0 ? Math.round(((totalBytes - freeBytes) / totalBytes) * 1000) / 10 : 0;
  return { path: dir, mount, filesystem, totalBytes, freeBytes, usedPercent };
}

/** The outbox folder may not exist yet (no data path): its nearest existing ancestor is on the same filesystem. */
async function existingAncestor(dir: string): Promise<string> {
  let current = path.resolve(dir);
  for (;;) {
    try {
      await realpath(current);
      return current;
    } catch {
      const parent = path.dirname(current);
      if (parent === current) return current;
      current = parent;
    }
  }
}

function describeInterface(i: Awaited<ReturnType<SystemProbes['networkInterfaces']>>[number]): InterfaceSample {
  const hasAddress = Boolean(i.ip4 || i.ip6);
  return {
    name: i.iface,
    up: i.operstate === 'up' || (i.operstate === 'unknown' && hasAddress),
    operstate: i.operstate,
    default: i.default === true,
    internal: i.internal === true,
    type: i.type,
    ip4: i.ip4 || null,
    ip6: i.ip6 || null,
    mac: i.mac || null,
    // systeminformation says -1 (or 0) when the driver does not know the link speed.
    speedMbps: (num(i.speed) ?? 0) > 0 ? i.speed : null,
  };
}
