/**
 * `telematics-ops ca-signer`: the fleet's certificate signer as a long-running service (docs/commands.md, "Who signs
 * the request"; deploy/systemd/telematics-ca-signer.service runs it). It answers the cars' `rotateCertificate`
 * requests on the broker's backend listener with the CA it is given (src/fleet/certificate-signer.ts), remembers
 * every key it certified in `--state DIR` and writes one audit line per request to `--audit FILE`.
 *
 *   telematics-ops ca-signer --broker HOST[:PORT] --cert FILE --key FILE --ca FILE --ca-cert FILE --ca-key FILE
 *                            [--state DIR] [--audit FILE] [--validity-days N] [--min-interval S] [--log-level LEVEL]
 *   telematics-ops ca-signer --certs-dir certs/dev                (the development PKI of `npm start`)
 *
 * Failure: what it cannot start with (a missing or unreadable file, a CA key others may read, a certificate that is
 * not a CA or not the key's, a damaged registry, a subscription the broker refuses) is one line naming the option and
 * the file, exit 1. A broker that is down at start or later is waited for (it reconnects by itself). SIGTERM and
 * SIGINT stop it cleanly: the connection closed, the registry and the audit log closed, exit 0.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { CertificateSigner } from '../fleet/certificate-signer.js';
import { IssuedKeys } from '../fleet/issued-keys.js';
import { SignerAudit } from '../fleet/signer-audit.js';
import { DEFAULT_MIN_INTERVAL_S, SigningPolicy, VALIDITY_DAYS } from '../fleet/signing-policy.js';
import { LOG_LEVELS, Logger, defaultLogFormat, type LogLevel } from '../health/log.js';
import { loggingConfigSchema } from '../health/log-config.js';
import { loadSigningCa } from '../pki/certificate-authority.js';
import { connectionOf, withBrokerOptions, type ConnectionSource } from './ops.js';

/** Where the service keeps its registry when not told (the unit's StateDirectory=). */
export const CA_SIGNER_STATE_DIR = '/var/lib/telematics-ca-signer';
/** The registry's file in the state folder. */
export const ISSUED_KEYS_FILE = 'issued-keys.sqlite';

interface CaSignerOptions extends ConnectionSource {
  caCert?: string;
  caKey?: string;
  state?: string;
  audit?: string;
  validityDays: number;
  minInterval: number;
  logLevel: LogLevel;
}

function validityDays(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > VALIDITY_DAYS.max)
    throw new InvalidArgumentError(`expected a whole number of days, 1-${VALIDITY_DAYS.max}`);
  return value;
}

function seconds(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) throw new InvalidArgumentError('expected a number of seconds, 0 or more');
  return value;
}

function logLevel(text: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(text)) throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(', ')}`);
  return text as LogLevel;
}

/** A file's text; one line naming the option and the file when it cannot be read. */
function readOption(file: string, option: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${option} ${file}: ${code === 'ENOENT' ? 'file not found' : (err as Error).message}`);
  }
}

/** The CA key is the fleet's most valuable secret: the signer does not use one that others may read. */
function checkPrivate(file: string, option: string): void {
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new Error(
      `${option} ${file}: readable by others (mode ${mode.toString(8).padStart(4, '0')}); only the signer's user may read it ` +
        '(chmod 600, or LoadCredential= in the unit)',
    );
  }
}

