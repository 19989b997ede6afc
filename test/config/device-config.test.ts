/** Device config: the shipped files load, paths resolve against the file, mistakes are reported by field. */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  DEVICE_CONFIG_SCHEMA_FILE,
  DeviceConfigError,
  deviceConfigJsonSchema,
  loadDeviceConfig,
  parseDeviceConfig,
} from '../../src/config/device-config.js';
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
    writeFileSync(
      file,
      JSON.stringify({ deviceId: 'x', buses: [{ name: 'can1', dbc: 'bus.dbc', source: { type: 'replay', file: 'logs/drive.log' } }] }),
    );
    const replay = loadDeviceConfig(file).buses[0]!.source;
    assert.deepEqual(replay, { type: 'replay', file: path.join(dir, 'logs', 'drive.log') });
  });

  it('names the field and what it expected for schema violations', () => {
    assertRejects({ buses: [simBus] }, 'deviceId: required string is missing');
    assertRejects({ deviceId: 'x', buses: [] }, 'buses: needs at least 1 entry');
    assertRejects(
      { deviceId: 'x', buses: [{ ...simBus, source: { type: 'socketcan' } }] },
      'buses[0].source.type: expected "sim" or "replay", got "socketcan"',
    );
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'replay' } }] }, 'buses[0].source.file: required string is missing');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, source: { type: 'sim', speed: 0 } }] }, 'buses[0].source.speed: must be greater than 0, got 0');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, dbc: 42 }] }, 'buses[0].dbc: expected string, got 42');
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, j1939: 'yes' }] }, 'buses[0].j1939: expected boolean, got "yes"');
    assertRejects({ deviceId: 'x', buses: [simBus], status: { intervalMs: 10, signals: [] } }, 'status.intervalMs: must be at least 100, got 10');
    assertRejects({ deviceId: 'x', buses: [simBus], satus: {} }, "(top level): unknown field 'satus'");
    assertRejects({ deviceId: 'x', buses: [simBus, simBus] }, "buses[1].name: duplicate bus name 'can0'");
    // All problems at once, each on its own line, with the file named.
    assertRejects({ deviceId: '', buses: [{ ...simBus, dbc: 1 }] }, 'config.json: 2 problems:\n', '  deviceId: must not be empty', '  buses[0].dbc: expected string');
  });

  it('reports files that do not exist, by field', () => {
    assertRejects({ deviceId: 'x', buses: [{ ...simBus, dbc: 'missing.dbc' }] }, 'buses[0].dbc: file not found: ', 'missing.dbc');
    assertRejects(
      { deviceId: 'x', buses: [{ ...simBus, source: { type: 'replay', file: 'gone.log' } }] },
      'buses[0].source.file: file not found: ',
    );
  });

  it('locates JSON syntax errors by line and column', () => {
    assert.throws(() => loadText('{\n  "deviceId": "x",\n  "buses": [,]\n}'), /config\.json: invalid JSON at line 3, column 13: unexpected token ','/);
    assert.throws(() => loadText('{\n  "deviceId": "x"\n  "buses": []\n}'), /invalid JSON at line 3, column 3/);
    assert.throws(() => loadText('{\n  "deviceId": "x",'), /invalid JSON/);
    assert.throws(() => loadDeviceConfig(path.join(tmpdir(), 'no-such-config.json')), /no-such-config\.json: cannot read the device config: file not found/);
  });

  it('the committed JSON Schema is the one the zod schema produces', () => {
    const committed = readFileSync(path.join(repoRoot, DEVICE_CONFIG_SCHEMA_FILE), 'utf8');
    const generated = `${JSON.stringify(deviceConfigJsonSchema(), null, 2)}\n`;
    assert.equal(committed, generated, 'run `npm run build && node scripts/write-config-schema.mjs`');
    const schema = JSON.parse(committed) as { required: string[]; additionalProperties: boolean };
    assert.deepEqual(schema.required, ['deviceId', 'buses']);
    assert.equal(schema.additionalProperties, false);
  });
});
