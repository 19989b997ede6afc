/**
 * The development PKI that `npm start` with an embedded broker and `scripts/dev-pki` use, in one folder: a device CA,
 * a broker certificate for localhost, the demo device's certificate, a backend CA and the backend identity it issues,
 * and a command CA with an operator. Not for production: its CA keys sit beside the certificates.
 *
 * Creates what is missing and keeps what is there; the folder is made (or narrowed to) 0700 and keys are written 0600
 * (writeIssued, src/pki/pem-files.ts). A file that cannot be written throws the file system's error, naming the path.
 */
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { createDevCa, devCaFromPem, issueClientCertificate, issueDeviceCertificate, issueServerCertificate, writeIssued, type DevCa } from './dev-ca.js';
import { BACKEND_CA_NAME, BACKEND_IDENTITY } from './device-id.js';
import { COMMAND_CA_NAME, DEV_OPERATOR, writeDevelopmentKeys } from './command-pki.js';

/** One line about what was done, with its level: `info` for what was created, `warn` for a folder that had to be narrowed. */
type Say = (message: string, level: 'info' | 'warn') => void;

/** The files of the development PKI the embedded broker and the demo device use, and its CA. */
export interface DevPkiPaths {
  ca: DevCa;
  caFile: string;
  /** The CA of backend identities, which the embedded broker trusts beside the device CA. */
  backendCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  /** The backend identity (`backend`, from the backend CA): telematics-ops and the development signer use it. */
  backendCertFile: string;
  backendKeyFile: string;
  deviceCertFile: string;
  deviceKeyFile: string;
}

/**
 * Makes sure `certsDir` (mode 0700: it holds CA keys) holds a development CA, a broker certificate for localhost, a
 * certificate for `deviceId`, a backend CA and the backend identity it issues (to subscribe with mosquitto_sub, and
 * for telematics-ops), and a command CA with an operator to sign remote commands; creates what is missing, keeps
 * what is there.
 *
 * The backend has its own CA so that the broker tells the backend from a car by who issued the certificate, never by
 * its name: a car's certificate that happened to be called `backend` would still be a car's. A backend certificate
 * that an older version issued from the device CA is issued again from the backend CA.
 */
export function ensureDevPki(certsDir: string, deviceId: string, say: Say = () => undefined): DevPkiPaths {
  mkdirSync(certsDir, { recursive: true, mode: 0o700 });
  // mkdir's mode is cut by the umask, never widened, and an older version left it 0755: a folder of CA keys is its
  // owner's alone.
  const mode = statSync(certsDir).mode & 0o777;
  if (mode !== 0o700) {
    chmodSync(certsDir, 0o700);
    if (mode & 0o077) say(`the development PKI folder ${certsDir} was readable by others (mode ${mode.toString(8).padStart(4, '0')}); made it 0700`, 'warn');
  }
  const file = (name: string): string => path.join(certsDir, name);
  const ca = ensureCa(certsDir, 'ca', 'development CA', say);
  const backendCa = ensureCa(certsDir, BACKEND_CA_NAME, 'development backend CA', say, 'telematics-agent development backend CA');
  if (!existsSync(file('server.crt')) || !existsSync(file('server.key'))) {
    writeIssued(certsDir, 'server', issueServerCertificate(ca, { hosts: ['localhost', '127.0.0.1', '::1'] }));
  }
  if (!existsSync(file(`${deviceId}.crt`)) || !existsSync(file(`${deviceId}.key`))) {
    writeIssued(certsDir, deviceId, issueDeviceCertificate(ca, deviceId));
  }
  if (!existsSync(file(`${BACKEND_IDENTITY}.key`)) || !issuedBy(file(`${BACKEND_IDENTITY}.crt`), backendCa)) {
    writeIssued(certsDir, BACKEND_IDENTITY, issueClientCertificate(backendCa, BACKEND_IDENTITY));
  }
  // The command CA the car pins and an operator who can sign (telematics-ops send --certs-dir).
  if (!existsSync(file(`${COMMAND_CA_NAME}.crt`)) || !existsSync(file(`${DEV_OPERATOR}.crt`)) || !existsSync(file(`${DEV_OPERATOR}.key`))) {
    writeDevelopmentKeys(certsDir, DEV_OPERATOR);
    say(`created a development command CA and operator '${DEV_OPERATOR}' in ${certsDir} (not for production)`, 'info');
  }
  return {
    ca,
    caFile: file('ca.crt'),
    backendCaFile: file(`${BACKEND_CA_NAME}.crt`),
    serverCertFile: file('server.crt'),
    serverKeyFile: file('server.key'),
    backendCertFile: file(`${BACKEND_IDENTITY}.crt`),
    backendKeyFile: file(`${BACKEND_IDENTITY}.key`),
    deviceCertFile: file(`${deviceId}.crt`),
    deviceKeyFile: file(`${deviceId}.key`),
  };
}

/** The CA `<name>.crt`/`.key` in `dir`, created when either is missing. */
function ensureCa(dir: string, name: string, what: string, say: Say, commonName?: string): DevCa {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  if (existsSync(certFile) && existsSync(keyFile)) return devCaFromPem(readFileSync(certFile, 'utf8'), readFileSync(keyFile, 'utf8'));
  const ca = createDevCa(commonName !== undefined ? { commonName } : {});
  writeIssued(dir, name, ca);
  say(`created a ${what} in ${dir} (for the embedded broker; not for production)`, 'info');
  return ca;
}

/** Whether the certificate in `file` exists and was issued by `ca`. */
function issuedBy(file: string, ca: DevCa): boolean {
  if (!existsSync(file)) return false;
  try {
    const cert = new X509Certificate(readFileSync(file));
    const issuer = new X509Certificate(ca.certPem);
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}
