/** Option parsers the simulator commands (sim-ecu, sim-elm327) share. */
import { InvalidArgumentError } from 'commander';
import { dtcToBytes } from '../obd/j1979.js';

/** Commander hands variadic values one at a time: each DTC is checked and collected. */
export function collectDtc(value: string, previous: string[] | undefined): string[] {
  const code = value.toUpperCase();
  try {
    dtcToBytes(code);
  } catch {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a DTC (a letter P, C, B or U and four hex digits, e.g. P0133)`);
  }
  return [...(previous ?? []), code];
}
