/** The `uplink` section of the device config: the broker, the device's TLS identity, and the budget of the link. */
import { z } from 'zod';

export const uplinkConfigSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^mqtts:\/\/[^/:]+(:\d{1,5})?\/?$/, { message: 'expected mqtts://host[:port] (TLS only; plain mqtt:// is refused)' })
      .describe('The broker, mqtts://host[:port] (port 8883 by default). With embeddedBroker, where the agent\'s own broker listens (port 0: any free port).'),
    embeddedBroker: z
      .boolean()
      .default(false)
      .describe(
        'Start a local MQTT broker (TLS, client certificates, per-device ACL) at url and publish to it: the demo setup, no backend needed. ' +
          'A development CA and certificates are created in certsDir when absent. Default false.',
      ),
    certsDir: z
      .string()
      .min(1)
      .optional()
      .describe('Folder of the development PKI (ca.crt, server.crt, <deviceId>.crt and keys), relative to this config file. Used with embeddedBroker, and as the default folder of the three files below.'),
    certFile: z.string().min(1).optional().describe('Client certificate (PEM) whose CN is the deviceId. Default: <certsDir>/<deviceId>.crt.'),
    keyFile: z.string().min(1).optional().describe('Its private key (PEM, unencrypted). Default: <certsDir>/<deviceId>.key.'),
    caFile: z.string().min(1).optional().describe('The only CA trusted for the broker\'s certificate (pinned). Default: <certsDir>/ca.crt.'),
    protocol: z
      .union([z.literal(5), z.literal(4)])
      .optional()
      .describe('MQTT protocol level: 5 (MQTT 5, default) or 4 (MQTT 3.1.1). The embedded broker speaks 3.1.1 only, so it defaults to 4 there.'),
    sessionExpiryS: z
      .number()
      .int()
      .min(0)
      .default(7 * 86_400)
      .describe('How long the broker keeps this device\'s session (and commands queued for it) while the car is offline. MQTT 5. Default 7 days.'),
    keepaliveS: z.number().int().min(5).max(65_535).default(60).describe('MQTT keepalive, seconds. Default 60.'),
    maxInflight: z
      .number()
      .int()
      .min(1)
      .max(65_535)
      .default(16)
      .describe('QoS 1 messages sent and not yet acknowledged, at most (the broker\'s receive maximum caps it too). Default 16.'),
    maxPacketSize: z
      .number()
      .int()
      .min(1024)
      .optional()
      .describe(
        'Largest MQTT packet the broker accepts, bytes. MQTT 5 brokers announce it; a 3.1.1 broker does not, and disconnects a client that ' +
          'exceeds it: set it then, so an oversized message is set aside instead of costing a reconnect each time.',
      ),
    reconnect: z
      .strictObject({
        initialMs: z.number().int().min(10).default(1000).describe('First backoff ceiling. Default 1000.'),
        maxMs: z.number().int().min(100).default(300_000).describe('Largest backoff ceiling. Default 300000 (5 min).'),
      })
      .prefault({})
      .describe('Reconnect backoff: the nth attempt waits a random time in [0, min(maxMs, initialMs·2^n)) (full jitter).'),
    throttle: z
      .strictObject({
        messagesPerHour: z.number().int().min(0).default(0).describe('Messages per hour at most; 0: no limit. Default 0.'),
        bytesPerHour: z.number().int().min(0).default(0).describe('Payload bytes per hour at most; 0: no limit. Default 0.'),
        burstFraction: z.number().gt(0).max(1).default(0.1).describe('How much of the hourly budget may go out at once. Default 0.1.'),
      })
      .prefault({})
      .describe('The data plan\'s budget, enforced in the car: what exceeds it waits in the outbox, highest priority first.'),
  })
  .superRefine((uplink, ctx) => {
    if (uplink.certsDir === undefined) {
      for (const key of ['certFile', 'keyFile', 'caFile'] as const) {
        if (uplink[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: `required without certsDir` });
      }
    }
    if (uplink.embeddedBroker) {
      if (uplink.certsDir === undefined) ctx.addIssue({ code: 'custom', path: ['certsDir'], message: 'required with embeddedBroker (the development PKI lives there)' });
      if (uplink.protocol === 5) ctx.addIssue({ code: 'custom', path: ['protocol'], message: 'the embedded broker speaks MQTT 3.1.1 only: use 4' });
    }
  })
  .describe('The MQTT uplink: mutual TLS to the fleet broker, topics vehicles/<deviceId>/telemetry, events, status, health.');

export type UplinkConfig = z.output<typeof uplinkConfigSchema>;
