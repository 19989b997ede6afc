/**
 * Loss notices: the small JSON message (`vehicles/<deviceId>/loss`) in which the agent tells the backend which
 * sequence numbers of the data stream (telemetry, events and the notices themselves) are gone and why, so that a
 * backend can prove completeness per car: the numbers it received and the numbers announced lost together cover every
 * number from its first to the health report's `nextSeq - 1`.
 *
 *   {"deviceId":"car-1","seq":1800000000000123,"kind":"loss","createdAt":1767225600000,
 *    "lost":[{"first":1800000000000100,"last":1800000000000110,"count":11,"reason":"evicted","exact":true}]}
 *
 * A range is inclusive. `exact: true`: every number in it was assigned to a message that is gone. `exact: false`
 * (reason `outbox-lost`): an upper bound: the numbers in it that were assigned and not yet delivered are gone, the
 * others were delivered before or never assigned at all. The outbox (src/store/outbox.ts) keeps the ranges merged
 * and sorted; this module holds the format and the merge, and throws nothing but on a payload that is not a notice.
 */

/** Why messages were lost: outbox full, too old, refused by the broker for good, or with the outbox file itself. */
export type LossReason = 'evicted' | 'expired' | 'refused' | 'outbox-lost';

export interface LostRange {
  first: number;
  last: number;
  /** last - first + 1: how many numbers the range covers. */
  count: number;
  reason: LossReason;
  /** false: an upper bound (see above). */
  exact: boolean;
}

/** Ranges in one notice at most (a notice stays a few kilobytes); beyond them a new notice starts. */
export const MAX_RANGES_PER_NOTICE = 256;
/** What one range adds to a notice's JSON, about (two 16-digit numbers, the count, the reason, the flag, the keys). */
export const RANGE_BYTES = 110;
/** A notice's JSON without its ranges, about. */
export const NOTICE_BYTES = 200;

/** The topic's last level, as `telemetry` and `events` are theirs. */
export const LOSS_KIND = 'loss';

const REASONS: readonly LossReason[] = ['evicted', 'expired', 'refused', 'outbox-lost'];

/**
 * Adds [first, last] to `ranges` (sorted by first, none overlapping one of the same reason), merging it with the ranges
 * of the same reason and exactness it touches or overlaps. Returns false, and changes nothing, when that would make
 * more than `cap` ranges.
 */
export function addLostRange(ranges: LostRange[], first: number, last: number, reason: LossReason, exact: boolean, cap = MAX_RANGES_PER_NOTICE): boolean {
  // Already inside an upper bound: not received means lost there anyway, so the notice need not grow.
  if (ranges.some((range) => !range.exact && range.first <= first && range.last >= last)) return true;
  // The first range that could touch [first, last]: the first one whose last reaches first - 1 (ranges of one reason
  // do not overlap, and losses mostly come in increasing order, so the search usually ends at the tail).
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[mid]!.first < first) lo = mid + 1;
    else hi = mid;
  }
  let start = lo;
  while (start > 0 && ranges[start - 1]!.last >= first - 1) start--;
  let mergedFirst = first;
  let mergedLast = last;
  const absorbed: number[] = [];
  for (let i = start; i < ranges.length && ranges[i]!.first <= last + 1; i++) {
    const range = ranges[i]!;
    if (range.reason !== reason || range.exact !== exact || range.last < first - 1) continue;
    absorbed.push(i);
    mergedFirst = Math.min(mergedFirst, range.first);
    mergedLast = Math.max(mergedLast, range.last);
  }
  if (absorbed.length === 0 && ranges.length >= cap) return false;
  for (let i = absorbed.length - 1; i >= 0; i--) ranges.splice(absorbed[i]!, 1);
  const merged: LostRange = { first: mergedFirst, last: mergedLast, count: mergedLast - mergedFirst + 1, reason, exact };
  let at = 0;
  while (at < ranges.length && ranges[at]!.first <= mergedFirst) at++;
  ranges.splice(at, 0, merged);
  return true;
}

