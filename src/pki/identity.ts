/**
 * The device's TLS identity as the uplink uses it: its client certificate and key, and the CA the broker's
 * certificate must chain to (pinned: the only CA trusted for the broker). Read and checked at start, daily, and for a
 * certificate that rotation brings, so a missing, unreadable, mismatched or expired file is a clear error naming the
 * file, not a TLS failure at every reconnect.
 *
 * The certificate's chain goes through the check the command signer's goes through (src/pki/certificate-chain.ts,
 * RFC 5280): every issuer a CA allowed to sign certificates, within its path length (the trust anchor's included),
 * no SHA-1 or MD5 signature, no unknown critical extension; the device certificate itself is no CA, allows client
 * authentication, and has a key of the kinds below. Its intermediates follow it in the file, each issued by the next.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import {
  ChainRefusal,
  describeCertificate,
  subjectLine,
  verifyChain,
  type ChainCertificate,
  type ChainRule,
  type EndEntityRules,
} from './certificate-chain.js';

export interface IdentityFiles {
  /** The client certificate (PEM), optionally followed by the intermediates up to its CA. */
  certFile: string;
  /** Its private key (PEM, unencrypted: the device starts unattended). */
  keyFile: string;
  /** The CA the broker's certificate must chain to. */
  caFile: string;
  /** The CA that issued the client certificate, when it is not the broker's CA: checked too when given. */
  issuerFile?: string;
  /**
   * The client certificate must be issued by a CA of caFile (or issuerFile): for a certificate that arrived over the
   * network (rotation). At start the broker's own check is enough, and the device may hold a chain the broker knows.
   */
  requireIssuer?: boolean;
}

export interface DeviceIdentity {
  /** As read: the certificate and any intermediates. */
  certPem: string;
  keyPem: string;
  caPem: string;
  /** The certificate's CN: the device ID the broker will know this device by. */
  commonName: string;
  notAfter: Date;
  fingerprint256: string;
  files: IdentityFiles;
  /** Not fatal, worth a log line (a key others can read, a certificate close to its end). */
  warnings: string[];
}

export type IdentityProblem = 'missing' | 'unreadable' | 'invalid' | 'mismatch' | 'expired' | 'not-yet-valid' | 'chain' | 'usage' | 'permissions';

export class IdentityError extends Error {
  constructor(
    readonly file: string,
    readonly problem: IdentityProblem,
    message: string,
    /** For a certificate refused by the chain check: the rule it broke. */
    readonly rule?: ChainRule,
  ) {
    super(message);
    this.name = 'IdentityError';
  }
}

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const SOON_MS = 30 * 86_400_000;

/**
 * The device certificate's own rules: a TLS client's (no extended key usage at all means any use), signing the
 * handshake with a key of the kinds TLS brokers take: ECDSA P-256, P-384 or P-521, Ed25519, or RSA of 2048 bits or more.
 */
