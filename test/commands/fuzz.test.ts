/**
 * 10,000 seeded random and malformed payloads on a car's command topic, through a real mosquitto: random bytes,
 * random JSON, things shaped like the wire format with fields of the wrong kind, signed commands with bytes flipped,
 * cut or inserted, envelopes with random IDs and no valid signature, and oversize payloads. The agent must stay up,
 * run none of them, and answer payloads that came with a usable MQTT 5 response topic and correlation data with at
 * most one REJECTED result each: those not validly signed within the answer budget (UNSIGNED_ANSWERS_PER_MINUTE),
 * the rest counted in health.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { signCommand } from '../../src/commands/envelope.js';
import { UNSIGNED_ANSWERS_PER_MINUTE } from '../../src/commands/dispatcher.js';
import type { OperatorClient } from '../../src/commands/operator-client.js';
import type { CommandResult } from '../../src/commands/result.js';
import type { InProcessAgent } from '../support/agent-in-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { CommandPki, operatorClient, startCommandAgent } from '../support/commands.js';
import { TestPki } from '../support/mosquitto.js';
import { seededRandom } from '../support/random.js';
import { delay, waitFor } from '../support/wait.js';

const PAYLOADS = 10_000;
const SEED = 0x7e1e;
/** Sent but not yet seen by the agent, at most: keeps mosquitto's per-client queue far from its limit. */
const WINDOW = 400;

