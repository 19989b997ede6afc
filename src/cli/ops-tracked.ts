/**
 * `telematics-ops send`, `sign`, `status`, `wait` and `history`: commands to one car or many, tracked in the local
 * command journal (src/fleet/command-journal.ts; docs/fleet-operations.md).
 *
 *   send -d ID [-d ID ...] [--devices-file FILE] [--where FILTER ...] -c NAME [-p JSON] [--wait] [--concurrency N] [--journal FILE | --no-journal]
 *   sign -d ID -c NAME [-p JSON] [--expires S] [--operator-cert F --operator-key F | --certs-dir DIR] [--out FILE]
 *   status ID [--json]          wait ID [--timeout S]          history [--device ID] [--limit N] [--json]
 *
 * `--where` picks the cars from the fleet view (src/fleet/fleet-view.ts) with the filters of `fleet`; beside a list it
 * narrows the list (a filter never widens a rollout beyond the cars named).
 *
 * One car: its results as they come (as `send` always printed them), then the line of a command without a final
 * result (queued, no such car, no result). Many cars: on a terminal a progress line redrawn in place; in a pipe one
 * line per car's outcome; then a summary by state. The exit code is the worst car's (EXIT_RANK).
 *
 * Failure: bad input (a device ID, a devices file's line, JSON params, an unreadable key) is a one-line usage error
 * before anything is sent; a journal that cannot be opened is a one-line error naming the file and nothing is sent
 * unless `--no-journal`; a car that cannot be sent to ends as ERROR (exit 1) and the others go on.
 */
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { COMMAND_NAME_PATTERN, signCommand, type Signer } from '../commands/envelope.js';
import { OperatorClient } from '../commands/operator-client.js';
import type { CommandResult } from '../commands/result.js';
import { pendingState, readCarPresence } from '../fleet/car-presence.js';
import { CommandJournal, JournalError, journalPath, type JournalEntry, type JournalState, type JournalStep } from '../fleet/command-journal.js';
import { rollOut, type CarOutcome, type CarState } from '../fleet/command-rollout.js';
import { selectCars, type FleetFilter } from '../fleet/fleet-view.js';
import { DEV_OPERATOR } from '../pki/command-pki.js';
import { deviceIdProblem } from '../pki/device-id.js';
import { forTerminal, jsonForTerminal } from '../text/terminal-text.js';
import { connectionOf, DEV_BROKER, describeResult, EXIT, positiveCount, positiveSeconds, readable, withBrokerOptions, type ConnectionSource } from './ops.js';

/** In-flight commands of `send` by default. */
export const DEFAULT_CONCURRENCY = 20;

/** The exit code of each state a car's command can end in. */
export function exitCodeOf(state: CarState | JournalState): number {
  switch (state) {
    case 'SUCCEEDED':
    case 'SENT':
      return EXIT.succeeded;
    case 'REJECTED':
      return EXIT.rejected;
    case 'FAILED':
      return EXIT.failed;
    case 'QUEUED':
    case 'UNDELIVERED':
      return EXIT.queued;
    case 'NO_SUCH_CAR':
      return EXIT.noSuchCar;
    case 'ERROR':
      return EXIT.usage;
    default:
      // TIMED_OUT, NO_RESULT, and a command still ACCEPTED or IN_PROGRESS when the wait ended.
      return EXIT.timedOut;
  }
}

/**
 * The worst first: a car that could not be sent to, one that does not exist (the list is wrong), one that failed
 * while running, one refused, one whose outcome is not known, one the broker still holds, then success.
 */
const EXIT_RANK = [1, 6, 3, 2, 4, 5, 0];

/** The exit code of the worst outcome. */
export function worstExitCode(codes: readonly number[]): number {
  let worst = EXIT.succeeded as number;
  for (const code of codes) if (EXIT_RANK.indexOf(code) < EXIT_RANK.indexOf(worst)) worst = code;
  return worst;
}

/** The states in the order the progress line and the summary name them. */
const STATE_ORDER: readonly CarState[] = [
  'SUCCEEDED',
  'SENT',
  'REJECTED',
  'FAILED',
  'TIMED_OUT',
  'NO_RESULT',
  'QUEUED',
  'UNDELIVERED',
  'NO_SUCH_CAR',
  'ERROR',
  'ACCEPTED',
  'IN_PROGRESS',
];

