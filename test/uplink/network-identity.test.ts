/**
 * [19.wakeup] The network key of the adaptive heartbeat's memory (src/uplink/network-identity.ts), read from the
 * kernel's files instead of systeminformation's child processes: on this machine it names the interface
 * systeminformation names; from files a test writes, the default route of the lowest metric, the SSID only for a
 * wireless interface that is up, and the fallback without a default route.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import si from 'systeminformation';
import { defaultRouteInterface, identifyNetwork, listedAsWireless, NO_NETWORK, type NetworkFiles } from '../../src/uplink/network-identity.js';
import { makeTempDir } from '../support/temp.js';

const ROUTE_HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';

/** A /proc/net/route line: destination, gateway and mask as the kernel writes them (hex, host order). */
function route(iface: string, destination: string, mask: string, metric: number, flags = '0003'): string {
  return `${iface}\t${destination}\t0101A8C0\t${flags}\t0\t0\t${metric}\t${mask}\t0\t0\t0`;
}

/** Kernel files in a folder of the test's own: the route table, /proc/net/wireless, and each interface's operstate. */
function networkFiles(routes: string[], wireless: string[], operstate: Record<string, string>): NetworkFiles {
  const dir = makeTempDir('network-identity-');
  writeFileSync(path.join(dir, 'route'), [ROUTE_HEADER, ...routes, ''].join('\n'));
  const wirelessHeader =
    'Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n';
  writeFileSync(
    path.join(dir, 'wireless'),
    wirelessHeader + wireless.map((i) => `${i}: 0000   70.  -40.  -256        0      0      0      0      0        0\n`).join(''),
  );
  for (const [iface, state] of Object.entries(operstate)) {
    mkdirSync(path.join(dir, iface));
    writeFileSync(path.join(dir, iface, 'operstate'), `${state}\n`);
  }
  return { route: path.join(dir, 'route'), wireless: path.join(dir, 'wireless'), operstate: (iface) => path.join(dir, iface, 'operstate') };
}

describe('[19.wakeup] network identity from the kernel files', () => {
  it('[19.wakeup] on this machine it names the interface of the default route, as systeminformation does', async () => {
    const expected = await si.networkInterfaceDefault();
    const network = await identifyNetwork();
    // This machine has no Wi-Fi: the key is the bare interface name (or the fallback both share without a route).
    assert.equal(network.split('/')[0], expected || NO_NETWORK);
  });

  it('[19.wakeup] the default route of the lowest metric wins; routes that are down or not default are not taken', () => {
    const table = [
      ROUTE_HEADER,
      route('eth1', '0000A8C0', '00FFFFFF', 0),
      route('wlan0', '00000000', '00000000', 600),
      route('wwan0', '00000000', '00000000', 700),
      route('eth2', '00000000', '00000000', 10, '0002'),
      route('usb0', '00000000', '00000000', 100),
    ].join('\n');
    assert.equal(defaultRouteInterface(table), 'usb0');
    assert.equal(defaultRouteInterface([ROUTE_HEADER, route('eth1', '0000A8C0', '00FFFFFF', 0)].join('\n')), undefined);
    assert.equal(defaultRouteInterface(''), undefined);
  });

  it('[19.wakeup] a wireless interface that is up adds its SSID; one that is down, or wired, is the bare name', async () => {
    const asked: string[] = [];
    const ssidOf = async (iface: string): Promise<string | undefined> => {
      asked.push(iface);
      return 'depot-wifi';
    };
    const wifiUp = networkFiles([route('wlan0', '00000000', '00000000', 600)], ['wlan0'], { wlan0: 'up' });
    assert.equal(await identifyNetwork(wifiUp, ssidOf), 'wlan0/depot-wifi');
    const wifiDormant = networkFiles([route('wlan0', '00000000', '00000000', 600)], ['wlan0'], { wlan0: 'dormant' });
    assert.equal(await identifyNetwork(wifiDormant, ssidOf), 'wlan0');
    const cellular = networkFiles([route('wwan0', '00000000', '00000000', 700)], ['wlan0'], { wwan0: 'up', wlan0: 'up' });
    assert.equal(await identifyNetwork(cellular, ssidOf), 'wwan0');
    // The SSID is asked for the wireless interface that is up, and only for it.
    assert.deepEqual(asked, ['wlan0']);
    const noSsid = networkFiles([route('wlan0', '00000000', '00000000', 600)], ['wlan0'], { wlan0: 'up' });
    assert.equal(await identifyNetwork(noSsid, async () => undefined), 'wlan0');
    assert.ok(listedAsWireless(' wlan0: 0000   70.\n', 'wlan0'));
    assert.ok(!listedAsWireless(' wlan0: 0000   70.\n', 'wlan'));
  });

  it('[19.wakeup] without a default route, the first external interface (as systeminformation falls back), or unidentified', async () => {
    const noRoute = networkFiles([], [], {});
    // systeminformation's choice (lib/network.js, getDefaultNetworkInterface, before it asks `ip route`).
    const external = Object.entries(os.networkInterfaces()).flatMap(([iface, addresses]) =>
      (addresses ?? []).filter((a) => !a.internal).map((a) => ({ iface, a })),
    );
    const scoped = external
      .filter(({ a }) => a.family === 'IPv6' && a.scopeid)
      .sort((x, y) => (x.a as os.NetworkInterfaceInfoIPv6).scopeid - (y.a as os.NetworkInterfaceInfoIPv6).scopeid);
    const expected = scoped[0]?.iface ?? external[0]?.iface ?? NO_NETWORK;
    assert.equal(await identifyNetwork(noRoute, async () => undefined), expected);
  });
});
