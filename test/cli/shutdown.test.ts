/**
 * SIGTERM to `telematics-agent run` (the compiled CLI as a child process) connected to a real mosquitto: the sources
 * stop, the open batch goes to the outbox, the session says offline and disconnects cleanly, the process exits 0
 * within 5 s — also when the broker is frozen (SIGSTOP) and answers nothing. And the deadline that bounds the stop
 * when something hangs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Logger } from '../../src/health/log.js';
import { ShutdownWatch, SHUTDOWN_INCOMPLETE_EXIT_CODE } from '../../src/health/log-shutdown.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { AgentProcess, outboxRows, writeConfig } from '../support/agent-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { TestPki } from '../support/mosquitto.js';
import { AGENT_CLI } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

/** The stop must be over within this, from the signal to the process gone (a supervisor's 5 s). */
const LIMIT_MS = 5000;

interface Status {
  online: boolean;
  reason?: string;
}

describe('run: SIGTERM', () => {
  const agents: AgentProcess[] = [];
  const fleet = withBroker();
  fleet.beforeStop(async () => {
    for (const agent of agents) await agent.stop('SIGKILL');
  });

  /** A running agent on the simulated car, one periodic rule whose batch stays open for a minute, connected. */
  async function startAgent(deviceId: string): Promise<{ agent: AgentProcess; outbox: string }> {
    const dir = makeTempDir('shutdown-');
    const outbox = path.join(dir, 'outbox.db');
    const file = writeConfig(dir, deviceId, {
      deviceId,
      buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } }],
      collection: {
        batch: { maxSamples: 100_000, maxDelayMs: 60_000 },
        rules: [{ name: 'speed', mode: 'periodic', intervalMs: 50, signals: ['VehicleSpeed', 'EngineSpeed'] }],
      },
      outbox: { path: outbox, writeIntervalMs: 100 },
      uplink: { url: fleet.broker.url, ...fleet.pki.identityFiles(deviceId), reconnect: { initialMs: 100, maxMs: 500 }, keepalive: { adaptive: false } },
    });
    const agent = AgentProcess.start(file);
    agents.push(agent);
    await agent.waitForStderr(/uplink: connected to /);
    // Samples pile up in the open batch (a minute long): only the stop can commit them.
    await delay(1500);
    assert.deepEqual(outboxRows(outbox), [], 'nothing committed before the stop');
    return { agent, outbox };
  }

  /** Sends SIGTERM and times it until the process has exited. */
  async function terminate(agent: AgentProcess): Promise<{ code: number | null; ms: number }> {
    const sent = performance.now();
    const { code } = await agent.stop('SIGTERM');
    return { code, ms: performance.now() - sent };
  }

  /** The JSON log lines on the agent's stderr. */
  function logLines(agent: AgentProcess): Array<{ level: string; component: string; msg: string; [key: string]: unknown }> {
    return agent.stderr
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { level: string; component: string; msg: string });
  }

  /**
   * Every message the stop committed is in the outbox file or was acknowledged by the broker (and reached the
   * backend); nothing was committed before the stop, so there is at least the open batch.
   */
  async function checkCommitted(agent: AgentProcess, outbox: string, deviceId: string): Promise<{ buffered: number; published: number }> {
    const rows = outboxRows(outbox);
    assert.ok(rows.every((r) => r.kind === 'telemetry'));
    const data = /data: (\d+) samples in (\d+) messages, (\d+) published to \S+, (\d+) buffered/.exec(agent.stdout);
    assert.ok(data, agent.stdout);
    const [samples, messages, published, buffered] = data.slice(1).map(Number) as [number, number, number, number];
    assert.ok(samples >= 30, `${samples} samples in 1.5 s at 2 × 20 per second`);
    assert.ok(messages >= 1, agent.stdout);
    assert.equal(buffered, rows.length, 'the summary counts what is in the file');
    assert.equal(published + buffered, messages, agent.stdout);
    if (published > 0) await fleet.backend.waitFor(() => fleet.backend.on(deviceId, 'telemetry').length >= published, `${published} telemetry messages`, 3000);
    return { buffered, published };
  }

  it(
    'connected: exit 0 within 5 s, the open batch committed (and here acknowledged), offline said and a clean DISCONNECT (no will)',
    { timeout: 30_000 },
    async (t) => {
      const deviceId = 'car-sigterm';
      const { agent, outbox } = await startAgent(deviceId);
      const { code, ms } = await terminate(agent);
      t.diagnostic(`SIGTERM to exit: ${ms.toFixed(0)} ms`);
      assert.equal(code, 0, agent.stderr);
      assert.ok(ms < LIMIT_MS, `${ms.toFixed(0)} ms`);
      const kept = await checkCommitted(agent, outbox, deviceId);
      t.diagnostic(`the open batch: ${kept.published} message(s) acknowledged before the DISCONNECT, ${kept.buffered} left in the outbox`);

      const lines = logLines(agent);
      const done = lines.find((l) => l.component === 'shutdown' && /^shutdown: done in \d+ ms$/.test(l.msg));
      assert.ok(done, agent.stderr);
      t.diagnostic(`the agent's own measure: ${String(done.durationMs)} ms`);
      assert.ok((done.durationMs as number) < 1000, `a stop with a live broker is quick: ${String(done.durationMs)} ms`);
      assert.ok(!lines.some((l) => l.level === 'error'), agent.stderr);

      // The status topic: the birth, then the device's own offline; the broker never publishes the will.
      const statuses = (): Status[] => fleet.backend.on(deviceId, 'status').map((m) => JSON.parse(m.payload.toString('utf8')) as Status);
      await fleet.backend.waitFor(() => statuses().some((s) => !s.online), 'the offline status', 3000);
      await delay(1000);
      assert.deepEqual(
        statuses().map((s) => [s.online, s.reason]),
        [
          [true, undefined],
          [false, 'shutdown'],
        ],
      );
      // mosquitto says how the client left: a DISCONNECT packet, not a dropped socket.
      assert.match(fleet.broker.log, new RegExp(`Client ${deviceId} disconnected\\.`));
      assert.doesNotMatch(fleet.broker.log, new RegExp(`Client ${deviceId} closed its connection|Socket error on client ${deviceId}`));
    },
  );

  it('broker frozen (SIGSTOP): still exit 0 within 5 s, the open batch committed to the outbox', { timeout: 30_000 }, async (t) => {
    const deviceId = 'car-frozen-broker';
    const { agent, outbox } = await startAgent(deviceId);
    fleet.broker.pause();
    let result: { code: number | null; ms: number };
    try {
      result = await terminate(agent);
    } finally {
      fleet.broker.resume();
    }
    t.diagnostic(`SIGTERM to exit with the broker frozen: ${result.ms.toFixed(0)} ms`);
    assert.equal(result.code, 0, agent.stderr);
    assert.ok(result.ms < LIMIT_MS, `${result.ms.toFixed(0)} ms`);
    // Nothing can be acknowledged by a frozen broker: the batch waits in the outbox for the next start.
    const kept = await checkCommitted(agent, outbox, deviceId);
    assert.equal(kept.published, 0);
    assert.ok(kept.buffered >= 1);
    const lines = logLines(agent);
    const done = lines.find((l) => /^shutdown: (done in \d+ ms|not done)/.test(l.msg));
    assert.ok(done, agent.stderr);
    t.diagnostic(`the agent's own measure: ${done.msg}`);
    // Where the time goes (debug lines of the verbose start): the session's wait for the offline status's PUBACK.
    const steps = lines.filter((l) => l.component === 'shutdown' && l.level === 'debug').map((l) => `${l.msg} at ${String(l.atMs)} ms`);
    t.diagnostic(steps.join('; '));
    // The broker, thawed, is fine and serves the backend again.
    await waitFor(() => fleet.broker.running, 'the broker', 1000);
  });
});

