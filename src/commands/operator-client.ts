/**
 * The fleet-operations side of commands: signs a command, publishes it over MQTT 5 with a response topic and
 * correlation data, and follows its results until the final one. Used by `telematics-ops send`, the tests and the
 * benchmark.
 *
 * The response topic is `vehicles/<deviceId>/results/<token>` (the token is this client's), which the car accepts as
 * its own (docs/commands.md); the client also listens on `vehicles/<deviceId>/commands/+/result`, where a car under
 * MQTT 3.1.1 answers. Results are matched by correlation data, else by command ID.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { signCommand, type CommandRequest, type Signer } from './envelope.js';
import { FINAL_STATUSES, type CommandResult } from './result.js';

export interface OperatorConnection {
  /** mqtts://host:port */
  url: string;
  certFile: string;
  keyFile: string;
  caFile: string;
  connectTimeoutMs?: number;
  /**
   * MQTT version. Default: 5 (results on this client's response topic, matched by correlation data), falling back
   * to 3.1.1 when the broker refuses 5 (results on each command's default result topic).
   */
  protocol?: 5 | 4;
}

export interface SendOptions {
  /** Follow the lifecycle to the final result (default); false: resolve once the broker has the command. */
  wait?: boolean;
  /** How long to wait for the final result. Default 60 s. */
  timeoutMs?: number;
  /** Each result as it arrives. */
  onResult?: (result: CommandResult) => void;
  /** Once the broker has the command (its PUBACK). */
  onPublished?: () => void;
  /** Publish to this topic level instead of the command's name (tests of a mismatched topic). */
  topicName?: string;
  /** Fields that override the signed envelope's (tests of malformed envelopes). */
  envelope?: Record<string, unknown>;
}

export interface CommandOutcome {
  id: string;
  /** The final result, or undefined when none came in time (or wait was false). */
  final: CommandResult | undefined;
  results: CommandResult[];
}

interface Pending {
  id: string;
  results: CommandResult[];
  /** Outbox sequence numbers seen: results are sent at least once, and a copy after a reconnection is dropped. */
  seqs: Set<number>;
  accepted: boolean;
  onResult?: (result: CommandResult) => void;
  done: (final: CommandResult | undefined) => void;
}

/**
 * A backend connection to the broker (mutual TLS, a client ID no car can have), MQTT 5 unless `protocol` says 4, falling
 * back to 3.1.1 when the broker refuses 5; `client.options.protocolVersion` says which it got. Rejects with the
 * broker's or the socket's error. Also `telematics-ops watch`'s connection.
 */
export async function connectBackend(connection: OperatorConnection): Promise<MqttClient> {
  try {
    return await connectWith(connection, connection.protocol ?? 5);
  } catch (err) {
    // The development broker (aedes) speaks 3.1.1 only and answers a v5 CONNECT with this.
    if (connection.protocol !== undefined || !/unacceptable protocol version/i.test((err as Error).message)) throw err;
    return connectWith(connection, 4);
  }
}

async function connectWith(connection: OperatorConnection, protocolVersion: 5 | 4): Promise<MqttClient> {
  const client = mqtt.connect(connection.url, {
    protocolVersion,
    // Never a device ID ('/' is not allowed in one): the operator can never take over a car's session, nor a car its.
    clientId: `backend/ops-${randomBytes(6).toString('hex')}`,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: connection.connectTimeoutMs ?? 10_000,
    ca: readFileSync(connection.caFile),
    cert: readFileSync(connection.certFile),
    key: readFileSync(connection.keyFile),
    rejectUnauthorized: true,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
    client.once('close', () => reject(new Error(`the connection to ${connection.url} closed`)));
  });
  client.on('error', () => undefined);
  // A command is one small packet: Nagle would hold it back until the broker's delayed ACK (40 ms on Linux).
  (client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true);
  return client;
}

