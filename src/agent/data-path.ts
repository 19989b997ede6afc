/**
 * The data path of a run, wired from the device config: collection rules turn decoded frames (and OBD values) into
 * batches; batches are encoded and committed to the SQLite outbox; the publisher drains the outbox over the mutual-TLS
 * MQTT session. With `uplink.embeddedBroker` the run also starts the development broker (src/agent/development-broker.ts:
 * mosquitto when installed, else aedes) and its certificate signer, with a development PKI created in `certsDir` when
 * absent; the session's protocol follows that broker unless `uplink.protocol` says.
 *
 * Closed batches wait in memory for at most `outbox.writeIntervalMs` and are committed together, one transaction per
 * interval: the flash sees a few large writes, not one small one per batch. The frame path itself only reaches the
 * collector (see src/collect/collector.ts): nothing here runs per frame.
 *
 * It logs through the children of the logger it is given, one per component, each line at the level it calls:
 * `outbox`, `uplink` (the session, the publisher, the heartbeat, the certificate), `commands`, `broker`, `pki` (the
 * development PKI) and `identity` (a certificate rotation cut short, repaired at start).
 *
 * What only the development run uses (the development broker, aedes, the development PKI and signer, node-forge) is
 * imported when `uplink.embeddedBroker` asks for it: a car's run never loads it (test/agent/start-up-modules.test.ts).
 */
import path from 'node:path';
import type { FrameSink } from '../can/frame.js';
import { Collector } from '../collect/collector.js';
import type { CollectionConfig } from '../collect/config.js';
import type { SampleBatch } from '../collect/sample.js';
import { CommandFailure, type CertificateRotationRequest, type CommandContext } from '../commands/handler.js';
import type { DispatcherStats } from '../commands/dispatcher.js';
import type { DeviceConfig } from '../config/device-config.js';
import type { UplinkConfig } from '../uplink/config.js';
import type { BusDecoder } from '../dbc/bus-decoder.js';
import { HEALTH_DEFAULTS } from '../health/config.js';
import type { ComponentLog, ComponentLogs } from '../health/log.js';
import type { DevPkiPaths } from '../pki/dev-pki.js';
import { loadIdentity, type IdentityFiles } from '../pki/identity.js';
import { repairIdentityFiles } from '../pki/identity-files.js';
import { rotateCertificate, RotationFailure, summary, type CertificateSummary, type RotationOutcome } from '../pki/rotation.js';
import { SqliteOutbox, type OutboxItem, type OutboxStats } from '../store/outbox.js';
import { encodeMessage } from '../uplink/codec.js';
import { identifyNetwork, watchNetwork } from '../uplink/network-identity.js';
import { openAdaptiveHeartbeat, type AdaptiveHeartbeat, type HeartbeatStatus } from '../uplink/keepalive.js';
import type { LinkMemory } from '../uplink/link-memory.js';
import { Publisher, type PublisherStats } from '../uplink/publisher.js';
import { MqttSession, type SessionCounters, type SessionState } from '../uplink/session.js';
import { Throttle, type ThrottleState } from '../uplink/throttle.js';
import { AgentCommands } from './agent-commands.js';
import type { DevelopmentBroker } from './development-broker.js';

/** The data path's components' logs. */
interface DataPathLogs {
  outbox: ComponentLog;
  uplink: ComponentLog;
}

/** A publish problem's level: a message dropped is lost data; refused (retried) or oversized (kept) ones are not. */
const PUBLISH_PROBLEM_LEVEL = { dropped: 'error', refused: 'warn', oversized: 'warn' } as const;

export interface DataPathSummary {
  samples: number;
  messages: number;
  /** Messages the broker acknowledged. */
  published: number;
  /** Messages waiting in the outbox when the run stopped. */
  buffered: number;
  outbox: OutboxStats;
  uplink?: { state: SessionState; url: string; publisher: PublisherStats; throttle: ThrottleState; heartbeat?: HeartbeatStatus };
}

