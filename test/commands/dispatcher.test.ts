/**
 * The dispatcher with its real parts (the SQLite replay memory, the verifier, the handlers) and a sink that keeps
 * what it is given, on a clock the test moves: duplicate keys, IDs that walk topic levels, the correlation data cap,
 * a full disk under the replay memory, and the limit on answers to payloads that are not validly signed.
 */
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import path from 'node:path';
import { describe, it } from 'node:test';
import type Database from 'better-sqlite3';
import { commandsConfigSchema } from '../../src/commands/config.js';
import { CommandDispatcher, MAX_CORRELATION_BYTES, UNSIGNED_ANSWERS_PER_MINUTE, type ResultRoute } from '../../src/commands/dispatcher.js';
import { MalformedCommand, parseCommand, signBytes, signCommand } from '../../src/commands/envelope.js';
import { CommandFailure, type CommandContext } from '../../src/commands/handler.js';
import { HANDLERS } from '../../src/commands/handlers/index.js';
import { ReplayGuard } from '../../src/commands/replay-guard.js';
import type { CommandResult } from '../../src/commands/result.js';
import { CommandVerifier } from '../../src/commands/verifier.js';
import { createCommandCa, issueOperatorCertificate } from '../../src/pki/command-pki.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

const DEVICE = 'car-unit';
const ca = createCommandCa('dispatcher test CA');
const operator = issueOperatorCertificate(ca, 'alice');
const foreign = issueOperatorCertificate(createCommandCa('another CA'), 'mallory');

interface Answer {
  route: ResultRoute;
  result: CommandResult;
  stored: boolean;
}

function rig() {
  const clock = { now: Date.now() };
  const now = (): number => clock.now;
  const replay = ReplayGuard.open({ path: path.join(makeTempDir('dispatcher-'), 'commands.db'), now });
  const answers: Answer[] = [];
  const decode = (bytes: Uint8Array): CommandResult => JSON.parse(Buffer.from(bytes).toString('utf8')) as CommandResult;
  const unsupported = (): never => {
    throw new CommandFailure('unsupported', 'not in this test');
  };
  const context: CommandContext = {
    deviceId: DEVICE,
    readSignal: () => undefined,
    signalTiming: () => undefined,
    describeSignal: () => undefined,
    status: () => unsupported(),
    config: () => ({}),
    applyCollection: async () => unsupported(),
    obd: () => undefined,
    writeSignal: async () => unsupported(),
    setLogLevel: unsupported,
    requestRestart: unsupported,
    rotateCertificate: async () => unsupported(),
  };
  const log: string[] = [];
  /** The same lines with the level each was logged at. */
  const levels: [level: string, line: string][] = [];
  const at =
    (level: string) =>
    (line: string): void => {
      log.push(line);
      levels.push([level, line]);
    };
  const dispatcher = new CommandDispatcher({
    deviceId: DEVICE,
    config: commandsConfigSchema.parse({}),
    handlers: HANDLERS,
    context,
    verifier: new CommandVerifier(ca.certPem, now),
    replay,
    now,
    log: { info: at('info'), warn: at('warn'), error: at('error') },
    sink: {
      store: (route, results) => {
        results.forEach((encode, i) => answers.push({ route, result: decode(encode(i + 1)), stored: true }));
        return true;
      },
      send: async (route, payload) => {
        answers.push({ route, result: decode(payload), stored: false });
      },
    },
  });
  const send = (payload: string | Buffer, properties: { responseTopic?: string; correlationData?: Buffer } = {}, name = 'ping'): void =>
    dispatcher.handle(`vehicles/${DEVICE}/commands/${name}`, Buffer.from(payload), properties);
  return { clock, replay, dispatcher, answers, log, levels, send, close: () => dispatcher.close() };
}

/** A wire payload whose envelope is `envelopeText` exactly, signed by the operator. */
function signedText(envelopeText: string): string {
  const { payload } = signCommand({ deviceId: DEVICE, name: 'ping' }, operator);
  const wire = JSON.parse(payload) as { signer: string };
  const bytes = Buffer.from(envelopeText, 'utf8');
  return JSON.stringify({
    envelope: bytes.toString('base64'),
    signature: signBytes(bytes, createPrivateKey(operator.keyPem)).toString('base64'),
    signer: wire.signer,
  });
}

