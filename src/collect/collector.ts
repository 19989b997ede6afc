/**
 * The collector: turns decoded signal values into samples according to the collection rules, and samples into
 * batches (messages to be).
 *
 * Hot path. Everything is resolved when the collector is built: each rule signal becomes a channel (one slot of a bus
 * value buffer, or an OBD key), and each CAN message that carries a channel gets a precomputed watch listing the rule
 * entries, trigger captures and trigger conditions that read it. Per frame the collector does one array lookup; a
 * frame of a message no rule reads costs nothing more. For a watched message it copies the message's channels into
 * the live value array, then runs plain loops over typed arrays. Nothing is allocated per frame; only emitted samples
 * (the output) allocate.
 *
 * Time. Rules work in frame time (the samples' own timestamps, unix seconds), so replayed logs give the same samples
 * as the live bus did, at any replay speed. The wall clock (`now`, injectable) only closes batches that waited
 * maxDelayMs and trigger captures whose signals went quiet.
 *
 * Periodic rules are evaluated on frames, not on a timer: each (rule, signal) emits the first value that arrives at or
 * after each point of its interval grid, with its true timestamp. A timer would have to re-send stale values of a
 * silent bus with invented timestamps, and would cost a scan of every periodic signal per tick; on frames the cost is
 * one comparison per watched signal.
 *
 * Every-sample rules emit each value of their signals that a frame (or an OBD offer) carries, with its timestamp, in
 * order: a repeated value is a sample again, a silent signal gives nothing, and a multiplexed signal counts only when
 * its page (every multiplexer above it) is in the frame. A value the bus sends as NaN (an IEEE float signal) is a
 * sample too. Per value the cost is the emitted sample itself, as for the other modes; the rule holds nothing of its
 * own, only the open batch of its priority, which closes at batch.maxSamples, so its memory is bounded like theirs
 * and nothing is dropped here (what holds closed batches afterwards is the data path's and the outbox's concern).
 *
 * Trigger rules. The condition is evaluated when a frame changes one of the signals it reads. Rising edge (default):
 * it fires when the condition goes from false (or never evaluated) to true. It does not fire within minIntervalMs of
 * its last firing, nor while its previous capture is still open; the edge state follows the condition regardless, so
 * a suppressed edge does not fire later while the condition stays true. Each trigger keeps a ring buffer (preallocated
 * typed arrays) of every received value of its signals. On firing, the ring's samples with ts >= fireTs - preMs
 * (the firing frame's own values included) are copied out; every further value of its signals with
 * ts <= fireTs + postMs is appended; the first value after that window, or the timer once postMs + 1 s of wall time
 * have passed, closes the capture. It goes out as ONE `events` batch (pre and post windows together) with
 * `trigger: { rule, ts: fireTs }`, so the back end receives each event complete.
 */
import type { FrameSink } from '../can/frame.js';
import type { BusDecoder } from '../dbc/bus-decoder.js';
import { memoryBudgetProblem, type BatchConfig, type CollectionConfig, type CollectionRule, type TriggerSizes } from './config.js';
import { compileExpression, ExpressionError, type CompiledExpression } from './expression.js';
import { MAX_PRIORITY, type Priority, type Sample, type SampleBatch } from './sample.js';
import { describeSignal, offeredMatches, offeredName, resolveSignalName, type OfferedFamily } from './signal-names.js';

const PERIODIC = 0;
const CHANGE = 1;
const EVERY = 2;

/** Frame timestamps are floating-point seconds: grid points and window edges are compared with this slack (0.1 ms). */
const TIME_EPSILON_S = 1e-4;
/** A capture whose signals went quiet is closed by the timer this long after its post window should have ended. */
const STALE_CAPTURE_GRACE_MS = 1000;
/** Assumed cycle of OBD values when sizing a ring buffer. */
const OBD_CYCLE_MS = 100;
/** Batch size estimate, before compression (see src/uplink/codec.ts): header, then per sample and per new signal name. */
const BATCH_OVERHEAD_BYTES = 64;
const SAMPLE_BYTES = 8;
const NAME_OVERHEAD_BYTES = 8;

