/**
 * The health report of a whole running agent (in-process: the demo car on a sim bus, an ELM327 adapter on a
 * pseudo-terminal, the data path with its SQLite outbox, the uplink to a real mosquitto), as the fleet backend receives
 * it on vehicles/<deviceId>/health at the configured interval.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PACKAGE_VERSION } from '../../src/agent/package-version.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import type { HealthReport } from '../../src/health/report.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { startBroker } from '../support/broker-fixture.js';
import { elmOnPty } from '../support/elm327.js';
import { makeTempDir } from '../support/temp.js';

/** The documented shape (docs/health.md): a field added there is added here. */
const REPORT_KEYS = ['version', 'deviceId', 'seq', 'tsMs', 'intervalS', 'periodS', 'system', 'agent'];
const SYSTEM_KEYS = [
  'tsMs',
  'sampleMs',
  'failed',
  'cpuLoadPercent',
  'cpuUserPercent',
  'cpuSystemPercent',
  'loadAverage1m',
  'cpuCores',
  'memTotalBytes',
  'memAvailableBytes',
  'memUsedBytes',
  'swapTotalBytes',
  'swapUsedBytes',
  'cpuTempC',
  'cpuTempMaxC',
  'chipsetTempC',
  'coreTempsC',
  'disk',
  'defaultInterface',
  'interfaces',
  'uptimeS',
];
const AGENT_KEYS = [
  'version',
  'processUptimeS',
  'rssBytes',
  'heapUsedBytes',
  'buses',
  'framesPerS',
  'decodeErrors',
  'obd',
  'gnss',
  'collector',
  'outbox',
  'uplink',
  'certificate',
  'commands',
  'lastError',
];

