/**
 * The agent's log: one entry per event, with a level, the component it comes from, the message and optional fields.
 * Written as JSON lines (pino) or as the bare message text on stderr, synchronously (fd 2): a line logged just before
 * the process exits is never lost in a buffer. A line that cannot be written (a full disk) is counted, never thrown.
 * Without `logging.format`, the format follows where the log goes (`defaultLogFormat`): text on a terminal, JSON lines
 * into a pipe, a file or the journal.
 *
 * A line drawn in place on the same terminal (the live status line, a `LiveLine`) is hidden before each line the log
 * writes and shown again after it, so log lines scroll above it instead of landing on it.
 *
 * Each component logs through its own child (`child(component)`, pino's child bindings: the component is bound once,
 * not passed per call) and picks the level by the method it calls: `debug`, `info`, `warn`, `error`. Nothing reads
 * the text to guess a level or a component: rewording a message changes neither.
 *
 * The level: `logging.level`, except debug for the first `verboseForS` seconds after start (a fresh start is when
 * things go wrong and nobody is watching). setLevel (the setLogLevel command) wins over both.
 *
 * Messages quote DBC names, log lines, adapter answers and results from the network, and the lines end up on a
 * terminal: the text format shows control characters escaped (`\x1b`, `\n`: one entry, one line), and the JSON lines
 * also escape what JSON leaves raw (DEL, C1, bidi controls) as `\u00NN`, which parses to the same text.
 */
import { fstatSync, writeSync } from 'node:fs';
import { isatty } from 'node:tty';
import pino from 'pino';
import { forTerminal, jsonForTerminal } from '../text/terminal-text.js';
import { LOG_LEVELS, loggingConfig, type LogFormat, type LoggingConfig, type LogLevel } from './log-config.js';

export { LOG_LEVELS, type LogFormat, type LogLevel } from './log-config.js';

/** Facts that come with a message: JSON fields of the line, `key=value` after the text in the text format. */
export type LogFields = Record<string, unknown>;

export interface LogEntry {
  /** Epoch ms. */
  time: number;
  level: LogLevel;
  component: string;
  msg: string;
  fields?: LogFields;
}

/**
 * One component's log: what a module is handed instead of a callback. The method called is the entry's level, the
 * child's component its component. The methods may be passed on alone (`onProblem: log.warn`).
 */
/** Its methods are bound: `log.warn` can be handed to code that only wants a function to report with. */
export interface ComponentLog {
  readonly component: string;
  readonly error: (msg: string, fields?: LogFields) => void;
  readonly warn: (msg: string, fields?: LogFields) => void;
  readonly info: (msg: string, fields?: LogFields) => void;
  readonly debug: (msg: string, fields?: LogFields) => void;
}

export interface ChildOptions {
  /**
   * Begin every message with `<component>: `. For the children of buses and adapters: their plug-ins and pollers do
   * not know the name they run under, and the log's messages name their component (`can0: interface can0 is open`).
   */
  prefix?: boolean;
}

/** What hands out component logs: the Logger, passed to the parts that assemble several components (the data path). */
export interface ComponentLogs {
  child(component: string, options?: ChildOptions): ComponentLog;
}

/** Where lines go: fd 2 by default; tests pass anything with write(). A write may throw: the Logger counts it. */
export interface LogDestination {
  write(line: string): unknown;
}

/** What the local log could not write. */
export interface LogStats {
  /** Entries lost because the destination failed (stderr a file on a full disk, a closed pipe...). */
  dropped: number;
  /** The latest failure's code (ENOSPC, EPIPE...) or message; null while none. */
  lastError: string | null;
}

/** EAGAIN (a non-blocking pipe that is full): short waits before the line is given up, so a stuck reader blocks little. */
const BUSY_RETRIES = 5;
const BUSY_WAIT_MS = 10;
const busyWait = new Int32Array(new SharedArrayBuffer(4));

/**
 * Whole lines to a file descriptor, synchronously (what pino.destination({ sync: true }) did, without its habit of
 * throwing every write error but EPIPE out of the logging call). Partial writes are completed; any other failure
 * throws, and the Logger counts the line as dropped.
 */
export function fdDestination(fd: number): LogDestination {
  return {
    write(line: string): void {
      let bytes = Buffer.from(line, 'utf8');
      let busy = 0;
      while (bytes.length > 0) {
        try {
          bytes = bytes.subarray(writeSync(fd, bytes));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if ((code !== 'EAGAIN' && code !== 'EINTR') || busy++ >= BUSY_RETRIES) throw err;
          Atomics.wait(busyWait, 0, 0, BUSY_WAIT_MS);
        }
      }
    },
  };
}

