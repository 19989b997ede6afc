/**
 * Remote commands in a run: the dispatcher (src/commands) between the session's command messages and the outbox.
 * Results of signed commands are outbox messages of kind `result` at priority 7 with their own topic and MQTT 5
 * correlation data, published by the same publisher as the telemetry, so they survive a lost connection. They are
 * numbered in their own stream (the results stream), so they leave no gaps in the telemetry's numbering.
 *
 * The composition root passes the full CommandContext (src/agent/command-context.ts); without one, a basic context
 * serves the commands that only read (signals from the bus decoders, status from the data path) and refuses the
 * others with a CommandFailure ('unsupported').
 */
import type { RotationOutcome } from '../pki/rotation.js';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describeSignal, resolveSignalName } from '../collect/signal-names.js';
import { signalTimingOf } from './command-context.js';
import { MAX_PRIORITY, type Priority } from '../collect/sample.js';
import type { CommandsConfig } from '../commands/config.js';
import { CommandDispatcher, type DispatcherStats, type ResultRoute } from '../commands/dispatcher.js';
import { CommandFailure, type CertificateRotationRequest, type CommandContext } from '../commands/handler.js';
import { HANDLERS } from '../commands/handlers/index.js';
import { ReplayGuard } from '../commands/replay-guard.js';
import { CommandVerifier } from '../commands/verifier.js';
import type { DeviceConfig } from '../config/device-config.js';
import type { BusDecoder } from '../dbc/bus-decoder.js';
import type { ComponentLog } from '../health/log.js';
import type { SqliteOutbox } from '../store/outbox.js';
import type { DataPathReport } from './data-path.js';
import type { MqttSession } from '../uplink/session.js';

/** Command results go before every kind of telemetry, and are the last to be evicted. */
export const RESULT_PRIORITY = MAX_PRIORITY as Priority;

/** Unstored answers kept while the session connects: a burst of stale or replayed commands is not kept whole. */
const MAX_WAITING_ANSWERS = 64;

function publishResult(session: MqttSession, route: ResultRoute, payload: Uint8Array): Promise<void> {
  return session.publish(route.topic, payload, { qos: 1, ...(route.correlation ? { properties: { correlationData: route.correlation } } : {}) });
}

/** The device certificate's notBefore (unix ms); 0 when it cannot be read (the uplink reports that itself). */
function certificateSince(file: string | undefined): number {
  if (file === undefined) return 0;
  try {
    const since = Date.parse(new X509Certificate(readFileSync(file)).validFrom);
    return Number.isFinite(since) ? since : 0;
  } catch {
    return 0;
  }
}

export interface CommandsHost {
  readonly outbox: SqliteOutbox;
  readonly session: MqttSession;
  healthReport(): DataPathReport;
  rotateCertificate(request: CertificateRotationRequest): Promise<RotationOutcome>;
}

export class AgentCommands {
  private dispatcher: CommandDispatcher | undefined;
  private unsubscribe: (() => void) | undefined;
  private stopFlush: (() => void) | undefined;
  /** Unstored answers (refusals of stale, replayed or unsigned payloads) waiting for the connection; bounded. */
  private readonly waiting: { route: ResultRoute; payload: Uint8Array; done: (err?: Error) => void }[] = [];

  private constructor(
    private readonly config: DeviceConfig,
    private readonly commands: CommandsConfig,
    private readonly buses: readonly BusDecoder[],
    private readonly verifier: CommandVerifier,
    private readonly replay: ReplayGuard,
    private readonly log: ComponentLog,
  ) {}

  /**
   * Loads the pinned command CA and opens the replay memory; throws (naming the file) when either is unusable. `log`:
   * the `commands` component's, which the replay memory's problems and the dispatcher's lines go to, at their levels.
   */
  static open(config: DeviceConfig, buses: readonly BusDecoder[], log: ComponentLog): AgentCommands {
    const commands = config.commands!;
    // Always set once the config is loaded: given, or defaulted into uplink.certsDir.
    const verifier = CommandVerifier.fromFile(commands.caFile!);
    // Signed times real time has reached: a replay memory lost while the clock says 1970 gets no floor earlier.
    const knownSince = Math.max(verifier.pinnedSince, certificateSince(config.uplink?.certFile));
    const replay = ReplayGuard.open({ path: commands.replayDbPath, onProblem: (message, severity) => log[severity](message), knownSince });
    return new AgentCommands(config, commands, buses, verifier, replay, log);
  }