describe('health report over the uplink', () => {
  it(
    'reaches vehicles/<id>/health every second (intervalS 1) with the host and the agent: ~294 frames/s, OBD answers, outbox, link, certificate',
    { timeout: 90_000 },
    async (t) => {
      const fleet = await startBroker();
      const { pki, broker, backend } = fleet;
      const elm = await elmOnPty();
      t.after(async () => {
        await fleet.close();
        await elm.close();
      });
      const arrivals: number[] = [];
      let bornAt: number | undefined;
      // At this interval each host probe has 0.5 s, which a busy machine's samples can overrun (their fields are null
      // then, and `failed` names them): the run goes on until a report had every probe answer.
      let completeSample = false;
      backend.client.on('message', (topic, payload) => {
        if (topic === `vehicles/${deviceId}/status`) bornAt ??= performance.now();
        if (topic !== `vehicles/${deviceId}/health`) return;
        arrivals.push(performance.now());
        const { system } = JSON.parse(payload.toString('utf8')) as HealthReport;
        if (system.failed.length === 0 && system.disk !== null) completeSample = true;
      });

      const dir = makeTempDir('health-report-');
      const deviceId = 'car-health';
      const config = parseDeviceConfig(
        {
          deviceId,
          buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } }],
          obdAdapters: [{ name: 'obd', port: elm.path, pids: [{ pid: 'rpm', intervalMs: 200 }] }],
          status: { intervalMs: 1000, signals: ['VehicleSpeed'] },
          collection: {
            batch: { maxSamples: 50, maxDelayMs: 300 },
            rules: [{ name: 'speed', mode: 'periodic', intervalMs: 100, signals: ['VehicleSpeed', 'EngineSpeed'] }],
          },
          outbox: { path: 'var/outbox.db', writeIntervalMs: 100 },
          uplink: { url: broker.url, ...pki.identityFiles(deviceId), reconnect: { initialMs: 100, maxMs: 500 } },
          health: { intervalS: 1, http: { enabled: false } },
        },
        { file: 'health.json', baseDir: dir },
      );
      const agent = await InProcessAgent.start(config);
      const warnings = agent.log;
      try {
        await backend.waitFor(
          () => backend.on(deviceId, 'health').length >= 6 && completeSample,
          'six health reports, one with every host probe answered',
          60_000,
        );
      } finally {
        agent.stop();
      }
      const summary = await agent.close();
      assert.ok(!warnings.some((w) => w.startsWith('health:')), warnings.join('\n'));

      const messages = backend.on(deviceId, 'health');
      for (const m of messages) {
        // QoS 1 while connected. Published retained ([18.fleet]: a late subscriber gets the latest), but forwarded to a
        // subscription made before, as here, without the flag (MQTT: retain is set only on delivery at subscribe).
        assert.equal(m.retain, false);
        assert.equal(m.qos, 1);
      }
      const reports = messages.map((m) => JSON.parse(m.payload.toString('utf8')) as HealthReport);
      for (const r of reports) {
        assert.deepEqual(Object.keys(r), REPORT_KEYS);
        assert.deepEqual(Object.keys(r.system), SYSTEM_KEYS);
        assert.deepEqual(Object.keys(r.agent), AGENT_KEYS);
        assert.equal(r.version, 1);
        assert.equal(r.deviceId, deviceId);
        assert.equal(r.intervalS, 1);
        assert.equal(r.agent.version, PACKAGE_VERSION);
      }

      // One per second: consecutive sequence numbers, timestamps on the one-second cadence. On a busy machine a slot
      // that passed while the previous report was still sampling the host is skipped, never run late beside the next:
      // a gap is a whole number of intervals, give or take a late timer, and never much less than one.
      const seqs = reports.map((r) => r.seq);
      for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1]! + 1, `seq ${seqs.join(', ')}`);
      for (let i = 1; i < reports.length; i++) {
        const gap = reports[i]!.tsMs - reports[i - 1]!.tsMs;
        assert.ok(gap > 400 && Math.abs(gap - Math.max(1, Math.round(gap / 1000)) * 1000) < 600, `report ${i}: ${gap} ms after the previous`);
      }
      const first = reports[0]!;
      const last = reports.at(-1)!;
      const meanMs = (last.tsMs - first.tsMs) / (last.seq - first.seq);
      assert.ok(meanMs > 900, `mean spacing ${meanMs} ms`);
      const arrivalMean = (arrivals.at(-1)! - arrivals[0]!) / (arrivals.length - 1);
      assert.ok(arrivalMean > 700, `received every ${arrivalMean} ms`);
      // The first report goes out in the first slot after the connection (the birth message): an interval, the host's
      // sample (at most 0.5 s here) and a late timer after it.
      assert.ok(bornAt !== undefined && arrivals[0]! - bornAt < 5000, `the first report ${arrivals[0]! - bornAt!} ms after the birth message`);

      for (const [k, r] of reports.entries()) {
        // Rates cover the period since the previous report.
        assert.ok(r.periodS !== null && r.periodS > 0.4 && r.periodS < 10, `periodS ${r.periodS}`);
        const bus = r.agent.buses[0]!;
        assert.equal(bus.name, 'can0');
        assert.equal(bus.source, 'sim');
        // The demo DBC's cycle times add up to 294 frames per second. One period's count is off when the simulator ran
        // late just before a report (the next one has the frames it caught up with); the overall rate is checked below.
        assert.ok(bus.framesPerS !== null && bus.framesPerS > 150 && bus.framesPerS < 450, `${bus.framesPerS} frames/s`);
        assert.ok(bus.signalsPerS !== null && bus.signalsPerS > 1000, `${bus.signalsPerS} signals/s`);
        assert.equal(r.agent.framesPerS, bus.framesPerS);
        assert.equal(bus.decodeErrors, 0);
        assert.equal(bus.unknownFrames, 0);
        assert.equal(bus.errorFrames, null, 'a sim bus has no controller');
        assert.equal(r.agent.decodeErrors, 0);

        const s = r.system;
        // A probe that ran out of its time box (0.5 s at this interval; a busy machine) is null and named in `failed`.
        if (s.memTotalBytes === null || s.uptimeS === null || s.disk === null || s.interfaces === null) assert.ok(s.failed.length > 0, JSON.stringify(s));
        else assert.ok(s.memTotalBytes > 0 && s.uptimeS > 0 && s.disk.freeBytes > 0 && s.interfaces.length >= 1, JSON.stringify(s));
        // The first sample takes 0.6-0.75 s here, later ones 0.1-0.2 s; far more on a busy machine.
        assert.ok(s.sampleMs >= 0 && s.sampleMs < 3000, `${s.sampleMs} ms`);

        const u = r.agent.uplink!;
        // A report goes out only while connected, but it is taken before the host is sampled: the first one sent may
        // have been taken while the connection was still being made.
        if (k === 0 && u.state !== 'connected') assert.deepEqual([u.state, u.connections], ['connecting', 0]);
        else assert.deepEqual([u.state, u.connections], ['connected', 1]);
        assert.equal(u.url, broker.url);
        assert.equal(u.reconnects, 0);
        assert.equal(u.losses, 0);
        assert.equal(u.heartbeat.adaptive, true);
        assert.ok(u.heartbeat.intervalS > 0);

        const o = r.agent.outbox!;
        assert.ok(o.messages >= 0 && o.bytes >= 0 && o.evicted === 0 && o.expired === 0, JSON.stringify(o));
        assert.ok(o.oldestAgeS === null || o.oldestAgeS < 5, JSON.stringify(o));
        assert.deepEqual([o.setAsideFiles, o.setAsideBytes, o.fileLostWhileRunning], [0, 0, 0], JSON.stringify(o));
        // [17.seq] The data stream's tail (the last number assigned is nextSeq - 1), never going back; nothing lost.
        assert.ok(Number.isSafeInteger(o.nextSeq) && o.nextSeq > 1e15, JSON.stringify(o));
        if (k > 0) assert.ok(o.nextSeq >= reports[k - 1]!.agent.outbox!.nextSeq);
        assert.deepEqual([o.lossNotices, o.lostAnnounced], [0, 0], JSON.stringify(o));

        const cert = r.agent.certificate;
        assert.ok(cert, 'the data path reports the device certificate');
        assert.ok(cert.daysLeft > 300 && cert.expiringSoon === false && cert.notAfter !== null && Date.parse(cert.notAfter) > Date.now(), JSON.stringify(cert));
        assert.equal(r.agent.commands, null, 'no commands section');
      }
      assert.ok(
        reports.some((r) => r.system.failed.length === 0 && r.system.disk !== null),
        'no report had every probe answer',
      );
      // Over the whole run the frame rate is the sim bus's 294 frames/s.
      const timed = reports.slice(1);
      const overall = timed.reduce((sum, r) => sum + r.agent.buses[0]!.framesPerS! * r.periodS!, 0) / timed.reduce((sum, r) => sum + r.periodS!, 0);
      assert.ok(overall > 265 && overall < 325, `${overall} frames/s over ${timed.length} reports`);
      // Telemetry flows: the publish rate (acknowledged per second) and the totals grow.
      assert.ok(last.agent.uplink!.acknowledged > first.agent.uplink!.acknowledged);
      // A rate per period: a stall of the loaded machine may leave one period with nothing acknowledged, so most of
      // them (not each) saw messages go out, and none is negative.
      const ackRates = reports.slice(1).map((r) => r.agent.uplink!.acknowledgedPerS!);
      assert.ok(ackRates.every((rate) => rate >= 0) && ackRates.filter((rate) => rate > 0).length * 2 >= ackRates.length, ackRates.join(', '));
      assert.ok(last.agent.collector!.samples > 0);

      // The ELM327 adapter's answers, as its own summary counts them.
      const obd = last.agent.obd;
      assert.equal(obd.length, 1);
      assert.equal(obd[0]!.name, 'obd');
      assert.equal(obd[0]!.via, 'elm327');
      assert.ok(obd[0]!.requests > 0 && obd[0]!.answers > 0, JSON.stringify(obd[0]));
      assert.ok(obd[0]!.answers <= summary.adapters[0]!.obd.samples);

      // Health never goes through the outbox: it holds the collected messages only.
      assert.equal(summary.dataPath!.outbox.appended, summary.dataPath!.messages);
    },
  );
});
