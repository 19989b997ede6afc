/** The device's own key and CSR, and the CA's side: only the named device, only a request signed by its key. */
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { createCsr, createDeviceKey, CsrError, readCsr, signDeviceCsr } from '../../src/pki/csr.js';
import { createDevCa } from '../../src/pki/dev-ca.js';

describe('device key and certificate signing request', () => {
  const ca = createDevCa({ commonName: 'csr test CA' });
  const keyPem = createDeviceKey();

  it('a CSR for the device ID, signed by the device key, becomes a client certificate for that key', () => {
    const csrPem = createCsr('car-0042', keyPem);
    assert.match(csrPem, /^-----BEGIN CERTIFICATE REQUEST-----/);
    assert.equal(readCsr(csrPem).commonName, 'car-0042');
    const cert = new X509Certificate(signDeviceCsr(ca, csrPem, { deviceId: 'car-0042', validDays: 30 }));
    assert.equal(cert.subject, 'CN=car-0042');
    assert.ok(cert.checkPrivateKey(createPrivateKey(keyPem)), 'the certificate carries the device key');
    assert.ok(cert.verify(new X509Certificate(ca.certPem).publicKey), 'signed by the CA');
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2']);
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    assert.equal(Math.round(days), 30);
  });

  it('refuses a CSR for another device, one whose signature does not match its key, and garbage', () => {
    assert.throws(
      () => signDeviceCsr(ca, createCsr('car-0043', keyPem), { deviceId: 'car-0042' }),
      (err: unknown) => err instanceof CsrError && /names 'car-0043', not the device 'car-0042'/.test(err.message),
    );
    // The same request with another key's public key in it: the self-signature no longer verifies.
    const other = createCsr('car-0042', createDeviceKey());
    const mine = createCsr('car-0042', keyPem);
    const body = (pem: string): Buffer => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const forged = Buffer.from(body(mine));
    // Swap the public key bytes (a 270-byte RSA SubjectPublicKeyInfo) for the other request's.
    const spki = (der: Buffer): number => der.indexOf(Buffer.from('30820122300d06092a864886f70d01010105000382010f00', 'hex'));
    body(other).copy(forged, spki(forged), spki(body(other)), spki(body(other)) + 294);
    const forgedPem = `-----BEGIN CERTIFICATE REQUEST-----\n${forged.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    assert.throws(() => readCsr(forgedPem), /not signed by the key it carries/);
    assert.throws(() => readCsr('hello'), /not a PEM certificate signing request/);
    assert.throws(() => signDeviceCsr(ca, createCsr('car/#', keyPem)), /cannot be a device ID/);
  });
});
