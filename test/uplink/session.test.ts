/**
 * MqttSession against a real mosquitto (TLS only, client certificates, an ACL): the backoff, the TLS refusals in both
 * directions, the retained birth and last will on `status`, and the persistent session that keeps commands for a
 * device out of coverage.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { loadIdentity } from '../../src/pki/identity.js';
import { MqttSession, UplinkError, backoffDelay, type SessionStateChange } from '../../src/uplink/session.js';
import { withBroker } from '../support/broker-fixture.js';
import { BackendSubscriber, Mosquitto, TestPki, deviceSession, freePort, waitForState } from '../support/mosquitto.js';
import { seededRandom } from '../support/random.js';
import { delay, waitFor } from '../support/wait.js';

function json(payload: Buffer): Record<string, unknown> {
  return JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
}

/** The first 'disconnected' change of the session (the reason its attempt failed). */
function firstFailure(session: MqttSession, timeoutMs = 5000): Promise<SessionStateChange> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no failed attempt within ${timeoutMs} ms (state ${session.state})`)), timeoutMs);
    const off = session.onStateChange((change) => {
      if (change.state !== 'disconnected') return;
      clearTimeout(timer);
      off();
      resolve(change);
    });
  });
}

describe('backoffDelay', () => {
  it('doubles the cap from initialMs up to maxMs and draws the delay below it (full jitter)', () => {
    const half = (): number => 0.5;
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 60].map((n) => backoffDelay(n, 1000, 30_000, half)),
      [500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000],
    );
    // The extremes of the draw: 0 (straight away) and just under the cap, never the cap itself.
    assert.equal(
      backoffDelay(3, 1000, 30_000, () => 0),
      0,
    );
    assert.equal(
      backoffDelay(3, 1000, 30_000, () => 0.999_999),
      7999,
    );
    // A huge attempt count neither overflows nor exceeds the cap.
    assert.equal(
      backoffDelay(10_000, 1000, 300_000, () => 0.999_999),
      299_999,
    );
  });

  it('with a seeded random gives the seeded sequence, each within its cap', () => {
    const random = seededRandom(42);
    const delays = Array.from({ length: 8 }, (_, n) => backoffDelay(n, 100, 1600, random));
    const replay = seededRandom(42);
    const caps = [100, 200, 400, 800, 1600, 1600, 1600, 1600];
    assert.deepEqual(
      delays,
      caps.map((cap) => Math.floor(replay() * cap)),
    );
    delays.forEach((d, n) => assert.ok(d >= 0 && d < caps[n]!, `attempt ${n}: ${d} not in [0, ${caps[n]})`));
    // Jitter: the delays are not the caps in lock-step (the seeded values are known to spread).
    assert.notDeepEqual(delays, caps);
  });
});

describe('MqttSession', () => {
  const pki = new TestPki();
  /** Same CN as the real CA: only the key decides, as with an attacker's look-alike CA. */
  const rogue = new TestPki('uplink test CA');
  const fleet = withBroker({ pki });

  it('refuses a plain mqtt:// URL, a device ID that is not a topic level, and a certificate of another device', () => {
    const identity = loadIdentity(pki.identityFiles('car-a'));
    assert.throws(() => new MqttSession({ url: `mqtt://localhost:${fleet.broker.port}`, deviceId: 'car-a', identity }), /needs TLS/);
    assert.throws(() => new MqttSession({ url: fleet.broker.url, deviceId: 'car/a', identity }), /cannot be a device ID/);
    assert.throws(
      () => new MqttSession({ url: fleet.broker.url, deviceId: 'car-b', identity }),
      (err: unknown) => err instanceof UplinkError && err.kind === 'identity' && /is for 'car-a', not for device 'car-b'/.test(err.message),
    );
  });

  it('watch: messages on the topic reach the listener until it stops; one stopped while away is unsubscribed on reconnect', async (t) => {
    // 1.5 s before reconnecting after the cut: time to see it disconnected and stop the watch then, on a busy machine too.
    const session = deviceSession(fleet.broker, pki, 'car-watch', { random: () => 1, reconnect: { initialMs: 1500, maxMs: 1500 } });
    t.after(() => session.close());
    session.start();
    await waitForState(session, 'connected');
    const got: string[] = [];
    const topic = 'vehicles/car-watch/certificate';
    let stop = await session.watch(topic, (payload) => got.push(payload.toString()));
    await fleet.backend.client.publishAsync(topic, 'one', { qos: 1 });
    await waitFor(() => got.length === 1, 'the watched message', 5000);
    await stop();
    assert.match(fleet.broker.log, /Received UNSUBSCRIBE from car-watch/);

    // Stopped while the link is down: the persistent session still holds the subscription until the next connect.
    stop = await session.watch(topic, (payload) => got.push(payload.toString()));
    const before = fleet.broker.log.length;
    session.severLink();
    await waitForState(session, 'disconnected');
    await stop();
    await waitForState(session, 'connected');
    await waitFor(() => /Received UNSUBSCRIBE from car-watch/.test(fleet.broker.log.slice(before)), 'the stale watch unsubscribed', 5000);
    await fleet.backend.client.publishAsync(topic, 'two', { qos: 1 });
    await delay(300);
    assert.deepEqual(got, ['one']);
  });

  it('connects, reads the broker limits, and says offline (retained) on close', async (t) => {
    const session = deviceSession(fleet.broker, pki, 'car-limits');
    t.after(() => session.close());
    session.start();
    await waitForState(session, 'connected');
    assert.equal(session.limits?.receiveMaximum, 20, "mosquitto's default max_inflight_messages, announced as Receive Maximum");
    assert.equal(session.limits?.maximumPacketSize, 268_435_460, 'no max_packet_size: the protocol limit');
    assert.equal(session.limits?.sessionPresent, false);
    await session.close();
    assert.equal(session.state, 'closed');
    assert.equal(session.limits, null);
    assert.deepEqual(session.counters, { attempts: 1, connections: 1, losses: 0, published: 2, acknowledged: 2, refused: 0, commands: 0 });
    await fleet.backend.waitFor(() => fleet.backend.on('car-limits', 'status').length === 2, 'the birth and the offline status');
    const [birth, bye] = fleet.backend.on('car-limits', 'status').map((m) => json(m.payload));
    assert.equal(birth!.online, true);
    assert.deepEqual({ online: bye!.online, birthSeq: bye!.birthSeq, reason: bye!.reason }, { online: false, birthSeq: birth!.birthSeq, reason: 'shutdown' });
  });

  it('retries an unreachable broker with exponential backoff and full jitter from the injected random', async (t) => {
    const port = await freePort();
    const identity = loadIdentity(pki.identityFiles('car-backoff'));
    const session = new MqttSession({
      url: `mqtts://localhost:${port}`,
      deviceId: 'car-backoff',
      identity,
      random: seededRandom(7),
      reconnect: { initialMs: 10, maxMs: 40 },
    });
    t.after(() => session.close());
    const failures: SessionStateChange[] = [];
    session.onStateChange((change) => {
      if (change.state === 'disconnected') failures.push(change);
    });
    session.start();
    await waitFor(() => failures.length >= 6, 'six failed attempts', 5000);
    await session.close();
    const replay = seededRandom(7);
    const expected = [10, 20, 40, 40, 40, 40].map((cap) => Math.floor(replay() * cap));
    assert.deepEqual(
      failures.slice(0, 6).map((f) => f.retryInMs),
      expected,
    );
    for (const failure of failures) {
      assert.equal(failure.error?.kind, 'unreachable');
      assert.match(failure.error.message, new RegExp(`cannot reach the broker at localhost:${port}: ECONNREFUSED`));
    }
    assert.equal(session.state, 'closed');
    assert.equal(session.counters.connections, 0);
    assert.ok(session.counters.attempts >= 6);
  });

  it('gives up an attempt the broker never answers (timeout), and close() ends an attempt in progress', async (t) => {
    // A TCP server that accepts and says nothing: no TLS handshake, no CONNACK.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.resume(); // read (and drop) the ClientHello, so the client's close is seen
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => silent.close(() => resolve())));
    const port = (silent.address() as AddressInfo).port;
    const identity = loadIdentity(pki.identityFiles('car-silent'));
    const quick = new MqttSession({
      url: `mqtts://127.0.0.1:${port}`,
      deviceId: 'car-silent',
      identity,
      connectTimeoutMs: 300,
      reconnect: { initialMs: 60_000 },
    });
    t.after(() => quick.close());
    quick.start();
    const failure = await firstFailure(quick);
    assert.equal(failure.error?.kind, 'timeout');
    assert.match(failure.error.message, new RegExp(`no answer from the broker at 127\\.0\\.0\\.1:${port} within 300 ms`));
    await quick.close();
    await waitFor(() => sockets.size === 0, 'the socket of the timed-out attempt to close', 2000);

    // Now an attempt with a long timeout, closed while it waits.
    const patient = new MqttSession({ url: `mqtts://127.0.0.1:${port}`, deviceId: 'car-silent', identity, connectTimeoutMs: 60_000 });
    t.after(() => patient.close());
    const states: string[] = [];
    patient.onStateChange((c) => states.push(c.state));
    patient.start();
    await waitFor(() => sockets.size === 1, 'the attempt to reach the server', 2000);
    assert.equal(patient.state, 'connecting');
    await patient.close();
    assert.equal(patient.state, 'closed');
    await waitFor(() => sockets.size === 0, 'close() to close the socket of the attempt', 2000);
    await delay(100);
    assert.deepEqual(states, ['connecting', 'closed'], 'no failure reported and no retry after close()');
    assert.equal(patient.counters.attempts, 1);
  });

  it('is refused by the broker when its client certificate comes from another CA', async (t) => {
    // The device trusts the right broker CA, but its own certificate is the rogue CA's.
    const session = deviceSession(fleet.broker, rogue, 'car-rogue', { brokerCa: pki.caFile, reconnect: { initialMs: 60_000 } });
    t.after(() => session.close());
    session.start();
    const failure = await firstFailure(session);
    await session.close();
    assert.equal(failure.error?.kind, 'client-refused');
    assert.match(failure.error.message, /ended the TLS handshake with 'unknown ca': it does not accept the device certificate .*car-rogue\.crt/);
    assert.equal(session.counters.connections, 0);
  });

  it('refuses a broker whose certificate does not chain to the pinned CA', async (t) => {
    // The broker's own CA is not the one the device pins (the rogue CA has the same name, not the same key).
    const session = deviceSession(fleet.broker, pki, 'car-pinned', { brokerCa: rogue.caFile, reconnect: { initialMs: 60_000 } });
    t.after(() => session.close());
    session.start();
    const failure = await firstFailure(session);
    await session.close();
    assert.equal(failure.error?.kind, 'broker-untrusted');
    assert.match(failure.error.message, /the broker's certificate at localhost:\d+ is not trusted: .*must chain to the pinned CA .*ca\.crt/);
  });

  it('refuses a broker certificate that does not name the host it was reached at', async (t) => {
    const elsewhere = new TestPki('uplink name test CA');
    elsewhere.server(['broker.fleet.example']);
    // The clients' certificates are `pki`'s; the broker presents a certificate of `elsewhere` for another name.
    const named = await Mosquitto.start({ pki, serverPki: elsewhere });
    try {
      for (const url of [named.url, `mqtts://127.0.0.1:${named.port}`]) {
        const session = deviceSession(named, pki, 'car-name', { url, brokerCa: elsewhere.caFile, reconnect: { initialMs: 60_000 } });
        t.after(() => session.close());
        session.start();
        const failure = await firstFailure(session);
        await session.close();
        assert.equal(failure.error?.kind, 'broker-untrusted', url);
        assert.match(failure.error.message, /ERR_TLS_CERT_ALTNAME_INVALID/, url);
      }
    } finally {
      await named.stop();
    }
  });

  it('publishes a retained birth with a rising birth sequence, and its retained will says offline when the link is cut', async (t) => {
    let seq = 100;
    let nextRandom = 0;
    const session = deviceSession(fleet.broker, pki, 'car-will', {
      nextBirthSeq: () => ++seq,
      // After the cut: a 4 s wait, long enough to look at the retained will before the next birth replaces it, even
      // on a busy machine.
      random: () => nextRandom,
      reconnect: { initialMs: 8000, maxMs: 8000 },
    });
    t.after(() => session.close());
    const changes: SessionStateChange[] = [];
    session.onStateChange((c) => changes.push(c));
    session.start();
    await waitForState(session, 'connected');
    assert.equal(session.birthSeq, 101);
    await fleet.backend.waitFor(() => fleet.backend.on('car-will', 'status').length === 1, 'the birth');
    assert.deepEqual({ ...json(fleet.backend.on('car-will', 'status')[0]!.payload), ts: 0 }, { online: true, birthSeq: 101, ts: 0 });

    nextRandom = 0.5;
    session.severLink();
    await fleet.backend.waitFor(() => fleet.backend.on('car-will', 'status').length === 2, 'the will', 5000);
    assert.deepEqual(json(fleet.backend.on('car-will', 'status')[1]!.payload), { online: false, birthSeq: 101, reason: 'connection lost' });
    const lost = changes.find((c) => c.state === 'disconnected');
    assert.equal(lost?.error?.kind, 'connection-lost');
    assert.equal(lost?.retryInMs, 4000);

    // A backend starting now learns the state from the retained message: the will, not the stale birth.
    const late = await BackendSubscriber.connect(fleet.broker, pki, 'vehicles/car-will/status');
    try {
      await late.waitFor(() => late.messages.length === 1, 'the retained status', 5000);
      assert.equal(late.messages[0]!.retain, true);
      assert.deepEqual(json(late.messages[0]!.payload), { online: false, birthSeq: 101, reason: 'connection lost' });
    } finally {
      await late.close();
    }

    await waitForState(session, 'connected', 10_000);
    assert.equal(session.birthSeq, 102);
    await fleet.backend.waitFor(() => fleet.backend.on('car-will', 'status').length === 3, 'the birth after the reconnection');
    const rebirth = json(fleet.backend.on('car-will', 'status')[2]!.payload);
    assert.deepEqual([rebirth.online, rebirth.birthSeq], [true, 102]);
    assert.equal(session.counters.losses, 1);
    assert.equal(session.counters.connections, 2);
    await session.close();
  });

  for (const protocol of [5, 4] as const) {
    it(`keeps a command sent while the device is offline and delivers it on reconnect (persistent session, MQTT ${protocol === 5 ? '5' : '3.1.1'})`, async (t) => {
      const id = `car-cmd-${protocol}`;
      const first = deviceSession(fleet.broker, pki, id, { protocol, sessionExpiryS: 600 });
      t.after(() => first.close());
      first.start();
      await waitForState(first, 'connected');
      await first.close();

      await fleet.backend.command(id, 'lock', '{"doors":"locked"}');
      // Not for this device: the broker must not deliver it, the ACL would not let it read it anyway.
      await fleet.backend.command('car-other', 'lock', '{"doors":"locked"}');

      const second = deviceSession(fleet.broker, pki, id, { protocol, sessionExpiryS: 600 });
      t.after(() => second.close());
      const commands: Array<[string, string]> = [];
      second.onCommand((topic, payload) => commands.push([topic, payload.toString('utf8')]));
      second.start();
      await waitFor(() => commands.length === 1, 'the queued command', 5000);
      assert.equal(second.limits?.sessionPresent, true);
      assert.deepEqual(commands, [[`vehicles/${id}/commands/lock`, '{"doors":"locked"}']]);
      await delay(100);
      assert.equal(commands.length, 1);
      assert.equal(second.counters.commands, 1);
      await second.close();
    });
  }

  it('subscribes again after a broker crash lost its session, and gets commands sent after that', async (t) => {
    const session = deviceSession(fleet.broker, pki, 'car-crash');
    t.after(() => session.close());
    const commands: string[] = [];
    session.onCommand((_topic, payload) => commands.push(payload.toString('utf8')));
    session.start();
    await waitForState(session, 'connected');
    await fleet.broker.kill(); // SIGKILL: nothing saved since start, the session and subscription are gone
    await waitFor(() => session.state !== 'connected', 'the loss', 5000);
    await fleet.broker.start();
    await waitForState(session, 'connected', 5000);
    assert.equal(session.limits?.sessionPresent, false, 'the crash lost the session: only the new subscription can deliver');
    // The backend lost its session too: wait until it has subscribed again.
    await fleet.backend.waitFor(() => fleet.backend.client.connected, 'the backend to reconnect', 5000);
    await waitFor(
      () => /Received SUBSCRIBE from backend\//.test(fleet.broker.log.slice(fleet.broker.log.lastIndexOf('mosquitto version'))),
      'the backend to subscribe',
      5000,
    );
    await fleet.backend.command('car-crash', 'horn', 'beep');
    await waitFor(() => commands.length === 1, 'the command after the crash', 5000);
    assert.deepEqual(commands, ['beep']);
    await session.close();
  });
});