export function addCaSignerCommand(program: Command): void {
  withBrokerOptions(
    program
      .command('ca-signer')
      .description("the fleet's certificate signer: answers the cars' rotateCertificate requests with the CA it is given (runs until stopped)")
      .option('--ca-cert <file>', 'the CA certificate that issues device certificates (the device CA the broker trusts)')
      .option('--ca-key <file>', "its private key (RSA, or EC P-256/P-384; readable by the signer's user only)")
      .option('--state <dir>', `where the registry of certified keys is kept (default ${CA_SIGNER_STATE_DIR}, or $STATE_DIRECTORY under systemd)`)
      .option('--audit <file>', 'the audit log, one JSON line per request (default: audit.jsonl in --state)')
      .option(
        '--validity-days <n>',
        `how long a certificate is valid, days (at most ${VALIDITY_DAYS.max}, never beyond the CA)`,
        validityDays,
        VALIDITY_DAYS.default,
      )
      .option('--min-interval <s>', 'at most one certificate per device per this many seconds (0: no limit)', seconds, DEFAULT_MIN_INTERVAL_S)
      .option('--log-level <level>', `${LOG_LEVELS.join(', ')}`, logLevel, 'info' as LogLevel),
  )
    .option(
      '--certs-dir <dir>',
      'development: the PKI `npm start` made (certs/dev) gives what is not set above: the broker, backend.crt/.key, ca.crt, and ca.crt/ca.key as the CA ' +
        '(state in <dir>/ca-signer)',
    )
    .action(async (opts: CaSignerOptions) => {
      process.exitCode = await runCaSigner(opts);
    });
}

async function runCaSigner(opts: CaSignerOptions): Promise<number> {
  const connection = connectionOf(opts, false);
  const dev = (name: string): string | undefined => (opts.certsDir === undefined ? undefined : path.join(opts.certsDir, name));
  const caCert = opts.caCert ?? dev('ca.crt');
  const caKey = opts.caKey ?? dev('ca.key');
  const missing = [caCert === undefined ? '--ca-cert' : '', caKey === undefined ? '--ca-key' : ''].filter(Boolean);
  if (caCert === undefined || caKey === undefined) throw new InvalidArgumentError(`missing ${missing.join(', ')} (or --certs-dir for the development PKI)`);
  const stateDir = opts.state ?? process.env.STATE_DIRECTORY?.split(':')[0] ?? dev('ca-signer') ?? CA_SIGNER_STATE_DIR;
  const auditFile = opts.audit ?? path.join(stateDir, 'audit.jsonl');
  for (const [file, option] of [
    [connection.cert, '--cert'],
    [connection.key, '--key'],
    [connection.ca, '--ca'],
  ] as const) {
    readOption(file, option);
  }
  const caKeyPem = readOption(caKey, '--ca-key');
  checkPrivate(caKey, '--ca-key');
  const ca = loadSigningCa(readOption(caCert, '--ca-cert'), caKeyPem, { cert: `--ca-cert ${caCert}`, key: `--ca-key ${caKey}` });

  const logger = new Logger({ config: loggingConfigSchema.parse({ level: opts.logLevel, verboseForS: 0 }), defaultFormat: defaultLogFormat(2) });
  const log = logger.child('ca-signer');
  const issuedKeys = IssuedKeys.open(path.join(stateDir, ISSUED_KEYS_FILE));
  let audit: SignerAudit;
  try {
    audit = SignerAudit.open(auditFile, (from) =>
      log.warn(`the audit log ${auditFile} was readable by others (mode ${from.toString(8).padStart(4, '0')}); made it 0600`),
    );
  } catch (err) {
    issuedKeys.close();
    throw err;
  }
  const policy = new SigningPolicy({ ca, issuedKeys, audit, log, validityDays: opts.validityDays, minIntervalMs: Math.round(opts.minInterval * 1000) });
  let signer: CertificateSigner | undefined;
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  try {
    log.info(
      `CA '${ca.commonName}' (valid until ${ca.notAfter.toISOString()}); certificates valid ${opts.validityDays} days, ` +
        `at most one per device per ${opts.minInterval} s; registry ${path.join(stateDir, ISSUED_KEYS_FILE)}, audit ${auditFile}`,
    );
    signer = await CertificateSigner.start({
      url: connection.broker,
      protocol: 5,
      certFile: connection.cert,
      keyFile: connection.key,
      caFile: connection.ca,
      policy,
      log,
      clientIdPrefix: 'backend/ca-signer',
      reconnectPeriodMs: 2000,
    });
    const signal = await stopped;
    log.info(`${signal}: stopping (${policy.issued} issued, ${policy.refused} refused, ${signer.dropped} dropped since start)`);
    return 0;
  } finally {
    await signer?.close(1000);
    audit.close();
    issuedKeys.close();
    logger.close();
  }
}
