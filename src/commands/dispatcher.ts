/**
 * Receives the messages on `vehicles/<deviceId>/commands/+`, decides whether each may run, runs it, and reports its
 * lifecycle on the result topic (docs/commands.md).
 *
 * Checks, in order, each failure a REJECTED result with its reason: size (oversize, before anything is parsed);
 * the wire format and the envelope's schema (malformed); the signature and the signer's chain to the pinned command
 * CA (no-signature, bad-signature, untrusted-signer); the device (wrong-device); the topic naming the same command
 * (malformed); the time (expired, not-yet-valid); the command (unknown-command) and its parameters (bad-params);
 * the ID (replayed: recorded before anything runs; disk-full or storage-error when it cannot be recorded); the
 * precondition on live signals (precondition-failed, with the values and the age of stale ones); the concurrency
 * limit (busy). Then ACCEPTED and IN_PROGRESS, and one of SUCCEEDED, FAILED or TIMED_OUT. Anything else that fails
 * while a command is checked is the agent's own fault: internal-error, never blamed on the payload.
 *
 * Where results go: MQTT 5's response topic and correlation data are honoured when the response topic is under the
 * device's own tree (`vehicles/<deviceId>/results/...`, or its default result topic): a message cannot make the car
 * publish anywhere else. Otherwise, and under MQTT 3.1.1, `vehicles/<deviceId>/commands/<id>/result`. Correlation
 * data longer than MAX_CORRELATION_BYTES is not echoed (nor stored): results carry the command ID to match by.
 *
 * Which results are stored: those of signed commands go through the outbox at priority 7, so they survive a lost
 * connection and a restart. Rejections of payloads that are not (validly) signed are sent at once, QoS 1, and never
 * stored: anyone with write access to the command topic could otherwise fill the car's outbox and evict its
 * telemetry. Those answers go over the uplink outside its data budget, so they are limited too: at most
 * UNSIGNED_ANSWERS_PER_MINUTE (a token bucket); the rest are counted (`unsignedNotAnswered`) and said once. A payload
 * with neither a readable ID nor a usable response topic cannot be answered: it is counted (`unanswerable`), and said
 * once per reason.
 */
import { createHash } from 'node:crypto';
import { ExpressionError } from '../collect/expression.js';
import type { ComponentLog } from '../health/log.js';
import type { CommandsConfig } from './config.js';
import { COMMAND_ID_PATTERN, MalformedCommand, parseCommand, type CommandEnvelope, type ParsedCommand } from './envelope.js';
import { CommandFailure, type CommandContext, type CommandHandler, type CommandRun } from './handler.js';
import { describeFailure, Precondition, SignalFreshness } from './precondition.js';
import type { InterruptedCommand, ReplayGuard } from './replay-guard.js';
import { TIMEOUT_REASON, type CommandResult, type CommandStatus, type RejectReason } from './result.js';
import { VerifyFailure, type CommandVerifier } from './verifier.js';

/** MQTT 5 properties of a command message that matter here. */
export interface CommandProperties {
  responseTopic?: string;
  correlationData?: Buffer;
}

/** Where one command's results go. */
export interface ResultRoute {
  topic: string;
  /** MQTT 5 correlation data to echo (ignored under 3.1.1). */
  correlation?: Buffer;
}

/** How results leave the car (the data path implements it with the outbox and the session). */
export interface ResultSink {
  /** Durably: committed to the outbox (priority 7), published when connected. False if the outbox refused them. */
  store(route: ResultRoute, results: readonly ((seq: number) => Uint8Array)[]): boolean;
  /** At once, QoS 1, not stored: for rejections of payloads that are not validly signed. */
  send(route: ResultRoute, payload: Uint8Array): Promise<void>;
}

export interface DispatcherOptions {
  deviceId: string;
  config: CommandsConfig;
  handlers: readonly CommandHandler[];
  context: CommandContext;
  verifier: CommandVerifier;
  replay: ReplayGuard;
  sink: ResultSink;
  now?: () => number;
  /**
   * One line per notable event, at its level: info for a command accepted or succeeded; warn for one that failed,
   * timed out or was rejected, and for each kind of unanswerable or unsigned payload (said once); error for a result
   * that could not be stored.
   */
  log?: DispatcherLog;
}

