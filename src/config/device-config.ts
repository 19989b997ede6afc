/**
 * The device configuration: which buses the agent reads, where their frames come from, how they are decoded, what the
 * status line shows. One JSON file per device; `device-config/device-config.schema.json` is generated from the schema
 * below (`node scripts/write-config-schema.mjs`), so editors can validate and complete it.
 *
 * To add a section (collection, uplink…) or a source type (socketcan, obd…): add a zod schema here, add it to
 * `deviceConfigSchema` or `frameSourceSchema`, resolve its paths in `resolvePaths`, and regenerate the JSON schema.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

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

/** Where a bus's frames come from. */
export const frameSourceSchema = z.discriminatedUnion('type', [simSourceSchema, replaySourceSchema]);

export const busConfigSchema = z.strictObject({
  name: z.string().min(1).describe('Bus name as the agent reports it, e.g. can0.'),
  dbc: z.string().min(1).describe('DBC file decoding this bus, relative to this config file.'),
  j1939: z.boolean().optional().describe('Match 29-bit frames by J1939 parameter group (PGN), ignoring priority and source address.'),
  strictDbc: z.boolean().optional().describe('Reject any deviation from the DBC grammar instead of warning about it.'),
  source: frameSourceSchema,
});

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
    deviceId: z.string().min(1).describe('Identifies this vehicle gateway to the back end.'),
    buses: z.array(busConfigSchema).min(1).describe('CAN buses the agent reads.'),
    status: statusConfigSchema.optional(),
  })
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.buses.forEach((bus, i) => {
      if (seen.has(bus.name)) {
        ctx.addIssue({ code: 'custom', path: ['buses', i, 'name'], message: `duplicate bus name '${bus.name}'` });
      }
      seen.add(bus.name);
    });
  })
  .describe('Telematics agent device configuration.');

export type DeviceConfig = z.output<typeof deviceConfigSchema>;
export type BusConfig = z.output<typeof busConfigSchema>;
export type FrameSourceConfig = z.output<typeof frameSourceSchema>;
export type StatusConfig = z.output<typeof statusConfigSchema>;

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

function resolvePaths(config: DeviceConfig, baseDir: string): DeviceConfig {
  return {
    ...config,
    buses: config.buses.map((bus) => ({
      ...bus,
      dbc: path.resolve(baseDir, bus.dbc),
      source: bus.source.type === 'replay' ? { ...bus.source, file: path.resolve(baseDir, bus.source.file) } : bus.source,
    })),
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
        const typePath = issue.path[issue.path.length - 1] === 'type' ? issue.path : [...issue.path, 'type'];
        const types = frameSourceSchema.options.map((option) => JSON.stringify(option.shape.type.value)).join(' or ');
        return `${formatConfigPath(typePath)}: expected ${types}, got ${show(valueAt(json, typePath))}`;
      }
      return `${where}: ${issue.message}`;
    }
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
