/**
 * The agent's uplink as a program for the car namespace of the carrier network: the real MqttSession with the
 * adaptive heartbeat (or MQTT.js's fixed keepalive), and optionally the real SQLite outbox drained by the real
 * publisher. `ip netns exec <car> node dist/test/support/netns-agent.js '<options JSON>'`; the test drives it over
 * stdin and reads what happens as JSON lines on stdout.
 *
 * Events: {"event":"start","intervalS","phase","remembered"}, {"event":"state","state","kind","message","retryInMs"},
 * the heartbeat's own events ({"event":"heartbeat"|"interval"|"dead-link"|"verdict"|"network", ...}),
 * {"event":"command","topic","payload"}, {"event":"appended","seqs"}, {"event":"acked","acknowledged","buffered"},
 * {"event":"status",...}. Commands: {"op":"append","count"}, {"op":"network","id"}, {"op":"status"}, {"op":"end"}.
 */
import { createInterface } from 'node:readline';
import { loadIdentity } from '../../src/pki/identity.js';
import { SqliteOutbox } from '../../src/store/outbox.js';
import type { HeartbeatSettings } from '../../src/uplink/heartbeat.js';
import { AdaptiveHeartbeat } from '../../src/uplink/keepalive.js';
import { LinkMemory } from '../../src/uplink/link-memory.js';
import { Publisher } from '../../src/uplink/publisher.js';
import { MqttSession } from '../../src/uplink/session.js';
import { delay } from './wait.js';

export interface NetnsAgentOptions {
  url: string;
  deviceId: string;
  certFile: string;
  keyFile: string;
  caFile: string;
  keepalive:
    { adaptive: true; settings: HeartbeatSettings; livenessMinS: number; memoryPath?: string; network?: string } | { adaptive: false; keepaliveS: number };
  /** With an outbox, appended messages are published from it by the publisher. */
  outboxPath?: string;
  connectTimeoutMs?: number;
  reconnect?: { initialMs: number; maxMs: number };
}

type Command = { op: 'append'; count: number } | { op: 'network'; id: string } | { op: 'status' } | { op: 'end' };

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function main(): void {
  const options = JSON.parse(process.argv[2] ?? '') as NetnsAgentOptions;
  const identity = loadIdentity({ certFile: options.certFile, keyFile: options.keyFile, caFile: options.caFile });
  let heartbeat: AdaptiveHeartbeat | undefined;
  let memory: LinkMemory | null = null;
  if (options.keepalive.adaptive) {
    const k = options.keepalive;
    memory = k.memoryPath ? LinkMemory.open(k.memoryPath, (m) => emit({ event: 'problem', message: m })) : null;
    heartbeat = new AdaptiveHeartbeat({ settings: k.settings, livenessMinS: k.livenessMinS, memory, ...(k.network ? { network: k.network } : {}) });
    heartbeat.onEvent((e) => {
      const { type, ...rest } = e;
      emit({ event: type, ...rest });
    });
    const status = heartbeat.status();
    emit({
      event: 'start',
      intervalS: status.intervalS,
      phase: status.phase,
      network: status.network,
      remembered: memory?.recall(status.network) !== undefined,
    });
  }
  const session = new MqttSession({
    url: options.url,
    deviceId: options.deviceId,
    identity,
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    reconnect: options.reconnect ?? { initialMs: 200, maxMs: 1000 },
    ...(heartbeat ? { heartbeat } : { keepaliveS: options.keepalive.adaptive ? 60 : options.keepalive.keepaliveS }),
  });
  session.onStateChange((c) => emit({ event: 'state', state: c.state, kind: c.error?.kind, message: c.error?.message, retryInMs: c.retryInMs }));
  session.onCommand((topic, payload) => emit({ event: 'command', topic, payload: payload.toString('utf8') }));

  let outbox: SqliteOutbox | undefined;
  let publisher: Publisher | undefined;
  let acked = -1;
  let ackTimer: NodeJS.Timeout | undefined;
  if (options.outboxPath) {
    outbox = SqliteOutbox.open({ path: options.outboxPath, deviceId: options.deviceId, maxBytes: 16 * 1024 * 1024, maxAgeMs: 86_400_000 });
    publisher = new Publisher({ session, queue: outbox, maxInflight: 16 });
    ackTimer = setInterval(() => {
      const now = publisher!.stats.acknowledged;
      if (now === acked) return;
      acked = now;
      emit({ event: 'acked', acknowledged: now, buffered: outbox!.stats().messages });
    }, 100);
  }
  session.start();
  publisher?.start();

  const end = async (): Promise<void> => {
    clearInterval(ackTimer);
    publisher?.stop();
    await Promise.race([session.close(), delay(3000)]);
    outbox?.close();
    memory?.close();
    process.exit(0);
  };
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    const command = JSON.parse(line) as Command;
    if (command.op === 'append') {
      if (!outbox) throw new Error('append needs an outbox');
      const createdAt = Date.now();
      const { seqs } = outbox.append(
        Array.from({ length: command.count }, () => ({
          kind: 'telemetry' as const,
          priority: 3 as const,
          createdAt,
          encode: (seq: number) => Buffer.from(JSON.stringify({ seq })),
        })),
      );
      emit({ event: 'appended', seqs });
    } else if (command.op === 'network') {
      heartbeat?.setNetwork(command.id);
    } else if (command.op === 'status') {
      emit({ event: 'status', heartbeat: heartbeat?.status() ?? null, counters: session.counters, state: session.state });
    } else if (command.op === 'end') {
      void end();
    }
  });
  // The test process went away: do not linger in its namespace.
  lines.on('close', () => void end());
}

main();
