/**
 * The remote log (vehicles/<deviceId>/logs): folding of repeats, the per-minute limit and the count of what it
 * dropped, the offline ring, and no loops — first against an in-memory session on a hand-driven clock (a minute of
 * rate window in no time), then against a real mosquitto (TLS, ACL) with a real session, a broker outage, and the
 * whole agent hooked up by runAgent.
 */
import assert from 'node:assert/strict';
import { copyFileSync, appendFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runAgent } from '../../src/cli/run.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { Logger, type LogEntry, type LogLevel } from '../../src/health/log.js';
import { foldKeyText, REMOTE_LOG_COMPONENT, RemoteLog, type RemoteLogEntry, type RemoteLogSession } from '../../src/health/remote-log.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import type { MqttSession } from '../../src/uplink/session.js';
import { withBroker } from '../support/broker-fixture.js';
import { deviceSession, waitForState } from '../support/mosquitto.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

/** A session that records what is published; its state is the test's to set. */
class FakeSession implements RemoteLogSession {
  state = 'connected';
  readonly published: RemoteLogEntry[] = [];
  refuse = false;
  private listener: ((change: { state: string }) => void) | undefined;

  topic(kind: 'logs'): string {
    return `vehicles/fake/${kind}`;
  }

  publish(topic: string, payload: string): Promise<void> {
    assert.equal(topic, 'vehicles/fake/logs');
    if (this.state !== 'connected') return Promise.reject(Object.assign(new Error('not connected'), { kind: 'not-connected' }));
    if (this.refuse) return Promise.reject(Object.assign(new Error('not authorized'), { kind: 'publish-refused' }));
    this.published.push(JSON.parse(payload) as RemoteLogEntry);
    return Promise.resolve();
  }

  onStateChange(listener: (change: { state: string }) => void): () => void {
    this.listener = listener;
    return () => (this.listener = undefined);
  }

  set(state: string): void {
    this.state = state;
    this.listener?.({ state });
  }
}

function entry(time: number, msg: string, level: LogLevel = 'warn', component = msg.split(':')[0]!): LogEntry {
  return { time, level, component, msg };
}

