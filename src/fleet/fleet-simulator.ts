/**
 * A simulated fleet in one process: N cars, each the agent itself (src/agent/agent.ts) with the simulated vehicle as
 * its bus, so what the fleet does is what the agent does: its own mutual-TLS session to the broker (adaptive heartbeat,
 * reconnect with full-jitter backoff, retained status birth and will), its own SQLite outbox and publisher, its
 * collection rules, its command dispatcher (signed commands checked against the command CA, replay memory), under
 * `<stateDir>/cars/<deviceId>/`. A second run with the same state folder continues each car's outbox and reuses its
 * certificate (src/fleet/car-identities.ts).
 *
 * What makes a car cheap enough for a thousand in one process: the simulated bus at the fleet rate (`rateHz`: each
 * message at most that often, the drive cycle in 100 ms steps; the full bus is some 300 frames/s), the DBC compiled
 * once for all cars, one host sampler for every car's health report, the network given rather than looked up per car,
 * no status page, and a log per car at `warn` (each line prefixed with its device ID) instead of the verbose start.
 *
 * Failure: bad options (no cars, an unreadable CA, a state folder that cannot be written) throw before any car starts,
 * naming the option or file; a car whose agent fails to open closes the cars already open and throws, naming the car.
 * Once running, a broker that goes away is each car's own business (it reconnects; its outbox keeps the data).
 */
import path from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { Agent, type SharedAgentParts } from '../agent/agent.js';
import { parseDeviceConfig, type DeviceConfig } from '../config/device-config.js';
import type { CompiledDatabase } from '../dbc/codec.js';
import type { SystemSample } from '../contract/health.js';
import { Logger, type LogLevel } from '../health/log.js';
import { SystemSampler } from '../health/system.js';
import { checkDeviceId } from '../pki/device-id.js';
import { DEMO_DBC_PATH } from '../sim/vehicle.js';
import { ensureCarIdentities } from './car-identities.js';
import { carIds, DEFAULT_BATCH_S, DEFAULT_FLEET_RATE_HZ, FLEET_NETWORK } from './fleet-profile.js';

/** How long one host sample serves every car's health report. */
const HOST_SAMPLE_TTL_MS = 30_000;

export interface FleetSimulatorOptions {
  cars: number;
  /** The cars' listener, mqtts://host:port. */
  brokerUrl: string;
  /** The CA that issues the cars' certificates, and its key. */
  caCertFile: string;
  caKeyFile: string;
  /** The CA the broker's certificate chains to (pinned by every car); default `caCertFile`. */
  brokerCaFile?: string;
  /** The command CA the cars pin; without it, the cars take no commands. */
  commandCaFile?: string;
  /** Keys, certificates, outboxes and replay memories, one folder per car under `<stateDir>/cars/`. */
  stateDir: string;
  /** Car i (from 0) drives the cycle seeded `seed + i`. Default 1. */
  seed?: number;
  /** Device IDs are `<prefix><index>`, the index zero-padded (`sim-0001`). Default `sim-`. */
  prefix?: string;
  /** The simulated bus's rate, Hz (see the file comment). Default DEFAULT_FLEET_RATE_HZ. */
  rateHz?: number;
  /** Each car closes a telemetry batch (one message) at least this often, seconds. Default DEFAULT_BATCH_S. */
  batchS?: number;
  /** Each car's health report interval, seconds. Default: the agent's (300). */
  healthIntervalS?: number;
  /** The reconnect backoff's first and largest ceiling, ms. Default: the agent's (1 s, 5 min). */
  reconnect?: { initialMs?: number; maxMs?: number };
  /**
   * false: the reconnect backoff without jitter (each car waits the whole ceiling), for the benchmark's comparison of
   * a reconnection storm with the agent's full jitter. Default true: the agent as it is.
   */
  jitter?: boolean;
  /** The cars' local log level. Default warn. */
  logLevel?: LogLevel;
  /** Where the cars' log lines go, each prefixed with its device ID. */
  log: (line: string) => void;
  /** Told as the certificates are made (a first run) and the cars are opened. */
  progress?: (line: string) => void;
}

/** One simulated car. */
export interface SimulatedCar {
  deviceId: string;
  agent: Agent;
  /** Resolves when its run ends (close), rejects when its source fails. */
  running: Promise<void>;
}