export class CollectorConfigError extends Error {
  override readonly name = 'CollectorConfigError';
}

export interface RuleStats {
  readonly name: string;
  readonly mode: CollectionRule['mode'];
  /** Samples the rule emitted (for triggers: captured samples sent). */
  samples: number;
  /** Trigger rules: times fired. */
  triggers: number;
  /** Trigger rules: firings held back by minIntervalMs or by a capture still open. */
  suppressed: number;
}

export interface CollectorStats {
  /** Signal values the collector looked at (one per watched signal per frame, and per OBD value offered). */
  samplesIn: number;
  /** Samples handed on in batches. */
  samplesEmitted: number;
  /** Batches handed on (telemetry and events). */
  batches: number;
  triggersFired: number;
  /** Trigger captures cut short because their ring buffer overflowed (the pre window starts later than preMs). */
  ringOverflows: number;
  rules: RuleStats[];
}

export interface CollectorOptions {
  /** The parsed `collection` config section (maxMemoryMB: its default when absent). */
  config: Pick<CollectionConfig, 'batch' | 'rules'> & { maxMemoryMB?: number };
  /** The decoders of the agent's buses, in config order (their names prefix the sample names). */
  buses: readonly BusDecoder[];
  /** Receives every closed batch, synchronously; an exception thrown here propagates to the frame's source. */
  onBatch: (batch: SampleBatch) => void;
  /** Wall clock in ms (default Date.now): batch age and stale captures only. */
  now?: () => number;
  /** How often `start()`'s timer looks for batches to close, ms. Default: maxDelayMs / 4, between 10 and 250. */
  tickMs?: number;
}

/** One signal the rules read. */
interface Channel {
  /** Name the samples carry: `<bus>.<Message>.<Signal>`, or the key an OBD value was offered under. */
  name: string;
  /** Bus index, or -1 for an OBD value. */
  bus: number;
  slot: number;
  /** Index of the message in its bus database. */
  message: number;
  /** Offered values (OBD, GNSS): the family and key, and the one source it is restricted to (or undefined for any). */
  offered?: { family: OfferedFamily; key: string; source: string | undefined };
  /** Cycle time of its message (ring sizing). */
  cycleMs: number;
  /**
   * A multiplexed signal: the slot of each multiplexer above it (its own first, then that one's, up to the message's
   * top multiplexer) and the values that select the next level down; empty when not multiplexed. The signal is in a
   * frame only when every level selects it: a multiplexer not in the frame keeps an older frame's value.
   */
  muxSlots: Int32Array;
  muxIds: Int32Array[];
}

/**
 * What reacts to one group of channels updated together (the signals of one CAN message, or one OBD value): all
 * positions below are indexes into `channels` of this watch.
 */
class Watch {
  readonly channels: Int32Array;
  readonly slots: Int32Array;
  /** Multiplexer levels of channel position i are muxSlots[muxStart[i] .. muxStart[i + 1]) with muxIds alike. */
  readonly muxStart: Int32Array;
  readonly muxSlots: Int32Array;
  readonly muxIds: Int32Array[];
  /** Per frame: the channel was present in it (its multiplexer page was sent) / its value changed. */
  readonly present: Uint8Array;
  readonly changed: Uint8Array;
  entries = new Int32Array(0);
  entryPos = new Int32Array(0);
  captureTrigger = new Int32Array(0);
  capturePos = new Int32Array(0);
  conditionTrigger = new Int32Array(0);
  /** Positions read by conditionTrigger[k] are conditionPos[conditionStart[k] .. conditionStart[k + 1]). */
  conditionStart = new Int32Array(1);
  conditionPos = new Int32Array(0);

  constructor(channelIds: number[], channels: Channel[]) {
    this.channels = Int32Array.from(channelIds);
    this.slots = Int32Array.from(channelIds, (c) => channels[c]!.slot);
    const levels = channelIds.map((c) => channels[c]!);
    this.muxStart = Int32Array.from([0, ...levels.map((ch) => ch.muxSlots.length)]);
    for (let i = 1; i < this.muxStart.length; i++) this.muxStart[i]! += this.muxStart[i - 1]!;
    this.muxSlots = Int32Array.from(levels.flatMap((ch) => [...ch.muxSlots]));
    this.muxIds = levels.flatMap((ch) => ch.muxIds);
    this.present = new Uint8Array(channelIds.length);
    this.changed = new Uint8Array(channelIds.length);
  }

