/**
 * The device's connection to the fleet broker: MQTT over mutual TLS, kept up until close().
 *
 * - TLS: the device's client certificate; the broker's certificate must chain to the one pinned CA (the system's
 *   roots are not trusted), TLS 1.2 or newer, the URL's host checked against the certificate's names.
 * - A persistent session (clean start off, session expiry from the config) under the device ID as client ID, so the
 *   broker keeps the commands queued while the car is out of coverage.
 * - Status: a retained birth message `{online: true, birthSeq, ts}` on `vehicles/<id>/status` after every connect,
 *   and the same topic as retained last will `{online: false, birthSeq, reason}`, so the backend always knows.
 *   birthSeq increases with every connection: the backend can tell a stale will from the current birth.
 * - Reconnects with exponential backoff and full jitter (a delay drawn between 0 and the capped exponential), so a
 *   fleet disconnected by a broker restart does not come back in lock-step. MQTT.js's own reconnect is off: every
 *   connection is a fresh client, so nothing is resent behind the publisher's back.
 *
 * The session knows nothing of the outbox: the publisher drains it through publish(), reading the broker's limits
 * (receive maximum, maximum packet size) from `limits`. The receive maximum is also enforced here, for every sender
 * together (src/uplink/publish-window.ts): QoS 1 publishes beyond it wait for a PUBACK, in order.
 */
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import mqtt, { type IClientOptions, type IConnackPacket, type IDisconnectPacket, type MqttClient } from 'mqtt';
import type { DeviceIdentity } from '../pki/identity.js';
import type { LinkHeartbeat } from './keepalive.js';
import { PublishWindow } from './publish-window.js';

export type SessionState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed';

/** What went wrong, for the health report and for tests: the message says it for a person. */
export type UplinkErrorKind =
  /** The agent refused the broker's certificate (wrong CA pinned, host not in its names, expired). */
  | 'broker-untrusted'
  /** The broker ended the TLS handshake: it does not accept the device's certificate. */
  | 'client-refused'
  /** No TCP connection (refused, unreachable, name not found). */
  | 'unreachable'
  /** No CONNACK in time. */
  | 'timeout'
  /** The broker answered CONNECT with a refusal (`code`: the reason code). */
  | 'refused'
  /** The broker ended the session with a DISCONNECT (`code`: the reason code). */
  | 'kicked'
  /** An established connection was lost. */
  | 'connection-lost'
  /** A heartbeat or liveness ping went unanswered: the agent gave up on the connection (see keepalive.ts). */
  | 'dead-link'
  /** The broker refused a publish (PUBACK with an error reason code, MQTT 5 only). */
  | 'publish-refused'
  /** publish() while not connected. */
  | 'not-connected'
  /** The certificate's CN is not the device ID. */
  | 'identity'
  /** The connection was ended to connect again with a new identity (certificate rotation). */
  | 'identity-changed'
  | 'closed';

export class UplinkError extends Error {
  constructor(
    readonly kind: UplinkErrorKind,
    message: string,
    /** The MQTT reason code, when the broker gave one. */
    readonly code?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UplinkError';
  }
}

export interface BrokerLimits {
  /** QoS 1 publishes the broker takes unacknowledged at once (CONNACK Receive Maximum; 65535 when not given). */
  receiveMaximum: number;
  /** Largest packet the broker accepts, in bytes (CONNACK Maximum Packet Size; the protocol's limit when not given). */
  maximumPacketSize: number;
  /** The broker still had this device's session (its subscriptions and queued commands). */
  sessionPresent: boolean;
}

/** The protocol's own limits, what applies under MQTT 3.1.1 or when the broker does not say. */
export const MQTT_MAX_RECEIVE = 65535;
export const MQTT_MAX_PACKET_SIZE = 268_435_460;