/** What the data path reports of itself: in getStatus and (read by src/health/report.ts) in the health report. */
export interface DataPathReport {
  /** When it was taken, unix ms. */
  ts: number;
  /** Counted over the whole run, collectors replaced by setConfig included. */
  collector: { samplesIn: number; samples: number; batches: number; triggers: number; droppedBatches: number };
  outbox: {
    messages: number;
    bytes: number;
    oldestCreatedAt: number | null;
    evicted: { count: number; bytes: number; byPriority: number[] };
    expired: number;
    rejected: number;
    corruptFilesMovedAside: number;
    setAside: OutboxStats['setAside'];
    fileLostWhileRunning: number;
    /** The number the next data-stream message gets: the last one assigned is nextSeq - 1. */
    nextSeq: number;
    /** Loss notices written, and data-stream messages they announced lost (evicted, expired, refused). */
    lossNotices: number;
    lostAnnounced: number;
  };
  uplink?: { state: SessionState; publisher: PublisherStats; throttle: ThrottleState; heartbeat?: HeartbeatStatus };
  commands?: DispatcherStats;
  certificate?: CertificateSummary & { expiringSoon: boolean };
}

/** The data path in the agent's snapshot (src/agent/snapshot.ts). */
export interface DataPathSnapshot {
  report: DataPathReport;
  /** Messages committed to the outbox during this run. */
  messages: number;
  /** The MQTT link, with an uplink section. */
  link: {
    url: string;
    state: SessionState;
    counters: SessionCounters;
    publisher: PublisherStats;
    throttled: boolean;
    /** The adaptive heartbeat (uplink.keepalive.adaptive); null with a fixed keepalive. */
    heartbeat: HeartbeatStatus | null;
  } | null;
}

/** The identity files of the uplink section (resolved by the config loader), the device certificate's issuer required. */
function identityFiles(uplink: UplinkConfig): IdentityFiles & { caFile: string } {
  return {
    certFile: uplink.certFile!,
    keyFile: uplink.keyFile!,
    caFile: uplink.caFile!,
    ...(uplink.issuerFile !== undefined ? { issuerFile: uplink.issuerFile } : {}),
    requireIssuer: true,
  };
}

export interface DataPathOptions {
  /**
   * Builds the context remote commands act through, given the data path (which it reaches: setConfig, setSignal on a
   * simulated bus, rotateCertificate); without it, a basic context serves the commands that only read.
   */
  commandContext?: (dataPath: DataPath) => CommandContext;
  /**
   * The network the car is on, as the adaptive heartbeat's memory keys it; given, it is neither looked up nor watched
   * (agents sharing one process and one network: the simulated fleet). Default: identified, and checked every minute.
   */
  network?: string;
  /** The reconnect backoff's jitter source (SharedAgentParts.reconnectRandom); default Math.random. */
  reconnectRandom?: () => number;
}

export class DataPath {
  private pendingBatches: SampleBatch[] = [];
  private writeTimer: NodeJS.Timeout | undefined;
  private identityTimer: NodeJS.Timeout | undefined;
  private stopNetworkWatch: (() => void) | undefined;
  private messages = 0;
  /** Batches the codec refused (never expected from the collector; counted rather than fatal). */
  private droppedBatches = 0;
  private closed = false;
  /** The network was given (DataPathOptions.network): nothing to watch. */
  private fixedNetwork = false;
  /** Remote commands (the `commands` section, with an uplink). */
  private commands: AgentCommands | undefined;
  private commandContext: CommandContext | undefined;
  /** The collection section in force: setConfig replaces it (and the collector) while the run goes on. */
  private collection: CollectionConfig;
  /** Per bus: the running collector's frame sink, which the stable sinks handed to the sources call. */
  private busSinks: FrameSink[];
  /** Counts of collectors replaced during the run, so that health and summary count the whole run. */
  private readonly retired = { samplesIn: 0, samplesEmitted: 0, batches: 0, triggersFired: 0 };