  position(channel: number): number {
    return this.channels.indexOf(channel);
  }
}

class Trigger {
  readonly stats: RuleStats;
  wasTrue = false;
  lastFireTs = -Infinity;
  capturing = false;
  fireTs = 0;
  deadlineTs = 0;
  firedAtMs = 0;
  captured: Sample[] = [];
  /** Ring buffer of received values of the rule's signals. */
  readonly ringTs: Float64Array;
  readonly ringChannel: Int32Array;
  readonly ringValue: Float64Array;
  ringHead = 0;
  ringSize = 0;
  /** The ring wrapped since the last firing: the oldest part of a pre window may be missing. */
  ringWrapped = false;

  constructor(
    readonly name: string,
    readonly priority: Priority,
    readonly condition: CompiledExpression,
    readonly risingEdge: boolean,
    readonly preS: number,
    readonly postS: number,
    readonly postMs: number,
    readonly minIntervalS: number,
    capacity: number,
    stats: RuleStats,
  ) {
    this.stats = stats;
    this.ringTs = new Float64Array(capacity);
    this.ringChannel = new Int32Array(capacity);
    this.ringValue = new Float64Array(capacity);
  }
}

/** An open telemetry batch of one priority. */
interface PendingBatch {
  samples: Sample[];
  bytes: number;
  openedAtMs: number;
}

export class Collector {
  readonly stats: CollectorStats;
  private readonly buses: readonly BusDecoder[];
  private readonly onBatch: (batch: SampleBatch) => void;
  private readonly now: () => number;
  private readonly batchConfig: BatchConfig;
  private readonly maxBytes: number;
  private readonly tickMs: number;
  private timer: ReturnType<typeof setInterval> | undefined;

  private readonly channels: Channel[] = [];
  private readonly channelNames: string[] = [];
  /** Latest value of every channel; trigger conditions read it by channel index. */
  private readonly live: Float64Array;
  /** Per bus, per message index: its watch. */
  private readonly watches: (Watch | undefined)[][];
  /** Per bus, per slot of a message's first signal: its watch (what the frame sink looks up). */
  private readonly watchByFirstSlot: (Watch | undefined)[][];
  /** OBD channels: their watch, and which offered keys feed them (cached per key). */
  private readonly obdWatches: { channel: number; watch: Watch }[] = [];
  private readonly offeredKeys = new Map<string, Watch[]>();

  // Telemetry entries: one per (periodic, change or every rule, signal).
  private readonly entryRule: Int32Array;
  private readonly entryChannel: Int32Array;
  /** Last value sent (change) — NaN before the first. */
  private readonly entryLast: Float64Array;
  /** When the last value was sent (change), or the next grid point (periodic). */
  private readonly entryTs: Float64Array;

  // Per rule (index into config.rules).
  private readonly ruleMode: Uint8Array;
  private readonly rulePriority: Uint8Array;
  private readonly ruleIntervalS: Float64Array;
  private readonly ruleMinIntervalS: Float64Array;
  private readonly ruleAbsolute: Float64Array;
  private readonly ruleRelative: Float64Array;
  private readonly ruleStats: RuleStats[];

  private readonly triggers: Trigger[] = [];
  private readonly pending = new Array<PendingBatch | undefined>(MAX_PRIORITY + 1).fill(undefined);
  /** Per priority, per channel: serial of the batch in which the channel's name was last counted (size estimate). */
  private readonly nameCounted: Int32Array[];
  private readonly batchSerial = new Int32Array(MAX_PRIORITY + 1);

