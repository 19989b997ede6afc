/**
 * The SocketCAN side of the CLI on this host, whose kernel has no CAN: argument and config errors, and the agent
 * waiting for an interface that is not there. What needs a CAN kernel runs in the VM (socketcan-cli.vmtest.ts).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { formatPidValue } from '../../src/agent/obd-polling.js';
import { parsePidArgument } from '../../src/cli/obd.js';
import { runAgent } from '../../src/cli/run.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { runProgramSync } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

/** An interface no test host has. */
const MISSING = 'vt-nowhere0';

/** Runs the CLI expecting exit status 1, nothing on stdout, and `pattern` on stderr. */
function assertFails(args: string[], pattern: RegExp): void {
  const { status, stdout, stderr } = runProgramSync('telematics-agent', args);
  assert.equal(status, 1, `${args.join(' ')}: exit ${status}\n${stderr}`);
  assert.equal(stdout, '', args.join(' '));
  assert.match(stderr, pattern, args.join(' '));
}

describe('SocketCAN command arguments', () => {
  it('obd: names the action, PID, ECU, addressing or interface at fault', () => {
    assertFails(['obd', 'read-vin'], /say where the car is: --iface <can interface> or --port <serial port of an ELM327 adapter>/);
    assertFails(['obd', '--iface', 'vcan0', '--port', '/dev/ttyUSB0'], /--iface and --port exclude each other/);
    assertFails(['obd', '--iface', 'vcan0', '--baud', '38400'], /--baud and --protocol go with --port/);
    assertFails(
      ['obd', '--iface', 'vcan0', 'read-freeze-frame'],
      /value 'read-freeze-frame' is invalid for argument 'action'\. Allowed choices are read-vin, read-pids, read-dtcs, clear-dtcs, discover/,
    );
    assertFails(['obd', '--iface', 'vcan0', 'rpm'], /value 'rpm' is invalid for argument 'action'\. Allowed choices are read-vin/);
    assertFails(['obd', '--iface', 'vcan0', 'read-vin', 'rpm'], /read-vin takes no PIDs \(only read-pids does\): rpm/);
    assertFails(['obd', '--iface', 'vcan0', 'read-pids', 'rpm', 'revs'], /unknown PID "revs" \(names are J1979 keys such as rpm/);
    assertFails(['obd', '--iface', 'vcan0', 'read-pids', '0x6F'], /PID 0x6F is not a J1979 Mode 01 PID the agent can decode/);
    assertFails(['obd', '--iface', 'vcan0', '--ecu', '8', 'read-vin'], /--ecu 8: ECU addresses are 0-7 with 11-bit identifiers/);
    assertFails(['obd', '--iface', 'vcan0', '--ecu', 'engine', 'read-vin'], /option '--ecu <address>' argument 'engine' is invalid\. expected an ECU address/);
    assertFails(['obd', '--iface', 'vcan0', '--addressing', '11bit', 'read-vin'], /argument '11bit' is invalid\. expected 11-bit, 29-bit or auto/);
    assertFails(['obd', '--iface', 'vcan0', '--p2', '0', 'read-vin'], /option '--p2 <ms>' argument '0' is invalid\. expected whole milliseconds/);
    assertFails(['obd', '--iface', 'can 0', 'read-vin'], /argument 'can 0' is invalid\. not a network interface name: "can 0"/);
    assertFails(['obd', '--iface', 'abcdefghijklmnop', 'read-vin'], /not a network interface name: "abcdefghijklmnop"/);
    // The checks that need no kernel come first; then the interface itself.
    assertFails(['obd', '--iface', MISSING, 'read-vin'], new RegExp(`^telematics-agent: interface ${MISSING} does not exist`));
    assertFails(['obd', '--iface', 'lo', 'discover'], /interface lo is not a CAN interface \(hardware type 772, CAN is 280\)/);
  });

  it('sim-ecu: rejects bad DTCs, ECU addresses and time factors before touching the interface', () => {
    assertFails(['sim-ecu'], /required option '-i, --iface <name>' not specified/);
    assertFails(
      ['sim-ecu', '--iface', MISSING, '--dtc', 'P0133', 'P01X3'],
      /argument 'P01X3' is invalid\. "P01X3" is not a DTC \(a letter P, C, B or U and four hex digits/,
    );
    assertFails(['sim-ecu', '--iface', MISSING, '--ecu', '9'], /--ecu 9: ECU addresses are 0-7 with 11-bit identifiers/);
    assertFails(['sim-ecu', '--iface', MISSING, '--ecu', '0x100', '--addressing', '29-bit'], /argument '0x100' is invalid/);
    assertFails(['sim-ecu', '--iface', MISSING, '--addressing', 'auto'], /argument 'auto' is invalid\. expected 11-bit or 29-bit/);
    assertFails(['sim-ecu', '--iface', MISSING, '--speed', '0'], /argument '0' is invalid\. expected a positive number/);
    assertFails(['sim-ecu', '--iface', MISSING, '--start', '-5'], /argument '-5' is invalid\. expected seconds/);
    assertFails(['sim-ecu', '--iface', MISSING], new RegExp(`interface ${MISSING} does not exist`));
  });

  it('decode --iface: one input at a time, and a missing interface is an error, not a wait', () => {
    assertFails(['decode', '--dbc', DEMO_DBC_PATH, '--iface', 'vcan0', '--log', 'x.log'], /--iface and --log are two inputs: give one of them/);
    assertFails(['decode', '--dbc', DEMO_DBC_PATH, '--iface', 'a/b'], /not a network interface name: "a\/b"/);
    assertFails(['decode', '--dbc', DEMO_DBC_PATH, '--iface', MISSING], new RegExp(`interface ${MISSING} does not exist`));
    assertFails(['decode', '--dbc', DEMO_DBC_PATH, '--iface', 'lo'], /interface lo is not a CAN interface/);
  });

  it('run: an OBD section on a bus that is not live is a config error naming the field', () => {
    const dir = makeTempDir('socketcan-run-');
    const file = path.join(dir, 'obd-on-sim.json');
    writeFileSync(
      file,
      JSON.stringify({
        deviceId: 'x',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' }, obd: { pids: [{ pid: 'rpm', intervalMs: 100 }] } }],
      }),
    );
    assertFails(['run', '--config', file, '--duration', '1'], /obd-on-sim\.json: buses\[0\]\.obd: OBD-II polling talks to the ECUs, so it needs a live bus/);
  });

  it('PID arguments: numbers, hex and J1979 names', () => {
    assert.equal(parsePidArgument('12').key, 'rpm');
    assert.equal(parsePidArgument('0x0d').key, 'speed');
    assert.equal(parsePidArgument('coolantTemp').pid, 0x05);
    assert.throws(() => parsePidArgument('256'), /not a J1979 Mode 01 PID/);
    assert.throws(() => parsePidArgument('Rpm'), /unknown PID "Rpm"/);
  });

  it('PID values on the status line: one decimal with the unit, the rest as short text', () => {
    assert.equal(formatPidValue(812.25, 'rpm'), '812.3 rpm');
    assert.equal(formatPidValue(42, 'km/h'), '42 km/h');
    assert.equal(formatPidValue(7, ''), '7');
    assert.equal(formatPidValue(null, ''), '–');
    assert.equal(formatPidValue(true, ''), 'yes');
    assert.equal(formatPidValue('P0133', ''), 'P0133');
    assert.equal(formatPidValue([1, 2], ''), '[1,2]');
  });
});

describe('runAgent on a SocketCAN bus whose interface is missing', () => {
  it('waits without crashing, says so once, shows the state on the status line and stops cleanly', async () => {
    const config = parseDeviceConfig(
      {
        deviceId: 'waiting',
        buses: [
          {
            name: 'vehicle',
            dbc: DEMO_DBC_PATH,
            source: { type: 'socketcan', interface: MISSING },
            obd: { pids: [{ pid: 'rpm', intervalMs: 100 }] },
          },
        ],
        status: { intervalMs: 100, signals: ['EngineSpeed'] },
      },
      { file: 'inline', baseDir: repoRoot },
    );
    const warnings: string[] = [];
    let written = '';
    // 1.2 s: the source retries at 100, 200, 400 ms..., each retry finding the interface still missing.
    const summary = await runAgent({ config, durationS: 1.2, output: { write: (text: string) => (written += text) }, warn: (m) => warnings.push(m) });
    assert.deepEqual(warnings, [`vehicle: interface ${MISSING} is missing; waiting for it`]);
    const statusLines = written.split('\n').filter((line) => line.includes('frames/s'));
    assert.ok(statusLines.length >= 5, written);
    for (const line of statusLines) {
      assert.equal(
        line,
        `0 frames/s, 0 signals/s, 0 unknown, 0 errors | vehicle (${MISSING}) missing, 0 error frames | EngineSpeed – | OBD waiting for the interface`,
      );
    }
    assert.deepEqual(summary.buses, [
      {
        name: 'vehicle',
        source: `socketcan:${MISSING}`,
        frames: 0,
        signals: 0,
        unknownFrames: 0,
        decodeErrors: 0,
        badLogLines: 0,
        errorFrames: 0,
        interfaceState: 'missing',
        obd: { samples: 0, requests: 0, unsupported: 0 },
      },
    ]);
    assert.match(written, new RegExp(`vehicle \\(socketcan:${MISSING}\\): 0 frames, .*, 0 error frames\\n {2}vehicle OBD: 0 samples from 0 requests\\n$`));
  });

  it('refuses a DBC without messages before anything opens, and says once that a non-CAN interface will not open', async () => {
    const dir = makeTempDir('socketcan-run-');
    const emptyDbc = path.join(dir, 'empty.dbc');
    writeFileSync(emptyDbc, 'VERSION ""\n');
    const bus = (dbc: string) => ({
      deviceId: 'x',
      buses: [{ name: 'can0', dbc, source: { type: 'socketcan', interface: 'lo' } }],
      status: { intervalMs: 100, signals: [] },
    });
    // [14.8] A DBC that yields no message is an error naming the bus's key and the file, not a warning.
    const empty = parseDeviceConfig(bus(emptyDbc), { file: 'inline', baseDir: dir });
    await assert.rejects(
      runAgent({ config: empty, configFile: 'inline.json', durationS: 0.8, output: { write: () => undefined }, warn: () => undefined }),
      /inline\.json: buses\[0\]\.dbc: .*empty\.dbc: no message \(BO_\) found/,
    );
    const config = parseDeviceConfig(bus(DEMO_DBC_PATH), { file: 'inline', baseDir: dir });
    const warnings: string[] = [];
    await runAgent({ config, durationS: 0.8, output: { write: () => undefined }, warn: (m) => warnings.push(m) });
    assert.equal(warnings.length, 2, warnings.join('\n'));
    assert.equal(warnings[0], 'can0: interface lo is not a CAN interface (hardware type 772, CAN is 280); the agent keeps trying to open it');
    // Retried several times in 0.8 s, reported once.
    assert.match(warnings[1]!, /^can0: interface lo is down \(.+\); waiting for it to come up$/);
  });
});
