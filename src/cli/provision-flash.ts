/**
 * `flash`: installs a provisioning bundle and the built agent into a mounted target root file system (an image being
 * prepared), with the owners and modes the service needs:
 *
 *   /opt/telematics-agent/         root:root 0755/0644: package.json, dist/src, device-config, production node_modules
 *   /etc/telematics-agent/         the bundle: <user>:<group>, folders 0750, config 0640, key 0600
 *   /etc/systemd/system/...        the bundle's unit, enabled; /etc/sysusers.d entry
 *   /var/lib/telematics-agent/     <user>:<group> 0750
 *   /etc/passwd, group, shadow...  the dedicated user, created when missing (src/cli/provision-users.ts)
 *
 * Idempotent: what already matches is not touched, so a second run changes no byte, mode, owner or timestamp.
 * /opt/telematics-agent is the agent's alone and is mirrored (files the new build lacks are removed); nothing else is
 * ever removed.
 */
import { closeSync, existsSync, lstatSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, realpathSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { loadDeviceConfig, type DeviceConfig } from '../config/device-config.js';
import { loadIdentity } from '../pki/identity.js';
import { ChangeCount, ProvisionError, ensureDirInRoot, octal, putDir, putFile, putSymlink, resolveInRoot, type Change, type Owner } from './provision-files.js';
import { BUNDLE, PROJECT_ROOT } from './provision-pki.js';
import { INSTALL, installService } from './provision-unit.js';

type Say = (line: string) => void;

export interface FlashOptions {
  bundle: string;
  target: string;
  /** The built agent to install: a checkout after `npm run build` (default this one). */
  agentDir?: string;
  /** Overwrite another identity already in the target. */
  replaceIdentity?: boolean;
}

const ROOT: Owner = { uid: 0, gid: 0 };

// ---- checks -----------------------------------------------------------------------------------------------------

/**
 * Whether `target` is this machine's own root, however it is reached: `/` itself, a symbolic link to it, or a bind
 * mount of it (same device and inode as `/`, which no path comparison sees).
 */
export function isThisMachinesRoot(target: string): boolean {
  const real = realpathSync(target);
  if (real === '/') return true;
  const here = statSync(real);
  const root = statSync('/');
  return here.dev === root.dev && here.ino === root.ino;
}

function checkTarget(target: string): string {
  let stats;
  try {
    stats = statSync(target);
  } catch {
    throw new ProvisionError(`--target ${target}: no such folder (mount the image's root partition first)`);
  }
  if (!stats.isDirectory()) throw new ProvisionError(`--target ${target} is not a folder`);
  // Before anything else: flashing the host would rewrite its own /etc/passwd, units and /opt.
  if (isThisMachinesRoot(target)) {
    throw new ProvisionError(`--target ${target} is this machine's own root: flash prepares a mounted image; on a running device use scripts/install-service`);
  }
  // The real path from here on: what is checked is what gets written.
  const real = realpathSync(target);
  const etc = resolveInRoot(real, 'etc');
  if (!existsSync(etc) || !statSync(etc).isDirectory()) {
    throw new ProvisionError(`--target ${target} does not look like a root file system (no etc/ folder): mount the image's root partition there`);
  }
  if (process.getuid?.() !== 0) throw new ProvisionError('flash sets owners inside the image: run it as root (sudo scripts/flash ...)');
  return real;
}

interface Bundle {
  dir: string;
  config: DeviceConfig;
  unitText: string;
  /** Bundle-relative files to install under /etc/telematics-agent, with their mode. */
  files: { rel: string; mode: number }[];
}

/** Loads the bundle as the agent will load it on the car: a bundle that would not start is not installed. */
function readBundle(dir: string): Bundle {
  const bundle = path.resolve(dir);
  if (!existsSync(bundle) || !statSync(bundle).isDirectory()) throw new ProvisionError(`--bundle ${dir}: no such folder (scripts/provision makes one)`);
  const need = (rel: string): string => {
    const file = path.join(bundle, rel);
    if (!existsSync(file)) {
      if (rel === BUNDLE.cert && existsSync(path.join(bundle, BUNDLE.csr))) {
        throw new ProvisionError(`--bundle ${bundle} awaits its certificate: have ${BUNDLE.csr} signed, then scripts/provision --device <id> --bundle ${bundle} --cert <signed.crt>`);
      }
      throw new ProvisionError(`--bundle ${bundle} lacks ${rel}: not a complete bundle (scripts/provision makes one)`);
    }
    return file;
  };
  for (const rel of [BUNDLE.config, BUNDLE.key, BUNDLE.cert, BUNDLE.brokerCa, BUNDLE.commandCa, BUNDLE.unit]) need(rel);
  let config: DeviceConfig;
  try {
    config = loadDeviceConfig(path.join(bundle, BUNDLE.config));
  } catch (err) {
    throw new ProvisionError(`--bundle: ${(err as Error).message.split('\n').join(' ')}`);
  }
  const uplink = config.uplink;
  if (!uplink?.certFile || !uplink.keyFile || !uplink.caFile || !config.commands?.caFile) {
    throw new ProvisionError(`--bundle ${bundle}: its config has no uplink identity or command CA (was it made by scripts/provision?)`);
  }
  // Everything the config names under /etc must come from the bundle: it is all that gets installed there.
  const named = [uplink.certFile, uplink.keyFile, uplink.caFile, config.commands.caFile, ...config.buses.map((b) => b.dbc)];
  for (const file of named) {
    if (!file.startsWith(bundle + path.sep)) throw new ProvisionError(`--bundle ${bundle}: its config names ${file}, outside the bundle`);
  }
  try {
    const identity = loadIdentity({ certFile: uplink.certFile, keyFile: uplink.keyFile, caFile: uplink.caFile });
    if (identity.commonName !== config.deviceId) {
      throw new ProvisionError(`--bundle ${bundle}: the certificate is for '${identity.commonName}', the config for '${config.deviceId}'`);
    }
  } catch (err) {
    if (err instanceof ProvisionError) throw err;
    throw new ProvisionError(`--bundle ${bundle}: ${(err as Error).message}`);
  }
  const files: { rel: string; mode: number }[] = [
    { rel: BUNDLE.config, mode: 0o640 },
    { rel: BUNDLE.key, mode: 0o600 },
    { rel: BUNDLE.cert, mode: 0o644 },
    { rel: BUNDLE.brokerCa, mode: 0o644 },
    { rel: BUNDLE.commandCa, mode: 0o644 },
  ];
  for (const dir of [BUNDLE.dbcDir, BUNDLE.replayDir]) {
    if (!existsSync(path.join(bundle, dir))) continue;
    for (const name of readdirSync(path.join(bundle, dir)).sort()) {
      if (statSync(path.join(bundle, dir, name)).isFile()) files.push({ rel: `${dir}/${name}`, mode: 0o644 });
    }
  }
  return { dir: bundle, config, unitText: readFileSync(path.join(bundle, BUNDLE.unit), 'utf8'), files };
}

/** An identity already in the target is replaced only on purpose. */
function checkExistingIdentity(target: string, bundle: Bundle, replace: boolean): void {
  const etc = resolveInRoot(target, INSTALL.configDir.slice(1));
  let deviceId: string | undefined;
  try {
    deviceId = (JSON.parse(readFileSync(path.join(etc, BUNDLE.config), 'utf8')) as { deviceId?: string }).deviceId;
  } catch {
    // none there
  }
  if (replace) return;
  if (deviceId !== undefined && deviceId !== bundle.config.deviceId) {
    throw new ProvisionError(`the target is provisioned as '${deviceId}', the bundle is '${bundle.config.deviceId}': pass --replace-identity to overwrite it`);
  }
  const keyFile = path.join(etc, BUNDLE.key);
  if (existsSync(keyFile) && !readFileSync(keyFile).equals(readFileSync(path.join(bundle.dir, BUNDLE.key)))) {
    throw new ProvisionError(`the target holds another key for '${bundle.config.deviceId}' (rotated on the device?): pass --replace-identity to overwrite it`);
  }
}

// ---- architecture -----------------------------------------------------------------------------------------------

const ELF_MACHINES: Record<number, string> = { 3: 'x86 (32-bit)', 40: 'arm (32-bit)', 62: 'x86-64', 183: 'aarch64', 243: 'riscv', 8: 'mips', 21: 'ppc64' };

/** The ELF machine of a binary, or undefined when it is not an ELF file. */
function elfMachine(file: string): number | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const head = Buffer.alloc(20);
    if (readSync(fd, head, 0, 20, 0) < 20) return undefined;
    if (head.readUInt32BE(0) !== 0x7f454c46) return undefined;
    return head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The target's architecture, read from one of its own binaries. */
function targetMachine(root: string): { machine: number; file: string } | undefined {
  for (const file of ['usr/bin/node', 'usr/local/bin/node', 'usr/lib/systemd/systemd', 'lib/systemd/systemd', 'bin/busybox', 'usr/bin/busybox', 'usr/bin/dash', 'bin/sh', 'usr/bin/env']) {
    const machine = elfMachine(resolveInRoot(root, file));
    if (machine !== undefined) return { machine, file: `/${file}` };
  }
  return undefined;
}

/** Native addons are built for one architecture: the image's must be the same, or the agent dies at its first require. */
function checkArchitecture(root: string, agentDir: string, natives: string[], say: Say): void {
  const built = natives.map((rel) => ({ rel, machine: elfMachine(path.join(agentDir, rel)) })).filter((n) => n.machine !== undefined);
  if (built.length === 0) return;
  const target = targetMachine(root);
  const name = (m: number): string => ELF_MACHINES[m] ?? `ELF machine ${m}`;
  if (target === undefined) {
    say(`warning: cannot tell the target's architecture (no ELF binary found in ${root}); the agent's native modules are built for ${name(built[0]!.machine!)}`);
    return;
  }
  const wrong = built.find((n) => n.machine !== target.machine);
  if (wrong) {
    throw new ProvisionError(
      `the agent's native modules are built for ${name(wrong.machine!)} (${wrong.rel}), the target is ${name(target.machine)} (${target.file}): ` +
        `build the agent for ${name(target.machine)} (npm ci --omit=dev there, or in an emulated chroot) and pass it with --agent-dir`,
    );
  }
}

// ---- the agent --------------------------------------------------------------------------------------------------

interface Entry {
  kind: 'dir' | 'file' | 'symlink';
  /** Files: executable bits kept (native addons, bin scripts). */
  executable?: boolean;
}

/** Every path of the agent to install, relative to the agent folder, parents before children. */
function agentEntries(agentDir: string): { entries: Map<string, Entry>; natives: string[] } {
  const entries = new Map<string, Entry>();
  const natives: string[] = [];
  const need = (rel: string, hint: string): void => {
    if (!existsSync(path.join(agentDir, rel))) throw new ProvisionError(`--agent-dir ${agentDir} has no ${rel}: ${hint}`);
  };
  need('package.json', 'not the agent\'s folder');
  need('dist/src/cli/main.js', 'run `npm run build` first');
  need('package-lock.json', 'the production dependencies are read from it');
  need('node_modules', 'run `npm ci` first');
  const addParents = (rel: string): void => {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!entries.has(dir)) entries.set(dir, { kind: 'dir' });
    }
  };
  /** Adds `rel` and everything under it; `skip` says which folders are not part of it. */
  const walk = (rel: string, skip: (rel: string) => boolean = () => false): void => {
    const full = path.join(agentDir, rel);
    const stats = lstatSync(full);
    addParents(rel);
    if (stats.isSymbolicLink()) entries.set(rel, { kind: 'symlink' });
    else if (stats.isDirectory()) {
      entries.set(rel, { kind: 'dir' });
      for (const name of readdirSync(full).sort()) {
        const child = `${rel}/${name}`;
        if (!skip(child)) walk(child, skip);
      }
    } else if (stats.isFile()) {
      entries.set(rel, { kind: 'file', executable: (stats.mode & 0o111) !== 0 });
      if (rel.endsWith('.node') && rel.includes('/build/')) natives.push(rel);
    }
  };
  entries.set('package.json', { kind: 'file' });
  walk('dist/src');
  walk('device-config');
  // The production dependencies: what `npm ci --omit=dev` would install, read from the lockfile.
  const lock = JSON.parse(readFileSync(path.join(agentDir, 'package-lock.json'), 'utf8')) as { packages?: Record<string, { dev?: boolean; link?: boolean }> };
  if (!lock.packages) throw new ProvisionError(`${agentDir}/package-lock.json has no "packages" (lockfile version 1?): regenerate it with npm 7 or later`);
  const packages = Object.entries(lock.packages).filter(([key, info]) => key.startsWith('node_modules/') && !info.dev);
  for (const [key, info] of packages) {
    if (info.link) throw new ProvisionError(`${key} is a linked package (npm link / workspace): install the agent without links to flash it`);
    if (!existsSync(path.join(agentDir, key))) {
      throw new ProvisionError(`--agent-dir ${agentDir}: ${key} is in package-lock.json but not installed: run \`npm ci\``);
    }
    // Nested node_modules are packages of their own in the lockfile (and a dev one must not slip in with its parent).
    walk(key, (child) => child.endsWith('/node_modules'));
  }
  return { entries, natives };
}

