/**
 * Certificate rotation. First, the files: a power cut at each point of the swap is repaired at the next start.
 * Then the whole exchange through a real mosquitto (TLS with client certificates): the `rotateCertificate` command,
 * the signing request on vehicles/<id>/csr, a backend CA answering on vehicles/<id>/certificate, the checks, the
 * swap, the reconnection with the new pair, and the rollback when the broker does not take it.
 */
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { copyFileSync, existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import type { OperatorClient } from '../../src/commands/operator-client.js';
import type { CommandResult } from '../../src/commands/result.js';
import { CsrError, readCsr, signDeviceCsr } from '../../src/pki/csr.js';
import { createDevCa, devCaFromPem, issueDeviceCertificate, issueDeviceCertificateForKey, writeIssued, type DevCa } from '../../src/pki/dev-ca.js';
import { commitIdentity, repairIdentityFiles, stageIdentity, swapIdentity } from '../../src/pki/identity-files.js';
import { loadIdentity, type DeviceIdentity } from '../../src/pki/identity.js';
import { rotateCertificate, RotationFailure, type RotationLink } from '../../src/pki/rotation.js';
import type { InProcessAgent } from '../support/agent-in-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { CommandPki, operatorClient, startCommandAgent } from '../support/commands.js';
import { BackendSubscriber, TestPki } from '../support/mosquitto.js';
import { OpensslPki } from '../support/openssl-pki.js';
import { makeTempDir } from '../support/temp.js';
import { delay } from '../support/wait.js';

const fingerprint = (file: string): string => new X509Certificate(readFileSync(file)).fingerprint256;
const pairMatches = (certFile: string, keyFile: string): boolean =>
  new X509Certificate(readFileSync(certFile)).checkPrivateKey(createPrivateKey(readFileSync(keyFile)));

describe('identity files: a rotation cut short is repaired at start', () => {
  const ca = createDevCa({ commonName: 'files test CA' });

  /** A live pair and a staged new one, in a fresh folder. */
  function setUp(): { certFile: string; keyFile: string; oldFp: string; newFp: string } {
    const dir = makeTempDir('identity-files-');
    const live = writeIssued(dir, 'car', issueDeviceCertificate(ca, 'car'));
    const fresh = issueDeviceCertificate(ca, 'car');
    stageIdentity(live, fresh.certPem, fresh.keyPem);
    return { ...live, oldFp: fingerprint(live.certFile), newFp: new X509Certificate(fresh.certPem).fingerprint256 };
  }

  it('staged but not swapped: the live pair stays, the staged one is removed', () => {
    const files = setUp();
    assert.match(repairIdentityFiles(files)!, /removed the staged pair/);
    assert.equal(fingerprint(files.certFile), files.oldFp);
    assert.deepEqual(readdirSync(path.dirname(files.certFile)).sort(), ['car.crt', 'car.key']);
    assert.equal(repairIdentityFiles(files), undefined, 'nothing more to do');
  });

  it('stopped between the two renames of the swap: the previous pair comes back (the new one never connected)', () => {
    const files = setUp();
    // swapIdentity's steps up to the first rename.
    copyFileSync(files.keyFile, `${files.keyFile}.old`);
    copyFileSync(files.certFile, `${files.certFile}.old`);
    renameSync(`${files.keyFile}.new`, files.keyFile);
    assert.equal(pairMatches(files.certFile, files.keyFile), false);
    assert.match(repairIdentityFiles(files)!, /cut short during the swap: the previous certificate \(car\.crt\) is back in use/);
    assert.equal(fingerprint(files.certFile), files.oldFp);
    assert.ok(pairMatches(files.certFile, files.keyFile));
    assert.deepEqual(readdirSync(path.dirname(files.certFile)).sort(), ['car.crt', 'car.key']);
  });

  it('swapped but not committed (cut before the new pair connected): rolled back; with an unusable previous pair, kept', () => {
    const files = setUp();
    swapIdentity(files);
    assert.equal(fingerprint(files.certFile), files.newFp);
    assert.match(repairIdentityFiles(files)!, /before the new certificate had connected: the previous one \(car\.crt\) is back in use/);
    assert.equal(fingerprint(files.certFile), files.oldFp);
    assert.deepEqual(readdirSync(path.dirname(files.certFile)).sort(), ['car.crt', 'car.key']);

    const expiredOld = setUp();
    // Its own key for the expired certificate: the live pair must match for the swap's copy to be a usable "old".
    const expired = issueDeviceCertificate(ca, 'car', { notBefore: new Date(Date.now() - 10 * 86_400_000), validDays: 1 });
    writeFileSync(expiredOld.certFile, expired.certPem);
    writeFileSync(expiredOld.keyFile, expired.keyPem);
    swapIdentity(expiredOld);
    assert.match(repairIdentityFiles(expiredOld)!, /the previous pair is unusable, so the new one stays/);
    assert.equal(fingerprint(expiredOld.certFile), expiredOld.newFp);
    assert.deepEqual(readdirSync(path.dirname(expiredOld.certFile)).sort(), ['car.crt', 'car.key']);
  });

  it('stopped between the two renames of a rollback: completed with the old certificate', () => {
    const files = setUp();
    swapIdentity(files);
    assert.equal(fingerprint(files.certFile), files.newFp);
    renameSync(`${files.keyFile}.old`, files.keyFile); // the rollback's first rename only
    assert.match(repairIdentityFiles(files)!, /car\.crt restored from car\.crt\.old/);
    assert.equal(fingerprint(files.certFile), files.oldFp);
    assert.ok(pairMatches(files.certFile, files.keyFile));
  });

  it('[15.5] the temporary file of a .new or .old write a power cut stopped (part of a key) is removed at start', () => {
    const dir = makeTempDir('identity-files-tmp-');
    const live = writeIssued(dir, 'car', issueDeviceCertificate(ca, 'car'));
    const liveFp = fingerprint(live.certFile);
    // Cut while staging the key: only its temporary file, half written.
    writeFileSync(`${live.keyFile}.new.tmp`, '-----BEGIN PRIVATE KEY-----\nMIIE');
    assert.equal(repairIdentityFiles(live), 'identity: removed what a certificate rotation cut short while writing left (car.key.new.tmp)');
    assert.deepEqual(readdirSync(dir).sort(), ['car.crt', 'car.key']);
    // Cut while the swap copied the live key to .old: the staged pair stands beside it, never swapped in.
    const fresh = issueDeviceCertificate(ca, 'car');
    stageIdentity(live, fresh.certPem, fresh.keyPem);
    writeFileSync(`${live.keyFile}.old.tmp`, '-----BEGIN PRIVATE KEY-----\nMIIE');
    assert.match(repairIdentityFiles(live)!, /removed the staged pair/);
    assert.equal(fingerprint(live.certFile), liveFp);
    assert.deepEqual(readdirSync(dir).sort(), ['car.crt', 'car.key']);
    assert.equal(repairIdentityFiles(live), undefined, 'nothing more to do');
  });

  it('a pair that matches is never touched; a mismatch with nothing to repair it is left for loadIdentity to report', () => {
    const files = setUp();
    swapIdentity(files);
    commitIdentity(files);
    assert.equal(repairIdentityFiles(files), undefined);
    assert.equal(fingerprint(files.certFile), files.newFp);
    const stranger = issueDeviceCertificate(ca, 'car');
    writeFileSync(files.certFile, stranger.certPem);
    for (const suffix of ['.old', '.new'])
      for (const f of [files.certFile, files.keyFile]) if (existsSync(f + suffix)) renameSync(f + suffix, `${f + suffix}.aside`);
    writeFileSync(`${files.certFile}.old`, stranger.certPem);
    assert.equal(repairIdentityFiles(files), undefined);
    assert.equal(pairMatches(files.certFile, files.keyFile), false);
  });
});

describe('rotation against an in-memory link', () => {
  const brokerCa = createDevCa({ commonName: 'broker CA' });
  const deviceCa = createDevCa({ commonName: 'device CA' });

  /** A link whose "backend" signs each request with `signer` at once; reconnectWith resolves or rejects as told. */
  /** `intermediates`: PEM the "backend" sends after the certificate it signs. */
  function fakeLink(
    signer: DevCa,
    current: () => DeviceIdentity,
    options: { watchDelayMs?: number; onWatch?: () => void; intermediates?: string } = {},
  ): RotationLink & { reconnects: string[] } {
    const listeners = new Map<string, (payload: Buffer) => void>();
    const reconnects: string[] = [];
    return {
      reconnects,
      get currentIdentity() {
        return current();
      },
      async watch(topic, listener) {
        options.onWatch?.();
        if (options.watchDelayMs) await delay(options.watchDelayMs);
        listeners.set(topic, listener);
        return async () => void listeners.delete(topic);
      },
      async publish(topic, payload) {
        const request = JSON.parse(payload) as { requestId: string; deviceId: string; csr: string };
        const certificate = signDeviceCsr(signer, request.csr, { deviceId: request.deviceId }) + (options.intermediates ?? '');
        setImmediate(() => listeners.get(topic.replace(/csr$/, 'certificate'))?.(Buffer.from(JSON.stringify({ requestId: request.requestId, certificate }))));
      },
      async reconnectWith(identity) {
        reconnects.push(identity.fingerprint256);
      },
    };
  }

  function car(): { files: { certFile: string; keyFile: string; caFile: string; issuerFile: string }; identity: () => DeviceIdentity } {
    const dir = makeTempDir('rotation-link-');
    const live = writeIssued(dir, 'car-i', issueDeviceCertificate(deviceCa, 'car-i'));
    const caFile = writeIssued(dir, 'broker-ca', brokerCa).certFile;
    const issuerFile = writeIssued(dir, 'device-ca', deviceCa).certFile;
    const files = { ...live, caFile, issuerFile };
    return { files, identity: () => loadIdentity({ ...files, requireIssuer: true }) };
  }

  it('checks the new certificate against uplink.issuerFile, as the start does, when device certificates have their own CA', async () => {
    const { files, identity } = car();
    const link = fakeLink(deviceCa, identity);
    const outcome = await rotateCertificate({ deviceId: 'car-i', files, link, requestId: 'r1', waitMs: 5000 });
    assert.equal(fingerprint(files.certFile), outcome.current.fingerprint256);
    assert.deepEqual(link.reconnects, [outcome.current.fingerprint256]);
    assert.equal(loadIdentity({ ...files, requireIssuer: true }).commonName, 'car-i');

    // Signed by the broker's CA instead: refused before anything is swapped (the start would refuse it too).
    const before = fingerprint(files.certFile);
    await assert.rejects(
      rotateCertificate({ deviceId: 'car-i', files, link: fakeLink(brokerCa, identity), requestId: 'r2', waitMs: 5000 }),
      (err: unknown) => err instanceof RotationFailure && err.reason === 'bad-certificate' && /does not chain to the issuer CA/.test(err.message),
    );
    assert.equal(fingerprint(files.certFile), before);
  });

  it('[14.3] a certificate through an intermediate under the device CA (pathLenConstraint 0) is refused: bad-certificate, nothing changed', async () => {
    const { files, identity } = car();
    const before = fingerprint(files.certFile);
    // An intermediate CA the device CA (a development CA: path length 0) should never have issued, signing the request.
    const deviceCaFiles = {
      name: 'device CA',
      certPem: deviceCa.certPem,
      keyPem: deviceCa.keyPem,
      certFile: files.issuerFile,
      keyFile: path.join(path.dirname(files.issuerFile), 'device-ca.key'),
      kind: 'rsa2048' as const,
    };
    const intermediate = new OpensslPki().issue({ name: 'rotation intermediate', issuer: deviceCaFiles, ca: {}, key: 'rsa2048' });
    const link = fakeLink(devCaFromPem(intermediate.certPem, intermediate.keyPem), identity, { intermediates: intermediate.certPem });
    await assert.rejects(
      rotateCertificate({ deviceId: 'car-i', files, link, requestId: 'p1', waitMs: 5000 }),
      (err: unknown) =>
        err instanceof RotationFailure &&
        err.reason === 'bad-certificate' &&
        /the issuer CA CN=device CA allows 0 intermediate CAs below it \(pathLenConstraint 0\), the chain has 1 \(CN=rotation intermediate\)/.test(err.message),
    );
    assert.equal(fingerprint(files.certFile), before);
    assert.deepEqual(link.reconnects, []);
    assert.deepEqual(
      readdirSync(path.dirname(files.certFile))
        .filter((f) => f.startsWith('car-i'))
        .sort(),
      ['car-i.crt', 'car-i.key'],
      'nothing staged is left',
    );
  });

  it('an abort before the start or while subscribing ends it at once, nothing sent or changed', async () => {
    const { files, identity } = car();
    const before = fingerprint(files.certFile);
    const aborted = new AbortController();
    aborted.abort(new Error('command timed out'));
    await assert.rejects(
      rotateCertificate({ deviceId: 'car-i', files, link: fakeLink(deviceCa, identity), requestId: 'a1', waitMs: 5000, signal: aborted.signal }),
      (err: unknown) => err instanceof RotationFailure && err.reason === 'no-certificate' && /before the request was sent/.test(err.message),
    );
    // Aborted while its watch is being set up (after the new key, whose making is the slow part on a busy machine):
    // it ends at once, not after the 60 s wait.
    const during = new AbortController();
    let abortedAt = 0;
    const slow = fakeLink(deviceCa, identity, {
      watchDelayMs: 200,
      onWatch: () => {
        abortedAt = performance.now();
        during.abort(new Error('command timed out'));
      },
    });
    await assert.rejects(
      rotateCertificate({ deviceId: 'car-i', files, link: slow, requestId: 'a2', waitMs: 60_000, signal: during.signal }),
      (err: unknown) => err instanceof RotationFailure && err.reason === 'no-certificate' && /command timed out/.test(err.message),
    );
    assert.ok(abortedAt > 0 && performance.now() - abortedAt < 5000, 'ended within seconds of the abort, not after its 60 s wait');
    assert.equal(fingerprint(files.certFile), before);
    assert.deepEqual(slow.reconnects, []);
  });
});

/** The fleet's CA service: answers signing requests on vehicles/+/csr the way each test asks. */
class CaService {
  /** How to answer the next requests. */
  mode: 'sign' | 'other-device' | 'foreign-ca' | 'untrusted-by-broker' | 'garbage' | 'silent' = 'sign';
  readonly requests: { topic: string; body: { requestId: string; deviceId: string; csr: string } }[] = [];

  constructor(
    private readonly backend: BackendSubscriber,
    private readonly ca: DevCa,
    private readonly others: { foreign: DevCa; second: DevCa },
  ) {
    backend.client.on('message', (topic, payload) => {
      if (!/^vehicles\/[^/]+\/csr$/.test(topic)) return;
      const body = JSON.parse(payload.toString()) as { requestId: string; deviceId: string; csr: string };
      this.requests.push({ topic, body });
      void this.answer(body);
    });
  }

  private async answer(body: { requestId: string; deviceId: string; csr: string }): Promise<void> {
    let certificate: string;
    switch (this.mode) {
      case 'silent':
        return;
      case 'garbage':
        certificate = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
        break;
      case 'other-device':
        // The car's new key, another device's name: the car must not take it.
        certificate = issueDeviceCertificateForKey(this.ca, 'someone-else', readCsr(body.csr).publicKey);
        break;
      case 'foreign-ca':
        certificate = signDeviceCsr(this.others.foreign, body.csr, { deviceId: body.deviceId });
        break;
      case 'untrusted-by-broker':
        certificate = signDeviceCsr(this.others.second, body.csr, { deviceId: body.deviceId });
        break;
      default:
        certificate = signDeviceCsr(this.ca, body.csr, { deviceId: body.deviceId });
    }
    await this.backend.client.publishAsync(`vehicles/${body.deviceId}/certificate`, JSON.stringify({ requestId: body.requestId, certificate }), { qos: 1 });
  }
}

describe('rotateCertificate through mosquitto', { timeout: 120_000 }, () => {
  const pki = new TestPki('rotation test CA');
  const commandPki = new CommandPki();
  // A second CA the car also trusts (a fleet moving to a new CA), which this broker does not know yet.
  const second = createDevCa({ commonName: 'next fleet CA' });
  const foreign = createDevCa({ commonName: 'a CA nobody trusts' });
  const deviceId = 'car-rotate';
  const dir = makeTempDir('rotation-agent-');
  const identity = {
    certFile: path.join(dir, 'certs', `${deviceId}.crt`),
    keyFile: path.join(dir, 'certs', `${deviceId}.key`),
    caFile: path.join(dir, 'certs', 'ca.crt'),
  };
  let service: CaService;
  let agent: InProcessAgent;
  let ops: OperatorClient;
  const fleet = withBroker({ pki, backend: 'vehicles/+/csr' });
  fleet.beforeStop(async () => {
    await ops?.close();
    await agent?.close();
  });

  before(async () => {
    writeIssued(path.dirname(identity.certFile), deviceId, issueDeviceCertificate(pki.ca, deviceId));
    writeFileSync(identity.caFile, pki.ca.certPem + second.certPem);
    service = new CaService(fleet.backend, pki.ca, { foreign, second });
    agent = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId, identity, dir });
    ops = await operatorClient(fleet.broker, pki);
  });

  const rotate = (params: Record<string, unknown> = {}): Promise<{ results: CommandResult[]; final: CommandResult | undefined }> =>
    ops.send({ deviceId, name: 'rotateCertificate', params }, commandPki.operator, { timeoutMs: 60_000 });
  const snapshot = (): Record<string, string> =>
    Object.fromEntries(
      readdirSync(path.dirname(identity.certFile))
        .sort()
        .map((f) => [f, readFileSync(path.join(path.dirname(identity.certFile), f), 'utf8')]),
    );

  it('a new key on the car, its CSR to the backend, the certificate back: swapped in, connected with, the old pair gone', async () => {
    const before = fingerprint(identity.certFile);
    const oldKey = readFileSync(identity.keyFile, 'utf8');
    const connections = agent.dataPath.uplink!.session.counters.connections;
    const outcome = await rotate();
    assert.equal(outcome.final?.status, 'SUCCEEDED', JSON.stringify(outcome.final));
    // Results are sent at least once (those in flight at the reconnection come again); the client drops copies.
    assert.equal(new Set(outcome.results.map((r) => r.seq)).size, outcome.results.length);
    assert.deepEqual(
      outcome.results.filter((r) => r.status === 'IN_PROGRESS').map((r) => (r.detail as { step?: string } | undefined)?.step ?? null),
      [null, 'csr-sent', 'certificate-received', 'reconnecting'],
    );
    const detail = outcome.final.detail as { previous: { fingerprint256: string }; current: { fingerprint256: string; daysLeft: number; notAfter: string } };
    assert.equal(detail.previous.fingerprint256, before);
    assert.notEqual(detail.current.fingerprint256, before);
    assert.equal(detail.current.daysLeft, 824);
    // On disk: the new pair, the key readable by its owner only and not the old one; nothing left over.
    assert.equal(fingerprint(identity.certFile), detail.current.fingerprint256);
    assert.ok(pairMatches(identity.certFile, identity.keyFile));
    assert.notEqual(readFileSync(identity.keyFile, 'utf8'), oldKey);
    assert.equal(statSync(identity.keyFile).mode & 0o777, 0o600);
    assert.deepEqual(Object.keys(snapshot()), ['ca.crt', `${deviceId}.crt`, `${deviceId}.key`]);
    // The request carried the device ID and a CSR, never a private key.
    const request = service.requests.at(-1)!;
    assert.equal(request.topic, `vehicles/${deviceId}/csr`);
    assert.equal(request.body.deviceId, deviceId);
    assert.equal(request.body.requestId, outcome.final.id);
    assert.doesNotMatch(JSON.stringify(request.body), /PRIVATE KEY/);
    // Connected again, with the new certificate: the broker takes it, commands still run.
    const session = agent.dataPath.uplink!.session;
    assert.equal(session.counters.connections, connections + 1);
    assert.equal(session.currentIdentity.fingerprint256, detail.current.fingerprint256);
    assert.equal((await ops.send({ deviceId, name: 'ping' }, commandPki.operator, { timeoutMs: 10_000 })).final?.status, 'SUCCEEDED');
    const health = agent.dataPath.healthReport().certificate as { fingerprint256: string; daysLeft: number; expiringSoon: boolean };
    assert.deepEqual(health, { ...detail.current, expiringSoon: false });
  });

  it('refuses a certificate for another device, from a CA it does not pin, or unreadable: FAILED bad-certificate, nothing changed', async () => {
    const cases: [CaService['mode'], RegExp][] = [
      ['other-device', /the certificate is for 'someone-else', not for this device 'car-rotate'/],
      ['foreign-ca', /is not issued by the CA in .*ca\.crt/],
      ['garbage', /refused: /],
    ];
    for (const [mode, message] of cases) {
      const files = snapshot();
      service.mode = mode;
      const outcome = await rotate();
      assert.equal(outcome.final?.status, 'FAILED', mode);
      assert.equal(outcome.final.reason, 'bad-certificate', mode);
      assert.match(outcome.final.message!, message, mode);
      assert.deepEqual(snapshot(), files, `${mode}: the files are as they were`);
      assert.equal(agent.dataPath.uplink!.session.state, 'connected');
    }
  });

  it('the broker does not take the new pair: rolled back to the old one, reconnected with it', async () => {
    const files = snapshot();
    service.mode = 'untrusted-by-broker';
    const outcome = await rotate();
    assert.equal(outcome.final?.status, 'FAILED', JSON.stringify(outcome.results));
    assert.equal(outcome.final.reason, 'rolled-back');
    assert.match(outcome.final.message!, /the broker did not accept the new certificate .*; the previous one is back in use/);
    assert.deepEqual(snapshot(), files);
    service.mode = 'sign';
    assert.equal((await ops.send({ deviceId, name: 'ping' }, commandPki.operator, { timeoutMs: 15_000 })).final?.status, 'SUCCEEDED');
    assert.match(agent.log.join('\n'), /certificate rotation failed \(rolled-back\)/);
  });

  it('no answer within waitS: FAILED no-certificate, nothing changed; a late answer is ignored', async () => {
    const files = snapshot();
    service.mode = 'silent';
    const outcome = await rotate({ waitS: 1 });
    assert.equal(outcome.final?.reason, 'no-certificate');
    assert.match(outcome.final.message!, /no certificate for request .* within 1 s; nothing was changed/);
    // The backend answers now, too late: the car is no longer listening for it.
    const late = service.requests.at(-1)!.body;
    await fleet.backend.client.publishAsync(
      `vehicles/${deviceId}/certificate`,
      JSON.stringify({ requestId: late.requestId, certificate: signDeviceCsr(pki.ca, late.csr) }),
      { qos: 1 },
    );
    await delay(300);
    assert.deepEqual(snapshot(), files);
    assert.throws(() => signDeviceCsr(pki.ca, late.csr, { deviceId: 'car-other' }), CsrError);
  });
});
