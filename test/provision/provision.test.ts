/**
 * scripts/provision as a firmware engineer runs it: a car's identity and install bundle signed by a CA here, or a key
 * and CSR signed elsewhere (by openssl, as a fleet CA would) and completed later; and the one-line refusals of bad
 * input, which leave nothing behind.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import forge from 'node-forge';
import { loadDeviceConfig, parseDeviceConfig } from '../../src/config/device-config.js';
import { readCsr } from '../../src/pki/csr.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { runProgramSync, type ProgramRun } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';

function openssl(args: string[], cwd: string): void {
  const result = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  assert.equal(result.status, 0, `openssl ${args.join(' ')}: ${result.stderr}`);
}

/** relative path -> mode and content of every file under `dir`. */
function snapshot(dir: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(path.join(dir, rel)).sort()) {
    const child = rel ? `${rel}/${name}` : name;
    const stats = statSync(path.join(dir, child));
    if (stats.isDirectory()) Object.assign(out, { [`${child}/`]: (stats.mode & 0o7777).toString(8) }, snapshot(dir, child));
    else out[child] = `${(stats.mode & 0o7777).toString(8)} ${stats.mtimeMs} ${readFileSync(path.join(dir, child), 'base64')}`;
  }
  return out;
}

const BROKER = 'mqtts://broker.fleet.example:8883';
let work: string;
let pki: string;
const ca = (): string[] => ['--ca', path.join(pki, 'ca.crt'), '--ca-key', path.join(pki, 'ca.key'), '--command-ca', path.join(pki, 'command-ca.crt')];

before(() => {
  work = makeTempDir('provision-');
  pki = path.join(work, 'dev');
  const made = runProgramSync('scripts/dev-pki', ['--out', pki]);
  assert.equal(made.status, 0, made.stderr);
});

