/**
 * The fleet broker configuration the project ships (deploy/mosquitto/: mosquitto.conf, devices.acl, backend.acl),
 * made runnable on this machine: the development broker of the default run (src/uplink/mosquitto-broker.ts) and the
 * tests' mosquitto (test/support/mosquitto.ts) both run the shipped file through `runnableFleetBrokerConfig`, so
 * neither can drift from what a fleet copies. Only these change:
 *
 * - the files under /etc/mosquitto/telematics/ (certificates, key, ACLs), each to a path given;
 * - the two listeners' ports (and the address they bind to);
 * - where the log goes (and, if asked, what it logs), and whether and where persistence is kept;
 * - `user`: mosquitto started as root drops to the `mosquitto` user unless told otherwise, and that user cannot read
 *   a key that is root's and 0600 (the development PKI's keys are, in a 0700 folder). The user given is kept.
 *
 * Everything else (TLS version, client certificates, CN as username and client ID, ACLs per listener, queue limits,
 * set_tcp_nodelay) is as shipped. A shipped file that no longer has what this replaces throws, naming the file: the
 * template changed and this must follow it.
 *
 * `findMosquitto` tells where Debian's mosquitto is (or why it is not found).
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The shipped configuration; this file runs as dist/src/uplink/fleet-broker-config.js. */
export const FLEET_BROKER_DIR = fileURLToPath(new URL('../../../deploy/mosquitto/', import.meta.url));
export const FLEET_BROKER_CONFIG_FILE = path.join(FLEET_BROKER_DIR, 'mosquitto.conf');
/** The shipped ACLs: cars (per CN) and the backend. */
export const DEVICES_ACL_FILE = path.join(FLEET_BROKER_DIR, 'devices.acl');
export const BACKEND_ACL_FILE = path.join(FLEET_BROKER_DIR, 'backend.acl');

/** Where the shipped mosquitto.conf expects its files. */
const SHIPPED_FILES_DIR = '/etc/mosquitto/telematics/';
/** The shipped listeners: cars, then the backend. */
const SHIPPED_DEVICE_LISTENER = /^listener 8883$/m;
const SHIPPED_BACKEND_LISTENER = /^listener 8884$/m;
export const SHIPPED_DEVICE_PORT = 8883;
export const SHIPPED_BACKEND_PORT = 8884;

/** The files the shipped configuration names, each given as a path on this machine. */
export interface FleetBrokerFiles {
  /** device-ca.crt: the CA of cars' certificates (the development PKI's ca.crt). */
  deviceCaFile: string;
  /** backend-ca.crt: the CA of the backend's certificates. */
  backendCaFile: string;
  /** server.crt, server.key: the broker's own certificate and key. */
  serverCertFile: string;
  serverKeyFile: string;
  /** devices.acl, backend.acl: the shipped ones unless given. */
  devicesAclFile?: string;
  backendAclFile?: string;
}

export interface RunnableFleetBrokerOptions {
  files: FleetBrokerFiles;
  /** `port [address]` of the cars' listener and of the backend's. */
  deviceListener: string;
  backendListener: string;
  /** The user mosquitto keeps when started as root (it otherwise drops to `mosquitto`); ignored when not root. */
  user: string;
  /** Persistence in this folder, or none. */
  persistenceDir: string | null;
  /** The `log_dest` lines that replace the shipped `log_dest syslog`. */
  logDest: string[];
  /** What to log instead of the shipped `log_type` lines; default as shipped. */
  logTypes?: string[];
  /** Instead of the shipped `log_timestamp`; default as shipped. */
  logTimestamp?: boolean;
  /** More lines for the general section (limits such as `max_packet_size`). */
  extraConfig?: string[];
  /** The configuration to start from: the shipped mosquitto.conf unless given (its text). */
  template?: string;
}

const SHIPPED_NAMES: Record<string, keyof FleetBrokerFiles> = {
  'device-ca.crt': 'deviceCaFile',
  'backend-ca.crt': 'backendCaFile',
  'server.crt': 'serverCertFile',
  'server.key': 'serverKeyFile',
  'devices.acl': 'devicesAclFile',
  'backend.acl': 'backendAclFile',
};