export interface MqttSessionOptions {
  /** `mqtts://host:port` (port 8883 by default); plain `mqtt://` is refused. */
  url: string;
  deviceId: string;
  identity: DeviceIdentity;
  /** 5 (MQTT 5, default) or 4 (MQTT 3.1.1). */
  protocol?: 5 | 4;
  /** How long the broker keeps the session (and queued commands) after the connection is lost. MQTT 5 only;
   * under 3.1.1 the broker's own setting applies. Default 7 days. */
  sessionExpiryS?: number;
  /** MQTT.js's fixed keepalive, without `heartbeat`. Default 60. */
  keepaliveS?: number;
  /** The adaptive heartbeat and liveness check (src/uplink/keepalive.ts): it sets the keepalive announced at CONNECT
   * and watches each connection; a dead link it detects is reconnected at once. */
  heartbeat?: LinkHeartbeat;
  /** How long to wait for the TLS handshake and CONNACK. Default 15000. */
  connectTimeoutMs?: number;
  /** Backoff between attempts: the nth failed attempt waits random·min(maxMs, initialMs·2^n). Default 1 s, 5 min. */
  reconnect?: { initialMs?: number; maxMs?: number };
  /** [0, 1): the jitter's source (tests inject a seeded one). */
  random?: () => number;
  /** The birth sequence of the next connection; must increase across connections (and, ideally, restarts: persist
   * it). Default: a counter starting at the current time in milliseconds, so it also increases across restarts
   * with a sane clock. */
  nextBirthSeq?: () => number;
  /** Whether the certificate's CN must be the device ID (default true): under MQTT 3.1.1 a broker silently drops
   * what its ACL refuses, so a mismatch would lose every message without a word. */
  requireCnMatch?: boolean;
}

export interface SessionStateChange {
  state: SessionState;
  /** Why the session is disconnected. */
  error?: UplinkError;
  /** When disconnected: the wait before the next attempt. */
  retryInMs?: number;
}

export interface SessionCounters {
  attempts: number;
  connections: number;
  losses: number;
  published: number;
  acknowledged: number;
  refused: number;
  commands: number;
}

/** The device's own topics under vehicles/<id>/ (`loss`: the loss notices, src/store/loss-notice.ts). */
export type DataTopic = 'telemetry' | 'events' | 'loss' | 'status' | 'health' | 'logs';

type StateListener = (change: SessionStateChange) => void;
/** MQTT 5 request/response properties of a command message (absent under 3.1.1). */
export interface CommandMessageProperties {
  responseTopic?: string;
  correlationData?: Buffer;
}
type CommandListener = (topic: string, payload: Buffer, properties: CommandMessageProperties) => void;
/** MQTT 5 properties a publish may carry (command results echo the request's correlation data). */
export interface PublishProperties {
  correlationData?: Buffer;
}
type ErrorListener = (error: UplinkError) => void;

/** Full jitter: a delay drawn uniformly in [0, min(maxMs, initialMs·2^attempt)). */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number): number {
  const cap = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * cap);
}

/** TLS verification failures of the broker's certificate (Node's and OpenSSL's codes). */
const BROKER_CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_CERT_ALTNAME_FORMAT',
]);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EADDRNOTAVAIL']);
/** TLS alerts a server sends when it does not accept the client's certificate. */
const CLIENT_CERT_ALERTS =
  /UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_REQUIRED|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|DECRYPT_ERROR/;

export class MqttSession {
  readonly deviceId: string;
  readonly protocol: 5 | 4;
  private readonly host: string;
  private readonly port: number;
  private identity: DeviceIdentity;
  private readonly sessionExpiryS: number;
  private readonly keepaliveS: number;
  private readonly connectTimeoutMs: number;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;
  private readonly nextBirthSeq: () => number;
  private readonly heartbeat: LinkHeartbeat | null;

