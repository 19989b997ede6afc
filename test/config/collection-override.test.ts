/**
 * The collection rules setConfig sets, kept in collection-override.json beside the outbox instead of in the device
 * config (which names the trust anchors and is read-only to the agent on a car): written with the documented mode,
 * never through a pre-placed link, applied at the next start by the whole agent (in-process), and ignored with one
 * warning when the file is missing, corrupt, hostile or names anything but `collection`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Collector } from '../../src/collect/collector.js';
import type { CommandContext } from '../../src/commands/handler.js';
import { setConfig } from '../../src/commands/handlers/set-config.js';
import { applyCollectionOverride, COLLECTION_OVERRIDE_FILE_NAME } from '../../src/config/collection-override.js';
import { loadDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile } from '../../src/dbc/index.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { makeTempDir } from '../support/temp.js';

const INITIAL_COLLECTION = {
  batch: { maxSamples: 50, maxDelayMs: 300 },
  format: 'json',
  rules: [{ name: 'speed', mode: 'periodic', intervalMs: 200, signals: ['VehicleSpeed'] }],
};
const NEW_COLLECTION = {
  batch: { maxSamples: 20, maxDelayMs: 500 },
  format: 'json',
  rules: [
    { name: 'engine', mode: 'periodic', intervalMs: 200, signals: ['EngineSpeed'] },
    { name: 'gear', mode: 'change', signals: ['GearEngaged'] },
  ],
};

/** A device config in a fresh folder, mode 0640 as flash installs it, with the outbox (and the override) in var/. */
function deviceFolder(): { dir: string; configFile: string; overrideFile: string } {
  const dir = makeTempDir('collection-override-');
  const configFile = path.join(dir, 'config.json');
  const document = {
    deviceId: 'override-test',
    buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', seed: 1 } }],
    collection: INITIAL_COLLECTION,
    outbox: { path: 'var/outbox.db', writeIntervalMs: 50 },
  };
  writeFileSync(configFile, `${JSON.stringify(document, null, 2)}\n`);
  chmodSync(configFile, 0o640);
  return { dir, configFile, overrideFile: path.join(dir, 'var', COLLECTION_OVERRIDE_FILE_NAME) };
}

async function sendSetConfig(context: CommandContext, collection: unknown): Promise<unknown> {
  return setConfig.run(setConfig.params.parse({ collection }), context, undefined as never);
}

function collectionIn(context: CommandContext): { rules: { name: string }[] } {
  return (context.config() as DeviceConfig).collection as { rules: { name: string }[] };
}

