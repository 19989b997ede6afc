/**
 * A real Debian mosquitto for the uplink tests, on free loopback ports, running the fleet broker configuration the
 * project ships (deploy/mosquitto/: mosquitto.conf, devices.acl, backend.acl) with only the ports, the folder of its
 * files and the log and persistence lines swapped for the test's own. So the tests prove the configuration a fleet
 * copies: TLS only, a client certificate required, cars on one listener (their CN is the username and the client ID,
 * confined to their own tree by devices.acl), the backend on another that only the backend CA's certificates reach.
 * Plus a "backend" subscriber (its own certificate from the backend CA, CN `backend`) that records what devices publish.
 *
 * The broker's persistence lives in the test's temp folder, so a restart keeps sessions and retained messages as a
 * production broker's would. mosquitto's own system service (port 1883) is never used.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { contractChecker } from './contract.js';
import { userInfo } from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { BACKEND_IDENTITY } from '../../src/pki/device-id.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { MqttSession, type MqttSessionOptions, type SessionState } from '../../src/uplink/session.js';
import {
  createDevCa,
  issueClientCertificate,
  issueDeviceCertificate,
  issueServerCertificate,
  writeIssued,
  type DevCa,
  type WrittenFiles,
} from '../../src/pki/dev-ca.js';
import { BACKEND_ACL_FILE, DEVICES_ACL_FILE, FLEET_BROKER_DIR, findMosquitto, runnableFleetBrokerConfig } from '../../src/uplink/fleet-broker-config.js';
import { freePort } from '../../src/uplink/mosquitto-broker.js';
import { makeTempDir } from './temp.js';
import { delay, waitFor } from './wait.js';

export const BACKEND = BACKEND_IDENTITY;

/** The shipped broker configuration the tests run (deploy/mosquitto/). */
export { FLEET_BROKER_DIR };
/** A port nothing listens on now (the kernel's choice), on 127.0.0.1. */
export { freePort };

/** The cars' ACL as shipped (deploy/mosquitto/devices.acl). */
export const DEVICE_ACL = readFileSync(DEVICES_ACL_FILE, 'utf8');
/** The backend's ACL as shipped (deploy/mosquitto/backend.acl). */
export const BACKEND_ACL = readFileSync(BACKEND_ACL_FILE, 'utf8');

/** Where mosquitto is (the agent's own lookup, which ignores TELEMATICS_MOSQUITTO here: the tests need the real one). */
export function mosquittoPath(): string | null {
  const found = findMosquitto({ ...process.env, TELEMATICS_MOSQUITTO: '' });
  return 'executable' in found ? found.executable : null;
}

export interface FleetBrokerConfigOptions {
  /** The test's folder: the certificates and ACLs go to `<dir>/telematics/`, persistence to `<dir>/`. */
  dir: string;
  /** `port [address]` of the cars' and the backend's listeners. */
  deviceListener: string;
  backendListener: string;
  pki: TestPki;
  server: WrittenFiles;
  /** Another cars' ACL than the shipped one (a test that needs the broker to refuse some of a device's own topics). */
  deviceAcl?: string;
  /** More lines for the general section (limits such as `max_packet_size`). */
  extraConfig?: string[];
  persistence?: boolean;
  quiet?: boolean;
}

/**
 * The shipped mosquitto.conf made runnable in a test (src/uplink/fleet-broker-config.ts, as the development broker of
 * the default run does): its files copied into `dir`, its listeners on the test's ports, its log on stderr,
 * persistence in `dir`, and (as root) the test's user kept, since mosquitto would otherwise drop to the `mosquitto`
 * user, which cannot read the test's 0600 keys. Everything else is as shipped. Returns the config file.
 */
export function writeFleetBrokerConfig(options: FleetBrokerConfigOptions): string {
  const files = path.join(options.dir, 'telematics');
  mkdirSync(files, { recursive: true });
  const copy = (from: string, name: string): string => {
    copyFileSync(from, path.join(files, name));
    return path.join(files, name);
  };
  const write = (name: string, text: string): string => {
    writeFileSync(path.join(files, name), text);
    return path.join(files, name);
  };
  const text = runnableFleetBrokerConfig({
    files: {
      deviceCaFile: copy(options.pki.caFile, 'device-ca.crt'),
      backendCaFile: copy(options.pki.backendCaFile, 'backend-ca.crt'),
      serverCertFile: copy(options.server.certFile, 'server.crt'),
      serverKeyFile: copy(options.server.keyFile, 'server.key'),
      devicesAclFile: write('devices.acl', options.deviceAcl ?? DEVICE_ACL),
      backendAclFile: write('backend.acl', BACKEND_ACL),
    },
    deviceListener: options.deviceListener,
    backendListener: options.backendListener,
    user: userInfo().username,
    persistenceDir: options.persistence === false ? null : options.dir,
    logDest: ['stderr'],
    logTypes: options.quiet ? ['error', 'warning', 'notice', 'information'] : ['all'],
    logTimestamp: false,
    ...(options.extraConfig ? { extraConfig: options.extraConfig } : {}),
  });
  const configFile = path.join(options.dir, 'mosquitto.conf');
  writeFileSync(configFile, text);
  return configFile;
}

