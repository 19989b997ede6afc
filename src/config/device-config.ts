/**
 * The device configuration: which buses the agent reads, where their frames come from, how they are decoded, what the
 * status line shows. One JSON file per device; `device-config/device-config.schema.json` is generated from the schema
 * below (`node scripts/write-config-schema.mjs`), so editors can validate and complete it.
 *
 * To add a section (collection, uplink…) or a source type: add a zod schema here, add it to `deviceConfigSchema` or
 * `frameSourceSchema`, resolve its paths in `resolvePaths`, and regenerate the JSON schema.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { collectionConfigSchema, collectionRuleSchema } from '../collect/config.js';
import { commandsConfigSchema } from '../commands/config.js';
import { healthConfigSchema } from '../health/config.js';
import { loggingConfigSchema } from '../health/log-config.js';
import { MODE01_PIDS, MODE01_PIDS_BY_KEY, SUPPORTED_PID_BLOCKS, type PidDefinition } from '../obd/j1979.js';
import { outboxConfigSchema } from '../store/config.js';
import { COMMAND_CA_NAME } from '../pki/command-pki.js';
import { deviceIdProblem } from '../pki/device-id.js';
import { uplinkConfigSchema } from '../uplink/config.js';

const simSourceSchema = z
  .strictObject({
    type: z.literal('sim'),
    speed: z.number().positive().optional().describe('Time factor: 2 drives the simulated car twice as fast as real time. Default 1.'),
    seed: z.number().int().optional().describe('Seed of the drive cycle; the same seed replays the same drive. Default 1.'),
  })
  .describe('The simulated demo vehicle (drive cycle), sending every message of the bus DBC at its cycle time.');

const replaySourceSchema = z
  .strictObject({
    type: z.literal('replay'),
    file: z.string().min(1).describe('candump -L log to replay, relative to this config file.'),
    speed: z.number().positive().optional().describe('Time factor: 2 replays twice as fast as recorded. Default 1.'),
    loop: z.boolean().optional().describe('Start over when the log ends. Default false.'),
  })
  .describe('A recorded candump -L log, replayed with its original timing.');

/**
 * What the kernel accepts as a network interface name (dev_valid_name): 1-15 bytes, no '/', ':' or whitespace, not
 * '.' or '..'. Checked here so that a typo is a config error, not a socket that silently never opens.
 */
export const INTERFACE_NAME_PATTERN = /^(?!\.\.?$)[^\s/:]{1,15}$/;

export function interfaceNameProblem(name: string): string | null {
  if (!INTERFACE_NAME_PATTERN.test(name)) {
    return `not a network interface name: ${JSON.stringify(name)} (1-15 characters, no '/', ':' or whitespace, not '.' or '..')`;
  }
  // The kernel counts bytes: a name of 15 characters with non-ASCII ones in it is too long.
  const bytes = Buffer.byteLength(name, 'utf8');
  return bytes > 15 ? `not a network interface name: ${JSON.stringify(name)} is ${bytes} bytes, the kernel allows 15` : null;
}

