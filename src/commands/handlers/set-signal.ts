/**
 * `setSignal`: writes one CAN signal through the bus DBC (one frame of its message, the other signals as last
 * received). Only signals the device config allow-lists (`commands.allowedSignals`) can be written, within the
 * entry's min/max and the DBC's range, and only while the entry's precondition holds on the current values, none of
 * them stale (commands.freshness, or the entry's preconditionMaxAgeMs).
 */
import { z } from 'zod';
import { freshnessConfigSchema, type AllowedSignal, type FreshnessConfig } from '../config.js';
import { CommandFailure, type CommandContext, type CommandHandler } from '../handler.js';
import { describeFailure, Precondition, SignalFreshness } from '../precondition.js';

const setSignalParams = z.strictObject({
  bus: z.string().min(1).optional().describe('Bus of the signal; may be left out when only one bus allows it.'),
  message: z.string().min(1).describe('DBC message name.'),
  signal: z.string().min(1).describe('DBC signal name.'),
  value: z.number().refine(Number.isFinite, 'expected a finite number').describe('Physical value (DBC units).'),
});

function commandsConfig(context: CommandContext): { allowedSignals?: AllowedSignal[]; freshness?: FreshnessConfig } {
  const config = context.config() as { commands?: { allowedSignals?: AllowedSignal[]; freshness?: FreshnessConfig } } | undefined;
  return config?.commands ?? {};
}

const setSignalResult = z.strictObject({
  bus: z.string(),
  message: z.string(),
  signal: z.string(),
  value: z.number().describe('The physical value written.'),
});

export const setSignal: CommandHandler<z.output<typeof setSignalParams>, CommandContext, z.output<typeof setSignalResult>> = {
  name: 'setSignal',
  description: 'Writes one CAN signal through the bus DBC: only signals commands.allowedSignals lists, within their range, while their precondition holds.',
  params: setSignalParams,
  result: setSignalResult,
  defaultTimeoutMs: 5000,
  async run(params, context) {
    const { message, signal, value } = params;
    const commands = commandsConfig(context);
    const candidates = (commands.allowedSignals ?? []).filter(
      (entry) => entry.message === message && entry.signal === signal && (params.bus === undefined || entry.bus === params.bus),
    );
    const where = `${params.bus === undefined ? '' : `${params.bus}.`}${message}.${signal}`;
    if (candidates.length === 0) throw new CommandFailure('signal-not-allowed', `${where} is not in commands.allowedSignals`);
    const buses = [...new Set(candidates.map((entry) => entry.bus))];
    if (buses.length > 1) throw new CommandFailure('unknown-bus', `${message}.${signal} is allowed on several buses (${buses.join(', ')}): name the bus`);
    const entry = candidates[0]!;

    if ((entry.min !== undefined && value < entry.min) || (entry.max !== undefined && value > entry.max)) {
      const range = `[${entry.min ?? '-∞'}, ${entry.max ?? '∞'}]`;
      throw new CommandFailure('out-of-range', `${entry.bus}.${message}.${signal} = ${value} is outside the allowed ${range}`, {
        min: entry.min ?? null,
        max: entry.max ?? null,
      });
    }

    if (entry.precondition !== undefined) {
      let precondition: Precondition;
      let freshness: SignalFreshness;
      try {
        precondition = Precondition.forSignals(entry.precondition, (name) => context.describeSignal(name));
        freshness = new SignalFreshness(commands.freshness ?? freshnessConfigSchema.parse(undefined), (name) => context.signalTiming(name));
      } catch (err) {
        // The config is validated at start, so this is a config that changed under us: refuse, do not write.
        throw new CommandFailure('invalid-config', `the precondition of ${entry.bus}.${message}.${signal}: ${(err as Error).message}`);
      }
      const outcome = precondition.evaluate((name) => context.readSignal(name), freshness.at(Date.now(), entry.preconditionMaxAgeMs));
      if (!outcome.ok) {
        throw new CommandFailure(
          'precondition-failed',
          `${entry.bus}.${message}.${signal}: ${outcome.failed.map(describeFailure).join('; ')} does not hold`,
          outcome,
        );
      }
    }

    await context.writeSignal(entry.bus, message, signal, value);
    return { bus: entry.bus, message, signal, value };
  },
};