/** The notice's JSON, field order as documented. */
export function encodeLossNotice(deviceId: string, seq: number, createdAt: number, ranges: readonly LostRange[]): Uint8Array {
  const lost = ranges.map(({ first, last, count, reason, exact }) => ({ first, last, count, reason, exact }));
  return Buffer.from(JSON.stringify({ deviceId, seq, kind: LOSS_KIND, createdAt, lost }), 'utf8');
}

export interface LossNotice {
  deviceId: string;
  seq: number;
  kind: typeof LOSS_KIND;
  createdAt: number;
  lost: LostRange[];
}

function isSafeCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Reads a notice back (the outbox reads its own stored notices; tests read what the backend got). Throws naming the field. */
export function decodeLossNotice(payload: Uint8Array): LossNotice {
  const value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8')) as Record<string, unknown>;
  if (typeof value !== 'object' || value === null) throw new Error('loss notice: not a JSON object');
  if (value.kind !== LOSS_KIND) throw new Error(`loss notice: kind is ${JSON.stringify(value.kind)}, not "loss"`);
  if (typeof value.deviceId !== 'string') throw new Error('loss notice: deviceId is not a string');
  if (!isSafeCount(value.seq)) throw new Error('loss notice: seq is not a non-negative integer');
  if (!isSafeCount(value.createdAt)) throw new Error('loss notice: createdAt is not a non-negative integer');
  if (!Array.isArray(value.lost)) throw new Error('loss notice: lost is not an array');
  const lost = (value.lost as unknown[]).map((entry, i): LostRange => {
    const range = entry as Record<string, unknown>;
    const { first, last, count, reason, exact } = range;
    if (!isSafeCount(first) || !isSafeCount(last) || !isSafeCount(count) || last < first || count !== last - first + 1)
      throw new Error(`loss notice: lost[${i}] is not a range {first, last, count = last - first + 1}`);
    if (!REASONS.includes(reason as LossReason))
      throw new Error(`loss notice: lost[${i}].reason ${JSON.stringify(reason)} is not one of ${REASONS.join(', ')}`);
    if (typeof exact !== 'boolean') throw new Error(`loss notice: lost[${i}].exact is not a boolean`);
    return { first, last, count, reason: reason as LossReason, exact };
  });
  return { deviceId: value.deviceId, seq: value.seq, kind: LOSS_KIND, createdAt: value.createdAt, lost };
}

/**
 * Adds [first, last] to `ranges` although they hold `cap` ranges already: the two neighbouring ranges with the fewest
 * numbers between them (of one reason, if any two neighbours share one) become one upper bound (`exact: false`, the
 * reason of the larger), so the notice stays at `cap` ranges. What lies between them was delivered or still waits:
 * the backend takes it when it comes; what it never gets of the range was lost.
 */
export function coarsenLostRanges(ranges: LostRange[], first: number, last: number, reason: LossReason, exact: boolean, cap = MAX_RANGES_PER_NOTICE): void {
  addLostRange(ranges, first, last, reason, exact, Number.POSITIVE_INFINITY);
  while (ranges.length > cap) {
    let best = -1;
    let bestGap = Number.POSITIVE_INFINITY;
    let bestSameReason = false;
    for (let i = 0; i + 1 < ranges.length; i++) {
      const a = ranges[i]!;
      const b = ranges[i + 1]!;
      const same = a.reason === b.reason;
      const gap = Math.max(0, b.first - a.last - 1);
      if ((same && !bestSameReason) || (same === bestSameReason && gap < bestGap)) {
        best = i;
        bestGap = gap;
        bestSameReason = same;
      }
    }
    const a = ranges[best]!;
    const b = ranges[best + 1]!;
    const mergedFirst = Math.min(a.first, b.first);
    const mergedLast = Math.max(a.last, b.last);
    ranges.splice(best, 2, {
      first: mergedFirst,
      last: mergedLast,
      count: mergedLast - mergedFirst + 1,
      reason: a.count >= b.count ? a.reason : b.reason,
      exact: false,
    });
  }
}
