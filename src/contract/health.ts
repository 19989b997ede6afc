/**
 * The health report (`vehicles/<deviceId>/health`) and its two parts, the host (`system`) and the agent (`agent`):
 * one schema for each, shared by everything that carries them. The health message, the live `/status` of the local
 * endpoint and the `getStatus` command's result all carry the same `agent` and `system` (docs/health.md).
 *
 * Units are in the field names (`Bytes`, `S` seconds, `Ms` milliseconds, `PerS` per second, `Percent`, `C` degrees
 * Celsius); counters count since the agent started. A value the host cannot give is null, never 0.
 */
import { z } from 'zod';
import { contractSchema, count, deviceId, outboxSeq, unixMs } from './registry.js';

/** Bumped when a field changes meaning or goes away (adding fields keeps it). */
export const HEALTH_REPORT_VERSION = 1;

const rate = z.number().nonnegative().nullable();

/** The last error's message is cut to this (a log message can quote a long answer from the network). */
export const LAST_ERROR_MAX_CHARS = 500;

export const diskSampleSchema = z.strictObject({
  path: z.string().describe("The folder asked about: the outbox's (the working directory without one)."),
  mount: z.string().nullable().describe('Its mount point; null when only statfs could answer.'),
  filesystem: z.string().nullable().describe('Its device; null when only statfs could answer.'),
  totalBytes: count,
  freeBytes: count.describe("Available to the agent (root's reserve excluded)."),
  usedPercent: z.number().min(0).max(100),
});

export const interfaceSampleSchema = z.strictObject({
  name: z.string(),
  up: z.boolean().describe('operstate up, or unknown with an address (ppp, tun and loopback have no carrier to sense).'),
  operstate: z.string().describe("The kernel's operstate (up, down, unknown...)."),
  default: z.boolean().describe("The default route's interface."),
  internal: z.boolean(),
  type: z.string().describe('wired, wireless, virtual...'),
  ip4: z.string().nullable(),
  ip6: z.string().nullable(),
  mac: z.string().nullable(),
  speedMbps: z.number().nonnegative().nullable(),
});

export const systemSampleSchema = contractSchema(
  'system',
  'The head unit',
  "The host the agent runs on: on Linux read from the kernel's files (load and memory through systeminformation); each probe time-boxed. A probe that failed has its fields null and a line in `failed`.",
  z.strictObject({
    tsMs: unixMs.describe('When the host sampling started.'),
    sampleMs: count.describe('How long sampling took (the slowest probe).'),
    failed: z.array(z.string()).describe('One `probe: reason` per probe that failed or timed out.'),
    cpuLoadPercent: z.number().min(0).max(100).nullable().describe('CPU busy time since the previous sample, all cores.'),
    cpuUserPercent: z.number().min(0).max(100).nullable(),
    cpuSystemPercent: z.number().min(0).max(100).nullable(),
    loadAverage1m: z.number().nonnegative(),
    cpuCores: count,
    memTotalBytes: count.nullable(),
    memAvailableBytes: count.nullable().describe('What programs can still get without swapping.'),
    memUsedBytes: count.nullable().describe('Total minus available.'),
    swapTotalBytes: count.nullable(),
    swapUsedBytes: count.nullable(),
    cpuTempC: z.number().nullable(),
    cpuTempMaxC: z.number().nullable(),
    chipsetTempC: z.number().nullable(),
    coreTempsC: z.array(z.number()).describe('[] without sensors.'),
    disk: diskSampleSchema.nullable().describe('The filesystem holding the outbox.'),
    defaultInterface: z.string().nullable(),
    interfaces: z.array(interfaceSampleSchema).nullable(),
    uptimeS: z.number().nonnegative().nullable(),
  }),
);

