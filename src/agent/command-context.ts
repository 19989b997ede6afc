/**
 * The agent side of remote commands: what a command handler may use of the running agent (CommandContext in
 * src/commands/handler.ts), built by the composition root (src/agent/agent.ts) from the parts of the run. getStatus
 * reads the agent's snapshot (src/agent/snapshot.ts); where a written frame goes is the bus source plug-in's to say.
 *
 * Everything here reads the state the run already keeps (the buses' value buffers, the latest OBD values, the data
 * path's counters) or changes it in one place: the collection section (applyCollection, kept in the collection
 * override file of src/config/collection-override.ts, never in the read-only device config) and one CAN frame
 * (writeSignal). Nothing runs a shell command.
 */
import type { StatusReport } from '../commands/handlers/get-status.js';
import type { RotationOutcome } from '../pki/rotation.js';
import { exactFilter, type CanBus, type CanEndpoint } from '../can/bus.js';
import { createFrame, type FrameSink } from '../can/frame.js';
import { CanFrameWriter, FrameWriteError } from '../can/frame-writer.js';
import { SocketCanBus } from '../can/socketcan.js';
import { CollectorConfigError } from '../collect/collector.js';
import { collectionConfigSchema } from '../collect/config.js';
import { describeSignal, offeredMatches, offeredName, resolveSignalName } from '../collect/signal-names.js';
import { CommandFailure, type CertificateRotationRequest, type CommandContext } from '../commands/handler.js';
import { collectionOverrideFile, writeCollectionOverride } from '../config/collection-override.js';
import { formatConfigPath, type DeviceConfig } from '../config/device-config.js';
import type { BusDecoder } from '../dbc/bus-decoder.js';
import type { SignalValue } from '../dbc/model.js';
import type { LogLevel } from '../health/log-config.js';
import type { ObdClient } from '../obd/client.js';
import type { SignalTiming } from '../commands/precondition.js';
import { MODE01_PIDS } from '../obd/j1979.js';
import type { DataPath } from './data-path.js';
import type { AgentSnapshot } from './snapshot.js';
import { adapterType, busSourceType } from './sources/registry.js';
import type { FrameWriteRoute } from './sources/source-type.js';

/** Frames a command may put on one bus: a person's command, never a stream (the rate limit of CanFrameWriter). */
const WRITE_FRAMES_PER_SECOND = 10;
const WRITE_BURST = 5;

/** The latest numeric OBD-II values, by the name the collector gets them under: `<adapter or bus>.obd.<key>`. */
export type ObdValues = ReadonlyMap<string, number>;

export interface CommandContextOptions {
  /**
   * The running device config (absolute paths, as loadDeviceConfig returns it, with the collection override applied):
   * applyCollection keeps a new collection section in the override file beside its outbox.
   */
  config: DeviceConfig;
  /** The decoders of the agent's buses, in config order. */
  buses: readonly BusDecoder[];
  /** The latest OBD values (the run keeps them up to date). */
  obdValues?: ObdValues;
  /** When each of them arrived, unix ms, by the same names (the run keeps them up to date). */
  obdReceivedAt?: ObdValues;
  /** The OBD-II client of the first poller whose link to the car is up (the buses', then the adapters'); default none. */
  obdClient?: () => ObdClient | undefined;
  /** The agent's state now: what getStatus returns. */
  snapshot: () => AgentSnapshot;
  /** What getStatus returns (the health monitor's live reading). */
  statusReport: () => StatusReport;
  /** The data path, with a collection section: setConfig, setSignal on a simulated bus and rotateCertificate act on it. */
  dataPath: DataPath | undefined;
  setLogLevel(level: LogLevel): void;
  requestRestart(): void;
  /**
   * The CAN bus a socketcan bus of the config writes through; default a SocketCanBus on the interface. Tests pass a
   * MemoryCanBus to capture what is sent.
   */
  openCanBus?: (interfaceName: string) => CanBus;
}

