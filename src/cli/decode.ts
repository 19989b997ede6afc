/**
 * `telematics-agent decode`: decodes a candump stream with a DBC, one line per frame, the way CAN engineers already
 * read decoder output; `--json` gives one object per frame for scripts. The stream is a log file, standard input, or
 * a live SocketCAN interface (`--iface`).
 *
 * Failures: a malformed line, or one too long to be a line (read in bounded memory however long it is), is reported
 * with its number on stderr and skipped, and the exit status stays 0; a DBC or log that cannot be used exits 1 with
 * one line naming it. What the DBC and the log say is printed escaped for the terminal.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import { CandumpLineParser, CandumpLineSplitter, CandumpParseError, formatCandumpLine } from '../can/candump.js';
import { createFrame, type CanFrame } from '../can/frame.js';
import { SocketCanSource } from '../can/socketcan.js';
import { compileDatabase, DecodeError, loadDbcFile, type CompiledDatabase, type SignalValue } from '../dbc/index.js';
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

/**
 * One output line for one frame. Names, units and labels come from the DBC and the bus name from the log: the line
 * is made safe for a terminal (control characters escaped; in JSON, as \u escapes that parse to the same value).
 */
export function describeFrame(db: CompiledDatabase, frame: CanFrame, options: DecodeCliOptions): string {
  const codec = frame.error || frame.remote ? undefined : db.find(frame.id, frame.extended);
  if (options.json) {
    const head = { ts: frame.ts, bus: frame.bus, id: frame.id, extended: frame.extended };
    if (!codec) return jsonForTerminal(JSON.stringify({ ...head, name: null, signals: {} }));
    try {
      const signals = codec.decode(frame.data, { choices: options.choices });
      return jsonForTerminal(JSON.stringify({ ...head, name: codec.message.name, signals: signalsAsJson(signals) }));
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      return jsonForTerminal(JSON.stringify({ ts: frame.ts, bus: frame.bus, id: frame.id, error: err.message }));
    }
  }
  const line = formatCandumpLine(frame);
  if (!codec) return forTerminal(line);
  try {
    const signals = codec.decode(frame.data, { choices: options.choices });
    const units = new Map(codec.message.signals.map((s) => [s.name, s.unit]));
    const parts = Object.keys(signals).map((name) => {
      const value = signals[name]!;
      const unit = units.get(name);
      const shown = typeof value === 'string' ? `'${value}'` : String(value);
      return unit && typeof value !== 'string' ? `${name}: ${shown} ${unit}` : `${name}: ${shown}`;
    });
    return forTerminal(`${line} :: ${codec.message.name}(${parts.join(', ')})`);
  } catch (err) {
    if (!(err instanceof DecodeError)) throw err;
    return forTerminal(`${line} :: error: ${err.message}`);
  }
}

/**
 * Decodes a candump text stream to `write`, line by line; malformed input lines are reported and skipped, and so is
 * a line too long to be one (CandumpLineSplitter): an endless line costs bounded memory, not the process.
 */
export async function decodeStream(
  db: CompiledDatabase,
  input: Readable,
  options: DecodeCliOptions,
  write: (chunk: string) => Promise<void> | void,
  reportBadLine: (message: string) => void,
): Promise<{ frames: number; badLines: number }> {
  const frame = createFrame();
  const parser = new CandumpLineParser();
  let pending: string[] = [];
  let frames = 0;
  let badLines = 0;
  const bad = (err: CandumpParseError): void => {
    badLines++;
    reportBadLine(err.message);
  };
  const lines = new CandumpLineSplitter(bad);
  const decodeLines = async (): Promise<void> => {
    while (lines.next()) {
      try {
        if (!parser.parseRange(lines.text, lines.start, lines.end, frame, lines.lineNo)) continue;
      } catch (err) {
        if (!(err instanceof CandumpParseError)) throw err;
        bad(err);
        continue;
      }
      frames++;
      pending.push(describeFrame(db, frame, options));
      // Write in batches: one write per frame would dominate the run time on large logs.
      if (pending.length >= 256) {
        await write(`${pending.join('\n')}\n`);
        pending = [];
      }
    }
  };
  for await (const chunk of input) {
    lines.push(chunk as string | Buffer);
    await decodeLines();
  }
  lines.finish();
  await decodeLines();
  if (pending.length > 0) await write(`${pending.join('\n')}\n`);
  return { frames, badLines };
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
): Promise<{ frames: number; dropped: number }> {
  const maxBacklog = 16 * 1024 * 1024;
  let pending: string[] = [];
  let flushQueued = false;
  let frames = 0;
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
    frames++;
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
  return { frames, dropped };
}

function writeStdout(chunk: string): Promise<void> | void {
  if (process.stdout.write(chunk)) return;
  return new Promise((resolve) => process.stdout.once('drain', resolve));
}

export function registerDecodeCommand(program: Command): void {
  program
    .command('decode')
    .description('decode a candump -L stream (a log file or standard input) or a live SocketCAN interface with a DBC file, one line per frame')
    .requiredOption('--dbc <file>', 'DBC file')
    .option('--log <file>', 'candump -L log file (default: standard input)')
    .option('--iface <name>', 'live SocketCAN interface, e.g. can0 (until Ctrl-C)', parseInterfaceName)
    .option('--json', 'one JSON object per frame', false)
    .option('--choices', 'show value-table labels instead of numbers', false)
    .option('--j1939', 'match extended frames by J1939 PGN (ignore priority and source address)', false)
    .option('--strict', 'reject DBC files that deviate from the grammar', false)
    .action(async (opts: { dbc: string; log?: string; iface?: string; json: boolean; choices: boolean; j1939: boolean; strict: boolean }) => {
      if (opts.iface !== undefined && opts.log !== undefined) throw new Error('--iface and --log are two inputs: give one of them');
      // A mistyped interface fails at once; one that is down is waited for (the source says so).
      if (opts.iface !== undefined) checkCanInterface(opts.iface, 'wait');
      const db = compileDatabase(loadDbcFile(opts.dbc, { strict: opts.strict }), { j1939: opts.j1939 });
      for (const warning of db.db.warnings) {
        process.stderr.write(`warning: ${forTerminal(`${warning.file}:${warning.line}: ${warning.message}`)}\n`);
      }
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
        const note = (message: string): void => void process.stderr.write(`${message}\n`);
        try {
          const { frames, dropped } = await decodeInterface(db, opts.iface, opts, process.stdout, note, stop.signal);
          note(`${frames} frames${dropped > 0 ? `, ${dropped} not shown (the output could not keep up)` : ''}`);
        } finally {
          process.removeListener('SIGINT', onSignal);
          process.removeListener('SIGTERM', onSignal);
        }
        return;
      }
      const input = opts.log ? createReadStream(opts.log) : process.stdin;
      const { badLines } = await decodeStream(db, input, opts, writeStdout, (message) => process.stderr.write(`warning: ${forTerminal(message)}\n`));
      // Still exit status 0: every good line was decoded; the count says how many were not.
      if (badLines > 0) process.stderr.write(`${badLines} malformed line(s) skipped\n`);
    });
}