describe('command topic fuzz', { timeout: 180_000 }, () => {
  const pki = new TestPki('fuzz test CA');
  const commandPki = new CommandPki();
  let agent: InProcessAgent;
  let ops: OperatorClient;
  const carId = 'car-fuzz';
  const fleet = withBroker({ pki, quiet: true, backend: false });
  fleet.beforeStop(async () => {
    await ops?.close();
    await agent?.close();
  });

  before(async () => {
    agent = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: carId });
    ops = await operatorClient(fleet.broker, pki);
  });

  it(`${PAYLOADS} random and malformed payloads: the agent stays up, none runs, none is answered twice, and answers to unsigned ones stay within their budget [14.L11]`, async () => {
    const random = seededRandom(SEED);
    const int = (n: number): number => Math.floor(random() * n);
    const randomText = (max: number): string => Array.from({ length: int(max) }, () => String.fromCharCode(int(3) === 0 ? int(0xffff) : 32 + int(95))).join('');
    const randomJson = (depth = 0): unknown => {
      switch (int(depth > 2 ? 5 : 7)) {
        case 0:
          return null;
        case 1:
          return random() * 1e6 - 5e5;
        case 2:
          return randomText(20);
        case 3:
          return random() < 0.5;
        case 4:
          return int(1e9);
        case 5:
          return Array.from({ length: int(4) }, () => randomJson(depth + 1));
        default:
          return Object.fromEntries(
            Array.from({ length: int(5) }, () => [random.pick(['envelope', 'signature', 'signer', 'id', 'name', 'v', randomText(6)]), randomJson(depth + 1)]),
          );
      }
    };
    // A genuinely signed command, already expired: whatever a mutation leaves of it can never run.
    const base = signCommand({ deviceId: carId, name: 'ping', issuedAt: Date.now() - 60_000, expiresAt: Date.now() - 30_000 }, commandPki.operator).payload;
    const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64');
    const generate = (i: number): Buffer => {
      switch (int(6)) {
        case 0:
          return Buffer.from(Array.from({ length: int(600) }, () => int(256)));
        case 1:
          return Buffer.from(JSON.stringify(randomJson()) ?? 'null');
        case 2:
          return Buffer.from(
            JSON.stringify({
              envelope: random.pick([b64(randomJson()), randomText(40), 42, null]),
              signature: random.pick([b64(randomText(70)), randomText(10), undefined]),
              signer: random.pick(['', randomText(200), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', undefined]),
            }),
          );
        case 3: {
          const bytes = Buffer.from(base);
          const mode = int(3);
          if (mode === 0) {
            for (let k = 0; k <= int(3); k++) bytes[int(bytes.length)] = int(256);
            return bytes;
          }
          if (mode === 1) return bytes.subarray(0, int(bytes.length));
          const at = int(bytes.length);
          return Buffer.concat([bytes.subarray(0, at), Buffer.from(randomText(8)), bytes.subarray(at)]);
        }
        case 4: {
          const envelope = {
            v: 1,
            id: `fz-${i}-${int(1e6)}`,
            deviceId: random.pick([carId, 'car-x', '']),
            name: random.pick(['ping', 'getStatus', 'reboot', 'x/y', '']),
            params: randomJson(),
            issuedAt: random.pick([Date.now(), -1, 1e20, 'now']),
          };
          return Buffer.from(
            JSON.stringify({
              envelope: b64(envelope),
              signature: b64(randomText(64)),
              signer: random.pick([commandPki.operator.certPem, commandPki.foreign.certPem, randomText(50)]),
            }),
          );
        }
        default:
          return random() < 0.05 ? Buffer.alloc(16_385 + int(8000), 0x7b) : Buffer.from(randomText(300));
      }
    };

    const answers = new Map<string, CommandResult[]>();
    ops.client.on('message', (_topic, payload, packet) => {
      const correlation = packet.properties?.correlationData?.toString('utf8');
      if (!correlation?.startsWith('fuzz-')) return;
      const list = answers.get(correlation) ?? [];
      list.push(JSON.parse(payload.toString('utf8')) as CommandResult);
      answers.set(correlation, list);
    });
    await ops.send({ deviceId: carId, name: 'ping' }, commandPki.operator, { timeoutMs: 10_000 }); // subscribes to the results

    const received = (): number => (agent.dataPath.healthReport().commands as { received: number }).received;
    const receivedBefore = received();
    const correlated: string[] = [];
    const started = performance.now();
    for (let i = 0; i < PAYLOADS;) {
      while (i - (received() - receivedBefore) > WINDOW) await delay(5);
      const sends: Promise<unknown>[] = [];
      for (let k = 0; k < 100 && i < PAYLOADS; k++, i++) {
        const payload = generate(i);
        const topicName = random.pick(['ping', 'getStatus', 'fuzz', 'x']);
        const withCorrelation = random() < 0.7;
        const correlation = `fuzz-${i}`;
        if (withCorrelation) correlated.push(correlation);
        sends.push(
          ops.client.publishAsync(`vehicles/${carId}/commands/${topicName}`, payload, {
            qos: 1,
            ...(withCorrelation ? { properties: { responseTopic: ops.responseTopic(carId), correlationData: Buffer.from(correlation) } } : {}),
          }),
        );
      }
      await Promise.all(sends);
    }
    await waitFor(() => received() - receivedBefore >= PAYLOADS, `the agent to receive all ${PAYLOADS} payloads`, 60_000);
    const elapsedS = (performance.now() - started) / 1000;
    // The answers went out as each payload was handled, before this ping's results: once it is back, all are in.
    const after = await ops.send({ deviceId: carId, name: 'ping', params: { echo: 'still here' } }, commandPki.operator, { timeoutMs: 10_000 });
    assert.equal(after.final?.status, 'SUCCEEDED');

    const answered = correlated.filter((c) => answers.has(c));
    const notRejected = answered.filter((c) => answers.get(c)!.some((r) => r.status !== 'REJECTED'));
    assert.deepEqual(notRejected.slice(0, 5), [], 'every correlated payload is REJECTED, never ACCEPTED');
    const twice = answered.filter((c) => answers.get(c)!.length !== 1);
    assert.deepEqual(twice.slice(0, 5), [], 'at most one result each');
    assert.ok(correlated.length > 6500, `${correlated.length} correlated payloads`);
    // Unsigned: a budget per minute (the whole burst at once, then refilled), counted beyond it.
    const unsigned = new Set(['oversize', 'malformed', 'no-signature', 'bad-signature', 'untrusted-signer']);
    // (A validly signed copy published under another command's topic is malformed too, but signed: not limited.)
    const unsignedAnswers = answered.filter((c) => {
      const { reason, message } = answers.get(c)![0]!;
      return unsigned.has(reason!) && !/^the topic names command/.test(message!);
    }).length;
    const allowance = UNSIGNED_ANSWERS_PER_MINUTE * (1 + Math.ceil((performance.now() - started) / 60_000));
    assert.ok(unsignedAnswers >= 1 && unsignedAnswers <= allowance, `${unsignedAnswers} answers to unsigned payloads (at most ${allowance})`);

    const stats = agent.dataPath.healthReport().commands as {
      accepted: number;
      rejected: Record<string, number>;
      unanswerable: number;
      unsignedNotAnswered: number;
    };
    assert.ok(stats.unsignedNotAnswered > 5000, `${stats.unsignedNotAnswered} not answered, counted`);
    assert.equal(stats.accepted, 2, 'only the two real pings ran');
    for (const reason of ['malformed', 'oversize', 'bad-signature', 'untrusted-signer', 'expired']) {
      assert.ok((stats.rejected[reason] ?? 0) > 0, `some payloads were rejected as ${reason}: ${JSON.stringify(stats.rejected)}`);
    }
    assert.ok(stats.unanswerable > 0, 'payloads with neither an ID nor a correlation are counted');
    // Every refusal blames the payload, never the agent (a damaged key in a signer certificate is untrusted-signer).
    assert.equal(stats.rejected['internal-error'] ?? 0, 0, JSON.stringify(stats.rejected));
    // Said once per kind, not once per payload.
    assert.ok(agent.log.length < 50, `${agent.log.length} log lines:\n${agent.log.slice(0, 20).join('\n')}`);
    // Still up, still answering (the ping above).
    assert.equal(agent.dataPath.uplink!.session.state, 'connected');
    process.stdout.write(
      `# fuzz: ${PAYLOADS} payloads in ${elapsedS.toFixed(1)} s, ${correlated.length} correlated, ${answered.length} answered, rejected ${JSON.stringify(stats.rejected)}, unanswerable ${stats.unanswerable}, unsigned not answered ${stats.unsignedNotAnswered}\n`,
    );
  });
});
