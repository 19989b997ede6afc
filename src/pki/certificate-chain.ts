/**
 * The one certificate-chain check of the project, for every place that validates a chain: the signer of a remote
 * command (src/commands/verifier.ts), the device's own certificate at start, daily and at rotation
 * (src/pki/identity.ts), and the certificates and CA files `provision` takes (src/provision/bundle.ts).
 *
 * It validates as RFC 5280 6.1 does, for the parts a pinned trust anchor needs:
 * - the leaf meets its role's rules (LeafRules): an end entity is not a CA, has the role's extended key usage,
 *   digitalSignature when it has a key usage, and a key of the role's kinds; a CA that is to issue certificates is a
 *   CA, may sign certificates and has a CA's key;
 * - each certificate is issued by the next: the issuer's subject equals its issuer name byte for byte, and the
 *   issuer's key verifies its signature, which uses no SHA-1, MD5 or MD2 (only SHA-256 or stronger, or EdDSA);
 * - every issuer (the intermediates, and the trust anchor the path ends at) is a CA (basicConstraints cA), may sign
 *   certificates (keyCertSign, when it has a key usage), has a CA's key, and allows as many intermediate CAs below
 *   it as the path has (pathLenConstraint; self-issued ones not counted);
 * - no certificate of the path carries a critical extension this agent does not process;
 * - when a time is given, every certificate of the path, the anchor included, is valid then.
 * A trust anchor's own signature is not checked: it is trusted because it is pinned.
 *
 * The result is the verified path, or a ChainRefusal naming the certificate and the rule (the callers turn it into
 * their own error: VerifyFailure, IdentityError, ProvisionError). Node's X509Certificate does the cryptography;
 * certificate-extensions.ts reads what Node does not expose. Nothing is cached here: the command verifier caches its
 * verdicts, and an identity is checked only at start, daily and at rotation.
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { CertificateStructureError, KEY_USAGE_BITS, readCertificateExtensions, type CertificateExtensions } from './certificate-extensions.js';

/** The rule a refused chain broke. */
export type ChainRule =
  /** A certificate whose key or structure cannot be read. */
  | 'unreadable'
  /** More certificates than the caller allows. */
  | 'chain-length'
  /** The leaf of an end entity's chain is a CA. */
  | 'end-entity'
  /** The leaf's extended key usage lacks its role's purpose. */
  | 'extended-key-usage'
  /** The leaf's key usage lacks digitalSignature. */
  | 'key-usage'
  /** The leaf's key is not of its role's kinds. */
  | 'leaf-key'
  /** A certificate signed with SHA-1, MD5, MD2 or an unknown algorithm. */
  | 'signature-algorithm'
  /** An issuer (or a leaf that is to issue) is not a CA. */
  | 'basic-constraints'
  /** An issuer (or a leaf that is to issue) has a key usage without keyCertSign. */
  | 'key-cert-sign'
  /** A CA allows fewer intermediate CAs below it than the path has. */
  | 'path-length'
  /** A CA's key is not of a CA's kinds. */
  | 'issuer-key'
  | 'critical-extension'
  | 'not-yet-valid'
  | 'expired'
  /** Certificates given in order (`ordered`): one does not issue the one before it. */
  | 'order'
  /** The path ends at a certificate that names a trust anchor as its issuer, whose key does not verify it. */
  | 'issuer-signature'
  /** The path reaches no trust anchor. */
  | 'untrusted';

/** Why a chain is refused: `message` names the certificate and the rule. */
export class ChainRefusal extends Error {
  constructor(
    readonly rule: ChainRule,
    /** The certificate the rule refused (for `untrusted`: the last of the path, whose issuer is unknown). */
    readonly certificate: X509Certificate,
    message: string,
  ) {
    super(message);
    this.name = 'ChainRefusal';
  }
}

/** A certificate with what path validation needs of it. */
export interface ChainCertificate {
  x509: X509Certificate;
  /** Its public key (Node reads it lazily and throws on a damaged one: read once, here). */
  key: KeyObject;
  /** Its subject, one line: `CN=alice, O=fleet`. */
  name: string;
  extensions: CertificateExtensions;
}

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

