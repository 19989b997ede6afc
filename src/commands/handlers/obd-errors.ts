/** What the OBD handlers share: finding the client, and turning its errors into command results. */
import { z } from 'zod';
import type { EcuAnswer } from '../../obd/can-client.js';
import type { ObdClient } from '../../obd/client.js';
import { CommandFailure, type CommandContext } from '../handler.js';

export function requireObd(context: CommandContext): ObdClient {
  const client = context.obd();
  if (client === undefined) {
    throw new CommandFailure('obd-unavailable', 'no OBD-II connection is up (no adapter or OBD bus configured, or none connected to the car)');
  }
  return client;
}

/** Runs an OBD request; a request that fails as a whole (no ECU answered, link lost, timed out) is 'obd-error'. */
export async function obdRequest<T>(what: string, request: () => Promise<T>): Promise<T> {
  try {
    return await request();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    throw new CommandFailure('obd-error', `${what}: ${(err as Error).message}`, typeof code === 'string' ? { code } : undefined);
  }
}

/** The schema of describeAnswers' list: per ECU, its value under `key`, or its error. */
export function ecuAnswersSchema<K extends string, T extends z.ZodType>(key: K, value: T) {
  return z.array(
    z.union([
      z.strictObject({ ecu: z.number().int().min(0).max(255), [key]: value } as { ecu: z.ZodNumber } & Record<K, T>),
      z.strictObject({
        ecu: z.number().int().min(0).max(255),
        error: z.strictObject({ code: z.string().describe('timeout, negative-response, malformed, transport, bus, adapter...'), message: z.string() }),
      }),
    ]),
  );
}

/** Per-ECU answers as the result shows them: the value, or the ECU's error (a negative response…). */
export function describeAnswers<T, K extends string>(
  answers: readonly EcuAnswer<T>[],
  key: K,
): (({ ecu: number } & Record<K, T>) | { ecu: number; error: { code: string; message: string } })[] {
  return answers.map((answer) =>
    answer.ok
      ? ({ ecu: answer.ecu, [key]: answer.value } as { ecu: number } & Record<K, T>)
      : { ecu: answer.ecu, error: { code: answer.error.code, message: answer.error.message } },
  );
}

/** Every ECU refused: the request failed, with the first ECU's reason. */
export function requireSomeSuccess<T>(what: string, answers: readonly EcuAnswer<T>[]): void {
  if (answers.length === 0) throw new CommandFailure('obd-error', `${what}: no ECU answered`);
  const failed = answers.filter((a): a is Extract<EcuAnswer<T>, { ok: false }> => !a.ok);
  if (failed.length === answers.length) {
    throw new CommandFailure('obd-error', `${what}: ${failed[0]!.error.message}`, {
      ecus: failed.map((a) => ({ ecu: a.ecu, code: a.error.code, message: a.error.message })),
    });
  }
}
