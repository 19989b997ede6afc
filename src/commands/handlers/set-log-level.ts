/** `setLogLevel`: how much the agent writes to its log, until the next start. */
import { z } from 'zod';
import type { CommandContext, CommandHandler } from '../handler.js';

const setLogLevelParams = z.strictObject({
  level: z
    .enum(['error', 'warn', 'info', 'debug'])
    .describe(
      'error: failures only; warn: also warnings; info: also state changes such as connections and commands (the default); debug: more detail. Ends the verbose start.',
    ),
});

const setLogLevelResult = z.strictObject({ level: z.enum(['error', 'warn', 'info', 'debug']).describe('The level now in force.') });

export const setLogLevel: CommandHandler<z.output<typeof setLogLevelParams>, CommandContext, z.output<typeof setLogLevelResult>> = {
  name: 'setLogLevel',
  description: 'How much the agent writes to its log, until the next start.',
  params: setLogLevelParams,
  result: setLogLevelResult,
  defaultTimeoutMs: 5000,
  async run(params, context) {
    context.setLogLevel(params.level);
    return { level: params.level };
  },
};
