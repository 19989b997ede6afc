/**
 * scripts/flash and scripts/install-service against a root file system skeleton laid out like a Debian image (merged
 * /usr, its own users and dialout group, shadow files, systemd's targets, /var a symbolic link to a data partition):
 * what lands where with which owner and mode, that a second run changes nothing at all, that the agent copied into
 * the image runs, and that systemd-analyze accepts the installed unit.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { RESTART_EXIT_CODE } from '../../src/agent/exit-codes.js';
import { isThisMachinesRoot } from '../../src/provision/flash.js';
import { loadDeviceConfig } from '../../src/config/device-config.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { runProgramSync, type ProgramRun } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

function ok(run: ProgramRun): ProgramRun {
  assert.equal(run.status, 0, `exit ${run.status}: ${run.stderr}${run.stdout}`);
  return run;
}

function oneLineError(run: ProgramRun, tool: string, message: RegExp): void {
  assert.equal(run.status, 1, run.stdout);
  // Every tool's error names the binary (telematics-provision), whichever script started it.
  assert.match(run.stderr, /^telematics-provision: [^\n]+\n$/, `${tool}: exactly one line: ${run.stderr}`);
  assert.match(run.stderr, message);
}

const SHADOW_GID = 42;
const SYSTEM_TARGETS = '/usr/lib/systemd/system';

/** A small Debian-like image: merged /usr, /var on a "data partition" through an absolute link, no agent yet. */
function skeleton(root: string): string {
  for (const dir of ['etc', 'usr/bin', 'usr/sbin', 'usr/lib/systemd/system', 'data/var/lib', 'opt', 'root'])
    mkdirSync(path.join(root, dir), { recursive: true });
  symlinkSync('usr/bin', path.join(root, 'bin'));
  symlinkSync('usr/lib', path.join(root, 'lib'));
  // Absolute, as images have it: followed on this machine it would point outside the image.
  symlinkSync('/data/var', path.join(root, 'var'));
  writeFileSync(
    path.join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nsystemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n',
  );
  writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\ndaemon:x:1:\ndialout:x:20:pi\nshadow:x:42:\nsystemd-network:x:998:\n');
  writeFileSync(path.join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nsystemd-network:!*:19000::::::\n');
  writeFileSync(path.join(root, 'etc/gshadow'), 'root:*::\ndaemon:*::\ndialout:*::pi\nshadow:*::\nsystemd-network:!*::\n');
  for (const file of ['etc/shadow', 'etc/gshadow']) {
    chownSync(path.join(root, file), 0, SHADOW_GID);
    chmodSync(path.join(root, file), 0o640);
  }
  writeFileSync(path.join(root, 'usr/sbin/nologin'), '');
  // Executables of this machine's architecture where the image has node and systemd-notify.
  for (const name of ['node', 'systemd-notify']) copyFileSync('/usr/bin/true', path.join(root, 'usr/bin', name));
  // systemd's targets, so that systemd-analyze verify --root finds what the unit's dependencies pull in.
  for (const name of readdirSync(SYSTEM_TARGETS).filter((n) => n.endsWith('.target'))) {
    const source = path.join(SYSTEM_TARGETS, name);
    if (lstatSync(source).isFile()) copyFileSync(source, path.join(root, 'usr/lib/systemd/system', name));
  }
  return root;
}

/** Every path under `root` with its type, mode, owner, modification time and content hash (or link target). */
function listing(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    const full = path.join(root, rel);
    const stats = lstatSync(full);
    const common = `${rel || '.'} ${(stats.mode & 0o7777).toString(8)} ${stats.uid}:${stats.gid} ${stats.mtimeMs}`;
    if (stats.isSymbolicLink()) out.push(`${common} -> ${readlinkSync(full)}`);
    else if (stats.isDirectory()) {
      out.push(`${common} dir`);
      for (const name of readdirSync(full).sort()) walk(rel ? `${rel}/${name}` : name);
    } else if (!stats.isFile()) out.push(`${common} ${stats.isFIFO() ? 'fifo' : 'special'}`);
    // A huge sparse file (a hostile image) by its size: it is not read.
    else if (stats.size > 64 * 1024 * 1024) out.push(`${common} ${stats.size} bytes`);
    else out.push(`${common} ${createHash('sha256').update(readFileSync(full)).digest('hex')}`);
  };
  walk('');
  return out;
}

function lstatOrNull(file: string): ReturnType<typeof lstatSync> | null {
  try {
    return lstatSync(file);
  } catch {
    return null;
  }
}

