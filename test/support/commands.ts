/**
 * Remote commands as the tests drive them: a command PKI (the pinned CA, a valid operator, and operators that must
 * be refused), the agent's data path with a `commands` section against a real mosquitto, live signal values fed as
 * CAN frames through the DBC, and the operator's client.
 */
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { DataPath } from '../../src/agent/data-path.js';
import type { Signer } from '../../src/commands/envelope.js';
import { OperatorClient } from '../../src/commands/operator-client.js';
import { parseDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile } from '../../src/dbc/index.js';
import { Logger } from '../../src/health/log.js';
import { createCommandCa, EXTENDED_KEY_USAGE, issueOperatorCertificate, type CommandCertificate } from '../../src/pki/command-pki.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { type Mosquitto, type TestPki } from './mosquitto.js';
import { makeTempDir } from './temp.js';

const DAY_MS = 86_400_000;

/** The command CA the cars pin, and the operators the tests sign with. */
export class CommandPki {
  readonly dir = makeTempDir('command-pki-');
  readonly ca: CommandCertificate = createCommandCa('test command CA');
  readonly caFile = path.join(this.dir, 'command-ca.crt');
  /** A valid operator. */
  readonly operator: Signer;
  /** Operators that must be refused as untrusted signers. */
  readonly foreign: Signer;
  readonly expired: Signer;
  readonly notForSigning: Signer;
  /** The valid operator's files, for the ops CLI. */
  readonly operatorFiles = { certFile: path.join(this.dir, 'alice.crt'), keyFile: path.join(this.dir, 'alice.key') };

  constructor() {
    writeFileSync(this.caFile, this.ca.certPem);
    const alice = issueOperatorCertificate(this.ca, 'alice');
    this.operator = alice;
    writeFileSync(this.operatorFiles.certFile, alice.certPem);
    writeFileSync(this.operatorFiles.keyFile, alice.keyPem, { mode: 0o600 });
    const otherCa = createCommandCa('another command CA');
    this.foreign = issueOperatorCertificate(otherCa, 'mallory');
    this.expired = issueOperatorCertificate(this.ca, 'bob', { notBefore: new Date(Date.now() - 30 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) });
    this.notForSigning = issueOperatorCertificate(this.ca, 'carol', { extKeyUsage: [EXTENDED_KEY_USAGE.clientAuth] });
  }
}

export interface TestAgent {
  deviceId: string;
  config: DeviceConfig;
  dataPath: DataPath;
  decoder: BusDecoder;
  /** What the agent logged. */
  log: string[];
  close(): Promise<void>;
}

export interface AgentOptions {
  deviceId: string;
  protocol?: 5 | 4;
  /** Overrides of the commands section. */
  commands?: Record<string, unknown>;
  /** Reuse this folder (outbox, replay memory): a restart of the same car. */
  dir?: string;
  /** The uplink identity files; default the TestPki's for deviceId (shared: a test that changes them passes its own). */
  identity?: { certFile: string; keyFile: string; caFile: string };
}

/** The agent's data path for `deviceId` with commands, connected to `broker`; resolves once connected. */
export async function startAgent(broker: Mosquitto, pki: TestPki, commandPki: CommandPki, options: AgentOptions): Promise<TestAgent> {
  const dir = options.dir ?? makeTempDir('command-agent-');
  const tls = options.identity ?? pki.identityFiles(options.deviceId);
  const json = {
    deviceId: options.deviceId,
    buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
    collection: { rules: [] },
    outbox: { path: 'outbox.db', writeIntervalMs: 50 },
    uplink: {
      url: broker.url,
      ...tls,
      protocol: options.protocol ?? 5,
      reconnect: { initialMs: 50, maxMs: 400 },
    },
    commands: { caFile: commandPki.caFile, replayDbPath: 'commands.db', ...options.commands },
  };
  const config = parseDeviceConfig(json, { file: path.join(dir, 'device.json'), baseDir: dir });
  const decoder = new BusDecoder('can0', compileDatabase(loadDbcFile(DEMO_DBC_PATH, { strict: true })));
  const log: string[] = [];
  // The log as plain lines, every component, at info and above.
  const dataPath = await DataPath.open(config, [decoder], new Logger({ lines: (message) => log.push(message) }));
  const session = dataPath.uplink!.session;
  const started = Date.now();
  while (session.state !== 'connected') {
    if (Date.now() - started > 10_000) throw new Error(`the agent did not connect: ${log.join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return { deviceId: options.deviceId, config, dataPath, decoder, log, close: async () => void (await dataPath.close()) };
}

/** Feeds one frame of `message` with `values` through the agent's decoder (as the bus would). */
export function feedSignals(agent: TestAgent, message: string, values: Record<string, number>): void {
  const codec = agent.decoder.database.byName(message);
  if (!codec) throw new Error(`no message ${message} in the demo DBC`);
  const data = codec.encode(values);
  agent.dataPath.sinkFor(0)({
    ts: Date.now() / 1000,
    bus: 'can0',
    id: codec.message.id,
    extended: codec.message.extended,
    fd: false,
    fdFlags: 0,
    remote: false,
    error: false,
    dlc: data.length,
    data,
  });
}

/** The fleet's operator client, connected with the backend identity. */
export async function operatorClient(broker: Mosquitto, pki: TestPki): Promise<OperatorClient> {
  const files = pki.backend();
  return OperatorClient.connect({ url: broker.backendUrl, certFile: files.certFile, keyFile: files.keyFile, caFile: pki.caFile });
}

