/**
 * `setConfig`: replaces the collection rules and batching (the `collection` section) while the agent runs. The
 * context validates the section against the schema and the vehicle's DBCs, swaps the collector, and keeps the section
 * in the collection override file beside the outbox, atomically (src/config/collection-override.ts; the device
 * config itself is read-only to the agent); if any step fails, the previous rules stay in force and the file is
 * untouched.
 */
import { z } from 'zod';
import type { CommandContext, CommandHandler } from '../handler.js';

const setConfigParams = z.strictObject({
  // Checked by the context against the collection schema: here only its presence, so that its problems are reported
  // as 'invalid-config' with the config's own messages rather than as 'bad-params'.
  collection: z.record(z.string(), z.unknown()).describe('The new `collection` section, as in the device config file.'),
});

const setConfigResult = z.strictObject({
  applied: z.literal('collection').describe('The section replaced.'),
  rules: z.number().int().nonnegative().describe('Collection rules now running.'),
});

export const setConfig: CommandHandler<z.output<typeof setConfigParams>, CommandContext, z.output<typeof setConfigResult>> = {
  name: 'setConfig',
  description:
    'Replaces the collection rules (the collection section) without a restart, and keeps them beside the outbox; the old rules stay if the new ones do not apply.',
  params: setConfigParams,
  result: setConfigResult,
  defaultTimeoutMs: 10_000,
  async run(params, context) {
    await context.applyCollection(params.collection);
    const rules = (params.collection.rules as unknown[] | undefined)?.length ?? 0;
    return { applied: 'collection' as const, rules };
  },
};