describe('provision with a CA', () => {
  let bundle: string;
  let first: ProgramRun;
  before(() => {
    bundle = path.join(work, 'car-0042');
    first = runProgramSync('scripts/provision', ['--device', 'car-0042', '--bundle', bundle, ...ca(), '--broker', BROKER]);
  });

  test('makes the device key (0600), a CSR for the device, and a certificate for that key chaining to the CA', () => {
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /bundle for car-0042 complete/);
    const key = path.join(bundle, 'identity', 'device.key');
    assert.equal(statSync(key).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(bundle, 'identity')).mode & 0o777, 0o700, "the folder of the key is its owner's only");
    assert.equal(readCsr(readFileSync(path.join(bundle, 'identity', 'device.csr'), 'utf8')).commonName, 'car-0042');
    const cert = new X509Certificate(readFileSync(path.join(bundle, 'identity', 'device.crt')));
    const caCert = new X509Certificate(readFileSync(path.join(pki, 'ca.crt')));
    assert.equal(cert.subject, 'CN=car-0042');
    assert.ok(cert.checkIssued(caCert) && cert.verify(caCert.publicKey), 'signed by the CA');
    assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(key))), 'for the device key');
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'client authentication');
    // The CSR carries the same key as the certificate.
    const csrInfo = readCsr(readFileSync(path.join(bundle, 'identity', 'device.csr'), 'utf8'));
    const csrKey = createPublicKey(forge.pki.publicKeyToPem(csrInfo.publicKey)).export({ type: 'spki', format: 'der' });
    assert.ok(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(csrKey));
    assert.equal(readFileSync(path.join(bundle, 'certs', 'broker-ca.crt'), 'utf8').trim(), readFileSync(path.join(pki, 'ca.crt'), 'utf8').trim());
    assert.equal(readFileSync(path.join(bundle, 'certs', 'command-ca.crt'), 'utf8').trim(), readFileSync(path.join(pki, 'command-ca.crt'), 'utf8').trim());
    // As the agent loads it at start, with the stricter check rotation applies.
    const identity = loadIdentity({
      certFile: path.join(bundle, 'identity', 'device.crt'),
      keyFile: key,
      caFile: path.join(bundle, 'certs', 'broker-ca.crt'),
      requireIssuer: true,
    });
    assert.equal(identity.commonName, 'car-0042');
  });

  test('the bundle config loads as the agent loads it, in place and at the paths flash installs it to', () => {
    const inPlace = loadDeviceConfig(path.join(bundle, 'config.json'));
    assert.equal(inPlace.deviceId, 'car-0042');
    const json = JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8')) as unknown;
    const onCar = parseDeviceConfig(json, { file: '/etc/telematics-agent/config.json', baseDir: '/etc/telematics-agent', checkFiles: false });
    assert.equal(onCar.uplink?.url, BROKER);
    assert.equal(onCar.uplink?.embeddedBroker, false);
    // The identity in a folder of its own, the one the agent may write on the car; the CAs apart from it.
    assert.equal(onCar.uplink?.certFile, '/etc/telematics-agent/identity/device.crt');
    assert.equal(onCar.uplink?.keyFile, '/etc/telematics-agent/identity/device.key');
    assert.equal(onCar.uplink?.caFile, '/etc/telematics-agent/certs/broker-ca.crt');
    assert.equal(onCar.commands?.caFile, '/etc/telematics-agent/certs/command-ca.crt');
    assert.equal(onCar.commands?.replayDbPath, '/var/lib/telematics-agent/commands.db');
    assert.equal(onCar.outbox?.path, '/var/lib/telematics-agent/outbox.db');
    assert.deepEqual(
      onCar.buses.map((b) => b.dbc),
      ['/etc/telematics-agent/dbc/demo_vehicle.dbc'],
    );
    assert.equal(onCar.status?.intervalMs, 60_000, 'one status line a minute in the journal');
    assert.ok(existsSync(path.join(bundle, 'dbc', 'demo_vehicle.dbc')));
  });

  test('the bundle carries the systemd unit install-service writes', () => {
    const printed = runProgramSync('scripts/install-service', ['--print']);
    assert.equal(printed.status, 0, printed.stderr);
    assert.equal(readFileSync(path.join(bundle, 'telematics-agent.service'), 'utf8'), printed.stdout);
  });

  test('a second run changes nothing: the same key, certificate and files', () => {
    const snap = snapshot(bundle);
    const again = runProgramSync('scripts/provision', ['--device', 'car-0042', '--bundle', bundle, ...ca(), '--broker', BROKER]);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /complete in .* \(nothing changed\)/);
    assert.deepEqual(snapshot(bundle), snap);
  });

  test('--new-key replaces the key, and the certificate with it', () => {
    const other = path.join(work, 'car-0099');
    assert.equal(runProgramSync('scripts/provision', ['--device', 'car-0099', '--bundle', other, ...ca(), '--broker', BROKER]).status, 0);
    const keyBefore = readFileSync(path.join(other, 'identity', 'device.key'), 'utf8');
    const renewed = runProgramSync('scripts/provision', ['--device', 'car-0099', '--bundle', other, ...ca(), '--broker', BROKER, '--new-key']);
    assert.equal(renewed.status, 0, renewed.stderr);
    const key = readFileSync(path.join(other, 'identity', 'device.key'), 'utf8');
    assert.notEqual(key, keyBefore);
    assert.ok(new X509Certificate(readFileSync(path.join(other, 'identity', 'device.crt'))).checkPrivateKey(createPrivateKey(key)));
    assert.equal(statSync(path.join(other, 'identity', 'device.key')).mode & 0o777, 0o600);
  });
});

