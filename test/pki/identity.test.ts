/**
 * loadIdentity on real files made by the development CA: a good identity loads; a missing, unreadable, broken,
 * mismatched, expired or misused file is an IdentityError naming that file and the problem, before any TLS.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  createDevCa,
  devCaFromPem,
  issueDeviceCertificate,
  issueServerCertificate,
  writeDevPki,
  writeIssued,
} from '../../src/pki/dev-ca.js';
import { IdentityError, loadIdentity, type IdentityFiles, type IdentityProblem } from '../../src/pki/identity.js';
import { makeTempDir } from '../support/temp.js';

const dir = makeTempDir('identity-');
const ca = createDevCa({ commonName: 'identity test CA' });
const caFile = writeIssued(dir, 'ca', ca).certFile;
const car = writeIssued(dir, 'car-7', issueDeviceCertificate(ca, 'car-7'));
const other = writeIssued(dir, 'car-8', issueDeviceCertificate(ca, 'car-8'));

function files(overrides: Partial<IdentityFiles> = {}): IdentityFiles {
  return { certFile: car.certFile, keyFile: car.keyFile, caFile, ...overrides };
}

function expectProblem(load: () => unknown, file: string, problem: IdentityProblem, message: RegExp): void {
  assert.throws(load, (err: unknown) => {
    assert.ok(err instanceof IdentityError, `not an IdentityError: ${String(err)}`);
    assert.equal(err.problem, problem, err.message);
    assert.equal(err.file, file);
    assert.match(err.message, message);
    assert.ok(err.message.includes(file), 'the message names the file');
    return true;
  });
}

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

describe('loadIdentity', () => {
  it('loads a device identity: PEMs, CN, expiry, fingerprint, no warnings', () => {
    const identity = loadIdentity(files());
    assert.equal(identity.commonName, 'car-7');
    assert.equal(identity.certPem, readFileSync(car.certFile, 'utf8'));
    assert.equal(identity.keyPem, readFileSync(car.keyFile, 'utf8'));
    assert.equal(identity.caPem, readFileSync(caFile, 'utf8'));
    const x509 = new X509Certificate(identity.certPem);
    assert.equal(identity.fingerprint256, x509.fingerprint256);
    assert.equal(identity.notAfter.getTime(), new Date(x509.validTo).getTime());
    assert.deepEqual(identity.warnings, []);
    assert.equal(statSync(car.keyFile).mode & 0o777, 0o600, 'writeIssued keeps the key to its owner');
  });

  it('says which file is missing', () => {
    for (const key of ['certFile', 'keyFile', 'caFile'] as const) {
      const missing = path.join(dir, `nowhere-${key}.pem`);
      expectProblem(() => loadIdentity(files({ [key]: missing })), missing, 'missing', /no such file/);
    }
  });

  it('says a file cannot be read', () => {
    // A path through a regular file fails for every user, root included.
    const through = path.join(car.certFile, 'cert.pem');
    expectProblem(() => loadIdentity(files({ certFile: through })), through, 'unreadable', /client certificate .* cannot be read \(ENOTDIR\)/);
    const folder = path.join(dir, 'a-folder');
    mkdirSync(folder, { recursive: true });
    expectProblem(() => loadIdentity(files({ keyFile: folder })), folder, 'invalid', /private key .*: is a directory/);
  });

  it('refuses a key that other users can read, naming its mode', () => {
    const loose = write('loose.key', readFileSync(car.keyFile, 'utf8'));
    for (const mode of [0o644, 0o640, 0o604]) {
      chmodSync(loose, mode);
      expectProblem(() => loadIdentity(files({ keyFile: loose })), loose, 'permissions', new RegExp(`private key .* has mode 0${mode.toString(8)}: other users can read it \\(chmod 600\\)`));
    }
    chmodSync(loose, 0o600);
    assert.deepEqual(loadIdentity(files({ keyFile: loose })).warnings, []);
    chmodSync(loose, 0o400);
    assert.equal(loadIdentity(files({ keyFile: loose })).commonName, 'car-7');
  });

  it('refuses files that are not what they should be', () => {
    const text = write('notes.txt', 'not a certificate\n');
    expectProblem(() => loadIdentity(files({ certFile: text })), text, 'invalid', /client certificate .*: not a PEM file/);
    const keyAsCert = car.keyFile;
    expectProblem(() => loadIdentity(files({ certFile: keyAsCert })), keyAsCert, 'invalid', /holds no PEM certificate/);
    const garbled = write('garbled.crt', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expectProblem(() => loadIdentity(files({ certFile: garbled })), garbled, 'invalid', /certificate #0 cannot be parsed/);
    const badKey = write('bad.key', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
    expectProblem(() => loadIdentity(files({ keyFile: badKey })), badKey, 'invalid', /not a usable unencrypted PEM key/);
    // A leaf certificate given as the broker's CA.
    expectProblem(() => loadIdentity(files({ caFile: other.certFile })), other.certFile, 'invalid', /broker CA .*: car-8 is not a CA certificate/);
  });

  it("refuses a key that is not the certificate's", () => {
    expectProblem(
      () => loadIdentity(files({ keyFile: other.keyFile })),
      other.keyFile,
      'mismatch',
      /private key .*car-8\.key does not belong to the client certificate .*car-7\.crt/,
    );
  });

  it('refuses an expired certificate and one not valid yet, and warns of one close to its end', () => {
    const now = new Date();
    const expired = writeIssued(dir, 'expired', issueDeviceCertificate(ca, 'car-7', { notBefore: new Date(now.getTime() - 10 * 86_400_000), validDays: 1 }));
    expectProblem(() => loadIdentity(files(expired)), expired.certFile, 'expired', /client certificate .* expired on /);
    const future = writeIssued(dir, 'future', issueDeviceCertificate(ca, 'car-7', { notBefore: new Date(now.getTime() + 86_400_000) }));
    expectProblem(() => loadIdentity(files(future)), future.certFile, 'not-yet-valid', /not valid before .*is the clock right/);
    const ending = writeIssued(dir, 'ending', issueDeviceCertificate(ca, 'car-7', { validDays: 5 }));
    const identity = loadIdentity(files(ending));
    assert.equal(identity.warnings.length, 1);
    assert.match(identity.warnings[0]!, /client certificate .*ending\.crt expires on /);
  });

  it('refuses a server certificate as a client identity (extended key usage)', () => {
    const server = writeIssued(dir, 'server', issueServerCertificate(ca, { hosts: ['broker.fleet.example'] }));
    expectProblem(() => loadIdentity(files(server)), server.certFile, 'usage', /does not allow client authentication/);
  });

  it('checks the client certificate against its issuer CA when one is given', () => {
    const foreign = createDevCa({ commonName: 'identity test CA' }); // same name, another key
    const foreignFile = writeIssued(path.join(dir, 'foreign'), 'ca', foreign).certFile;
    expectProblem(
      () => loadIdentity(files({ issuerFile: foreignFile })),
      car.certFile,
      'chain',
      /does not chain to the issuer CA .*foreign\/ca\.crt/,
    );
    assert.equal(loadIdentity(files({ issuerFile: caFile })).commonName, 'car-7');
    // The broker's CA may be another one than the client certificate's issuer (a different PKI for the broker).
    assert.equal(loadIdentity(files({ caFile: foreignFile })).commonName, 'car-7');
    // With requireIssuer (as the agent loads it), the certificate must be issued by caFile's CA when no issuer is given.
    expectProblem(() => loadIdentity(files({ caFile: foreignFile, requireIssuer: true })), car.certFile, 'chain', /is not issued by the CA in .*foreign\/ca\.crt \(it names CN=identity test CA\)/);
    assert.equal(loadIdentity(files({ caFile: foreignFile, issuerFile: caFile, requireIssuer: true })).commonName, 'car-7');
    assert.equal(loadIdentity(files({ requireIssuer: true })).commonName, 'car-7');
  });

  it('refuses a chain where a device certificate (not a CA) signed another device\'s', () => {
    // Another car's certificate and key, used as if they were a CA: what a car's own check must not accept.
    const thief = writeIssued(path.join(dir, 'thief'), 'car-9', issueDeviceCertificate(ca, 'car-9'));
    const asCa = devCaFromPem(readFileSync(thief.certFile, 'utf8'), readFileSync(thief.keyFile, 'utf8'));
    const forged = issueDeviceCertificate(asCa, 'car-7');
    const forgedDir = path.join(dir, 'forged');
    const files = writeIssued(forgedDir, 'car-7', { certPem: forged.certPem + readFileSync(thief.certFile, 'utf8'), keyPem: forged.keyPem });
    expectProblem(
      () => loadIdentity({ ...files, caFile, requireIssuer: true }),
      files.certFile,
      'chain',
      /certificate #1 of its chain is not a CA certificate, so it cannot issue #0/,
    );
  });

  it('a CA written to files can be read back and issue more devices', () => {
    const pkiDir = makeTempDir('dev-pki-');
    const written = writeDevPki(pkiDir, { identities: ['car-1'] });
    const reread = devCaFromPem(readFileSync(written.caFile, 'utf8'), readFileSync(written.caKeyFile, 'utf8'));
    const later = writeIssued(pkiDir, 'car-2', issueDeviceCertificate(reread, 'car-2'));
    for (const [id, f] of [['car-1', written.devices['car-1']!], ['car-2', later]] as const) {
      const identity = loadIdentity({ ...f, caFile: written.caFile, issuerFile: written.caFile });
      assert.equal(identity.commonName, id);
    }
    const server = new X509Certificate(readFileSync(written.server.certFile));
    assert.equal(server.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    assert.ok(server.checkIssued(new X509Certificate(readFileSync(written.caFile))));
    assert.throws(() => issueDeviceCertificate(reread, 'car/3'), /cannot be a device ID/);
    // [14.4] The backend's name, and the development PKI's own file names, are never a car's.
    for (const reserved of ['backend', 'Backend', 'ca', 'server', 'command-ca', 'ops-dev', 'backend-ca']) {
      assert.throws(() => issueDeviceCertificate(reread, reserved), /cannot be a device ID: '.*' is reserved/, reserved);
    }
  });
});
