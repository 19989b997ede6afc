/**
 * `telematics-agent decode`: decodes a candump stream with a DBC, one line per frame, the way CAN engineers already
 * read decoder output; `--json` gives one object per frame for scripts. The stream is a log file, standard input
 * (`candump can0 | telematics-agent decode -d car.dbc`: each line is printed as it comes), or a live SocketCAN
 * interface (`--iface`). It reads what candump prints: `-L` logs and its console output, with or without a `-t`
 * timestamp, detected line by line (src/can/candump.ts). Value-table labels are shown, as cantools shows them
 * (`--no-choices` gives the numbers); a DBC that declares J1939 matches 29-bit frames by parameter group unless
 * `--no-j1939` says otherwise, and says so once on stderr.
 *
 * Failures: a malformed line, or one too long to be a line (read in bounded memory however long it is), is reported
 * with its number on stderr and skipped; the exit status is 0 while at least one line was a frame, 1 when lines came
 * but none could be read. A DBC or log that cannot be used exits 1 with one line naming it. What the DBC and the log
 * say is printed escaped for the terminal.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { Option, type Command } from 'commander';
import { CandumpLineParser, CandumpLineSplitter, CandumpParseError, formatCandumpLine } from '../can/candump.js';
import { createFrame, type CanFrame } from '../can/frame.js';
import { SocketCanSource } from '../can/socketcan.js';
import { compileDatabase, DecodeError, j1939Declaration, loadDbcFile, type CompiledDatabase, type SignalValue } from '../dbc/index.js';
import { describeControllerChange, endpointStateReporter } from '../can/interface-report.js';
import { checkCanInterface, parseInterfaceName } from './can-interface.js';
import { forTerminal, jsonForTerminal } from '../text/terminal-text.js';

export interface DecodeCliOptions {
  choices: boolean;
  json: boolean;
}

/** JSON has no BigInt, NaN or Infinity: big integers become decimal strings, IEEE specials their names. */
export function jsonValue(value: SignalValue): string | number {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return value;
}

function signalsAsJson(signals: Record<string, SignalValue>): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const name of Object.keys(signals)) out[name] = jsonValue(signals[name]!);
  return out;
}