  /** Builds the dispatcher and listens to the session; before the session starts, so no queued command is missed. */
  start(host: CommandsHost, context?: CommandContext): void {
    const { outbox, session } = host;
    const dispatcher = new CommandDispatcher({
      deviceId: this.config.deviceId,
      config: this.commands,
      handlers: HANDLERS,
      context: context ?? this.basicContext(host),
      verifier: this.verifier,
      replay: this.replay,
      log: this.log,
      sink: {
        store: (route: ResultRoute, results) => {
          const createdAt = Date.now();
          const stored = outbox.append(
            results.map((encode) => ({
              kind: 'result' as const,
              priority: RESULT_PRIORITY,
              createdAt,
              topic: route.topic,
              ...(route.correlation ? { correlation: route.correlation } : {}),
              encode,
            })),
          );
          return stored.seqs.length === results.length;
        },
        send: (route, payload) => this.sendUnstored(session, route, payload),
      },
    });
    // Unstored answers that came in before the session said connected (commands the broker queued while the car was
    // away arrive right after CONNACK) go out once it does.
    this.stopFlush = session.onStateChange((change) => {
      if (change.state === 'connected') this.flushUnstored(session);
    });
    this.dispatcher = dispatcher;
    dispatcher.reportInterrupted();
    this.unsubscribe = session.onCommand((topic, payload, properties) => dispatcher.handle(topic, payload, properties));
  }

  private sendUnstored(session: MqttSession, route: ResultRoute, payload: Uint8Array): Promise<void> {
    if (session.state === 'connected') return publishResult(session, route, payload);
    if (this.waiting.length >= MAX_WAITING_ANSWERS) return Promise.reject(new Error('too many answers waiting for the connection'));
    return new Promise((resolve, reject) => this.waiting.push({ route, payload, done: (err) => (err ? reject(err) : resolve()) }));
  }

  private flushUnstored(session: MqttSession): void {
    for (const { route, payload, done } of this.waiting.splice(0)) {
      publishResult(session, route, payload).then(
        () => done(),
        (err: Error) => done(err),
      );
    }
  }

  get stats(): DispatcherStats | undefined {
    return this.dispatcher?.stats;
  }

  /** Stops taking commands; running ones end FAILED ('aborted'), their results stored. Closes the replay memory. */
  close(): void {
    this.unsubscribe?.();
    this.stopFlush?.();
    for (const { done } of this.waiting.splice(0)) done(new Error('the agent stopped'));
    if (this.dispatcher) this.dispatcher.close();
    else this.replay.close();
  }

  private basicContext(host: CommandsHost): CommandContext {
    const unsupported = (what: string): never => {
      throw new CommandFailure('unsupported', `${what} is not available in this agent`);
    };
    return {
      deviceId: this.config.deviceId,
      describeSignal: (name) => describeSignal(this.buses, name),
      readSignal: (name) => {
        const found = resolveSignalName(this.buses, name);
        if (found?.kind !== 'dbc') return undefined;
        const value = this.buses[found.bus]!.values[found.slot]!;
        return Number.isNaN(value) ? undefined : value;
      },
      // The buses' signals; no OBD value reaches this context (readSignal has none either).
      signalTiming: (name) => signalTimingOf(this.buses, name),
      status: () => unsupported('the status (getStatus)'),
      config: () => this.config,
      applyCollection: async () => unsupported('applying a collection config'),
      obd: () => undefined,
      writeSignal: async () => unsupported('writing signals'),
      setLogLevel: () => unsupported('setting the log level'),
      requestRestart: () => unsupported('restarting'),
      rotateCertificate: (request) => host.rotateCertificate(request),
    };
  }
}
