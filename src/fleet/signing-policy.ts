/**
 * What the certificate signer decides about one request on `vehicles/<id>/csr`: issue a certificate or refuse, and
 * why. The checks, in order (the first that fails is the reason):
 *
 *   malformed        not the contract's `csr` message (src/contract/messages.ts), or not a decodable PKCS#10 request
 *   device-mismatch  the payload's deviceId or the request's CN is not the topic's device. The broker's ACL lets only
 *                    car <id> publish on vehicles/<id>/csr, so the topic is the authenticated identity.
 *   bad-signature    the request is not signed (with SHA-2) by the key it carries
 *   weak-key         not RSA of at least 2048 bits, nor EC on P-256 or P-384
 *   key-reused       this signer has certified the key before (for any device), under another request
 *   too-soon         the device got a certificate less than the minimum interval ago
 *   ca-expired       the CA cannot issue anything that would be valid now
 *   not-recorded     the registry or the audit log could not be written: nothing leaves unrecorded
 *   internal         anything else that went wrong (a defect: logged as an error)
 *
 * A request repeated with the same requestId and the same key (an answer lost, the car's QoS 1 resend) gets the
 * certificate issued the first time, so a lost answer is not a refusal. A certificate is valid from an hour ago (a
 * car's clock a little behind) for the configured days, never beyond the CA's own notAfter; its serial is random.
 *
 * Each decision is one audit record (when there is an audit log) and one log line: info for an issue, warn for a
 * refusal. A refusal is never answered on the car's topic: the car learns nothing beyond its own wait running out.
 */
import { z } from 'zod';
import { certificateRequestSchema } from '../contract/messages.js';
import type { ComponentLog } from '../health/log.js';
import { CertificateAuthorityError, issueDeviceCertificate, type SigningCa } from '../pki/certificate-authority.js';
import { MAX_REQUEST_PEM, readSigningRequest, SigningRequestError, type RequestKey, type SigningRequest } from '../pki/signing-request.js';
import type { IssuedKeys } from './issued-keys.js';
import type { AuditRecord, SignerAudit } from './signer-audit.js';

export type RefusalReason =
  'malformed' | 'device-mismatch' | 'bad-signature' | 'weak-key' | 'key-reused' | 'too-soon' | 'ca-expired' | 'not-recorded' | 'internal';

/** `--validity-days`: 90 by default, at most 825 (what browsers accept for a leaf, the development CA's own). */
export const VALIDITY_DAYS = { default: 90, max: 825 } as const;
/** `--min-interval`: one certificate per device per hour by default. */
export const DEFAULT_MIN_INTERVAL_S = 3600;
/** How far before now a certificate starts: a car's clock a little behind the CA's still accepts it. */
const BACKDATE_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** A request's largest payload: its PEM (src/pki/signing-request.ts) and a few short fields. */
export const MAX_REQUEST_BYTES = MAX_REQUEST_PEM + 1024;

export interface SigningPolicyOptions {
  ca: SigningCa;
  issuedKeys: IssuedKeys;
  /** Every decision, one line each; none for the development run (its log says it). */
  audit?: SignerAudit;
  log: Pick<ComponentLog, 'info' | 'warn' | 'error'>;
  validityDays: number;
  /** 0: no pacing (the development run). */
  minIntervalMs: number;
  now?: () => number;
}

export type SigningDecision =
  | {
      decision: 'issued';
      device: string;
      requestId: string;
      reason: 'new' | 'repeat';
      certificate: string;
      serial: string;
      notBefore: string;
      notAfter: string;
      keyFingerprint: string;
    }
  | { decision: 'refused'; device: string; requestId: string | null; reason: RefusalReason; detail: string; keyFingerprint: string | null };

class Refusal extends Error {
  constructor(
    readonly reason: RefusalReason,
    message: string,
    readonly keyFingerprint: string | null = null,
  ) {
    super(message);
  }
}

