/**
 * The stop on SIGTERM/SIGINT, timed: the service manager kills what has not exited within its stop timeout, and a
 * car's power supply does not wait either. The run says where it is (ShutdownProgress); if it is not done by the
 * deadline, the watch logs what was still pending and exits anyway:
 * - exit code 0 when the open batches were already committed to the outbox (nothing is lost: what was not
 *   acknowledged goes out at the next start; at worst the broker publishes the will instead of our offline status),
 * - SHUTDOWN_INCOMPLETE_EXIT_CODE when they were not (data still in memory is lost: a failure worth the service
 *   manager's notice).
 */
import type { ComponentLog, ComponentLogs } from './log.js';

/** After the signal, the time the stop may take: within the 5 s a car's supervisor gives, with room to exit. */
export const SHUTDOWN_DEADLINE_MS = 4500;
/** Exit code of a stop cut short by the deadline before the outbox commit. */
export const SHUTDOWN_INCOMPLETE_EXIT_CODE = 1;

/** What the run reports of its stop (runAgent's `shutdown` option). */
export interface ShutdownProgress {
  /** The step the stop is in now, for the deadline's report. */
  step(what: string): void;
  /** The open batches are in the outbox (or there were none to keep). */
  committed(): void;
  /** State worth naming if the deadline passes (the session's state, entries not sent...). */
  pending(describe: () => Record<string, unknown>): void;
}

export interface ShutdownWatchOptions {
  deadlineMs?: number;
  /** Ends the process; tests replace it. */
  exit?: (code: number) => void;
}

export class ShutdownWatch implements ShutdownProgress {
  private readonly deadlineMs: number;
  private readonly exit: (code: number) => void;
  private startedAt: number | undefined;
  private signalName = '';
  private current = 'stopping the sources';
  private isCommitted = false;
  private describe: (() => Record<string, unknown>) | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The `shutdown` component's log. */
  private readonly log: ComponentLog;

  constructor(logger: ComponentLogs, options: ShutdownWatchOptions = {}) {
    this.log = logger.child('shutdown');
    this.deadlineMs = options.deadlineMs ?? SHUTDOWN_DEADLINE_MS;
    this.exit = options.exit ?? ((code) => process.exit(code));
  }

  /** A stop signal arrived: starts the clock. */
  begin(signal: string): void {
    if (this.startedAt !== undefined) return;
    this.startedAt = performance.now();
    this.signalName = signal;
    this.log.info(`shutdown: ${signal}: stopping the sources, committing open batches to the outbox, closing the MQTT session`, {
      deadlineMs: this.deadlineMs,
    });
    // Not unref'd: a stop stuck on a promise nothing will settle must still end here, not exit silently.
    this.timer = setTimeout(() => this.expire(), this.deadlineMs);
  }

  get started(): boolean {
    return this.startedAt !== undefined;
  }

  step(what: string): void {
    this.current = what;
    if (this.started) this.log.debug(`shutdown: ${what}`, { atMs: this.elapsedMs() });
  }

  committed(): void {
    this.isCommitted = true;
  }

  pending(describe: () => Record<string, unknown>): void {
    this.describe = describe;
  }

  /** The stop finished in time: logs how long it took. Returns the time, ms. */
  finish(): number {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const ms = this.elapsedMs();
    this.log.info(`shutdown: done in ${ms} ms`, { signal: this.signalName, durationMs: ms });
    return ms;
  }

  private elapsedMs(): number {
    return this.startedAt === undefined ? 0 : Math.round(performance.now() - this.startedAt);
  }

  private expire(): void {
    this.timer = undefined;
    let pending: Record<string, unknown> = {};
    try {
      pending = this.describe?.() ?? {};
    } catch {
      // The report must not stop the exit.
    }
    const outcome = this.isCommitted ? 'the open batches are in the outbox' : 'the open batches were NOT committed to the outbox';
    this.log.error(`shutdown: not done ${this.deadlineMs} ms after ${this.signalName}, still ${this.current}; ${outcome}; exiting`, {
      step: this.current,
      committed: this.isCommitted,
      ...pending,
    });
    this.exit(this.isCommitted ? 0 : SHUTDOWN_INCOMPLETE_EXIT_CODE);
  }
}
