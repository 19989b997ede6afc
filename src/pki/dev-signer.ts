/**
 * The development CA service of the default run: what answers a car's `rotateCertificate` request when the broker is
 * the development one (mosquitto or aedes, src/agent/development-broker.ts). It is the production signer
 * (src/fleet/certificate-signer.ts, `telematics-ops ca-signer`) with the development CA, the same checks and the same
 * answer, and three differences for a developer's laptop: its memory of issued keys lives in the process, it does
 * not pace rotations (a developer rotates as often as they like), and it keeps no audit file (its log says each
 * decision).
 *
 * Failure: a request that fails a check is left unanswered (the car gives up after its wait and keeps its identity)
 * and reported as a warning naming the device and the reason. A broker that is down is waited for: the client
 * reconnects by itself and subscribes again; a subscription the broker refuses is a warning too (the run goes on
 * without rotation).
 */
import { CertificateSigner, SignerSubscriptionRefused } from '../fleet/certificate-signer.js';
import { IssuedKeys } from '../fleet/issued-keys.js';
import { SigningPolicy, VALIDITY_DAYS } from '../fleet/signing-policy.js';
import { loadSigningCa } from './certificate-authority.js';
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
  /** Where its lines go; its connection, which the broker's own start line already implies, at debug. */
  report?: (line: string, level: 'debug' | 'info' | 'warn') => void;
  /** How long start() waits for the first subscription before it goes on without (reconnecting). Default 10 s. */
  connectTimeoutMs?: number;
}

export class DevSigner {
  private constructor(
    private readonly policy: SigningPolicy,
    /** None when the broker refused the subscription. */
    private readonly signer: CertificateSigner | undefined,
    private readonly issuedKeys: IssuedKeys,
  ) {}

  /** Certificates issued and requests refused. */
  get signed(): number {
    return this.policy.issued;
  }

  get refused(): number {
    return this.policy.refused;
  }

  /**
   * Connects and subscribes; resolves once subscribed, or after `connectTimeoutMs` with a warning (it goes on trying:
   * a request that comes before it is subscribed goes unanswered).
   */
  static async start(options: DevSignerOptions): Promise<DevSigner> {
    const report = options.report ?? (() => undefined);
    // Every line says which signer speaks: the agent's `broker` log carries the development broker's lines too.
    const say = (level: 'debug' | 'info' | 'warn') => (msg: string) => report(`broker: the development certificate signer ${msg}`, level);
    // Its first connection is part of the run's start, which the broker's line says: debug, not one more start line.
    const log = { info: (msg: string) => say(msg.startsWith('connected to ') ? 'debug' : 'info')(msg), warn: say('warn'), error: say('warn') };
    const issuedKeys = IssuedKeys.inMemory();
    const ca = loadSigningCa(options.ca.certPem, options.ca.keyPem, { cert: 'the development CA', key: 'the development CA key' });
    const policy = new SigningPolicy({ ca, issuedKeys, log, validityDays: VALIDITY_DAYS.max, minIntervalMs: 0 });
    let signer: CertificateSigner | undefined;
    try {
      signer = await CertificateSigner.start({
        url: options.url,
        protocol: options.protocol,
        certFile: options.certFile,
        keyFile: options.keyFile,
        caFile: options.caFile,
        policy,
        log,
        clientIdPrefix: 'backend/dev-signer',
        ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
      });
    } catch (err) {
      if (!(err instanceof SignerSubscriptionRefused)) {
        issuedKeys.close();
        throw err;
      }
      log.warn(`is not subscribed (${err.message}); rotateCertificate gets no answer`);
    }
    return new DevSigner(policy, signer, issuedKeys);
  }

  /**
   * A clean DISCONNECT, or the connection dropped when the broker does not answer within 250 ms: it is closed in the
   * agent's stop, after the car's session (up to 3 s against a hung broker) and before the broker (up to 1 s), all
   * within the 4.5 s the stop has.
   */
  async close(): Promise<void> {
    await this.signer?.close(250);
    this.issuedKeys.close();
  }
}
