/**
 * The host sampler against this machine (real systeminformation, real filesystem), and with probes that fail or hang
 * as they do on head units: each is time-boxed, reported null and named, and a hung one is not called again.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import si from 'systeminformation';
import { SystemSampler, systemProbes, type SystemProbes } from '../../src/health/system.js';
import { makeTempDir } from '../support/temp.js';
import { delay } from '../support/wait.js';

/**
 * Awaits a sample while holding the process: the probes' waits are unref'd (they must not keep a finished run alive),
 * and in the agent the run's own handles (sources, sockets, timers) are what keeps it up meanwhile.
 */
async function held<T>(sample: Promise<T>): Promise<T> {
  const keep = setInterval(() => undefined, 1000);
  try {
    return await sample;
  } finally {
    clearInterval(keep);
  }
}

describe('system sampler', () => {
  it("[19.wakeup] the interfaces and the uptime, read from the kernel's files, are what systeminformation reports through its child processes", async () => {
    const fields = (list: Awaited<ReturnType<SystemProbes['networkInterfaces']>>) =>
      list.map(({ iface, default: isDefault, ip4, ip6, mac, internal, operstate, type, speed }) => ({
        iface,
        isDefault,
        ip4,
        ip6,
        mac,
        internal,
        operstate,
        type,
        speed,
      }));
    const theirs = await si.networkInterfaces();
    assert.deepEqual(fields(await systemProbes().networkInterfaces()), fields(Array.isArray(theirs) ? theirs : [theirs]));
    // Both are the kernel's uptime, read a moment apart.
    const uptimeS = await systemProbes().uptimeS();
    assert.ok(Math.abs(uptimeS - si.time().uptime) < 5, `${uptimeS} s and ${si.time().uptime} s`);
  });

  it('samples this host: uptime, memory, the free space of the outbox folder, at least one interface; and says how long it took', async () => {
    const dir = makeTempDir('health-system-');
    const outboxDir = path.join(dir, 'var');
    mkdirSync(outboxDir);
    const sampler = new SystemSampler({ diskPath: outboxDir });
    const durations: number[] = [];
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const s = await sampler.sample();
      durations.push(performance.now() - started);
      assert.deepEqual(s.failed, [], s.failed.join('; '));
      assert.ok(s.uptimeS !== null && s.uptimeS > 0, `uptime ${s.uptimeS}`);
      assert.ok(s.memTotalBytes !== null && s.memTotalBytes > 0);
      assert.ok(s.memAvailableBytes !== null && s.memAvailableBytes > 0 && s.memAvailableBytes <= s.memTotalBytes);
      assert.equal(s.memUsedBytes, s.memTotalBytes - s.memAvailableBytes);
      assert.ok(s.cpuLoadPercent !== null && s.cpuLoadPercent >= 0 && s.cpuLoadPercent <= 100, `cpu ${s.cpuLoadPercent}`);
      assert.ok(s.cpuCores >= 1);
      assert.ok(s.disk, 'the outbox filesystem');
      assert.equal(s.disk.path, outboxDir);
      assert.ok(s.disk.freeBytes > 0 && s.disk.freeBytes <= s.disk.totalBytes, JSON.stringify(s.disk));
      assert.ok(s.interfaces && s.interfaces.length >= 1, JSON.stringify(s.interfaces));
      assert.ok(
        s.interfaces.some((i) => i.up),
        'an interface is up',
      );
      if (s.defaultInterface !== null) assert.ok(s.interfaces.some((i) => i.name === s.defaultInterface && i.default));
      // Sensors a container or VM lacks are null, never 0 or -1.
      for (const t of [s.cpuTempC, s.cpuTempMaxC, s.chipsetTempC, ...s.coreTempsC]) assert.ok(t === null || (t > 0 && t < 150), String(t));
      assert.ok(s.sampleMs >= 0 && Math.abs(s.sampleMs - durations[i]!) < 50, `${s.sampleMs} ms reported, ${durations[i]} ms measured`);
    }
    console.log(`system sample: ${durations.map((d) => `${d.toFixed(0)} ms`).join(', ')} (the first includes systeminformation's start-up)`);
    // The later samples are what a running agent pays at each interval.
    assert.ok(durations[2]! < 3000, `${durations[2]} ms`);
  });

  it('a folder that does not exist yet is reported by its nearest existing ancestor', async () => {
    const dir = makeTempDir('health-system-');
    const s = await new SystemSampler({ diskPath: path.join(dir, 'not', 'yet') }).sample();
    assert.ok(s.disk && s.disk.freeBytes > 0);
  });

  it('a failing probe and a hanging one: null fields, named in failed, the others still reported; the hung one is not called again', async () => {
    let temperatureCalls = 0;
    let releaseHang!: () => void;
    const probes: Partial<SystemProbes> = {
      cpuTemperature: () => {
        temperatureCalls++;
        return new Promise((resolve) => {
          releaseHang = () => resolve({ main: 55, max: 60, cores: [54, 56] });
        });
      },
      mem: () => Promise.reject(new Error('/proc/meminfo: permission denied')),
      fsSize: () => Promise.reject(new Error('df: not found')),
      networkInterfaces: () => {
        throw new Error('synchronous failure');
      },
    };
    const dir = makeTempDir('health-system-');
    const sampler = new SystemSampler({ diskPath: dir, timeoutMs: 300, probes });
    const started = performance.now();
    const first = await held(sampler.sample());
    const tookMs = performance.now() - started;
    assert.ok(tookMs >= 280 && tookMs < 2000, `${tookMs} ms: bounded by the timeout`);
    assert.deepEqual(first.failed.sort(), [
      'cpuTemperature: timed out after 300 ms',
      'mem: /proc/meminfo: permission denied',
      'networkInterfaces: synchronous failure',
    ]);
    assert.equal(first.memTotalBytes, null);
    assert.equal(first.memUsedBytes, null);
    assert.equal(first.cpuTempC, null);
    assert.equal(first.interfaces, null);
    assert.equal(first.defaultInterface, null);
    // fsSize failed: the statfs fallback answers, without a mount point.
    assert.ok(first.disk && first.disk.freeBytes > 0 && first.disk.mount === null, JSON.stringify(first.disk));
    assert.ok(first.uptimeS !== null && first.uptimeS > 0);
    assert.ok(first.cpuLoadPercent !== null);

    const second = await held(sampler.sample());
    assert.ok(second.failed.includes('cpuTemperature: still running since an earlier sample'), second.failed.join('; '));
    assert.equal(temperatureCalls, 1);

    releaseHang();
    await new Promise((resolve) => setImmediate(resolve));
    const third = await held(sampler.sample());
    assert.equal(temperatureCalls, 2, 'asked again once the hung call ended');
    assert.ok(
      third.failed.some((f) => f.startsWith('cpuTemperature: timed out')),
      'the new call hangs too',
    );

    // At the end of a run, a sample waiting on a hung probe ends at once.
    const closing = new SystemSampler({ diskPath: dir, timeoutMs: 60_000, probes: { cpuTemperature: () => new Promise(() => undefined) } });
    const pending = held(closing.sample());
    await delay(50);
    const closedAt = performance.now();
    closing.close();
    const last = await pending;
    assert.ok(performance.now() - closedAt < 1000);
    assert.ok(last.failed.includes('cpuTemperature: sampler closed'), last.failed.join('; '));
  });

  it('the disk is one time box: fsSize and statfs both hung, or fsSize hung with statfs answering, the sample stays within the limit', async () => {
    const hang = () => new Promise<never>(() => undefined);
    const dir = makeTempDir('health-system-');
    // Two time boxes one after the other would take 2 × limit; the slack is for a busy machine, and stays below that.
    const limitMs = 2000;
    const slackMs = 1800;
    const calls = { statfs: 0 };
    const both = new SystemSampler({ diskPath: dir, timeoutMs: limitMs, probes: { fsSize: hang, statfs: () => (calls.statfs++, hang()) } });
    const stuck = await held(both.sample());
    assert.ok(stuck.sampleMs >= limitMs - 10 && stuck.sampleMs < limitMs + slackMs, `${stuck.sampleMs} ms for a ${limitMs} ms limit`);
    assert.equal(stuck.disk, null);
    assert.deepEqual(
      stuck.failed.filter((f) => f.startsWith('disk')),
      [`disk: timed out after ${limitMs} ms; statfs: timed out after ${limitMs} ms`],
    );

    // fsSize hung, statfs answers: the disk from statfs, and still within the one limit. A longer limit here: the real
    // statfs (two thread-pool calls) must answer inside it, and a loaded machine can stall the process past 1 s, after
    // which the expired timer runs before the answer that came meanwhile.
    const statfsLimitMs = 3000;
    const slow = new SystemSampler({ diskPath: dir, timeoutMs: statfsLimitMs, probes: { fsSize: hang } });
    const partly = await held(slow.sample());
    assert.ok(partly.sampleMs < statfsLimitMs + slackMs, `${partly.sampleMs} ms for a ${statfsLimitMs} ms limit`);
    assert.ok(partly.disk && partly.disk.freeBytes > 0 && partly.disk.mount === null, JSON.stringify(partly.disk));

    // Closed during a sample: the wait ends at once, and no probe is started again (no fresh timer after close).
    const pending = held(both.sample());
    await delay(20);
    both.close();
    const startedAt = performance.now();
    const closed = await pending;
    assert.ok(performance.now() - startedAt < 500, 'well before the limit');
    assert.equal(closed.disk, null);
    const before = calls.statfs;
    const after = await both.sample();
    assert.ok(after.sampleMs < 500, `${after.sampleMs} ms after close`);
    assert.equal(calls.statfs, before, 'statfs not called once closed');
    assert.ok(after.failed.includes('disk: sampler closed'), after.failed.join('; '));
  });
});