export function createCommandContext(options: CommandContextOptions): CommandContext {
  return new AgentCommandContext(options);
}

class AgentCommandContext implements CommandContext {
  readonly deviceId: string;
  private current: DeviceConfig;
  private readonly writers = new Map<string, CanFrameWriter>();
  private intervals: ReadonlyMap<string, number> | undefined;

  constructor(private readonly options: CommandContextOptions) {
    this.deviceId = options.config.deviceId;
    this.current = options.config;
  }

  readSignal(name: string): number | string | undefined {
    const resolved = resolveSignalName(this.options.buses, name);
    if (resolved === undefined) return undefined;
    if (resolved.kind === 'dbc') {
      const value = this.options.buses[resolved.bus]!.values[resolved.slot]!;
      return Number.isNaN(value) ? undefined : value;
    }
    const values = this.options.obdValues;
    if (values === undefined) return undefined;
    if (resolved.source !== undefined) return values.get(offeredName(resolved));
    // `obd.<key>`, `gnss.<key>`: from any adapter or bus, as the collection rules read it; the first source that reported it.
    for (const [name, value] of values) if (offeredMatches(resolved, name)) return value;
    return undefined;
  }

  signalTiming(name: string): SignalTiming | undefined {
    return signalTimingOf(this.options.buses, name, {
      values: this.options.obdValues ?? new Map(),
      receivedAt: this.options.obdReceivedAt ?? new Map(),
      intervals: this.obdIntervals,
    });
  }

  /** The poll interval of each OBD value the config asks for (obdPollIntervals). */
  private get obdIntervals(): ReadonlyMap<string, number> {
    this.intervals ??= obdPollIntervals(this.current);
    return this.intervals;
  }

  rotateCertificate(request: CertificateRotationRequest): Promise<RotationOutcome> {
    const dataPath = this.options.dataPath;
    if (dataPath === undefined) throw new CommandFailure('unsupported', 'the agent runs without an uplink: there is no certificate to rotate');
    return dataPath.rotateCertificate(request);
  }

  describeSignal(name: string): { choices?: ReadonlyMap<number, string> } | undefined {
    return describeSignal(this.options.buses, name);
  }

  status(): StatusReport {
    return this.options.statusReport();
  }

  config(): unknown {
    return structuredClone(this.current);
  }