function passwdEntry(root: string, user: string): string[] | undefined {
  return readFileSync(path.join(root, 'etc/passwd'), 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .find((f) => f[0] === user);
}

/** A bundle as provision made it before the identity had a folder of its own: key, CSR and certificate in certs/. */
function toLegacyLayout(dir: string): void {
  for (const name of ['device.key', 'device.csr', 'device.crt']) renameSync(path.join(dir, 'identity', name), path.join(dir, 'certs', name));
  rmSync(path.join(dir, 'identity'), { recursive: true });
  const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { uplink: Record<string, string> };
  config.uplink.certFile = 'certs/device.crt';
  config.uplink.keyFile = 'certs/device.key';
  writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

let work: string;
let pki: string;
let bundle: string;
const BROKER = 'mqtts://broker.fleet.example:8883';
const ca = (): string[] => [
  '--ca',
  path.join(pki, 'ca.crt'),
  '--ca-key',
  path.join(pki, 'ca.key'),
  '--command-ca',
  path.join(pki, 'command-ca.crt'),
  '--broker',
  BROKER,
];

before(() => {
  work = makeTempDir('flash-');
  pki = path.join(work, 'dev');
  ok(runProgramSync('scripts/dev-pki', ['--out', pki]));
  bundle = path.join(work, 'bundles', 'car-0042');
  ok(runProgramSync('scripts/provision', ['--device', 'car-0042', '--bundle', bundle, ...ca()]));
});

describe('flash refuses, in one line', () => {
  test('a target that is not a root file system', () => {
    const notRoot = makeTempDir('flash-notroot-');
    oneLineError(
      runProgramSync('scripts/flash', ['--bundle', bundle, '--target', notRoot]),
      'flash',
      /does not look like a root file system \(no etc\/ folder\)/,
    );
    assert.deepEqual(readdirSync(notRoot), []);
  });

  test("this machine's root under another name: a symbolic link to / (and links to it), a bind mount of /", () => {
    const dir = makeTempDir('flash-hostroot-');
    const link = path.join(dir, 'rootfs');
    symlinkSync('/', link);
    const chain = path.join(dir, 'mnt');
    symlinkSync(link, chain);
    // A bundle that does not exist: should the check ever let the host through, the run stops at the bundle, and
    // still writes nothing to this machine.
    const noBundle = path.join(dir, 'no-bundle');
    for (const target of ['/', link, chain]) {
      oneLineError(
        runProgramSync('scripts/flash', ['--bundle', noBundle, '--target', target]),
        'flash',
        new RegExp(`^telematics-provision: --target ${target} is this machine's own root: flash prepares a mounted image`),
      );
    }
    assert.equal(isThisMachinesRoot(link), true);
    assert.equal(isThisMachinesRoot(skeleton(makeTempDir('flash-root-'))), false);
    // A bind mount keeps /'s device and inode, whatever its path: mounted in a mount namespace of its own, gone with it.
    const bind = path.join(dir, 'bind');
    mkdirSync(bind);
    const probe = `import('${path.join(repoRoot, 'dist/src/provision/flash.js')}').then((m) => console.log(m.isThisMachinesRoot(process.argv[1])))`;
    const run = spawnSync('unshare', ['-m', 'sh', '-c', 'mount --bind / "$1" && exec "$2" -e "$3" "$1"', 'sh', bind, process.execPath, probe], {
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'true\n');
    assert.deepEqual(readdirSync(bind), [], 'the mount went with its namespace');
  });

  test("an image whose service user exists as a person's account (uid 1000), as another service's, or with a shared group", () => {
    const cases: Array<[string, string, RegExp]> = [
      [
        'telematics:x:1000:1000:Tele Matics:/home/telematics:/bin/bash',
        'telematics:x:1000:',
        /the image already has a user 'telematics' with uid 1000, outside its system range 100-999: a person's or a shared account/,
      ],
      [
        'telematics:x:990:990::/var/lib/other:/usr/sbin/nologin',
        'telematics:x:990:',
        /the image already has a system user 'telematics' \(uid 990\) whose home is \/var\/lib\/other, not \/var\/lib\/telematics-agent/,
      ],
      [
        'telematics:x:0:0::/var/lib/telematics-agent:/usr/sbin/nologin',
        'telematics:x:0:',
        /the service user 'telematics' has uid 0 in the image: the agent must not run as root/,
      ],
      ['', 'telematics:x:990:pi', /the image already has a group 'telematics' shared with pi: the agent's config would be readable by them/],
    ];
    for (const [user, group, message] of cases) {
      const root = skeleton(makeTempDir('flash-root-'));
      if (user) writeFileSync(path.join(root, 'etc/passwd'), `${readFileSync(path.join(root, 'etc/passwd'), 'utf8')}${user}\n`);
      writeFileSync(path.join(root, 'etc/group'), `${readFileSync(path.join(root, 'etc/group'), 'utf8')}${group}\n`);
      const before = listing(root);
      oneLineError(runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root]), 'flash', message);
      assert.deepEqual(listing(root), before, `nothing written: ${user || group}`);
    }
  });

  test('a bundle whose unit runs the agent as root (edited by hand)', () => {
    const rootBundle = path.join(work, 'bundles', 'car-0042-root');
    ok(runProgramSync('scripts/provision', ['--device', 'car-0042', '--bundle', rootBundle, ...ca()]));
    const unitFile = path.join(rootBundle, 'telematics-agent.service');
    writeFileSync(
      unitFile,
      readFileSync(unitFile, 'utf8')
        .replace(/^User=telematics$/m, 'User=root')
        .replace(/^Group=telematics$/m, 'Group=root'),
    );
    const root = skeleton(makeTempDir('flash-root-'));
    const before = listing(root);
    oneLineError(
      runProgramSync('scripts/flash', ['--bundle', rootBundle, '--target', root]),
      'flash',
      /^telematics-provision: the service user: 'root': the agent must not run as root/,
    );
    assert.deepEqual(listing(root), before, 'nothing written');
  });

  test('a bundle that still awaits its certificate', () => {
    const pending = path.join(work, 'bundles', 'car-0050');
    ok(
      runProgramSync('scripts/provision', [
        '--device',
        'car-0050',
        '--bundle',
        pending,
        '--csr-only',
        '--broker-ca',
        path.join(pki, 'ca.crt'),
        '--command-ca',
        path.join(pki, 'command-ca.crt'),
        '--broker',
        BROKER,
      ]),
    );
    const root = skeleton(makeTempDir('flash-root-'));
    const before = listing(root);
    oneLineError(
      runProgramSync('scripts/flash', ['--bundle', pending, '--target', root]),
      'flash',
      /awaits its certificate: have identity\/device\.csr signed/,
    );
    assert.deepEqual(listing(root), before, 'nothing written');
  });

  test('[14.9] a bundle that keeps its identity in certs/ (an older provision): refused until provision moves it to identity/', () => {
    const legacy = path.join(work, 'bundles', 'car-0045');
    ok(runProgramSync('scripts/provision', ['--device', 'car-0045', '--bundle', legacy, ...ca()]));
    toLegacyLayout(legacy);
    const key = readFileSync(path.join(legacy, 'certs/device.key'));
    const cert = readFileSync(path.join(legacy, 'certs/device.crt'));
    const root = skeleton(makeTempDir('flash-root-'));
    const before = listing(root);
    oneLineError(
      runProgramSync('scripts/flash', ['--bundle', legacy, '--target', root]),
      'flash',
      /--bundle \S+ keeps its identity in certs\/device\.key \(made by an older provision\): run scripts\/provision for it again/,
    );
    assert.deepEqual(listing(root), before, 'nothing written');
    const again = ok(runProgramSync('scripts/provision', ['--device', 'car-0045', '--bundle', legacy, ...ca()]));
    assert.match(again.stdout, /moved device\.key, device\.csr, device\.crt from certs\/ to identity\//);
    assert.ok(readFileSync(path.join(legacy, 'identity/device.key')).equals(key), 'the same key');
    assert.ok(readFileSync(path.join(legacy, 'identity/device.crt')).equals(cert), 'the same certificate');
    assert.equal(statSync(path.join(legacy, 'identity/device.key')).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(path.join(legacy, 'certs')).sort(), ['broker-ca.crt', 'command-ca.crt']);
    const config = loadDeviceConfig(path.join(legacy, 'config.json'));
    assert.equal(config.uplink!.keyFile, path.join(legacy, 'identity/device.key'));
  });

  test("an image of another architecture than the agent's native modules", () => {
    const root = skeleton(makeTempDir('flash-root-'));
    // An ELF header naming the other common architecture: aarch64 here on x86-64, x86-64 on an aarch64 host.
    const header = Buffer.alloc(64);
    header.writeUInt32BE(0x7f454c46, 0);
    header[4] = 2;
    header[5] = 1;
    header.writeUInt16LE(process.arch === 'arm64' ? 62 : 183, 18);
    writeFileSync(path.join(root, 'usr/bin/node'), header, { mode: 0o755 });
    oneLineError(
      runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root]),
      'flash',
      process.arch === 'arm64' ? /the target is x86-64/ : /native modules are built for x86-64 .* the target is aarch64 \(\/usr\/bin\/node\)/,
    );
  });
});

describe('flash into an image', () => {
  let root: string;
  let first: ProgramRun;
  let second: ProgramRun;
  let afterFirst: string[];
  before(() => {
    root = skeleton(makeTempDir('flash-root-'));
    first = runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root]);
    afterFirst = listing(root);
    second = runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root]);
  });

  test('a second run changes nothing: every path, mode, owner, time and hash is as the first run left it', () => {
    ok(first);
    ok(second);
    assert.match(first.stdout, /car-0042 installed in/);
    assert.match(second.stdout, /already holds car-0042 and this agent; nothing changed/);
    assert.deepEqual(listing(root), afterFirst);
    assert.ok(afterFirst.length > 1000, 'the agent and its dependencies are there');
  });

  test('creates the system user with IDs free in the image, in dialout, locked in shadow', () => {
    const user = passwdEntry(root, 'telematics')!;
    assert.ok(user, readFileSync(path.join(root, 'etc/passwd'), 'utf8'));
    const [, , uid, gid, , home, shell] = user;
    assert.equal(uid, '999', '998 is taken in the image (systemd-network), not here');
    assert.equal(gid, '999');
    assert.equal(home, '/var/lib/telematics-agent');
    assert.equal(shell, '/usr/sbin/nologin');
    const group = readFileSync(path.join(root, 'etc/group'), 'utf8');
    assert.match(group, /^telematics:x:999:$/m);
    assert.match(group, /^dialout:x:20:pi,telematics$/m);
    assert.match(readFileSync(path.join(root, 'etc/shadow'), 'utf8'), /^telematics:!:/m);
    assert.match(readFileSync(path.join(root, 'etc/gshadow'), 'utf8'), /^dialout:\*::pi,telematics$/m);
    const shadow = statSync(path.join(root, 'etc/shadow'));
    assert.equal(shadow.mode & 0o777, 0o640, 'shadow keeps its mode');
    assert.equal(shadow.gid, SHADOW_GID, 'and its group');
    assert.match(readFileSync(path.join(root, 'etc/sysusers.d/telematics-agent.conf'), 'utf8'), /^u telematics 999:999 /m);
  });

  test("[14.9] the bundle goes to /etc/telematics-agent, root's and read-only to the agent; only identity/ is the agent's", () => {
    const expected: [string, number, string][] = [
      ['etc/telematics-agent', 0o750, '0:999'],
      ['etc/telematics-agent/config.json', 0o640, '0:999'],
      ['etc/telematics-agent/certs', 0o750, '0:999'],
      ['etc/telematics-agent/certs/broker-ca.crt', 0o644, '0:999'],
      ['etc/telematics-agent/certs/command-ca.crt', 0o644, '0:999'],
      ['etc/telematics-agent/dbc', 0o750, '0:999'],
      ['etc/telematics-agent/dbc/demo_vehicle.dbc', 0o644, '0:999'],
      ['etc/telematics-agent/identity', 0o700, '999:999'],
      ['etc/telematics-agent/identity/device.key', 0o600, '999:999'],
      ['etc/telematics-agent/identity/device.crt', 0o644, '999:999'],
      // /var -> /data/var is followed inside the image.
      ['data/var/lib/telematics-agent', 0o750, '999:999'],
    ];
    for (const [rel, mode, owner] of expected) {
      const stats = lstatSync(path.join(root, rel));
      assert.ok(!stats.isSymbolicLink(), rel);
      assert.equal(stats.mode & 0o777, mode, `${rel}: mode ${(stats.mode & 0o777).toString(8)}`);
      assert.equal(`${stats.uid}:${stats.gid}`, owner, `${rel} owner`);
    }
    assert.deepEqual(readdirSync(path.join(root, 'etc/telematics-agent/certs')).sort(), ['broker-ca.crt', 'command-ca.crt'], 'no identity beside the CAs');
    assert.ok(lstatSync(path.join(root, 'var')).isSymbolicLink(), "the image's link is left as it was");
    assert.ok(readFileSync(path.join(root, 'etc/telematics-agent/identity/device.key')).equals(readFileSync(path.join(bundle, 'identity/device.key'))));
    // No secret anywhere in the image readable by others.
    for (const line of listing(root).filter((l) => /\.key /.test(l))) assert.match(line, / 600 /, line);
  });

  test("[14.9] the agent's user cannot change its trust anchors or its config: not its files, no write bit for it, no ReadWritePaths= over them", () => {
    const configDir = path.join(root, 'etc/telematics-agent');
    const readOnly = ['', 'config.json', 'certs', 'certs/broker-ca.crt', 'certs/command-ca.crt', 'dbc', 'dbc/demo_vehicle.dbc'];
    for (const rel of readOnly) {
      const stats = lstatSync(path.join(configDir, rel));
      assert.equal(stats.uid, 0, `${rel || '.'} is root's`);
      assert.equal(stats.mode & 0o022, 0, `${rel || '.'}: mode ${(stats.mode & 0o777).toString(8)} is not group- or world-writable`);
    }
    // The unit lets the agent write its state folder and its identity, nothing else of /etc/telematics-agent.
    const unit = readFileSync(path.join(root, 'etc/systemd/system/telematics-agent.service'), 'utf8');
    const writable = [...unit.matchAll(/^ReadWritePaths=(.*)$/gm)].flatMap((m) => m[1]!.split(/\s+/)).map((p) => p.replace(/^[-+]+/, ''));
    assert.deepEqual(writable, ['/etc/telematics-agent/identity']);
    for (const rel of readOnly) {
      const onCar = path.posix.join('/etc/telematics-agent', rel);
      for (const dir of writable) assert.ok(onCar !== dir && !onCar.startsWith(`${dir}/`), `${onCar} is under ReadWritePaths=${dir}`);
    }

    // And for real: a process of the agent's user (uid and gid 999, as the unit runs it) tries to change them.
    chmodSync(root, 0o755); // a root file system is 0755; the test's temporary folder is not
    const attempt = `
      const fs = require('node:fs');
      const out = {};
      const tryIt = (what, fn) => { try { fn(); out[what] = 'done'; } catch (err) { out[what] = err.code; } };
      const dir = process.argv[1];
      tryIt('write config.json', () => fs.writeFileSync(dir + '/config.json', '{}'));
      tryIt('write the command CA', () => fs.writeFileSync(dir + '/certs/command-ca.crt', 'evil'));
      tryIt('add a broker CA', () => fs.writeFileSync(dir + '/certs/evil-ca.crt', 'evil'));
      tryIt('rename over the broker CA', () => fs.renameSync(dir + '/identity/device.crt', dir + '/certs/broker-ca.crt'));
      tryIt('replace config.json', () => fs.renameSync(dir + '/config.json', dir + '/config.old'));
      tryIt('chmod the command CA', () => fs.chmodSync(dir + '/certs/command-ca.crt', 0o666));
      tryIt('stage a rotated key', () => { fs.writeFileSync(dir + '/identity/device.key.new', 'k', { mode: 0o600 }); fs.rmSync(dir + '/identity/device.key.new'); });
      process.stdout.write(JSON.stringify(out));`;
    const before = listing(root);
    const run = spawnSync(process.execPath, ['-e', attempt, configDir], { uid: 999, gid: 999, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), {
      'write config.json': 'EACCES',
      'write the command CA': 'EACCES',
      'add a broker CA': 'EACCES',
      'rename over the broker CA': 'EACCES',
      'replace config.json': 'EACCES',
      'chmod the command CA': 'EPERM',
      // Not vacuous: the identity folder is the agent's to write (certificate rotation).
      'stage a rotated key': 'done',
    });
    // Nothing changed, but the identity folder's time (a file was made there and removed).
    const all = (lines: string[]): string[] => lines.filter((line) => !line.startsWith('etc/telematics-agent/identity '));
    assert.deepEqual(all(listing(root)), all(before));
  });

  test('the config and identity load in the image as the agent will load them there', () => {
    const config = loadDeviceConfig(path.join(root, 'etc/telematics-agent/config.json'));
    assert.equal(config.deviceId, 'car-0042');
    assert.equal(config.uplink!.certFile, path.join(root, 'etc/telematics-agent/identity/device.crt'));
    assert.equal(config.uplink!.caFile, path.join(root, 'etc/telematics-agent/certs/broker-ca.crt'));
    assert.equal(config.outbox!.path, '/var/lib/telematics-agent/outbox.db');
    const identity = loadIdentity({ certFile: config.uplink!.certFile, keyFile: config.uplink!.keyFile!, caFile: config.uplink!.caFile, requireIssuer: true });
    assert.equal(identity.commonName, 'car-0042');
  });

  test('the agent goes to /opt/telematics-agent, root-owned, with its production dependencies only', () => {
    const opt = path.join(root, 'opt/telematics-agent');
    for (const rel of [
      'package.json',
      'dist/src/cli/main.js',
      'dist/src/health/watchdog.js',
      'device-config/dbc/demo_vehicle.dbc',
      'node_modules/better-sqlite3/package.json',
      'node_modules/commander/package.json',
    ]) {
      const stats = statSync(path.join(opt, rel));
      assert.equal(`${stats.uid}:${stats.gid} ${(stats.mode & 0o777).toString(8)}`, '0:0 644', rel);
    }
    // The dev dependencies stay behind (@types/node stays: mqtt's own dependencies list it).
    for (const rel of ['node_modules/typescript', 'node_modules/@types/node-forge', 'node_modules/@types/better-sqlite3', 'node_modules/.bin', 'test', 'src']) {
      assert.ok(!existsSync(path.join(opt, rel)), `${rel} is not installed`);
    }
    const native = readdirSync(path.join(opt, 'node_modules/better-sqlite3/build/Release')).find((n) => n.endsWith('.node'))!;
    assert.equal(statSync(path.join(opt, 'node_modules/better-sqlite3/build/Release', native)).mode & 0o777, 0o755, 'native addons stay executable');
    // [19.socketcan] The project's own SocketCAN addon goes with the agent (without its build tree).
    assert.equal(statSync(path.join(opt, 'native/can-rx/build/Release/can_rx.node')).mode & 0o777, 0o755, 'the SocketCAN addon is installed');
    assert.ok(!existsSync(path.join(opt, 'native/can-rx/build/Release/obj.target')), 'not its build tree');
  });

  test('the agent copied into the image runs (its dependencies are complete)', () => {
    const dir = makeTempDir('flash-run-');
    const config = path.join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        deviceId: 'car-0042',
        buses: [{ name: 'can0', dbc: path.join(root, 'etc/telematics-agent/dbc/demo_vehicle.dbc'), source: { type: 'sim' } }],
        status: { intervalMs: 60_000, signals: [] },
        collection: { rules: [{ name: 'speed', mode: 'periodic', intervalMs: 200, priority: 3, signals: ['VehicleSpeed'] }] },
        outbox: { path: path.join(dir, 'outbox.db') },
      }),
    );
    const run = spawnSync(process.execPath, [path.join(root, 'opt/telematics-agent/dist/src/cli/main.js'), 'run', '--config', config, '--duration', '1'], {
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /stopped after/);
    assert.ok(existsSync(path.join(dir, 'outbox.db')), 'better-sqlite3 from the image opened the outbox');
  });

  test('the unit is installed and enabled; systemd-analyze verify accepts it without a word', (t) => {
    const unit = path.join(root, 'etc/systemd/system/telematics-agent.service');
    assert.equal(readFileSync(unit, 'utf8'), readFileSync(path.join(bundle, 'telematics-agent.service'), 'utf8'));
    assert.equal(
      readlinkSync(path.join(root, 'etc/systemd/system/multi-user.target.wants/telematics-agent.service')),
      '/etc/systemd/system/telematics-agent.service',
    );
    const verify = spawnSync('systemd-analyze', ['verify', `--root=${root}`, 'telematics-agent.service'], { encoding: 'utf8' });
    assert.equal(verify.error, undefined, 'systemd-analyze must be installed (scripts/install-test-deps.sh)');
    assert.equal(verify.status, 0, verify.stderr);
    // verify exits 0 even on unknown keys and bad values: only silence means the unit is clean.
    assert.equal(`${verify.stdout}${verify.stderr}`, '');
    const security = spawnSync('systemd-analyze', ['security', '--offline=true', `--root=${root}`, 'telematics-agent.service'], { encoding: 'utf8' });
    assert.equal(security.status, 0, security.stderr);
    const level = /Overall exposure level for telematics-agent\.service: ([\d.]+)/.exec(security.stdout);
    assert.ok(level, security.stdout);
    t.diagnostic(`systemd-analyze security --offline=true: exposure ${level[1]}`);
    assert.ok(Number(level[1]) <= 2.5, `exposure ${level[1]}: the hardening regressed`);
  });

  test('systemd-analyze verify does report a broken unit (the check above is not vacuous)', () => {
    const dir = makeTempDir('flash-unit-');
    const broken = readFileSync(path.join(root, 'etc/systemd/system/telematics-agent.service'), 'utf8').replace('Restart=on-failure', 'Restart=sometimes');
    writeFileSync(path.join(root, 'etc/systemd/system/broken-agent.service'), broken);
    const verify = spawnSync('systemd-analyze', ['verify', `--root=${root}`, 'broken-agent.service'], { encoding: 'utf8', cwd: dir });
    assert.match(verify.stderr, /Failed to parse service restart specifier/);
  });

  test("the unit restarts on failure, on the agent's restart exit code, and pings the watchdog", () => {
    const unit = readFileSync(path.join(root, 'etc/systemd/system/telematics-agent.service'), 'utf8');
    for (const line of [
      'Type=notify',
      'NotifyAccess=all',
      'WatchdogSec=30',
      'Restart=on-failure',
      `RestartForceExitStatus=${RESTART_EXIT_CODE}`,
      'User=telematics',
      'SupplementaryGroups=dialout',
      'CapabilityBoundingSet=',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ReadWritePaths=-/etc/telematics-agent/identity',
      'StateDirectory=telematics-agent',
    ]) {
      assert.match(unit, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), line);
    }
    assert.match(
      unit,
      /^ExecStart=\/usr\/bin\/node --max-semi-space-size=1 \/opt\/telematics-agent\/dist\/src\/cli\/main\.js run --config \/etc\/telematics-agent\/config\.json$/m,
    );
  });

  test("another device's bundle is refused by an image that holds one, unless --replace-identity", () => {
    const other = path.join(work, 'bundles', 'car-0044');
    ok(runProgramSync('scripts/provision', ['--device', 'car-0044', '--bundle', other, ...ca()]));
    oneLineError(
      runProgramSync('scripts/flash', ['--bundle', other, '--target', root]),
      'flash',
      /the target is provisioned as 'car-0042', the bundle is 'car-0044': pass --replace-identity/,
    );
    ok(runProgramSync('scripts/flash', ['--bundle', other, '--target', root, '--replace-identity']));
    assert.equal(loadDeviceConfig(path.join(root, 'etc/telematics-agent/config.json')).deviceId, 'car-0044');
    assert.equal(passwdEntry(root, 'telematics')![2], '999', 'the same account');
  });
});

