/**
 * The host's values from the kernel's files (src/health/kernel-readings.ts): memory against systeminformation's on
 * this machine, CPU load against a spinning process, and the arithmetic on /proc files written by the test (an old kernel without
 * MemAvailable, garbage); the outbox's filesystem against this machine's own mounts, compared with `df` and
 * systeminformation's fsSize(); temperatures, since this VM has no sensors, against
 * sysfs trees laid out as the kernel lays them out on an Intel PC (coretemp), an AMD one (k10temp) and an ARM head
 * unit (thermal zones only), with garbage where a broken driver leaves it.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import si from 'systeminformation';
import { cpuLoadReader, kernelFilesystem, kernelMemory, kernelTemperatures, mountContains } from '../../src/health/kernel-readings.js';
import { makeTempDir } from '../support/temp.js';

/** A sysfs-like tree: `files` maps paths under the root to their contents. */
function sysTree(files: Record<string, string>): string {
  const root = makeTempDir('sysfs-');
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(root, name);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, `${content}\n`);
  }
  return root;
}

const temperaturesIn = (files: Record<string, string>) => kernelTemperatures({ sys: sysTree(files) });

describe('kernel readings', () => {
  it('memory: what systeminformation reads from /proc/meminfo; an old kernel without MemAvailable; no MemTotal is an error', async () => {
    const [mine, theirs] = await Promise.all([kernelMemory(), si.mem()]);
    assert.deepEqual({ total: mine.total, swaptotal: mine.swaptotal }, { total: theirs.total, swaptotal: theirs.swaptotal });
    // Read a moment apart while other tests run: within 256 MiB.
    assert.ok(Math.abs(mine.available - theirs.available) < 256 * 2 ** 20, `${mine.available} and ${theirs.available}`);
    const meminfo = path.join(makeTempDir('meminfo-'), 'meminfo');
    writeFileSync(
      meminfo,
      'MemTotal:        1000 kB\nMemFree:          100 kB\nBuffers:           20 kB\nCached:           300 kB\nSReclaimable:      30 kB\nActive(anon):      5 kB\nSwapTotal:        400 kB\nSwapFree:         150 kB\n',
    );
    assert.deepEqual(await kernelMemory({ meminfo }), { total: 1000 * 1024, available: 450 * 1024, swaptotal: 400 * 1024, swapused: 250 * 1024 });
    writeFileSync(meminfo, 'garbage\n');
    await assert.rejects(kernelMemory({ meminfo }), /has no MemTotal/);
  });

  it("CPU load: the non-idle share of the CPUs' time since the previous reading; on this machine, at least a CPU's share while this process spins", async () => {
    const stat = path.join(makeTempDir('stat-'), 'stat');
    // user nice system idle iowait irq softirq steal guest guest_nice
    writeFileSync(stat, 'cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\n');
    const read = cpuLoadReader({ stat });
    assert.deepEqual(await read(), { currentLoad: 15, currentLoadUser: 10, currentLoadSystem: 5 }, 'since boot');
    writeFileSync(stat, 'cpu  160 20 70 880 60 5 5 0 10 0\n');
    // 200 ticks later: 60 user + 20 nice + 20 system + 5 irq + 5 softirq busy, 80 idle + 10 iowait not.
    assert.deepEqual(await read(), { currentLoad: 55, currentLoadUser: 30, currentLoadSystem: 10 });
    assert.deepEqual(await read(), { currentLoad: 0, currentLoadUser: 0, currentLoadSystem: 0 }, 'no time passed');
    writeFileSync(stat, 'intr 1 2 3\n');
    await assert.rejects(read(), /does not start with the CPUs' line/);
    writeFileSync(stat, 'cpu  a b c d\n');
    await assert.rejects(read(), /not numbers/);
    // This machine, over half a second with this process spinning: a CPU cannot be idle while a process is runnable on
    // it, so at least one CPU's worth of the time was busy, whatever else runs (give or take a tick of 10 ms at each
    // end). systeminformation is no referee here: it leaves I/O wait out of the total (os.cpus() has no such column),
    // so with other tests writing to disk it says 100 % where a share of the time was idle.
    const live = cpuLoadReader();
    await live();
    const until = performance.now() + 500;
    while (performance.now() < until);
    const mine = await live();
    const oneCpu = 100 / availableParallelism();
    assert.ok(mine.currentLoad >= oneCpu * 0.9 && mine.currentLoad <= 100, `${mine.currentLoad} % with one of ${availableParallelism()} CPUs busy`);
    assert.ok(mine.currentLoadUser + mine.currentLoadSystem <= mine.currentLoad + 1e-9, JSON.stringify(mine));
  });

  it("the outbox folder's filesystem: the mount df names, with df's size and free space", async () => {
    const dir = realpathSync(makeTempDir('kernel-fs-'));
    const mine = await kernelFilesystem(dir);
    // df -kPT: Filesystem Type 1024-blocks Used Available Capacity Mounted-on
    const line = execFileSync('df', ['-kPT', dir], { encoding: 'utf8' }).trim().split('\n').at(-1)!.split(/\s+/);
    assert.deepEqual(
      { fs: mine.fs, type: mine.type, mount: mine.mount, sizeKiB: mine.size / 1024 },
      { fs: line[0], type: line[1], mount: line[6], sizeKiB: Number(line[2]) },
    );
    // Free space moves while other tests write: within 64 MiB of df's.
    assert.ok(Math.abs(mine.available / 1024 - Number(line[4])) < 65_536, `${mine.available / 1024} KiB and df's ${line[4]}`);
    const theirs = (await si.fsSize()).filter((f) => mountContains(f.mount, dir)).sort((a, b) => b.mount.length - a.mount.length)[0];
    assert.ok(theirs, "systeminformation lists the folder's filesystem");
    assert.deepEqual(
      { fs: mine.fs, type: mine.type, mount: mine.mount, size: mine.size },
      { fs: theirs.fs, type: theirs.type, mount: theirs.mount, size: theirs.size },
    );
  });

  it('reads escaped mount points, prefers the longest and the later of two equal ones, and says so when none holds the folder', async () => {
    const dir = realpathSync(makeTempDir('kernel-fs-'));
    const mountinfo = path.join(makeTempDir('mountinfo-'), 'mountinfo');
    const spaced = `${dir}/with space`;
    mkdirSync(spaced);
    writeFileSync(
      mountinfo,
      [
        '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/mmcblk0p2 rw',
        `30 22 0:40 / ${dir} rw,relatime - tmpfs tmpfs rw`,
        `31 22 8:3 / ${dir}/with\\040space rw,relatime shared:7 master:1 - f2fs /dev/mmcblk0p3 rw`,
        `32 22 8:4 / ${dir}/with\\040space rw,relatime - ext4 /dev/sda\\0401 rw`,
        'garbage that is not a mountinfo line',
        '',
      ].join('\n'),
    );
    const roots = { mountinfo };
    assert.deepEqual(await kernelFilesystem(spaced, roots).then((m) => ({ fs: m.fs, type: m.type, mount: m.mount })), {
      fs: '/dev/sda 1',
      type: 'ext4',
      mount: spaced,
    });
    assert.deepEqual(await kernelFilesystem(`${dir}`, roots).then((m) => ({ fs: m.fs, type: m.type, mount: m.mount })), {
      fs: 'tmpfs',
      type: 'tmpfs',
      mount: dir,
    });
    // `/variable` is not under a `/var` mount, only under `/`.
    assert.equal(mountContains('/var', '/variable'), false);
    assert.equal(mountContains('/var', '/var/lib'), true);
    writeFileSync(mountinfo, `30 22 0:40 / /elsewhere rw - tmpfs tmpfs rw\n`);
    await assert.rejects(kernelFilesystem(dir, roots), /no mount in .* holds/);
  });

  it('an Intel PC (coretemp): the package is the CPU, the cores are listed, the hottest is the maximum; the PCH zone is the chipset', async () => {
    assert.deepEqual(
      await temperaturesIn({
        'class/hwmon/hwmon1/name': 'coretemp',
        'class/hwmon/hwmon1/temp1_label': 'Package id 0',
        'class/hwmon/hwmon1/temp1_input': '48000',
        'class/hwmon/hwmon1/temp2_label': 'Core 0',
        'class/hwmon/hwmon1/temp2_input': '45000',
        'class/hwmon/hwmon1/temp3_label': 'Core 1',
        'class/hwmon/hwmon1/temp3_input': '51250',
        // A labelled sensor of another chip (the NVMe) is neither.
        'class/hwmon/hwmon0/temp1_label': 'Composite',
        'class/hwmon/hwmon0/temp1_input': '38850',
        'class/thermal/thermal_zone0/type': 'acpitz',
        'class/thermal/thermal_zone0/temp': '27800',
        'class/thermal/thermal_zone1/type': 'pch_cannonlake',
        'class/thermal/thermal_zone1/temp': '52000',
      }),
      { main: 48, max: 51.3, cores: [45, 51.3], chipset: 52 },
    );
  });

  it("an AMD PC (k10temp): Tctl is the CPU; without a package the cores' mean is", async () => {
    assert.deepEqual(
      await temperaturesIn({
        'class/hwmon/hwmon2/temp1_label': 'Tctl',
        'class/hwmon/hwmon2/temp1_input': '61375',
        'class/hwmon/hwmon2/temp3_label': 'Tccd1',
        'class/hwmon/hwmon2/temp3_input': '55000',
      }),
      { main: 61.4, max: 61.4, cores: [], chipset: null },
    );
    assert.deepEqual(
      await temperaturesIn({
        'class/hwmon/hwmon0/temp2_label': 'Core 0',
        'class/hwmon/hwmon0/temp2_input': '40000',
        'class/hwmon/hwmon0/temp3_label': 'Core 1',
        'class/hwmon/hwmon0/temp3_input': '43000',
      }),
      { main: 41.5, max: 43, cores: [40, 43], chipset: null },
    );
  });

  it("an ARM head unit: the first thermal zone that names a CPU; a broken driver's garbage and a missing sysfs are no reading, not an error", async () => {
    assert.deepEqual(
      await temperaturesIn({
        'class/thermal/thermal_zone0/type': 'gpu-thermal',
        'class/thermal/thermal_zone0/temp': '39000',
        'class/thermal/thermal_zone1/type': 'cpu-thermal',
        'class/thermal/thermal_zone1/temp': '56400',
        'class/thermal/thermal_zone2/type': 'cpu1-thermal',
        'class/thermal/thermal_zone2/temp': '58000',
        'class/thermal/cooling_device0/type': 'cpu-cooler',
      }),
      { main: 56.4, max: 56.4, cores: [], chipset: null },
    );
    assert.deepEqual(
      await temperaturesIn({
        'class/hwmon/hwmon0/temp1_label': 'Core 0',
        'class/hwmon/hwmon0/temp1_input': 'No data available',
        'class/hwmon/hwmon0/temp2_label': 'Package id 0',
        'class/hwmon/hwmon0/temp2_input': '-273000',
        'class/thermal/thermal_zone0/type': 'cpu-thermal',
        'class/thermal/thermal_zone0/temp': '',
      }),
      { main: null, max: null, cores: [], chipset: null },
    );
    assert.deepEqual(await kernelTemperatures({ sys: path.join(makeTempDir('no-sysfs-'), 'absent') }), {
      main: null,
      max: null,
      cores: [],
      chipset: null,
    });
  });
});
