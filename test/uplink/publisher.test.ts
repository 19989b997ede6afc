/**
 * The publisher draining a real SQLite outbox through a real mosquitto: order, deletion only on PUBACK, a broker that
 * is down or restarts mid-drain, the ACL refusing a topic, the broker's receive maximum and maximum packet size, and
 * the throttle.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { MessageKind, Priority } from '../../src/collect/sample.js';
import { decodeLossNotice } from '../../src/store/loss-notice.js';
import { ROW_OVERHEAD_BYTES, SqliteOutbox } from '../../src/store/outbox.js';
import type { OutboxQueue } from '../../src/store/outbox-queue.js';
import { Publisher, PublishError, publishPacketSize, type PublisherSession } from '../../src/uplink/publisher.js';
import type { MqttSession } from '../../src/uplink/session.js';
import { Throttle } from '../../src/uplink/throttle.js';
import { withBroker } from '../support/broker-fixture.js';
import { MemoryOutbox, seqOf } from '../support/memory-outbox.js';
import { DEVICE_ACL, BackendSubscriber, Mosquitto, TestPki, deviceSession, waitForState, type ReceivedMessage } from '../support/mosquitto.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

interface Spec {
  kind: MessageKind;
  priority: Priority;
  /** Payload bytes (JSON padded with spaces); default: just the JSON. */
  size?: number;
}

function openOutbox(deviceId = 'car-publisher', maxBytes = 50_000_000): SqliteOutbox {
  return SqliteOutbox.open({
    path: path.join(makeTempDir('uplink-outbox-'), 'outbox.db'),
    deviceId,
    maxBytes,
    maxAgeMs: 86_400_000,
    durability: 'off',
    ackFlushMs: 20,
  });
}

/** Appends one message per spec; its payload is `{"seq":N,...}` so the backend can tell which arrived. */
function append(outbox: SqliteOutbox, specs: Spec[]): number[] {
  const result = outbox.append(
    specs.map((spec) => ({
      kind: spec.kind,
      priority: spec.priority,
      createdAt: Date.now(),
      encode: (seq: number) => {
        const text = JSON.stringify({ seq, kind: spec.kind, priority: spec.priority });
        return new TextEncoder().encode(spec.size ? text.padEnd(spec.size, ' ') : text);
      },
    })),
  );
  assert.equal(result.rejected, 0);
  return result.seqs;
}

/** The send order the outbox promises: priority (highest first), then sequence number. */
function sendOrder(seqs: number[], specs: Spec[]): number[] {
  return seqs
    .map((seq, i) => ({ seq, priority: specs[i]!.priority }))
    .sort((a, b) => b.priority - a.priority || a.seq - b.seq)
    .map((r) => r.seq);
}

function seqsOf(messages: ReceivedMessage[]): number[] {
  return messages.map((m) => seqOf(m.payload));
}

/** The data messages (telemetry and events) the backend got from `deviceId`, in arrival order. */
function dataFrom(backend: BackendSubscriber, deviceId: string): ReceivedMessage[] {
  return backend.messages.filter((m) => m.topic === `vehicles/${deviceId}/telemetry` || m.topic === `vehicles/${deviceId}/events`);
}

/** The session as the publisher sees it, counting publishes awaiting their answer and optionally holding answers back. */
function watched(session: MqttSession): PublisherSession & { inflight: number; maxInflight: number; hold: Promise<void> | null } {
  const view = {
    inflight: 0,
    maxInflight: 0,
    hold: null as Promise<void> | null,
    get state() {
      return session.state;
    },
    get limits() {
      return session.limits;
    },
    protocol: session.protocol,
    topic: (kind: MessageKind) => session.topic(kind),
    publish: (topic: string, payload: Uint8Array, options: { qos: 1 }) => {
      view.inflight++;
      view.maxInflight = Math.max(view.maxInflight, view.inflight);
      return session
        .publish(topic, payload, options)
        .then(async () => {
          if (view.hold) await view.hold;
        })
        .finally(() => view.inflight--);
    },
    onStateChange: (listener: Parameters<MqttSession['onStateChange']>[0]) => session.onStateChange(listener),
  };
  return view;
}

