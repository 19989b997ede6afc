/**
 * The adaptive keepalive of the MQTT session: heartbeat and liveness, two separate concerns on one connection.
 *
 * - Heartbeat: when the car has sent nothing for the learned interval (heartbeat.ts), it sends a PINGREQ, so the NATs
 *   on the path see the flow is in use. The answer, or its absence, is what the learner learns from.
 * - Liveness: every ping must be answered within a timeout derived from the measured round trips (liveness.ts), or
 *   the link is declared dead and the session reconnects at once. A ping is also sent when nothing has been received
 *   for the interval while the car was sending (PUBACKs stopped coming): a dead link is found within the interval
 *   plus the timeout either way.
 *
 * Telling the NAT's forgetting from a dead zone: after a heartbeat went unanswered the session reconnects at once. If
 * that succeeds the network works and the flow had been forgotten after that idle period (the learner is told); if it
 * fails the car lost coverage, which says nothing about the NAT.
 *
 * The layers' keepalives are aligned: the MQTT keepalive announced at CONNECT is the heartbeat ceiling (the broker
 * hears from the car at least that often), MQTT.js's own keepalive timer is stopped once connected (at the ceiling it
 * would race the heartbeat and judge the link by a fixed 1.5 × keepalive), and the socket's TCP keepalive idle time
 * is the heartbeat interval, counted by the kernel from the last packet received, which the heartbeat's answer always
 * is: it fires only if the heartbeat could not.
 */
import type { Socket } from 'node:net';
import type { MqttClient, Packet } from 'mqtt';
import { HeartbeatLearner, type HeartbeatMemory, type HeartbeatPhase, type HeartbeatSettings, type IntervalChange } from './heartbeat.js';
import type { KeepaliveConfig } from './config.js';
import { LinkMemory } from './link-memory.js';
import { RoundTrip } from './liveness.js';

/** What the session needs of a heartbeat (AdaptiveHeartbeat, or none: MQTT.js's fixed keepalive). */
export interface LinkHeartbeat {
  /** The MQTT keepalive to announce at CONNECT, seconds. */
  readonly connectKeepaliveS: number;
  /** Takes charge of a new connection until its client closes; `onDead` when a ping goes unanswered. */
  attach(client: MqttClient, serverKeepAliveS: number | undefined, onDead: (why: string) => void): void;
  /** A connection attempt failed. */
  attemptFailed(): void;
}

/** The network key used until the network is identified. */
export const UNIDENTIFIED_NETWORK = 'unidentified';

export interface AdaptiveHeartbeatOptions {
  settings: HeartbeatSettings;
  /** The liveness timeout's floor, seconds. */
  livenessMinS: number;
  /** Where each network's learned interval is kept; none: learning starts afresh every run. */
  memory?: LinkMemory | null;
  network?: string;
  /** Unix milliseconds, for the records (timers run on the monotonic clock). */
  clock?: () => number;
}

export interface DeadLinkDetection {
  at: number;
  network: string;
  /** Seconds the car had sent nothing before the ping. */
  idleS: number;
  /** A heartbeat (the car was idle for the interval), or a liveness ping (it was sending, nothing came back). */
  heartbeat: boolean;
  /** The liveness timeout that ran out, milliseconds. */
  timeoutMs: number;
  intervalS: number;
  /** Known once the reconnection was tried: the path forgot the flow, or the car lost coverage. */
  verdict: 'nat-expired' | 'coverage' | null;
}

export type HeartbeatEvent =
  | { type: 'heartbeat'; idleS: number; rttMs: number; intervalS: number; heartbeat: boolean }
  | { type: 'interval'; network: string; change: IntervalChange }
  | { type: 'dead-link'; detection: DeadLinkDetection }
  | { type: 'verdict'; detection: DeadLinkDetection }
  | { type: 'network'; network: string; intervalS: number; remembered: boolean };

