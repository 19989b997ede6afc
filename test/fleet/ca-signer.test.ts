/**
 * `telematics-ops ca-signer`, the fleet's certificate signer, as a fleet runs it: a child process of the built CLI on
 * the backend listener of Debian's mosquitto with the shipped configuration and ACL (test/support/mosquitto.ts).
 *
 * - Rotation end to end: `rotateCertificate` sent with `telematics-ops send`, the car (the agent in-process) gets its
 *   certificate from the signer, reconnects with it, and the audit log holds the record.
 * - Each refusal (another car's CN, a reused key, too soon, a bad request, a too-small key) is one audit line with its
 *   reason and no answer; the signer goes on answering after each. A repeated request gets the same certificate.
 * - What it cannot start with is one line naming the option; SIGTERM stops it cleanly.
 */
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import forge from 'node-forge';
import type { CommandResult } from '../../src/commands/result.js';
import type { AuditRecord } from '../../src/fleet/signer-audit.js';
import { createCsr, createDeviceKey } from '../../src/pki/csr.js';
import { issueDeviceCertificate, writeIssued } from '../../src/pki/dev-ca.js';
import type { InProcessAgent } from '../support/agent-in-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { CommandPki, startCommandAgent } from '../support/commands.js';
import type { TestPki } from '../support/mosquitto.js';
import { OPS_CLI, runProgram } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

