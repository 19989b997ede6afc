/**
 * The outbox as the uplink sees it: encoded messages waiting for the broker's acknowledgement. The SQLite outbox
 * (src/store/outbox.ts) implements it; the publisher (src/uplink) drains it and never deletes a message the broker
 * has not acknowledged, except one the broker refuses for good (`drop`), whose loss the outbox then announces.
 *
 * Each message has two numbers: its `id`, the queue's own key (what the publisher acknowledges and tracks in flight,
 * never seen outside the agent), and its `seq`, the sequence number in the message itself, counted per stream.
 */
import type { MessageKind, Priority } from '../collect/sample.js';

/** Collected data (telemetry, events), a loss notice (src/store/loss-notice.ts), or a command result (src/commands),
 * which names its own topic. */
export type OutboxKind = MessageKind | 'loss' | 'result';

/**
 * The two numberings: `data` (telemetry, events and loss notices: contiguous, so a gap is data the agent lost and
 * announced) and `results` (command results).
 */
export type SeqStream = 'data' | 'results';

export function streamOf(kind: OutboxKind): SeqStream {
  return kind === 'result' ? 'results' : 'data';
}

export interface OutboxRecord {
  /** The queue's key: acknowledge and drop take it. */
  id: number;
  /** The sequence number the message carries, in its stream. */
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

/** The messages (by id) a peek leaves out (a Set will do; the publisher passes a view over its in-flight and held ones). */
export interface IdFilter {
  has(id: number): boolean;
}

/** A message's place in the send order: a record from a peek will do. */
export interface SendPosition {
  priority: Priority;
  id: number;
}

export interface OutboxQueue {
  /**
   * The next messages to send, highest priority first, then the order they were stored in, leaving out `skip` (the
   * ones in flight): at most `maxCount` messages and `maxBytes` payload bytes (always at least one message when any
   * waits). `after`: only those after this position in the order (the last record of an earlier peek), so the walk
   * does not pass again over what went before it; for a caller that knows nothing before it can be sendable (the
   * revision has not moved, nothing it left out since has become sendable again).
   */
  peek(maxCount: number, maxBytes: number, skip: IdFilter, after?: SendPosition): OutboxRecord[];
  /** The broker has the message (PUBACK): delete it. Unknown ids are ignored (already evicted). */
  acknowledge(id: number): void;
  /**
   * The broker refused the message for good: delete it unsent and, for the data stream, announce its loss (a loss
   * notice, in the same transaction). Returns false when it could not be deleted (a write failure: it stays, and may
   * be tried again later) or must not be (a loss notice is never dropped: it is the only record of what was lost).
   * Unknown ids count as dropped.
   */
  drop(id: number): boolean;
  /**
   * Acknowledged messages whose acknowledgement is not yet durable (neither recorded nor deleted): after a crash they
   * would be sent again. The publisher counts them against its in-flight window, so a crash re-sends at most that
   * window.
   */
  readonly unflushedAcknowledgements: number;
  /**
   * Makes the acknowledgements so far durable now, as cheaply as the store can (the SQLite outbox writes their ids to
   * a small journal and deletes the messages later, many at once): after a crash they are not sent again.
   */
  recordAcknowledgements(): void;
  /** Makes the acknowledgements so far durable now, deleting their messages. */
  flushAcknowledgements(): void;
  /** Messages waiting (in flight included). */
  readonly pending: number;
  /**
   * Moves whenever messages are added or deleted other than by `acknowledge` (an append, with its evictions and
   * expiries; a drop; a file carried over): a caller that keeps records from a peek to send later peeks again once it
   * moved, so it never sends a message the outbox has deleted, nor holds back one that should now go first.
   */
  readonly revision: number;
  /** Calls `listener` when messages are added; returns an unsubscribe. */
  onAppend(listener: () => void): () => void;
}