export interface HeartbeatStatus {
  network: string;
  intervalS: number;
  phase: HeartbeatPhase;
  lastGoodS: number | null;
  knownBadS: number | null;
  ceilingS: number;
  livenessTimeoutMs: number;
  rttMs: number | null;
  /** Pings answered since start. */
  heartbeats: number;
  deadLinks: number;
  lastDeadLink: DeadLinkDetection | null;
  /** The latest interval changes on this network, oldest first. */
  history: IntervalChange[];
}

/** The most dead-link detections kept for the status. */
const DETECTIONS_KEPT = 10;

export class AdaptiveHeartbeat implements LinkHeartbeat {
  readonly connectKeepaliveS: number;
  private learner: HeartbeatLearner;
  private rtt = new RoundTrip();
  private currentNetwork: string;
  private persisted = '';
  private answered = 0;
  private readonly detections: DeadLinkDetection[] = [];
  private deadCount = 0;
  /** The detection awaiting the outcome of the reconnection. */
  private suspect: DeadLinkDetection | null = null;
  private detach: (() => void) | null = null;
  private applyInterval: (() => void) | null = null;
  private readonly listeners = new Set<(event: HeartbeatEvent) => void>();
  private readonly clock: () => number;

  constructor(private readonly options: AdaptiveHeartbeatOptions) {
    this.clock = options.clock ?? Date.now;
    // The broker may expect a packet within 1.5 × this: never before a heartbeat at the ceiling is due.
    this.connectKeepaliveS = Math.ceil(options.settings.maxIntervalS);
    this.currentNetwork = options.network ?? UNIDENTIFIED_NETWORK;
    this.learner = this.learnerFor(this.currentNetwork).learner;
    this.persisted = key(this.learner.snapshot());
  }

  get network(): string {
    return this.currentNetwork;
  }

  get intervalS(): number {
    return this.learner.intervalS;
  }

