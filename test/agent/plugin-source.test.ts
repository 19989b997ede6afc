/**
 * Sources are plug-ins: a source type defined only in this file, registered at run time, goes through the whole
 * agent as the built-in ones do (config loader -> Agent -> decode -> collect -> the outbox file on disk), with no other
 * file changed. Likewise an adapter type (values, not frames). What the tests read back is the real SQLite outbox.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { z } from 'zod';
import { Agent } from '../../src/agent/agent.js';
import { registerSourceType, sourceFiles } from '../../src/agent/sources/registry.js';
import type { AdapterType, BusSourceType } from '../../src/agent/sources/source-type.js';
import { createFrame } from '../../src/can/frame.js';
import { DeviceConfigError, parseDeviceConfig } from '../../src/config/device-config.js';
import { Logger } from '../../src/health/log.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import type { Sample } from '../../src/collect/sample.js';
import { decodeMessage } from '../../src/uplink/codec.js';
import { makeTempDir } from '../support/temp.js';

/** A bus source that plays a script of messages (JSON lines: ts, message, values), encoded with the bus DBC. */
const scriptSchema = z
  .strictObject({
    type: z.literal('script'),
    file: z.string().min(1).describe('The script, relative to the config file.'),
  })
  .describe('A script of messages, sent once as fast as they go.');
type ScriptConfig = z.output<typeof scriptSchema>;

const scriptSource: BusSourceType<ScriptConfig> = {
  kind: 'bus',
  type: 'script',
  schema: scriptSchema,
  files: ['file'],
  writeRoute: () => ({ to: 'loopback' }),
  create(bus, { decoder }) {
    let sent = 0;
    let state = 'waiting';
    const frames = {
      name: `script:${path.basename(bus.source.file)}`,
      async run(sink: (frame: ReturnType<typeof createFrame>) => void, signal?: AbortSignal): Promise<void> {
        state = 'playing';
        const frame = createFrame();
        frame.bus = bus.name;
        for (const line of readFileSync(bus.source.file, 'utf8').split('\n').filter(Boolean)) {
          if (signal?.aborted) break;
          const step = JSON.parse(line) as { ts: number; message: string; values: Record<string, number> };
          const codec = decoder.database.byName(step.message)!;
          frame.ts = step.ts;
          frame.id = codec.message.id;
          frame.extended = codec.message.extended;
          frame.data = codec.encode(step.values);
          frame.dlc = frame.data.length;
          sink(frame);
          sent++;
        }
        state = 'done';
      },
    };
    return {
      frames,
      obd: null,
      run: (sink, signal) => frames.run(sink, signal),
      link: () => ({ state, controllerState: null, errorFrames: 0, text: `${bus.name} ${state}, ${sent} scripted frames` }),
    };
  },
};

/** An adapter that yields a fixed list of OBD-II values by J1979 key, once. */
const gaugeSchema = z.strictObject({
  type: z.literal('gauge'),
  name: z.string().min(1),
  readings: z.array(z.strictObject({ key: z.string(), value: z.number(), ts: z.number() })).min(1),
});
type GaugeConfig = z.output<typeof gaugeSchema>;

const gaugeAdapter: AdapterType<GaugeConfig> = {
  kind: 'adapter',
  type: 'gauge',
  schema: gaugeSchema,
  obdPolling: () => null,
  create(config, { offer }) {
    let state = 'idle';
    return {
      obd: null,
      async run() {
        for (const reading of config.readings) offer(`${config.name}.obd.${reading.key}`, reading.value, reading.ts);
        state = 'read';
      },
      status: () => ({ state, port: 'none', text: `${config.name} ${state}` }),
    };
  },
};

/** The samples in an outbox file, read as an operator would (read-only), in message order. */
function outboxSamples(file: string): Sample[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare<[], { payload: Buffer }>('SELECT payload FROM message ORDER BY seq').all();
    return rows.flatMap((row) => decodeMessage(new Uint8Array(row.payload), 'json').samples);
  } finally {
    db.close();
  }
}

const T0 = 1_700_000_000;
const SCRIPT = [
  { ts: T0, message: 'ENGINE_DATA', values: { EngineSpeed: 800 } },
  { ts: T0 + 0.1, message: 'ENGINE_DATA', values: { EngineSpeed: 812.5 } },
  { ts: T0 + 0.2, message: 'ENGINE_DATA', values: { EngineSpeed: 812.5 } },
  { ts: T0 + 0.3, message: 'ENGINE_DATA', values: { EngineSpeed: 1500.75 } },
];

