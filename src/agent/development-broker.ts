/**
 * The development broker of a run with `uplink.embeddedBroker` (the default config): the broker, the development
 * certificate signer beside it, and the line that says which broker and protocol the run uses.
 *
 * Which broker:
 * - `true`: Debian's mosquitto when it is installed (src/uplink/mosquitto-broker.ts: MQTT 5, the shipped fleet
 *   configuration), otherwise aedes in-process (src/uplink/embedded-broker.ts: MQTT 3.1.1 only), which is said once
 *   with the package that would give MQTT 5;
 * - `"mosquitto"`: mosquitto, or the start fails saying it is not installed;
 * - `"aedes"`: aedes.
 * `TELEMATICS_MOSQUITTO` names the binary to use (src/uplink/fleet-broker-config.ts, findMosquitto).
 *
 * Either way, as in production: cars on the url's port, the backend on the next one (8883, 8884), each listener
 * trusting one CA of the development PKI in `certsDir`; url port 0 means any free port for both. The development
 * signer (src/pki/dev-signer.ts) answers `rotateCertificate` requests on the backend listener.
 *
 * Failure: a port in use, mosquitto asked for and missing, MQTT 5 asked for without mosquitto, or a broker that does
 * not start throw one line naming `uplink.url`, `uplink.embeddedBroker` or `uplink.protocol`.
 */
import type { ComponentLog } from '../health/log.js';
import type { DevPkiPaths } from '../pki/dev-pki.js';
import { DevSigner } from '../pki/dev-signer.js';
import { EmbeddedBroker } from '../uplink/embedded-broker.js';
import type { UplinkConfig } from '../uplink/config.js';
import { findMosquitto, SHIPPED_DEVICE_PORT } from '../uplink/fleet-broker-config.js';
import { BrokerPortInUse, MosquittoBroker } from '../uplink/mosquitto-broker.js';

/** The running development broker, whichever it is. */
export interface DevelopmentBroker {
  readonly name: 'mosquitto' | 'aedes';
  readonly version: string;
  /** Where cars connect, and where the backend does. */
  readonly url: string;
  readonly backendUrl: string;
  /** The MQTT version the broker speaks best: 5 (mosquitto), 4 (aedes: 3.1.1). */
  readonly protocol: 5 | 4;
  /** Stops the signer, then the broker. */
  close(): Promise<void>;
}

/** The Debian package that gives the default run MQTT 5. */
export const MOSQUITTO_PACKAGE_HINT = 'apt-get install mosquitto';

export interface DevelopmentBrokerOptions {
  uplink: UplinkConfig;
  pki: DevPkiPaths;
  /** certsDir as the config gave it, to name in the start line. */
  certsDir: string;
  /** The broker's own files (mosquitto's configuration, persistence, log): the agent's var/ folder. */
  stateDir: string;
  /** The `broker` component's log. */
  log: ComponentLog;
  env?: NodeJS.ProcessEnv;
}

const PROTOCOL_NAME = { 5: 'MQTT 5', 4: 'MQTT 3.1.1' } as const;

/** Starts the broker the config asks for and the signer beside it; see the file's comment. */
export async function startDevelopmentBroker(options: DevelopmentBrokerOptions): Promise<DevelopmentBroker> {
  const { uplink, pki, log } = options;
  const address = new URL(uplink.url);
  const host = address.hostname === 'localhost' ? '127.0.0.1' : address.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = address.port === '' ? SHIPPED_DEVICE_PORT : Number(address.port);
  if (port === 65_535) throw new Error("uplink.url: port 65535 leaves no port after it for the embedded broker's backend listener");
  // As the shipped configuration: the backend on the port after the cars' (8883, 8884).
  const backendPort = port === 0 ? 0 : port + 1;
  const choice = uplink.embeddedBroker;
  let broker: MosquittoBroker | EmbeddedBroker;
  let mosquitto: string | null = null;
  if (choice !== 'aedes') {
    const found = findMosquitto(options.env);
    if ('executable' in found) mosquitto = found.executable;
    else if (choice === 'mosquitto') throw new Error(`uplink.embeddedBroker: "mosquitto", but ${found.missing} (Debian: ${MOSQUITTO_PACKAGE_HINT})`);
    else if (uplink.protocol === 5) {
      throw new Error(
        `uplink.protocol: 5 needs mosquitto as the embedded broker, but ${found.missing} (Debian: ${MOSQUITTO_PACKAGE_HINT}); aedes speaks MQTT 3.1.1 only`,
      );
    } else log.warn(`broker: ${found.missing}: using aedes, which speaks MQTT 3.1.1 only; for MQTT 5: ${MOSQUITTO_PACKAGE_HINT}`);
  }
  const listenerOf = (listener: 'cars' | 'backend', at: number): string =>
    listener === 'cars' ? `${host}:${at}` : `${host}:${at} (its backend listener, the port after the url's)`;
  try {
    broker = mosquitto
      ? await MosquittoBroker.start({
          executable: mosquitto,
          host,
          port,
          backendPort,
          files: { deviceCaFile: pki.caFile, backendCaFile: pki.backendCaFile, serverCertFile: pki.serverCertFile, serverKeyFile: pki.serverKeyFile },
          stateDir: options.stateDir,
          report: (line, level) => log[level](line),
        })
      : await EmbeddedBroker.start({
          host,
          port,
          backendPort,
          certFile: pki.serverCertFile,
          keyFile: pki.serverKeyFile,
          caFile: pki.caFile,
          backendCaFile: pki.backendCaFile,
        });
  } catch (err) {
    const inUse =
      err instanceof BrokerPortInUse
        ? { listener: err.listener, port: err.port }
        : (err as NodeJS.ErrnoException).code === 'EADDRINUSE'
          ? { listener: (err as { listener?: 'cars' | 'backend' }).listener ?? 'cars', port: (err as { port?: number }).port ?? port }
          : null;
    if (inUse) {
      throw new Error(
        `uplink.url: the embedded broker cannot listen on ${listenerOf(inUse.listener, inUse.port)}: the port is in use (another agent or broker running?)`,
      );
    }
    throw new Error(`uplink.url: the embedded broker (${mosquitto ?? 'aedes'}) cannot start on ${host}:${port}: ${(err as Error).message}`);
  }
  const backendUrl = broker.backendUrl;
  let signer: DevSigner;
  try {
    signer = await DevSigner.start({
      url: backendUrl,
      protocol: broker.protocol,
      certFile: pki.backendCertFile,
      keyFile: pki.backendKeyFile,
      caFile: pki.caFile,
      ca: pki.ca,
      report: (line, level) => log[level](line),
    });
  } catch (err) {
    await broker.close();
    throw err;
  }
  const where = broker.name === 'aedes' ? ' (in-process)' : '';
  // The protocol the car's session will speak: the broker's unless the config says otherwise.
  const protocol = uplink.protocol ?? broker.protocol;
  log.info(
    `broker: ${broker.name} ${broker.version}${where} on ${broker.url} (cars) and ${backendUrl} (backend, certificates in ${options.certsDir}), ` +
      `${PROTOCOL_NAME[protocol]}${protocol !== broker.protocol ? ' (uplink.protocol)' : ''}`,
  );
  const running = broker;
  return {
    name: running.name,
    version: running.version,
    url: running.url,
    backendUrl,
    protocol: running.protocol,
    async close() {
      await signer.close().catch(() => undefined);
      await running.close();
    },
  };
}
