/**
 * The agent's systemd service: the unit file (every directive says why it is there), and its installation into a
 * root file system: the unit, its enablement, the dedicated account and the state folder. `install-service` runs it
 * on a device (or into --root; runInstallService), `flash` into an image, `provision` puts the unit into the bundle.
 * Options the unit cannot take (--user, --node) are one ProvisionError line naming the option, before anything is
 * written.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, type Stats } from 'node:fs';
import path from 'node:path';
import { RESTART_EXIT_CODE } from '../agent/exit-codes.js';
import { AGENT_NODE_FLAGS } from '../agent/node-flags.js';
import { ChangeCount, ProvisionError, ensureDirInRoot, putDir, putFile, putSymlink, resolveInRoot } from './files.js';
import { ACCOUNT_NAME_PATTERN, checkServiceUserName, ensureServiceAccount, type ServiceAccount } from './service-account.js';

/** Where things go on a device. */
export const INSTALL = {
  agentDir: '/opt/telematics-agent',
  configDir: '/etc/telematics-agent',
  configFile: '/etc/telematics-agent/config.json',
  /** The device's certificate and key: the only part of the config folder the agent writes (certificate rotation). */
  identityDir: '/etc/telematics-agent/identity',
  stateDir: '/var/lib/telematics-agent',
  unitName: 'telematics-agent.service',
  unitDir: '/etc/systemd/system',
  sysusersFile: '/etc/sysusers.d/telematics-agent.conf',
  user: 'telematics',
  serialGroup: 'dialout',
  node: '/usr/bin/node',
} as const;

/** The watchdog timeout; the agent pings at half of it (src/health/watchdog.ts). */
export const WATCHDOG_SEC = 30;

export interface UnitOptions {
  /** The dedicated user (and group of the same name). */
  user: string;
  /** Absolute path of node on the device. */
  node: string;
}

export const DEFAULT_UNIT_OPTIONS: UnitOptions = { user: INSTALL.user, node: INSTALL.node };