  constructor(options: CollectorOptions) {
    const { config, buses } = options;
    this.buses = buses;
    this.onBatch = options.onBatch;
    this.now = options.now ?? Date.now;
    this.batchConfig = config.batch;
    this.maxBytes = config.batch.maxBytes ?? Infinity;
    this.tickMs = options.tickMs ?? Math.min(250, Math.max(10, Math.floor(config.batch.maxDelayMs / 4)));
    const rules = config.rules;
    const channelIndex = new Map<string, number>();
    const channelFor = (name: string, where: string): number => {
      const resolved = resolveSignalName(buses, name);
      if (resolved === undefined) {
        const hint = name.includes('obd')
          ? ' (OBD signals are obd.<J1979 key>, e.g. obd.rpm)'
          : name.includes('gnss')
            ? ' (GNSS signals are gnss.<key>, e.g. gnss.lat: see docs/gnss.md)'
            : '';
        throw new CollectorConfigError(`${where}: no bus DBC has a signal '${name}'${hint}`);
      }
      const key = resolved.kind === 'dbc' ? `${resolved.bus}:${resolved.slot}` : `offered:${offeredName(resolved)}`;
      const known = channelIndex.get(key);
      if (known !== undefined) return known;
      const index = this.channels.length;
      channelIndex.set(key, index);
      if (resolved.kind === 'dbc') {
        const { message } = resolved.codec;
        // The multiplexers above the signal, its own first (bounded: a DBC cannot nest deeper than it has signals).
        const muxSlots: number[] = [];
        const muxIds: Int32Array[] = [];
        let level = message.signals[resolved.signalIndex];
        while (level?.multiplexerSignal !== undefined && muxSlots.length < message.signals.length) {
          const above = level.multiplexerSignal;
          muxSlots.push(resolved.codec.slot(above));
          muxIds.push(Int32Array.from(level.multiplexerIds ?? []));
          level = message.signals.find((s) => s.name === above);
        }
        this.channels.push({
          name: resolved.name,
          bus: resolved.bus,
          slot: resolved.slot,
          message: resolved.message,
          cycleMs: message.cycleTime && message.cycleTime > 0 ? message.cycleTime : 100,
          muxSlots: Int32Array.from(muxSlots),
          muxIds,
        });
        this.channelNames.push(resolved.name);
      } else {
        const display = offeredName(resolved);
        this.channels.push({
          name: display,
          bus: -1,
          slot: -1,
          message: -1,
          offered: { family: resolved.family, key: resolved.key, source: resolved.source },
          cycleMs: OBD_CYCLE_MS,
          muxSlots: new Int32Array(0),
          muxIds: [],
        });
        this.channelNames.push(display);
      }
      return index;
    };

    // Resolve every rule's signals and conditions first: channels must exist before the watches are built.
    const ruleChannels: number[][] = [];
    const conditions: (CompiledExpression | undefined)[] = [];
    rules.forEach((rule, r) => {
      const where = `collection.rules[${r}] (${rule.name})`;
      const ids = rule.signals.map((name, j) => channelFor(name, `${where}.signals[${j}]`));
      ruleChannels.push([...new Set(ids)]);
      if (rule.mode === 'trigger') {
        try {
          conditions.push(
            compileExpression(
              rule.trigger.when,
              (name) => (resolveSignalName(buses, name) ? channelFor(name, where) : -1),
              (name) => describeSignal(buses, name)?.choices,
            ),
          );
        } catch (err) {
          if (err instanceof ExpressionError) throw new CollectorConfigError(`${where}.trigger.when: ${err.message}: ${rule.trigger.when}`);
          throw err;
        }
      } else conditions.push(undefined);
    });
    // The rings, sized from the messages' cycle times unless bufferSamples says; with the post windows, within the
    // section's memory budget (the schema could only count what the fields say).
    const triggerSizes: TriggerSizes = (rule, r) => {
      const t = rule.trigger;
      const ids = ruleChannels[r]!;
      const perCycle = (ms: number): number => ids.reduce((sum, c) => sum + Math.ceil(ms / this.channels[c]!.cycleMs) + 1, 0);
      const ringSamples = t.bufferSamples ?? Math.min(1_000_000, Math.max(16, 2 * perCycle(t.preMs)));
      return { ringSamples, postSamples: t.postMs > 0 ? perCycle(t.postMs) : 0 };
    };
    const overBudget = memoryBudgetProblem(config, triggerSizes);
    if (overBudget !== undefined) throw new CollectorConfigError(`collection: ${overBudget}`);

    this.live = new Float64Array(this.channels.length).fill(NaN);
    this.nameCounted = Array.from({ length: MAX_PRIORITY + 1 }, () => new Int32Array(this.channels.length).fill(-1));

    // Watches: one per CAN message with channels, one per OBD channel.
    const byMessage = new Map<string, number[]>();
    this.channels.forEach((ch, c) => {
      if (ch.bus < 0) {
        this.obdWatches.push({ channel: c, watch: new Watch([c], this.channels) });
        return;
      }
      const key = `${ch.bus}:${ch.message}`;
      const list = byMessage.get(key);
      if (list) list.push(c);
      else byMessage.set(key, [c]);
    });
    this.watches = buses.map((bus) => new Array<Watch | undefined>(bus.database.messages.length).fill(undefined));
    this.watchByFirstSlot = buses.map((bus) => new Array<Watch | undefined>(bus.database.slotCount).fill(undefined));
    for (const [key, ids] of byMessage) {
      const [bus, message] = key.split(':').map(Number) as [number, number];
      const watch = new Watch(ids, this.channels);
      this.watches[bus]![message] = watch;
      this.watchByFirstSlot[bus]![buses[bus]!.database.messages[message]!.slots[0]!] = watch;
    }
    const allWatches = (): Watch[] => [
      ...this.watches.flatMap((list) => list.filter((w): w is Watch => w !== undefined)),
      ...this.obdWatches.map((o) => o.watch),
    ];
    const watchOf = (c: number): Watch => {
      const ch = this.channels[c]!;
      return ch.bus >= 0 ? this.watches[ch.bus]![ch.message]! : this.obdWatches.find((o) => o.channel === c)!.watch;
    };

    // Rules: parameters, telemetry entries and triggers, attached to the watches of their channels.
    const n = rules.length;
    this.ruleMode = new Uint8Array(n);
    this.rulePriority = new Uint8Array(n);
    this.ruleIntervalS = new Float64Array(n);
    this.ruleMinIntervalS = new Float64Array(n);
    this.ruleAbsolute = new Float64Array(n);
    this.ruleRelative = new Float64Array(n);
    this.ruleStats = rules.map((rule) => ({ name: rule.name, mode: rule.mode, samples: 0, triggers: 0, suppressed: 0 }));
    const entryRule: number[] = [];
    const entryChannel: number[] = [];
    const entries = new Map<Watch, { entry: number[]; pos: number[] }>();
    const captures = new Map<Watch, { trigger: number[]; pos: number[] }>();
    const conditionReads = new Map<Watch, { trigger: number; pos: number[] }[]>();
    rules.forEach((rule, r) => {
      this.rulePriority[r] = rule.priority;
      if (rule.mode === 'trigger') {
        const t = rule.trigger;
        const condition = conditions[r]!;
        const ids = ruleChannels[r]!;
        const capacity = triggerSizes(rule, r).ringSamples;
        const trigger = this.triggers.length;
        this.triggers.push(
          new Trigger(
            rule.name,
            rule.priority as Priority,
            condition,
            t.risingEdge,
            t.preMs / 1000,
            t.postMs / 1000,
            t.postMs,
            t.minIntervalMs / 1000,
            capacity,
            this.ruleStats[r]!,
          ),
        );
        for (const c of ids) {
          const watch = watchOf(c);
          const list = captures.get(watch) ?? { trigger: [], pos: [] };
          list.trigger.push(trigger);
          list.pos.push(watch.position(c));
          captures.set(watch, list);
        }
        // The condition is evaluated when any of its signals changes: group its channels by watch.
        const readBy = new Map<Watch, number[]>();
        for (const { slot: c } of condition.signals) {
          const watch = watchOf(c);
          readBy.set(watch, [...(readBy.get(watch) ?? []), watch.position(c)]);
        }
        for (const [watch, pos] of readBy) {
          const list = conditionReads.get(watch) ?? [];
          list.push({ trigger, pos });
          conditionReads.set(watch, list);
        }
        return;
      }
      this.ruleMode[r] = rule.mode === 'periodic' ? PERIODIC : rule.mode === 'change' ? CHANGE : EVERY;
      if (rule.mode === 'periodic') this.ruleIntervalS[r] = rule.intervalMs / 1000;
      else if (rule.mode === 'change') {
        this.ruleMinIntervalS[r] = (rule.minIntervalMs ?? 0) / 1000;
        this.ruleAbsolute[r] = rule.deadband?.absolute ?? 0;
        this.ruleRelative[r] = rule.deadband?.relative ?? 0;
      }
      for (const c of ruleChannels[r]!) {
        const watch = watchOf(c);
        const list = entries.get(watch) ?? { entry: [], pos: [] };
        list.entry.push(entryRule.length);
        list.pos.push(watch.position(c));
        entries.set(watch, list);
        entryRule.push(r);
        entryChannel.push(c);
      }
    });
    this.entryRule = Int32Array.from(entryRule);
    this.entryChannel = Int32Array.from(entryChannel);
    this.entryLast = new Float64Array(entryRule.length).fill(NaN);
    this.entryTs = new Float64Array(entryRule.length).fill(-Infinity);
    for (const watch of allWatches()) {
      const e = entries.get(watch);
      if (e) {
        watch.entries = Int32Array.from(e.entry);
        watch.entryPos = Int32Array.from(e.pos);
      }
      const c = captures.get(watch);
      if (c) {
        watch.captureTrigger = Int32Array.from(c.trigger);
        watch.capturePos = Int32Array.from(c.pos);
      }
      const reads = conditionReads.get(watch);
      if (reads) {
        watch.conditionTrigger = Int32Array.from(reads, (x) => x.trigger);
        const starts = [0];
        for (const x of reads) starts.push(starts[starts.length - 1]! + x.pos.length);
        watch.conditionStart = Int32Array.from(starts);
        watch.conditionPos = Int32Array.from(reads.flatMap((x) => x.pos));
      }
    }
    this.stats = { samplesIn: 0, samplesEmitted: 0, batches: 0, triggersFired: 0, ringOverflows: 0, rules: this.ruleStats };
  }

