/**
 * The live status line of `telematics-agent run`, drawn from the agent's snapshot on the run's timer, never per frame.
 *
 * On a terminal it is one line, redrawn in place (carriage return, the line, erase to its end) and fitted to the
 * terminal's width, which is read again at each draw and redrawn at once when the window is resized. The most
 * important fields come first: the uplink, what waits in the outbox, the frame rate, the errors, then the links to
 * the car (interfaces, adapters), then as many status signal values as fit, then the rest. A field that does not fit
 * is dropped whole, with every field after it; only a first field wider than the whole terminal is cut. A log that
 * writes to the same terminal hides the line before each of its lines and shows it again after (the Logger's
 * LiveLine), so log lines scroll above it, never onto it.
 *
 * Anywhere else (a pipe, a file) it is one full line per interval, in the order it always had, for whoever reads it.
 *
 * Failure: nothing here throws; an output that fails to write is the run command's to ignore. A terminal that reports
 * no width is taken as 80 columns. DBC names, labels and units are shown with their control characters escaped.
 */
import { isatty } from 'node:tty';
import { fstatSync } from 'node:fs';
import { dataPathText, formatBytes, FrameRates, type AgentSnapshot } from '../agent/snapshot.js';
import type { LiveLine } from '../health/log.js';
import { heartbeatText } from '../uplink/keepalive.js';
import { cutToColumns, forTerminal, terminalColumns } from '../text/terminal-text.js';

/** Where the status goes: process.stdout, or anything shaped like it (tests). */
export interface StatusOutput {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
  /** A terminal's stream emits 'resize' when its window changes size (SIGWINCH). */
  on?(event: 'resize', listener: () => void): unknown;
  off?(event: 'resize', listener: () => void): unknown;
}

/** The width assumed for a terminal that reports none. */
const DEFAULT_COLUMNS = 80;

/** One field of the terminal's status line: dropped whole when it does not fit. */
export interface StatusField {
  text: string;
  /** What comes before it when a field precedes it: `, ` within a group, ` | ` between groups. */
  separator: ', ' | ' | ';
}

/** Frames and signals per second, all buses together, since the previous draw. */
export interface StatusRates {
  framesPerS: number;
  signalsPerS: number;
}

function errorCounts(snapshot: AgentSnapshot): { unknown: number; errors: number } {
  let unknown = 0;
  let errors = 0;
  for (const bus of snapshot.buses) {
    unknown += bus.unknownFrames;
    errors += bus.decodeErrors + bus.badLogLines;
  }
  return { unknown, errors };
}

/**
 * The terminal's fields, most important first: `uplink connected, 3 buffered, 294 frames/s, 0 errors | can0 open,
 * error-active, 0 error frames | VehicleSpeed 42.0 km/h, EngineSpeed 812.0 rpm | OBD rpm 812 | heartbeat 42 s, 1204
 * published, outbox 12 kB, 4906 signals/s, 0 unknown`. Each field's text is safe for a terminal.
 */
export function terminalStatusFields(snapshot: AgentSnapshot, rates: StatusRates): StatusField[] {
  const fields: StatusField[] = [];
  const group = (texts: readonly string[]): void => {
    texts.forEach((text, i) => fields.push({ text: forTerminal(text), separator: i === 0 ? ' | ' : ', ' }));
  };
  const data = snapshot.dataPath;
  const link = data?.link ?? null;
  const { unknown, errors } = errorCounts(snapshot);
  const head: string[] = [];
  if (link) head.push(`uplink ${link.state}${link.throttled ? ' (budget exhausted)' : ''}`);
  if (data) head.push(`${data.report.outbox.messages} buffered`);
  // An adapter-only config has no bus: no frame rate to speak of.
  if (snapshot.buses.length > 0) head.push(`${rates.framesPerS} frames/s`, `${errors} errors`);
  group(head);
  for (const bus of snapshot.buses) if (bus.link) group([bus.link.text]);
  for (const adapter of snapshot.adapters) group([adapter.text]);
  if (snapshot.signalsConfigured) group(snapshot.signals.map((s) => `${s.signal} ${s.text}`));
  for (const bus of snapshot.buses) if (bus.obd) group([bus.obd.text]);
  for (const adapter of snapshot.adapters) if (adapter.obd) group([adapter.obd.text]);
  const tail: string[] = [];
  if (link?.heartbeat) tail.push(heartbeatText(link.heartbeat));
  if (link) tail.push(`${link.publisher.acknowledged} published`);
  if (data) tail.push(`outbox ${formatBytes(data.report.outbox.bytes)}`);
  if (snapshot.buses.length > 0) tail.push(`${rates.signalsPerS} signals/s`, `${unknown} unknown`);
  group(tail);
  return fields;
}

/**
 * The fields joined, in order, as far as they fit in `columns`: the first field that does not fit is dropped with all
 * after it (a field is never cut, except a first field wider than `columns` alone).
 */
