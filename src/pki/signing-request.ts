/**
 * A certificate signing request (PKCS#10) as the CA reads it, for any key a car may make: RSA or EC. node-forge
 * reads RSA requests only, so the structure is taken apart with forge's ASN.1 reader and the key and the
 * self-signature are checked by Node's own crypto (which knows every key type OpenSSL does).
 *
 * Failure: anything that is not a well-formed request signed by the key it carries, with exactly one CN, throws a
 * SigningRequestError whose `problem` says which check failed ('malformed' or 'bad-signature') and whose message
 * says why in one line. Whether the key is acceptable (type, size) is the signer's policy, not a parse error:
 * `key` describes it.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import forge from 'node-forge';

const { asn1 } = forge;

/** Parts of node-forge its type declarations leave out (node-forge 1.x has them all). */
interface ForgeExtras {
  fromDer(der: string, options: { strict?: boolean; parseAllBytes?: boolean; decodeBitStrings?: boolean }): forge.asn1.Asn1;
  RDNAttributesAsArray(name: forge.asn1.Asn1): { type?: string; value?: unknown }[];
  getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1;
}
/** Reads DER; bit strings are kept as bytes unless asked (an encoding again must come out as it came). */
export const fromDer = (der: string, options: { strict?: boolean; parseAllBytes?: boolean } = {}): forge.asn1.Asn1 =>
  (asn1 as unknown as ForgeExtras).fromDer(der, { ...options, decodeBitStrings: false });
export const toBeSigned = (cert: forge.pki.Certificate): forge.asn1.Asn1 => (forge.pki as unknown as ForgeExtras).getTBSCertificate(cert);
const nameAttributes = (name: forge.asn1.Asn1): { type?: string; value?: unknown }[] => (forge.pki as unknown as ForgeExtras).RDNAttributesAsArray(name);

export type SigningRequestProblem = 'malformed' | 'bad-signature';

export class SigningRequestError extends Error {
  override readonly name = 'SigningRequestError';
  constructor(
    readonly problem: SigningRequestProblem,
    message: string,
  ) {
    super(message);
  }
}

/** The key a request carries, as a policy judges it. */
export interface RequestKey {
  /** `rsa`, `ec`, or what Node calls any other (`rsa-pss`, `ed25519`, ...). */
  type: string;
  /** RSA: the modulus length in bits. */
  bits?: number;
  /** EC: Node's curve name (`prime256v1` is P-256, `secp384r1` P-384). */
  curve?: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex: what `openssl pkey -pubout -outform DER | sha256sum` prints. */
  fingerprint: string;
}

export interface SigningRequest {
  /** The subject's CN: the device ID asked for. */
  commonName: string;
  key: RequestKey;
  publicKey: KeyObject;
  /** The SubjectPublicKeyInfo exactly as the request carries it, to be copied into the certificate. */
  subjectPublicKeyInfo: forge.asn1.Asn1;
}

/** The request signatures accepted: SHA-2 with RSA (PKCS#1 v1.5) or ECDSA. SHA-1 and MD5 are not. */
const SIGNATURE_HASH: Record<string, string> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

const COMMON_NAME_OID = '2.5.4.3';

/** A request's longest PEM: an RSA 16384 request is under 6 KiB. */
export const MAX_REQUEST_PEM = 16_384;

