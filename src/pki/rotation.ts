/**
 * Certificate rotation, as the `rotateCertificate` command runs it. The new key is made on the car and never leaves
 * it. Only the signing request goes to the backend, on `vehicles/<id>/csr`. The signed certificate comes back on
 * `vehicles/<id>/certificate`, answering the request's ID. The car checks the certificate before it uses it: it must
 * be issued by the pinned CA, carry the new key, name this device, be valid now and allow client authentication, and
 * its chain must pass the chain check of the start (identity.ts, certificate-chain.ts: path lengths, keyCertSign, no
 * SHA-1 or MD5 signature...). Then the car swaps the files (src/pki/identity-files.ts) and reconnects with the new pair. If the broker does not
 * take the new pair, the car puts the old one back and reconnects with it.
 *
 * Message formats (JSON):
 *   car → backend  vehicles/<id>/csr          { "requestId", "deviceId", "csr": "<PEM>", "ts" }
 *   backend → car  vehicles/<id>/certificate  { "requestId", "certificate": "<PEM, leaf first, then intermediates>" }
 *
 * node-forge (the key and the CSR, src/pki/csr.ts) is loaded when a rotation starts, not with the agent: a car
 * rotates once a year or so, and the library is a large part of the start-up module graph.
 */
import { IdentityError, loadIdentity, type DeviceIdentity, type IdentityFiles } from './identity.js';
import { commitIdentity, discardStaged, repairIdentityFiles, rollbackIdentity, stageIdentity, swapIdentity } from './identity-files.js';

/** What rotation needs of the MQTT session (src/uplink/session.ts implements it). */
export interface RotationLink {
  readonly currentIdentity: DeviceIdentity;
  publish(topic: string, payload: string, options: { qos: 1 }): Promise<void>;
  watch(topic: string, listener: (payload: Buffer) => void): Promise<() => Promise<void>>;
  reconnectWith(identity: DeviceIdentity, timeoutMs?: number): Promise<void>;
}

export type RotationFailureReason =
  /** Another rotation is running. */
  | 'busy'
  /** The signing request could not be sent (not connected, refused by the broker). */
  | 'not-sent'
  /** No certificate for the request within the wait. */
  | 'no-certificate'
  /** The certificate that came back fails a check; nothing was changed. */
  | 'bad-certificate'
  /** The files could not be written; nothing was changed. */
  | 'storage'
  /** The broker did not take the new pair; the old one is back in use. */
  | 'rolled-back';

export class RotationFailure extends Error {
  constructor(
    readonly reason: RotationFailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'RotationFailure';
  }
}

export interface RotationOptions {
  deviceId: string;
  /**
   * The live identity files (absolute) and the CA a new certificate must be issued by: issuerFile when the device
   * certificates have their own CA, else caFile (as the agent checks its identity at start).
   */
  files: { certFile: string; keyFile: string; caFile: string; issuerFile?: string };
  link: RotationLink;
  /** Ties the answer to the request (the command ID). */
  requestId: string;
  /** How long to wait for the signed certificate. */
  waitMs: number;
  /** How long the new pair has to connect before it is rolled back. Default 20 s. */
  connectTimeoutMs?: number;
  /** Aborts the wait for the certificate (the command's timeout); after the swap the rotation finishes by itself. */
  signal?: AbortSignal;
  progress?: (step: 'csr-sent' | 'certificate-received' | 'reconnecting', detail?: Record<string, unknown>) => void;
}

export interface RotationOutcome {
  previous: CertificateSummary;
  current: CertificateSummary;
}

export interface CertificateSummary {
  fingerprint256: string;
  notAfter: string;
  daysLeft: number;
}

const running = new Set<string>();

