/**
 * The default run (`npm start`: device-config/default.json) in a folder of a test's own, for tests that need the run
 * a new user gets rather than a config written for the test: its DBC where the package has it, var/ in the folder, the
 * embedded broker on a port the test chooses (0: any free one), the status page on any free port, and a development
 * PKI made once per test process. `brokerLine` reads back the broker, its ports and its protocol from the agent's log.
 *
 * Failure: an assertion naming what is missing from the log.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ensureDevPki } from '../../src/pki/dev-pki.js';
import { writeConfig } from './agent-process.js';
import { repoRoot } from './shared.js';
import { makeTempDir } from './temp.js';

/** The default config's car. */
export const DEFAULT_DEVICE = 'demo-vehicle-001';

let pki: string | undefined;

/** The development PKI of the default config, made once per process (RSA keys in pure JS take seconds). */
export function defaultRunPki(): string {
  if (pki === undefined) {
    pki = path.join(makeTempDir('devbroker-pki-'), 'certs');
    ensureDevPki(pki, DEFAULT_DEVICE);
  }
  return pki;
}

export interface DefaultRunOptions {
  /** The cars' port of the embedded broker (the backend's is the next one); 0: any free one. */
  port: number;
  /** Keys merged into the uplink section (embeddedBroker, protocol...). */
  uplink?: Record<string, unknown>;
  /** The batches' longest delay, when a test needs telemetry more often than every 5 s; the default config's if left out. */
  batchMaxDelayMs?: number;
}

/** Writes the default config as `npm start` runs it into `dir`, with the changes above; returns its path. */
export function defaultRunConfig(dir: string, options: DefaultRunOptions): string {
  interface DefaultConfig {
    buses: { dbc: string }[];
    outbox: { path: string };
    commands: { replayDbPath: string };
    health: { http: { port: number } };
    collection: { batch: { maxDelayMs: number } };
    uplink: Record<string, unknown>;
    $schema?: string;
  }
  const config = JSON.parse(readFileSync(path.join(repoRoot, 'device-config', 'default.json'), 'utf8')) as DefaultConfig;
  delete config.$schema;
  config.buses[0]!.dbc = path.join(repoRoot, 'device-config', config.buses[0]!.dbc);
  config.outbox.path = 'var/outbox.db';
  config.commands.replayDbPath = 'var/commands.db';
  config.health.http.port = 0;
  if (options.batchMaxDelayMs !== undefined) config.collection.batch.maxDelayMs = options.batchMaxDelayMs;
  config.uplink = { ...config.uplink, url: `mqtts://localhost:${options.port}`, certsDir: defaultRunPki(), ...options.uplink };
  return writeConfig(dir, 'default', config);
}

/** The messages of an agent's JSON log, in order. */
export function logMessages(stderr: string): { level: string; msg: string }[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { level: string; msg: string });
}

export interface BrokerLine {
  name: string;
  version: string;
  port: number;
  backendPort: number;
  protocol: string;
  line: string;
}

/** The start line of the embedded broker, parsed: its name, version, the cars' and the backend's ports, the protocol. */
export function brokerLine(stderr: string): BrokerLine {
  const line = logMessages(stderr).find((m) => /^broker: (mosquitto|aedes) \d/.test(m.msg))?.msg;
  assert.ok(line, `no broker start line:\n${stderr}`);
  const match =
    /^broker: (mosquitto|aedes) (\d+\.\d+\.\d+)(?: \(in-process\))? on mqtts:\/\/localhost:(\d+) \(cars\) and mqtts:\/\/localhost:(\d+) \(backend, certificates in (.*)\), (MQTT 5|MQTT 3\.1\.1)$/.exec(
      line,
    );
  assert.ok(match, line);
  assert.equal(match[5], defaultRunPki());
  return { name: match[1]!, version: match[2]!, port: Number(match[3]), backendPort: Number(match[4]), protocol: match[6]!, line };
}