export interface DispatcherStats {
  received: number;
  accepted: number;
  succeeded: number;
  failed: number;
  timedOut: number;
  /** REJECTED results by reason. */
  rejected: Partial<Record<RejectReason, number>>;
  /** Payloads with no ID and no usable response topic: nobody to answer. */
  unanswerable: number;
  /** Payloads not validly signed whose rejection was not sent: beyond UNSIGNED_ANSWERS_PER_MINUTE. */
  unsignedNotAnswered: number;
  /** Results that could not be stored or sent. */
  lostResults: number;
  running: number;
}

/** What the dispatcher logs through (the agent's `commands` component). */
export type DispatcherLog = Pick<ComponentLog, 'info' | 'warn' | 'error'>;

const NO_LOG: DispatcherLog = { info: () => undefined, warn: () => undefined, error: () => undefined };

const REJECTIONS_LOGGED_PER_MINUTE = 20;

/** Answers to payloads that are not validly signed, per minute (and at most this many at once). */
export const UNSIGNED_ANSWERS_PER_MINUTE = 30;

/** Correlation data echoed on results (and stored with them in the outbox) at most; longer is not echoed. */
export const MAX_CORRELATION_BYTES = 256;

class Rejection extends Error {
  constructor(
    readonly reason: RejectReason,
    message: string,
    readonly detail?: unknown,
  ) {
    super(message);
  }
}

interface Running {
  id: string;
  name: string;
  abort: AbortController;
  settle: (status: CommandStatus, reason: string | undefined, message: string | undefined, detail: unknown) => void;
}

export class CommandDispatcher {
  private readonly deviceId: string;
  private readonly config: CommandsConfig;
  private readonly handlers = new Map<string, CommandHandler>();
  private readonly preconditions = new Map<string, { precondition: Precondition; maxAgeMs: number | undefined }>();
  private readonly freshness: SignalFreshness;
  private readonly now: () => number;
  private readonly log: DispatcherLog;
  private readonly running = new Map<string, Running>();
  private readonly saidUnanswerable = new Set<string>();
  private readonly saidUnsigned = new Set<string>();
  /** Rejections of signed commands are logged one by one, up to a budget per minute (a replayed command in a loop
   * must not flood the log); the rest are counted and summed up in the next line. */
  private rejectLog = { windowStart: 0, lines: 0, suppressed: 0 };
  private closed = false;
  private readonly counts: Omit<DispatcherStats, 'running' | 'rejected'> = {
    received: 0,
    accepted: 0,
    succeeded: 0,
    failed: 0,
    timedOut: 0,
    unanswerable: 0,
    unsignedNotAnswered: 0,
    lostResults: 0,
  };
  /** The token bucket of answers to payloads that are not validly signed. */
  private unsignedAnswers: { tokens: number; at: number };
  private readonly rejected: Partial<Record<RejectReason, number>> = {};

  constructor(private readonly options: DispatcherOptions) {
    this.deviceId = options.deviceId;
    this.config = options.config;
    this.now = options.now ?? Date.now;
    this.unsignedAnswers = { tokens: UNSIGNED_ANSWERS_PER_MINUTE, at: this.now() };
    this.log = options.log ?? NO_LOG;
    for (const handler of options.handlers) {
      if (this.handlers.has(handler.name)) throw new Error(`commands: two handlers are named '${handler.name}'`);
      this.handlers.set(handler.name, handler);
    }
    const { context } = options;
    this.freshness = new SignalFreshness(options.config.freshness, (signal) => context.signalTiming(signal));
    for (const [name, entry] of Object.entries(options.config.preconditions)) {
      if (!this.handlers.has(name))
        throw new Error(`commands.preconditions.${name}: there is no command '${name}' (commands: ${[...this.handlers.keys()].join(', ')})`);
      const source = typeof entry === 'string' ? entry : entry.condition;
      try {
        const precondition = Precondition.forSignals(source, (signal) => context.describeSignal(signal));
        this.preconditions.set(name, { precondition, maxAgeMs: typeof entry === 'string' ? undefined : entry.maxAgeMs });
      } catch (err) {
        if (err instanceof ExpressionError)
          throw new Error(`commands.preconditions.${name}${typeof entry === 'string' ? '' : '.condition'}: ${err.message}: ${source}`);
        throw err;
      }
    }
  }

  get stats(): DispatcherStats {
    return { ...this.counts, rejected: { ...this.rejected }, running: this.running.size };
  }

