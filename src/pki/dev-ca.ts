/**
 * A development certificate authority: the CA, the broker's server certificate and device client certificates
 * (CN = device ID), so the mutual-TLS uplink can run on a laptop, in the tests and in the default run without an
 * operator's PKI. Production devices get their certificates from the fleet's own CA; nothing here is meant for it.
 *
 * RSA 2048 with SHA-256 (what node-forge signs with); forge generates the keys through Node's native crypto.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';
import { checkDeviceId } from './device-id.js';
import { writeIssued, type IssuedCertificate, type WrittenFiles } from './pem-files.js';

export { writeIssued, type IssuedCertificate, type WrittenFiles } from './pem-files.js';

const { pki } = forge;

/** A CA able to issue certificates: its PEMs and the forge objects that sign. */
export interface DevCa extends IssuedCertificate {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
}

export interface ValidityOptions {
  /** Default: one hour ago (some slack for a device clock behind the CA's). */
  notBefore?: Date;
  /** Default: `notBefore` plus `validDays`. */
  notAfter?: Date;
  /** Default 825 days for leaves (what browsers accept), 3650 for a CA. */
  validDays?: number;
}

export interface CaOptions extends ValidityOptions {
  /** Default 'telematics-agent development CA'. */
  commonName?: string;
}

export interface ServerCertificateOptions extends ValidityOptions {
  /** Default the first host. */
  commonName?: string;
  /** Names and addresses the broker answers at (SAN). Default ['localhost', '127.0.0.1', '::1']. */
  hosts?: string[];
}

const DAY_MS = 86_400_000;

/** A fresh development CA (self-signed, may sign leaves only: path length 0). */
export function createDevCa(options: CaOptions = {}): DevCa {
  const keys = pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
  const cert = pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerialNumber();
  setValidity(cert, options, 3650);
  const subject = [{ name: 'commonName', value: options.commonName ?? 'telematics-agent development CA' }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { cert, key: keys.privateKey, certPem: pki.certificateToPem(cert), keyPem: pki.privateKeyToPem(keys.privateKey) };
}

/** Reads back a CA written by `writeIssued` (to issue more device certificates later). */
export function devCaFromPem(certPem: string, keyPem: string): DevCa {
  const cert = pki.certificateFromPem(certPem);
  const key = pki.privateKeyFromPem(keyPem);
  return { cert, key, certPem, keyPem };
}

/** The broker's certificate: server authentication, every host in the SAN (names as DNS, addresses as IP). */
export function issueServerCertificate(ca: DevCa, options: ServerCertificateOptions = {}): IssuedCertificate {
  const hosts = options.hosts ?? ['localhost', '127.0.0.1', '::1'];
  if (hosts.length === 0) throw new RangeError('issueServerCertificate: at least one host is needed');
  const altNames = hosts.map((host) => (isIP(host) ? { type: 7, ip: host } : { type: 2, value: host }));
  return issue(ca, options.commonName ?? hosts[0]!, options, [
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
  ]);
}

/** A device's client certificate: CN is the device ID, which the broker takes as the username its ACL applies to. */
export function issueDeviceCertificate(ca: DevCa, deviceId: string, options: ValidityOptions = {}): IssuedCertificate {
  checkDeviceId(deviceId);
  return issueClientCertificate(ca, deviceId, options);
}

/**
 * A client certificate for any name, unchecked: for a service identity such as the backend's, which its own CA
 * issues (never the device CA: the broker tells a backend from a car by the CA, not by the name).
 */
export function issueClientCertificate(ca: DevCa, commonName: string, options: ValidityOptions = {}): IssuedCertificate {
  return issue(ca, commonName, options, [{ name: 'extKeyUsage', clientAuth: true }]);
}

export interface DevPkiFiles {
  caFile: string;
  caKeyFile: string;
  server: WrittenFiles;
  devices: Record<string, WrittenFiles>;
}

/** A whole development PKI in `dir`: ca.crt/ca.key, server.crt/.key and one `<deviceId>.crt/.key` per identity. */
export function writeDevPki(dir: string, options: { identities: string[]; hosts?: string[] }): DevPkiFiles {
  const ca = createDevCa();
  const caFiles = writeIssued(dir, 'ca', ca);
  const server = writeIssued(dir, 'server', issueServerCertificate(ca, options.hosts ? { hosts: options.hosts } : {}));
  const devices: Record<string, WrittenFiles> = {};
  for (const id of options.identities) devices[id] = writeIssued(dir, id, issueDeviceCertificate(ca, id));
  return { caFile: caFiles.certFile, caKeyFile: caFiles.keyFile, server, devices };
}

/**
 * A device certificate for a public key the device made itself (from its certificate signing request): the same
 * profile as issueDeviceCertificate, without the private key ever leaving the device.
 */
export function issueDeviceCertificateForKey(ca: DevCa, deviceId: string, publicKey: forge.pki.rsa.PublicKey, options: ValidityOptions = {}): string {
  checkDeviceId(deviceId);
  return sign(ca, deviceId, publicKey, options, [{ name: 'extKeyUsage', clientAuth: true }]);
}

function issue(ca: DevCa, commonName: string, validity: ValidityOptions, extensions: object[]): IssuedCertificate {
  const keys = pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
  return { certPem: sign(ca, commonName, keys.publicKey, validity, extensions), keyPem: pki.privateKeyToPem(keys.privateKey) };
}

function sign(ca: DevCa, commonName: string, publicKey: forge.pki.rsa.PublicKey, validity: ValidityOptions, extensions: object[]): string {
  const cert = pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerialNumber();
  setValidity(cert, validity, 825);
  cert.setSubject([{ name: 'commonName', value: commonName }]);
  cert.setIssuer(ca.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    ...extensions,
    { name: 'subjectKeyIdentifier' },
    // OpenSSL builds the chain by key identifier when it can: without it two CAs of the same name would be confused.
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.cert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(ca.key, forge.md.sha256.create());
  return pki.certificateToPem(cert);
}

function setValidity(cert: forge.pki.Certificate, options: ValidityOptions, defaultDays: number): void {
  const notBefore = options.notBefore ?? new Date(Date.now() - 3_600_000);
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = options.notAfter ?? new Date(notBefore.getTime() + (options.validDays ?? defaultDays) * DAY_MS);
}

/** 16 random bytes (at least 120 random bits), the top bit clear: DER integers are signed and a serial must be positive. */
export function randomSerialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}