/** Makes `destRoot` hold exactly `entries` from `srcRoot`, root-owned; removes anything else under it. */
function mirror(srcRoot: string, destRoot: string, entries: Map<string, Entry>, count: ChangeCount): void {
  count.add(putDir(destRoot, { mode: 0o755, owner: ROOT }));
  for (const [rel, entry] of entries) {
    const src = path.join(srcRoot, rel);
    const dest = path.join(destRoot, rel);
    let existing;
    try {
      existing = lstatSync(dest);
    } catch {
      existing = undefined;
    }
    const kindThere = existing === undefined ? undefined : existing.isSymbolicLink() ? 'symlink' : existing.isDirectory() ? 'dir' : 'file';
    if (kindThere !== undefined && kindThere !== entry.kind) {
      rmSync(dest, { recursive: true, force: true });
      count.removed++;
    }
    if (entry.kind === 'dir') count.add(putDir(dest, { mode: 0o755, owner: ROOT }));
    else if (entry.kind === 'symlink') count.add(putSymlink(dest, readlinkSync(src), ROOT));
    else count.add(putFile(dest, readFileSync(src), { mode: entry.executable ? 0o755 : 0o644, owner: ROOT }));
  }
  const prune = (rel: string): void => {
    const dir = rel === '' ? destRoot : path.join(destRoot, rel);
    for (const name of readdirSync(dir)) {
      const child = rel === '' ? name : `${rel}/${name}`;
      if (!entries.has(child)) {
        rmSync(path.join(destRoot, child), { recursive: true, force: true });
        count.removed++;
      } else if (entries.get(child)!.kind === 'dir') prune(child);
    }
  };
  prune('');
}

