/** Device config: the shipped files load, paths resolve against the file, mistakes are reported by field. */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Elm327AdapterConfig } from '../../src/agent/sources/elm327.js';
import { SOURCE_READ_INTERVAL_MS } from '../../src/can/frame.js';
import { DEFAULT_RECEIVE_BUFFER_BYTES } from '../../src/can/socketcan.js';
import { DEVICE_CONFIG_SCHEMA_FILE, DeviceConfigError, deviceConfigJsonSchema, loadDeviceConfig, parseDeviceConfig } from '../../src/config/device-config.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const configDir = path.join(repoRoot, 'device-config');

/** Writes `content` as a config file in a fresh folder (with an empty DBC beside it) and loads it. */
function loadText(content: string): ReturnType<typeof loadDeviceConfig> {
  const dir = makeTempDir('device-config-');
  writeFileSync(path.join(dir, 'car.dbc'), 'VERSION ""\n');
  const file = path.join(dir, 'config.json');
  writeFileSync(file, content);
  return loadDeviceConfig(file);
}

function loadJson(json: unknown): ReturnType<typeof loadDeviceConfig> {
  return loadText(JSON.stringify(json, null, 2));
}

const simBus = { name: 'can0', dbc: 'car.dbc', source: { type: 'sim' } };
/** What a socketcan source reads with when its config says nothing. */
const SOCKETCAN_READ_DEFAULTS = { readIntervalMs: SOURCE_READ_INTERVAL_MS, receiveBufferBytes: DEFAULT_RECEIVE_BUFFER_BYTES };

/** Asserts that loading fails with a DeviceConfigError whose message contains every fragment. */
function assertRejects(json: unknown, ...fragments: string[]): void {
  assert.throws(
    () => loadJson(json),
    (err: unknown) => {
      assert.ok(err instanceof DeviceConfigError, String(err));
      for (const fragment of fragments) assert.ok(err.message.includes(fragment), `'${fragment}' not in:\n${err.message}`);
      return true;
    },
  );
}