  private constructor(
    private readonly config: DeviceConfig,
    private readonly buses: readonly BusDecoder[],
    private currentCollector: Collector,
    readonly outbox: SqliteOutbox,
    private readonly log: DataPathLogs,
    readonly uplink?: {
      session: MqttSession;
      publisher: Publisher;
      throttle: Throttle;
      url: string;
      broker?: DevelopmentBroker;
      /** The adaptive heartbeat (uplink.keepalive.adaptive) and its per-network memory. */
      heartbeat?: AdaptiveHeartbeat;
      linkMemory?: LinkMemory;
    },
  ) {
    this.collection = config.collection!;
    this.busSinks = buses.map((_, i) => currentCollector.sinkFor(i));
  }

  get collector(): Collector {
    return this.currentCollector;
  }

  /**
   * Opens the outbox, builds the collector against the buses' databases, and (with an uplink section) starts the
   * embedded broker if configured, loads the identity and connects. Configuration and identity problems throw here,
   * before the sources start; a broker that cannot be reached is not a failure (the outbox holds the data).
   */
  static async open(config: DeviceConfig, buses: readonly BusDecoder[], logs: ComponentLogs, options: DataPathOptions = {}): Promise<DataPath> {
    const collection = config.collection!;
    const outboxConfig = config.outbox!;
    const log: DataPathLogs = { outbox: logs.child('outbox'), uplink: logs.child('uplink') };
    // Its folder is created by the outbox itself (mode 0750; errors name outbox.path).
    const outbox = SqliteOutbox.open({
      path: outboxConfig.path,
      deviceId: config.deviceId,
      maxBytes: outboxConfig.maxBytes,
      maxAgeMs: outboxConfig.maxAgeHours * 3_600_000,
      durability: outboxConfig.durability,
      // At the level the outbox gives it (lost messages: error); its messages start with `outbox: `.
      onProblem: (err) => log.outbox[err.severity](err.message),
    });
    let path_: DataPath | undefined;
    let uplink: DataPath['uplink'];
    let commands: AgentCommands | undefined;
    try {
      const collector = new Collector({ config: collection, buses, onBatch: (batch) => path_!.pendingBatches.push(batch) });
      // The development PKI (with the command CA the commands section pins by default) before anything reads it.
      const devPki = config.uplink?.embeddedBroker
        ? (await import('../pki/dev-pki.js')).ensureDevPki(config.uplink.certsDir!, config.deviceId, devPkiReport(logs))
        : undefined;
      // The command CA and the replay memory first: a bad one fails the start before anything connects.
      if (config.commands && config.uplink) commands = AgentCommands.open(config, buses, logs.child('commands'));
      if (config.uplink) uplink = await openUplink(config, outbox, logs, log.uplink, devPki, options);
      path_ = new DataPath(config, buses, collector, outbox, log, uplink);
      path_.fixedNetwork = options.network !== undefined;
      path_.commands = commands;
      // The context remote commands act through reaches this data path; the dispatcher gets it when it starts, below.
      path_.commandContext = options.commandContext?.(path_);
    } catch (err) {
      commands?.close();
      // A development broker is a child process (mosquitto) or a listening server (aedes): never left behind.
      uplink?.linkMemory?.close();
      await uplink?.broker?.close();
      outbox.close();
      throw err;
    }
    path_.start();
    return path_;
  }