  // Synchronous from the first check to the rename (no await inside): two setConfig commands cannot interleave.
  async applyCollection(collection: unknown): Promise<void> {
    const dataPath = this.options.dataPath;
    if (dataPath === undefined) {
      throw new CommandFailure('apply-failed', 'the agent runs without a collection section (no data path to apply rules to)');
    }
    const parsed = collectionConfigSchema.safeParse(collection);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `collection.${formatConfigPath(issue.path)}: ${issue.message}`.replace('.(top level)', ''));
      throw new CommandFailure('invalid-config', problems.join('; '), { problems });
    }
    const next = parsed.data;
    // The device config is not rewritten: it names the trust anchors, and is read-only to the agent.
    const file = collectionOverrideFile(this.current);
    if (file === undefined) throw new CommandFailure('apply-failed', 'the agent runs without an outbox: there is no state folder to keep the change in');

    // Built before anything changes: rules naming a signal no bus has are refused here, and the old rules run on.
    let collector;
    try {
      collector = dataPath.createCollector(next);
    } catch (err) {
      if (err instanceof CollectorConfigError) throw new CommandFailure('apply-failed', err.message);
      throw err;
    }
    const previous = dataPath.replaceCollector(collector, next);
    try {
      writeCollectionOverride(file, collection);
    } catch (err) {
      // The file still holds the old section: so must the running agent.
      dataPath.replaceCollector(previous.collector, previous.collection);
      throw new CommandFailure('apply-failed', `cannot write the collection rules to ${file}: ${(err as Error).message}; the previous rules stay in force`);
    }
    this.current = { ...this.current, collection: next };
  }

  obd(): ObdClient | undefined {
    return this.options.obdClient?.();
  }

  async writeSignal(busName: string, messageName: string, signalName: string, value: number): Promise<void> {
    const index = this.current.buses.findIndex((b) => b.name === busName);
    const busConfig = this.current.buses[index];
    const decoder = this.options.buses[index];
    if (busConfig === undefined || decoder === undefined) {
      const known = this.current.buses.map((b) => b.name).join(', ') || 'none';
      throw new CommandFailure('unknown-bus', `no bus '${busName}' (buses: ${known})`);
    }
    const codec = decoder.database.byName(messageName);
    if (codec === undefined) throw new CommandFailure('unknown-signal', `${busName}: the bus DBC has no message '${messageName}'`);
    const { message } = codec;
    const target = message.signals.find((s) => s.name === signalName);
    if (target === undefined) throw new CommandFailure('unknown-signal', `${busName}: message ${messageName} has no signal '${signalName}'`);
    const route = busSourceType(busConfig.source).writeRoute(busConfig.source);
    if (route.to === 'none') throw new CommandFailure('bus-unavailable', `${busName} ${route.reason}`);

    // The frame carries the message's other signals as last received, so that writing one signal leaves the others
    // as they are; a signal never received (or outside its DBC range) takes its start value.
    const values: Record<string, SignalValue> = {};
    message.signals.forEach((signal, k) => {
      const current = decoder.values[codec.slots[k]!]!;
      if (!Number.isFinite(current)) return;
      if (signal.minimum < signal.maximum && (current < signal.minimum || current > signal.maximum)) return;
      values[signal.name] = current;
    });
    values[target.name] = value;
    // A multiplexed signal is only in the frame when its multiplexer selects its page.
    if (target.multiplexerSignal !== undefined && target.multiplexerIds && target.multiplexerIds.length > 0) {
      const mux = values[target.multiplexerSignal];
      if (typeof mux !== 'number' || !target.multiplexerIds.includes(mux)) values[target.multiplexerSignal] = target.multiplexerIds[0]!;
    }

    const writer = this.writerFor(index, route);
    try {
      writer.send(messageName, values);
    } catch (err) {
      if (!(err instanceof FrameWriteError)) throw err;
      const reason = { 'unknown-message': 'unknown-signal', encode: 'out-of-range', 'rate-limited': 'rate-limited', send: 'bus-unavailable' }[err.code];
      throw new CommandFailure(reason, `${busName}: ${err.message}`);
    }
  }

  setLogLevel(level: LogLevel): void {
    this.options.setLogLevel(level);
  }

  requestRestart(): void {
    this.options.requestRestart();
  }

  /** One writer per bus, kept for the run, so its rate limit holds across commands. */
  private writerFor(index: number, route: Exclude<FrameWriteRoute, { to: 'none' }>): CanFrameWriter {
    const busConfig = this.current.buses[index]!;
    let writer = this.writers.get(busConfig.name);
    if (writer) return writer;
    const decoder = this.options.buses[index]!;
    let endpoint: CanEndpoint;
    if (route.to === 'interface') {
      const open = this.options.openCanBus ?? ((ifname: string) => new SocketCanBus(ifname));
      endpoint = new OneShotEndpoint(open(route.interface));
    } else {
      // The simulated vehicle's bus exists only inside the agent: a written frame is received as the bus's own
      // traffic (decoded and collected), as a frame from another node of a real bus would be.
      const dataPath = this.options.dataPath;
      endpoint = new LoopbackEndpoint(busConfig.name, dataPath ? dataPath.sinkFor(index) : decoder.sink);
    }
    writer = new CanFrameWriter(endpoint, decoder.database, { maxFramesPerSecond: WRITE_FRAMES_PER_SECOND, burst: WRITE_BURST });
    this.writers.set(busConfig.name, writer);
    return writer;
  }
}

