/**
 * Telemetry and events (`vehicles/<deviceId>/telemetry`, `vehicles/<deviceId>/events`): a batch of samples, in JSON or
 * in the binary layout (contract/telemetry.cddl; docs/payload-format.md). The JSON form is this schema; the binary
 * form decodes (src/uplink/codec.ts `decodeMessage`, or the reference decoder) to the same object, so one schema
 * describes both: `telemetry-decoded` is the binary message once decoded, samples grouped by signal.
 */
import { z } from 'zod';
import { contractSchema, deviceId, outboxSeq, unixMs } from './registry.js';

const sample = z.strictObject({
  ts: z.number().nonnegative().describe('Unix seconds, sub-millisecond precision where the source has it (binary: rounded to the microsecond).'),
  signal: z.string().describe('`<bus>.<Message>.<Signal>` for a DBC signal, `<adapter or bus>.obd.<key>` for OBD-II.'),
  value: z
    .union([z.number(), z.string(), z.null()])
    .describe('The physical value. JSON writes NaN and ±Infinity as null (read it as not a number); the binary layout keeps them.'),
});

const header = {
  deviceId,
  seq: outboxSeq.describe(
    'Data sequence number, shared by telemetry, events and loss notices: drop duplicates by (deviceId, seq); a gap is announced on vehicles/<deviceId>/loss.',
  ),
  kind: z.enum(['telemetry', 'events']),
  priority: z.number().int().min(0).max(7).describe('0 (bulk) to 7 (critical): higher is sent first and evicted last.'),
  createdAt: unixMs.describe('When the batch was closed.'),
  trigger: z
    .strictObject({ rule: z.string(), ts: z.number().nonnegative().describe('When it fired, unix seconds.') })
    .optional()
    .describe('Events only: the rule that fired.'),
  samples: z.array(sample),
};

export const telemetryMessageSchema = contractSchema(
  'telemetry',
  'Telemetry or events (JSON)',
  "vehicles/<deviceId>/telemetry and vehicles/<deviceId>/events with collection.format json: UTF-8 JSON (first byte '{'), QoS 1, not retained; samples in the order they were taken.",
  z.strictObject(header),
);

export const decodedTelemetrySchema = contractSchema(
  'telemetry-decoded',
  'Telemetry or events (binary, decoded)',
  'The binary form (collection.format cbor: first byte 0x01 or 0x02, layout in telemetry.cddl) once decoded: the same fields, samples grouped by signal in order of first appearance, each signal in its own order; times rounded to the microsecond.',
  z.strictObject(header),
);

export type TelemetryMessage = z.output<typeof telemetryMessageSchema>;

export const lossNoticeSchema = contractSchema(
  'loss',
  'Loss notice',
  "vehicles/<deviceId>/loss, JSON, QoS 1, not retained: which numbers of the data stream are gone and why. Itself numbered in the data stream. A backend proves completeness per car: the numbers it received and the numbers announced lost cover every number from its first to the health report's agent.outbox.nextSeq - 1. Store ranges, never expand them: an outbox-lost range can span about 1e12 numbers.",
  z.strictObject({
    deviceId,
    seq: outboxSeq.describe("The notice's own number in the data stream."),
    kind: z.literal('loss'),
    createdAt: unixMs.describe('When the notice was started.'),
    lost: z
      .array(
        z.strictObject({
          first: outboxSeq.min(1),
          last: outboxSeq.min(1).describe("Inclusive; not before first. It may be above the notice's own seq."),
          count: outboxSeq.min(1).describe('last - first + 1.'),
          reason: z
            .enum(['evicted', 'expired', 'refused', 'outbox-lost'])
            .describe('Outbox full; too old; refused by the broker for good; lost with the outbox file.'),
          exact: z
            .boolean()
            .describe(
              'true: every number in the range was a message that is gone. false (outbox-lost, or ranges merged to keep the notice small): an upper bound: the numbers in it you did not receive are gone.',
            ),
        }),
      )
      .min(1)
      .max(256)
      .describe('Sorted by first; exact ranges never overlap.'),
  }),
);

export type LossNotice = z.output<typeof lossNoticeSchema>;
