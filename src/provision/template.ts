/**
 * `provision --config-template`: a device config that describes a vehicle, made into the config of one car's bundle.
 * Every shipped example (device-config/*.json) is a template.
 *
 * What a template must give (only whoever knows the vehicle can):
 *   buses, obdAdapters  what the car reads: each bus with its DBC and the files its source names (a replay's log),
 *                       which are copied into the bundle (dbc/, replay/)
 *   collection          what the car publishes. Provisioning never chooses it: it is what the fleet pays for in data
 * What the bundle keeps when the template gives it: status, health, logging, the outbox's size, age and durability,
 * the uplink's tuning (protocol, keepalive, throttle, reconnect...), the commands' preconditions.
 * What provisioning fills in, whatever the template says: deviceId; uplink.url (--broker, or the template's own fleet
 * broker) and the bundle's identity and broker CA; commands.caFile and replayDbPath; outbox.path in the state folder
 * (with the agent's defaults when the template has no outbox); status.intervalMs of at least 60 s. It drops what only
 * the development setup uses: $schema, uplink.embeddedBroker, certsDir, issuerFile, keepalive.memoryPath.
 *
 * The completed config is checked as the agent checks it at start: the schema, the files, the DBCs parsed, the status
 * and collection signals found in them. Failure: a TemplateError listing every problem at once, each naming the field
 * as the config loader does, with exit status 65 (EX_DATAERR); a template file that cannot be read, or a bad --broker,
 * is a ProvisionError (exit status 1).
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import { busSourceTypes } from '../agent/sources/registry.js';
import { resolveStatusSignal } from '../agent/status-signals.js';
import { Collector, CollectorConfigError } from '../collect/collector.js';
import { resolveSignalName } from '../collect/signal-names.js';
import { DeviceConfigError, parseConfigJson, parseDeviceConfig, type DeviceConfig } from '../config/device-config.js';
import { BusDecoder } from '../dbc/bus-decoder.js';
import { compileDatabase, DbcParseError, loadDbcFile } from '../dbc/index.js';
import { ProvisionError, readInputFile } from './files.js';
import { INSTALL } from './service-unit.js';

/** EX_DATAERR (sysexits.h): the template, input the user wrote, cannot be made into a working config. */
export const TEMPLATE_EXIT_CODE = 65;

/** Under systemd the status line goes to the journal: once a minute, not once a second. */
export const SERVICE_STATUS_INTERVAL_MS = 60_000;

const BROKER_URL = /^mqtts:\/\/[^/:\s]+(:\d{1,5})?\/?$/;

/** Every problem of a template, each naming its field; printed one per line, exit status 65. */
export class TemplateError extends ProvisionError {
  constructor(
    readonly file: string,
    readonly problems: readonly string[],
  ) {
    super(problems.length === 1 ? `--config-template ${file}: ${problems[0]}` : `--config-template ${file}: ${problems.length} problems:`, {
      details: problems.length === 1 ? [] : problems,
      exitCode: TEMPLATE_EXIT_CODE,
    });
  }
}

/** Where the bundle keeps what the config names, relative to the bundle (src/provision/bundle.ts BUNDLE). */
export interface BundleLayout {
  cert: string;
  key: string;
  brokerCa: string;
  commandCa: string;
  dbcDir: string;
  /** The files a bus's source names besides its DBC (a replay's log). */
  replayDir: string;
}

