/**
 * The remote copy of the log: warnings and errors (the threshold is configurable) published to
 * `vehicles/<deviceId>/logs`, so that operations see a car's problems without a shell on it.
 *
 * A car in trouble tends to say the same thing over and over, and its link is metered, so:
 * - Folding: the first occurrence of a message goes out at once; its repeats (same level, component and text with
 *   the numbers masked) within `foldWindowS` are counted and sent as one entry when the window closes. A message that
 *   keeps coming keeps its window open: one entry per window.
 * - Rate: at most `maxPerMinute` entries are made in any 60 s (a sliding window: a token bucket would let twice as
 *   many through in the minute after a quiet spell). New messages beyond it are dropped and counted, and the count
 *   goes with the next entry (`suppressed`), or on its own ("N more entries suppressed") once there is room. A
 *   window's repeats are never dropped for the rate: the window stays open, counting, until there is room.
 * - Offline: entries wait in a ring of the last `ringSize`, sent when the session connects again; what falls out of
 *   the ring is counted in the `suppressed` of the oldest entry kept. The ring lives in memory: logs never go
 *   through the outbox, where they would take the place of telemetry.
 * - QoS 1 while connected. The remote log's own trouble is logged locally only (component `logs`, which it never
 *   sends): a failing log must not feed itself.
 */
import { LOG_LEVELS, type LogEntry, type LogLevel } from './log.js';
import type { RemoteLogConfig } from './log-config.js';

/** The component of the remote log's own messages; entries of this component are never sent (no loops). */
export const REMOTE_LOG_COMPONENT = 'logs';

/** What goes to vehicles/<deviceId>/logs, one JSON object per message. */
export interface RemoteLogEntry {
  /** When the entry was made (epoch ms): the occurrence, or the end of its fold window. */
  ts: number;
  level: LogLevel;
  component: string;
  /** The text of the first occurrence the entry stands for. */
  msg: string;
  /** How many occurrences it stands for. */
  count: number;
  firstTs: number;
  lastTs: number;
  /** Entries dropped before this one: by the rate limit since the entry made before, or out of the offline ring. */
  suppressed?: number;
}

/** What the remote log needs of the MQTT session (src/uplink/session.ts). */
export interface RemoteLogSession {
  readonly state: string;
  topic(kind: 'logs'): string;
  publish(topic: string, payload: string, options: { qos: 1 }): Promise<void>;
  onStateChange(listener: (change: { state: string }) => void): () => void;
}

export interface RemoteLogOptions {
  config: Pick<RemoteLogConfig, 'level' | 'maxPerMinute' | 'foldWindowS'>;
  /** Entries kept while offline. Default 50. */
  ringSize?: number;
  /** The rate window; tests shorten it. Default 60000 (maxPerMinute is per minute). */
  rateWindowMs?: number;
  /** QoS 1 publishes awaiting their PUBACK at once. Default 8. */
  maxInflight?: number;
  now?: () => number;
  /** Where the remote log reports its own trouble: the local log only. */
  report?: (level: LogLevel, msg: string) => void;
}

export interface RemoteLogStats {
  /** Entries made (folding and the rate limit passed). */
  made: number;
  /** Entries the broker acknowledged. */
  sent: number;
  /** Entries dropped by the rate limit. */
  rateLimited: number;
  /** Entries that fell out of the offline ring. */
  overflowed: number;
  /** Entries the broker refused (ACL): dropped. */
  refused: number;
  /** Entries waiting to be sent. */
  queued: number;
}

interface Fold {
  level: LogLevel;
  component: string;
  msg: string;
  /** Repeats since the window opened (the first occurrence was sent on its own). */
  count: number;
  firstTs: number;
  lastTs: number;
  windowEnd: number;
}

/** Distinct messages folded at once; beyond that the oldest window is closed early (memory stays bounded). */
const MAX_FOLDS = 256;

