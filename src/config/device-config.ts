/**
 * The device configuration: which buses the agent reads, where their frames come from, how they are decoded, what the
 * status line shows. One JSON file per device; `device-config/device-config.schema.json` is generated from the schema
 * below (`node scripts/write-config-schema.mjs`), so editors can validate and complete it.
 *
 * To add a section (collection, uplink…): add a zod schema for it, add it to `buildDeviceConfigSchema`, resolve its
 * paths in `resolvePaths`, and regenerate the JSON schema. A source type is not added here: its plug-in declares its
 * schema and the files it names (src/agent/sources/), and the schema is built from the registry of source types,
 * rebuilt when a type is registered at run time.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { adapterTypes, busSourceType, busSourceTypes, sourceFiles, sourceTypesVersion } from '../agent/sources/registry.js';
import type { AdapterConfig, SourceConfig } from '../agent/sources/source-type.js';
import { collectionConfigSchema, collectionRuleSchema } from '../collect/config.js';
import { commandsConfigSchema } from '../commands/config.js';
import { healthConfigSchema } from '../health/config.js';
import { loggingConfigSchema } from '../health/log-config.js';
import { obdConfigSchema, pidProblem } from '../obd/config.js';
import { outboxConfigSchema } from '../store/config.js';
import { COMMAND_CA_NAME } from '../pki/command-pki.js';
import { deviceIdProblem } from '../pki/device-id.js';
import { uplinkConfigSchema } from '../uplink/config.js';

/**
 * `buses[].source`: the registered bus source types, by `type`. Each plug-in's schema is a strict object with its
 * `type` literal (src/agent/sources/source-type.ts), which is what a discriminated union takes.
 */
function frameSourceSchema(): z.ZodType<SourceConfig> {
  const options = busSourceTypes().map((t) => t.schema) as unknown as [z.ZodObject, ...z.ZodObject[]];
  return z.discriminatedUnion('type', options) as unknown as z.ZodType<SourceConfig>;
}

/** `obdAdapters[]`: the registered adapter types, by `type` (absent: elm327, the registry's default). */
function adapterSchema(): z.ZodType<AdapterConfig> {
  const options = adapterTypes().map((t) => t.schema) as unknown as [z.ZodObject, ...z.ZodObject[]];
  return z.discriminatedUnion('type', options) as unknown as z.ZodType<AdapterConfig>;
}

