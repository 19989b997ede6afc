/**
 * The development CA service of the default run: what answers a car's `rotateCertificate` request when the broker is
 * the development one (mosquitto or aedes, src/agent/development-broker.ts). It is also the model of what a
 * production backend signer does (docs/commands.md, "Who signs the request"):
 *
 * 1. It connects as the backend (the backend CA's `backend` certificate) on the broker's backend listener and
 *    subscribes to `vehicles/+/csr` at QoS 1. The broker lets only car `<id>` publish on `vehicles/<id>/csr`, so the
 *    topic tells who asks.
 * 2. It checks the request: JSON with a `requestId` and a `csr`; the topic's `<id>`, the payload's `deviceId` and the
 *    CSR's subject CN are the same device ID; the CSR is signed by the key it carries (signDeviceCsr, src/pki/csr.ts).
 * 3. It issues a device certificate for that key from the development CA and publishes
 *    `{"requestId", "certificate"}` on `vehicles/<id>/certificate`, QoS 1, not retained.
 *
 * Failure: a request that fails a check is left unanswered (the car gives up after its wait and keeps its identity)
 * and reported as a warning naming the topic and the reason. A broker that is down is waited for: the client
 * reconnects by itself and subscribes again.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { signDeviceCsr } from './csr.js';
import type { DevCa } from './dev-ca.js';

export interface DevSignerOptions {
  /** The broker's backend listener. */
  url: string;
  /** MQTT 5, or 4 for a broker that speaks 3.1.1 only (aedes). */
  protocol: 5 | 4;
  /** The backend identity (the backend CA's `backend`), and the CA that issued the broker's certificate. */
  certFile: string;
  keyFile: string;
  caFile: string;
  /** The development CA that signs. */
  ca: DevCa;
  report?: (line: string, level: 'info' | 'warn') => void;
  /** How long start() waits for the first subscription before it goes on without (reconnecting). Default 10 s. */
  connectTimeoutMs?: number;
}

const CSR_TOPIC = /^vehicles\/([^/#+]+)\/csr$/;

export class DevSigner {
  /** Certificates issued and requests refused. */
  signed = 0;
  refused = 0;

  private constructor(
    private readonly client: MqttClient,
    private readonly options: DevSignerOptions,
  ) {
    client.on('message', (topic, payload) => this.answer(topic, payload));
  }

  /**
   * Connects and subscribes; resolves once subscribed, or after `connectTimeoutMs` with a warning (it goes on trying:
   * a request that comes before it is subscribed goes unanswered).
   */
  static async start(options: DevSignerOptions): Promise<DevSigner> {
    const report = options.report ?? (() => undefined);
    const client = mqtt.connect(options.url, {
      protocolVersion: options.protocol,
      // Never a device ID ('/' is not allowed in one).
      clientId: `backend/dev-signer-${randomBytes(4).toString('hex')}`,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      ca: readFileSync(options.caFile),
      cert: readFileSync(options.certFile),
      key: readFileSync(options.keyFile),
      rejectUnauthorized: true,
    });
    const signer = new DevSigner(client, options);
    // Connection trouble is the broker's (down, restarting: the client reconnects), said once below if it lasts.
    client.on('error', () => undefined);
    const subscribed = new Promise<void>((resolve, reject) => {
      client.once('connect', () => {
        // MQTT.js subscribes again by itself after a reconnection.
        client.subscribeAsync('vehicles/+/csr', { qos: 1 }).then((granted) => {
          const refused = granted.find((g) => g.qos >= 0x80);
          if (refused) reject(new Error(`the broker does not let the backend read ${refused.topic} (reason 0x${refused.qos.toString(16)})`));
          else resolve();
        }, reject);
      });
      client.once('error', reject);
    });
    subscribed.catch(() => undefined); // settled after the wait below gave up: already said
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    try {
      await Promise.race([
        subscribed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      report(
        `broker: the development certificate signer is not connected to ${options.url} (${(err as Error).message}); rotateCertificate gets no answer until it is`,
        'warn',
      );
    } finally {
      clearTimeout(timer);
    }
    return signer;
  }

  private answer(topic: string, payload: Buffer): void {
    const deviceId = CSR_TOPIC.exec(topic)?.[1];
    if (deviceId === undefined) return;
    const report = this.options.report ?? (() => undefined);
    let answer: string;
    try {
      const request = JSON.parse(payload.toString('utf8')) as { requestId?: unknown; deviceId?: unknown; csr?: unknown };
      if (typeof request !== 'object' || request === null) throw new Error('not a JSON object');
      if (typeof request.requestId !== 'string' || request.requestId === '') throw new Error('no requestId');
      if (typeof request.csr !== 'string') throw new Error('no csr');
      if (request.deviceId !== deviceId) throw new Error(`its deviceId ${JSON.stringify(request.deviceId)} is not the topic's '${deviceId}'`);
      // The CSR's CN must be the device too, and its signature must verify.
      answer = JSON.stringify({ requestId: request.requestId, certificate: signDeviceCsr(this.options.ca, request.csr, { deviceId }) });
    } catch (err) {
      this.refused++;
      report(`broker: the development CA did not sign the request on ${topic}: ${(err as Error).message}`, 'warn');
      return;
    }
    this.client.publish(`vehicles/${deviceId}/certificate`, answer, { qos: 1, retain: false }, (err) => {
      if (err) report(`broker: the certificate for '${deviceId}' was not delivered: ${err.message}`, 'warn');
    });
    this.signed++;
    report(`broker: the development CA signed a new certificate for '${deviceId}'`, 'info');
  }

  /**
   * A clean DISCONNECT, or the connection dropped when the broker does not answer within 250 ms: it is closed in the
   * agent's stop, after the car's session (up to 3 s against a hung broker) and before the broker (up to 1 s), all
   * within the 4.5 s the stop has.
   */
  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      this.client.endAsync(false).then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), 250);
      }),
    ]);
    clearTimeout(timer);
    if (!ended) await this.client.endAsync(true);
  }
}
