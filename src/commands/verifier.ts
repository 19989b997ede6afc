/**
 * The second fence (the broker's ACL is the first): a command runs only when signed by a key whose certificate
 * chains to the command CA pinned in the device config. A broker account that is compromised, or a backend that is,
 * can publish on the command topic but cannot sign.
 *
 * The chain is validated as RFC 5280 6.1 does, for the parts a pinned command CA needs:
 * - the signer's certificate: within its validity, not a CA, extended key usage code signing (1.3.6.1.5.5.7.3.3: a
 *   TLS client certificate from the same CA cannot sign commands), digitalSignature when it has a key usage, and a
 *   key of the documented kinds (ECDSA P-256 or P-384, Ed25519, RSA of 2048 bits or more);
 * - each certificate is issued by the next: the issuer's subject equals its issuer name byte for byte, and the
 *   issuer's key verifies its signature, which uses no SHA-1 or MD5 (only SHA-256 or stronger, or EdDSA);
 * - every issuer (intermediates given after the signer in the `signer` PEM, and the pinned CA) is a CA
 *   (basicConstraints cA), may sign certificates (keyCertSign, when it has a key usage), is within its validity,
 *   and allows as many intermediate CAs below it as the chain has (pathLenConstraint; self-issued ones not counted);
 * - no certificate of the chain carries a critical extension this agent does not process.
 * Every refusal names the certificate and the rule. Node's X509Certificate and crypto.verify do the cryptography;
 * certificate-extensions.ts reads what Node does not expose.
 *
 * A chain is checked once per distinct `signer` text: the verdict, good or bad, is cached (bounded), so a stream of
 * commands from the same operator, or of forged payloads carrying the same chain, costs one chain check.
 */
import { constants, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CertificateStructureError, KEY_USAGE_BITS, readCertificateExtensions, type CertificateExtensions } from './certificate-extensions.js';
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
/** Chain verdicts kept (verified signers, and refused ones), so a repeated `signer` text is checked once. */
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

/** A certificate with what path validation needs of it. */
interface ChainCertificate {
  x509: X509Certificate;
  /** Its public key (Node reads it lazily and throws on a damaged one: read once, here). */
  key: KeyObject;
  /** Its subject, one line: `CN=alice, O=fleet`. */
  name: string;
  extensions: CertificateExtensions;
}

function describe(x509: X509Certificate, what: string): ChainCertificate {
  const name = x509.subject.replace(/\n/g, ', ') || '(empty subject)';
  let key: KeyObject;
  try {
    key = x509.publicKey;
  } catch (err) {
    throw new VerifyFailure('untrusted-signer', `${what} ${name}: its public key cannot be read: ${(err as Error).message}`);
  }
  try {
    return { x509, key, name, extensions: readCertificateExtensions(x509.raw) };
  } catch (err) {
    if (err instanceof CertificateStructureError) throw new VerifyFailure('untrusted-signer', `${what} ${name} cannot be read: ${err.message}`);
    throw err;
  }
}

/** Hashes a certificate may be signed with: SHA-1 and MD5 are broken for signatures. EdDSA has none of its own. */
const CERTIFICATE_HASHES = new Set(['SHA-256', 'SHA-384', 'SHA-512']);
const EDDSA = new Set(['1.3.101.112', '1.3.101.113']);

/** Why `signed`'s signature algorithm is refused, or undefined when it is accepted. */
function refusedSignature(signed: ChainCertificate): string | undefined {
  const algorithm = signed.extensions.signatureAlgorithm;
  if (EDDSA.has(algorithm.oid) || (algorithm.hash !== undefined && CERTIFICATE_HASHES.has(algorithm.hash))) return undefined;
  if (algorithm.hash === 'SHA-1' || algorithm.hash === 'MD5' || algorithm.hash === 'MD2') {
    return `${signed.name} is signed with ${algorithm.name}: certificates signed with ${algorithm.hash} are refused (SHA-256 or stronger, or EdDSA)`;
  }
  return `${signed.name} is signed with ${algorithm.name}, which is not accepted (ECDSA or RSA with SHA-256 or stronger, RSASSA-PSS with SHA-256 or stronger, or EdDSA)`;
}

/** The signer's key kinds, as docs/commands.md lists them. */
const SIGNER_CURVES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384' };
/** A CA may also use P-521 (it signs certificates, not commands). */
const CA_CURVES: Record<string, string> = { ...SIGNER_CURVES, secp521r1: 'P-521' };
const MIN_RSA_BITS = 2048;

