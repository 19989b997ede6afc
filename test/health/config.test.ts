/** The `health` config section: defaults, the loopback rule for the status page, and the Host header check. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeviceConfigError, parseDeviceConfig } from '../../src/config/device-config.js';
import { isLoopbackHost } from '../../src/health/config.js';
import { hostHeaderAllowed } from '../../src/health/http-server.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { repoRoot } from '../support/shared.js';

const base = { deviceId: 'health-config', buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }] };
const parse = (health: unknown) => parseDeviceConfig({ ...base, health }, { file: 'inline', baseDir: repoRoot });

function rejects(health: unknown, fragment: string): void {
  assert.throws(
    () => parse(health),
    (err: unknown) => err instanceof DeviceConfigError && err.message.includes(fragment),
    `expected a DeviceConfigError with '${fragment}'`,
  );
}

describe('health config', () => {
  it('defaults: a report every 300 s, the page on 127.0.0.1:8089, a 30-day certificate warning; no section, no page', () => {
    assert.deepEqual(parse({}).health, {
      intervalS: 300,
      certificateWarningDays: 30,
      http: { enabled: true, host: '127.0.0.1', port: 8089, allowRemote: false },
    });
    assert.equal(parseDeviceConfig(base, { file: 'inline', baseDir: repoRoot }).health, undefined);
    assert.equal(parse({ intervalS: 1, http: { port: 0 } }).health?.http.port, 0);
  });

  it('refuses a host other machines can reach unless allowRemote is set, and bad numbers', () => {
    rejects({ http: { host: '0.0.0.0' } }, "health.http.host: '0.0.0.0' is not a loopback address");
    rejects({ http: { host: '192.168.1.20' } }, 'set allowRemote: true');
    rejects({ http: { host: 'head-unit.local' } }, 'is not a loopback address');
    assert.equal(parse({ http: { host: '0.0.0.0', allowRemote: true } }).health?.http.host, '0.0.0.0');
    for (const host of ['localhost', '127.0.0.1', '127.1.2.3', '::1']) assert.equal(parse({ http: { host } }).health?.http.host, host);
    rejects({ intervalS: 0.5 }, 'health.intervalS: must be at least 1');
    rejects({ http: { port: 70000 } }, 'health.http.port: must be at most 65535');
    rejects({ http: { hots: 'x' } }, "unknown field 'hots'");
  });

  it('loopback hosts and the Host headers the endpoint answers (DNS rebinding needs a name: names are refused)', () => {
    for (const host of ['localhost', 'LOCALHOST', '127.0.0.1', '127.255.0.1', '::1', '[::1]']) assert.ok(isLoopbackHost(host), host);
    for (const host of ['0.0.0.0', '10.0.0.1', '::', 'localhost.evil.example', '128.0.0.1']) assert.ok(!isLoopbackHost(host), host);

    const local = { host: '127.0.0.1', allowRemote: false };
    for (const header of ['127.0.0.1:8089', '127.0.0.1', 'localhost:8089', 'localhost', '[::1]:8089', '[::1]', 'localhost:9000']) {
      assert.ok(hostHeaderAllowed(header, local), header);
    }
    for (const header of [
      undefined,
      '',
      'evil.example',
      'evil.example:8089',
      '127.0.0.1.nip.io:8089',
      'localhost.evil.example',
      '192.168.1.20:8089',
      '::1:8089',
    ]) {
      assert.ok(!hostHeaderAllowed(header, local), String(header));
    }
    // Reachable from the network: IP literals (what a technician types) and the configured name; never other names.
    const remote = { host: '0.0.0.0', allowRemote: true };
    assert.ok(hostHeaderAllowed('192.168.1.20:8089', remote));
    assert.ok(hostHeaderAllowed('[fd00::2]:8089', remote));
    assert.ok(!hostHeaderAllowed('evil.example:8089', remote));
    assert.ok(hostHeaderAllowed('head-unit.local:8089', { host: 'head-unit.local', allowRemote: true }));
  });
});
