/**
 * `dev-pki`: the development PKI the demo and the tests use (src/pki/dev-pki.ts makes it, as `npm start` does), in
 * --out, with a broker certificate that also covers the --broker-host names given. Keeps what exists, narrows key
 * modes to 0600, and says what it made or changed. Bad input (a device ID the agent refuses, --out not a folder) is
 * one ProvisionError line, before anything is written.
 */
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { isIP, SocketAddress } from 'node:net';
import path from 'node:path';
import { issueServerCertificate, writeIssued } from '../pki/dev-ca.js';
import { DEV_OPERATOR } from '../pki/command-pki.js';
import { ensureDevPki } from '../pki/dev-pki.js';
import { BACKEND_CA_NAME, BACKEND_IDENTITY } from '../pki/device-id.js';
import { PROJECT_ROOT, checkDeviceId } from './bundle.js';
import { ProvisionError, octal } from './files.js';

type Say = (line: string) => void;

export const DEFAULT_DEV_PKI_DIR = path.join(PROJECT_ROOT, 'certs', 'dev');
export const DEMO_DEVICE = 'demo-vehicle-001';

export interface DevPkiOptions {
  out: string;
  device: string;
  /** Names and addresses the broker certificate must cover; default localhost, 127.0.0.1, ::1. */
  brokerHosts?: string[];
}

const LOCAL_BROKER_HOSTS = ['localhost', '127.0.0.1', '::1'];

const DEV_PKI_FILES = (device: string): string[] => [
  'ca.crt',
  'ca.key',
  `${BACKEND_CA_NAME}.crt`,
  `${BACKEND_CA_NAME}.key`,
  'server.crt',
  'server.key',
  `${device}.crt`,
  `${device}.key`,
  `${BACKEND_IDENTITY}.crt`,
  `${BACKEND_IDENTITY}.key`,
  'command-ca.crt',
  'command-ca.key',
  `${DEV_OPERATOR}.crt`,
  `${DEV_OPERATOR}.key`,
];

/**
 * A host as a certificate's SAN can be compared with it: IP addresses in their canonical text (Node prints an IPv6
 * SAN in full, 0:0:0:0:0:0:0:1 for ::1), names in lower case (DNS names are case-insensitive).
 */
export function canonicalHost(host: string): string {
  const family = isIP(host);
  if (family === 0) return host.toLowerCase();
  return new SocketAddress({ address: host, family: family === 6 ? 'ipv6' : 'ipv4' }).address;
}

/**
 * The development PKI, as `npm start` makes it (ensureDevPki): root CA, broker certificate, the demo device, the
 * backend CA and the backend identity, the command CA and the operator ops-dev. Keeps what exists; says what it made.
 */
export function runDevPki(options: DevPkiOptions, say: Say): void {
  checkDeviceId(options.device);
  const out = path.resolve(options.out);
  if (existsSync(out) && !lstatSync(out).isDirectory()) throw new ProvisionError(`--out ${out} is not a folder`);
  const files = DEV_PKI_FILES(options.device);
  const before = new Set(files.filter((f) => existsSync(path.join(out, f))));
  const backendBefore = before.has(`${BACKEND_IDENTITY}.crt`) ? readFileSync(path.join(out, `${BACKEND_IDENTITY}.crt`), 'utf8') : undefined;
  // A folder left readable by others is narrowed to 0700: said, and counted, as the key modes it fixes are.
  let tightened = 0;
  const { ca } = ensureDevPki(out, options.device, (message, level) => {
    if (level !== 'warn') return;
    say(`  ${message}`);
    tightened++;
  });
  // An older dev PKI's backend certificate, from the device CA: ensureDevPki issued it again from the backend CA.
  const backendReissued = backendBefore !== undefined && readFileSync(path.join(out, `${BACKEND_IDENTITY}.crt`), 'utf8') !== backendBefore;
  // The given hosts on top of the local ones, which the demo on this machine keeps using.
  const hosts = options.brokerHosts && options.brokerHosts.length > 0 ? [...new Set([...LOCAL_BROKER_HOSTS, ...options.brokerHosts])] : undefined;
  let reissued = false;
  if (hosts) {
    const server = new X509Certificate(readFileSync(path.join(out, 'server.crt')));
    const covered = (server.subjectAltName ?? '').split(', ').map((entry) => canonicalHost(entry.replace(/^(DNS|IP Address):/, '')));
    if (!hosts.every((h) => covered.includes(canonicalHost(h)))) {
      writeIssued(out, 'server', issueServerCertificate(ca, { hosts }));
      reissued = true;
    }
  }
  for (const file of files) {
    const full = path.join(out, file);
    const made = !before.has(file);
    if (file.endsWith('.key')) {
      const mode = statSync(full).mode & 0o777;
      if (mode !== 0o600) {
        chmodSync(full, 0o600);
        say(`  ${file}: mode ${octal(mode)} -> 0600 (a private key is its owner's alone)`);
        tightened++;
      }
    }
    if (made) say(`  created ${file}${file.endsWith('.key') ? ' (0600)' : ''}`);
    else if (file.startsWith('server.') && reissued) say(`  re-issued ${file} for ${hosts!.join(', ')}`);
    else if (file.startsWith(`${BACKEND_IDENTITY}.`) && backendReissued) say(`  re-issued ${file} from the backend CA (it came from the device CA)`);
  }
  const created = files.filter((f) => !before.has(f)).length;
  const reissuedWhat = [...(reissued ? ['broker certificate'] : []), ...(backendReissued ? ['backend certificate'] : [])];
  say(
    created + tightened + reissuedWhat.length === 0
      ? `dev-pki: ${out} already holds the development PKI; nothing changed`
      : `dev-pki: development PKI in ${out} (${created} files created${reissuedWhat.length > 0 ? `, ${reissuedWhat.join(' and ')} re-issued` : ''}${tightened ? `, ${tightened} modes fixed` : ''}); not for production`,
  );
  say(
    `next: scripts/provision --device <id> --ca ${path.join(out, 'ca.crt')} --ca-key ${path.join(out, 'ca.key')} ` +
      `--command-ca ${path.join(out, 'command-ca.crt')} --broker mqtts://<broker host>:8883`,
  );
}