  private start(): void {
    this.collector.start();
    this.writeTimer = setInterval(() => this.commitBatches(), Math.max(10, this.config.outbox!.writeIntervalMs));
    if (this.uplink) {
      const { session, publisher } = this.uplink;
      const log = this.log.uplink;
      // The session's errors are what it works around (it reconnects): warnings.
      session.onError((err) => log.warn(`uplink: ${err.message}`));
      // One line per change of the learned interval: a few while learning, then rarely. Learning the network's NAT
      // timeout is normal work, not trouble.
      this.uplink.heartbeat?.onEvent((event) => {
        if (event.type === 'interval') {
          const { fromS, toS, reason, phase } = event.change;
          log.info(`uplink: heartbeat ${fromS} s -> ${toS} s on ${event.network} (${reason}, ${phase})`);
        } else if (event.type === 'verdict') {
          const d = event.detection;
          log.info(
            `uplink: the dead link after ${d.idleS} s idle was ${d.verdict === 'nat-expired' ? 'the network forgetting the idle connection' : 'lost coverage'}`,
          );
        }
      });
      publisher.onError((err) => log[PUBLISH_PROBLEM_LEVEL[err.problem]](`uplink: ${err.message}`));
      session.onStateChange((change) => {
        if (change.state === 'connected') log.info(`uplink: connected to ${this.uplink!.url}`);
        else if (change.state === 'disconnected' && change.retryInMs !== undefined) {
          log.warn(`uplink: disconnected (${change.error?.message ?? 'connection lost'}), retrying in ${(change.retryInMs / 1000).toFixed(1)} s`);
        }
      });
      this.commands?.start(
        { outbox: this.outbox, session, healthReport: () => this.healthReport(), rotateCertificate: (request) => this.rotateCertificate(request) },
        this.commandContext,
      );
      session.start();
      publisher.start();
      const heartbeat = this.uplink.heartbeat;
      // A car moves between carriers and hotspots: each network has its own NAT and its own learned interval.
      if (heartbeat && !this.fixedNetwork) this.stopNetworkWatch = watchNetwork((network) => heartbeat.setNetwork(network));
      this.identityTimer = setInterval(() => this.inspectIdentity(), 86_400_000);
      this.identityTimer.unref();
    }
  }

  /**
   * The sink a bus source delivers to: decodes as BusDecoder.sink does, then the collection rules see the frame. It
   * goes through `busSinks` so that a collector replaced by setConfig takes over the running sources.
   */
  sinkFor(busIndex: number): FrameSink {
    if (busIndex < 0 || busIndex >= this.buses.length) throw new RangeError(`no bus ${busIndex}`);
    return (frame) => this.busSinks[busIndex]!(frame);
  }

  /**
   * A collector for `collection` against this run's buses, delivering into this outbox; not started. Throws
   * CollectorConfigError when a rule names a signal no bus has.
   */
  createCollector(collection: CollectionConfig): Collector {
    return new Collector({ config: collection, buses: this.buses, onBatch: (batch) => this.pendingBatches.push(batch) });
  }

  /**
   * Puts `next` (from createCollector) in place of the running collector without stopping the sources. The old one's
   * open batches are committed first, in the old payload format. Returns the previous collection and collector
   * (closed), so that a caller whose later step fails can put them back the same way.
   */
  replaceCollector(next: Collector, collection: CollectionConfig): { collector: Collector; collection: CollectionConfig } {
    if (this.closed) throw new Error('the data path is closed');
    const previous = { collector: this.currentCollector, collection: this.collection };
    previous.collector.close();
    this.commitBatches();
    // `next` may be a collector put back after a failed change: its own counts are already in it.
    for (const key of Object.keys(this.retired) as (keyof DataPath['retired'])[]) {
      this.retired[key] += previous.collector.stats[key] - next.stats[key];
    }
    this.currentCollector = next;
    this.collection = collection;
    this.busSinks = this.buses.map((_, i) => next.sinkFor(i));
    next.start();
    return previous;
  }