/** Colour escape sequences (`candump -c`), dropped from an input line that is printed again. */
const COLOUR = /\x1b\[[0-9;]*m/g;

/** A console-format input line as it is printed again: without its colours and trailing blanks (or byte-order mark). */
function echoedLine(text: string, start: number, end: number): string {
  const line = text.slice(text.charCodeAt(start) === 0xfeff ? start + 1 : start, end).trimEnd();
  return line.includes('\x1b') ? line.replace(COLOUR, '') : line;
}

/** What the frames of one run were: counted on the way, for the closing notes. */
export interface DecodeTally {
  frames: number;
  /** Frames of a message the DBC describes. */
  known: number;
  /** 29-bit data frames, which PGN matching may make known. */
  extended: number;
}

function tally(db: CompiledDatabase, frame: CanFrame, counts: DecodeTally): void {
  counts.frames++;
  if (frame.error || frame.remote) return;
  if (frame.extended) counts.extended++;
  if (db.find(frame.id, frame.extended)) counts.known++;
}

/**
 * One output line for one frame. `line` is the input line to show instead of the frame in `candump -L` form (a
 * console-format line is shown as candump printed it, as cantools does). Names, units and labels come from the DBC and
 * the bus name from the log: the line is made safe for a terminal (control characters escaped; in JSON, as \u escapes
 * that parse to the same value). In JSON a frame without a timestamp has `"ts": null`.
 */
export function describeFrame(db: CompiledDatabase, frame: CanFrame, options: DecodeCliOptions, line?: string): string {
  const codec = frame.error || frame.remote ? undefined : db.find(frame.id, frame.extended);
  if (options.json) {
    const ts = Number.isNaN(frame.ts) ? null : frame.ts;
    const head = { ts, bus: frame.bus, id: frame.id, extended: frame.extended };
    if (!codec) return jsonForTerminal(JSON.stringify({ ...head, name: null, signals: {} }));
    try {
      const signals = codec.decode(frame.data, { choices: options.choices });
      return jsonForTerminal(JSON.stringify({ ...head, name: codec.message.name, signals: signalsAsJson(signals) }));
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      return jsonForTerminal(JSON.stringify({ ts, bus: frame.bus, id: frame.id, error: err.message }));
    }
  }
  const shown = line ?? formatCandumpLine(frame);
  if (!codec) return forTerminal(shown);
  try {
    const signals = codec.decode(frame.data, { choices: options.choices });
    const units = new Map(codec.message.signals.map((s) => [s.name, s.unit]));
    const parts = Object.keys(signals).map((name) => {
      const value = signals[name]!;
      const unit = units.get(name);
      const text = typeof value === 'string' ? `'${value}'` : String(value);
      return unit && typeof value !== 'string' ? `${name}: ${text} ${unit}` : `${name}: ${text}`;
    });
    return forTerminal(`${shown} :: ${codec.message.name}(${parts.join(', ')})`);
  } catch (err) {
    if (!(err instanceof DecodeError)) throw err;
    return forTerminal(`${shown} :: error: ${err.message}`);
  }
}

/**
 * Decodes a candump text stream to `write`, line by line, in any format candump prints; malformed input lines are
 * reported and skipped, and so is a line too long to be one (CandumpLineSplitter): an endless line costs bounded
 * memory, not the process. What a chunk of input decodes to is written before the next chunk is read, so a live
 * `candump | decode` shows each frame as it comes; a file's lines go out in batches.
 */
export async function decodeStream(
  db: CompiledDatabase,
  input: Readable,
  options: DecodeCliOptions,
  write: (chunk: string) => Promise<void> | void,
  reportBadLine: (message: string) => void,
): Promise<DecodeTally & { badLines: number }> {
  const frame = createFrame();
  const parser = new CandumpLineParser({ consoleFormat: true });
  let pending: string[] = [];
  const counts: DecodeTally = { frames: 0, known: 0, extended: 0 };
  let badLines = 0;
  const bad = (err: CandumpParseError): void => {
    badLines++;
    reportBadLine(err.message);
  };
  const lines = new CandumpLineSplitter(bad);
  const flush = async (): Promise<void> => {
    if (pending.length === 0) return;
    const chunk = `${pending.join('\n')}\n`;
    pending = [];
    await write(chunk);
  };
  const decodeLines = async (): Promise<void> => {
    while (lines.next()) {
      try {
        if (!parser.parseRange(lines.text, lines.start, lines.end, frame, lines.lineNo)) continue;
      } catch (err) {
        if (!(err instanceof CandumpParseError)) throw err;
        bad(err);
        continue;
      }
      tally(db, frame, counts);
      const line = parser.consoleLine && !options.json ? echoedLine(lines.text, lines.start, lines.end) : undefined;
      pending.push(describeFrame(db, frame, options, line));
      // Write in batches: one write per frame would dominate the run time on large logs.
      if (pending.length >= 256) await flush();
    }
  };
  for await (const chunk of input) {
    lines.push(chunk as string | Buffer);
    await decodeLines();
    await flush();
  }
  lines.finish();
  await decodeLines();
  await flush();
  return { ...counts, badLines };
}
/**
 * Decodes a live SocketCAN interface until `signal` aborts. Lines are written once per turn of the event loop, not
 * once per frame. The kernel cannot be told to wait, so when the output falls this far behind (a slow pipe), lines are
 * dropped and counted instead of piling up in memory.
 */
export async function decodeInterface(
  db: CompiledDatabase,
  ifname: string,
  options: DecodeCliOptions & { timestamps?: boolean },
  output: { write(chunk: string): unknown; readonly writableLength: number },
  note: (message: string) => void,
  signal: AbortSignal,
): Promise<DecodeTally & { dropped: number }> {
  const maxBacklog = 16 * 1024 * 1024;
  let pending: string[] = [];
  let flushQueued = false;
  const counts: DecodeTally = { frames: 0, known: 0, extended: 0 };
  let dropped = 0;
  const flush = (): void => {
    flushQueued = false;
    if (pending.length === 0) return;
    const chunk = `${pending.join('\n')}\n`;
    pending = [];
    output.write(chunk);
  };
  const source = new SocketCanSource({
    interface: ifname,
    timestamps: options.timestamps ?? true,
    onStateChange: endpointStateReporter(note),
    onControllerState: (change) => note(describeControllerChange(ifname, change)),
  });
  await source.run((frame) => {
    tally(db, frame, counts);
    if (output.writableLength > maxBacklog) {
      if (dropped++ === 0) note('the output cannot keep up with the bus; frames are being dropped from it');
      return;
    }
    pending.push(describeFrame(db, frame, options));
    if (!flushQueued) {
      flushQueued = true;
      setImmediate(flush);
    }
  }, signal);
  flush();
  return { ...counts, dropped };
}

function writeStdout(chunk: string): Promise<void> | void {
  if (process.stdout.write(chunk)) return;
  return new Promise((resolve) => process.stdout.once('drain', resolve));
}

/** The closing note when no frame was of a message the DBC describes: the commonest way to decode nothing. */
function nothingKnown(dbcFile: string, counts: DecodeTally, j1939: boolean, db: CompiledDatabase): string | undefined {
  if (counts.frames === 0 || counts.known > 0) return undefined;
  const hint =
    !j1939 && counts.extended > 0 && db.db.messages.some((m) => m.extended)
      ? ' (--j1939 matches 29-bit frames by parameter group, ignoring priority and source address)'
      : '';
  return `none of the ${counts.frames} frames is a message of ${dbcFile}${hint}`;
}

interface DecodeCommandOptions {
  dbc: string;
  log?: string;
  iface?: string;
  json: boolean;
  choices: boolean;
  j1939?: boolean;
  strict: boolean;
}

export function registerDecodeCommand(program: Command): void {
  program
    .command('decode')
    .description(
      'decode what candump prints (-L logs, or its console output with any -t timestamp) from a file or standard input, ' +
        'or a live SocketCAN interface, with a DBC file: one line per frame',
    )
    .requiredOption('-d, --dbc <file>', 'DBC file')
    .option('-l, --log <file>', 'candump output or log file; - or nothing: standard input (candump can0 | telematics-agent decode -d car.dbc)')
    .option('-i, --iface <name>', 'live SocketCAN interface, e.g. can0 (until Ctrl-C)', parseInterfaceName)
    .option('-j, --json', 'one JSON object per frame', false)
    .option('--no-choices', 'show the raw numbers of signals with a value table instead of their labels')
    .addOption(new Option('--choices', 'show value-table labels (the default)').hideHelp())
    .option('--j1939', 'match 29-bit frames by J1939 parameter group, ignoring priority and source address (default: when the DBC declares J1939)')
    .option('--no-j1939', 'match 29-bit frames by their exact identifier, even with a J1939 DBC')
    .option('--strict', 'reject DBC files that deviate from the grammar', false)
    .action(async (opts: DecodeCommandOptions) => {
      const note = (message: string): void => void process.stderr.write(`${forTerminal(message)}\n`);
      if (opts.iface !== undefined && opts.log !== undefined) throw new Error('--iface and --log are two inputs: give one of them');
      // A mistyped interface fails at once; one that is down is waited for (the source says so).
      if (opts.iface !== undefined) checkCanInterface(opts.iface, 'wait');
      const database = loadDbcFile(opts.dbc, { strict: opts.strict });
      for (const warning of database.warnings) note(`warning: ${warning.file}:${warning.line}: ${warning.message}`);
      const declared = j1939Declaration(database);
      const j1939 = opts.j1939 ?? declared !== undefined;
      if (opts.j1939 === undefined && declared !== undefined) {
        note(
          `${opts.dbc} declares J1939 (${declared}): 29-bit frames match by parameter group, ignoring priority and source address (--no-j1939: exact identifiers)`,
        );
      }
      const db = compileDatabase(database, { j1939 });
      // A closed pipe (`| head`) ends the output quietly.
      process.stdout.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EPIPE') process.exit(0);
        throw err;
      });
      if (opts.iface !== undefined) {
        const stop = new AbortController();
        const onSignal = (): void => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const counts = await decodeInterface(db, opts.iface, opts, process.stdout, note, stop.signal);
          note(`${counts.frames} frames${counts.dropped > 0 ? `, ${counts.dropped} not shown (the output could not keep up)` : ''}`);
          const unknown = nothingKnown(opts.dbc, counts, j1939, db);
          if (unknown !== undefined) note(unknown);
        } finally {
          process.removeListener('SIGINT', onSignal);
          process.removeListener('SIGTERM', onSignal);
        }
        return;
      }
      const input = opts.log !== undefined && opts.log !== '-' ? createReadStream(opts.log) : process.stdin;
      const counts = await decodeStream(db, input, opts, writeStdout, (message) => note(`warning: ${message}`));
      if (counts.badLines > 0) note(`${counts.badLines} malformed line(s) skipped`);
      const unknown = nothingKnown(opts.dbc, counts, j1939, db);
      if (unknown !== undefined) note(unknown);
      // Lines came, and not one was a frame: whatever this input is, it was not read (exit 1). Some good lines: 0.
      if (counts.frames === 0 && counts.badLines > 0) {
        note(`no line of ${opts.log !== undefined && opts.log !== '-' ? opts.log : 'standard input'} is a candump frame`);
        process.exitCode = 1;
      }
    });
}