/** The poll interval of each OBD value the config asks for, by `<adapter or bus>.obd.<key>`; the longest of a key's entries. */
export function obdPollIntervals(config: DeviceConfig): Map<string, number> {
  const intervals = new Map<string, number>();
  const add = (source: string, pids: readonly { pid: number | string; intervalMs: number }[]): void => {
    for (const spec of pids) {
      const key = typeof spec.pid === 'string' ? spec.pid : MODE01_PIDS.get(spec.pid)?.key;
      if (key === undefined) continue;
      const name = `${source}.obd.${key}`;
      intervals.set(name, Math.max(intervals.get(name) ?? 0, spec.intervalMs));
    }
  };
  for (const bus of config.buses) if (bus.obd) add(bus.name, bus.obd.pids);
  for (const adapter of config.obdAdapters) {
    const polling = adapterType(adapter).obdPolling(adapter);
    if (polling) add(adapter.name, polling.pids);
  }
  return intervals;
}

/** The latest OBD values, when each arrived, and how often each is polled: what signalTimingOf needs of OBD. */
export interface ObdTiming {
  values: ObdValues;
  receivedAt: ObdValues;
  intervals: ReadonlyMap<string, number>;
}

/**
 * When the latest value of `name` (any name resolveSignalName takes) arrived and how often it is expected: a CAN
 * signal's time is its frame's (BusDecoder.receivedAt), its period its message's GenMsgCycleTime; an OBD value's,
 * when its answer came and the poll interval. `obd.<key>` is the first source that reported it, as readSignal reads it.
 */
export function signalTimingOf(buses: readonly BusDecoder[], name: string, obd?: ObdTiming): SignalTiming | undefined {
  const resolved = resolveSignalName(buses, name);
  if (resolved === undefined) return undefined;
  if (resolved.kind === 'dbc') {
    const at = buses[resolved.bus]!.receivedAt[resolved.slot]!;
    const cycle = resolved.codec.message.cycleTime;
    return { name: resolved.name, receivedAt: at > 0 ? at * 1000 : undefined, periodMs: cycle !== undefined && cycle > 0 ? cycle : undefined };
  }
  let source = resolved.source === undefined ? undefined : offeredName(resolved);
  if (source === undefined && obd !== undefined) {
    for (const key of obd.values.keys()) {
      if (offeredMatches(resolved, key)) {
        source = key;
        break;
      }
    }
  }
  const full = resolved.source === undefined ? `${resolved.family}.${resolved.key}` : source!;
  if (source === undefined || obd === undefined) return { name: full, receivedAt: undefined, periodMs: undefined };
  return { name: full, receivedAt: obd.receivedAt.get(source), periodMs: obd.intervals.get(source) };
}

/**
 * Writes through a socket opened for the one frame and closed after it: a socket kept open for rare commands would
 * receive (and wake the agent for) the bus traffic its filters pass, and a raw socket always passes some. The filter
 * is the written identifier alone.
 */
class OneShotEndpoint implements CanEndpoint {
  constructor(private readonly bus: CanBus) {}

  send(id: number, extended: boolean, data: Uint8Array, fd?: boolean): void {
    const endpoint = this.bus.open({ filters: [exactFilter(id, extended)] });
    try {
      endpoint.send(id, extended, data, fd);
    } finally {
      endpoint.close();
    }
  }

  onFrame(): void {
    // Never receives: it only exists for the length of a send.
  }

  close(): void {}
}

/** Delivers sent frames to a frame sink, stamped now: the simulated bus's receiver. */
class LoopbackEndpoint implements CanEndpoint {
  private readonly frame = createFrame();

  constructor(
    busName: string,
    private readonly sink: FrameSink,
  ) {
    this.frame.bus = busName;
  }

  send(id: number, extended: boolean, data: Uint8Array, fd = false): void {
    const f = this.frame;
    f.ts = Date.now() / 1000;
    f.id = id;
    f.extended = extended;
    f.fd = fd;
    f.data = data.slice();
    f.dlc = data.length;
    this.sink(f);
  }

  onFrame(): void {}

  close(): void {}
}