/** The shipped mosquitto.conf with this machine's files, ports, log, persistence and user; see the file's comment. */
export function runnableFleetBrokerConfig(options: RunnableFleetBrokerOptions): string {
  const shipped = options.template ?? readFileSync(FLEET_BROKER_CONFIG_FILE, 'utf8');
  const drift = (what: string): Error =>
    new Error(`${FLEET_BROKER_CONFIG_FILE}: ${what}; the development broker and the tests follow this file: update src/uplink/fleet-broker-config.ts`);
  if (!SHIPPED_DEVICE_LISTENER.test(shipped) || !SHIPPED_BACKEND_LISTENER.test(shipped)) {
    throw drift('no longer has `listener 8883` and `listener 8884`');
  }
  const files: Required<FleetBrokerFiles> = { devicesAclFile: DEVICES_ACL_FILE, backendAclFile: BACKEND_ACL_FILE, ...options.files };
  for (const [key, file] of Object.entries(files)) {
    // A line break would end the option and start another: a path is one line.
    if (/[\r\n]/.test(file)) throw new Error(`${key}: a path with a line break cannot go into a mosquitto configuration: ${JSON.stringify(file)}`);
  }
  const lines = [...(options.logTypes === undefined ? [] : options.logTypes.map((type) => `log_type ${type}`)), ...options.logDest.map((d) => `log_dest ${d}`)];
  const general = [`user ${options.user}`, ...lines, ...(options.extraConfig ?? [])];
  // In the options, not in the comments (which name the folder too).
  let text = shipped
    .split('\n')
    .map((line) => {
      if (line.startsWith('#') || !line.includes(SHIPPED_FILES_DIR)) return line;
      const [option, value] = line.split(/\s+/, 2) as [string, string | undefined];
      const key = value?.startsWith(SHIPPED_FILES_DIR) ? SHIPPED_NAMES[value.slice(SHIPPED_FILES_DIR.length)] : undefined;
      if (key === undefined) throw drift(`has \`${line}\`, which names no file this knows`);
      return `${option} ${files[key]}`;
    })
    .join('\n');
  text = text
    .replace(/^persistence .*$/m, `persistence ${options.persistenceDir === null ? 'false' : 'true'}`)
    .replace(/^persistence_location .*$/m, options.persistenceDir === null ? '' : `persistence_location ${path.join(options.persistenceDir, '/')}`)
    .replace(/^log_dest .*\n/gm, '');
  if (options.logTypes !== undefined) text = text.replace(/^log_type .*\n/gm, '');
  if (options.logTimestamp !== undefined) text = text.replace(/^log_timestamp .*$/m, `log_timestamp ${options.logTimestamp}`);
  return text
    .replace(SHIPPED_DEVICE_LISTENER, `${general.join('\n')}\n\nlistener ${options.deviceListener}`)
    .replace(SHIPPED_BACKEND_LISTENER, `listener ${options.backendListener}`);
}

/** Where mosquitto is, or why it is not found. */
export type MosquittoLookup = { executable: string } | { missing: string };

/** Debian installs mosquitto in /usr/sbin, which is not on a user's PATH. */
const WELL_KNOWN = ['/usr/sbin/mosquitto', '/usr/local/sbin/mosquitto'];
/** Names the mosquitto binary to use (or, naming one that is not there, makes a run take aedes: the tests do). */
export const MOSQUITTO_ENV = 'TELEMATICS_MOSQUITTO';

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * The mosquitto binary: the one `TELEMATICS_MOSQUITTO` names when it is set, else the first on PATH, else Debian's
 * /usr/sbin/mosquitto (or /usr/local/sbin). `missing` says where it looked.
 */
export function findMosquitto(env: NodeJS.ProcessEnv = process.env): MosquittoLookup {
  const named = env[MOSQUITTO_ENV];
  if (named !== undefined && named !== '') {
    return executable(named) ? { executable: named } : { missing: `${MOSQUITTO_ENV}=${named} is not an executable file` };
  }
  const onPath = (env.PATH ?? '').split(path.delimiter).filter((dir) => path.isAbsolute(dir));
  for (const file of [...onPath.map((dir) => path.join(dir, 'mosquitto')), ...WELL_KNOWN]) {
    if (executable(file)) return { executable: file };
  }
  return { missing: `mosquitto is not installed (not on PATH, nor in ${WELL_KNOWN.join(' or ')})` };
}