describe('provision --csr-only, signed elsewhere, then --cert', () => {
  let bundle: string;
  before(() => {
    bundle = path.join(work, 'car-0043');
  });

  test('makes the key and the CSR, no certificate, and says what to do next', () => {
    const made = runProgramSync('scripts/provision', [
      '--device',
      'car-0043',
      '--bundle',
      bundle,
      '--csr-only',
      '--broker-ca',
      path.join(pki, 'ca.crt'),
      '--command-ca',
      path.join(pki, 'command-ca.crt'),
      '--broker',
      BROKER,
    ]);
    assert.equal(made.status, 0, made.stderr);
    assert.ok(!existsSync(path.join(bundle, 'identity', 'device.crt')));
    assert.equal(statSync(path.join(bundle, 'identity', 'device.key')).mode & 0o777, 0o600);
    assert.match(made.stdout, /awaits its certificate/);
    assert.match(made.stdout, /--cert <signed\.crt>/);
    // Its config is complete already.
    assert.equal(loadDeviceConfig(path.join(bundle, 'config.json')).deviceId, 'car-0043');
  });

  test('a certificate signed by openssl from the CSR completes the bundle; the key is untouched', () => {
    const keyBefore = readFileSync(path.join(bundle, 'identity', 'device.key'));
    writeFileSync(
      path.join(work, 'client.ext'),
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n',
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        path.join(bundle, 'identity', 'device.csr'),
        '-CA',
        path.join(pki, 'ca.crt'),
        '-CAkey',
        path.join(pki, 'ca.key'),
        '-days',
        '365',
        '-extfile',
        'client.ext',
        '-out',
        'car-0043.crt',
      ],
      work,
    );
    const done = runProgramSync('scripts/provision', ['--device', 'car-0043', '--bundle', bundle, '--cert', path.join(work, 'car-0043.crt')]);
    assert.equal(done.status, 0, done.stderr);
    assert.match(done.stdout, /bundle for car-0043 complete/);
    assert.equal(readFileSync(path.join(bundle, 'identity', 'device.crt'), 'utf8').trim(), readFileSync(path.join(work, 'car-0043.crt'), 'utf8').trim());
    assert.ok(readFileSync(path.join(bundle, 'identity', 'device.key')).equals(keyBefore));
    loadIdentity({
      certFile: path.join(bundle, 'identity', 'device.crt'),
      keyFile: path.join(bundle, 'identity', 'device.key'),
      caFile: path.join(bundle, 'certs', 'broker-ca.crt'),
      requireIssuer: true,
    });
  });

  test('a certificate for another key, another device or from another CA is refused, and the bundle keeps its own', () => {
    const kept = readFileSync(path.join(bundle, 'identity', 'device.crt'), 'utf8');
    // Same device name, but a key the bundle does not hold.
    openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'stolen.key', '-subj', '/CN=car-0043', '-out', 'stolen.csr'], work);
    openssl(
      [
        'x509',
        '-req',
        '-in',
        'stolen.csr',
        '-CA',
        path.join(pki, 'ca.crt'),
        '-CAkey',
        path.join(pki, 'ca.key'),
        '-days',
        '30',
        '-extfile',
        'client.ext',
        '-out',
        'stolen.crt',
      ],
      work,
    );
    // The bundle's own CSR, signed by a CA the car does not know.
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'rogue-ca.key', '-subj', '/CN=rogue CA', '-days', '30', '-out', 'rogue-ca.crt'], work);
    openssl(
      [
        'x509',
        '-req',
        '-in',
        path.join(bundle, 'identity', 'device.csr'),
        '-CA',
        'rogue-ca.crt',
        '-CAkey',
        'rogue-ca.key',
        '-days',
        '30',
        '-extfile',
        'client.ext',
        '-out',
        'rogue.crt',
      ],
      work,
    );
    const cases: [string, RegExp][] = [
      ['stolen.crt', /does not carry the bundle's key/],
      ['rogue.crt', /is not issued by .*broker-ca\.crt/],
      [path.join(pki, 'demo-vehicle-001.crt'), /is for 'demo-vehicle-001', not for device 'car-0043'/],
    ];
    for (const [cert, message] of cases) {
      const refused = runProgramSync('scripts/provision', ['--device', 'car-0043', '--bundle', bundle, '--cert', path.resolve(work, cert)]);
      assert.equal(refused.status, 1, `${cert}: ${refused.stdout}`);
      assert.equal(refused.stderr.split('\n').filter(Boolean).length, 1, refused.stderr);
      assert.match(refused.stderr, message);
    }
    assert.equal(readFileSync(path.join(bundle, 'identity', 'device.crt'), 'utf8'), kept);
  });
});

