/**
 * Config templates as a head-unit integrator passes them to scripts/provision: every shipped example config
 * (device-config/*.json, found by listing the folder, so a new example is covered without touching this file) makes a
 * bundle the agent loads, with the files it names and the identity; a template's problems come all at once, with exit
 * status 65; and the bundle layout docs/provisioning.md shows is the one provision makes.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { sourceFiles } from '../../src/agent/sources/registry.js';
import { loadDeviceConfig, parseDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { candumpLine } from '../support/drive-log.js';
import { runProgramSync, type ProgramRun } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const BROKER = 'mqtts://broker.fleet.example:8883';
/** Where flash installs a bundle and where the agent keeps its state on the car. */
const ON_CAR = '/etc/telematics-agent';
const STATE = '/var/lib/telematics-agent';
const EXAMPLES_DIR = path.join(repoRoot, 'device-config');

let work: string;
let pki: string;

function provision(device: string, bundle: string, template: string): ProgramRun {
  return runProgramSync('scripts/provision', [
    '--device',
    device,
    '--bundle',
    bundle,
    '--ca',
    path.join(pki, 'ca.crt'),
    '--ca-key',
    path.join(pki, 'ca.key'),
    '--command-ca',
    path.join(pki, 'command-ca.crt'),
    '--broker',
    BROKER,
    '--config-template',
    template,
  ]);
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string, rel = ''): string[] {
  return readdirSync(path.join(dir, rel))
    .sort()
    .flatMap((name) => {
      const child = rel ? `${rel}/${name}` : name;
      return statSync(path.join(dir, child)).isDirectory() ? filesUnder(dir, child) : [child];
    });
}

/** The files a loaded config needs: each bus's DBC and the files its source names (the source registry says which). */
function neededFiles(config: DeviceConfig): string[] {
  return config.buses.flatMap((bus) => [bus.dbc, ...sourceFiles(bus).map(({ file }) => file)]);
}

const mode = (file: string): number => statSync(file).mode & 0o777;

before(() => {
  work = makeTempDir('templates-');
  pki = path.join(work, 'dev');
  const made = runProgramSync('scripts/dev-pki', ['--out', pki]);
  assert.equal(made.status, 0, made.stderr);
});

describe('[16.provision] every shipped example config is a provisioning template', () => {
  const examples = readdirSync(EXAMPLES_DIR).filter((name) => name.endsWith('.json') && name !== 'device-config.schema.json');

  test('[16.provision] the shipped examples are found', () => {
    for (const known of ['default.json', 'socketcan.example.json', 'elm327.example.json', 'replay-truck.example.json'])
      assert.ok(examples.includes(known), known);
  });

  for (const example of examples) {
    const templateFile = path.join(EXAMPLES_DIR, example);
    // The truck example replays the shared recording, which lives beside the repository, never in it.
    const template = loadDeviceConfig(templateFile, { checkFiles: false });
    // Its paths are relative to the example, so only a checkout beside ../shared has them (TELEMATICS_SHARED_TESTDATA,
    // which the other tests follow, cannot move them): said as the skip's reason, never silently.
    const missing = neededFiles(template).filter((file) => !existsSync(file));
    test(
      `[16.provision] device-config/${example} provisions a bundle the agent loads, with the files it names and the identity`,
      { skip: missing.length > 0 ? `${example} names files this checkout does not have beside it: ${missing.join(', ')}` : false },
      () => {
        const device = `car-${example.replace(/\W+/g, '-')}`.slice(0, 64);
        const bundle = path.join(work, device);
        const made = provision(device, bundle, templateFile);
        assert.equal(made.status, 0, `${made.stderr}${made.stdout}`);
        assert.match(made.stdout, new RegExp(`bundle for ${device} complete`));

        // The agent's own loader, inside the bundle: every file the config names is there.
        const inBundle = loadDeviceConfig(path.join(bundle, 'config.json'));
        assert.equal(inBundle.deviceId, device);
        for (const file of neededFiles(inBundle)) assert.ok(file.startsWith(bundle + path.sep), `${file} is in the bundle`);
        // Each is a copy of the template's file, under the same name.
        assert.deepEqual(
          neededFiles(inBundle).map((file) => path.basename(file)),
          neededFiles(template).map((file) => path.basename(file)),
        );
        neededFiles(inBundle).forEach((file, i) => assert.ok(readFileSync(file).equals(readFileSync(neededFiles(template)[i]!)), file));

        // At the paths flash installs it to: the files in /etc/telematics-agent, the state in /var/lib.
        const onCar = parseDeviceConfig(JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8')), {
          file: `${ON_CAR}/config.json`,
          baseDir: ON_CAR,
          checkFiles: false,
        });
        for (const file of neededFiles(onCar)) assert.ok(file.startsWith(`${ON_CAR}/`), file);
        assert.equal(onCar.outbox?.path, `${STATE}/outbox.db`);
        assert.equal(onCar.commands?.replayDbPath, `${STATE}/commands.db`);
        assert.equal(onCar.commands?.caFile, `${ON_CAR}/certs/command-ca.crt`);
        assert.equal(onCar.uplink?.url, BROKER);
        assert.equal(onCar.uplink?.embeddedBroker, false);
        assert.equal(onCar.uplink?.certFile, `${ON_CAR}/identity/device.crt`);
        assert.equal(onCar.uplink?.keyFile, `${ON_CAR}/identity/device.key`);
        assert.equal(onCar.uplink?.caFile, `${ON_CAR}/certs/broker-ca.crt`);
        // What the car reads and publishes is the template's.
        assert.deepEqual(onCar.collection, template.collection);
        assert.deepEqual(
          onCar.buses.map((b) => [b.name, b.source.type]),
          template.buses.map((b) => [b.name, b.source.type]),
        );
        assert.deepEqual(onCar.obdAdapters, template.obdAdapters);
        assert.ok((onCar.status?.intervalMs ?? 0) >= 60_000, 'a status line a minute at most, in the journal');

        // The identity: its folder and key the owner's only, as the agent checks them at start.
        assert.equal(mode(bundle), 0o700);
        assert.equal(mode(path.join(bundle, 'identity')), 0o700);
        assert.equal(mode(path.join(bundle, 'identity', 'device.key')), 0o600);
        assert.equal(mode(path.join(bundle, 'identity', 'device.csr')), 0o644);
        assert.equal(mode(path.join(bundle, 'identity', 'device.crt')), 0o644);
        assert.equal(mode(path.join(bundle, 'certs', 'broker-ca.crt')), 0o644);
        assert.equal(mode(path.join(bundle, 'certs', 'command-ca.crt')), 0o644);
        const identity = loadIdentity({
          certFile: inBundle.uplink!.certFile!,
          keyFile: inBundle.uplink!.keyFile!,
          caFile: inBundle.uplink!.caFile!,
          requireIssuer: true,
        });
        assert.equal(identity.commonName, device);
        assert.ok(existsSync(path.join(bundle, 'telematics-agent.service')));
      },
    );
  }
});

