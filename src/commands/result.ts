/**
 * What the car says about a command, on its result topic: one JSON message per step of the lifecycle,
 * `{deviceId, id, status, reason?, message?, detail?, ts, seq?}` (docs/commands.md is the reference).
 */

export type CommandStatus = 'ACCEPTED' | 'IN_PROGRESS' | 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'REJECTED';

/** The final statuses: nothing follows them. */
export const FINAL_STATUSES: ReadonlySet<CommandStatus> = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'REJECTED']);

/**
 * Why a command was REJECTED (it never ran). Handlers add their own reasons for FAILED (CommandFailure.reason,
 * e.g. 'obd-unavailable'); the dispatcher's own FAILED and TIMED_OUT reasons are below.
 */
export const REJECT_REASONS = [
  /** The payload is larger than commands.maxPayloadBytes (it was not parsed). */
  'oversize',
  /** Not the wire format: not JSON, a key twice in one object, fields missing or of the wrong type, bad base64, an
   * envelope that fails its schema, or a topic that names another command than the envelope. */
  'malformed',
  /** No signature or no signer certificate. */
  'no-signature',
  /** The signature does not verify against the signer's key. */
  'bad-signature',
  /** The signer's certificate does not chain to the pinned command CA, is outside its validity, or is not for signing. */
  'untrusted-signer',
  /** Signed for another vehicle. */
  'wrong-device',
  /** Past its expiresAt, or older than commands.maxLifetimeS. */
  'expired',
  /** Issued further in the future than commands.clockSkewS allows. */
  'not-yet-valid',
  /** This command ID was already received (it stays remembered until the command could no longer be valid). */
  'replayed',
  /** The command's ID could not be recorded in the replay memory because the disk is full: it did not run. */
  'disk-full',
  /** The command's ID could not be recorded in the replay memory (an I/O error, a read-only file): it did not run. */
  'storage-error',
  /** No handler of that name. */
  'unknown-command',
  /** The parameters fail the command's schema (detail: the issues). */
  'bad-params',
  /** The command's precondition on live signals does not hold (detail: the failing conditions and their values). */
  'precondition-failed',
  /** commands.maxConcurrent commands are already running. */
  'busy',
  /** The agent is shutting down. */
  'shutting-down',
  /** The agent failed while checking the command (a bug; the message says what): it did not run. */
  'internal-error',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** The dispatcher's FAILED reasons (a handler's CommandFailure gives its own). */
export const FAILURE_REASONS = [
  /** The handler threw something other than a CommandFailure: a bug, reported with its message. */
  'handler-error',
  /** The agent stopped while the command ran. */
  'aborted',
  /** The handler's result could not be serialised as JSON. */
  'bad-result',
  /** The agent died while the command ran (reported when it starts again; detail: startedAt). */
  'interrupted',
] as const;

/** TIMED_OUT's reason. */
export const TIMEOUT_REASON = 'timeout';

export interface CommandResult {
  deviceId: string;
  /** The command ID; null when the payload gave none that could be read (the correlation data then identifies it). */
  id: string | null;
  /** The command's name, when the envelope was readable. */
  command?: string;
  status: CommandStatus;
  reason?: string;
  message?: string;
  detail?: unknown;
  /** When the car wrote this result, unix ms. */
  ts: number;
  /** The outbox sequence number (results that went through the outbox): a consumer drops duplicates by it. */
  seq?: number;
}