describe('shutdown deadline', () => {
  function rig(deadlineMs: number) {
    const lines: string[] = [];
    const exits: number[] = [];
    const logger = new Logger({
      config: { level: 'info', verboseForS: 0, format: 'json', remote: { enabled: false, level: 'warn', maxPerMinute: 1, foldWindowS: 1 } },
      destination: { write: (l: string) => lines.push(l) },
    });
    const watch = new ShutdownWatch(logger, { deadlineMs, exit: (code) => exits.push(code) });
    return { lines, exits, watch, json: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
  }

  it('a stop that hangs after the commit: logs what is pending and exits 0', async () => {
    const { exits, watch, json } = rig(150);
    watch.begin('SIGTERM');
    watch.pending(() => ({ session: 'connected', inflight: 3 }));
    watch.step('committing open batches to the outbox');
    watch.committed();
    watch.step('closing the MQTT session (offline status, DISCONNECT) and the outbox');
    await delay(300);
    assert.deepEqual(exits, [0]);
    const last = json().at(-1)!;
    assert.equal(last.level, 'error');
    assert.match(
      last.msg as string,
      /^shutdown: not done 150 ms after SIGTERM, still closing the MQTT session .*; the open batches are in the outbox; exiting$/,
    );
    assert.deepEqual([last.committed, last.session, last.inflight], [true, 'connected', 3]);
  });

  it('a stop that hangs before the commit: exits with the failure code', async () => {
    const { exits, watch, json } = rig(100);
    watch.begin('SIGINT');
    await delay(250);
    assert.deepEqual(exits, [SHUTDOWN_INCOMPLETE_EXIT_CODE]);
    assert.match(json().at(-1)!.msg as string, /still stopping the sources; the open batches were NOT committed to the outbox; exiting$/);
  });

  it('a stop in time: no deadline, the time logged', async () => {
    const { exits, watch, json } = rig(200);
    watch.begin('SIGTERM');
    watch.committed();
    const ms = watch.finish();
    await delay(300);
    assert.deepEqual(exits, []);
    const last = json().at(-1)!;
    assert.equal(last.msg, `shutdown: done in ${ms} ms`);
    assert.equal(last.durationMs, ms);
  });
});

describe('run: stderr on a full disk', () => {
  it(
    'stderr is /dev/full (ENOSPC on every line): the run goes on, warns from its timers, and SIGTERM still exits 0 with the open batch committed',
    { timeout: 30_000 },
    async () => {
      const pki = new TestPki();
      const dir = makeTempDir('stderr-full-');
      const outbox = path.join(dir, 'outbox.db');
      const deviceId = 'car-stderr-full';
      const file = writeConfig(dir, deviceId, {
        deviceId,
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } }],
        status: { intervalMs: 200, signals: ['VehicleSpeed'] },
        collection: {
          batch: { maxSamples: 100_000, maxDelayMs: 60_000 },
          rules: [{ name: 'speed', mode: 'periodic', intervalMs: 50, signals: ['VehicleSpeed', 'EngineSpeed'] }],
        },
        outbox: { path: outbox, writeIntervalMs: 100 },
        // Nothing listens on port 1: a reconnect warning from a timer every few hundred ms.
        uplink: { url: 'mqtts://127.0.0.1:1', ...pki.identityFiles(deviceId), reconnect: { initialMs: 100, maxMs: 300 }, keepalive: { adaptive: false } },
        // Debug and info lines from timers too (the status rates), and error/warn entries for the remote log's feed.
        logging: { level: 'debug', verboseForS: 0 },
      });
      const full = openSync('/dev/full', 'w');
      const child = spawn(process.execPath, [AGENT_CLI, 'run', '--config', file], { stdio: ['ignore', 'pipe', full] });
      closeSync(full);
      let stdout = '';
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (chunk: string) => (stdout += chunk));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.once('close', (code, signal) => resolve({ code, signal })),
      );
      try {
        // The status line on stdout says the run is up; then time for reconnect warnings and status debug lines.
        await waitFor(() => stdout.includes('frames/s') || child.exitCode !== null, 'the status line', 10_000);
        await delay(1500);
        assert.equal(child.exitCode, null, `the agent died with stderr on a full disk:\n${stdout}`);
        assert.deepEqual(outboxRows(outbox), [], 'nothing committed before the stop');
        child.kill('SIGTERM');
        const { code, signal } = await exited;
        assert.deepEqual([code, signal], [0, null], stdout);
        const data = /data: (\d+) samples in (\d+) messages, (\d+) published to \S+, (\d+) buffered/.exec(stdout);
        assert.ok(data, stdout);
        const [samples, messages, published, buffered] = data.slice(1).map(Number) as [number, number, number, number];
        assert.ok(samples >= 30, `${samples} samples`);
        assert.equal(published, 0);
        assert.ok(messages >= 1 && buffered === messages, stdout);
        assert.equal(outboxRows(outbox).length, buffered, 'the open batch is in the outbox file');
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    },
  );
});