/** The most entries made (by their ts) in any window of `windowMs`. */
function busiestWindow(entries: readonly RemoteLogEntry[], windowMs: number): number {
  const ts = entries.map((e) => e.ts).sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < ts.length; i++) {
    while (ts[i]! - ts[j]! >= windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

const sum = (entries: readonly RemoteLogEntry[], key: 'count' | 'suppressed'): number => entries.reduce((n, e) => n + (e[key] ?? 0), 0);

/** Lets the remote log's timer run (it ticks every 100 ms with these fold windows) and the publishes settle. */
const ticks = () => delay(250);

describe('remote log on a hand-driven clock', () => {
  it('folds 500 repeats into two entries, holds the folded count until the minute has room, and reports what it dropped', async () => {
    let now = 1_700_000_000_000;
    const session = new FakeSession();
    const remote = new RemoteLog({ config: { level: 'warn', maxPerMinute: 20, foldWindowS: 0.4 }, now: () => now });
    remote.attach(session);
    try {
      const t0 = now;
      // The same message with a changing number, within the fold window (400 ms): one fold.
      for (let i = 0; i < 500; i++) remote.add(entry(now + Math.floor(i / 2), `can0: frame ${1000 + i} dropped after ${i % 7}.5 ms`));
      for (let i = 0; i < 30; i++) remote.add(entry(now + 500, `outbox: problem ${String.fromCharCode(65 + i)}`));
      await ticks();
      // The first occurrence at once, then 19 of the 30 distinct messages: the minute's 20. 11 dropped.
      assert.equal(session.published.length, 20);
      assert.deepEqual(session.published[0], {
        ts: t0,
        level: 'warn',
        component: 'can0',
        msg: 'can0: frame 1000 dropped after 0.5 ms',
        count: 1,
        firstTs: t0,
        lastTs: t0,
      });

      // The fold window is over, but the minute is full: the repeats wait (and keep counting).
      now += 1000;
      remote.add(entry(now, 'can0: frame 9999 dropped after 3.5 ms'));
      await ticks();
      assert.equal(session.published.length, 20);

      // A minute after the burst there is room: one entry for the 500 repeats, with the 11 dropped messages.
      now = t0 + 60_000 + 1;
      await ticks();
      assert.equal(session.published.length, 21);
      const folded = session.published[20]!;
      assert.equal(folded.count, 500);
      assert.equal(folded.suppressed, 11);
      assert.equal(folded.msg, 'can0: frame 1001 dropped after 1.5 ms');
      assert.deepEqual([folded.firstTs, folded.lastTs, folded.ts], [t0, t0 + 1000, now]);
      assert.equal(
        sum(
          session.published.filter((e) => e.component === 'can0'),
          'count',
        ),
        501,
      );

      // Another burst of 25 new messages once the 19 of the first burst are a minute old: 19 fit beside the folded
      // entry; the 6 others are reported on their own.
      now = t0 + 500 + 60_000;
      for (let i = 0; i < 25; i++) remote.add(entry(now, `uplink: trouble ${String.fromCharCode(97 + i)}`));
      await ticks();
      assert.equal(session.published.length, 40);
      now += 60_000;
      await ticks();
      const report = session.published.at(-1)!;
      assert.deepEqual(
        { level: report.level, component: report.component, msg: report.msg, suppressed: report.suppressed },
        { level: 'warn', component: REMOTE_LOG_COMPONENT, msg: '6 more entries suppressed (at most 20 per minute)', suppressed: 6 },
      );
      assert.ok(busiestWindow(session.published, 60_000) <= 20, `${busiestWindow(session.published, 60_000)} entries in one minute`);
      assert.deepEqual(remote.stats, { made: 41, sent: 41, rateLimited: 17, overflowed: 0, refused: 0, queued: 0 });
    } finally {
      remote.close();
    }
  });

  it('offline: keeps the last 50 entries, the oldest kept counting the ones that fell out; sends them in order on connect', async () => {
    let now = 1_700_000_000_000;
    const session = new FakeSession();
    session.state = 'disconnected';
    const remote = new RemoteLog({ config: { level: 'warn', maxPerMinute: 600, foldWindowS: 0.4 }, now: () => now });
    remote.attach(session);
    try {
      for (let i = 0; i < 80; i++)
        remote.add(entry(now++, `uplink: offline problem ${String.fromCharCode(65 + (i % 26))}${String.fromCharCode(65 + Math.floor(i / 26))}`));
      await ticks();
      assert.equal(session.published.length, 0);
      assert.equal(remote.stats.queued, 50);
      session.set('connected');
      await ticks();
      assert.equal(session.published.length, 50);
      assert.equal(session.published[0]!.suppressed, 30);
      assert.equal(session.published[0]!.msg, 'uplink: offline problem EB');
      assert.equal(sum(session.published, 'count') + sum(session.published, 'suppressed'), 80);
      for (let i = 1; i < 50; i++) assert.ok(session.published[i]!.ts > session.published[i - 1]!.ts);
    } finally {
      remote.close();
    }
  });

  it('sends warn and error only by default, never its own messages, and reports a refusing broker once, locally', async () => {
    const session = new FakeSession();
    const reports: Array<[LogLevel, string]> = [];
    const remote = new RemoteLog({ config: { level: 'warn', maxPerMinute: 20, foldWindowS: 60 }, report: (level, msg) => reports.push([level, msg]) });
    remote.attach(session);
    try {
      const now = Date.now();
      remote.add(entry(now, 'uplink: connected to mqtts://x', 'info'));
      remote.add(entry(now, 'status', 'debug'));
      remote.add(entry(now, 'logs: the broker refuses the log entries', 'warn', REMOTE_LOG_COMPONENT));
      remote.add(entry(now, 'outbox: 1 message(s) rejected: disk full', 'error'));
      await ticks();
      assert.deepEqual(
        session.published.map((e) => e.level),
        ['error'],
      );
      session.refuse = true;
      remote.add(entry(now, 'can0: one'));
      remote.add(entry(now, 'can0: two'));
      await ticks();
      assert.equal(remote.stats.refused, 2);
      assert.equal(reports.length, 1);
      assert.match(reports[0]![1], /^logs: the broker refuses the log entries on vehicles\/fake\/logs \(not authorized\); they are dropped$/);
    } finally {
      remote.close();
    }
  });

  it('a fold closed by force (flush at shutdown, eviction) goes out past a full rate window: no count is lost', async () => {
    let now = 1_700_000_000_000;
    const session = new FakeSession();
    const remote = new RemoteLog({ config: { level: 'warn', maxPerMinute: 3, foldWindowS: 60 }, now: () => now });
    remote.attach(session);
    try {
      // The minute's 3 entries, then 100 repeats of the first within its fold window.
      remote.add(entry(now, 'uplink: lost 1'));
      remote.add(entry(now, 'can0: down 1'));
      remote.add(entry(now, 'obd: no answer 1'));
      for (let i = 0; i < 100; i++) remote.add(entry((now += 10), `uplink: lost ${i}`));
      now += 1000;
      remote.flush();
      await ticks();
      assert.deepEqual(
        session.published.map((e) => [e.msg, e.count]),
        [
          ['uplink: lost 1', 1],
          ['can0: down 1', 1],
          ['obd: no answer 1', 1],
          ['uplink: lost 0', 100],
        ],
      );
      const folded = session.published[3]!;
      assert.deepEqual([folded.firstTs, folded.lastTs, folded.ts], [now - 1000 - 990, now - 1000, now]);
      assert.deepEqual(remote.stats, { made: 4, sent: 4, rateLimited: 0, overflowed: 0, refused: 0, queued: 0 });

      // Eviction: a new minute filled by 3 messages, one of them repeated 4 times; then new messages until the fold
      // slots (256) run out: the oldest window (the repeats) is closed early, and its count still goes out.
      now += 60_000;
      remote.add(entry(now, 'gps: no fix 1'));
      for (let i = 2; i <= 5; i++) remote.add(entry(now, `gps: no fix ${i}`));
      remote.add(entry(now, 'can0: x'));
      remote.add(entry(now, 'obd: y'));
      // 3 folds open; the 254th new message needs the 257th slot.
      for (let i = 0; i < 254; i++)
        remote.add(entry(now, `can1: problem ${String.fromCharCode(65 + (i % 26))}${String.fromCharCode(65 + Math.floor(i / 26))}`));
      await ticks();
      const evicted = session.published.filter((e) => e.msg.startsWith('gps:'));
      assert.deepEqual(
        evicted.map((e) => [e.msg, e.count]),
        [
          ['gps: no fix 1', 1],
          ['gps: no fix 2', 4],
        ],
      );
      assert.equal(evicted[1]!.suppressed, 253, 'the new messages dropped for the rate before it');
    } finally {
      remote.close();
    }
  });

  it('folds by level, component and text with the numbers masked', () => {
    assert.equal(foldKeyText('uplink: disconnected (localhost:8883), retrying in 1.5 s'), 'uplink: disconnected (localhost:#), retrying in # s');
  });
});

describe('remote log through mosquitto', () => {
  const fleet = withBroker();

  /** A logger (its lines kept in memory) feeding a remote log on a real session. */
  async function rig(deviceId: string, remoteOptions: Partial<ConstructorParameters<typeof RemoteLog>[0]> & { maxPerMinute: number; foldWindowS: number }) {
    const session = deviceSession(fleet.broker, fleet.pki, deviceId);
    const logger = new Logger({
      config: { level: 'info', verboseForS: 0, format: 'json', remote: { enabled: true, level: 'warn', maxPerMinute: 1, foldWindowS: 1 } },
      destination: { write: () => undefined },
    });
    const { maxPerMinute, foldWindowS, ...rest } = remoteOptions;
    const remote = new RemoteLog({ config: { level: 'warn', maxPerMinute, foldWindowS }, ...rest });
    logger.onEntry('warn', (e) => remote.add(e));
    remote.attach(session);
    session.start();
    await waitForState(session, 'connected');
    const entries = (): RemoteLogEntry[] => fleet.backend.on(deviceId, 'logs').map((m) => JSON.parse(m.payload.toString('utf8')) as RemoteLogEntry);
    return { session, logger, remote, entries };
  }

  it(
    'a burst of 500 identical warnings and 12 others: folded counts, never more than the limit per window, the drops counted',
    { timeout: 30_000 },
    async () => {
      const deviceId = 'car-burst';
      // The limit per 4 s instead of per minute, so that the test sees the window turn.
      const { session, logger, remote, entries } = await rig(deviceId, { maxPerMinute: 8, foldWindowS: 1, rateWindowMs: 4000 });
      try {
        const started = Date.now();
        const can0Log = logger.child('can0', { prefix: true });
        const obd = logger.child('obd');
        for (let i = 0; i < 500; i++) can0Log.warn(`frame 0x${(0x100 + (i % 3)).toString(16)} dropped: ${i} in queue`);
        for (let i = 0; i < 12; i++) obd.warn(`obd: ECU ${String.fromCharCode(65 + i)} is not answering`);
        logger.child('uplink').info('uplink: connected to somewhere');
        await fleet.backend.waitFor(() => entries().length >= 7, '7 log entries', 5000);
        await delay(500);
        // The first repeat at once and 7 of the others: the window's 8.
        assert.equal(entries().length, 8, JSON.stringify(entries()));
        await fleet.backend.waitFor(() => entries().length >= 9, 'the folded entry', 8000);
        const all = entries();
        const can0 = all.filter((e) => e.component === 'can0');
        assert.deepEqual(
          can0.map((e) => e.count),
          [1, 499],
        );
        assert.equal(can0[1]!.suppressed, 5);
        assert.ok(can0[1]!.ts - started >= 4000 - 50, `folded entry made ${can0[1]!.ts - started} ms after the burst`);
        assert.equal(can0[1]!.firstTs >= started && can0[1]!.lastTs <= started + 2000, true);
        assert.equal(all.filter((e) => e.component === 'obd').length, 7);
        assert.ok(all.every((e) => e.level === 'warn'));
        assert.ok(busiestWindow(all, 4000) <= 8, `${busiestWindow(all, 4000)} entries in one window`);
        // QoS 1 to the backend's QoS 1 subscription.
        assert.ok(fleet.backend.on(deviceId, 'logs').every((m) => m.qos === 1 && !m.retain));
        await delay(1500);
        assert.equal(entries().length, 9, 'nothing more: the repeats were all counted');
      } finally {
        remote.close();
        await session.close();
        logger.close();
      }
    },
  );

  it('entries made while the broker is down arrive once it is back: the last 50, in order, the rest counted', { timeout: 30_000 }, async () => {
    const deviceId = 'car-outage';
    const { session, logger, remote, entries } = await rig(deviceId, { maxPerMinute: 600, foldWindowS: 30 });
    try {
      const can0 = logger.child('can0');
      can0.warn('can0: before the outage');
      await fleet.backend.waitFor(() => entries().length === 1, 'the first entry', 5000);
      await fleet.broker.stop();
      await waitFor(() => session.state !== 'connected', 'the session to notice', 5000);
      const down = Date.now();
      for (let i = 0; i < 70; i++)
        can0.warn(`can0: during the outage, problem ${String.fromCharCode(65 + (i % 26))}${String.fromCharCode(65 + Math.floor(i / 26))}`);
      assert.equal(remote.stats.queued, 50);
      await delay(300);
      await fleet.broker.start();
      await waitForState(session, 'connected', 10_000);
      const up = Date.now();
      await fleet.backend.waitFor(() => entries().length >= 51, '51 entries', 10_000);
      await delay(300);
      const during = entries().slice(1);
      assert.equal(during.length, 50);
      assert.equal(during[0]!.suppressed, 20);
      assert.equal(during[0]!.msg, 'can0: during the outage, problem UA');
      for (const e of during) assert.ok(e.ts >= down && e.ts < up, `made at ${e.ts}, while the broker was down (${down}-${up})`);
      assert.equal(sum(during, 'count') + sum(during, 'suppressed'), 70);
    } finally {
      remote.close();
      await session.close();
      logger.close();
    }
  });

  it('runAgent hooks it to the uplink: a DBC warning at start reaches the backend, the info lines do not', { timeout: 30_000 }, async () => {
    const deviceId = 'car-agent-logs';
    const dir = makeTempDir('log-remote-');
    const dbc = path.join(dir, 'demo.dbc');
    copyFileSync(DEMO_DBC_PATH, dbc);
    appendFileSync(dbc, '\nFOO_ 1 2 3;\n');
    const config = parseDeviceConfig(
      {
        deviceId,
        buses: [{ name: 'can0', dbc, source: { type: 'sim', speed: 1, seed: 1 } }],
        collection: { rules: [{ name: 'speed', mode: 'periodic', intervalMs: 1000, signals: ['VehicleSpeed'] }] },
        outbox: { path: 'outbox.db' },
        uplink: { url: fleet.broker.url, ...fleet.pki.identityFiles(deviceId), keepalive: { adaptive: false } },
        logging: { verboseForS: 0, remote: { maxPerMinute: 5 } },
      },
      { file: 'inline', baseDir: dir },
    );
    const stop = new AbortController();
    const lines: string[] = [];
    const running = runAgent({ config, signal: stop.signal, output: { write: () => undefined }, warn: (m) => lines.push(m) });
    try {
      const logs = () => fleet.backend.on(deviceId, 'logs').map((m) => JSON.parse(m.payload.toString('utf8')) as RemoteLogEntry);
      await fleet.backend.waitFor(() => logs().length >= 1, 'the DBC warning on the logs topic', 10_000);
      const [first] = logs();
      // Logged before the session existed: kept, and sent once connected.
      assert.equal(first!.level, 'warn');
      assert.equal(first!.component, 'can0');
      assert.match(first!.msg, /^can0: demo\.dbc:\d+:1: warning: tolerated: unknown statement 'FOO_' skipped/);
      assert.equal(first!.count, 1);
      assert.ok(lines.includes(`uplink: connected to ${fleet.broker.url}`), lines.join('\n'));
      await delay(500);
      assert.equal(logs().length, 1, JSON.stringify(logs()));
    } finally {
      stop.abort();
      await running;
    }
  });
});

// The session type is what runAgent hands over: it must satisfy what the remote log needs.
const _sessionFits: (s: MqttSession) => RemoteLogSession = (s) => s;
void _sessionFits;
