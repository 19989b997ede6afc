/**
 * The heartbeat learner (src/uplink/heartbeat.ts), the liveness timeout (liveness.ts) and the per-network memory
 * (link-memory.ts, a real SQLite file). The learner is driven against a model of a NAT: a heartbeat after an idle
 * period shorter than the NAT's timeout is answered, a longer one finds the flow forgotten.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { HEARTBEAT_HISTORY, HeartbeatLearner, type HeartbeatSettings } from '../../src/uplink/heartbeat.js';
import { LinkMemory } from '../../src/uplink/link-memory.js';
import { LIVENESS_RTO_FACTOR, RoundTrip } from '../../src/uplink/liveness.js';
import { makeTempDir } from '../support/temp.js';

const DEFAULTS: HeartbeatSettings = {
  minIntervalS: 20,
  maxIntervalS: 1200,
  initialIntervalS: 60,
  stepFactor: 1.5,
  marginFraction: 0.1,
  holdCycles: 3,
  settledCycles: 0,
};

/** A clock that advances by the heartbeat intervals the test runs, in Unix milliseconds. */
function fakeClock(start = 1_700_000_000_000): { now: () => number; advance: (s: number) => void } {
  let t = start;
  return { now: () => t, advance: (s) => (t += s * 1000) };
}

interface Cycle {
  intervalS: number;
  survived: boolean;
}

/** Runs `cycles` heartbeats against a NAT that forgets a flow idle for `natTimeoutS` or longer. */
function runAgainstNat(learner: HeartbeatLearner, natTimeoutS: number, cycles: number): Cycle[] {
  const out: Cycle[] = [];
  for (let i = 0; i < cycles; i++) {
    const intervalS = learner.intervalS;
    const survived = intervalS < natTimeoutS;
    if (survived) learner.answered(intervalS);
    else learner.expired(intervalS);
    out.push({ intervalS, survived });
  }
  return out;
}

/** The index of the first cycle from which the learner stays settled. */
function settledFrom(learner: HeartbeatLearner, natTimeoutS: number, limit: number): number {
  for (let i = 0; i < limit; i++) {
    if (learner.phase === 'settled') return i;
    runAgainstNat(learner, natTimeoutS, 1);
  }
  return -1;
}