/** Rejects what would make a broken or ambiguous unit (systemd splits ExecStart= at whitespace). */
export function checkUnitOptions(options: UnitOptions): void {
  if (!ACCOUNT_NAME_PATTERN.test(options.user)) {
    throw new ProvisionError(`--user: '${options.user}' cannot be a system user name (lower-case letters, digits, '_' and '-', at most 31)`);
  }
  checkServiceUserName(options.user, '--user');
  if (!path.isAbsolute(options.node) || /[\s"'\\$%;]/.test(options.node)) {
    throw new ProvisionError(`--node: '${options.node}' must be an absolute path without spaces or quotes (systemd needs one for ExecStart=)`);
  }
}

/** The unit file. Deterministic: the same options give the same bytes (flash and provision compare, never rewrite). */
export function serviceUnit(options: UnitOptions = DEFAULT_UNIT_OPTIONS): string {
  checkUnitOptions(options);
  const main = `${INSTALL.agentDir}/dist/src/cli/main.js`;
  const stateName = path.basename(INSTALL.stateDir);
  return `# ${INSTALL.unitName}: made by scripts/install-service (src/provision/service-unit.ts); docs/provisioning.md explains
# each directive. Change the generator rather than this copy, so that every car gets the change.

[Unit]
Description=Vehicle telematics agent (CAN and OBD-II acquisition, store-and-forward MQTT uplink)
# The agent records without a network (the outbox keeps the data), so it wants the network but does not need it.
Wants=network-online.target
After=network-online.target
# Never stop restarting: a car is unattended, and some failures cure themselves (without a real-time clock the car
# boots in 1970 and its certificate is "not yet valid" until the clock is set).
StartLimitIntervalSec=0

[Service]
# READY=1 once the outbox, the uplink and the buses are running; STOPPING=1 at shutdown (src/health/watchdog.ts).
Type=notify
# The notifications come from systemd-notify, started by the agent: not from the main process itself.
NotifyAccess=all
# ${AGENT_NODE_FLAGS.join(' ')}: a small young generation (src/agent/node-flags.ts): some 30 MB less resident memory.
ExecStart=${options.node} ${AGENT_NODE_FLAGS.join(' ')} ${main} run --config ${INSTALL.configFile}
WorkingDirectory=${INSTALL.stateDir}
# The agent sends WATCHDOG=1 every ${WATCHDOG_SEC / 2} s from its event loop: a hung agent is killed and restarted.
WatchdogSec=${WATCHDOG_SEC}
Restart=on-failure
RestartSec=5
# ${RESTART_EXIT_CODE} (EX_TEMPFAIL) is the agent asking to be started again (the restartAgent command): always restart.
RestartForceExitStatus=${RESTART_EXIT_CODE}
# Open batches go to the outbox on SIGTERM in well under a second; a stop that hangs must not hold up a shutdown
# that runs on the car's battery.
TimeoutStopSec=20

User=${options.user}
Group=${options.user}
# ELM327 adapters and UARTs (/dev/ttyUSB*, /dev/ttyACM*, /dev/ttyS*) belong to this group.
SupplementaryGroups=${INSTALL.serialGroup}
# ${INSTALL.stateDir}: outbox, command replay memory, link memory, the collection rules set by setConfig.
# Created by systemd if missing.
StateDirectory=${stateName}
StateDirectoryMode=0750
# What the agent writes (outbox, collection rules, a rotated key) is readable by its own user only.
UMask=0077

# No capabilities. Raw CAN and ISO-TP sockets need none on Linux: socket(AF_CAN, SOCK_RAW, CAN_RAW) is open to
# any user (checked as uid 65534 with an empty capability set on vcan). Only configuring an interface needs one
# (ip link set can0 up type can bitrate 500000: CAP_NET_ADMIN), and the agent never does that: systemd-networkd
# or an ExecStartPre=+ line brings the buses up (docs/provisioning.md).
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes

# The whole file system read-only, except the state folder and the identity folder, where certificate rotation
# replaces identity/device.crt and identity/device.key. config.json and the pinned broker and command CAs stay
# read-only (and root's): a compromised agent cannot replace its own trust anchors. The '-': a missing folder is then
# reported by the agent (a missing key file) instead of a bare 226/NAMESPACE.
ProtectSystem=strict
ReadWritePaths=-${INSTALL.identityDir}
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes

# Serial ports must stay reachable, so no PrivateDevices=; only these drivers are allowed instead (names as in
# /proc/devices: add the driver of your UART, e.g. char-ttymxc on i.MX or char-ttyLP on LPUART). CAN has no device node.
PrivateDevices=no
DevicePolicy=closed
DeviceAllow=char-ttyS rw
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyACM rw
DeviceAllow=char-ttyAMA rw
DeviceAllow=char-rfcomm rw

ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# Other users' processes are hidden; /proc's system files stay readable (host health reads /proc/meminfo and
# /proc/stat, the network identity /proc/net/route), hence no ProcSubset=pid.
ProtectProc=invisible
# Local (systemd-notify), Internet (the broker), netlink (network interfaces) and CAN sockets only.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_CAN
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# A call outside the list fails with EPERM (an error the agent reports) rather than killing it with SIGSYS.
SystemCallErrorNumber=EPERM
# Left out on purpose: MemoryDenyWriteExecute= (V8's JIT writes machine code), PrivateUsers= (the dialout group
# would not map, and with it the serial ports), PrivateNetwork= and IPAddressDeny= (the broker is on the Internet).

[Install]
WantedBy=multi-user.target
`;
}

/** What flash needs to know of a unit (the bundle's): who runs the agent, and with which node. */
export interface UnitSettings {
  user: string;
  group: string;
  supplementaryGroups: string[];
  node: string;
  stateDirectory?: string;
}

export function parseUnit(text: string, where: string): UnitSettings {
  const values = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    values.set(key, [...(values.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  const last = (key: string): string | undefined => values.get(key)?.at(-1);
  const user = last('User');
  const exec = last('ExecStart');
  if (!user) throw new ProvisionError(`${where}: no User= (the agent must not run as root)`);
  if (!exec) throw new ProvisionError(`${where}: no ExecStart=`);
  const node = exec.replace(/^[-@:+!]+/, '').split(/\s+/)[0]!;
  return {
    user,
    group: last('Group') ?? user,
    supplementaryGroups: (values.get('SupplementaryGroups') ?? []).flatMap((v) => v.split(/\s+/)).filter(Boolean),
    node,
    ...(last('StateDirectory') ? { stateDirectory: last('StateDirectory')! } : {}),
  };
}

/** systemd-sysusers recreates the account at boot if /etc is ever reset (a factory reset overlay), with the same IDs. */
export function sysusersConf(account: ServiceAccount): string {
  const lines = [
    `# ${INSTALL.sysusersFile}: the telematics agent's account (made by scripts/flash or scripts/install-service).`,
    `# The IDs are the ones its files in ${INSTALL.configDir} and ${INSTALL.stateDir} are owned by.`,
    `g ${account.group} ${account.gid}`,
    `u ${account.user} ${account.uid}:${account.gid} "telematics agent" ${INSTALL.stateDir}`,
    ...Object.keys(account.supplementary).map((name) => `m ${account.user} ${name}`),
  ];
  return `${lines.join('\n')}\n`;
}

const ROOT_DIR = { mode: 0o755, owner: { uid: 0, gid: 0 } };

export interface InstalledService {
  account: ServiceAccount;
  unitFile: string;
}

/**
 * Installs `unitText` into the root file system `root`: the unit in etc/systemd/system, enabled the way systemctl
 * enable does it (the multi-user.target.wants link), the account it runs as, its sysusers.d entry, and the state
 * folder owned by that account. Writes only what differs. Needs root (owners).
 */
export function installService(root: string, unitText: string, say: (line: string) => void, count: ChangeCount): InstalledService {
  const settings = parseUnit(unitText, INSTALL.unitName);
  const stateDir = settings.stateDirectory ? `/var/lib/${settings.stateDirectory}` : INSTALL.stateDir;
  const account = ensureServiceAccount(
    root,
    { user: settings.user, group: settings.group, home: stateDir, gecos: 'telematics agent', supplementaryGroups: settings.supplementaryGroups },
    say,
    count,
  );
  const nodeInRoot = lstatOrUndefined(resolveInRoot(root, settings.node.slice(1)));
  if (nodeInRoot === undefined) {
    say(`warning: ${settings.node} is not in ${root}: install Node.js 20 there (the unit runs the agent with it)`);
  } else if (!nodeInRoot.isFile()) {
    say(`warning: ${settings.node} in ${root} is not a regular file: the unit runs the agent with it, install Node.js 20 there`);
  }
  const notify = ['usr/bin/systemd-notify', 'bin/systemd-notify'].some((p) => lstatOrUndefined(resolveInRoot(root, p))?.isFile());
  if (!notify) say(`warning: systemd-notify is not in ${root}: without it the agent cannot tell systemd it is ready (Type=notify)`);

  const unitDir = ensureDirInRoot(root, INSTALL.unitDir.slice(1), ROOT_DIR, count);
  const unitFile = path.join(unitDir, INSTALL.unitName);
  report(say, count.add(putFile(unitFile, unitText, { mode: 0o644, owner: ROOT_DIR.owner })), INSTALL.unitDir + '/' + INSTALL.unitName);
  const wants = ensureDirInRoot(root, `${INSTALL.unitDir.slice(1)}/multi-user.target.wants`, ROOT_DIR, count);
  report(
    say,
    count.add(putSymlink(path.join(wants, INSTALL.unitName), `${INSTALL.unitDir}/${INSTALL.unitName}`, ROOT_DIR.owner)),
    `${INSTALL.unitDir}/multi-user.target.wants/${INSTALL.unitName} (enabled)`,
  );

  const sysusersDir = ensureDirInRoot(root, path.dirname(INSTALL.sysusersFile).slice(1), ROOT_DIR, count);
  report(
    say,
    count.add(putFile(path.join(sysusersDir, path.basename(INSTALL.sysusersFile)), sysusersConf(account), { mode: 0o644, owner: ROOT_DIR.owner })),
    INSTALL.sysusersFile,
  );

  const varLib = ensureDirInRoot(root, path.dirname(stateDir).slice(1), ROOT_DIR, count);
  report(say, count.add(putDir(path.join(varLib, path.basename(stateDir)), { mode: 0o750, owner: { uid: account.uid, gid: account.gid } })), `${stateDir}/`);
  return { account, unitFile };
}

function lstatOrUndefined(file: string): Stats | undefined {
  try {
    return lstatSync(file);
  } catch {
    return undefined;
  }
}

function report(say: (line: string) => void, change: string, what: string): void {
  if (change !== 'unchanged') say(`${change} ${what}`);
}

/** True when systemd is the running init (sd_booted: /run/systemd/system exists). */
export function systemdIsRunning(): boolean {
  return existsSync('/run/systemd/system');
}

export interface InstallServiceOptions {
  /** The root file system to install into: `/` on a running device. */
  root: string;
  unit: UnitOptions;
}

/**
 * `install-service`: the unit, its account and state folder into `options.root` (installService), as root. Into this
 * machine's own `/` with systemd running, also `systemctl daemon-reload` and `enable`; a systemctl that fails is a
 * ProvisionError with its first line of output. Says what it changed and what to do next.
 */
export function runInstallService(options: InstallServiceOptions, say: (line: string) => void): void {
  const unit = serviceUnit(options.unit);
  const root = path.resolve(options.root);
  if (process.getuid?.() !== 0) throw new ProvisionError('install-service writes /etc/systemd/system and the user database: run it as root (sudo)');
  const count = new ChangeCount();
  installService(root, unit, (line) => say(`  ${line}`), count);
  const unitPath = `${INSTALL.unitDir}/${INSTALL.unitName}`;
  if (root === '/' && systemdIsRunning()) {
    for (const args of [['daemon-reload'], ['enable', INSTALL.unitName]]) {
      const result = spawnSync('systemctl', args, { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
      if (result.status !== 0)
        throw new ProvisionError(`systemctl ${args.join(' ')} failed: ${(result.stderr ?? result.error?.message ?? '').trim().split('\n')[0]}`);
    }
    say(
      `install-service: ${unitPath} installed and enabled (${count.text()}); start it once ${INSTALL.configFile} is there: systemctl start ${INSTALL.unitName}`,
    );
  } else if (root === '/') {
    say(
      `install-service: ${unitPath} installed and enabled (${count.text()}); systemd is not running here: on the device run systemctl daemon-reload && systemctl start ${INSTALL.unitName}`,
    );
  } else {
    say(`install-service: ${unitPath} installed and enabled in ${root} (${count.text()}); it starts at that system's next boot`);
  }
}