export class SigningPolicy {
  /** Certificates issued (repeats included) and requests refused since start. */
  issued = 0;
  refused = 0;
  private readonly now: () => number;

  constructor(private readonly options: SigningPolicyOptions) {
    if (!Number.isInteger(options.validityDays) || options.validityDays < 1 || options.validityDays > VALIDITY_DAYS.max) {
      throw new RangeError(`the validity must be 1-${VALIDITY_DAYS.max} days, not ${options.validityDays}`);
    }
    this.now = options.now ?? Date.now;
  }

  /** Decides the request `payload` that `device` (the topic's) sent; records and logs the decision. */
  decide(device: string, payload: Buffer): SigningDecision {
    let requestId: string | null = null;
    let decision: SigningDecision;
    try {
      const message = parseRequest(payload);
      requestId = message.requestId;
      decision = this.issue(device, message.requestId, message.deviceId, message.csr);
    } catch (err) {
      const refusal = err instanceof Refusal ? err : new Refusal('internal', (err as Error).message);
      decision = { decision: 'refused', device, requestId, reason: refusal.reason, detail: refusal.message, keyFingerprint: refusal.keyFingerprint };
      // A refusal that cannot be audited is still a refusal: said as an error below.
      try {
        this.options.audit?.append(auditRecord(decision, this.now()));
      } catch (auditErr) {
        this.options.log.error(`the audit log ${this.options.audit?.file ?? ''} cannot be written: ${(auditErr as Error).message}`);
      }
    }
    this.report(decision);
    return decision;
  }

  private issue(device: string, requestId: string, payloadDevice: string, csrPem: string): SigningDecision {
    if (payloadDevice !== device) throw new Refusal('device-mismatch', `the request's deviceId '${payloadDevice}' is not the sender's '${device}'`);
    let request: SigningRequest;
    try {
      request = readSigningRequest(csrPem);
    } catch (err) {
      if (err instanceof SigningRequestError) throw new Refusal(err.problem, err.message);
      throw err;
    }
    const fingerprint = request.key.fingerprint;
    if (request.commonName !== device) {
      throw new Refusal('device-mismatch', `the signing request names '${request.commonName}', not the sender '${device}'`, fingerprint);
    }
    const weak = keyProblem(request.key);
    if (weak !== null) throw new Refusal('weak-key', weak, fingerprint);

    const { issuedKeys, ca } = this.options;
    const earlier = issuedKeys.find(fingerprint);
    if (earlier) {
      if (earlier.deviceId === device && earlier.requestId === requestId) {
        const repeat = { decision: 'issued', device, requestId, reason: 'repeat', certificate: earlier.certificate, serial: earlier.serial } as const;
        const decision = { ...repeat, notBefore: earlier.notBefore, notAfter: earlier.notAfter, keyFingerprint: fingerprint };
        this.record(() => this.options.audit?.append(auditRecord(decision, this.now())));
        return decision;
      }
      throw new Refusal(
        'key-reused',
        `the key was certified before (serial ${earlier.serial}, request ${earlier.requestId}): a rotation needs a new key`,
        fingerprint,
      );
    }
    const now = this.now();
    const last = issuedKeys.lastIssuedAt(device);
    if (last !== undefined && this.options.minIntervalMs > 0 && now - last < this.options.minIntervalMs) {
      const waitS = Math.ceil((this.options.minIntervalMs - (now - last)) / 1000);
      throw new Refusal(
        'too-soon',
        `'${device}' got a certificate ${Math.floor((now - last) / 1000)} s ago; the next one in ${waitS} s at the earliest`,
        fingerprint,
      );
    }
    if (ca.notAfter.getTime() <= now) throw new Refusal('ca-expired', `the CA '${ca.commonName}' expired on ${ca.notAfter.toISOString()}`, fingerprint);
    let issued;
    try {
      issued = issueDeviceCertificate(ca, request, device, {
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(now + this.options.validityDays * DAY_MS),
      });
    } catch (err) {
      if (err instanceof CertificateAuthorityError) throw new Refusal('ca-expired', err.message, fingerprint);
      throw err;
    }
    const decision = {
      decision: 'issued',
      device,
      requestId,
      reason: 'new',
      certificate: issued.certPem,
      serial: issued.serial,
      notBefore: issued.notBefore.toISOString(),
      notAfter: issued.notAfter.toISOString(),
      keyFingerprint: fingerprint,
    } as const;
    this.record(() =>
      issuedKeys.record(
        {
          fingerprint,
          deviceId: device,
          requestId,
          serial: issued.serial,
          notBefore: decision.notBefore,
          notAfter: decision.notAfter,
          issuedAt: now,
          certificate: issued.certPem,
        },
        () => this.options.audit?.append(auditRecord(decision, now)),
      ),
    );
    return decision;
  }