describe('dispatcher', () => {
  it('[15.4] logs each line at its level: accepted and succeeded at info, a signed command rejected and an unanswerable payload at warn', async () => {
    const r = rig();
    try {
      const { payload, envelope } = signCommand({ deviceId: DEVICE, name: 'ping' }, operator);
      r.send(payload);
      await waitFor(() => r.dispatcher.stats.succeeded === 1, 'the ping to succeed', 5000);
      r.send(payload);
      r.send('not a command');
      const id = envelope.id;
      assert.deepEqual(
        r.levels.map(([level, line]) => [
          level,
          line
            .replaceAll(id, 'ID')
            .replace(/\(replayed: .*/, '(replayed: …)')
            .replace(/cannot be answered .*/, 'cannot be answered …'),
        ]),
        [
          ['info', 'command ID (ping) from CN=alice: ACCEPTED'],
          ['info', 'command ID (ping): SUCCEEDED'],
          ['warn', 'command ID: REJECTED (replayed: …)'],
          ['warn', 'commands: a payload rejected as malformed has no command ID and no usable response topic: it cannot be answered …'],
        ],
      );
    } finally {
      r.close();
    }
  });

  it('[14.L1] a key twice in one object, in the envelope at any depth or in the outer object, is malformed', () => {
    const issuedAt = Date.now();
    const base = `"v":1,"deviceId":"${DEVICE}","name":"ping","issuedAt":${issuedAt}`;
    const cases: [string, RegExp][] = [
      [signedText(`{"id":"dup-1",${base},"params":{},"name":"getStatus"}`), /the envelope has the key 'name' twice in one object/],
      [signedText(`{"id":"dup-2",${base},"params":{"echo":"a","echo":"b"}}`), /the envelope has the key 'params\.echo' twice/],
      [signedText(`{"id":"dup-3",${base},"params":{"x":[{"k":1,"k":2}]}}`), /the envelope has the key 'params\.x\.0\.k' twice/],
      [signedText(`{"id":"dup-4",${base},"params":{"\\u0065cho":"a","echo":"b"}}`), /the envelope has the key 'params\.echo' twice/],
    ];
    for (const [payload, message] of cases) {
      assert.throws(
        () => parseCommand(Buffer.from(payload)),
        (err: unknown) => err instanceof MalformedCommand && message.test(err.message),
        payload,
      );
    }
    const wire = JSON.parse(cases[0]![0]) as { envelope: string; signature: string; signer: string };
    const outer = `{"envelope":"${wire.envelope}","signature":"${wire.signature}","signer":${JSON.stringify(wire.signer)},"signature":"AAAA"}`;
    assert.throws(() => parseCommand(Buffer.from(outer)), /the payload has the key 'signature' twice in one object/);
    // Through the dispatcher: REJECTED malformed, answered with the ID, nothing run.
    const r = rig();
    try {
      r.send(cases[1]![0], { responseTopic: `vehicles/${DEVICE}/results/ops` });
      assert.equal(r.answers.length, 1);
      assert.equal(r.answers[0]!.result.reason, 'malformed');
      assert.equal(r.answers[0]!.result.id, 'dup-2');
      assert.equal(r.dispatcher.stats.accepted, 0);
      // Without the duplicate the same envelope runs.
      r.send(signedText(`{"id":"dup-ok",${base},"params":{"echo":"b"}}`));
      assert.equal(r.dispatcher.stats.accepted, 1);
    } finally {
      r.close();
    }
  });

  it("[14.L2] command IDs '.' and '..' are refused; a response topic with such a level is not used", () => {
    for (const id of ['.', '..']) {
      const { payload } = signCommand({ deviceId: DEVICE, name: 'ping', id }, operator);
      assert.throws(
        () => parseCommand(Buffer.from(payload)),
        (err: unknown) => err instanceof MalformedCommand && /id: expected 1-64 characters .*not '\.' or '\.\.'/.test(err.message) && err.id === undefined,
      );
    }
    // Dots inside an ID are fine.
    assert.equal(parseCommand(Buffer.from(signCommand({ deviceId: DEVICE, name: 'ping', id: 'a.b...c' }, operator).payload)).envelope.id, 'a.b...c');
    const r = rig();
    try {
      const { payload, envelope } = signCommand({ deviceId: DEVICE, name: 'ping' }, operator);
      r.send(payload, { responseTopic: `vehicles/${DEVICE}/results/../../car-other/results/x` });
      assert.equal(r.answers[0]!.route.topic, `vehicles/${DEVICE}/commands/${envelope.id}/result`);
    } finally {
      r.close();
    }
  });

  it(`[14.L3] correlation data over ${MAX_CORRELATION_BYTES} bytes is not echoed nor stored; within it, it is`, async () => {
    const r = rig();
    try {
      const small = Buffer.alloc(MAX_CORRELATION_BYTES, 0x61);
      const big = Buffer.alloc(60_000, 0x62);
      const topic = `vehicles/${DEVICE}/results/ops`;
      const first = signCommand({ deviceId: DEVICE, name: 'ping', id: 'corr-small' }, operator);
      r.send(first.payload, { responseTopic: topic, correlationData: small });
      const second = signCommand({ deviceId: DEVICE, name: 'ping', id: 'corr-big' }, operator);
      r.send(second.payload, { responseTopic: topic, correlationData: big });
      // An unsigned payload's answer too.
      r.send('not json', { responseTopic: topic, correlationData: big });
      await waitFor(() => r.answers.filter((a) => a.result.status === 'SUCCEEDED').length === 2, 'both pings', 5000);
      const of = (id: string | null) => r.answers.filter((a) => a.result.id === id);
      assert.ok(of('corr-small').every((a) => a.route.correlation?.equals(small)));
      assert.ok(of('corr-big').length === 3 && of('corr-big').every((a) => a.route.correlation === undefined && a.route.topic === topic));
      assert.deepEqual(
        of(null).map((a) => a.route),
        [{ topic }],
      );
    } finally {
      r.close();
    }
  });

  it('[14.L6] a full disk under the replay memory: REJECTED disk-full, not malformed, and nothing runs', async () => {
    const r = rig();
    try {
      // A real SQLITE_FULL: the replay database may not grow by a page more.
      const db = (r.replay as unknown as { store: { db: Database.Database } }).store.db;
      db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
      let sent = 0;
      for (; sent < 500 && !r.answers.some((a) => a.result.status === 'REJECTED'); sent++) {
        r.send(signCommand({ deviceId: DEVICE, name: 'ping', id: `fill-${sent}-${'x'.repeat(50)}` }, operator).payload);
        // Each ping finishes before the next comes (no 'busy').
        await waitFor(() => r.dispatcher.stats.running === 0, 'the ping to finish', 5000);
      }
      const refused = r.answers.find((a) => a.result.status === 'REJECTED')!;
      assert.ok(refused, `no refusal after ${sent} commands`);
      assert.equal(refused.result.reason, 'disk-full');
      assert.match(refused.result.message!, /the command's ID could not be recorded in the replay memory \(the disk is full\): database or disk is full/);
      assert.equal(r.dispatcher.stats.accepted, sent - 1, 'the refused one did not run');
    } finally {
      r.close();
    }
  });

  it(`[14.L11] answers to payloads not validly signed: at most ${UNSIGNED_ANSWERS_PER_MINUTE} a minute, the rest counted in health`, () => {
    const r = rig();
    try {
      const topic = `vehicles/${DEVICE}/results/ops`;
      const forged = (i: number): string => signCommand({ deviceId: DEVICE, name: 'ping', id: `forged-${i}` }, foreign).payload;
      for (let i = 0; i < 100; i++) r.send(i % 2 === 0 ? forged(i) : `garbage ${i}`, { responseTopic: topic, correlationData: Buffer.from(`c-${i}`) });
      assert.equal(r.answers.length, UNSIGNED_ANSWERS_PER_MINUTE);
      assert.equal(r.dispatcher.stats.unsignedNotAnswered, 100 - UNSIGNED_ANSWERS_PER_MINUTE);
      assert.equal(r.dispatcher.stats.received, 100);
      assert.equal(r.log.filter((line) => /not answered, only counted/.test(line)).length, 1);
      // A signed command is answered whatever the budget.
      r.send(signCommand({ deviceId: DEVICE, name: 'openTrunk' }, operator).payload, {}, 'openTrunk');
      assert.equal(r.answers[r.answers.length - 1]!.result.reason, 'unknown-command');
      // Two seconds later: one more answer; a minute later, the whole budget again. A clock set back gives none.
      r.clock.now += 2000;
      for (let i = 0; i < 5; i++) r.send('garbage', { responseTopic: topic });
      assert.equal(r.answers.filter((a) => !a.stored).length, UNSIGNED_ANSWERS_PER_MINUTE + 1);
      r.clock.now -= 3_600_000;
      r.send('garbage', { responseTopic: topic });
      assert.equal(r.answers.filter((a) => !a.stored).length, UNSIGNED_ANSWERS_PER_MINUTE + 1);
      r.clock.now += 3_600_000 + 60_000;
      for (let i = 0; i < 100; i++) r.send('garbage', { responseTopic: topic });
      assert.equal(r.answers.filter((a) => !a.stored).length, 2 * UNSIGNED_ANSWERS_PER_MINUTE + 1);
    } finally {
      r.close();
    }
  });
});