describe('[16.provision] what a template must give, and what provisioning fills in', () => {
  let dir: string;
  before(() => {
    dir = makeTempDir('template-cases-');
  });

  const collection = {
    batch: { maxSamples: 10, maxDelayMs: 1000 },
    rules: [{ name: 'drive', mode: 'periodic', intervalMs: 1000, signals: ['VehicleSpeed', 'obd.rpm'] }],
  };
  const writeTemplate = (name: string, json: unknown): string => {
    const file = path.join(dir, name);
    writeFileSync(file, JSON.stringify(json));
    return file;
  };

  test('[16.provision] every problem of a template is listed at once, one per line naming its field; exit status 65, nothing written', () => {
    const template = writeTemplate('broken.json', {
      deviceId: 'bench',
      buses: [{ name: 'can0', dbc: 'no-such.dbc', source: { type: 'replay', file: 'no-such.log', speed: 'fast' } }],
      outbox: 3,
      colour: 'red',
    });
    const bundle = path.join(dir, 'broken-bundle');
    const refused = provision('car-broken', bundle, template);
    assert.equal(refused.status, 65, refused.stdout);
    assert.equal(refused.stdout, '');
    const lines = refused.stderr.trimEnd().split('\n');
    assert.equal(lines[0], `telematics-provision: --config-template ${template}: 6 problems:`);
    assert.deepEqual(lines.slice(1).sort(), [
      `  (top level): unknown field 'colour'`,
      `  buses[0].dbc: file not found: ${path.join(dir, 'no-such.dbc')}`,
      `  buses[0].source.file: file not found: ${path.join(dir, 'no-such.log')}`,
      `  buses[0].source.speed: expected number, got "fast"`,
      `  collection: required: the collection rules say what this car publishes, and provisioning does not choose them (device-config/default.json has an example)`,
      `  outbox: expected object, got 3`,
    ]);
    assert.ok(!existsSync(bundle), 'nothing written');
  });

  test('[16.provision] a signal that no DBC of the template has is found at provisioning, not at the start on the car', () => {
    const template = writeTemplate('unknown-signals.json', {
      buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
      status: { signals: ['ENGINE_DATA.EngineSpeed', 'ENGINE_DATA.EngineSped'] },
      collection: { ...collection, rules: [{ name: 'drive', mode: 'periodic', intervalMs: 1000, signals: ['VehicleSpeed', 'Throttle', 'obd.rmp'] }] },
    });
    const bundle = path.join(dir, 'unknown-signals-bundle');
    const refused = provision('car-signals', bundle, template);
    assert.equal(refused.status, 65, refused.stdout);
    assert.deepEqual(refused.stderr.trimEnd().split('\n'), [
      `telematics-provision: --config-template ${template}: 3 problems:`,
      `  status.signals[1]: no bus DBC has a signal 'ENGINE_DATA.EngineSped'`,
      `  collection.rules[0] (drive).signals[1]: no bus DBC has a signal 'Throttle'`,
      `  collection.rules[0] (drive).signals[2]: no bus DBC has a signal 'obd.rmp' (OBD signals are obd.<J1979 key>, e.g. obd.rpm)`,
    ]);
    assert.ok(!existsSync(bundle), 'nothing written');
  });

  test('[16.provision] a template without an outbox (which the loader alone refuses) gets one in the state folder; an outbox it has keeps its settings', () => {
    const bare = writeTemplate('no-outbox.json', { deviceId: 'bench', buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }], collection });
    assert.throws(() => loadDeviceConfig(bare), /outbox: required with collection/);
    const made = provision('car-no-outbox', path.join(dir, 'no-outbox-bundle'), bare);
    assert.equal(made.status, 0, made.stderr);
    assert.match(made.stdout, /outbox: none in the template: the agent's defaults, in \/var\/lib\/telematics-agent/);
    const config = loadDeviceConfig(path.join(dir, 'no-outbox-bundle', 'config.json'));
    assert.equal(config.outbox?.path, `${STATE}/outbox.db`);
    assert.equal(config.outbox?.maxBytes, 64 * 1024 * 1024, "the agent's default");

    const tuned = writeTemplate('tuned-outbox.json', {
      buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
      collection,
      outbox: { path: '../var/bench.db', maxBytes: 1_048_576, durability: 'full' },
    });
    assert.equal(provision('car-tuned', path.join(dir, 'tuned-bundle'), tuned).status, 0);
    const kept = loadDeviceConfig(path.join(dir, 'tuned-bundle', 'config.json')).outbox;
    assert.deepEqual([kept?.path, kept?.maxBytes, kept?.durability], [`${STATE}/outbox.db`, 1_048_576, 'full']);
  });
  test("[16.provision] a template's development uplink settings stay out of the bundle; its tuning is kept", () => {
    const template = writeTemplate('dev-uplink.json', {
      deviceId: 'bench',
      buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
      collection,
      outbox: { path: '../var/bench.db' },
      uplink: {
        url: 'mqtts://localhost:8883',
        embeddedBroker: true,
        certsDir: '../certs/dev',
        issuerFile: '../certs/dev/ca.crt',
        protocol: 4,
        keepalive: { memoryPath: '../var/link.db' },
        throttle: { messagesPerHour: 600 },
      },
    });
    const made = provision('car-dev-uplink', path.join(dir, 'dev-uplink-bundle'), template);
    assert.equal(made.status, 0, made.stderr);
    const uplink = (JSON.parse(readFileSync(path.join(dir, 'dev-uplink-bundle', 'config.json'), 'utf8')) as { uplink: Record<string, unknown> }).uplink;
    // A file outside the bundle would be missing on the car: the bundle pins its own broker CA.
    assert.deepEqual(uplink, {
      url: BROKER,
      protocol: 4,
      keepalive: {},
      throttle: { messagesPerHour: 600 },
      certFile: 'identity/device.crt',
      keyFile: 'identity/device.key',
      caFile: 'certs/broker-ca.crt',
    });
    assert.match(made.stdout, /uplink\.issuerFile of the template left out: the bundle pins certs\/broker-ca\.crt/);
  });
});

