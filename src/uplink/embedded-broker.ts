/**
 * The development broker of the default run when mosquitto is not installed (src/agent/development-broker.ts chooses):
 * aedes, in-process, behind two TLS servers that demand a client certificate, with the rules of the fleet broker the
 * project ships (deploy/mosquitto/): a client is who its certificate says, and the CA that issued it says what it is.
 *
 * - The cars' listener (`port`) takes certificates from the device CA (`caFile`) only. A car's CN must be a valid
 *   device ID (src/pki/device-id.ts, so never `backend`); it must connect with its CN as the client ID (any other is
 *   refused with "identifier rejected": one car cannot take over another's session); it publishes only under
 *   `vehicles/<CN>/` and subscribes only to its own commands and certificate.
 * - The backend's listener (`backendPort`) takes certificates from the backend CA (`backendCaFile`) only, and only
 *   the one named `backend`: the fleet backend reads every vehicle, sends commands and signed certificates.
 * - Anything else is refused at CONNECT (not authorized).
 *
 * aedes speaks MQTT 3.1.1, not 5: response topics, correlation data, PUBACK reason codes, session expiry and shared
 * subscriptions do not exist here (docs/commands.md, "Under MQTT 3.1.1"). A refused PUBLISH closes the client's
 * connection, without a PUBACK. Certificate signing requests are answered by the development signer
 * (src/pki/dev-signer.ts) on the backend listener, as with mosquitto.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { BACKEND_IDENTITY, deviceIdProblem } from '../pki/device-id.js';
import { readCertificates } from '../commands/verifier.js';

export interface EmbeddedBrokerOptions {
  /** Loopback by default: the broker is for this machine. */
  host?: string;
  /** The cars' listener; 0 (default): any free port. */
  port?: number;
  /** The backend's listener (with backendCaFile); 0 (default): any free port. */
  backendPort?: number;
  certFile: string;
  keyFile: string;
  /** The device CA: a client certificate from it is a car. */
  caFile: string;
  /** The backend CA: a client certificate from it, named `backend`, is the fleet backend. Without it, no backend listener. */
  backendCaFile?: string;
}

/** Who a connected client is: the backend, or a car with its device ID. */
export type BrokerIdentity = { role: 'backend' } | { role: 'device'; deviceId: string };

/**
 * Whether `identity` may publish to `topic`. The backend: commands, one level below `commands/` (it cannot forge a
 * car's results), and signed certificates. A device: its own data topics (telemetry, events, loss, status, health,
 * logs, csr: everything in its tree but commands and its certificate), its command results
 * (`commands/<id>/result`) and MQTT 5 response topics under `results/`; never a command or its own certificate.
 */
