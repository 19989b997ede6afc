/**
 * A real Debian mosquitto for the uplink tests, on a free loopback port, configured as a fleet broker would be:
 * TLS only, a client certificate required and taken as the username (its CN), and an ACL confining each device to
 * its own topics. Plus a "backend" subscriber (its own certificate, CN `backend`) that records what devices publish.
 *
 * The broker's persistence lives in the test's temp folder, so a restart keeps sessions and retained messages as a
 * production broker's would. mosquitto's own system service (port 1883) is never used.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { loadIdentity } from '../../src/pki/identity.js';
import { MqttSession, type MqttSessionOptions, type SessionState } from '../../src/uplink/session.js';
import { createDevCa, issueDeviceCertificate, issueServerCertificate, writeIssued, type DevCa, type WrittenFiles } from '../../src/pki/dev-ca.js';
import { makeTempDir } from './temp.js';
import { delay, waitFor } from './obd-sim.js';

export const BACKEND = 'backend';

/**
 * The ACL: the backend reads every vehicle, sends commands (one level below commands/, so it cannot forge a car's
 * results) and signed certificates; a device writes its own data topics, its logs, its certificate signing requests
 * and its command results (`commands/<id>/result`, and the MQTT 5 response topics under `results/`), and reads its
 * commands and its new certificate.
 */
export const ACL = `user ${BACKEND}
topic read vehicles/#
topic write vehicles/+/commands/+
topic write vehicles/+/certificate

pattern write vehicles/%u/telemetry
pattern write vehicles/%u/events
pattern write vehicles/%u/status
pattern write vehicles/%u/health
pattern write vehicles/%u/logs
pattern write vehicles/%u/csr
pattern write vehicles/%u/commands/+/result
pattern write vehicles/%u/results/#
pattern read vehicles/%u/commands/+
pattern read vehicles/%u/certificate
`;

/** Where mosquitto is: Debian installs it in /usr/sbin, outside a non-root PATH. */
export function mosquittoPath(): string | null {
  const found = spawnSync('sh', ['-c', 'command -v mosquitto'], { encoding: 'utf8' }).stdout.trim();
  if (found) return found;
  return existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : null;
}

/** The PKI of a test run: one CA for the broker and the clients, certificates issued on demand. */
/**
 * A mosquitto listener as the fleet runs it: TLS only, a client certificate from `caFile` required, its CN the
 * username the ACL applies to.
 */
export function tlsListener(listener: string, caFile: string, server: WrittenFiles): string[] {
  return [
    `listener ${listener}`,
    `cafile ${caFile}`,
    `certfile ${server.certFile}`,
    `keyfile ${server.keyFile}`,
    'require_certificate true',
    'use_identity_as_username true',
    'tls_version tlsv1.2',
  ];
}

export class TestPki {
  readonly dir = makeTempDir('uplink-pki-');
  readonly ca: DevCa;
  readonly caFile: string;
  private readonly issued = new Map<string, WrittenFiles>();

  constructor(commonName = 'uplink test CA') {
    this.ca = createDevCa({ commonName });
    this.caFile = writeIssued(this.dir, 'ca', this.ca).certFile;
  }

  server(hosts = ['localhost', '127.0.0.1']): WrittenFiles {
    return this.remember('server', () => issueServerCertificate(this.ca, { hosts }));
  }

  /** A client certificate with CN `identity` (a device ID, or `backend`). */
  client(identity: string): WrittenFiles {
    return this.remember(identity, () => issueDeviceCertificate(this.ca, identity));
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
  /** Clients must chain to this PKI's CA; the broker's certificate comes from `serverPki` (default the same). */
  pki: TestPki;
  serverPki?: TestPki;
  /** More lines for the config's general section (limits such as `max_packet_size`). */
  extraConfig?: string[];
  /** Another ACL than `ACL` (a test that needs the broker to refuse some of a device's own topics). */
  acl?: string;
  /** Log only errors, warnings, notices and connections, not every packet: for benchmarks, where reading the log would cost the
   * measured process CPU. */
  quiet?: boolean;
}

export class Mosquitto {
  readonly dir = makeTempDir('mosquitto-');
  readonly configFile = path.join(this.dir, 'mosquitto.conf');
  readonly aclFile = path.join(this.dir, 'acl');
  /** What the broker logged (all of it: tests look for its connection and ACL lines). */
  log = '';
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    readonly port: number,
    private readonly executable: string,
  ) {}

  get url(): string {
    return `mqtts://localhost:${this.port}`;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Writes the config, starts the broker and waits until it listens. Fails, saying why, without mosquitto. */
  static async start(options: MosquittoOptions): Promise<Mosquitto> {
    const executable = mosquittoPath();
    if (!executable) throw new Error('mosquitto is not installed (Debian package `mosquitto`; scripts/install-test-deps.sh installs it)');
    const broker = new Mosquitto(await freePort(), executable);
    const server = (options.serverPki ?? options.pki).server();
    writeFileSync(broker.aclFile, options.acl ?? ACL);
    writeFileSync(
      broker.configFile,
      [
        'per_listener_settings false',
        'allow_anonymous false',
        `acl_file ${broker.aclFile}`,
        'persistence true',
        `persistence_location ${broker.dir}/`,
        // As root mosquitto would drop to the `mosquitto` user, which cannot read the test's 0600 keys.
        `user ${userInfo().username}`,
        'log_dest stderr',
        ...(options.quiet ? ['log_type error', 'log_type warning', 'log_type notice', 'log_type information'] : ['log_type all']),
        'log_timestamp false',
        // The backend's persistent session buffers what devices publish while it reconnects after a restart.
        'max_queued_messages 10000',
        // As a fleet broker should be set: PUBACKs and command results go out at once, not behind Nagle's algorithm.
        'set_tcp_nodelay true',
        ...(options.extraConfig ?? []),
        ...tlsListener(`${broker.port} 127.0.0.1`, options.pki.caFile, server),
        '',
      ].join('\n'),
    );
    await broker.start();
    return broker;
  }

  /** Starts the broker again (same port, same config, same persistence) after stop() or kill(). */
  async start(): Promise<void> {
    if (this.child) return;
    const child = spawn(this.executable, ['-c', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
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
      await waitFor(() => exitedEarly || / running$/m.test(this.log.slice(from)), 10_000, 'mosquitto to start');
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

/** The fleet backend's view: a client with CN `backend` subscribed to `vehicles/#`, recording every message. */
export class BackendSubscriber {
  readonly messages: ReceivedMessage[] = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.messages.push({ topic, payload, retain: packet.retain, qos: packet.qos, dup: packet.dup });
    });
  }

  static async connect(broker: Mosquitto, pki: TestPki, filter = 'vehicles/#'): Promise<BackendSubscriber> {
    const files = pki.client(BACKEND);
    const client = mqtt.connect(broker.url, {
      protocolVersion: 5,
      clientId: `backend-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
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

  async waitFor(condition: () => boolean, timeoutMs = 5000, what = 'messages'): Promise<void> {
    await waitFor(condition, timeoutMs, what);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
    await delay(0);
  }
}

/** A port nothing listens on now (the kernel's choice). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
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
  await waitFor(() => session.state === state, timeoutMs, `the session to be ${state} (it is ${session.state})`);
}
