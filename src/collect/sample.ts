/**
 * What flows from collection to the outbox and the uplink: samples (one value of one signal at one time), grouped
 * into batches by the collector, encoded into messages by the payload codec. Shared by src/collect, src/store and
 * src/uplink, which otherwise know nothing of each other.
 */

/** One value of one signal at one time. */
export interface Sample {
  /** Unix time in seconds, as CanFrame.ts (sub-millisecond resolution where the source has it). */
  ts: number;
  /** `<bus>.<Message>.<Signal>` for a DBC signal (`can0.ENGINE_DATA.EngineSpeed`), `<adapter or bus>.obd.<key>` for
   * an OBD-II PID (`obd.obd.rpm`). */
  signal: string;
  value: number | string;
}

/** Where a message goes: `vehicles/<deviceId>/telemetry` (periodic, change-driven data) or `.../events` (triggers). */
export type MessageKind = 'telemetry' | 'events';

/** 0 (bulk) to 7 (critical): higher goes out first and is evicted last. */
export type Priority = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7;
export const MIN_PRIORITY = 0;
export const MAX_PRIORITY = 7;

/** Samples the collector hands on together: one message once encoded. */
export interface SampleBatch {
  kind: MessageKind;
  priority: Priority;
  samples: Sample[];
  /** For events: the rule that fired, and when (unix seconds). */
  trigger?: { rule: string; ts: number };
}

/** What every encoded message carries besides its samples. */
export interface MessageHeader {
  deviceId: string;
  /** Per-device sequence number: assigned by the outbox, persisted, never repeated, so consumers can drop duplicates. */
  seq: number;
  kind: MessageKind;
  priority: Priority;
  /** When the batch was closed (unix milliseconds). */
  createdAt: number;
  trigger?: { rule: string; ts: number };
}
