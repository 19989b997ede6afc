/**
 * The host's network interfaces for the health report, from Node's own address list and the kernel's files
 * (/sys/class/net/<iface>/{operstate,speed,wireless}, the route tables): nothing is run, nothing blocks the event
 * loop. (systeminformation's listing runs shell commands synchronously, stalling the CAN frame path for hundreds of
 * milliseconds at every report.) Interfaces are those with an address, as `os.networkInterfaces()` lists them. A file
 * that cannot be read leaves its field unknown (`unknown` operstate, no speed); this never throws.
 */
import { access, readFile, realpath } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { defaultRouteInterface, defaultRouteInterface6 } from '../uplink/network-identity.js';

export interface HostInterface {
  iface: string;
  default: boolean;
  ip4: string;
  ip6: string;
  mac: string;
  internal: boolean;
  operstate: string;
  /** wired, wireless or virtual. */
  type: string;
  /** Mbit/s; null when the driver does not say (down, virtual, Wi-Fi). */
  speed: number | null;
}

async function readText(file: string): Promise<string | null> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    return null;
  }
}

async function interfaceType(iface: string, internal: boolean): Promise<string> {
  if (internal) return 'virtual';
  const exists = (file: string): Promise<boolean> =>
    access(file).then(
      () => true,
      () => false,
    );
  if (await exists(`/sys/class/net/${iface}/wireless`)) return 'wireless';
  const device = await realpath(`/sys/class/net/${iface}`).catch(() => '');
  return device.includes('/virtual/') ? 'virtual' : 'wired';
}

export async function hostInterfaces(): Promise<HostInterface[]> {
  const [route4, route6] = await Promise.all([readText('/proc/net/route'), readText('/proc/net/ipv6_route')]);
  const defaultIface = defaultRouteInterface(route4 ?? '') ?? defaultRouteInterface6(route6 ?? '');
  const listed = Object.entries(networkInterfaces());
  return Promise.all(
    listed.map(async ([iface, addresses = []]) => {
      const v4 = addresses.find((a) => a.family === 'IPv4');
      const v6 = addresses.find((a) => a.family === 'IPv6' && !a.address.startsWith('fe80')) ?? addresses.find((a) => a.family === 'IPv6');
      const internal = addresses.some((a) => a.internal);
      const [operstate, speedText, type] = await Promise.all([
        readText(`/sys/class/net/${iface}/operstate`),
        readText(`/sys/class/net/${iface}/speed`),
        interfaceType(iface, internal),
      ]);
      const speed = speedText === null ? NaN : Number(speedText);
      return {
        iface,
        default: iface === defaultIface,
        ip4: v4?.address ?? '',
        ip6: v6?.address ?? '',
        mac: addresses[0]?.mac ?? '',
        internal,
        operstate: operstate ?? 'unknown',
        type,
        speed: Number.isFinite(speed) && speed > 0 ? speed : null,
      };
    }),
  );
}
