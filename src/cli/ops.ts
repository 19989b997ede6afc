#!/usr/bin/env node
/**
 * `telematics-ops`: the fleet operator's tool for remote commands (docs/commands.md).
 *
 *   telematics-ops send --device ID --command NAME [--params JSON] [--wait] [--json] [--timeout S] [--expires S]
 *                       --broker URL --cert FILE --key FILE --ca FILE --operator-cert FILE --operator-key FILE
 *   telematics-ops keys --out DIR [--operator NAME]
 *
 * Exit codes of `send`, for scripts: 0 succeeded (or, without --wait, the broker has the command), 2 rejected,
 * 3 failed, 4 timed out (on the car, or no final result within --timeout), 1 usage or connection error.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { COMMAND_NAME_PATTERN } from '../commands/envelope.js';
import { OperatorClient } from '../commands/operator-client.js';
import type { CommandResult } from '../commands/result.js';
import { createCommandCa, issueOperatorCertificate } from '../pki/command-pki.js';

export const EXIT = { succeeded: 0, usage: 1, rejected: 2, failed: 3, timedOut: 4 } as const;

function positiveSeconds(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return value;
}

function readable(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${what} ${file}: ${code === 'ENOENT' ? 'file not found' : (err as Error).message}`);
  }
}

function describeResult(result: CommandResult): string {
  const reason = result.reason ? ` ${result.reason}` : '';
  const message = result.message ? `: ${result.message}` : '';
  const detail = result.detail !== undefined && result.status !== 'ACCEPTED' ? `\n${JSON.stringify(result.detail, null, 2)}` : '';
  return `${result.status}${reason}${message}${detail}`;
}

function exitCodeOf(final: CommandResult | undefined): number {
  switch (final?.status) {
    case 'SUCCEEDED':
      return EXIT.succeeded;
    case 'REJECTED':
      return EXIT.rejected;
    case 'FAILED':
      return EXIT.failed;
    default:
      return EXIT.timedOut;
  }
}

interface SendOptions {
  device: string;
  command: string;
  params: string;
  wait?: boolean;
  json?: boolean;
  timeout: number;
  expires: number;
  runTimeout?: number;
  broker: string;
  cert: string;
  key: string;
  ca: string;
  operatorCert: string;
  operatorKey: string;
}

async function send(opts: SendOptions, out: (line: string) => void): Promise<number> {
  if (!COMMAND_NAME_PATTERN.test(opts.command)) throw new InvalidArgumentError(`'${opts.command}' is not a command name`);
  let params: unknown;
  try {
    params = JSON.parse(opts.params);
  } catch (err) {
    throw new Error(`--params is not JSON: ${(err as Error).message}`);
  }
  const signer = { certPem: readable(opts.operatorCert, '--operator-cert'), keyPem: readable(opts.operatorKey, '--operator-key') };
  const client = await OperatorClient.connect({ url: opts.broker, certFile: opts.cert, keyFile: opts.key, caFile: opts.ca }).catch((err: unknown) => {
    throw new Error(`cannot connect to ${opts.broker}: ${(err as Error).message}`);
  });
  try {
    const issuedAt = Date.now();
    const outcome = await client.send(
      {
        deviceId: opts.device,
        name: opts.command,
        params,
        issuedAt,
        expiresAt: issuedAt + Math.round(opts.expires * 1000),
        ...(opts.runTimeout !== undefined ? { timeoutMs: Math.round(opts.runTimeout * 1000) } : {}),
      },
      signer,
      {
        wait: opts.wait === true,
        timeoutMs: opts.timeout * 1000,
        onResult: (result) => out(opts.json ? JSON.stringify(result) : `${result.id} ${describeResult(result)}`),
      },
    );
    if (!opts.wait) {
      out(opts.json ? JSON.stringify({ id: outcome.id, status: 'SENT' }) : `${outcome.id} SENT (the broker has it; --wait follows it to the end)`);
      return EXIT.succeeded;
    }
    if (!outcome.final) {
      const what = `no final result within ${opts.timeout} s (the car may be offline: the broker keeps the command until it expires)`;
      out(opts.json ? JSON.stringify({ id: outcome.id, status: 'NO_RESULT', message: what }) : `${outcome.id} ${what}`);
    }
    return exitCodeOf(outcome.final);
  } finally {
    await client.close();
  }
}

/** Writes a development command CA and one operator's key and certificate into `dir` (keys 0600). */
export function writeDevelopmentKeys(dir: string, operator: string, force = false): { caFile: string; caKeyFile: string; certFile: string; keyFile: string } {
  mkdirSync(dir, { recursive: true });
  const file = (name: string): string => path.join(dir, name);
  let ca: { certPem: string; keyPem: string };
  if (existsSync(file('command-ca.crt')) && existsSync(file('command-ca.key')) && !force) {
    ca = { certPem: readFileSync(file('command-ca.crt'), 'utf8'), keyPem: readFileSync(file('command-ca.key'), 'utf8') };
  } else {
    ca = createCommandCa();
    writeFileSync(file('command-ca.crt'), ca.certPem, { mode: 0o644 });
    writeFileSync(file('command-ca.key'), ca.keyPem, { mode: 0o600 });
    chmodSync(file('command-ca.key'), 0o600);
  }
  const issued = issueOperatorCertificate(ca, operator);
  writeFileSync(file(`${operator}.crt`), issued.certPem, { mode: 0o644 });
  writeFileSync(file(`${operator}.key`), issued.keyPem, { mode: 0o600 });
  chmodSync(file(`${operator}.key`), 0o600);
  return { caFile: file('command-ca.crt'), caKeyFile: file('command-ca.key'), certFile: file(`${operator}.crt`), keyFile: file(`${operator}.key`) };
}

export function createOpsProgram(out: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Command {
  const program = new Command();
  program
    .name('telematics-ops')
    .description('Fleet operations: signed remote commands to vehicles running telematics-agent')
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : EXIT.usage);
    });
  program
    .command('send')
    .description('sign a command, publish it, and (with --wait) follow it to its result')
    .requiredOption('--device <id>', 'the vehicle (its device ID)')
    .requiredOption('--command <name>', 'the command, e.g. ping, getStatus, readDtcs')
    .option('--params <json>', 'its parameters, a JSON object', '{}')
    .option('--wait', 'follow the lifecycle until SUCCEEDED, FAILED, TIMED_OUT or REJECTED')
    .option('--json', 'one JSON result per line')
    .option('--timeout <s>', 'with --wait: how long to wait for the final result', positiveSeconds, 60)
    .option('--expires <s>', 'the command expires this long after now (an offline car gets it only until then)', positiveSeconds, 300)
    .option('--run-timeout <s>', "the car's timeout for running it (default: the command's own)", positiveSeconds)
    .requiredOption('--broker <url>', 'the fleet broker, mqtts://host:port')
    .requiredOption('--cert <file>', 'client certificate for the broker (the backend identity)')
    .requiredOption('--key <file>', 'its private key')
    .requiredOption('--ca <file>', "the broker's CA")
    .requiredOption('--operator-cert <file>', 'your operator certificate (from the command CA)')
    .requiredOption('--operator-key <file>', 'its private key, which signs')
    .action(async (opts: SendOptions) => {
      process.exitCode = await send(opts, out);
    });
  program
    .command('keys')
    .description('create a development command CA and an operator key and certificate (ECDSA P-256); not for production')
    .requiredOption('--out <dir>', 'folder to write them to')
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
  return program;
}

// Run as a program (not when imported by tests); npm's bin entry is a symlink to this file.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  createOpsProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`telematics-ops: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(EXIT.usage);
    });
}
