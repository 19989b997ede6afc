/**
 * The agent's log: one entry per event, with a level, the component it comes from, the message and optional fields.
 * Written as JSON lines (pino) or as the bare message text on stderr, synchronously (fd 2): a line logged just before
 * the process exits is never lost in a buffer. A line that cannot be written (a full disk) is counted, never thrown.
 *
 * The modules report through a `warn(message)` callback, most with a component prefix ("uplink: ...",
 * "outbox: ...", "can0: ..."). `diagnostic` keeps that API: it takes the component from the prefix and picks the
 * level from the text (classify), so the modules need not change.
 *
 * The level: `logging.level`, except debug for the first `verboseForS` seconds after start (a fresh start is when
 * things go wrong and nobody is watching). setLevel (the setLogLevel command) wins over both.
 *
 * Messages quote DBC names, log lines, adapter answers and results from the network, and the lines end up on a
 * terminal: the text format shows control characters escaped (`\x1b`, `\n`: one entry, one line), and the JSON lines
 * also escape what JSON leaves raw (DEL, C1, bidi controls) as `\u00NN`, which parses to the same text.
 */
import { writeSync } from 'node:fs';
import pino from 'pino';
import { forTerminal, jsonForTerminal } from '../text/terminal-text.js';
import { LOG_LEVELS, loggingConfig, type LoggingConfig, type LogLevel } from './log-config.js';

export { LOG_LEVELS, type LogLevel } from './log-config.js';

export interface LogEntry {
  /** Epoch ms. */
  time: number;
  level: LogLevel;
  component: string;
  msg: string;
  fields?: Record<string, unknown>;
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

export interface LoggerOptions {
  /** The `logging` section (defaults when absent). */
  config?: LoggingConfig;
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

/** Component for a message without a `name: ` prefix. */
export const DEFAULT_COMPONENT = 'agent';

/**
 * Levels of the module messages that are not warnings (or are worse), by their text. The rest are warnings: every
 * diagnostic was one before the levels existed, and a new one is better seen than missed.
 */
const RULES: Array<{ test: RegExp; level: LogLevel; component?: string }> = [
  { test: /^created a development /, level: 'info', component: 'pki' },
  { test: /^embedded MQTT broker listening /, level: 'info', component: 'broker' },
  { test: /^health: status page on /, level: 'info' },
  { test: /^restart requested by a remote command/, level: 'warn', component: 'commands' },
  { test: /^uplink: connected to /, level: 'info' },
  // Learning the NAT timeout changes the interval a few times: normal work, not trouble.
  { test: /^uplink: heartbeat \d+ s -> /, level: 'info' },
  { test: /^uplink: the dead link after /, level: 'info' },
  { test: /^uplink: certificate rotated/, level: 'info' },
  { test: /^uplink: message \d+ dropped /, level: 'error' },
  { test: /^link memory: /, level: 'warn', component: 'uplink' },
  { test: /^command \S+ \(\S+\)( from .+)?: (ACCEPTED|IN_PROGRESS|SUCCEEDED)\b/, level: 'info', component: 'commands' },
  { test: /^command \S+ \(\S+\)/, level: 'warn', component: 'commands' },
  { test: /^outbox: .*(rejected|dropped)/, level: 'error' },
  // The outbox file deleted or replaced under the running agent (src/store/outbox.ts): loud, even when carried over.
  { test: /^outbox: .* while the agent was running/, level: 'error' },
  { test: /^commands: a result could not be stored/, level: 'error' },
  // The replay memory was lost: commands issued before a floor are refused from now on.
  { test: /^commands: the replay memory /, level: 'error' },
  // Interfaces, adapters and OBD coming (back) up.
  { test: /^[\w.-]+: interface \S+ is open( again)?$/, level: 'info' },
  { test: /^[\w.-]+: adapter ready on /, level: 'info' },
  { test: /^[\w.-]+: OBD: ECUs are answering again$/, level: 'info' },
  { test: /^[\w.-]+: OBD polling is on schedule again$/, level: 'info' },
];

const PREFIX = /^([A-Za-z][\w.-]{0,31}): /;

/** The level and component of a module's message (see RULES); the text itself is kept whole as the entry's msg. */
export function classify(message: string): { level: LogLevel; component: string } {
  const prefix = PREFIX.exec(message)?.[1];
  for (const rule of RULES) {
    if (rule.test.test(message)) return { level: rule.level, component: rule.component ?? prefix ?? DEFAULT_COMPONENT };
  }
  return { level: 'warn', component: prefix ?? DEFAULT_COMPONENT };
}

export class Logger {
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
      if (config.format === 'text') {
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
          { write: (line: string) => destination.write(jsonForTerminal(line)) } as pino.DestinationStream,
        );
      }
      if (config.verboseForS > 0 && rank(config.level) < rank('debug')) {
        this.current = 'debug';
        this.verboseTimer = setTimeout(() => this.endVerbose(), config.verboseForS * 1000);
        // The window must not keep a finished run alive.
        this.verboseTimer.unref();
        this.debug('logging', `logging at debug for the first ${config.verboseForS} s after start, then at ${config.level}`);
      }
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

