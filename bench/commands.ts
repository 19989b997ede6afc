/**
 * `npm run bench -- commands [--json]`: command round trip on loopback, through a real mosquitto (TLS, client
 * certificates, the fleet ACL) and the agent's whole command path: the operator signs a ping (ECDSA P-256) and
 * publishes it with an MQTT 5 response topic; the car verifies the signer's chain and the signature, records the ID
 * in its replay memory (SQLite, fsynced), commits ACCEPTED, IN_PROGRESS and SUCCEEDED to its outbox and publishes
 * them; the round trip ends when the operator has SUCCEEDED. One command at a time, so `per_s` is the sequential
 * rate (1000 / mean latency), not a throughput under load.
 *
 * Keys: p50_ms, p99_ms, per_s (and mean_ms, max_ms, commands).
 */
import { OperatorClient } from '../src/commands/operator-client.js';
import { BACKEND, Mosquitto, TestPki } from '../test/support/mosquitto.js';
import { CommandPki, startAgent } from '../test/support/commands.js';

const WARMUP = 30;
const COMMANDS = 500;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function runCommandsBenchmark(json: boolean): Promise<void> {
  const pki = new TestPki('commands bench CA');
  const commandPki = new CommandPki();
  // As a fleet broker for commands should run: without it mosquitto holds small packets back (Nagle) up to 40 ms.
  const broker = await Mosquitto.start({ pki, quiet: true, extraConfig: ['set_tcp_nodelay true'] });
  const agent = await startAgent(broker, pki, commandPki, { deviceId: 'car-bench' });
  const files = pki.client(BACKEND);
  const ops = await OperatorClient.connect({ url: broker.url, certFile: files.certFile, keyFile: files.keyFile, caFile: pki.caFile });
  try {
    const latencies: number[] = [];
    let started = 0;
    for (let i = 0; i < WARMUP + COMMANDS; i++) {
      if (i === WARMUP) started = performance.now();
      const t0 = performance.now();
      const outcome = await ops.send({ deviceId: 'car-bench', name: 'ping' }, commandPki.operator, { timeoutMs: 10_000 });
      if (outcome.final?.status !== 'SUCCEEDED') throw new Error(`ping ${i}: ${JSON.stringify(outcome.final ?? 'no result')}`);
      if (i >= WARMUP) latencies.push(performance.now() - t0);
    }
    const elapsedS = (performance.now() - started) / 1000;
    const sorted = [...latencies].sort((a, b) => a - b);
    const round = (x: number): number => Math.round(x * 100) / 100;
    const result = {
      commands: COMMANDS,
      p50_ms: round(percentile(sorted, 50)),
      p99_ms: round(percentile(sorted, 99)),
      mean_ms: round(latencies.reduce((a, b) => a + b, 0) / latencies.length),
      max_ms: round(sorted[sorted.length - 1]!),
      per_s: round(COMMANDS / elapsedS),
    };
    if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      process.stdout.write(
        `commands: ${COMMANDS} signed pings, one at a time, operator -> mosquitto (TLS) -> agent -> outbox -> mosquitto -> operator\n` +
          `  round trip p50 ${result.p50_ms} ms, p99 ${result.p99_ms} ms, mean ${result.mean_ms} ms, max ${result.max_ms} ms; ${result.per_s} commands/s\n`,
      );
    }
  } finally {
    await ops.close();
    await agent.close();
    await broker.stop();
  }
}