describe('provision with a fleet CA whose key is EC', () => {
  /** A root CA made by openssl with a key of `newkey` (its -newkey argument), in a folder of its own. */
  const fleetCa = (name: string, newkey: string[]): { dir: string; args: string[] } => {
    const dir = makeTempDir(`fleet-ca-${name}-`);
    openssl(
      [
        'req',
        '-x509',
        ...newkey,
        '-nodes',
        '-keyout',
        'ca.key',
        '-subj',
        `/CN=fleet CA ${name}`,
        '-days',
        '365',
        '-addext',
        'basicConstraints=critical,CA:TRUE,pathlen:0',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
        '-out',
        'ca.crt',
      ],
      dir,
    );
    return { dir, args: ['--ca', path.join(dir, 'ca.crt'), '--ca-key', path.join(dir, 'ca.key'), '--command-ca', path.join(pki, 'command-ca.crt')] };
  };

  for (const [curve, algorithm] of [
    ['P-256', 'ecdsa-with-SHA256'],
    ['P-384', 'ecdsa-with-SHA384'],
  ] as const) {
    test(`an ECDSA ${curve} CA signs the device certificate here: openssl verifies it for client authentication and the agent loads it`, () => {
      const authority = fleetCa(curve, ['-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${curve}`]);
      const bundle = path.join(work, `car-ec-${curve}`);
      const started = Date.now();
      const run = runProgramSync('scripts/provision', [
        '--device',
        'car-0050',
        '--bundle',
        bundle,
        ...authority.args,
        '--broker',
        BROKER,
        '--valid-days',
        '90',
      ]);
      assert.equal(run.status, 0, run.stderr);
      assert.ok(run.stdout.includes(`identity/device.crt (CN=car-0050, issued by fleet CA ${curve}, valid until `), run.stdout);
      const certFile = path.join(bundle, 'identity', 'device.crt');
      const text = spawnSync('openssl', ['x509', '-in', certFile, '-noout', '-text'], { encoding: 'utf8' }).stdout;
      assert.match(text, new RegExp(`Signature Algorithm: ${algorithm}`));
      const verified = spawnSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', path.join(authority.dir, 'ca.crt'), certFile], {
        encoding: 'utf8',
      });
      assert.equal(verified.stdout, `${certFile}: OK\n`, verified.stderr);
      const cert = new X509Certificate(readFileSync(certFile));
      // --valid-days from an hour back (a car's clock a little behind), cut at the start to the CA's own (made just now).
      const expected = started - 3_600_000 + 90 * 86_400_000;
      assert.ok(Math.abs(new Date(cert.validTo).getTime() - expected) < 120_000, `valid until ${cert.validTo}, not 90 days from an hour back`);
      assert.ok(new Date(cert.validFrom).getTime() >= new Date(new X509Certificate(readFileSync(path.join(authority.dir, 'ca.crt'))).validFrom).getTime());
      const identity = loadIdentity({
        certFile,
        keyFile: path.join(bundle, 'identity', 'device.key'),
        caFile: path.join(authority.dir, 'ca.crt'),
        requireIssuer: true,
      });
      assert.equal(identity.commonName, 'car-0050');
    });
  }

  test('a CA key this tool cannot sign with (Ed25519) is one line naming the file and the way out (--csr-only); nothing is written', () => {
    const authority = fleetCa('ed25519', ['-newkey', 'ed25519']);
    const bundle = path.join(work, 'car-ed25519');
    const run = runProgramSync('scripts/provision', ['--device', 'car-0051', '--bundle', bundle, ...authority.args, '--broker', BROKER]);
    assert.equal(run.status, 1, run.stdout);
    assert.equal(
      run.stderr,
      `telematics-provision: --ca-key ${path.join(authority.dir, 'ca.key')}: a CA key must be RSA or EC (P-256, P-384), not ed25519: this tool cannot sign with it; ` +
        "sign the CSR with your CA's tooling instead (--csr-only)\n",
    );
    assert.equal(existsSync(bundle), false);
  });
});

