/** The `health` section of the device config: how often the health report is taken and published, and the local status page. */
import { isIP } from 'node:net';
import { z } from 'zod';

/** `localhost`, 127.0.0.0/8 or ::1: addresses only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) return bare === '::1' || bare === '0:0:0:0:0:0:0:1';
  return false;
}

export const healthHttpConfigSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Serve the status page, /status and /metrics. Default true.'),
    host: z
      .string()
      .min(1)
      .default('127.0.0.1')
      .describe('Address to listen on. Default 127.0.0.1. Anything but a loopback address (127.x, ::1, localhost) needs allowRemote.'),
    port: z
      .number()
      .int()
      .min(0)
      .max(65_535)
      .default(8089)
      .describe('TCP port. Default 8089; 0: any free port (the one chosen is logged). A port in use is reported once and the agent runs without the page.'),
    allowRemote: z
      .boolean()
      .default(false)
      .describe(
        'Allow a host that other machines can reach. The page has no authentication: only on a network that is as trusted as the car itself. Default false.',
      ),
  })
  .superRefine((http, ctx) => {
    if (!http.allowRemote && !isLoopbackHost(http.host)) {
      ctx.addIssue({
        code: 'custom',
        path: ['host'],
        message: `'${http.host}' is not a loopback address: the status page has no authentication; use 127.0.0.1, or set allowRemote: true`,
      });
    }
  })
  .prefault({})
  .describe('The local HTTP endpoint for technicians: a status page at /, JSON at /status, Prometheus text at /metrics.');

export const healthConfigSchema = z
  .strictObject({
    intervalS: z
      .number()
      .min(1)
      .max(86_400)
      .default(300)
      .describe(
        'How often the health report is taken (host and agent) and published to vehicles/<deviceId>/health, seconds. ' +
          'A report is about 2 KB: every 300 s (the default) that is about 0.6 MB a day over the cellular link, every 60 s about 3 MB.',
      ),
    certificateWarningDays: z
      .number()
      .int()
      .min(0)
      .default(30)
      .describe('The report and the status page flag the device certificate (certificate.expiringSoon) when it expires within this many days. Default 30.'),
    http: healthHttpConfigSchema,
  })
  .describe('Host and agent health: the report published over the uplink, and the local status page.');

export type HealthConfig = z.output<typeof healthConfigSchema>;
export type HealthHttpConfig = z.output<typeof healthHttpConfigSchema>;

/** Without a health section: the report every 300 s over the uplink, and no local endpoint. */
export const HEALTH_DEFAULTS: HealthConfig = healthConfigSchema.parse({ http: { enabled: false } });