/** A certificate's subject on one line. */
export function subjectLine(x509: X509Certificate): string {
  return x509.subject.replace(/\n/g, ', ') || '(empty subject)';
}

function label(prefix: string, name: string): string {
  return prefix === '' ? name : `${prefix} ${name}`;
}

/** Reads what the checks need of `x509`; throws a ChainRefusal (`unreadable`) naming it as `what`. */
export function describeCertificate(x509: X509Certificate, what = ''): ChainCertificate {
  const name = subjectLine(x509);
  let key: KeyObject;
  try {
    key = x509.publicKey;
  } catch (err) {
    throw new ChainRefusal('unreadable', x509, `${label(what, name)}: its public key cannot be read: ${(err as Error).message}`);
  }
  try {
    return { x509, key, name, extensions: readCertificateExtensions(x509.raw) };
  } catch (err) {
    if (err instanceof CertificateStructureError) throw new ChainRefusal('unreadable', x509, `${label(what, name)} cannot be read: ${err.message}`);
    throw err;
  }
}

// ---- keys and signature algorithms --------------------------------------------------------------------------------

/** Key kinds a role accepts. */
export interface KeyKinds {
  /** Named curves (Node's names) to how the documentation calls them. */
  curves: Readonly<Record<string, string>>;
  ed25519: boolean;
  ed448: boolean;
  minRsaBits: number;
  /** For the refusal: `ECDSA P-256 or P-384, Ed25519, or RSA of 2048 bits or more`. */
  allowed: string;
}