/** The signer as a child process, its log read as it comes. */
class SignerProcess {
  log = '';
  exit: { code: number | null; signal: string | null } | undefined;
  private readonly exited: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    readonly auditFile: string,
    readonly stateDir: string,
  ) {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.log += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.log += chunk));
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      }),
    );
  }

  static start(args: string[], auditFile: string, stateDir: string, env: NodeJS.ProcessEnv = process.env): SignerProcess {
    const child = spawn(process.execPath, [OPS_CLI, 'ca-signer', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    return new SignerProcess(child, auditFile, stateDir);
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  records(): AuditRecord[] {
    if (!existsSync(this.auditFile)) return [];
    return readFileSync(this.auditFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as AuditRecord);
  }

  async waitForLog(pattern: RegExp, what: string): Promise<void> {
    await waitFor(() => pattern.test(this.log) || !this.running, what, 30_000);
    assert.ok(this.running, `the signer exited (${JSON.stringify(this.exit)}) while waiting for ${what}:\n${this.log}`);
  }

  async waitForRecords(count: number): Promise<AuditRecord[]> {
    await waitFor(() => this.records().length >= count || !this.running, `${count} audit records`, 30_000);
    assert.ok(this.running, `the signer exited: ${this.log}`);
    return this.records();
  }

  async stop(): Promise<void> {
    if (this.running) this.child.kill('SIGTERM');
    await this.exited;
  }
}

/** The backend connection options of the CLIs, and the CA the signer holds (the test PKI's device CA). */
function signerArgs(pki: TestPki, backendUrl: string, stateDir: string, auditFile: string): string[] {
  const backend = pki.backend();
  return [
    '--broker',
    backendUrl,
    '--cert',
    backend.certFile,
    '--key',
    backend.keyFile,
    '--ca',
    pki.caFile,
    '--ca-cert',
    pki.caFile,
    '--ca-key',
    path.join(pki.dir, 'ca.key'),
    '--state',
    stateDir,
    '--audit',
    auditFile,
  ];
}

/** SHA-256 of a key's SubjectPublicKeyInfo, as the audit log writes it. */
function keyFingerprint(keyOrCertPem: string): string {
  const spki = keyOrCertPem.includes('CERTIFICATE')
    ? new X509Certificate(keyOrCertPem).publicKey.export({ type: 'spki', format: 'der' })
    : createPublicKey(keyOrCertPem).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

/** A signing request made by openssl (EC keys, which the project's own createCsr does not make). */
function opensslCsr(dir: string, name: string, keyOptions: string[], commonName: string): string {
  const keyFile = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['genpkey', ...keyOptions, '-out', keyFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  return execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/CN=${commonName}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('[18.signer] telematics-ops ca-signer against mosquitto with the shipped ACL', { timeout: 300_000 }, () => {
  const fleet = withBroker({ backend: 'vehicles/+/certificate' });
  const commandPki = new CommandPki();
  const stateDir = path.join(makeTempDir('ca-signer-'), 'state');
  const auditFile = path.join(stateDir, 'audit.jsonl');
  let signer: SignerProcess;
  let agent: InProcessAgent | undefined;
  const cars: MqttClient[] = [];
  fleet.beforeStop(async () => {
    for (const car of cars) await car.endAsync(true);
    await agent?.close();
    await signer?.stop();
  });

  before(async () => {
    signer = SignerProcess.start(signerArgs(fleet.pki, fleet.broker.backendUrl, stateDir, auditFile), auditFile, stateDir);
    await signer.waitForLog(/answering vehicles\/\+\/csr/, 'the signer to subscribe');
  });

  it('[18.signer] rotateCertificate sent with telematics-ops: the signer issues, the car reconnects with the new certificate, the audit log has the record', async () => {
    const pki = fleet.pki;
    const deviceId = 'car-rotating';
    const dir = makeTempDir('ca-signer-car-');
    const identity = {
      certFile: path.join(dir, 'certs', `${deviceId}.crt`),
      keyFile: path.join(dir, 'certs', `${deviceId}.key`),
      caFile: path.join(dir, 'certs', 'ca.crt'),
    };
    writeIssued(path.dirname(identity.certFile), deviceId, issueDeviceCertificate(pki.ca, deviceId));
    copyFileSync(pki.caFile, identity.caFile);
    agent = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId, identity, dir });
    const session = agent.dataPath.uplink!.session;
    const before = session.currentIdentity.fingerprint256;
    const connections = session.counters.connections;

    const backend = pki.backend();
    const sent = await runProgram('telematics-ops', [
      'send',
      '--device',
      deviceId,
      '--command',
      'rotateCertificate',
      '--params',
      '{"waitS":60}',
      '--wait',
      '--json',
      '--timeout',
      '120',
      '--broker',
      fleet.broker.backendUrl,
      '--cert',
      backend.certFile,
      '--key',
      backend.keyFile,
      '--ca',
      pki.caFile,
      '--operator-cert',
      commandPki.operatorFiles.certFile,
      '--operator-key',
      commandPki.operatorFiles.keyFile,
    ]);
    assert.equal(sent.status, 0, `${sent.stdout}\n${sent.stderr}\n${signer.log}`);
    const results = sent.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as CommandResult);
    const final = results.at(-1)!;
    assert.equal(final.status, 'SUCCEEDED');

    // The car is connected again, with the certificate on its disk, which the signer issued for its new key.
    await waitFor(() => session.state === 'connected', 'the car to be connected', 30_000);
    assert.equal(session.counters.connections, connections + 1);
    const certPem = readFileSync(identity.certFile, 'utf8');
    const cert = new X509Certificate(certPem);
    assert.notEqual(cert.fingerprint256, before);
    assert.equal(session.currentIdentity.fingerprint256, cert.fingerprint256);
    assert.ok(cert.verify(new X509Certificate(readFileSync(pki.caFile)).publicKey), 'issued by the CA the signer holds');
    assert.equal(cert.subject, `CN=${deviceId}`);
    // 90 days by default, from an hour ago.
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    assert.ok(Math.abs(days - (90 + 1 / 24)) < 1 / 1440, `valid ${days} days`);
    assert.ok(BigInt(`0x${cert.serialNumber}`) >= 2n ** 64n, `a random serial of more than 64 bits (${cert.serialNumber})`);

    const records = await signer.waitForRecords(1);
    const record = records.find((r) => r.device === deviceId)!;
    assert.deepEqual(record, {
      ts: record.ts,
      device: deviceId,
      requestId: final.id,
      decision: 'issued',
      reason: 'new',
      detail: 'a new certificate',
      serial: cert.serialNumber,
      notBefore: new Date(cert.validFrom).toISOString(),
      notAfter: new Date(cert.validTo).toISOString(),
      keyFingerprint: keyFingerprint(readFileSync(identity.keyFile, 'utf8')),
    });
    assert.equal(statSync(auditFile).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(stateDir, 'issued-keys.sqlite')).mode & 0o777, 0o600);
    assert.match(signer.log, new RegExp(`issued a certificate for '${deviceId}' \\(request ${final.id}\\), serial ${cert.serialNumber}`));
  });

  it("[18.signer] refuses another car's CN, a reused key, a request too soon, a bad request and a too-small key, each with its audit reason and no answer; a repeat gets the same certificate; it keeps answering", async () => {
    const pki = fleet.pki;
    const dir = makeTempDir('ca-signer-requests-');
    const answers = (deviceId: string, requestId: string): string[] =>
      fleet.backend.on(deviceId, 'certificate').flatMap((m) => {
        const answer = JSON.parse(m.payload.toString('utf8')) as { requestId: string; certificate: string };
        return answer.requestId === requestId ? [answer.certificate] : [];
      });
    /** A car's own connection on the cars' listener: the broker lets it publish only on vehicles/<its CN>/csr. */
    const connectCar = async (deviceId: string): Promise<MqttClient> => {
      const files = pki.client(deviceId);
      const client = await mqtt.connectAsync(fleet.broker.url, {
        protocolVersion: 5,
        clientId: deviceId,
        ca: readFileSync(pki.caFile),
        cert: readFileSync(files.certFile),
        key: readFileSync(files.keyFile),
        rejectUnauthorized: true,
        reconnectPeriod: 0,
      });
      cars.push(client);
      return client;
    };
    let sequence = 0;
    const request = async (
      car: MqttClient,
      deviceId: string,
      csr: string,
      options: { requestId?: string; payloadDevice?: string; raw?: string } = {},
    ): Promise<AuditRecord> => {
      const requestId = options.requestId ?? `req-${++sequence}`;
      const count = signer.records().length;
      const body = options.raw ?? JSON.stringify({ requestId, deviceId: options.payloadDevice ?? deviceId, csr, ts: Date.now() });
      await car.publishAsync(`vehicles/${deviceId}/csr`, body, { qos: 1 });
      const records = await signer.waitForRecords(count + 1);
      const record = records[count]!;
      assert.equal(record.device, deviceId);
      assert.equal(record.requestId, options.raw === undefined ? requestId : null);
      return record;
    };

    const carA = await connectCar('car-a');
    const keyA = createDeviceKey();
    const first = await request(carA, 'car-a', createCsr('car-a', keyA), { requestId: 'first-a' });
    assert.equal(first.decision, 'issued');
    assert.equal(first.keyFingerprint, keyFingerprint(keyA));
    await waitFor(() => answers('car-a', 'first-a').length === 1, "car-a's certificate");
    const issued = answers('car-a', 'first-a')[0]!;

    // The same request again (a lost answer): the same certificate, not a refusal.
    const repeat = await request(carA, 'car-a', createCsr('car-a', keyA), { requestId: 'first-a' });
    assert.deepEqual([repeat.decision, repeat.reason, repeat.serial], ['issued', 'repeat', first.serial]);
    await waitFor(() => answers('car-a', 'first-a').length === 2, 'the repeated answer');
    assert.equal(answers('car-a', 'first-a')[1], issued);

    const refusals: [string, AuditRecord, RegExp][] = [];
    const refused = async (what: string, record: Promise<AuditRecord>, reason: string, detail: RegExp): Promise<void> => {
      const got = await record;
      assert.deepEqual([got.decision, got.reason], ['refused', reason], `${what}: ${JSON.stringify(got)}`);
      assert.match(got.detail, detail, what);
      assert.deepEqual([got.serial, got.notBefore, got.notAfter], [null, null, null], what);
      assert.ok(signer.running, `the signer is still running after ${what}`);
      refusals.push([what, got, detail]);
    };

    // car-b asks for a certificate naming car-a, in the request's CN or in the payload.
    const carB = await connectCar('car-b');
    await refused(
      "another car's CN",
      request(carB, 'car-b', createCsr('car-a', createDeviceKey())),
      'device-mismatch',
      /names 'car-a', not the sender 'car-b'/,
    );
    await refused(
      "another car's deviceId",
      request(carB, 'car-b', createCsr('car-a', createDeviceKey()), { payloadDevice: 'car-a' }),
      'device-mismatch',
      /deviceId 'car-a' is not the sender's 'car-b'/,
    );
    // car-a's key again, by car-a under another request or by car-b: never certified twice.
    await refused('a reused key', request(carA, 'car-a', createCsr('car-a', keyA)), 'key-reused', /certified before \(serial [0-9A-F]+, request first-a\)/);
    // car-b cannot even ask on car-a's topic: the broker's ACL drops it, and the signer never sees it.
    const seen = signer.records().length;
    const spoof = JSON.stringify({ requestId: 'spoofed', deviceId: 'car-a', csr: createCsr('car-a', createDeviceKey()), ts: Date.now() });
    await carB.publishAsync('vehicles/car-a/csr', spoof, { qos: 1 }).catch(() => undefined);
    await refused('a key certified for another car', request(carB, 'car-b', createCsr('car-b', keyA)), 'key-reused', /certified before/);
    // From the same car, so delivered in order: had the spoofed request gone through, its record would come first.
    assert.equal(signer.records().length, seen + 1, 'the spoofed request reached the signer');
    assert.deepEqual(answers('car-a', 'spoofed'), []);
    // A new key for car-a within the hour.
    await refused('a request too soon', request(carA, 'car-a', createCsr('car-a', createDeviceKey())), 'too-soon', /'car-a' got a certificate \d+ s ago/);
    // Bad requests.
    await refused('not JSON', request(carB, 'car-b', '', { raw: 'not json' }), 'malformed', /not JSON/);
    await refused(
      'not a signing request',
      request(carB, 'car-b', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'),
      'malformed',
      /does not decode/,
    );
    await refused('a request signed by another key', request(carB, 'car-b', tamperedCsr('car-b')), 'bad-signature', /not signed by the key it carries/);
    // Keys too weak: RSA 1024, an EC key on P-521... (P-256 and P-384 only).
    const small = forge.pki.privateKeyToPem(forge.pki.rsa.generateKeyPair({ bits: 1024, e: 0x10001 }).privateKey);
    await refused('an RSA 1024 key', request(carB, 'car-b', createCsr('car-b', small)), 'weak-key', /RSA key of 1024 bits/);
    const p521 = opensslCsr(dir, 'p521', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'], 'car-b');
    await refused('an EC key on P-521', request(carB, 'car-b', p521), 'weak-key', /EC key on secp521r1/);
    for (const [what, record] of refusals) {
      if (record.requestId !== null) assert.deepEqual(answers(record.device, record.requestId), [], `${what}: no answer`);
    }

    // Still answering: an EC P-256 request from car-b is issued, and the certificate chains to the CA.
    const ec = opensslCsr(dir, 'p256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'car-b');
    const last = await request(carB, 'car-b', ec, { requestId: 'ec-b' });
    assert.deepEqual([last.decision, last.reason], ['issued', 'new']);
    await waitFor(() => answers('car-b', 'ec-b').length === 1, "car-b's certificate");
    const certFile = path.join(dir, 'car-b.crt');
    writeFileSync(certFile, answers('car-b', 'ec-b')[0]!);
    execFileSync('openssl', ['verify', '-CAfile', pki.caFile, '-purpose', 'sslclient', certFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(signer.log, /refused the signing request from 'car-b' \(request req-\d+\): weak-key: /);
  });

  it('[18.signer] what it cannot start with is one line naming the option; SIGTERM stops it cleanly', async () => {
    const pki = fleet.pki;
    const dir = makeTempDir('ca-signer-start-');
    const args = (overrides: Record<string, string>): string[] => {
      const list = signerArgs(pki, fleet.broker.backendUrl, path.join(dir, 'state'), path.join(dir, 'audit.jsonl'));
      for (const [flag, value] of Object.entries(overrides)) list[list.indexOf(flag) + 1] = value;
      return list;
    };
    const openKey = path.join(dir, 'open-ca.key');
    copyFileSync(path.join(pki.dir, 'ca.key'), openKey);
    chmodSync(openKey, 0o644);
    const backendCaKey = path.join(dir, 'backend-ca.key');
    writeFileSync(backendCaKey, pki.backendCa.keyPem, { mode: 0o600 });
    const cases: [Record<string, string>, RegExp][] = [
      [{ '--ca-key': openKey }, /^telematics-ops: --ca-key .*open-ca\.key: readable by others \(mode 0644\); only the signer's user may read it/],
      [{ '--ca-key': path.join(dir, 'missing.key') }, /^telematics-ops: --ca-key .*missing\.key: file not found$/],
      [{ '--ca-key': backendCaKey }, /^telematics-ops: --ca-key .*backend-ca\.key: not the private key of --ca-cert /],
      [{ '--ca-cert': pki.backend().certFile }, /^telematics-ops: --ca-cert .*: not a CA certificate/],
    ];
    for (const [overrides, message] of cases) {
      const run = await runProgram('telematics-ops', ['ca-signer', ...args(overrides)]);
      assert.equal(run.status, 1, run.stderr);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr.trim(), message);
    }

    // Under systemd: no --state, the unit's StateDirectory= in $STATE_DIRECTORY holds the registry and the audit log.
    const unitState = path.join(dir, 'unit-state');
    const withoutState = args({}).slice(0, -4);
    assert.deepEqual(args({}).slice(-4, -3).concat(args({}).slice(-2, -1)), ['--state', '--audit']);
    const another = SignerProcess.start(withoutState, path.join(unitState, 'audit.jsonl'), unitState, { ...process.env, STATE_DIRECTORY: unitState });
    await another.waitForLog(/answering vehicles\/\+\/csr/, 'the second signer to subscribe');
    assert.ok(existsSync(path.join(unitState, 'issued-keys.sqlite')), another.log);
    assert.ok(existsSync(path.join(unitState, 'audit.jsonl')), another.log);
    await another.stop();
    assert.deepEqual(another.exit, { code: 0, signal: null }, another.log);
    assert.match(another.log, /SIGTERM: stopping \(0 issued, 0 refused, 0 dropped since start\)/);
  });
});

/** A CSR whose CN was changed after it was signed: its signature no longer verifies. */
function tamperedCsr(deviceId: string): string {
  const pem = createCsr(deviceId.replace(/.$/, 'x'), createDeviceKey());
  const der = Buffer.from(forge.pem.decode(pem)[0]!.body, 'binary');
  const at = der.indexOf(Buffer.from(deviceId.replace(/.$/, 'x')));
  der.write(deviceId, at, 'latin1');
  return forge.pem.encode({ type: 'CERTIFICATE REQUEST', body: der.toString('binary') });
}