/** The fleet's state at one moment, summed over the cars. */
export interface FleetStatus {
  cars: number;
  /** Cars whose session is connected. */
  connected: number;
  /** Messages committed to the outboxes during this run. */
  committed: number;
  /** Messages the broker acknowledged (PUBACK). */
  acknowledged: number;
  /** Messages waiting in the outboxes. */
  buffered: number;
  /** Connections made (first ones and reconnections). */
  connects: number;
  /** Commands the cars received. */
  commands: number;
}

/** What a car ended with: its data stream's last number and what stayed in its outbox. */
export interface CarSummary {
  deviceId: string;
  /** The last data-stream seq its outbox assigned (0: none yet). */
  lastSeq: number;
  /** Messages still in its outbox (sent next run). */
  buffered: number;
  acknowledged: number;
}

export class FleetSimulator {
  private closing: Promise<CarSummary[]> | undefined;

  private constructor(
    readonly cars: readonly SimulatedCar[],
    readonly certificates: { issued: number; reused: number },
    private readonly loggers: readonly Logger[],
    private readonly sampler: SystemSampler,
  ) {}

  /** Makes (or reuses) the certificates, then opens and runs every car. Throws as the file comment says. */
  static async start(options: FleetSimulatorOptions): Promise<FleetSimulator> {
    if (!Number.isInteger(options.cars) || options.cars < 1) throw new RangeError(`--cars: expected a whole number of at least 1, got ${options.cars}`);
    const prefix = options.prefix ?? 'sim-';
    const ids = carIds(options.cars, prefix);
    // The prefix must make device IDs the broker's ACL takes (no '/', '+', '#'...): said once, naming the option.
    try {
      checkDeviceId(ids[0]!, `--prefix '${prefix}' gives device ID`);
    } catch (err) {
      throw new Error((err as Error).message);
    }
    const carsDir = path.join(options.stateDir, 'cars');
    const identities = await ensureCarIdentities({
      dir: carsDir,
      caCertFile: options.caCertFile,
      caKeyFile: options.caKeyFile,
      deviceIds: ids,
      onIssued: (done, total) => {
        if (done === total || done % 100 === 0) options.progress?.(`certificates: ${done}/${total} issued`);
      },
    });
    const sampler = new SystemSampler({ diskPath: options.stateDir });
    const shared: SharedAgentParts = {
      databases: new Map<string, CompiledDatabase>(),
      sampleSystem: sharedHostSample(sampler),
      network: FLEET_NETWORK,
      // Just under 1: the delay is the ceiling itself (the session draws in [0, 1)).
      ...(options.jitter === false ? { reconnectRandom: () => 0.999_999 } : {}),
    };
    const cars: SimulatedCar[] = [];
    const loggers: Logger[] = [];
    // The benchmark times the connections from here: the certificates are ready.
    options.progress?.(`starting ${ids.length} cars`);
    try {
      for (const [index, deviceId] of ids.entries()) {
        const files = identities.files.get(deviceId)!;
        const config = carConfig(options, deviceId, index, path.join(carsDir, deviceId), files);
        const logger = new Logger({ config: config.logging, lines: (line) => options.log(`${deviceId}: ${line}`) });
        loggers.push(logger);
        let agent: Agent;
        try {
          agent = await Agent.open(config, { logger, logStatus: false, shared });
        } catch (err) {
          throw new Error(`car ${deviceId}: ${(err as Error).message}`);
        }
        const running = agent.run();
        // Observed here so that a failing source is never an unhandled rejection; close() awaits it again.
        running.catch((err: unknown) => options.log(`${deviceId}: the simulated bus stopped: ${(err as Error).message}`));
        cars.push({ deviceId, agent, running });
        if ((index + 1) % 100 === 0) options.progress?.(`cars: ${index + 1}/${ids.length} started`);
        // A turn of the event loop between cars: the TLS handshakes of the cars already started go on meanwhile, so
        // that opening a thousand outboxes does not hold the first cars' connections past their timeout.
        await yieldToEventLoop();
      }
    } catch (err) {
      await Promise.all(cars.map((car) => car.agent.close().catch(() => undefined)));
      for (const logger of loggers) logger.close();
      sampler.close();
      throw err;
    }
    return new FleetSimulator(cars, { issued: identities.issued, reused: identities.reused }, loggers, sampler);
  }

