/**
 * What the SocketCAN commands (decode --iface, sim-ecu, obd) check before they open an interface, and the words they
 * use for its states: a person typing a command wants "does not exist" at once, where the daemon waits instead.
 */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import type { ControllerStateChange } from '../can/bus-health.js';
import { interfaceState, type EndpointStateChange } from '../can/socketcan.js';
import { interfaceNameProblem } from '../config/device-config.js';
import type { ObdCanAddressing } from '../obd/can-client.js';

/** linux/if_arp.h: the hardware type of CAN interfaces (vcan, vxcan and real controllers alike). */
const ARPHRD_CAN = 280;

/** The interface's hardware type from sysfs, or null when it cannot be read. */
export function interfaceHardwareType(ifname: string): number | null {
  if (interfaceNameProblem(ifname) !== null) return null;
  try {
    const type = Number.parseInt(readFileSync(`/sys/class/net/${ifname}/type`, 'utf8').trim(), 10);
    return Number.isNaN(type) ? null : type;
  } catch {
    return null;
  }
}

/** A problem that makes the interface unusable for a CAN socket right now (other than being down), or null. */
export function canInterfaceProblem(ifname: string): string | null {
  const bad = interfaceNameProblem(ifname);
  if (bad !== null) return bad;
  if (interfaceState(ifname) === 'missing') {
    return `interface ${ifname} does not exist (\`ip -brief link\` lists the interfaces there are)`;
  }
  const type = interfaceHardwareType(ifname);
  if (type !== null && type !== ARPHRD_CAN) return `interface ${ifname} is not a CAN interface (hardware type ${type}, CAN is ${ARPHRD_CAN})`;
  return null;
}

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

/**
 * Reports an endpoint's state changes, one line each; closing at shutdown is not worth a line. "open again" only
 * after the interface had been open before, however many missing and down states came first.
 */
export function endpointStateReporter(say: (line: string) => void): (change: EndpointStateChange) => void {
  let wasOpen = false;
  return (change) => {
    const ifname = change.interface;
    const why = change.reason ? ` (${change.reason})` : '';
    switch (change.state) {
      case 'missing':
        say(`interface ${ifname} is missing${why}; waiting for it`);
        break;
      case 'down':
        say(`interface ${ifname} is down${why}; waiting for it to come up`);
        break;
      case 'open':
        say(wasOpen ? `interface ${ifname} is open again` : `interface ${ifname} is open`);
        wasOpen = true;
        break;
      default:
        break;
    }
  };
}

export function describeControllerChange(ifname: string, change: ControllerStateChange): string {
  return change.state === 'error-active'
    ? `interface ${ifname}: controller is error-active again (was ${change.previous})`
    : `interface ${ifname}: controller is ${change.state} (was ${change.previous})`;
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
  if (!(value >= 0 && value <= 255)) throw new InvalidArgumentError('expected an ECU address, 0-7 with 11-bit identifiers or 0-255 (0x00-0xFF) with 29-bit ones');
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
