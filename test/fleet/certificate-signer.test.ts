/**
 * The certificate signer's parts in-process: the bounded queue under a flood (driven through a stand-in for the
 * broker client, so how many requests arrive at once is the test's choice, not the network's), and what the CA issues
 * (EC and RSA CAs and requests, validity never beyond the CA's, a random serial), checked by openssl.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import { CertificateSigner } from '../../src/fleet/certificate-signer.js';
import { IssuedKeys } from '../../src/fleet/issued-keys.js';
import { SigningPolicy } from '../../src/fleet/signing-policy.js';
import { loadSigningCa, type SigningCa } from '../../src/pki/certificate-authority.js';
import { createCsr, createDeviceKey } from '../../src/pki/csr.js';
import { createDevCa } from '../../src/pki/dev-ca.js';
import { OpensslPki } from '../support/openssl-pki.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

const DAY_MS = 86_400_000;

function capturedLog(): { lines: string[]; log: { info: (m: string) => void; warn: (m: string) => void; error: (m: string) => void } } {
  const lines: string[] = [];
  return {
    lines,
    log: { info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`) },
  };
}

function devSigningCa(options: { validDays?: number } = {}): SigningCa {
  const ca = createDevCa(options);
  return loadSigningCa(ca.certPem, ca.keyPem, { cert: 'ca.crt', key: 'ca.key' });
}

describe('[18.signer] the signer in-process', () => {
  it('[18.signer] a flood of requests: at most the queue limit wait, the rest are dropped, counted and said once per flood; the kept ones are all decided', async () => {
    const { lines, log } = capturedLog();
    const policy = new SigningPolicy({ ca: devSigningCa(), issuedKeys: IssuedKeys.inMemory(), log, validityDays: 90, minIntervalMs: 0 });
    const client = Object.assign(new EventEmitter(), { publish: () => undefined, endAsync: () => Promise.resolve() });
    const signer = CertificateSigner.over(client as unknown as MqttClient, {
      url: 'mqtts://broker.invalid',
      protocol: 5,
      certFile: '',
      keyFile: '',
      caFile: '',
      policy,
      log,
      clientIdPrefix: 'backend/test',
      queueLimit: 8,
    });
    const flood = (count: number): void => {
      // All in one turn of the event loop, as a burst read from the socket arrives.
      for (let i = 0; i < count; i++) client.emit('message', 'vehicles/car-f/csr', Buffer.from(`flood ${i}`));
    };
    flood(100);
    assert.equal(signer.waiting, 8);
    assert.equal(signer.dropped, 92);
    await waitFor(() => policy.refused === 8 && signer.waiting === 0 && lines.some((l) => l.startsWith('warn dropped')), 'the queue to drain');
    flood(20);
    await waitFor(() => policy.refused === 16 && lines.filter((l) => l.startsWith('warn dropped')).length === 2, 'the second flood to drain');
    const said = lines.filter((l) => !l.includes('refused the signing request'));
    assert.deepEqual(said, [
      "warn 8 signing requests are waiting: dropping more until they are decided (the cars' waits run out)",
      'warn dropped 92 signing requests while the queue was full (92 since start)',
      "warn 8 signing requests are waiting: dropping more until they are decided (the cars' waits run out)",
      'warn dropped 12 signing requests while the queue was full (104 since start)',
    ]);
    // Messages on other topics are not requests.
    client.emit('message', 'vehicles/car-f/csr/extra', Buffer.from('x'));
    assert.equal(signer.waiting, 0);
    await signer.close();
  });

  it('[18.signer] an EC P-384 CA signs RSA and EC P-256 requests; validity never beyond the CA; serials random; openssl verifies', () => {
    const dir = makeTempDir('signer-ca-');
    const openssl = new OpensslPki();
    const ecCa = openssl.issue({ name: 'fleet EC CA', key: 'P-384', ca: { pathLength: 0 } });
    const ca = loadSigningCa(ecCa.certPem, ecCa.keyPem, { cert: ecCa.certFile, key: ecCa.keyFile });
    const now = Date.now();
    const { log } = capturedLog();
    const policy = new SigningPolicy({ ca, issuedKeys: IssuedKeys.inMemory(), log, validityDays: 825, minIntervalMs: 0, now: () => now });
    const ask = (deviceId: string, csr: string, requestId: string): string => {
      const decision = policy.decide(deviceId, Buffer.from(JSON.stringify({ requestId, deviceId, csr, ts: now })));
      assert.equal(decision.decision, 'issued', JSON.stringify(decision));
      return decision.certificate;
    };
    const ecRequest = execFileSync('openssl', ['req', '-new', '-key', openssl.issue({ name: 'car-ec', key: 'P-256' }).keyFile, '-subj', '/CN=car-ec'], {
      encoding: 'utf8',
    });
    const issued = [ask('car-rsa', createCsr('car-rsa', createDeviceKey()), 'r1'), ask('car-ec', ecRequest, 'r2')];
    const serials = new Set<string>();
    for (const [i, pem] of issued.entries()) {
      const file = path.join(dir, `${i}.crt`);
      writeFileSync(file, pem);
      execFileSync('openssl', ['verify', '-CAfile', ecCa.certFile, '-purpose', 'sslclient', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      const cert = new X509Certificate(pem);
      // 825 days asked, the CA (365 days) ends first.
      assert.equal(cert.validTo, new X509Certificate(ecCa.certPem).validTo);
      assert.equal(cert.ca, false);
      serials.add(cert.serialNumber);
    }
    assert.equal(serials.size, 2);

    // An RSA CA of 10 days: 90 asked, 10 given.
    const short = devSigningCa({ validDays: 10 });
    const shortPolicy = new SigningPolicy({ ca: short, issuedKeys: IssuedKeys.inMemory(), log, validityDays: 90, minIntervalMs: 0 });
    const decision = shortPolicy.decide(
      'car-s',
      Buffer.from(JSON.stringify({ requestId: 's1', deviceId: 'car-s', csr: createCsr('car-s', createDeviceKey()), ts: now })),
    );
    assert.equal(decision.decision, 'issued');
    assert.ok(decision.decision === 'issued' && Date.parse(decision.notAfter) <= short.notAfter.getTime());
    assert.ok(decision.decision === 'issued' && Date.parse(decision.notAfter) > now + 9 * DAY_MS);
  });
});