  /** The command names this agent knows. */
  get commands(): string[] {
    return [...this.handlers.keys()];
  }

  /** The session's command listener. Never throws: whatever the payload, the agent carries on. */
  handle(topic: string, payload: Buffer, properties: CommandProperties = {}): void {
    this.counts.received++;
    let id: string | undefined;
    /** The command's name, once the envelope is known to be signed: its rejections say which command they refuse. */
    let name: string | undefined;
    let authentic = false;
    /** The ID is fresh and now remembered: from here a rejection is stored (durable), before it only sent. */
    const remembered = { value: false };
    try {
      if (this.closed) throw new Rejection('shutting-down', 'the agent is shutting down');
      if (payload.length > this.config.maxPayloadBytes) {
        throw new Rejection('oversize', `the payload is ${payload.length} bytes, more than the ${this.config.maxPayloadBytes} allowed`);
      }
      let parsed: ParsedCommand;
      try {
        parsed = parseCommand(payload);
      } catch (err) {
        if (err instanceof MalformedCommand) {
          id = err.id;
          throw new Rejection('malformed', err.message, err.detail === undefined ? undefined : { issues: issuesOf(err.detail) });
        }
        throw err;
      }
      const envelope = parsed.envelope;
      id = envelope.id;
      let signer: string;
      try {
        signer = this.options.verifier.verify(parsed).subject;
      } catch (err) {
        if (err instanceof VerifyFailure) throw new Rejection(err.reason, err.message);
        throw err;
      }
      authentic = true;
      name = envelope.name;
      this.check(topic, envelope, parsed, signer, properties, remembered);
    } catch (err) {
      // Not a Rejection: a failure of the agent's own, not of the payload.
      const rejection =
        err instanceof Rejection
          ? err
          : new Rejection('internal-error', `the agent failed while checking the command: ${(err as Error)?.message ?? String(err)}`);
      this.reject(id, name, rejection, properties, authentic, remembered.value);
    }
  }

  /** The checks after the signature, then the start. Throws Rejection. */
  private check(
    topic: string,
    envelope: CommandEnvelope,
    parsed: ParsedCommand,
    signer: string,
    properties: CommandProperties,
    remembered: { value: boolean },
  ): void {
    if (envelope.deviceId !== this.deviceId) {
      throw new Rejection('wrong-device', `the command was signed for device '${envelope.deviceId}', this is '${this.deviceId}'`);
    }
    const level = topic.slice(topic.lastIndexOf('/') + 1);
    if (level !== envelope.name) throw new Rejection('malformed', `the topic names command '${level}', the signed envelope '${envelope.name}'`);
    const now = this.now();
    const skewMs = this.config.clockSkewS * 1000;
    const validUntil = Math.min(envelope.expiresAt ?? Infinity, envelope.issuedAt + this.config.maxLifetimeS * 1000);
    if (envelope.issuedAt > now + skewMs) {
      throw new Rejection(
        'not-yet-valid',
        `issued at ${iso(envelope.issuedAt)}, ${Math.round((envelope.issuedAt - now) / 1000)} s ahead of the car's clock (${this.config.clockSkewS} s allowed)`,
        { issuedAt: envelope.issuedAt, deviceTime: now },
      );
    }
    if (now > validUntil) {
      const why =
        envelope.expiresAt !== undefined && envelope.expiresAt === validUntil
          ? `expired at ${iso(validUntil)}`
          : `issued more than ${this.config.maxLifetimeS} s ago`;
      throw new Rejection('expired', why, { issuedAt: envelope.issuedAt, expiresAt: envelope.expiresAt ?? null, deviceTime: now });
    }
    // Recorded before anything may run, and kept until the command could no longer be valid anyway. Before the other
    // checks: a replayed copy of any signed command, even one refused for its name or parameters, is a 'replayed'
    // answered once and never stored, so replaying captured commands cannot fill the outbox.
    const digest = createHash('sha256').update(parsed.envelopeBytes).digest('hex');
    let verdict: ReturnType<ReplayGuard['remember']>;
    try {
      verdict = this.options.replay.remember(envelope.id, digest, envelope.issuedAt, validUntil + skewMs);
    } catch (err) {
      // Unrecorded, it must not run (a replay could not be told): refused, saying what happened to the storage.
      const reason = storageFailure(err);
      throw new Rejection(
        reason,
        `the command's ID could not be recorded in the replay memory${reason === 'disk-full' ? ' (the disk is full)' : ''}: ${(err as Error).message}`,
      );
    }
    if (!verdict.fresh) throw new Rejection('replayed', verdict.message, { why: verdict.why });
    remembered.value = true;
    const handler = this.handlers.get(envelope.name);
    if (!handler) throw new Rejection('unknown-command', `no command '${envelope.name}' (commands: ${this.commands.join(', ')})`);
    const params = handler.params.safeParse(envelope.params ?? {});
    if (!params.success)
      throw new Rejection('bad-params', `the parameters of ${envelope.name} do not fit its schema`, { issues: issuesOf(params.error.issues) });
    const guard = this.preconditions.get(envelope.name);
    if (guard) {
      const outcome = guard.precondition.evaluate((name) => this.options.context.readSignal(name), this.freshness.at(this.now(), guard.maxAgeMs));
      if (!outcome.ok) {
        throw new Rejection('precondition-failed', `precondition of ${envelope.name} not met: ${outcome.failed.map(describeFailure).join('; ')}`, outcome);
      }
    }
    if (this.running.size >= this.config.maxConcurrent) {
      throw new Rejection('busy', `${this.running.size} commands are running (at most ${this.config.maxConcurrent})`, {
        running: [...this.running.values()].map((r) => ({ id: r.id, name: r.name })),
      });
    }
    const requested = envelope.timeoutMs ?? this.config.defaultTimeoutMs ?? handler.defaultTimeoutMs;
    this.start(envelope, handler, params.data, Math.min(requested, this.config.maxTimeoutMs), signer, properties);
  }

