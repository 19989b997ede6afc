#!/usr/bin/env node
/**
 * `telematics-ops`: the fleet operator's tool for remote commands, and for watching what the cars publish (docs/commands.md).
 *
 *   telematics-ops commands [--json]                      the commands a car understands, their parameters and timeouts
 *   telematics-ops send --device ID --command NAME [--params JSON] [--wait] [--json] [--timeout S] [--expires S]
 *                       --broker HOST[:PORT] --cert FILE --key FILE --ca FILE --operator-cert FILE --operator-key FILE
 *   telematics-ops send --device ID --command NAME --certs-dir certs/dev ...   (the default run's development PKI)
 *   telematics-ops send|sign|status|wait|history ...   (tracked commands, many cars: src/cli/ops-tracked.ts)
 *   telematics-ops watch [--device ID] [--json] [--share GROUP] [--count N] [--timeout S] --broker ... | --certs-dir DIR
 *   telematics-ops keys --out DIR [--operator NAME]
 *   telematics-ops ca-signer --broker ... --ca-cert FILE --ca-key FILE [--state DIR] ...   (src/cli/ops-ca-signer.ts)
 *
 * `--broker` without a port means 8884, the backend listener of the fleet broker (deploy/mosquitto); `--certs-dir`
 * without `--broker` means the backend listener of the development broker of `npm start`, localhost:8884 (mosquitto
 * or aedes: both have one).
 *
 * Exit codes of `send`, for scripts: 0 succeeded (or, without --wait, the broker has the command), 2 rejected,
 * 3 failed, 4 timed out (on the car, or no final result within --timeout from a car that is online), 5 queued (the
 * car is offline: the broker keeps the command until it expires), 6 no such car (none with that ID has ever
 * connected), 1 usage or connection error.
 */
import { readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import type { CommandResult } from '../commands/result.js';
import { DEV_OPERATOR, writeDevelopmentKeys } from '../pki/command-pki.js';
import { BACKEND_IDENTITY } from '../pki/device-id.js';
import { forTerminal, jsonForTerminal, linesForTerminal } from '../text/terminal-text.js';
import type { CatalogueEntry, JsonSchema } from '../commands/catalogue.js';
import { addCaSignerCommand } from './ops-ca-signer.js';
import { addFleetCommand } from './ops-fleet.js';
import { addSimulateCommand } from './ops-simulate.js';
import { addTrackedCommands } from './ops-tracked.js';
import { shareGroup, watch, type WatchOptions } from './ops-watch.js';
import { PACKAGE_VERSION, VERSION_DESCRIPTION, VERSION_FLAGS, versionText } from './version.js';

export const EXIT = { succeeded: 0, usage: 1, rejected: 2, failed: 3, timedOut: 4, queued: 5, noSuchCar: 6 } as const;

export function positiveSeconds(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return value;
}

export function positiveCount(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value <= 0) throw new InvalidArgumentError('expected a whole number above 0');
  return value;
}

export function readable(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${what} ${file}: ${code === 'ENOENT' ? 'file not found' : (err as Error).message}`);
  }
}

/** A result as a person reads it. What the car sent is shown, never interpreted by the terminal (forTerminal). */
export function describeResult(result: CommandResult): string {
  const reason = result.reason ? ` ${result.reason}` : '';
  const message = result.message ? `: ${result.message}` : '';
  const detail = result.detail !== undefined && result.status !== 'ACCEPTED' ? `\n${jsonForTerminal(JSON.stringify(result.detail, null, 2))}` : '';
  return `${forTerminal(`${result.id} ${result.status}${reason}${message}`)}${detail}`;
}

/** The options that say where the broker is and who the backend and the operator are (each unless --certs-dir gives it). */
export interface ConnectionSource {
  broker?: string;
  cert?: string;
  key?: string;
  ca?: string;
  operatorCert?: string;
  operatorKey?: string;
  certsDir?: string;
}

/** The backend listener of the fleet broker configuration the repository ships (deploy/mosquitto/mosquitto.conf). */
export const BACKEND_PORT = 8884;
/**
 * The backend listener of the development broker of the default config (the port after its url's, 8883): what
 * `--certs-dir` (the development PKI) talks to.
 */
export const DEV_BROKER = `mqtts://localhost:${BACKEND_PORT}`;

/**
 * `--broker` as a URL: `HOST`, `HOST:PORT` or `mqtts://HOST[:PORT]`; without a port, the fleet broker's backend
 * listener. Only mutual TLS: anything but mqtts is a usage error.
 */
export function brokerUrl(text: string): string {
  // commander puts the option and the argument before this.
  const usage = 'expected HOST, HOST:PORT or mqtts://HOST[:PORT]';
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `mqtts://${text}`);
  } catch {
    throw new InvalidArgumentError(usage);
  }
  if (url.protocol !== 'mqtts:') throw new InvalidArgumentError(`${usage} (the broker is reached over mutual TLS only)`);
  if (url.hostname === '' || (url.pathname !== '' && url.pathname !== '/') || url.search || url.hash || url.username || url.password) {
    throw new InvalidArgumentError(usage);
  }
  if (url.port === '') url.port = String(BACKEND_PORT);
  return `mqtts://${url.host}`;
}

