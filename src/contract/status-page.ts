/**
 * GET /status of the local endpoint (docs/health.md): what the status page shows, read when asked. Its `agent` and
 * `report` are the health report's schemas; the rest is the page's own view (signals with their freshness, the link,
 * per-bus rates).
 */
import { z } from 'zod';
import { agentHealthSchema, healthReportSchema } from './health.js';
import { contractSchema, deviceId, unixMs } from './registry.js';

const freshness = {
  ageS: z.number().nullable().describe('Seconds since the value arrived; null before any.'),
  stale: z.boolean().describe('Older than its freshness limit (false while there is no value).'),
};

export const liveStatusSchema = contractSchema(
  'status-page',
  'Local status (GET /status)',
  'The JSON document of GET /status on the local endpoint (health.http), read live.',
  z.strictObject({
    deviceId,
    tsMs: unixMs,
    link: z.strictObject({
      state: z.string().describe('The session state, or `none` without an uplink.'),
      url: z.string().nullable(),
      heartbeatS: z.number().nullable(),
    }),
    signals: z.array(
      z.strictObject({ name: z.string(), value: z.number().nullable(), text: z.string().describe('As the status line shows it.'), ...freshness }),
    ),
    obd: z.array(z.strictObject({ name: z.string().describe('`<adapter or bus>.obd.<key>`.'), value: z.number(), text: z.string(), ...freshness })),
    buses: z.array(
      z.strictObject({
        name: z.string(),
        source: z.string(),
        frames: z.number().int().nonnegative(),
        framesPerS: z.number().nonnegative().nullable(),
        errors: z.number().int().nonnegative(),
        state: z.string().nullable(),
      }),
    ),
    outbox: z
      .strictObject({ messages: z.number().int().nonnegative(), bytes: z.number().int().nonnegative(), oldestAgeS: z.number().nonnegative().nullable() })
      .nullable(),
    agent: agentHealthSchema,
    report: healthReportSchema.nullable().describe('The latest health report (the host values come from it); null until the first host sample is done.'),
  }),
);

export type LiveStatus = z.output<typeof liveStatusSchema>;
