/**
 * The second fence (the broker's ACL is the first): a command runs only when signed by a key whose certificate
 * chains to the command CA pinned in the device config. A broker account that is compromised, or a backend that is,
 * can publish on the command topic but cannot sign.
 *
 * The chain is validated by src/pki/certificate-chain.ts (RFC 5280 6.1: names chain byte for byte, every issuer a CA
 * allowed to sign certificates within its path length, the pinned CA included, no SHA-1 or MD5 signature, no unknown
 * critical extension), the check the device's own identity goes through too. What is the signer's own:
 * - its certificate is not a CA, has the extended key usage code signing (1.3.6.1.5.5.7.3.3: a TLS client
 *   certificate from the same CA cannot sign commands), digitalSignature when it has a key usage, and a key of the
 *   documented kinds (ECDSA P-256 or P-384, Ed25519, RSA of 2048 bits or more);
 * - at most 4 certificates in the `signer` PEM (the operator's, then intermediates, in any order);
 * - every certificate of the chain, the pinned CA's included, is within its validity when the command arrives.
 * Every refusal names the certificate and the rule.
 *
 * A chain is checked once per distinct `signer` text: the verdict, good or bad, is cached (bounded), so a stream of
 * commands from the same operator, or of forged payloads carrying the same chain, costs one chain check.
 */
import { constants, verify, type KeyObject, type X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  ChainRefusal,
  describeCertificate,
  readCertificates,
  verifyChain,
  type ChainCertificate,
  type ChainNames,
  type EndEntityRules,
} from '../pki/certificate-chain.js';
import type { ParsedCommand } from './envelope.js';

export { readCertificates } from '../pki/certificate-chain.js';

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

/** The signer's rules (docs/commands.md): an operator's certificate for code signing, with a key of our algorithms. */
const SIGNER: EndEntityRules = {
  kind: 'end-entity',
  holder: "an operator's",
  extendedKeyUsage: { oid: CODE_SIGNING, required: true, refusal: `is not for signing commands: its extended key usage lacks code signing (${CODE_SIGNING})` },
  digitalSignature: 'is not for signing: its key usage lacks digitalSignature',
  keys: {
    curves: { prime256v1: 'P-256', secp384r1: 'P-384' },
    ed25519: true,
    ed448: false,
    minRsaBits: 2048,
    allowed: 'ECDSA P-256 or P-384, Ed25519, or RSA of 2048 bits or more',
  },
  keyRefusal: 'may not sign commands',
};

const SIGNER_NAMES: ChainNames = {
  leaf: 'the signer',
  given: (index) => `certificate ${index + 1} of the signer chain,`,
  chain: 'the signer chain',
  anchor: 'the pinned command CA',
  anchors: 'the pinned command CA',
  anAnchor: 'a pinned command CA',
  issues: 'certificates for commands',
};

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
        ca = describeCertificate(x509, what);
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
      throw new VerifyFailure(
        'untrusted-signer',
        `the signer ${signer.subject} (or a certificate of its chain) is not valid now: valid ${iso(signer.notBefore)} to ${iso(signer.notAfter)}`,
      );
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
    const verdict = verifyChain({ certificates: certs, anchors: this.cas, leaf: SIGNER, names: SIGNER_NAMES, maxLength: MAX_CHAIN });
    if (verdict instanceof ChainRefusal) throw new VerifyFailure('untrusted-signer', verdict.message);
    const leaf = verdict.path[0]!;
    return { key: leaf.key, subject: leaf.name, notBefore: verdict.notBefore, notAfter: verdict.notAfter, fingerprint256: leaf.x509.fingerprint256 };
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
