/**
 * The outbox as the uplink sees it: encoded messages waiting for the broker's acknowledgement. The SQLite outbox
 * (src/store/outbox.ts) implements it; the publisher (src/uplink) drains it and never deletes a message the broker
 * has not acknowledged.
 */
import type { MessageKind, Priority } from '../collect/sample.js';

/** Collected data (telemetry, events), or a command result (src/commands), which names its own topic. */
export type OutboxKind = MessageKind | 'result';

export interface OutboxRecord {
  seq: number;
  kind: OutboxKind;
  priority: Priority;
  /** Unix milliseconds. */
  createdAt: number;
  payload: Uint8Array;
  /** Where to publish it, when not the kind's own topic (command results: the command's response topic). */
  topic?: string;
  /** MQTT 5 correlation data to publish it with (the command's). */
  correlation?: Uint8Array;
}

/** The messages a peek leaves out (a Set will do; the publisher passes a view over its in-flight and held ones). */
export interface SeqFilter {
  has(seq: number): boolean;
}

export interface OutboxQueue {
  /**
   * The next messages to send, highest priority first, then lowest sequence number, leaving out `skip` (the ones in
   * flight): at most `maxCount` messages and `maxBytes` payload bytes (always at least one message when any waits).
   */
  peek(maxCount: number, maxBytes: number, skip: SeqFilter): OutboxRecord[];
  /** The broker has the message (PUBACK): delete it. Unknown sequence numbers are ignored (already evicted). */
  acknowledge(seq: number): void;
  /**
   * Acknowledged messages not yet deleted from durable storage: after a crash they would be sent again. The publisher
   * counts them against its in-flight window, so a crash re-sends at most that window.
   */
  readonly unflushedAcknowledgements: number;
  /** Makes the acknowledgements so far durable now. */
  flushAcknowledgements(): void;
  /** Messages waiting (in flight included). */
  readonly pending: number;
  /** Calls `listener` when messages are added; returns an unsubscribe. */
  onAppend(listener: () => void): () => void;
}
