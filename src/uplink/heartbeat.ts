/**
 * The heartbeat learner: how long the link may stay idle before the car must send something, so that the NATs and
 * firewalls on the path keep its TCP flow. Pure: it is told what happened to each heartbeat and answers with the next
 * interval; the clock is injected and only stamps the history.
 *
 * - probe: start from a safe interval; each heartbeat that follows an idle period of the current interval and is
 *   answered proves that interval (`lastGood`), and the next one is a step longer (× stepFactor), never beyond
 *   halfway to the shortest interval that failed (`knownBad`), nor beyond the ceiling.
 * - hold: when the flow was forgotten after an idle period longer than any proven one, that length is `knownBad`;
 *   the interval goes back to lastGood minus the margin and stays there for holdCycles answered heartbeats, then
 *   probing goes on between lastGood and knownBad.
 * - settled: once knownBad is within the margin of lastGood (or lastGood reached the ceiling), the interval stays at
 *   lastGood minus the margin; after settledCycles answered heartbeats (0: never) knownBad is forgotten and one longer
 *   step is tried, so a network whose boxes became more patient is noticed.
 *
 * A failure at an interval already proven is not the NAT's doing as far as one can tell (a lost packet, a short dead
 * zone): the first such failure changes nothing; two in a row mean the path changed, and learning starts over one
 * step below the failed interval.
 */

export type HeartbeatPhase = 'probe' | 'hold' | 'settled';

export interface HeartbeatSettings {
  /** Bounds of the interval, seconds. */
  minIntervalS: number;
  maxIntervalS: number;
  /** Where learning starts on a network without memory: an interval every network is expected to allow. */
  initialIntervalS: number;
  /** Each probe lengthens the last proven interval by this factor (> 1). */
  stepFactor: number;
  /** The interval used is this fraction below the proven one; and probing stops when the bracket is this narrow. */
  marginFraction: number;
  /** Answered heartbeats to wait at the safe interval after a failure before probing again. */
  holdCycles: number;
  /** Answered heartbeats in the settled state before one longer interval is tried again; 0: never. */
  settledCycles: number;
}

/** What is remembered of a network between runs (see link-memory.ts). */
export interface HeartbeatMemory {
  intervalS: number;
  lastGoodS: number | null;
  knownBadS: number | null;
  phase: HeartbeatPhase;
  /** Heartbeats left in hold or settled before the next probe. */
  cyclesLeft: number;
}

export type IntervalChangeReason =
  /** A probe survived: the next one is longer. */
  | 'survived'
  /** The flow was forgotten after an idle period: back to the last interval that worked. */
  | 'expired'
  /** The hold is over: probing again. */
  | 'hold-over'
  /** The bracket is narrow enough (or the ceiling reached): the interval stays. */
  | 'settled'
  /** Long settled: a longer interval is tried again. */
  | 'reprobe'
  /** Two failures in a row at a proven interval: the path changed. */
  | 'path-changed'
  /** The broker's Server Keep Alive or the configured maximum caps the interval. */
  | 'ceiling';

export interface IntervalChange {
  /** Unix milliseconds (the injected clock). */
  at: number;
  fromS: number;
  toS: number;
  reason: IntervalChangeReason;
  /** The phase after the change. */
  phase: HeartbeatPhase;
}

/** How many interval changes the history keeps. */
export const HEARTBEAT_HISTORY = 20;

export class HeartbeatLearner {
  private interval: number;
  private lastGood: number | null;
  private knownBad: number | null;
  private current: HeartbeatPhase;
  private cyclesLeft: number;
  /** Unexplained failures in a row at a proven interval. */
  private strikes = 0;
  private cap = Infinity;
  private readonly changes: IntervalChange[] = [];
  /** Whether it started from a remembered state (rather than the safe default). */
  readonly restored: boolean;

