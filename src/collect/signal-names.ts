/**
 * The one way a signal is named in the device config, in remote commands and on the status line (README
 * "Collection", docs/commands.md): `Message.Signal`, a bare signal name (the first bus and message that has it, in
 * config order), `bus.Message.Signal`, and `obd.<key>` / `<source>.obd.<key>` for an OBD-II PID by its J1979 key.
 * The collector, the command context and the status signals all resolve names here.
 *
 * Resolution happens when a rule, a command or the status line is set up, never per frame. An unknown name is
 * undefined, for the caller to refuse naming the field it came from.
 */
import type { BusDecoder } from '../dbc/bus-decoder.js';
import type { MessageCodec } from '../dbc/index.js';
import { MODE01_PIDS_BY_KEY } from '../obd/j1979.js';

/** A resolved signal name: a DBC signal on a bus, or an OBD key. */
export type ResolvedSignal =
  | { kind: 'dbc'; bus: number; slot: number; message: number; name: string; codec: MessageCodec; signalIndex: number }
  | { kind: 'obd'; key: string; source: string | undefined };

/**
 * Finds a signal by name: `obd.<key>` / `<source>.obd.<key>`, `<bus>.<Message>.<Signal>`, `<Message>.<Signal>` or a
 * bare signal name (first bus, first message that has it). Undefined when nothing has it.
 */
export function resolveSignalName(buses: readonly BusDecoder[], name: string): ResolvedSignal | undefined {
  const parts = name.split('.');
  // The last 'obd': an adapter may itself be named obd (`obd.obd.rpm`).
  const obdAt = parts.lastIndexOf('obd');
  if (obdAt >= 0 && obdAt === parts.length - 2 && obdAt <= 1) {
    const key = parts[parts.length - 1]!;
    if (!MODE01_PIDS_BY_KEY.has(key)) return undefined;
    return { kind: 'obd', key, source: obdAt === 1 ? parts[0] : undefined };
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
