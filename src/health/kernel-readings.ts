/**
 * The host's temperatures and the filesystem holding the outbox, read from the kernel's own files on Linux (sysfs and
 * /proc/self/mountinfo) instead of systeminformation's cpuTemperature() and fsSize(), which run shell commands
 * (`cat` through execSync, a `for` loop over hwmon, `sensors`, `df`): the event loop stood still for tens of ms at
 * every health sample, and a car's frames waited.
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
 * but a broken /proc) rejects, and the sampler falls back to statfs alone.
 */
import { readdir, readFile, statfs } from 'node:fs/promises';
import path from 'node:path';

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
}

export const KERNEL_ROOTS: KernelRoots = { sys: '/sys', mountinfo: '/proc/self/mountinfo' };

async function text(file: string): Promise<string | null> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    return null;
  }
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

export async function kernelTemperatures(roots: KernelRoots = KERNEL_ROOTS): Promise<KernelTemperatures> {
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
export async function kernelFilesystem(dir: string, roots: KernelRoots = KERNEL_ROOTS): Promise<KernelFilesystem> {
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
