/**
 * A CA that signs device certificates from signing requests: the development CA of the default run, or the fleet's
 * own CA that `telematics-ops ca-signer` is given. Its key may be RSA or EC (P-256, P-384); the device's key may be
 * either too (src/pki/signing-request.ts). node-forge lays out the certificate (names, validity, extensions) but signs
 * RSA only, so the to-be-signed part is completed with the request's own public key and the CA's exact subject, and
 * signed by Node's crypto.
 *
 * The profile is the development CA's device profile (src/pki/dev-ca.ts): CN = device ID, not a CA, client
 * authentication, key identifiers (OpenSSL builds the chain by them), a random positive serial of 127 bits.
 *
 * Failure: loadSigningCa throws a CertificateAuthorityError naming the file and what is wrong (not a CA, the key is
 * not the certificate's, an algorithm it cannot sign with, expired). issueDeviceCertificate throws one when the
 * validity asked for is empty.
 */
import { createPrivateKey, sign, X509Certificate, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { randomSerialNumber } from './dev-ca.js';
import { checkDeviceId } from './device-id.js';
import { fromDer, part, toBeSigned, type SigningRequest } from './signing-request.js';

const { asn1, pki } = forge;

export class CertificateAuthorityError extends Error {
  override readonly name = 'CertificateAuthorityError';
}

export interface SigningCa {
  certPem: string;
  commonName: string;
  notBefore: Date;
  notAfter: Date;
  key: KeyObject;
  /** The CA's subject exactly as its certificate encodes it: a device certificate's issuer must match it byte for byte. */
  subject: forge.asn1.Asn1;
  /** The CA's subjectKeyIdentifier (bytes), copied into each certificate's authorityKeyIdentifier; none when it has none. */
  keyIdentifier?: string;
  signature: { oid: string; hash: string; withNullParameters: boolean };
}

/** Where the CA's files came from, for errors: `--ca-cert /etc/...`. */
export interface CaSource {
  cert: string;
  key: string;
}

const SUBJECT_KEY_IDENTIFIER_OID = '2.5.29.14';

/** Reads and checks a CA from its PEMs. */
export function loadSigningCa(certPem: string, keyPem: string, source: CaSource, now = Date.now()): SigningCa {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new CertificateAuthorityError(`${source.cert}: not a PEM certificate (${(err as Error).message})`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new CertificateAuthorityError(`${source.key}: not a PEM private key without a passphrase (${(err as Error).message})`);
  }
  if (!cert.ca) throw new CertificateAuthorityError(`${source.cert}: not a CA certificate (its basicConstraints do not say CA:TRUE)`);
  if (!cert.checkPrivateKey(key)) throw new CertificateAuthorityError(`${source.key}: not the private key of ${source.cert}`);
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  if (notAfter.getTime() <= now) throw new CertificateAuthorityError(`${source.cert}: the CA expired on ${notAfter.toISOString()}`);
  const signature = signatureFor(key, source.key);
  let subject: forge.asn1.Asn1;
  let keyIdentifier: string | undefined;
  try {
    const tbs = part(fromDer(cert.raw.toString('binary')), 0, 'the certificate');
    // The version is an explicit [0] before the serial, present in every v3 certificate.
    const first = part(tbs, 0, 'the certificate');
    const offset = first.tagClass === asn1.Class.CONTEXT_SPECIFIC && first.type === 0 ? 1 : 0;
    subject = part(tbs, offset + 4, 'the certificate');
    keyIdentifier = subjectKeyIdentifier(tbs);
  } catch (err) {
    throw new CertificateAuthorityError(`${source.cert}: the certificate does not decode (${(err as Error).message})`);
  }
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1] ?? cert.subject;
  return { certPem: cert.toString(), commonName: cn, notBefore, notAfter, key, subject, ...(keyIdentifier ? { keyIdentifier } : {}), signature };
}

function signatureFor(key: KeyObject, file: string): SigningCa['signature'] {
  const type = key.asymmetricKeyType;
  if (type === 'rsa') {
    if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) throw new CertificateAuthorityError(`${file}: an RSA CA key needs at least 2048 bits`);
    return { oid: '1.2.840.113549.1.1.11', hash: 'sha256', withNullParameters: true };
  }
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { oid: '1.2.840.10045.4.3.2', hash: 'sha256', withNullParameters: false };
    if (curve === 'secp384r1') return { oid: '1.2.840.10045.4.3.3', hash: 'sha384', withNullParameters: false };
    throw new CertificateAuthorityError(`${file}: an EC CA key must be on P-256 or P-384 (it is on ${curve ?? 'an unnamed curve'})`);
  }
  throw new CertificateAuthorityError(`${file}: a CA key must be RSA or EC (P-256, P-384), not ${type ?? 'unknown'}`);
}