  private currentState: SessionState = 'idle';
  private client: MqttClient | null = null;
  private brokerLimits: BrokerLimits | null = null;
  /** The QoS 1 publishes of the current connection against its receive maximum (null until its CONNACK). */
  private window: { client: MqttClient; slots: PublishWindow } | null = null;
  private currentBirthSeq: number | null = null;
  private error: UplinkError | null = null;
  /** Rejecters of the publishes awaiting their PUBACK on the current connection. */
  private readonly awaitingAck = new Set<(err: UplinkError) => void>();
  /** Ends the wait for a connection loss (or for the backoff) when close() is called. */
  private wake: (() => void) | null = null;
  private backoffTimer: ReturnType<typeof setTimeout> | null = null;
  /** Ends the connection attempt (or connection) in progress: close() must not leave its timer or socket behind. */
  private abortAttempt: ((error: UplinkError) => void) | null = null;
  private running = false;
  private readonly stateListeners = new Set<StateListener>();
  private readonly commandListeners = new Set<CommandListener>();
  /** Listeners of topics subscribed with watch(), by exact topic. */
  private readonly watchers = new Map<string, Set<(payload: Buffer) => void>>();
  /** Watches that ended while disconnected: the broker keeps their subscription (persistent session) until told. */
  private readonly staleWatches = new Set<string>();
  private readonly errorListeners = new Set<ErrorListener>();
  private readonly stats: SessionCounters = { attempts: 0, connections: 0, losses: 0, published: 0, acknowledged: 0, refused: 0, commands: 0 };

  constructor(options: MqttSessionOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new RangeError(`MqttSession: '${options.url}' is not a URL (mqtts://host:port)`);
    }
    if (url.protocol !== 'mqtts:') throw new RangeError(`MqttSession: the uplink needs TLS: mqtts://host:port, not ${url.protocol}//`);
    if (options.deviceId === '' || /[/+#\0]/.test(options.deviceId)) {
      throw new RangeError(`MqttSession: '${options.deviceId}' cannot be a device ID (it is a topic level)`);
    }
    if (options.requireCnMatch ?? true) checkCn(options.identity, options.deviceId);
    this.deviceId = options.deviceId;
    this.protocol = options.protocol ?? 5;
    this.host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = url.port === '' ? 8883 : Number(url.port);
    this.identity = options.identity;
    this.sessionExpiryS = nonNegative('sessionExpiryS', options.sessionExpiryS ?? 7 * 86_400);
    this.keepaliveS = nonNegative('keepaliveS', options.keepaliveS ?? 60);
    this.connectTimeoutMs = positive('connectTimeoutMs', options.connectTimeoutMs ?? 15_000);
    this.initialMs = positive('reconnect.initialMs', options.reconnect?.initialMs ?? 1000);
    this.maxMs = positive('reconnect.maxMs', options.reconnect?.maxMs ?? 300_000);
    this.random = options.random ?? Math.random;
    let last = 0;
    this.nextBirthSeq = options.nextBirthSeq ?? (() => (last = Math.max(last + 1, Date.now())));
    this.heartbeat = options.heartbeat ?? null;
  }

  get state(): SessionState {
    return this.currentState;
  }

  /** The broker's limits on the current connection; null when not connected. */
  get limits(): BrokerLimits | null {
    return this.brokerLimits;
  }

  /** The QoS 1 publishes of the current connection against the broker's receive maximum; null when not connected. */
  get publishWindow(): { limit: number; unacknowledged: number; queued: number; peak: number } | null {
    const slots = this.window?.slots;
    return slots ? { limit: slots.limit, unacknowledged: slots.unacknowledged, queued: slots.queued, peak: slots.peak } : null;
  }

  /** The birth sequence of the current (or last) connection. */
  get birthSeq(): number | null {
    return this.currentBirthSeq;
  }

  /** Why the last attempt failed or the last connection was lost. */
  get lastError(): UplinkError | null {
    return this.error;
  }

  get counters(): SessionCounters {
    return { ...this.stats };
  }

  topic(kind: DataTopic): string {
    return `vehicles/${this.deviceId}/${kind}`;
  }

  /** One level below `commands/`: a command's name. Its results (`commands/<id>/result`) are two levels down, so the
   * device never receives what it publishes there. */
  get commandFilter(): string {
    return `vehicles/${this.deviceId}/commands/+`;
  }