const STATE_WORDS: Record<CarState, string> = {
  SUCCEEDED: 'succeeded',
  SENT: 'sent to an online car',
  REJECTED: 'rejected',
  FAILED: 'failed',
  TIMED_OUT: 'timed out',
  NO_RESULT: 'no result',
  QUEUED: 'queued',
  UNDELIVERED: 'undelivered',
  NO_SUCH_CAR: 'no such car',
  ERROR: 'not sent (error)',
  ACCEPTED: 'accepted',
  IN_PROGRESS: 'in progress',
};

/** `12/40 sent, 30 succeeded, 2 failed, 8 queued`: how many were published, and the outcomes so far by state. */
export function progressLine(total: number, published: number, byState: ReadonlyMap<CarState, number>): string {
  const parts = STATE_ORDER.filter((s) => (byState.get(s) ?? 0) > 0).map((s) => `${byState.get(s)} ${STATE_WORDS[s]}`);
  return [`${published}/${total} sent`, ...parts].join(', ');
}

/** The IDs of a devices file: one per line, `#` starts a comment, blank lines skipped; each checked, naming the line. */
export function readDevicesFile(file: string): string[] {
  const ids: string[] = [];
  readable(file, '--devices-file')
    .split('\n')
    .forEach((raw, index) => {
      const id = raw.replace(/#.*/, '').trim();
      if (id === '') return;
      const problem = deviceIdProblem(id);
      if (problem !== null) throw new InvalidArgumentError(`--devices-file ${file} line ${index + 1}: ${JSON.stringify(id)} cannot be a device ID: ${problem}`);
      ids.push(id);
    });
  return ids;
}

/** The terms of `send --where`: each is a filter of `telematics-ops fleet`, named as its option without the dashes. */
export const WHERE_TERMS = ['online', 'offline', 'device=PATTERN', 'cert-expiring=DAYS', 'outbox-over=N', 'agent-version=V'] as const;

/**
 * Adds one `--where` term to the filter so far (commander calls it for each, in order); a term that is not one of
 * WHERE_TERMS, a value that is not a number where one is due, or `online` with `offline` is a usage error naming it.
 */
export function whereTerm(term: string, filter: FleetFilter = {}): FleetFilter {
  const [, name, value] = /^([a-z-]+)(?:=(.*))?$/s.exec(term) ?? [];
  const bad = (why: string): never => {
    throw new InvalidArgumentError(`--where ${JSON.stringify(term)}: ${why} (one of ${WHERE_TERMS.join(', ')})`);
  };
  const count = (min: number): number => {
    if (value === undefined || !/^\d+(\.\d+)?$/.test(value) || Number(value) < min) bad(`expected ${name}=<a number of at least ${min}>`);
    return Number(value);
  };
  const next: FleetFilter = { ...filter };
  switch (name) {
    case 'online':
    case 'offline':
      if (value !== undefined) bad(`${name} takes no value`);
      if (filter[name === 'online' ? 'offline' : 'online'] === true) bad('a car is not both online and offline');
      next[name] = true;
      break;
    case 'device':
      if (value === undefined || value === '') bad('expected device=<a device ID, or a pattern with *>');
      next.device = value;
      break;
    case 'cert-expiring':
      next.certExpiringDays = count(0);
      break;
    case 'outbox-over':
      next.outboxOver = Math.floor(count(0));
      break;
    case 'agent-version':
      if (value === undefined || value === '') bad('expected agent-version=<a version>');
      next.version = value;
      break;
    default:
      bad('not a filter');
  }
  return next;
}

/** The operator certificate's CN, recorded with each command (undefined when the certificate does not parse). */
function operatorName(certPem: string): string | undefined {
  try {
    return /^CN=(.*)$/m.exec(new X509Certificate(certPem).subject)?.[1];
  } catch {
    return undefined;
  }
}

function parseParams(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`--params is not JSON: ${(err as Error).message}`);
  }
}

function checkCommandName(name: string): void {
  if (!COMMAND_NAME_PATTERN.test(name)) throw new InvalidArgumentError(`${JSON.stringify(name)} is not a command name`);
}

/**
 * Opens the journal the options name; undefined with --no-journal. Its failure is the one-line JournalError, which
 * for a command that sends or signs says how to go on without it.
 */
