/**
 * The one way a signal is named in the device config, in remote commands and on the status line (README
 * "Collection", docs/commands.md): `Message.Signal`, a bare signal name (the first bus and message that has it, in
 * config order), `bus.Message.Signal`, `obd.<key>` / `<source>.obd.<key>` for an OBD-II PID by its J1979 key, and
 * `gnss.<key>` / `<source>.gnss.<key>` for a field of a GNSS fix (docs/gnss.md). The last two are values an adapter
 * offers (src/agent/sources/source-type.ts), by `<adapter>.<family>.<key>`.
 * The collector, the command context and the status signals all resolve names here.
 *
 * Resolution happens when a rule, a command or the status line is set up, never per frame. An unknown name is
 * undefined, for the caller to refuse naming the field it came from.
 */
import type { BusDecoder } from '../dbc/bus-decoder.js';
import type { MessageCodec } from '../dbc/index.js';
import { FIX_SIGNAL_KEYS } from '../gnss/fix.js';
import { MODE01_PIDS_BY_KEY } from '../obd/j1979.js';

/** The families of values adapters offer, and the keys each has. */
const OFFERED_KEYS: Readonly<Record<OfferedFamily, ReadonlySet<string>>> = {
  obd: new Set(MODE01_PIDS_BY_KEY.keys()),
  gnss: new Set(FIX_SIGNAL_KEYS),
};

export type OfferedFamily = 'obd' | 'gnss';

/**
 * A resolved signal name: a DBC signal on a bus, or a value an adapter offers (`family` obd or gnss, its `key`, and the
 * one adapter or bus it must come from, or undefined for any).
 */
export type ResolvedSignal =
  | { kind: 'dbc'; bus: number; slot: number; message: number; name: string; codec: MessageCodec; signalIndex: number }
  | { kind: 'offered'; family: OfferedFamily; key: string; source: string | undefined };

/** `<source>.<family>.<key>` without its source: what every offered name of the signal ends with. */
export function offeredSuffix(signal: { family: OfferedFamily; key: string }): string {
  return `.${signal.family}.${signal.key}`;
}

/** The full name of an offered value's signal: `<source>.<family>.<key>`, or `<family>.<family>.<key>` for any source. */
export function offeredName(signal: { family: OfferedFamily; key: string; source: string | undefined }): string {
  return `${signal.source ?? signal.family}${offeredSuffix(signal)}`;
}

/** Whether an offered value's name (`<source>.<family>.<key>`) is one the resolved signal reads. */
export function offeredMatches(signal: { family: OfferedFamily; key: string; source: string | undefined }, offered: string): boolean {
  return signal.source === undefined ? offered.endsWith(offeredSuffix(signal)) : offered === offeredName(signal);
}

/**
 * Finds a signal by name: `obd.<key>` / `<source>.obd.<key>`, `gnss.<key>` / `<source>.gnss.<key>`,
 * `<bus>.<Message>.<Signal>`, `<Message>.<Signal>` or a bare signal name (first bus, first message that has it).
 * Undefined when nothing has it.
 */
export function resolveSignalName(buses: readonly BusDecoder[], name: string): ResolvedSignal | undefined {
  const parts = name.split('.');
  for (const family of ['obd', 'gnss'] as const) {
    // The last one: an adapter may itself be named after its family (`obd.obd.rpm`, `gnss.gnss.lat`).
    const at = parts.lastIndexOf(family);
    if (at >= 0 && at === parts.length - 2 && at <= 1) {
      const key = parts[parts.length - 1]!;
      if (!OFFERED_KEYS[family].has(key)) return undefined;
      return { kind: 'offered', family, key, source: at === 1 ? parts[0] : undefined };
    }
  }
  let candidates = buses.map((bus, index) => ({ bus, index }));
  let rest = parts;
  if (parts.length === 3) {
    candidates = candidates.filter((c) => c.bus.name === parts[0]);
    rest = parts.slice(1);
  }
  if (rest.length > 2) return undefined;
  for (const { bus, index } of candidates) {
    const messages = bus.database.messages;
    for (let m = 0; m < messages.length; m++) {
      const codec = messages[m]!;
      const { message } = codec;
      if (rest.length === 2 && message.name !== rest[0]) continue;
      const signalName = rest[rest.length - 1]!;
      const signalIndex = message.signals.findIndex((s) => s.name === signalName);
      if (signalIndex < 0) continue;
      return {
        kind: 'dbc',
        bus: index,
        slot: codec.slots[signalIndex]!,
        message: m,
        name: `${bus.name}.${message.name}.${signalName}`,
        codec,
        signalIndex,
      };
    }
  }
  return undefined;
}

/** A signal by any name resolveSignalName takes: undefined when unknown; with its DBC value table when it has one. */
export function describeSignal(buses: readonly BusDecoder[], name: string): { choices?: ReadonlyMap<number, string> } | undefined {
  const found = resolveSignalName(buses, name);
  if (found === undefined) return undefined;
  const choices = found.kind === 'dbc' ? found.codec.message.signals[found.signalIndex]!.choices : undefined;
  return choices ? { choices } : {};
}
