/**
 * `flash`: installs a provisioning bundle and the built agent into a mounted target root file system (an image being
 * prepared), with the owners and modes the service needs:
 *
 *   /opt/telematics-agent/         root:root 0755/0644: package.json, dist/src, device-config, production node_modules,
 *                                  the SocketCAN addon (native/can-rx/build/Release/can_rx.node, 0755)
 *   /etc/telematics-agent/         the bundle, root:<group>: folders 0750, config 0640, CAs and DBCs 0644 (read-only
 *                                  to the agent: it cannot replace its own trust anchors or the config naming them)
 *   /etc/telematics-agent/identity <user>:<group> 0700, key 0600: the one part the agent writes (certificate rotation)
 *   /etc/systemd/system/...        the bundle's unit, enabled; /etc/sysusers.d entry
 *   /var/lib/telematics-agent/     <user>:<group> 0750
 *   /etc/passwd, group, shadow...  the dedicated user, created when missing (src/provision/service-account.ts)
 *
 * Idempotent: what already matches is not touched, so a second run changes no byte, mode, owner or timestamp.
 * /opt/telematics-agent is the agent's alone and is mirrored (files the new build lacks are removed); nothing else is
 * ever removed, except the identity an older flash left in certs/ and a rotation's leftovers beside a replaced pair.
 *
 * The image is hostile until proven otherwise: every path into it is resolved inside it (resolveInRoot), and every
 * file read from it is a regular file of bounded size, opened without following a final link and without blocking
 * (readImageFile). A link to the host's /dev/zero, a FIFO or a huge sparse file is refused in one line.
 */
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { loadDeviceConfig, type DeviceConfig } from '../config/device-config.js';
import { readRegularFile } from '../config/regular-file.js';
import { loadIdentity } from '../pki/identity.js';
import {
  ChangeCount,
  ProvisionError,
  ensureDirInRoot,
  octal,
  putDir,
  putFile,
  putSymlink,
  readImageFile,
  resolveInRoot,
  type Change,
  type Owner,
} from './files.js';
import { BUNDLE, LEGACY_IDENTITY, PROJECT_ROOT } from './bundle.js';
import { INSTALL, installService } from './service-unit.js';

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

/** Who owns a file of the bundle on the car: root (read-only to the agent) or the agent's user (its identity). */
type Holder = 'root' | 'agent';

interface Bundle {
  dir: string;
  config: DeviceConfig;
  unitText: string;
  /** Bundle-relative files to install under /etc/telematics-agent, with their mode and owner. */
  files: { rel: string; mode: number; holder: Holder }[];
}