function openJournal(option: string | false | undefined, untracked?: 'send' | 'sign'): CommandJournal | undefined {
  if (option === false) return undefined;
  try {
    return CommandJournal.open(journalPath(option));
  } catch (err) {
    if (untracked === undefined || !(err instanceof JournalError)) throw err;
    throw new JournalError(`${err.message}; nothing was sent (--no-journal ${untracked === 'send' ? 'sends' : 'signs'} untracked)`);
  }
}

const iso = (ms: number): string => new Date(ms).toISOString();

interface JournalOption {
  /** A file, false for --no-journal, undefined for the default. */
  journal?: string | false;
}

interface SendOptions extends ConnectionSource, JournalOption {
  device: string[];
  devicesFile?: string;
  /** The --where terms as given, and the filter they make together; undefined when none was given. */
  where?: { terms: string[]; filter: FleetFilter };
  command: string;
  params: string;
  wait?: boolean;
  json?: boolean;
  timeout: number;
  expires: number;
  runTimeout?: number;
  concurrency: number;
}

/** The line of a car's outcome, in a pipe (many cars) or at the end of one car's results. */
function outcomeLine(outcome: CarOutcome, json: boolean, withDevice: boolean): string {
  const { final } = outcome;
  if (json) {
    return jsonForTerminal(
      JSON.stringify({
        ...(withDevice ? { device: outcome.deviceId } : {}),
        id: outcome.id,
        status: outcome.state,
        ...(final?.reason !== undefined ? { reason: final.reason } : {}),
        ...(final?.message !== undefined ? { message: final.message } : outcome.text !== undefined ? { message: outcome.text } : {}),
      }),
    );
  }
  const what = final ? `${final.status}${final.reason ? ` ${final.reason}` : ''}${final.message ? `: ${final.message}` : ''}` : (outcome.text ?? outcome.state);
  return forTerminal(`${withDevice ? `${outcome.deviceId} ` : ''}${outcome.id} ${what}`);
}

async function send(opts: SendOptions, out: (line: string) => void): Promise<number> {
  checkCommandName(opts.command);
  const listed = [...opts.device, ...(opts.devicesFile !== undefined ? readDevicesFile(opts.devicesFile) : [])];
  if (listed.length === 0 && opts.where === undefined)
    throw new InvalidArgumentError('no car: give --device ID (repeatable), --devices-file FILE or --where FILTER');
  for (const id of opts.device) {
    // It becomes a topic level: a wildcard or a reserved name would send the command somewhere no car listens.
    const problem = deviceIdProblem(id);
    if (problem !== null) throw new InvalidArgumentError(`--device ${JSON.stringify(id)} cannot be a device ID: ${problem}`);
  }
  // A car listed twice gets the command once.
  let cars = [...new Set(listed)];
  const params = parseParams(opts.params);
  const connection = connectionOf(opts);
  const signer: Signer = { certPem: readable(connection.operatorCert, '--operator-cert'), keyPem: readable(connection.operatorKey, '--operator-key') };
  const journal = openJournal(opts.journal, 'send');
  try {
    const client = await OperatorClient.connect({ url: connection.broker, certFile: connection.cert, keyFile: connection.key, caFile: connection.ca }).catch(
      (err: unknown) => {
        throw new Error(`cannot connect to ${connection.broker}: ${(err as Error).message}`);
      },
    );
    try {
      if (opts.where !== undefined) {
        cars = await carsWhere(client, opts.where.filter, opts.where.terms, cars, listed.length > 0);
        if (cars.length === 0) return EXIT.noSuchCar;
      }
      return cars.length === 1
        ? await sendOne(client, cars[0]!, opts, params, signer, journal, connection.broker, out)
        : await sendMany(client, cars, opts, params, signer, journal, connection.broker, out);
    } finally {
      await client.close();
    }
  } finally {
    journal?.close();
  }
}

/**
 * The cars `--where` selects from the fleet view, or with a list, the listed cars it selects; says on stderr what it
 * left out (the list) or that it found none.
 */
async function carsWhere(client: OperatorClient, filter: FleetFilter, terms: readonly string[], listed: string[], withList: boolean): Promise<string[]> {
  const selected = await selectCars(client.client, filter);
  const where = terms.map((t) => `--where ${t}`).join(' ');
  if (!withList) {
    if (selected.length === 0) process.stderr.write(forTerminal(`no car of the fleet view matches ${where}: nothing sent`) + '\n');
    return selected;
  }
  const matching = new Set(selected);
  const kept = listed.filter((id) => matching.has(id));
  if (kept.length < listed.length) {
    const left = listed.length - kept.length;
    process.stderr.write(
      forTerminal(`${left} of the ${listed.length} listed cars ${left === 1 ? 'does' : 'do'} not match ${where}: not sent to ${left === 1 ? 'it' : 'them'}`) +
        '\n',
    );
  }
  return kept;
}

