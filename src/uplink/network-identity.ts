/**
 * Which network the car is on, as the key of the keepalive memory (src/uplink/link-memory.ts): the interface of the
 * default route, and the Wi-Fi network's SSID when that interface is wireless (`wwan0`, `wlan0/depot-wifi`). Each
 * carrier or hotspot has its own NAT, so each gets its own learned interval.
 *
 * The route and the interface type come from the kernel's own files (/proc/net/route, /proc/net/ipv6_route,
 * /sys/class/net/<iface>/wireless), read asynchronously: the check runs every minute beside the CAN frame path, and
 * must never block the event loop (systeminformation's interface listing runs shell commands synchronously, which
 * stalled the process for hundreds of milliseconds at every check). Only a wireless interface costs a call to the
 * Wi-Fi tools (through systeminformation, loaded then), for its SSID. Any failure reads as NO_NETWORK, never throws.
 */
import { access, readFile } from 'node:fs/promises';

/** The key used while no default route exists (or the lookup fails). */
export const NO_NETWORK = 'unidentified';

const RTF_UP = 0x1;
/** An unreachable or prohibit route: no way out. */
const RTF_REJECT = 0x200;

/** The interface of the IPv4 default route with the lowest metric, from /proc/net/route's text; null if none. */
export function defaultRouteInterface(routeTable: string): string | null {
  let best: { iface: string; metric: number } | null = null;
  for (const line of routeTable.split('\n').slice(1)) {
    const [iface, destination, , flags, , , metric, mask] = line.trim().split(/\s+/);
    if (iface === undefined || destination !== '00000000' || mask !== '00000000') continue;
    if ((parseInt(flags ?? '0', 16) & (RTF_UP | RTF_REJECT)) !== RTF_UP) continue;
    const m = Number(metric);
    if (best === null || m < best.metric) best = { iface, metric: m };
  }
  return best?.iface ?? null;
}

/** The interface of the IPv6 default route (::/0) with the lowest metric, from /proc/net/ipv6_route's text; null if none. */
export function defaultRouteInterface6(routeTable: string): string | null {
  let best: { iface: string; metric: number } | null = null;
  for (const line of routeTable.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    const [destination, prefix, , , , metric, , , flags, iface] = fields;
    if (!/^0{32}$/.test(destination!) || prefix !== '00' || iface === 'lo') continue;
    if ((parseInt(flags!, 16) & (RTF_UP | RTF_REJECT)) !== RTF_UP) continue;
    const m = parseInt(metric!, 16);
    if (best === null || m < best.metric) best = { iface: iface!, metric: m };
  }
  return best?.iface ?? null;
}

async function readOrEmpty(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

export async function identifyNetwork(): Promise<string> {
  try {
    const iface = defaultRouteInterface(await readOrEmpty('/proc/net/route')) ?? defaultRouteInterface6(await readOrEmpty('/proc/net/ipv6_route'));
    if (iface === null) return NO_NETWORK;
    const wireless = await access(`/sys/class/net/${iface}/wireless`).then(
      () => true,
      () => false,
    );
    if (!wireless) return iface;
    const { default: si } = await import('systeminformation');
    const connections = await si.wifiConnections();
    const ssid = connections.find((c) => c.iface === iface)?.ssid;
    return ssid ? `${iface}/${ssid}` : iface;
  } catch {
    return NO_NETWORK;
  }
}

/** Calls `onChange` with the network key now and whenever it changes (checked every `intervalMs`); returns a stop. */
export function watchNetwork(onChange: (network: string) => void, intervalMs = 60_000): () => void {
  let last: string | undefined;
  let stopped = false;
  const check = (): void => {
    void identifyNetwork().then((network) => {
      if (stopped || network === last) return;
      last = network;
      onChange(network);
    });
  };
  check();
  const timer = setInterval(check, intervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