export async function rotateCertificate(options: RotationOptions): Promise<RotationOutcome> {
  const { deviceId, files, link } = options;
  if (running.has(files.certFile)) throw new RotationFailure('busy', 'a certificate rotation is already running');
  if (options.signal?.aborted) throw new RotationFailure('no-certificate', 'stopped before the request was sent; nothing was changed');
  running.add(files.certFile);
  // The checks the agent makes at start: a pair that passes here also passes there.
  const checked = (pair: { certFile: string; keyFile: string }): IdentityFiles => ({ ...files, ...pair, requireIssuer: true });
  try {
    const previous = summary(link.currentIdentity);
    const { createCsr, createDeviceKey } = await import('./csr.js');
    const keyPem = createDeviceKey();
    const certPem = await requestCertificate(options, createCsr(deviceId, keyPem));
    options.progress?.('certificate-received');

    let staged: { certFile: string; keyFile: string };
    try {
      staged = stageIdentity(files, certPem, keyPem);
    } catch (err) {
      discardStaged(files);
      throw new RotationFailure('storage', `the new certificate and key cannot be written beside ${files.certFile}: ${(err as Error).message}`);
    }
    try {
      const candidate = loadIdentity(checked(staged));
      if (candidate.commonName !== deviceId)
        throw new RotationFailure('bad-certificate', `the certificate is for '${candidate.commonName}', not for this device '${deviceId}'`);
    } catch (err) {
      discardStaged(files);
      if (err instanceof RotationFailure) throw err;
      // loadIdentity names the staged file; the operator needs to know what was wrong with the certificate.
      const why =
        err instanceof IdentityError && err.problem === 'mismatch' ? 'it does not carry the key this car made for the request' : (err as Error).message;
      throw new RotationFailure('bad-certificate', `the certificate that came back is refused: ${why}`);
    }

    try {
      swapIdentity(files);
    } catch (err) {
      // Stopped part-way: the pair in place is made whole again (the previous one), what is left staged removed.
      repairIdentityFiles(files);
      discardStaged(files);
      throw new RotationFailure('storage', `the new pair cannot be put in place at ${files.certFile}: ${(err as Error).message}`);
    }
    options.progress?.('reconnecting');
    let fresh: DeviceIdentity;
    try {
      fresh = loadIdentity(checked(files));
      await link.reconnectWith(fresh, options.connectTimeoutMs ?? 20_000);
    } catch (err) {
      rollbackIdentity(files);
      // The session keeps trying until it is connected again; the command's result waits in the outbox meanwhile.
      link.reconnectWith(loadIdentity(checked(files))).catch(() => undefined);
      throw new RotationFailure('rolled-back', `the broker did not accept the new certificate (${(err as Error).message}); the previous one is back in use`);
    }
    commitIdentity(files);
    return { previous, current: summary(fresh) };
  } finally {
    running.delete(files.certFile);
  }
}

/** Sends the CSR and waits for the certificate answering it; the command's abort ends any step of that. */
async function requestCertificate(options: RotationOptions, csrPem: string): Promise<string> {
  const { deviceId, link, requestId, signal } = options;
  let answer: (pem: string) => void = () => undefined;
  const answered = new Promise<string>((resolve) => (answer = resolve));
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  // Armed before the first await, so an abort during the subscription or the publish is not missed.
  const givenUp = new Promise<never>((_, reject) => {
    onAbort = () =>
      reject(new RotationFailure('no-certificate', `stopped waiting for the certificate (${String(signal?.reason ?? 'aborted')}); nothing was changed`));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  givenUp.catch(() => undefined); // observed by the races below; never an unhandled rejection
  const watching = link.watch(`vehicles/${deviceId}/certificate`, (payload) => {
    const pem = certificateFor(payload, requestId);
    if (pem !== undefined) answer(pem);
  });
  try {
    try {
      await Promise.race([watching, givenUp]);
    } catch (err) {
      if (err instanceof RotationFailure) throw err;
      throw new RotationFailure('not-sent', `cannot listen for the certificate: ${(err as Error).message}`);
    }
    const request = JSON.stringify({ requestId, deviceId, csr: csrPem, ts: Date.now() });
    try {
      await Promise.race([link.publish(`vehicles/${deviceId}/csr`, request, { qos: 1 }), givenUp]);
    } catch (err) {
      if (err instanceof RotationFailure) throw err;
      throw new RotationFailure('not-sent', `the signing request was not sent: ${(err as Error).message}`);
    }
    options.progress?.('csr-sent', { topic: `vehicles/${deviceId}/csr` });
    const waitS = Math.round(options.waitMs / 1000);
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new RotationFailure('no-certificate', `no certificate for request ${requestId} within ${waitS} s; nothing was changed`)),
        options.waitMs,
      );
    });
    return await Promise.race([answered, givenUp, timedOut]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    // Also a watch still being set up when the abort won the race: stopped once it is.
    await watching.then(
      (stop) => stop(),
      () => undefined,
    );
  }
}

/** The certificate PEM in an answer to `requestId`; undefined for anything else (another request, garbage). */
function certificateFor(payload: Buffer, requestId: string): string | undefined {
  try {
    const message = JSON.parse(payload.toString('utf8')) as { requestId?: unknown; certificate?: unknown };
    if (message.requestId !== requestId || typeof message.certificate !== 'string') return undefined;
    return message.certificate.length <= 65_536 ? message.certificate : undefined;
  } catch {
    return undefined;
  }
}

export function summary(identity: Pick<DeviceIdentity, 'fingerprint256' | 'notAfter'>, now = Date.now()): CertificateSummary {
  return {
    fingerprint256: identity.fingerprint256,
    notAfter: identity.notAfter.toISOString(),
    daysLeft: Math.floor((identity.notAfter.getTime() - now) / 86_400_000),
  };
}