/** What a CA's key may be, whatever it issues: it signs certificates, so P-521 and Ed448 serve too. */
export const CA_KEYS: KeyKinds = {
  curves: { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' },
  ed25519: true,
  ed448: true,
  minRsaBits: 2048,
  allowed: 'ECDSA P-256, P-384 or P-521, Ed25519, Ed448, or RSA of 2048 bits or more',
};

/** Why `key` is not of the `kinds`, or undefined when it is. */
export function refusedKey(key: KeyObject, kinds: KeyKinds): string | undefined {
  const details = key.asymmetricKeyDetails;
  const refused = (what: string): string => `its key is ${what} (allowed: ${kinds.allowed})`;
  switch (key.asymmetricKeyType) {
    case 'ec':
      return details?.namedCurve !== undefined && kinds.curves[details.namedCurve] !== undefined
        ? undefined
        : refused(`ECDSA on ${details?.namedCurve ?? 'an unnamed curve'}`);
    case 'ed25519':
      return kinds.ed25519 ? undefined : refused('Ed25519');
    case 'ed448':
      return kinds.ed448 ? undefined : refused('Ed448');
    case 'rsa':
      return (details?.modulusLength ?? 0) >= kinds.minRsaBits ? undefined : refused(`RSA of ${details?.modulusLength ?? '?'} bits`);
    default:
      return refused(key.asymmetricKeyType ?? 'of an unknown kind');
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

// ---- the rules of a role ------------------------------------------------------------------------------------------

/** The leaf of an operator's or a device's chain. */
export interface EndEntityRules {
  kind: 'end-entity';
  /** Whose certificate it should be, for the refusal of a CA: `an operator's`. */
  holder: string;
  extendedKeyUsage: {
    oid: string;
    /** Refused also when the certificate has no extended key usage at all (else: no extension, any use). */
    required: boolean;
    /** The refusal, after the certificate's name: `is not for signing commands: its extended key usage lacks ...`. */
    refusal: string;
  };
  /** The refusal, after the certificate's name, when its key usage lacks digitalSignature (none: any use). */
  digitalSignature: string;
  keys: KeyKinds;
  /** The refusal of another key kind, after the certificate's name and before the reason: `may not sign commands`. */
  keyRefusal: string;
}

/**
 * The leaf is a CA that is to issue certificates (a CA file provision takes): a CA, allowed to sign certificates,
 * with a CA's key; it counts as an intermediate for the path lengths above it (what it issues will be below it).
 */
export interface IssuingCaRules {
  kind: 'issuing-ca';
}

export type LeafRules = EndEntityRules | IssuingCaRules;

/** How the refusals call the certificates of a check. */
export interface ChainNames {
  /** Before the leaf's subject: `the signer`; empty: the subject alone. */
  leaf: string;
  /** Before the subject of the given certificate at `index` (from 1) when it cannot be read: `certificate 2 of the signer chain,`. */
  given(index: number): string;
  /** The certificates given, for the length limit: `the signer chain`. */
  chain: string;
  /** Before a trust anchor's subject: `the pinned command CA`. */
  anchor: string;
  /** What the path must reach, and one of those: `the pinned command CA`, `a pinned command CA`. */
  anchors: string;
  anAnchor: string;
  /** What the CAs of the path issue, for the refusal of a CA's key: `certificates for commands`. */
  issues: string;
}

export interface ChainCheck {
  /** The leaf first, then the intermediates (in any order, unless `ordered`). */
  certificates: readonly X509Certificate[];
  /** The trust anchors (describeCertificate), pinned by the caller. */
  anchors: readonly ChainCertificate[];
  leaf: LeafRules;
  names: ChainNames;
  /** When given (unix ms), every certificate of the path and its anchor must be valid then. */
  at?: number;
  /** At most this many certificates given; default 8. */
  maxLength?: number;
  /**
   * Each given certificate is issued by the one after it (a TLS certificate file), except where a trust anchor
   * issues it; what follows the anchor must be anchors too (a file that ends with its root).
   */
  ordered?: boolean;
  /**
   * `required` (default): the path must end at an anchor. `optional`: a path that reaches no anchor is accepted as
   * far as it goes (the device may hold a chain only the broker knows), unless it ends at a certificate that names an
   * anchor as its issuer whose key does not verify it.
   */
  anchoring?: 'required' | 'optional';
}

export interface VerifiedChain {
  /** The leaf first, then the intermediates it goes through; not the anchor. */
  path: ChainCertificate[];
  /** The trust anchor the path ends at; undefined when `anchoring: 'optional'` found none. */
  anchor: ChainCertificate | undefined;
  /** The intersection of the validities of the path and its anchor (unix ms). */
  notBefore: number;
  notAfter: number;
}

/** Certificates issued to the same name that issued them (key rollover) do not count against a path length. */
function selfIssued(cert: ChainCertificate): boolean {
  return cert.extensions.subjectName === cert.extensions.issuerName;
}

/** Whether `issuer`'s key verifies `cert`'s signature; a signature that cannot even be checked does not. */
function signedBy(cert: ChainCertificate, issuer: ChainCertificate): boolean {
  try {
    return cert.x509.verify(issuer.key);
  } catch {
    return false;
  }
}

function iso(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : 'an unreadable date';
}

const DEFAULT_MAX_LENGTH = 8;

/** Validates the chain; returns the verified path, or why it is refused. Never throws for a bad chain. */
export function verifyChain(check: ChainCheck): VerifiedChain | ChainRefusal {
  try {
    return new PathValidation(check).run();
  } catch (err) {
    if (err instanceof ChainRefusal) return err;
    throw err;
  }
}

class PathValidation {
  private readonly names: ChainNames;
  private readonly path: ChainCertificate[] = [];
  private notBefore = -Infinity;
  private notAfter = Infinity;

  constructor(private readonly check: ChainCheck) {
    this.names = check.names;
  }

  run(): VerifiedChain {
    const { certificates, anchors, leaf: rules } = this.check;
    const max = this.check.maxLength ?? DEFAULT_MAX_LENGTH;
    const first = certificates[0];
    if (first === undefined) throw new Error('verifyChain: no certificate given');
    if (certificates.length > max)
      throw new ChainRefusal('chain-length', first, `${this.names.chain} has ${certificates.length} certificates (at most ${max})`);
    const leaf = describeCertificate(first, this.names.leaf);
    const who = label(this.names.leaf, leaf.name);
    this.checkLeaf(leaf, who, rules);
    const given = [leaf, ...certificates.slice(1).map((x509, i) => describeCertificate(x509, this.names.given(i + 1)))];
    this.refuseCritical(leaf);
    this.checkValidity(leaf, who);
    this.path.push(leaf);

    // A CA file's own root: nothing above it to check.
    const itself = rules.kind === 'issuing-ca' ? anchors.find((a) => a.x509.raw.equals(leaf.x509.raw)) : undefined;
    if (itself) return this.verified(itself);

    let current = leaf;
    for (;;) {
      // Name chaining first (cheap), then the signature (the costly part).
      const issuedBy = (issuer: ChainCertificate): boolean => issuer.extensions.subjectName === current.extensions.issuerName && signedBy(current, issuer);
      const anchor = anchors.find(issuedBy);
      const next = given[this.path.length];
      const issuer =
        anchor ?? (this.check.ordered ? (next !== undefined && issuedBy(next) ? next : undefined) : given.find((c) => !this.path.includes(c) && issuedBy(c)));
      if (!issuer) break;
      this.checkIssuer(issuer, current, anchor !== undefined);
      if (anchor) {
        if (this.check.ordered) {
          // A file may end with the anchor (or anchors) it chains to; anything else after it is not part of the chain.
          const stray = given.slice(this.path.length).find((c) => !anchors.some((a) => a.x509.raw.equals(c.x509.raw)));
          if (stray)
            throw new ChainRefusal(
              'order',
              stray.x509,
              `${stray.name} follows ${current.name} in the chain, but ${current.name} is issued by ${this.names.anchor} ${anchor.name}`,
            );
        }
        return this.verified(anchor);
      }
      this.path.push(issuer);
      current = issuer;
    }

    const next = given[this.path.length];
    if (this.check.ordered && next !== undefined) {
      throw new ChainRefusal('order', next.x509, `${next.name} follows ${current.name} in the chain but did not issue it (its name or its key does not match)`);
    }
    const named = anchors.find((a) => a.extensions.subjectName === current.extensions.issuerName && current.x509.checkIssued(a.x509));
    if ((this.check.anchoring ?? 'required') === 'optional') {
      if (named) {
        throw new ChainRefusal(
          'issuer-signature',
          current.x509,
          `${current.name} names ${this.names.anchor} ${named.name} as its issuer, but its signature does not verify with that CA's key`,
        );
      }
      return this.verified(undefined);
    }
    const issuerName = current.x509.issuer.replace(/\n/g, ', ');
    throw new ChainRefusal(
      'untrusted',
      current.x509,
      `${who} does not chain to ${this.names.anchors}: ${current === leaf ? 'it' : `its chain ends at ${current.name}, which`} is issued by ${issuerName}, neither ${this.names.anAnchor} nor a certificate given in the chain (with a signature that verifies)`,
    );
  }

  private verified(anchor: ChainCertificate | undefined): VerifiedChain {
    for (const cert of anchor ? [...this.path, anchor] : this.path) {
      this.notBefore = Math.max(this.notBefore, Date.parse(cert.x509.validFrom));
      this.notAfter = Math.min(this.notAfter, Date.parse(cert.x509.validTo));
    }
    return { path: this.path, anchor, notBefore: this.notBefore, notAfter: this.notAfter };
  }

  private checkLeaf(leaf: ChainCertificate, who: string, rules: LeafRules): void {
    const refuse = (rule: ChainRule, message: string): never => {
      throw new ChainRefusal(rule, leaf.x509, message);
    };
    const usage = leaf.extensions.keyUsage;
    if (rules.kind === 'issuing-ca') {
      if (!leaf.extensions.ca) refuse('basic-constraints', `${who} is not a CA (basicConstraints cA is not set)`);
      if (usage !== undefined && (usage & KEY_USAGE_BITS.keyCertSign) === 0)
        refuse('key-cert-sign', `${who} may not sign certificates: its key usage lacks keyCertSign`);
      const key = refusedKey(leaf.key, CA_KEYS);
      if (key) refuse('issuer-key', `${who} may not issue ${this.names.issues}: ${key}`);
      return;
    }
    if (leaf.x509.ca || leaf.extensions.ca) refuse('end-entity', `${who} is a CA certificate, not ${rules.holder}`);
    const purposes = leaf.x509.keyUsage;
    if (purposes === undefined ? rules.extendedKeyUsage.required : !purposes.includes(rules.extendedKeyUsage.oid)) {
      refuse('extended-key-usage', `${who} ${rules.extendedKeyUsage.refusal}`);
    }
    if (usage !== undefined && (usage & KEY_USAGE_BITS.digitalSignature) === 0) refuse('key-usage', `${who} ${rules.digitalSignature}`);
    const key = refusedKey(leaf.key, rules.keys);
    if (key) refuse('leaf-key', `${who} ${rules.keyRefusal}: ${key}`);
  }

  /** RFC 5280 6.1.4: what `issuer` must be to have issued `signed`, the last certificate of the path. */
  private checkIssuer(issuer: ChainCertificate, signed: ChainCertificate, isAnchor: boolean): void {
    const refuse = (rule: ChainRule, cert: ChainCertificate, message: string): never => {
      throw new ChainRefusal(rule, cert.x509, message);
    };
    const role = isAnchor ? this.names.anchor : 'the intermediate CA';
    const signature = refusedSignature(signed);
    if (signature) refuse('signature-algorithm', signed, signature);
    if (!issuer.extensions.ca) refuse('basic-constraints', issuer, `${issuer.name} issued ${signed.name} but is not a CA (basicConstraints cA is not set)`);
    const usage = issuer.extensions.keyUsage;
    if (usage !== undefined && (usage & KEY_USAGE_BITS.keyCertSign) === 0) {
      refuse('key-cert-sign', issuer, `${role} ${issuer.name} issued ${signed.name} but may not sign certificates: its key usage lacks keyCertSign`);
    }
    const limit = issuer.extensions.pathLength;
    // The intermediate CAs below the issuer: every certificate of the path but an end entity's own; a CA that is to
    // issue counts itself (what it issues will be below it).
    const intermediates = this.check.leaf.kind === 'issuing-ca' ? this.path : this.path.slice(1);
    const below = intermediates.filter((c) => !selfIssued(c)).length;
    if (limit !== undefined && below > limit) {
      refuse(
        'path-length',
        issuer,
        `${role} ${issuer.name} allows ${limit} intermediate CA${limit === 1 ? '' : 's'} below it (pathLenConstraint ${limit}), the chain has ${below} (${intermediates.map((c) => c.name).join(' <- ')})`,
      );
    }
    const key = refusedKey(issuer.key, CA_KEYS);
    if (key) refuse('issuer-key', issuer, `${role} ${issuer.name} may not issue ${this.names.issues}: ${key}`);
    this.refuseCritical(issuer);
    this.checkValidity(issuer, label(role, issuer.name));
  }

  private refuseCritical(cert: ChainCertificate): void {
    const unknown = cert.extensions.unknownCritical;
    if (unknown.length > 0)
      throw new ChainRefusal('critical-extension', cert.x509, `${cert.name} carries a critical extension this agent does not process (${unknown.join(', ')})`);
  }

  private checkValidity(cert: ChainCertificate, who: string): void {
    const at = this.check.at;
    if (at === undefined) return;
    const from = Date.parse(cert.x509.validFrom);
    const to = Date.parse(cert.x509.validTo);
    if (!(at >= from)) throw new ChainRefusal('not-yet-valid', cert.x509, `${who} is not valid before ${iso(from)} (the time is ${iso(at)})`);
    if (!(at <= to)) throw new ChainRefusal('expired', cert.x509, `${who} expired on ${iso(to)}`);
  }
}
