/**
 * scripts/flash and scripts/install-service against a root file system skeleton laid out like a Debian image (merged
 * /usr, its own users and dialout group, shadow files, systemd's targets, /var a symbolic link to a data partition):
 * what lands where with which owner and mode, that a second run changes nothing at all, that the agent copied into
 * the image runs, and that systemd-analyze accepts the installed unit.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { RESTART_EXIT_CODE } from '../../src/cli/run.js';
import { isThisMachinesRoot } from '../../src/cli/provision-flash.js';
import { AGENT_RESTART_EXIT_CODE } from '../../src/cli/provision-unit.js';
import { loadDeviceConfig } from '../../src/config/device-config.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { runScript, type ScriptRun } from '../support/scripts.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const script = runScript;

function ok(run: ScriptRun): ScriptRun {
  assert.equal(run.code, 0, `exit ${run.code}: ${run.stderr}${run.stdout}`);
  return run;
}

function oneLineError(run: ScriptRun, tool: string, message: RegExp): void {
  assert.equal(run.code, 1, run.stdout);
  assert.match(run.stderr, new RegExp(`^${tool}: [^\\n]+\\n$`), `exactly one line: ${run.stderr}`);
  assert.match(run.stderr, message);
}

const SHADOW_GID = 42;
const SYSTEM_TARGETS = '/usr/lib/systemd/system';

/** A small Debian-like image: merged /usr, /var on a "data partition" through an absolute link, no agent yet. */
function skeleton(root: string): string {
  for (const dir of ['etc', 'usr/bin', 'usr/sbin', 'usr/lib/systemd/system', 'data/var/lib', 'opt', 'root']) mkdirSync(path.join(root, dir), { recursive: true });
  symlinkSync('usr/bin', path.join(root, 'bin'));
  symlinkSync('usr/lib', path.join(root, 'lib'));
  // Absolute, as images have it: followed on this machine it would point outside the image.
  symlinkSync('/data/var', path.join(root, 'var'));
  writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nsystemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n');
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
    } else out.push(`${common} ${createHash('sha256').update(readFileSync(full)).digest('hex')}`);
  };
  walk('');
  return out;
}

function passwdEntry(root: string, user: string): string[] | undefined {
  return readFileSync(path.join(root, 'etc/passwd'), 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[0] === user);
}

let work: string;
let pki: string;
let bundle: string;
const BROKER = 'mqtts://broker.fleet.example:8883';
const ca = (): string[] => ['--ca', path.join(pki, 'ca.crt'), '--ca-key', path.join(pki, 'ca.key'), '--command-ca', path.join(pki, 'command-ca.crt'), '--broker', BROKER];

before(() => {
  work = makeTempDir('flash-');
  pki = path.join(work, 'dev');
  ok(script('dev-pki', ['--out', pki]));
  bundle = path.join(work, 'bundles', 'car-0042');
  ok(script('provision', ['--device', 'car-0042', '--bundle', bundle, ...ca()]));
});

