/**
 * Drains the outbox through the session: QoS 1 to `vehicles/<id>/<kind>` (telemetry, events, loss) or a command
 * result's own topic, in the outbox's order (priority, then the order stored), a message deleted from the outbox only
 * once the broker has acknowledged it. Messages are tracked by their outbox id; reports name their kind and `seq`.
 *
 * - In flight at once: min(maxInflight, the broker's Receive Maximum), acknowledgements not yet durable included (a
 *   crash re-sends at most that window); they are recorded in groups of half a window.
 * - The outbox is peeked for up to 64 messages at a time, kept while its revision holds (an append, eviction, expiry
 *   or drop moves it: a message deleted meanwhile is never sent, one of higher priority goes first).
 * - The throttle is asked before each send; when the budget is spent the queue waits, head first (a smaller message
 *   further back does not overtake it), until the buckets refill.
 * - A message larger than the broker's Maximum Packet Size is set aside for the rest of that connection (counted as
 *   `oversized`, reported once per connection, kept in the outbox): it cannot block the queue, and it goes if a later
 *   connection, maybe to another broker, allows it. The outbox's own eviction bounds what such messages occupy.
 * - A publish the broker refuses (MQTT 5 PUBACK with an error reason code, e.g. 0x87 not authorized) is reported
 *   and retried after a growing pause; after `maxRefusals` refusals it is dropped from the outbox (which announces the
 *   loss of a data-stream message in a loss notice), reported as such, so a message the broker will never take does
 *   not wait forever. Quota exceeded (0x97) is a matter of time, never a reason to drop; neither is the refusal of a
 *   loss notice (the only record of what was lost: it is retried, at most once a minute, until the broker's ACL lets
 *   it through). (Under MQTT 3.1.1 a broker acknowledges what its ACL refuses: nothing to see from here.)
 * - When the connection is lost, what was in flight is sent again after the reconnect: at least once, the sequence
 *   number in every message lets consumers drop duplicates.
 */
import type { OutboxQueue, OutboxRecord } from '../store/outbox-queue.js';
import type { Throttle } from './throttle.js';
import { UplinkError, type BrokerLimits, type DataTopic, type SessionState, type SessionStateChange } from './session.js';

/** What the publisher needs of the session (MqttSession, or a stand-in). */
export interface PublisherSession {
  readonly state: SessionState;
  readonly limits: BrokerLimits | null;
  readonly protocol: 5 | 4;
  topic(kind: DataTopic): string;
  publish(topic: string, payload: Uint8Array, options: { qos: 1; properties?: { correlationData?: Buffer } }): Promise<void>;
  onStateChange(listener: (change: SessionStateChange) => void): () => void;
}

export interface PublisherOptions {
  session: PublisherSession;
  queue: OutboxQueue;
  /** No throttle: no limit but the broker's. */
  throttle?: Throttle;
  /** Default 16. */
  maxInflight?: number;
  /** Refusals of one message before it is dropped. Default 3. */
  maxRefusals?: number;
  /** Pause before the nth retry of a refused message: n times this. Default 1000 ms. */
  refusalRetryMs?: number;
  /** The largest PUBLISH packet to send, in bytes, whatever the broker says (default: the broker's limit only). Under
   * MQTT 3.1.1 the broker announces no limit and disconnects a client that exceeds its own: without this, a message
   * over it would cost a reconnect every time it is sent. */
  maxPacketSize?: number;
}

export interface PublisherStats {
  /** Publishes sent (resends included). */
  published: number;
  /** PUBACKs received, each deleting its message from the outbox. */
  acknowledged: number;
  inflight: number;
  /** Messages sent again after the connection they were in flight on was lost. */
  resent: number;
  /** PUBACKs with an error reason code. */
  refused: number;
  /** Messages deleted unsent after `maxRefusals` refusals (a data-stream one announced in a loss notice). */
  dropped: number;
  /** Times a message was set aside as larger than the broker's maximum packet size. */
  oversized: number;
  /** Times the throttle held the queue back. */
  throttledWaits: number;
}

export type PublishProblem = 'refused' | 'dropped' | 'oversized';