type Connection = Required<Omit<ConnectionSource, 'certsDir'>>;

/**
 * The connection and signing options, each given or taken from --certs-dir; a usage error names what is missing.
 * `signing` false (watch): the operator's certificate and key are not needed.
 */
export function connectionOf(opts: ConnectionSource): Connection;
export function connectionOf(opts: ConnectionSource, signing: false): Pick<Connection, 'broker' | 'cert' | 'key' | 'ca'>;
export function connectionOf(opts: ConnectionSource, signing = true): Partial<Connection> {
  const dir = opts.certsDir;
  const dev = (name: string): string | undefined => (dir === undefined ? undefined : path.join(dir, name));
  const chosen: Partial<Record<keyof Connection, string | undefined>> = {
    broker: opts.broker ?? (dir === undefined ? undefined : DEV_BROKER),
    cert: opts.cert ?? dev(`${BACKEND_IDENTITY}.crt`),
    key: opts.key ?? dev(`${BACKEND_IDENTITY}.key`),
    ca: opts.ca ?? dev('ca.crt'),
  };
  if (signing) {
    chosen.operatorCert = opts.operatorCert ?? dev(`${DEV_OPERATOR}.crt`);
    chosen.operatorKey = opts.operatorKey ?? dev(`${DEV_OPERATOR}.key`);
  }
  const flags: Record<keyof Connection, string> = {
    broker: '--broker',
    cert: '--cert',
    key: '--key',
    ca: '--ca',
    operatorCert: '--operator-cert',
    operatorKey: '--operator-key',
  };
  const missing = (Object.keys(chosen) as (keyof Connection)[]).filter((k) => chosen[k] === undefined).map((k) => flags[k]);
  if (missing.length > 0) throw new InvalidArgumentError(`missing ${missing.join(', ')} (or --certs-dir for the development PKI)`);
  return chosen;
}

/** `text` in lines of at most `width` characters, each after `indent`. */
function wrap(text: string, indent: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line !== '' && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  if (line !== '') lines.push(indent + line);
  return lines;
}

const num = (value: unknown): number | undefined => (typeof value === 'number' ? value : undefined);

/** A range as a person writes it: "1-200", "up to 256", "at least 1"; undefined when unbounded. */
function range(min: number | undefined, max: number | undefined, separator = '-'): string | undefined {
  if (min !== undefined && max !== undefined) return `${min}${separator}${max}`;
  if (max !== undefined) return `up to ${max}`;
  if (min !== undefined) return `at least ${min}`;
  return undefined;
}

/** A parameter's type and limits from its JSON Schema: `integer 0..60000`, `string (1-200 characters)`, `one of: a, b`. */
export function describeSchemaType(schema: JsonSchema): string {
  if (Array.isArray(schema.enum)) return `one of: ${schema.enum.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(', ')}`;
  switch (schema.type) {
    case 'string': {
      const [min, max] = [num(schema.minLength), num(schema.maxLength)];
      if (min === 1 && max === undefined) return 'non-empty string';
      const chars = range(min, max);
      return chars === undefined ? 'string' : `string (${chars} characters)`;
    }
    case 'integer':
    case 'number': {
      const values = range(num(schema.minimum), num(schema.maximum), '..');
      return values === undefined ? String(schema.type) : `${String(schema.type)} ${values}`;
    }
    case 'array': {
      const items = range(num(schema.minItems), num(schema.maxItems));
      const of = typeof schema.items === 'object' && schema.items !== null ? describeSchemaType(schema.items as JsonSchema) : 'anything';
      return `array${items === undefined ? '' : ` (${items} items)`} of ${of}`;
    }
    case 'object':
      return 'object';
    case 'boolean':
      return 'true or false';
    default:
      return 'any JSON value';
  }
}