  /** Sample names of the signals the rules read (for diagnostics). */
  get signalNames(): readonly string[] {
    return this.channelNames;
  }

  /**
   * A frame sink for bus `busIndex` that decodes through BusDecoder.decode (the same counters as its sink) and then
   * hands the frame to the collector: the composition root passes it to the source instead of `buses[busIndex].sink`.
   */
  sinkFor(busIndex: number): FrameSink {
    const decoder = this.buses[busIndex];
    if (decoder === undefined) throw new RangeError(`no bus ${busIndex}`);
    const values = decoder.values;
    const byFirstSlot = this.watchByFirstSlot[busIndex]!;
    return (frame) => {
      const codec = decoder.decode(frame);
      if (codec === undefined || codec.slots.length === 0) return;
      const watch = byFirstSlot[codec.slots[0]!];
      if (watch !== undefined) this.update(watch, values, frame.ts);
    };
  }

  /**
   * The hook for a frame decoded elsewhere: bus `busIndex` has just decoded a frame of the message at `messageIndex`
   * of its database (`database.messages[messageIndex]`) into its value buffer; `ts` is the frame's time (unix s).
   */
  onFrame(busIndex: number, messageIndex: number, ts: number): void {
    const watch = this.watches[busIndex]![messageIndex];
    if (watch !== undefined) this.update(watch, this.buses[busIndex]!.values, ts);
  }

