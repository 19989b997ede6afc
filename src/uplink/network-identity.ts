/**
 * Which network the car is on, as the key of the keepalive memory (src/uplink/link-memory.ts): the interface of the
 * default route, and the Wi-Fi network's SSID when that interface is wireless (`wwan0`, `wlan0/depot-wifi`). Each
 * carrier or hotspot has its own NAT, so each gets its own learned interval.
 *
 * systeminformation reads /proc and /sys for the route and the interface type; only a wireless interface costs a
 * call to the Wi-Fi tools, so the check is cheap enough to repeat every minute.
 */
import si from 'systeminformation';

/** The key used while no default route exists (or the lookup fails). */
export const NO_NETWORK = 'unidentified';

export async function identifyNetwork(): Promise<string> {
  try {
    const iface = await si.networkInterfaceDefault();
    if (!iface) return NO_NETWORK;
    const interfaces = await si.networkInterfaces();
    const entry = (Array.isArray(interfaces) ? interfaces : [interfaces]).find((i) => i.iface === iface);
    if (entry?.type !== 'wireless') return iface;
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