const DEVICE: EndEntityRules = {
  kind: 'end-entity',
  holder: "a device's",
  extendedKeyUsage: {
    oid: CLIENT_AUTH_OID,
    required: false,
    refusal: `does not allow client authentication: its extended key usage lacks clientAuth (${CLIENT_AUTH_OID})`,
  },
  digitalSignature: 'cannot sign a TLS handshake: its key usage lacks digitalSignature',
  keys: {
    curves: { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' },
    ed25519: true,
    ed448: false,
    minRsaBits: 2048,
    allowed: 'ECDSA P-256, P-384 or P-521, Ed25519, or RSA of 2048 bits or more',
  },
  keyRefusal: "may not be a device's TLS identity",
};

/** The identity problem a refused chain is: the device certificate's own use, its key, its dates, or the chain. */
const PROBLEM_OF_RULE: Partial<Record<ChainRule, IdentityProblem>> = {
  'end-entity': 'usage',
  'extended-key-usage': 'usage',
  'key-usage': 'usage',
  'leaf-key': 'invalid',
  unreadable: 'invalid',
  expired: 'expired',
  'not-yet-valid': 'not-yet-valid',
};

/** Reads and checks the identity files; throws an IdentityError naming the file and the problem. */
export function loadIdentity(files: IdentityFiles, now: Date = new Date()): DeviceIdentity {
  const warnings: string[] = [];
  const certPem = readPem(files.certFile, 'client certificate');
  const keyPem = readPem(files.keyFile, 'private key');
  const caPem = readPem(files.caFile, 'broker CA');

  const chain = parseCertificates(files.certFile, 'client certificate', certPem);
  const leaf = chain[0]!;
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new IdentityError(files.keyFile, 'invalid', `private key ${files.keyFile}: not a usable unencrypted PEM key (${message(err)})`);
  }
  if (key.type !== 'private') throw new IdentityError(files.keyFile, 'invalid', `private key ${files.keyFile}: holds no private key`);
  if (!leaf.checkPrivateKey(key)) {
    throw new IdentityError(
      files.keyFile,
      'mismatch',
      `private key ${files.keyFile} does not belong to the client certificate ${files.certFile} (their public keys differ)`,
    );
  }
  chain.forEach((cert, i) => checkValidity(files.certFile, i === 0 ? 'client certificate' : `intermediate #${i}`, cert, now, warnings));

  const cas = parseCertificates(files.caFile, 'broker CA', caPem);
  cas.forEach((ca) => {
    if (!ca.ca) throw new IdentityError(files.caFile, 'invalid', `broker CA ${files.caFile}: ${subjectCn(ca) ?? 'a certificate'} is not a CA certificate`);
    checkValidity(files.caFile, 'broker CA', ca, now, warnings);
  });
  const issuers = files.issuerFile !== undefined ? parseCertificates(files.issuerFile, 'issuer CA', readPem(files.issuerFile, 'issuer CA')) : undefined;

  // The chain ends at the issuer CA when it is given, else at the broker's CA when that issued it. Without either,
  // at start, the broker's own check is enough (the device may hold a chain only the broker knows); a certificate
  // that arrived over the network (requireIssuer) must reach one.
  const anchorFile = files.issuerFile ?? files.caFile;
  const anchorWhat = issuers ? 'issuer CA' : 'broker CA';
  const anchors = (issuers ?? cas).map((ca) => describeAnchor(anchorFile, anchorWhat, ca));
  const required = issuers !== undefined || files.requireIssuer === true;
  const verdict = verifyChain({
    certificates: chain,
    anchors,
    leaf: DEVICE,
    at: now.getTime(),
    ordered: true,
    anchoring: required ? 'required' : 'optional',
    names: {
      leaf: '',
      given: (index) => `intermediate #${index}`,
      chain: 'its chain',
      anchor: `the ${anchorWhat}`,
      anchors: `the ${anchorWhat} ${anchorFile}`,
      anAnchor: `a CA of ${anchorFile}`,
      issues: 'device certificates',
    },
  });
  if (verdict instanceof ChainRefusal) {
    const { rule } = verdict;
    if (rule === 'untrusted') {
      const end = verdict.certificate;
      const names = `${end === leaf ? 'it names' : `its chain ends at ${subjectLine(end)}, which names`} ${end.issuer.replace(/\n/g, ', ')}`;
      throw new IdentityError(
        files.certFile,
        'chain',
        issuers
          ? `client certificate ${files.certFile} does not chain to the issuer CA ${files.issuerFile} (${names})`
          : `client certificate ${files.certFile} is not issued by the CA in ${files.caFile} (${names})`,
        rule,
      );
    }
    // An intermediate refused is also named by its place in the file (the leaf is #0, the client certificate itself).
    const at = chain.indexOf(verdict.certificate);
    const where = at > 0 ? `, certificate #${at} of its chain` : '';
    throw new IdentityError(files.certFile, PROBLEM_OF_RULE[rule] ?? 'chain', `client certificate ${files.certFile}${where}: ${verdict.message}`, rule);
  }

  const commonName = subjectCn(leaf);
  if (commonName === undefined) throw new IdentityError(files.certFile, 'invalid', `client certificate ${files.certFile}: no CN in its subject`);
  // The key never leaves the device, and no other account on it reads it either (as ssh refuses such a key).
  let mode: number | undefined;
  try {
    mode = statSync(files.keyFile).mode & 0o777;
  } catch {
    // Read a moment ago: a stat failure now is not worth failing the start for.
  }
  if (mode !== undefined && (mode & 0o077) !== 0) {
    throw new IdentityError(
      files.keyFile,
      'permissions',
      `private key ${files.keyFile} has mode ${mode.toString(8).padStart(4, '0')}: other users can read it (chmod 600)`,
    );
  }
  return {
    certPem,
    keyPem,
    caPem,
    commonName,
    notAfter: new Date(leaf.validTo),
    fingerprint256: leaf.fingerprint256,
    files,
    warnings,
  };
}

function readPem(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new IdentityError(file, 'missing', `${what} ${file}: no such file`);
    if (code === 'EISDIR') throw new IdentityError(file, 'invalid', `${what} ${file}: is a directory`);
    throw new IdentityError(file, 'unreadable', `${what} ${file}: cannot be read (${code ?? message(err)})`);
  }
  if (!text.includes('-----BEGIN ')) throw new IdentityError(file, 'invalid', `${what} ${file}: not a PEM file`);
  return text;
}

function parseCertificates(file: string, what: string, pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new IdentityError(file, 'invalid', `${what} ${file}: holds no PEM certificate`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new IdentityError(file, 'invalid', `${what} ${file}: certificate #${i} cannot be parsed (${message(err)})`);
    }
  });
}

function checkValidity(file: string, what: string, cert: X509Certificate, now: Date, warnings: string[]): void {
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  if (now < from) {
    throw new IdentityError(
      file,
      'not-yet-valid',
      `${what} ${file}: not valid before ${from.toISOString()} (is the clock right? it says ${now.toISOString()})`,
    );
  }
  if (now > to) throw new IdentityError(file, 'expired', `${what} ${file}: expired on ${to.toISOString()}`);
  if (to.getTime() - now.getTime() < SOON_MS) warnings.push(`${what} ${file} expires on ${to.toISOString()}`);
}

/** A CA of `file` as the chain check takes it; a certificate it cannot read is the file's problem. */
function describeAnchor(file: string, what: string, ca: X509Certificate): ChainCertificate {
  try {
    return describeCertificate(ca);
  } catch (err) {
    if (err instanceof ChainRefusal) throw new IdentityError(file, 'invalid', `${what} ${file}: ${err.message}`, err.rule);
    throw err;
  }
}

function subjectCn(cert: X509Certificate): string | undefined {
  const line = cert.subject.split('\n').find((l) => l.startsWith('CN='));
  return line?.slice(3);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
