/**
 * What a simulated car is by default, apart from the simulator so that the command line can show it without loading
 * the agent: its device ID, the rate of its simulated bus, how often it sends telemetry, and the open files it holds.
 * Pure values; nothing fails.
 */

/** The simulated bus's rate by default: one value of each signal a second, what a telematics rule samples. */
export const DEFAULT_FLEET_RATE_HZ = 1;
/** A car closes its telemetry batch this often by default: a message every 10 s, a realistic uplink rate. */
export const DEFAULT_BATCH_S = 10;
/** Open files a simulated car holds: its TLS socket, and its outbox, replay memory and heartbeat memory (SQLite with WAL). */
export const FILES_PER_CAR = 10;
/** The network key every simulated car's heartbeat memory uses: they share one host and its route. */
export const FLEET_NETWORK = 'fleet-sim';

/** `<prefix><index>`, the index from 1, zero-padded to at least four digits (sim-0001 … sim-1000). */
export function carIds(count: number, prefix: string): string[] {
  const width = Math.max(String(count).length, 4);
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(width, '0')}`);
}
