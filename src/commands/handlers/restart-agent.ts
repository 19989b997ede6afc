/**
 * `restartAgent`: the agent stops cleanly (open batches to the outbox) after sending the result, and exits with
 * EX_TEMPFAIL (75) so that the service manager starts it again. No shell, no reboot: only this process restarts.
 */
import { z } from 'zod';
import type { CommandContext, CommandHandler } from '../handler.js';

const restartAgentParams = z.strictObject({});

const restartAgentResult = z.strictObject({ restarting: z.literal(true) });

export const restartAgent: CommandHandler<z.output<typeof restartAgentParams>, CommandContext, z.output<typeof restartAgentResult>> = {
  name: 'restartAgent',
  description: 'Stops the agent cleanly after the result is sent and exits with 75, which the service manager restarts. Only the agent restarts.',
  params: restartAgentParams,
  result: restartAgentResult,
  defaultTimeoutMs: 5000,
  async run(_params, context) {
    context.requestRestart();
    return { restarting: true as const };
  },
};
