/**
 * The test's handle on test/support/netns-agent.ts running in the car namespace: starts it with a certificate from the
 * carrier broker's PKI, records its events stamped on arrival, and sends it commands. That program is the agent's
 * uplink alone (session, heartbeat, outbox, publisher) behind a carrier network, not the whole agent: the whole agent
 * is test/support/agent-in-process.ts (in the test's process) or agent-process.ts (`telematics-agent run`).
 */
import { type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CarrierBroker } from './carrier-broker.js';
import type { CarrierNetwork } from './carrier-network.js';
import type { NetnsAgentOptions } from './netns-agent.js';
import { waitFor } from './wait.js';

const AGENT_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'netns-agent.js');

export type AgentEvent = { event: string; at: number } & Record<string, unknown>;

export class CarAgent {
  readonly events: AgentEvent[] = [];
  stderr = '';

  private constructor(
    readonly deviceId: string,
    private readonly child: ChildProcess,
  ) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.events.push({ ...(JSON.parse(line) as { event: string }), at: performance.now() });
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString('utf8');
    });
  }

  /** Starts the agent in the car namespace (not waiting for anything). */
  static start(
    net: CarrierNetwork,
    broker: CarrierBroker,
    deviceId: string,
    options: Pick<NetnsAgentOptions, 'keepalive' | 'outboxPath' | 'connectTimeoutMs' | 'reconnect'>,
  ): CarAgent {
    const files = broker.pki.client(deviceId);
    const full: NetnsAgentOptions = { url: broker.url, deviceId, caFile: broker.pki.caFile, certFile: files.certFile, keyFile: files.keyFile, ...options };
    return new CarAgent(deviceId, net.spawn('car', process.execPath, [AGENT_SCRIPT, JSON.stringify(full)]));
  }

  of(kind: string): AgentEvent[] {
    return this.events.filter((e) => e.event === kind);
  }

  /** States the session went through, with the kind of error that ended a connection. */
  states(): AgentEvent[] {
    return this.of('state');
  }

  get connected(): boolean {
    return this.states().at(-1)?.state === 'connected';
  }

  /** test/support/wait.ts's waitFor, failing at once (with the agent's events and stderr) when the agent exits. */
  async waitFor(condition: () => boolean, what: string, timeoutMs: number): Promise<void> {
    try {
      await waitFor(() => condition() || this.child.exitCode !== null, what, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}; events ${JSON.stringify(this.events.slice(-30))}; stderr ${this.stderr}`);
    }
    if (!condition()) throw new Error(`the agent exited (${this.child.exitCode}) waiting for ${what}: ${this.stderr}`);
  }

  send(command: Record<string, unknown>): void {
    this.child.stdin!.write(`${JSON.stringify(command)}\n`);
  }

  /** Asks for the status and waits for it. */
  async status(): Promise<AgentEvent> {
    const before = this.of('status').length;
    this.send({ op: 'status' });
    await this.waitFor(() => this.of('status').length > before, 'the status', 3000);
    return this.of('status').at(-1)!;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGKILL');
    await exited;
  }
}
