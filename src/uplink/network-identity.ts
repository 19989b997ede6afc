/**
 * Which network the car is on, as the key of the keepalive memory (src/uplink/link-memory.ts): the interface of the
 * default route, and the Wi-Fi network's SSID when that interface is wireless (`wwan0`, `wlan0/depot-wifi`). Each
 * carrier or hotspot has its own NAT, so each gets its own learned interval.
 *
 * The route and the interface's kind come from the kernel's own files: /proc/net/route (the IPv4 table `ip route`
 * prints; the default route of the lowest metric), /sys/class/net/<iface>/operstate and /proc/net/wireless. That is a
 * few file reads, no child process: the lookup runs before the first connection (the car starts from what it learned
 * on this network) and again every minute, so it must neither delay the connection nor cost a process per check.
 * Only a wireless interface's SSID needs NetworkManager or wpa_supplicant: systeminformation asks them, imported then.
 * Without a default route the key is the first external interface (IPv6 scope first), as systeminformation chose it,
 * so a car whose modem lost its route in a dead zone keeps its network's memory; with none, NO_NETWORK.
 *
 * Failure: nothing throws; what cannot be read makes the key NO_NETWORK (no route, no interface) or the bare
 * interface name (the SSID).
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';

/** The key used while no default route exists (or the lookup fails). */
export const NO_NETWORK = 'unidentified';

/** Where the kernel's files are: tests point it at a folder of their own. */
export interface NetworkFiles {
  /** /proc/net/route */
  route: string;
  /** /proc/net/wireless */
  wireless: string;
  /** /sys/class/net/<iface>/operstate */
  operstate: (iface: string) => string;
}

export const KERNEL_FILES: NetworkFiles = {
  route: '/proc/net/route',
  wireless: '/proc/net/wireless',
  operstate: (iface) => `/sys/class/net/${iface}/operstate`,
};

/** A file's text, or '' when it cannot be read. */
export async function kernelText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

/** The interface of the default IPv4 route of the lowest metric in /proc/net/route's text, or undefined. */
export function defaultRouteInterface(routeTable: string): string | undefined {
  let best: { iface: string; metric: number } | undefined;
  // Iface Destination Gateway Flags RefCnt Use Metric Mask ...: hex fields; the first line is the header.
  for (const line of routeTable.split('\n').slice(1)) {
    const [iface, destination, , flags, , , metric, mask] = line.trim().split(/\s+/);
    if (iface === undefined || mask === undefined) continue;
    // RTF_UP (0x1): a route the kernel uses; destination and mask 0: the default route.
    const up = (Number.parseInt(flags ?? '0', 16) & 0x1) !== 0;
    if (!up || Number.parseInt(destination ?? '', 16) !== 0 || Number.parseInt(mask, 16) !== 0) continue;
    const m = Number.parseInt(metric ?? '0', 10);
    if (best === undefined || m < best.metric) best = { iface, metric: m };
  }
  return best?.iface;
}

/**
 * The interface systeminformation falls back to without a default route: the external one whose IPv6 address has the
 * lowest scope ID, else the first external one listed.
 */
function firstExternalInterface(): string | undefined {
  let first: string | undefined;
  let scoped: { iface: string; scopeid: number } | undefined;
  for (const [iface, addresses] of Object.entries(os.networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.internal) continue;
      first ??= iface;
      const scopeid = address.family === 'IPv6' ? address.scopeid : undefined;
      if (scopeid && (scoped === undefined || scopeid < scoped.scopeid)) scoped = { iface, scopeid };
    }
  }
  return scoped?.iface ?? first;
}

/** Whether /proc/net/wireless's text lists `iface` (`  wlan0: 0000 ...`). */
export function listedAsWireless(wirelessTable: string, iface: string): boolean {
  return wirelessTable.split('\n').some((line) => line.trim().split(':')[0] === iface);
}

/** The SSID `iface` is connected to, asked of NetworkManager or wpa_supplicant through systeminformation. */
async function connectedSsid(iface: string): Promise<string | undefined> {
  try {
    const { wifiConnections } = await import('systeminformation');
    const connections = await wifiConnections();
    return connections.find((c) => c.iface === iface)?.ssid || undefined;
  } catch {
    return undefined;
  }
}

/** The interface of the default route, else the first external interface (systeminformation's fallback), else undefined. */
export async function defaultInterface(files: NetworkFiles = KERNEL_FILES): Promise<string | undefined> {
  return defaultRouteInterface(await kernelText(files.route)) ?? firstExternalInterface();
}

export async function identifyNetwork(
  files: NetworkFiles = KERNEL_FILES,
  ssidOf: (iface: string) => Promise<string | undefined> = connectedSsid,
): Promise<string> {
  try {
    const iface = await defaultInterface(files);
    if (!iface) return NO_NETWORK;
    // systeminformation's rule: wireless is an interface that is up and listed in /proc/net/wireless.
    const up = (await kernelText(files.operstate(iface))).trim() === 'up';
    if (!up || iface === 'lo' || !listedAsWireless(await kernelText(files.wireless), iface)) return iface;
    const ssid = await ssidOf(iface);
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