describe('provision checks chains as the agent does (RFC 5280)', () => {
  let bundle: string;
  before(() => {
    bundle = path.join(work, 'car-0044');
    const made = runProgramSync('scripts/provision', [
      '--device',
      'car-0044',
      '--bundle',
      bundle,
      '--csr-only',
      '--broker-ca',
      path.join(pki, 'ca.crt'),
      '--command-ca',
      path.join(pki, 'command-ca.crt'),
      '--broker',
      BROKER,
    ]);
    assert.equal(made.status, 0, made.stderr);
    // An intermediate CA under the development CA, whose path length (0) allows none; and the certificates it signs.
    openssl(
      ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'intermediate.key', '-subj', '/CN=rogue intermediate', '-out', 'intermediate.csr'],
      work,
    );
    writeFileSync(path.join(work, 'intermediate.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
    openssl(
      [
        'x509',
        '-req',
        '-in',
        'intermediate.csr',
        '-CA',
        path.join(pki, 'ca.crt'),
        '-CAkey',
        path.join(pki, 'ca.key'),
        '-days',
        '30',
        '-extfile',
        'intermediate.ext',
        '-out',
        'intermediate.crt',
      ],
      work,
    );
    writeFileSync(
      path.join(work, 'device.ext'),
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n',
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        path.join(bundle, 'identity', 'device.csr'),
        '-CA',
        'intermediate.crt',
        '-CAkey',
        'intermediate.key',
        '-days',
        '30',
        '-extfile',
        'device.ext',
        '-out',
        'through-intermediate.crt',
      ],
      work,
    );
    writeFileSync(
      path.join(work, 'through-intermediate-chain.crt'),
      readFileSync(path.join(work, 'through-intermediate.crt'), 'utf8') + readFileSync(path.join(work, 'intermediate.crt'), 'utf8'),
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        path.join(bundle, 'identity', 'device.csr'),
        '-CA',
        path.join(pki, 'ca.crt'),
        '-CAkey',
        path.join(pki, 'ca.key'),
        '-days',
        '30',
        '-sha1',
        '-extfile',
        'device.ext',
        '-out',
        'sha1.crt',
      ],
      work,
    );
    // A signing CA file as a fleet keeps it: the intermediate, then its root.
    writeFileSync(
      path.join(work, 'intermediate-bundle.crt'),
      readFileSync(path.join(work, 'intermediate.crt'), 'utf8') + readFileSync(path.join(pki, 'ca.crt'), 'utf8'),
    );
  });

  test("[14.3] --cert through an intermediate the CA's path length forbids, or signed with SHA-1, is refused in one line; the bundle stays without a certificate", () => {
    const cases: [string, RegExp][] = [
      [
        'through-intermediate-chain.crt',
        /the issuer CA CN=telematics-agent development CA allows 0 intermediate CAs below it \(pathLenConstraint 0\), the chain has 1 \(CN=rogue intermediate\)/,
      ],
      ['sha1.crt', /CN=car-0044 is signed with sha1WithRSAEncryption: certificates signed with SHA-1 are refused/],
    ];
    for (const [cert, message] of cases) {
      const refused = runProgramSync('scripts/provision', ['--device', 'car-0044', '--bundle', bundle, '--cert', path.join(work, cert)]);
      assert.equal(refused.status, 1, `${cert}: ${refused.stdout}`);
      assert.match(refused.stderr, /^telematics-provision: [^\n]+\n$/, 'exactly one line');
      assert.match(refused.stderr, message);
      assert.ok(!existsSync(path.join(bundle, 'identity', 'device.crt')), cert);
    }
  });

  test("[14.3] a --ca file whose intermediate its root's path length forbids is refused in one line, before anything is written", () => {
    const target = path.join(work, 'car-0045');
    const refused = runProgramSync('scripts/provision', [
      '--device',
      'car-0045',
      '--bundle',
      target,
      '--ca',
      path.join(work, 'intermediate-bundle.crt'),
      '--ca-key',
      path.join(work, 'intermediate.key'),
      '--command-ca',
      path.join(pki, 'command-ca.crt'),
      '--broker',
      BROKER,
    ]);
    assert.equal(refused.status, 1, refused.stdout);
    assert.match(
      refused.stderr,
      /^telematics-provision: --ca [^\n]*intermediate-bundle\.crt: the root CA CN=telematics-agent development CA allows 0 intermediate CAs below it \(pathLenConstraint 0\), the chain has 1 \(CN=rogue intermediate\)\n$/,
    );
    assert.ok(!existsSync(target), 'nothing written');
  });
});