  /** The level a command sets: in force until the next start; it ends the verbose window. */
  setLevel(level: LogLevel): void {
    this.explicit = true;
    this.stopVerbose();
    const previous = this.current;
    this.current = level;
    this.configured = level;
    if (previous !== level) this.info('logging', `log level ${previous} -> ${level}`);
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

  error(component: string, msg: string, fields?: Record<string, unknown>): void {
    this.log('error', component, msg, fields);
  }

  warn(component: string, msg: string, fields?: Record<string, unknown>): void {
    this.log('warn', component, msg, fields);
  }

  info(component: string, msg: string, fields?: Record<string, unknown>): void {
    this.log('info', component, msg, fields);
  }

  debug(component: string, msg: string, fields?: Record<string, unknown>): void {
    this.log('debug', component, msg, fields);
  }

  log(level: LogLevel, component: string, msg: string, fields?: Record<string, unknown>): void {
    const r = rank(level);
    const local = r <= rank(this.current);
    const heard = this.listeners.some((l) => r <= l.least);
    if (!local && !heard) return;
    const entry: LogEntry = { time: this.now(), level, component, msg, ...(fields ? { fields } : {}) };
    if (local) {
      try {
        if (this.pino) this.pino[level]({ component, ...fields }, msg);
        else this.writeText!(entry);
      } catch (err) {
        // Logging must never throw: a warning from a timer or the stop signal's handler would crash the agent.
        this.writeFailed(err);
      }
    }
    // A copy of the list: a listener may unsubscribe while it runs.
    for (const { least, listener } of [...this.listeners]) if (r <= least) listener(entry);
  }

  /** The callback the modules report through: level and component from the text (classify). */
  readonly diagnostic = (message: string): void => {
    const { level, component } = classify(message);
    this.log(level, component, message);
  };

  /** Counts the lost entry; the first time for a given failure, tells the listeners (the remote log), not the broken log. */
  private writeFailed(err: unknown): void {
    this.dropped++;
    const failure = err as NodeJS.ErrnoException | null | undefined;
    const code = failure?.code ?? failure?.message ?? String(err);
    this.lastError = code;
    if (this.toldErrors.has(code)) return;
    this.toldErrors.add(code);
    const entry: LogEntry = { time: this.now(), level: 'error', component: 'logging', msg: `logging: cannot write the local log (${code}): entries are dropped and counted` };
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
    this.info('logging', `verbose start over: logging at ${this.configured}`);
  }

  private stopVerbose(): void {
    if (this.verboseTimer) clearTimeout(this.verboseTimer);
    this.verboseTimer = undefined;
  }
}

/** ` key=value …` for the text format; values as JSON unless they are plain strings; safe for a terminal. */
function formatFields(fields: Record<string, unknown> | undefined): string {
  if (!fields) return '';
  let text = '';
  for (const [key, value] of Object.entries(fields)) {
    text += ` ${forTerminal(key)}=${typeof value === 'string' && /^[^\s"=]+$/.test(value) ? forTerminal(value) : jsonForTerminal(JSON.stringify(value) ?? 'undefined')}`;
  }
  return text;
}