  private start(envelope: CommandEnvelope, handler: CommandHandler, params: unknown, timeoutMs: number, signer: string, properties: CommandProperties): void {
    const { id, name } = envelope;
    const route = this.route(id, properties)!;
    const abort = new AbortController();
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const settle: Running['settle'] = (status, reason, message, detail) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.running.delete(id);
      if (status === 'SUCCEEDED') this.counts.succeeded++;
      else if (status === 'TIMED_OUT') this.counts.timedOut++;
      else this.counts.failed++;
      if (status !== 'SUCCEEDED') abort.abort(new Error(message ?? status));
      // Cleared once the result is stored: a crash in between reports it once more as interrupted, never not at all;
      // a result that could not be stored (a full disk) leaves it to be reported interrupted at the next start.
      if (this.store(route, [this.result(id, name, status, reason, message, detail)])) this.journal(() => this.options.replay.finished(id));
      const line = `command ${id} (${name}): ${status}${reason ? ` (${reason}${message ? `: ${message}` : ''})` : ''}`;
      if (status === 'SUCCEEDED') this.log.info(line);
      else this.log.warn(line);
    };
    this.journal(() => this.options.replay.started(id, name, route));
    this.running.set(id, { id, name, abort, settle });
    this.counts.accepted++;
    this.log.info(`command ${id} (${name}) from ${signer}: ACCEPTED`);
    // ACCEPTED and the first IN_PROGRESS in one outbox transaction.
    this.store(route, [
      this.result(id, name, 'ACCEPTED', undefined, undefined, { timeoutMs }),
      this.result(id, name, 'IN_PROGRESS', undefined, undefined, undefined),
    ]);
    timer = setTimeout(() => settle('TIMED_OUT', TIMEOUT_REASON, `no result within ${timeoutMs} ms`, { timeoutMs }), timeoutMs);
    const run: CommandRun = {
      id,
      signal: abort.signal,
      progress: (detail) => {
        if (!settled) this.store(route, [this.result(id, name, 'IN_PROGRESS', undefined, undefined, detail)]);
      },
    };
    void (async () => {
      try {
        const detail = await handler.run(params, this.options.context, run);
        let json: string | undefined;
        try {
          json = JSON.stringify(detail);
        } catch (err) {
          settle('FAILED', 'bad-result', `the result could not be written as JSON: ${(err as Error).message}`, undefined);
          return;
        }
        settle('SUCCEEDED', undefined, undefined, json === undefined ? undefined : JSON.parse(json));
      } catch (err) {
        if (err instanceof CommandFailure) settle('FAILED', err.reason, err.message, err.detail);
        else if (abort.signal.aborted) settle('FAILED', 'aborted', 'the command was aborted', undefined);
        else settle('FAILED', 'handler-error', (err as Error)?.message ?? String(err), undefined);
      }
    })();
  }

  /**
   * Reports FAILED ('interrupted') for each command that was running when the agent last died (a crash, a power
   * cut): its result goes to the route it had. Called once, as the dispatcher starts.
   */
  reportInterrupted(): number {
    let entries: InterruptedCommand[] = [];
    this.journal(() => (entries = this.options.replay.interrupted()));
    for (const entry of entries) {
      this.counts.failed++;
      const message = `the agent stopped (a crash or a power cut) while the command ran; it was started at ${iso(entry.startedAt)}`;
      const route: ResultRoute = entry.correlation ? { topic: entry.topic, correlation: entry.correlation } : { topic: entry.topic };
      if (this.store(route, [this.result(entry.id, entry.name, 'FAILED', 'interrupted', message, { startedAt: entry.startedAt })])) {
        this.journal(() => this.options.replay.finished(entry.id));
      }
      this.log.warn(`command ${entry.id} (${entry.name}): FAILED (interrupted: ${message})`);
    }
    return entries.length;
  }

  /** The running-commands journal is a safety net: its failure (a full disk) is said, and the command goes on. */
  private journal(write: () => void): void {
    try {
      write();
    } catch (err) {
      this.log.warn(`commands: the running-commands journal could not be written: ${(err as Error).message}`);
    }
  }

  /**
   * Answers a refused payload. Only a fresh signed command's refusal is stored (it survives a lost connection, as its
   * ACCEPTED would have); anything else (unsigned, stale, replayed, for another car) is sent once, unstored.
   */
  private reject(
    id: string | undefined,
    name: string | undefined,
    rejection: Rejection,
    properties: CommandProperties,
    authentic: boolean,
    remembered: boolean,
  ): void {
    this.rejected[rejection.reason] = (this.rejected[rejection.reason] ?? 0) + 1;
    const route = this.route(id, properties);
    if (!route) {
      this.counts.unanswerable++;
      if (!this.saidUnanswerable.has(rejection.reason)) {
        this.saidUnanswerable.add(rejection.reason);
        this.log.warn(
          `commands: a payload rejected as ${rejection.reason} has no command ID and no usable response topic: it cannot be answered (${rejection.message}); counted, said once`,
        );
      }
      return;
    }
    const result = (seq: number | undefined): Uint8Array =>
      this.encode({
        ...this.base(id ?? null, 'REJECTED'),
        ...(name !== undefined ? { command: name } : {}),
        reason: rejection.reason,
        message: rejection.message,
        ...(rejection.detail !== undefined ? { detail: rejection.detail } : {}),
        ...(seq !== undefined ? { seq } : {}),
      });
    if (authentic) this.logRejection(`command ${id}: REJECTED (${rejection.reason}: ${rejection.message})`);
    if (remembered) {
      this.store(route, [(seq) => result(seq)]);
      return;
    }
    if (!authentic && !this.saidUnsigned.has(rejection.reason)) {
      this.saidUnsigned.add(rejection.reason);
      this.log.warn(`commands: REJECTED a payload as ${rejection.reason}: ${rejection.message} (said once per reason; counted)`);
    }
    if (!authentic && !this.takeUnsignedAnswer()) {
      if (this.counts.unsignedNotAnswered++ === 0) {
        this.log.warn(
          `commands: more than ${UNSIGNED_ANSWERS_PER_MINUTE} payloads a minute are not validly signed: the rest are not answered, only counted (health: commands.unsignedNotAnswered); said once`,
        );
      }
      return;
    }
    this.options.sink.send(route, result(undefined)).catch(() => {
      this.counts.lostResults++;
    });
  }

  /** A token of the unsigned answers' bucket, refilled with time (not backwards when the clock is set back). */
  private takeUnsignedAnswer(): boolean {
    const now = this.now();
    const bucket = this.unsignedAnswers;
    bucket.tokens = Math.min(UNSIGNED_ANSWERS_PER_MINUTE, bucket.tokens + (Math.max(0, now - bucket.at) * UNSIGNED_ANSWERS_PER_MINUTE) / 60_000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private logRejection(line: string): void {
    const now = this.now();
    if (now - this.rejectLog.windowStart >= 60_000) this.rejectLog = { windowStart: now, lines: 0, suppressed: this.rejectLog.suppressed };
    if (this.rejectLog.lines >= REJECTIONS_LOGGED_PER_MINUTE) {
      this.rejectLog.suppressed++;
      return;
    }
    this.rejectLog.lines++;
    const suppressed = this.rejectLog.suppressed;
    this.rejectLog.suppressed = 0;
    this.log.warn(suppressed > 0 ? `${line} (and ${suppressed} more rejections of signed commands, not logged)` : line);
  }

  /** The response topic when it is one of ours; else the default result topic when the ID is known. */
  private route(id: string | undefined, properties: CommandProperties): ResultRoute | undefined {
    const data = properties.correlationData;
    // Echoed on every result and stored with it: longer than a token, it is not echoed (the results carry the ID).
    const correlation = data !== undefined && data.length > 0 && data.length <= MAX_CORRELATION_BYTES ? data : undefined;
    const withCorrelation = (topic: string): ResultRoute => (correlation ? { topic, correlation } : { topic });
    const response = properties.responseTopic;
    if (response !== undefined && this.isOwnResultTopic(response)) return withCorrelation(response);
    if (id !== undefined && COMMAND_ID_PATTERN.test(id)) return withCorrelation(resultTopic(this.deviceId, id));
    return undefined;
  }

  private isOwnResultTopic(topic: string): boolean {
    if (topic.length > 256 || /[+#\0]/.test(topic)) return false;
    const results = `vehicles/${this.deviceId}/results/`;
    // No empty level, and none that a bridge or a tool mapping topics to paths would walk with ('.', '..').
    if (topic.startsWith(results) && topic.length > results.length && !topic.split('/').some((level) => level === '' || level === '.' || level === '..'))
      return true;
    const own = `vehicles/${this.deviceId}/commands/`;
    if (!topic.startsWith(own) || !topic.endsWith('/result')) return false;
    return COMMAND_ID_PATTERN.test(topic.slice(own.length, -'/result'.length));
  }

  private base(id: string | null, status: CommandStatus): CommandResult {
    return { deviceId: this.deviceId, id, status, ts: this.now() };
  }

  private result(
    id: string,
    name: string,
    status: CommandStatus,
    reason: string | undefined,
    message: string | undefined,
    detail: unknown,
  ): (seq: number) => Uint8Array {
    const ts = this.now();
    return (seq) =>
      this.encode({
        deviceId: this.deviceId,
        id,
        command: name,
        status,
        ...(reason !== undefined ? { reason } : {}),
        ...(message !== undefined ? { message } : {}),
        ...(detail !== undefined ? { detail } : {}),
        ts,
        seq,
      });
  }

  private encode(result: CommandResult): Uint8Array {
    return Buffer.from(JSON.stringify(result), 'utf8');
  }

  /** Whether the results are in the outbox. */
  private store(route: ResultRoute, results: ((seq: number) => Uint8Array)[]): boolean {
    let stored = false;
    try {
      stored = this.options.sink.store(route, results);
    } catch (err) {
      this.log.error(`commands: a result could not be stored: ${(err as Error).message}`);
    }
    if (!stored) this.counts.lostResults += results.length;
    return stored;
  }

  /**
   * Stops taking commands; those running are aborted and their FAILED ('aborted') results stored, so they go out
   * with the next connection. Closes the replay memory.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const running of [...this.running.values()]) running.settle('FAILED', 'aborted', 'the agent stopped while the command ran', undefined);
    this.options.replay.close();
  }
}

/** The result topic of a command under MQTT 3.1.1, or without a usable response topic. */
export function resultTopic(deviceId: string, id: string): string {
  return `vehicles/${deviceId}/commands/${id}/result`;
}

/** The reason for a failure to record a command in the replay memory: the disk is full, or the storage failed. */
function storageFailure(err: unknown): 'disk-full' | 'storage-error' {
  // SQLite's (SqliteError.code) or the file system's (the anchor: ErrnoException.code).
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT' ? 'disk-full' : 'storage-error';
}

function issuesOf(issues: unknown): { path: string; message: string }[] {
  if (!Array.isArray(issues)) return [];
  return issues.slice(0, 10).map((issue: { path?: PropertyKey[]; message?: string }) => ({
    path: (issue.path ?? []).map(String).join('.'),
    message: String(issue.message ?? ''),
  }));
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