const interfaceNameSchema = z
  .string()
  .regex(INTERFACE_NAME_PATTERN, { message: "not a network interface name (1-15 characters, no '/', ':' or whitespace, not '.' or '..')" })
  .superRefine((name, ctx) => {
    if (!INTERFACE_NAME_PATTERN.test(name)) return; // reported by the pattern
    const problem = interfaceNameProblem(name);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

const socketcanSourceSchema = z
  .strictObject({
    type: z.literal('socketcan'),
    interface: interfaceNameSchema.describe('Kernel CAN interface, e.g. can0 (ip link show type can).'),
    timestamps: z
      .boolean()
      .default(true)
      .describe('Stamp frames with the kernel receive time rather than the time the agent reads them. Default true.'),
    filter: z
      .enum(['dbc', 'none'])
      .default('dbc')
      .describe(
        'dbc: kernel receive filters pass only the identifiers the bus DBC decodes (frames nobody reads never wake the agent); ' +
          'none: receive every frame. Default dbc.',
      ),
  })
  .describe('A live SocketCAN interface. The agent waits for it when it is missing or down, and reopens it when it comes back.');

/** Where a bus's frames come from. */
export const frameSourceSchema = z.discriminatedUnion('type', [simSourceSchema, replaySourceSchema, socketcanSourceSchema]);

/** A PID as the config names it: its number, or its J1979 key ('rpm', 'coolantTemp'…). */
const obdPidSchema = z.strictObject({
  pid: z
    .union([z.number(), z.string()], { error: 'expected a Mode 01 PID number (e.g. 12) or its name (e.g. "rpm")' })
    .describe('Mode 01 PID: its number (12 or 0x0C written as 12) or its J1979 name, e.g. "rpm", "speed", "coolantTemp".'),
  intervalMs: z.number().int().min(10).describe('How often to read it, ms.'),
  ecu: z
    .number()
    .int()
    .min(0)
    .max(255)
    .optional()
    .describe('Read it from this ECU only (0-7 with 11-bit identifiers, the ECU address with 29-bit ones); default every ECU that has it.'),
});

const obdConfigSchema = z
  .strictObject({
    addressing: z.enum(['11-bit', '29-bit']).default('11-bit').describe('ISO 15765-4 identifiers: 11-bit (0x7DF/0x7E8…) or 29-bit (0x18DB33F1…). Default 11-bit.'),
    p2Ms: z
      .number()
      .int()
      .min(1)
      .max(5000)
      .optional()
      .describe("Wait for the ECUs' first answer, ms. Default 50 (ISO 15765-4 P2CAN); raise it for slow gateways."),
    pids: z.array(obdPidSchema).min(1).describe('The PIDs to poll and how often.'),
    budget: z
      .strictObject({
        maxRequestsPerSecond: z.number().positive().optional().describe('Most OBD requests per second the poller sends.'),
        maxFramesPerSecond: z.number().positive().optional().describe("Most frames per second the poller causes, the ECUs' answers included."),
      })
      .optional()
      .describe('Bus load the poller may cause; when the schedule asks for more, reads are delayed.'),
    backoff: z
      .strictObject({
        maxMs: z.number().int().positive().optional().describe('Longest wait before asking again for a PID an ECU did not return, ms. Default 60000.'),
      })
      .optional(),
  })
  .describe('OBD-II (SAE J1979) polling over ISO 15765-4 on this bus. Needs a socketcan source.');

/** Pollers' shared settings: the PIDs, the load they may cause, the backoff for PIDs an ECU does not return. */
const pollBudgetSchema = z
  .strictObject({
    maxRequestsPerSecond: z.number().positive().optional().describe('Most OBD requests per second the poller sends.'),
    maxFramesPerSecond: z.number().positive().optional().describe("Most frames per second the poller causes, the ECUs' answers included."),
  })
  .optional()
  .describe('Load the poller may cause; when the schedule asks for more, reads are delayed.');

const pollBackoffSchema = z
  .strictObject({
    maxMs: z.number().int().positive().optional().describe('Longest wait before asking again for a PID an ECU did not return, ms. Default 60000.'),
  })
  .optional();

/** ELM327 protocol numbers (ATSP): 1-5 J1850/ISO 9141/KWP, 6-9 ISO 15765-4 CAN, 10 J1939, 11-12 user CAN. */
const elmProtocolSchema = z
  .union([z.literal('auto'), z.number().int().min(1).max(12)], { error: 'expected "auto" or an ELM327 protocol number 1-12' })
  .default('auto')
  .describe('"auto" (the adapter searches, ATSP0) or the ELM327 protocol number: 6 = ISO 15765-4 CAN 11-bit 500 kbit/s, 7 = 29-bit 500, 8/9 = 250 kbit/s, 3 = ISO 9141-2, 4/5 = KWP2000. Default auto.');

export const obdAdapterConfigSchema = z
  .strictObject({
    name: z.string().min(1).describe('Name the agent reports this adapter by, e.g. obd.'),
    port: z
      .string()
      .min(1)
      .refine((p) => !p.includes('\0'), 'a path cannot hold NUL')
      .describe('Serial port: /dev/ttyUSB0, /dev/rfcomm0, or better a stable /dev/serial/by-id/... path.'),
    baudRate: z.number().int().min(300).max(4_000_000).optional().describe('Fixed baud rate; default: try 38400, 9600, 115200, 57600, 230400, 500000, 19200.'),
    protocol: elmProtocolSchema,
    pids: z.array(obdPidSchema).min(1).describe('The PIDs to poll and how often.'),
    budget: pollBudgetSchema,
    backoff: pollBackoffSchema,
  })
  .superRefine((adapter, ctx) => {
    adapter.pids.forEach((spec, k) => {
      const problem = pidProblem(spec.pid);
      if (problem) ctx.addIssue({ code: 'custom', path: ['pids', k, 'pid'], message: problem });
    });
  })
  .describe('OBD-II (SAE J1979) polling through an ELM327-compatible adapter on a serial port (USB, UART, Bluetooth SPP). The agent waits for the adapter when it is missing, and reconnects when it is unplugged or stops answering.');

export const busConfigSchema = z
  .strictObject({
    name: z.string().min(1).describe('Bus name as the agent reports it, e.g. can0.'),
    dbc: z.string().min(1).describe('DBC file decoding this bus, relative to this config file.'),
    j1939: z.boolean().optional().describe('Match 29-bit frames by J1939 parameter group (PGN), ignoring priority and source address.'),
    strictDbc: z.boolean().optional().describe('Reject any deviation from the DBC grammar instead of warning about it.'),
    source: frameSourceSchema,
    obd: obdConfigSchema.optional(),
  })
  .superRefine((bus, ctx) => {
    const obd = bus.obd;
    if (obd === undefined) return;
    if (bus.source.type !== 'socketcan') {
      ctx.addIssue({
        code: 'custom',
        path: ['obd'],
        message: `OBD-II polling talks to the ECUs, so it needs a live bus: source.type must be "socketcan", not "${bus.source.type}"`,
      });
    }
    const maxEcu = obd.addressing === '11-bit' ? 7 : 255;
    obd.pids.forEach((spec, k) => {
      const problem = pidProblem(spec.pid);
      if (problem) ctx.addIssue({ code: 'custom', path: ['obd', 'pids', k, 'pid'], message: problem });
      if (spec.ecu !== undefined && spec.ecu > maxEcu) {
        ctx.addIssue({
          code: 'custom',
          path: ['obd', 'pids', k, 'ecu'],
          message: `ECU ${spec.ecu} does not exist with ${obd.addressing} identifiers (0-${maxEcu})`,
        });
      }
    });
  });

/** The J1979 definition a configured PID names; undefined when it names none. */
export function resolveObdPid(pid: number | string): PidDefinition | undefined {
  return typeof pid === 'number' ? MODE01_PIDS.get(pid) : MODE01_PIDS_BY_KEY.get(pid);
}

/** Why a configured PID cannot be polled, or null. */
function pidProblem(pid: number | string): string | null {
  const def = resolveObdPid(pid);
  if (def === undefined) {
    if (typeof pid === 'number') {
      if (!Number.isInteger(pid) || pid < 0 || pid > 0xff) return `a PID is a byte (0-255), got ${pid}`;
      return `PID ${pid} (0x${hex2(pid)}) is not a J1979 Mode 01 PID the agent can decode`;
    }
    const folded = pid.toLowerCase();
    const near = [...MODE01_PIDS_BY_KEY.keys()].filter((key) => key.toLowerCase() === folded || key.toLowerCase().startsWith(folded));
    const hint = near.length > 0 ? `; did you mean ${near.slice(0, 3).map((k) => JSON.stringify(k)).join(' or ')}?` : ' (names are J1979 keys such as "rpm", "speed", "coolantTemp")';
    return `unknown PID name ${JSON.stringify(pid)}${hint}`;
  }
  if (SUPPORTED_PID_BLOCKS.includes(def.pid)) {
    return `PID 0x${hex2(def.pid)} (${def.key}) only lists supported PIDs; the agent reads it when it discovers the ECUs`;
  }
  return null;
}

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}

export const statusConfigSchema = z
  .strictObject({
    intervalMs: z.number().int().min(100).default(1000).describe('How often the status line is refreshed, ms.'),
    signals: z
      .array(z.string().min(1))
      .describe('Signals to show, as Message.Signal or a bare signal name (the first bus and message that has it).'),
  })
  .describe('The live status line of `telematics-agent run`.');

export const deviceConfigSchema = z
  .strictObject({
    $schema: z.string().optional().describe('Path or URL of device-config.schema.json, for editors.'),
    deviceId: z
      .string()
      .superRefine((id, ctx) => {
        const problem = deviceIdProblem(id);
        if (problem !== null) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(id)} cannot be a device ID: ${problem}` });
      })
      .describe(
        "Identifies this vehicle gateway to the back end: its certificate's CN, its MQTT client ID and topic level. 1-64 letters, digits, '.', '_', '-', starting with a letter or digit; never a reserved name such as 'backend'.",
      ),
    buses: z.array(busConfigSchema).default([]).describe('CAN buses the agent reads.'),
    obdAdapters: z.array(obdAdapterConfigSchema).default([]).describe('ELM327-compatible OBD-II adapters the agent polls.'),
    status: statusConfigSchema.optional(),
    collection: collectionConfigSchema.optional(),
    outbox: outboxConfigSchema.optional(),
    uplink: uplinkConfigSchema.optional(),
    commands: commandsConfigSchema.optional(),
    health: healthConfigSchema.optional(),
    logging: loggingConfigSchema.optional(),
  })
  .superRefine((config, ctx) => {
    if (config.collection !== undefined && config.outbox === undefined) {
      ctx.addIssue({ code: 'custom', path: ['outbox'], message: 'required with collection: collected messages are stored there before they are published' });
    }
    if (config.commands !== undefined && config.uplink === undefined) {
      ctx.addIssue({ code: 'custom', path: ['uplink'], message: 'required with commands: commands arrive over the uplink' });
    }
    if (config.commands !== undefined && config.commands.caFile === undefined && config.uplink !== undefined && config.uplink.certsDir === undefined) {
      ctx.addIssue({ code: 'custom', path: ['commands', 'caFile'], message: 'required without uplink.certsDir (where command-ca.crt is looked for by default)' });
    }
    if (config.uplink !== undefined && config.collection === undefined) {
      ctx.addIssue({ code: 'custom', path: ['collection'], message: 'required with uplink: the collection rules say what to publish' });
    }
    if (config.buses.length === 0 && config.obdAdapters.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['buses'], message: 'nothing to read: configure at least one bus or OBD adapter' });
    }
    const seen = new Set<string>();
    config.buses.forEach((bus, i) => {
      if (seen.has(bus.name)) {
        ctx.addIssue({ code: 'custom', path: ['buses', i, 'name'], message: `duplicate bus name '${bus.name}'` });
      }
      seen.add(bus.name);
    });
    config.obdAdapters.forEach((adapter, i) => {
      if (seen.has(adapter.name)) {
        ctx.addIssue({ code: 'custom', path: ['obdAdapters', i, 'name'], message: `duplicate name '${adapter.name}' (bus and adapter names must differ)` });
      }
      seen.add(adapter.name);
    });
  })
  .describe('Telematics agent device configuration.');

export type DeviceConfig = z.output<typeof deviceConfigSchema>;
export type BusConfig = z.output<typeof busConfigSchema>;
export type FrameSourceConfig = z.output<typeof frameSourceSchema>;
export type SocketCanSourceConfig = z.output<typeof socketcanSourceSchema>;
export type ObdConfig = z.output<typeof obdConfigSchema>;
export type ObdAdapterConfig = z.output<typeof obdAdapterConfigSchema>;
export type StatusConfig = z.output<typeof statusConfigSchema>;
export type { CollectionConfig } from '../collect/config.js';
export type { OutboxConfig } from '../store/config.js';
export type { UplinkConfig } from '../uplink/config.js';
export type { CommandsConfig } from '../commands/config.js';
type UplinkConfig = z.output<typeof uplinkConfigSchema>;

/** Where the generated JSON Schema lives, relative to the package root. */
export const DEVICE_CONFIG_SCHEMA_FILE = 'device-config/device-config.schema.json';

/** The JSON Schema of the config file as users write it (defaults may be left out). */
export function deviceConfigJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(deviceConfigSchema, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown>;
}

/** A config file that cannot be used; `message` names the file, the field and what was expected. */
export class DeviceConfigError extends Error {
  override readonly name = 'DeviceConfigError';
  constructor(
    readonly file: string,
    /** One line per problem, e.g. `buses[0].source.type: expected "sim" or "replay", got "can"`. */
    readonly problems: string[],
  ) {
    super(`${file}: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`}`);
  }
}

export interface LoadDeviceConfigOptions {
  /** Check that the files the config names (DBCs, logs) exist. Default true. */
  checkFiles?: boolean;
}

/**
 * Reads and validates a device config. Relative paths in it (DBCs, replay logs) are resolved against the config
 * file's folder, so the returned config holds absolute paths.
 */
export function loadDeviceConfig(file: string, options: LoadDeviceConfigOptions = {}): DeviceConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    throw new DeviceConfigError(file, [`cannot read the device config: ${reason}`]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new DeviceConfigError(file, [describeJsonError(text, err as Error)]);
  }
  return parseDeviceConfig(json, { file, baseDir: path.dirname(path.resolve(file)), checkFiles: options.checkFiles });
}