export const busHealthSchema = z.strictObject({
  name: z.string(),
  source: z.string().describe('The source type: sim, replay, socketcan, or one registered at run time.'),
  frames: count,
  framesPerS: rate,
  signalsPerS: rate,
  unknownFrames: count.describe('Frames the DBC does not describe.'),
  decodeErrors: count,
  malformedLogLines: count.describe('Replay only; 0 otherwise.'),
  errorFrames: count.nullable().describe('SocketCAN buses only (null otherwise).'),
  kernelDrops: count
    .nullable()
    .describe(
      "SocketCAN buses only (null otherwise): frames the kernel dropped before the agent read them because the socket's receive buffer was full (SO_RXQ_OVFL), since the agent started.",
    ),
  interfaceState: z.string().nullable().describe('SocketCAN buses only: starting, missing, down, open.'),
  controllerState: z.string().nullable().describe('SocketCAN buses only: error-active, error-warning, error-passive, bus-off.'),
});

export const obdHealthSchema = z.strictObject({
  name: z.string().describe('The bus or adapter.'),
  via: z.string().describe('`can` for a bus poller; the adapter type (`elm327`) for an adapter.'),
  connected: z.boolean(),
  state: z.string(),
  requests: count,
  answers: count.describe('Values the ECUs returned.'),
  unsupportedPids: count,
});

export const gnssHealthSchema = z.strictObject({
  name: z.string().describe('The position source (an adapter).'),
  via: z.string().describe('Its type: `gnss` (a receiver on a serial port), `gpsd`, `sim-gnss`, or one registered at run time.'),
  state: z.string().describe('The source: `opening`, `missing` (not there: retrying), `receiving`, `silent` (connected, nothing arrives).'),
  mode: z.number().int().min(0).max(3).describe('The latest fix: 0 none yet, 1 no fix, 2 a 2D fix, 3 a 3D fix (gpsd TPV `mode`).'),
  status: z
    .number()
    .int()
    .min(0)
    .max(8)
    .describe(
      'The latest fix, as gpsd TPV `status`: 0 unknown, 1 GPS, 2 DGPS, 3 RTK fixed, 4 RTK float, 5 dead reckoning, 6 GNSS + dead reckoning, 7 time only, 8 simulated.',
    ),
  lat: z
    .number()
    .min(-90)
    .max(90)
    .nullable()
    .describe('The last known position, degrees (WGS84): from the last fix that had one (see positionAgeS). Null before any.'),
  lon: z.number().min(-180).max(180).nullable(),
  altMSL: z.number().nullable().describe('Metres above mean sea level, of the same fix; null for a 2D fix.'),
  speed: z.number().nonnegative().nullable().describe('m/s over ground, of the same fix.'),
  track: z.number().nullable().describe('Degrees from true north, of the same fix.'),
  uSat: z.number().int().nonnegative().nullable().describe('Satellites used in the latest fix.'),
  nSat: z.number().int().nonnegative().nullable().describe('Satellites in view in the latest fix.'),
  hdop: z.number().nonnegative().nullable(),
  fixTime: z.string().nullable().describe("The receiver's UTC time of the last fix with a position (ISO 8601)."),
  positionAgeS: z
    .number()
    .nonnegative()
    .nullable()
    .describe('Seconds since the last fix with a position arrived; null before any. Grows while the receiver has no fix.'),
  clockOffsetS: z
    .number()
    .nullable()
    .describe("The agent's clock minus the receiver's time at the last fix with a time, seconds (positive: the agent's clock is ahead). Null before any."),
  clockWarning: z.boolean().describe('clockOffsetS is beyond 2 s either way: the agent stamps its data by a clock the receiver says is wrong.'),
  fixes: count.describe('Fixes (epochs) since the agent started.'),
});

export const collectorHealthSchema = z.strictObject({
  samples: count,
  batches: count,
  triggers: count,
  droppedBatches: count,
});

export const outboxHealthSchema = z.strictObject({
  messages: count.describe('Depth.'),
  bytes: count.describe('Payload plus row overhead, as counted against outbox.maxBytes.'),
  oldestAgeS: z.number().nonnegative().nullable().describe('Null when empty.'),
  evicted: count.describe('Messages deleted because the outbox was full.'),
  evictedBytes: count,
  expired: count.describe('Messages deleted because they were too old.'),
  rejected: count.describe('Messages that could not be stored.'),
  setAsideFiles: count,
  setAsideBytes: count,
  fileLostWhileRunning: count,
  nextSeq: outboxSeq.describe('The number the next data-stream message gets: the last one assigned is nextSeq - 1 (docs/payload-format.md).'),
  lossNotices: count.describe('Loss notices written (vehicles/<deviceId>/loss) since the agent started.'),
  lostAnnounced: count.describe('Data-stream messages those notices announced lost (evicted, expired, refused) since the agent started.'),
});