  /**
   * Encodes the closed batches and commits them to the outbox in one transaction. With none, the outbox still checks
   * that its file is in place (one stat per write interval): a deleted file is found even while the bus is silent.
   */
  commitBatches(): void {
    if (this.pendingBatches.length === 0) {
      this.outbox.verifyFile();
      return;
    }
    const batches = this.pendingBatches;
    this.pendingBatches = [];
    const { deviceId } = this.config;
    const format = this.collection.format;
    const createdAt = Date.now();
    const items: OutboxItem[] = batches.map((batch) => ({
      kind: batch.kind,
      priority: batch.priority,
      createdAt,
      encode: (seq) =>
        encodeMessage(
          { deviceId, seq, kind: batch.kind, priority: batch.priority, createdAt, ...(batch.trigger ? { trigger: batch.trigger } : {}) },
          batch.samples,
          format,
        ),
    }));
    // A failed write (full disk) is counted and reported by the outbox itself; the run goes on.
    try {
      this.messages += this.outbox.append(items).seqs.length;
    } catch {
      // A batch the codec refuses (a non-finite timestamp...) would abort the whole transaction: store the others
      // one by one and drop only what cannot be encoded, saying so.
      for (const item of items) {
        try {
          this.messages += this.outbox.append([item]).seqs.length;
        } catch (itemError) {
          this.droppedBatches++;
          this.log.outbox.error(`outbox: a ${item.kind} batch could not be encoded and was dropped: ${(itemError as Error).message}`);
        }
      }
    }
  }

  /** The health message: what the collector, the outbox, the link and its budget are doing. */
  healthReport(): DataPathReport {
    const outbox = this.outbox.stats();
    const report: DataPathReport = {
      ts: Date.now(),
      collector: {
        samplesIn: this.retired.samplesIn + this.collector.stats.samplesIn,
        samples: this.retired.samplesEmitted + this.collector.stats.samplesEmitted,
        batches: this.retired.batches + this.collector.stats.batches,
        triggers: this.retired.triggersFired + this.collector.stats.triggersFired,
        droppedBatches: this.droppedBatches,
      },
      outbox: {
        messages: outbox.messages,
        bytes: outbox.bytes,
        oldestCreatedAt: outbox.oldestCreatedAt ?? null,
        evicted: { count: outbox.evicted.count, bytes: outbox.evicted.bytes, byPriority: outbox.evicted.byPriority.map((e) => e.count) },
        expired: outbox.expired,
        rejected: outbox.rejected,
        corruptFilesMovedAside: outbox.corruptFilesMovedAside,
        setAside: outbox.setAside,
        fileLostWhileRunning: outbox.fileLostWhileRunning,
        nextSeq: outbox.nextSeq,
        lossNotices: outbox.losses.notices,
        lostAnnounced: outbox.losses.messages,
      },
    };
    if (this.uplink) {
      report.uplink = {
        state: this.uplink.session.state,
        publisher: this.uplink.publisher.stats,
        throttle: this.uplink.throttle.state,
        ...(this.uplink.heartbeat ? { heartbeat: this.uplink.heartbeat.status() } : {}),
      };
    }
    const commands = this.commands?.stats;
    if (commands) report.commands = commands;
    if (this.uplink) {
      const certificate = summary(this.uplink.session.currentIdentity);
      report.certificate = { ...certificate, expiringSoon: certificate.daysLeft <= this.certificateWarningDays };
    }
    return report;
  }

  /**
   * Rotates the device certificate over the uplink (src/pki/rotation.ts): the remote command's way in. Throws
   * CommandFailure with the rotation's reason.
   */
  async rotateCertificate(request: CertificateRotationRequest): Promise<RotationOutcome> {
    const uplink = this.config.uplink;
    if (!this.uplink || !uplink) throw new CommandFailure('unsupported', 'the agent has no uplink: there is no certificate to rotate');
    try {
      const outcome = await rotateCertificate({
        deviceId: this.config.deviceId,
        files: identityFiles(uplink),
        link: this.uplink.session,
        requestId: request.requestId,
        waitMs: request.waitMs,
        signal: request.signal,
        progress: (step, detail) => request.progress(step, detail),
      });
      this.log.uplink.info(
        `uplink: certificate rotated: ${outcome.previous.fingerprint256.slice(0, 17)} -> ${outcome.current.fingerprint256.slice(0, 17)}, valid until ${outcome.current.notAfter}`,
      );
      return { ...outcome };
    } catch (err) {
      if (err instanceof RotationFailure) {
        this.log.uplink.warn(`uplink: certificate rotation failed (${err.reason}): ${err.message}`);
        throw new CommandFailure(err.reason, err.message);
      }
      throw err;
    }
  }

