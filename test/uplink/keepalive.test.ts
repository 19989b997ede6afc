/**
 * The adaptive heartbeat on a real connection (MqttSession to a real mosquitto on loopback, which never forgets a
 * flow): heartbeats go out after the learned idle interval and are answered, MQTT.js's own keepalive stays silent,
 * the socket's TCP keepalive follows the interval, the broker's Server Keep Alive caps it, and a frozen broker is a
 * dead link, judged as lost coverage or as a forgotten flow by whether the immediate reconnection works. The carrier
 * NAT itself is in test/net/keepalive.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { HeartbeatSettings } from '../../src/uplink/heartbeat.js';
import { AdaptiveHeartbeat, type HeartbeatEvent } from '../../src/uplink/keepalive.js';
import { LinkMemory } from '../../src/uplink/link-memory.js';
import type { MqttSession, SessionStateChange } from '../../src/uplink/session.js';
import { withBroker } from '../support/broker-fixture.js';
import { Mosquitto, TestPki, deviceSession, waitForState } from '../support/mosquitto.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

const FAST: HeartbeatSettings = {
  minIntervalS: 0.25,
  maxIntervalS: 2,
  initialIntervalS: 0.5,
  stepFactor: 2,
  marginFraction: 0.1,
  holdCycles: 1,
  settledCycles: 0,
};
const LIVENESS_MIN_S = 1;

interface Watched {
  session: MqttSession;
  heartbeat: AdaptiveHeartbeat;
  events: (HeartbeatEvent & { t: number })[];
  states: (SessionStateChange & { t: number })[];
}

function watch(broker: Mosquitto, pki: TestPki, deviceId: string, heartbeat: AdaptiveHeartbeat): Watched {
  const session = deviceSession(broker, pki, deviceId, { heartbeat, connectTimeoutMs: 1500, reconnect: { initialMs: 100, maxMs: 400 } });
  const events: Watched['events'] = [];
  const states: Watched['states'] = [];
  heartbeat.onEvent((e) => events.push({ ...e, t: performance.now() }));
  session.onStateChange((c) => states.push({ ...c, t: performance.now() }));
  return { session, heartbeat, events, states };
}

function of<K extends HeartbeatEvent['type']>(w: Watched, type: K): Extract<HeartbeatEvent & { t: number }, { type: K }>[] {
  return w.events.filter((e): e is Extract<HeartbeatEvent & { t: number }, { type: K }> => e.type === type);
}

describe('AdaptiveHeartbeat on a real broker', () => {
  const pki = new TestPki();
  const sessions: MqttSession[] = [];
  const fleet = withBroker({ pki, extraConfig: ['max_keepalive 65535'], backend: false });
  fleet.beforeStop(async () => {
    for (const s of sessions) await s.close();
  });

  it('sends a heartbeat after each idle interval, learns up to the ceiling, and remembers it per network', async () => {
    const file = path.join(makeTempDir('keepalive-'), 'link-memory.db');
    const memory = LinkMemory.open(file);
    const heartbeat = new AdaptiveHeartbeat({ settings: FAST, livenessMinS: LIVENESS_MIN_S, memory, network: 'lo' });
    const w = watch(fleet.broker, pki, 'hb-learn', heartbeat);
    sessions.push(w.session);
    w.session.start();
    await waitForState(w.session, 'connected');
    await waitFor(() => heartbeat.status().phase === 'settled' && of(w, 'heartbeat').length >= 5, 'the heartbeat to settle at the ceiling', 15_000);

    const beats = of(w, 'heartbeat');
    // 0.5 s, then 1 s, then the 2 s ceiling, each one idle period after the previous packet.
    // Each probe lengthens the idle period measured, a little over the interval (timers are never early).
    const learned = beats.slice(0, 4).map((b) => b.intervalS);
    // The probe after 0.5 s survived, so the next is twice the idle time measured (a late timer makes it a bit more).
    assert.ok(learned[0]! >= 1 && Math.abs(learned[0]! - Math.min(2, 2 * beats[0]!.idleS)) < 0.01, `${learned.join(', ')} after ${beats[0]!.idleS} s idle`);
    assert.deepEqual(learned.slice(1), [2, 2, 2]);
    for (const [i, expected] of [0.5, 1, 2, 2].entries()) {
      assert.ok(beats[i]!.idleS >= expected && beats[i]!.idleS < expected + 0.25, `heartbeat ${i} after ${beats[i]!.idleS} s idle, expected ${expected}`);
      assert.ok(beats[i]!.heartbeat);
      assert.ok(beats[i]!.rttMs >= 0 && beats[i]!.rttMs < 500, `rtt ${beats[i]!.rttMs} ms`);
    }
    const status = heartbeat.status();
    assert.equal(status.intervalS, 2);
    assert.equal(status.ceilingS, 2);
    assert.equal(status.deadLinks, 0);
    assert.ok(status.rttMs !== null && status.rttMs < 500);
    assert.deepEqual(
      status.history.map((h) => [h.fromS, h.reason, h.phase]),
      [
        [0.5, 'survived', 'probe'],
        [learned[0], 'survived', 'probe'],
        [2, 'settled', 'settled'],
      ],
    );

    // The keepalive announced at CONNECT is the ceiling; MQTT.js sent no ping of its own between the heartbeats.
    assert.match(fleet.broker.log, /New client connected from \S+ as hb-learn \(p5, c0, k2,/);
    const pingreqs = (fleet.broker.log.match(/Received PINGREQ from hb-learn\b/g) ?? []).length;
    const answered = of(w, 'heartbeat').length;
    assert.ok(pingreqs === answered || pingreqs === answered + 1, `${pingreqs} PINGREQs at the broker, ${answered} heartbeats answered`);

    // TCP keepalive on the socket, with the heartbeat's idle time.
    const ss = execFileSync('ss', ['-tnoH', 'state', 'established', `( dport = :${fleet.broker.port} )`], { encoding: 'utf8' });
    // ss leaves the time out when the timer is due this very moment.
    const timers = [...ss.matchAll(/timer:\(keepalive,([\d.]*)(ms|sec)?,\d+\)/g)].map((m) => Number(m[1] || 0) * (m[2] === 'ms' ? 0.001 : 1));
    assert.equal(timers.length, 1, `sockets to the broker: ${ss}`);
    assert.ok(timers[0]! >= 0 && timers[0]! <= 2, `TCP keepalive due in ${timers[0]} s: ${ss}`);

    // Remembered under this network; another network starts from the safe default, and coming back restores it.
    assert.deepEqual(
      { ...memory.recall('lo')!, updatedAt: 0 },
      { network: 'lo', intervalS: 2, lastGoodS: memory.recall('lo')!.lastGoodS, knownBadS: null, phase: 'settled', cyclesLeft: 0, updatedAt: 0 },
    );
    heartbeat.setNetwork('wlan0/HomeWifi');
    assert.equal(heartbeat.intervalS, 0.5);
    assert.deepEqual(of(w, 'network').at(-1), { ...of(w, 'network').at(-1)!, network: 'wlan0/HomeWifi', intervalS: 0.5, remembered: false });
    heartbeat.setNetwork('lo');
    assert.equal(heartbeat.intervalS, 2);
    assert.equal(of(w, 'network').at(-1)!.remembered, true);
    await w.session.close();
    memory.close();
    // Next ignition: a new agent on the same file starts from what was learned.
    const reopened = LinkMemory.open(file);
    const next = new AdaptiveHeartbeat({ settings: FAST, livenessMinS: LIVENESS_MIN_S, memory: reopened, network: 'lo' });
    assert.equal(next.intervalS, 2);
    assert.equal(next.status().phase, 'settled');
    reopened.close();
  });

  it("takes the broker's Server Keep Alive as the ceiling", async () => {
    const capped = await Mosquitto.start({ pki, extraConfig: ['max_keepalive 10'] });
    try {
      const heartbeat = new AdaptiveHeartbeat({ settings: { ...FAST, maxIntervalS: 30 }, livenessMinS: LIVENESS_MIN_S });
      const w = watch(capped, pki, 'hb-capped', heartbeat);
      w.session.start();
      await waitForState(w.session, 'connected');
      assert.equal(heartbeat.status().ceilingS, 10);
      assert.match(capped.log, /New client connected from \S+ as hb-capped \(p5, c0, k30,/);
      await w.session.close();
    } finally {
      await capped.stop();
    }
  });

  it('a frozen broker is a dead link within the interval plus the liveness timeout; a failed reconnection means lost coverage', async () => {
    const heartbeat = new AdaptiveHeartbeat({ settings: { ...FAST, initialIntervalS: 1, maxIntervalS: 1 }, livenessMinS: LIVENESS_MIN_S });
    const w = watch(fleet.broker, pki, 'hb-frozen', heartbeat);
    sessions.push(w.session);
    w.session.start();
    await waitForState(w.session, 'connected');
    await waitFor(() => of(w, 'heartbeat').length >= 1, 'a first heartbeat', 5000);
    const frozenAt = performance.now();
    fleet.broker.pause();
    try {
      await waitFor(() => of(w, 'dead-link').length === 1, 'the dead link', 5000);
      const dead = of(w, 'dead-link')[0]!;
      const waited = (dead.t - frozenAt) / 1000;
      const bound = 1 + dead.detection.timeoutMs / 1000;
      // Two timers stand between the freeze and the verdict; each may be late on a busy machine, never early.
      assert.ok(waited <= bound + 1, `detected after ${waited.toFixed(2)} s, more than interval + timeout = ${bound} s`);
      // The floor, unless the first round trip was slow (over ~80 ms on a busy machine) and the estimate is above it.
      assert.ok(dead.detection.timeoutMs >= LIVENESS_MIN_S * 1000, `timeout ${dead.detection.timeoutMs} ms`);
      assert.equal(dead.detection.heartbeat, true);
      // Reconnected at once, not after a backoff.
      const lost = w.states.find((s) => s.state === 'disconnected' && s.error?.kind === 'dead-link');
      assert.equal(lost?.retryInMs, 0);
      assert.match(lost.error!.message, /no answer to a heartbeat after 1\.\d s idle within \d+ ms/);
      // The broker does not answer the reconnection either: that is lost coverage, not the NAT.
      await waitFor(() => of(w, 'verdict').length === 1, 'the verdict', 5000);
      assert.equal(of(w, 'verdict')[0]!.detection.verdict, 'coverage');
      assert.equal(heartbeat.status().knownBadS, null);
    } finally {
      fleet.broker.resume();
    }
    await waitForState(w.session, 'connected', 5000);
    assert.equal(heartbeat.intervalS, 1);
    assert.equal(heartbeat.status().deadLinks, 1);
    await w.session.close();
  });

  it('when the reconnection works at once, the unanswered heartbeat means the idle flow was forgotten: it learns from it', async () => {
    const heartbeat = new AdaptiveHeartbeat({ settings: FAST, livenessMinS: LIVENESS_MIN_S });
    const w = watch(fleet.broker, pki, 'hb-forgotten', heartbeat);
    sessions.push(w.session);
    // Frozen for one heartbeat only, as a NAT that forgot the flow: the new connection gets through.
    heartbeat.onEvent((e) => {
      if (e.type === 'dead-link') fleet.broker.resume();
    });
    w.session.start();
    await waitForState(w.session, 'connected');
    // 0.5 and 1 s survive; the 2 s heartbeat meets the frozen broker.
    await waitFor(() => of(w, 'heartbeat').length === 2, 'two heartbeats', 5000);
    fleet.broker.pause();
    await waitFor(() => of(w, 'verdict').length === 1, 'the verdict', 8000);
    const verdict = of(w, 'verdict')[0]!.detection;
    assert.equal(verdict.verdict, 'nat-expired');
    assert.ok(verdict.idleS >= 2 && verdict.idleS < 2.3, `${verdict.idleS}`);
    const status = heartbeat.status();
    assert.equal(status.knownBadS, verdict.idleS);
    assert.equal(status.phase, 'hold');
    assert.ok(Math.abs(status.intervalS - status.lastGoodS! * 0.9) < 0.001, `${status.intervalS} is not 90 % of ${status.lastGoodS}`);
    assert.equal(status.history.at(-1)!.reason, 'expired');
    await waitForState(w.session, 'connected', 5000);
    await w.session.close();
  });
});
