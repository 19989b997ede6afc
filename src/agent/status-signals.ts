/**
 * The status signals: the signals `status.signals` names, found in the bus databases by the names collection rules
 * use (src/collect/signal-names.ts), and their values as the status line and the status page show them. Without a
 * `status.signals`, the status page shows the first signals of the bus DBCs.
 *
 * Names are resolved once, at start: a name no bus DBC has fails the start, naming it. Reading a value is one buffer
 * read; the text is built only when a status line or page asks.
 */
import { resolveSignalName } from '../collect/signal-names.js';
import type { BusDecoder } from '../dbc/bus-decoder.js';
import type { MessageDef, SignalDef } from '../dbc/model.js';

/** Signals the status page shows when the config names none: the first of the bus DBCs. */
const DEFAULT_SIGNAL_COUNT = 12;

/** A status signal, found in one bus's database. */
export interface StatusSignal {
  /** The name it is shown under: as configured, or `[bus.]Message.Signal` for the defaults. */
  name: string;
  bus: BusDecoder;
  slot: number;
  signal: SignalDef;
  decimals: number;
  /** Its message's cycle time (GenMsgCycleTime), ms: how often a value is expected; null when the DBC gives none. */
  periodMs: number | null;
}

/**
 * Finds a status signal by any name a collection rule may use for a DBC signal; the first match wins. An `obd.<key>`
 * name is no DBC signal: undefined, as for a name nothing has.
 */
export function resolveStatusSignal(buses: readonly BusDecoder[], name: string): StatusSignal | undefined {
  const found = resolveSignalName(buses, name);
  if (found?.kind !== 'dbc') return undefined;
  const signal = found.codec.message.signals[found.signalIndex]!;
  return { name, bus: buses[found.bus]!, slot: found.slot, signal, decimals: displayDecimals(signal.factor), periodMs: cycleTimeOf(found.codec.message) };
}

/**
 * The configured status signals, in config order; throws naming the first one no bus DBC has. `configured` false:
 * the config names none, and these are the first signals of the bus DBCs (for the status page).
 */
export function statusSignals(names: readonly string[], buses: readonly BusDecoder[]): { signals: StatusSignal[]; configured: boolean } {
  if (names.length > 0) {
    const signals = names.map((name) => {
      const found = resolveStatusSignal(buses, name);
      if (!found) throw new Error(`status.signals: no bus DBC has a signal '${name}'`);
      return found;
    });
    return { signals, configured: true };
  }
  const signals: StatusSignal[] = [];
  for (const bus of buses) {
    const prefix = buses.length > 1 ? `${bus.name}.` : '';
    for (const codec of bus.database.messages) {
      codec.message.signals.forEach((signal, k) => {
        if (signals.length >= DEFAULT_SIGNAL_COUNT) return;
        signals.push({
          name: `${prefix}${codec.message.name}.${signal.name}`,
          bus,
          slot: codec.slots[k]!,
          signal,
          decimals: displayDecimals(signal.factor),
          periodMs: cycleTimeOf(codec.message),
        });
      });
    }
  }
  return { signals, configured: false };
}

/** A message's GenMsgCycleTime, ms; null when it has none (0 is the attribute's usual default: not cyclic). */
function cycleTimeOf(message: MessageDef): number | null {
  const cycle = message.cycleTime;
  return cycle !== undefined && cycle > 0 ? cycle : null;
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