  private get certificateWarningDays(): number {
    return (this.config.health ?? HEALTH_DEFAULTS).certificateWarningDays;
  }

  /** Checks the identity files again (daily): expiry ahead, or files changed into something unusable. */
  private inspectIdentity(): void {
    const uplink = this.config.uplink;
    if (!uplink || !this.uplink) return;
    try {
      const identity = loadIdentity(identityFiles(uplink));
      const { daysLeft, notAfter } = summary(identity);
      if (daysLeft <= this.certificateWarningDays)
        this.log.uplink.warn(`uplink: the device certificate expires in ${daysLeft} days (${notAfter}): rotate it (command rotateCertificate)`);
    } catch (err) {
      this.log.uplink.warn(`uplink: the device identity no longer checks out: ${(err as Error).message}`);
    }
  }

  /** Publishes a health report (src/health takes it at health.intervalS and calls this). */
  publishHealth(report: object): void {
    const session = this.uplink?.session;
    if (!session || session.state !== 'connected') return;
    // Health is a snapshot: QoS 1 while connected, never stored (the next one supersedes it). Retained, so that the
    // broker holds each car's latest for whoever subscribes later (telematics-ops fleet), with no backend database.
    session.publish(session.topic('health'), JSON.stringify(report), { qos: 1, retain: true }).catch(() => undefined);
  }

  /** What the status line, the status page, the health report and getStatus read of the data path. */
  snapshot(): DataPathSnapshot {
    const uplink = this.uplink;
    return {
      report: this.healthReport(),
      messages: this.messages,
      link: uplink
        ? {
            url: uplink.url,
            state: uplink.session.state,
            counters: uplink.session.counters,
            publisher: uplink.publisher.stats,
            throttled: uplink.throttle.state.limited,
            heartbeat: uplink.heartbeat?.status() ?? null,
          }
        : null,
    };
  }

  summary(): DataPathSummary {
    const outbox = this.outbox.stats();
    const summary: DataPathSummary = {
      samples: this.retired.samplesEmitted + this.collector.stats.samplesEmitted,
      messages: this.messages,
      published: this.uplink?.publisher.stats.acknowledged ?? 0,
      buffered: outbox.messages,
      outbox,
    };
    if (this.uplink) {
      summary.uplink = { state: this.uplink.session.state, url: this.uplink.url, publisher: this.uplink.publisher.stats, throttle: this.uplink.throttle.state };
      if (this.uplink.heartbeat) summary.uplink.heartbeat = this.uplink.heartbeat.status();
    }
    return summary;
  }

  /**
   * Flushes the collector's open batches into the outbox, stops publishing (messages in flight stay in the outbox and
   * go out again next run), says offline, and closes everything. The summary is taken before the outbox closes.
   */
  async close(): Promise<DataPathSummary> {
    if (this.closed) return this.summary();
    this.closed = true;
    clearInterval(this.writeTimer);
    clearInterval(this.identityTimer);
    this.stopNetworkWatch?.();
    this.collector.close();
    this.commitBatches();
    // Before the outbox closes: the results of commands cut short go out with the next run.
    this.commands?.close();
    if (this.uplink) {
      this.uplink.publisher.stop();
      await this.uplink.session.close();
    }
    const summary = this.summary();
    this.outbox.close();
    this.uplink?.linkMemory?.close();
    await this.uplink?.broker?.close();
    return summary;
  }
}

