/**
 * What Node's X509Certificate does not tell about a certificate, and path validation (RFC 5280) needs: the basic
 * constraints with their path length, the key usage bits, the algorithm the certificate is signed with, the
 * extensions marked critical, and the issuer and subject names as DER (names chain by their bytes).
 *
 * The DER is read with node-forge's generic ASN.1 parser (strict DER, every byte consumed); this module only walks
 * the structure RFC 5280 4.1 gives. A certificate whose structure does not fit throws CertificateStructureError:
 * the caller refuses it (fail closed), it never guesses.
 *
 * Only the parser's own files of node-forge are loaded (lib/asn1.js with the byte buffer and OID table it requires),
 * not the package's index, which loads all of forge (RSA, TLS, PKCS#12...): every run checks its identity at start,
 * and the whole library would be a tenth of the agent's start-up module graph for a few hundred lines of DER reading.
 */
import { createRequire } from 'node:module';
import type forge from 'node-forge';

const requireForgePart = createRequire(import.meta.url);
const asn1 = requireForgePart('node-forge/lib/asn1') as typeof forge.asn1;
const forgeUtil = requireForgePart('node-forge/lib/util') as typeof forge.util;
type Node = forge.asn1.Asn1;

export class CertificateStructureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CertificateStructureError';
  }
}

/** X.509 KeyUsage bits as the first byte of the BIT STRING holds them (RFC 5280 4.2.1.3). */
export const KEY_USAGE_BITS = { digitalSignature: 0x80, keyCertSign: 0x04 } as const;

export const EXTENSION = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  subjectAltName: '2.5.29.17',
  issuerAltName: '2.5.29.18',
} as const;

/** The extensions this agent processes or that carry no constraint: any other one marked critical is refused. */
const UNDERSTOOD = new Set<string>(Object.values(EXTENSION));

export interface SignatureAlgorithm {
  oid: string;
  /** Readable: `ecdsa-with-SHA256`, `RSASSA-PSS/SHA-1`, or the OID when unknown. */
  name: string;
  /** The hash it uses, when known: `SHA-256`, `SHA-1`, `MD5`... */
  hash: string | undefined;
}

export interface CertificateExtensions {
  /** basicConstraints cA (false when the extension is absent). */
  ca: boolean;
  /** basicConstraints pathLenConstraint; undefined: no limit (or not a CA). */
  pathLength: number | undefined;
  /** First byte of the key usage BIT STRING; undefined: no key usage extension (any use allowed). */
  keyUsage: number | undefined;
  signatureAlgorithm: SignatureAlgorithm;
  /** OIDs of the critical extensions this agent does not understand. */
  unknownCritical: string[];
  /** The issuer and subject Name, DER, as binary strings: equal bytes chain. */
  issuerName: string;
  subjectName: string;
}

const HASHES: Record<string, string> = {
  '1.3.14.3.2.26': 'SHA-1',
  '2.16.840.1.101.3.4.2.1': 'SHA-256',
  '2.16.840.1.101.3.4.2.2': 'SHA-384',
  '2.16.840.1.101.3.4.2.3': 'SHA-512',
  '1.2.840.113549.2.5': 'MD5',
};

const SIGNATURES: Record<string, { name: string; hash: string | undefined }> = {
  '1.2.840.10045.4.3.2': { name: 'ecdsa-with-SHA256', hash: 'SHA-256' },
  '1.2.840.10045.4.3.3': { name: 'ecdsa-with-SHA384', hash: 'SHA-384' },
  '1.2.840.10045.4.3.4': { name: 'ecdsa-with-SHA512', hash: 'SHA-512' },
  '1.2.840.10045.4.1': { name: 'ecdsa-with-SHA1', hash: 'SHA-1' },
  '1.2.840.113549.1.1.11': { name: 'sha256WithRSAEncryption', hash: 'SHA-256' },
  '1.2.840.113549.1.1.12': { name: 'sha384WithRSAEncryption', hash: 'SHA-384' },
  '1.2.840.113549.1.1.13': { name: 'sha512WithRSAEncryption', hash: 'SHA-512' },
  '1.2.840.113549.1.1.5': { name: 'sha1WithRSAEncryption', hash: 'SHA-1' },
  '1.3.14.3.2.29': { name: 'sha1WithRSASignature', hash: 'SHA-1' },
  '1.2.840.113549.1.1.4': { name: 'md5WithRSAEncryption', hash: 'MD5' },
  '1.2.840.113549.1.1.2': { name: 'md2WithRSAEncryption', hash: 'MD2' },
  '1.2.840.10040.4.3': { name: 'dsa-with-SHA1', hash: 'SHA-1' },
  '1.3.101.112': { name: 'Ed25519', hash: undefined },
  '1.3.101.113': { name: 'Ed448', hash: undefined },
};
const RSASSA_PSS = '1.2.840.113549.1.1.10';

function parse(der: string, what: string): Node {
  try {
    // The typings know only `strict`; the parser takes the options object (BIT STRINGs are kept as bytes).
    const fromDer = asn1.fromDer as unknown as (bytes: forge.util.ByteBuffer, options: object) => Node;
    return fromDer(forgeUtil.createBuffer(der, 'raw'), { strict: true, parseAllBytes: true, decodeBitStrings: false });
  } catch (err) {
    throw new CertificateStructureError(`${what} is not DER: ${(err as Error).message}`);
  }
}

