/** The `uplink` section of the device config: the broker, the device's TLS identity, and the budget of the link. */
import { z } from 'zod';

/** The adaptive heartbeat (src/uplink/heartbeat.ts, keepalive.ts): defaults for cellular networks. */
export const keepaliveConfigSchema = z
  .strictObject({
    adaptive: z
      .boolean()
      .default(true)
      .describe('Learn how long each network lets the link stay idle, and send heartbeats just within it. false: the fixed keepaliveS. Default true.'),
    minIntervalS: z.number().min(1).max(65_535).default(20).describe('Shortest heartbeat interval, seconds. Default 20.'),
    maxIntervalS: z
      .number()
      .int()
      .min(1)
      .max(65_535)
      .default(1200)
      .describe(
        "Longest heartbeat interval, seconds; also the MQTT keepalive announced at CONNECT. The broker's Server Keep Alive (MQTT 5) caps it further. Default 1200.",
      ),
    initialIntervalS: z
      .number()
      .min(1)
      .max(65_535)
      .default(60)
      .describe('Where learning starts on a network without memory: an interval every network is expected to allow. Default 60.'),
    stepFactor: z.number().gt(1).max(4).default(1.5).describe('Each probe lengthens the last interval that worked by this factor. Default 1.5.'),
    marginFraction: z
      .number()
      .min(0)
      .max(0.5)
      .default(0.1)
      .describe('The heartbeat runs this fraction below the longest idle period that worked; learning stops when the failures are this close. Default 0.1.'),
    holdCycles: z.number().int().min(0).default(3).describe('Heartbeats at the safe interval after the link died before probing again. Default 3.'),
    settledCycles: z
      .number()
      .int()
      .min(0)
      .default(500)
      .describe('Heartbeats at the learned interval before a longer one is tried again (the network may have become more patient); 0: never. Default 500.'),
    livenessMinS: z
      .number()
      .gt(0)
      .max(600)
      .default(5)
      .describe(
        "The shortest wait for a ping's answer before the link is declared dead, seconds; slower links get longer (from the measured round trips). Default 5.",
      ),
    memoryPath: z
      .string()
      .min(1)
      .optional()
      .describe('SQLite file holding what was learned per network, relative to this config file. Default: link-memory.db beside the outbox.'),
  })
  .superRefine((k, ctx) => {
    if (!(k.minIntervalS <= k.initialIntervalS && k.initialIntervalS <= k.maxIntervalS)) {
      ctx.addIssue({
        code: 'custom',
        path: ['initialIntervalS'],
        message: `must lie between minIntervalS (${k.minIntervalS}) and maxIntervalS (${k.maxIntervalS})`,
      });
    }
  })
  .prefault({})
  .describe('Heartbeats that keep NAT mappings alive, learned per network, and the liveness check that finds a dead link.');

export type KeepaliveConfig = z.output<typeof keepaliveConfigSchema>;

export const uplinkConfigSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^mqtts:\/\/[^/:]+(:\d{1,5})?\/?$/, { message: 'expected mqtts://host[:port] (TLS only; plain mqtt:// is refused)' })
      .describe("The broker, mqtts://host[:port] (port 8883 by default). With embeddedBroker, where the agent's own broker listens (port 0: any free port)."),
    embeddedBroker: z
      .union([z.boolean(), z.enum(['mosquitto', 'aedes'])])
      .default(false)
      .describe(
        'Start a development broker at url (cars; the backend on the next port, as in production) and publish to it: the demo setup, no backend needed. ' +
          'true: mosquitto when installed (MQTT 5, the shipped fleet configuration), else aedes in-process (MQTT 3.1.1 only); "mosquitto" or "aedes": that one. ' +
          'A development CA and certificates are created in certsDir when absent. Default false.',
      ),
    certsDir: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Folder of the development PKI (ca.crt, server.crt, <deviceId>.crt and keys), relative to this config file. Used with embeddedBroker, and as the default folder of the three files below.',
      ),
    certFile: z.string().min(1).optional().describe('Client certificate (PEM) whose CN is the deviceId. Default: <certsDir>/<deviceId>.crt.'),
    keyFile: z.string().min(1).optional().describe('Its private key (PEM, unencrypted). Default: <certsDir>/<deviceId>.key.'),
    caFile: z.string().min(1).optional().describe("The only CA trusted for the broker's certificate (pinned). Default: <certsDir>/ca.crt."),
    issuerFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        "The CA that issues device certificates, when it is not the broker's CA in caFile. The device certificate must chain to it (checked at start, daily and on rotation). Default: caFile.",
      ),
    protocol: z
      .union([z.literal(5), z.literal(4)])
      .optional()
      .describe(
        "MQTT protocol level: 5 (MQTT 5, default) or 4 (MQTT 3.1.1). With embeddedBroker, the broker's: 5 with mosquitto, 4 with aedes (which speaks 3.1.1 only).",
      ),
    sessionExpiryS: z
      .number()
      .int()
      .min(0)
      .default(7 * 86_400)
      .describe("How long the broker keeps this device's session (and commands queued for it) while the car is offline. MQTT 5. Default 7 days."),
    keepaliveS: z.number().int().min(5).max(65_535).default(60).describe('MQTT keepalive, seconds, when keepalive.adaptive is false. Default 60.'),
    keepalive: keepaliveConfigSchema,
    maxInflight: z
      .number()
      .int()
      .min(1)
      .max(65_535)
      .default(16)
      .describe("QoS 1 messages sent and not yet acknowledged, at most (the broker's receive maximum caps it too). Default 16."),
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
      .describe("The data plan's budget, enforced in the car: what exceeds it waits in the outbox, highest priority first."),
  })
  .superRefine((uplink, ctx) => {
    if (uplink.certsDir === undefined) {
      for (const key of ['certFile', 'keyFile', 'caFile'] as const) {
        if (uplink[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: `required without certsDir` });
      }
    }
    if (uplink.embeddedBroker) {
      if (uplink.certsDir === undefined)
        ctx.addIssue({ code: 'custom', path: ['certsDir'], message: 'required with embeddedBroker (the development PKI lives there)' });
      if (uplink.protocol === 5 && uplink.embeddedBroker === 'aedes')
        ctx.addIssue({ code: 'custom', path: ['protocol'], message: 'aedes speaks MQTT 3.1.1 only: use 4, or embeddedBroker "mosquitto"' });
    }
  })
  .describe('The MQTT uplink: mutual TLS to the fleet broker, topics vehicles/<deviceId>/telemetry, events, status, health.');

export type UplinkConfig = z.output<typeof uplinkConfigSchema>;
