/**
 * `telematics-agent gnss`: a GNSS receiver from the command line, one line per fix (per epoch of the receiver), as a
 * firmware engineer checks a new unit's antenna and receiver: from its serial port (`--port`, the baud rate found
 * unless `--baud` says), from gpsd when gpsd owns it (`--gpsd HOST[:PORT]`), or from a recording of one (`--log`, a
 * file of NMEA sentences such as gpsd's test logs).
 * `--json` prints each fix as one gpsd TPV object per line (src/gnss/fix.ts `toTpv`).
 *
 * Exit status: 0 when fixes were printed (or the count/duration ended it), 1 on a bad option or an unreadable log.
 * A missing or silent receiver is not an error here either: the state goes to stderr and the command keeps waiting,
 * as the agent does, until Ctrl-C, `--duration` or `--count`.
 */
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { FixAssembler } from '../gnss/fix-assembler.js';
import { FIX_STATUS_NAMES, hasPosition, toTpv, type GnssFix } from '../gnss/fix.js';
import { GPSD_PORT, GpsdClient } from '../gnss/gpsd-client.js';
import { NmeaReader } from '../gnss/nmea-reader.js';
import { SerialGnssReceiver } from '../gnss/serial-receiver.js';
import { forTerminal, jsonForTerminal } from '../text/terminal-text.js';
import { parseBaud, parsePortPath } from './serial-options.js';

interface GnssCliOptions {
  port?: string;
  gpsd?: { host: string; port: number };
  baud?: number;
  rolloverFloor?: number | null;
  log?: string;
  json?: boolean;
  count?: number;
  duration?: number;
}

/** `HOST[:PORT]` (an IPv6 address in brackets: `[::1]:2947`). */
function parseGpsdAddress(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+))(?::(\d{1,5}))?$/.exec(text);
  const port = match?.[3] !== undefined ? Number(match[3]) : GPSD_PORT;
  if (match === null || port < 1 || port > 65535) throw new InvalidArgumentError('expected HOST or HOST:PORT, e.g. localhost:2947');
  return { host: match[1] ?? match[2]!, port };
}

/** `YYYY-MM-DD` as unix ms, or `off`: null. */
function parseRolloverFloor(text: string): number | null {
  if (text === 'off') return null;
  const ms = /^\d{4}-\d\d-\d\d$/.test(text) ? Date.parse(`${text}T00:00:00Z`) : NaN;
  if (Number.isNaN(ms)) throw new InvalidArgumentError('expected a date YYYY-MM-DD, or off');
  return ms;
}

function parsePositiveInteger(text: string): number {
  if (!/^[1-9]\d{0,8}$/.test(text)) throw new InvalidArgumentError('expected a whole number above 0');
  return Number(text);
}

/** `2022-10-18T11:32:58.000Z  3D DGPS  32.648580000 -108.374110000  1577.4 m  2.73 m/s 247.1°  8/11 sats  hdop 1.1`. */
export function formatFix(fix: GnssFix): string {
  const time = fix.time !== undefined ? new Date(fix.time).toISOString() : 'no time'.padEnd(24);
  if (!hasPosition(fix)) {
    const inView = fix.nSat !== undefined ? `  ${fix.nSat} in view` : '';
    return `${time}  no fix${inView}`;
  }
  const parts = [time, `${fix.mode === 3 ? '3D' : '2D'} ${FIX_STATUS_NAMES[fix.status]}`, `${fix.lat.toFixed(9)} ${fix.lon.toFixed(9)}`];
  if (fix.altMSL !== undefined) parts.push(`${fix.altMSL.toFixed(1)} m`);
  if (fix.speed !== undefined) parts.push(`${fix.speed.toFixed(2)} m/s${fix.track !== undefined ? ` ${fix.track.toFixed(1)}°` : ''}`);
  if (fix.uSat !== undefined) parts.push(`${fix.uSat}${fix.nSat !== undefined ? `/${fix.nSat}` : ''} sats`);
  if (fix.hdop !== undefined) parts.push(`hdop ${fix.hdop}`);
  return parts.join('  ');
}

