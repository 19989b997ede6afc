/**
 * Whether a car is online, offline (since when, and why) or has never connected to this broker, from its retained
 * `vehicles/<id>/status` (the birth, the last will or the shutdown message: contract/status.schema.json); and what
 * that means for a command that has no final result yet (docs/fleet-operations.md, "Tracked commands").
 *
 * The read needs no timer: a subscribe/unsubscribe barrier (src/fleet/retained-read.ts).
 *
 * Failure: a retained status that is not in the contract counts as "unknown" (it names what was there), never as
 * online; a refused subscription or a lost connection rejects with the broker's words.
 */
import type { MqttClient } from 'mqtt';
import { statusMessageSchema } from '../contract/messages.js';
import { readRetained } from './retained-read.js';

export type CarPresence =
  | { kind: 'online'; since: number }
  /** `since` is undefined for the last will: the broker published it, the car could not say when. */
  | { kind: 'offline'; since: number | undefined; reason: string }
  | { kind: 'never' }
  | { kind: 'unknown'; why: string };

/** The car's presence from its retained status. */
export async function readCarPresence(client: MqttClient, deviceId: string): Promise<CarPresence> {
  const topic = `vehicles/${deviceId}/status`;
  const retained = (await readRetained(client, [topic])).find((m) => m.topic === topic)?.payload;
  if (retained === undefined) return { kind: 'never' };
  let json: unknown;
  try {
    json = JSON.parse(retained.toString('utf8'));
  } catch {
    return { kind: 'unknown', why: `its retained status is not JSON` };
  }
  const status = statusMessageSchema.safeParse(json);
  if (!status.success) return { kind: 'unknown', why: `its retained status is not in the contract (${status.error.issues[0]?.message ?? 'no match'})` };
  const message = status.data;
  if (message.online) return { kind: 'online', since: message.ts };
  return { kind: 'offline', since: 'ts' in message ? message.ts : undefined, reason: message.reason };
}

export type PendingState = 'QUEUED' | 'UNDELIVERED' | 'NO_SUCH_CAR' | 'NO_RESULT' | 'SENT';

/**
 * What a command without a final result is, given the car's presence: queued for an offline car (the broker keeps
 * it until it expires; past that, undelivered: it will not run), sent to nobody for a car that never connected, and for an online car `SENT` (not waited
 * for) or `NO_RESULT` (waited for, and nothing final came).
 */
export function pendingState(
  presence: CarPresence,
  command: { id: string; deviceId: string; expiresAt: number | undefined },
  waited: { timeoutS: number } | undefined,
  now = Date.now(),
): { state: PendingState; text: string } {
  const expires = command.expiresAt === undefined ? 'it expires' : `it expires at ${iso(command.expiresAt)}`;
  switch (presence.kind) {
    case 'offline': {
      const since =
        presence.since === undefined
          ? `offline (${presence.reason}; since when is not known: the broker published its last will)`
          : `offline since ${iso(presence.since)} (${presence.reason})`;
      if (command.expiresAt !== undefined && now > command.expiresAt) {
        return {
          state: 'UNDELIVERED',
          text: `not delivered: ${command.deviceId} is ${since}, and the command expired at ${iso(command.expiresAt)}: it will not run (send it again)`,
        };
      }
      return { state: 'QUEUED', text: `queued: ${command.deviceId} is ${since}; the broker keeps the command until ${expires}` };
    }
    case 'never':
      return {
        state: 'NO_SUCH_CAR',
        text: `no car ${command.deviceId} has ever connected to this broker (no retained status): the command reaches no one (check the device ID)`,
      };
    case 'unknown':
      return waited
        ? { state: 'NO_RESULT', text: `no final result within ${waited.timeoutS} s, and whether ${command.deviceId} is online is not known: ${presence.why}` }
        : { state: 'SENT', text: `sent; whether ${command.deviceId} is online is not known: ${presence.why}` };
    case 'online':
      return waited
        ? {
            state: 'NO_RESULT',
            text: `no final result within ${waited.timeoutS} s, though ${command.deviceId} is online since ${iso(presence.since)} (${expires}; \`telematics-ops wait ${command.id}\` waits on)`,
          }
        : { state: 'SENT', text: `sent: ${command.deviceId} is online since ${iso(presence.since)}` };
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