/** Parses `pem`, checks its structure, its CN and its self-signature (proof the requester holds the key). */
export function readSigningRequest(pem: string): SigningRequest {
  if (pem.length > MAX_REQUEST_PEM) throw new SigningRequestError('malformed', `the signing request is ${pem.length} characters, more than ${MAX_REQUEST_PEM}`);
  let der: string;
  try {
    const blocks = forge.pem.decode(pem);
    const block = blocks[0];
    if (blocks.length !== 1 || !block || (block.type !== 'CERTIFICATE REQUEST' && block.type !== 'NEW CERTIFICATE REQUEST')) {
      throw new Error('expected one CERTIFICATE REQUEST block');
    }
    der = block.body;
  } catch (err) {
    throw new SigningRequestError('malformed', `not a PEM certificate signing request (${(err as Error).message})`);
  }
  let info: forge.asn1.Asn1;
  let signatureOid: string;
  let signature: Buffer;
  let subject: forge.asn1.Asn1;
  let spki: forge.asn1.Asn1;
  try {
    // The request's info is encoded again to check its signature.
    const root = fromDer(der, { strict: true, parseAllBytes: true });
    info = part(root, 0, 'the request');
    subject = part(info, 1, 'the request info');
    spki = part(info, 2, 'the request info');
    signatureOid = asn1.derToOid(primitive(part(part(root, 1, 'the request'), 0, 'the signature algorithm'), asn1.Type.OID));
    const bitString = primitive(part(root, 2, 'the request'), asn1.Type.BITSTRING);
    if (bitString.charCodeAt(0) !== 0) throw new Error('the signature is not a whole number of bytes');
    signature = Buffer.from(bitString.slice(1), 'binary');
  } catch (err) {
    throw new SigningRequestError('malformed', `the signing request does not decode: ${(err as Error).message}`);
  }
  let publicKey: KeyObject;
  let spkiDer: Buffer;
  try {
    spkiDer = Buffer.from(asn1.toDer(spki).getBytes(), 'binary');
    publicKey = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (err) {
    throw new SigningRequestError('malformed', `the signing request's public key does not decode (${(err as Error).message})`);
  }
  const hash = SIGNATURE_HASH[signatureOid];
  if (hash === undefined)
    throw new SigningRequestError('bad-signature', `the signing request is signed with algorithm ${signatureOid}, not SHA-2 with RSA or ECDSA`);
  let verified: boolean;
  try {
    verified = verify(hash, Buffer.from(asn1.toDer(info).getBytes(), 'binary'), publicKey, signature);
  } catch {
    verified = false; // a signature of the wrong kind for the key
  }
  if (!verified) throw new SigningRequestError('bad-signature', 'the signing request is not signed by the key it carries');

  let names: { type?: string; value?: unknown }[];
  try {
    names = nameAttributes(subject);
  } catch (err) {
    throw new SigningRequestError('malformed', `the signing request's subject does not decode (${(err as Error).message})`);
  }
  const cns = names.filter((n) => n.type === COMMON_NAME_OID);
  // Two CNs would leave it to each reader which one names the device.
  if (cns.length !== 1 || typeof cns[0]!.value !== 'string' || cns[0]!.value === '') {
    throw new SigningRequestError(
      'malformed',
      `the signing request's subject has ${cns.length === 0 ? 'no CN' : 'more than one CN'} (it must name the device once)`,
    );
  }
  const details = publicKey.asymmetricKeyDetails ?? {};
  return {
    commonName: cns[0]!.value,
    key: {
      type: publicKey.asymmetricKeyType ?? 'unknown',
      ...(details.modulusLength !== undefined ? { bits: details.modulusLength } : {}),
      ...(details.namedCurve !== undefined ? { curve: details.namedCurve } : {}),
      fingerprint: createHash('sha256').update(spkiDer).digest('hex'),
    },
    publicKey,
    subjectPublicKeyInfo: spki,
  };
}

/** Element `index` of a SEQUENCE; throws naming `what`. */
export function part(node: forge.asn1.Asn1, index: number, what: string): forge.asn1.Asn1 {
  const element = node.tagClass === asn1.Class.UNIVERSAL && node.type === asn1.Type.SEQUENCE && Array.isArray(node.value) ? node.value[index] : undefined;
  if (element === undefined) throw new Error(`${what} is not a SEQUENCE of more than ${index} elements`);
  return element;
}

function primitive(node: forge.asn1.Asn1 | undefined, type: number): string {
  if (!node || node.tagClass !== asn1.Class.UNIVERSAL || node.type !== type || typeof node.value !== 'string') throw new Error(`expected ASN.1 type ${type}`);
  return node.value;
}
