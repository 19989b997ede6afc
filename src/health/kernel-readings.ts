/**
 * The host's CPU load, memory, temperatures and the filesystem holding the outbox, read from the kernel's own files on
 * Linux (/proc/stat, /proc/meminfo, sysfs, /proc/self/mountinfo) instead of systeminformation, which runs shell
 * commands for most of them (`cat /proc/stat` and `cat` of the thermal zones through execSync, a `for` loop over
 * hwmon, `sensors`, `df`): the event loop stood still for tens of ms at every health sample, and a car's frames
 * waited. Not loading systeminformation at all also keeps some 12 MB out of the agent's resident memory.
 *
 * CPU load: the share of all CPUs' time since the previous reading (the first: since boot) that was not idle or
 * waiting for I/O; user and system are the `user` and `system` columns' shares (guest time is part of `user`).
 * Memory: MemTotal and MemAvailable (before Linux 3.14, without MemAvailable: MemFree + Buffers + Cached +
 * SReclaimable), swap used = SwapTotal - SwapFree.
 *
 * Temperatures follow the rules systeminformation applies to the same files, so a report does not change meaning:
 * - hwmon sensors by label (`/sys/class/hwmon/hwmon*\/temp*_label` and `_input`, millidegrees): `Core n` are the
 *   cores; the CPU is AMD's `Tdie` or `Tctl`, else Intel's `Package id n` / `Physical id n`, or `Tccd1`, else the
 *   cores' mean;
 * - thermal zones (`/sys/class/thermal/thermal_zone*\/type` and `temp`): the first whose type names a CPU
 *   (`cpu-thermal` on many ARM head units) when hwmon has none; a `pch*` zone is the chipset.
 * `max` is the hottest of the cores and the CPU reading. Nothing found: every field null, no error (many boards have
 * no sensor the kernel knows). Unreadable or garbled files count as absent.
 *
 * The filesystem: the mount with the longest mount point containing the folder (/proc/self/mountinfo, as `df` finds
 * it), its size and free space from statfs(2) on the folder. A folder no mount contains (cannot happen on Linux,
 * but a broken /proc) rejects, and the sampler falls back to statfs alone. An unreadable /proc/stat or /proc/meminfo
 * rejects too (the sample's field is then null and named in `failed`).
 */
import { readdir, readFile, statfs } from 'node:fs/promises';
import path from 'node:path';
import { kernelText } from '../uplink/network-identity.js';

export interface KernelTemperatures {
  main: number | null;
  max: number | null;
  cores: number[];
  chipset: number | null;
}

export interface KernelFilesystem {
  /** The mount's source (`/dev/mmcblk0p3`). */
  fs: string;
  /** Its type (`ext4`, `f2fs`, `tmpfs`). */
  type: string;
  /** Where it is mounted. */
  mount: string;
  size: number;
  available: number;
}

/** Where the kernel's files are: `/sys` and `/proc` on a car; a test's folder tree otherwise. */
export interface KernelRoots {
  sys: string;
  mountinfo: string;
  stat: string;
  meminfo: string;
}

export const KERNEL_ROOTS: KernelRoots = { sys: '/sys', mountinfo: '/proc/self/mountinfo', stat: '/proc/stat', meminfo: '/proc/meminfo' };

export interface KernelCpuLoad {
  /** Percent of all CPUs' time, not rounded. */
  currentLoad: number;
  currentLoadUser: number;
  currentLoadSystem: number;
}

export interface KernelMemory {
  total: number;
  available: number;
  swaptotal: number;
  swapused: number;
}

interface CpuTicks {
  total: number;
  busy: number;
  user: number;
  system: number;
}

/**
 * A CPU load reader: each call gives the load since its previous call (the first: since boot). One per sampler, so
 * two samplers do not shorten each other's interval.
 */
export function cpuLoadReader(roots: Pick<KernelRoots, 'stat'> = KERNEL_ROOTS): () => Promise<KernelCpuLoad> {
  let previous: CpuTicks = { total: 0, busy: 0, user: 0, system: 0 };
  return async () => {
    const line = (await readFile(roots.stat, 'utf8')).split('\n', 1)[0]!;
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice (USER_HZ ticks, all CPUs together)
    const fields = line.trim().split(/\s+/);
    if (fields[0] !== 'cpu' || fields.length < 5) throw new Error(`${roots.stat} does not start with the CPUs' line: '${line.slice(0, 80)}'`);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields.slice(1, 9).map(Number);
    const ticks: CpuTicks = { busy: user + nice + system + irq + softirq + steal, total: 0, user, system };
    ticks.total = ticks.busy + idle + iowait;
    if (!Number.isFinite(ticks.total)) throw new Error(`${roots.stat}: the CPUs' line is not numbers: '${line.slice(0, 80)}'`);
    const span = ticks.total - previous.total;
    const share = (now: number, before: number): number => (span > 0 ? ((now - before) * 100) / span : 0);
    const load = {
      currentLoad: share(ticks.busy, previous.busy),
      currentLoadUser: share(ticks.user, previous.user),
      currentLoadSystem: share(ticks.system, previous.system),
    };
    previous = ticks;
    return load;
  };
}