export function fitStatusFields(fields: readonly StatusField[], columns: number): string {
  let line = '';
  let used = 0;
  for (const field of fields) {
    if (field.text === '') continue;
    const separator = line === '' ? '' : field.separator;
    const needed = terminalColumns(separator) + terminalColumns(field.text);
    if (used + needed > columns) return line === '' ? cutToColumns(field.text, columns) : line;
    line += separator + field.text;
    used += needed;
  }
  return line;
}

/**
 * The line for a pipe or a file, as it always was: `812 frames/s, 4906 signals/s, 0 unknown, 0 errors | can0 open,
 * error-active, 0 error frames | VehicleSpeed 42.0 km/h | OBD rpm 812 | obd ready (ELM327 v1.5) | OBD speed 42 km/h |
 * uplink connected, 1204 published, 3 buffered (12 kB)`.
 */
export function statusText(snapshot: AgentSnapshot, rates: StatusRates): string {
  const { unknown, errors } = errorCounts(snapshot);
  let line = `${rates.framesPerS} frames/s, ${rates.signalsPerS} signals/s, ${unknown} unknown, ${errors} errors`;
  for (const bus of snapshot.buses) if (bus.link) line += ` | ${bus.link.text}`;
  if (snapshot.signalsConfigured && snapshot.signals.length > 0) {
    line += ' | ' + snapshot.signals.map((s) => `${s.signal} ${s.text}`).join(', ');
  }
  for (const bus of snapshot.buses) if (bus.obd) line += ` | ${bus.obd.text}`;
  for (const adapter of snapshot.adapters) line += ` | ${adapter.text}${adapter.obd ? ` | ${adapter.obd.text}` : ''}`;
  if (snapshot.dataPath) line += ` | ${dataPathText(snapshot.dataPath)}`;
  // DBC labels and units, interface and adapter names: shown, never interpreted by the terminal.
  return forTerminal(line);
}

/**
 * Whether two file descriptors are the same terminal (stdout and stderr of `run` in a terminal window): then the log
 * and the status line share the screen and must take turns.
 */
export function sameTerminal(fd: number, other: number): boolean {
  if (!isatty(fd) || !isatty(other)) return false;
  try {
    return fstatSync(fd).rdev === fstatSync(other).rdev;
  } catch {
    return false;
  }
}

/** The live status line: redrawn in place on a terminal, one line per draw otherwise. */
export class StatusLine implements LiveLine {
  private readonly rates: FrameRates;
  /** The latest fields, drawn again after a log line or a resize without a new snapshot. */
  private fields: StatusField[] = [];
  /** On the screen now (drawn and not ended). */
  private shown = false;
  private readonly onResize = (): void => {
    if (this.shown) this.render();
  };

  constructor(
    private readonly output: StatusOutput,
    private readonly snapshot: () => AgentSnapshot,
  ) {
    this.rates = new FrameRates(snapshot().buses);
    if (this.onTerminal) output.on?.('resize', this.onResize);
  }

  /** Whether it is redrawn in place (the output is a terminal). */
  get onTerminal(): boolean {
    return this.output.isTTY === true;
  }

  /** A new snapshot, drawn: in place on a terminal, a line of its own elsewhere. */
  draw(): void {
    const snapshot = this.snapshot();
    const rates = this.rates.next(snapshot.buses);
    if (!this.onTerminal) {
      this.write(`${statusText(snapshot, rates)}\n`);
      return;
    }
    this.fields = terminalStatusFields(snapshot, rates);
    this.render();
  }

  /** Before a log line: the status line's row is cleared and the cursor is at its start, where the log line goes. */
  hide(): void {
    if (this.shown) this.write('\r\x1b[K');
  }

  /** After a log line (which ended with a newline): the status line again, on the row below it. */
  show(): void {
    if (this.shown) this.render();
  }

  /** Ends the line redrawn in place, so that what follows (the summary) starts on a line of its own. */
  end(): void {
    this.output.off?.('resize', this.onResize);
    if (this.shown) this.write('\n');
    this.shown = false;
  }

  /**
   * The fields that fit the terminal's width now. One column is left free: a line that reaches the last column leaves
   * the cursor waiting to wrap, and what comes next (a log line) would start on the status line's row.
   */
  private render(): void {
    const columns = this.output.columns !== undefined && this.output.columns > 1 ? this.output.columns : DEFAULT_COLUMNS;
    this.write(`\r${fitStatusFields(this.fields, columns - 1)}\x1b[K`);
    this.shown = true;
  }

  /** The status is for whoever watches: an output that throws (a closed stream) never stops the agent or its log. */
  private write(text: string): void {
    try {
      this.output.write(text);
    } catch {
      // Nothing to do: the next draw tries again.
    }
  }
}
