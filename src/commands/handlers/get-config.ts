/** `getConfig`: the device config the agent runs with (collection rules as last applied by setConfig). */
import { z } from 'zod';
import type { CommandHandler } from '../handler.js';

const getConfigParams = z.strictObject({
  section: z
    .enum(['deviceId', 'buses', 'obdAdapters', 'status', 'collection', 'outbox', 'uplink', 'commands'])
    .optional()
    .describe('Return this section only; default the whole config.'),
});

export const getConfig: CommandHandler<z.output<typeof getConfigParams>> = {
  name: 'getConfig',
  description: 'The device config the agent runs with, or one section of it (the collection rules as setConfig last applied them).',
  params: getConfigParams,
  defaultTimeoutMs: 5000,
  async run(params, context) {
    const config = context.config() as Record<string, unknown>;
    if (params.section === undefined) return { config };
    // An absent section is reported as null, so the answer says "not configured" rather than leaving the key out.
    return { section: params.section, value: config[params.section] ?? null };
  },
};
