/**
 * Kernel receive filters for a bus: exactly the identifiers its DBC can decode, so frames nobody uses never wake the
 * agent. J1939 messages match by parameter group, as the decoder does: priority and source address are masked out,
 * and for PDU1 groups (PF < 240) the destination address too.
 */
import { exactFilter, type CanFilter } from '../can/bus.js';
import type { CompiledDatabase } from './codec.js';

/** Identifier bits of the PGN without the destination address (data page and PDU format). */
const J1939_PDU1_MASK = 0x03ff0000;
/** Identifier bits of the whole PGN (data page, PDU format and group extension). */
const J1939_PDU2_MASK = 0x03ffff00;

/**
 * One filter per message (deduplicated), plus `extra` (identifiers collection rules or protocols need). Returns null
 * when more than `limit` filters would be needed: then the caller receives everything rather than miss frames.
 */
export function receiveFilters(
  database: CompiledDatabase,
  options: { j1939?: boolean; extra?: readonly CanFilter[]; limit?: number } = {},
): CanFilter[] | null {
  const seen = new Set<string>();
  const filters: CanFilter[] = [];
  const add = (filter: CanFilter): void => {
    const key = `${filter.extended ? 'x' : 's'}${filter.id & filter.mask}/${filter.mask}`;
    if (seen.has(key)) return;
    seen.add(key);
    filters.push(filter);
  };
  for (const { message } of database.messages) {
    if (options.j1939 && message.extended) {
      const pduFormat = (message.id >>> 16) & 0xff;
      const mask = pduFormat < 240 ? J1939_PDU1_MASK : J1939_PDU2_MASK;
      add({ id: message.id & mask, mask, extended: true });
    } else add(exactFilter(message.id, message.extended));
  }
  for (const filter of options.extra ?? []) add(filter);
  return filters.length > (options.limit ?? 512) ? null : filters;
}
