/**
 * The signer's chain validated as RFC 5280 does (issue 14, item 3), with real certificates made by openssl:
 * path length constraints of the pinned CA and of intermediates, keyCertSign and cA on every issuer, name chaining,
 * critical extensions, the signer's key kinds, and the hashes certificates are signed with. Each refusal names the
 * certificate and the rule.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCommand, signCommand } from '../../src/commands/envelope.js';
import { CommandVerifier, VerifyFailure } from '../../src/commands/verifier.js';
import { chainOf, OpensslPki, type KeyKind } from '../support/openssl-pki.js';

const pki = new OpensslPki();

function signed(signer: { certPem: string; keyPem: string }): ReturnType<typeof parseCommand> {
  return parseCommand(Buffer.from(signCommand({ deviceId: 'car', name: 'ping' }, signer).payload));
}

function refused(verifier: CommandVerifier, signer: { certPem: string; keyPem: string }, message: RegExp): void {
  assert.throws(
    () => verifier.verify(signed(signer)),
    (err: unknown) => {
      assert.ok(err instanceof VerifyFailure, String(err));
      assert.equal(err.reason, 'untrusted-signer');
      assert.match(err.message, message);
      return true;
    },
  );
}

describe('signer chain (RFC 5280)', () => {
  // A command CA as createCommandCa makes it: path length 0, operators directly under it.
  const strictRoot = pki.issue({ name: 'strict command CA', ca: { pathLength: 0 } });
  const openRoot = pki.issue({ name: 'open command CA', ca: {} });
  const oneLevelRoot = pki.issue({ name: 'one-level command CA', ca: { pathLength: 1 } });

  it('[14.3] an intermediate CA under a pinned command CA with pathLenConstraint 0 is refused', () => {
    const intermediate = pki.issue({ name: 'rogue intermediate', issuer: strictRoot, ca: {} });
    const operator = pki.issue({ name: 'mallory', issuer: intermediate });
    refused(
      new CommandVerifier(strictRoot.certPem),
      chainOf(operator, intermediate),
      /pinned command CA CN=strict command CA allows 0 intermediate CAs below it \(pathLenConstraint 0\), the chain has 1 \(CN=rogue intermediate\)/,
    );
    // Directly under it, an operator is fine.
    const alice = pki.issue({ name: 'alice', issuer: strictRoot });
    assert.equal(new CommandVerifier(strictRoot.certPem).verify(signed(chainOf(alice))).subject, 'CN=alice');
  });

  it("[14.3] a chain that violates an intermediate's path length is refused; one within every limit is accepted", () => {
    const level1 = pki.issue({ name: 'level 1', issuer: openRoot, ca: { pathLength: 0 } });
    const level2 = pki.issue({ name: 'level 2', issuer: level1, ca: {} });
    const operator = pki.issue({ name: 'bob', issuer: level2 });
    refused(
      new CommandVerifier(openRoot.certPem),
      chainOf(operator, level2, level1),
      /intermediate CA CN=level 1 allows 0 intermediate CAs below it \(pathLenConstraint 0\), the chain has 1 \(CN=level 2\)/,
    );
    // The pinned CA's own limit counts too: one level allowed, two given.
    const under = pki.issue({ name: 'under one-level', issuer: oneLevelRoot, ca: {} });
    const deeper = pki.issue({ name: 'deeper', issuer: under, ca: {} });
    const carol = pki.issue({ name: 'carol', issuer: deeper });
    refused(
      new CommandVerifier(oneLevelRoot.certPem),
      chainOf(carol, deeper, under),
      /pinned command CA CN=one-level command CA allows 1 intermediate CA below it \(pathLenConstraint 1\), the chain has 2/,
    );
    const dave = pki.issue({ name: 'dave', issuer: under });
    assert.equal(new CommandVerifier(oneLevelRoot.certPem).verify(signed(chainOf(dave, under))).subject, 'CN=dave');
  });

  it('[14.3] every issuer must be a CA allowed to sign certificates, the pinned CA included', () => {
    const notCa = pki.issue({ name: 'not a CA', issuer: openRoot, keyUsage: 'critical, digitalSignature, keyCertSign', extendedKeyUsage: 'codeSigning' });
    const underNotCa = pki.issue({ name: 'erin', issuer: notCa });
    refused(new CommandVerifier(openRoot.certPem), chainOf(underNotCa, notCa), /CN=not a CA issued CN=erin but is not a CA \(basicConstraints cA is not set\)/);
    const noCertSign = pki.issue({ name: 'crl only', issuer: openRoot, ca: {}, keyUsage: 'critical, cRLSign' });
    const frank = pki.issue({ name: 'frank', issuer: noCertSign });
    refused(
      new CommandVerifier(openRoot.certPem),
      chainOf(frank, noCertSign),
      /intermediate CA CN=crl only issued CN=frank but may not sign certificates: its key usage lacks keyCertSign/,
    );
    const pinnedNoCertSign = pki.issue({ name: 'pinned without keyCertSign', ca: {}, keyUsage: 'critical, digitalSignature, cRLSign' });
    const grace = pki.issue({ name: 'grace', issuer: pinnedNoCertSign });
    refused(
      new CommandVerifier(pinnedNoCertSign.certPem),
      chainOf(grace),
      /pinned command CA CN=pinned without keyCertSign issued CN=grace but may not sign certificates: its key usage lacks keyCertSign/,
    );
  });

  it('[14.3] names chain: a certificate whose key signed the signer under another name is not its issuer', () => {
    const real = pki.issue({ name: 'issuing CA', issuer: openRoot, ca: {} });
    const heidi = pki.issue({ name: 'heidi', issuer: real });
    const renamed = pki.issue({ name: 'another name', issuer: openRoot, ca: {}, keyOf: real });
    refused(
      new CommandVerifier(openRoot.certPem),
      chainOf(heidi, renamed),
      /the signer CN=heidi does not chain to the pinned command CA: it is issued by CN=issuing CA, neither a pinned command CA nor a certificate given in the chain/,
    );
    assert.equal(new CommandVerifier(openRoot.certPem).verify(signed(chainOf(heidi, real))).subject, 'CN=heidi');
  });

  it('[14.3] a critical extension the agent does not process is refused', () => {
    const odd = pki.issue({ name: 'odd intermediate', issuer: openRoot, ca: {}, extra: ['1.3.6.1.4.1.55555.1 = critical, ASN1:NULL'] });
    const ivan = pki.issue({ name: 'ivan', issuer: odd });
    refused(
      new CommandVerifier(openRoot.certPem),
      chainOf(ivan, odd),
      /CN=odd intermediate carries a critical extension this agent does not process \(1\.3\.6\.1\.4\.1\.55555\.1\)/,
    );
  });

  it('[14.3] signer keys outside the documented algorithms are refused: P-192, secp256k1, P-521, RSA 1024', () => {
    const verifier = new CommandVerifier(strictRoot.certPem);
    const cases: [KeyKind, RegExp][] = [
      ['P-192', /its key is ECDSA on prime192v1/],
      ['secp256k1', /its key is ECDSA on secp256k1/],
      ['P-521', /its key is ECDSA on secp521r1/],
      ['rsa1024', /its key is RSA of 1024 bits/],
    ];
    for (const [key, message] of cases) {
      const operator = pki.issue({ name: `operator ${key}`, issuer: strictRoot, key });
      refused(verifier, chainOf(operator), new RegExp(`the signer CN=operator ${key} may not sign commands: ${message.source}`));
    }
    for (const key of ['P-256', 'P-384', 'ed25519', 'rsa2048'] as const) {
      const operator = pki.issue({ name: `good ${key}`, issuer: strictRoot, key });
      assert.equal(verifier.verify(signed(chainOf(operator))).subject, `CN=good ${key}`, key);
    }
  });

  it('[14.3] certificates of the chain signed with SHA-1 or MD5 are refused', () => {
    const rsaRoot = pki.issue({ name: 'rsa command CA', key: 'rsa2048', ca: {} });
    const verifier = new CommandVerifier(rsaRoot.certPem);
    const sha1Leaf = pki.issue({ name: 'judy', issuer: rsaRoot, digest: 'sha1' });
    refused(verifier, chainOf(sha1Leaf), /CN=judy is signed with sha1WithRSAEncryption: certificates signed with SHA-1 are refused/);
    const sha1Intermediate = pki.issue({ name: 'sha1 intermediate', issuer: rsaRoot, ca: {}, key: 'rsa2048', digest: 'sha1' });
    const ken = pki.issue({ name: 'ken', issuer: sha1Intermediate });
    refused(verifier, chainOf(ken, sha1Intermediate), /CN=sha1 intermediate is signed with sha1WithRSAEncryption: certificates signed with SHA-1 are refused/);
    const ecSha1 = pki.issue({ name: 'leo', issuer: strictRoot, digest: 'sha1' });
    refused(new CommandVerifier(strictRoot.certPem), chainOf(ecSha1), /CN=leo is signed with ecdsa-with-SHA1/);
    const md5Leaf = pki.issue({ name: 'nina', issuer: rsaRoot, digest: 'md5' });
    refused(verifier, chainOf(md5Leaf), /CN=nina is signed with md5WithRSAEncryption: certificates signed with MD5 are refused/);
    const sha384 = pki.issue({ name: 'mike', issuer: rsaRoot, digest: 'sha384' });
    assert.equal(verifier.verify(signed(chainOf(sha384))).subject, 'CN=mike');
  });

  it('[14.L11] a refused chain is checked once: the same forged signer again costs a cache lookup', () => {
    const foreignRoot = pki.issue({ name: 'foreign CA', ca: {} });
    const forged = pki.issue({ name: 'forger', issuer: foreignRoot });
    const verifier = new CommandVerifier(strictRoot.certPem);
    const command = signed(chainOf(forged));
    refused(verifier, chainOf(forged), /does not chain to the pinned command CA/);
    for (let i = 0; i < 200; i++) assert.throws(() => verifier.verify(command), VerifyFailure);
    assert.equal(verifier.chainsChecked, 1);
    // A valid operator is checked once too.
    const alice = pki.issue({ name: 'alice again', issuer: strictRoot });
    for (let i = 0; i < 3; i++) verifier.verify(signed(chainOf(alice)));
    assert.equal(verifier.chainsChecked, 2);
  });
});