/** Whether `fd` is the systemd journal: JOURNAL_STREAM names the journal stream's device and inode (systemd.exec(5)). */
export function isJournalStream(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const stream = env.JOURNAL_STREAM;
  if (!stream) return false;
  try {
    const stat = fstatSync(fd);
    return stream === `${stat.dev}:${stat.ino}`;
  } catch {
    return false;
  }
}

/**
 * The format of a log written to `fd` when the config names none: text for a person at a terminal; JSON lines for
 * journald, a log shipper, a file or a pipe, which parse it.
 */
export function defaultLogFormat(fd = 2, env: NodeJS.ProcessEnv = process.env): LogFormat {
  return isatty(fd) && !isJournalStream(fd, env) ? 'text' : 'json';
}

/**
 * A line drawn in place on the terminal the log writes to (the live status line). The log hides it before each line
 * it writes and shows it again after, so the log line takes the line's place and the line is redrawn below it. Both
 * are called synchronously around the write and must not throw.
 */
export interface LiveLine {
  hide(): void;
  show(): void;
}

export interface LoggerOptions {
  /** The `logging` section (defaults when absent). */
  config?: LoggingConfig;
  /** The format when the section names none (`defaultLogFormat()` for stderr); default json. */
  defaultFormat?: LogFormat;
  /** JSON or text lines; default stderr, synchronously. */
  destination?: LogDestination;
  /**
   * Instead of lines: each entry's message as plain text to this callback (runAgent's `warn` option, for tests and
   * embedding). The verbose window is off then: the caller gets what `level` lets through.
   */
  lines?: (message: string) => void;
  now?: () => number;
}

type EntryListener = (entry: LogEntry) => void;

/** How many levels are let through: error 0 … debug 3. */
function rank(level: LogLevel): number {
  return LOG_LEVELS.indexOf(level);
}

/** The component of the logger's own messages (the verbose window, a level set, a local log that cannot be written). */
export const LOGGING_COMPONENT = 'logging';

export class Logger implements ComponentLogs {
  private configured: LogLevel;
  private current: LogLevel;
  /** A level set by setLevel (a command): the verbose window no longer applies. */
  private explicit = false;
  private verboseTimer: NodeJS.Timeout | undefined;
  private readonly pino: pino.Logger | undefined;
  private readonly writeText: ((entry: LogEntry) => void) | undefined;
  private readonly listeners: Array<{ least: number; listener: EntryListener }> = [];
  private readonly now: () => number;
  private dropped = 0;
  private lastError: string | null = null;
  /** Failure codes already told to the listeners (the remote log): each once. */
  private readonly toldErrors = new Set<string>();
  /** The logger's own child (component `logging`). */
  private readonly own: ComponentLog;
  /** The live status line on the log's terminal: hidden around each line written. */
  private liveLine: LiveLine | undefined;

  constructor(options: LoggerOptions = {}) {
    const config = loggingConfig(options.config);
    this.now = options.now ?? Date.now;
    this.configured = config.level;
    this.current = config.level;
    if (options.lines) {
      const lines = options.lines;
      this.writeText = (entry) => lines(entry.msg + formatFields(entry.fields));
    } else {
      const destination = options.destination ?? fdDestination(2);
      if ((config.format ?? options.defaultFormat ?? 'json') === 'text') {
        // Messages quote names and text from files, the bus and the network: one line, never interpreted by a terminal.
        this.writeText = (entry) => destination.write(`${forTerminal(entry.msg)}${formatFields(entry.fields)}\n`);
      } else {
        this.pino = pino(
          {
            level: 'debug',
            base: undefined,
            timestamp: () => `,"time":"${new Date(this.now()).toISOString()}"`,
            formatters: { level: (label) => ({ level: label }) },
          },
          // JSON escapes C0 controls already; DEL, C1 and bidi controls it leaves raw are escaped too (same JSON value).
          { write: (line: string) => destination.write(jsonForTerminal(line)) },
        );
      }
    }
    this.own = this.child(LOGGING_COMPONENT);
    // The `lines` callback gets what `level` lets through: no verbose window.
    if (!options.lines && config.verboseForS > 0 && rank(config.level) < rank('debug')) {
      this.current = 'debug';
      this.verboseTimer = setTimeout(() => this.endVerbose(), config.verboseForS * 1000);
      // The window must not keep a finished run alive.
      this.verboseTimer.unref();
      this.own.debug(`logging at debug for the first ${config.verboseForS} s after start, then at ${config.level}`);
    }
  }

