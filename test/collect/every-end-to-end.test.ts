/**
 * The `every` collection mode end to end: the real J1939 truck recording replayed by the agent (its replay source,
 * PGN matching, its collector, codec, SQLite outbox and mutual-TLS uplink) to a backend subscribed on mosquitto, in
 * both payload formats; the backend must get every sample of the recording, none more, with the frames' times and
 * the values derived from the log and the DBC text (test/support/truck-recording.ts). And the rule set remotely:
 * setConfig accepts the mode, applies it at once, keeps it across a restart, and refuses a bad one naming the field.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommandFailure, type CommandContext } from '../../src/commands/handler.js';
import { setConfig } from '../../src/commands/handlers/set-config.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { decodeMessage } from '../../src/uplink/codec.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { writeConfig } from '../support/agent-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { makeTempDir } from '../support/temp.js';
import { TRUCK_DBC, TRUCK_LOG, truckFilesMissing, truckSamplesFromText, truckSkipReason } from '../support/truck-recording.js';
import { waitFor } from '../support/wait.js';

const SIGNALS = ['EEC1.EngineSpeed', 'CCVS1.WheelBasedVehicleSpeed'];
const EVERY_PRIORITY = 6;
const SUMMARY_PRIORITY = 2;

describe(
  '[17.every] every sample of the real truck recording, from the replay source through the agent to a backend on mosquitto',
  { timeout: 180_000, skip: truckSkipReason() },
  () => {
    const fleet = withBroker();

    for (const format of ['cbor', 'json'] as const) {
      it(`[17.every] ${format}: the backend gets all 13,991 samples with the frames' times and values, in messages of at most 500 at the rule's priority`, async (t) => {
        assert.deepEqual(truckFilesMissing(), [], 'the truck recording is in the shared test data');
        const dir = makeTempDir(`every-e2e-${format}-`);
        const deviceId = `truck-every-${format}`;
        const configFile = writeConfig(dir, 'config', {
          deviceId,
          // As fast as the agent takes it: 127 s of recording in well under a second of frame time scaled.
          buses: [{ name: 'can0', dbc: TRUCK_DBC, j1939: true, source: { type: 'replay', file: TRUCK_LOG, speed: 1000 } }],
          collection: {
            format,
            rules: [
              { name: 'raw', mode: 'every', priority: EVERY_PRIORITY, signals: SIGNALS },
              { name: 'summary', mode: 'periodic', intervalMs: 1000, priority: SUMMARY_PRIORITY, signals: SIGNALS },
            ],
          },
          outbox: { path: 'var/outbox.db', writeIntervalMs: 100 },
          uplink: { url: fleet.broker.url, ...fleet.pki.identityFiles(deviceId), reconnect: { initialMs: 50, maxMs: 400 } },
        });
        const agent = await InProcessAgent.start(configFile);
        fleet.beforeStop(() => agent.close());
        await waitFor(() => agent.ended !== undefined, 'the replay to reach the end of the recording', 60_000);
        assert.equal(agent.ended?.error, undefined);
        // The last open batches go to the outbox now rather than after maxDelayMs; then the backend must get them all.
        const { dataPath } = agent;
        dataPath.collector.flush();
        dataPath.commitBatches();
        const committed = dataPath.outbox.stats().appended;
        const telemetry = () => fleet.backend.on(deviceId, 'telemetry');
        await waitFor(() => telemetry().length >= committed, `the backend to receive the ${committed} telemetry messages`, 60_000);
        await agent.close();

        // Duplicates (QoS 1 may deliver one twice) go by sequence number, as a backend drops them.
        const bySeq = new Map(telemetry().map((m) => [decodeMessage(m.payload, format).header.seq, m]));
        assert.equal(bySeq.size, committed);
        const messages = [...bySeq.entries()].sort(([a], [b]) => a - b).map(([, m]) => ({ bytes: m.payload.length, ...decodeMessage(m.payload, format) }));
        const every = messages.filter((m) => m.header.priority === EVERY_PRIORITY);
        const summary = messages.filter((m) => m.header.priority === SUMMARY_PRIORITY);
        assert.equal(every.length + summary.length, messages.length, 'no other priority');

        // The binary layout groups a message's samples by signal (each series in time order); a backend puts them in
        // time order across signals, as here. JSON keeps the collector's order, which is already that.
        const byTime = <T extends { us: number; signal: string }>(list: T[]): T[] =>
          list.sort((a, b) => a.us - b.us || (a.signal < b.signal ? -1 : a.signal > b.signal ? 1 : 0));
        const expected = byTime(truckSamplesFromText());
        const got = byTime(every.flatMap((m) => m.samples.map((s) => ({ us: Math.round(s.ts * 1e6), signal: s.signal, value: s.value }))));
        assert.equal(got.length, 13_991);
        assert.equal(expected.length, 13_991);
        got.forEach((s, i) => {
          const e = expected[i]!;
          if (s.us !== e.us || s.signal !== e.signal || s.value !== e.value) assert.deepEqual(s, e, `sample ${i} in time order`);
        });
        assert.ok(
          every.every((m) => m.samples.length <= 500),
          'batch.maxSamples',
        );
        assert.ok(every.length >= 28, `${every.length} messages`);
        // The periodic rule's samples went in their own messages: about one per signal and second, each one of the frames.
        const frames = new Set(expected.map((e) => `${e.us} ${e.signal}`));
        const periodic = summary.flatMap((m) => m.samples);
        assert.ok(periodic.length > 200 && periodic.length < 300, `${periodic.length} periodic samples`);
        assert.ok(periodic.every((s) => frames.has(`${Math.round(s.ts * 1e6)} ${s.signal}`)));

        const bytes = every.reduce((sum, m) => sum + m.bytes, 0);
        t.diagnostic(
          `${format}: ${got.length} samples in ${every.length} messages, ${(bytes / got.length).toFixed(2)} wire bytes per sample (device ID '${deviceId}')`,
        );
      });
    }
  },
);

/** Runs setConfig on `context` as the dispatcher would after validating its parameters; its failure, if it fails. */
async function sendSetConfig(context: CommandContext, collection: unknown): Promise<{ result?: unknown; failure?: CommandFailure }> {
  try {
    return { result: await setConfig.run(setConfig.params.parse({ collection }), context, undefined as never) };
  } catch (err) {
    if (err instanceof CommandFailure) return { failure: err };
    throw err;
  }
}

