/**
 * Every remote command, end to end through a real mosquitto, against the whole running agent: `runAgent` (the
 * composition root `npm start` runs) started on a device config file in a temp folder, with a simulated vehicle on
 * its CAN bus, the ELM327 simulator on a pseudo-terminal as its OBD-II adapter, the SQLite outbox and replay memory,
 * and the MQTT 5 uplink to the broker. The operator signs each command, publishes it to mosquitto, and every result
 * asserted here is the one that came back through mosquitto.
 *
 * The config has a second simulated bus, `aux`, with a one-message DBC written beside the config: a workshop tool's
 * SERVICE_CTRL frame (ServiceMode: Off, Workshop, Transport), sent once at start and then only every 10 minutes. The
 * simulator never overwrites it during the test, so setSignal can change it for good, and the clearDtcs
 * precondition (`IgnitionState != OFF && ServiceMode == Workshop`, labels from the value tables) can be made to fail
 * and to hold. IgnitionState comes from the live drive cycle: OFF for the first 2 s, then ACC, ON, START and ON again,
 * never OFF again within the test.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { RunSummary } from '../../src/agent/agent.js';
import { runAgent } from '../../src/cli/run.js';
import type { OperatorClient } from '../../src/commands/operator-client.js';
import type { StatusReport } from '../../src/commands/handlers/get-status.js';
import type { CommandResult } from '../../src/commands/result.js';
import { readCollectionOverride } from '../../src/config/collection-override.js';
import { loadDeviceConfig } from '../../src/config/device-config.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { decodeMessage } from '../../src/uplink/codec.js';
import { withBroker } from '../support/broker-fixture.js';
import { CommandPki, operatorClient } from '../support/commands.js';
import { elmOnPty, type ElmRig } from '../support/elm327.js';
import { RECORDED_VIN } from '../support/elm327-recording.js';
import { TestPki, type BackendSubscriber } from '../support/mosquitto.js';
import { makeTempDir } from '../support/temp.js';
import { delay } from '../support/wait.js';

/** The workshop tool's bus: one message, with a value table, that the simulator sends at start and then every 10 min. */
const AUX_DBC = `VERSION "1.0"


NS_ :
	CM_
	BA_DEF_
	BA_
	VAL_
	BA_DEF_DEF_

BS_:

BU_: WSH TCU


BO_ 1536 SERVICE_CTRL: 1 WSH
 SG_ ServiceMode : 0|2@1+ (1,0) [0|2] "" TCU


CM_ BO_ 1536 "Workshop tool: the service mode it has put the car in.";
BA_DEF_ BO_  "GenMsgCycleTime" INT 0 3600000;
BA_DEF_DEF_  "GenMsgCycleTime" 0;
BA_ "GenMsgCycleTime" BO_ 1536 600000;
VAL_ 1536 ServiceMode 0 "Off" 1 "Workshop" 2 "Transport" ;
`;

const CLEAR_DTCS_PRECONDITION = 'IgnitionState != OFF && ServiceMode == Workshop';

const INITIAL_COLLECTION = {
  batch: { maxSamples: 50, maxDelayMs: 300 },
  format: 'json',
  rules: [{ name: 'speed', mode: 'periodic', intervalMs: 200, signals: ['VehicleSpeed'] }],
};

const NEW_COLLECTION = {
  batch: { maxSamples: 50, maxDelayMs: 300 },
  format: 'json',
  rules: [
    { name: 'engine', mode: 'periodic', intervalMs: 200, signals: ['EngineSpeed', 'ENGINE_TEMPS.CoolantTemp'] },
    { name: 'lever', mode: 'change', signals: ['GearLever'] },
  ],
};

function statuses(results: readonly CommandResult[]): string[] {
  return results.map((r) => r.status);
}

/** Signal names in the telemetry messages the backend received from `deviceId` (JSON payloads). */
function telemetrySignals(backend: BackendSubscriber, deviceId: string, from = 0): Set<string> {
  return new Set(
    backend
      .on(deviceId, 'telemetry')
      .slice(from)
      .flatMap((m) => decodeMessage(new Uint8Array(m.payload), 'json').samples.map((s) => s.signal)),
  );
}

