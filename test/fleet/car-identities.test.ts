/**
 * The simulated cars' identities (src/fleet/car-identities.ts): made once with node:crypto's RSA keys and the given
 * CA, reused by a later run, made again when they no longer fit (another CA, a key that does not match), and each one
 * a device identity the agent accepts (src/pki/identity.ts).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ensureCarIdentities } from '../../src/fleet/car-identities.js';
import { createDevCa, writeIssued } from '../../src/pki/dev-ca.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { makeTempDir } from '../support/temp.js';

describe("[18.sim] the simulated cars' certificates", () => {
  const dir = makeTempDir('car-identities-');
  const ca = writeIssued(path.join(dir, 'ca'), 'ca', createDevCa({ commonName: 'fleet sim test CA' }));
  const ids = ['sim-0001', 'sim-0002', 'sim-0003'];
  const options = { dir: path.join(dir, 'cars'), caCertFile: ca.certFile, caKeyFile: ca.keyFile, deviceIds: ids };

  it('[18.sim] issues one per car, CN = its device ID, which the agent loads as its identity; a second run reuses them', async () => {
    const first = await ensureCarIdentities(options);
    assert.deepEqual({ issued: first.issued, reused: first.reused }, { issued: 3, reused: 0 });
    for (const id of ids) {
      const files = first.files.get(id)!;
      const identity = loadIdentity({ ...files, caFile: ca.certFile, requireIssuer: true });
      assert.equal(identity.commonName, id);
      assert.equal(new X509Certificate(readFileSync(files.certFile)).publicKey.asymmetricKeyDetails?.modulusLength, 2048);
    }
    const before = ids.map((id) => readFileSync(first.files.get(id)!.certFile, 'utf8'));
    const second = await ensureCarIdentities(options);
    assert.deepEqual({ issued: second.issued, reused: second.reused }, { issued: 0, reused: 3 });
    assert.deepEqual(
      ids.map((id) => readFileSync(second.files.get(id)!.certFile, 'utf8')),
      before,
    );
  });

  it('[18.sim] makes again a certificate of another CA, and one whose key does not match', async () => {
    const files = (await ensureCarIdentities(options)).files;
    const other = writeIssued(path.join(dir, 'other'), 'other-ca', createDevCa({ commonName: 'another CA' }));
    // sim-0001: another CA's certificate; sim-0002: sim-0003's key.
    const foreign = await ensureCarIdentities({
      ...options,
      dir: path.join(dir, 'foreign'),
      caCertFile: other.certFile,
      caKeyFile: other.keyFile,
      deviceIds: ['sim-0001'],
    });
    copyFileSync(foreign.files.get('sim-0001')!.certFile, files.get('sim-0001')!.certFile);
    copyFileSync(foreign.files.get('sim-0001')!.keyFile, files.get('sim-0001')!.keyFile);
    copyFileSync(files.get('sim-0003')!.keyFile, files.get('sim-0002')!.keyFile);
    const again = await ensureCarIdentities(options);
    assert.deepEqual({ issued: again.issued, reused: again.reused }, { issued: 2, reused: 1 });
    for (const id of ids) assert.equal(loadIdentity({ ...again.files.get(id)!, caFile: ca.certFile, requireIssuer: true }).commonName, id);
  });

  it('[18.sim] names the CA file it cannot read', async () => {
    await assert.rejects(ensureCarIdentities({ ...options, caCertFile: path.join(dir, 'missing.crt') }), /--ca-cert .*missing\.crt: cannot be read \(ENOENT\)/);
  });
});
