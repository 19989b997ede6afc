/** `getStatus`: the agent's state as the health message reports it (buses, outbox, uplink), on demand. */
import { z } from 'zod';
import type { CommandHandler } from '../handler.js';

const getStatusParams = z.strictObject({});

export const getStatus: CommandHandler<z.output<typeof getStatusParams>> = {
  name: 'getStatus',
  description: "The agent's state as its health message reports it: buses, adapters, outbox, uplink.",
  params: getStatusParams,
  defaultTimeoutMs: 5000,
  async run(_params, context) {
    return context.status();
  },
};
