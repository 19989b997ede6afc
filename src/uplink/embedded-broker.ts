/**
 * The MQTT broker the default run starts in-process, so `npm start` shows the whole data path without a backend:
 * aedes behind a TLS server that demands a client certificate from its CA, with the rules a production broker
 * would apply (mosquitto's `use_identity_as_username` and a per-device ACL): a client is the CN of its certificate,
 * a device may publish only under `vehicles/<CN>/` and subscribe only to its own commands; the identity `backend`
 * may read everything and send commands.
 *
 * aedes speaks MQTT 3.1.1, not 5: the default config's uplink says `"protocol": 4` for this broker.
 *
 * With `signCsr` it is also the fleet's CA service for development: it answers a device's certificate signing request.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { Aedes, type AuthenticateError, type Client } from 'aedes';

export interface EmbeddedBrokerOptions {
  /** Loopback by default: the broker is for this machine. */
  host?: string;
  /** 0: any free port. */
  port?: number;
  certFile: string;
  keyFile: string;
  /** Client certificates must chain to this CA. */
  caFile: string;
  /**
   * The development CA service: a device's signing request on vehicles/<id>/csr is answered on
   * vehicles/<id>/certificate with what this returns (the certificate PEM), so `rotateCertificate` works in the
   * default run. Throws to leave a request unanswered.
   */
  signCsr?: (deviceId: string, csrPem: string) => string;
}

/** The identity allowed to read every vehicle and to send commands. */
export const BACKEND_IDENTITY = 'backend';

function identityOf(client: Client | null): string | null {
  const socket = client?.conn as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== 'function') return null;
  const cn = socket.getPeerCertificate().subject?.CN;
  return typeof cn === 'string' && cn !== '' ? cn : null;
}

/**
 * Whether `identity` may publish to `topic`. The backend: commands, one level below `commands/` (it cannot forge a
 * car's results), and signed certificates. A device: its own data topics, its command results
 * (`commands/<id>/result`) and MQTT 5 response topics under `results/`; never a command or its own certificate.
 */
export function mayPublish(identity: string, topic: string): boolean {
  if (identity === BACKEND_IDENTITY) return /^vehicles\/[^/#+]+\/(commands\/[^/#+]+|certificate)$/.test(topic);
  const own = `vehicles/${identity}/`;
  if (!topic.startsWith(own)) return false;
  const rest = topic.slice(own.length);
  if (rest.startsWith('commands/')) return /^commands\/[^/#+]+\/result$/.test(rest);
  return rest !== 'commands' && rest !== 'certificate';
}

/**
 * Whether `identity` may subscribe to `filter`: the backend to anything under vehicles/, a device to its commands
 * and to the certificate the backend signs for it.
 */
export function maySubscribe(identity: string, filter: string): boolean {
  if (identity === BACKEND_IDENTITY) return filter === 'vehicles/#' || filter.startsWith('vehicles/');
  if (filter === `vehicles/${identity}/certificate`) return true;
  const commands = `vehicles/${identity}/commands/`;
  return filter === `${commands}+` || (filter.startsWith(commands) && /^[^/#+]+$/.test(filter.slice(commands.length)));
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
    broker.publish({ cmd: 'publish', topic: `vehicles/${deviceId}/certificate`, payload: Buffer.from(answer), qos: 1, retain: false, dup: false }, () => undefined);
  });
}

export class EmbeddedBroker {
  /** Messages devices published (accepted by the ACL), for the status line. */
  received = 0;
  refused = 0;

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
    let holder: EmbeddedBroker | null = null;
    const broker = await Aedes.createBroker({
      // The certificate is the identity: a client without one never gets here (the TLS server refuses it).
      authenticate: (client, _username, _password, done) => {
        const identity = identityOf(client);
        if (identity === null) {
          const err = new Error('no client certificate identity') as AuthenticateError;
          err.returnCode = 5;
          done(err, false);
          return;
        }
        done(null, true);
      },
      authorizePublish: (client, packet, callback) => {
        const identity = identityOf(client);
        if (identity !== null && mayPublish(identity, packet.topic)) {
          if (holder && identity !== BACKEND_IDENTITY) holder.received++;
          callback(null);
          if (options.signCsr && identity !== BACKEND_IDENTITY && packet.topic === `vehicles/${identity}/csr`) {
            answerCsr(broker, identity, Buffer.from(packet.payload), options.signCsr);
          }
          return;
        }
        if (holder) holder.refused++;
        callback(new Error(`${identity ?? 'anonymous'} may not publish to ${packet.topic}`));
      },
      authorizeSubscribe: (client, subscription, callback) => {
        const identity = identityOf(client);
        if (identity !== null && maySubscribe(identity, subscription.topic)) callback(null, subscription);
        else callback(new Error(`${identity ?? 'anonymous'} may not subscribe to ${subscription.topic}`), null);
      },
    });
    const server = createServer(
      {
        cert: readFileSync(options.certFile),
        key: readFileSync(options.keyFile),
        ca: readFileSync(options.caFile),
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
