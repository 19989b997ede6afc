/**
 * The cloud end of the carrier network: a real mosquitto in the cloud namespace, on the cloud address, configured as
 * the uplink tests' broker is (TLS only, client certificate as username, the fleet ACL); and MQTT clients living in
 * the car or the cloud namespace (test/support/netns-mqtt-client.ts, driven over stdin/stdout).
 */
import { type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { BACKEND, TestPki, mosquittoPath, writeFleetBrokerConfig } from './mosquitto.js';
import { makeTempDir } from './temp.js';
import type { CarrierNetwork, Place } from './carrier-network.js';
import type { NetnsClientOptions } from './netns-mqtt-client.js';
import { waitFor } from './wait.js';

export const BROKER_PORT = 8883;
export const BACKEND_PORT = 8884;

const CLIENT_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'netns-mqtt-client.js');

export class CarrierBroker {
  /** What mosquitto logged. */
  log = '';

  private constructor(
    private readonly net: CarrierNetwork,
    readonly pki: TestPki,
    private readonly child: ChildProcess,
  ) {}

  /** Where cars connect. */
  get url(): string {
    return `mqtts://${this.net.cloudAddress}:${BROKER_PORT}`;
  }

  /** Where the backend connects. */
  get backendUrl(): string {
    return `mqtts://${this.net.cloudAddress}:${BACKEND_PORT}`;
  }

  /** Starts mosquitto in the cloud namespace with a certificate for the cloud address; fails, saying why, without it. */
  static async start(net: CarrierNetwork, pki: TestPki): Promise<CarrierBroker> {
    const executable = mosquittoPath();
    if (!executable) throw new Error('mosquitto is not installed (Debian package `mosquitto`; scripts/install-test-deps.sh installs it)');
    const dir = makeTempDir('carrier-broker-');
    const configFile = writeFleetBrokerConfig({
      dir,
      deviceListener: `${BROKER_PORT} ${net.cloudAddress}`,
      backendListener: `${BACKEND_PORT} ${net.cloudAddress}`,
      pki,
      server: pki.server([net.cloudAddress]),
      persistence: false,
    });
    const child = net.spawn('cloud', executable, ['-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const broker = new CarrierBroker(net, pki, child);
    let exited = false;
    child.once('exit', () => {
      exited = true;
    });
    const onData = (chunk: Buffer): void => {
      broker.log += chunk.toString('utf8');
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    await waitFor(() => exited || / running$/m.test(broker.log), 'mosquitto to start in the cloud namespace', 10_000);
    if (exited) throw new Error(`mosquitto exited at start:\n${broker.log}`);
    return broker;
  }

  /** The peers mosquitto accepted connections from, as `address:port` (what the cloud sees of the car). */
  peers(): string[] {
    return [...this.log.matchAll(/New connection from (\S+):(\d+) on port/g)].map((m) => `${m[1]}:${m[2]}`);
  }

  /** The peer address mosquitto logged for a client ID. */
  peerOf(clientId: string): string | null {
    const match = new RegExp(`New client connected from (\\S+) as ${clientId} `).exec(this.log);
    return match?.[1] ?? null;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }
}

export type ClientEvent =
  | { event: 'connected'; localAddress: string; localPort: number; at: number }
  | { event: 'subscribed'; topic: string; granted: number[]; at: number }
  | { event: 'message'; topic: string; payload: string; qos: number; at: number }
  | { event: 'published'; topic: string; at: number }
  | { event: 'closed'; at: number }
  | { event: 'error'; message: string; at: number };

/** An MQTT client in the car or the cloud namespace; `events` records what it reported, stamped on arrival. */
export class NetnsMqttClient {
  readonly events: ClientEvent[] = [];
  stderr = '';

  private constructor(private readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.events.push({ ...(JSON.parse(line) as ClientEvent), at: performance.now() });
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString('utf8');
    });
  }

  /**
   * Starts a client in `place` with the certificate the broker's PKI issues for `identity` (a car's CN, its client ID
   * too; or `backend`, on the backend listener) and waits until it is connected and subscribed to `subscribe`.
   */
  static async connect(
    net: CarrierNetwork,
    place: Place,
    broker: CarrierBroker,
    options: { identity: string; clientId?: string; keepalive: number; subscribe?: string[] },
  ): Promise<NetnsMqttClient> {
    const backend = options.identity === BACKEND;
    const files = backend ? broker.pki.backend() : broker.pki.client(options.identity);
    const clientOptions: NetnsClientOptions = {
      url: backend ? broker.backendUrl : broker.url,
      // The broker makes a car's CN its client ID whatever it sends: send that.
      clientId: options.clientId ?? (backend ? `${BACKEND}/${process.pid}` : options.identity),
      keepalive: options.keepalive,
      caFile: broker.pki.caFile,
      certFile: files.certFile,
      keyFile: files.keyFile,
      subscribe: options.subscribe,
    };
    const child = net.spawn(place, process.execPath, [CLIENT_SCRIPT, JSON.stringify(clientOptions)]);
    const client = new NetnsMqttClient(child);
    const subscriptions = options.subscribe?.length ?? 0;
    try {
      await waitFor(
        () => client.has('error') || client.has('closed') || (client.has('connected') && client.of('subscribed').length === subscriptions),
        `${clientOptions.clientId} to connect in the ${place} namespace`,
        10_000,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}; events ${JSON.stringify(client.events)}; stderr ${client.stderr}`);
    }
    const failure = client.events.find((e) => e.event === 'error' || e.event === 'closed');
    if (failure) throw new Error(`${clientOptions.clientId} failed to connect: ${JSON.stringify(client.events)} ${client.stderr}`);
    return client;
  }

  /** The local port of its connection (the car's side of the NAT mapping). */
  get localPort(): number {
    const connected = this.of('connected')[0];
    if (!connected) throw new Error('not connected');
    return connected.localPort;
  }

  has(kind: ClientEvent['event']): boolean {
    return this.events.some((e) => e.event === kind);
  }

  of<K extends ClientEvent['event']>(kind: K): Extract<ClientEvent, { event: K }>[] {
    return this.events.filter((e): e is Extract<ClientEvent, { event: K }> => e.event === kind);
  }

  messages(topicPrefix = ''): Extract<ClientEvent, { event: 'message' }>[] {
    return this.of('message').filter((m) => m.topic.startsWith(topicPrefix));
  }

  publish(topic: string, payload: string, qos: 0 | 1 = 1): void {
    this.child.stdin!.write(`${JSON.stringify({ op: 'publish', topic, payload, qos })}\n`);
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    // Ending the MQTT session politely needs the network; a client cut off by the test is simply killed.
    this.child.kill('SIGKILL');
    await exited;
  }
}
