/**
 * `captureSnapshot`: the current values of chosen signals, named as collection rules name them (`Message.Signal`,
 * a bare name, `<bus>.Message.Signal`, `obd.<key>`).
 */
import { z } from 'zod';
import { CommandFailure, type CommandHandler } from '../handler.js';

const captureSnapshotParams = z.strictObject({
  signals: z.array(z.string().min(1).max(200)).min(1).max(500).describe('The signals to read.'),
});

export const captureSnapshot: CommandHandler<z.output<typeof captureSnapshotParams>> = {
  name: 'captureSnapshot',
  description: 'The current values of the named signals, named as collection rules name them (Message.Signal, a bare name, <bus>.Message.Signal, obd.<key>).',
  params: captureSnapshotParams,
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