export class OperatorClient {
  private readonly token = randomBytes(6).toString('hex');
  private readonly pending = new Map<string, Pending>();
  private readonly subscribed = new Set<string>();

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => this.onMessage(payload, packet.properties?.correlationData));
  }

  static async connect(connection: OperatorConnection): Promise<OperatorClient> {
    return new OperatorClient(await connectBackend(connection));
  }

  /** The response topic this client asks `deviceId` to answer on. */
  responseTopic(deviceId: string): string {
    return `vehicles/${deviceId}/results/${this.token}`;
  }

  private async follow(deviceId: string): Promise<void> {
    if (this.subscribed.has(deviceId)) return;
    const granted = await this.client.subscribeAsync([this.responseTopic(deviceId), `vehicles/${deviceId}/commands/+/result`], { qos: 1 });
    const refused = granted.find((g) => g.qos >= 0x80);
    if (refused) throw new Error(`the broker does not let this identity read ${refused.topic} (reason 0x${refused.qos.toString(16)})`);
    this.subscribed.add(deviceId);
  }

  /** Signs and publishes `request`; resolves with the final result (or none within the timeout). */
  async send(request: CommandRequest, signer: Signer, options: SendOptions = {}): Promise<CommandOutcome> {
    await this.follow(request.deviceId);
    const { envelope, payload } = signCommand(request, signer, options.envelope ? { envelope: options.envelope } : {});
    return this.publishPayload(request.deviceId, options.topicName ?? request.name, payload, envelope.id, options);
  }

  /** Publishes a payload as it is (tests: unsigned, tampered, oversize...) and follows the results for `id`. */
  async publishPayload(deviceId: string, topicName: string, payload: string | Buffer, id: string, options: SendOptions = {}): Promise<CommandOutcome> {
    await this.follow(deviceId);
    return this.track(id, options, async () => {
      await this.client.publishAsync(`vehicles/${deviceId}/commands/${topicName}`, payload, {
        qos: 1,
        properties: {
          responseTopic: this.responseTopic(deviceId),
          correlationData: Buffer.from(id, 'utf8'),
        },
      });
    });
  }

  /**
   * Follows the results of command `id`, sent earlier (by this tool in another process, or by another tool), without
   * publishing anything: on every response topic of the car (`vehicles/<deviceId>/results/+`, where the sender asked
   * for them) and its default result topic. Results published before this subscribed are not seen (the broker keeps
   * no copy of them for a new subscriber).
   */
  async awaitResults(
    deviceId: string,
    id: string,
    options: Pick<SendOptions, 'timeoutMs' | 'onResult'> & { /** Once subscribed: results from here on are seen. */ onListening?: () => void } = {},
  ): Promise<CommandOutcome> {
    const topics = [`vehicles/${deviceId}/results/+`, `vehicles/${deviceId}/commands/${id}/result`];
    const granted = await this.client.subscribeAsync(topics, { qos: 1 });
    const refused = granted.find((g) => g.qos >= 0x80);
    if (refused) throw new Error(`the broker does not let this identity read ${refused.topic} (reason 0x${refused.qos.toString(16)})`);
    const { onListening, ...rest } = options;
    return this.track(id, { ...rest, wait: true, ...(onListening ? { onPublished: onListening } : {}) }, () => Promise.resolve());
  }

  /** Registers `id` as pending, runs `publish`, then waits (unless `wait` is false) for its final result. */
  private async track(id: string, options: SendOptions, publish: () => Promise<void>): Promise<CommandOutcome> {
    const results: CommandResult[] = [];
    let resolveFinal: (final: CommandResult | undefined) => void = () => undefined;
    const finalPromise = new Promise<CommandResult | undefined>((resolve) => (resolveFinal = resolve));
    const entry: Pending = { id, results, seqs: new Set(), accepted: false, done: resolveFinal, ...(options.onResult ? { onResult: options.onResult } : {}) };
    this.pending.set(id, entry);
    try {
      await publish();
      options.onPublished?.();
      if (options.wait === false) return { id, final: undefined, results };
      const timeoutMs = options.timeoutMs ?? 60_000;
      let timer: NodeJS.Timeout | undefined;
      const final = await Promise.race([finalPromise, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)))]);
      clearTimeout(timer);
      return { id, final, results };
    } finally {
      this.pending.delete(id);
    }
  }

  private onMessage(payload: Buffer, correlation: Buffer | undefined): void {
    let result: CommandResult;
    try {
      result = JSON.parse(payload.toString('utf8')) as CommandResult;
    } catch {
      return;
    }
    // Whatever a car (or whoever holds its certificate) publishes: only an object with a status is a result.
    if (typeof result !== 'object' || result === null || typeof result.status !== 'string') return;
    const key = correlation !== undefined ? correlation.toString('utf8') : result.id;
    const entry = key === null ? undefined : this.pending.get(key);
    if (!entry || (result.id !== null && result.id !== entry.id)) return;
    // A QoS 1 redelivery of the command after it was taken is refused as a replay: not this command's outcome.
    if (entry.accepted && result.status === 'REJECTED' && result.reason === 'replayed') return;
    if (typeof result.seq === 'number') {
      if (entry.seqs.has(result.seq)) return;
      entry.seqs.add(result.seq);
    }
    if (result.status === 'ACCEPTED') entry.accepted = true;
    entry.results.push(result);
    entry.onResult?.(result);
    if (FINAL_STATUSES.has(result.status)) entry.done(result);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true).catch(() => undefined);
  }
}