function children(node: Node | undefined, what: string): Node[] {
  if (node === undefined || !Array.isArray(node.value)) throw new CertificateStructureError(`${what}: expected a constructed value`);
  return node.value;
}

function bytes(node: Node | undefined, what: string): string {
  if (node === undefined || typeof node.value !== 'string') throw new CertificateStructureError(`${what}: expected a primitive value`);
  return node.value;
}

function isUniversal(node: Node | undefined, type: number): boolean {
  return node !== undefined && node.tagClass === asn1.Class.UNIVERSAL && node.type === type;
}

function isContext(node: Node | undefined, tag: number): boolean {
  return node !== undefined && node.tagClass === asn1.Class.CONTEXT_SPECIFIC && node.type === tag;
}

function oidOf(node: Node | undefined, what: string): string {
  if (!isUniversal(node, asn1.Type.OID)) throw new CertificateStructureError(`${what}: expected an OID`);
  return asn1.derToOid(bytes(node, what));
}

function signatureAlgorithm(identifier: Node): SignatureAlgorithm {
  const [id, params] = children(identifier, 'the signature algorithm');
  const oid = oidOf(id, 'the signature algorithm');
  if (oid === RSASSA_PSS) {
    // RSASSA-PSS-params: [0] hashAlgorithm DEFAULT sha1 (RFC 4055 3.1).
    const hashField = params && Array.isArray(params.value) ? params.value.find((n) => isContext(n, 0)) : undefined;
    const hashOid = hashField ? oidOf(children(children(hashField, 'the PSS hash')[0], 'the PSS hash')[0], 'the PSS hash') : '1.3.14.3.2.26';
    const hash = HASHES[hashOid];
    return { oid, name: `RSASSA-PSS/${hash ?? hashOid}`, hash: hash ?? hashOid };
  }
  const known = SIGNATURES[oid];
  return { oid, name: known?.name ?? oid, hash: known?.hash };
}

/** Reads the certificate's extensions and signature algorithm from its DER; throws CertificateStructureError. */
export function readCertificateExtensions(der: Buffer): CertificateExtensions {
  try {
    return read(der);
  } catch (err) {
    if (err instanceof CertificateStructureError) throw err;
    // The parser's own errors (an INTEGER wider than 32 bits, a bad OID...).
    throw new CertificateStructureError((err as Error).message);
  }
}

function read(der: Buffer): CertificateExtensions {
  const certificate = children(parse(der.toString('binary'), 'the certificate'), 'the certificate');
  if (certificate.length !== 3) throw new CertificateStructureError('the certificate: expected tbsCertificate, signatureAlgorithm, signature');
  const tbs = children(certificate[0], 'tbsCertificate');
  // version [0] EXPLICIT is optional (v1); then serial, signature, issuer, validity, subject, subjectPublicKeyInfo.
  const fields = isContext(tbs[0], 0) ? tbs.slice(1) : tbs;
  if (fields.length < 6) throw new CertificateStructureError('tbsCertificate: fields are missing');
  const toDer = (node: Node): string => asn1.toDer(node).getBytes();
  const result: CertificateExtensions = {
    ca: false,
    pathLength: undefined,
    keyUsage: undefined,
    signatureAlgorithm: signatureAlgorithm(certificate[1]!),
    unknownCritical: [],
    issuerName: toDer(fields[2]!),
    subjectName: toDer(fields[4]!),
  };
  const wrapper = fields.slice(6).find((n) => isContext(n, 3));
  if (wrapper === undefined) return result;
  const seen = new Set<string>();
  for (const extension of children(children(wrapper, 'extensions')[0], 'extensions')) {
    const parts = children(extension, 'an extension');
    const oid = oidOf(parts[0], 'an extension');
    // RFC 5280 4.2: a certificate must not include more than one instance of a particular extension.
    if (seen.has(oid)) throw new CertificateStructureError(`the extension ${oid} appears twice`);
    seen.add(oid);
    const critical = parts.length === 3 && isUniversal(parts[1], asn1.Type.BOOLEAN) && bytes(parts[1], 'critical') !== '\x00';
    const value = parts[parts.length - 1];
    if (!isUniversal(value, asn1.Type.OCTETSTRING)) throw new CertificateStructureError(`the extension ${oid}: expected an OCTET STRING`);
    const content = () => parse(bytes(value, oid), `the extension ${oid}`);
    if (oid === EXTENSION.basicConstraints) {
      const items = children(content(), 'basicConstraints');
      let at = 0;
      if (isUniversal(items[at], asn1.Type.BOOLEAN)) result.ca = bytes(items[at++], 'basicConstraints cA') !== '\x00';
      if (isUniversal(items[at], asn1.Type.INTEGER)) result.pathLength = asn1.derToInteger(bytes(items[at], 'pathLenConstraint'));
    } else if (oid === EXTENSION.keyUsage) {
      const bits = content();
      if (!isUniversal(bits, asn1.Type.BITSTRING)) throw new CertificateStructureError('keyUsage: expected a BIT STRING');
      const raw = bytes(bits, 'keyUsage');
      result.keyUsage = raw.length >= 2 ? raw.charCodeAt(1) : 0;
    } else if (critical && !UNDERSTOOD.has(oid)) {
      result.unknownCritical.push(oid);
    }
  }
  return result;
}