  /** The fleet now, from each car's snapshot (a few outbox queries per car: call it every few seconds, not per frame). */
  status(): FleetStatus {
    const status: FleetStatus = { cars: this.cars.length, connected: 0, committed: 0, acknowledged: 0, buffered: 0, connects: 0, commands: 0 };
    for (const car of this.cars) {
      const dataPath = car.agent.snapshot().dataPath;
      if (!dataPath) continue;
      status.committed += dataPath.messages;
      status.buffered += dataPath.report.outbox.messages;
      const link = dataPath.link;
      if (link) {
        if (link.state === 'connected') status.connected++;
        status.acknowledged += link.publisher.acknowledged;
        status.connects += link.counters.connections;
      }
      status.commands += dataPath.report.commands?.received ?? 0;
    }
    return status;
  }

  /** Stops every car as the agent stops (open batches committed, offline status, DISCONNECT); closes once. */
  close(): Promise<CarSummary[]> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<CarSummary[]> {
    const summaries = await Promise.all(
      this.cars.map(async (car): Promise<CarSummary> => {
        const summary = await car.agent.close();
        await car.running.catch(() => undefined);
        const outbox = summary.dataPath?.outbox;
        return {
          deviceId: car.deviceId,
          lastSeq: outbox ? outbox.nextSeq - 1 : 0,
          buffered: summary.dataPath?.buffered ?? 0,
          acknowledged: summary.dataPath?.published ?? 0,
        };
      }),
    );
    for (const logger of this.loggers) logger.close();
    this.sampler.close();
    return summaries;
  }
}

/** One host sample for every car's health report, taken again once it is HOST_SAMPLE_TTL_MS old. */
function sharedHostSample(sampler: SystemSampler): () => Promise<SystemSample> {
  let latest: { at: number; sample: Promise<SystemSample> } | undefined;
  return () => {
    const now = performance.now();
    if (!latest || now - latest.at > HOST_SAMPLE_TTL_MS) latest = { at: now, sample: sampler.sample() };
    return latest.sample;
  };
}

/**
 * The device config of car `index`: the demo DBC on a simulated bus at the fleet rate with its own seed, periodic
 * telemetry of the signals a fleet watches, the drive line's changes, and its state in `dir`.
 */
function carConfig(
  options: FleetSimulatorOptions,
  deviceId: string,
  index: number,
  dir: string,
  identity: { certFile: string; keyFile: string },
): DeviceConfig {
  const rateHz = options.rateHz ?? DEFAULT_FLEET_RATE_HZ;
  const batchS = options.batchS ?? DEFAULT_BATCH_S;
  const json = {
    deviceId,
    buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', seed: (options.seed ?? 1) + index, rateHz } }],
    collection: {
      batch: { maxSamples: 500, maxDelayMs: Math.round(batchS * 1000) },
      format: 'cbor',
      rules: [
        {
          name: 'driving',
          mode: 'periodic',
          intervalMs: Math.max(1, Math.round(1000 / rateHz)),
          priority: 3,
          signals: ['VehicleSpeed', 'EngineSpeed', 'FuelLevel', 'Odometer', 'Latitude', 'Longitude'],
        },
        { name: 'driveline', mode: 'change', priority: 4, signals: ['GearEngaged', 'IgnitionState', 'EngineRunning'] },
      ],
    },
    outbox: { path: 'outbox.db' },
    uplink: {
      url: options.brokerUrl,
      certFile: identity.certFile,
      keyFile: identity.keyFile,
      caFile: path.resolve(options.brokerCaFile ?? options.caCertFile),
      ...(options.reconnect ? { reconnect: options.reconnect } : {}),
    },
    ...(options.commandCaFile ? { commands: { caFile: path.resolve(options.commandCaFile), replayDbPath: 'commands.db' } } : {}),
    health: { ...(options.healthIntervalS !== undefined ? { intervalS: options.healthIntervalS } : {}), http: { enabled: false } },
    logging: { level: options.logLevel ?? 'warn', verboseForS: 0 },
  };
  return parseDeviceConfig(json, { file: `car ${deviceId}`, baseDir: dir });
}