  constructor(
    readonly settings: HeartbeatSettings,
    private readonly clock: () => number = Date.now,
    memory?: HeartbeatMemory,
  ) {
    checkSettings(settings);
    const restored = memory && validMemory(memory, settings) ? memory : undefined;
    this.restored = restored !== undefined;
    this.interval = restored?.intervalS ?? settings.initialIntervalS;
    this.lastGood = restored?.lastGoodS ?? null;
    this.knownBad = restored?.knownBadS ?? null;
    this.current = restored?.phase ?? 'probe';
    this.cyclesLeft = restored?.cyclesLeft ?? 0;
  }

  /** The interval to use now, seconds: the learned one within the bounds and the ceiling. */
  get intervalS(): number {
    return Math.min(this.interval, this.ceilingS);
  }

  /** The highest interval allowed: maxIntervalS, or the broker's Server Keep Alive when lower. */
  get ceilingS(): number {
    return Math.min(this.settings.maxIntervalS, this.cap);
  }

  get phase(): HeartbeatPhase {
    return this.current;
  }

  get lastGoodS(): number | null {
    return this.lastGood;
  }

  get knownBadS(): number | null {
    return this.knownBad;
  }

  /** The latest interval changes, oldest first. */
  get history(): readonly IntervalChange[] {
    return this.changes;
  }

  /**
   * The broker's Server Keep Alive (MQTT 5), a hard cap for this connection; null or 0 when it gave none. A cap
   * below the current interval is recorded as a change; nothing learned is forgotten.
   */
  setServerKeepAlive(seconds: number | null): void {
    const before = this.intervalS;
    this.cap = seconds !== null && seconds > 0 ? seconds : Infinity;
    this.record(before, this.current, 'ceiling');
  }

  /** The heartbeat sent after `idleS` seconds of idleness was answered: the flow survived that long. */
  answered(idleS: number): void {
    this.strikes = 0;
    this.lastGood = Math.max(this.lastGood ?? 0, idleS);
    // A flow that survived longer than the "known bad" interval: that failure was not the NAT's.
    if (this.knownBad !== null && this.lastGood >= this.knownBad) this.knownBad = null;
    if (this.current === 'probe') {
      this.advance('survived');
    } else if (this.current === 'hold') {
      if (--this.cyclesLeft <= 0) this.advance('hold-over');
    } else if (this.settings.settledCycles > 0 && this.lastGood < this.ceilingS) {
      if (--this.cyclesLeft <= 0) {
        this.knownBad = null;
        this.advance('reprobe');
      }
    }
  }

  /**
   * The heartbeat sent after `idleS` seconds of idleness went unanswered, and the network itself works (the
   * reconnection right after succeeded): the path forgot the flow.
   */
  expired(idleS: number): void {
    const before = this.intervalS;
    const phaseBefore = this.current;
    const { minIntervalS, stepFactor, marginFraction, holdCycles } = this.settings;
    if (this.lastGood === null || idleS > this.lastGood) {
      this.strikes = 0;
      this.knownBad = Math.min(this.knownBad ?? Infinity, idleS);
      if (this.lastGood === null) {
        // Nothing ever worked here: one step down, unproven, and learn upwards from there.
        this.interval = Math.max(minIntervalS, idleS / stepFactor);
        this.current = 'probe';
      } else if (holdCycles > 0) {
        this.interval = Math.max(minIntervalS, this.lastGood * (1 - marginFraction));
        this.current = 'hold';
        this.cyclesLeft = holdCycles;
      } else {
        this.advance('expired');
        return;
      }
      this.record(before, phaseBefore, 'expired');
      return;
    }
    if (++this.strikes < 2) return;
    this.strikes = 0;
    this.lastGood = null;
    this.knownBad = idleS;
    this.interval = Math.max(minIntervalS, idleS / stepFactor);
    this.current = 'probe';
    this.record(before, phaseBefore, 'path-changed');
  }

  /** What to remember of this network. */
  snapshot(): HeartbeatMemory {
    return { intervalS: this.interval, lastGoodS: this.lastGood, knownBadS: this.knownBad, phase: this.current, cyclesLeft: this.cyclesLeft };
  }

