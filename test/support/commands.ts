/**
 * Remote commands as the tests drive them: a command PKI (the pinned CA, a valid operator, and operators that must
 * be refused), a car's agent with a `commands` section against a real mosquitto (its signal values fed as CAN frames
 * through the DBC by the test), and the operator's client.
 */
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import type { Signer } from '../../src/commands/envelope.js';
import { OperatorClient } from '../../src/commands/operator-client.js';
import { parseDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { createCommandCa, EXTENDED_KEY_USAGE, issueOperatorCertificate, type CommandCertificate } from '../../src/pki/command-pki.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { InProcessAgent } from './agent-in-process.js';
import { type Mosquitto, type TestPki } from './mosquitto.js';
import { makeTempDir } from './temp.js';
import { waitFor } from './wait.js';

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

export interface CommandAgentOptions {
  deviceId: string;
  protocol?: 5 | 4;
  /** Overrides of the commands section. */
  commands?: Record<string, unknown>;
  /** Reuse this folder (outbox, replay memory): a restart of the same car. */
  dir?: string;
  /** The uplink identity files; default the TestPki's for deviceId (shared: a test that changes them passes its own). */
  identity?: { certFile: string; keyFile: string; caFile: string };
}

/**
 * The config of a car with remote commands: the demo DBC on a simulated bus, its outbox and replay memory in `dir`,
 * connected to `broker` with quick reconnects, and no collection rules of its own.
 */
export function commandAgentConfig(broker: Mosquitto, pki: TestPki, commandPki: CommandPki, options: CommandAgentOptions & { dir: string }): DeviceConfig {
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
  return parseDeviceConfig(json, { file: path.join(options.dir, 'device.json'), baseDir: options.dir });
}

/**
 * That car's agent (test/support/agent-in-process.ts), resolved once connected. Its bus does not run: the test feeds
 * the signal values (`feedSignals`), so a bus the test stops feeding is silent.
 */
export async function startCommandAgent(broker: Mosquitto, pki: TestPki, commandPki: CommandPki, options: CommandAgentOptions): Promise<InProcessAgent> {
  const dir = options.dir ?? makeTempDir('command-agent-');
  const agent = await InProcessAgent.start(commandAgentConfig(broker, pki, commandPki, { ...options, dir }), { run: false });
  try {
    await waitFor(() => agent.dataPath.uplink!.session.state === 'connected', 'the agent to connect', 10_000);
  } catch (err) {
    await agent.close();
    throw new Error(`${(err as Error).message}: ${agent.log.join('\n')}`);
  }
  return agent;
}

/** The fleet's operator client, connected with the backend identity. */
export async function operatorClient(broker: Mosquitto, pki: TestPki): Promise<OperatorClient> {
  const files = pki.backend();
  return OperatorClient.connect({ url: broker.backendUrl, certFile: files.certFile, keyFile: files.keyFile, caFile: pki.caFile });
}
