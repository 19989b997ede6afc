/**
 * Certificates made by the openssl command line, for chains the command PKI of src/pki cannot make: intermediate
 * CAs, path length constraints, keys on other curves (P-192, secp256k1, P-521), Ed25519 and RSA, SHA-1 signatures,
 * key usages of any kind. Real certificates, as a fleet's own CA tooling would write them.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeTempDir } from './temp.js';

export type KeyKind = 'P-256' | 'P-384' | 'P-521' | 'P-192' | 'secp256k1' | 'ed25519' | 'rsa2048' | 'rsa1024';

export interface OpensslCertificate {
  name: string;
  certPem: string;
  keyPem: string;
  certFile: string;
  keyFile: string;
  /** The key kind: Ed25519 keys sign without a digest option. */
  kind: KeyKind;
}

export interface CertificateRequest {
  /** The CN. */
  name: string;
  /** Default: self-signed. */
  issuer?: OpensslCertificate;
  /** Default P-256. */
  key?: KeyKind;
  /** A CA (basicConstraints critical, CA:TRUE), with this path length when given; default: an operator's certificate. */
  ca?: { pathLength?: number };
  /** keyUsage text for openssl (e.g. `critical,digitalSignature`); default keyCertSign,cRLSign for a CA, digitalSignature otherwise. `none`: no key usage. */
  keyUsage?: string;
  /** extendedKeyUsage text; default codeSigning for an operator, none for a CA. */
  extendedKeyUsage?: string;
  /** The issuer's digest: default sha256. */
  digest?: 'sha256' | 'sha384' | 'sha1' | 'md5';
  /** Extra extension lines, e.g. a critical extension of an unknown OID. */
  extra?: string[];
  /** Certify this certificate's key again (under another name): a certificate whose key signed what its name did not. */
  keyOf?: OpensslCertificate;
}

const KEY_OPTIONS: Record<KeyKind, string[]> = {
  'P-256': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  'P-384': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  'P-521': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'],
  'P-192': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime192v1'],
  secp256k1: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
  ed25519: ['-algorithm', 'ed25519'],
  rsa2048: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  rsa1024: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
};

export class OpensslPki {
  readonly dir = makeTempDir('openssl-pki-');
  private serial = 1;

  private openssl(args: string[]): void {
    // SHA-1 and MD5 signatures are for tests of their refusal: allowed to be made here.
    execFileSync('openssl', args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, OPENSSL_CONF: '/dev/null' } });
  }

  issue(request: CertificateRequest): OpensslCertificate {
    const kind = request.keyOf?.kind ?? request.key ?? 'P-256';
    const base = request.name.replace(/[^A-Za-z0-9-]/g, '_');
    const keyFile = path.join(this.dir, `${base}.key`);
    const certFile = path.join(this.dir, `${base}.crt`);
    const csrFile = path.join(this.dir, `${base}.csr`);
    const extFile = path.join(this.dir, `${base}.ext`);
    if (request.keyOf) writeFileSync(keyFile, request.keyOf.keyPem);
    else this.openssl(['genpkey', ...KEY_OPTIONS[kind], '-out', keyFile]);
    const ca = request.ca;
    const lines = [
      ca ? `basicConstraints = critical, CA:TRUE${ca.pathLength !== undefined ? `, pathlen:${ca.pathLength}` : ''}` : 'basicConstraints = critical, CA:FALSE',
      'subjectKeyIdentifier = hash',
      ...(request.issuer ? ['authorityKeyIdentifier = keyid'] : []),
    ];
    const keyUsage = request.keyUsage ?? (ca ? 'critical, keyCertSign, cRLSign' : 'critical, digitalSignature');
    if (keyUsage !== 'none') lines.push(`keyUsage = ${keyUsage}`);
    const extendedKeyUsage = request.extendedKeyUsage ?? (ca ? undefined : 'codeSigning');
    if (extendedKeyUsage !== undefined) lines.push(`extendedKeyUsage = ${extendedKeyUsage}`);
    lines.push(...(request.extra ?? []));
    writeFileSync(extFile, `[v3]\n${lines.join('\n')}\n`);
    const issuer = request.issuer;
    const signerKind = issuer?.kind ?? kind;
    const digest = signerKind === 'ed25519' ? [] : [`-${request.digest ?? 'sha256'}`];
    this.openssl(['req', '-new', '-key', keyFile, '-subj', `/CN=${request.name}`, '-out', csrFile]);
    this.openssl([
      'x509',
      '-req',
      '-in',
      csrFile,
      ...(issuer ? ['-CA', issuer.certFile, '-CAkey', issuer.keyFile] : ['-signkey', keyFile]),
      '-set_serial',
      String(this.serial++),
      '-days',
      '365',
      ...digest,
      '-extfile',
      extFile,
      '-extensions',
      'v3',
      '-out',
      certFile,
    ]);
    return { name: request.name, certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8'), certFile, keyFile, kind };
  }
}

/** A `signer` text: the operator's certificate, then the intermediates. */
export function chainOf(...certs: OpensslCertificate[]): { certPem: string; keyPem: string } {
  return { certPem: certs.map((c) => c.certPem).join(''), keyPem: certs[0]!.keyPem };
}
