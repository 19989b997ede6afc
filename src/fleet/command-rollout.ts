/**
 * One command to one car or many (docs/fleet-operations.md, "Many cars at once"): each car gets its own command ID
 * (and so its own signed envelope, bound to its device ID), journaled before it is published; at most `concurrency`
 * cars are in flight at once over one backend connection. Each car ends with an outcome: its final result, or, when
 * none came (or it was not waited for), what its retained status says (src/fleet/car-presence.ts): sent, queued,
 * undelivered, no such car, no result.
 *
 * Failure: a car whose command could not be journaled or published ends as ERROR with the reason, and the others go
 * on; a result that cannot be journaled is said once (onJournalError) and the results keep being followed. Nothing
 * here prints: the caller draws the progress and the outcomes.
 */
import { randomUUID } from 'node:crypto';
import type { Signer } from '../commands/envelope.js';
import type { OperatorClient } from '../commands/operator-client.js';
import type { CommandResult, CommandStatus } from '../commands/result.js';
import { pendingState, readCarPresence, type PendingState } from './car-presence.js';
import type { CommandJournal } from './command-journal.js';

export interface RolloutRequest {
  name: string;
  params: unknown;
  /** The lifetime of each car's command from its own issue time (each car gets it only until then). */
  expiresInMs: number;
  /** The car's timeout for running it; undefined: the command's own. */
  runTimeoutMs?: number;
  /** Follow each car's command to its final result, waiting up to timeoutMs for it. */
  wait: boolean;
  timeoutMs: number;
  /** Cars in flight at once. */
  concurrency: number;
}

export type CarState = CommandStatus | PendingState | 'ERROR';

export interface CarOutcome {
  deviceId: string;
  id: string;
  state: CarState;
  /** The final result, when one came. */
  final?: CommandResult;
  /** Without a final result: what the tool found (the queued line, the error...). */
  text?: string;
}

export interface RolloutHooks {
  journal?: CommandJournal;
  /** Recorded with each command. */
  broker: string;
  operator: string | undefined;
  /** Each result as it arrives. */
  onResult?: (deviceId: string, result: CommandResult) => void;
  /** A car's command was published (the progress' "sent"). */
  onPublished?: (deviceId: string, id: string) => void;
  onOutcome?: (outcome: CarOutcome) => void;
  /** A result that could not be journaled (said once by the caller; following goes on). */
  onJournalError?: (err: Error) => void;
}

/** Sends `request` to every car of `deviceIds` (in that order, `concurrency` at a time); the outcomes in that order. */
export async function rollOut(
  client: OperatorClient,
  deviceIds: readonly string[],
  request: RolloutRequest,
  signer: Signer,
  hooks: RolloutHooks,
): Promise<CarOutcome[]> {
  const outcomes: CarOutcome[] = new Array<CarOutcome>(deviceIds.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < deviceIds.length) {
      const index = next++;
      const outcome = await sendToCar(client, deviceIds[index]!, request, signer, hooks);
      outcomes[index] = outcome;
      hooks.onOutcome?.(outcome);
    }
  };
  await Promise.all(Array.from({ length: Math.min(request.concurrency, deviceIds.length) }, worker));
  return outcomes;
}

async function sendToCar(client: OperatorClient, deviceId: string, request: RolloutRequest, signer: Signer, hooks: RolloutHooks): Promise<CarOutcome> {
  const id = randomUUID();
  const issuedAt = Date.now();
  const expiresAt = issuedAt + request.expiresInMs;
  const { journal } = hooks;
  try {
    journal?.recordCommand(
      { id, deviceId, name: request.name, params: request.params, issuedAt, expiresAt, operator: hooks.operator, broker: hooks.broker },
      'SENT',
    );
  } catch (err) {
    return { deviceId, id, state: 'ERROR', text: (err as Error).message };
  }
  let outcome;
  try {
    outcome = await client.send(
      {
        id,
        deviceId,
        name: request.name,
        params: request.params,
        issuedAt,
        expiresAt,
        ...(request.runTimeoutMs !== undefined ? { timeoutMs: request.runTimeoutMs } : {}),
      },
      signer,
      {
        wait: request.wait,
        timeoutMs: request.timeoutMs,
        onPublished: () => hooks.onPublished?.(deviceId, id),
        onResult: (result) => {
          try {
            journal?.recordResult(id, result);
          } catch (err) {
            hooks.onJournalError?.(err as Error);
          }
          hooks.onResult?.(deviceId, result);
        },
      },
    );
  } catch (err) {
    return { deviceId, id, state: 'ERROR', text: `cannot send to ${deviceId}: ${(err as Error).message}` };
  }
  if (outcome.final) return { deviceId, id, state: outcome.final.status, final: outcome.final };
  let pending: { state: PendingState; text: string };
  try {
    const presence = await readCarPresence(client.client, deviceId);
    pending = pendingState(presence, { id, deviceId, expiresAt }, request.wait ? { timeoutS: request.timeoutMs / 1000 } : undefined);
  } catch (err) {
    pending = { state: request.wait ? 'NO_RESULT' : 'SENT', text: `whether ${deviceId} is online could not be read: ${(err as Error).message}` };
  }
  try {
    journal?.recordState(id, deviceId, pending.state, pending.text);
  } catch (err) {
    hooks.onJournalError?.(err as Error);
  }
  return { deviceId, id, state: pending.state, text: pending.text };
}
