/**
 * `restartAgent`: the agent stops cleanly (open batches to the outbox) after sending the result, and exits with
 * EX_TEMPFAIL (75) so that the service manager starts it again. No shell, no reboot: only this process restarts.
 */
import { z } from 'zod';
import type { CommandHandler } from '../handler.js';

const restartAgentParams = z.strictObject({});

export const restartAgent: CommandHandler<z.output<typeof restartAgentParams>> = {
  name: 'restartAgent',
  description: 'Stops the agent cleanly after the result is sent and exits with 75, which the service manager restarts. Only the agent restarts.',
  params: restartAgentParams,
  defaultTimeoutMs: 5000,
  async run(_params, context) {
    context.requestRestart();
    return { restarting: true };
  },
};
