/**
 * `telematics-ops fleet`: one row per car from what the broker retains (the status, the latest health report), read
 * as the backend (src/fleet/fleet-view.ts). A readable table by default, fitted to the terminal's width (the least
 * important columns dropped first, the last error cut to what is left); `--json` one document `{"cars": [...]}` for
 * scripts. Filters: `--online`, `--offline`, `--device PATTERN` (`*` any run of characters), `--cert-expiring DAYS`,
 * `--outbox-over N`, `--agent-version V` (`--version` is the program's own: it prints telematics-ops's version). Ends with a count line (`40 cars: 38 online, 2 offline`).
 *
 * Failure: bad options are a usage error naming the option (exit 1); a broker that cannot be reached or refuses the
 * subscription is one line and exit 1. A car's message off the contract is shown in its row (`NOT IN CONTRACT`), not
 * fatal. Car-sent text (device IDs, versions, error messages) is escaped for the terminal (src/text/terminal-text.ts).
 */
import { Option, InvalidArgumentError, type Command } from 'commander';
import { connectBackend } from '../commands/operator-client.js';
import { collectFleet, countLine, filterCars, fleetCars, type FleetCar, type FleetFilter } from '../fleet/fleet-view.js';
import { cutToColumns, forTerminal, jsonForTerminal, terminalColumns } from '../text/terminal-text.js';
import { BACKEND_PORT, connectionOf, withBrokerOptions } from './ops.js';

export interface FleetOptions {
  json?: boolean;
  online?: boolean;
  offline?: boolean;
  device?: string;
  certExpiring?: number;
  outboxOver?: number;
  agentVersion?: string;
  wait: number;
  broker?: string;
  cert?: string;
  key?: string;
  ca?: string;
  certsDir?: string;
}

function positiveSeconds(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return value;
}

function wholeNumber(text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isSafeInteger(value) || value < 0) throw new InvalidArgumentError('expected a whole number, 0 or more');
  return value;
}

function days(text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < 0) throw new InvalidArgumentError('expected a number of days, 0 or more');
  return value;
}

function pattern(text: string): string {
  if (text === '') throw new InvalidArgumentError('expected a device ID, or a pattern with * (car-*)');
  return text;
}

/** Adds `fleet` to the telematics-ops program. */
export function addFleetCommand(program: Command, out: (line: string) => void): void {
  withBrokerOptions(
    program
      .command('fleet')
      .description(
        'every car the backend sees: online or offline since when and why, link, outbox, certificate, agent version, last error (from the retained status and health)',
      )
      .option('-j, --json', 'one JSON document {"cars": [...]} for scripts')
      .addOption(new Option('--online', 'only the cars online').conflicts('offline'))
      .option('--offline', 'only the cars offline')
      .option('-d, --device <pattern>', 'only these cars: a device ID, or a pattern where * is any run of characters (car-*)', pattern)
      .option('--cert-expiring <days>', 'only the cars whose certificate expires within this many days', days)
      .option('--outbox-over <n>', 'only the cars with more than this many messages waiting in the outbox', wholeNumber)
      .option('--agent-version <v>', 'only the cars running this agent version (as `telematics-agent --version` prints it)')
      .option('--wait <s>', 'how long the broker may take to answer (the view ends as soon as it has sent what it retains)', positiveSeconds, 10),
  )
    .option('--certs-dir <dir>', `development: the PKI \`npm start\` made (certs/dev): the broker mqtts://localhost:${BACKEND_PORT}, backend.crt/.key, ca.crt`)
    .action(async (opts: FleetOptions) => {
      process.exitCode = await fleet(opts, out);
    });
}

/** Reads the fleet and prints it; resolves with the exit code. */
export async function fleet(opts: FleetOptions, out: (line: string) => void, now: () => number = Date.now): Promise<number> {
  const connection = connectionOf(opts, false);
  const client = await connectBackend({ url: connection.broker, certFile: connection.cert, keyFile: connection.key, caFile: connection.ca }).catch(
    (err: unknown) => {
      throw new Error(`cannot connect to ${connection.broker}: ${(err as Error).message}`);
    },
  );
  let cars: FleetCar[];
  try {
    const retained = await collectFleet(client, { waitMs: opts.wait * 1000 });
    cars = filterCars(fleetCars(retained.values(), now()), filterOf(opts));
  } finally {
    await client.endAsync(true).catch(() => undefined);
  }
  if (opts.json) out(jsonForTerminal(JSON.stringify({ cars }, null, 2)));
  else {
    if (cars.length > 0) for (const line of fleetTable(cars, outputWidth(), now())) out(line);
    out(countLine(cars));
  }
  return 0;
}

function filterOf(opts: FleetOptions): FleetFilter {
  return {
    ...(opts.online ? { online: true } : {}),
    ...(opts.offline ? { offline: true } : {}),
    ...(opts.device !== undefined ? { device: opts.device } : {}),
    ...(opts.certExpiring !== undefined ? { certExpiringDays: opts.certExpiring } : {}),
    ...(opts.outboxOver !== undefined ? { outboxOver: opts.outboxOver } : {}),
    ...(opts.agentVersion !== undefined ? { version: opts.agentVersion } : {}),
  };
}