export function registerGnssCommand(program: Command): void {
  program
    .command('gnss')
    .description(
      'A GNSS receiver, one line per fix: from its serial port (--port), from gpsd (--gpsd) or from a recording of its NMEA output (--log); --json prints gpsd TPV objects',
    )
    .option('-p, --port <path>', 'serial port of the receiver, e.g. /dev/ttyUSB1 or /dev/serial/by-id/...', parsePortPath)
    .option('-g, --gpsd <host[:port]>', `gpsd's address, when gpsd owns the receiver (port default ${GPSD_PORT})`, parseGpsdAddress)
    .option('--baud <rate>', 'with --port: the baud rate (default: listen at 9600, 4800, 115200, ... in turn)', parseBaud)
    .option(
      '--rollover-floor <date|off>',
      'with --port: a receiver date before this is the GPS week-number rollover bug and moves forward 1024 weeks (default: the start of the release year; off for a replayed recording)',
      parseRolloverFloor,
    )
    .option('-l, --log <file>', 'a file of NMEA sentences (a recording): its fixes, then exit')
    .option('-j, --json', 'one gpsd TPV object per fix and line')
    .option('-n, --count <n>', 'stop after this many fixes', parsePositiveInteger)
    .option('-d, --duration <s>', 'with --port or --gpsd: stop after this many seconds', parsePositiveInteger)
    .action(async (opts: GnssCliOptions) => {
      if ((opts.port === undefined) === (opts.log === undefined)) {
        throw new Error(
          opts.port === undefined ? 'say where the receiver is: --port <serial port> or --log <file of NMEA sentences>' : '--port and --log exclude each other',
        );
      }
      if (opts.port === undefined && (opts.baud !== undefined || opts.duration !== undefined || opts.rolloverFloor !== undefined)) {
        throw new Error('--baud, --duration and --rollover-floor go with --port');
      }
      const stop = new AbortController();
      let printed = 0;
      const print = (fix: GnssFix): void => {
        if (stop.signal.aborted) return;
        process.stdout.write(`${opts.json ? jsonForTerminal(JSON.stringify(toTpv(fix))) : forTerminal(formatFix(fix))}\n`);
        printed++;
        if (opts.count !== undefined && printed >= opts.count) stop.abort();
      };

      if (opts.log !== undefined) {
        let bytes: Buffer;
        try {
          bytes = await readFile(opts.log);
        } catch (err) {
          throw new Error(`${opts.log}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
        }
        // A recording keeps its own dates: no week-rollover correction.
        const assembler = new FixAssembler({ onFix: print, dateFloor: null });
        const reader = new NmeaReader((sentence) => assembler.push(sentence));
        reader.write(bytes);
        reader.end();
        assembler.flush();
        const refused = Object.values(reader.counters.problems).reduce((a, b) => a + b, 0);
        process.stderr.write(
          `${reader.counters.sentences} sentences, ${assembler.counters.fixes} fixes${refused > 0 ? `, ${refused} lines refused (checksum, noise)` : ''}\n`,
        );
        return;
      }

      const onState = (state: string, detail: { reason?: string; baudRate?: number; version?: string }): void => {
        const why =
          detail.reason !== undefined
            ? `: ${detail.reason}`
            : detail.baudRate !== undefined
              ? ` at ${detail.baudRate} baud`
              : detail.version !== undefined
                ? ` (gpsd ${detail.version})`
                : '';
        process.stderr.write(`${forTerminal(`${state}${why}`)}\n`);
      };
      const receiver =
        opts.gpsd !== undefined
          ? new GpsdClient({ ...opts.gpsd, onFix: print, onState })
          : new SerialGnssReceiver({
              path: opts.port!,
              ...(opts.baud !== undefined ? { baudRate: opts.baud } : {}),
              ...(opts.rolloverFloor !== undefined ? { dateFloor: opts.rolloverFloor } : {}),
              onFix: print,
              onState,
            });
      const onSignal = (): void => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const timer = opts.duration !== undefined ? setTimeout(() => stop.abort(), opts.duration * 1000) : undefined;
      try {
        await receiver.run(stop.signal);
      } finally {
        clearTimeout(timer);
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
      }
    });
}