/** Why `key` may not serve (a signer's or a CA's), or undefined when it may. */
function refusedKey(key: KeyObject, role: 'signer' | 'CA'): string | undefined {
  const curves = role === 'signer' ? SIGNER_CURVES : CA_CURVES;
  const allowed = role === 'signer' ? 'ECDSA P-256 or P-384, Ed25519, or RSA of 2048 bits or more' : 'ECDSA P-256, P-384 or P-521, Ed25519, Ed448, or RSA of 2048 bits or more';
  const details = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'ec':
      return details?.namedCurve !== undefined && curves[details.namedCurve] !== undefined ? undefined : `its key is ECDSA on ${details?.namedCurve ?? 'an unnamed curve'} (allowed: ${allowed})`;
    case 'ed25519':
      return undefined;
    case 'ed448':
      return role === 'CA' ? undefined : `its key is Ed448 (allowed: ${allowed})`;
    case 'rsa':
      return (details?.modulusLength ?? 0) >= MIN_RSA_BITS ? undefined : `its key is RSA of ${details?.modulusLength ?? '?'} bits (allowed: ${allowed})`;
    default:
      return `its key is ${key.asymmetricKeyType ?? 'of an unknown kind'} (allowed: ${allowed})`;
  }
}

/** Whether `issuer`'s key verifies `cert`'s signature; a signature that cannot even be checked does not. */
function signedBy(cert: ChainCertificate, issuer: ChainCertificate): boolean {
  try {
    return cert.x509.verify(issuer.key);
  } catch {
    return false;
  }
}

function unknownCritical(cert: ChainCertificate): string | undefined {
  const unknown = cert.extensions.unknownCritical;
  return unknown.length === 0 ? undefined : `${cert.name} carries a critical extension this agent does not process (${unknown.join(', ')})`;
}

/** Certificates issued to the same name that issued them (key rollover) do not count against a path length. */
function selfIssued(cert: ChainCertificate): boolean {
  return cert.extensions.subjectName === cert.extensions.issuerName;
}

interface VerifiedSigner {
  key: KeyObject;
  subject: string;
  /** The intersection of the validities of the chain, unix ms. */
  notBefore: number;
  notAfter: number;
  fingerprint256: string;
}

export interface SignerInfo {
  /** The operator certificate's subject, e.g. `CN=alice`. */
  subject: string;
  fingerprint256: string;
}

export class CommandVerifier {
  private readonly cas: ChainCertificate[];
  /** Per `signer` text: its verified chain, or why it was refused (chains do not depend on the time; validity does and is checked each time). */
  private readonly cache = new Map<string, VerifiedSigner | VerifyFailure>();
  private checked = 0;

