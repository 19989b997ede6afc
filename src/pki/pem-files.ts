/**
 * Certificate and key files as the PKI scripts and the agent write them. Apart from the CA code (node-forge), so that
 * writing a command CA does not load it.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** A certificate with its private key, both PEM. */
export interface IssuedCertificate {
  certPem: string;
  keyPem: string;
}

export interface WrittenFiles {
  certFile: string;
  keyFile: string;
}

/** Writes `<dir>/<name>.crt` and `<dir>/<name>.key`, the key readable by its owner only (0600). */
export function writeIssued(dir: string, name: string, issued: IssuedCertificate): WrittenFiles {
  mkdirSync(dir, { recursive: true });
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  writeFileSync(certFile, issued.certPem, { mode: 0o644 });
  writeFileSync(keyFile, issued.keyPem, { mode: 0o600 });
  // The mode above only applies to a new file: an existing key keeps its mode otherwise.
  chmodSync(keyFile, 0o600);
  return { certFile, keyFile };
}