describe('[16.provision] docs/provisioning.md shows the bundle provision makes', () => {
  test('[16.provision] every file of a bundle is in the documented layout, and every documented entry is in the bundle', () => {
    // A template that uses everything a bundle can hold: a DBC, a source that names a file (a replay's log).
    const dir = makeTempDir('layout-');
    const log = path.join(dir, 'drive.log');
    writeFileSync(log, `${candumpLine(1, 0x100, [0, 0, 0, 0, 0, 0, 0, 0])}\n`);
    const template = path.join(dir, 'template.json');
    writeFileSync(
      template,
      JSON.stringify({
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: log } }],
        collection: { batch: { maxSamples: 10, maxDelayMs: 1000 }, rules: [{ name: 'drive', mode: 'change', signals: ['VehicleSpeed'] }] },
      }),
    );
    const bundle = path.join(dir, 'bundle');
    const made = provision('car-layout', bundle, template);
    assert.equal(made.status, 0, made.stderr);

    const docs = readFileSync(path.join(repoRoot, 'docs', 'provisioning.md'), 'utf8');
    const block = /is laid out exactly as `\/etc\/telematics-agent` will be on the car:\n\n```\n([\s\S]*?)```/.exec(docs);
    assert.ok(block, 'the layout block in docs/provisioning.md');
    const documented = block[1]!
      .trimEnd()
      .split('\n')
      .map((line) => line.split(/\s+/)[0]!);
    // A documented folder (`dbc/`) stands for the files in it; any other entry is one file.
    const entryOf = (file: string): string | undefined => documented.find((entry) => (entry.endsWith('/') ? file.startsWith(entry) : file === entry));
    const files = filesUnder(bundle);
    assert.deepEqual(
      files.filter((file) => entryOf(file) === undefined),
      [],
      'files of the bundle the docs do not show',
    );
    assert.deepEqual(
      documented.filter((entry) => !files.some((file) => entryOf(file) === entry)),
      [],
      'entries the docs show that the bundle does not have',
    );
  });
});
