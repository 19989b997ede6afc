/**
 * `captureSnapshot`: the current values of chosen signals, named as collection rules name them (`Message.Signal`,
 * a bare name, `<bus>.Message.Signal`, `obd.<key>`).
 */
import { z } from 'zod';
import { CommandFailure, type CommandContext, type CommandHandler } from '../handler.js';

const captureSnapshotParams = z.strictObject({
  signals: z.array(z.string().min(1).max(200)).min(1).max(500).describe('The signals to read.'),
});

const captureSnapshotResult = z.strictObject({
  ts: z.number().int().nonnegative().describe('When the values were read, unix ms.'),
  values: z.record(z.string(), z.union([z.number(), z.string(), z.null()])).describe('Each signal asked for, by the name given: its latest value, or null.'),
  unavailable: z.array(z.string()).describe('The signals with no value: unknown names, or never received.'),
});

export const captureSnapshot: CommandHandler<z.output<typeof captureSnapshotParams>, CommandContext, z.output<typeof captureSnapshotResult>> = {
  name: 'captureSnapshot',
  description: 'The current values of the named signals, named as collection rules name them (Message.Signal, a bare name, <bus>.Message.Signal, obd.<key>).',
  params: captureSnapshotParams,
  result: captureSnapshotResult,
  defaultTimeoutMs: 5000,
  async run(params, context) {
    const values: Record<string, number | string | null> = {};
    const unavailable: string[] = [];
    for (const name of params.signals) {
      const value = context.readSignal(name);
      values[name] = value ?? null;
      if (value === undefined) unavailable.push(name);
    }
    // None at all is more likely a wrong name than a quiet car: fail so that it is seen.
    if (unavailable.length === params.signals.length) {
      throw new CommandFailure('unknown-signal', `no value for any of the signals: ${unavailable.join(', ')} (unknown names, or never received)`, {
        unavailable,
      });
    }
    return { ts: Date.now(), values, unavailable };
  },
};
