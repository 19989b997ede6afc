/**
 * [14.4] A car can never be named like the backend (or like a file of the PKI itself): every place that issues or
 * accepts a device identity refuses it, with the rule that is broken. The broker side (a car certificate named
 * `backend` that exists anyway gets only a car's rights) is in test/uplink/broker-identity.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { createCsr, createDeviceKey, CsrError, signDeviceCsr } from '../../src/pki/csr.js';
import { createDevCa } from '../../src/pki/dev-ca.js';
import { deviceIdProblem, RESERVED_IDENTITIES } from '../../src/pki/device-id.js';
import { runProgramSync } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';

const RESERVED = ['backend', 'Backend', 'BACKEND', 'backend-ca', 'ca', 'server', 'command-ca', 'ops-dev'];

describe('[14.4] reserved identities', () => {
  it('the device ID rule: plain names pass; reserved names, wildcards, dots and control characters do not', () => {
    for (const ok of ['car-0042', 'truck.7', 'A_1', 'backend2', 'backends', 'my-backend', 'x'.repeat(64)]) assert.equal(deviceIdProblem(ok), null, ok);
    for (const name of RESERVED) assert.match(deviceIdProblem(name) ?? '', /is reserved/, name);
    assert.deepEqual([...RESERVED_IDENTITIES].sort(), ['backend', 'backend-ca', 'ca', 'command-ca', 'ops-dev', 'server']);
    for (const [bad, why] of [
      ['', /empty/],
      ['.', /must start with a letter or a digit/],
      ['..', /must start with a letter or a digit/],
      ['+', /"\+" is not allowed/],
      ['#', /"#" is not allowed/],
      ['car/1', /"\/" is not allowed/],
      ['car\u001b[2J', /"\\u001b" is not allowed/],
      ['x'.repeat(65), /65 characters/],
    ] as const) {
      assert.match(deviceIdProblem(bad) ?? '', why, JSON.stringify(bad));
    }
  });

  it('the agent refuses a device config whose deviceId is reserved, naming the rule', () => {
    const dir = makeTempDir('reserved-config-');
    const config = { deviceId: 'backend', buses: [{ name: 'can0', source: { type: 'sim' } }] };
    assert.throws(
      () => parseDeviceConfig(config, { file: path.join(dir, 'config.json'), baseDir: dir, checkFiles: false }),
      /deviceId: "backend" cannot be a device ID: 'backend' is reserved \(the fleet backend's identity\)/,
    );
  });

  it('the CA side refuses to sign a request that names a reserved identity, even when asked for that device', () => {
    const ca = createDevCa();
    const keyPem = createDeviceKey();
    for (const name of ['backend', 'ca']) {
      const csr = createCsr(name, keyPem);
      assert.throws(
        () => signDeviceCsr(ca, csr),
        (err: unknown) => err instanceof CsrError && /is reserved/.test(err.message),
        name,
      );
      assert.throws(
        () => signDeviceCsr(ca, csr, { deviceId: name }),
        (err: unknown) => err instanceof CsrError && /is reserved/.test(err.message),
        name,
      );
    }
  });

  it('provision refuses a reserved --device in one line, exit status 1, and writes nothing', () => {
    const work = makeTempDir('reserved-provision-');
    for (const name of ['backend', 'Backend', 'ops-dev']) {
      const bundle = path.join(work, name);
      const result = runProgramSync('scripts/provision', ['--device', name, '--csr-only', '--broker', 'mqtts://broker.example:8883', '--bundle', bundle]);
      assert.equal(result.status, 1, result.stdout);
      assert.equal(result.stdout, '');
      assert.match(
        result.stderr,
        new RegExp(`^telematics-provision: --device "${name}" cannot be a device ID: '${name.toLowerCase()}' is reserved[^\\n]*\\n$`),
      );
      assert.ok(!existsSync(bundle), 'nothing written');
    }
  });
});
