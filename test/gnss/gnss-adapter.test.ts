/**
 * The `gnss` adapter through the whole agent: a receiver on a real pseudo-terminal replaying a shared recording, the
 * config loader, the adapter, the collection rules reading `gnss.lat`/`gnss.lon`/`gnss.mode`, and the real outbox file.
 * What the outbox holds is the recording's positions, under `<adapter>.gnss.<key>`; the status line says the fix.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Agent } from '../../src/agent/agent.js';
import { parseDeviceConfig, DeviceConfigError } from '../../src/config/device-config.js';
import { Logger } from '../../src/health/log.js';
import type { Sample } from '../../src/collect/sample.js';
import { decodeMessage } from '../../src/uplink/codec.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { agentFixes } from '../support/gpsd-reports.js';
import { nmeaOnPty, recordingLines, replayOnPty } from '../support/gnss-pty.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

const RECORDING = 'quectel-L70.log';

function outboxSamples(file: string): Sample[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare<[], { payload: Buffer }>('SELECT payload FROM message ORDER BY seq')
      .all()
      .flatMap((row) => decodeMessage(new Uint8Array(row.payload), 'json').samples);
  } finally {
    db.close();
  }
}

function gnssConfig(dir: string, port: string): object {
  return {
    deviceId: 'gnss-car',
    buses: [],
    obdAdapters: [{ type: 'gnss', name: 'gnss', port, weekRolloverFloor: false }],
    collection: {
      format: 'json',
      batch: { maxDelayMs: 100 },
      rules: [{ name: 'track', mode: 'every', priority: 3, signals: ['gnss.lat', 'gnss.lon', 'gnss.mode'] }],
    },
    outbox: { path: 'var/outbox.db', writeIntervalMs: 50 },
  };
}

describe('the gnss adapter', { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA }, () => {
  it("puts the receiver's positions through the collection rules into the outbox, and its fix on the status line", async () => {
    const dir = makeTempDir('gnss-adapter-');
    const pty = await nmeaOnPty();
    const stop = new AbortController();
    const agent = await InProcessAgent.start(parseDeviceConfig(gnssConfig(dir, pty.path), { file: path.join(dir, 'device.json'), baseDir: dir }));
    const sending = replayOnPty(pty, recordingLines(RECORDING), { loop: true, signal: stop.signal });
    try {
      await waitFor(() => /^gnss 3D DGPS 51\.068\d,-114\.0956$/.test(agent.agent.snapshot().adapters[0]?.text ?? ''), 'a fix on the status line', 30_000);
      await waitFor(() => agent.agent.snapshot().dataPath!.report.collector.samples >= 30, '30 samples collected', 30_000);
      // getStatus, /status and the health report: the fix, its age, and the clock check (a 2022 recording: years apart).
      const gnss = agent.context.status().agent.gnss;
      assert.equal(gnss.length, 1);
      const g = gnss[0]!;
      assert.deepEqual([g.name, g.via, g.state, g.mode, g.status, g.uSat], ['gnss', 'gnss', 'receiving', 3, 2, 8]);
      assert.ok(Math.abs(g.lat! - 51.0681) < 1e-3 && Math.abs(g.lon! + 114.0956) < 1e-3, `${g.lat},${g.lon}`);
      assert.match(g.fixTime!, /^2022-03-09T15:0\d:\d\d\.000Z$/);
      assert.ok(g.positionAgeS! < 10, `position ${g.positionAgeS} s old`);
      assert.ok(g.clockOffsetS! > 3 * 365 * 86_400 && g.clockWarning, `clock offset ${g.clockOffsetS} s`);
      assert.ok(g.fixes >= 10);
      assert.ok(
        agent.log.some((line) => /gnss: the system clock is \d+\.\d s ahead of the receiver's time \(2022-03-09T/.test(line)),
        agent.log.join('\n'),
      );
      assert.equal(agent.log.filter((line) => line.includes('the system clock is')).length, 1, 'said once');
    } finally {
      stop.abort();
      await sending;
      await agent.close();
      await pty.close();
    }
    const snapshot = agent.agent.snapshot();
    assert.deepEqual(snapshot.obd, [], 'GNSS values are not OBD values');
    const samples = outboxSamples(path.join(dir, 'var', 'outbox.db'));
    const lats = new Set(agentFixes(RECORDING).map(({ fix }) => fix.lat));
    const stored = samples.filter((s) => s.signal === 'gnss.gnss.lat');
    assert.ok(stored.length >= 10, `${stored.length} latitudes stored`);
    for (const sample of stored) assert.ok(lats.has(sample.value as number), `latitude ${sample.value} is not one of the recording's`);
    assert.ok(samples.filter((s) => s.signal === 'gnss.gnss.lon').every((s) => (s.value as number) < -114.09 && (s.value as number) > -114.1));
    assert.ok(samples.filter((s) => s.signal === 'gnss.gnss.mode').every((s) => s.value === 2 || s.value === 3));
  });

  it('is refused with the field named when its config is wrong', () => {
    const dir = makeTempDir('gnss-config-');
    const load = (adapter: object): unknown =>
      parseDeviceConfig({ ...gnssConfig(dir, '/dev/ttyUSB1'), obdAdapters: [adapter] }, { file: 'device.json', baseDir: dir });
    assert.throws(
      () => load({ type: 'gnss', name: 'gnss', port: '/dev/ttyUSB1', baud: 9600 }),
      (err: unknown) => err instanceof DeviceConfigError && err.message === "device.json: obdAdapters[0]: unknown field 'baud'",
    );
    assert.throws(
      () => load({ type: 'gnss', name: 'gnss', port: '/dev/ttyUSB1', weekRolloverFloor: '2026-13-01' }),
      (err: unknown) => err instanceof DeviceConfigError && err.message.startsWith('device.json: obdAdapters[0].weekRolloverFloor: '),
    );
  });

  it('refuses a rule on a GNSS field that does not exist, saying what the fields are called', async () => {
    const dir = makeTempDir('gnss-rule-');
    const config = parseDeviceConfig(
      { ...gnssConfig(dir, '/dev/ttyUSB1'), collection: { rules: [{ name: 'x', mode: 'every', signals: ['gnss.latitude'] }] } },
      { file: path.join(dir, 'device.json'), baseDir: dir },
    );
    await assert.rejects(
      () => Agent.open(config, { logger: new Logger({ lines: () => undefined }) }),
      (err: unknown) => err instanceof Error && err.message.includes("'gnss.latitude' (GNSS signals are gnss.<key>, e.g. gnss.lat: see docs/gnss.md)"),
    );
  });
});
