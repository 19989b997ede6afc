/**
 * One snapshot: getStatus, the status page (/status), the health report and /metrics, and the summary all show the
 * agent's snapshot, so they agree. A replayed log with a known content ends by itself; the counts are then fixed and
 * compared exactly, through the real HTTP endpoint.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Agent } from '../../src/agent/agent.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { Logger } from '../../src/health/log.js';
import type { LiveStatus } from '../../src/health/monitor.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { contractChecker } from '../support/contract.js';
import { candumpLine, le16 } from '../support/drive-log.js';
import { makeTempDir } from '../support/temp.js';
import { delay } from '../support/wait.js';

const ENGINE_DATA = 0xc8;
const UNKNOWN_ID = 0x7ff;

async function get(port: number, path_: string): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}${path_}`);
  assert.equal(response.status, 200, path_);
  return response.text();
}

describe('the agent snapshot', () => {
  it('[15.1] getStatus, /status, the health report, /metrics and the summary show the same counts and values', async () => {
    const dir = makeTempDir('snapshot-');
    const t0 = 1_700_000_000;
    writeFileSync(
      path.join(dir, 'drive.log'),
      [
        candumpLine(t0, ENGINE_DATA, le16(3200)),
        candumpLine(t0 + 0.001, UNKNOWN_ID, [1, 2]),
        'not a candump line',
        candumpLine(t0 + 0.002, ENGINE_DATA, le16(3240)),
        candumpLine(t0 + 0.003, ENGINE_DATA, le16(3300)),
      ].join('\n') + '\n',
    );
    const config = parseDeviceConfig(
      {
        deviceId: 'snapshot-car',
        buses: [{ name: 'rec', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: 'drive.log' } }],
        status: { signals: ['EngineSpeed'] },
        health: { intervalS: 1, http: { port: 0 } },
      },
      { file: path.join(dir, 'device.json'), baseDir: dir },
    );
    const lines: string[] = [];
    const logger = new Logger({ lines: (line) => lines.push(line) });
    const agent = await Agent.open(config, { logger });
    let summary;
    try {
      const page = lines.map((line) => /^health: status page on http:\/\/127\.0\.0\.1:(\d+)\/$/.exec(line)).find((m) => m !== null);
      assert.ok(page, lines.join('\n'));
      const port = Number(page[1]);
      await agent.run({ durationS: 30 });
      const endedAt = Date.now();

      const snapshot = agent.snapshot();
      const bus = snapshot.buses[0]!;
      assert.deepEqual(
        {
          frames: bus.frames,
          unknownFrames: bus.unknownFrames,
          badLogLines: bus.badLogLines,
          decodeErrors: bus.decodeErrors,
          source: bus.source,
          link: bus.link,
        },
        { frames: 4, unknownFrames: 1, badLogLines: 1, decodeErrors: 0, source: 'replay', link: null },
      );
      // Received with the log's own time (its last ENGINE_DATA frame); the DBC sends ENGINE_DATA every 10 ms.
      assert.deepEqual(snapshot.signals, [
        { name: 'EngineSpeed', signal: 'EngineSpeed', value: 825, text: '825.0 rpm', receivedAt: (t0 + 0.003) * 1000, periodMs: 10 },
      ]);

      // getStatus.
      const status = agent.commandContext.status();
      assert.deepEqual(
        status.agent.buses.map(({ name, source, frames, unknownFrames, decodeErrors, malformedLogLines }) => ({
          name,
          source,
          frames,
          unknownFrames,
          decodeErrors,
          malformedLogLines,
        })),
        [{ name: 'rec', source: 'replay', frames: 4, unknownFrames: 1, decodeErrors: 0, malformedLogLines: 1 }],
      );

      // The status page's document.
      const live = JSON.parse(await get(port, '/status')) as LiveStatus;
      // [17.contract] The page's document is the published status-page schema, before and after its first report.
      const contract = contractChecker();
      assert.deepEqual(contract.problems('status-page', live), []);
      assert.deepEqual(
        live.buses.map(({ name, source, frames, errors, state }) => ({ name, source, frames, errors, state })),
        [{ name: 'rec', source: 'replay', frames: 4, errors: 1, state: null }],
      );
      // A value stamped with a recorded log's time ages from when the page first saw it.
      assert.deepEqual(
        live.signals.map(({ name, value, text }) => ({ name, value, text })),
        [{ name: 'EngineSpeed', value: 825, text: '825.0 rpm' }],
      );
      assert.ok(live.signals[0]!.ageS !== null && live.signals[0]!.ageS < 2, JSON.stringify(live.signals));
      // /metrics is read live: the counts of the ended run, with no report taken since.
      const metrics = await get(port, '/metrics');
      assert.ok(metrics.split('\n').includes('telematics_bus_frames_total{bus="rec"} 4'), metrics);
      assert.ok(metrics.split('\n').includes('telematics_bus_unknown_frames_total{bus="rec"} 1'), metrics);

      // The first report taken after the run ended.
      let report = live.report;
      for (let i = 0; !(report && report.tsMs >= endedAt); i++) {
        assert.ok(i < 100, 'a scheduled report within 10 s');
        await delay(100);
        const page = JSON.parse(await get(port, '/status')) as LiveStatus;
        assert.deepEqual(contract.problems('status-page', page), []);
        report = page.report;
      }
      const reported = report.agent.buses[0]!;
      assert.deepEqual(
        {
          frames: reported.frames,
          unknownFrames: reported.unknownFrames,
          malformedLogLines: reported.malformedLogLines,
          source: reported.source,
          errorFrames: reported.errorFrames,
          kernelDrops: reported.kernelDrops,
        },
        // [19.socketcan] kernelDrops, like errorFrames, only for a bus with a kernel socket.
        { frames: 4, unknownFrames: 1, malformedLogLines: 1, source: 'replay', errorFrames: null, kernelDrops: null },
      );
    } finally {
      summary = await agent.close();
      logger.close();
    }
    assert.deepEqual(
      summary.buses.map(({ name, source, frames, unknownFrames, badLogLines }) => ({ name, source, frames, unknownFrames, badLogLines })),
      [{ name: 'rec', source: 'replay:drive.log', frames: 4, unknownFrames: 1, badLogLines: 1 }],
    );
  });
});
