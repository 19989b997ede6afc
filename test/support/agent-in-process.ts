/**
 * The agent in the test's own process: `Agent` (src/agent/agent.ts, the composition root) opened on a device config
 * and, unless asked not to, running, with its log captured and its command context at hand. This is the one way the
 * tests start an agent in-process; `telematics-agent run` as a real process (to kill -9, to signal, to read its
 * stderr) is test/support/agent-process.ts, and the uplink program of the network-namespace tests is
 * test/support/netns-agent.ts. The `run` command's own front end (status line, summary) is tested through runAgent.
 *
 * Failure: `start` rejects with the agent's own error when the config's files cannot be used (what `open` had opened
 * is closed again); `close` resolves with the summary, or rejects with the run's failure once everything is closed.
 */
import { Agent, type RunSummary } from '../../src/agent/agent.js';
import type { DataPath } from '../../src/agent/data-path.js';
import type { CanBus } from '../../src/can/bus.js';
import type { CommandContext } from '../../src/commands/handler.js';
import { loadDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { loggingConfig } from '../../src/health/log-config.js';
import { Logger } from '../../src/health/log.js';
import { messageFrame } from './frames.js';

export interface InProcessAgentOptions {
  /**
   * Run the sources and pollers (default true). false: the agent is open (data path, uplink, commands, health) but
   * nothing reads its buses: the test feeds the frames itself (`feedSignals`), and a silent bus stays silent.
   */
  run?: boolean;
  /** Stop the run after this many seconds (as `run --duration`); default: until `close`. */
  durationS?: number;
  /** The log to write to; default one made from the config's `logging` section whose lines go to `log`. */
  logger?: Logger;
  /** The CAN bus setSignal writes through on a socketcan bus (a MemoryCanBus in tests without a kernel). */
  openCanBus?: (interfaceName: string) => CanBus;
}

export class InProcessAgent {
  /** What the agent logged: each entry's text, at the levels the config's `logging.level` lets through. */
  readonly log: string[];
  /** Set once the run has ended, by itself (duration, restart, a failed source) or by `close`. */
  ended: { error?: unknown; at: number } | undefined;
  private readonly running: Promise<void> | undefined;
  private closing: Promise<RunSummary> | undefined;

  private constructor(
    readonly agent: Agent,
    log: string[],
    private readonly ownLogger: Logger | undefined,
    options: InProcessAgentOptions,
  ) {
    this.log = log;
    if (options.run === false) return;
    this.running = agent.run(options.durationS !== undefined ? { durationS: options.durationS } : {});
    this.running.then(
      () => (this.ended ??= { at: performance.now() }),
      (error: unknown) => (this.ended ??= { error, at: performance.now() }),
    );
  }

  /** Opens the agent on `config` (a loaded config, or the file to load) and starts its run. */
  static async start(config: DeviceConfig | string, options: InProcessAgentOptions = {}): Promise<InProcessAgent> {
    const configFile = typeof config === 'string' ? config : undefined;
    const loaded = typeof config === 'string' ? loadDeviceConfig(config) : config;
    const log: string[] = [];
    const ownLogger = options.logger ? undefined : new Logger({ config: loggingConfig(loaded.logging), lines: (message) => log.push(message) });
    let agent: Agent;
    try {
      agent = await Agent.open(loaded, {
        logger: options.logger ?? ownLogger!,
        ...(configFile !== undefined ? { configFile } : {}),
        ...(options.openCanBus ? { openCanBus: options.openCanBus } : {}),
      });
    } catch (err) {
      ownLogger?.close();
      throw err;
    }
    return new InProcessAgent(agent, log, ownLogger, options);
  }

  /** The running config (with the collection rules a setConfig left in the state folder). */
  get config(): DeviceConfig {
    return this.agent.config;
  }

  /** The context remote commands act through. */
  get context(): CommandContext {
    return this.agent.commandContext;
  }

  /**
   * The data path, for what only it shows: the live MQTT session (its identity, publishing as the car) and its report.
   * Agent keeps it private; this is the one place the tests look inside.
   */
  get dataPath(): DataPath {
    const dataPath = this.agent['dataPath'];
    if (!dataPath) throw new Error('this agent has no data path (no collection section in its config)');
    return dataPath;
  }

  /** Feeds one frame of `message` with `values` through bus `bus`'s decoder, as the bus would (numbers by DBC name). */
  feedSignals(message: string, values: Record<string, number>, bus = this.config.buses[0]!.name): void {
    const index = this.config.buses.findIndex((b) => b.name === bus);
    const decoder = this.agent['buses'][index];
    if (!decoder) throw new Error(`no bus ${bus} in this agent`);
    const codec = decoder.database.byName(message);
    if (!codec) throw new Error(`no message ${message} in the DBC of ${bus}`);
    const sink = this.agent['dataPath'] ? this.agent['dataPath'].sinkFor(index) : decoder.sink;
    sink(messageFrame(codec, values, { ts: Date.now() / 1000, bus }));
  }

  /** Stops the run (the sources end); `close` still closes the agent. */
  stop(): void {
    this.agent.stop();
  }

  /** Stops the run, commits what is open, closes the session and the outbox; the summary. Once; later calls share it. */
  close(): Promise<RunSummary> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<RunSummary> {
    this.agent.stop();
    let failure: { error: unknown } | undefined;
    await this.running?.catch((err: unknown) => (failure = { error: err }));
    this.ended ??= { at: performance.now() };
    const summary = await this.agent.close();
    this.ownLogger?.close();
    if (failure) throw failure.error;
    return summary;
  }
}
