/**
 * `getStatus`: the agent's state now, in the shapes the health report uses: the `agent` part read live (what the
 * local /status and /metrics read), the host's latest sample, and the detail behind two of the agent's fields (what
 * the adaptive heartbeat has learned, the data plan's budget). A backend reads it with the same schema as health.
 */
import { z } from 'zod';
import { agentHealthSchema, heartbeatDetailSchema, systemSampleSchema, throttleDetailSchema } from '../../contract/health.js';
import type { CommandContext, CommandHandler } from '../handler.js';

const getStatusParams = z.strictObject({});

export const getStatusResult = z.strictObject({
  deviceId: z.string(),
  tsMs: z.number().int().nonnegative().describe('When the agent part was read, unix ms.'),
  agent: agentHealthSchema,
  system: systemSampleSchema.nullable().describe("The host's latest sample (its own tsMs says when); null until the first is done."),
  heartbeat: heartbeatDetailSchema.nullable().describe('Null without an uplink or an adaptive heartbeat.'),
  throttle: throttleDetailSchema.nullable().describe('Null without an uplink.'),
});

export type StatusReport = z.output<typeof getStatusResult>;

export const getStatus: CommandHandler<z.output<typeof getStatusParams>, CommandContext, StatusReport> = {
  name: 'getStatus',
  description: "The agent's state now, in the health report's shapes, with the heartbeat and the data budget.",
  params: getStatusParams,
  result: getStatusResult,
  defaultTimeoutMs: 5000,
  async run(_params, context) {
    return context.status();
  },
};