/** The text a message is folded by: every number (integer or decimal) as `#`. */
export function foldKeyText(msg: string): string {
  return msg.replace(/\d+(\.\d+)?/g, '#');
}

export class RemoteLog {
  private readonly least: number;
  private readonly maxPerMinute: number;
  private readonly foldMs: number;
  private readonly ringSize: number;
  private readonly rateWindowMs: number;
  private readonly maxInflight: number;
  private readonly now: () => number;
  private readonly report: (level: LogLevel, msg: string) => void;
  private readonly folds = new Map<string, Fold>();
  /** When the entries of the current rate window were made. */
  private readonly madeAt: number[] = [];
  private readonly queue: RemoteLogEntry[] = [];
  private inflight = 0;
  /** After a failed publish: nothing more until the session says connected again (no retry loop). */
  private blocked = false;
  private suppressed = 0;
  private refusalReported = false;
  private session: RemoteLogSession | undefined;
  private topic = '';
  private unsubscribe: (() => void) | undefined;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private readonly counters = { made: 0, sent: 0, rateLimited: 0, overflowed: 0, refused: 0 };

  constructor(options: RemoteLogOptions) {
    this.least = LOG_LEVELS.indexOf(options.config.level);
    this.maxPerMinute = options.config.maxPerMinute;
    this.foldMs = options.config.foldWindowS * 1000;
    this.ringSize = options.ringSize ?? 50;
    this.rateWindowMs = options.rateWindowMs ?? 60_000;
    this.maxInflight = options.maxInflight ?? 8;
    this.now = options.now ?? Date.now;
    this.report = options.report ?? (() => undefined);
    // Closes the fold windows on time; a quarter window's lateness at most, never busier than 10 times a second.
    this.timer = setInterval(() => this.tick(), Math.min(1000, Math.max(100, this.foldMs / 4)));
    this.timer.unref();
  }

  get stats(): RemoteLogStats {
    return { ...this.counters, queued: this.queue.length };
  }

  /** Takes one log entry (a Logger.onEntry listener). */
  add(entry: LogEntry): void {
    if (this.closed || LOG_LEVELS.indexOf(entry.level) > this.least || entry.component === REMOTE_LOG_COMPONENT) return;
    const now = entry.time;
    const key = `${entry.level}\0${entry.component}\0${foldKeyText(entry.msg)}`;
    let fold = this.folds.get(key);
    if (fold && now >= fold.windowEnd) {
      this.closeFold(key, fold, now);
      fold = this.folds.get(key);
    }
    if (fold) {
      if (fold.count === 0) {
        fold.msg = entry.msg;
        fold.firstTs = now;
      }
      fold.count++;
      fold.lastTs = now;
      return;
    }
    if (this.folds.size >= MAX_FOLDS) {
      const [oldestKey, oldest] = this.folds.entries().next().value as [string, Fold];
      this.closeFold(oldestKey, oldest, now, true);
      this.folds.delete(oldestKey);
    }
    this.folds.set(key, { level: entry.level, component: entry.component, msg: entry.msg, count: 0, firstTs: now, lastTs: now, windowEnd: now + this.foldMs });
    this.make({ ts: now, level: entry.level, component: entry.component, msg: entry.msg, count: 1, firstTs: now, lastTs: now });
  }

  /** Publishes through `session` from now on: what waits goes at once if connected, else on the next connect. */
  attach(session: RemoteLogSession): void {
    this.unsubscribe?.();
    this.session = session;
    this.topic = session.topic('logs');
    this.unsubscribe = session.onStateChange((change) => {
      if (change.state !== 'connected') return;
      this.blocked = false;
      this.pump();
    });
    this.pump();
  }

  /**
   * Closes every fold window now and sends what waits (at shutdown, before the session closes: the publishes go out
   * ahead of the DISCONNECT). Does not wait for the acknowledgements.
   */
  flush(): void {
    const now = this.now();
    for (const [key, fold] of [...this.folds]) {
      this.closeFold(key, fold, now, true);
      this.folds.delete(key);
    }
    this.pump();
  }