  /** Next step after an answered probe, the end of a hold or settled period, or a failure without a hold. */
  private advance(reason: IntervalChangeReason): void {
    const before = this.intervalS;
    const phaseBefore = this.current;
    const { marginFraction, minIntervalS } = this.settings;
    const lastGood = this.lastGood ?? this.interval;
    const settling = reason === 'expired' ? 'expired' : 'settled';
    if (lastGood >= this.ceilingS) {
      this.interval = this.ceilingS;
      this.settle();
      this.record(before, phaseBefore, settling);
      return;
    }
    if (this.knownBad !== null && this.knownBad - lastGood <= marginFraction * lastGood) {
      this.interval = Math.max(minIntervalS, lastGood * (1 - marginFraction));
      this.settle();
      this.record(before, phaseBefore, settling);
      return;
    }
    this.current = 'probe';
    this.interval = this.probeTarget();
    this.cyclesLeft = 0;
    this.record(before, phaseBefore, reason);
  }

  private settle(): void {
    this.current = 'settled';
    this.cyclesLeft = this.settings.settledCycles;
  }

  /** A step above lastGood, at most halfway to knownBad, within the bounds. */
  private probeTarget(): number {
    const { stepFactor, minIntervalS } = this.settings;
    const lastGood = this.lastGood ?? this.interval;
    let target = lastGood * stepFactor;
    if (this.knownBad !== null) target = Math.min(target, (lastGood + this.knownBad) / 2);
    return Math.max(minIntervalS, Math.min(this.ceilingS, target));
  }

  /** A change of the interval or of the phase goes into the history. */
  private record(fromS: number, phaseBefore: HeartbeatPhase, reason: IntervalChangeReason): void {
    const toS = this.intervalS;
    if (toS === fromS && this.current === phaseBefore) return;
    this.changes.push({ at: this.clock(), fromS: round3(fromS), toS: round3(toS), reason, phase: this.current });
    if (this.changes.length > HEARTBEAT_HISTORY) this.changes.splice(0, this.changes.length - HEARTBEAT_HISTORY);
  }
}

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

function checkSettings(s: HeartbeatSettings): void {
  const problems: string[] = [];
  if (!(s.minIntervalS > 0)) problems.push(`minIntervalS must be positive (${s.minIntervalS})`);
  if (!(s.minIntervalS <= s.initialIntervalS && s.initialIntervalS <= s.maxIntervalS)) {
    problems.push(`minIntervalS <= initialIntervalS <= maxIntervalS does not hold (${s.minIntervalS}, ${s.initialIntervalS}, ${s.maxIntervalS})`);
  }
  if (!(s.stepFactor > 1)) problems.push(`stepFactor must be above 1 (${s.stepFactor})`);
  if (!(s.marginFraction >= 0 && s.marginFraction < 1)) problems.push(`marginFraction must be in [0, 1) (${s.marginFraction})`);
  if (!(Number.isInteger(s.holdCycles) && s.holdCycles >= 0)) problems.push(`holdCycles must be a non-negative integer (${s.holdCycles})`);
  if (!(Number.isInteger(s.settledCycles) && s.settledCycles >= 0)) problems.push(`settledCycles must be a non-negative integer (${s.settledCycles})`);
  if (problems.length > 0) throw new RangeError(`HeartbeatLearner: ${problems.join('; ')}`);
}

/** A memory from another configuration (other bounds) or a damaged row is not used: learning starts afresh. */
function validMemory(m: HeartbeatMemory, s: HeartbeatSettings): boolean {
  const finite = (v: number | null): boolean => v === null || (Number.isFinite(v) && v > 0);
  return (
    Number.isFinite(m.intervalS) &&
    m.intervalS >= s.minIntervalS &&
    m.intervalS <= s.maxIntervalS &&
    finite(m.lastGoodS) &&
    finite(m.knownBadS) &&
    (m.phase === 'probe' || m.phase === 'hold' || m.phase === 'settled') &&
    Number.isInteger(m.cyclesLeft) &&
    m.cyclesLeft >= 0
  );
}
