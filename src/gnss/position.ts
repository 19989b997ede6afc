/**
 * The position as the agent knows it from one GNSS source: the latest fix, when it came, and when the last one with a
 * position came (its age is what says a position is stale). Each fix's numeric fields are offered to the collection
 * rules as `<source>.gnss.<key>` (FIX_SIGNAL_KEYS; docs/gnss.md), stamped with the time the fix arrived on the
 * agent's clock, as every other value is; a field the fix does not have is not offered (a fix without a position
 * offers `mode` and `status`, never an old position).
 *
 * It also compares the receiver's time with the system clock at each fix that has both: a car without a real-time
 * clock or network time stamps its data wrongly, and this is how it is noticed (docs/gnss.md says what the agent does).
 */
import { FIX_SIGNAL_KEYS, FIX_STATUS_NAMES, hasPosition, type GnssFix } from './fix.js';

/** A clock this far from the receiver's time is reported (health, the status line), ms. */
export const CLOCK_OFFSET_WARN_MS = 2000;

export interface PositionReading {
  /** The latest fix, with or without a position; null before the first. */
  readonly fix: GnssFix | null;
  /** When it arrived (agent clock, unix ms). */
  readonly receivedAt: number | null;
  /** When the last fix with a position arrived; null when none has. */
  readonly positionAt: number | null;
  /** The latest fix with a position (the one `positionAt` dates). */
  readonly lastPosition: GnssFix | null;
  /** System clock minus receiver time at the last fix with a time, ms (positive: the system clock is ahead). */
  readonly clockOffsetMs: number | null;
  readonly fixes: number;
}

export class PositionTracker {
  private fix: GnssFix | null = null;
  private receivedAt: number | null = null;
  private lastPosition: GnssFix | null = null;
  private positionAt: number | null = null;
  private clockOffsetMs: number | null = null;
  private fixes = 0;
  /** The offered names, made once (`<source>.gnss.<key>`). */
  private readonly names: readonly string[];

  constructor(
    source: string,
    private readonly offer: (name: string, value: number, ts: number) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.names = FIX_SIGNAL_KEYS.map((key) => `${source}.gnss.${key}`);
  }

  take(fix: GnssFix): void {
    const at = this.now();
    this.fix = fix;
    this.receivedAt = at;
    this.fixes++;
    if (hasPosition(fix)) {
      this.lastPosition = fix;
      this.positionAt = at;
    }
    if (fix.time !== undefined) this.clockOffsetMs = at - fix.time;
    const ts = at / 1000;
    for (let i = 0; i < FIX_SIGNAL_KEYS.length; i++) {
      const value = fix[FIX_SIGNAL_KEYS[i]!];
      if (value !== undefined) this.offer(this.names[i]!, value, ts);
    }
  }

  reading(): PositionReading {
    return {
      fix: this.fix,
      receivedAt: this.receivedAt,
      positionAt: this.positionAt,
      lastPosition: this.lastPosition,
      clockOffsetMs: this.clockOffsetMs,
      fixes: this.fixes,
    };
  }
}

/**
 * The status line's words for a reading: `3D 48.1173,11.5167`, `3D DGPS 48.1173,11.5167`, `no fix, 12 in view, last
 * position 12 s ago`, `no fix yet`. Short, so that it fits an 80-column status line after the link's fields: four
 * decimals (about 10 m) show a moving car; the satellites and the full position are on the status page and in health.
 */
export function describePosition(reading: PositionReading, now: number): string {
  const fix = reading.fix;
  if (fix === null) return 'no fix yet';
  if (!hasPosition(fix)) {
    const inView = fix.nSat !== undefined ? `, ${fix.nSat} in view` : '';
    const age = reading.positionAt !== null ? `, last position ${Math.round((now - reading.positionAt) / 1000)} s ago` : '';
    return `no fix${inView}${age}`;
  }
  const status = fix.status > 1 ? ` ${FIX_STATUS_NAMES[fix.status]}` : '';
  return `${fix.mode === 3 ? '3D' : '2D'}${status} ${fix.lat.toFixed(4)},${fix.lon.toFixed(4)}`;
}