describe('[17.every] setConfig and the every mode', { timeout: 60_000 }, () => {
  it('[17.every] setConfig accepts an every rule, which collects every frame at once and again after a restart; a bad one is refused naming the field', async () => {
    const dir = makeTempDir('every-setconfig-');
    const configFile = writeConfig(dir, 'config', {
      deviceId: 'every-setconfig',
      buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', seed: 1 } }],
      collection: { format: 'json', rules: [{ name: 'speed', mode: 'periodic', intervalMs: 1000, signals: ['VehicleSpeed'] }] },
      outbox: { path: 'var/outbox.db', writeIntervalMs: 50 },
    });
    const collection = { format: 'json', rules: [{ name: 'raw', mode: 'every', priority: 5, signals: ['VehicleSpeed', 'obd.rpm'] }] };

    // Not running: the test feeds the frames.
    const first = await InProcessAgent.start(configFile, { run: false });
    try {
      assert.deepEqual(await sendSetConfig(first.context, collection), { result: { applied: 'collection', rules: 1 } });
      for (let i = 0; i < 5; i++) first.feedSignals('VEHICLE_DYNAMICS', { VehicleSpeed: 50 });
      assert.deepEqual(
        first.dataPath.collector.stats.rules.map((r) => [r.name, r.mode, r.samples]),
        [['raw', 'every', 5]],
      );

      const running = first.dataPath.collector;
      const empty = await sendSetConfig(first.context, { rules: [{ name: 'raw', mode: 'every', signals: [] }] });
      assert.equal(empty.failure?.reason, 'invalid-config');
      assert.match(empty.failure.message, /^collection\.rules\[0\]\.signals: .*>=1 items/);
      const unknown = await sendSetConfig(first.context, { rules: [{ name: 'raw', mode: 'every', signals: ['VehicleSpede'] }] });
      assert.equal(unknown.failure?.reason, 'apply-failed');
      assert.match(unknown.failure.message, /collection\.rules\[0\] \(raw\)\.signals\[0\]: no bus DBC has a signal 'VehicleSpede'/);
      assert.equal(first.dataPath.collector, running, 'the every rule stays in force');
    } finally {
      await first.close();
    }

    const second = await InProcessAgent.start(configFile, { run: false });
    try {
      assert.deepEqual(second.config.collection?.rules, [{ name: 'raw', mode: 'every', priority: 5, signals: ['VehicleSpeed', 'obd.rpm'] }]);
    } finally {
      await second.close();
    }
  });
});
