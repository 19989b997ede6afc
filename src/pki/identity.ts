/**
 * The device's TLS identity as the uplink uses it: its client certificate and key, and the CA the broker's
 * certificate must chain to (pinned: the only CA trusted for the broker). Read and checked once at start, so a
 * missing, unreadable, mismatched or expired file is a clear error naming the file, not a TLS failure at every
 * reconnect.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

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
  ) {
    super(message);
    this.name = 'IdentityError';
  }
}

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const SOON_MS = 30 * 86_400_000;

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
  const usage = leaf.keyUsage;
  if (Array.isArray(usage) && !usage.includes(CLIENT_AUTH_OID)) {
    throw new IdentityError(files.certFile, 'usage', `client certificate ${files.certFile}: its extended key usage does not allow client authentication`);
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    // An issuer in the chain must be a CA: a device's own certificate (CA:false) cannot sign another device's.
    if (!chain[i + 1]!.ca) {
      throw new IdentityError(files.certFile, 'chain', `client certificate ${files.certFile}: certificate #${i + 1} of its chain is not a CA certificate, so it cannot issue #${i}`);
    }
    if (!issuedBy(chain[i]!, chain[i + 1]!)) {
      throw new IdentityError(files.certFile, 'chain', `client certificate ${files.certFile}: certificate #${i} is not signed by the one after it`);
    }
  }

  const cas = parseCertificates(files.caFile, 'broker CA', caPem);
  cas.forEach((ca) => {
    if (!ca.ca) throw new IdentityError(files.caFile, 'invalid', `broker CA ${files.caFile}: ${subjectCn(ca) ?? 'a certificate'} is not a CA certificate`);
    checkValidity(files.caFile, 'broker CA', ca, now, warnings);
  });

  // The client certificate's issuer need not be the broker's CA; when it is (or the issuer is given), check the link.
  const top = chain[chain.length - 1]!;
  if (files.issuerFile !== undefined) {
    const issuers = parseCertificates(files.issuerFile, 'issuer CA', readPem(files.issuerFile, 'issuer CA'));
    if (!issuers.some((ca) => issuedBy(top, ca) || ca.fingerprint256 === top.fingerprint256)) {
      throw new IdentityError(files.certFile, 'chain', `client certificate ${files.certFile} does not chain to the issuer CA ${files.issuerFile}`);
    }
  } else {
    for (const ca of cas) {
      if (top.checkIssued(ca) && !top.verify(ca.publicKey)) {
        throw new IdentityError(files.certFile, 'chain', `client certificate ${files.certFile} names ${files.caFile} as its issuer but its signature does not verify`);
      }
    }
    if (files.requireIssuer && !cas.some((ca) => issuedBy(top, ca))) {
      throw new IdentityError(files.certFile, 'chain', `client certificate ${files.certFile} is not issued by the CA in ${files.caFile} (it names ${top.issuer.replace(/\n/g, ', ')})`);
    }
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
    throw new IdentityError(files.keyFile, 'permissions', `private key ${files.keyFile} has mode ${mode.toString(8).padStart(4, '0')}: other users can read it (chmod 600)`);
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
    throw new IdentityError(file, 'not-yet-valid', `${what} ${file}: not valid before ${from.toISOString()} (is the clock right? it says ${now.toISOString()})`);
  }
  if (now > to) throw new IdentityError(file, 'expired', `${what} ${file}: expired on ${to.toISOString()}`);
  if (to.getTime() - now.getTime() < SOON_MS) warnings.push(`${what} ${file} expires on ${to.toISOString()}`);
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

function subjectCn(cert: X509Certificate): string | undefined {
  const line = cert.subject.split('\n').find((l) => l.startsWith('CN='));
  return line?.slice(3);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