export const heartbeatHealthSchema = z.strictObject({
  adaptive: z.boolean(),
  intervalS: z.number().positive().describe('The learned (adaptive) or configured keepalive interval.'),
  phase: z.enum(['probe', 'hold', 'settled']).nullable().describe('Null when not adaptive.'),
  network: z.string().nullable().describe('`unidentified`, `<interface>` or `<interface>/<ssid>`; null when not adaptive.'),
  rttMs: z.number().nonnegative().nullable(),
  deadLinks: count,
});

export const uplinkHealthSchema = z.strictObject({
  state: z.enum(['idle', 'connecting', 'connected', 'disconnected', 'closed']),
  url: z.string(),
  acknowledged: count.describe('Outbox messages the broker acknowledged.'),
  acknowledgedPerS: rate,
  sent: count.describe('Publishes, resends included.'),
  resent: count,
  refused: count,
  dropped: count,
  inflight: count,
  connectAttempts: count,
  connections: count,
  reconnects: count.describe('Connections after the first.'),
  losses: count.describe('Established connections that were lost.'),
  throttled: z.boolean().describe("The data plan's budget is holding messages back."),
  heartbeat: heartbeatHealthSchema,
});

export const certificateHealthSchema = z.strictObject({
  notAfter: z.string().nullable().describe('ISO 8601.'),
  fingerprint256: z.string().nullable(),
  daysLeft: z.number().int(),
  expiringSoon: z.boolean(),
});

export const commandHealthSchema = z.strictObject({
  received: count,
  accepted: count,
  succeeded: count,
  failed: count,
  timedOut: count,
  rejected: count,
  rejectedByReason: z.record(z.string(), count),
  running: count,
  lostResults: count,
  unanswerable: count.describe('Rejected payloads with no readable ID and no usable response topic.'),
  unsignedNotAnswered: count.describe('Rejections of payloads not validly signed that were not sent (beyond 30 a minute).'),
});

export const lastErrorSchema = z.strictObject({
  ts: unixMs.describe('When it was logged.'),
  component: z.string().describe('The component that logged it (a bus or adapter name, outbox, uplink, commands...).'),
  msg: z.string().max(LAST_ERROR_MAX_CHARS).describe(`The message, cut to ${LAST_ERROR_MAX_CHARS} characters.`),
});

export const agentHealthSchema = contractSchema(
  'agent',
  'The agent itself',
  "The agent's own counters and states. Carried by the health report (`agent`), the local `/status` (`agent`, read live) and the getStatus result (`agent`, read live).",
  z.strictObject({
    // Optional in the schema only, so that a backend with this contract still reads the reports of cars not yet
    // updated (a rollout takes weeks); this agent always sends both.
    version: z
      .string()
      .optional()
      .describe("The agent's package version (what `telematics-agent --version` prints). Absent from reports of agents older than this field."),
    processUptimeS: z.number().nonnegative(),
    rssBytes: count,
    heapUsedBytes: count,
    buses: z.array(busHealthSchema),
    framesPerS: rate.describe('All buses together.'),
    decodeErrors: count,
    obd: z.array(obdHealthSchema),
    gnss: z.array(gnssHealthSchema).describe('The position sources (docs/gnss.md); [] without one.'),
    collector: collectorHealthSchema.nullable(),
    outbox: outboxHealthSchema.nullable(),
    uplink: uplinkHealthSchema.nullable(),
    certificate: certificateHealthSchema.nullable(),
    commands: commandHealthSchema.nullable(),
    lastError: lastErrorSchema
      .nullable()
      .optional()
      .describe(
        'The latest error-level log entry since the agent started (whatever logging.level lets through locally); null while none. Absent from reports of agents older than this field.',
      ),
  }),
);

