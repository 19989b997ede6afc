/**
 * A broker that holds the client to the MQTT 5 rules mosquitto lets pass: it announces a small Receive Maximum in
 * its CONNACK, holds each PUBACK back for `ackDelayMs` (so publishes pile up in flight, as over a slow cellular
 * link), and ends the connection with DISCONNECT 0x93 (Receive Maximum exceeded) the moment the client has one
 * QoS 1 publish more unacknowledged, as the specification (3.3.4) lets a server do and strict brokers do.
 *
 * Mutual TLS with the test PKI's certificates, like the fleet broker; one device at a time is enough. It answers
 * CONNECT (clean, no session kept), SUBSCRIBE (granted QoS 1), PUBLISH and PINGREQ; everything else is ignored.
 * It records the publishes it acknowledged, in order, and the most it ever had in flight.
 */
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import mqttPacket, { type Packet } from 'mqtt-packet';
import type { TestPki } from './mosquitto.js';

export interface StrictBrokerOptions {
  pki: TestPki;
  receiveMaximum: number;
  ackDelayMs: number;
}

export interface StrictPublish {
  topic: string;
  payload: string;
}

export class StrictBroker {
  /** Publishes acknowledged, in the order they arrived. */
  readonly acknowledged: StrictPublish[] = [];
  /** The most QoS 1 publishes the client had unacknowledged at once. */
  peakInFlight = 0;
  /** Connections ended because the client exceeded the receive maximum. */
  violations = 0;
  connections = 0;
  /** How long each PUBACK is held back; may be changed while connected (it applies to the publishes after). */
  ackDelayMs: number;
  private readonly sockets = new Set<TLSSocket>();

  private constructor(
    private readonly server: Server,
    private readonly options: StrictBrokerOptions,
  ) {
    this.ackDelayMs = options.ackDelayMs;
  }

  static async start(options: StrictBrokerOptions): Promise<StrictBroker> {
    const server = options.pki.server();
    const tls = createServer({
      cert: readFileSync(server.certFile),
      key: readFileSync(server.keyFile),
      ca: readFileSync(options.pki.caFile),
      requestCert: true,
      rejectUnauthorized: true,
    });
    const broker = new StrictBroker(tls, options);
    tls.on('secureConnection', (socket) => broker.serve(socket));
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    return broker;
  }

  get url(): string {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('the strict broker is not listening');
    return `mqtts://localhost:${address.port}`;
  }

  /** Cuts every connection without a DISCONNECT (a lost link). */
  cutConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.cutConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: TLSSocket): void {
    this.sockets.add(socket);
    this.connections++;
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    const send = (packet: Packet): void => {
      if (!socket.destroyed) socket.write(mqttPacket.generate(packet, { protocolVersion: 5 }));
    };
    let inFlight = 0;
    const timers = new Set<NodeJS.Timeout>();
    socket.on('close', () => {
      this.sockets.delete(socket);
      for (const timer of timers) clearTimeout(timer);
    });
    socket.on('error', () => undefined);
    parser.on('error', () => socket.destroy());
    parser.on('packet', (packet: Packet) => {
      switch (packet.cmd) {
        case 'connect':
          send({ cmd: 'connack', returnCode: 0, reasonCode: 0, sessionPresent: false, properties: { receiveMaximum: this.options.receiveMaximum } });
          break;
        case 'subscribe':
          send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map(() => 1) });
          break;
        case 'pingreq':
          send({ cmd: 'pingresp' });
          break;
        case 'publish': {
          if (packet.qos === 0) break;
          inFlight++;
          this.peakInFlight = Math.max(this.peakInFlight, inFlight);
          if (inFlight > this.options.receiveMaximum) {
            this.violations++;
            send({ cmd: 'disconnect', reasonCode: 0x93 });
            socket.end();
            break;
          }
          const publish = { topic: packet.topic, payload: Buffer.from(packet.payload).toString('utf8') };
          const timer = setTimeout(() => {
            timers.delete(timer);
            inFlight--;
            this.acknowledged.push(publish);
            send({ cmd: 'puback', messageId: packet.messageId!, reasonCode: 0 });
          }, this.ackDelayMs);
          timers.add(timer);
          break;
        }
        default:
          break;
      }
    });
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  }
}