  onStateChange(listener: StateListener): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Messages on the device's command topics (handling them is the commands module's business). */
  onCommand(listener: CommandListener): () => void {
    this.commandListeners.add(listener);
    return () => this.commandListeners.delete(listener);
  }

  /** Problems that leave the connection up: the command subscription or the birth message refused. */
  onError(listener: ErrorListener): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /** Connects, and keeps connecting after every failure or loss, until close(). */
  start(): void {
    if (this.running || this.currentState === 'closed') return;
    this.running = true;
    void this.keepConnected();
  }

  /**
   * Publishes on the current connection. QoS 1 resolves on the broker's PUBACK and rejects with 'publish-refused'
   * (and the reason code) when the broker refuses it; with 'not-connected' or 'connection-lost' when there is no
   * connection to send it on or it was lost before the PUBACK (the caller sends it again after the reconnect).
   */
  publish(topic: string, payload: Uint8Array | string, options: { qos?: 0 | 1; retain?: boolean; properties?: PublishProperties } = {}): Promise<void> {
    const client = this.client;
    if (this.currentState !== 'connected' || !client) {
      return Promise.reject(new UplinkError('not-connected', `not connected to the broker (${this.currentState})`));
    }
    return this.send(client, topic, payload, options.qos ?? 1, options.retain ?? false, this.protocol === 5 ? options.properties : undefined);
  }

  /**
   * Cuts the network connection without an MQTT DISCONNECT, as a lost radio link would: the broker publishes the
   * will, and the session reconnects with backoff. For a watchdog that suspects a half-open connection, and tests.
   */
  severLink(): void {
    this.client?.stream?.destroy();
  }

  /** The identity the session connects with. */
  get currentIdentity(): DeviceIdentity {
    return this.identity;
  }

  /**
   * Ends the connection cleanly and connects again at once with `identity` (certificate rotation). Resolves once
   * connected with it; rejects with the reason when the first attempt with it fails (the caller decides whether to
   * go back to the previous identity: the session keeps trying with the new one until told otherwise).
   */
  async reconnectWith(identity: DeviceIdentity, timeoutMs = this.connectTimeoutMs + 5000): Promise<void> {
    checkCn(identity, this.deviceId);
    if (!this.running) throw new UplinkError('closed', 'the session is not running');
    this.identity = identity;
    let unsubscribe: () => void = () => undefined;
    let timer: NodeJS.Timeout | undefined;
    const outcome = new Promise<void>((resolve, reject) => {
      let ended = false;
      unsubscribe = this.onStateChange((change) => {
        if (change.state === 'connecting') ended = true;
        else if (change.state === 'connected' && ended) resolve();
        else if (change.state === 'disconnected' && ended && change.error && change.error.kind !== 'identity-changed') reject(change.error);
        else if (change.state === 'closed') reject(new UplinkError('closed', 'the session was closed'));
      });
      timer = setTimeout(() => reject(new UplinkError('timeout', `not connected with the new identity within ${timeoutMs} ms`)), timeoutMs);
    });
    // Ends the connection (or the attempt, or the wait between attempts) so the next attempt uses the new identity.
    const changed = new UplinkError('identity-changed', 'reconnecting with a new identity');
    if (this.abortAttempt) this.abortAttempt(changed);
    else this.wake?.();
    try {
      await outcome;
    } finally {
      clearTimeout(timer);
      unsubscribe();
    }
  }

  /**
   * Subscribes to `topic` (QoS 1) on the current connection; its messages go to `listener` until the returned
   * function is called, which unsubscribes. For short exchanges (a certificate signing request and its answer).
   */
  async watch(topic: string, listener: (payload: Buffer) => void): Promise<() => Promise<void>> {
    const client = this.client;
    if (this.currentState !== 'connected' || !client) throw new UplinkError('not-connected', `not connected to the broker (${this.currentState})`);
    let listeners = this.watchers.get(topic);
    if (!listeners) this.watchers.set(topic, (listeners = new Set()));
    this.staleWatches.delete(topic);
    listeners.add(listener);
    const stop = async (): Promise<void> => {
      listeners.delete(listener);
      if (listeners.size > 0) return;
      this.watchers.delete(topic);
      const current = this.currentState === 'connected' ? this.client : null;
      if (current) await current.unsubscribeAsync(topic).catch(() => this.staleWatches.add(topic));
      else this.staleWatches.add(topic);
    };
    try {
      const granted = await client.subscribeAsync(topic, { qos: 1 });
      const refused = granted.find((g) => g.qos >= 0x80);
      if (refused) throw new UplinkError('refused', `the broker refused the subscription to ${topic}`, refused.qos);
    } catch (err) {
      await stop();
      throw err instanceof UplinkError ? err : this.classify(err, true);
    }
    return stop;
  }

  /** Says offline (retained, as the will would), disconnects cleanly and stops reconnecting. */
  async close(): Promise<void> {
    if (this.currentState === 'closed') return;
    this.running = false;
    const client = this.client;
    if (client && this.currentState === 'connected') {
      const offline = JSON.stringify({ online: false, birthSeq: this.currentBirthSeq, ts: Date.now(), reason: 'shutdown' });
      await Promise.race([this.send(client, this.topic('status'), offline, 1, true).catch(() => undefined), sleep(2000)]);
    }
    this.client = null;
    const closed = new UplinkError('closed', 'the session was closed');
    this.dropPending(closed);
    // A clean DISCONNECT when connected (the broker then keeps the will to itself); then whatever is left of an
    // attempt still in progress is ended, its timer with it.
    if (client) await endClient(client, false);
    this.abortAttempt?.(closed);
    this.abortAttempt = null;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
    this.brokerLimits = null;
    this.window = null;
    this.setState({ state: 'closed' });
    this.wake?.();
  }

  // ---- connection ----

  private async keepConnected(): Promise<void> {
    let attempt = 0;
    while (this.running) {
      let error: UplinkError;
      try {
        const { lost } = await this.connectOnce();
        attempt = 0;
        error = await lost;
      } catch (err) {
        error = err instanceof UplinkError ? err : new UplinkError('connection-lost', errorText(err), undefined, { cause: err });
        if (this.running && error.kind !== 'identity-changed') this.heartbeat?.attemptFailed();
      }
      if (!this.running) return;
      this.error = error;
      // A dead link found by the heartbeat is this car's own matter (a NAT forgot it), not a broker outage that a
      // whole fleet would answer in lock-step: the first attempt goes at once.
      // A new identity is tried at once too.
      const retryInMs =
        (error.kind === 'dead-link' && attempt === 0) || error.kind === 'identity-changed' ? 0 : backoffDelay(attempt, this.initialMs, this.maxMs, this.random);
      attempt++;
      this.setState({ state: 'disconnected', error, retryInMs });
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.backoffTimer = setTimeout(resolve, retryInMs);
      });
      this.wake = null;
      this.backoffTimer = null;
    }
  }

  /**
   * One attempt: TLS, CONNECT/CONNACK, the command subscription, the birth message. Resolves once connected with a
   * promise of the connection's loss (and why), wrapped: a promise resolved with a promise would wait for the loss;
   * rejects with the reason the attempt failed.
   */
  private connectOnce(): Promise<{ lost: Promise<UplinkError> }> {
    this.stats.attempts++;
    this.setState({ state: 'connecting' });
    const birthSeq = this.nextBirthSeq();
    const options: IClientOptions & Pick<ConnectionOptions, 'minVersion'> = {
      protocol: 'mqtts',
      host: this.host,
      port: this.port,
      protocolVersion: this.protocol,
      clientId: this.deviceId,
      clean: false,
      keepalive: this.heartbeat?.connectKeepaliveS ?? this.keepaliveS,
      reconnectPeriod: 0,
      connectTimeout: this.connectTimeoutMs,
      resubscribe: false,
      queueQoSZero: false,
      // mqtt-packet's cache of every 16-bit number as a 2-byte Buffer (65,536 of them, about 6 MB of heap for the
      // life of the process) saves one 2-byte allocation per packet id or length written: not worth a car's memory.
      writeCache: false,
      will: {
        topic: this.topic('status'),
        payload: Buffer.from(JSON.stringify({ online: false, birthSeq, reason: 'connection lost' })),
        qos: 1,
        retain: true,
      },
      ca: this.identity.caPem,
      cert: this.identity.certPem,
      key: this.identity.keyPem,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      // SNI and the name check use the URL's host; an address is checked against the certificate's IP names.
      ...(isIP(this.host) === 0 ? { servername: this.host } : {}),
      ...(this.protocol === 5 ? { properties: { sessionExpiryInterval: this.sessionExpiryS } } : {}),
    };
    const client = mqtt.connect(options);
    this.client = client;
    return new Promise((resolveAttempt, rejectAttempt) => {
      let connected = false;
      let done = false;
      let reason: UplinkError | null = null;
      let resolveLoss: (error: UplinkError) => void = () => undefined;
      const lost = new Promise<UplinkError>((resolve) => (resolveLoss = resolve));
      const timer = setTimeout(
        () => finish(new UplinkError('timeout', `no answer from the broker at ${this.where} within ${this.connectTimeoutMs} ms`)),
        this.connectTimeoutMs,
      );
      const finish = (error: UplinkError): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (this.client === client) {
          this.client = null;
          this.brokerLimits = null;
          this.window = null;
        }
        this.dropPending(new UplinkError('connection-lost', `connection lost before the broker acknowledged: ${error.message}`));
        // A new identity: a clean DISCONNECT, so the broker does not publish the will for a moment's change.
        void endClient(client, error.kind !== 'identity-changed');
        if (this.abortAttempt === finish) this.abortAttempt = null;
        if (connected) {
          // close() ends the connection on purpose: not a loss.
          if (this.running) this.stats.losses++;
          resolveLoss(error);
        } else {
          rejectAttempt(error);
        }
      };
      this.abortAttempt = finish;
      client.on('error', (err) => {
        reason = this.classify(err, connected);
        // Refusals and TLS failures end the attempt at once; MQTT.js closes the stream after the others.
        if (!connected || reason.kind !== 'connection-lost') finish(reason);
      });
      client.on('disconnect', (packet: IDisconnectPacket) => {
        const code = packet.reasonCode ?? 0;
        reason = new UplinkError('kicked', `the broker ended the session: ${reasonName(code)} (0x${code.toString(16)})`, code);
      });
      client.on('close', () => {
        finish(
          reason ??
            (connected
              ? new UplinkError('connection-lost', `the connection to ${this.where} was lost`)
              : new UplinkError('unreachable', `the connection to ${this.where} closed before the broker answered`)),
        );
      });
      client.on('message', (topic, payload, packet) => {
        const watchers = this.watchers.get(topic);
        if (watchers) {
          for (const listener of watchers) listener(payload);
          return;
        }
        // MQTT.js sends the PUBACK of a QoS 1 message only after the 'message' listeners return, and the dispatcher
        // stores the command's ID and first result synchronously: a command is on disk before the broker may forget it.
        // Exactly one level below commands/: a session kept from an older agent may still hold `commands/#`.
        const prefix = `vehicles/${this.deviceId}/commands/`;
        if (!topic.startsWith(prefix) || topic.indexOf('/', prefix.length) >= 0) return;
        this.stats.commands++;
        const props = packet.properties;
        const properties: CommandMessageProperties = {
          ...(typeof props?.responseTopic === 'string' ? { responseTopic: props.responseTopic } : {}),
          ...(Buffer.isBuffer(props?.correlationData) ? { correlationData: props.correlationData } : {}),
        };
        for (const listener of this.commandListeners) listener(topic, payload, properties);
      });
      client.once('connect', (connack: IConnackPacket) => {
        // Small packets (PUBLISH, PUBACK, PINGREQ) must not wait for Nagle's algorithm behind a delayed ACK: with a
        // window of publishes in flight that costs 40 ms now and then, and a drain a third of its speed.
        (client.stream as { setNoDelay?: (noDelay: boolean) => unknown } | undefined)?.setNoDelay?.(true);
        void (async () => {
          const properties = connack.properties;
          this.brokerLimits = {
            receiveMaximum: properties?.receiveMaximum ?? MQTT_MAX_RECEIVE,
            maximumPacketSize: properties?.maximumPacketSize ?? MQTT_MAX_PACKET_SIZE,
            sessionPresent: connack.sessionPresent,
          };
          this.window = { client, slots: new PublishWindow(Math.max(1, Math.min(MQTT_MAX_RECEIVE, this.brokerLimits.receiveMaximum))) };
          try {
            // Subscribed again even when the broker kept the session: it may have expired it, or it is a new broker.
            for (const topic of [...this.staleWatches]) {
              if (this.watchers.has(topic)) continue; // watched again meanwhile
              await client.unsubscribeAsync(topic);
              this.staleWatches.delete(topic);
            }
            const granted = await client.subscribeAsync(this.commandFilter, { qos: 1 });
            const refusedQos = granted.find((g) => g.qos >= 0x80);
            if (refusedQos) this.report(new UplinkError('refused', `the broker refused the subscription to ${this.commandFilter}`, refusedQos.qos));
            const birth = JSON.stringify({ online: true, birthSeq, ts: Date.now() });
            await this.send(client, this.topic('status'), birth, 1, true).catch((err: unknown) => {
              if (err instanceof UplinkError && err.kind === 'publish-refused') this.report(err);
              else throw err;
            });
          } catch (err) {
            finish(err instanceof UplinkError ? err : this.classify(err, false));
            return;
          }
          if (done) return;
          clearTimeout(timer);
          this.heartbeat?.attach(client, properties?.serverKeepAlive, (why) => finish(new UplinkError('dead-link', why)));
          connected = true;
          this.currentBirthSeq = birthSeq;
          this.error = null;
          this.stats.connections++;
          this.setState({ state: 'connected' });
          resolveAttempt({ lost });
        })();
      });
    });
  }

  private send(client: MqttClient, topic: string, payload: Uint8Array | string, qos: 0 | 1, retain: boolean, properties?: PublishProperties): Promise<void> {
    const window = this.window;
    if (client !== this.client || !window || window.client !== client) {
      return Promise.reject(new UplinkError('not-connected', 'not connected to the broker'));
    }
    const data = typeof payload === 'string' ? Buffer.from(payload) : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let holdsSlot = false;
      const settle = (err: UplinkError | null): void => {
        if (settled) return;
        settled = true;
        this.awaitingAck.delete(fail);
        if (holdsSlot) window.slots.release();
        if (err) reject(err);
        else resolve();
      };
      const fail = (err: UplinkError): void => settle(err);
      this.awaitingAck.add(fail);
      const start = (): boolean => {
        // Lost while it waited for a slot: dropPending has rejected it already.
        if (settled) return false;
        holdsSlot = qos === 1;
        this.stats.published++;
        client.publish(topic, data, properties ? { qos, retain, properties } : { qos, retain }, (err) => {
          if (!err) {
            if (qos === 1) this.stats.acknowledged++;
            settle(null);
            return;
          }
          const code = (err as Error & { code?: unknown }).code;
          if (typeof code === 'number' && code >= 0x80) {
            this.stats.refused++;
            settle(new UplinkError('publish-refused', `the broker refused the publish to ${topic}: ${reasonName(code)} (0x${code.toString(16)})`, code));
          } else {
            settle(new UplinkError('connection-lost', `publish to ${topic} not acknowledged: ${err.message}`, undefined, { cause: err }));
          }
        });
        return true;
      };
      // QoS 0 has no acknowledgement to wait for and does not count against the receive maximum.
      if (qos === 1) window.slots.take(start);
      else start();
    });
  }

  private dropPending(error: UplinkError): void {
    for (const fail of [...this.awaitingAck]) fail(error);
  }

  private get where(): string {
    return `${this.host}:${this.port}`;
  }

  private classify(err: unknown, connected: boolean): UplinkError {
    const code = (err as { code?: unknown }).code;
    const text = errorText(err);
    if (typeof code === 'string' && BROKER_CERT_CODES.has(code)) {
      return new UplinkError(
        'broker-untrusted',
        `the broker's certificate at ${this.where} is not trusted: ${text} (${code}); it must chain to the pinned CA ${this.identity.files.caFile} and name ${this.host}`,
        undefined,
        { cause: err },
      );
    }
    if (text === 'connack timeout') {
      // MQTT.js's own CONNACK timer (same length as ours) can fire first.
      return new UplinkError('timeout', `no answer from the broker at ${this.where} within ${this.connectTimeoutMs} ms`, undefined, { cause: err });
    }
    if (text === 'TLS not authorized') {
      return new UplinkError('broker-untrusted', `the broker's certificate at ${this.where} is not trusted`, undefined, { cause: err });
    }
    if (typeof code === 'string' && code.startsWith('ERR_SSL_') && code.includes('ALERT')) {
      const alert = code
        .replace(/^ERR_SSL_(SSLV3|TLSV1|TLSV13)_ALERT_/, '')
        .toLowerCase()
        .replace(/_/g, ' ');
      const why = CLIENT_CERT_ALERTS.test(code) ? `: it does not accept the device certificate ${this.identity.files.certFile}` : '';
      return new UplinkError('client-refused', `the broker at ${this.where} ended the TLS handshake with '${alert}'${why}`, undefined, { cause: err });
    }
    if (typeof code === 'string' && NETWORK_CODES.has(code)) {
      return new UplinkError('unreachable', `cannot reach the broker at ${this.where}: ${code}`, undefined, { cause: err });
    }
    if (typeof code === 'number' && !connected) {
      const name = this.protocol === 5 ? reasonName(code) : (CONNACK_V4[code] ?? 'refused');
      return new UplinkError('refused', `the broker refused the connection: ${name} (${code})`, code, { cause: err });
    }
    return new UplinkError('connection-lost', `connection to ${this.where}: ${text}`, typeof code === 'number' ? code : undefined, { cause: err });
  }

  private report(error: UplinkError): void {
    for (const listener of this.errorListeners) listener(error);
  }

  private setState(change: SessionStateChange): void {
    this.currentState = change.state;
    for (const listener of this.stateListeners) listener(change);
  }
}