export async function kernelMemory(roots: Pick<KernelRoots, 'meminfo'> = KERNEL_ROOTS): Promise<KernelMemory> {
  const kib = new Map<string, number>();
  for (const line of (await readFile(roots.meminfo, 'utf8')).split('\n')) {
    const match = /^(\w+(?:\(\w+\))?):\s+(\d+)/.exec(line);
    if (match) kib.set(match[1]!, Number(match[2]));
  }
  const total = kib.get('MemTotal');
  if (total === undefined) throw new Error(`${roots.meminfo} has no MemTotal`);
  const of = (name: string): number => kib.get(name) ?? 0;
  const available = kib.get('MemAvailable') ?? of('MemFree') + of('Buffers') + of('Cached') + of('SReclaimable');
  return { total: total * 1024, available: available * 1024, swaptotal: of('SwapTotal') * 1024, swapused: (of('SwapTotal') - of('SwapFree')) * 1024 };
}

/** A sysfs file's text, trimmed; null when it cannot be read or is empty. */
async function text(file: string): Promise<string | null> {
  return (await kernelText(file)).trim() || null;
}

async function entries(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort(naturalOrder);
  } catch {
    return [];
  }
}

/** hwmon0, hwmon1, ..., hwmon10 (not hwmon10 before hwmon2). */
function naturalOrder(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** Millidegrees Celsius as degrees to a tenth; null for anything that is not a plausible reading. */
function degrees(millidegrees: string | null): number | null {
  if (millidegrees === null || !/^-?\d+$/.test(millidegrees)) return null;
  const value = Math.round(Number(millidegrees) / 100) / 10;
  return value > 0 && value < 200 ? value : null;
}

export async function kernelTemperatures(roots: Pick<KernelRoots, 'sys'> = KERNEL_ROOTS): Promise<KernelTemperatures> {
  const hwmonDir = path.join(roots.sys, 'class/hwmon');
  const labelled: { label: string; value: number }[] = [];
  for (const hwmon of await entries(hwmonDir)) {
    const dir = path.join(hwmonDir, hwmon);
    for (const file of await entries(dir)) {
      const match = /^(temp\d+)_label$/.exec(file);
      if (!match) continue;
      const [label, input] = await Promise.all([text(path.join(dir, file)), text(path.join(dir, `${match[1]}_input`))]);
      const value = degrees(input);
      if (label !== null && value !== null) labelled.push({ label: label.toLowerCase(), value });
    }
  }
  const cores = labelled.filter((s) => s.label.startsWith('core')).map((s) => s.value);
  const named = (test: (label: string) => boolean): number | null => labelled.find((s) => test(s.label))?.value ?? null;
  let main =
    named((l) => l === 'tdie') ??
    named((l) => l === 'tctl') ??
    named((l) => l.includes('package') || l.includes('physical') || l === 'tccd1') ??
    (cores.length > 0 ? Math.round((cores.reduce((sum, c) => sum + c, 0) / cores.length) * 10) / 10 : null);

  let chipset: number | null = null;
  const thermalDir = path.join(roots.sys, 'class/thermal');
  for (const zone of (await entries(thermalDir)).filter((name) => name.startsWith('thermal_zone'))) {
    const [type, temp] = await Promise.all([text(path.join(thermalDir, zone, 'type')), text(path.join(thermalDir, zone, 'temp'))]);
    const value = degrees(temp);
    if (type === null || value === null) continue;
    const kind = type.toLowerCase();
    if (kind.startsWith('pch')) chipset ??= value;
    if (main === null && kind.includes('cpu')) main = value;
  }
  const max = main === null && cores.length === 0 ? null : Math.max(...cores, main ?? -Infinity);
  return { main, max, cores, chipset };
}

/** `\040` and the other octal escapes mountinfo writes for spaces, tabs, newlines and backslashes. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** `mount` is `dir` or one of its ancestors, on path boundaries (/var does not hold /variable). */
export function mountContains(mount: string, dir: string): boolean {
  if (mount === '/' || mount === dir) return true;
  return dir.startsWith(mount.endsWith('/') ? mount : `${mount}/`);
}

/** The mount holding `dir` (a real path) and its size and free space. */
export async function kernelFilesystem(dir: string, roots: Pick<KernelRoots, 'mountinfo'> = KERNEL_ROOTS): Promise<KernelFilesystem> {
  const table = await readFile(roots.mountinfo, 'utf8');
  let best: { fs: string; type: string; mount: string } | null = null;
  for (const line of table.split('\n')) {
    // id parent major:minor root mountpoint options [optional fields...] - type source superoptions
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (fields.length < 10 || separator < 0 || separator + 2 >= fields.length) continue;
    const mount = unescapeMountField(fields[4]!);
    if (!mountContains(mount, dir)) continue;
    // The longest wins; of equal ones the later, as the later mount hides the earlier.
    if (best === null || mount.length >= best.mount.length) {
      best = { mount, type: fields[separator + 1]!, fs: unescapeMountField(fields[separator + 2]!) };
    }
  }
  if (best === null) throw new Error(`no mount in ${roots.mountinfo} holds ${dir}`);
  const numbers = await statfs(dir);
  return { ...best, size: numbers.blocks * numbers.bsize, available: numbers.bavail * numbers.bsize };
}