  /**
   * An OBD-II value: `signalKey` is `<adapter or bus>.obd.<key>` (e.g. `obd.obd.rpm`), as Sample.signal names it.
   * Values no rule reads are ignored after one map lookup.
   */
  offer(signalKey: string, value: number, ts: number): void {
    let watches = this.offeredKeys.get(signalKey);
    if (watches === undefined) {
      watches = this.obdWatches.filter(({ channel }) => offeredMatches(this.channels[channel]!.offered!, signalKey)).map((o) => o.watch);
      this.offeredKeys.set(signalKey, watches);
    }
    for (const watch of watches) {
      const c = watch.channels[0]!;
      const old = this.live[c]!;
      this.channelNames[c] = signalKey;
      watch.present[0] = 1;
      watch.changed[0] = value !== old && (value === value || old === old) ? 1 : 0;
      this.live[c] = value;
      this.stats.samplesIn++;
      this.react(watch, ts);
    }
  }

  /** Copies the watch's channels from the bus value buffer into `live`, marking which were sent and which changed. */
  private update(watch: Watch, values: Float64Array, ts: number): void {
    const live = this.live;
    const { channels, slots, muxStart, muxSlots, muxIds, present, changed } = watch;
    const n = channels.length;
    let seen = 0;
    for (let i = 0; i < n; i++) {
      let inFrame = true;
      // As the decoder chooses a branch: by the multiplexer's value truncated to an integer.
      for (let m = muxStart[i]!; m < muxStart[i + 1]! && inFrame; m++) inFrame = muxIds[m]!.includes(Math.trunc(values[muxSlots[m]!]!));
      if (!inFrame) {
        // Another page of a multiplexed message: this signal was not in the frame.
        present[i] = 0;
        changed[i] = 0;
        continue;
      }
      const c = channels[i]!;
      const v = values[slots[i]!]!;
      const old = live[c]!;
      present[i] = 1;
      changed[i] = v !== old && (v === v || old === old) ? 1 : 0;
      live[c] = v;
      seen++;
    }
    this.stats.samplesIn += seen;
    this.react(watch, ts);
  }