  /** Runs the recording step; a failure there is a refusal (`not-recorded`): nothing leaves unrecorded. */
  private record(step: () => void): void {
    try {
      step();
    } catch (err) {
      throw new Refusal('not-recorded', `the decision could not be recorded, so no certificate is sent: ${(err as Error).message}`);
    }
  }

  private report(decision: SigningDecision): void {
    const request = decision.requestId === null ? '' : ` (request ${decision.requestId})`;
    if (decision.decision === 'issued') {
      this.issued++;
      const what = decision.reason === 'repeat' ? 'sent again the certificate' : 'issued a certificate';
      this.options.log.info(`${what} for '${decision.device}'${request}, serial ${decision.serial}, valid until ${decision.notAfter}`, {
        device: decision.device,
        serial: decision.serial,
      });
    } else {
      this.refused++;
      const level = decision.reason === 'not-recorded' || decision.reason === 'internal' ? 'error' : 'warn';
      this.options.log[level](`refused the signing request from '${decision.device}'${request}: ${decision.reason}: ${decision.detail}`, {
        device: decision.device,
        reason: decision.reason,
      });
    }
  }
}

/** The contract's `csr` message, or a `malformed` refusal saying what is wrong with it. */
function parseRequest(payload: Buffer): z.output<typeof certificateRequestSchema> {
  if (payload.length > MAX_REQUEST_BYTES) throw new Refusal('malformed', `the request is ${payload.length} bytes, more than ${MAX_REQUEST_BYTES}`);
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new Refusal('malformed', 'the request is not JSON');
  }
  const parsed = certificateRequestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Refusal(
      'malformed',
      `the request is not the contract's csr message (${issue ? `${issue.path.join('.') || 'the message'}: ${issue.message}` : 'invalid'})`,
    );
  }
  return parsed.data;
}

/** Why a key is not acceptable, or null. */
export function keyProblem(key: RequestKey): string | null {
  if (key.type === 'rsa') return (key.bits ?? 0) >= 2048 ? null : `an RSA key of ${key.bits ?? 0} bits (at least 2048 are needed)`;
  if (key.type === 'ec')
    return key.curve === 'prime256v1' || key.curve === 'secp384r1' ? null : `an EC key on ${key.curve ?? 'an unnamed curve'} (P-256 or P-384 only)`;
  return `a ${key.type} key (RSA of at least 2048 bits or EC on P-256 or P-384 only)`;
}

function auditRecord(decision: SigningDecision, now: number): AuditRecord {
  const issued = decision.decision === 'issued';
  return {
    ts: new Date(now).toISOString(),
    device: decision.device,
    requestId: decision.requestId,
    decision: decision.decision,
    reason: decision.reason,
    detail: issued ? (decision.reason === 'repeat' ? 'the same certificate sent again for a repeated request' : 'a new certificate') : decision.detail,
    serial: issued ? decision.serial : null,
    notBefore: issued ? decision.notBefore : null,
    notAfter: issued ? decision.notAfter : null,
    keyFingerprint: decision.keyFingerprint,
  };
}
