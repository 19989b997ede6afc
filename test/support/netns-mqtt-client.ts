/**
 * An MQTT client for a network namespace of the carrier network (test/support/carrier-network.ts), run as a program:
 * `ip netns exec <ns> node dist/test/support/netns-mqtt-client.js '<options JSON>'`. The test process cannot be in
 * the car or the cloud itself, so it drives this one: events come out as JSON lines on stdout, commands go in as JSON
 * lines on stdin.
 *
 * Events: {"event":"connected","localAddress","localPort"}, {"event":"subscribed","topic","granted"},
 * {"event":"message","topic","payload","qos"}, {"event":"published","topic"}, {"event":"closed"},
 * {"event":"error","message"}. Commands: {"op":"publish","topic","payload","qos"}, {"op":"end"}.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { TLSSocket } from 'node:tls';
import mqtt from 'mqtt';

export interface NetnsClientOptions {
  url: string;
  clientId: string;
  /** MQTT keepalive in seconds (the car's heartbeat). */
  keepalive: number;
  caFile: string;
  certFile: string;
  keyFile: string;
  /** Topic filters to subscribe to at QoS 1 once connected. */
  subscribe?: string[];
}

type Command = { op: 'publish'; topic: string; payload: string; qos?: 0 | 1 } | { op: 'end' };

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function main(): void {
  const options = JSON.parse(process.argv[2] ?? '') as NetnsClientOptions;
  const client = mqtt.connect(options.url, {
    protocolVersion: 5,
    clientId: options.clientId,
    keepalive: options.keepalive,
    clean: true,
    // One connection: a test watches what happens to it, a reconnection would hide that.
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ca: readFileSync(options.caFile),
    cert: readFileSync(options.certFile),
    key: readFileSync(options.keyFile),
    rejectUnauthorized: true,
  });
  client.on('connect', () => {
    const socket = client.stream as TLSSocket;
    emit({ event: 'connected', localAddress: socket.localAddress, localPort: socket.localPort });
    for (const topic of options.subscribe ?? []) {
      client.subscribeAsync(topic, { qos: 1 }).then(
        (granted) => emit({ event: 'subscribed', topic, granted: granted.map((g) => g.qos) }),
        (err: Error) => emit({ event: 'error', message: `subscribe ${topic}: ${err.message}` }),
      );
    }
  });
  client.on('message', (topic, payload, packet) => emit({ event: 'message', topic, payload: payload.toString('utf8'), qos: packet.qos }));
  client.on('close', () => emit({ event: 'closed' }));
  client.on('error', (err) => emit({ event: 'error', message: err.message }));

  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    const command = JSON.parse(line) as Command;
    if (command.op === 'publish') {
      client.publishAsync(command.topic, command.payload, { qos: command.qos ?? 1 }).then(
        () => emit({ event: 'published', topic: command.topic }),
        (err: Error) => emit({ event: 'error', message: `publish ${command.topic}: ${err.message}` }),
      );
    } else if (command.op === 'end') {
      void client.endAsync(true).finally(() => process.exit(0));
    }
  });
  // The test process went away: do not linger in its namespace.
  lines.on('close', () => {
    void client.endAsync(true).finally(() => process.exit(0));
  });
}

main();
