/**
 * Certificate and key files as the PKI scripts and the agent write them. Apart from the CA code (node-forge), so that
 * writing a command CA does not load it.
 *
 * Each file is replaced whole (src/store/atomic-file.ts): a crash leaves the old file or the new one, never a torn
 * key; a link at its name is replaced, never written through; the key is 0600 from the moment it exists (never the
 * new secret in an older, wider file), the certificate 0644, whatever the umask; a folder made for them is 0700.
 * Failure: AtomicWriteError, naming the file.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { atomicWriteFile } from '../store/atomic-file.js';

/** A certificate with its private key, both PEM. */
export interface IssuedCertificate {
  certPem: string;
  keyPem: string;
}

export interface WrittenFiles {
  certFile: string;
  keyFile: string;
}

/**
 * Writes `<dir>/<name>.crt` and `<dir>/<name>.key`, the key readable by its owner only (0600). A folder it has to
 * create is its owner's only too (0700: it holds keys, CA keys among them); an existing one is left as it is.
 */
export function writeIssued(dir: string, name: string, issued: IssuedCertificate): WrittenFiles {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  atomicWriteFile(certFile, issued.certPem, { mode: 0o644 });
  atomicWriteFile(keyFile, issued.keyPem, { mode: 0o600 });
  return { certFile, keyFile };
}