  onEvent(listener: (event: HeartbeatEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  status(): HeartbeatStatus {
    return {
      network: this.currentNetwork,
      intervalS: round3(this.learner.intervalS),
      phase: this.learner.phase,
      lastGoodS: nullableRound(this.learner.lastGoodS),
      knownBadS: nullableRound(this.learner.knownBadS),
      ceilingS: this.learner.ceilingS,
      livenessTimeoutMs: this.livenessTimeoutMs(),
      rttMs: nullableRound(this.rtt.smoothedMs),
      heartbeats: this.answered,
      deadLinks: this.deadCount,
      lastDeadLink: this.detections.at(-1) ?? null,
      history: [...this.learner.history],
    };
  }

  /** Recent dead-link detections, oldest first. */
  get deadLinks(): readonly DeadLinkDetection[] {
    return this.detections;
  }

  livenessTimeoutMs(): number {
    return this.rtt.timeoutMs(this.options.livenessMinS * 1000);
  }

  /**
   * The car moved to another network (interface, operator, SSID): what was learned here is kept, and the new network
   * starts from its own memory or from the safe default. Its round trips are measured anew.
   */
  setNetwork(network: string): void {
    if (network === this.currentNetwork) return;
    this.persist(true);
    this.currentNetwork = network;
    const { learner, remembered } = this.learnerFor(network);
    this.learner = learner;
    this.persisted = key(learner.snapshot());
    this.rtt = new RoundTrip();
    this.suspect = null;
    this.applyInterval?.();
    this.emit({ type: 'network', network, intervalS: round3(learner.intervalS), remembered });
  }

  attemptFailed(): void {
    const suspect = this.suspect;
    if (!suspect) return;
    this.suspect = null;
    suspect.verdict = 'coverage';
    this.emit({ type: 'verdict', detection: suspect });
  }

  attach(client: MqttClient, serverKeepAliveS: number | undefined, onDead: (why: string) => void): void {
    this.detach?.();
    const suspect = this.suspect;
    if (suspect) {
      // The reconnection succeeded straight away: the network works, the path had forgotten the flow.
      this.suspect = null;
      suspect.verdict = 'nat-expired';
      this.learn(() => this.learner.expired(suspect.idleS));
      this.emit({ type: 'verdict', detection: suspect });
    }
    this.learn(() => this.learner.setServerKeepAlive(serverKeepAliveS ?? null));

    const now = (): number => performance.now();
    let lastSent = now();
    let lastReceived = lastSent;
    let outstanding: { sentAt: number; idleS: number; heartbeat: boolean; timeoutMs: number } | null = null;
    let timer: NodeJS.Timeout | null = null;
    let attached = true;
    const socket = client.stream as Partial<Socket> | undefined;
    client.keepaliveManager?.destroy();
    const alignTcpKeepalive = (): void => {
      // TCP_KEEPIDLE in whole seconds; never below a second (0 would mean the system default).
      socket?.setKeepAlive?.(true, Math.max(1000, Math.round(this.learner.intervalS) * 1000));
    };
    const arm = (ms: number): void => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(tick, Math.max(0, ms));
    };
    const cleanup = (): void => {
      if (!attached) return;
      attached = false;
      if (timer) clearTimeout(timer);
      timer = null;
      client.removeListener('packetsend', onSend);
      client.removeListener('packetreceive', onReceive);
      client.removeListener('close', cleanup);
      if (this.detach === cleanup) {
        this.detach = null;
        this.applyInterval = null;
      }
    };
    const tick = (): void => {
      timer = null;
      if (!attached) return;
      if (outstanding) {
        const detection: DeadLinkDetection = {
          at: this.clock(),
          network: this.currentNetwork,
          idleS: round3(outstanding.idleS),
          heartbeat: outstanding.heartbeat,
          timeoutMs: outstanding.timeoutMs,
          intervalS: round3(this.learner.intervalS),
          verdict: null,
        };
        this.deadCount++;
        this.detections.push(detection);
        if (this.detections.length > DETECTIONS_KEPT) this.detections.shift();
        // Only a heartbeat after a full idle interval says something about the NAT.
        if (outstanding.heartbeat) this.suspect = detection;
        cleanup();
        this.emit({ type: 'dead-link', detection });
        const what = outstanding.heartbeat ? `a heartbeat after ${detection.idleS.toFixed(1)} s idle` : 'a liveness ping';
        onDead(`no answer to ${what} within ${outstanding.timeoutMs} ms: the link is dead`);
        return;
      }
      const intervalMs = this.learner.intervalS * 1000;
      const t = now();
      const due = Math.min(lastSent, lastReceived) + intervalMs;
      if (t < due) {
        arm(due - t);
        return;
      }
      if (!client.connected) return;
      const idleMs = t - lastSent;
      // Timers fire a little late, never early: a full interval since the last packet sent makes it a heartbeat.
      outstanding = { sentAt: t, idleS: idleMs / 1000, heartbeat: idleMs >= intervalMs - 1, timeoutMs: this.livenessTimeoutMs() };
      client.sendPing();
      arm(outstanding.timeoutMs);
    };
    const onSend = (): void => {
      lastSent = now();
    };
    const onReceive = (packet: Packet): void => {
      lastReceived = now();
      if (packet.cmd !== 'pingresp' || !outstanding) return;
      const ping = outstanding;
      outstanding = null;
      const rttMs = lastReceived - ping.sentAt;
      this.rtt.sample(rttMs);
      this.answered++;
      if (ping.heartbeat) {
        this.learn(() => this.learner.answered(ping.idleS));
        alignTcpKeepalive();
      }
      this.emit({ type: 'heartbeat', idleS: round3(ping.idleS), rttMs: round3(rttMs), intervalS: round3(this.learner.intervalS), heartbeat: ping.heartbeat });
      arm(this.learner.intervalS * 1000);
    };
    client.on('packetsend', onSend);
    client.on('packetreceive', onReceive);
    client.once('close', cleanup);
    this.detach = cleanup;
    this.applyInterval = () => {
      alignTcpKeepalive();
      if (!outstanding) arm(0);
    };
    alignTcpKeepalive();
    arm(this.learner.intervalS * 1000);
  }

  /** Runs a learner update, then reports and remembers what it changed. */
  private learn(update: () => void): void {
    const last = this.learner.history.at(-1);
    update();
    const history = this.learner.history;
    const fresh = last === undefined ? history : history.slice(history.indexOf(last) + 1);
    for (const change of fresh) this.emit({ type: 'interval', network: this.currentNetwork, change });
    if (fresh.length > 0) this.applyInterval?.();
    this.persist(false);
  }

  private persist(always: boolean): void {
    const memory = this.options.memory;
    if (!memory) return;
    const snapshot = this.learner.snapshot();
    const k = key(snapshot);
    // Only changes of what was learned are written: the hold's countdown alone does not wear the flash.
    if (!always && k === this.persisted) return;
    this.persisted = k;
    memory.remember(this.currentNetwork, snapshot, this.clock());
  }

  private learnerFor(network: string): { learner: HeartbeatLearner; remembered: boolean } {
    const remembered = this.options.memory?.recall(network);
    const learner = new HeartbeatLearner(this.options.settings, this.clock, remembered);
    // A remembered row the settings no longer allow is ignored by the learner.
    return { learner, remembered: learner.restored };
  }

  private emit(event: HeartbeatEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}

function key(m: HeartbeatMemory): string {
  return `${m.intervalS}|${m.lastGoodS}|${m.knownBadS}|${m.phase}`;
}

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

function nullableRound(value: number | null): number | null {
  return value === null ? null : round3(value);
}

/**
 * The adaptive heartbeat a device config asks for (`uplink.keepalive`), with its per-network memory opened; null
 * when `adaptive` is off. A memory file that cannot be opened at all is reported, and the heartbeat learns without it.
 * `onProblem` hears of the memory's trouble (LinkMemory's), all of it worked around: warnings.
 */
export function openAdaptiveHeartbeat(
  config: KeepaliveConfig,
  defaultMemoryPath: string,
  onProblem: (message: string) => void,
  network?: string,
): { heartbeat: AdaptiveHeartbeat; memory: LinkMemory | null } | null {
  if (!config.adaptive) return null;
  let memory: LinkMemory | null = null;
  const file = config.memoryPath ?? defaultMemoryPath;
  try {
    memory = LinkMemory.open(file, onProblem);
  } catch (err) {
    // The message names the config key and the file (src/store/state-database.ts).
    onProblem(`link memory: ${(err as Error).message}; the heartbeat learns without remembering`);
  }
  const heartbeat = new AdaptiveHeartbeat({
    settings: {
      minIntervalS: config.minIntervalS,
      maxIntervalS: config.maxIntervalS,
      initialIntervalS: config.initialIntervalS,
      stepFactor: config.stepFactor,
      marginFraction: config.marginFraction,
      holdCycles: config.holdCycles,
      settledCycles: config.settledCycles,
    },
    livenessMinS: config.livenessMinS,
    memory,
    ...(network !== undefined ? { network } : {}),
  });
  return { heartbeat, memory };
}

/** `heartbeat 42 s (learning), 2 dead links` for the status line. */
export function heartbeatText(status: HeartbeatStatus): string {
  const phase = status.phase === 'settled' ? '' : status.phase === 'probe' ? ' (learning)' : ' (holding)';
  const interval = status.intervalS >= 10 ? status.intervalS.toFixed(0) : status.intervalS.toFixed(1);
  const dead = status.deadLinks === 0 ? '' : `, ${status.deadLinks} dead link${status.deadLinks === 1 ? '' : 's'}`;
  return `heartbeat ${interval} s${phase}${dead}`;
}
