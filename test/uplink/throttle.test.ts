/** The uplink's token buckets (messages per hour, payload bytes per hour) on an injected clock. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Throttle } from '../../src/uplink/throttle.js';

/** A clock the test moves by hand, in milliseconds. */
function manualClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

const near = (actual: number | undefined, expected: number): void => {
  assert.ok(actual !== undefined && Math.abs(actual - expected) < 1e-6, `${actual} is not ${expected}`);
};

describe('Throttle', () => {
  it('without budgets lets everything through and keeps no buckets', () => {
    const clock = manualClock();
    const throttle = new Throttle({ now: clock.now });
    for (let i = 0; i < 1000; i++) assert.equal(throttle.tryTake(1_000_000), 0);
    assert.deepEqual(throttle.state, { messages: null, bytes: null, deferrals: 0, limited: false, sentMessages: 1000, sentBytes: 1_000_000_000 });
  });

  it('messages per hour: a burst of burstFraction of the budget, then one message per 3600/budget seconds', () => {
    const clock = manualClock();
    const throttle = new Throttle({ messagesPerHour: 3600, now: clock.now }); // a bucket of 360, one token a second
    for (let i = 0; i < 360; i++) assert.equal(throttle.tryTake(10), 0, `message ${i} of the burst`);
    assert.equal(throttle.tryTake(10), 1000, 'the 361st waits one second');
    assert.equal(throttle.tryTake(10), 1000, 'asking again is no cheaper');
    let state = throttle.state;
    assert.deepEqual({ ...state.messages!, available: Math.round(state.messages!.available) }, { perHour: 3600, capacity: 360, available: 0 });
    assert.equal(state.limited, true);
    assert.equal(state.deferrals, 1, 'one deferral per episode, however often asked');
    assert.equal(state.sentMessages, 360);

    clock.advance(999);
    assert.equal(throttle.waitMs(10), 1);
    assert.equal(throttle.canSend(10), false);
    clock.advance(1);
    assert.equal(throttle.tryTake(10), 0);
    state = throttle.state;
    assert.equal(state.limited, false);
    near(state.messages!.available, 0);

    // A long pause refills to the capacity, not beyond.
    clock.advance(3_600_000);
    near(throttle.state.messages!.available, 360);
    assert.equal(throttle.state.bytes, null);
  });

  it('bytes per hour: what does not fit waits for the bytes it lacks', () => {
    const clock = manualClock();
    // 36 000 bytes an hour: 10 a second, 0.01 a millisecond; a bucket of 3600 bytes.
    const throttle = new Throttle({ bytesPerHour: 36_000, now: clock.now });
    assert.equal(throttle.tryTake(3000), 0);
    near(throttle.state.bytes!.available, 600);
    assert.equal(throttle.tryTake(1000), 40_000, '400 bytes short at 10 bytes a second');
    assert.equal(throttle.tryTake(600), 0, 'a smaller message that fits goes (the caller decides about the order)');
    clock.advance(40_000);
    assert.equal(throttle.tryTake(400), 0);
    assert.deepEqual([throttle.state.sentMessages, throttle.state.sentBytes, throttle.state.deferrals], [3, 4000, 1]);
  });

  it('lets a message larger than the whole byte bucket go when the bucket is full, and the debt delays the next', () => {
    const clock = manualClock();
    const throttle = new Throttle({ bytesPerHour: 36_000, now: clock.now }); // capacity 3600
    assert.equal(throttle.tryTake(100), 0);
    assert.equal(throttle.tryTake(10_000), 10_000, 'needs a full bucket: 100 bytes at 10 a second');
    clock.advance(10_000);
    assert.equal(throttle.tryTake(10_000), 0, 'late, not stuck');
    near(throttle.state.bytes!.available, 3600 - 10_000);
    assert.equal(throttle.waitMs(1), 640_100, 'the debt of 6400 bytes and one more byte');
  });

  it('with both budgets waits for the slower of the two', () => {
    const clock = manualClock();
    const throttle = new Throttle({ messagesPerHour: 36_000, bytesPerHour: 360_000, burstFraction: 0.001, now: clock.now });
    // Buckets of 36 messages (one per 100 ms) and 360 bytes (one per 10 ms).
    assert.equal(throttle.tryTake(350), 0);
    assert.equal(throttle.waitMs(100), 900, 'bytes: 90 short, 900 ms');
    assert.equal(throttle.waitMs(5), 0);
    for (let i = 0; i < 35; i++) throttle.take(0);
    assert.equal(throttle.waitMs(5), 100, 'messages: the bucket of 36 is empty, 100 ms to the next');
    assert.equal(throttle.waitMs(100), 900);
  });

  it('a wait computed on an awkward rate is exactly enough (no rounding shortfall)', () => {
    const clock = manualClock();
    // 7 per hour with a bucket of one: 514 285.7... ms per token, a rate that is not exact in binary.
    const throttle = new Throttle({ messagesPerHour: 7, burstFraction: 1 / 7, now: clock.now });
    for (let i = 0; i < 50; i++) {
      const wait = throttle.tryTake(1);
      if (wait > 0) {
        clock.advance(wait);
        assert.equal(throttle.tryTake(1), 0, `message ${i}: after waiting ${wait} ms it must go`);
      }
    }
    assert.equal(throttle.state.sentMessages, 50);
  });

  it('ignores a clock that steps back', () => {
    const clock = manualClock();
    const throttle = new Throttle({ messagesPerHour: 3600, burstFraction: 1 / 3600, now: clock.now });
    assert.equal(throttle.tryTake(1), 0);
    clock.advance(-5000);
    assert.equal(throttle.waitMs(1), 1000, 'no refill, and no extra wait');
    clock.advance(5000 + 1000);
    assert.equal(throttle.waitMs(1), 0);
  });

  it('refuses nonsense budgets', () => {
    assert.throws(() => new Throttle({ messagesPerHour: -1 }), /messagesPerHour must be a positive number or 0/);
    assert.throws(() => new Throttle({ bytesPerHour: Number.NaN }), /bytesPerHour/);
    assert.throws(() => new Throttle({ messagesPerHour: 10, burstFraction: 0 }), /burstFraction must be in \(0, 1\]/);
    assert.throws(() => new Throttle({ messagesPerHour: 10, burstFraction: 1.5 }), /burstFraction/);
    assert.equal(new Throttle({ messagesPerHour: 0, bytesPerHour: 0 }).state.messages, null);
  });
});