function rolloutRequest(opts: SendOptions, params: unknown): Parameters<typeof rollOut>[2] {
  return {
    name: opts.command,
    params,
    expiresInMs: Math.round(opts.expires * 1000),
    ...(opts.runTimeout !== undefined ? { runTimeoutMs: Math.round(opts.runTimeout * 1000) } : {}),
    wait: opts.wait === true,
    timeoutMs: opts.timeout * 1000,
    concurrency: opts.concurrency,
  };
}

const journalWarning = (): ((err: Error) => void) => {
  let said = false;
  return (err) => {
    if (said) return;
    said = true;
    process.stderr.write(`telematics-ops: ${forTerminal(err.message)} (results are still followed, not recorded)\n`);
  };
};

/** One car: each result as it comes, then the line of a command without a final result. */
async function sendOne(
  client: OperatorClient,
  deviceId: string,
  opts: SendOptions,
  params: unknown,
  signer: Signer,
  journal: CommandJournal | undefined,
  broker: string,
  out: (line: string) => void,
): Promise<number> {
  const [outcome] = await rollOut(client, [deviceId], rolloutRequest(opts, params), signer, {
    ...(journal ? { journal } : {}),
    broker,
    operator: operatorName(signer.certPem),
    onResult: (_device, result) => out(opts.json ? jsonForTerminal(JSON.stringify(result)) : describeResult(result)),
    onJournalError: journalWarning(),
  });
  if (outcome!.state === 'ERROR') throw new Error(outcome!.text ?? 'cannot send');
  if (!outcome!.final) out(outcomeLine(outcome!, opts.json === true, false));
  return exitCodeOf(outcome!.state);
}

/** Many cars: a progress line on a terminal, one line per car in a pipe, then the summary; the worst car's code. */
async function sendMany(
  client: OperatorClient,
  cars: readonly string[],
  opts: SendOptions,
  params: unknown,
  signer: Signer,
  journal: CommandJournal | undefined,
  broker: string,
  out: (line: string) => void,
): Promise<number> {
  const terminal = process.stdout.isTTY && opts.json !== true;
  const byState = new Map<CarState, number>();
  let published = 0;
  const draw = (): void => {
    if (terminal) process.stdout.write(`\r\x1b[K${progressLine(cars.length, published, byState)}`);
  };
  draw();
  const outcomes = await rollOut(client, cars, rolloutRequest(opts, params), signer, {
    ...(journal ? { journal } : {}),
    broker,
    operator: operatorName(signer.certPem),
    onPublished: () => {
      published++;
      draw();
    },
    onOutcome: (outcome) => {
      byState.set(outcome.state, (byState.get(outcome.state) ?? 0) + 1);
      // On a terminal the cars that did not succeed are listed above the progress line; in a pipe, every car.
      if (!terminal) out(outcomeLine(outcome, opts.json === true, true));
      else if (exitCodeOf(outcome.state) !== EXIT.succeeded) process.stdout.write(`\r\x1b[K${outcomeLine(outcome, false, true)}\n`);
      draw();
    },
    onJournalError: journalWarning(),
  });
  if (terminal) process.stdout.write('\r\x1b[K');
  const summary = STATE_ORDER.filter((s) => (byState.get(s) ?? 0) > 0).map((s) => `${byState.get(s)} ${STATE_WORDS[s]}`);
  const code = worstExitCode(outcomes.map((o) => exitCodeOf(o.state)));
  const line = `${cars.length} cars: ${summary.join(', ')} (exit ${code})`;
  if (opts.json) process.stderr.write(`${line}\n`);
  else out(line);
  return code;
}

interface SignOptions extends JournalOption {
  device: string;
  command: string;
  params: string;
  expires: number;
  runTimeout?: number;
  operatorCert?: string;
  operatorKey?: string;
  certsDir?: string;
  out?: string;
}