export class PublishError extends Error {
  constructor(
    readonly problem: PublishProblem,
    /** The message's sequence number (in its kind's stream). */
    readonly seq: number,
    message: string,
    /** The broker's reason code, for refusals. */
    readonly code?: number,
  ) {
    super(message);
    this.name = 'PublishError';
  }
}

/**
 * Bytes of a QoS 1 PUBLISH: fixed header, topic, packet id, (MQTT 5) the property list (empty, or the correlation
 * data of a command result), payload.
 */
export function publishPacketSize(topic: string, payloadBytes: number, protocol: 5 | 4, correlationBytes = 0): number {
  const properties = protocol === 5 ? (correlationBytes > 0 ? 1 + 3 + correlationBytes : 1) : 0;
  const remaining = 2 + Buffer.byteLength(topic) + 2 + properties + payloadBytes;
  const lengthBytes = remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4;
  return 1 + lengthBytes + remaining;
}

/**
 * Messages taken from the outbox per peek, and the payload bytes they may hold (at least one message): a peek is a walk
 * of the outbox's send order and a row read per message, done once per this many sends (and again whenever the
 * outbox's revision moves), not for every few PUBACKs.
 */
const READY_MESSAGES = 64;
const READY_BYTES = 256 * 1024;
/**
 * Acknowledgements are made durable (OutboxQueue.recordAcknowledgements) once this share of the window has gathered:
 * until then they hold their window slots. Half a window: with the SQLite outbox a record is one 4 KB page of WAL
 * where deleting the messages rewrote about 28 KB for ten. A quarter kept the window fuller but cost more CPU (a
 * transaction's locks and meter reads) than the fuller window gained on the loopback drain of the pipeline benchmark.
 */
const RECORD_SHARE = 1 / 2;

export class Publisher {
  private readonly session: PublisherSession;
  private readonly queue: OutboxQueue;
  private readonly throttle: Throttle | undefined;
  private readonly maxInflight: number;
  private readonly maxRefusals: number;
  private readonly refusalRetryMs: number;
  private readonly maxPacketSize: number;

  private running = false;
  /** Bumped when a connection is lost: answers for publishes of an older connection are ignored. */
  private generation = 0;
  /** Outbox ids, here and below. */
  private readonly inflight = new Set<number>();
  /** Too big for this connection's broker. */
  private readonly setAside = new Set<number>();
  /** Refused, waiting for their retry. */
  private readonly held = new Map<number, ReturnType<typeof setTimeout>>();
  private readonly refusals = new Map<number, number>();
  /** In flight when a connection was lost: their next send is a resend. */
  private readonly lost = new Set<number>();
  private throttleTimer: ReturnType<typeof setTimeout> | null = null;
  private unsubscribe: Array<() => void> = [];
  private readonly listeners = new Set<(error: PublishError) => void>();
  /** What a peek leaves out: in flight, set aside, or waiting for a retry (a view, not a copy per peek). */
  private readonly notSendable = { has: (id: number): boolean => this.inflight.has(id) || this.setAside.has(id) || this.held.has(id) };
  private readonly counts = { published: 0, acknowledged: 0, resent: 0, refused: 0, dropped: 0, oversized: 0, throttledWaits: 0 };
  /**
   * The next messages in the outbox's order, peeked and not yet sent (from `readyAt` on), valid while the outbox's
   * revision is `readyRevision`; forgotten when what may be sent changes here (a connection, a refused one released).
   */
  private ready: OutboxRecord[] = [];
  private readyAt = 0;
  private readyRevision = -1;
  /** The kinds' topics, built once. */
  private readonly topics = new Map<OutboxRecord['kind'], string>();

  constructor(options: PublisherOptions) {
    this.session = options.session;
    this.queue = options.queue;
    this.throttle = options.throttle;
    this.maxInflight = positiveInteger('maxInflight', options.maxInflight ?? 16);
    this.maxRefusals = positiveInteger('maxRefusals', options.maxRefusals ?? 3);
    this.refusalRetryMs = options.refusalRetryMs ?? 1000;
    this.maxPacketSize = options.maxPacketSize === undefined ? Number.MAX_SAFE_INTEGER : positiveInteger('maxPacketSize', options.maxPacketSize);
  }