/** The subjectKeyIdentifier extension's bytes, if the certificate has one. */
function subjectKeyIdentifier(tbs: forge.asn1.Asn1): string | undefined {
  const nodes = Array.isArray(tbs.value) ? tbs.value : [];
  const wrapper = nodes.find((n) => n.tagClass === asn1.Class.CONTEXT_SPECIFIC && n.type === 3);
  // [3] EXPLICIT: the SEQUENCE of extensions is the tag's one element.
  const extensions = Array.isArray(wrapper?.value) ? wrapper.value[0] : undefined;
  for (const extension of Array.isArray(extensions?.value) ? extensions.value : []) {
    const id = part(extension, 0, 'an extension');
    if (typeof id.value !== 'string' || asn1.derToOid(id.value) !== SUBJECT_KEY_IDENTIFIER_OID) continue;
    const octets = (extension.value as forge.asn1.Asn1[]).at(-1);
    if (typeof octets?.value !== 'string') return undefined;
    const inner = fromDer(octets.value);
    return typeof inner.value === 'string' ? inner.value : undefined;
  }
  return undefined;
}

export interface IssuedDeviceCertificate {
  certPem: string;
  /** Hex, as openssl prints it (upper case). */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * A device certificate for the request's key, CN `deviceId`, valid from `notBefore` to `notAfter` (cut to the
 * CA's own validity).
 */
export function issueDeviceCertificate(
  ca: SigningCa,
  request: SigningRequest,
  deviceId: string,
  validity: { notBefore: Date; notAfter: Date },
): IssuedDeviceCertificate {
  checkDeviceId(deviceId);
  // Whole seconds, as the certificate holds them: what is reported is what was issued.
  const notBefore = wholeSeconds(Math.max(validity.notBefore.getTime(), ca.notBefore.getTime()));
  const notAfter = wholeSeconds(Math.min(validity.notAfter.getTime(), ca.notAfter.getTime()));
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new CertificateAuthorityError(`the CA is valid only until ${ca.notAfter.toISOString()}: no certificate can be issued within it`);
  }
  const subjectKey = part(request.subjectPublicKeyInfo, 1, 'the public key');
  if (typeof subjectKey.value !== 'string') throw new CertificateAuthorityError('the public key does not decode');
  const rsa = request.key.type === 'rsa';

  const cert = pki.createCertificate();
  // A stand-in for forge's layout: the request's own SubjectPublicKeyInfo replaces it below (forge writes RSA keys only).
  cert.publicKey = STAND_IN_KEY;
  const serial = randomSerialNumber();
  cert.serialNumber = serial;
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  cert.setSubject([{ name: 'commonName', value: deviceId }]);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    // An EC key does not encipher: keyEncipherment is for RSA key transport.
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: rsa, critical: true },
    { name: 'extKeyUsage', clientAuth: true },
    { name: 'subjectKeyIdentifier', value: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, keyIdOf(subjectKey.value)) },
    ...(ca.keyIdentifier !== undefined ? [{ name: 'authorityKeyIdentifier', keyIdentifier: ca.keyIdentifier }] : []),
  ]);
  const algorithm = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(ca.signature.oid).getBytes()),
    // RSA's AlgorithmIdentifier carries a NULL; ECDSA's has no parameters (RFC 5758).
    ...(ca.signature.withNullParameters ? [asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')] : []),
  ]);
  // forge writes the signature algorithm from siginfo (replaced below, with the parameters ECDSA needs).
  cert.siginfo.algorithmOid = ca.signature.oid;
  const tbs = toBeSigned(cert);
  const fields = tbs.value as forge.asn1.Asn1[];
  // version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, extensions
  fields[2] = algorithm;
  fields[3] = ca.subject;
  fields[6] = request.subjectPublicKeyInfo;
  const tbsDer = asn1.toDer(tbs).getBytes();
  const signature = sign(ca.signature.hash, Buffer.from(tbsDer, 'binary'), ca.key).toString('binary');
  const whole = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    algorithm,
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, `\u0000${signature}`),
  ]);
  const certPem = forge.pem.encode({ type: 'CERTIFICATE', body: asn1.toDer(whole).getBytes() }, { maxline: 64 });
  return { certPem, serial: serial.toUpperCase(), notBefore, notAfter };
}

const wholeSeconds = (ms: number): Date => new Date(Math.floor(ms / 1000) * 1000);

/** RFC 5280's key identifier, method 1: SHA-1 of the subjectPublicKey bits (the BIT STRING without its unused-bits byte). */
function keyIdOf(bitString: string): string {
  const md = forge.md.sha1.create();
  md.update(bitString.slice(1));
  return md.digest().getBytes();
}

const STAND_IN_KEY = pki.setRsaPublicKey(new forge.jsbn.BigInteger('1'), new forge.jsbn.BigInteger('65537'));
