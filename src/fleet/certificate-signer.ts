/**
 * The certificate signer as a broker client: what answers the cars' `rotateCertificate` requests. Two users, one
 * code: the development run's signer (src/pki/dev-signer.ts, with the development CA) and the production service
 * `telematics-ops ca-signer` (src/cli/ops-ca-signer.ts, with the CA it is given).
 *
 * It connects as the backend (a certificate from the backend CA) on the broker's backend listener, subscribes to
 * `vehicles/+/csr` at QoS 1, lets SigningPolicy (src/fleet/signing-policy.ts) decide each request, and publishes an
 * issued certificate as `{"requestId", "certificate"}` on `vehicles/<id>/certificate`, QoS 1, not retained (the
 * contract's `certificate` message). A refusal gets no answer.
 *
 * Requests are decided one at a time, in arrival order, from a bounded queue: a flood of requests (a car gone wrong)
 * cannot exhaust memory. What does not fit is dropped and counted, said once per flood (a warning when it starts,
 * the count when the queue has drained); the car's own wait then runs out.
 *
 * Failure: a broker that is down or restarting is waited for: the client reconnects by itself (clean session,
 * subscribing again), and says once that it lost the connection and once that it is back. A subscription the broker
 * refuses (the ACL) is a SignerSubscriptionRefused from start(); later it is an error in the log.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import type { CertificateAnswer } from '../contract/messages.js';
import type { ComponentLog } from '../health/log.js';
import type { SigningPolicy } from './signing-policy.js';

export interface CertificateSignerOptions {
  /** The broker's backend listener. */
  url: string;
  /** MQTT 5, or 4 for a broker that speaks 3.1.1 only (aedes). */
  protocol: 5 | 4;
  /** The backend identity, and the CA that issued the broker's certificate. */
  certFile: string;
  keyFile: string;
  caFile: string;
  policy: SigningPolicy;
  log: Pick<ComponentLog, 'info' | 'warn' | 'error'>;
  /** Client IDs start with this (never a device ID: '/' is not allowed in one). */
  clientIdPrefix: string;
  /** Requests waiting to be decided, at most. Default 64. */
  queueLimit?: number;
  /** How long start() waits for the first subscription before it goes on without (still trying). Default 10 s. */
  connectTimeoutMs?: number;
  /** Wait between reconnection attempts. Default 1 s. */
  reconnectPeriodMs?: number;
}

export class SignerSubscriptionRefused extends Error {
  override readonly name = 'SignerSubscriptionRefused';
}