  private react(watch: Watch, ts: number): void {
    const live = this.live;
    const { present, channels } = watch;

    const entries = watch.entries;
    for (let k = 0; k < entries.length; k++) {
      const pos = watch.entryPos[k]!;
      if (present[pos] === 0) continue;
      const v = live[channels[pos]!]!;
      const e = entries[k]!;
      const r = this.entryRule[e]!;
      const mode = this.ruleMode[r]!;
      // A NaN the frame carried (an IEEE float signal): periodic and change rules pass it over; an every rule sends it.
      if (v !== v && mode !== EVERY) continue;
      if (mode === PERIODIC) {
        const due = this.entryTs[e]!;
        if (ts < due - TIME_EPSILON_S) continue;
        const interval = this.ruleIntervalS[r]!;
        // Stay on the grid; after a gap (or at the first value) start a new grid at this value.
        this.entryTs[e] = ts - due < interval ? due + interval : ts + interval;
      } else if (mode === CHANGE) {
        const last = this.entryLast[e]!;
        if (last === last) {
          const threshold = Math.max(this.ruleAbsolute[r]!, this.ruleRelative[r]! * Math.abs(last));
          if (!(Math.abs(v - last) > threshold)) continue;
          if (ts - this.entryTs[e]! < this.ruleMinIntervalS[r]! - TIME_EPSILON_S) continue;
        }
        this.entryLast[e] = v;
        this.entryTs[e] = ts;
      }
      this.emit(r, this.entryChannel[e]!, v, ts);
    }

    const captures = watch.captureTrigger;
    for (let k = 0; k < captures.length; k++) {
      const pos = watch.capturePos[k]!;
      if (present[pos] === 0) continue;
      const c = channels[pos]!;
      const v = live[c]!;
      if (v !== v) continue;
      const t = this.triggers[captures[k]!]!;
      if (t.capturing) {
        if (ts > t.deadlineTs + TIME_EPSILON_S) this.finishCapture(t);
        else t.captured.push({ ts, signal: this.channelNames[c]!, value: v });
      }
      const capacity = t.ringTs.length;
      t.ringTs[t.ringHead] = ts;
      t.ringChannel[t.ringHead] = c;
      t.ringValue[t.ringHead] = v;
      t.ringHead = t.ringHead + 1 === capacity ? 0 : t.ringHead + 1;
      if (t.ringSize < capacity) t.ringSize++;
      else t.ringWrapped = true;
    }

    const conditions = watch.conditionTrigger;
    for (let k = 0; k < conditions.length; k++) {
      let changed = false;
      for (let p = watch.conditionStart[k]!; p < watch.conditionStart[k + 1]!; p++) {
        if (watch.changed[watch.conditionPos[p]!] === 1) {
          changed = true;
          break;
        }
      }
      if (changed) this.evaluate(this.triggers[conditions[k]!]!, ts);
    }
  }