/**
 * The PKI of a test run: the device CA (it also issues the broker's certificate) and the backend CA, certificates
 * issued on demand.
 */
export class TestPki {
  readonly dir = makeTempDir('uplink-pki-');
  readonly ca: DevCa;
  readonly caFile: string;
  readonly backendCa: DevCa;
  readonly backendCaFile: string;
  private readonly issued = new Map<string, WrittenFiles>();

  constructor(commonName = 'uplink test CA') {
    this.ca = createDevCa({ commonName });
    this.caFile = writeIssued(this.dir, 'ca', this.ca).certFile;
    this.backendCa = createDevCa({ commonName: `${commonName} (backend)` });
    this.backendCaFile = writeIssued(this.dir, 'backend-ca', this.backendCa).certFile;
  }

  server(hosts = ['localhost', '127.0.0.1']): WrittenFiles {
    return this.remember('server', () => issueServerCertificate(this.ca, { hosts }));
  }

  /** A car's client certificate from the device CA, CN `deviceId`. */
  client(deviceId: string): WrittenFiles {
    return this.remember(deviceId, () => issueDeviceCertificate(this.ca, deviceId));
  }

  /** The backend's client certificate, from the backend CA. */
  backend(): WrittenFiles {
    return this.remember(`backend-ca.${BACKEND}`, () => issueClientCertificate(this.backendCa, BACKEND));
  }

  /** The files `loadIdentity` takes for `identity`, trusting `brokerCa` (this CA by default) for the broker. */
  identityFiles(identity: string, brokerCa: string = this.caFile): { certFile: string; keyFile: string; caFile: string } {
    return { ...this.client(identity), caFile: brokerCa };
  }

  private remember(name: string, make: () => { certPem: string; keyPem: string }): WrittenFiles {
    let files = this.issued.get(name);
    if (!files) {
      files = writeIssued(this.dir, name, make());
      this.issued.set(name, files);
    }
    return files;
  }
}

export interface MosquittoOptions {
  /** Clients must chain to this PKI's CAs; the broker's certificate comes from `serverPki` (default the same). */
  pki: TestPki;
  serverPki?: TestPki;
  /** More lines for the config's general section (limits such as `max_packet_size`). */
  extraConfig?: string[];
  /** Another cars' ACL than the shipped one (a test that needs the broker to refuse some of a device's own topics). */
  deviceAcl?: string;
  /** Log only errors, warnings, notices and connections, not every packet: for benchmarks, where reading the log would cost the
   * measured process CPU. */
  quiet?: boolean;
  /**
   * The broker's open-files limit (ulimit -n), for a fleet: mosquitto holds a file per connection, and the usual
   * default of 1024 caps it at about a thousand cars. Raised through prlimit at each start; default: inherited.
   */
  openFiles?: number;
}

