/**
 * Remote commands end to end, with real parts only: a real mosquitto (TLS, client certificates as usernames, the
 * fleet ACL), the agent's data path (SQLite outbox, MQTT session, publisher, dispatcher, SQLite replay memory), and
 * the operator's client signing with ECDSA P-256 keys from a command CA. Every rejection reason goes through the
 * broker; so do the lifecycle, the timeout, offline delivery, the MQTT 5 and 3.1.1 result routes, and results that
 * wait in the outbox while the broker is down.
 */
import type { StatusReport } from '../../src/commands/handlers/get-status.js';
import assert from 'node:assert/strict';
import { rmSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { signCommand } from '../../src/commands/envelope.js';
import type { OperatorClient } from '../../src/commands/operator-client.js';
import type { CommandResult } from '../../src/commands/result.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import type { InProcessAgent } from '../support/agent-in-process.js';
import { AgentProcess, writeConfig } from '../support/agent-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { CommandPki, operatorClient, startCommandAgent } from '../support/commands.js';
import { BackendSubscriber, TestPki } from '../support/mosquitto.js';
import { runProgram } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

function statuses(results: readonly CommandResult[]): string[] {
  return results.map((r) => r.status);
}

describe('remote commands through mosquitto', { timeout: 180_000 }, () => {
  const pki = new TestPki('commands test CA');
  const commandPki = new CommandPki();
  let agent: InProcessAgent;
  let ops: OperatorClient;
  const carId = 'car-cmd';
  const fleet = withBroker({ pki, backend: false });
  fleet.beforeStop(async () => {
    await ops?.close();
    await agent?.close();
  });

  before(async () => {
    agent = await startCommandAgent(fleet.broker, pki, commandPki, {
      deviceId: carId,
      commands: { maxConcurrent: 1, preconditions: { getStatus: 'VehicleSpeed == 0 && EngineSpeed < 1000' } },
    });
    ops = await operatorClient(fleet.broker, pki);
  });

  const send = (
    name: string,
    params: unknown = {},
    extra: Partial<Parameters<OperatorClient['send']>[0]> = {},
    options: Parameters<OperatorClient['send']>[2] = {},
  ) => ops.send({ deviceId: carId, name, params, ...extra }, commandPki.operator, { timeoutMs: 10_000, ...options });

  it('ping: ACCEPTED, IN_PROGRESS, SUCCEEDED on the MQTT 5 response topic with the correlation data echoed', async () => {
    const seen: { topic: string; correlation: string | undefined }[] = [];
    const onMessage = (topic: string, _payload: Buffer, packet: { properties?: { correlationData?: Buffer } }): void => {
      seen.push({ topic, correlation: packet.properties?.correlationData?.toString('utf8') });
    };
    ops.client.on('message', onMessage);
    try {
      const outcome = await send('ping', { echo: 'hello car' });
      assert.deepEqual(statuses(outcome.results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED']);
      const final = outcome.final!;
      assert.equal(final.id, outcome.id);
      assert.equal(final.deviceId, carId);
      assert.equal(final.command, 'ping');
      const detail = final.detail as { pong: boolean; echo: string; deviceTime: number };
      assert.equal(detail.pong, true);
      assert.equal(detail.echo, 'hello car');
      assert.ok(Math.abs(detail.deviceTime - Date.now()) < 5000);
      // Each went through the outbox: a sequence number, increasing.
      const seqs = outcome.results.map((r) => r.seq!);
      assert.ok(
        seqs.every((s, i) => Number.isInteger(s) && (i === 0 || s > seqs[i - 1]!)),
        `seqs ${seqs.join(',')}`,
      );
      const ours = seen.filter((m) => m.correlation === outcome.id);
      assert.equal(ours.length, 3);
      assert.ok(
        ours.every((m) => m.topic === ops.responseTopic(carId)),
        ours.map((m) => m.topic).join(', '),
      );
    } finally {
      ops.client.removeListener('message', onMessage);
    }
  });

  it('getStatus: SUCCEEDED with the outbox and uplink state, when its precondition holds', async () => {
    agent.feedSignals('VEHICLE_DYNAMICS', { VehicleSpeed: 0 });
    agent.feedSignals('ENGINE_DATA', { EngineSpeed: 800 });
    const outcome = await send('getStatus');
    assert.equal(outcome.final?.status, 'SUCCEEDED', JSON.stringify(outcome.final));
    const detail = outcome.final.detail as StatusReport;
    assert.equal(detail.deviceId, carId);
    assert.equal(detail.agent.uplink?.state, 'connected');
    assert.equal(typeof detail.agent.outbox?.messages, 'number');
    assert.ok(detail.agent.commands!.accepted >= 1);
  });

  it('precondition-failed: REJECTED with the conditions that failed and their live values', async () => {
    agent.feedSignals('VEHICLE_DYNAMICS', { VehicleSpeed: 42.5 });
    agent.feedSignals('ENGINE_DATA', { EngineSpeed: 800 });
    const outcome = await send('getStatus');
    assert.deepEqual(statuses(outcome.results), ['REJECTED']);
    const final = outcome.final!;
    assert.equal(final.reason, 'precondition-failed');
    const detail = final.detail as { failed: { condition: string; values: Record<string, number> }[]; values: Record<string, number> };
    assert.deepEqual(detail.failed, [{ condition: 'VehicleSpeed == 0', values: { VehicleSpeed: 42.5 } }]);
    assert.deepEqual(detail.values, { VehicleSpeed: 42.5, EngineSpeed: 800 });
    assert.match(final.message!, /VehicleSpeed == 0 \(VehicleSpeed = 42\.5\)/);
    agent.feedSignals('VEHICLE_DYNAMICS', { VehicleSpeed: 0 });
  });

  it('rejects, with its reason, each command that must not run', async () => {
    const now = Date.now();
    const cases: { what: string; run: () => Promise<{ final: CommandResult | undefined }>; reason: string; message: RegExp }[] = [
      { what: 'unknown command', run: () => send('openTrunk'), reason: 'unknown-command', message: /no command 'openTrunk'/ },
      { what: 'bad params', run: () => send('ping', { echo: 42 }), reason: 'bad-params', message: /do not fit its schema/ },
      { what: 'unexpected param', run: () => send('ping', { rm: '-rf /' }), reason: 'bad-params', message: /schema/ },
      { what: 'expired', run: () => send('ping', {}, { issuedAt: now - 60_000, expiresAt: now - 1000 }), reason: 'expired', message: /expired at/ },
      {
        what: 'older than the lifetime',
        run: () => send('ping', {}, { issuedAt: now - 8 * 86_400_000 }),
        reason: 'expired',
        message: /issued more than 604800 s ago/,
      },
      {
        what: 'issued in the future',
        run: () => send('ping', {}, { issuedAt: now + 3_600_000 }),
        reason: 'not-yet-valid',
        message: /ahead of the car's clock \(300 s allowed\)/,
      },
      {
        what: 'signed for another car, sent to this one',
        run: () => {
          const { payload, envelope } = signCommand({ deviceId: 'car-other', name: 'ping' }, commandPki.operator);
          return ops.publishPayload(carId, 'ping', payload, envelope.id, { timeoutMs: 10_000 });
        },
        reason: 'wrong-device',
        message: /signed for device 'car-other', this is 'car-cmd'/,
      },
      {
        what: 'untrusted signer',
        run: () => ops.send({ deviceId: carId, name: 'ping' }, commandPki.foreign, { timeoutMs: 10_000 }),
        reason: 'untrusted-signer',
        message: /does not chain to the pinned command CA/,
      },
      {
        what: 'expired signer',
        run: () => ops.send({ deviceId: carId, name: 'ping' }, commandPki.expired, { timeoutMs: 10_000 }),
        reason: 'untrusted-signer',
        message: /not valid now/,
      },
      {
        what: 'signer not for signing',
        run: () => ops.send({ deviceId: carId, name: 'ping' }, commandPki.notForSigning, { timeoutMs: 10_000 }),
        reason: 'untrusted-signer',
        message: /code signing/,
      },
      {
        what: 'topic names another command',
        run: () => send('getStatus', {}, {}, { topicName: 'ping' }),
        reason: 'malformed',
        message: /the topic names command 'ping'/,
      },
      { what: 'envelope off its schema', run: () => send('ping', {}, {}, { envelope: { v: 2 } }), reason: 'malformed', message: /schema/ },
    ];
    // A rejection of a validly signed command names the command ([17.contract]); one refused at the signature cannot
    // trust the envelope's name, and has none.
    const signedName: Record<string, string | undefined> = {
      'unknown command': 'openTrunk',
      'bad params': 'ping',
      'unexpected param': 'ping',
      expired: 'ping',
      'older than the lifetime': 'ping',
      'issued in the future': 'ping',
      'signed for another car, sent to this one': 'ping',
      'topic names another command': 'getStatus',
    };
    for (const c of cases) {
      const outcome = await c.run();
      assert.equal(outcome.final?.status, 'REJECTED', `${c.what}: ${JSON.stringify(outcome.final)}`);
      assert.equal(outcome.final.reason, c.reason, `${c.what}: ${outcome.final.message}`);
      assert.match(outcome.final.message!, c.message, c.what);
      assert.equal(outcome.final.command, signedName[c.what], `${c.what}: command ${outcome.final.command}`);
    }
  });

  it('rejects unsigned, badly signed, unreadable and oversize payloads', async () => {
    const signed = signCommand({ deviceId: carId, name: 'ping', id: 'sig-1' }, commandPki.operator);
    const wire = JSON.parse(signed.payload) as { envelope: string; signature: string; signer: string };
    // Another command's signature over other bytes, with the same signer.
    const other = JSON.parse(signCommand({ deviceId: carId, name: 'ping', id: 'sig-2' }, commandPki.operator).payload) as { signature: string };
    const cases: { what: string; id: string; payload: string | Buffer; reason: string; message: RegExp }[] = [
      {
        what: 'no signature',
        id: 'sig-1',
        payload: JSON.stringify({ envelope: wire.envelope, signer: wire.signer }),
        reason: 'no-signature',
        message: /not signed/,
      },
      {
        what: 'no signer',
        id: 'sig-1',
        payload: JSON.stringify({ envelope: wire.envelope, signature: wire.signature }),
        reason: 'no-signature',
        message: /no signer/,
      },
      {
        what: 'bad signature',
        id: 'sig-1',
        payload: JSON.stringify({ ...wire, signature: other.signature }),
        reason: 'bad-signature',
        message: /does not verify/,
      },
      {
        what: 'garbage signature',
        id: 'sig-1',
        payload: JSON.stringify({ ...wire, signature: Buffer.from('not a signature').toString('base64') }),
        reason: 'bad-signature',
        message: /does not verify/,
      },
      { what: 'not JSON', id: 'junk-1', payload: 'rm -rf /', reason: 'malformed', message: /not JSON/ },
      { what: 'oversize', id: 'big-1', payload: Buffer.alloc(20_000, 0x41), reason: 'oversize', message: /20000 bytes, more than the 16384 allowed/ },
    ];
    for (const c of cases) {
      const outcome = await ops.publishPayload(carId, 'ping', c.payload, c.id, { timeoutMs: 10_000 });
      assert.equal(outcome.final?.status, 'REJECTED', `${c.what}: ${JSON.stringify(outcome.final)}`);
      assert.equal(outcome.final.reason, c.reason, `${c.what}: ${outcome.final.message}`);
      assert.match(outcome.final.message!, c.message, c.what);
      // Not signed: answered at once, never stored in the outbox (no sequence number).
      assert.equal(outcome.final.seq, undefined, c.what);
    }
  });

  it('replayed: the same signed command a second time is REJECTED, and so is another command reusing its ID', async () => {
    const { payload, envelope } = signCommand({ deviceId: carId, name: 'ping', id: 'replay-1' }, commandPki.operator);
    const first = await ops.publishPayload(carId, 'ping', payload, envelope.id, { timeoutMs: 10_000 });
    assert.equal(first.final?.status, 'SUCCEEDED');
    const again = await ops.publishPayload(carId, 'ping', payload, `${envelope.id}`, { timeoutMs: 10_000 });
    assert.equal(again.final?.status, 'REJECTED');
    assert.equal(again.final.reason, 'replayed');
    assert.deepEqual(again.final.detail, { why: 'duplicate' });
    const reused = await send('ping', { echo: 'x' }, { id: 'replay-1' });
    assert.equal(reused.final?.reason, 'replayed');
    assert.deepEqual(reused.final.detail, { why: 'reused' });
  });

  it('TIMED_OUT when the command runs past its timeout; the slot is free again afterwards', async () => {
    const outcome = await send('ping', { delayMs: 5000 }, { timeoutMs: 300 });
    assert.deepEqual(statuses(outcome.results), ['ACCEPTED', 'IN_PROGRESS', 'TIMED_OUT']);
    assert.equal(outcome.final!.reason, 'timeout');
    assert.match(outcome.final!.message!, /no result within 300 ms/);
    const next = await send('ping');
    assert.equal(next.final?.status, 'SUCCEEDED');
  });

  it('busy: beyond maxConcurrent a command is REJECTED while the other runs', async () => {
    const slow = send('ping', { delayMs: 4000 });
    await waitFor(
      () => agent.dataPath.healthReport().commands !== undefined && (agent.dataPath.healthReport().commands as { running: number }).running === 1,
      'the slow ping to run',
      5000,
    );
    const busy = await send('ping');
    assert.equal(busy.final?.status, 'REJECTED');
    assert.equal(busy.final.reason, 'busy');
    assert.match(busy.final.message!, /1 commands are running \(at most 1\)/);
    assert.equal((await slow).final?.status, 'SUCCEEDED');
  });

  it("a response topic outside the car's own tree is not used: the result goes to the default result topic", async () => {
    const backend = await BackendSubscriber.connect(fleet.broker, pki, `vehicles/${carId}/commands/+/result`);
    try {
      const { payload, envelope } = signCommand({ deviceId: carId, name: 'ping' }, commandPki.operator);
      await ops.client.publishAsync(`vehicles/${carId}/commands/ping`, payload, {
        qos: 1,
        properties: { responseTopic: 'vehicles/car-victim/telemetry', correlationData: Buffer.from('c-1') },
      });
      const topic = `vehicles/${carId}/commands/${envelope.id}/result`;
      await backend.waitFor(
        () => backend.messages.some((m) => m.topic === topic && (JSON.parse(m.payload.toString()) as { status: string }).status === 'SUCCEEDED'),
        'the result on the default topic',
        10_000,
      );
      assert.ok(backend.messages.every((m) => m.topic === topic || !m.topic.endsWith(`${envelope.id}/result`)));
    } finally {
      await backend.close();
    }
  });

  it('the agent keeps its replay memory across a restart', async () => {
    const dir = makeTempDir('command-restart-');
    let car = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: 'car-restart', dir });
    try {
      const { payload, envelope } = signCommand({ deviceId: 'car-restart', name: 'ping' }, commandPki.operator);
      const first = await ops.publishPayload('car-restart', 'ping', payload, envelope.id, { timeoutMs: 10_000 });
      assert.equal(first.final?.status, 'SUCCEEDED');
      await car.close();
      car = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: 'car-restart', dir });
      const again = await ops.publishPayload('car-restart', 'ping', payload, envelope.id, { timeoutMs: 10_000 });
      assert.equal(again.final?.status, 'REJECTED');
      assert.equal(again.final.reason, 'replayed');
    } finally {
      await car.close();
    }
  });

  for (const [loss, lose] of [
    ['deleted', (file: string) => ['', '-wal', '-shm'].forEach((suffix) => rmSync(file + suffix, { force: true }))],
    ['truncated to 0 bytes', (file: string) => truncateSync(file, 0)],
  ] as const) {
    it(`[14.2] a replay database ${loss} between two runs: the captured command is REJECTED replayed (before-reset), and the agent says why`, async () => {
      const dir = makeTempDir('command-lost-memory-');
      const deviceId = 'car-amnesia';
      let car = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId, dir });
      try {
        const { payload, envelope } = signCommand({ deviceId, name: 'ping' }, commandPki.operator);
        const first = await ops.publishPayload(deviceId, 'ping', payload, envelope.id, { timeoutMs: 10_000 });
        assert.equal(first.final?.status, 'SUCCEEDED');
        await car.close();
        lose(path.join(dir, 'commands.db'));
        car = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId, dir });
        assert.ok(
          car.log.some((line) =>
            /^commands: the replay memory .*commands\.db (is missing|is empty \(0 bytes: truncated\)).*commands issued before \S+ are refused/.test(line),
          ),
          car.log.join('\n'),
        );
        const again = await ops.publishPayload(deviceId, 'ping', payload, envelope.id, { timeoutMs: 10_000 });
        assert.equal(again.final?.status, 'REJECTED', JSON.stringify(again.results));
        assert.equal(again.final.reason, 'replayed');
        assert.deepEqual(again.final.detail, { why: 'before-reset' });
      } finally {
        await car.close();
      }
    });
  }

  it('[14.5] a precondition holds on a value the bus sends, and fails with its age once the bus is silent past the limit (dispatcher and setSignal)', async () => {
    const deviceId = 'car-silent-bus';
    const car = await startCommandAgent(fleet.broker, pki, commandPki, {
      deviceId,
      commands: {
        preconditions: { getStatus: 'VehicleSpeed == 0' },
        allowedSignals: [{ bus: 'can0', message: 'BODY_STATUS', signal: 'TrunkOpen', min: 0, max: 1, precondition: 'VehicleSpeed == 0' }],
        // VEHICLE_DYNAMICS comes every 20 ms (GenMsgCycleTime): 3 cycles, at least 3 s (a margin for a busy machine).
        freshness: { minMs: 3000 },
      },
    });
    // The bus: the car stands still, VEHICLE_DYNAMICS every 20 ms.
    const bus = setInterval(() => car.feedSignals('VEHICLE_DYNAMICS', { VehicleSpeed: 0 }), 20);
    let silentSince: number;
    try {
      car.feedSignals('VEHICLE_DYNAMICS', { VehicleSpeed: 0 });
      const fresh = await ops.send({ deviceId, name: 'getStatus' }, commandPki.operator, { timeoutMs: 10_000 });
      assert.equal(fresh.final?.status, 'SUCCEEDED', JSON.stringify(fresh.final));
      // setSignal gets past its precondition and writes the frame (the simulated bus takes it back).
      const write = await ops.send({ deviceId, name: 'setSignal', params: { message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 } }, commandPki.operator, {
        timeoutMs: 10_000,
      });
      assert.equal(write.final?.status, 'SUCCEEDED', JSON.stringify(write.final));
    } finally {
      clearInterval(bus);
      silentSince = Date.now();
    }
    try {
      // The bus is silent; the last value said 0 km/h. Past the limit it is no longer trusted.
      await delay(3200);
      const stale = await ops.send({ deviceId, name: 'getStatus' }, commandPki.operator, { timeoutMs: 10_000 });
      assert.equal(stale.final?.status, 'REJECTED', JSON.stringify(stale.final));
      assert.equal(stale.final.reason, 'precondition-failed');
      assert.match(stale.final.message!, /VehicleSpeed == 0 \(VehicleSpeed = 0, stale: received \d+\.\d s ago, limit 3\.0 s\)/);
      const detail = stale.final.detail as { failed: { condition: string; stale: Record<string, { ageMs: number; maxAgeMs: number }> }[] };
      const age = detail.failed[0]!.stale.VehicleSpeed!;
      assert.equal(age.maxAgeMs, 3000);
      assert.ok(age.ageMs >= 3000 && age.ageMs <= Date.now() - silentSince + 1000, `age ${age.ageMs} ms`);
      const write = await ops.send({ deviceId, name: 'setSignal', params: { message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 } }, commandPki.operator, {
        timeoutMs: 10_000,
      });
      assert.equal(write.final?.status, 'FAILED', JSON.stringify(write.final));
      assert.equal(write.final.reason, 'precondition-failed');
      assert.match(write.final.message!, /VehicleSpeed == 0 \(VehicleSpeed = 0, stale: received \d+\.\d s ago, limit 3\.0 s\) does not hold/);
      // The bus speaks again: the precondition holds again.
      car.feedSignals('VEHICLE_DYNAMICS', { VehicleSpeed: 0 });
      const again = await ops.send({ deviceId, name: 'getStatus' }, commandPki.operator, { timeoutMs: 10_000 });
      assert.equal(again.final?.status, 'SUCCEEDED', JSON.stringify(again.final));
    } finally {
      await car.close();
    }
  });

  it('a command sent while the car is offline runs when it reconnects, unless it expired meanwhile', async () => {
    const dir = makeTempDir('command-offline-');
    let car = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: 'car-away', dir });
    await car.close();
    const now = Date.now();
    const fresh = ops.send({ deviceId: 'car-away', name: 'ping', params: { echo: 'while away' }, expiresAt: now + 60_000 }, commandPki.operator, {
      timeoutMs: 20_000,
    });
    const stale = ops.send({ deviceId: 'car-away', name: 'ping', expiresAt: now + 800 }, commandPki.operator, { timeoutMs: 20_000 });
    await delay(1500);
    car = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: 'car-away', dir });
    try {
      const [ran, expired] = await Promise.all([fresh, stale]);
      assert.equal(ran.final?.status, 'SUCCEEDED', JSON.stringify(ran.results));
      assert.equal((ran.final.detail as { echo: string }).echo, 'while away');
      assert.equal(expired.final?.status, 'REJECTED');
      assert.equal(expired.final.reason, 'expired');
    } finally {
      await car.close();
    }
  });

  it('results wait in the outbox while the broker is down, and go out when it is back', async () => {
    const backend = await BackendSubscriber.connect(fleet.broker, pki, `vehicles/${carId}/results/#`);
    try {
      // Long enough for the broker to be stopped before the ping's result, even on a busy machine.
      const pending = ops.send({ deviceId: carId, name: 'ping', params: { delayMs: 3000 } }, commandPki.operator, { wait: false });
      const { id } = await pending;
      await backend.waitFor(() => backend.messages.some((m) => (JSON.parse(m.payload.toString()) as { id: string }).id === id), 'ACCEPTED', 10_000);
      await fleet.broker.stop();
      const outboxFile = agent.config.outbox!.path;
      await waitFor(
        () => {
          const db = new Database(outboxFile, { readonly: true });
          try {
            return db
              .prepare<[], { payload: Buffer }>("SELECT payload FROM message WHERE kind = 'result'")
              .all()
              .some((r) => r.payload.toString().includes('"SUCCEEDED"') && r.payload.toString().includes(id));
          } finally {
            db.close();
          }
        },
        'the SUCCEEDED result in the outbox',
        10_000,
      );
      await fleet.broker.start();
      await backend.waitFor(
        () =>
          backend.messages.some((m) => {
            const r = JSON.parse(m.payload.toString()) as CommandResult;
            return r.id === id && r.status === 'SUCCEEDED';
          }),
        'SUCCEEDED after the broker is back',
        15_000,
      );
      await waitFor(() => agent.dataPath.uplink!.session.state === 'connected', 'the agent to reconnect', 10_000);
    } finally {
      await backend.close();
      if (!fleet.broker.running) await fleet.broker.start();
      // The operator's client does not reconnect by itself; the next tests need it.
      await ops.close();
      ops = await operatorClient(fleet.broker, pki);
    }
  });

  it('kill -9: a command running when the agent dies ends FAILED interrupted once it restarts; none sent around the kill is lost', async () => {
    const deviceId = 'car-crash';
    const dir = makeTempDir('command-crash-');
    const file = writeConfig(dir, 'car', {
      deviceId,
      buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
      collection: { rules: [] },
      outbox: { path: 'outbox.db', writeIntervalMs: 50 },
      uplink: { url: fleet.broker.url, ...pki.identityFiles(deviceId), protocol: 5, reconnect: { initialMs: 50, maxMs: 400 } },
      commands: { caFile: commandPki.caFile, replayDbPath: 'commands.db', maxConcurrent: 64 },
    });
    let car = AgentProcess.start(file);
    try {
      await car.waitForStderr(/uplink: connected to /);
      const long: CommandResult[] = [];
      const running = ops.send({ deviceId, name: 'ping', params: { delayMs: 60_000 }, timeoutMs: 120_000 }, commandPki.operator, {
        timeoutMs: 30_000,
        onResult: (r) => long.push(r),
      });
      await waitFor(() => long.some((r) => r.status === 'IN_PROGRESS'), 'the long ping to run', 10_000);
      // A burst in flight as the process dies: some done, some running, some not yet taken from the broker.
      let succeeded = 0;
      const burst = Array.from({ length: 20 }, (_, i) =>
        ops.send({ deviceId, name: 'ping', params: { echo: `b${i}`, delayMs: 50 + ((i * 37) % 300) } }, commandPki.operator, {
          timeoutMs: 30_000,
          onResult: (r) => void (r.status === 'SUCCEEDED' && succeeded++),
        }),
      );
      // Killed once the first of them is done (the shortest takes 50 ms), while the others run or wait.
      await waitFor(() => succeeded > 0, 'a first ping of the burst to succeed', 10_000);
      await car.stop('SIGKILL');
      car = AgentProcess.start(file);

      const interrupted = await running;
      assert.deepEqual(statuses(interrupted.results), ['ACCEPTED', 'IN_PROGRESS', 'FAILED'], car.stderr);
      assert.equal(interrupted.final!.reason, 'interrupted');
      assert.match(interrupted.final!.message!, /the agent stopped \(a crash or a power cut\) while the command ran/);
      // Every command of the burst has a final result: it ran, or it was cut off and said so, or it was taken and
      // stored but not yet acknowledged, so the broker delivered it again and the replay memory refused the copy.
      const outcomes = await Promise.all(burst);
      const kinds = outcomes.map((o) => (o.final ? `${o.final.status}${o.final.reason ? ` ${o.final.reason}` : ''}` : 'none'));
      assert.ok(
        kinds.every((k) => k === 'SUCCEEDED' || k === 'FAILED interrupted' || k === 'REJECTED replayed'),
        kinds.join(', '),
      );
      assert.ok(kinds.includes('SUCCEEDED'), kinds.join(', '));
      outcomes.forEach((o, i) => {
        if (o.final!.status === 'SUCCEEDED') assert.equal((o.final!.detail as { echo: string }).echo, `b${i}`);
      });
      await car.waitForStderr(/FAILED \(interrupted/);
      // Reported once: a clean restart says nothing more.
      await car.stop('SIGTERM');
      car = AgentProcess.start(file);
      await car.waitForStderr(/uplink: connected to /);
      const after = await ops.send({ deviceId, name: 'ping', params: { echo: 'after' } }, commandPki.operator, { timeoutMs: 10_000 });
      assert.equal(after.final?.status, 'SUCCEEDED');
      assert.doesNotMatch(car.stderr, /interrupted/);
    } finally {
      await car.stop('SIGTERM');
    }
  });

  it('MQTT 3.1.1: results on vehicles/<id>/commands/<command id>/result', async () => {
    const car = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: 'car-v4', protocol: 4 });
    try {
      const outcome = await ops.send({ deviceId: 'car-v4', name: 'ping' }, commandPki.operator, { timeoutMs: 10_000 });
      assert.deepEqual(statuses(outcome.results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED']);
      const rejected = await ops.send({ deviceId: 'car-v4', name: 'selfDestruct' }, commandPki.operator, { timeoutMs: 10_000 });
      assert.equal(rejected.final?.reason, 'unknown-command');
    } finally {
      await car.close();
    }
  });

  it('telematics-ops send: exit 0 on SUCCEEDED, 2 on REJECTED, 1 on a usage error; keys makes a CA the agent trusts', async () => {
    const keysDir = makeTempDir('ops-keys-');
    const keys = await runProgram('telematics-ops', ['keys', '--out', keysDir, '--operator', 'dave']);
    assert.equal(keys.status, 0, keys.stderr);
    assert.match(keys.stdout, /command-ca\.crt/);
    const backendFiles = pki.backend();
    const common = ['--broker', fleet.broker.backendUrl, '--cert', backendFiles.certFile, '--key', backendFiles.keyFile, '--ca', pki.caFile, '--device', carId];
    const alice = ['--operator-cert', commandPki.operatorFiles.certFile, '--operator-key', commandPki.operatorFiles.keyFile];
    const ok = await runProgram('telematics-ops', ['send', ...common, ...alice, '--command', 'ping', '--params', '{"echo":"cli"}', '--wait', '--json']);
    assert.equal(ok.status, 0, ok.stderr + ok.stdout);
    const lines = ok.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as CommandResult);
    assert.deepEqual(statuses(lines), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED']);
    assert.equal((lines[2]!.detail as { echo: string }).echo, 'cli');
    const refused = await runProgram('telematics-ops', ['send', ...common, ...alice, '--command', 'ping', '--params', '{"nope":1}', '--wait']);
    assert.equal(refused.status, 2, refused.stdout);
    assert.match(refused.stdout, /REJECTED bad-params/);
    // The keys just made are not pinned by this car: untrusted.
    const dave = ['--operator-cert', path.join(keysDir, 'dave.crt'), '--operator-key', path.join(keysDir, 'dave.key')];
    const untrusted = await runProgram('telematics-ops', ['send', ...common, ...dave, '--command', 'ping', '--wait', '--json']);
    assert.equal(untrusted.status, 2);
    assert.equal((JSON.parse(untrusted.stdout.trim()) as CommandResult).reason, 'untrusted-signer');
    const usage = await runProgram('telematics-ops', ['send', ...common, ...alice]);
    assert.equal(usage.status, 1);
    assert.match(usage.stderr, /required option '-c, --command <name>'/);
    const unconnected = await runProgram('telematics-ops', ['send', '--device', carId, '--command', 'ping']);
    assert.equal(unconnected.status, 1);
    assert.match(unconnected.stderr, /missing --broker, --cert, --key, --ca, --operator-cert, --operator-key \(or --certs-dir for the development PKI\)/);
  });

  it('the operator client ignores results that are not results (a car publishing null, numbers, arrays)', async () => {
    // Whoever holds the car's certificate may publish on its result topics: the operator's tool must not fall over.
    // The broker binds the client ID to the certificate, so a second connection would take over the car's session:
    // the junk goes out through the car's own.
    const session = agent.dataPath.uplink!.session;
    const pending = send('ping', { delayMs: 300 });
    await delay(50);
    for (const junk of ['null', '42', '"SUCCEEDED"', '[]', '{"status":7}', '{"id":null}']) {
      await session.publish(ops.responseTopic(carId), junk, { qos: 1 });
    }
    const outcome = await pending;
    assert.deepEqual(statuses(outcome.results), ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED']);
  });

  it('a replayed copy of a command refused for its name is answered, not stored: replays cannot fill the outbox', async () => {
    const { payload, envelope } = signCommand({ deviceId: carId, name: 'openTrunk' }, commandPki.operator);
    const first = await ops.publishPayload(carId, 'openTrunk', payload, envelope.id, { timeoutMs: 10_000 });
    assert.equal(first.final?.reason, 'unknown-command');
    assert.equal(typeof first.final.seq, 'number', 'the first answer went through the outbox');
    const outboxFile = agent.config.outbox!.path;
    const stored = (): number => {
      const db = new Database(outboxFile, { readonly: true });
      try {
        return db.prepare<[], { n: number }>("SELECT count(*) AS n FROM message WHERE kind = 'result'").get()!.n;
      } finally {
        db.close();
      }
    };
    await waitFor(() => stored() === 0, 'the outbox to drain', 10_000);
    for (let i = 0; i < 50; i++) {
      const again = await ops.publishPayload(carId, 'openTrunk', payload, envelope.id, { timeoutMs: 10_000 });
      assert.equal(again.final?.reason, 'replayed');
      assert.equal(again.final.seq, undefined, 'sent, not stored');
    }
    assert.equal(stored(), 0);
  });

  it('the agent is still up and counted every rejection', () => {
    const stats = agent.dataPath.healthReport().commands as { rejected: Record<string, number>; received: number };
    for (const reason of [
      'unknown-command',
      'bad-params',
      'expired',
      'not-yet-valid',
      'wrong-device',
      'untrusted-signer',
      'malformed',
      'no-signature',
      'bad-signature',
      'oversize',
      'replayed',
      'busy',
      'precondition-failed',
    ]) {
      assert.ok((stats.rejected[reason] ?? 0) >= 1, `${reason}: ${JSON.stringify(stats.rejected)}`);
    }
    assert.equal(agent.dataPath.uplink!.session.state, 'connected');
  });
});