/** The catalogue as a person reads it: each command, its timeout, what it does, and each parameter on two lines. */
export function describeCatalogue(entries: readonly CatalogueEntry[], width = 100): string {
  const lines = wrap(
    `The commands telematics-agent ${PACKAGE_VERSION} understands (docs/commands.md). Their parameters are one JSON object ` +
      "(send --params); a field not listed is refused. The timeout is the command's own unless the car's config sets " +
      'commands.defaultTimeoutMs; send --run-timeout sets one for a single command.',
    '',
    width,
  );
  for (const entry of entries) {
    lines.push('', `${entry.name} (timeout ${entry.defaultTimeoutMs / 1000} s)`, ...wrap(entry.description, '  ', width));
    const properties = (entry.params.properties ?? {}) as Record<string, JsonSchema>;
    const required = new Set(Array.isArray(entry.params.required) ? (entry.params.required as string[]) : []);
    const names = Object.keys(properties);
    if (names.length === 0) lines.push('  no parameters');
    const column = Math.max(...names.map((name) => name.length)) + 4;
    for (const name of names) {
      const schema = properties[name]!;
      const facts = [describeSchemaType(schema)];
      if (!required.has(name)) facts.push(schema.default === undefined ? 'optional' : `optional, default ${JSON.stringify(schema.default)}`);
      const indent = ' '.repeat(column + 2);
      const [first, ...more] = wrap(facts.join('; '), indent, width);
      lines.push(`  ${name.padEnd(column)}${first!.slice(indent.length)}`, ...more);
      if (typeof schema.description === 'string') lines.push(...wrap(schema.description, indent, width));
    }
  }
  lines.push('', 'Send one: telematics-ops send --device ID --command ping --params \'{"echo":"hi"}\' --wait (add --certs-dir certs/dev for npm start)');
  return lines.join('\n');
}

/** The options that reach the broker as the backend, the same on every subcommand that connects. */
export function withBrokerOptions(command: Command): Command {
  return command
    .option(
      '-b, --broker <host[:port]>',
      `the fleet broker: HOST, HOST:PORT or mqtts://HOST[:PORT]; port ${BACKEND_PORT} (its backend listener) when not given`,
      brokerUrl,
    )
    .option('--cert <file>', 'client certificate for the broker (the backend identity)')
    .option('--key <file>', 'its private key')
    .option('--ca <file>', "the broker's CA");
}

export function createOpsProgram(out: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Command {
  const program = new Command();
  program
    .name('telematics-ops')
    .description('Fleet operations: signed remote commands to vehicles running telematics-agent')
    .version(versionText('telematics-ops'), VERSION_FLAGS, VERSION_DESCRIPTION)
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : EXIT.usage);
    });
  program
    .command('commands')
    .description('list the commands a car understands: what each does, its parameters (types, limits, defaults) and its timeout')
    .option('-j, --json', "the catalogue as one JSON document, each command's parameters as JSON Schema")
    .action(async (opts: { json?: boolean }) => {
      // Loaded here: the handlers' modules are not needed to send a command.
      const { commandCatalogue } = await import('../commands/catalogue.js');
      const entries = commandCatalogue();
      out(opts.json ? JSON.stringify({ version: PACKAGE_VERSION, commands: entries }, null, 2) : describeCatalogue(entries));
    });
  addTrackedCommands(program, out);
  withBrokerOptions(
    program
      .command('watch')
      .description('print what the cars publish, decoded and checked against the contract, one line per message (like mosquitto_sub -v, readable)')
      .option('-d, --device <id>', 'only this vehicle (default: every vehicle, vehicles/+/#)')
      .option('-j, --json', 'one JSON object per line: {topic, kind, message}, the message decoded')
      .option('--share <group>', 'an MQTT 5 shared subscription ($share/GROUP/...): the watchers of one group split the messages', shareGroup)
      .option('-n, --count <n>', 'exit after this many messages', positiveCount)
      .option('--timeout <s>', 'exit after this long (exit code 4 when --count messages had not come)', positiveSeconds),
  )
    .option('--certs-dir <dir>', `development: the PKI \`npm start\` made (certs/dev): the broker ${DEV_BROKER}, backend.crt/.key, ca.crt`)
    .action(async (opts: WatchOptions & ConnectionSource) => {
      const connection = connectionOf(opts, false);
      process.exitCode = await watch(opts, { url: connection.broker, certFile: connection.cert, keyFile: connection.key, caFile: connection.ca }, out);
    });
  addCaSignerCommand(program);
  program
    .command('keys')
    .description('create a development command CA and an operator key and certificate (ECDSA P-256); not for production')
    .requiredOption('-o, --out <dir>', 'folder to write them to')
    .option('--operator <name>', "the operator's name (the certificate's CN)", 'operator')
    .option('--force', 'make a new CA even if the folder has one')
    .action((opts: { out: string; operator: string; force?: boolean }) => {
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(opts.operator)) throw new InvalidArgumentError('--operator: 1-64 characters of A-Z a-z 0-9 . _ -');
      const files = writeDevelopmentKeys(opts.out, opts.operator, opts.force === true);
      out(`command CA:  ${files.caFile} (pin it in the device config: commands.caFile)`);
      out(`CA key:      ${files.caKeyFile} (keep it offline)`);
      out(`operator:    ${files.certFile}`);
      out(`its key:     ${files.keyFile}`);
    });
  addFleetCommand(program, out);
  addSimulateCommand(program, out);
  return program;
}

// Run as a program (not when imported by tests); npm's bin entry is a symlink to this file.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  createOpsProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`telematics-ops: ${linesForTerminal(err instanceof Error ? err.message : String(err))}\n`);
      process.exit(EXIT.usage);
    });
}