/** The outbox as the publisher sees it, counting the peeks (each walks past everything in flight). */
function countingPeeks(outbox: SqliteOutbox): OutboxQueue & { peeks: number } {
  const view = {
    peeks: 0,
    peek: (...args: Parameters<OutboxQueue['peek']>) => {
      view.peeks++;
      return outbox.peek(...args);
    },
    acknowledge: (id: number) => outbox.acknowledge(id),
    drop: (id: number) => outbox.drop(id),
    get unflushedAcknowledgements() {
      return outbox.unflushedAcknowledgements;
    },
    recordAcknowledgements: () => outbox.recordAcknowledgements(),
    flushAcknowledgements: () => outbox.flushAcknowledgements(),
    get pending() {
      return outbox.pending;
    },
    get revision() {
      return outbox.revision;
    },
    onAppend: (listener: () => void) => outbox.onAppend(listener),
  };
  return view;
}

const MIXED: Spec[] = [
  { kind: 'telemetry', priority: 2 },
  { kind: 'telemetry', priority: 2 },
  { kind: 'events', priority: 6 },
  { kind: 'telemetry', priority: 0 },
  { kind: 'events', priority: 6 },
  { kind: 'telemetry', priority: 2 },
  { kind: 'events', priority: 7 },
  { kind: 'telemetry', priority: 0 },
];