describe('[14.9] setConfig keeps the collection rules beside the outbox, never in the device config', { timeout: 60_000 }, () => {
  it('[14.9] config.json stays byte-identical (and 0640), the override holds only `collection`, mode 0600, and the next start runs it', async () => {
    const { configFile, overrideFile } = deviceFolder();
    const before = readFileSync(configFile);
    const first = await InProcessAgent.start(configFile);
    try {
      assert.deepEqual(
        collectionIn(first.context).rules.map((r) => r.name),
        ['speed'],
      );
      assert.deepEqual(await sendSetConfig(first.context, NEW_COLLECTION), { applied: 'collection', rules: 2 });
    } finally {
      await first.close();
    }
    assert.deepEqual(readFileSync(configFile), before, 'the device config is not rewritten');
    assert.equal(statSync(configFile).mode & 0o777, 0o640, 'nor widened');
    assert.deepEqual(JSON.parse(readFileSync(overrideFile, 'utf8')), { collection: NEW_COLLECTION });
    assert.equal(lstatSync(overrideFile).mode & 0o777, 0o600);

    const second = await InProcessAgent.start(configFile);
    try {
      assert.deepEqual(
        collectionIn(second.context).rules.map((r) => r.name),
        ['engine', 'gear'],
        'the next start runs the rules setConfig set',
      );
      assert.deepEqual(
        second.log.filter((w) => w.includes('ignored')),
        [],
      );
    } finally {
      await second.close();
    }
    assert.deepEqual(readFileSync(configFile), before);
  });

  it("[14.L4] a rewrite keeps the override's mode; a link pre-placed at its temporary file is replaced, never written through", async () => {
    const { configFile, overrideFile } = deviceFolder();
    const elsewhere = makeTempDir('collection-override-victim-');
    const victim = path.join(elsewhere, 'victim.json');
    writeFileSync(victim, 'not yours\n');
    chmodSync(victim, 0o644);
    const agent = await InProcessAgent.start(configFile);
    try {
      await sendSetConfig(agent.context, INITIAL_COLLECTION);
      assert.equal(lstatSync(overrideFile).mode & 0o777, 0o600, 'created 0600');
      chmodSync(overrideFile, 0o640);
      // The temporary name is predictable (pid): a link there, to a file the agent can write, must not be followed.
      const temp = path.join(path.dirname(overrideFile), `.${COLLECTION_OVERRIDE_FILE_NAME}.${process.pid}.tmp`);
      symlinkSync(victim, temp);
      await sendSetConfig(agent.context, NEW_COLLECTION);
      assert.equal(readFileSync(victim, 'utf8'), 'not yours\n', 'nothing written through the link');
      assert.equal(statSync(victim).mode & 0o777, 0o644);
      const stats = lstatSync(overrideFile);
      assert.ok(stats.isFile(), 'the override is a regular file, not the link');
      assert.equal(stats.mode & 0o777, 0o640, 'the mode it had is kept');
      assert.deepEqual(JSON.parse(readFileSync(overrideFile, 'utf8')), { collection: NEW_COLLECTION });
      assert.deepEqual(
        readdirSync(path.dirname(overrideFile)).filter((name) => name.endsWith('.tmp')),
        [],
      );
    } finally {
      await agent.close();
    }
  });

  it("[14.9] a FIFO in place of the override: the agent starts at once on the config's rules and says why", async () => {
    const { configFile, overrideFile } = deviceFolder();
    mkdirSync(path.dirname(overrideFile));
    assert.equal(spawnSync('mkfifo', [overrideFile]).status, 0);
    const agent = await InProcessAgent.start(configFile);
    try {
      assert.deepEqual(
        collectionIn(agent.context).rules.map((r) => r.name),
        ['speed'],
      );
      const said = agent.log.filter((w) => w.includes(overrideFile));
      assert.equal(said.length, 1, agent.log.join('\n'));
      assert.match(
        said[0]!,
        /^config: the collection rules set by setConfig are ignored: .* is a FIFO, not a regular file; the device config's own rules are in force$/,
      );
    } finally {
      await agent.close();
    }
  });

  describe('[14.9] at start, an override that cannot be used is ignored with one warning naming it and why', () => {
    const { configFile, overrideFile } = deviceFolder();
    const config = loadDeviceConfig(configFile);
    const buses = [new BusDecoder('can0', compileDatabase(loadDbcFile(DEMO_DBC_PATH, { strict: true })))];
    const check = (collection: NonNullable<DeviceConfig['collection']>): void => {
      new Collector({ config: collection, buses, onBatch: () => undefined });
    };
    const elsewhere = makeTempDir('collection-override-elsewhere-');
    const valid = path.join(elsewhere, 'valid.json');
    writeFileSync(valid, JSON.stringify({ collection: NEW_COLLECTION }));

    /** Puts `make` in place of the override, applies it, and returns what was logged. */
    const apply = (make: () => void): { result: DeviceConfig; warnings: string[]; infos: string[] } => {
      mkdirSync(path.dirname(overrideFile), { recursive: true });
      spawnSync('rm', ['-rf', overrideFile]);
      make();
      const warnings: string[] = [];
      const infos: string[] = [];
      const result = applyCollectionOverride(config, check, { warn: (m) => warnings.push(m), info: (m) => infos.push(m) });
      return { result, warnings, infos };
    };

    it('[14.9] none there: the config as it is, nothing said', () => {
      const { result, warnings, infos } = apply(() => undefined);
      assert.equal(result, config);
      assert.deepEqual([...warnings, ...infos], []);
    });

    it('[14.9] a usable one: its rules, one line saying so', () => {
      const { result, warnings, infos } = apply(() => writeFileSync(overrideFile, JSON.stringify({ collection: NEW_COLLECTION })));
      assert.deepEqual(
        result.collection!.rules.map((r) => r.name),
        ['engine', 'gear'],
      );
      assert.deepEqual(result.uplink, config.uplink);
      assert.deepEqual(warnings, []);
      assert.equal(infos.length, 1);
      assert.ok(infos[0]!.includes(overrideFile), infos[0]);
    });

    const refused: Array<[string, () => void, RegExp]> = [
      ['not JSON', () => writeFileSync(overrideFile, '{"collection": {'), /is not JSON/],
      // A compromised agent could write this file: it must never carry anything but the collection rules.
      [
        'naming the trust anchors',
        () =>
          writeFileSync(
            overrideFile,
            JSON.stringify({ collection: NEW_COLLECTION, uplink: { caFile: '/tmp/evil-ca.crt' }, commands: { caFile: '/tmp/evil-ca.crt' } }),
          ),
        /is not a collection override .*nothing else.*: \(top level\): Unrecognized keys: "uplink", "commands"/,
      ],
      [
        'off the schema',
        () => writeFileSync(overrideFile, JSON.stringify({ collection: { batch: { maxSamples: 0 }, rules: [] } })),
        /collection\.batch\.maxSamples/,
      ],
      [
        'rules naming a signal no bus has',
        () =>
          writeFileSync(
            overrideFile,
            JSON.stringify({ collection: { rules: [{ name: 'typo', mode: 'periodic', intervalMs: 100, signals: ['VehicleSpede'] }] } }),
          ),
        /no bus DBC has a signal 'VehicleSpede'/,
      ],
      ['a link to a usable file elsewhere', () => symlinkSync(valid, overrideFile), /is a symbolic link, which is not followed/],
      ['a link to /dev/zero', () => symlinkSync('/dev/zero', overrideFile), /is a symbolic link, which is not followed/],
      ['a FIFO', () => spawnSync('mkfifo', [overrideFile]), /is a FIFO, not a regular file/],
      ['a folder', () => mkdirSync(overrideFile), /is a folder, not a regular file/],
      [
        'a huge sparse file',
        () => {
          writeFileSync(overrideFile, '');
          truncateSync(overrideFile, 8 * 1024 ** 3);
        },
        /is 8\.0 GiB, more than the 4\.0 MiB it may be/,
      ],
    ];
    for (const [what, make, why] of refused) {
      it(`[14.9] ${what}: ignored, the config's own rules in force`, () => {
        const { result, warnings, infos } = apply(make);
        assert.equal(result, config, 'the config as loaded');
        assert.deepEqual(infos, []);
        assert.equal(warnings.length, 1, warnings.join('\n'));
        assert.ok(warnings[0]!.startsWith('config: the collection rules set by setConfig are ignored: '), warnings[0]);
        assert.ok(warnings[0]!.includes(overrideFile), warnings[0]);
        assert.match(warnings[0]!, why);
        assert.ok(warnings[0]!.endsWith("; the device config's own rules are in force"), warnings[0]);
        assert.ok(!warnings[0]!.includes('\n'), 'one line');
      });
    }
  });
});