// ---- flash ------------------------------------------------------------------------------------------------------

export function runFlash(options: FlashOptions, say: Say): void {
  const target = checkTarget(options.target);
  const bundle = readBundle(options.bundle);
  const agentDir = path.resolve(options.agentDir ?? PROJECT_ROOT);
  const { entries, natives } = agentEntries(agentDir);
  checkArchitecture(target, agentDir, natives, say);
  checkExistingIdentity(target, bundle, options.replaceIdentity ?? false);
  const device = bundle.config.deviceId;
  say(`flash: ${device} into ${target}`);

  // The unit first: it names the account, whose IDs own the config.
  const count = new ChangeCount();
  const { account } = installService(target, bundle.unitText, (line) => say(`  ${line}`), count);
  const owner = { uid: account.uid, gid: account.gid };

  const etcCount = new ChangeCount();
  const etc = ensureDirInRoot(target, path.dirname(INSTALL.configDir).slice(1), { mode: 0o755, owner: ROOT }, etcCount);
  const configDir = path.join(etc, path.basename(INSTALL.configDir));
  const note = (change: Change, what: string, mode: number): void => {
    etcCount.add(change);
    if (change !== 'unchanged') say(`  ${change} ${INSTALL.configDir}/${what} (${account.user}:${account.group} ${octal(mode)})`);
  };
  note(putDir(configDir, { mode: 0o750, owner }), '', 0o750);
  const dirs = new Set(bundle.files.map((f) => path.dirname(f.rel)).filter((d) => d !== '.'));
  for (const dir of [...dirs].sort()) note(putDir(path.join(configDir, dir), { mode: 0o750, owner }), `${dir}/`, 0o750);
  for (const file of bundle.files) {
    note(putFile(path.join(configDir, file.rel), readFileSync(path.join(bundle.dir, file.rel)), { mode: file.mode, owner }), file.rel, file.mode);
  }

  const agentCount = new ChangeCount();
  const opt = ensureDirInRoot(target, path.dirname(INSTALL.agentDir).slice(1), { mode: 0o755, owner: ROOT }, agentCount);
  mirror(agentDir, path.join(opt, path.basename(INSTALL.agentDir)), entries, agentCount);
  const files = [...entries.values()].filter((e) => e.kind === 'file').length;
  say(`  agent: ${files} files from ${agentDir} in ${INSTALL.agentDir} (${agentCount.text()})`);

  // The result, as the agent will read it on the car (paths resolved inside the image).
  const installed = loadDeviceConfig(path.join(configDir, BUNDLE.config));
  loadIdentity({ certFile: installed.uplink!.certFile!, keyFile: installed.uplink!.keyFile!, caFile: installed.uplink!.caFile! });

  const total = new ChangeCount();
  for (const c of [count, etcCount, agentCount]) {
    total.created += c.created;
    total.updated += c.updated;
    total.removed += c.removed;
  }
  say(
    total.changed
      ? `flash: ${device} installed in ${target} (${total.text()}); it starts at the image's next boot as ${account.user} (uid ${account.uid})`
      : `flash: ${target} already holds ${device} and this agent; nothing changed`,
  );
}