function writeSetup(dir: string): object {
  writeFileSync(path.join(dir, 'drive.script'), SCRIPT.map((step) => JSON.stringify(step)).join('\n') + '\n');
  return {
    deviceId: 'plugin-car',
    buses: [{ name: 'bench', dbc: DEMO_DBC_PATH, source: { type: 'script', file: 'drive.script' } }],
    obdAdapters: [{ type: 'gauge', name: 'gauge', readings: [{ key: 'rpm', value: 790, ts: T0 + 0.05 }] }],
    collection: {
      format: 'json',
      batch: { maxDelayMs: 100 },
      rules: [
        { name: 'engine', mode: 'change', priority: 3, signals: ['bench.ENGINE_DATA.EngineSpeed'] },
        { name: 'gauge', mode: 'change', priority: 3, signals: ['gauge.obd.rpm'] },
      ],
    },
    outbox: { path: 'var/outbox.db', writeIntervalMs: 50 },
  };
}

describe('a source type registered at run time', () => {
  const unregister: (() => void)[] = [];
  before(() => {
    unregister.push(registerSourceType(scriptSource), registerSourceType(gaugeAdapter));
  });
  after(() => {
    for (const remove of unregister) remove();
  });

  it('[15.2] runs through the whole agent: the config loader takes it, its frames are decoded, collected and committed to the outbox', async () => {
    const dir = makeTempDir('plugin-source-');
    const config = parseDeviceConfig(writeSetup(dir), { file: path.join(dir, 'device.json'), baseDir: dir });
    // Its file is resolved against the config file, as a replay's log is, and provisioning would carry it.
    assert.deepEqual(sourceFiles(config.buses[0]!), [{ key: 'file', file: path.join(dir, 'drive.script') }]);

    const lines: string[] = [];
    const logger = new Logger({ lines: (line) => lines.push(line) });
    const agent = await Agent.open(config, { logger });
    let summary;
    try {
      // The script ends by itself, and so does the adapter: the run ends when every source has.
      await agent.run({ durationS: 30 });
      assert.equal(agent.snapshot().buses[0]!.link?.text, 'bench done, 4 scripted frames');
    } finally {
      summary = await agent.close();
      logger.close();
    }

    assert.equal(summary.buses[0]!.source, 'script:drive.script');
    assert.equal(summary.buses[0]!.frames, 4);
    assert.equal(summary.buses[0]!.decodeErrors, 0);
    assert.equal(summary.buses[0]!.interfaceState, 'done');
    assert.deepEqual(summary.adapters, [
      { name: 'gauge', port: 'none', state: 'read', obd: { samples: 0, requests: 0, unsupported: 0 }, polls: false, text: 'gauge read' },
    ]);
    assert.equal(summary.dataPath?.buffered, summary.dataPath?.messages);

    // On disk: every change of the scripted signal at its frame's time, and the adapter's value under its name.
    const samples = outboxSamples(path.join(dir, 'var', 'outbox.db'));
    assert.deepEqual(
      samples.filter((s) => s.signal === 'bench.ENGINE_DATA.EngineSpeed').map((s) => [s.ts, s.value]),
      [
        [T0, 800],
        [T0 + 0.1, 812.5],
        [T0 + 0.3, 1500.75],
      ],
    );
    assert.deepEqual(
      samples.filter((s) => s.signal === 'gauge.obd.rpm').map((s) => [s.ts, s.value]),
      [[T0 + 0.05, 790]],
    );
    assert.deepEqual(
      lines.filter((line) => /error|warn/i.test(line)),
      [],
    );
  });

  it('[15.2] the config loader checks it with its own schema, naming the field, and its files exist', () => {
    const dir = makeTempDir('plugin-config-');
    const setup = writeSetup(dir) as { buses: { source: Record<string, unknown> }[] };
    const load = (json: object) => parseDeviceConfig(json, { file: 'device.json', baseDir: dir });
    setup.buses[0]!.source = { type: 'script', file: 'drive.script', speed: 2 };
    assert.throws(
      () => load(setup),
      (err: unknown) => err instanceof DeviceConfigError && err.message === "device.json: buses[0].source: unknown field 'speed'",
    );
    setup.buses[0]!.source = { type: 'script', file: 'gone.script' };
    assert.throws(
      () => load(setup),
      (err: unknown) =>
        err instanceof DeviceConfigError && err.message === `device.json: buses[0].source.file: file not found: ${path.join(dir, 'gone.script')}`,
    );
    setup.buses[0]!.source = { type: 'scripted', file: 'drive.script' };
    assert.throws(
      () => load(setup),
      (err: unknown) =>
        err instanceof DeviceConfigError &&
        err.message === 'device.json: buses[0].source.type: expected "sim" or "replay" or "socketcan" or "script", got "scripted"',
    );
  });

  it('[15.2] is refused again once removed: the loader follows the registry', () => {
    const removeScript = unregister.shift()!;
    removeScript();
    const dir = makeTempDir('plugin-removed-');
    const setup = writeSetup(dir) as { obdAdapters: unknown[] };
    setup.obdAdapters = [];
    assert.throws(
      () => parseDeviceConfig(setup, { file: 'device.json', baseDir: dir }),
      (err: unknown) =>
        err instanceof DeviceConfigError && err.message === 'device.json: buses[0].source.type: expected "sim" or "replay" or "socketcan", got "script"',
    );
  });
});
