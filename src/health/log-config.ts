/**
 * The `logging` section of the device config: the local log (level, format, verbose start) and its remote copy. The
 * format has no fixed default: the Logger's maker picks it from where the log goes (src/health/log.ts,
 * `defaultLogFormat`), text for a person at a terminal, JSON lines for a machine.
 */
import { z } from 'zod';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export const remoteLogConfigSchema = z
  .strictObject({
    enabled: z
      .boolean()
      .default(true)
      .describe('Also publish warnings and errors to vehicles/<deviceId>/logs (QoS 1, never through the outbox). Needs an uplink. Default true.'),
    level: z
      .enum(['error', 'warn', 'info'])
      .default('warn')
      .describe('The least severe level published: error, warn (default) or info. Debug never leaves the car.'),
    maxPerMinute: z
      .number()
      .int()
      .min(1)
      .max(600)
      .default(20)
      .describe('Most entries made in any 60 s; the excess is dropped, counted, and the count sent with the next entry. Default 20.'),
    foldWindowS: z
      .number()
      .min(0.1)
      .max(3600)
      .default(60)
      .describe(
        'Repeats of a message (same level, component and text, numbers aside) within this many seconds of the first are sent as one entry ' +
          'with a count when the window closes. Default 60.',
      ),
  })
  .prefault({})
  .describe("The remote copy of the log, so that operations see a car's problems without a shell on it.");

export const loggingConfigSchema = z
  .strictObject({
    level: z.enum(LOG_LEVELS).default('info').describe('error, warn, info (default) or debug. The setLogLevel command changes it until the next start.'),
    verboseForS: z
      .number()
      .min(0)
      // setTimeout's limit (2^31 - 1 ms): beyond it the window would end after 1 ms.
      .max(2_147_483)
      .default(300)
      .describe(
        'Log at debug for this many seconds after start (unless setLogLevel sets a level first), then at `level`. 0: off. At most 2147483 (24.8 days). Default 300.',
      ),
    format: z
      .enum(LOG_FORMATS)
      .optional()
      .describe(
        'json: one JSON object per line on stderr (time, level, msg, component, fields); text: the bare messages, for a person. ' +
          'Default: text when stderr is a terminal, json otherwise (a pipe, a file, the journal).',
      ),
    remote: remoteLogConfigSchema,
  })
  .describe("The agent's log: structured lines on stderr, and warnings and errors sent to the backend.");

export type LoggingConfig = z.output<typeof loggingConfigSchema>;
export type RemoteLogConfig = z.output<typeof remoteLogConfigSchema>;

/** The section with its defaults, whether or not the config has one. */
export function loggingConfig(section: LoggingConfig | undefined): LoggingConfig {
  return section ?? loggingConfigSchema.parse({});
}
