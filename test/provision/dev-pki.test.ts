/**
 * scripts/dev-pki as a firmware engineer runs it: the development PKI of the demo and the tests, with private keys
 * readable by their owner only, kept as they are on a second run, and usable as the agent uses them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { devCaFromPem, issueClientCertificate, writeIssued } from '../../src/pki/dev-ca.js';
import { ensureDevPki } from '../../src/pki/dev-pki.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { OPS_CLI, runProgramSync, type ProgramRun } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const devPki = (args: string[]): ProgramRun => runProgramSync('scripts/dev-pki', args);

/** name -> mode, size and content of every file in `dir`. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    const stats = statSync(path.join(dir, name));
    out[name] = `${(stats.mode & 0o7777).toString(8)} ${stats.mtimeMs} ${readFileSync(path.join(dir, name), 'base64')}`;
  }
  return out;
}

test('dev-pki writes the CA, broker, device, backend, command CA and operator files; keys 0600; a second run keeps them', () => {
  const out = path.join(makeTempDir('dev-pki-'), 'certs', 'dev');
  const first = devPki(['--out', out, '--device', 'bench-car-1']);
  assert.equal(first.status, 0, first.stderr);
  const expected = [
    'backend-ca.crt',
    'backend-ca.key',
    'backend.crt',
    'backend.key',
    'bench-car-1.crt',
    'bench-car-1.key',
    'ca.crt',
    'ca.key',
    'command-ca.crt',
    'command-ca.key',
    'ops-dev.crt',
    'ops-dev.key',
    'server.crt',
    'server.key',
  ];
  assert.deepEqual(readdirSync(out).sort(), expected);
  for (const name of expected) {
    const mode = statSync(path.join(out, name)).mode & 0o777;
    assert.equal(mode, name.endsWith('.key') ? 0o600 : 0o644, `${name} has mode ${mode.toString(8)}`);
  }
  // A folder holding CA keys: its owner only.
  assert.equal(statSync(out).mode & 0o777, 0o700);
  assert.match(first.stdout, /14 files created/);

  // What the agent and the embedded broker do with them.
  const identity = loadIdentity({
    certFile: path.join(out, 'bench-car-1.crt'),
    keyFile: path.join(out, 'bench-car-1.key'),
    caFile: path.join(out, 'ca.crt'),
    requireIssuer: true,
  });
  assert.equal(identity.commonName, 'bench-car-1');
  const server = new X509Certificate(readFileSync(path.join(out, 'server.crt')));
  assert.match(server.subjectAltName ?? '', /DNS:localhost/);
  // [14.4] The backend's certificate comes from the backend CA, never from the device CA that issues cars'.
  const backend = new X509Certificate(readFileSync(path.join(out, 'backend.crt')));
  assert.ok(backend.verify(new X509Certificate(readFileSync(path.join(out, 'backend-ca.crt'))).publicKey), 'backend is certified by the backend CA');
  assert.equal(backend.verify(new X509Certificate(readFileSync(path.join(out, 'ca.crt'))).publicKey), false, 'not by the device CA');
  const operator = new X509Certificate(readFileSync(path.join(out, 'ops-dev.crt')));
  assert.ok(operator.verify(new X509Certificate(readFileSync(path.join(out, 'command-ca.crt'))).publicKey), 'ops-dev is certified by the command CA');

  const before = snapshot(out);
  const second = devPki(['--out', out, '--device', 'bench-car-1']);
  assert.equal(second.status, 0, second.stderr);
  assert.match(second.stdout, /nothing changed/);
  assert.deepEqual(snapshot(out), before, 'a second run changes no file');
});

test('dev-pki tightens a key left readable by others, and re-issues the broker certificate for another host only', () => {
  const out = makeTempDir('dev-pki-');
  assert.equal(devPki(['--out', out]).status, 0);
  chmodSync(path.join(out, 'ca.key'), 0o644);
  const caBefore = readFileSync(path.join(out, 'ca.crt'), 'utf8');
  const result = devPki(['--out', out, '--broker-host', '192.168.7.2']);
  assert.equal(result.status, 0, result.stderr);
  assert.equal(statSync(path.join(out, 'ca.key')).mode & 0o777, 0o600);
  assert.match(result.stdout, /ca\.key: mode 0644 -> 0600/);
  const server = new X509Certificate(readFileSync(path.join(out, 'server.crt')));
  assert.match(server.subjectAltName ?? '', /IP Address:192\.168\.7\.2/);
  assert.match(server.subjectAltName ?? '', /DNS:localhost/, 'the local names stay covered');
  assert.equal(readFileSync(path.join(out, 'ca.crt'), 'utf8'), caBefore, 'the CA is kept');
  assert.ok(server.verify(new X509Certificate(caBefore).publicKey));
});

test('dev-pki --broker-host: a re-run with the same hosts changes nothing (::1 and IPv6 SANs compared as addresses)', () => {
  const out = makeTempDir('dev-pki-');
  const hosts = ['--broker-host', 'broker.fleet.example', '--broker-host', '192.168.7.2', '--broker-host', 'fd00:0:0:0::7'];
  const first = devPki(['--out', out, ...hosts]);
  assert.equal(first.status, 0, first.stderr);
  const san = new X509Certificate(readFileSync(path.join(out, 'server.crt'))).subjectAltName ?? '';
  // How Node prints them: in full, which a text comparison with '::1' never matched.
  assert.match(san, /IP Address:0:0:0:0:0:0:0:1/);
  assert.match(san, /IP Address:FD00:0:0:0:0:0:0:7/i);
  const before = snapshot(out);
  // The same hosts, one written another way (an address is the same address however it is written; names ignore case).
  const second = devPki(['--out', out, '--broker-host', 'Broker.Fleet.Example', '--broker-host', '192.168.7.2', '--broker-host', 'fd00::7']);
  assert.equal(second.status, 0, second.stderr);
  assert.match(second.stdout, /dev-pki: .* already holds the development PKI; nothing changed/);
  assert.deepEqual(snapshot(out), before, 'the broker certificate and key are kept');
  // A host not covered yet still gets a new certificate.
  const third = devPki(['--out', out, '--broker-host', '::2']);
  assert.equal(third.status, 0, third.stderr);
  assert.match(third.stdout, /broker certificate re-issued/);
});

test('dev-pki: a bad device ID is one line on stderr and exit status 1', () => {
  const out = makeTempDir('dev-pki-');
  const result = devPki(['--out', out, '--device', 'a/b']);
  assert.equal(result.status, 1);
  assert.equal(result.stdout, '');
  assert.match(result.stderr, /^telematics-provision: --device "a\/b" cannot be a device ID: "\/" is not allowed.*\n$/);
  assert.deepEqual(readdirSync(out), []);
});

test('[14.4] dev-pki: a reserved name (the backend, a file of the PKI itself) is refused as a device ID, in one line', () => {
  for (const name of ['backend', 'BACKEND', 'ca', 'server', 'command-ca', 'backend-ca', 'ops-dev']) {
    const out = makeTempDir('dev-pki-');
    const result = devPki(['--out', out, '--device', name]);
    assert.equal(result.status, 1, name);
    assert.match(result.stderr, new RegExp(`^telematics-provision: --device "${name}" cannot be a device ID: '${name.toLowerCase()}' is reserved.*\n$`));
    assert.deepEqual(readdirSync(out), [], `${name}: nothing written`);
  }
});

test('[14.4] dev-pki: a backend certificate an older version issued from the device CA is issued again from the backend CA', () => {
  const out = makeTempDir('dev-pki-');
  assert.equal(devPki(['--out', out]).status, 0);
  // What an older dev-pki left: backend.crt from ca.crt, no backend CA.
  const old = issueClientCertificate(devCaFromPem(readFileSync(path.join(out, 'ca.crt'), 'utf8'), readFileSync(path.join(out, 'ca.key'), 'utf8')), 'backend');
  writeIssued(out, 'backend', old);
  const again = devPki(['--out', out]);
  assert.equal(again.status, 0, again.stderr);
  const backend = new X509Certificate(readFileSync(path.join(out, 'backend.crt')));
  assert.ok(backend.verify(new X509Certificate(readFileSync(path.join(out, 'backend-ca.crt'))).publicKey));
});

test('[14.L4] the development PKI folder a first `npm start` makes is 0700 whatever the umask, its keys 0600; an older 0755 one is narrowed', () => {
  const certsDir = path.join(makeTempDir('dev-pki-start-'), 'certs', 'dev');
  const umask = process.umask(0o022);
  try {
    ensureDevPki(certsDir, 'demo-vehicle-001');
  } finally {
    process.umask(umask);
  }
  assert.equal(statSync(certsDir).mode & 0o777, 0o700);
  for (const name of readdirSync(certsDir).filter((n) => n.endsWith('.key'))) assert.equal(statSync(path.join(certsDir, name)).mode & 0o777, 0o600, name);
  // A folder an older version left 0755 is narrowed at the next start, which says so.
  chmodSync(certsDir, 0o755);
  const said: string[] = [];
  ensureDevPki(certsDir, 'demo-vehicle-001', (line) => said.push(line));
  assert.equal(statSync(certsDir).mode & 0o777, 0o700);
  assert.deepEqual(said, [`the development PKI folder ${certsDir} was readable by others (mode 0755); made it 0700`]);
});

test('[16.provision] a folder of keys the tools make is 0700 under umask 022, as docs/provisioning.md says: scripts/dev-pki --out, telematics-ops keys --out', () => {
  const root = makeTempDir('dev-pki-umask-');
  // As a shell with the usual umask runs them; the folders and their parents do not exist yet (a fresh clone).
  const underUmask022 = (file: string, args: string[]): ProgramRun => {
    const result = spawnSync('sh', ['-c', 'umask 022 && exec "$@"', 'sh', file, ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr, timedOut: false };
  };
  const devDir = path.join(root, 'script', 'certs', 'dev');
  const made = underUmask022(path.join(repoRoot, 'scripts', 'dev-pki'), ['--out', devDir]);
  assert.equal(made.status, 0, made.stderr);
  assert.equal(statSync(devDir).mode & 0o777, 0o700);
  const opsDir = path.join(root, 'ops', 'certs', 'ops');
  const keys = underUmask022(process.execPath, [OPS_CLI, 'keys', '--out', opsDir]);
  assert.equal(keys.status, 0, keys.stderr);
  assert.equal(statSync(opsDir).mode & 0o777, 0o700, 'a folder holding the command CA key');
  assert.equal(statSync(path.dirname(opsDir)).mode & 0o777, 0o700, 'and the parent it had to make');

  // An existing folder left 0755 is narrowed by dev-pki, which says so and counts it.
  chmodSync(devDir, 0o755);
  const again = devPki(['--out', devDir]);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(statSync(devDir).mode & 0o777, 0o700);
  assert.match(again.stdout, /the development PKI folder .* was readable by others \(mode 0755\); made it 0700/);
  assert.match(again.stdout, /\(0 files created, 1 modes fixed\)/);
});