export class Mosquitto {
  readonly dir = makeTempDir('mosquitto-');
  readonly configFile = path.join(this.dir, 'mosquitto.conf');
  /** What the broker logged (all of it: tests look for its connection and ACL lines). */
  log = '';
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    /** The cars' listener. */
    readonly port: number,
    /** The backend's listener. */
    readonly backendPort: number,
    private readonly executable: string,
    private readonly openFiles?: number,
  ) {}

  /** Where cars connect. */
  get url(): string {
    return `mqtts://localhost:${this.port}`;
  }

  /** Where the backend connects. */
  get backendUrl(): string {
    return `mqtts://localhost:${this.backendPort}`;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Writes the config, starts the broker and waits until it listens. Fails, saying why, without mosquitto. */
  static async start(options: MosquittoOptions): Promise<Mosquitto> {
    const executable = mosquittoPath();
    if (!executable) throw new Error('mosquitto is not installed (Debian package `mosquitto`; scripts/install-test-deps.sh installs it)');
    const broker = new Mosquitto(await freePort(), await freePort(), executable, options.openFiles);
    writeFleetBrokerConfig({
      dir: broker.dir,
      deviceListener: `${broker.port} 127.0.0.1`,
      backendListener: `${broker.backendPort} 127.0.0.1`,
      pki: options.pki,
      server: (options.serverPki ?? options.pki).server(),
      ...(options.deviceAcl !== undefined ? { deviceAcl: options.deviceAcl } : {}),
      ...(options.extraConfig ? { extraConfig: options.extraConfig } : {}),
      ...(options.quiet ? { quiet: true } : {}),
    });
    await broker.start();
    return broker;
  }

  /** Starts the broker again (same port, same config, same persistence) after stop() or kill(). */
  async start(): Promise<void> {
    if (this.child) return;
    // prlimit (util-linux) runs mosquitto with the limit raised (soft and hard), within what this process may grant.
    const command: [string, string[]] =
      this.openFiles === undefined
        ? [this.executable, ['-c', this.configFile]]
        : ['prlimit', [`--nofile=${this.openFiles}:${this.openFiles}`, this.executable, '-c', this.configFile]];
    const child = spawn(command[0], command[1], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let exitedEarly = false;
    child.once('exit', () => {
      exitedEarly = true;
      if (this.child === child) this.child = null;
    });
    const onData = (chunk: Buffer): void => {
      this.log += chunk.toString('utf8');
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    const from = this.log.length;
    try {
      await waitFor(() => exitedEarly || / running$/m.test(this.log.slice(from)), 'mosquitto to start', 10_000);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
    if (exitedEarly) throw new Error(`mosquitto exited at start:\n${this.log.slice(from)}`);
  }

  /** A clean shutdown (SIGTERM): clients see the connection close; persistent sessions are saved. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGTERM');
    await this.exited;
    this.child = null;
  }

  /** A crash (SIGKILL). */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  /** Freezes the broker (SIGSTOP): the kernel still accepts connections, nothing answers, as behind a dead link. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

export interface ReceivedMessage {
  topic: string;
  payload: Buffer;
  retain: boolean;
  qos: number;
  /** Set on the broker's redelivery of a message this subscriber may have had already (after a reconnect). */
  dup?: boolean;
}

/** The fleet backend's view: a client with the backend CA's certificate `backend`, on the backend listener, subscribed to `vehicles/#`, recording every message. */
export class BackendSubscriber {
  readonly messages: ReceivedMessage[] = [];
  /** What the messages received broke of the contract (test/support/contract.ts); the broker fixture fails on any. */
  readonly contractViolations: string[] = [];

  private constructor(readonly client: MqttClient) {
    const contract = contractChecker();
    client.on('message', (topic, payload, packet) => {
      this.messages.push({ topic, payload, retain: packet.retain, qos: packet.qos, dup: packet.dup });
      for (const problem of contract.check(topic, payload)) if (this.contractViolations.length < 50) this.contractViolations.push(problem);
    });
  }

  static async connect(broker: Mosquitto, pki: TestPki, filter = 'vehicles/#'): Promise<BackendSubscriber> {
    const files = pki.backend();
    const client = mqtt.connect(broker.backendUrl, {
      protocolVersion: 5,
      clientId: `backend/${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      // A persistent session: what devices publish while the backend reconnects after a broker restart waits for it
      // in the broker (saved across a clean restart), as a real backend's shared subscription would.
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
      reconnectPeriod: 200,
      connectTimeout: 5000,
      ca: readFileSync(pki.caFile),
      cert: readFileSync(files.certFile),
      key: readFileSync(files.keyFile),
      rejectUnauthorized: true,
      // Resubscribe after a broker crash, which loses the session (harmless when the broker kept it).
      resubscribe: true,
    });
    const backend = new BackendSubscriber(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    // Reconnect failures while a test has the broker down are expected; unheard, 'error' would crash the process.
    client.on('error', () => undefined);
    await client.subscribeAsync(filter, { qos: 1 });
    return backend;
  }

  /** Publishes a command (QoS 1) to `vehicles/<deviceId>/commands/<name>`, as the fleet backend does. */
  async command(deviceId: string, name: string, payload: string): Promise<void> {
    await this.client.publishAsync(`vehicles/${deviceId}/commands/${name}`, payload, { qos: 1 });
  }

  /** Messages on `vehicles/<deviceId>/<kind>`. */
  on(deviceId: string, kind: string): ReceivedMessage[] {
    return this.messages.filter((m) => m.topic === `vehicles/${deviceId}/${kind}`);
  }

  /** test/support/wait.ts's waitFor, for a condition on what the backend received. */
  async waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    await waitFor(condition, what, timeoutMs);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
    await delay(0);
  }
}

/**
 * A device's session to `broker` with the certificate `pki` issues for `certificateOf` (default the device ID),
 * reconnecting quickly (tests do not wait minutes for a backoff). Not started.
 */
export function deviceSession(
  broker: Mosquitto,
  pki: TestPki,
  deviceId: string,
  options: Partial<MqttSessionOptions> & { certificateOf?: string; brokerCa?: string } = {},
): MqttSession {
  const { certificateOf, brokerCa, ...rest } = options;
  const identity = loadIdentity(pki.identityFiles(certificateOf ?? deviceId, brokerCa));
  return new MqttSession({
    url: broker.url,
    deviceId,
    identity,
    connectTimeoutMs: 5000,
    reconnect: { initialMs: 50, maxMs: 400 },
    ...rest,
  });
}

/** Resolves once the session is in `state`. */
export async function waitForState(session: MqttSession, state: SessionState, timeoutMs = 5000): Promise<void> {
  await waitFor(() => session.state === state, `the session to be ${state} (it is ${session.state})`, timeoutMs);
}