describe('Publisher', () => {
  const pki = new TestPki();
  // The publisher is fed synthetic payloads here (its order and retries are the subject, not their content).
  const fleet = withBroker({ pki, contract: false });

  for (const protocol of [5, 4] as const) {
    it(`delivers in priority then sequence order and deletes from the outbox only after the PUBACK (MQTT ${protocol === 5 ? '5' : '3.1.1'})`, async (t) => {
      const id = `car-order-${protocol}`;
      const outbox = openOutbox();
      const session = deviceSession(fleet.broker, pki, id, { protocol });
      const view = watched(session);
      const publisher = new Publisher({ session: view, queue: outbox });
      t.after(async () => {
        publisher.stop();
        await session.close();
        outbox.close();
      });
      session.start();
      await waitForState(session, 'connected');
      const seqs = append(outbox, MIXED);
      const expected = sendOrder(seqs, MIXED);

      // Hold the publisher's view of the acknowledgements: the broker has them all, the outbox must keep them all.
      let release!: () => void;
      view.hold = new Promise((resolve) => (release = resolve));
      publisher.start();
      await fleet.backend.waitFor(() => dataFrom(fleet.backend, id).length === MIXED.length, 'all messages at the backend', 5000);
      await waitFor(() => publisher.stats.published === MIXED.length, 'every publish sent', 2000);
      assert.equal(outbox.pending, MIXED.length, 'nothing deleted before its acknowledgement reached the publisher');
      assert.equal(outbox.stats().acknowledged, 0);
      release();
      await waitFor(() => outbox.pending === 0, 'the outbox to empty', 5000);

      const received = dataFrom(fleet.backend, id);
      assert.deepEqual(seqsOf(received), expected);
      for (const m of received) {
        const body = JSON.parse(m.payload.toString('utf8')) as { kind: string };
        assert.equal(m.topic, `vehicles/${id}/${body.kind}`);
        assert.equal(m.qos, 1);
        assert.equal(m.retain, false);
      }
      assert.deepEqual(
        { ...publisher.stats },
        { published: 8, acknowledged: 8, inflight: 0, resent: 0, refused: 0, dropped: 0, oversized: 0, throttledWaits: 0 },
      );
      assert.equal(outbox.stats().acknowledged, 8);
    });
  }

  it('fills the outbox while the broker is down, then drains all of it in order when it comes back', async (t) => {
    const id = 'car-tunnel';
    const outbox = openOutbox();
    const session = deviceSession(fleet.broker, pki, id, { reconnect: { initialMs: 50, maxMs: 200 } });
    const publisher = new Publisher({ session, queue: outbox, maxInflight: 8 });
    t.after(async () => {
      publisher.stop();
      await session.close();
      outbox.close();
      if (!fleet.broker.running) await fleet.broker.start();
    });
    await fleet.broker.stop();
    session.start();
    publisher.start();
    await waitFor(() => session.lastError?.kind === 'unreachable', 'a failed attempt', 5000);
    const specs: Spec[] = Array.from({ length: 200 }, (_, i) => ({ kind: i % 10 === 0 ? 'events' : 'telemetry', priority: (i % 3) as Priority }));
    const seqs = [...append(outbox, specs.slice(0, 100)), ...append(outbox, specs.slice(100))];
    await delay(300);
    assert.equal(outbox.pending, 200, 'nothing leaves while the broker is down');
    assert.equal(publisher.stats.published, 0);
    assert.notEqual(session.state, 'connected');

    await fleet.broker.start();
    await waitFor(() => outbox.pending === 0, 'the outbox to drain', 10_000);
    await fleet.backend.waitFor(() => dataFrom(fleet.backend, id).length >= 200, 'all 200 at the backend', 10_000);
    assert.deepEqual(seqsOf(dataFrom(fleet.backend, id)), sendOrder(seqs, specs), 'in order, none lost, none twice');
    assert.equal(publisher.stats.acknowledged, 200);
    assert.equal(publisher.stats.resent, 0);
  });

  it('survives a broker restart mid-drain: reconnects and delivers everything at least once, duplicates within the in-flight window', async (t) => {
    const id = 'car-restart';
    const window = 16;
    const outbox = openOutbox();
    const session = deviceSession(fleet.broker, pki, id);
    const publisher = new Publisher({ session, queue: outbox, maxInflight: window });
    const commands: string[] = [];
    session.onCommand((_topic, payload) => commands.push(payload.toString('utf8')));
    t.after(async () => {
      publisher.stop();
      await session.close();
      outbox.close();
      if (!fleet.broker.running) await fleet.broker.start();
    });
    session.start();
    await waitForState(session, 'connected');
    const specs: Spec[] = Array.from({ length: 3000 }, () => ({ kind: 'telemetry', priority: 3, size: 200 }));
    const seqs = append(outbox, specs);
    publisher.start();
    await fleet.backend.waitFor(() => dataFrom(fleet.backend, id).length >= 300, 'the drain to be under way', 10_000);
    await fleet.broker.restart();
    await waitFor(() => outbox.pending === 0, 'the outbox to drain', 20_000);
    await fleet.backend.waitFor(() => new Set(seqsOf(dataFrom(fleet.backend, id))).size === seqs.length, 'every message at the backend', 10_000);

    assert.ok(session.counters.losses >= 1, 'the restart cost the connection');
    assert.ok(session.counters.connections >= 2, 'and the session came back by itself');
    assert.ok(publisher.stats.acknowledged <= seqs.length + publisher.stats.resent);
    // The device resends at most what was in flight when the connection went.
    assert.ok(publisher.stats.resent >= 1, 'the restart caught messages in flight');
    assert.ok(publisher.stats.resent <= window * session.counters.losses, `${publisher.stats.resent} resent for ${session.counters.losses} loss(es)`);
    // At the backend, duplicates come from those resends and from the broker's own redelivery to the backend (DUP set,
    // its window towards the backend): the device's share is the unflagged ones.
    const got = seqsOf(dataFrom(fleet.backend, id));
    const fresh = seqsOf(dataFrom(fleet.backend, id).filter((m) => !m.dup));
    const duplicates = fresh.length - new Set(fresh).size;
    assert.ok(duplicates <= publisher.stats.resent, `${duplicates} unflagged duplicates for ${publisher.stats.resent} resends`);
    // First arrivals keep the outbox order: the resends are the lowest unacknowledged, sent before anything newer.
    const first = [...new Set(got)];
    assert.deepEqual(first, seqs);

    // Still subscribed to its commands after the restart.
    await fleet.backend.command(id, 'ping', 'after-restart');
    await waitFor(() => commands.includes('after-restart'), 'a command after the restart', 5000);
  });

  for (const protocol of [5, 4] as const) {
    it(`handles a topic the ACL refuses without spinning or losing the rest (MQTT ${protocol === 5 ? '5: PUBACK 0x87' : '3.1.1: silently dropped'})`, async (t) => {
      // This broker lets devices write telemetry and status, not events.
      const strict = await Mosquitto.start({ pki, deviceAcl: DEVICE_ACL.replace('pattern write vehicles/%u/events\n', '') });
      const watcher = await BackendSubscriber.connect(strict, pki);
      const id = `car-acl-${protocol}`;
      const outbox = new MemoryOutbox();
      const session = deviceSession(strict, pki, id, { protocol });
      const publisher = new Publisher({ session, queue: outbox, maxRefusals: 3, refusalRetryMs: 20 });
      const problems: PublishError[] = [];
      publisher.onError((e) => problems.push(e));
      t.after(async () => {
        publisher.stop();
        await session.close();
        await watcher.close();
        await strict.stop();
      });
      session.start();
      await waitForState(session, 'connected');
      const event = outbox.add('events', 7, { trigger: 'harsh-braking' });
      const telemetry = [outbox.add('telemetry', 2), outbox.add('telemetry', 2), outbox.add('telemetry', 1)];
      publisher.start();
      await waitFor(() => outbox.pending === 0, 'the outbox to empty', 5000);
      await watcher.waitFor(() => dataFrom(watcher, id).length === 3, 'the telemetry', 5000);
      assert.deepEqual(
        seqsOf(dataFrom(watcher, id)),
        telemetry.map((r) => r.seq),
      );
      assert.match(strict.log, new RegExp(`Denied PUBLISH from ${id} .*'vehicles/${id}/events'`));

      if (protocol === 5) {
        // Refused twice (retried after 20 ms, 40 ms), dropped at the third refusal, reported each time.
        assert.deepEqual(
          problems.map((p) => [p.problem, p.seq, p.code]),
          [
            ['refused', event.seq, 0x87],
            ['refused', event.seq, 0x87],
            ['dropped', event.seq, 0x87],
          ],
        );
        assert.match(problems[2]!.message, /dropped after 3 refusals: the broker refused the publish to vehicles\/car-acl-5\/events: not authorized \(0x87\)/);
        assert.equal(publisher.stats.refused, 3);
        assert.equal(publisher.stats.dropped, 1);
        assert.equal(session.counters.refused, 3);
      } else {
        // MQTT 3.1.1 has no way to say no: mosquitto 2.0 acknowledges the publish and discards it.
        assert.deepEqual(problems, []);
        assert.equal(publisher.stats.refused, 0);
        assert.equal(publisher.stats.acknowledged, 4);
      }
      // Refused for good under MQTT 5: dropped (which the SQLite outbox announces in a loss notice), not acknowledged.
      if (protocol === 5) {
        assert.deepEqual(outbox.dropped, [event.id]);
        assert.deepEqual(outbox.acknowledged.sort(), telemetry.map((r) => r.id).sort());
      } else {
        assert.deepEqual(outbox.dropped, []);
        assert.deepEqual(outbox.acknowledged.sort(), [event.id, ...telemetry.map((r) => r.id)].sort());
      }
      assert.equal(session.counters.losses, 0, 'the refusal is not a reason to drop the connection');
    });
  }

  it('[17.seq] a data message the broker refuses for good is dropped with its loss announced: the backend gets the notice on vehicles/<id>/loss, through the shipped ACL (MQTT 5)', async (t) => {
    // This broker lets devices write everything the shipped ACL allows (the loss topic included) but events.
    const strict = await Mosquitto.start({ pki, deviceAcl: DEVICE_ACL.replace('pattern write vehicles/%u/events\n', '') });
    const watcher = await BackendSubscriber.connect(strict, pki);
    const id = 'car-refused';
    const outbox = openOutbox(id);
    const session = deviceSession(strict, pki, id, { protocol: 5 });
    const publisher = new Publisher({ session, queue: outbox, maxRefusals: 2, refusalRetryMs: 20 });
    const problems: PublishError[] = [];
    publisher.onError((e) => problems.push(e));
    t.after(async () => {
      publisher.stop();
      await session.close();
      outbox.close();
      await watcher.close();
      await strict.stop();
    });
    session.start();
    await waitForState(session, 'connected');
    const seqs = append(outbox, [
      { kind: 'telemetry', priority: 2 },
      { kind: 'events', priority: 6 },
      { kind: 'telemetry', priority: 2 },
    ]);
    publisher.start();
    const lossTopic = `vehicles/${id}/loss`;
    await watcher.waitFor(() => watcher.messages.some((m) => m.topic === lossTopic), 'the loss notice', 10_000);
    await waitFor(() => outbox.pending === 0, 'the outbox to empty', 10_000);
    const notices = watcher.messages.filter((m) => m.topic === lossTopic).map((m) => decodeLossNotice(m.payload));
    assert.equal(notices.length, 1);
    const notice = notices[0]!;
    assert.deepEqual(notice.lost, [{ first: seqs[1], last: seqs[1], count: 1, reason: 'refused', exact: true }]);
    assert.deepEqual([notice.deviceId, notice.seq], [id, seqs[2]! + 1], 'numbered next in the data stream');
    // The backend's proof: what it received and what was announced lost is every number from the first to the last.
    const received = seqsOf(dataFrom(watcher, id));
    assert.deepEqual(
      [...received, notice.seq, ...notice.lost.map((r) => r.first)].sort((a, b) => a - b),
      [seqs[0], seqs[1], seqs[2], seqs[2]! + 1],
    );
    assert.equal(outbox.stats().nextSeq, notice.seq + 1);
    assert.deepEqual(
      problems.map((p) => [p.problem, p.seq]),
      [
        ['refused', seqs[1]],
        ['dropped', seqs[1]],
      ],
    );
    assert.match(problems[1]!.message, /^events \d+ dropped after 2 refusals: .*not authorized \(0x87\); its loss is announced on the loss topic$/);
    assert.deepEqual(outbox.stats().losses, { notices: 1, messages: 1, outboxLost: 0 });
  });

  it('[17.seq] a loss notice the broker refuses is never dropped: it is retried while the rest flows (MQTT 5)', async (t) => {
    const strict = await Mosquitto.start({ pki, deviceAcl: DEVICE_ACL.replace('pattern write vehicles/%u/loss\n', '') });
    const watcher = await BackendSubscriber.connect(strict, pki);
    const id = 'car-no-loss-acl';
    const outbox = new MemoryOutbox();
    const session = deviceSession(strict, pki, id, { protocol: 5 });
    const publisher = new Publisher({ session, queue: outbox, maxRefusals: 2, refusalRetryMs: 10 });
    const problems: PublishError[] = [];
    publisher.onError((e) => problems.push(e));
    t.after(async () => {
      publisher.stop();
      await session.close();
      await watcher.close();
      await strict.stop();
    });
    session.start();
    await waitForState(session, 'connected');
    const notice = outbox.add('loss', 7);
    const telemetry = outbox.add('telemetry', 2);
    publisher.start();
    await waitFor(() => problems.filter((p) => p.problem === 'refused').length >= 4, 'the notice refused again and again', 10_000);
    await watcher.waitFor(() => dataFrom(watcher, id).length === 1, 'the telemetry', 5000);
    assert.deepEqual(seqsOf(dataFrom(watcher, id)), [telemetry.seq]);
    assert.ok(
      problems.every((p) => p.problem === 'refused' && p.seq === notice.seq),
      problems.map((p) => p.message).join('\n'),
    );
    assert.match(problems[0]!.message, /; a loss notice is never dropped: the broker must allow the loss topic$/);
    assert.deepEqual(outbox.dropped, []);
    assert.equal(outbox.pending, 1, 'the notice still waits');
  });

  it("never has more in flight than the broker's receive maximum", async (t) => {
    const limited = await Mosquitto.start({ pki, extraConfig: ['max_inflight_messages 3'] });
    const watcher = await BackendSubscriber.connect(limited, pki);
    const id = 'car-window';
    const outbox = openOutbox();
    const session = deviceSession(limited, pki, id);
    const view = watched(session);
    const publisher = new Publisher({ session: view, queue: outbox, maxInflight: 16 });
    t.after(async () => {
      publisher.stop();
      await session.close();
      outbox.close();
      await watcher.close();
      await limited.stop();
    });
    session.start();
    await waitForState(session, 'connected');
    assert.equal(session.limits?.receiveMaximum, 3);
    const seqs = append(
      outbox,
      Array.from({ length: 300 }, () => ({ kind: 'telemetry', priority: 1 })),
    );
    publisher.start();
    await waitFor(() => outbox.pending === 0, 'the drain', 10_000);
    await watcher.waitFor(() => dataFrom(watcher, id).length === 300, 'all 300', 10_000);
    assert.equal(view.maxInflight, 3, 'the window filled up to the broker limit, never beyond');
    assert.deepEqual(seqsOf(dataFrom(watcher, id)), seqs);
    assert.equal(session.counters.losses, 0);
  });

  it("sets aside a message larger than the broker's maximum packet size and sends the rest", async (t) => {
    const limited = await Mosquitto.start({ pki, extraConfig: ['max_packet_size 2000'] });
    const watcher = await BackendSubscriber.connect(limited, pki);
    const id = 'car-big';
    const topic = `vehicles/${id}/telemetry`;
    // The largest payload that makes a 2000-byte packet, and one byte more.
    let fits = 1900;
    while (publishPacketSize(topic, fits + 1, 5) <= 2000) fits++;
    assert.equal(publishPacketSize(topic, fits, 5), 2000);
    const outbox = openOutbox();
    const session = deviceSession(limited, pki, id);
    const publisher = new Publisher({ session, queue: outbox });
    const problems: PublishError[] = [];
    publisher.onError((e) => problems.push(e));
    t.after(async () => {
      publisher.stop();
      await session.close();
      outbox.close();
      await watcher.close();
      await limited.stop();
    });
    session.start();
    await waitForState(session, 'connected');
    assert.equal(session.limits?.maximumPacketSize, 2000);
    const specs: Spec[] = [
      { kind: 'telemetry', priority: 5, size: fits + 1 },
      { kind: 'telemetry', priority: 5, size: fits },
      { kind: 'telemetry', priority: 4 },
    ];
    const [big, exact, small] = append(outbox, specs);
    publisher.start();
    await watcher.waitFor(() => dataFrom(watcher, id).length === 2, 'the two that fit', 5000);
    await waitFor(() => outbox.pending === 1, 'the acknowledgements', 5000);
    await delay(200);
    assert.deepEqual(seqsOf(dataFrom(watcher, id)), [exact, small], 'the exact fit goes (the size estimate is the real one)');
    assert.deepEqual(
      problems.map((p) => [p.problem, p.seq]),
      [['oversized', big]],
      'reported once, not retried on this connection',
    );
    assert.match(problems[0]!.message, new RegExp(`\\(2001 bytes\\) is larger than the broker's maximum packet size \\(2000\\)`));
    assert.equal(outbox.peek(10, Infinity, new Set())[0]?.seq, big, 'kept in the outbox for a broker that takes it');
    assert.equal(session.counters.losses, 0, 'never sent, so the broker had no reason to disconnect');
    assert.equal(publisher.stats.oversized, 1);
  });

  it('under MQTT 3.1.1 (no announced limit) sets aside what exceeds the configured maximum packet size', async (t) => {
    const limited = await Mosquitto.start({ pki, extraConfig: ['max_packet_size 2000'] });
    const watcher = await BackendSubscriber.connect(limited, pki);
    const id = 'car-big4';
    const outbox = new MemoryOutbox();
    const session = deviceSession(limited, pki, id, { protocol: 4 });
    const publisher = new Publisher({ session, queue: outbox, maxPacketSize: 2000 });
    const problems: PublishError[] = [];
    publisher.onError((e) => problems.push(e));
    t.after(async () => {
      publisher.stop();
      await session.close();
      await watcher.close();
      await limited.stop();
    });
    session.start();
    await waitForState(session, 'connected');
    const big = outbox.add('telemetry', 5, {}, 3000);
    const small = outbox.add('telemetry', 4);
    publisher.start();
    await watcher.waitFor(() => dataFrom(watcher, id).length === 1, 'the small one', 5000);
    await delay(200);
    assert.deepEqual(seqsOf(dataFrom(watcher, id)), [small.seq]);
    assert.deepEqual(
      problems.map((p) => [p.problem, p.seq]),
      [['oversized', big.seq]],
    );
    assert.match(problems[0]!.message, /larger than the configured maximum packet size \(2000\)/);
    assert.equal(session.counters.losses, 0);
    assert.equal(outbox.pending, 1);
  });

  it('stops when the throttle budget is spent and resumes as the buckets refill', async (t) => {
    const id = 'car-budget';
    let now = 0;
    // 10 messages a second with room for 3: a burst of 3, then one per 100 ms of (injected) time.
    const throttle = new Throttle({ messagesPerHour: 36_000, burstFraction: 3 / 36_000, now: () => now });
    const outbox = new MemoryOutbox();
    const session = deviceSession(fleet.broker, pki, id);
    const publisher = new Publisher({ session, queue: outbox, throttle });
    t.after(async () => {
      publisher.stop();
      await session.close();
    });
    session.start();
    await waitForState(session, 'connected');
    const records = Array.from({ length: 6 }, () => outbox.add('telemetry', 1));
    publisher.start();
    await fleet.backend.waitFor(() => dataFrom(fleet.backend, id).length === 3, 'the burst', 5000);
    await delay(300); // real time passes, the injected clock does not: nothing more may go
    assert.equal(dataFrom(fleet.backend, id).length, 3);
    assert.equal(publisher.stats.published, 3);
    assert.equal(outbox.pending, 3);
    const state = throttle.state;
    assert.equal(state.limited, true);
    assert.equal(state.deferrals, 1);
    assert.equal(state.messages?.available, 0);
    assert.ok(publisher.stats.throttledWaits >= 1);

    for (let sent = 4; sent <= 6; sent++) {
      now += 100; // one message's worth
      await fleet.backend.waitFor(() => dataFrom(fleet.backend, id).length === sent, `message ${sent} after the refill`, 5000);
      await delay(150);
      assert.equal(dataFrom(fleet.backend, id).length, sent, 'one refill, one message');
    }
    assert.deepEqual(
      seqsOf(dataFrom(fleet.backend, id)),
      records.map((r) => r.seq),
    );
    assert.equal(throttle.state.sentMessages, 6);
  });

  it('[19.drain] drains 2,000 messages in order with one peek per batch of sends, not one per PUBACK', async (t) => {
    const id = 'car-drain-peeks';
    const outbox = openOutbox();
    const queue = countingPeeks(outbox);
    const session = deviceSession(fleet.broker, pki, id);
    const publisher = new Publisher({ session, queue, maxInflight: 16 });
    t.after(async () => {
      publisher.stop();
      await session.close();
      outbox.close();
    });
    session.start();
    await waitForState(session, 'connected');
    const seqs = append(
      outbox,
      Array.from({ length: 2000 }, () => ({ kind: 'telemetry', priority: 1 })),
    );
    publisher.start();
    await waitFor(() => outbox.pending === 0, 'the drain', 30_000);
    await fleet.backend.waitFor(() => dataFrom(fleet.backend, id).length === 2000, 'all 2,000 at the backend', 10_000);
    assert.deepEqual(seqsOf(dataFrom(fleet.backend, id)), seqs);
    assert.equal(publisher.stats.acknowledged, 2000);
    // A peek per window's worth (16) at most would be 125 or more; a peek per PUBACK, 2,000.
    assert.ok(queue.peeks <= 2000 / 32, `${queue.peeks} peeks`);
  });

  it('[19.drain] a message the outbox evicts after the publisher peeked it is never sent, and what overtakes it goes first', async (t) => {
    const id = 'car-drain-evicted';
    const size = 100;
    // Room for 35 messages: 30 wait, 10 more of a higher priority (and the loss notice) push the oldest out.
    const outbox = openOutbox(id, 35 * (size + ROW_OVERHEAD_BYTES));
    const session = deviceSession(fleet.broker, pki, id);
    const view = watched(session);
    const publisher = new Publisher({ session: view, queue: outbox, maxInflight: 2 });
    t.after(async () => {
      publisher.stop();
      await session.close();
      outbox.close();
    });
    session.start();
    await waitForState(session, 'connected');
    const low = append(
      outbox,
      Array.from({ length: 30 }, () => ({ kind: 'telemetry', priority: 0, size })),
    );
    // The publisher's view of the PUBACKs is held: two in flight, the rest of its peek waiting behind them.
    let release!: () => void;
    view.hold = new Promise((resolve) => (release = resolve));
    publisher.start();
    await waitFor(() => publisher.stats.published === 2, 'the first two sent', 5000);
    const high = append(
      outbox,
      Array.from({ length: 10 }, () => ({ kind: 'events', priority: 5, size })),
    );
    const evicted = outbox.stats().evicted.count;
    assert.ok(evicted > 2, `${evicted} evicted: more than the two in flight, so the peek held some`);
    release();
    await waitFor(() => outbox.pending === 0, 'the drain', 10_000);

    // The two in flight went before the eviction; then the notice (priority 7), the overtaking ones, what is left.
    const expected = [low[0], low[1], -1, ...high, ...low.slice(evicted)];
    const topics = new Set(['telemetry', 'events', 'loss'].map((kind) => `vehicles/${id}/${kind}`));
    const arrived = (): ReceivedMessage[] => fleet.backend.messages.filter((m) => topics.has(m.topic));
    await fleet.backend.waitFor(() => arrived().length >= expected.length, `${expected.length} messages at the backend`, 5000);
    const notices = arrived()
      .filter((m) => m.topic.endsWith('/loss'))
      .map((m) => decodeLossNotice(m.payload));
    assert.equal(notices.length, 1);
    assert.deepEqual(notices[0]!.lost, [{ first: low[0], last: low[evicted - 1], count: evicted, reason: 'evicted', exact: true }]);
    assert.deepEqual(
      arrived().map((m) => (m.topic.endsWith('/loss') ? -1 : seqOf(m.payload))),
      expected,
    );
  });
});