const CSR_TOPIC = /^vehicles\/([^/#+]+)\/csr$/;
const CSR_FILTER = 'vehicles/+/csr';

export class CertificateSigner {
  /** Requests dropped because the queue was full, since start. */
  dropped = 0;
  private readonly queue: { device: string; payload: Buffer }[] = [];
  private readonly queueLimit: number;
  private draining = false;
  private droppedInFlood = 0;
  private disconnected = false;
  private lastError = '';
  private closed = false;

  private constructor(
    private readonly client: MqttClient,
    private readonly options: CertificateSignerOptions,
  ) {
    this.queueLimit = options.queueLimit ?? 64;
    client.on('message', (topic, payload) => this.receive(topic, payload));
    // Connection trouble is the broker's (down, restarting: the client reconnects), said once per outage.
    client.on('error', (err) => {
      this.lastError = err.message;
    });
    client.on('offline', () => {
      if (this.disconnected || this.closed) return;
      this.disconnected = true;
      options.log.warn(`lost the connection to ${options.url}${this.lastError ? ` (${this.lastError})` : ''}; reconnecting`);
    });
    client.on('connect', () => {
      this.lastError = '';
      if (!this.disconnected) return;
      this.disconnected = false;
      options.log.info(`connected to ${options.url} again; answering ${CSR_FILTER}`);
    });
  }

  /** A signer over a client made elsewhere: start() makes its own; the tests drive the queue through a stand-in. */
  static over(client: MqttClient, options: CertificateSignerOptions): CertificateSigner {
    return new CertificateSigner(client, options);
  }

  get policy(): SigningPolicy {
    return this.options.policy;
  }

  /** Requests waiting now. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Connects and subscribes; resolves once subscribed, or after `connectTimeoutMs` with a warning (it goes on trying).
   * Throws SignerSubscriptionRefused when the broker refuses the subscription.
   */
  static async start(options: CertificateSignerOptions): Promise<CertificateSigner> {
    const client = mqtt.connect(options.url, {
      protocolVersion: options.protocol,
      clientId: `${options.clientIdPrefix}-${randomBytes(4).toString('hex')}`,
      clean: true,
      reconnectPeriod: options.reconnectPeriodMs ?? 1000,
      connectTimeout: 10_000,
      ca: readFileSync(options.caFile),
      cert: readFileSync(options.certFile),
      key: readFileSync(options.keyFile),
      rejectUnauthorized: true,
    });
    const signer = CertificateSigner.over(client, options);
    const subscribed = new Promise<void>((resolve, reject) => {
      client.once('connect', () => {
        // MQTT.js subscribes again by itself after a reconnection.
        client.subscribeAsync(CSR_FILTER, { qos: 1 }).then((granted) => {
          const refused = granted.find((g) => g.qos >= 0x80);
          if (refused)
            reject(new SignerSubscriptionRefused(`the broker does not let the backend read ${refused.topic} (reason 0x${refused.qos.toString(16)})`));
          else resolve();
        }, reject);
      });
    });
    subscribed.catch(() => undefined); // settled after the wait below gave up: already said
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    try {
      await Promise.race([
        subscribed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no connection within ${timeoutMs} ms${signer.lastError ? `: ${signer.lastError}` : ''}`)), timeoutMs);
        }),
      ]);
      options.log.info(`connected to ${options.url}; answering ${CSR_FILTER}`);
    } catch (err) {
      if (err instanceof SignerSubscriptionRefused) {
        await client.endAsync(true);
        throw err;
      }
      signer.disconnected = true;
      options.log.warn(`not connected to ${options.url} (${(err as Error).message}); still trying: rotateCertificate gets no answer until then`);
    } finally {
      clearTimeout(timer);
    }
    return signer;
  }

  private receive(topic: string, payload: Buffer): void {
    const device = CSR_TOPIC.exec(topic)?.[1];
    if (device === undefined || this.closed) return;
    if (this.queue.length >= this.queueLimit) {
      this.dropped++;
      if (this.droppedInFlood++ === 0) {
        this.options.log.warn(`${this.queueLimit} signing requests are waiting: dropping more until they are decided (the cars' waits run out)`);
      }
      return;
    }
    this.queue.push({ device, payload });
    if (!this.draining) {
      this.draining = true;
      setImmediate(() => this.drain());
    }
  }

  /** Decides one request per turn of the event loop, so the connection keeps being served under a flood. */
  private drain(): void {
    const next = this.queue.shift();
    if (next === undefined || this.closed) {
      this.draining = false;
      if (this.droppedInFlood > 0) {
        this.options.log.warn(`dropped ${this.droppedInFlood} signing requests while the queue was full (${this.dropped} since start)`);
        this.droppedInFlood = 0;
      }
      return;
    }
    const decision = this.options.policy.decide(next.device, next.payload);
    if (decision.decision === 'issued') {
      const answer: CertificateAnswer = { requestId: decision.requestId, certificate: decision.certificate };
      this.client.publish(`vehicles/${decision.device}/certificate`, JSON.stringify(answer), { qos: 1, retain: false }, (err) => {
        if (err) this.options.log.warn(`the certificate for '${decision.device}' (request ${decision.requestId}) was not delivered: ${err.message}`);
      });
    }
    setImmediate(() => this.drain());
  }

  /**
   * A clean DISCONNECT, or the connection dropped when the broker does not answer within `graceMs`. What is still
   * queued is left undecided (those cars' waits run out).
   */
  async close(graceMs = 250): Promise<void> {
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      this.client.endAsync(false).then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (!ended) await this.client.endAsync(true);
  }
}