/** Validates an already-parsed config; relative paths are resolved against `baseDir`. */
export function parseDeviceConfig(
  json: unknown,
  where: { file: string; baseDir: string; checkFiles?: boolean },
): DeviceConfig {
  const result = deviceConfigSchema.safeParse(json);
  if (!result.success) throw new DeviceConfigError(where.file, result.error.issues.map((issue) => describeIssue(issue, json)));
  const config = resolvePaths(result.data, where.baseDir);
  if (where.checkFiles ?? true) {
    const missing = missingFiles(config);
    if (missing.length > 0) throw new DeviceConfigError(where.file, missing);
  }
  return config;
}

/** The command CA's file name in uplink.certsDir, where commands.caFile defaults to. */
const DEV_COMMAND_CA_FILE = `${COMMAND_CA_NAME}.crt`;

function resolvePaths(config: DeviceConfig, baseDir: string): DeviceConfig {
  return {
    ...config,
    buses: config.buses.map((bus) => ({
      ...bus,
      dbc: path.resolve(baseDir, bus.dbc),
      source: bus.source.type === 'replay' ? { ...bus.source, file: path.resolve(baseDir, bus.source.file) } : bus.source,
    })),
    ...(config.outbox ? { outbox: { ...config.outbox, path: path.resolve(baseDir, config.outbox.path) } } : {}),
    ...(config.uplink ? { uplink: resolveUplinkPaths(config.uplink, config.deviceId, baseDir) } : {}),
    ...(config.commands
      ? {
          commands: {
            ...config.commands,
            caFile: path.resolve(baseDir, config.commands.caFile ?? path.join(config.uplink!.certsDir!, DEV_COMMAND_CA_FILE)),
            replayDbPath: path.resolve(baseDir, config.commands.replayDbPath),
          },
        }
      : {}),
  };
}