describe('HeartbeatLearner', () => {
  it('starts from the initial interval and lengthens it by the step factor after each survived idle period', () => {
    const clock = fakeClock();
    const learner = new HeartbeatLearner(DEFAULTS, clock.now);
    assert.equal(learner.intervalS, 60);
    assert.equal(learner.phase, 'probe');
    const cycles = runAgainstNat(learner, 10_000, 4);
    assert.deepEqual(
      cycles.map((c) => c.intervalS),
      [60, 90, 135, 202.5],
    );
    assert.equal(learner.intervalS, 303.75);
    assert.equal(learner.lastGoodS, 202.5);
    assert.equal(learner.knownBadS, null);
    assert.deepEqual(
      learner.history.map((h) => [h.fromS, h.toS, h.reason, h.phase]),
      [
        [60, 90, 'survived', 'probe'],
        [90, 135, 'survived', 'probe'],
        [135, 202.5, 'survived', 'probe'],
        [202.5, 303.75, 'survived', 'probe'],
      ],
    );
    assert.equal(learner.history[0]!.at, 1_700_000_000_000);
  });

  it('after the flow died, goes back to the last good interval minus the margin, holds it, then probes halfway', () => {
    const learner = new HeartbeatLearner({ ...DEFAULTS, holdCycles: 2 });
    // NAT timeout 100 s: 60 and 90 survive, 135 dies.
    const cycles = runAgainstNat(learner, 100, 3);
    assert.deepEqual(cycles, [
      { intervalS: 60, survived: true },
      { intervalS: 90, survived: true },
      { intervalS: 135, survived: false },
    ]);
    assert.equal(learner.phase, 'hold');
    assert.equal(learner.intervalS, 81);
    assert.equal(learner.knownBadS, 135);
    assert.deepEqual(learner.history.at(-1), { ...learner.history.at(-1)!, fromS: 135, toS: 81, reason: 'expired', phase: 'hold' });
    // Two held heartbeats at 81 s, then a probe halfway between 90 (good) and 135 (bad).
    runAgainstNat(learner, 100, 1);
    assert.equal(learner.intervalS, 81);
    assert.equal(learner.phase, 'hold');
    runAgainstNat(learner, 100, 1);
    assert.equal(learner.phase, 'probe');
    assert.equal(learner.intervalS, 112.5);
    assert.equal(learner.history.at(-1)!.reason, 'hold-over');
  });

  for (const natTimeoutS of [25, 37, 50, 64, 90, 180, 300, 600, 1000]) {
    it(`with a NAT timeout of ${natTimeoutS} s settles between 80 % and 100 % of it within 25 heartbeats, and stays`, () => {
      const learner = new HeartbeatLearner(DEFAULTS);
      const from = settledFrom(learner, natTimeoutS, 25);
      assert.ok(from >= 0, `not settled after 25 heartbeats: ${JSON.stringify(learner.history)}`);
      const share = learner.intervalS / natTimeoutS;
      assert.ok(share >= 0.8 && share < 1, `settled at ${learner.intervalS} s, ${(share * 100).toFixed(1)} % of ${natTimeoutS} s`);
      const later = runAgainstNat(learner, natTimeoutS, 200);
      assert.ok(
        later.every((c) => c.survived && c.intervalS === learner.intervalS),
        'a settled heartbeat failed or moved',
      );
    });
  }

  it('counts the failures it costs: each probe past the NAT timeout is one, at most five to settle from 60 s', () => {
    for (const natTimeoutS of [25, 50, 100, 333, 1000]) {
      const learner = new HeartbeatLearner(DEFAULTS);
      const cycles = runAgainstNat(learner, natTimeoutS, 40);
      const failures = cycles.filter((c) => !c.survived).length;
      assert.ok(failures <= 5, `${failures} failures for ${natTimeoutS} s`);
      assert.equal(learner.phase, 'settled');
    }
  });

  it('never goes below the minimum, even when the NAT forgets faster than that', () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    const cycles = runAgainstNat(learner, 15, 30);
    assert.ok(
      cycles.every((c) => c.intervalS >= 20),
      JSON.stringify(cycles),
    );
    assert.equal(learner.intervalS, 20);
  });

  it('stops at the maximum when the network never forgets, without a single failure', () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    const cycles = runAgainstNat(learner, Infinity, 20);
    assert.ok(cycles.every((c) => c.survived && c.intervalS <= 1200));
    assert.equal(learner.intervalS, 1200);
    assert.equal(learner.phase, 'settled');
    assert.equal(learner.history.at(-1)!.reason, 'settled');
  });

  it("caps the interval at the broker's Server Keep Alive without forgetting what it learned", () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    runAgainstNat(learner, Infinity, 20);
    learner.setServerKeepAlive(300);
    assert.equal(learner.intervalS, 300);
    assert.equal(learner.ceilingS, 300);
    assert.deepEqual(learner.history.at(-1), { ...learner.history.at(-1)!, fromS: 1200, toS: 300, reason: 'ceiling' });
    runAgainstNat(learner, Infinity, 3);
    assert.equal(learner.intervalS, 300);
    // A broker without the property (or 0) lifts the cap again.
    learner.setServerKeepAlive(null);
    assert.equal(learner.intervalS, 1200);
    learner.setServerKeepAlive(0);
    assert.equal(learner.intervalS, 1200);
  });

  it('a probe capped by the Server Keep Alive settles there', () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    learner.setServerKeepAlive(100);
    const cycles = runAgainstNat(learner, Infinity, 5);
    assert.deepEqual(
      cycles.map((c) => c.intervalS),
      [60, 90, 100, 100, 100],
    );
    assert.equal(learner.phase, 'settled');
  });

  it('one failure at an interval already proven changes nothing; two in a row start learning over below it', () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    settledFrom(learner, 100, 30);
    const settled = learner.intervalS;
    const changes = learner.history.length;
    // A lost ping, a short dead zone: the reconnection succeeded, but this interval has worked many times.
    learner.expired(settled);
    assert.equal(learner.intervalS, settled);
    assert.equal(learner.phase, 'settled');
    assert.equal(learner.history.length, changes);
    // An answered heartbeat in between clears the strike.
    learner.answered(settled);
    learner.expired(settled);
    assert.equal(learner.intervalS, settled);
    // Two in a row: the path has a shorter timeout now (another NAT on the way).
    learner.expired(settled);
    assert.equal(learner.phase, 'probe');
    assert.equal(learner.lastGoodS, null);
    assert.equal(learner.knownBadS, settled);
    assert.equal(learner.intervalS, Math.max(20, settled / 1.5));
    assert.equal(learner.history.at(-1)!.reason, 'path-changed');
    // And it settles again, under the new timeout.
    const from = settledFrom(learner, 60, 25);
    assert.ok(from >= 0);
    assert.ok(learner.intervalS >= 48 && learner.intervalS < 60, `${learner.intervalS}`);
  });

  it('a failure of the very first heartbeat steps down from it, unproven, and learns upwards from there', () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    learner.expired(60);
    assert.equal(learner.phase, 'probe');
    assert.equal(learner.intervalS, 40);
    assert.equal(learner.knownBadS, 60);
    learner.answered(40);
    // Halfway between 40 (good) and 60 (bad), not 40 × 1.5.
    assert.equal(learner.intervalS, 50);
  });

  it('an idle period that survived past the known-bad interval clears it (that failure was not the NAT)', () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    runAgainstNat(learner, 100, 3);
    assert.equal(learner.knownBadS, 135);
    // A late timer: the heartbeat went after 140 s and was answered.
    learner.answered(140);
    assert.equal(learner.knownBadS, null);
    assert.equal(learner.lastGoodS, 140);
  });

  it('without a hold, probes again at once after a failure', () => {
    const learner = new HeartbeatLearner({ ...DEFAULTS, holdCycles: 0 });
    runAgainstNat(learner, 100, 3);
    assert.equal(learner.phase, 'probe');
    assert.equal(learner.intervalS, 112.5);
    assert.equal(learner.history.at(-1)!.reason, 'expired');
  });

  it('when long settled, forgets the known-bad interval and tries one step longer (settledCycles)', () => {
    const learner = new HeartbeatLearner({ ...DEFAULTS, settledCycles: 5, holdCycles: 1 });
    assert.ok(settledFrom(learner, 100, 30) >= 0);
    const settled = learner.intervalS;
    const lastGood = learner.lastGoodS!;
    runAgainstNat(learner, 100, 4);
    assert.equal(learner.phase, 'settled');
    runAgainstNat(learner, 100, 1);
    assert.equal(learner.phase, 'probe');
    assert.equal(learner.knownBadS, null);
    assert.equal(learner.intervalS, lastGood * 1.5);
    assert.equal(learner.history.at(-1)!.reason, 'reprobe');
    // The network got no more patient: the probe fails, and it is back where it was within a few heartbeats.
    assert.ok(settledFrom(learner, 100, 20) >= 0);
    assert.ok(Math.abs(learner.intervalS - settled) / settled < 0.1, `${learner.intervalS} vs ${settled}`);
  });

  it('restores a remembered network and round-trips its snapshot; ignores a memory outside the bounds', () => {
    const learner = new HeartbeatLearner(DEFAULTS);
    settledFrom(learner, 300, 30);
    const snapshot = learner.snapshot();
    const again = new HeartbeatLearner(DEFAULTS, Date.now, snapshot);
    assert.equal(again.restored, true);
    assert.deepEqual(again.snapshot(), snapshot);
    assert.equal(again.intervalS, learner.intervalS);
    assert.equal(again.phase, 'settled');
    // Remembered under other bounds (or damaged): learning starts from the safe default.
    const narrow = { ...DEFAULTS, maxIntervalS: 200, initialIntervalS: 60 };
    const fresh = new HeartbeatLearner(narrow, Date.now, snapshot);
    assert.equal(fresh.restored, false);
    assert.equal(fresh.intervalS, 60);
    assert.equal(new HeartbeatLearner(DEFAULTS, Date.now, { ...snapshot, phase: 'bogus' as 'probe' }).restored, false);
    assert.equal(new HeartbeatLearner(DEFAULTS, Date.now, { ...snapshot, lastGoodS: Number.NaN }).restored, false);
  });

  it('keeps the last HEARTBEAT_HISTORY changes, stamped by the injected clock', () => {
    const clock = fakeClock(0);
    const learner = new HeartbeatLearner({ ...DEFAULTS, minIntervalS: 1, initialIntervalS: 1, maxIntervalS: 65_535, stepFactor: 1.1 }, clock.now);
    for (let i = 0; i < 40; i++) {
      clock.advance(learner.intervalS);
      learner.answered(learner.intervalS);
    }
    assert.equal(learner.history.length, HEARTBEAT_HISTORY);
    const ats = learner.history.map((h) => h.at);
    assert.deepEqual(
      ats,
      [...ats].sort((a, b) => a - b),
    );
    assert.equal(learner.history.at(-1)!.at, clock.now());
    assert.equal(learner.history.at(-1)!.toS, Math.round(learner.intervalS * 1000) / 1000);
  });

  it('refuses settings that cannot work, naming each', () => {
    assert.throws(() => new HeartbeatLearner({ ...DEFAULTS, initialIntervalS: 10 }), /minIntervalS <= initialIntervalS <= maxIntervalS/);
    assert.throws(() => new HeartbeatLearner({ ...DEFAULTS, stepFactor: 1 }), /stepFactor must be above 1/);
    assert.throws(() => new HeartbeatLearner({ ...DEFAULTS, marginFraction: 1 }), /marginFraction/);
    assert.throws(() => new HeartbeatLearner({ ...DEFAULTS, holdCycles: 1.5 }), /holdCycles/);
    assert.throws(() => new HeartbeatLearner({ ...DEFAULTS, minIntervalS: 0, initialIntervalS: 0 }), /minIntervalS must be positive/);
  });
});