  /** Stops the timer and the session listener; what was not sent is dropped. */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  private tick(): void {
    const now = this.now();
    for (const [key, fold] of [...this.folds]) if (now >= fold.windowEnd) this.closeFold(key, fold, now);
    // A publish failed but the session still says connected (a loss it has not noticed yet): try again, once a tick.
    if (this.blocked && this.session?.state === 'connected') {
      this.blocked = false;
      this.pump();
    }
    // A drop nobody reported yet (nothing was logged since): say so on its own once there is room.
    if (this.suppressed > 0 && this.hasRoom(now)) {
      this.make({
        ts: now,
        level: 'warn',
        component: REMOTE_LOG_COMPONENT,
        msg: `${this.suppressed} more entries suppressed (at most ${this.maxPerMinute} per minute)`,
        count: 1,
        firstTs: now,
        lastTs: now,
      });
    }
  }

  /**
   * Sends the window's repeats as one entry and keeps the window going if there were any; forgets it if not. Without
   * room in the rate window the window stays open (and counting) until there is, unless `force`d (shutdown, eviction):
   * then the window cannot wait, and its entry goes out past the rate limit, so that no count is ever lost.
   */
  private closeFold(key: string, fold: Fold, now: number, force = false): void {
    if (fold.count === 0) {
      this.folds.delete(key);
      return;
    }
    if (!force && !this.hasRoom(now)) return;
    this.make({ ts: now, level: fold.level, component: fold.component, msg: fold.msg, count: fold.count, firstTs: fold.firstTs, lastTs: fold.lastTs }, force);
    fold.count = 0;
    fold.windowEnd = now + this.foldMs;
  }

  private hasRoom(now: number): boolean {
    while (this.madeAt.length > 0 && this.madeAt[0]! <= now - this.rateWindowMs) this.madeAt.shift();
    return this.madeAt.length < this.maxPerMinute;
  }

  /** The rate limit (unless `force`d: a fold that must close now), then the queue. */
  private make(entry: RemoteLogEntry, force = false): void {
    if (!force && !this.hasRoom(entry.ts)) {
      this.suppressed++;
      this.counters.rateLimited++;
      return;
    }
    this.madeAt.push(entry.ts);
    if (this.suppressed > 0) {
      entry.suppressed = this.suppressed;
      this.suppressed = 0;
    }
    this.counters.made++;
    this.queue.push(entry);
    this.trimRing();
    this.pump();
  }

  /** Keeps the last `ringSize` entries; the oldest kept counts what fell out (and what that had counted). */
  private trimRing(): void {
    while (this.queue.length > this.ringSize) {
      const dropped = this.queue.shift()!;
      const head = this.queue[0]!;
      head.suppressed = (head.suppressed ?? 0) + 1 + (dropped.suppressed ?? 0);
      this.counters.overflowed++;
    }
  }

  private pump(): void {
    const session = this.session;
    if (!session || this.blocked || session.state !== 'connected') return;
    while (this.queue.length > 0 && this.inflight < this.maxInflight) {
      const entry = this.queue.shift()!;
      this.inflight++;
      session.publish(this.topic, JSON.stringify(entry), { qos: 1 }).then(
        () => {
          this.counters.sent++;
          this.inflight--;
          this.pump();
        },
        (err: unknown) => {
          this.inflight--;
          if ((err as { kind?: unknown }).kind === 'publish-refused') {
            this.counters.refused++;
            if (!this.refusalReported) {
              this.refusalReported = true;
              this.report('warn', `logs: the broker refuses the log entries on ${this.topic} (${(err as Error).message}); they are dropped`);
            }
            this.pump();
            return;
          }
          // Lost with the connection: back in the ring, in time order, for the next connect.
          this.blocked = true;
          this.queue.push(entry);
          this.queue.sort((a, b) => a.ts - b.ts);
          this.trimRing();
        },
      );
    }
  }
}