/** `sign`: the wire payload `send` would publish, for another tool; journaled as signed, not sent. */
function sign(opts: SignOptions, out: (line: string) => void): number {
  checkCommandName(opts.command);
  const problem = deviceIdProblem(opts.device);
  if (problem !== null) throw new InvalidArgumentError(`--device ${JSON.stringify(opts.device)} cannot be a device ID: ${problem}`);
  const params = parseParams(opts.params);
  const certFile = opts.operatorCert ?? (opts.certsDir !== undefined ? path.join(opts.certsDir, `${DEV_OPERATOR}.crt`) : undefined);
  const keyFile = opts.operatorKey ?? (opts.certsDir !== undefined ? path.join(opts.certsDir, `${DEV_OPERATOR}.key`) : undefined);
  if (certFile === undefined || keyFile === undefined) {
    throw new InvalidArgumentError(
      `missing ${[certFile ?? '--operator-cert', keyFile ?? '--operator-key'].filter((f) => f.startsWith('--')).join(', ')} (or --certs-dir)`,
    );
  }
  const signer: Signer = { certPem: readable(certFile, '--operator-cert'), keyPem: readable(keyFile, '--operator-key') };
  const journal = openJournal(opts.journal, 'sign');
  try {
    const issuedAt = Date.now();
    const expiresAt = issuedAt + Math.round(opts.expires * 1000);
    const request = {
      deviceId: opts.device,
      name: opts.command,
      params,
      issuedAt,
      expiresAt,
      ...(opts.runTimeout !== undefined ? { timeoutMs: Math.round(opts.runTimeout * 1000) } : {}),
    };
    const { envelope, payload } = signCommand(request, signer);
    journal?.recordCommand({ ...request, id: envelope.id, operator: operatorName(signer.certPem), broker: undefined, expiresAt }, 'SIGNED');
    if (opts.out !== undefined) {
      try {
        writeFileSync(opts.out, payload, { mode: 0o600 });
      } catch (err) {
        throw new Error(`--out ${opts.out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    } else out(payload);
    process.stderr.write(
      `signed ${envelope.id}: ${opts.command} for ${opts.device}, expires at ${iso(expiresAt)}; publish it (QoS 1) to vehicles/${opts.device}/commands/${opts.command}` +
        `${journal ? `; \`telematics-ops wait ${envelope.id}\` follows it` : ''}\n`,
    );
    return EXIT.succeeded;
  } finally {
    journal?.close();
  }
}

function stepLine(step: JournalStep): string {
  const who = step.source === 'ops' ? ' (telematics-ops)' : '';
  const reason = step.reason ? ` ${step.reason}` : '';
  const message = step.message ? `: ${step.message}` : '';
  return forTerminal(`${iso(step.ts)}  ${step.status}${reason}${message}${who}`);
}

/** `status`: the journal's view of one command. */
export function describeEntry(entry: JournalEntry): string {
  const sent = entry.broker === undefined ? 'signed, not sent by telematics-ops' : `sent through ${entry.broker}`;
  const lines = [
    forTerminal(`command ${entry.id}: ${entry.name} to ${entry.deviceId}`),
    forTerminal(`  issued    ${iso(entry.issuedAt)}${entry.operator !== undefined ? ` by ${entry.operator}` : ''}, ${sent}`),
    `  expires   ${entry.expiresAt === undefined ? 'never (the car caps it at commands.maxLifetimeS)' : iso(entry.expiresAt)}`,
    jsonForTerminal(`  params    ${JSON.stringify(entry.params)}`),
    '  lifecycle',
    ...entry.steps.map((step) => `    ${stepLine(step)}`),
  ];
  if (entry.final?.detail !== undefined && entry.final.status !== 'ACCEPTED') lines.push(jsonForTerminal(`  detail    ${JSON.stringify(entry.final.detail)}`));
  lines.push(`  outcome   ${entry.final ? entry.final.status : `${entry.state} (no final result yet)`}`);
  return lines.join('\n');
}

function journalEntry(journal: CommandJournal, id: string): JournalEntry {
  const entry = journal.get(id);
  if (!entry) throw new InvalidArgumentError(`no command ${JSON.stringify(id)} in the command journal ${journal.file}`);
  return entry;
}

interface WaitOptions extends ConnectionSource, JournalOption {
  timeout: number;
  json?: boolean;
}

/** `wait`: follows a journaled command to its final result. */
async function waitFor(id: string, opts: WaitOptions, out: (line: string) => void): Promise<number> {
  if (opts.journal === false) throw new InvalidArgumentError('wait reads the command journal: --no-journal is not for wait');
  const journal = openJournal(opts.journal)!;
  try {
    const entry = journalEntry(journal, id);
    const print = (result: CommandResult): void => out(opts.json ? jsonForTerminal(JSON.stringify(result)) : describeResult(result));
    if (entry.final) {
      out(opts.json ? jsonForTerminal(JSON.stringify({ id, ...entry.final })) : stepLine(entry.final));
      return exitCodeOf(entry.final.status);
    }
    const connection = connectionOf({ ...opts, ...(opts.broker === undefined && entry.broker !== undefined ? { broker: entry.broker } : {}) }, false);
    const client = await OperatorClient.connect({ url: connection.broker, certFile: connection.cert, keyFile: connection.key, caFile: connection.ca }).catch(
      (err: unknown) => {
        throw new Error(`cannot connect to ${connection.broker}: ${(err as Error).message}`);
      },
    );
    try {
      const warn = journalWarning();
      const outcome = await client.awaitResults(entry.deviceId, id, {
        timeoutMs: opts.timeout * 1000,
        onListening: () =>
          process.stderr.write(forTerminal(`waiting for ${id} (${entry.name} to ${entry.deviceId}) on ${connection.broker}, up to ${opts.timeout} s`) + '\n'),
        onResult: (result) => {
          try {
            journal.recordResult(id, result);
          } catch (err) {
            warn(err as Error);
          }
          print(result);
        },
      });
      if (outcome.final) return exitCodeOf(outcome.final.status);
      const pending = pendingState(await readCarPresence(client.client, entry.deviceId), entry, { timeoutS: opts.timeout });
      try {
        journal.recordState(id, entry.deviceId, pending.state, pending.text);
      } catch (err) {
        warn(err as Error);
      }
      out(outcomeLine({ deviceId: entry.deviceId, id, state: pending.state, text: pending.text }, opts.json === true, false));
      return exitCodeOf(pending.state);
    } finally {
      await client.close();
    }
  } finally {
    journal.close();
  }
}

function historyLines(entries: readonly JournalEntry[]): string[] {
  const rows = entries.map((e) => [e.id, e.deviceId, e.name, iso(e.issuedAt), e.state]);
  const header = ['ID', 'DEVICE', 'COMMAND', 'SENT', 'STATE'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => forTerminal(r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')));
}

const journalOptions = (command: Command): Command =>
  command
    .option('--journal <file>', 'the command journal (default $TELEMATICS_OPS_JOURNAL, else $XDG_STATE_HOME/telematics-ops/commands.db)')
    .addOption(new Option('--no-journal', 'do not record this in the command journal'));

const operatorOptions = (command: Command): Command =>
  command.option('--operator-cert <file>', 'your operator certificate (from the command CA)').option('--operator-key <file>', 'its private key, which signs');

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** Adds `send`, `sign`, `status`, `wait` and `history` to the ops program. */
export function addTrackedCommands(program: Command, out: (line: string) => void): void {
  const sendCommand = withBrokerOptions(
    program
      .command('send')
      .description('sign a command, publish it to one car or many, journal it, and (with --wait) follow each to its result')
      .option('-d, --device <id>', 'a vehicle (its device ID); repeat it for several', collect, [])
      .option('--devices-file <file>', 'the vehicles, one device ID per line (# starts a comment)')
      .option(
        '--where <filter>',
        `the cars of the fleet view that pass this filter of \`fleet\` (repeatable, all must hold; with a list, only the listed cars that pass): ${WHERE_TERMS.join(', ')}`,
        (term: string, previous: SendOptions['where']) => ({ terms: [...(previous?.terms ?? []), term], filter: whereTerm(term, previous?.filter) }),
      )
      .requiredOption('-c, --command <name>', 'the command, e.g. ping, getStatus, readDtcs (telematics-ops commands lists them)')
      .option('-p, --params <json>', 'its parameters, a JSON object', '{}')
      .option('-w, --wait', 'follow the lifecycle until SUCCEEDED, FAILED, TIMED_OUT or REJECTED')
      .option('-j, --json', 'one JSON result per line')
      .option('--timeout <s>', 'with --wait: how long to wait for the final result', positiveSeconds, 60)
      .option('--expires <s>', "each car's command expires this long after it is sent (an offline car gets it only until then)", positiveSeconds, 300)
      .option('--run-timeout <s>', "the car's timeout for running it (default: the command's own)", positiveSeconds)
      .option('--concurrency <n>', 'commands in flight at once (many cars)', positiveCount, DEFAULT_CONCURRENCY),
  );
  journalOptions(operatorOptions(sendCommand))
    .option(
      '--certs-dir <dir>',
      `development: the PKI \`npm start\` made (certs/dev) gives what is not set above: the broker ${DEV_BROKER} (the ` +
        `development broker's backend listener), backend.crt/.key, ca.crt, ${DEV_OPERATOR}.crt/.key`,
    )
    .action(async (opts: SendOptions) => {
      process.exitCode = await send(opts, out);
    });
  journalOptions(
    operatorOptions(
      program
        .command('sign')
        .description('write the signed payload `send` would publish (for mosquitto_pub or a backend service), and journal it')
        .requiredOption('-d, --device <id>', 'the vehicle (its device ID)')
        .requiredOption('-c, --command <name>', 'the command')
        .option('-p, --params <json>', 'its parameters, a JSON object', '{}')
        .option('--expires <s>', 'the command expires this long after now', positiveSeconds, 300)
        .option('--run-timeout <s>', "the car's timeout for running it (default: the command's own)", positiveSeconds),
    ),
  )
    .option('--certs-dir <dir>', `development: ${DEV_OPERATOR}.crt/.key from the PKI \`npm start\` made (certs/dev)`)
    .option('-o, --out <file>', 'write the payload to this file (exactly, made 0600) instead of stdout')
    .action((opts: SignOptions) => {
      process.exitCode = sign(opts, out);
    });
  journalOptions(
    program
      .command('status')
      .description('what the command journal knows of one command: device, name, when sent, its lifecycle so far, its outcome')
      .argument('<id>', 'the command ID (send and history print it)')
      .option('-j, --json', 'the journal entry as JSON'),
  ).action((id: string, opts: JournalOption & { json?: boolean }) => {
    if (opts.journal === false) throw new InvalidArgumentError('status reads the command journal: --no-journal is not for status');
    const journal = openJournal(opts.journal)!;
    try {
      const entry = journalEntry(journal, id);
      out(opts.json ? jsonForTerminal(JSON.stringify(entry, null, 2)) : describeEntry(entry));
    } finally {
      journal.close();
    }
  });
  journalOptions(
    withBrokerOptions(
      program
        .command('wait')
        .description('follow a journaled command to its final result (exit codes as send --wait); the broker is the one it was sent through unless given')
        .argument('<id>', 'the command ID')
        .option('--timeout <s>', 'how long to wait for the final result', positiveSeconds, 60)
        .option('-j, --json', 'one JSON result per line'),
    ),
  )
    .option('--certs-dir <dir>', `development: the PKI \`npm start\` made (certs/dev): the broker ${DEV_BROKER}, backend.crt/.key, ca.crt`)
    .action(async (id: string, opts: WaitOptions) => {
      process.exitCode = await waitFor(id, opts, out);
    });
  journalOptions(
    program
      .command('history')
      .description('the commands in the journal, newest first: ID, device, command, when sent, state')
      .option('-d, --device <id>', 'only this vehicle')
      .option('-n, --limit <n>', 'at most this many', positiveCount, 20)
      .option('-j, --json', 'one JSON object per line'),
  ).action((opts: JournalOption & { device?: string; limit: number; json?: boolean }) => {
    if (opts.journal === false) throw new InvalidArgumentError('history reads the command journal: --no-journal is not for history');
    const journal = openJournal(opts.journal)!;
    try {
      const entries = journal.history({ limit: opts.limit, ...(opts.device !== undefined ? { deviceId: opts.device } : {}) });
      if (opts.json) {
        for (const e of entries)
          out(
            jsonForTerminal(JSON.stringify({ id: e.id, deviceId: e.deviceId, command: e.name, issuedAt: e.issuedAt, state: e.state, expiresAt: e.expiresAt })),
          );
      } else if (entries.length === 0) out(`no commands in ${journal.file}${opts.device !== undefined ? ` for ${opts.device}` : ''}`);
      else for (const line of historyLines(entries)) out(line);
    } finally {
      journal.close();
    }
  });
}
