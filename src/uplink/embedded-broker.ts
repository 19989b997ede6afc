/**
 * The MQTT broker the default run starts in-process, so `npm start` shows the whole data path without a backend:
 * aedes behind a TLS server that demands a client certificate, with the rules of the fleet broker the project ships
 * (deploy/mosquitto/): a client is who its certificate says, and the CA that issued it says what it is.
 *
 * - A certificate from the device CA (`caFile`) is a car: its CN must be a valid device ID (src/pki/device-id.ts, so
 *   never `backend`), it must connect with its CN as the client ID (any other is refused with "identifier rejected":
 *   one car cannot take over another's session), it publishes only under `vehicles/<CN>/` and subscribes only to its
 *   own commands and certificate.
 * - A certificate from the backend CA (`backendCaFile`) named `backend` is the fleet backend: it reads every vehicle,
 *   sends commands and signed certificates. A device certificate is never the backend, whatever its name.
 * - Anything else is refused at CONNECT (not authorized).
 *
 * aedes speaks MQTT 3.1.1, not 5: the default config's uplink says `"protocol": 4` for this broker.
 *
 * With `signCsr` it is also the fleet's CA service for development: it answers a device's certificate signing request.
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
  /** 0: any free port. */
  port?: number;
  certFile: string;
  keyFile: string;
  /** The device CA: a client certificate from it is a car. */
  caFile: string;
  /** The backend CA: a client certificate from it, named `backend`, is the fleet backend. Without it, no backend. */
  backendCaFile?: string;
  /**
   * The development CA service: a device's signing request on vehicles/<id>/csr is answered on
   * vehicles/<id>/certificate with what this returns (the certificate PEM), so `rotateCertificate` works in the
   * default run. Throws to leave a request unanswered.
   */
  signCsr?: (deviceId: string, csrPem: string) => string;
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

/** Signs a device's request (as the fleet's CA service would) and sends the certificate back, once published. */
function answerCsr(broker: Aedes, deviceId: string, payload: Buffer, sign: (deviceId: string, csrPem: string) => string): void {
  setImmediate(() => {
    let answer: string;
    try {
      const request = JSON.parse(payload.toString('utf8')) as { requestId?: unknown; csr?: unknown };
      if (typeof request.requestId !== 'string' || typeof request.csr !== 'string') return;
      answer = JSON.stringify({ requestId: request.requestId, certificate: sign(deviceId, request.csr) });
    } catch {
      return; // a bad request stays unanswered; the device gives up after its wait
    }
    broker.publish(
      { cmd: 'publish', topic: `vehicles/${deviceId}/certificate`, payload: Buffer.from(answer), qos: 1, retain: false, dup: false },
      () => undefined,
    );
  });
}

export class EmbeddedBroker {
  /** Messages devices published (accepted by the ACL), for the status line. */
  received = 0;
  /** Publishes and subscriptions the rules refused. */
  refused = 0;
  /** Connections refused at CONNECT: a foreign identity, a reserved name, another car's client ID. */
  refusedConnections = 0;

  private constructor(
    private readonly broker: Aedes,
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
  ) {}

  get url(): string {
    return `mqtts://${this.host === '127.0.0.1' ? 'localhost' : this.host}:${this.port}`;
  }

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
          if (identity.role === 'device') {
            if (holder) holder.received++;
            if (options.signCsr && packet.topic === `vehicles/${identity.deviceId}/csr`) {
              answerCsr(broker, identity.deviceId, Buffer.from(packet.payload), options.signCsr);
            }
          }
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
    const server = createServer(
      {
        cert: readFileSync(options.certFile),
        key: readFileSync(options.keyFile),
        // Either CA verifies the chain; which one issued the certificate decides the role (identify()).
        ca: [readFileSync(options.caFile, 'utf8'), ...(backendCaPem !== undefined ? [backendCaPem] : [])],
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
      },
      (socket) => broker.handle(socket),
    );
    // A client that fails the handshake (no or foreign certificate) is its problem, not the broker's.
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, host, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    holder = new EmbeddedBroker(broker, server, host, port);
    return holder;
  }

  /** Disconnects every client, then stops listening. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.broker.close(() => resolve()));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function describe(identity: BrokerIdentity | undefined): string {
  if (identity === undefined) return 'an unauthenticated client';
  return identity.role === 'backend' ? BACKEND_IDENTITY : `device '${identity.deviceId}'`;
}
