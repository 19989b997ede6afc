/**
 * The car's own limit on what it sends: a message rate and a byte budget per hour (from the config), each a token
 * bucket, so a misconfigured rule can neither flood the broker nor burn the data plan. What the buckets do not let
 * through waits in the outbox, in its order.
 *
 * Each bucket holds `burstFraction` of its hourly budget (default 0.1: six minutes' worth) and refills continuously
 * at budget/hour. So after a tunnel the backlog goes out in one burst of at most that much, then at the hourly rate;
 * over any hour no more than budget·(1 + burstFraction) is sent. A message larger than the byte bucket can hold
 * goes when the bucket is full and leaves it in debt, which later refills pay back: it is late, never stuck.
 */

export interface ThrottleOptions {
  /** Messages per hour; undefined or 0: no limit. */
  messagesPerHour?: number;
  /** Payload bytes per hour; undefined or 0: no limit. */
  bytesPerHour?: number;
  /** Bucket size as a fraction of the hourly budget, in (0, 1]. Default 0.1. */
  burstFraction?: number;
  /** Milliseconds, monotonic (tests inject a clock). Default performance.now. */
  now?: () => number;
}

export interface BucketState {
  perHour: number;
  capacity: number;
  /** Tokens there now (negative: in debt after an oversized message). */
  available: number;
}

export interface ThrottleState {
  /** null: no limit. */
  messages: BucketState | null;
  bytes: BucketState | null;
  /** Times the budget has held the queue back (once per episode, however often it is asked meanwhile). */
  deferrals: number;
  /** Whether the last attempt was deferred (and nothing was sent since). */
  limited: boolean;
  /** Messages and bytes let through so far. */
  sentMessages: number;
  sentBytes: number;
}

const HOUR_MS = 3_600_000;
/** Tokens below which a shortfall is rounding noise. */
const TOKEN_EPSILON = 1e-9;

class Bucket {
  readonly capacity: number;
  private tokens: number;
  private readonly perMs: number;

  constructor(
    readonly perHour: number,
    burstFraction: number,
    private last: number,
  ) {
    this.capacity = Math.max(1, perHour * burstFraction);
    this.tokens = this.capacity;
    this.perMs = perHour / HOUR_MS;
  }

  refill(now: number): void {
    if (now > this.last) this.tokens = Math.min(this.capacity, this.tokens + (now - this.last) * this.perMs);
    this.last = Math.max(this.last, now);
  }

  /** Milliseconds until `amount` may go (an amount above the capacity needs a full bucket). */
  waitMs(amount: number): number {
    const missing = Math.min(amount, this.capacity) - this.tokens;
    // Refills are sums of floating-point fractions: a shortfall of rounding noise is no shortfall, or a wait of
    // exactly the time computed here could come back short by 1e-16 tokens and wait again, forever under a still clock;
    // likewise 1.0000000000000002 ms is a wait of 1 ms, not 2.
    return missing <= TOKEN_EPSILON ? 0 : Math.ceil(missing / this.perMs - 1e-6);
  }

  take(amount: number): void {
    this.tokens -= amount;
  }

  get available(): number {
    return this.tokens;
  }
}

export class Throttle {
  private readonly messages: Bucket | null;
  private readonly bytes: Bucket | null;
  private readonly now: () => number;
  private deferrals = 0;
  private limited = false;
  private sentMessages = 0;
  private sentBytes = 0;

  constructor(options: ThrottleOptions = {}) {
    const burst = options.burstFraction ?? 0.1;
    if (!(burst > 0 && burst <= 1)) throw new RangeError(`Throttle: burstFraction must be in (0, 1], got ${burst}`);
    this.now = options.now ?? (() => performance.now());
    const start = this.now();
    this.messages = budget('messagesPerHour', options.messagesPerHour) ? new Bucket(options.messagesPerHour!, burst, start) : null;
    this.bytes = budget('bytesPerHour', options.bytesPerHour) ? new Bucket(options.bytesPerHour!, burst, start) : null;
  }

  /** Whether a message of `bytes` may go now. */
  canSend(bytes: number): boolean {
    return this.waitMs(bytes) === 0;
  }

  /** Milliseconds until a message of `bytes` may go (0: now). */
  waitMs(bytes: number): number {
    const now = this.now();
    this.messages?.refill(now);
    this.bytes?.refill(now);
    return Math.max(this.messages?.waitMs(1) ?? 0, this.bytes?.waitMs(bytes) ?? 0);
  }

  /** Counts a message of `bytes` as sent (whether or not the budget allowed it: the caller decides). */
  take(bytes: number): void {
    const now = this.now();
    this.messages?.refill(now);
    this.bytes?.refill(now);
    this.messages?.take(1);
    this.bytes?.take(bytes);
    this.sentMessages++;
    this.sentBytes += bytes;
    this.limited = false;
  }

  /** take() when the budget allows, returning 0; otherwise counts a deferral and returns the wait in ms. */
  tryTake(bytes: number): number {
    const wait = this.waitMs(bytes);
    if (wait === 0) {
      this.take(bytes);
      return 0;
    }
    if (!this.limited) this.deferrals++;
    this.limited = true;
    return wait;
  }

  get state(): ThrottleState {
    const now = this.now();
    this.messages?.refill(now);
    this.bytes?.refill(now);
    const view = (b: Bucket | null): BucketState | null => (b ? { perHour: b.perHour, capacity: b.capacity, available: b.available } : null);
    return {
      messages: view(this.messages),
      bytes: view(this.bytes),
      deferrals: this.deferrals,
      limited: this.limited,
      sentMessages: this.sentMessages,
      sentBytes: this.sentBytes,
    };
  }
}

function budget(name: string, value: number | undefined): boolean {
  if (value === undefined || value === 0) return false;
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`Throttle: ${name} must be a positive number or 0 (no limit), got ${value}`);
  return true;
}
