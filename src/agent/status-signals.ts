/**
 * The status signals: configured signal names found in the bus databases, and their values as the status line and the
 * status page show them.
 */
import type { BusDecoder } from '../dbc/bus-decoder.js';
import type { SignalDef } from '../dbc/model.js';

/** A configured status signal, found in one bus's database. */
export interface StatusSignal {
  bus: BusDecoder;
  slot: number;
  signal: SignalDef;
  decimals: number;
}

/** Finds `Message.Signal` or a bare signal name in the buses, in config order; the first match wins. */
export function resolveStatusSignal(buses: BusDecoder[], name: string): StatusSignal | undefined {
  const dotted = name.includes('.');
  for (const bus of buses) {
    for (const codec of bus.database.messages) {
      const { message } = codec;
      if (dotted && !name.startsWith(`${message.name}.`)) continue;
      const signalName = dotted ? name.slice(message.name.length + 1) : name;
      const index = message.signals.findIndex((s) => s.name === signalName);
      if (index < 0) continue;
      const signal = message.signals[index]!;
      return { bus, slot: codec.slots[index]!, signal, decimals: displayDecimals(signal.factor) };
    }
  }
  return undefined;
}

/** Enough decimals to show one step of the signal's resolution (0.25 → 1, 0.01 → 2, 1e-7 → 7). */
export function displayDecimals(factor: number): number {
  const step = Math.abs(factor);
  if (step === 0 || Number.isInteger(step)) return 0;
  return Math.min(7, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)));
}

/** A value-table label, or the value to the signal's resolution with its unit; '–' before any value. */
export function formatStatusValue(entry: StatusSignal, value = entry.bus.values[entry.slot]!): string {
  if (Number.isNaN(value)) return '–';
  const label = Number.isInteger(value) ? entry.signal.choices?.get(value) : undefined;
  if (label !== undefined) return label;
  const text = value.toFixed(entry.decimals);
  return entry.signal.unit ? `${text} ${entry.signal.unit}` : text;
}
