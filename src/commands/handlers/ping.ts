/**
 * `ping`: answers with the car's clock and an optional echo: a round trip and a clock check in one. `delayMs` holds
 * the answer back that long (abortable), to check timeouts and the lifecycle end to end without touching the car.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { CommandHandler } from '../handler.js';

const pingParams = z.strictObject({
  echo: z.string().max(256).optional().describe('Returned as given.'),
  delayMs: z.number().int().min(0).max(60_000).optional().describe('Answer this much later (the timeout still applies).'),
});

export const ping: CommandHandler<z.output<typeof pingParams>> = {
  name: 'ping',
  description: "Answers with the car's clock and the echo: a round trip and a clock check. delayMs holds the answer back, to exercise timeouts.",
  params: pingParams,
  defaultTimeoutMs: 5000,
  async run(params, _context, run) {
    if (params.delayMs) await sleep(params.delayMs, undefined, { signal: run.signal });
    return { pong: true, deviceTime: Date.now(), ...(params.echo !== undefined ? { echo: params.echo } : {}) };
  },
};