/** Absolute paths for the identity files, defaulted from certsDir. */
function resolveUplinkPaths(uplink: UplinkConfig, deviceId: string, baseDir: string): UplinkConfig {
  const certsDir = uplink.certsDir === undefined ? undefined : path.resolve(baseDir, uplink.certsDir);
  const file = (given: string | undefined, name: string): string => path.resolve(baseDir, given ?? path.join(certsDir!, name));
  return {
    ...uplink,
    ...(certsDir === undefined ? {} : { certsDir }),
    certFile: file(uplink.certFile, `${deviceId}.crt`),
    keyFile: file(uplink.keyFile, `${deviceId}.key`),
    caFile: file(uplink.caFile, 'ca.crt'),
    ...(uplink.issuerFile === undefined ? {} : { issuerFile: path.resolve(baseDir, uplink.issuerFile) }),
    keepalive: {
      ...uplink.keepalive,
      ...(uplink.keepalive.memoryPath === undefined ? {} : { memoryPath: path.resolve(baseDir, uplink.keepalive.memoryPath) }),
    },
  };
}

function missingFiles(config: DeviceConfig): string[] {
  const problems: string[] = [];
  config.buses.forEach((bus, i) => {
    if (!existsSync(bus.dbc)) problems.push(`buses[${i}].dbc: file not found: ${bus.dbc}`);
    if (bus.source.type === 'replay' && !existsSync(bus.source.file)) {
      problems.push(`buses[${i}].source.file: file not found: ${bus.source.file}`);
    }
  });
  // With the embedded broker, the default command CA is made at start with the rest of the development PKI.
  const madeAtStart = config.uplink?.embeddedBroker === true && config.commands?.caFile === path.join(config.uplink.certsDir!, DEV_COMMAND_CA_FILE);
  if (config.commands && !madeAtStart && !existsSync(config.commands.caFile!)) problems.push(`commands.caFile: file not found: ${config.commands.caFile}`);
  return problems;
}

