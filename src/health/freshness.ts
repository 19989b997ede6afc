/**
 * How fresh the values the status page shows are: each value's age on the agent's clock, and whether it is stale by
 * the rule command preconditions use (commands.freshness, its defaults without a commands section): fresh for `cycles`
 * periods of the signal (its message's GenMsgCycleTime, its OBD poll interval), at least `minMs`; for `defaultMs` when
 * the period is not known.
 *
 * A source stamps a value with its own clock: the kernel's and the simulator's are the agent's clock, a replayed
 * log's is the time it was recorded. A stamp from this run (not before the agent started, not ahead of now) dates
 * the value; any other is dated when it was first seen here, so that a replayed log's values age from when they
 * arrived, not from when they were recorded.
 *
 * Never throws. It keeps one entry per value shown (status signals and OBD values: a fixed, configured set).
 */
import { freshnessConfigSchema, type FreshnessConfig } from '../commands/config.js';
import type { DeviceConfig } from '../config/device-config.js';

/** A stamp this far ahead of the clock is still this run's (timestamps taken on another core, a coarse clock). */
const AHEAD_TOLERANCE_MS = 1000;

export interface Freshness {
  /** Seconds since the value arrived, to 0.1 s; null before any value. */
  ageS: number | null;
  /** Older than its limit. */
  stale: boolean;
}

export class ValueFreshness {
  private readonly rule: Pick<FreshnessConfig, 'cycles' | 'minMs' | 'defaultMs'>;
  /** By value: the stamp last seen, and when (agent clock, unix ms) that value arrived. */
  private readonly seen = new Map<string, { stamp: number; at: number }>();

  /** `startedAt`: when the agent started, unix ms; stamps before it are another clock's. */
  constructor(
    config: DeviceConfig,
    private readonly startedAt: number,
  ) {
    this.rule = config.commands?.freshness ?? freshnessConfigSchema.parse({});
  }

  /** The limit for a value expected every `periodMs` (null: not known), ms. */
  limitMs(periodMs: number | null): number {
    return periodMs !== null && periodMs > 0 ? Math.max(this.rule.minMs, Math.ceil(this.rule.cycles * periodMs)) : this.rule.defaultMs;
  }

  /** The freshness at `now` (unix ms) of value `key`, whose latest arrived stamped `stamp` (unix ms; null: never). */
  of(key: string, stamp: number | null, periodMs: number | null, now: number): Freshness {
    if (stamp === null) return { ageS: null, stale: false };
    let entry = this.seen.get(key);
    if (entry?.stamp !== stamp) {
      const ours = stamp >= this.startedAt && stamp <= now + AHEAD_TOLERANCE_MS;
      entry = { stamp, at: ours ? Math.min(stamp, now) : now };
      this.seen.set(key, entry);
    }
    const ageMs = now - entry.at;
    return { ageS: Math.round(ageMs / 100) / 10, stale: ageMs > this.limitMs(periodMs) };
  }
}