/** The terminal's width; off a terminal `COLUMNS` if set (as ls does), else no limit. */
function outputWidth(): number {
  if (process.stdout.isTTY && process.stdout.columns > 0) return process.stdout.columns;
  const columns = Number(process.env.COLUMNS);
  return Number.isSafeInteger(columns) && columns > 0 ? columns : Infinity;
}

/** A duration as a person reads it: `42 s`, `12 min`, `5 h`, `3 d`. */
export function ageText(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 48 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** A time as `2026-12-07 12:03:04Z` (UTC, to the second). */
export function timeText(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

const NONE = '-';

interface Column {
  header: string;
  cell: (car: FleetCar) => string;
  /** Dropped first when the table is too wide: higher goes first; the device and the state never go. */
  dropRank: number;
  /** The column that takes what width is left (cut, not dropped, while it has at least `minWidth`). */
  flexible?: boolean;
  minWidth?: number;
}

function stateText(car: FleetCar): string {
  if (car.state === 'unknown') return 'unknown (no status)';
  if (car.state === 'online') return car.sinceMs === null ? 'online' : `online since ${timeText(car.sinceMs)}`;
  const since = car.sinceMs === null ? '' : ` since ${timeText(car.sinceMs)}`;
  return `offline${since} (${car.reason ?? 'no reason'})`;
}

function lastErrorText(car: FleetCar, now: number): string {
  const parts = car.problems.map((p) => `NOT IN CONTRACT: ${p}`);
  if (car.lastError) parts.push(`${car.lastError.component}: ${car.lastError.msg} (${ageText((now - car.lastError.ts) / 1000)} ago)`);
  return parts.length > 0 ? parts.join('; ') : NONE;
}

function columns(now: number): Column[] {
  return [
    { header: 'DEVICE', cell: (car) => car.deviceId, dropRank: 0 },
    { header: 'STATE', cell: stateText, dropRank: 0 },
    { header: 'LINK', cell: (car) => (car.link ? `${car.link.state}, heartbeat ${car.link.heartbeatS} s` : NONE), dropRank: 4 },
    {
      header: 'OUTBOX',
      cell: (car) => (car.outbox ? `${car.outbox.messages}${car.outbox.oldestAgeS === null ? '' : `, oldest ${ageText(car.outbox.oldestAgeS)}`}` : NONE),
      dropRank: 1,
    },
    {
      header: 'CERT',
      cell: (car) => (car.certificateDaysLeft === null ? NONE : car.certificateDaysLeft < 0 ? 'expired' : `${Math.floor(car.certificateDaysLeft)} d`),
      dropRank: 3,
    },
    { header: 'VERSION', cell: (car) => car.version ?? NONE, dropRank: 6 },
    { header: 'REPORT', cell: (car) => (car.reportAgeS === null ? NONE : `${ageText(car.reportAgeS)} ago`), dropRank: 5 },
    { header: 'LAST ERROR', cell: (car) => lastErrorText(car, now), dropRank: 2, flexible: true, minWidth: 24 },
  ];
}

const GAP = '  ';

/**
 * The table's lines (header first) fitted to `width` terminal columns: the flexible column (the last error) is cut to
 * what is left, down to its minimum; below that, columns are dropped by rank (version, report age, link, certificate,
 * the last error, outbox); a line still too wide (a very long device ID) is cut. Every cell is escaped first.
 */
export function fleetTable(cars: readonly FleetCar[], width: number, now: number): string[] {
  const all = columns(now).map((column) => {
    const cells = cars.map((car) => forTerminal(column.cell(car)));
    const natural = Math.max(terminalColumns(column.header), ...cells.map(terminalColumns));
    return { column, cells, natural };
  });
  let shown = all;
  const fits = (): Map<(typeof all)[number], number> | null => {
    const gaps = GAP.length * (shown.length - 1);
    const fixed = shown.filter((c) => !c.column.flexible).reduce((sum, c) => sum + c.natural, 0);
    const widths = new Map(shown.map((c) => [c, c.natural]));
    if (fixed + gaps > width) return null;
    for (const c of shown) {
      if (!c.column.flexible) continue;
      const room = width - fixed - gaps;
      if (room < Math.min(c.natural, c.column.minWidth ?? 0)) return null;
      widths.set(c, Math.min(c.natural, room));
    }
    return widths;
  };
  let widths = fits();
  while (widths === null) {
    const droppable = shown.filter((c) => c.column.dropRank > 0);
    if (droppable.length === 0) break;
    const drop = droppable.reduce((a, b) => (b.column.dropRank > a.column.dropRank ? b : a));
    shown = shown.filter((c) => c !== drop);
    widths = fits();
  }
  const widthOf = (c: (typeof all)[number]): number => widths?.get(c) ?? c.natural;
  const line = (texts: string[]): string => {
    const padded = texts.map((text, i) => {
      const c = shown[i]!;
      const w = widthOf(c);
      const cut = terminalColumns(text) > w ? `${cutToColumns(text, w - 1)}…` : text;
      return i === texts.length - 1 ? cut : cut + ' '.repeat(Math.max(0, w - terminalColumns(cut)));
    });
    const joined = padded.join(GAP);
    return terminalColumns(joined) > width ? `${cutToColumns(joined, width - 1)}…` : joined;
  };
  return [line(shown.map((c) => c.column.header)), ...cars.map((_, row) => line(shown.map((c) => c.cells[row]!)))];
}