/** `buses[0].source.type`, or `(top level)` for the document itself. */
export function formatConfigPath(segments: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out ? `.${String(segment)}` : String(segment);
  }
  return out || '(top level)';
}

function valueAt(json: unknown, segments: readonly PropertyKey[]): unknown {
  let value = json;
  for (const segment of segments) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** One line per zod issue, in the words a person editing the JSON needs: which field, what it wants, what it got. */
function describeIssue(issue: z.core.$ZodIssue, json: unknown): string {
  const where = formatConfigPath(issue.path);
  const got = valueAt(json, issue.path);
  switch (issue.code) {
    case 'invalid_type':
      if (got === undefined) return `${where}: required ${issue.expected} is missing`;
      return `${where}: expected ${issue.expected}, got ${show(got)}`;
    case 'invalid_value':
      return `${where}: expected ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${show(got)}`;
    case 'unrecognized_keys':
      return `${where}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    case 'invalid_union': {
      // A discriminated union with an unknown `type`: say which types exist.
      if ('note' in issue && issue.note === 'No matching discriminator') {
        // Two discriminated unions in the config: collection rules (by `mode`) and frame sources (by `type`).
        const isRule = issue.path.includes('rules');
        const key = isRule ? 'mode' : 'type';
        const typePath = issue.path[issue.path.length - 1] === key ? issue.path : [...issue.path, key];
        const types = isRule
          ? collectionRuleSchema.options.map((option) => JSON.stringify(option.shape.mode.value)).join(' or ')
          : frameSourceSchema.options.map((option) => JSON.stringify(option.shape.type.value)).join(' or ');
        return `${formatConfigPath(typePath)}: expected ${types}, got ${show(valueAt(json, typePath))}`;
      }
      return `${where}: ${issue.message}, got ${show(got)}`;
    }
    case 'invalid_format':
      return `${where}: ${issue.message}, got ${show(got)}`;
    case 'too_small':
      if (issue.origin === 'array') return `${where}: needs at least ${issue.minimum} entr${issue.minimum === 1 ? 'y' : 'ies'}`;
      if (issue.origin === 'string') return `${where}: must not be empty`;
      return `${where}: must be ${issue.inclusive ? 'at least' : 'greater than'} ${issue.minimum}, got ${show(got)}`;
    case 'too_big':
      return `${where}: must be ${issue.inclusive ? 'at most' : 'less than'} ${issue.maximum}, got ${show(got)}`;
    default:
      return `${where}: ${issue.message}`;
  }
}

/** JSON.parse's error, located by line and column where V8 tells (or lets us find) the offset. */
function describeJsonError(text: string, err: Error): string {
  const message = err.message;
  let offset: number | undefined;
  let reason = message;
  const positioned = /^(.*?) in JSON at position (\d+)/s.exec(message);
  // V8 reports some errors with a snippet instead of an offset: `Unexpected token ',', ..."s": [,]"... is not valid JSON`.
  const snippet = /^(Unexpected token '(.+?)'), (?:\.\.\.)?"(.*)"(?:\.\.\.)? is not valid JSON$/s.exec(message);
  if (positioned) {
    reason = positioned[1]!;
    offset = Number(positioned[2]);
  } else if (snippet) {
    reason = snippet[1]!;
    const context = snippet[3]!;
    const at = text.indexOf(context);
    if (at >= 0) offset = at + Math.max(0, context.indexOf(snippet[2]!));
  } else if (/^Unexpected end of JSON input/.test(message)) {
    reason = 'unexpected end of the file';
    offset = text.length;
  }
  reason = reason.charAt(0).toLowerCase() + reason.slice(1);
  if (offset === undefined) return `invalid JSON: ${reason}`;
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return `invalid JSON at line ${line}, column ${column}: ${reason}`;
}