describe('[14.6] flash into a hostile image: every path stays inside it, only regular files of bounded size are read, nothing hangs', () => {
  /** A folder of this machine's that the image's links point at: flash must neither read nor write it. */
  let host: string;
  before(() => {
    host = makeTempDir('flash-host-');
    writeFileSync(path.join(host, 'passwd'), 'root:x:0:0:root:/root:/bin/bash\ntelematics:x:1234:1234::/home/telematics:/bin/bash\n');
    writeFileSync(path.join(host, 'login.defs'), 'SYS_UID_MIN 300\nSYS_UID_MAX 310\n');
    writeFileSync(path.join(host, 'config.json'), JSON.stringify({ deviceId: 'car-9999' }));
    writeFileSync(path.join(host, 'victim.key'), "this machine's own key\n", { mode: 0o600 });
    mkdirSync(path.join(host, 'state'));
  });

  /** From anywhere in the image, enough '..' to climb far above its root, then into `host`. */
  const climbing = (file: string): string => `${'../'.repeat(24)}${host.slice(1)}/${file}`;
  /** A root with the agent's config folder, as an earlier flash (or an attacker) left it. */
  const withConfigDir = (root: string, ...dirs: string[]): string => {
    for (const dir of ['', ...dirs]) mkdirSync(path.join(root, 'etc/telematics-agent', dir), { recursive: true });
    return path.join(root, 'etc/telematics-agent');
  };
  const fifo = (file: string): void => {
    rmSync(file, { force: true });
    assert.equal(spawnSync('mkfifo', [file]).status, 0);
  };

  const refused: Array<{ what: string; make: (root: string) => void; message: RegExp; targetUntouched: boolean }> = [
    {
      what: 'an absolute link to /dev/zero at the device key, where an older flash kept it',
      make: (root) => symlinkSync('/dev/zero', path.join(withConfigDir(root, 'certs'), 'certs/device.key')),
      message:
        /^telematics-provision: \/etc\/telematics-agent\/certs\/device\.key in \S+ is a symbolic link, which is not followed: only regular files are read from a target \(--replace-identity overwrites it without reading it\)$/m,
      targetUntouched: true,
    },
    {
      what: 'an absolute link to /dev/zero at the device key in identity/',
      make: (root) => symlinkSync('/dev/zero', path.join(withConfigDir(root, 'identity'), 'identity/device.key')),
      message: /^telematics-provision: \/etc\/telematics-agent\/identity\/device\.key in \S+ is a symbolic link, which is not followed/m,
      targetUntouched: true,
    },
    {
      what: 'the config a link climbing out of the image with ..',
      make: (root) => symlinkSync(climbing('config.json'), path.join(withConfigDir(root), 'config.json')),
      message: /^telematics-provision: \/etc\/telematics-agent\/config\.json in \S+ is a symbolic link, which is not followed/m,
      targetUntouched: true,
    },
    {
      what: '/etc/passwd a link climbing out of the image with ..',
      make: (root) => {
        rmSync(path.join(root, 'etc/passwd'));
        symlinkSync(climbing('passwd'), path.join(root, 'etc/passwd'));
      },
      // Resolved inside the image, where there is no such file: this machine's passwd is never read (or written).
      message: /^telematics-provision: \S+ has no \/etc\/passwd \(a link to \/tmp\/flash-host-\w+\/passwd in the image\): is it a root file system\?$/m,
      targetUntouched: true,
    },
    {
      what: 'a FIFO at /usr/bin/node',
      make: (root) => fifo(path.join(root, 'usr/bin/node')),
      message: /^telematics-provision: \/usr\/bin\/node in \S+ is a FIFO, not a regular file: only regular files are read from a target$/m,
      targetUntouched: true,
    },
    {
      what: 'a FIFO at /etc/passwd',
      make: (root) => fifo(path.join(root, 'etc/passwd')),
      message: /^telematics-provision: \/etc\/passwd in \S+ is a FIFO, not a regular file/m,
      targetUntouched: true,
    },
    {
      what: 'a FIFO at /etc/login.defs',
      make: (root) => fifo(path.join(root, 'etc/login.defs')),
      message: /^telematics-provision: \/etc\/login\.defs in \S+ is a FIFO, not a regular file/m,
      targetUntouched: true,
    },
    {
      what: 'a FIFO at the device key',
      make: (root) => fifo(path.join(withConfigDir(root, 'identity'), 'identity/device.key')),
      message: /^telematics-provision: \/etc\/telematics-agent\/identity\/device\.key in \S+ is a FIFO, not a regular file/m,
      targetUntouched: true,
    },
    {
      what: 'a huge sparse /etc/passwd',
      make: (root) => truncateSync(path.join(root, 'etc/passwd'), 8 * 1024 ** 3),
      message: /^telematics-provision: \/etc\/passwd in \S+ is 8\.0 GiB, more than the 16\.0 MiB it may be: only regular files are read from a target$/m,
      targetUntouched: true,
    },
    {
      what: 'the identity folder an absolute link out of the image',
      make: (root) => symlinkSync(host, path.join(withConfigDir(root), 'identity')),
      message: /^telematics-provision: \S+\/etc\/telematics-agent\/identity is not a folder \(a symbolic link is in its place\)$/m,
      targetUntouched: false,
    },
    {
      what: 'the state folder a link climbing out of the image with ..',
      make: (root) => symlinkSync(climbing('state'), path.join(root, 'data/var/lib/telematics-agent')),
      message: /^telematics-provision: \S+\/data\/var\/lib\/telematics-agent is not a folder \(a symbolic link is in its place\)$/m,
      targetUntouched: false,
    },
  ];
  for (const { what, make, message, targetUntouched } of refused) {
    test(`[14.6] ${what}: refused in one line, nothing outside the image read or written`, () => {
      const root = skeleton(makeTempDir('flash-hostile-'));
      make(root);
      const hostBefore = listing(host);
      const rootBefore = listing(root);
      const run = runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root], { timeoutMs: 60_000 });
      assert.equal(run.timedOut, false, 'flash hung');
      oneLineError(run, 'flash', message);
      assert.deepEqual(listing(host), hostBefore, 'nothing of this machine changed');
      if (targetUntouched) assert.deepEqual(listing(root), rootBefore, 'refused before anything was written');
    });
  }

  test('[14.6] with --replace-identity, links and FIFOs where the bundle goes are replaced, never read or written through', () => {
    const root = skeleton(makeTempDir('flash-hostile-'));
    const dir = withConfigDir(root, 'identity', 'certs');
    symlinkSync(path.join(host, 'victim.key'), path.join(dir, 'identity/device.key'));
    symlinkSync(climbing('config.json'), path.join(dir, 'config.json'));
    fifo(path.join(dir, 'certs/command-ca.crt'));
    symlinkSync('/dev/zero', path.join(dir, 'certs/device.key'));
    const hostBefore = listing(host);
    const run = runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root, '--replace-identity'], { timeoutMs: 120_000 });
    assert.equal(run.timedOut, false, 'flash hung');
    ok(run);
    assert.deepEqual(listing(host), hostBefore, 'nothing of this machine changed');
    for (const rel of ['identity/device.key', 'config.json', 'certs/command-ca.crt']) {
      const stats = lstatSync(path.join(dir, rel));
      assert.ok(stats.isFile(), `${rel} is a regular file now`);
      assert.ok(readFileSync(path.join(dir, rel)).equals(readFileSync(path.join(bundle, rel))), rel);
    }
    assert.ok(!existsSync(path.join(dir, 'certs/device.key')) && !lstatOrNull(path.join(dir, 'certs/device.key')), 'the old link in certs/ is gone');
  });
});