  private evaluate(t: Trigger, ts: number): void {
    const holds = t.condition.test(this.live);
    const fires = holds && (!t.risingEdge || !t.wasTrue);
    t.wasTrue = holds;
    if (!fires) return;
    if (t.capturing || ts - t.lastFireTs < t.minIntervalS - TIME_EPSILON_S) {
      t.stats.suppressed++;
      return;
    }
    t.lastFireTs = ts;
    t.stats.triggers++;
    this.stats.triggersFired++;
    t.capturing = true;
    t.fireTs = ts;
    t.deadlineTs = ts + t.postS;
    t.firedAtMs = this.now();
    // The pre window: the ring's values from fireTs - preMs on, oldest first.
    const capacity = t.ringTs.length;
    const from = ts - t.preS - TIME_EPSILON_S;
    const captured: Sample[] = [];
    let i = (t.ringHead - t.ringSize + capacity) % capacity;
    if (t.ringWrapped && t.ringSize === capacity && t.ringTs[i]! > from) this.stats.ringOverflows++;
    for (let k = 0; k < t.ringSize; k++) {
      if (t.ringTs[i]! >= from) captured.push({ ts: t.ringTs[i]!, signal: this.channelNames[t.ringChannel[i]!]!, value: t.ringValue[i]! });
      i = i + 1 === capacity ? 0 : i + 1;
    }
    t.captured = captured;
    if (t.postS <= 0) this.finishCapture(t);
  }

  private finishCapture(t: Trigger): void {
    const samples = t.captured;
    t.capturing = false;
    t.captured = [];
    t.stats.samples += samples.length;
    this.stats.samplesEmitted += samples.length;
    this.stats.batches++;
    this.onBatch({ kind: 'events', priority: t.priority, samples, trigger: { rule: t.name, ts: t.fireTs } });
  }

  private emit(rule: number, channel: number, value: number, ts: number): void {
    const priority = this.rulePriority[rule]!;
    let batch = this.pending[priority];
    if (batch === undefined) {
      batch = { samples: [], bytes: BATCH_OVERHEAD_BYTES, openedAtMs: this.now() };
      this.pending[priority] = batch;
      this.batchSerial[priority]!++;
    }
    const name = this.channelNames[channel]!;
    batch.samples.push({ ts, signal: name, value });
    batch.bytes += SAMPLE_BYTES;
    const counted = this.nameCounted[priority]!;
    if (counted[channel] !== this.batchSerial[priority]) {
      counted[channel] = this.batchSerial[priority]!;
      batch.bytes += name.length + NAME_OVERHEAD_BYTES;
    }
    this.ruleStats[rule]!.samples++;
    if (batch.samples.length >= this.batchConfig.maxSamples || batch.bytes >= this.maxBytes) this.closeBatch(priority);
  }

  private closeBatch(priority: number): void {
    const batch = this.pending[priority];
    if (batch === undefined) return;
    this.pending[priority] = undefined;
    this.stats.samplesEmitted += batch.samples.length;
    this.stats.batches++;
    this.onBatch({ kind: 'telemetry', priority: priority as Priority, samples: batch.samples });
  }

  /** Closes batches older than maxDelayMs and captures whose signals went quiet; `start()` calls it on a timer. */
  tick(): void {
    const now = this.now();
    for (let p = MAX_PRIORITY; p >= 0; p--) {
      const batch = this.pending[p];
      if (batch !== undefined && now - batch.openedAtMs >= this.batchConfig.maxDelayMs) this.closeBatch(p);
    }
    for (const t of this.triggers) {
      if (t.capturing && now - t.firedAtMs >= t.postMs + STALE_CAPTURE_GRACE_MS) this.finishCapture(t);
    }
  }

  /** Closes every open batch and capture, highest priority first (at shutdown). */
  flush(): void {
    for (const t of this.triggers) if (t.capturing) this.finishCapture(t);
    for (let p = MAX_PRIORITY; p >= 0; p--) this.closeBatch(p);
  }

  /** Starts the timer that runs `tick()` (unref'd: it never keeps the process alive). */
  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
  }

  /** Stops the timer and flushes. */
  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
  }
}