/** What ensureDevPki says goes to the `pki` component, at the level it gives (created: info; a folder narrowed: warn). */
function devPkiReport(logs: ComponentLogs): (line: string, level: 'info' | 'warn') => void {
  const log = logs.child('pki');
  return (line, level) => log[level](line);
}

/** `devPki`: the development PKI made for the development broker (with embeddedBroker). */
async function openUplink(
  config: DeviceConfig,
  outbox: SqliteOutbox,
  logs: ComponentLogs,
  log: ComponentLog,
  devPki?: DevPkiPaths,
  shared: Pick<DataPathOptions, 'network' | 'reconnectRandom'> = {},
): Promise<NonNullable<DataPath['uplink']>> {
  const uplink = config.uplink!;
  let broker: DevelopmentBroker | undefined;
  let url = uplink.url;
  if (uplink.embeddedBroker) {
    const { startDevelopmentBroker } = await import('./development-broker.js');
    broker = await startDevelopmentBroker({
      uplink,
      pki: devPki ?? (await import('../pki/dev-pki.js')).ensureDevPki(uplink.certsDir!, config.deviceId, devPkiReport(logs)),
      certsDir: uplink.certsDir!,
      // The agent's var/ folder: mosquitto's configuration, persistence and log beside the outbox.
      stateDir: path.join(path.dirname(config.outbox!.path), 'mosquitto'),
      log: logs.child('broker'),
    });
    url = broker.url;
  }
  let adaptive: ReturnType<typeof openAdaptiveHeartbeat> = null;
  try {
    // A rotation cut short by a power cut is finished (or undone) before the identity is read.
    const repaired = repairIdentityFiles({ certFile: uplink.certFile!, keyFile: uplink.keyFile! });
    // Its line starts with `identity: `: what was found and undone or finished, worked around.
    if (repaired) logs.child('identity').warn(repaired);
    const identity = loadIdentity(identityFiles(uplink));
    for (const w of identity.warnings) log.warn(`uplink: ${w}`);
    // The network is known before the first connection, so a car starts from what it learned on this network.
    const network = uplink.keepalive.adaptive ? (shared.network ?? (await identifyNetwork())) : undefined;
    adaptive = openAdaptiveHeartbeat(uplink.keepalive, path.join(path.dirname(config.outbox!.path), 'link-memory.db'), log.warn, network);
    const session = new MqttSession({
      ...(adaptive ? { heartbeat: adaptive.heartbeat } : {}),
      url,
      deviceId: config.deviceId,
      identity,
      // The development broker's: MQTT 5 with mosquitto, 3.1.1 with aedes.
      protocol: uplink.protocol ?? broker?.protocol ?? 5,
      sessionExpiryS: uplink.sessionExpiryS,
      keepaliveS: uplink.keepaliveS,
      reconnect: uplink.reconnect,
      ...(shared.reconnectRandom ? { random: shared.reconnectRandom } : {}),
    });
    const throttle = new Throttle({
      messagesPerHour: uplink.throttle.messagesPerHour,
      bytesPerHour: uplink.throttle.bytesPerHour,
      burstFraction: uplink.throttle.burstFraction,
    });
    return {
      session,
      throttle,
      url,
      publisher: new Publisher({
        session,
        queue: outbox,
        throttle,
        maxInflight: uplink.maxInflight,
        ...(uplink.maxPacketSize !== undefined ? { maxPacketSize: uplink.maxPacketSize } : {}),
      }),
      ...(broker ? { broker } : {}),
      ...(adaptive ? { heartbeat: adaptive.heartbeat } : {}),
      ...(adaptive?.memory ? { linkMemory: adaptive.memory } : {}),
    };
  } catch (err) {
    adaptive?.memory?.close();
    await broker?.close();
    throw err;
  }
}