describe("[14.9] an image an older flash made: the identity in certs/, everything the agent's", () => {
  test("[14.9] is moved to the new layout (certs/ root's, the old key removed); another key there is refused; a replaced pair takes its rotation leftovers with it", () => {
    const root = skeleton(makeTempDir('flash-legacy-'));
    ok(runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root]));
    // As an older flash left it: the pair beside the CAs, the whole folder owned by the agent's user.
    const dir = path.join(root, 'etc/telematics-agent');
    for (const name of ['device.key', 'device.crt']) renameSync(path.join(dir, 'identity', name), path.join(dir, 'certs', name));
    rmSync(path.join(dir, 'identity'), { recursive: true });
    spawnSync('chown', ['-R', '999:999', dir]);
    const key = readFileSync(path.join(dir, 'certs/device.key'));

    writeFileSync(path.join(dir, 'certs/device.key'), 'a key rotated on the car\n');
    oneLineError(
      runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root]),
      'flash',
      /the target holds another key for 'car-0042' \(rotated on the device\?\): pass --replace-identity/,
    );
    writeFileSync(path.join(dir, 'certs/device.key'), key);

    const run = ok(runProgramSync('scripts/flash', ['--bundle', bundle, '--target', root]));
    assert.match(run.stdout, /removed \/etc\/telematics-agent\/certs\/device\.key\n/);
    assert.match(run.stdout, /removed \/etc\/telematics-agent\/certs\/device\.crt\n/);
    assert.deepEqual(readdirSync(path.join(dir, 'certs')).sort(), ['broker-ca.crt', 'command-ca.crt']);
    for (const rel of ['', 'certs', 'certs/broker-ca.crt', 'certs/command-ca.crt', 'config.json']) {
      assert.equal(
        `${lstatSync(path.join(dir, rel)).uid}:${lstatSync(path.join(dir, rel)).mode & 0o022}`,
        '0:0',
        `${rel || '.'} is root's, not writable by the group`,
      );
    }
    assert.ok(readFileSync(path.join(dir, 'identity/device.key')).equals(key));
    assert.equal(lstatSync(path.join(dir, 'identity/device.key')).uid, 999);

    // A rotation cut short on the car left its pairs; a new identity flashed over it takes them away, or the agent's
    // repair at start could put the previous identity back.
    for (const name of ['device.key.old', 'device.crt.old', 'device.key.new', 'device.crt.new']) writeFileSync(path.join(dir, 'identity', name), `${name}\n`);
    const other = path.join(work, 'bundles', 'car-0046');
    ok(runProgramSync('scripts/provision', ['--device', 'car-0046', '--bundle', other, ...ca()]));
    ok(runProgramSync('scripts/flash', ['--bundle', other, '--target', root, '--replace-identity']));
    assert.deepEqual(readdirSync(path.join(dir, 'identity')).sort(), ['device.crt', 'device.key']);
  });
});

