/**
 * The outbox's file under the running agent (`telematics-agent run` as a child process, a real replay, a real SQLite
 * file): deleted while the agent commits, and a read-only state folder at start.
 */
import assert from 'node:assert/strict';
import { mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { AgentProcess, outboxRows, writeConfig } from '../support/agent-process.js';
import { candumpLine, le16 } from '../support/drive-log.js';
import { makeTempDir } from '../support/temp.js';
import { canMount, makeReadOnly } from '../support/state-files.js';
import { delay } from '../support/wait.js';

const ENGINE_DATA = 0x0c8;

/** EngineSpeed changing every 50 ms for `seconds` (0.25 rpm per bit), paced in real time by the replay. */
function driveLog(file: string, seconds: number): void {
  const t0 = 1_700_000_000;
  const lines: string[] = [];
  for (let i = 0; i < seconds * 20; i++) lines.push(candumpLine(t0 + i * 0.05, ENGINE_DATA, le16(4 * (800 + (i % 400)))));
  writeFileSync(file, `${lines.join('\n')}\n`);
}

/** The rows in the outbox file, or none while it is missing (between the deletion and the carry-over). */
function rowCount(file: string): number {
  try {
    return outboxRows(file).length;
  } catch {
    return 0;
  }
}

async function until(condition: () => boolean, agent: AgentProcess, what: string, timeoutMs = 20_000): Promise<void> {
  const start = performance.now();
  while (!condition()) {
    if (!agent.running) throw new Error(`the agent exited before ${what}:\n${agent.stderr}`);
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}:\n${agent.stderr}`);
    await delay(50);
  }
}

describe('run: the outbox file under the running agent', () => {
  it(
    '[14.7] outbox.db deleted while the agent commits: an error line names it, the agent goes on, and after the stop every message is in the file',
    { timeout: 60_000 },
    async (t) => {
      const dir = makeTempDir('outbox-agent-deleted-');
      const log = path.join(dir, 'drive.log');
      driveLog(log, 120);
      const outboxFile = path.join(dir, 'var', 'outbox.db');
      const config = writeConfig(dir, 'agent', {
        deviceId: 'truck-001',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: log } }],
        collection: { batch: { maxSamples: 10, maxDelayMs: 200 }, rules: [{ name: 'engine', mode: 'change', signals: ['EngineSpeed'] }] },
        outbox: { path: outboxFile, writeIntervalMs: 100 },
        logging: { verboseForS: 0 },
      });
      const agent = AgentProcess.start(config);
      t.after(() => agent.stop('SIGKILL'));

      await until(() => rowCount(outboxFile) >= 3, agent, 'the first messages in the outbox');
      unlinkSync(outboxFile);
      await agent.waitForStderr(/was deleted while the agent was running/, 20_000);
      const atCarryOver = rowCount(outboxFile);
      // Messages committed after the carry-over land in the new file too.
      await until(() => rowCount(outboxFile) >= atCarryOver + 3, agent, 'more messages after the carry-over');
      const { code } = await agent.stop('SIGTERM');
      assert.equal(code, 0, agent.stderr);

      const line = agent.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level: string; component: string; msg: string })
        .find((entry) => entry.msg.includes('was deleted while the agent was running'));
      assert.ok(line, agent.stderr);
      assert.equal(line.level, 'error');
      assert.equal(line.component, 'outbox');
      assert.match(
        line.msg,
        new RegExp(
          `^outbox: ${outboxFile.replace(/[.]/g, '\\.')} was deleted while the agent was running: its \\d+ waiting message\\(s\\) and the sequence counters were carried over to a new file at the same path; nothing was lost$`,
        ),
      );

      const summary = /data: (\d+) samples in (\d+) messages, (\d+) buffered/.exec(agent.stdout);
      assert.ok(summary, agent.stdout);
      const rows = outboxRows(outboxFile);
      assert.equal(Number(summary[2]), Number(summary[3]), 'nothing published: every message is still buffered');
      assert.equal(rows.length, Number(summary[2]), 'every message committed during the run is in the file after it');
      assert.equal(new Set(rows.map((r) => r.seq)).size, rows.length);
    },
  );

  it(
    '[14.L7] a read-only state folder: the start fails with one line naming outbox.path and the file',
    { skip: !canMount && 'mounting is not permitted here', timeout: 30_000 },
    async () => {
      const dir = makeTempDir('outbox-agent-ro-');
      const state = path.join(dir, 'state');
      mkdirSync(state);
      const log = path.join(dir, 'drive.log');
      driveLog(log, 1);
      const outboxFile = path.join(state, 'outbox.db');
      const config = writeConfig(dir, 'agent', {
        deviceId: 'truck-001',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: log } }],
        collection: { rules: [{ name: 'engine', mode: 'change', signals: ['EngineSpeed'] }] },
        outbox: { path: outboxFile },
        logging: { verboseForS: 0 },
      });
      const writable = makeReadOnly(state);
      try {
        const agent = AgentProcess.start(config);
        const { code } = await agent.exited;
        assert.equal(code, 1);
        assert.match(
          agent.stderr,
          new RegExp(
            `^telematics-agent: outbox\\.path: cannot create ${outboxFile.replace(/[.]/g, '\\.')}: the folder ${state.replace(/[.]/g, '\\.')} is not writable \\(EROFS\\)$`,
            'm',
          ),
        );
      } finally {
        writable();
      }
    },
  );
});
