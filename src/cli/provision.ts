#!/usr/bin/env node
/**
 * `telematics-provision`: the command line of the firmware engineer's provisioning tools, also behind the wrappers
 * scripts/dev-pki, scripts/provision, scripts/flash and scripts/install-service (docs/provisioning.md walks through
 * them). Help and errors name the binary, however it was started. The tools themselves are in src/provision/; this
 * file parses their options, prints what they say and sets the exit status:
 *
 *   dev-pki          the development CA, broker certificate, command CA and operator the demo and tests use
 *   provision        one car's key, CSR, certificate and install bundle
 *   flash            a bundle and the built agent into a mounted image
 *   install-service  the systemd unit and its account, into / or --root
 *
 * Every failure is one line on standard error, `telematics-provision: ` and what is wrong, with exit status 1; a config
 * template that cannot be used lists all its problems, one per line below that, with exit status 65
 * (src/provision/template.ts).
 */
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { ProvisionError } from '../provision/files.js';
import { runFlash } from '../provision/flash.js';
import { DEFAULT_BUNDLES_DIR, DEFAULT_TEMPLATE, runProvision, type ProvisionOptions } from '../provision/bundle.js';
import { DEFAULT_DEV_PKI_DIR, DEMO_DEVICE, runDevPki } from '../provision/dev-pki.js';
import { DEFAULT_UNIT_OPTIONS, checkUnitOptions, runInstallService, serviceUnit, type UnitOptions } from '../provision/service-unit.js';
import { forTerminal, linesForTerminal } from '../text/terminal-text.js';
import { VERSION_DESCRIPTION, VERSION_FLAGS, versionText } from './version.js';

const BINARY = 'telematics-provision';

// Paths and names can come from a hostile image or bundle: control characters are shown escaped, never sent raw.
const say = (line: string): void => {
  process.stdout.write(`${linesForTerminal(line)}\n`);
};

function positiveInteger(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function unitOptions(opts: { user?: string; node?: string }): UnitOptions {
  const options = { user: opts.user ?? DEFAULT_UNIT_OPTIONS.user, node: opts.node ?? DEFAULT_UNIT_OPTIONS.node };
  checkUnitOptions(options);
  return options;
}

const program = new Command();
program
  .name(BINARY)
  .description('provisioning tools for the telematics agent (docs/provisioning.md)')
  .version(versionText(BINARY), VERSION_FLAGS, VERSION_DESCRIPTION)
  .showHelpAfterError(false)
  .configureOutput({
    // commander's own errors (unknown option, missing value) as one line, like ours.
    outputError: (text, write) => write(`${BINARY}: ${text.replace(/^error: /, '').trim()}\n`),
  })
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 1);
  });

program
  .command('dev-pki')
  .description('the development PKI: root CA, broker certificate, demo device and backend certificates, command CA, operator ops-dev (kept when present)')
  .option('--out <dir>', 'folder to write', DEFAULT_DEV_PKI_DIR)
  .option('--device <id>', 'the demo device to make a certificate for', DEMO_DEVICE)
  .option('--broker-host <name>', 'another name or address the broker certificate must cover, besides localhost, 127.0.0.1 and ::1 (repeatable)', collect)
  .action((opts: { out: string; device: string; brokerHost?: string[] }) => {
    runDevPki({ out: opts.out, device: opts.device, ...(opts.brokerHost ? { brokerHosts: opts.brokerHost } : {}) }, say);
  });

program
  .command('provision')
  .description("one car's identity and install bundle: device key (0600), CSR, certificate, config, CAs, systemd unit")
  .requiredOption('--device <id>', "the car's device ID (the certificate's CN)")
  .option('--bundle <dir>', `the bundle folder (default ${path.relative(process.cwd(), DEFAULT_BUNDLES_DIR) || '.'}/<id>)`)
  .option('--ca <file>', 'sign here with this CA certificate (intermediates after it go into the chain)')
  .option('--ca-key <file>', "the CA's private key (unencrypted RSA)")
  .option('--csr-only', 'make the key and the CSR only; the certificate is signed elsewhere and added with --cert')
  .option('--cert <file>', 'complete a --csr-only bundle with its signed certificate (checked against the key, the device and the CA)')
  .option('--broker <url>', 'the fleet broker, mqtts://host[:port]')
  .option('--broker-ca <file>', "the CA the broker's certificate chains to (default: --ca)")
  .option('--command-ca <file>', 'the CA remote commands must be signed under')
  .option('--config-template <file>', `device config to start from (default ${path.relative(process.cwd(), DEFAULT_TEMPLATE)})`)
  .option('--valid-days <n>', 'validity of the device certificate (default 825)', positiveInteger)
  .option('--new-key', 'replace the key in an existing bundle (a new identity)')
  .option('--user <name>', 'the service user in the unit', DEFAULT_UNIT_OPTIONS.user)
  .option('--node <path>', 'node on the device', DEFAULT_UNIT_OPTIONS.node)
  .action((opts: Omit<ProvisionOptions, 'unit'> & { user: string; node: string }) => {
    runProvision({ ...opts, unit: unitOptions(opts) }, say);
  });

program
  .command('flash')
  .description('install a bundle and the built agent into a mounted target root file system, with owners and modes (idempotent)')
  .requiredOption('--bundle <dir>', 'the bundle scripts/provision made')
  .requiredOption('--target <rootfs>', "the image's root file system, mounted")
  .option('--agent-dir <dir>', 'the built agent to install (default: this checkout)')
  .option('--replace-identity', 'overwrite another device identity already in the target')
  .action((opts: { bundle: string; target: string; agentDir?: string; replaceIdentity?: boolean }) => {
    runFlash(opts, say);
  });

program
  .command('install-service')
  .description('the systemd unit (restart, watchdog, dedicated user, no capabilities, hardening), its account and state folder')
  .option('--root <dir>', 'root file system to install into', '/')
  .option('--user <name>', 'the dedicated user', DEFAULT_UNIT_OPTIONS.user)
  .option('--node <path>', 'node on the device', DEFAULT_UNIT_OPTIONS.node)
  .option('--print', 'print the unit and change nothing')
  .action((opts: { root: string; user: string; node: string; print?: boolean }) => {
    const unit = unitOptions(opts);
    if (opts.print) process.stdout.write(serviceUnit(unit));
    else runInstallService({ root: opts.root, unit }, say);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  // Input and target problems are expected: one line. Anything else is a bug: its stack helps whoever reports it.
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${BINARY}: ${forTerminal(err instanceof ProvisionError ? message : message.split('\n')[0]!)}\n`);
  // A template's problems, all of them, one per line under the first (src/provision/template.ts).
  if (err instanceof ProvisionError) for (const detail of err.details) process.stderr.write(`  ${forTerminal(detail)}\n`);
  if (!(err instanceof ProvisionError) && process.env.PROVISION_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(err instanceof ProvisionError ? err.exitCode : 1);
});
