/**
 * The certificate signer's systemd unit as shipped (deploy/systemd/telematics-ca-signer.service): systemd's own
 * checker accepts it without a word, it is hardened at least as far as the agent's unit (src/provision/service-unit.ts),
 * every option it passes is one `telematics-ops ca-signer` takes, and the sysusers line makes the account it runs as.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { INSTALL, serviceUnit } from '../../src/provision/service-unit.js';
import { runProgramSync } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const UNIT_NAME = 'telematics-ca-signer.service';
const UNIT_FILE = path.join(repoRoot, 'deploy', 'systemd', UNIT_NAME);
const SYSUSERS_FILE = path.join(repoRoot, 'deploy', 'systemd', 'telematics-ca-signer.sysusers.conf');
const SYSTEM_UNITS = '/usr/lib/systemd/system';

/** The unit's settings: each key with its values in order. */
function settings(text: string): Map<string, string[]> {
  const values = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    values.set(line.slice(0, eq), [...(values.get(line.slice(0, eq)) ?? []), line.slice(eq + 1)]);
  }
  return values;
}

/** A root with `units` installed, node at /usr/bin/node (any executable) and systemd's targets. */
function rootWith(units: Record<string, string>): string {
  const root = makeTempDir('ca-signer-unit-');
  for (const dir of ['etc/systemd/system', 'usr/lib/systemd/system', 'usr/bin']) mkdirSync(path.join(root, dir), { recursive: true });
  copyFileSync('/usr/bin/true', path.join(root, 'usr/bin/node'));
  copyFileSync('/usr/bin/true', path.join(root, 'usr/bin/systemd-notify'));
  for (const name of readdirSync(SYSTEM_UNITS).filter((n) => n.endsWith('.target'))) {
    const source = path.join(SYSTEM_UNITS, name);
    if (lstatSync(source).isFile()) copyFileSync(source, path.join(root, 'usr/lib/systemd/system', name));
  }
  for (const [name, text] of Object.entries(units)) writeFileSync(path.join(root, 'etc/systemd/system', name), text);
  return root;
}

function exposure(root: string, unit: string): number {
  const security = spawnSync('systemd-analyze', ['security', '--offline=true', `--root=${root}`, unit], { encoding: 'utf8' });
  assert.equal(security.status, 0, security.stderr);
  const level = new RegExp(`Overall exposure level for ${unit.replace('.', '\\.')}: ([\\d.]+)`).exec(security.stdout);
  assert.ok(level, security.stdout);
  return Number(level[1]);
}

describe('[18.signer] the certificate signer unit', () => {
  const unitText = readFileSync(UNIT_FILE, 'utf8');

  it('[18.signer] systemd-analyze verify accepts the unit without a word; its exposure is no higher than the agent unit', (t) => {
    const root = rootWith({ [UNIT_NAME]: unitText, [INSTALL.unitName]: serviceUnit() });
    const verify = spawnSync('systemd-analyze', ['verify', `--root=${root}`, UNIT_NAME], { encoding: 'utf8' });
    assert.equal(verify.error, undefined, 'systemd-analyze must be installed (scripts/install-test-deps.sh)');
    assert.equal(verify.status, 0, verify.stderr);
    // verify exits 0 even on unknown keys and bad values: only silence means the unit is clean.
    assert.equal(`${verify.stdout}${verify.stderr}`, '');
    const signer = exposure(root, UNIT_NAME);
    const agent = exposure(root, INSTALL.unitName);
    t.diagnostic(`systemd-analyze security --offline=true: signer ${signer}, agent ${agent}`);
    assert.ok(signer <= agent, `the signer's exposure ${signer} is above the agent's ${agent}`);
  });

  it('[18.signer] it keeps every restriction of the agent unit, runs as its own user, and takes the keys as credentials', () => {
    const signer = settings(unitText);
    const agent = settings(serviceUnit());
    // What the agent needs that the signer does not (serial ports, CAN, the watchdog) is left out or made stricter.
    const differ: Record<string, string[]> = {
      PrivateDevices: ['yes'],
      RestrictAddressFamilies: ['AF_UNIX AF_INET AF_INET6'],
    };
    const hardening = [
      'UMask',
      'CapabilityBoundingSet',
      'AmbientCapabilities',
      'NoNewPrivileges',
      'ProtectSystem',
      'ProtectHome',
      'PrivateTmp',
      'PrivateMounts',
      'PrivateDevices',
      'DevicePolicy',
      'ProtectKernelTunables',
      'ProtectKernelModules',
      'ProtectKernelLogs',
      'ProtectControlGroups',
      'ProtectClock',
      'ProtectHostname',
      'ProtectProc',
      'RestrictAddressFamilies',
      'RestrictNamespaces',
      'RestrictRealtime',
      'RestrictSUIDSGID',
      'LockPersonality',
      'RemoveIPC',
      'SystemCallArchitectures',
      'SystemCallFilter',
      'SystemCallErrorNumber',
    ];
    for (const key of hardening) assert.deepEqual(signer.get(key), differ[key] ?? agent.get(key), key);
    assert.equal(signer.get('ReadWritePaths'), undefined, 'nothing writable beyond its state folder');
    assert.deepEqual(signer.get('User'), ['telematics-ca-signer']);
    assert.deepEqual(signer.get('StateDirectory'), ['telematics-ca-signer']);
    assert.deepEqual(signer.get('LoadCredential'), [
      'backend.key:/etc/telematics-ca-signer/backend.key',
      'device-ca.key:/etc/telematics-ca-signer/device-ca.key',
    ]);
    assert.equal(readFileSync(SYSUSERS_FILE, 'utf8').split('\n')[1], 'u telematics-ca-signer - "telematics certificate signer" /var/lib/telematics-ca-signer');
  });

  it('[18.signer] every option of its ExecStart= is one telematics-ops ca-signer takes', () => {
    const exec = settings(unitText).get('ExecStart')![0]!;
    assert.match(exec, /^\/usr\/bin\/node \/opt\/telematics-agent\/dist\/src\/cli\/ops\.js ca-signer /);
    const help = runProgramSync('telematics-ops', ['ca-signer', '--help']);
    assert.equal(help.status, 0, help.stderr);
    const flags = exec.match(/--[a-z-]+/g)!;
    assert.deepEqual(flags, ['--broker', '--cert', '--key', '--ca', '--ca-cert', '--ca-key']);
    for (const flag of flags) assert.match(help.stdout, new RegExp(`${flag} <`), flag);
    // The keys come from the credentials folder (%d), the state folder from $STATE_DIRECTORY.
    assert.match(exec, /--key %d\/backend\.key /);
    assert.match(exec, /--ca-key %d\/device-ca\.key /);
    assert.doesNotMatch(exec, /--state/);
  });

  it('[18.signer] the npm package ships the unit, its sysusers line and the program its ExecStart= runs (the docs install from an unpacked npm pack)', () => {
    const pack = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: repoRoot, encoding: 'utf8' });
    assert.equal(pack.status, 0, pack.stderr);
    const shipped = new Set((JSON.parse(pack.stdout) as [{ files: { path: string }[] }])[0].files.map((f) => f.path));
    for (const file of ['deploy/systemd/telematics-ca-signer.service', 'deploy/systemd/telematics-ca-signer.sysusers.conf', 'dist/src/cli/ops.js'])
      assert.ok(shipped.has(file), `${file} is not in the package`);
  });
});