describe('RoundTrip (liveness timeout)', () => {
  it("starts at the floor, then follows RFC 6298's smoothed RTT and variation", () => {
    const rtt = new RoundTrip();
    assert.equal(rtt.timeoutMs(5000), 5000);
    assert.equal(rtt.smoothedMs, null);
    rtt.sample(200);
    assert.equal(rtt.smoothedMs, 200);
    assert.equal(rtt.variationMs, 100);
    rtt.sample(400);
    // rttvar = 3/4·100 + 1/4·|200 − 400| = 125; srtt = 7/8·200 + 1/8·400 = 225
    assert.equal(rtt.variationMs, 125);
    assert.equal(rtt.smoothedMs, 225);
    assert.equal(rtt.timeoutMs(0), LIVENESS_RTO_FACTOR * (225 + 4 * 125));
    assert.equal(rtt.timeoutMs(5000), 5000);
    assert.equal(rtt.samples, 2);
  });

  it('grows on a slow, jittery link beyond the floor, and shrinks back when it calms', () => {
    const rtt = new RoundTrip();
    for (const ms of [800, 2400, 600, 3000, 900]) rtt.sample(ms);
    const stormy = rtt.timeoutMs(5000);
    assert.ok(stormy > 5000, `${stormy}`);
    for (let i = 0; i < 60; i++) rtt.sample(50);
    assert.equal(rtt.timeoutMs(5000), 5000);
  });

  it('ignores samples that are not durations', () => {
    const rtt = new RoundTrip();
    rtt.sample(Number.NaN);
    rtt.sample(-1);
    assert.equal(rtt.samples, 0);
  });
});

