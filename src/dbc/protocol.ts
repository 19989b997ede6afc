/**
 * What a DBC file says about the protocol on its bus. A J1939 DBC is written for one source address per message (the
 * ECU the author had), while a truck's ECUs send the same parameter group from their own addresses: such a DBC is
 * only useful with PGN matching (CompileOptions.j1939), and a tool that reads one without it decodes nothing.
 *
 * Failure: none; a file that says nothing about its protocol is simply not J1939.
 */
import type { Database } from './model.js';

/**
 * Why the DBC is a J1939 database, in a few words for a person (`ProtocolType "J1939"`, or the J1939PG frame format
 * of its messages); undefined when it does not say so, or has no 29-bit message for PGN matching to apply to.
 */
export function j1939Declaration(db: Database): string | undefined {
  const extended = db.messages.filter((message) => message.extended);
  if (extended.length === 0) return undefined;
  const protocol = db.attributes.ProtocolType ?? db.attributeDefinitions.get('ProtocolType')?.defaultValue;
  if (typeof protocol === 'string' && protocol.trim().toUpperCase() === 'J1939') return `ProtocolType "${protocol}"`;
  const pgs = extended.filter((message) => message.j1939).length;
  if (pgs === 0) return undefined;
  return `VFrameFormat J1939PG on ${pgs === extended.length ? 'every 29-bit message' : `${pgs} of its ${extended.length} 29-bit messages`}`;
}
