/**
 * The second fence (the broker's ACL is the first): a command runs only when signed by a key whose certificate
 * chains to the command CA pinned in the device config. A broker account that is compromised, or a backend that is,
 * can publish on the command topic but cannot sign.
 *
 * The signer's certificate must be within its validity, not a CA, carry the extended key usage code signing
 * (1.3.6.1.5.5.7.3.3: a TLS client certificate from the same CA cannot sign commands) and, when it has a key usage,
 * digitalSignature. Intermediates given after it in the `signer` PEM must be CAs within their validity. The chain
 * must end at a pinned CA, itself within its validity. Node's X509Certificate and crypto.verify do the cryptography.
 */
import { constants, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ParsedCommand } from './envelope.js';

export type VerifyReason = 'no-signature' | 'bad-signature' | 'untrusted-signer';

export class VerifyFailure extends Error {
  constructor(
    readonly reason: VerifyReason,
    message: string,
  ) {
    super(message);
    this.name = 'VerifyFailure';
  }
}

const CODE_SIGNING = '1.3.6.1.5.5.7.3.3';
const MAX_CHAIN = 4;
/** Verified signer PEMs kept, so a stream of commands from the same operator checks the chain once. */
const CACHE_SIZE = 32;

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM text, in order; throws when there are none or one does not parse. */
export function readCertificates(pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) throw new Error(`${what} holds no PEM certificate`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new Error(`${what}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

interface VerifiedSigner {
  key: KeyObject;
  subject: string;
  /** The intersection of the validities of the chain, unix ms. */
  notBefore: number;
  notAfter: number;
}

export interface SignerInfo {
  /** The operator certificate's subject, e.g. `CN=alice`. */
  subject: string;
  fingerprint256: string;
}

export class CommandVerifier {
  private readonly cas: X509Certificate[];
  private readonly cache = new Map<string, VerifiedSigner & { fingerprint256: string }>();

  constructor(
    caPem: string,
    private readonly now: () => number = Date.now,
    what = 'the command CA',
  ) {
    this.cas = readCertificates(caPem, what);
    for (const ca of this.cas) {
      if (!ca.ca) throw new Error(`${what}: ${ca.subject} is not a CA certificate (basicConstraints CA:FALSE)`);
    }
  }

  /** Reads the pinned CA(s) from `file`; the error names the file. */
  static fromFile(file: string, now?: () => number): CommandVerifier {
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Error(`commands.caFile: cannot read ${file}: ${code === 'ENOENT' ? 'file not found' : (err as Error).message}`);
    }
    return new CommandVerifier(pem, now, `commands.caFile ${file}`);
  }

  /** Checks the signer and the signature over the envelope's bytes; throws VerifyFailure with the reason. */
  verify(command: Pick<ParsedCommand, 'envelopeBytes' | 'signature' | 'signerPem'>): SignerInfo {
    if (command.signature === undefined || command.signature.length === 0) throw new VerifyFailure('no-signature', 'the command is not signed');
    if (command.signerPem === undefined) throw new VerifyFailure('no-signature', 'the command has no signer certificate');
    const signer = this.signer(command.signerPem);
    const now = this.now();
    if (now < signer.notBefore || now > signer.notAfter) {
      throw new VerifyFailure('untrusted-signer', `the signer ${signer.subject} (or a certificate of its chain) is not valid now: valid ${iso(signer.notBefore)} to ${iso(signer.notAfter)}`);
    }
    if (!verifySignature(command.envelopeBytes, command.signature, signer.key)) {
      throw new VerifyFailure('bad-signature', `the signature does not verify with the key of ${signer.subject}`);
    }
    return { subject: signer.subject, fingerprint256: signer.fingerprint256 };
  }

  private signer(pem: string): VerifiedSigner & { fingerprint256: string } {
    const cached = this.cache.get(pem);
    if (cached) return cached;
    const verified = this.verifyChain(pem);
    if (this.cache.size >= CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(pem, verified);
    return verified;
  }

  private verifyChain(pem: string): VerifiedSigner & { fingerprint256: string } {
    let certs: X509Certificate[];
    try {
      certs = readCertificates(pem, 'the signer');
    } catch (err) {
      throw new VerifyFailure('untrusted-signer', (err as Error).message);
    }
    if (certs.length > MAX_CHAIN) throw new VerifyFailure('untrusted-signer', `the signer chain has ${certs.length} certificates (at most ${MAX_CHAIN})`);
    const leaf = certs[0]!;
    const who = leaf.subject.replace(/\n/g, ', ');
    if (leaf.ca) throw new VerifyFailure('untrusted-signer', `the signer ${who} is a CA certificate, not an operator's`);
    if (!(leaf.keyUsage ?? []).includes(CODE_SIGNING)) {
      throw new VerifyFailure('untrusted-signer', `the signer ${who} is not for signing commands: its extended key usage lacks code signing (${CODE_SIGNING})`);
    }
    const keyUsage = keyUsageBits(leaf.raw);
    if (keyUsage !== undefined && (keyUsage & 0x80) === 0) {
      throw new VerifyFailure('untrusted-signer', `the signer ${who} is not for signing: its key usage lacks digitalSignature`);
    }
    let notBefore = Date.parse(leaf.validFrom);
    let notAfter = Date.parse(leaf.validTo);
    let current = leaf;
    const intermediates = certs.slice(1);
    for (let depth = 0; depth < MAX_CHAIN; depth++) {
      const pinned = this.cas.find((ca) => current.checkIssued(ca) && current.verify(ca.publicKey));
      if (pinned) {
        notBefore = Math.max(notBefore, Date.parse(pinned.validFrom));
        notAfter = Math.min(notAfter, Date.parse(pinned.validTo));
        return { key: leaf.publicKey, subject: who, notBefore, notAfter, fingerprint256: leaf.fingerprint256 };
      }
      const issuer = intermediates.find((c) => c.ca && current.checkIssued(c) && current.verify(c.publicKey));
      if (!issuer) break;
      const bits = keyUsageBits(issuer.raw);
      if (bits !== undefined && (bits & 0x04) === 0) throw new VerifyFailure('untrusted-signer', `${issuer.subject} may not sign certificates (key usage lacks keyCertSign)`);
      notBefore = Math.max(notBefore, Date.parse(issuer.validFrom));
      notAfter = Math.min(notAfter, Date.parse(issuer.validTo));
      current = issuer;
    }
    throw new VerifyFailure('untrusted-signer', `the signer ${who} does not chain to the pinned command CA`);
  }
}