export const healthReportSchema = contractSchema(
  'health',
  'Health report',
  "vehicles/<deviceId>/health, JSON, QoS 1, retained (a backend subscribing at any time gets each car's latest), every health.intervalS (default 300 s) while connected; never stored in the outbox.",
  z.strictObject({
    version: z.literal(HEALTH_REPORT_VERSION),
    deviceId,
    seq: count.describe('Reports taken since the agent started, from 1 (0: the report taken at start for the local page, never published).'),
    tsMs: unixMs,
    intervalS: z.number().positive(),
    periodS: z
      .number()
      .positive()
      .nullable()
      .describe(
        'Seconds the rates cover: since the previous report, or since the start for the first published one. Null only in the report taken at start (seq 0), which is never published.',
      ),
    system: systemSampleSchema,
    agent: agentHealthSchema,
  }),
);

export type DiskSample = z.output<typeof diskSampleSchema>;
export type InterfaceSample = z.output<typeof interfaceSampleSchema>;
export type SystemSample = z.output<typeof systemSampleSchema>;
export type BusHealth = z.output<typeof busHealthSchema>;
export type ObdHealth = z.output<typeof obdHealthSchema>;
export type GnssHealth = z.output<typeof gnssHealthSchema>;
export type CollectorHealth = z.output<typeof collectorHealthSchema>;
export type OutboxHealth = z.output<typeof outboxHealthSchema>;
export type UplinkHealth = z.output<typeof uplinkHealthSchema>;
export type CertificateHealth = z.output<typeof certificateHealthSchema>;
export type CommandHealth = z.output<typeof commandHealthSchema>;
export type LastError = z.output<typeof lastErrorSchema>;
export type AgentHealth = z.output<typeof agentHealthSchema>;
export type HealthReport = z.output<typeof healthReportSchema>;

const intervalChangeSchema = z.strictObject({
  at: unixMs,
  fromS: z.number().nonnegative(),
  toS: z.number().nonnegative(),
  reason: z.enum(['survived', 'expired', 'hold-over', 'settled', 'reprobe', 'path-changed', 'ceiling']),
  phase: z.enum(['probe', 'hold', 'settled']).describe('The phase after the change.'),
});

const deadLinkSchema = z.strictObject({
  at: unixMs,
  network: z.string(),
  idleS: z.number().nonnegative().describe('Seconds the car had sent nothing before the ping.'),
  heartbeat: z.boolean().describe('A heartbeat (the car was idle), or a liveness ping (it was sending and nothing came back).'),
  timeoutMs: z.number().nonnegative(),
  intervalS: z.number().nonnegative(),
  verdict: z.enum(['nat-expired', 'coverage']).nullable().describe('Known once the reconnection was tried.'),
});

/** What the adaptive heartbeat has learned on the current network: the detail behind `agent.uplink.heartbeat`. */
export const heartbeatDetailSchema = z.strictObject({
  network: z.string(),
  intervalS: z.number().positive(),
  phase: z.enum(['probe', 'hold', 'settled']),
  lastGoodS: z.number().nonnegative().nullable().describe('The longest idle period proven to keep the link.'),
  knownBadS: z.number().nonnegative().nullable().describe('The shortest idle period that lost it.'),
  ceilingS: z.number().positive().describe("The interval's cap: the configured maximum or the broker's Server Keep Alive."),
  livenessTimeoutMs: z.number().nonnegative(),
  rttMs: z.number().nonnegative().nullable(),
  heartbeats: count.describe('Pings answered since start.'),
  deadLinks: count,
  lastDeadLink: deadLinkSchema.nullable(),
  history: z.array(intervalChangeSchema).describe('The latest interval changes on this network (at most 20), oldest first.'),
});

const bucketSchema = z.strictObject({
  perHour: z.number().nonnegative(),
  capacity: z.number().nonnegative(),
  available: z.number().describe('Tokens there now; negative while in debt after an oversized message.'),
});

/** The data plan's budget (uplink.throttle): the detail behind `agent.uplink.throttled`. */
export const throttleDetailSchema = z.strictObject({
  messages: bucketSchema.nullable().describe('Null: no limit.'),
  bytes: bucketSchema.nullable(),
  deferrals: count.describe('Times the budget held the queue back.'),
  limited: z.boolean(),
  sentMessages: count,
  sentBytes: count,
});

export type HeartbeatDetail = z.output<typeof heartbeatDetailSchema>;
export type ThrottleDetail = z.output<typeof throttleDetailSchema>;