describe('provision refuses bad input in one line, exit status 1, and writes nothing', () => {
  const cases: { name: string; args: () => string[]; message: RegExp }[] = [
    {
      name: "a CA key that is not the CA's",
      args: () => [
        '--device',
        'car-1',
        '--ca',
        path.join(pki, 'ca.crt'),
        '--ca-key',
        path.join(pki, 'server.key'),
        '--command-ca',
        path.join(pki, 'command-ca.crt'),
        '--broker',
        BROKER,
      ],
      message: /--ca-key .*server\.key is not the private key of the CA certificate .*ca\.crt/,
    },
    {
      name: 'a device ID with a slash',
      args: () => ['--device', 'fleet/car-1', ...ca(), '--broker', BROKER],
      message: /--device "fleet\/car-1" cannot be a device ID: "\/" is not allowed/,
    },
    {
      name: 'a missing CA file',
      args: () => [
        '--device',
        'car-1',
        '--ca',
        path.join(pki, 'nope.crt'),
        '--ca-key',
        path.join(pki, 'ca.key'),
        '--command-ca',
        path.join(pki, 'command-ca.crt'),
        '--broker',
        BROKER,
      ],
      message: /--ca .*nope\.crt: no such file/,
    },
    {
      name: 'a missing command CA file',
      args: () => [
        '--device',
        'car-1',
        '--ca',
        path.join(pki, 'ca.crt'),
        '--ca-key',
        path.join(pki, 'ca.key'),
        '--command-ca',
        path.join(pki, 'gone.crt'),
        '--broker',
        BROKER,
      ],
      message: /--command-ca .*gone\.crt: no such file/,
    },
    {
      name: 'a leaf certificate given as the CA',
      args: () => [
        '--device',
        'car-1',
        '--ca',
        path.join(pki, 'server.crt'),
        '--ca-key',
        path.join(pki, 'server.key'),
        '--command-ca',
        path.join(pki, 'command-ca.crt'),
        '--broker',
        BROKER,
      ],
      message: /is not a CA certificate/,
    },
    {
      name: 'a plain-text broker URL',
      args: () => ['--device', 'car-1', ...ca(), '--broker', 'mqtt://broker:1883'],
      message: /--broker mqtt:\/\/broker:1883: expected mqtts:\/\/host\[:port\]/,
    },
    { name: 'no way to get a certificate', args: () => ['--device', 'car-1', '--broker', BROKER], message: /say how the device certificate is made/ },
    {
      name: '--cert without a bundle',
      args: () => ['--device', 'car-1', '--cert', path.join(pki, 'ca.crt')],
      message: /has no identity\/device\.key: make the bundle first/,
    },
    { name: 'an unknown option', args: () => ['--device', 'car-1', '--sign-with', 'x'], message: /unknown option '--sign-with'/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const bundle = path.join(work, `bad-${c.name.replace(/\W+/g, '-')}`);
      const result = runProgramSync('scripts/provision', [...c.args(), '--bundle', bundle]);
      assert.equal(result.status, 1, result.stdout);
      assert.equal(result.stdout, '');
      assert.match(result.stderr, /^telematics-provision: [^\n]+\n$/, 'exactly one line');
      assert.match(result.stderr, c.message);
      assert.ok(!existsSync(bundle), 'nothing written');
    });
  }
});
