/**
 * A SocketCAN interface in a person's words: whether it can carry a CAN socket at all, and one line per change of
 * its state or its controller's. Used by the agent's socketcan source (which waits for a missing interface) and by the
 * one-shot commands (which fail at once). Reads sysfs only; never throws.
 */
import { readFileSync } from 'node:fs';
import type { ControllerStateChange } from './bus-health.js';
import { interfaceNameProblem } from './interface-name.js';
import { interfaceState, type EndpointStateChange } from './socketcan.js';

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
 * Reports an endpoint's state changes, one line each, with its level: `warn` while the interface is missing or down
 * (the agent waits), `info` when it is open (again); closing at shutdown is not worth a line. "open again" only after
 * the interface had been open before, however many missing and down states came first.
 */
export function endpointStateReporter(say: (line: string, level: 'info' | 'warn') => void): (change: EndpointStateChange) => void {
  let wasOpen = false;
  return (change) => {
    const ifname = change.interface;
    const why = change.reason ? ` (${change.reason})` : '';
    switch (change.state) {
      case 'missing':
        say(`interface ${ifname} is missing${why}; waiting for it`, 'warn');
        break;
      case 'down':
        say(`interface ${ifname} is down${why}; waiting for it to come up`, 'warn');
        break;
      case 'open':
        say(wasOpen ? `interface ${ifname} is open again` : `interface ${ifname} is open`, 'info');
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
