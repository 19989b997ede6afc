/** The `commands` section of the device config: who may command the car, and within which limits. */
import { z } from 'zod';
import { expressionSyntaxError } from '../collect/expression.js';

const expression = z
  .string()
  .min(1)
  .superRefine((source, ctx) => {
    const error = expressionSyntaxError(source);
    if (error) ctx.addIssue({ code: 'custom', message: `${error.message}: ${source}` });
  });

/** How old a signal's value may be for a precondition to trust it, ms. */
const maxAgeMs = z.number().int().min(1).max(86_400_000);

export const freshnessConfigSchema = z
  .strictObject({
    cycles: z
      .number()
      .min(1)
      .max(1000)
      .default(3)
      .describe("A value is fresh for this many periods of its signal: its DBC message's cycle time (GenMsgCycleTime) or its OBD poll interval. Default 3."),
    minMs: z.number().int().min(0).max(86_400_000).default(1000).describe('...and for at least this long, ms. Default 1000.'),
    defaultMs: maxAgeMs
      .default(5000)
      .describe('How long a value is fresh when its period is not known (a DBC message without GenMsgCycleTime), ms. Default 5000.'),
    signals: z
      .record(z.string().min(1), maxAgeMs)
      .default({})
      .describe('Per signal (by any name preconditions use), how long its value is fresh, ms: e.g. a message sent only when it changes.'),
  })
  .prefault({})
  .describe('Preconditions do not trust old values: one older than its limit is stale, and the precondition fails (precondition-failed, with its age).');

export const allowedSignalSchema = z.strictObject({
  bus: z.string().min(1).describe('Bus name (buses[].name).'),
  message: z.string().min(1).describe('DBC message name.'),
  signal: z.string().min(1).describe('DBC signal name.'),
  min: z.number().optional().describe('Smallest value setSignal may write.'),
  max: z.number().optional().describe('Largest value setSignal may write.'),
  precondition: expression.optional().describe('Must hold on live signals for this write, e.g. "VehicleSpeed == 0".'),
  preconditionMaxAgeMs: maxAgeMs.optional().describe("How old the precondition's values may be, ms; default: commands.freshness."),
});

/** A command's precondition: the condition, or the condition with how old the values it reads may be. */
export const preconditionSchema = z.union([
  expression,
  z.strictObject({
    condition: expression.describe('Must hold on live signals, e.g. "VehicleSpeed == 0".'),
    maxAgeMs: maxAgeMs.optional().describe('How old the values it reads may be, ms, for every signal of it; default: commands.freshness.'),
  }),
]);

export const commandsConfigSchema = z
  .strictObject({
    caFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        'The command CA (PEM), relative to this config file: commands must be signed by a certificate that chains to it. Pinned: nothing else is trusted. ' +
          'Default: <uplink.certsDir>/command-ca.crt (with embeddedBroker, the development command CA created there).',
      ),
    replayDbPath: z
      .string()
      .min(1)
      .default('var/commands.db')
      .describe('SQLite file remembering the IDs of commands received (replay protection across restarts), relative to this config file.'),
    maxPayloadBytes: z
      .number()
      .int()
      .min(1024)
      .max(1_048_576)
      .default(16_384)
      .describe('Larger command payloads are REJECTED unread (oversize). Default 16 KiB.'),
    clockSkewS: z
      .number()
      .int()
      .min(0)
      .max(86_400)
      .default(300)
      .describe("How far in the future a command may be issued (the operator's clock ahead of the car's), seconds. Default 300."),
    maxLifetimeS: z
      .number()
      .int()
      .min(1)
      .default(7 * 86_400)
      .describe('Longest a command stays valid after it was issued (with or without expiresAt), seconds; also how long its ID is remembered. Default 7 days.'),
    maxConcurrent: z.number().int().min(1).max(64).default(2).describe('Commands running at once; more are REJECTED (busy). Default 2.'),
    defaultTimeoutMs: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe("Timeout of a command whose envelope gives none; default: the command's own (e.g. 5 s for ping)."),
    maxTimeoutMs: z.number().int().min(1).default(600_000).describe('Longest timeout an envelope may ask for, ms (longer is cut to this). Default 10 min.'),
    preconditions: z
      .record(z.string(), preconditionSchema)
      .default({})
      .describe(
        'Per command name, a condition on live signals that must hold for it to run, e.g. {"clearDtcs": "VehicleSpeed == 0 && EngineSpeed == 0"}, ' +
          'or {"condition": ..., "maxAgeMs": 500} with its own freshness limit.',
      ),
    freshness: freshnessConfigSchema,
    allowedSignals: z.array(allowedSignalSchema).default([]).describe('The only signals setSignal may write, with their ranges and preconditions.'),
  })
  .describe('Remote commands: signed by a fleet-operations key (docs/commands.md), on vehicles/<deviceId>/commands/+. Needs an uplink.');

export type CommandsConfig = z.output<typeof commandsConfigSchema>;
export type AllowedSignal = z.output<typeof allowedSignalSchema>;
export type FreshnessConfig = z.output<typeof freshnessConfigSchema>;