describe('every remote command end to end: operator -> mosquitto -> runAgent -> mosquitto -> operator', { timeout: 60_000 }, () => {
  const deviceId = `car-e2e-${process.pid}`;
  const pki = new TestPki('end-to-end test CA');
  const commandPki = new CommandPki();
  const dir = makeTempDir('commands-e2e-');
  const configFile = path.join(dir, 'device.json');
  /** What the agent logged (its warn output, after the log level filter). */
  const log: string[] = [];
  const stop = new AbortController();
  let elm: ElmRig;
  let ops: OperatorClient;
  let running: Promise<RunSummary> | undefined;
  /** Set when the run ended, however it ended. */
  let ended: { summary?: RunSummary; error?: unknown; at: number } | undefined;
  let document: Record<string, unknown>;

  const send = async (name: string, params: unknown = {}, timeoutMs = 15_000): Promise<{ id: string; final: CommandResult; results: CommandResult[] }> => {
    const outcome = await ops.send({ deviceId, name, params }, commandPki.operator, { timeoutMs });
    assert.ok(
      outcome.final,
      `${name}: no final result through the broker within ${timeoutMs} ms (results: ${JSON.stringify(outcome.results)}); agent log:\n${log.join('\n')}`,
    );
    return { id: outcome.id, final: outcome.final, results: outcome.results };
  };

  /** Sends `name` until its final result satisfies `ok` (through the broker each time): waits for the car, not on it. */
  const sendUntil = async (name: string, params: unknown, ok: (final: CommandResult) => boolean, what: string, timeoutMs = 20_000): Promise<CommandResult> => {
    const started = performance.now();
    let last: CommandResult | undefined;
    while (performance.now() - started < timeoutMs) {
      const outcome = await ops.send({ deviceId, name, params }, commandPki.operator, { timeoutMs: 2000 });
      last = outcome.final;
      if (last && ok(last)) return last;
      if (ended) break;
      await delay(100);
    }
    assert.fail(`timed out waiting for ${what}; last result ${JSON.stringify(last)}; agent log:\n${log.join('\n')}`);
  };

  const snapshot = async (signals: string[]): Promise<{ ts: number; values: Record<string, number | string | null>; unavailable: string[] }> => {
    const { final } = await send('captureSnapshot', { signals });
    assert.equal(final.status, 'SUCCEEDED', JSON.stringify(final));
    return final.detail as { ts: number; values: Record<string, number | string | null>; unavailable: string[] };
  };

  // The backend hears everything the car publishes (results, status, health...): each message is checked against the contract.
  const fleet = withBroker({ pki, backend: `vehicles/${deviceId}/#` });
  fleet.beforeStop(async () => {
    stop.abort();
    await running?.catch(() => undefined);
    await ops?.close();
  });

  before(async () => {
    elm = await elmOnPty({ ecus: [{ vin: RECORDED_VIN, dtcs: { stored: ['P0133', 'P0300'], pending: ['P0171'] } }] });
    writeFileSync(path.join(dir, 'aux.dbc'), AUX_DBC);
    document = {
      deviceId,
      buses: [
        { name: 'can0', dbc: DEMO_DBC_PATH, strictDbc: true, source: { type: 'sim', speed: 1, seed: 1 } },
        // Relative to the config file: loadDeviceConfig resolves it.
        { name: 'aux', dbc: 'aux.dbc', strictDbc: true, source: { type: 'sim', speed: 1, seed: 1 } },
      ],
      obdAdapters: [{ name: 'obd', port: elm.path, pids: [{ pid: 'rpm', intervalMs: 100 }] }],
      collection: INITIAL_COLLECTION,
      outbox: { path: 'var/outbox.db', writeIntervalMs: 50 },
      uplink: { url: fleet.broker.url, ...pki.identityFiles(deviceId), protocol: 5, reconnect: { initialMs: 50, maxMs: 400 } },
      commands: {
        caFile: commandPki.caFile,
        replayDbPath: 'var/commands.db',
        preconditions: { clearDtcs: CLEAR_DTCS_PRECONDITION },
        // The simulated buses send all the time; a margin for a busy machine's pauses.
        freshness: { minMs: 5000 },
        allowedSignals: [{ bus: 'aux', message: 'SERVICE_CTRL', signal: 'ServiceMode', min: 0, max: 2, precondition: 'IgnitionState != OFF' }],
      },
    };
    writeFileSync(configFile, `${JSON.stringify(document, null, 2)}\n`);
    const config = loadDeviceConfig(configFile);
    ops = await operatorClient(fleet.broker, pki);
    running = runAgent({ config, signal: stop.signal, output: { write: () => undefined }, warn: (m) => log.push(m) });
    running.then(
      (summary) => (ended = { summary, at: performance.now() }),
      (error: unknown) => (ended = { error, at: performance.now() }),
    );
    // The car has subscribed to its commands once a ping comes back (one sent before that is not delivered).
    await sendUntil('ping', {}, (r) => r.status === 'SUCCEEDED', 'the agent to connect and answer a ping', 20_000);
  });

  after(async () => {
    await elm?.close();
  });

  it("ping: ACCEPTED, IN_PROGRESS, SUCCEEDED, with the echo and the car's clock", async () => {
    const { id, final, results } = await send('ping', { echo: 'end to end' });
    assert.deepEqual(statuses(results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED']);
    assert.equal(final.id, id);
    assert.equal(final.deviceId, deviceId);
    assert.equal(final.command, 'ping');
    const detail = final.detail as { pong: boolean; echo: string; deviceTime: number };
    assert.equal(detail.pong, true);
    assert.equal(detail.echo, 'end to end');
    assert.ok(Math.abs(detail.deviceTime - Date.now()) < 5000, `deviceTime ${detail.deviceTime}`);
    // Through the outbox: each result has a sequence number, increasing.
    const seqs = results.map((r) => r.seq!);
    assert.ok(
      seqs.every((s, i) => Number.isInteger(s) && (i === 0 || s > seqs[i - 1]!)),
      `seqs ${seqs.join(',')}`,
    );
  });

  it('getStatus: the uplink connected, both buses receiving, the OBD adapter connected, the commands counted', async () => {
    // The adapter needs a moment to find the ELM327; its first rpm sample says it is polling.
    await sendUntil('captureSnapshot', { signals: ['obd.rpm'] }, (r) => r.status === 'SUCCEEDED', 'the OBD adapter to poll rpm');
    const { final } = await send('getStatus');
    assert.equal(final.status, 'SUCCEEDED', JSON.stringify(final));
    // The health report's agent part, read now ([17.contract]: one schema for health, /status and getStatus).
    const detail = final.detail as StatusReport;
    assert.equal(detail.deviceId, deviceId);
    const agent = detail.agent;
    assert.equal(agent.uplink?.state, 'connected');
    assert.deepEqual(
      agent.buses.map((b) => [b.name, b.source]),
      [
        ['can0', 'sim'],
        ['aux', 'sim'],
      ],
    );
    const [can0, aux] = agent.buses;
    // The simulated car sends about 600 frames a second; at least a second has passed.
    assert.ok(can0!.frames > 100, `can0 frames ${can0!.frames}`);
    assert.equal(can0!.decodeErrors, 0);
    // The workshop tool's frame, once at start.
    assert.equal(aux!.frames, 1);
    assert.deepEqual(
      agent.obd.map((o) => [o.name, o.via, o.connected]),
      [['obd', 'elm327', true]],
    );
    assert.ok(agent.obd[0]!.answers > 0);
    assert.ok(agent.collector!.samples > 0, `collector samples ${agent.collector!.samples}`);
    assert.ok(agent.commands!.accepted >= 2 && agent.commands!.succeeded >= 2, JSON.stringify(agent.commands));
    assert.equal(typeof agent.outbox!.messages, 'number');
    // The heartbeat's learning and the data budget, beside the agent part.
    assert.equal(typeof detail.heartbeat?.intervalS, 'number');
    assert.equal(detail.throttle?.limited, false);
  });

  it('getConfig: the running config, whole and by section, with paths resolved against the config file', async () => {
    const whole = (await send('getConfig')).final;
    assert.equal(whole.status, 'SUCCEEDED', JSON.stringify(whole));
    const config = (whole.detail as { config: Record<string, unknown> }).config as {
      deviceId: string;
      buses: { name: string; dbc: string }[];
      obdAdapters: { name: string; port: string }[];
      outbox: { path: string };
      commands: { caFile: string; replayDbPath: string; preconditions: Record<string, string> };
    };
    assert.equal(config.deviceId, deviceId);
    assert.deepEqual(
      config.buses.map((b) => [b.name, b.dbc]),
      [
        ['can0', DEMO_DBC_PATH],
        ['aux', path.join(dir, 'aux.dbc')],
      ],
    );
    assert.deepEqual(
      config.obdAdapters.map((a) => [a.name, a.port]),
      [['obd', elm.path]],
    );
    assert.equal(config.outbox.path, path.join(dir, 'var', 'outbox.db'));
    assert.equal(config.commands.caFile, commandPki.caFile);
    assert.equal(config.commands.replayDbPath, path.join(dir, 'var', 'commands.db'));
    assert.deepEqual(config.commands.preconditions, { clearDtcs: CLEAR_DTCS_PRECONDITION });

    const collection = (await send('getConfig', { section: 'collection' })).final;
    assert.equal(collection.status, 'SUCCEEDED');
    const value = (collection.detail as { section: string; value: { batch: unknown; format: string; rules: { name: string; signals: string[] }[] } }).value;
    assert.equal((collection.detail as { section: string }).section, 'collection');
    assert.equal(value.format, 'json');
    assert.deepEqual(
      value.rules.map((r) => [r.name, r.signals]),
      [['speed', ['VehicleSpeed']]],
    );
    // A section the config does not have is null.
    assert.deepEqual((await send('getConfig', { section: 'status' })).final.detail, { section: 'status', value: null });
  });

  it('[14.9] setConfig: new rules run at once (their samples reach the broker), kept in the override file, config.json untouched, getConfig shows them', async () => {
    // The initial rule's samples are on the broker already.
    await fleet.backend.waitFor(() => telemetrySignals(fleet.backend, deviceId).has('can0.VEHICLE_DYNAMICS.VehicleSpeed'), 'VehicleSpeed telemetry', 10_000);
    const before = readFileSync(configFile);
    const { final, results } = await send('setConfig', { collection: NEW_COLLECTION });
    assert.deepEqual(statuses(results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED'], JSON.stringify(final));
    assert.deepEqual(final.detail, { applied: 'collection', rules: 2 });
    const from = fleet.backend.on(deviceId, 'telemetry').length;

    // The device config (it names the trust anchors) is never rewritten; the new section is in the state folder,
    // beside the outbox, as sent and alone, with no temporary file left beside it.
    assert.deepEqual(readFileSync(configFile), before);
    assert.deepEqual(readdirSync(dir).sort(), ['aux.dbc', 'device.json', 'var']);
    const overrideFile = path.join(dir, 'var', 'collection-override.json');
    assert.deepEqual(JSON.parse(readFileSync(overrideFile, 'utf8')), { collection: NEW_COLLECTION });
    assert.equal(statSync(overrideFile).mode & 0o777, 0o600);
    assert.deepEqual(
      readdirSync(path.join(dir, 'var')).filter((name) => name.endsWith('.tmp')),
      [],
    );
    // It loads: the next start runs the new rules.
    assert.deepEqual(
      readCollectionOverride(overrideFile)!.rules.map((r) => r.name),
      ['engine', 'lever'],
    );

    // The agent's running config (rules with their defaults filled in) is the new section.
    const shown = (await send('getConfig', { section: 'collection' })).final;
    const applied = (shown.detail as { value: { batch: unknown; format: string; rules: { name: string; mode: string; signals: string[] }[] } }).value;
    assert.deepEqual(applied.batch, NEW_COLLECTION.batch);
    assert.equal(applied.format, 'json');
    assert.deepEqual(
      applied.rules.map((r) => [r.name, r.mode, r.signals]),
      [
        ['engine', 'periodic', ['EngineSpeed', 'ENGINE_TEMPS.CoolantTemp']],
        ['lever', 'change', ['GearLever']],
      ],
    );
    // The new rule collects in the running agent, without a restart: its samples reach the backend.
    await fleet.backend.waitFor(
      () => {
        const signals = telemetrySignals(fleet.backend, deviceId, from);
        return signals.has('can0.ENGINE_DATA.EngineSpeed') && signals.has('can0.ENGINE_TEMPS.CoolantTemp');
      },
      'telemetry of the new engine rule',
      10_000,
    );
  });

  it('setConfig: a section off the schema is FAILED invalid-config, one naming no signal is apply-failed; the files are unchanged', async () => {
    const file = readFileSync(configFile);
    const overrideFile = path.join(dir, 'var', 'collection-override.json');
    const override = readFileSync(overrideFile);
    const invalid = (await send('setConfig', { collection: { batch: { maxSamples: 0 }, rules: [] } })).final;
    assert.equal(invalid.status, 'FAILED', JSON.stringify(invalid));
    assert.equal(invalid.reason, 'invalid-config');
    assert.match(invalid.message!, /collection\.batch\.maxSamples/);
    assert.ok(Array.isArray((invalid.detail as { problems: unknown }).problems), JSON.stringify(invalid.detail));

    const unknown = (await send('setConfig', { collection: { rules: [{ name: 'typo', mode: 'periodic', intervalMs: 100, signals: ['VehicleSpede'] }] } }))
      .final;
    assert.equal(unknown.status, 'FAILED', JSON.stringify(unknown));
    assert.equal(unknown.reason, 'apply-failed');
    assert.match(unknown.message!, /no bus DBC has a signal 'VehicleSpede'/);

    assert.deepEqual(readFileSync(configFile), file);
    assert.deepEqual(readFileSync(overrideFile), override);
    const shown = (await send('getConfig', { section: 'collection' })).final;
    assert.deepEqual(
      (shown.detail as { value: { rules: { name: string }[] } }).value.rules.map((r) => r.name),
      ['engine', 'lever'],
    );
  });

  it("readVin: the simulated car's VIN", async () => {
    const { final } = await send('readVin');
    assert.equal(final.status, 'SUCCEEDED', JSON.stringify(final));
    assert.deepEqual(final.detail, { vin: RECORDED_VIN, ecu: 0, ecus: [{ ecu: 0, vin: RECORDED_VIN }] });
  });

  it("readDtcs: the simulator's stored and pending DTCs", async () => {
    const stored = (await send('readDtcs')).final;
    assert.equal(stored.status, 'SUCCEEDED', JSON.stringify(stored));
    assert.deepEqual(stored.detail, { kind: 'stored', dtcs: ['P0133', 'P0300'], ecus: [{ ecu: 0, dtcs: ['P0133', 'P0300'] }] });
    const pending = (await send('readDtcs', { kind: 'pending' })).final;
    assert.deepEqual(pending.detail, { kind: 'pending', dtcs: ['P0171'], ecus: [{ ecu: 0, dtcs: ['P0171'] }] });
  });

  it('clearDtcs: REJECTED precondition-failed while the workshop mode is Off, quoting the failing label term and its value', async () => {
    // The ignition term holds on the live drive cycle (OFF for the first 2 s, then ACC, ON, START, ON), so only the
    // ServiceMode term can fail.
    const ignition = (r: CommandResult): unknown => (r.detail as { values?: Record<string, unknown> } | undefined)?.values?.IgnitionState;
    await sendUntil('captureSnapshot', { signals: ['IgnitionState'] }, (r) => typeof ignition(r) === 'number' && ignition(r) !== 0, 'IgnitionState not OFF');
    const { final, results } = await send('clearDtcs');
    assert.deepEqual(statuses(results), ['REJECTED']);
    assert.equal(final.reason, 'precondition-failed');
    const detail = final.detail as {
      ok: boolean;
      precondition: string;
      failed: { condition: string; values: Record<string, unknown> }[];
      values: Record<string, unknown>;
    };
    assert.equal(detail.ok, false);
    assert.equal(detail.precondition, CLEAR_DTCS_PRECONDITION);
    assert.deepEqual(detail.failed, [{ condition: 'ServiceMode == Workshop', values: { ServiceMode: 0 } }]);
    assert.deepEqual(Object.keys(detail.values), ['IgnitionState', 'ServiceMode']);
    assert.ok([1, 2, 3].includes(detail.values.IgnitionState as number), `IgnitionState ${String(detail.values.IgnitionState)}`);
    assert.equal(detail.values.ServiceMode, 0);
    assert.match(final.message!, /ServiceMode == Workshop/);
    // Nothing was cleared.
    assert.deepEqual(elm.sim.ecus[0]!.model.dtcs.stored, ['P0133', 'P0300']);
    assert.deepEqual(((await send('readDtcs')).final.detail as { dtcs: string[] }).dtcs, ['P0133', 'P0300']);
  });

  it('setSignal: writes an allow-listed signal to the simulated bus (read back live); one not allow-listed is FAILED signal-not-allowed', async () => {
    const before = await snapshot(['aux.SERVICE_CTRL.ServiceMode']);
    assert.equal(before.values['aux.SERVICE_CTRL.ServiceMode'], 0);

    const refused = (await send('setSignal', { bus: 'can0', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 })).final;
    assert.equal(refused.status, 'FAILED', JSON.stringify(refused));
    assert.equal(refused.reason, 'signal-not-allowed');
    assert.match(refused.message!, /can0\.BODY_STATUS\.TrunkOpen is not in commands\.allowedSignals/);
    const outOfRange = (await send('setSignal', { message: 'SERVICE_CTRL', signal: 'ServiceMode', value: 3 })).final;
    assert.equal(outOfRange.status, 'FAILED', JSON.stringify(outOfRange));
    assert.equal(outOfRange.reason, 'out-of-range');

    // The bus may be left out: one bus allows the signal. The entry's own precondition (IgnitionState != OFF) holds.
    const { final, results } = await send('setSignal', { message: 'SERVICE_CTRL', signal: 'ServiceMode', value: 1 });
    assert.deepEqual(statuses(results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED'], JSON.stringify(final));
    assert.deepEqual(final.detail, { bus: 'aux', message: 'SERVICE_CTRL', signal: 'ServiceMode', value: 1 });
    // The frame went to the aux bus's receiver: decoded, counted, and read back by the next command.
    const after = await snapshot(['aux.SERVICE_CTRL.ServiceMode', 'ServiceMode']);
    assert.deepEqual(after.values, { 'aux.SERVICE_CTRL.ServiceMode': 1, ServiceMode: 1 });
    const status = (await send('getStatus')).final.detail as StatusReport;
    assert.equal(status.agent.buses.find((b) => b.name === 'aux')!.frames, 2);
  });

  it('clearDtcs: SUCCEEDED once the precondition holds; readDtcs then finds none', async () => {
    const { final, results } = await send('clearDtcs');
    assert.deepEqual(statuses(results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED'], JSON.stringify(final));
    assert.deepEqual(final.detail, { cleared: [0], ecus: [{ ecu: 0, cleared: true }] });
    assert.deepEqual(elm.sim.ecus[0]!.model.dtcs.stored, []);
    const stored = (await send('readDtcs')).final;
    assert.deepEqual(stored.detail, { kind: 'stored', dtcs: [], ecus: [{ ecu: 0, dtcs: [] }] });
  });

  it('captureSnapshot: live CAN values by every naming, OBD values, and the names that have none', async () => {
    const names = [
      'VehicleSpeed',
      'VEHICLE_DYNAMICS.VehicleSpeed',
      'can0.ENGINE_DATA.EngineSpeed',
      'IgnitionState',
      'GearLever',
      'obd.rpm',
      'obd.obd.rpm',
      'ServiceMode',
      'NoSuchSignal',
    ];
    const result = await snapshot(names);
    assert.deepEqual(Object.keys(result.values), names);
    assert.ok(Math.abs(result.ts - Date.now()) < 5000);
    const v = result.values;
    assert.equal(typeof v.VehicleSpeed, 'number');
    assert.ok((v.VehicleSpeed as number) >= 0 && (v.VehicleSpeed as number) < 200, `VehicleSpeed ${v.VehicleSpeed}`);
    assert.equal(typeof v['VEHICLE_DYNAMICS.VehicleSpeed'], 'number');
    assert.equal(typeof v['can0.ENGINE_DATA.EngineSpeed'], 'number');
    assert.ok(
      (v['can0.ENGINE_DATA.EngineSpeed'] as number) >= 0 && (v['can0.ENGINE_DATA.EngineSpeed'] as number) < 7000,
      `EngineSpeed ${v['can0.ENGINE_DATA.EngineSpeed']}`,
    );
    // The drive cycle is past OFF by now (ACC, ON or START, as the clock goes), the lever in P or D.
    assert.ok([1, 2, 3].includes(v.IgnitionState as number), `IgnitionState ${v.IgnitionState}`);
    assert.ok([0, 3].includes(v.GearLever as number), `GearLever ${v.GearLever}`);
    // The recorded car idles at 750 rpm: the ELM327's answer, as the adapter polled it.
    assert.equal(v['obd.rpm'], 750);
    assert.equal(v['obd.obd.rpm'], 750);
    assert.equal(v.ServiceMode, 1);
    assert.equal(v.NoSuchSignal, null);
    assert.deepEqual(result.unavailable, ['NoSuchSignal']);

    const none = (await send('captureSnapshot', { signals: ['NoSuchSignal', 'ENGINE_DATA.Nope'] })).final;
    assert.equal(none.status, 'FAILED');
    assert.equal(none.reason, 'unknown-signal');
  });

  it("setLogLevel: error silences the agent's log lines, info brings them back", async () => {
    const logged = (id: string): boolean => log.some((line) => line.includes(id));
    const quiet = (await send('setLogLevel', { level: 'error' })).final;
    assert.equal(quiet.status, 'SUCCEEDED', JSON.stringify(quiet));
    assert.deepEqual(quiet.detail, { level: 'error' });
    const unlogged = await send('ping', { echo: 'quiet' });
    assert.equal(unlogged.final.status, 'SUCCEEDED');
    assert.equal(logged(unlogged.id), false, `ping ${unlogged.id} was logged at level error:\n${log.join('\n')}`);

    // A command that goes through is an info line (ACCEPTED, SUCCEEDED): not at warn, back at info.
    assert.deepEqual((await send('setLogLevel', { level: 'warn' })).final.detail, { level: 'warn' });
    const unheard = await send('ping', { echo: 'warn' });
    assert.equal(unheard.final.status, 'SUCCEEDED');
    assert.equal(logged(unheard.id), false, `ping ${unheard.id} was logged at level warn:\n${log.join('\n')}`);
    const loud = await send('setLogLevel', { level: 'info' });
    assert.deepEqual(loud.final.detail, { level: 'info' });
    const heard = await send('ping', { echo: 'loud' });
    assert.equal(heard.final.status, 'SUCCEEDED');
    assert.ok(logged(heard.id), `ping ${heard.id} was not logged at level info:\n${log.join('\n')}`);
  });

  it('restartAgent: SUCCEEDED reaches the operator, then runAgent stops with restartRequested', async () => {
    assert.equal(ended, undefined, 'the run is still going');
    const sent = performance.now();
    const { final, results } = await send('restartAgent');
    assert.deepEqual(statuses(results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED'], JSON.stringify(final));
    assert.deepEqual(final.detail, { restarting: true });
    const summary = await running!;
    const tookMs = ended!.at - sent;
    assert.equal(summary.restartRequested, true);
    assert.ok(tookMs > 900 && tookMs < 5000, `stopped ${tookMs.toFixed(0)} ms after the command`);
    assert.ok(log.includes('restart requested by a remote command: stopping'), log.join('\n'));
    assert.ok(summary.buses[0]!.frames > 0);
    assert.ok(summary.adapters[0]!.obd.samples > 0);
    assert.ok((summary.dataPath?.published ?? 0) > 0, JSON.stringify(summary.dataPath));
    // The agent is gone: a command gets no answer.
    const unanswered = await ops.send({ deviceId, name: 'ping' }, commandPki.operator, { timeoutMs: 1000 });
    assert.equal(unanswered.final, undefined);
  });
});
