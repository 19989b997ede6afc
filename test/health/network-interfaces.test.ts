/**
 * The health report's interface list, read from the kernel's files without running anything, against what
 * systeminformation's own listing (which runs commands, synchronously) says of this machine.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import si from 'systeminformation';
import { hostInterfaces } from '../../src/health/network-interfaces.js';

describe('host network interfaces', () => {
  it('[19.realrate] name, addresses, MAC, default route, internal, operstate and type agree with systeminformation', async () => {
    const ours = await hostInterfaces();
    const listed = await si.networkInterfaces();
    const theirs = Array.isArray(listed) ? listed : [listed];
    const view = (i: { iface: string; ip4: string; ip6: string; mac: string; default: boolean; internal: boolean; operstate: string; type: string }) => ({
      iface: i.iface,
      ip4: i.ip4,
      ip6: i.ip6,
      mac: i.mac,
      default: i.default,
      internal: i.internal,
      operstate: i.operstate,
      type: i.type,
    });
    assert.ok(ours.length >= 1);
    assert.deepEqual(ours.map(view), theirs.map(view));
    // Link speeds: what the driver says, or none (systeminformation's -1), never a negative number.
    for (const i of ours) assert.ok(i.speed === null || i.speed > 0, `${i.iface}: ${i.speed}`);
  });
});