  constructor(
    caPem: string,
    private readonly now: () => number = Date.now,
    what = 'the command CA',
  ) {
    this.cas = readCertificates(caPem, what).map((x509) => {
      let ca: ChainCertificate;
      try {
        ca = describe(x509, what);
      } catch (err) {
        throw new Error((err as Error).message);
      }
      if (!ca.extensions.ca) throw new Error(`${what}: ${x509.subject} is not a CA certificate (basicConstraints CA:FALSE)`);
      return ca;
    });
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

  /** Chains checked so far (not answered from the cache). */
  get chainsChecked(): number {
    return this.checked;
  }

  /** The latest notBefore of the pinned CAs (unix ms): a signed time that real time has reached. */
  get pinnedSince(): number {
    return Math.max(0, ...this.cas.map((ca) => Date.parse(ca.x509.validFrom)).filter(Number.isFinite));
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

  private signer(pem: string): VerifiedSigner {
    let verdict = this.cache.get(pem);
    if (verdict === undefined) {
      this.checked++;
      try {
        verdict = this.verifyChain(pem);
      } catch (err) {
        if (!(err instanceof VerifyFailure)) throw err;
        verdict = err;
      }
      if (this.cache.size >= CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(pem, verdict);
    }
    if (verdict instanceof VerifyFailure) throw new VerifyFailure(verdict.reason, verdict.message);
    return verdict;
  }

  private verifyChain(pem: string): VerifiedSigner {
    let certs: X509Certificate[];
    try {
      certs = readCertificates(pem, 'the signer');
    } catch (err) {
      throw new VerifyFailure('untrusted-signer', (err as Error).message);
    }
    if (certs.length > MAX_CHAIN) throw new VerifyFailure('untrusted-signer', `the signer chain has ${certs.length} certificates (at most ${MAX_CHAIN})`);
    const leaf = describe(certs[0]!, 'the signer');
    const who = leaf.name;
    const refuse = (message: string): never => {
      throw new VerifyFailure('untrusted-signer', message);
    };
    if (leaf.x509.ca || leaf.extensions.ca) refuse(`the signer ${who} is a CA certificate, not an operator's`);
    if (!(leaf.x509.keyUsage ?? []).includes(CODE_SIGNING)) {
      refuse(`the signer ${who} is not for signing commands: its extended key usage lacks code signing (${CODE_SIGNING})`);
    }
    const usage = leaf.extensions.keyUsage;
    if (usage !== undefined && (usage & KEY_USAGE_BITS.digitalSignature) === 0) refuse(`the signer ${who} is not for signing: its key usage lacks digitalSignature`);
    const leafKey = refusedKey(leaf.key, 'signer');
    if (leafKey) refuse(`the signer ${who} may not sign commands: ${leafKey}`);
    const intermediates = certs.slice(1).map((x509, i) => describe(x509, `certificate ${i + 2} of the signer chain,`));
    const path: ChainCertificate[] = [leaf];
    const critical = unknownCritical(leaf);
    if (critical) refuse(critical);
    let notBefore = Date.parse(leaf.x509.validFrom);
    let notAfter = Date.parse(leaf.x509.validTo);
    let current = leaf;
    for (let depth = 0; depth < MAX_CHAIN; depth++) {
      // Name chaining first (cheap), then the signature (the costly part).
      const issuedBy = (issuer: ChainCertificate): boolean =>
        issuer.extensions.subjectName === current.extensions.issuerName && signedBy(current, issuer);
      const pinned = this.cas.find(issuedBy);
      const issuer = pinned ?? intermediates.find((c) => !path.includes(c) && issuedBy(c));
      if (!issuer) break;
      this.checkIssuer(issuer, current, path, pinned !== undefined);
      notBefore = Math.max(notBefore, Date.parse(issuer.x509.validFrom));
      notAfter = Math.min(notAfter, Date.parse(issuer.x509.validTo));
      if (pinned) return { key: leaf.key, subject: who, notBefore, notAfter, fingerprint256: leaf.x509.fingerprint256 };
      path.push(issuer);
      current = issuer;
    }
    const last = path[path.length - 1]!;
    const issuerName = last.x509.issuer.replace(/\n/g, ', ');
    throw new VerifyFailure(
      'untrusted-signer',
      `the signer ${who} does not chain to the pinned command CA: ${last === leaf ? 'it' : `its chain ends at ${last.name}, which`} is issued by ${issuerName}, neither a pinned command CA nor a certificate given in the chain (with a signature that verifies)`,
    );
  }

  /** RFC 5280 6.1.4: what `issuer` must be to have issued `signed`, the last certificate of `path` (leaf first). */
  private checkIssuer(issuer: ChainCertificate, signed: ChainCertificate, path: readonly ChainCertificate[], pinned: boolean): void {
    const refuse = (message: string): never => {
      throw new VerifyFailure('untrusted-signer', message);
    };
    const role = pinned ? 'the pinned command CA' : 'the intermediate CA';
    const signature = refusedSignature(signed);
    if (signature) refuse(signature);
    if (!issuer.extensions.ca) refuse(`${issuer.name} issued ${signed.name} but is not a CA (basicConstraints cA is not set)`);
    const usage = issuer.extensions.keyUsage;
    if (usage !== undefined && (usage & KEY_USAGE_BITS.keyCertSign) === 0) {
      refuse(`${role} ${issuer.name} issued ${signed.name} but may not sign certificates: its key usage lacks keyCertSign`);
    }
    const limit = issuer.extensions.pathLength;
    // The intermediate CAs below the issuer: every certificate of the path but the signer's own.
    const below = path.slice(1).filter((c) => !selfIssued(c)).length;
    if (limit !== undefined && below > limit) {
      refuse(`${role} ${issuer.name} allows ${limit} intermediate CA${limit === 1 ? '' : 's'} below it (pathLenConstraint ${limit}), the chain has ${below} (${path.slice(1).map((c) => c.name).join(' <- ')})`);
    }
    const key = refusedKey(issuer.key, 'CA');
    if (key) refuse(`${role} ${issuer.name} may not issue certificates for commands: ${key}`);
    const critical = unknownCritical(issuer);
    if (critical) refuse(critical);
  }
}

/** Verifies with the algorithm the key implies (envelope.ts lists them); false on any mismatch. */
export function verifySignature(bytes: Buffer, signature: Buffer, key: KeyObject): boolean {
  try {
    switch (key.asymmetricKeyType) {
      case 'ec': {
        // Only the documented curves, each with its hash: P-521 (or any other curve) with SHA-256 is no algorithm of ours.
        const curve = key.asymmetricKeyDetails?.namedCurve;
        if (curve !== 'prime256v1' && curve !== 'secp384r1') return false;
        return verify(curve === 'secp384r1' ? 'sha384' : 'sha256', bytes, key, signature);
      }
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