  get stats(): PublisherStats {
    return { ...this.counts, inflight: this.inflight.size };
  }

  /** Refusals, drops and oversized messages, as they happen. */
  onError(listener: (error: PublishError) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.unsubscribe = [
      this.queue.onAppend(() => this.pump()),
      this.session.onStateChange((change) => {
        if (change.state === 'connected') {
          // Another connection, maybe another broker: its limits decide afresh what is too big.
          this.setAside.clear();
          this.forgetReady();
          this.pump();
        } else if (change.state === 'disconnected' || change.state === 'closed') {
          this.connectionLost();
        }
      }),
    ];
    this.pump();
  }

  /** Stops sending; publishes in flight still delete their message when acknowledged. */
  stop(): void {
    this.running = false;
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    if (this.throttleTimer) clearTimeout(this.throttleTimer);
    this.throttleTimer = null;
    for (const timer of this.held.values()) clearTimeout(timer);
    this.held.clear();
    this.forgetReady();
  }

  private connectionLost(): void {
    this.generation++;
    for (const id of this.inflight) this.lost.add(id);
    this.inflight.clear();
    // What was in flight goes first after the reconnect: the order is taken from the outbox again.
    this.forgetReady();
  }

  private forgetReady(): void {
    this.ready = [];
    this.readyAt = 0;
    this.readyRevision = -1;
  }

  /**
   * The next message to send in the outbox's order, peeked afresh when the last peek is used up or out of date. A peek
   * that found nothing is not repeated at every PUBACK: only a new revision of the outbox, or forgetReady (a connection,
   * a failed publish, a refused one released), can make another message sendable.
   */
  private nextReady(free: number): OutboxRecord | undefined {
    const revision = this.queue.revision;
    if (this.readyAt >= this.ready.length || this.readyRevision !== revision) {
      if (this.ready.length === 0 && this.readyRevision === revision) return undefined;
      // Used up at the same revision: everything up to its last message is in flight, acknowledged, set aside or held
      // (a release forgets the peek), so the next peek goes on after it instead of walking past all that again.
      const after = this.readyRevision === revision ? this.ready[this.ready.length - 1] : undefined;
      this.readyRevision = revision;
      this.ready = this.queue.peek(Math.max(free, READY_MESSAGES), READY_BYTES, this.notSendable, after);
      this.readyAt = 0;
    }
    return this.ready[this.readyAt++];
  }

  private topicOf(kind: Exclude<OutboxRecord['kind'], 'result'>): string {
    let topic = this.topics.get(kind);
    if (topic === undefined) {
      topic = this.session.topic(kind);
      this.topics.set(kind, topic);
    }
    return topic;
  }

  /** Sends what the window, the throttle and the broker's limits allow. */
  private pump(): void {
    if (!this.running || this.throttleTimer) return;
    const limits = this.session.limits;
    if (this.session.state !== 'connected' || !limits) return;
    const window = Math.max(1, Math.min(this.maxInflight, limits.receiveMaximum));
    // Acknowledged but not yet durable on disk counts as in flight: a crash would send it again, so a crash re-sends at
    // most one window. Recorded in groups (RECORD_SHARE of a window, one small journal write each; the deletes come
    // later, many at once): recording whenever the window is full would mean a transaction per PUBACK.
    const recordAt = Math.max(1, Math.ceil(window * RECORD_SHARE));
    for (;;) {
      let unflushed = this.queue.unflushedAcknowledgements;
      if (unflushed >= recordAt) {
        this.queue.recordAcknowledgements();
        // A write that failed (full disk) is retried by the outbox; sending must not wait for it.
        unflushed = this.queue.unflushedAcknowledgements >= recordAt ? 0 : this.queue.unflushedAcknowledgements;
      }
      const free = window - this.inflight.size - unflushed;
      if (free <= 0) return;
      const record = this.nextReady(free);
      if (record === undefined) return;
      const topic = record.topic ?? (record.kind === 'result' ? undefined : this.topicOf(record.kind));
      if (topic === undefined) {
        // A result stored without its topic has nowhere to go (never written so by this agent). Kept aside for this
        // connection when it cannot be deleted now (a write failure), so the queue does not spin on it.
        if (!this.queue.drop(record.id)) {
          this.setAside.add(record.id);
          continue;
        }
        this.counts.dropped++;
        this.report(new PublishError('dropped', record.seq, `result ${record.seq} is a command result without a topic; dropped`));
        continue;
      }
      const correlation = this.session.protocol === 5 ? record.correlation : undefined;
      const size = publishPacketSize(topic, record.payload.byteLength, this.session.protocol, correlation?.byteLength ?? 0);
      const maxSize = Math.min(limits.maximumPacketSize, this.maxPacketSize);
      if (size > maxSize) {
        this.setAside.add(record.id);
        this.counts.oversized++;
        const whose = maxSize === limits.maximumPacketSize ? "the broker's" : 'the configured';
        this.report(
          new PublishError(
            'oversized',
            record.seq,
            `${record.kind} ${record.seq} (${size} bytes) is larger than ${whose} maximum packet size (${maxSize}); kept, not sent on this connection`,
          ),
        );
        continue;
      }
      const wait = this.throttle?.tryTake(record.payload.byteLength) ?? 0;
      if (wait > 0) {
        // The head waits for the budget, and is the first to go once it refills.
        this.readyAt--;
        this.counts.throttledWaits++;
        this.throttleTimer = setTimeout(() => {
          this.throttleTimer = null;
          this.pump();
        }, wait);
        return;
      }
      this.send(record, topic);
    }
  }

