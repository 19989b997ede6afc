/**
 * `ping`: answers with the car's clock and an optional echo: a round trip and a clock check in one. `delayMs` holds
 * the answer back that long (abortable), to check timeouts and the lifecycle end to end without touching the car.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { CommandContext, CommandHandler } from '../handler.js';

const pingParams = z.strictObject({
  echo: z.string().max(256).optional().describe('Returned as given.'),
  delayMs: z.number().int().min(0).max(60_000).optional().describe('Answer this much later (the timeout still applies).'),
});

const pingResult = z.strictObject({
  pong: z.literal(true),
  deviceTime: z.number().int().nonnegative().describe("The car's clock when it answered, unix ms."),
  echo: z.string().max(256).optional().describe('The echo parameter, when given.'),
});

export const ping: CommandHandler<z.output<typeof pingParams>, CommandContext, z.output<typeof pingResult>> = {
  name: 'ping',
  description: "Answers with the car's clock and the echo: a round trip and a clock check. delayMs holds the answer back, to exercise timeouts.",
  params: pingParams,
  result: pingResult,
  defaultTimeoutMs: 5000,
  async run(params, _context, run) {
    if (params.delayMs) await sleep(params.delayMs, undefined, { signal: run.signal });
    return { pong: true as const, deviceTime: Date.now(), ...(params.echo !== undefined ? { echo: params.echo } : {}) };
  },
};