describe('flash refuses, in one line', () => {
  test('a target that is not a root file system', () => {
    const notRoot = makeTempDir('flash-notroot-');
    oneLineError(script('flash', ['--bundle', bundle, '--target', notRoot]), 'flash', /does not look like a root file system \(no etc\/ folder\)/);
    assert.deepEqual(readdirSync(notRoot), []);
  });

  test('this machine\'s root under another name: a symbolic link to / (and links to it), a bind mount of /', () => {
    const dir = makeTempDir('flash-hostroot-');
    const link = path.join(dir, 'rootfs');
    symlinkSync('/', link);
    const chain = path.join(dir, 'mnt');
    symlinkSync(link, chain);
    // A bundle that does not exist: should the check ever let the host through, the run stops at the bundle, and
    // still writes nothing to this machine.
    const noBundle = path.join(dir, 'no-bundle');
    for (const target of ['/', link, chain]) {
      oneLineError(script('flash', ['--bundle', noBundle, '--target', target]), 'flash', new RegExp(`^flash: --target ${target} is this machine's own root: flash prepares a mounted image`));
    }
    assert.equal(isThisMachinesRoot(link), true);
    assert.equal(isThisMachinesRoot(skeleton(makeTempDir('flash-root-'))), false);
    // A bind mount keeps /'s device and inode, whatever its path: mounted in a mount namespace of its own, gone with it.
    const bind = path.join(dir, 'bind');
    mkdirSync(bind);
    const probe = `import('${path.join(repoRoot, 'dist/src/cli/provision-flash.js')}').then((m) => console.log(m.isThisMachinesRoot(process.argv[1])))`;
    const run = spawnSync('unshare', ['-m', 'sh', '-c', 'mount --bind / "$1" && exec "$2" -e "$3" "$1"', 'sh', bind, process.execPath, probe], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'true\n');
    assert.deepEqual(readdirSync(bind), [], 'the mount went with its namespace');
  });

  test('an image whose service user exists as a person\'s account (uid 1000), as another service\'s, or with a shared group', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['telematics:x:1000:1000:Tele Matics:/home/telematics:/bin/bash', 'telematics:x:1000:', /the image already has a user 'telematics' with uid 1000, outside its system range 100-999: a person's or a shared account/],
      ['telematics:x:990:990::/var/lib/other:/usr/sbin/nologin', 'telematics:x:990:', /the image already has a system user 'telematics' \(uid 990\) whose home is \/var\/lib\/other, not \/var\/lib\/telematics-agent/],
      ['telematics:x:0:0::/var/lib/telematics-agent:/usr/sbin/nologin', 'telematics:x:0:', /the service user 'telematics' has uid 0 in the image: the agent must not run as root/],
      ['', 'telematics:x:990:pi', /the image already has a group 'telematics' shared with pi: the agent's config would be readable by them/],
    ];
    for (const [user, group, message] of cases) {
      const root = skeleton(makeTempDir('flash-root-'));
      if (user) writeFileSync(path.join(root, 'etc/passwd'), `${readFileSync(path.join(root, 'etc/passwd'), 'utf8')}${user}\n`);
      writeFileSync(path.join(root, 'etc/group'), `${readFileSync(path.join(root, 'etc/group'), 'utf8')}${group}\n`);
      const before = listing(root);
      oneLineError(script('flash', ['--bundle', bundle, '--target', root]), 'flash', message);
      assert.deepEqual(listing(root), before, `nothing written: ${user || group}`);
    }
  });

  test('a bundle whose unit runs the agent as root (edited by hand)', () => {
    const rootBundle = path.join(work, 'bundles', 'car-0042-root');
    ok(script('provision', ['--device', 'car-0042', '--bundle', rootBundle, ...ca()]));
    const unitFile = path.join(rootBundle, 'telematics-agent.service');
    writeFileSync(unitFile, readFileSync(unitFile, 'utf8').replace(/^User=telematics$/m, 'User=root').replace(/^Group=telematics$/m, 'Group=root'));
    const root = skeleton(makeTempDir('flash-root-'));
    const before = listing(root);
    oneLineError(script('flash', ['--bundle', rootBundle, '--target', root]), 'flash', /^flash: the service user: 'root': the agent must not run as root/);
    assert.deepEqual(listing(root), before, 'nothing written');
  });

  test('a bundle that still awaits its certificate', () => {
    const pending = path.join(work, 'bundles', 'car-0050');
    ok(script('provision', ['--device', 'car-0050', '--bundle', pending, '--csr-only', '--broker-ca', path.join(pki, 'ca.crt'), '--command-ca', path.join(pki, 'command-ca.crt'), '--broker', BROKER]));
    const root = skeleton(makeTempDir('flash-root-'));
    const before = listing(root);
    oneLineError(script('flash', ['--bundle', pending, '--target', root]), 'flash', /awaits its certificate: have certs\/device\.csr signed/);
    assert.deepEqual(listing(root), before, 'nothing written');
  });

  test('an image of another architecture than the agent\'s native modules', () => {
    const root = skeleton(makeTempDir('flash-root-'));
    // An ELF header naming the other common architecture: aarch64 here on x86-64, x86-64 on an aarch64 host.
    const header = Buffer.alloc(64);
    header.writeUInt32BE(0x7f454c46, 0);
    header[4] = 2;
    header[5] = 1;
    header.writeUInt16LE(process.arch === 'arm64' ? 62 : 183, 18);
    writeFileSync(path.join(root, 'usr/bin/node'), header, { mode: 0o755 });
    oneLineError(script('flash', ['--bundle', bundle, '--target', root]), 'flash', process.arch === 'arm64' ? /the target is x86-64/ : /native modules are built for x86-64 .* the target is aarch64 \(\/usr\/bin\/node\)/);
  });
});

