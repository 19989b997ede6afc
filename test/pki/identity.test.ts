/**
 * loadIdentity on real files made by the development CA: a good identity loads; a missing, unreadable, broken,
 * mismatched, expired or misused file is an IdentityError naming that file and the problem, before any TLS.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDevCa, devCaFromPem, issueDeviceCertificate, issueServerCertificate, writeDevPki, writeIssued } from '../../src/pki/dev-ca.js';
import { IdentityError, loadIdentity, type IdentityFiles, type IdentityProblem } from '../../src/pki/identity.js';
import { OpensslPki, type CertificateRequest, type OpensslCertificate } from '../support/openssl-pki.js';
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
      expectProblem(
        () => loadIdentity(files({ keyFile: loose })),
        loose,
        'permissions',
        new RegExp(`private key .* has mode 0${mode.toString(8)}: other users can read it \\(chmod 600\\)`),
      );
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
    expectProblem(() => loadIdentity(files({ issuerFile: foreignFile })), car.certFile, 'chain', /does not chain to the issuer CA .*foreign\/ca\.crt/);
    assert.equal(loadIdentity(files({ issuerFile: caFile })).commonName, 'car-7');
    // The broker's CA may be another one than the client certificate's issuer (a different PKI for the broker).
    assert.equal(loadIdentity(files({ caFile: foreignFile })).commonName, 'car-7');
    // With requireIssuer (as the agent loads it), the certificate must be issued by caFile's CA when no issuer is given.
    expectProblem(
      () => loadIdentity(files({ caFile: foreignFile, requireIssuer: true })),
      car.certFile,
      'chain',
      /is not issued by the CA in .*foreign\/ca\.crt \(it names CN=identity test CA\)/,
    );
    assert.equal(loadIdentity(files({ caFile: foreignFile, issuerFile: caFile, requireIssuer: true })).commonName, 'car-7');
    assert.equal(loadIdentity(files({ requireIssuer: true })).commonName, 'car-7');
  });

  it("refuses a chain where a device certificate (not a CA) signed another device's", () => {
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
      /certificate #1 of its chain: CN=car-9 issued CN=car-7 but is not a CA \(basicConstraints cA is not set\)/,
    );
  });

  it('a CA written to files can be read back and issue more devices', () => {
    const pkiDir = makeTempDir('dev-pki-');
    const written = writeDevPki(pkiDir, { identities: ['car-1'] });
    const reread = devCaFromPem(readFileSync(written.caFile, 'utf8'), readFileSync(written.caKeyFile, 'utf8'));
    const later = writeIssued(pkiDir, 'car-2', issueDeviceCertificate(reread, 'car-2'));
    for (const [id, f] of [
      ['car-1', written.devices['car-1']!],
      ['car-2', later],
    ] as const) {
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

describe("the device chain, validated as the command signer's is (RFC 5280)", () => {
  const openssl = new OpensslPki();
  /** A device CA as a fleet's tooling makes it: devices directly under it, no intermediate. */
  const strictCa = openssl.issue({ name: 'strict device CA', ca: { pathLength: 0 } });
  const openCa = openssl.issue({ name: 'open device CA', ca: {} });
  const rsaCa = openssl.issue({ name: 'rsa device CA', key: 'rsa2048', ca: {} });

  /** A device certificate (client authentication) as `request` says. */
  function device(request: Omit<CertificateRequest, 'extendedKeyUsage'> & { extendedKeyUsage?: string }): OpensslCertificate {
    return openssl.issue({ extendedKeyUsage: 'clientAuth', ...request });
  }

  /** The identity files of `leaf` followed by `intermediates`, trusting `ca` as the broker CA. */
  function chainFiles(leaf: OpensslCertificate, intermediates: OpensslCertificate[], ca: OpensslCertificate): IdentityFiles {
    const certFile = write(`${leaf.name}-chain.crt`, [leaf, ...intermediates].map((c) => c.certPem).join(''));
    return { certFile, keyFile: leaf.keyFile, caFile: ca.certFile };
  }

  it('[14.3] a device certificate through an intermediate under a device CA with pathLenConstraint 0 is refused', () => {
    const intermediate = openssl.issue({ name: 'rogue intermediate', issuer: strictCa, ca: {} });
    const car = device({ name: 'car-31', issuer: intermediate });
    const files = chainFiles(car, [intermediate], strictCa);
    const rule = /the broker CA CN=strict device CA allows 0 intermediate CAs below it \(pathLenConstraint 0\), the chain has 1 \(CN=rogue intermediate\)/;
    // At start (the broker CA anchors it), as rotation checks it (requireIssuer), and with the device CA as issuerFile.
    expectProblem(() => loadIdentity(files), files.certFile, 'chain', rule);
    expectProblem(() => loadIdentity({ ...files, requireIssuer: true }), files.certFile, 'chain', rule);
    expectProblem(
      () => loadIdentity({ ...files, caFile, issuerFile: strictCa.certFile, requireIssuer: true }),
      files.certFile,
      'chain',
      /the issuer CA CN=strict device CA allows 0 intermediate CAs below it \(pathLenConstraint 0\)/,
    );
    // An intermediate's own limit counts too.
    const level1 = openssl.issue({ name: 'level 1', issuer: openCa, ca: { pathLength: 0 } });
    const level2 = openssl.issue({ name: 'level 2', issuer: level1, ca: {} });
    const deep = device({ name: 'car-31', issuer: level2 });
    const deepFiles = chainFiles(deep, [level2, level1], openCa);
    expectProblem(
      () => loadIdentity(deepFiles),
      deepFiles.certFile,
      'chain',
      /the intermediate CA CN=level 1 allows 0 intermediate CAs below it \(pathLenConstraint 0\), the chain has 1 \(CN=level 2\)/,
    );
    // Within every limit: loads, directly under the strict CA and through an intermediate under an open one.
    assert.equal(loadIdentity({ ...chainFiles(device({ name: 'car-31', issuer: strictCa }), [], strictCa), requireIssuer: true }).commonName, 'car-31');
    assert.equal(loadIdentity({ ...chainFiles(device({ name: 'car-31', issuer: level1 }), [level1], openCa), requireIssuer: true }).commonName, 'car-31');
  });

  it('[14.3] a device certificate signed with SHA-1 is refused', () => {
    const sha1 = device({ name: 'car-32', issuer: rsaCa, digest: 'sha1' });
    const files = chainFiles(sha1, [], rsaCa);
    expectProblem(
      () => loadIdentity(files),
      files.certFile,
      'chain',
      /CN=car-32 is signed with sha1WithRSAEncryption: certificates signed with SHA-1 are refused/,
    );
    const ecSha1 = device({ name: 'car-32', issuer: openCa, digest: 'sha1' });
    const ecFiles = chainFiles(ecSha1, [], openCa);
    expectProblem(() => loadIdentity({ ...ecFiles, requireIssuer: true }), ecFiles.certFile, 'chain', /CN=car-32 is signed with ecdsa-with-SHA1/);
    // An intermediate signed with SHA-1.
    const sha1Intermediate = openssl.issue({ name: 'sha1 intermediate', issuer: rsaCa, ca: {}, key: 'rsa2048', digest: 'sha1' });
    const under = chainFiles(device({ name: 'car-32', issuer: sha1Intermediate }), [sha1Intermediate], rsaCa);
    expectProblem(() => loadIdentity(under), under.certFile, 'chain', /CN=sha1 intermediate is signed with sha1WithRSAEncryption/);
    assert.equal(loadIdentity(chainFiles(device({ name: 'car-32', issuer: rsaCa, digest: 'sha384' }), [], rsaCa)).commonName, 'car-32');
  });

  it('[14.3] an intermediate without keyCertSign is refused, naming the rule; so is a device CA without it', () => {
    const crlOnly = openssl.issue({ name: 'crl-only intermediate', issuer: openCa, ca: {}, keyUsage: 'critical, cRLSign' });
    const files = chainFiles(device({ name: 'car-33', issuer: crlOnly }), [crlOnly], openCa);
    expectProblem(
      () => loadIdentity(files),
      files.certFile,
      'chain',
      /the intermediate CA CN=crl-only intermediate issued CN=car-33 but may not sign certificates: its key usage lacks keyCertSign/,
    );
    // The device CA given as issuerFile (the broker CA being another).
    const noCertSign = openssl.issue({ name: 'device CA without keyCertSign', ca: {}, keyUsage: 'critical, digitalSignature, cRLSign' });
    const direct = chainFiles(device({ name: 'car-33', issuer: noCertSign }), [], openCa);
    expectProblem(
      () => loadIdentity({ ...direct, issuerFile: noCertSign.certFile, requireIssuer: true }),
      direct.certFile,
      'chain',
      /the issuer CA CN=device CA without keyCertSign issued CN=car-33 but may not sign certificates: its key usage lacks keyCertSign/,
    );
  });

  it('[14.3] a critical extension the agent does not process, anywhere in the device chain, is refused', () => {
    const odd = openssl.issue({ name: 'odd intermediate', issuer: openCa, ca: {}, extra: ['1.3.6.1.4.1.55555.1 = critical, ASN1:NULL'] });
    const files = chainFiles(device({ name: 'car-34', issuer: odd }), [odd], openCa);
    expectProblem(
      () => loadIdentity(files),
      files.certFile,
      'chain',
      /CN=odd intermediate carries a critical extension this agent does not process \(1\.3\.6\.1\.4\.1\.55555\.1\)/,
    );
    const oddLeaf = chainFiles(device({ name: 'car-34', issuer: openCa, extra: ['1.3.6.1.4.1.55555.2 = critical, ASN1:NULL'] }), [], openCa);
    expectProblem(
      () => loadIdentity(oddLeaf),
      oddLeaf.certFile,
      'chain',
      /CN=car-34 carries a critical extension this agent does not process \(1\.3\.6\.1\.4\.1\.55555\.2\)/,
    );
  });

  it('[14.3] a device certificate that is a CA, or has a key outside the documented kinds, is refused', () => {
    // A CA as a car's identity could issue certificates naming other cars.
    const asCa = chainFiles(device({ name: 'car-35', issuer: openCa, ca: {}, keyUsage: 'critical, digitalSignature, keyCertSign' }), [], openCa);
    expectProblem(() => loadIdentity(asCa), asCa.certFile, 'usage', /CN=car-35 is a CA certificate, not a device's/);
    for (const [key, message] of [
      ['P-192', /its key is ECDSA on prime192v1/],
      ['secp256k1', /its key is ECDSA on secp256k1/],
      ['rsa1024', /its key is RSA of 1024 bits/],
    ] as const) {
      const weak = chainFiles(device({ name: `car-${key}`, issuer: openCa, key }), [], openCa);
      expectProblem(() => loadIdentity(weak), weak.certFile, 'invalid', new RegExp(`CN=car-${key} may not be a device's TLS identity: ${message.source}`));
    }
    for (const key of ['P-256', 'P-384', 'P-521', 'ed25519', 'rsa2048'] as const) {
      assert.equal(loadIdentity(chainFiles(device({ name: `car-${key}`, issuer: openCa, key }), [], openCa)).commonName, `car-${key}`, key);
    }
  });
});
