/**
 * What the SocketCAN commands (decode --iface, sim-ecu, obd) check before they open an interface, and their argument
 * parsers: a person typing a command wants "does not exist" at once, where the daemon waits instead. The words for an
 * interface's states are src/can/interface-report.ts's, shared with the agent.
 */
import { InvalidArgumentError } from 'commander';
import { interfaceNameProblem } from '../can/interface-name.js';
import { canInterfaceProblem } from '../can/interface-report.js';
import { interfaceState } from '../can/socketcan.js';
import type { ObdCanAddressing } from '../obd/can-client.js';

/**
 * Throws a clear error when the interface cannot be used. `whenDown`: 'fail' for one-shot commands, which cannot
 * wait; 'wait' for long-running ones, which then say once that they wait.
 */
export function checkCanInterface(ifname: string, whenDown: 'fail' | 'wait'): 'up' | 'down' {
  const problem = canInterfaceProblem(ifname);
  if (problem !== null) throw new Error(problem);
  const state = interfaceState(ifname);
  if (state === 'down' && whenDown === 'fail') throw new Error(`interface ${ifname} is down (bring it up with \`ip link set ${ifname} up\`)`);
  return state === 'up' ? 'up' : 'down';
}

// ---- commander argument parsers: each rejects bad input with the reason ----

export function parseInterfaceName(text: string): string {
  const problem = interfaceNameProblem(text);
  if (problem !== null) throw new InvalidArgumentError(problem);
  return text;
}

export function parseAddressing(text: string): ObdCanAddressing {
  if (text === '11-bit' || text === '29-bit') return text;
  throw new InvalidArgumentError('expected 11-bit or 29-bit');
}

/** An ECU address: decimal or 0x-hex, 0-255 (the range for the addressing is checked once both are known). */
export function parseEcuAddress(text: string): number {
  const value = /^0x[0-9a-f]{1,2}$/i.test(text) ? Number.parseInt(text, 16) : /^\d{1,3}$/.test(text) ? Number(text) : NaN;
  if (!(value >= 0 && value <= 255))
    throw new InvalidArgumentError('expected an ECU address, 0-7 with 11-bit identifiers or 0-255 (0x00-0xFF) with 29-bit ones');
  return value;
}

export function checkEcuForAddressing(ecu: number, addressing: ObdCanAddressing): void {
  const max = addressing === '11-bit' ? 7 : 255;
  if (ecu > max) throw new Error(`--ecu ${ecu}: ECU addresses are 0-${max} with ${addressing} identifiers`);
}

export function parsePositiveNumber(text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value <= 0) throw new InvalidArgumentError('expected a positive number');
  return value;
}

export function parseWholeMilliseconds(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < 1 || value > 60_000) throw new InvalidArgumentError('expected whole milliseconds, 1-60000');
  return value;
}

export function parseInteger(text: string): number {
  const value = Number(text);
  if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(value)) throw new InvalidArgumentError('expected an integer');
  return value;
}