describe('device config', () => {
  it('loads default.json: the simulated demo vehicle on can0, paths made absolute', () => {
    const config = loadDeviceConfig(path.join(configDir, 'default.json'));
    assert.equal(config.deviceId, 'demo-vehicle-001');
    assert.equal(config.buses.length, 1);
    const bus = config.buses[0]!;
    assert.equal(bus.name, 'can0');
    assert.equal(bus.dbc, path.join(configDir, 'dbc', 'demo_vehicle.dbc'));
    assert.ok(existsSync(bus.dbc));
    assert.deepEqual(bus.source, { type: 'sim', speed: 1, seed: 1 });
    assert.equal(config.status?.intervalMs, 1000);
    assert.deepEqual(config.status?.signals, [
      'VEHICLE_DYNAMICS.VehicleSpeed',
      'ENGINE_DATA.EngineSpeed',
      'TRANSMISSION.GearEngaged',
      'ENGINE_TEMPS.CoolantTemp',
      'FUEL_STATUS.FuelLevel',
      'ODOMETER.Odometer',
    ]);
  });

  it('validates the truck replay example, resolving its log and DBC against the config folder', () => {
    const file = path.join(configDir, 'replay-truck.example.json');
    const json: unknown = JSON.parse(readFileSync(file, 'utf8'));
    const config = parseDeviceConfig(json, { file, baseDir: configDir, checkFiles: false });
    const bus = config.buses[0]!;
    assert.equal(bus.j1939, true);
    assert.equal(bus.dbc, path.resolve(configDir, '../../shared/testdata/dbc/css_j1939_demo.dbc'));
    assert.equal(bus.source.type, 'replay');
    if (bus.source.type === 'replay') {
      assert.equal(bus.source.file, path.resolve(configDir, '../../shared/testdata/logs/css_j1939_truck_11111111_00000012_00000001.candump.log'));
      assert.equal(bus.source.loop, true);
    }
  });

  it('fills in defaults and resolves relative paths against the config file, not the working directory', () => {
    const config = loadJson({ deviceId: 'x', buses: [simBus], status: { signals: ['Speed'] } });
    assert.equal(config.status?.intervalMs, 1000);
    assert.ok(path.isAbsolute(config.buses[0]!.dbc));
    assert.equal(path.basename(config.buses[0]!.dbc), 'car.dbc');
    assert.notEqual(path.dirname(config.buses[0]!.dbc), process.cwd());

    const dir = makeTempDir('device-config-');
    mkdirSync(path.join(dir, 'logs'));
    writeFileSync(path.join(dir, 'logs', 'drive.log'), '');
    writeFileSync(path.join(dir, 'bus.dbc'), 'VERSION ""\n');
    const file = path.join(dir, 'replay.json');
    writeFileSync(file, JSON.stringify({ deviceId: 'x', buses: [{ name: 'can1', dbc: 'bus.dbc', source: { type: 'replay', file: 'logs/drive.log' } }] }));
    const replay = loadDeviceConfig(file).buses[0]!.source;
    assert.deepEqual(replay, { type: 'replay', file: path.join(dir, 'logs', 'drive.log'), readIntervalMs: SOURCE_READ_INTERVAL_MS });
  });

  it('names the field and what it expected for schema violations', () => {
    assertRejects({ buses: [simBus] }, 'deviceId: required string is missing');
    assertRejects({ deviceId: 'x', buses: [] }, 'buses: nothing to read: configure at least one bus or OBD adapter');
    assertRejects(
      { deviceId: 'x', buses: [{ ...simBus, source: { type: 'can' } }] },
      'buses[0].source.type: expected "sim" or "replay" or "socketcan", got "can"',
    );
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'replay' } }] }, 'buses[0].source.file: required string is missing');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'sim', speed: 0 } }] }, 'buses[0].source.speed: must be greater than 0, got 0');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, dbc: 42 }] }, 'buses[0].dbc: expected string, got 42');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, j1939: 'yes' }] }, 'buses[0].j1939: expected boolean, got "yes"');
    assertRejects({ deviceId: 'x', buses: [simBus], status: { intervalMs: 10, signals: [] } }, 'status.intervalMs: must be at least 100, got 10');
    assertRejects({ deviceId: 'x', buses: [simBus], satus: {} }, "(top level): unknown field 'satus'");
    assertRejects({ deviceId: 'x', buses: [simBus, simBus] }, "buses[1].name: duplicate bus name 'can0'");
    // All problems at once, each on its own line, with the file named.
    assertRejects(
      { deviceId: '', buses: [{ ...simBus, dbc: 1 }] },
      'config.json: 2 problems:\n',
      '  deviceId: "" cannot be a device ID: it is empty',
      '  buses[0].dbc: expected string',
    );
  });

  it('reports files that do not exist, by field', () => {
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, dbc: 'missing.dbc' }] }, 'buses[0].dbc: file not found: ', 'missing.dbc');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'replay', file: 'gone.log' } }] }, 'buses[0].source.file: file not found: ');
  });

  it('[14.L10] a collection section that would claim more memory than maxMemoryMB does not load: the reason says what it claims', () => {
    const trigger = (name: string) => ({ name, mode: 'trigger', signals: ['VehicleSpeed'], trigger: { when: 'VehicleSpeed > 200', bufferSamples: 1_000_000 } });
    const collection = { rules: Array.from({ length: 10 }, (_, i) => trigger(`t${i}`)) };
    const outbox = { path: 'outbox.db' };
    assertRejects(
      { deviceId: 'x', buses: [simBus], outbox, collection },
      'config.json: collection: the rules would hold up to 1160 MB in memory, over the budget of 64 MB (maxMemoryMB)',
    );
    assert.equal(loadJson({ deviceId: 'x', buses: [simBus], outbox, collection: { ...collection, maxMemoryMB: 1500 } }).collection?.maxMemoryMB, 1500);
    assert.equal(
      loadJson({
        deviceId: 'x',
        buses: [simBus],
        outbox,
        collection: { rules: [trigger('one')].map((r) => ({ ...r, trigger: { ...r.trigger, bufferSamples: 100_000 } })) },
      }).collection?.maxMemoryMB,
      64,
    );
  });

  it('locates JSON syntax errors by line and column', () => {
    assert.throws(() => loadText('{\n  "deviceId": "x",\n  "buses": [,]\n}'), /config\.json: invalid JSON at line 3, column 13: unexpected token ','/);
    assert.throws(() => loadText('{\n  "deviceId": "x"\n  "buses": []\n}'), /invalid JSON at line 3, column 3/);
    assert.throws(() => loadText('{\n  "deviceId": "x",'), /invalid JSON/);
    assert.throws(() => loadDeviceConfig(path.join(tmpdir(), 'no-such-config.json')), /no-such-config\.json: cannot read the device config: file not found/);
  });

  it('validates the SocketCAN example: can0 with the demo DBC and an OBD poll of rpm, speed and coolant', () => {
    const config = loadDeviceConfig(path.join(configDir, 'socketcan.example.json'));
    const bus = config.buses[0]!;
    assert.deepEqual(bus.source, { type: 'socketcan', interface: 'can0', timestamps: true, filter: 'dbc', ...SOCKETCAN_READ_DEFAULTS });
    assert.equal(bus.dbc, path.join(configDir, 'dbc', 'demo_vehicle.dbc'));
    assert.equal(bus.obd?.addressing, '11-bit');
    assert.deepEqual(
      bus.obd?.pids.map((p) => p.pid),
      ['rpm', 'speed', 'coolantTemp'],
    );
  });

  it('validates the ELM327 example: one adapter by its stable by-id path, no CAN bus, protocol search by default', () => {
    const config = loadDeviceConfig(path.join(configDir, 'elm327.example.json'));
    assert.deepEqual(config.buses, []);
    // An entry of the elm327 type (the default): its plug-in's config.
    const adapter = config.obdAdapters[0] as Elm327AdapterConfig;
    assert.equal(adapter.port, '/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0');
    assert.equal(adapter.protocol, 'auto');
    assert.equal(adapter.baudRate, undefined);
    assert.deepEqual(
      adapter.pids.map((p) => p.pid),
      ['rpm', 'speed', 'coolantTemp', 'fuelLevel'],
    );
  });

  it('names what is wrong with an OBD adapter', () => {
    const adapter = (extra: Record<string, unknown>) => ({
      deviceId: 'x',
      obdAdapters: [{ name: 'obd', port: '/dev/ttyUSB0', pids: [{ pid: 'rpm', intervalMs: 100 }], ...extra }],
    });
    assertRejects(adapter({ protocol: 13 }), 'obdAdapters[0].protocol');
    assertRejects(adapter({ protocol: 'CAN' }), 'obdAdapters[0].protocol');
    assertRejects(adapter({ baudRate: 12 }), 'obdAdapters[0].baudRate');
    assertRejects(adapter({ pids: [{ pid: 'revs', intervalMs: 100 }] }), 'obdAdapters[0].pids[0].pid: unknown PID name "revs"');
    assertRejects(adapter({ port: '' }), 'obdAdapters[0].port');
    assertRejects(adapter({ tty: '/dev/ttyUSB1' }), 'obdAdapters[0]');
    assertRejects(
      {
        deviceId: 'x',
        buses: [{ name: 'obd', dbc: 'car.dbc', source: { type: 'sim' } }],
        obdAdapters: [{ name: 'obd', port: '/dev/ttyUSB0', pids: [{ pid: 'rpm', intervalMs: 100 }] }],
      },
      "obdAdapters[0].name: duplicate name 'obd'",
    );
  });

  it('a socketcan source defaults to kernel timestamps and DBC receive filters; OBD to 11-bit identifiers', () => {
    const config = loadJson({
      deviceId: 'x',
      buses: [{ name: 'vehicle', dbc: 'car.dbc', source: { type: 'socketcan', interface: 'vcan0' }, obd: { pids: [{ pid: 12, intervalMs: 100 }] } }],
    });
    const bus = config.buses[0]!;
    assert.deepEqual(bus.source, { type: 'socketcan', interface: 'vcan0', timestamps: true, filter: 'dbc', ...SOCKETCAN_READ_DEFAULTS });
    assert.deepEqual(bus.obd, { addressing: '11-bit', pids: [{ pid: 12, intervalMs: 100 }] });
    // Names the kernel accepts, up to 15 characters.
    for (const name of ['can0', 'vt-cli0', 'slcan_usb.1', 'abcdefghijklmno', 'can@car', '...']) {
      assert.doesNotThrow(() => loadJson({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'socketcan', interface: name } }] }), name);
    }
    // 29-bit addressing: ECU addresses are bytes.
    const wide = loadJson({
      deviceId: 'x',
      buses: [
        {
          ...simBus,
          source: { type: 'socketcan', interface: 'can1', filter: 'none', timestamps: false },
          obd: {
            addressing: '29-bit',
            p2Ms: 200,
            pids: [{ pid: 'rpm', intervalMs: 250, ecu: 0x18 }],
            budget: { maxRequestsPerSecond: 5 },
            backoff: { maxMs: 10000 },
          },
        },
      ],
    });
    assert.equal(wide.buses[0]!.obd?.pids[0]!.ecu, 0x18);
    assert.deepEqual(wide.buses[0]!.source, { type: 'socketcan', interface: 'can1', filter: 'none', timestamps: false, ...SOCKETCAN_READ_DEFAULTS });
  });

  it('[19.realrate] a socketcan or replay source takes its read interval and receive buffer, within bounds', () => {
    const withSource = (source: Record<string, unknown>) => ({ deviceId: 'x', buses: [{ ...simBus, source }] });
    const live = loadJson(withSource({ type: 'socketcan', interface: 'can0', readIntervalMs: 50, receiveBufferBytes: 4 << 20 }));
    assert.deepEqual(live.buses[0]!.source, {
      type: 'socketcan',
      interface: 'can0',
      timestamps: true,
      filter: 'dbc',
      readIntervalMs: 50,
      receiveBufferBytes: 4 << 20,
    });
    const replay = loadJson(withSource({ type: 'replay', file: 'config.json', readIntervalMs: 0 }));
    const replaySource = replay.buses[0]!.source;
    assert.equal(replaySource.type === 'replay' ? replaySource.readIntervalMs : undefined, 0);
    assertRejects(withSource({ type: 'socketcan', interface: 'can0', readIntervalMs: 1001 }), 'buses[0].source.readIntervalMs');
    assertRejects(withSource({ type: 'socketcan', interface: 'can0', readIntervalMs: 2.5 }), 'buses[0].source.readIntervalMs');
    assertRejects(withSource({ type: 'socketcan', interface: 'can0', receiveBufferBytes: 1000 }), 'buses[0].source.receiveBufferBytes');
    assertRejects(withSource({ type: 'replay', file: 'config.json', readIntervalMs: -1 }), 'buses[0].source.readIntervalMs');
  });

  it('rejects interface names the kernel would refuse, saying what a name may be', () => {
    const withInterface = (name: unknown) => ({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'socketcan', interface: name } }] });
    const rule = "not a network interface name (1-15 characters, no '/', ':' or whitespace, not '.' or '..')";
    assertRejects(withInterface('can 0'), `buses[0].source.interface: ${rule}, got "can 0"`);
    assertRejects(withInterface('../can0'), 'buses[0].source.interface: not a network interface name', 'got "../can0"');
    assertRejects(withInterface('can0:1'), 'buses[0].source.interface: not a network interface name');
    assertRejects(withInterface(''), 'buses[0].source.interface: not a network interface name', 'got ""');
    assertRejects(withInterface('..'), 'buses[0].source.interface: not a network interface name');
    assertRejects(withInterface('abcdefghijklmnop'), 'buses[0].source.interface: not a network interface name', 'got "abcdefghijklmnop"');
    // 15 characters but 16 bytes: the kernel counts bytes.
    assertRejects(
      withInterface('can-bus-fahrwëg'),
      'buses[0].source.interface: not a network interface name: "can-bus-fahrwëg" is 16 bytes, the kernel allows 15',
    );
    assertRejects(withInterface(0), 'buses[0].source.interface: expected string, got 0');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'socketcan' } }] }, 'buses[0].source.interface: required string is missing');
    assertRejects(
      { deviceId: 'x', buses: [{ ...simBus, source: { type: 'socketcan', interface: 'can0', filter: 'all' } }] },
      'buses[0].source.filter: expected "dbc" or "none", got "all"',
    );
    assertRejects(
      { deviceId: 'x', buses: [{ ...simBus, source: { type: 'socketcan', interface: 'can0', timestamps: 'kernel' } }] },
      'buses[0].source.timestamps: expected boolean, got "kernel"',
    );
    assertRejects(
      { deviceId: 'x', buses: [{ ...simBus, source: { type: 'socketcan', interface: 'can0', bitrate: 500000 } }] },
      "buses[0].source: unknown field 'bitrate'",
    );
  });

  it('OBD polling only on a socketcan bus, with PIDs the agent knows and ECUs the addressing has', () => {
    const live = { type: 'socketcan', interface: 'can0' };
    const withObd = (obd: unknown, source: unknown = live) => ({ deviceId: 'x', buses: [{ ...simBus, source, obd }] });
    const rpm = { pid: 'rpm', intervalMs: 100 };
    assertRejects(
      withObd({ pids: [rpm] }, { type: 'sim' }),
      'buses[0].obd: OBD-II polling talks to the ECUs, so it needs a live bus: source.type must be "socketcan", not "sim"',
    );
    assertRejects(withObd({ pids: [rpm] }, { type: 'replay', file: 'car.dbc' }), 'buses[0].obd: OBD-II polling', 'not "replay"');
    assertRejects(withObd({ pids: [{ pid: 'rpms', intervalMs: 100 }] }), 'buses[0].obd.pids[0].pid: unknown PID name "rpms"');
    assertRejects(withObd({ pids: [{ pid: 'RPM', intervalMs: 100 }] }), 'buses[0].obd.pids[0].pid: unknown PID name "RPM"; did you mean "rpm"?');
    assertRejects(withObd({ pids: [{ pid: 'coolant', intervalMs: 100 }] }), 'did you mean "coolantTemp"?');
    assertRejects(withObd({ pids: [rpm, { pid: 300, intervalMs: 100 }] }), 'buses[0].obd.pids[1].pid: a PID is a byte (0-255), got 300');
    assertRejects(
      withObd({ pids: [{ pid: 0x6f, intervalMs: 100 }] }),
      'buses[0].obd.pids[0].pid: PID 111 (0x6F) is not a J1979 Mode 01 PID the agent can decode',
    );
    assertRejects(withObd({ pids: [{ pid: 0x20, intervalMs: 100 }] }), 'buses[0].obd.pids[0].pid: PID 0x20 (pidsSupported20) only lists supported PIDs');
    assertRejects(
      withObd({ pids: [{ pid: true, intervalMs: 100 }] }),
      'buses[0].obd.pids[0].pid: expected a Mode 01 PID number (e.g. 12) or its name (e.g. "rpm"), got true',
    );
    assertRejects(withObd({ pids: [{ ...rpm, ecu: 8 }] }), 'buses[0].obd.pids[0].ecu: ECU 8 does not exist with 11-bit identifiers (0-7)');
    assertRejects(withObd({ addressing: '29-bit', pids: [{ ...rpm, ecu: 256 }] }), 'buses[0].obd.pids[0].ecu: must be at most 255, got 256');
    assertRejects(withObd({ addressing: 'extended', pids: [rpm] }), 'buses[0].obd.addressing: expected "11-bit" or "29-bit", got "extended"');
    assertRejects(withObd({ pids: [{ pid: 'rpm', intervalMs: 0 }] }), 'buses[0].obd.pids[0].intervalMs: must be at least 10, got 0');
    assertRejects(withObd({ pids: [{ pid: 'rpm' }] }), 'buses[0].obd.pids[0].intervalMs: required number is missing');
    assertRejects(withObd({ pids: [] }), 'buses[0].obd.pids: needs at least 1 entry');
    assertRejects(withObd({ pids: [rpm], budget: { maxRequestsPerSecond: -1 } }), 'buses[0].obd.budget.maxRequestsPerSecond: must be greater than 0, got -1');
    assertRejects(withObd({ pids: [rpm], budget: { requests: 5 } }), "buses[0].obd.budget: unknown field 'requests'");
    assertRejects(withObd({ pids: [rpm], p2Ms: 0 }), 'buses[0].obd.p2Ms: must be at least 1, got 0');
  });

  it('the committed JSON Schema is the one the zod schema produces', () => {
    const committed = readFileSync(path.join(repoRoot, DEVICE_CONFIG_SCHEMA_FILE), 'utf8');
    const generated = `${JSON.stringify(deviceConfigJsonSchema(), null, 2)}\n`;
    assert.equal(committed, generated, 'run `npm run build && node scripts/write-config-schema.mjs`');
    const schema = JSON.parse(committed) as { required: string[]; additionalProperties: boolean };
    assert.deepEqual(schema.required, ['deviceId']);
    assert.equal(schema.additionalProperties, false);
  });
});
