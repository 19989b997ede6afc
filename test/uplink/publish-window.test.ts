/**
 * The broker's Receive Maximum, one limit for every sender on the connection (src/uplink/publish-window.ts, used by
 * MqttSession.send): the window's own bookkeeping; a strict MQTT 5 broker that disconnects with 0x93 on one publish
 * too many, which a bare client trips and the session never does, however many senders publish at once; publishes
 * waiting for a slot when the link drops; and mosquitto with a small max_inflight_messages, every message delivered in
 * each sender's order.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import mqtt from 'mqtt';
import { loadIdentity } from '../../src/pki/identity.js';
import { PublishWindow } from '../../src/uplink/publish-window.js';
import { MqttSession, UplinkError } from '../../src/uplink/session.js';
import { BackendSubscriber, Mosquitto, TestPki, deviceSession, waitForState } from '../support/mosquitto.js';
import { StrictBroker } from '../support/strict-broker.js';
import { waitFor } from '../support/wait.js';

describe('PublishWindow', () => {
  it('starts up to the limit at once, the rest in order as slots come back; a starter that declines passes its slot on', () => {
    const window = new PublishWindow(2);
    const started: string[] = [];
    const starter =
      (name: string, wants = true): (() => boolean) =>
      () => {
        if (wants) started.push(name);
        return wants;
      };
    window.take(starter('a'));
    window.take(starter('b'));
    window.take(starter('c'));
    window.take(starter('lost', false));
    window.take(starter('d'));
    assert.deepEqual(started, ['a', 'b']);
    assert.deepEqual([window.unacknowledged, window.queued], [2, 3]);
    window.release();
    assert.deepEqual(started, ['a', 'b', 'c']);
    window.release(); // 'lost' declines: the slot goes on to 'd'
    assert.deepEqual(started, ['a', 'b', 'c', 'd']);
    assert.deepEqual([window.unacknowledged, window.queued], [2, 0]);
    window.release();
    window.release();
    assert.deepEqual([window.unacknowledged, window.queued, window.peak], [0, 0, 2]);
    // A starter that declines at once gives its slot straight back.
    window.take(starter('gone', false));
    assert.equal(window.unacknowledged, 0);
    assert.throws(() => new PublishWindow(0), /at least 1/);
  });
});

describe('MqttSession and the receive maximum', () => {
  const pki = new TestPki('publish window test CA');

  function strictSession(broker: StrictBroker, deviceId: string): MqttSession {
    return new MqttSession({
      url: broker.url,
      deviceId,
      identity: loadIdentity(pki.identityFiles(deviceId)),
      connectTimeoutMs: 5000,
      reconnect: { initialMs: 50, maxMs: 200 },
    });
  }

  it('a strict broker disconnects a bare client with 0x93 at one publish over its receive maximum', async (t) => {
    const broker = await StrictBroker.start({ pki, receiveMaximum: 2, ackDelayMs: 100 });
    const files = pki.identityFiles('car-bare');
    const client = mqtt.connect(broker.url, {
      protocolVersion: 5,
      clientId: 'car-bare',
      reconnectPeriod: 0,
      ca: loadIdentity(files).caPem,
      cert: loadIdentity(files).certPem,
      key: loadIdentity(files).keyPem,
    });
    t.after(async () => {
      await client.endAsync(true);
      await broker.close();
    });
    const disconnected = new Promise<number | undefined>((resolve) => client.once('disconnect', (packet) => resolve(packet.reasonCode)));
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    for (let i = 0; i < 3; i++) client.publish('vehicles/car-bare/telemetry', `m${i}`, { qos: 1 }, () => undefined);
    assert.equal(await disconnected, 0x93);
    assert.equal(broker.violations, 1);
  });

  it('the session keeps every sender together within it: publisher, log, health and results at once, none refused', async (t) => {
    const broker = await StrictBroker.start({ pki, receiveMaximum: 2, ackDelayMs: 5 });
    const session = strictSession(broker, 'car-strict');
    t.after(async () => {
      await session.close();
      await broker.close();
    });
    session.start();
    await waitForState(session, 'connected');
    assert.equal(session.limits?.receiveMaximum, 2);
    const senders = { telemetry: 40, logs: 12, health: 4, events: 6 } as const;
    const sent = Object.entries(senders).flatMap(([kind, count]) =>
      Array.from({ length: count }, (_, i) => session.publish(session.topic(kind as keyof typeof senders), `${kind}-${i}`)),
    );
    // QoS 0 is not counted: it goes out at once, beside the full window.
    sent.push(session.publish(session.topic('telemetry'), 'qos0', { qos: 0 }));
    await Promise.all(sent);
    assert.equal(broker.violations, 0);
    assert.equal(broker.peakInFlight, 2, 'the window was full, never more');
    assert.equal(session.publishWindow?.peak, 2);
    assert.deepEqual({ unacknowledged: session.publishWindow?.unacknowledged, queued: session.publishWindow?.queued }, { unacknowledged: 0, queued: 0 });
    assert.equal(session.counters.losses, 0);
    assert.equal(broker.connections, 1);
    for (const [kind, count] of Object.entries(senders)) {
      const arrived = broker.acknowledged.filter((p) => p.topic === session.topic(kind as keyof typeof senders)).map((p) => p.payload);
      assert.deepEqual(
        arrived,
        Array.from({ length: count }, (_, i) => `${kind}-${i}`),
        `${kind}: all of them, in the order sent`,
      );
    }
  });

  it('publishes waiting for a slot fail with connection-lost when the link drops; the next connection starts with an empty window', async (t) => {
    const broker = await StrictBroker.start({ pki, receiveMaximum: 2, ackDelayMs: 5 });
    const session = strictSession(broker, 'car-drop');
    t.after(async () => {
      await session.close();
      await broker.close();
    });
    session.start();
    await waitForState(session, 'connected');
    broker.ackDelayMs = 60_000;
    const connectionsBefore = broker.connections;
    const outcomes = Array.from({ length: 6 }, (_, i) =>
      session.publish(session.topic('telemetry'), `t${i}`).then(
        () => 'acknowledged',
        (err: unknown) => (err instanceof UplinkError ? err.kind : String(err)),
      ),
    );
    await waitFor(() => session.publishWindow?.queued === 4, 'four publishes waiting for a slot');
    assert.equal(session.publishWindow?.unacknowledged, 2);
    broker.ackDelayMs = 5;
    broker.cutConnections();
    assert.deepEqual(await Promise.all(outcomes), Array<string>(6).fill('connection-lost'));
    assert.equal(broker.violations, 0);
    await waitFor(() => broker.connections === connectionsBefore + 1 && session.state === 'connected', 'the next connection');
    assert.deepEqual({ unacknowledged: session.publishWindow?.unacknowledged, queued: session.publishWindow?.queued }, { unacknowledged: 0, queued: 0 });
    await session.publish(session.topic('telemetry'), 'after');
    assert.equal(broker.acknowledged.at(-1)?.payload, 'after');
  });

  it('against mosquitto (max_inflight_messages 3), three senders at once: every message delivered, in each one’s order', async (t) => {
    const broker = await Mosquitto.start({ pki, extraConfig: ['max_inflight_messages 3'], quiet: true });
    const backend = await BackendSubscriber.connect(broker, pki);
    const session = deviceSession(broker, pki, 'car-three');
    t.after(async () => {
      await session.close();
      await backend.close();
      await broker.stop();
    });
    session.start();
    await waitForState(session, 'connected');
    assert.equal(session.limits?.receiveMaximum, 3);
    const kinds = ['telemetry', 'logs', 'health'] as const;
    await Promise.all(kinds.flatMap((kind) => Array.from({ length: 50 }, (_, i) => session.publish(session.topic(kind), `${kind}-${i}`))));
    assert.equal(session.publishWindow?.peak, 3);
    await backend.waitFor(() => kinds.every((kind) => backend.on('car-three', kind).length === 50), 'all 150 at the backend', 10_000);
    for (const kind of kinds) {
      assert.deepEqual(
        backend.on('car-three', kind).map((m) => m.payload.toString('utf8')),
        Array.from({ length: 50 }, (_, i) => `${kind}-${i}`),
      );
    }
  });
});