/** Loads the bundle as the agent will load it on the car: a bundle that would not start is not installed. */
function readBundle(dir: string): Bundle {
  const bundle = path.resolve(dir);
  if (!existsSync(bundle) || !statSync(bundle).isDirectory()) throw new ProvisionError(`--bundle ${dir}: no such folder (scripts/provision makes one)`);
  if (!existsSync(path.join(bundle, BUNDLE.key)) && existsSync(path.join(bundle, LEGACY_IDENTITY.key))) {
    throw new ProvisionError(
      `--bundle ${bundle} keeps its identity in ${LEGACY_IDENTITY.key} (made by an older provision): run scripts/provision for it again ` +
        `(the key and certificate are kept), which moves it to ${BUNDLE.identityDir}/, the one folder the agent may write on the car`,
    );
  }
  const need = (rel: string): string => {
    const file = path.join(bundle, rel);
    if (!existsSync(file)) {
      if (rel === BUNDLE.cert && existsSync(path.join(bundle, BUNDLE.csr))) {
        throw new ProvisionError(
          `--bundle ${bundle} awaits its certificate: have ${BUNDLE.csr} signed, then scripts/provision --device <id> --bundle ${bundle} --cert <signed.crt>`,
        );
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
  // The identity files must be where the agent can write (rotation replaces them); everything else must not be.
  for (const [field, file, rel] of [
    ['uplink.certFile', uplink.certFile, BUNDLE.cert],
    ['uplink.keyFile', uplink.keyFile, BUNDLE.key],
  ] as const) {
    if (file !== path.join(bundle, rel))
      throw new ProvisionError(
        `--bundle ${bundle}: its config's ${field} is ${file}, not ${rel} (the one folder the agent may write on the car): run scripts/provision for it again`,
      );
  }
  const files: { rel: string; mode: number; holder: Holder }[] = [
    { rel: BUNDLE.config, mode: 0o640, holder: 'root' },
    { rel: BUNDLE.brokerCa, mode: 0o644, holder: 'root' },
    { rel: BUNDLE.commandCa, mode: 0o644, holder: 'root' },
    { rel: BUNDLE.key, mode: 0o600, holder: 'agent' },
    { rel: BUNDLE.cert, mode: 0o644, holder: 'agent' },
  ];
  for (const dir of [BUNDLE.dbcDir, BUNDLE.replayDir]) {
    if (!existsSync(path.join(bundle, dir))) continue;
    for (const name of readdirSync(path.join(bundle, dir)).sort()) {
      if (statSync(path.join(bundle, dir, name)).isFile()) files.push({ rel: `${dir}/${name}`, mode: 0o644, holder: 'root' });
    }
  }
  return { dir: bundle, config, unitText: readFileSync(path.join(bundle, BUNDLE.unit), 'utf8'), files };
}

const CONFIG_DIR_IN_IMAGE = INSTALL.configDir.slice(1);

/**
 * The identity files an image holds (identity/, or certs/ where an older flash put them), read as the files flash
 * itself installs: a link in their place is refused, never followed (it could lead anywhere on this machine).
 */
function readInstalled(target: string, rel: string): Buffer | undefined {
  try {
    return readImageFile(target, `${CONFIG_DIR_IN_IMAGE}/${rel}`, { followLink: false });
  } catch (err) {
    if (err instanceof ProvisionError) throw new ProvisionError(`${err.message} (--replace-identity overwrites it without reading it)`);
    throw err;
  }
}

/** An identity already in the target is replaced only on purpose. */
function checkExistingIdentity(target: string, bundle: Bundle, replace: boolean): void {
  if (replace) return;
  let deviceId: string | undefined;
  const configText = readInstalled(target, BUNDLE.config);
  try {
    if (configText !== undefined) deviceId = (JSON.parse(configText.toString('utf8')) as { deviceId?: string }).deviceId;
  } catch {
    // not a config flash wrote: overwritten like a missing one
  }
  if (deviceId !== undefined && deviceId !== bundle.config.deviceId) {
    throw new ProvisionError(`the target is provisioned as '${deviceId}', the bundle is '${bundle.config.deviceId}': pass --replace-identity to overwrite it`);
  }
  // The key in use: identity/, else where an older flash put it.
  const key = readInstalled(target, BUNDLE.key) ?? readInstalled(target, LEGACY_IDENTITY.key);
  if (key !== undefined && !key.equals(readFileSync(path.join(bundle.dir, BUNDLE.key)))) {
    throw new ProvisionError(`the target holds another key for '${bundle.config.deviceId}' (rotated on the device?): pass --replace-identity to overwrite it`);
  }
}

// ---- architecture -----------------------------------------------------------------------------------------------

const ELF_MACHINES: Record<number, string> = { 3: 'x86 (32-bit)', 40: 'arm (32-bit)', 62: 'x86-64', 183: 'aarch64', 243: 'riscv', 8: 'mips', 21: 'ppc64' };

/** The ELF machine in a file's first 20 bytes, or undefined when it is not an ELF file. */
function elfMachine(head: Buffer): number | undefined {
  if (head.length < 20 || head.readUInt32BE(0) !== 0x7f454c46) return undefined;
  return head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
}

/** The ELF machine of one of the agent's own files (the build being installed). */
function builtMachine(file: string): number | undefined {
  try {
    return elfMachine(readRegularFile(file, { firstBytes: 20 }));
  } catch {
    return undefined;
  }
}

/**
 * The target's architecture, read from one of its own binaries (found inside the image, whatever links lead there).
 * A binary that is there but not a regular file (a FIFO) is refused: it is not read, and nothing waits on it.
 */
function targetMachine(root: string): { machine: number; file: string } | undefined {
  for (const file of [
    'usr/bin/node',
    'usr/local/bin/node',
    'usr/lib/systemd/systemd',
    'lib/systemd/systemd',
    'bin/busybox',
    'usr/bin/busybox',
    'usr/bin/dash',
    'bin/sh',
    'usr/bin/env',
  ]) {
    const head = readImageFile(root, file, { limit: { firstBytes: 20 } });
    const machine = head === undefined ? undefined : elfMachine(head);
    if (machine !== undefined) return { machine, file: `/${file}` };
  }
  return undefined;
}

/** Native addons are built for one architecture: the image's must be the same, or the agent dies at its first require. */
function checkArchitecture(root: string, agentDir: string, natives: string[], say: Say): void {
  const built = natives.map((rel) => ({ rel, machine: builtMachine(path.join(agentDir, rel)) })).filter((n) => n.machine !== undefined);
  if (built.length === 0) return;
  const target = targetMachine(root);
  const name = (m: number): string => ELF_MACHINES[m] ?? `ELF machine ${m}`;
  if (target === undefined) {
    say(
      `warning: cannot tell the target's architecture (no ELF binary found in ${root}); the agent's native modules are built for ${name(built[0]!.machine!)}`,
    );
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

/** The project's SocketCAN addon as `npm ci` builds it (src/can/can-socket.ts loads it from there). */
const CAN_ADDON = 'native/can-rx/build/Release/can_rx.node';

/** Every path of the agent to install, relative to the agent folder, parents before children. */
function agentEntries(agentDir: string): { entries: Map<string, Entry>; natives: string[] } {
  const entries = new Map<string, Entry>();
  const natives: string[] = [];
  const need = (rel: string, hint: string): void => {
    if (!existsSync(path.join(agentDir, rel))) throw new ProvisionError(`--agent-dir ${agentDir} has no ${rel}: ${hint}`);
  };
  need('package.json', "not the agent's folder");
  need('dist/src/cli/main.js', 'run `npm run build` first');
  need('package-lock.json', 'the production dependencies are read from it');
  need('node_modules', 'run `npm ci` first');
  need(CAN_ADDON, 'run `npm ci` first (its install script builds the SocketCAN addon)');
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
  // The addon alone, not its build tree; it is a native file like those of node_modules (the architecture check).
  walk(CAN_ADDON);
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

/** The files certificate rotation leaves beside a pair while it runs (src/pki/identity-files.ts). */
function rotationLeftovers(pair: string[]): string[] {
  return pair.flatMap((rel) => [`${rel}.new`, `${rel}.old`]);
}

/** Removes these files (or links) of the config folder when present; a folder in their place is left alone. */
function removeInConfigDir(configDir: string, rels: string[], count: ChangeCount, say: Say): void {
  for (const rel of rels) {
    const file = path.join(configDir, rel);
    let stats;
    try {
      stats = lstatSync(file);
    } catch {
      continue;
    }
    if (stats.isDirectory()) continue;
    rmSync(file, { force: true });
    count.removed++;
    say(`  removed ${INSTALL.configDir}/${rel}`);
  }
}

export function runFlash(options: FlashOptions, say: Say): void {
  const target = checkTarget(options.target);
  const bundle = readBundle(options.bundle);
  const agentDir = path.resolve(options.agentDir ?? PROJECT_ROOT);
  const { entries, natives } = agentEntries(agentDir);
  checkArchitecture(target, agentDir, natives, say);
  checkExistingIdentity(target, bundle, options.replaceIdentity ?? false);
  const device = bundle.config.deviceId;
  say(`flash: ${device} into ${target}`);

  // The unit first: it names the account, whose IDs own the identity and whose group reads the config.
  const count = new ChangeCount();
  const { account } = installService(target, bundle.unitText, (line) => say(`  ${line}`), count);
  const owners: Record<Holder, { owner: Owner; name: string }> = {
    // Read-only to the agent: the config and the trust anchors it names (group: the agent reads them).
    root: { owner: { uid: 0, gid: account.gid }, name: `root:${account.group}` },
    agent: { owner: { uid: account.uid, gid: account.gid }, name: `${account.user}:${account.group}` },
  };

  const etcCount = new ChangeCount();
  ensureDirInRoot(target, path.dirname(CONFIG_DIR_IN_IMAGE), { mode: 0o755, owner: ROOT }, etcCount);
  // The image's own links are followed inside it (/etc/telematics-agent -> /data/... on a read-only root); the
  // folders below it are flash's, and a link in their place is refused (putDir).
  const configDir = resolveInRoot(target, CONFIG_DIR_IN_IMAGE);
  const note = (change: Change, what: string, mode: number, holder: Holder): void => {
    etcCount.add(change);
    if (change !== 'unchanged') say(`  ${change} ${INSTALL.configDir}/${what} (${owners[holder].name} ${octal(mode)})`);
  };
  note(putDir(configDir, { mode: 0o750, owner: owners.root.owner }), '', 0o750, 'root');
  const dirs = new Map<string, Holder>();
  for (const file of bundle.files) {
    const dir = path.dirname(file.rel);
    if (dir !== '.') dirs.set(dir, file.holder);
  }
  for (const dir of [...dirs.keys()].sort()) {
    const holder = dirs.get(dir)!;
    // The identity folder is the agent's alone (its key is in it); the others are readable by its group.
    const mode = holder === 'agent' ? 0o700 : 0o750;
    note(putDir(path.join(configDir, dir), { mode, owner: owners[holder].owner }), `${dir}/`, mode, holder);
  }
  let newIdentity = false;
  for (const file of bundle.files) {
    const change = putFile(path.join(configDir, file.rel), readFileSync(path.join(bundle.dir, file.rel)), {
      mode: file.mode,
      owner: owners[file.holder].owner,
    });
    note(change, file.rel, file.mode, file.holder);
    if (file.holder === 'agent' && change !== 'unchanged') newIdentity = true;
  }
  // A rotation's staged or previous pair beside a pair flash replaced belongs to another identity: left there, the
  // agent's repair at start could put it back in place of the one just installed.
  if (newIdentity) removeInConfigDir(configDir, rotationLeftovers([BUNDLE.key, BUNDLE.cert]), etcCount, say);
  // An older flash kept the identity in certs/, now root's: a key left there would be a stale copy of a secret.
  removeInConfigDir(configDir, [...Object.values(LEGACY_IDENTITY), ...rotationLeftovers([LEGACY_IDENTITY.key, LEGACY_IDENTITY.cert])], etcCount, say);

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