export function mayPublish(identity: BrokerIdentity, topic: string): boolean {
  if (identity.role === 'backend') return /^vehicles\/[^/#+]+\/(commands\/[^/#+]+|certificate)$/.test(topic);
  const own = `vehicles/${identity.deviceId}/`;
  if (!topic.startsWith(own)) return false;
  const rest = topic.slice(own.length);
  if (rest.startsWith('commands/')) return /^commands\/[^/#+]+\/result$/.test(rest);
  return rest !== 'commands' && rest !== 'certificate';
}

/**
 * Whether `identity` may subscribe to `filter`: the backend to anything under vehicles/, a device to its commands
 * and to the certificate the backend signs for it.
 */
export function maySubscribe(identity: BrokerIdentity, filter: string): boolean {
  if (identity.role === 'backend') return filter === 'vehicles/#' || filter.startsWith('vehicles/');
  if (filter === `vehicles/${identity.deviceId}/certificate`) return true;
  const commands = `vehicles/${identity.deviceId}/commands/`;
  return filter === `${commands}+` || (filter.startsWith(commands) && /^[^/#+]+$/.test(filter.slice(commands.length)));
}

/**
 * Who the client behind `socket` is (the TLS server has verified its chain to one of the two CAs), with the reason
 * it is refused and the MQTT return code to refuse it with (2: identifier rejected, 5: not authorized).
 */
export function identify(
  socket: TLSSocket | undefined,
  clientId: string,
  backendCas: readonly X509Certificate[],
): { identity: BrokerIdentity } | { refused: string; returnCode: 2 | 5 } {
  const peer = socket && typeof socket.getPeerX509Certificate === 'function' ? socket.getPeerX509Certificate() : undefined;
  if (!peer) return { refused: 'no client certificate', returnCode: 5 };
  const cn = /^CN=(.*)$/m.exec(peer.subject)?.[1];
  if (cn === undefined || cn === '') return { refused: 'a client certificate without a CN', returnCode: 5 };
  if (backendCas.some((ca) => peer.checkIssued(ca) && peer.verify(ca.publicKey))) {
    return cn === BACKEND_IDENTITY ? { identity: { role: 'backend' } } : { refused: `the backend CA's '${cn}' has no rights here`, returnCode: 5 };
  }
  const problem = deviceIdProblem(cn);
  if (problem !== null) return { refused: `a device certificate named ${JSON.stringify(cn)}: ${problem}`, returnCode: 5 };
  if (clientId !== cn) return { refused: `the certificate of '${cn}' may only connect as client ID '${cn}', not ${JSON.stringify(clientId)}`, returnCode: 2 };
  return { identity: { role: 'device', deviceId: cn } };
}

export class EmbeddedBroker {
  readonly name = 'aedes';
  /** aedes speaks MQTT 3.1.1 only. */
  readonly protocol = 4;
  /** Messages devices published (accepted by the ACL), for the status line. */
  received = 0;
  /** Publishes and subscriptions the rules refused. */
  refused = 0;
  /** Connections refused at CONNECT: a foreign identity, a reserved name, another car's client ID. */
  refusedConnections = 0;

  private constructor(
    private readonly broker: Aedes,
    private readonly servers: readonly Server[],
    readonly host: string,
    readonly port: number,
    /** The backend's listener; null without a backend CA. */
    readonly backendPort: number | null,
  ) {}

  /** aedes' own version ("1.2.0"). */
  get version(): string {
    const version = (this.broker as unknown as { version?: unknown }).version;
    return typeof version === 'string' ? version : '';
  }

  private get where(): string {
    return this.host === '127.0.0.1' ? 'localhost' : this.host.includes(':') ? `[${this.host}]` : this.host;
  }

  /** Where cars connect. */
  get url(): string {
    return `mqtts://${this.where}:${this.port}`;
  }

  /** Where the backend connects; throws without a backend CA. */
  get backendUrl(): string {
    if (this.backendPort === null) throw new Error('this broker was started without a backend CA: it has no backend listener');
    return `mqtts://${this.where}:${this.backendPort}`;
  }

  /**
   * Starts aedes and its listeners. A port that cannot be listened on rejects with the server's error (its `code`
   * EADDRINUSE for one in use) carrying `listener`: 'cars' or 'backend'.
   */
  static async start(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
    const host = options.host ?? '127.0.0.1';
    const backendCaPem = options.backendCaFile !== undefined ? readFileSync(options.backendCaFile, 'utf8') : undefined;
    const backendCas = backendCaPem !== undefined ? readCertificates(backendCaPem, options.backendCaFile!) : [];
    // Decided once, at CONNECT: the certificate does not change during a connection.
    const identities = new WeakMap<Client, BrokerIdentity>();
    let holder: EmbeddedBroker | null = null;
    const broker = await Aedes.createBroker({
      // The certificate is the identity: a client without one never gets here (the TLS server refuses it).
      authenticate: (client, _username, _password, done) => {
        const verdict = identify(client.conn as TLSSocket | undefined, client.id, backendCas);
        if ('refused' in verdict) {
          if (holder) holder.refusedConnections++;
          const err = new Error(verdict.refused) as AuthenticateError;
          err.returnCode = verdict.returnCode;
          done(err, false);
          return;
        }
        identities.set(client, verdict.identity);
        done(null, true);
      },
      authorizePublish: (client, packet, callback) => {
        const identity = client ? identities.get(client) : undefined;
        if (identity !== undefined && mayPublish(identity, packet.topic)) {
          callback(null);
          if (identity.role === 'device' && holder) holder.received++;
          return;
        }
        if (holder) holder.refused++;
        callback(new Error(`${describe(identity)} may not publish to ${packet.topic}`));
      },
      authorizeSubscribe: (client, subscription, callback) => {
        const identity = client ? identities.get(client) : undefined;
        if (identity !== undefined && maySubscribe(identity, subscription.topic)) callback(null, subscription);
        else callback(new Error(`${describe(identity)} may not subscribe to ${subscription.topic}`), null);
      },
    });
    const cert = readFileSync(options.certFile);
    const key = readFileSync(options.keyFile);
    // As the fleet broker's two listeners: each trusts one CA, so a car's certificate never reaches the backend's
    // listener and the backend's never the cars'. identify() still decides the role by the issuer.
    const tlsServer = (ca: string): Server => {
      const server = createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (socket) => broker.handle(socket));
      // A client that fails the handshake (no or foreign certificate) is its problem, not the broker's.
      server.on('tlsClientError', () => undefined);
      return server;
    };
    const servers: Server[] = [];
    try {
      const cars = tlsServer(readFileSync(options.caFile, 'utf8'));
      servers.push(cars);
      const port = await listen(cars, host, options.port ?? 0, 'cars');
      let backendPort: number | null = null;
      if (backendCaPem !== undefined) {
        const backend = tlsServer(backendCaPem);
        servers.push(backend);
        backendPort = await listen(backend, host, options.backendPort ?? 0, 'backend');
      }
      holder = new EmbeddedBroker(broker, servers, host, port, backendPort);
      return holder;
    } catch (err) {
      for (const server of servers) server.close();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      throw err;
    }
  }

  /** Disconnects every client, then stops listening. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.broker.close(() => resolve()));
    await Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

/** Listens on `host:port`; resolves with the port, or rejects with the server's error and which listener it was. */
function listen(server: Server, host: string, port: number, listener: 'cars' | 'backend'): Promise<number> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error): void => reject(Object.assign(err, { listener }));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.removeListener('error', failed);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
}

function describe(identity: BrokerIdentity | undefined): string {
  if (identity === undefined) return 'an unauthenticated client';
  return identity.role === 'backend' ? BACKEND_IDENTITY : `device '${identity.deviceId}'`;
}
