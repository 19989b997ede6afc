/**
 * `npm run bench -- commands [--json]`: command round trip on loopback, through a real mosquitto (TLS, client
 * certificates, the fleet ACL) and the agent's whole command path: the operator signs a ping (ECDSA P-256) and
 * publishes it with an MQTT 5 response topic; the car verifies the signer's chain and the signature, records the ID
 * in its replay memory (SQLite, fsynced), commits ACCEPTED, IN_PROGRESS and SUCCEEDED to its outbox and publishes
 * them; the round trip ends when the operator has SUCCEEDED. One command at a time, so `per_s` is the sequential
 * rate (1000 / mean latency), not a throughput under load.
 *
 * The baseline, in the same run and through the same broker: a bare MQTT request and response, an unsigned message
 * that a plain device client echoes to the response topic at once (no verification, no storage). The ratio is what
 * the command path costs over the network's own round trip.
 *
 * Keys: p50_ms, p99_ms, per_s (and mean_ms, max_ms, commands, baseline_p50_ms, baseline_p99_ms, ratio_p50).
 */
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { OperatorClient } from '../src/commands/operator-client.js';
import { Mosquitto, TestPki } from '../test/support/mosquitto.js';
import { CommandPki, startCommandAgent } from '../test/support/commands.js';

const WARMUP = 30;
const COMMANDS = 500;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function runCommandsBenchmark(json: boolean): Promise<void> {
  const pki = new TestPki('commands bench CA');
  const commandPki = new CommandPki();
  // The shipped fleet broker config sets set_tcp_nodelay: without it mosquitto holds small packets back (Nagle) up to 40 ms.
  const broker = await Mosquitto.start({ pki, quiet: true });
  const agent = await startCommandAgent(broker, pki, commandPki, { deviceId: 'car-bench' });
  const files = pki.backend();
  const ops = await OperatorClient.connect({ url: broker.backendUrl, certFile: files.certFile, keyFile: files.keyFile, caFile: pki.caFile });
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
    const baseline = (await bareRoundTrips(broker, pki, ops.client)).sort((a, b) => a - b);
    const round = (x: number): number => Math.round(x * 100) / 100;
    const result = {
      commands: COMMANDS,
      p50_ms: round(percentile(sorted, 50)),
      p99_ms: round(percentile(sorted, 99)),
      mean_ms: round(latencies.reduce((a, b) => a + b, 0) / latencies.length),
      max_ms: round(sorted[sorted.length - 1]!),
      per_s: round(COMMANDS / elapsedS),
      baseline_p50_ms: round(percentile(baseline, 50)),
      baseline_p99_ms: round(percentile(baseline, 99)),
      ratio_p50: round(percentile(sorted, 50) / percentile(baseline, 50)),
    };
    if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      process.stdout.write(
        `commands: ${COMMANDS} signed pings, one at a time, operator -> mosquitto (TLS) -> agent -> outbox -> mosquitto -> operator\n` +
          `  round trip p50 ${result.p50_ms} ms, p99 ${result.p99_ms} ms, mean ${result.mean_ms} ms, max ${result.max_ms} ms; ${result.per_s} commands/s\n` +
          `  baseline (bare MQTT request and echo, same broker): p50 ${result.baseline_p50_ms} ms, p99 ${result.baseline_p99_ms} ms; ratio ${result.ratio_p50}\n`,
      );
    }
  } finally {
    await ops.close();
    await agent.close();
    await broker.stop();
  }
}

/** Bare MQTT 5 request/response round trips through `broker`: a device client echoes each request at once. */
async function bareRoundTrips(broker: Mosquitto, pki: TestPki, operator: MqttClient): Promise<number[]> {
  const deviceId = 'car-echo';
  const files = pki.client(deviceId);
  const device = mqtt.connect(broker.url, {
    protocolVersion: 5,
    clientId: deviceId,
    reconnectPeriod: 0,
    ca: readFileSync(pki.caFile),
    cert: readFileSync(files.certFile),
    key: readFileSync(files.keyFile),
    rejectUnauthorized: true,
  });
  await new Promise<void>((resolve, reject) => {
    device.once('connect', () => resolve());
    device.once('error', reject);
  });
  (device.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  const responseTopic = `vehicles/${deviceId}/results/bench`;
  try {
    await device.subscribeAsync(`vehicles/${deviceId}/commands/+`, { qos: 1 });
    device.on('message', (_topic, payload, packet) => {
      const correlationData = packet.properties?.correlationData;
      device.publish(responseTopic, payload, { qos: 1, properties: correlationData ? { correlationData } : {} });
    });
    await operator.subscribeAsync(responseTopic, { qos: 1 });
    const latencies: number[] = [];
    let waiting: ((id: string) => void) | undefined;
    const onMessage = (topic: string, payload: Buffer): void => {
      if (topic === responseTopic) waiting?.(payload.toString());
    };
    operator.on('message', onMessage);
    for (let i = 0; i < WARMUP + COMMANDS; i++) {
      const id = `echo-${i}`;
      const t0 = performance.now();
      const echoed = new Promise<void>((resolve) => (waiting = (got) => got === id && resolve()));
      await operator.publishAsync(`vehicles/${deviceId}/commands/ping`, id, { qos: 1, properties: { responseTopic, correlationData: Buffer.from(id) } });
      await echoed;
      if (i >= WARMUP) latencies.push(performance.now() - t0);
    }
    operator.removeListener('message', onMessage);
    return latencies;
  } finally {
    await device.endAsync(true);
  }
}
