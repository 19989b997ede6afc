/** `getConfig`: the device config the agent runs with (collection rules as last applied by setConfig). */
import { z } from 'zod';
import type { CommandContext, CommandHandler } from '../handler.js';

const getConfigParams = z.strictObject({
  section: z
    .enum(['deviceId', 'buses', 'obdAdapters', 'status', 'collection', 'outbox', 'uplink', 'commands'])
    .optional()
    .describe('Return this section only; default the whole config.'),
});

const getConfigResult = z.union([
  z.strictObject({
    config: z
      .record(z.string(), z.unknown())
      .describe('The whole device config as the agent runs it: defaults filled in, paths absolute (device-config.schema.json).'),
  }),
  z.strictObject({
    section: z.string().describe('The section asked for.'),
    value: z.unknown().describe('That section as the agent runs it; null when the config has none.'),
  }),
]);

export const getConfig: CommandHandler<z.output<typeof getConfigParams>, CommandContext, z.output<typeof getConfigResult>> = {
  name: 'getConfig',
  description: 'The device config the agent runs with, or one section of it (the collection rules as setConfig last applied them).',
  params: getConfigParams,
  result: getConfigResult,
  defaultTimeoutMs: 5000,
  async run(params, context) {
    const config = context.config() as Record<string, unknown>;
    if (params.section === undefined) return { config };
    // An absent section is reported as null, so the answer says "not configured" rather than leaving the key out.
    return { section: params.section, value: config[params.section] ?? null };
  },
};