  /** The level in force. */
  get level(): LogLevel {
    return this.current;
  }

  /** Entries the destination failed to write. */
  get stats(): LogStats {
    return { dropped: this.dropped, lastError: this.lastError };
  }

  /** Whether an entry at `level` would be written (to skip building costly fields). */
  enabled(level: LogLevel): boolean {
    return rank(level) <= rank(this.current);
  }

  /**
   * The line drawn in place on the terminal this log writes to (undefined: none): hidden before each local line and
   * shown again after it. The caller makes sure it is the same terminal.
   */
  setLiveLine(line: LiveLine | undefined): void {
    this.liveLine = line;
  }

  /** The level a command sets: in force until the next start; it ends the verbose window. */
  setLevel(level: LogLevel): void {
    this.explicit = true;
    this.stopVerbose();
    const previous = this.current;
    this.current = level;
    this.configured = level;
    if (previous !== level) this.own.info(`log level ${previous} -> ${level}`);
  }

  /**
   * Every entry at `least` or more severe, whatever the local level (the remote log has its own threshold). Returns
   * the function that stops it.
   */
  onEntry(least: LogLevel, listener: EntryListener): () => void {
    const item = { least: rank(least), listener };
    this.listeners.push(item);
    return () => {
      const i = this.listeners.indexOf(item);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /**
   * The log of one component: every entry it makes carries `component`, at the level of the method called. Children
   * are cheap (a pino child binds the component once); the composition root makes one per component and hands it on.
   */
  child(component: string, options: ChildOptions = {}): ComponentLog {
    const bound = this.pino?.child({ component });
    const prefix = options.prefix === true ? `${component}: ` : '';
    const at =
      (level: LogLevel) =>
      (msg: string, fields?: LogFields): void =>
        this.write(level, component, prefix + msg, fields, bound);
    return { component, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
  }

  private write(level: LogLevel, component: string, msg: string, fields: LogFields | undefined, bound: pino.Logger | undefined): void {
    const r = rank(level);
    const local = r <= rank(this.current);
    const heard = this.listeners.some((l) => r <= l.least);
    if (!local && !heard) return;
    const entry: LogEntry = { time: this.now(), level, component, msg, ...(fields ? { fields } : {}) };
    if (local) {
      const live = this.liveLine;
      live?.hide();
      try {
        if (bound) bound[level](fields ?? {}, msg);
        else this.writeText!(entry);
      } catch (err) {
        // Logging must never throw: a warning from a timer or the stop signal's handler would crash the agent.
        this.writeFailed(err);
      }
      live?.show();
    }
    // A copy of the list: a listener may unsubscribe while it runs.
    for (const { least, listener } of [...this.listeners]) if (r <= least) listener(entry);
  }

  /** Counts the lost entry; the first time for a given failure, tells the listeners (the remote log), not the broken log. */
  private writeFailed(err: unknown): void {
    this.dropped++;
    const failure = err as NodeJS.ErrnoException | null | undefined;
    const code = failure?.code ?? failure?.message ?? String(err);
    this.lastError = code;
    if (this.toldErrors.has(code)) return;
    this.toldErrors.add(code);
    const entry: LogEntry = {
      time: this.now(),
      level: 'error',
      component: LOGGING_COMPONENT,
      msg: `logging: cannot write the local log (${code}): entries are dropped and counted`,
    };
    for (const { listener } of [...this.listeners]) listener(entry);
  }

  /** Stops the verbose window's timer. */
  close(): void {
    this.stopVerbose();
  }

  private endVerbose(): void {
    this.verboseTimer = undefined;
    if (this.explicit) return;
    this.current = this.configured;
    this.own.info(`verbose start over: logging at ${this.configured}`);
  }

  private stopVerbose(): void {
    if (this.verboseTimer) clearTimeout(this.verboseTimer);
    this.verboseTimer = undefined;
  }
}

/** ` key=value …` for the text format; values as JSON unless they are plain strings; safe for a terminal. */
function formatFields(fields: LogFields | undefined): string {
  if (!fields) return '';
  let text = '';
  for (const [key, value] of Object.entries(fields)) {
    text += ` ${forTerminal(key)}=${typeof value === 'string' && /^[^\s"=]+$/.test(value) ? forTerminal(value) : jsonForTerminal(JSON.stringify(value) ?? 'undefined')}`;
  }
  return text;
}