function busConfigSchema(source: z.ZodType<SourceConfig>) {
  return z
    .strictObject({
      name: z.string().min(1).describe('Bus name as the agent reports it, e.g. can0.'),
      dbc: z.string().min(1).describe('DBC file decoding this bus, relative to this config file.'),
      j1939: z
        .boolean()
        .optional()
        .describe(
          'Match 29-bit frames by J1939 parameter group (PGN), ignoring priority and source address. Default: on when the DBC declares J1939 (ProtocolType "J1939" or J1939PG messages), off otherwise.',
        ),
      strictDbc: z.boolean().optional().describe('Reject any deviation from the DBC grammar instead of warning about it.'),
      source,
      obd: obdConfigSchema.optional(),
    })
    .superRefine((bus, ctx) => {
      const obd = bus.obd;
      if (obd === undefined) return;
      if (busSourceType(bus.source).obd !== true) {
        const live = busSourceTypes()
          .filter((t) => t.obd === true)
          .map((t) => JSON.stringify(t.type))
          .join(' or ');
        ctx.addIssue({
          code: 'custom',
          path: ['obd'],
          message: `OBD-II polling talks to the ECUs, so it needs a live bus: source.type must be ${live}, not "${bus.source.type}"`,
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
}

export const statusConfigSchema = z
  .strictObject({
    intervalMs: z.number().int().min(100).default(1000).describe('How often the status line is refreshed, ms.'),
    signals: z
      .array(z.string().min(1))
      .describe(
        'Signals to show, as Message.Signal or a bare signal name (the first bus and message that has it), optionally prefixed by the bus (`can0.ENGINE_DATA.EngineSpeed`).',
      ),
  })
  .describe('The live status line of `telematics-agent run`.');

function buildDeviceConfigSchema() {
  return z
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
      buses: z.array(busConfigSchema(frameSourceSchema())).default([]).describe('CAN buses the agent reads.'),
      obdAdapters: z.array(adapterSchema()).default([]).describe('ELM327-compatible OBD-II adapters the agent polls.'),
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
        ctx.addIssue({
          code: 'custom',
          path: ['commands', 'caFile'],
          message: 'required without uplink.certsDir (where command-ca.crt is looked for by default)',
        });
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
}

type DeviceConfigSchema = ReturnType<typeof buildDeviceConfigSchema>;
let built: { version: number; schema: DeviceConfigSchema } | undefined;

/** The schema of the whole file, for the source types registered now (built again after a registration). */
export function deviceConfigSchema(): DeviceConfigSchema {
  const version = sourceTypesVersion();
  if (built === undefined || built.version !== version) built = { version, schema: buildDeviceConfigSchema() };
  return built.schema;
}

export type DeviceConfig = z.output<DeviceConfigSchema>;
export type BusConfig = DeviceConfig['buses'][number];
export type StatusConfig = z.output<typeof statusConfigSchema>;
export type { AdapterConfig, SourceConfig } from '../agent/sources/source-type.js';
export type { ObdConfig } from '../obd/config.js';
export type { CollectionConfig } from '../collect/config.js';
export type { OutboxConfig } from '../store/config.js';
export type { UplinkConfig } from '../uplink/config.js';
export type { CommandsConfig } from '../commands/config.js';
type UplinkConfig = z.output<typeof uplinkConfigSchema>;

/** Where the generated JSON Schema lives, relative to the package root. */
export const DEVICE_CONFIG_SCHEMA_FILE = 'device-config/device-config.schema.json';

/** The JSON Schema of the config file as users write it (defaults may be left out). */
export function deviceConfigJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(deviceConfigSchema(), { io: 'input', target: 'draft-2020-12' });
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
  return parseDeviceConfig(parseConfigJson(text, file), { file, baseDir: path.dirname(path.resolve(file)), checkFiles: options.checkFiles });
}

/** The JSON value of a config file's text; a syntax error is a DeviceConfigError located by line and column. */
export function parseConfigJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new DeviceConfigError(file, [describeJsonError(text, err as Error)]);
  }
}

/** Validates an already-parsed config; relative paths are resolved against `baseDir`. */
export function parseDeviceConfig(json: unknown, where: { file: string; baseDir: string; checkFiles?: boolean }): DeviceConfig {
  const result = deviceConfigSchema().safeParse(json);
  if (!result.success)
    throw new DeviceConfigError(
      where.file,
      result.error.issues.map((issue) => describeIssue(issue, json)),
    );
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
      source: resolveSourceFiles(bus.source, baseDir),
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

/** The source config with the files its type names (a replay's log) resolved against `baseDir`. */
function resolveSourceFiles(source: SourceConfig, baseDir: string): SourceConfig {
  const files = busSourceType(source).files ?? [];
  if (files.length === 0) return source;
  const resolved: Record<string, unknown> = { ...source };
  for (const key of files) {
    const file = source[key];
    if (typeof file === 'string') resolved[key] = path.resolve(baseDir, file);
  }
  return resolved as SourceConfig;
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
    for (const { key, file } of sourceFiles(bus)) {
      if (!existsSync(file)) problems.push(`buses[${i}].source.${key}: file not found: ${file}`);
    }
  });
  // With the embedded broker, the default command CA is made at start with the rest of the development PKI.
  const madeAtStart =
    config.uplink !== undefined &&
    config.uplink.embeddedBroker !== false &&
    config.commands?.caFile === path.join(config.uplink.certsDir!, DEV_COMMAND_CA_FILE);
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
        // Three discriminated unions in the config: collection rules (by `mode`), bus sources and adapters (by `type`).
        const isRule = issue.path.includes('rules');
        const key = isRule ? 'mode' : 'type';
        const typePath = issue.path[issue.path.length - 1] === key ? issue.path : [...issue.path, key];
        const sourceTypes = issue.path[0] === 'obdAdapters' ? adapterTypes() : busSourceTypes();
        const types = isRule
          ? collectionRuleSchema.options.map((option) => JSON.stringify(option.shape.mode.value)).join(' or ')
          : sourceTypes.map((t) => JSON.stringify(t.type)).join(' or ');
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
