/**
 * What the car answers about a command: one JSON message per step of its lifecycle (ACCEPTED, IN_PROGRESS, then
 * SUCCEEDED, FAILED or TIMED_OUT; or REJECTED), on the command's result topic (docs/commands.md). Registered here too,
 * per command, from each handler's own schemas: its parameters (`commands/<name>.params`), its SUCCEEDED detail
 * (`commands/<name>.result`) and, for a command that reports progress, its IN_PROGRESS detail
 * (`commands/<name>.progress`). The handler list is the dispatcher's, so a command cannot be added without them.
 */
import { z } from 'zod';
import { HANDLERS } from '../commands/handlers/index.js';
import { FAILURE_REASONS, REJECT_REASONS, TIMEOUT_REASON } from '../commands/result.js';
import { commandIdSchema } from './command-envelope.js';
import { contractSchema, deviceId, outboxSeq, unixMs } from './registry.js';

const common = {
  deviceId,
  id: commandIdSchema.nullable().describe('The command ID; null when the payload gave none that could be read (the correlation data then identifies it).'),
  command: z.string().optional().describe("The command's name: on every result of a command whose envelope was signed and read."),
  ts: unixMs.describe('When the car wrote this result.'),
  seq: outboxSeq
    .optional()
    .describe(
      "Results stored before they are sent carry a sequence number of the results' own numbering: drop duplicates by (deviceId, seq). Refusals sent at once and never stored have none.",
    ),
};

const issues = z.strictObject({
  issues: z.array(z.strictObject({ path: z.string().describe('Dot-joined; empty for the whole object.'), message: z.string() })),
});
const stale = z.record(z.string(), z.strictObject({ ageMs: z.number(), maxAgeMs: z.number().nonnegative() }));
const signalValues = z.record(z.string(), z.union([z.number(), z.string(), z.null()]));

/** The outcome of a precondition that does not hold: in REJECTED precondition-failed, and in setSignal's FAILED. */
export const preconditionOutcomeSchema = z.strictObject({
  ok: z.literal(false),
  precondition: z.string().describe('The configured condition.'),
  failed: z.array(
    z.strictObject({
      condition: z.string().describe('A top-level && term that failed, as written.'),
      values: signalValues.describe('The values it read; null: no value yet.'),
      stale: stale.optional(),
    }),
  ),
  values: signalValues,
  stale: stale.optional().describe('Values older than their freshness limit, by signal.'),
});

const rejectionDetail = z
  .union([
    issues.describe('malformed (an envelope or wire object off its schema), bad-params.'),
    preconditionOutcomeSchema.describe('precondition-failed.'),
    z.strictObject({ why: z.enum(['duplicate', 'reused', 'before-reset']) }).describe('replayed.'),
    z.strictObject({ issuedAt: unixMs, expiresAt: unixMs.nullable(), deviceTime: unixMs }).describe('expired.'),
    z.strictObject({ issuedAt: unixMs, deviceTime: unixMs }).describe('not-yet-valid.'),
    z.strictObject({ running: z.array(z.strictObject({ id: z.string(), name: z.string() })) }).describe('busy.'),
  ])
  .describe('By reason; the other reasons have no detail.');

export const commandResultSchema = contractSchema(
  'result',
  'Command result',
  "vehicles/<deviceId>/commands/<commandId>/result, or the command's MQTT 5 response topic inside vehicles/<deviceId>/results/; JSON, QoS 1, not retained. A SUCCEEDED detail is the command's commands/<name>.result; an IN_PROGRESS detail its commands/<name>.progress.",
  z.union([
    z.strictObject({
      ...common,
      status: z.literal('ACCEPTED'),
      detail: z.strictObject({ timeoutMs: z.number().int().positive().describe('How long it may run on the car.') }),
    }),
    z.strictObject({
      ...common,
      status: z.literal('IN_PROGRESS'),
      detail: z.record(z.string(), z.unknown()).optional().describe("None in the first; the command's progress report in the next ones."),
    }),
    z.strictObject({ ...common, status: z.literal('SUCCEEDED'), detail: z.unknown().optional().describe("The command's result (commands/<name>.result).") }),
    z.strictObject({
      ...common,
      status: z.literal('FAILED'),
      reason: z
        .string()
        .describe(
          `The agent's own: ${FAILURE_REASONS.join(', ')} (interrupted: detail startedAt, unix ms); or the command's (obd-unavailable, obd-error, invalid-config, apply-failed, unknown-signal, signal-not-allowed, unknown-bus, out-of-range, precondition-failed, bus-unavailable, rate-limited, unsupported, busy, not-sent, no-certificate, bad-certificate, storage, rolled-back).`,
        ),
      message: z.string(),
      detail: z.unknown().optional(),
    }),
    z.strictObject({
      ...common,
      status: z.literal('TIMED_OUT'),
      reason: z.literal(TIMEOUT_REASON),
      message: z.string(),
      detail: z.strictObject({ timeoutMs: z.number().int().positive() }),
    }),
    z.strictObject({ ...common, status: z.literal('REJECTED'), reason: z.enum(REJECT_REASONS), message: z.string(), detail: rejectionDetail.optional() }),
  ]),
);

export type PublishedCommandResult = z.output<typeof commandResultSchema>;

/** Each command's parameters (accepted: a field with a default may be left out), result and progress, by name. */
export const commandSchemas = new Map(
  HANDLERS.map((handler) => {
    const params = contractSchema(`commands/${handler.name}.params`, `${handler.name}: parameters`, handler.description, handler.params, 'accepted');
    const result = contractSchema(
      `commands/${handler.name}.result`,
      `${handler.name}: result`,
      `The detail of ${handler.name}'s SUCCEEDED result.`,
      handler.result,
    );
    const progress = handler.progress
      ? contractSchema(
          `commands/${handler.name}.progress`,
          `${handler.name}: progress`,
          `The detail of ${handler.name}'s IN_PROGRESS reports.`,
          handler.progress,
        )
      : undefined;
    return [handler.name, { params, result, progress }] as const;
  }),
);