const CONNACK_V4: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

const REASONS: Record<number, string> = {
  0x80: 'unspecified error',
  0x81: 'malformed packet',
  0x82: 'protocol error',
  0x83: 'implementation specific error',
  0x84: 'unsupported protocol version',
  0x85: 'client identifier not valid',
  0x86: 'bad user name or password',
  0x87: 'not authorized',
  0x88: 'server unavailable',
  0x89: 'server busy',
  0x8a: 'banned',
  0x8b: 'server shutting down',
  0x8c: 'bad authentication method',
  0x8d: 'keep alive timeout',
  0x8e: 'session taken over',
  0x8f: 'topic filter invalid',
  0x90: 'topic name invalid',
  0x93: 'receive maximum exceeded',
  0x94: 'topic alias invalid',
  0x95: 'packet too large',
  0x96: 'message rate too high',
  0x97: 'quota exceeded',
  0x98: 'administrative action',
  0x99: 'payload format invalid',
  0x9c: 'use another server',
  0x9d: 'server moved',
  0x9f: 'connection rate exceeded',
};

export function reasonName(code: number): string {
  return REASONS[code] ?? (code === 0 ? 'normal disconnection' : 'reason code');
}

function checkCn(identity: DeviceIdentity, deviceId: string): void {
  if (identity.commonName === deviceId) return;
  throw new UplinkError(
    'identity',
    `the certificate ${identity.files.certFile} is for '${identity.commonName}', not for device '${deviceId}': ` +
      `the broker knows a device by its certificate's CN and would refuse (or, under MQTT 3.1.1, silently drop) its messages`,
  );
}

async function endClient(client: MqttClient, force: boolean): Promise<void> {
  // A late error from a client being dropped must not become an unhandled 'error' event.
  client.on('error', () => undefined);
  await Promise.race([client.endAsync(force).catch(() => undefined), sleep(1000)]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]!.trim() : String(err);
}

function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`MqttSession: ${name} must be a positive number, got ${value}`);
  return value;
}

function nonNegative(name: string, value: number): number {
  if (!(Number.isInteger(value) && value >= 0)) throw new RangeError(`MqttSession: ${name} must be a non-negative integer, got ${value}`);
  return value;
}