/** Verifies with the algorithm the key implies (envelope.ts lists them); false on any mismatch. */
export function verifySignature(bytes: Buffer, signature: Buffer, key: KeyObject): boolean {
  try {
    switch (key.asymmetricKeyType) {
      case 'ec':
        return verify(key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'sha384' : 'sha256', bytes, key, signature);
      case 'ed25519':
        return verify(null, bytes, key, signature);
      case 'rsa':
        if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) return false;
        return (
          verify('sha256', bytes, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature) ||
          verify('sha256', bytes, { key, padding: constants.RSA_PKCS1_PADDING }, signature)
        );
      default:
        return false;
    }
  } catch {
    // A signature that is not even well-formed DER is simply a bad signature.
    return false;
  }
}

function iso(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : 'unknown';
}

// ---- the key usage extension, which Node does not expose (its `keyUsage` is the extended key usage) ----

interface Tlv {
  tag: number;
  start: number;
  end: number;
}

function readTlv(der: Buffer, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new RangeError('truncated DER');
  const tag = der[at]!;
  let length = der[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4 || start + count > limit) throw new RangeError('bad DER length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[start + i]!;
    start += count;
  }
  if (start + length > limit) throw new RangeError('truncated DER');
  return { tag, start, end: start + length };
}

function children(der: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end; ) {
    const child = readTlv(der, at, parent.end);
    out.push(child);
    at = child.end;
  }
  return out;
}

const KEY_USAGE_OID = Buffer.from([0x55, 0x1d, 0x0f]);

/** The first byte of the key usage BIT STRING (digitalSignature = 0x80, keyCertSign = 0x04), or undefined if absent. */
export function keyUsageBits(der: Buffer): number | undefined {
  try {
    const cert = readTlv(der, 0, der.length);
    const tbs = children(der, cert)[0]!;
    const extensions = children(der, tbs).find((t) => t.tag === 0xa3);
    if (!extensions) return undefined;
    const list = children(der, extensions)[0]!;
    for (const ext of children(der, list)) {
      const parts = children(der, ext);
      const id = parts[0]!;
      if (id.tag !== 0x06 || !der.subarray(id.start, id.end).equals(KEY_USAGE_OID)) continue;
      const value = parts[parts.length - 1]!;
      const bits = readTlv(der, value.start, value.end);
      return bits.end - bits.start >= 2 ? der[bits.start + 1]! : 0;
    }
    return undefined;
  } catch {
    // Node parsed the certificate already; a structure this reader does not follow fails closed: no usage at all.
    return 0;
  }
}
