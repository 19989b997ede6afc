/**
 * The contract between the command dispatcher and each command handler, and what a handler may use of the agent
 * (CommandContext). A handler validates nothing itself: the dispatcher checks its parameters against `params` first.
 * A handler fails by throwing CommandFailure (its reason goes into the result); anything else it throws is reported
 * as FAILED with reason 'handler-error'.
 */
import type { z } from 'zod';

export interface CommandRun {
  readonly id: string;
  /** Aborted on timeout or shutdown. */
  readonly signal: AbortSignal;
  /** Reports IN_PROGRESS (with optional detail) on the result topic. */
  progress(detail?: Record<string, unknown>): void;
}

/** A handler's refusal or failure, with a reason code for the result (e.g. 'obd-unavailable', 'apply-failed'). */
export class CommandFailure extends Error {
  constructor(
    readonly reason: string,
    message: string,
    readonly detail?: unknown,
  ) {
    super(message);
    this.name = 'CommandFailure';
  }
}

export interface CommandHandler<P = unknown, C = CommandContext, R = unknown> {
  readonly name: string;
  /** What it does, in a sentence or two, for the command catalogue (`telematics-ops commands`). */
  readonly description: string;
  /** zod schema of the parameters; a failure is REJECTED with reason 'bad-params' and the zod issues. */
  readonly params: z.ZodType<P>;
  /**
   * zod schema of the SUCCEEDED result's `detail`: the command's part of the published contract
   * (contract/commands/<name>.result.schema.json). The tests check every handler's real results against it.
   */
  readonly result: z.ZodType<R>;
  /** zod schema of the `detail` of its IN_PROGRESS reports, for a handler that reports progress. */
  readonly progress?: z.ZodType;
  /** Used when the envelope gives no timeout. */
  readonly defaultTimeoutMs: number;
  /** Resolves with the result detail (JSON-serialisable) → SUCCEEDED; throws CommandFailure → FAILED with its reason. */
  run(params: P, context: C, run: CommandRun): Promise<R>;
}

/** What handlers may use of the agent (implemented in src/agent/command-context.ts by the composition root). */
export interface CommandContext {
  readonly deviceId: string;
  /** Current decoded value of a signal by the names collection rules use (Message.Signal, bare name, bus-prefixed, obd.<key>); undefined if never received/unknown. */
  readSignal(name: string): number | string | undefined;
  /**
   * When the latest value of a signal (by the names readSignal takes) arrived and how often it is expected to:
   * undefined when no bus or OBD key has it. Preconditions refuse values older than their limit.
   */
  signalTiming(name: string): import('./precondition.js').SignalTiming | undefined;
  /** What the agent knows of a signal name: undefined when no bus or OBD key has it; its DBC value table, if any. */
  describeSignal(name: string): { choices?: ReadonlyMap<number, string> } | undefined;
  /** The agent's state now, as getStatus returns it (the health report's shapes). */
  status(): import('./handlers/get-status.js').StatusReport;
  /** The running device config, with file contents not included. */
  config(): unknown;
  /** Validates and applies a new `collection` section without a restart; throws CommandFailure('invalid-config'|'apply-failed') and leaves the old one running if it does not apply. Persists it atomically on success. */
  applyCollection(collection: unknown): Promise<void>;
  /** The OBD-II client of the first adapter or OBD bus that is connected, or undefined. */
  obd(): import('../obd/client.js').ObdClient | undefined;
  /** Encodes and sends one CAN frame setting `signal` of `message` on `bus` (DBC encoder); throws CommandFailure. */
  writeSignal(bus: string, message: string, signal: string, value: number): Promise<void>;
  setLogLevel(level: 'error' | 'warn' | 'info' | 'debug'): void;
  /** Asks the agent to restart cleanly after the result is sent (the process exits with a code the service manager restarts). */
  requestRestart(): void;
  /** Rotates the device certificate (src/pki/rotation.ts); resolves with the old and new certificate; throws CommandFailure. */
  rotateCertificate(request: CertificateRotationRequest): Promise<import('../pki/rotation.js').RotationOutcome>;
}

export interface CertificateRotationRequest {
  requestId: string;
  waitMs: number;
  signal: AbortSignal;
  progress(step: string, detail?: Record<string, unknown>): void;
}
