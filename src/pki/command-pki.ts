/**
 * The PKI of remote commands: a command CA and the fleet-operations keys it certifies, ECDSA P-256 with SHA-256.
 *
 * node-forge (src/pki/dev-ca.ts) handles RSA only, and Node's crypto makes keys and signatures but no certificates;
 * so the certificates are written here as DER directly (RFC 5280): the few structures a CA and a signing
 * certificate need, signed with Node's crypto. Parsing and verifying is left to Node's X509Certificate.
 *
 * `telematics-ops keys` uses it for a development command CA; tests use it for certificates that must fail
 * (expired, wrong usage, another CA). A production fleet issues operator certificates from its own CA.
 */
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeIssued } from './pem-files.js';

// ---- DER ----

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const sequence = (...items: Buffer[]): Buffer => tlv(0x30, ...items);
const set = (...items: Buffer[]): Buffer => tlv(0x31, ...items);
const octetString = (bytes: Buffer): Buffer => tlv(0x04, bytes);
const bitString = (bytes: Buffer, unusedBits = 0): Buffer => tlv(0x03, Buffer.from([unusedBits]), bytes);
const utf8String = (text: string): Buffer => tlv(0x0c, Buffer.from(text, 'utf8'));
const TRUE = tlv(0x01, Buffer.from([0xff]));

function integer(value: Buffer | number): Buffer {
  let bytes = typeof value === 'number' ? Buffer.from([value]) : value;
  // Positive: a leading 0 when the top bit is set; minimal: no redundant leading zeros.
  while (bytes.length > 1 && bytes[0] === 0 && (bytes[1]! & 0x80) === 0) bytes = bytes.subarray(1);
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return tlv(0x02, bytes);
}

function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) chunk.unshift(0x80 | (n & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime until 2049, GeneralizedTime after (RFC 5280 4.1.2.5). */
function time(date: Date): Buffer {
  const iso = date.toISOString();
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  return date.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${digits}Z`));
}

const name = (commonName: string): Buffer => sequence(set(sequence(oid('2.5.4.3'), utf8String(commonName))));

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/** X.509 KeyUsage bits (RFC 5280 4.2.1.3), as the first byte of the BIT STRING holds them. */
export const KEY_USAGE = { digitalSignature: 0x80, keyCertSign: 0x04, cRLSign: 0x02 } as const;

function keyUsageExtension(bits: number): Buffer {
  // DER: trailing zero bits are not encoded, and their count goes in the unused-bits byte.
  let unused = 0;
  while (unused < 7 && (bits & (1 << unused)) === 0) unused++;
  return extension(OID.keyUsage, true, bitString(Buffer.from([bits]), unused));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(oid(id), TRUE, octetString(value)) : sequence(oid(id), octetString(value));
}

function keyId(publicKey: KeyObject): Buffer {
  return createHash('sha1')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest();
}

function toPem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

// ---- certificates ----

export interface CommandCertificate {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
}

export interface CommandCertificateOptions {
  /** Default: one hour ago. */
  notBefore?: Date;
  /** Default: notBefore + validDays. */
  notAfter?: Date;
  /** Default 3650 for a CA, 365 for an operator. */
  validDays?: number;
  /** KeyUsage bits; default digitalSignature for an operator, keyCertSign | cRLSign for a CA. */
  keyUsage?: number;
  /** Extended key usages (OIDs); default code signing for an operator, none for a CA. */
  extKeyUsage?: string[];
}

interface Issuer {
  certPem: string;
  keyPem: string;
}

const DAY_MS = 86_400_000;

function build(
  subject: string,
  publicKey: KeyObject,
  issuer: { name: string; keyId: Buffer } | null,
  signingKey: KeyObject,
  ca: boolean,
  options: CommandCertificateOptions,
): string {
  const notBefore = options.notBefore ?? new Date(Date.now() - 3_600_000);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + (options.validDays ?? (ca ? 3650 : 365)) * DAY_MS);
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  const ownKeyId = keyId(publicKey);
  const extensions = [
    extension(OID.basicConstraints, true, ca ? sequence(TRUE, integer(0)) : sequence()),
    keyUsageExtension(options.keyUsage ?? (ca ? KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign : KEY_USAGE.digitalSignature)),
    ...((options.extKeyUsage ?? (ca ? [] : [OID.codeSigning])).length > 0
      ? [extension(OID.extKeyUsage, false, sequence(...(options.extKeyUsage ?? [OID.codeSigning]).map(oid)))]
      : []),
    extension(OID.subjectKeyIdentifier, false, octetString(ownKeyId)),
    extension(OID.authorityKeyIdentifier, false, sequence(tlv(0x80, issuer?.keyId ?? ownKeyId))),
  ];
  const algorithm = sequence(oid(OID.ecdsaWithSha256));
  const tbs = sequence(
    tlv(0xa0, integer(2)),
    integer(serial),
    algorithm,
    name(issuer?.name ?? subject),
    sequence(time(notBefore), time(notAfter)),
    name(subject),
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(0xa3, sequence(...extensions)),
  );
  const signature = sign('sha256', tbs, signingKey);
  return toPem('CERTIFICATE', sequence(tbs, algorithm, bitString(signature)));
}

function newKey(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

/** A self-signed command CA (may sign operator certificates only: path length 0). */
export function createCommandCa(commonName = 'telematics command CA (development)', options: CommandCertificateOptions = {}): CommandCertificate {
  const { publicKey, privateKey } = newKey();
  const certPem = build(commonName, publicKey, null, privateKey, true, options);
  return { certPem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/** An operator's signing certificate issued by `ca`: digitalSignature, extended key usage code signing. */
export function issueOperatorCertificate(ca: Issuer, commonName: string, options: CommandCertificateOptions = {}): CommandCertificate {
  const { publicKey, privateKey } = newKey();
  const caCert = new X509Certificate(ca.certPem);
  const caKey = createPrivateKey(ca.keyPem);
  const issuer = { name: caCert.subject.replace(/^CN=/, ''), keyId: keyId(caCert.publicKey) };
  if (!/^CN=[^\n]*$/.test(caCert.subject)) throw new RangeError('issueOperatorCertificate: the CA subject must be a single CN (a CA made by createCommandCa)');
  const certPem = build(commonName, publicKey, issuer, caKey, false, options);
  return { certPem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

export const EXTENDED_KEY_USAGE = { codeSigning: OID.codeSigning, clientAuth: OID.clientAuth } as const;

/** The operator of the development PKI that `npm start` creates beside the broker's (certs/dev). */
export const DEV_OPERATOR = 'ops-dev';

/** The command CA's files in a certificates folder: `command-ca.crt`, which cars pin by default, and its key. */
export const COMMAND_CA_NAME = 'command-ca';

/** Writes a development command CA and one operator's key and certificate into `dir` (keys 0600). */
export function writeDevelopmentKeys(dir: string, operator: string, force = false): { caFile: string; caKeyFile: string; certFile: string; keyFile: string } {
  const caFile = path.join(dir, `${COMMAND_CA_NAME}.crt`);
  const caKeyFile = path.join(dir, `${COMMAND_CA_NAME}.key`);
  let ca: { certPem: string; keyPem: string };
  if (existsSync(caFile) && existsSync(caKeyFile) && !force) {
    ca = { certPem: readFileSync(caFile, 'utf8'), keyPem: readFileSync(caKeyFile, 'utf8') };
  } else {
    ca = createCommandCa();
    writeIssued(dir, COMMAND_CA_NAME, ca);
  }
  return { caFile, caKeyFile, ...writeIssued(dir, operator, issueOperatorCertificate(ca, operator)) };
}