  private send(record: OutboxRecord, topic: string): void {
    const { id } = record;
    const generation = this.generation;
    this.inflight.add(id);
    this.counts.published++;
    if (this.lost.delete(id)) this.counts.resent++;
    const correlation = this.session.protocol === 5 && record.correlation ? Buffer.from(record.correlation) : undefined;
    this.session.publish(topic, record.payload, correlation ? { qos: 1, properties: { correlationData: correlation } } : { qos: 1 }).then(
      () => {
        // Acknowledged: the broker has it, whatever happened to the connection since.
        this.queue.acknowledge(id);
        this.counts.acknowledged++;
        this.refusals.delete(id);
        this.lost.delete(id);
        if (generation !== this.generation) return;
        this.inflight.delete(id);
        this.pump();
      },
      (err: unknown) => {
        if (generation !== this.generation) return;
        this.inflight.delete(id);
        if (err instanceof UplinkError && err.kind === 'publish-refused') {
          this.refused(record, err);
        } else {
          // The connection went: sent again after the reconnect, ahead of what was peeked after it.
          this.lost.add(id);
          this.forgetReady();
        }
        this.pump();
      },
    );
  }

  private refused(record: OutboxRecord, err: UplinkError): void {
    const { id, seq, kind } = record;
    const count = (this.refusals.get(id) ?? 0) + 1;
    this.counts.refused++;
    const quota = err.code === 0x97;
    // drop() declines a loss notice (and a message it cannot delete now): it stays, retried like a refusal.
    if (count >= this.maxRefusals && !quota && kind !== 'loss' && this.queue.drop(id)) {
      this.refusals.delete(id);
      this.counts.dropped++;
      const announced = kind === 'result' ? '' : '; its loss is announced on the loss topic';
      this.report(new PublishError('dropped', seq, `${kind} ${seq} dropped after ${count} refusals: ${err.message}${announced}`, err.code));
      return;
    }
    this.refusals.set(id, count);
    const never = kind === 'loss' ? '; a loss notice is never dropped: the broker must allow the loss topic' : '';
    this.report(new PublishError('refused', seq, `${kind} ${seq} refused (${count} of ${this.maxRefusals}): ${err.message}${never}`, err.code));
    if (!this.running) return;
    this.held.set(
      id,
      setTimeout(
        () => {
          this.held.delete(id);
          // Sendable again, in its place in the order: ahead of what was peeked after it.
          this.forgetReady();
          this.pump();
        },
        this.refusalRetryMs * Math.min(count, 60),
      ),
    );
  }

  private report(error: PublishError): void {
    for (const listener of this.listeners) listener(error);
  }
}

function positiveInteger(name: string, value: number): number {
  if (!(Number.isInteger(value) && value > 0)) throw new RangeError(`Publisher: ${name} must be a positive integer, got ${value}`);
  return value;
}