export interface BundleConfig {
  /** config.json as the bundle holds it. */
  config: Record<string, unknown>;
  /** Bundle-relative name -> the template's file it is copied from (DBCs, replay logs). */
  copies: Map<string, string>;
  /** What provisioning changed that the person running it should know. */
  notes: string[];
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** What is at `file`: a regular file (links followed), something else, or nothing. */
function fileKind(file: string): 'file' | 'other' | 'missing' {
  try {
    return statSync(file).isFile() ? 'file' : 'other';
  } catch {
    return 'missing';
  }
}

/**
 * The broker the car connects to: --broker, or the template's own uplink when it is a fleet broker (its problems are
 * the template's, reported with the rest). A missing or bad --broker is the command line's problem: exit status 1.
 */
function brokerUrl(given: string | undefined, uplink: unknown): string {
  if (given !== undefined) {
    if (!BROKER_URL.test(given)) throw new ProvisionError(`--broker ${given}: expected mqtts://host[:port] (TLS only)`);
    return given;
  }
  // embeddedBroker true, "mosquitto" or "aedes": the development broker, never the car's.
  if (isObject(uplink) && (uplink.embeddedBroker === undefined || uplink.embeddedBroker === false) && typeof uplink.url === 'string') return uplink.url;
  throw new ProvisionError(
    `--broker is required: ${isObject(uplink) ? "the template's uplink is the embedded development broker" : 'the template has no uplink'} (give the fleet broker, e.g. --broker mqtts://broker.example.com:8883)`,
  );
}

/** The config of one car's bundle, made from `templateFile`; throws a TemplateError listing every problem found. */
export function bundleConfigFromTemplate(templateFile: string, options: { device: string; broker?: string; layout: BundleLayout }): BundleConfig {
  const { layout } = options;
  const templateDir = path.dirname(templateFile);
  const text = readInputFile('--config-template', templateFile);
  let raw: unknown;
  try {
    raw = parseConfigJson(text, templateFile);
    // Not an object: the loader says so, in its words.
    if (!isObject(raw)) parseDeviceConfig(raw, { file: templateFile, baseDir: templateDir, checkFiles: false });
  } catch (err) {
    if (err instanceof DeviceConfigError) throw new TemplateError(templateFile, err.problems);
    throw err;
  }
  const template = raw as Json;
  const broker = brokerUrl(options.broker, template.uplink);

  const problems: string[] = [];
  const notes: string[] = [];
  const section = (key: string): Json | undefined => {
    const value = template[key];
    if (value === undefined || isObject(value)) return value;
    problems.push(`${key}: expected object, got ${JSON.stringify(value)}`);
    return undefined;
  };

  // The files the buses name, each to be copied into the bundle under one name.
  const copies = new Map<string, string>();
  const place = (field: string, given: unknown, dir: string): unknown => {
    if (typeof given !== 'string' || given === '') return given; // the schema says what is wrong with it
    const source = path.resolve(templateDir, given);
    const kind = fileKind(source);
    if (kind !== 'file') {
      problems.push(`${field}: ${kind === 'missing' ? 'file not found' : 'not a file'}: ${source}`);
      return given;
    }
    const rel = `${dir}/${path.basename(source)}`;
    const already = copies.get(rel);
    if (already !== undefined && already !== source) {
      problems.push(`${field}: ${source} and ${already} would both be ${rel} in the bundle: rename one`);
      return given;
    }
    copies.set(rel, source);
    return rel;
  };
  const bundleBuses = Array.isArray(template.buses)
    ? template.buses.map((bus: unknown, i) => {
        if (!isObject(bus)) return bus;
        const out: Json = { ...bus, dbc: place(`buses[${i}].dbc`, bus.dbc, layout.dbcDir) };
        // The files its source names (a replay's log): the source plug-in says which fields name them.
        const source = bus.source;
        const files = isObject(source) ? (busSourceTypes().find((t) => t.type === source.type)?.files ?? []) : [];
        if (isObject(source) && files.length > 0)
          out.source = { ...source, ...Object.fromEntries(files.map((key) => [key, place(`buses[${i}].source.${key}`, source[key], layout.replayDir)])) };
        return out;
      })
    : template.buses;

  const collectionMissing = template.collection === undefined;
  if (collectionMissing) {
    problems.push(
      'collection: required: the collection rules say what this car publishes, and provisioning does not choose them (device-config/default.json has an example)',
    );
  }

  // What provisioning fills in.
  const { $schema: _schema, ...rest } = template;
  const filled: Json = { ...rest, deviceId: options.device };
  const status = section('status');
  if (status === undefined && template.status !== undefined)
    delete filled.status; // not an object: said above
  else {
    const interval = status?.intervalMs ?? 1000;
    if (typeof interval === 'number' && interval < SERVICE_STATUS_INTERVAL_MS) {
      filled.status = { ...(status ?? { signals: [] }), intervalMs: SERVICE_STATUS_INTERVAL_MS };
      if (status !== undefined)
        notes.push(
          `status.intervalMs ${interval} -> ${SERVICE_STATUS_INTERVAL_MS}: under systemd the status line goes to the journal, once a minute is enough`,
        );
    }
  }
  const outbox = section('outbox');
  if (template.outbox === undefined) notes.push(`outbox: none in the template: the agent's defaults, in ${INSTALL.stateDir}`);
  filled.outbox = { ...(outbox ?? {}), path: `${INSTALL.stateDir}/outbox.db` };
  const { embeddedBroker: _e, certsDir: _d, certFile: _c, keyFile: _k, caFile: _a, issuerFile, url: _u, ...uplinkRest } = section('uplink') ?? {};
  if (issuerFile !== undefined) notes.push(`uplink.issuerFile of the template left out: the bundle pins ${layout.brokerCa}, which must hold the issuing CA`);
  if (isObject(uplinkRest.keepalive) && uplinkRest.keepalive.memoryPath !== undefined) {
    const { memoryPath: _m, ...keepalive } = uplinkRest.keepalive;
    uplinkRest.keepalive = keepalive; // the default is beside the outbox, in the state folder
  }
  filled.uplink = { url: broker, ...uplinkRest, certFile: layout.cert, keyFile: layout.key, caFile: layout.brokerCa };
  filled.commands = { ...(section('commands') ?? {}), caFile: layout.commandCa, replayDbPath: `${INSTALL.stateDir}/commands.db` };

  // The schema's verdict on the whole, with the template's own paths (so the DBCs can be read where they are).
  let checked: DeviceConfig | undefined;
  const schemaProblems: string[] = [];
  try {
    checked = parseDeviceConfig(filled, { file: templateFile, baseDir: templateDir, checkFiles: false });
  } catch (err) {
    if (!(err instanceof DeviceConfigError)) throw err;
    // A missing collection is said once, above, with what to do about it.
    schemaProblems.push(...err.problems.filter((p) => !(collectionMissing && p.startsWith('collection: '))));
  }
  const all = [...schemaProblems, ...problems];
  if (all.length === 0 && checked !== undefined) all.push(...startProblems(checked));
  if (all.length > 0) throw new TemplateError(templateFile, all);
  return { config: { ...filled, buses: bundleBuses }, copies, notes };
}

/**
 * What the agent would refuse at start that the schema cannot know (src/agent/agent.ts open): a DBC that does not
 * parse, a status or collection signal no DBC has, a trigger condition or a memory claim the collector refuses.
 * Found here, a car does not restart every 5 s in the field over a typo.
 */
function startProblems(config: DeviceConfig): string[] {
  const problems: string[] = [];
  const decoders: BusDecoder[] = [];
  config.buses.forEach((bus, i) => {
    try {
      decoders.push(new BusDecoder(bus.name, compileDatabase(loadDbcFile(bus.dbc, { strict: bus.strictDbc ?? false }))));
    } catch (err) {
      if (!(err instanceof DbcParseError)) throw err;
      problems.push(`buses[${i}].dbc: ${err.message}`);
    }
  });
  if (problems.length > 0) return problems;
  (config.status?.signals ?? []).forEach((name, j) => {
    if (resolveStatusSignal(decoders, name) === undefined) problems.push(`status.signals[${j}]: no bus DBC has a signal '${name}'`);
  });
  const collection = config.collection;
  if (collection === undefined) return problems;
  collection.rules.forEach((rule, r) => {
    rule.signals.forEach((name, j) => {
      if (resolveSignalName(decoders, name) !== undefined) return;
      const hint = name.includes('obd') ? ' (OBD signals are obd.<J1979 key>, e.g. obd.rpm)' : '';
      problems.push(`collection.rules[${r}] (${rule.name}).signals[${j}]: no bus DBC has a signal '${name}'${hint}`);
    });
  });
  if (problems.length > 0) return problems;
  try {
    new Collector({ config: collection, buses: decoders, onBatch: () => undefined });
  } catch (err) {
    if (!(err instanceof CollectorConfigError)) throw err;
    problems.push(err.message);
  }
  return problems;
}