describe('install-service', () => {
  test('--root installs the unit, its account and state folder into a bare system; twice is once', () => {
    const root = skeleton(makeTempDir('install-service-'));
    const first = ok(runProgramSync('scripts/install-service', ['--root', root]));
    assert.match(first.stdout, /installed and enabled in .*; it starts at that system's next boot/);
    assert.equal(
      readlinkSync(path.join(root, 'etc/systemd/system/multi-user.target.wants/telematics-agent.service')),
      '/etc/systemd/system/telematics-agent.service',
    );
    assert.ok(passwdEntry(root, 'telematics'));
    assert.equal(statSync(path.join(root, 'data/var/lib/telematics-agent')).uid, 999);
    const snap = listing(root);
    const second = ok(runProgramSync('scripts/install-service', ['--root', root]));
    assert.match(second.stdout, /nothing changed/);
    assert.deepEqual(listing(root), snap);
  });

  test('a user name that cannot be one is refused in one line', () => {
    oneLineError(
      runProgramSync('scripts/install-service', ['--print', '--user', 'Fleet Agent']),
      'install-service',
      /--user: 'Fleet Agent' cannot be a system user name/,
    );
  });

  test('root and shared accounts are refused in one line, by install-service and by provision', () => {
    const root = runProgramSync('scripts/install-service', ['--print', '--user', 'root']);
    oneLineError(root, 'install-service', /^telematics-provision: --user: 'root': the agent must not run as root: /);
    assert.equal(root.stdout, '', 'no unit printed');
    oneLineError(
      runProgramSync('scripts/install-service', ['--print', '--user', 'nobody']),
      'install-service',
      /^telematics-provision: --user: 'nobody' is shared by many services: /,
    );
    const dir = path.join(work, 'bundles', 'car-root');
    oneLineError(
      runProgramSync('scripts/provision', ['--device', 'car-root', '--bundle', dir, '--user', 'root', ...ca()]),
      'provision',
      /--user: 'root': the agent must not run as root/,
    );
    assert.equal(existsSync(dir), false, 'no bundle made');
  });

  test('an existing account made for the agent (system uid, home the state folder) is reused as it is', () => {
    const root = skeleton(makeTempDir('install-service-'));
    writeFileSync(
      path.join(root, 'etc/passwd'),
      `${readFileSync(path.join(root, 'etc/passwd'), 'utf8')}telematics:x:990:990:made by the image recipe:/var/lib/telematics-agent:/usr/sbin/nologin\n`,
    );
    writeFileSync(path.join(root, 'etc/group'), `${readFileSync(path.join(root, 'etc/group'), 'utf8')}telematics:x:990:\n`);
    ok(runProgramSync('scripts/install-service', ['--root', root]));
    assert.deepEqual(passwdEntry(root, 'telematics'), [
      'telematics',
      'x',
      '990',
      '990',
      'made by the image recipe',
      '/var/lib/telematics-agent',
      '/usr/sbin/nologin',
    ]);
    assert.equal(statSync(path.join(root, 'data/var/lib/telematics-agent')).uid, 990);
  });
});