describe('LinkMemory', () => {
  it('remembers each network across reopening the file, most recent first', () => {
    const file = path.join(makeTempDir('link-memory-'), 'sub', 'link-memory.db');
    const memory = LinkMemory.open(file);
    assert.equal(memory.recall('wwan0'), undefined);
    memory.remember('wwan0', { intervalS: 43.2, lastGoodS: 48, knownBadS: 50.6, phase: 'settled', cyclesLeft: 0 }, 1000);
    memory.remember('wlan0/HomeWifi', { intervalS: 60, lastGoodS: null, knownBadS: null, phase: 'probe', cyclesLeft: 0 }, 2000);
    memory.remember('wwan0', { intervalS: 45, lastGoodS: 50, knownBadS: 50.6, phase: 'settled', cyclesLeft: 7 }, 3000);
    memory.close();
    const again = LinkMemory.open(file);
    assert.deepEqual(again.recall('wwan0'), {
      network: 'wwan0',
      intervalS: 45,
      lastGoodS: 50,
      knownBadS: 50.6,
      phase: 'settled',
      cyclesLeft: 7,
      updatedAt: 3000,
    });
    assert.deepEqual(
      again.networks().map((n) => n.network),
      ['wwan0', 'wlan0/HomeWifi'],
    );
    assert.equal(again.recall('wlan0/HomeWifi')!.lastGoodS, null);
    again.close();
  });

  it('moves a file that is not a database aside and starts afresh, saying so', () => {
    const dir = makeTempDir('link-memory-');
    const file = path.join(dir, 'link-memory.db');
    writeFileSync(file, 'this is not a database, it is a text file long enough to have a header'.repeat(20));
    const problems: string[] = [];
    const memory = LinkMemory.open(file, (m) => problems.push(m));
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /is unusable .* moved it aside as .*link-memory\.db\.corrupt-/);
    assert.ok(readdirSync(dir).some((f) => f.startsWith('link-memory.db.corrupt-')));
    memory.remember('wwan0', { intervalS: 30, lastGoodS: 30, knownBadS: null, phase: 'probe', cyclesLeft: 0 });
    assert.equal(memory.recall('wwan0')!.intervalS, 30);
    memory.close();
    assert.ok(existsSync(file));
  });
});
