/**
 * The network key of the keepalive memory: the default route's interface, read from the kernel's route tables without
 * running any command (the check runs every minute beside the frame path).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { defaultRouteInterface, defaultRouteInterface6, identifyNetwork, NO_NETWORK } from '../../src/uplink/network-identity.js';

const ROUTE_HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';

describe('network identity', () => {
  it('[19.realrate] the IPv4 default route with the lowest metric, ignoring routes that are down, rejected or not default', () => {
    const table = [
      ROUTE_HEADER,
      'wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0',
      'wwan0\t00000000\t00000000\t0001\t0\t0\t100\t00000000\t0\t0\t0',
      'eth9\t00000000\t00000000\t0002\t0\t0\t0\t00000000\t0\t0\t0', // not up
      'eth8\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0', // reject
      'eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0', // a subnet
    ].join('\n');
    assert.equal(defaultRouteInterface(table), 'wwan0');
    assert.equal(defaultRouteInterface(ROUTE_HEADER), null);
    assert.equal(defaultRouteInterface(''), null);
  });

  it('[19.realrate] the IPv6 default route, not the kernel unreachable routes on lo', () => {
    const table = [
      'fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0',
      '00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     wwan0',
      '00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo',
    ].join('\n');
    assert.equal(defaultRouteInterface6(table), 'wwan0');
    assert.equal(defaultRouteInterface6(table.split('\n')[2]!), null);
  });

  it('[19.realrate] on this machine: the interface `ip route` names for the default route, or none', async () => {
    const network = await identifyNetwork();
    let expected = NO_NETWORK;
    try {
      const route = execFileSync('ip', ['-4', 'route', 'show', 'default'], { encoding: 'utf8' });
      expected = /\bdev (\S+)/.exec(route)?.[1] ?? NO_NETWORK;
    } catch {
      // no ip command: the route table alone decides
    }
    // A wireless default route has its SSID appended (wlan0/depot): the interface comes first.
    assert.equal(network.split('/')[0], expected);
  });
});