describe('flash into an image', () => {
  let root: string;
  let first: ScriptRun;
  let second: ScriptRun;
  let afterFirst: string[];
  before(() => {
    root = skeleton(makeTempDir('flash-root-'));
    first = script('flash', ['--bundle', bundle, '--target', root]);
    afterFirst = listing(root);
    second = script('flash', ['--bundle', bundle, '--target', root]);
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

  test('the bundle goes to /etc/telematics-agent owned by the service user: folders 0750, config 0640, key 0600', () => {
    const expected: [string, number][] = [
      ['etc/telematics-agent', 0o750],
      ['etc/telematics-agent/config.json', 0o640],
      ['etc/telematics-agent/certs', 0o750],
      ['etc/telematics-agent/certs/device.key', 0o600],
      ['etc/telematics-agent/certs/device.crt', 0o644],
      ['etc/telematics-agent/certs/broker-ca.crt', 0o644],
      ['etc/telematics-agent/certs/command-ca.crt', 0o644],
      ['etc/telematics-agent/dbc/demo_vehicle.dbc', 0o644],
      // /var -> /data/var is followed inside the image.
      ['data/var/lib/telematics-agent', 0o750],
    ];
    for (const [rel, mode] of expected) {
      const stats = lstatSync(path.join(root, rel));
      assert.equal(stats.mode & 0o777, mode, `${rel}: mode ${(stats.mode & 0o777).toString(8)}`);
      assert.equal(`${stats.uid}:${stats.gid}`, '999:999', `${rel} owner`);
    }
    assert.ok(lstatSync(path.join(root, 'var')).isSymbolicLink(), 'the image\'s link is left as it was');
    assert.ok(readFileSync(path.join(root, 'etc/telematics-agent/certs/device.key')).equals(readFileSync(path.join(bundle, 'certs/device.key'))));
    // No secret anywhere in the image readable by others.
    for (const line of listing(root).filter((l) => /\.key /.test(l))) assert.match(line, / 600 /, line);
  });

  test('the config and identity load in the image as the agent will load them there', () => {
    const config = loadDeviceConfig(path.join(root, 'etc/telematics-agent/config.json'));
    assert.equal(config.deviceId, 'car-0042');
    assert.equal(config.uplink!.certFile, path.join(root, 'etc/telematics-agent/certs/device.crt'));
    assert.equal(config.outbox!.path, '/var/lib/telematics-agent/outbox.db');
    const identity = loadIdentity({ certFile: config.uplink!.certFile!, keyFile: config.uplink!.keyFile!, caFile: config.uplink!.caFile!, requireIssuer: true });
    assert.equal(identity.commonName, 'car-0042');
  });

  test('the agent goes to /opt/telematics-agent, root-owned, with its production dependencies only', () => {
    const opt = path.join(root, 'opt/telematics-agent');
    for (const rel of ['package.json', 'dist/src/cli/main.js', 'dist/src/health/watchdog.js', 'device-config/dbc/demo_vehicle.dbc', 'node_modules/better-sqlite3/package.json', 'node_modules/commander/package.json']) {
      const stats = statSync(path.join(opt, rel));
      assert.equal(`${stats.uid}:${stats.gid} ${(stats.mode & 0o777).toString(8)}`, '0:0 644', rel);
    }
    // The dev dependencies stay behind (@types/node stays: mqtt's own dependencies list it).
    for (const rel of ['node_modules/typescript', 'node_modules/@types/node-forge', 'node_modules/@types/better-sqlite3', 'node_modules/.bin', 'test', 'src']) {
      assert.ok(!existsSync(path.join(opt, rel)), `${rel} is not installed`);
    }
    const native = readdirSync(path.join(opt, 'node_modules/better-sqlite3/build/Release')).find((n) => n.endsWith('.node'))!;
    assert.equal(statSync(path.join(opt, 'node_modules/better-sqlite3/build/Release', native)).mode & 0o777, 0o755, 'native addons stay executable');
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
    const run = spawnSync(process.execPath, [path.join(root, 'opt/telematics-agent/dist/src/cli/main.js'), 'run', '--config', config, '--duration', '1'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /stopped after/);
    assert.ok(existsSync(path.join(dir, 'outbox.db')), 'better-sqlite3 from the image opened the outbox');
  });

  test('the unit is installed and enabled; systemd-analyze verify accepts it without a word', (t) => {
    const unit = path.join(root, 'etc/systemd/system/telematics-agent.service');
    assert.equal(readFileSync(unit, 'utf8'), readFileSync(path.join(bundle, 'telematics-agent.service'), 'utf8'));
    assert.equal(readlinkSync(path.join(root, 'etc/systemd/system/multi-user.target.wants/telematics-agent.service')), '/etc/systemd/system/telematics-agent.service');
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

  test('the unit restarts on failure, on the agent\'s restart exit code, and pings the watchdog', () => {
    assert.equal(AGENT_RESTART_EXIT_CODE, RESTART_EXIT_CODE);
    const unit = readFileSync(path.join(root, 'etc/systemd/system/telematics-agent.service'), 'utf8');
    for (const line of ['Type=notify', 'NotifyAccess=all', 'WatchdogSec=30', 'Restart=on-failure', `RestartForceExitStatus=${RESTART_EXIT_CODE}`, 'User=telematics', 'SupplementaryGroups=dialout', 'CapabilityBoundingSet=', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ReadWritePaths=-/etc/telematics-agent', 'StateDirectory=telematics-agent']) {
      assert.match(unit, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), line);
    }
    assert.match(unit, /^ExecStart=\/usr\/bin\/node \/opt\/telematics-agent\/dist\/src\/cli\/main\.js run --config \/etc\/telematics-agent\/config\.json$/m);
  });

  test('another device\'s bundle is refused by an image that holds one, unless --replace-identity', () => {
    const other = path.join(work, 'bundles', 'car-0044');
    ok(script('provision', ['--device', 'car-0044', '--bundle', other, ...ca()]));
    oneLineError(script('flash', ['--bundle', other, '--target', root]), 'flash', /the target is provisioned as 'car-0042', the bundle is 'car-0044': pass --replace-identity/);
    ok(script('flash', ['--bundle', other, '--target', root, '--replace-identity']));
    assert.equal(loadDeviceConfig(path.join(root, 'etc/telematics-agent/config.json')).deviceId, 'car-0044');
    assert.equal(passwdEntry(root, 'telematics')![2], '999', 'the same account');
  });
});

describe('install-service', () => {
  test('--root installs the unit, its account and state folder into a bare system; twice is once', () => {
    const root = skeleton(makeTempDir('install-service-'));
    const first = ok(script('install-service', ['--root', root]));
    assert.match(first.stdout, /installed and enabled in .*; it starts at that system's next boot/);
    assert.equal(readlinkSync(path.join(root, 'etc/systemd/system/multi-user.target.wants/telematics-agent.service')), '/etc/systemd/system/telematics-agent.service');
    assert.ok(passwdEntry(root, 'telematics'));
    assert.equal(statSync(path.join(root, 'data/var/lib/telematics-agent')).uid, 999);
    const snap = listing(root);
    const second = ok(script('install-service', ['--root', root]));
    assert.match(second.stdout, /nothing changed/);
    assert.deepEqual(listing(root), snap);
  });

  test('a user name that cannot be one is refused in one line', () => {
    oneLineError(script('install-service', ['--print', '--user', 'Fleet Agent']), 'install-service', /--user: 'Fleet Agent' cannot be a system user name/);
  });

  test('root and shared accounts are refused in one line, by install-service and by provision', () => {
    const root = script('install-service', ['--print', '--user', 'root']);
    oneLineError(root, 'install-service', /^install-service: --user: 'root': the agent must not run as root: /);
    assert.equal(root.stdout, '', 'no unit printed');
    oneLineError(script('install-service', ['--print', '--user', 'nobody']), 'install-service', /^install-service: --user: 'nobody' is shared by many services: /);
    const dir = path.join(work, 'bundles', 'car-root');
    oneLineError(script('provision', ['--device', 'car-root', '--bundle', dir, '--user', 'root', ...ca()]), 'provision', /--user: 'root': the agent must not run as root/);
    assert.equal(existsSync(dir), false, 'no bundle made');
  });

  test('an existing account made for the agent (system uid, home the state folder) is reused as it is', () => {
    const root = skeleton(makeTempDir('install-service-'));
    writeFileSync(path.join(root, 'etc/passwd'), `${readFileSync(path.join(root, 'etc/passwd'), 'utf8')}telematics:x:990:990:made by the image recipe:/var/lib/telematics-agent:/usr/sbin/nologin\n`);
    writeFileSync(path.join(root, 'etc/group'), `${readFileSync(path.join(root, 'etc/group'), 'utf8')}telematics:x:990:\n`);
    ok(script('install-service', ['--root', root]));
    assert.deepEqual(passwdEntry(root, 'telematics'), ['telematics', 'x', '990', '990', 'made by the image recipe', '/var/lib/telematics-agent', '/usr/sbin/nologin']);
    assert.equal(statSync(path.join(root, 'data/var/lib/telematics-agent')).uid, 990);
  });
});
