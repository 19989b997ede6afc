/**
 * `provision`: one car's identity and install bundle, made from a CA here (--ca, --ca-key) or in two steps around a
 * CA elsewhere (--csr-only, then --cert). Every input is read and checked before anything is written, so bad input
 * (one ProvisionError line naming what is wrong) leaves no half bundle.
 *
 * The config is made from a template (src/provision/template.ts says what a template gives and what is filled in).
 * A bundle is laid out as /etc/telematics-agent will be on the car, so the config's relative paths hold in both places:
 *
 *   config.json               the device config for this car (DBCs under dbc/, state under /var/lib/telematics-agent)
 *   dbc/                      the DBC files its buses decode with
 *   replay/                   the files a bus's source names besides its DBC (a replay's candump log), if any
 *   certs/broker-ca.crt       the CA the broker's certificate must chain to (pinned)
 *   certs/command-ca.crt      the CA remote commands must be signed under (pinned)
 *   identity/device.key       the device's private key, 0600, made here and never sent anywhere
 *   identity/device.csr       its signing request (CN = the device ID)
 *   identity/device.crt       the signed certificate, leaf first, then any intermediate CA
 *   telematics-agent.service  the systemd unit
 *
 * The identity has a folder of its own because on the car it is the only part the agent may write (certificate
 * rotation); the config and the pinned CAs are root's and read-only to it (src/provision/flash.ts).
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadDeviceConfig, parseDeviceConfig } from '../config/device-config.js';
import { CertificateAuthorityError, issueDeviceCertificate, loadSigningCa, type SigningCa as IssuingCa } from '../pki/certificate-authority.js';
import { createCsr, createDeviceKey, readCsr } from '../pki/csr.js';
import { readSigningRequest } from '../pki/signing-request.js';
import { ChainRefusal, describeCertificate, verifyChain } from '../pki/certificate-chain.js';
import { IdentityError, loadIdentity } from '../pki/identity.js';
import { deviceIdProblem } from '../pki/device-id.js';
import { ChangeCount, ProvisionError, octal, putDir, putFile, readInputFile, type Change } from './files.js';
import { INSTALL, serviceUnit, type UnitOptions } from './service-unit.js';
import { bundleConfigFromTemplate } from './template.js';

type Say = (line: string) => void;

/** The project folder (this file runs as dist/src/provision/bundle.js). */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** Under certs/, which git ignores: a bundle holds a private key. */
export const DEFAULT_BUNDLES_DIR = path.join(PROJECT_ROOT, 'certs', 'bundles');
export const DEFAULT_TEMPLATE = path.join(PROJECT_ROOT, 'device-config', 'default.json');

export const BUNDLE = {
  config: 'config.json',
  certsDir: 'certs',
  identityDir: 'identity',
  key: 'identity/device.key',
  csr: 'identity/device.csr',
  cert: 'identity/device.crt',
  brokerCa: 'certs/broker-ca.crt',
  commandCa: 'certs/command-ca.crt',
  dbcDir: 'dbc',
  replayDir: 'replay',
  unit: INSTALL.unitName,
} as const;

/**
 * Where provision put the identity before it had a folder of its own (beside the pinned CAs, in certs/): a bundle
 * laid out so is moved to identity/ by provision, refused by flash (src/provision/flash.ts).
 */
export const LEGACY_IDENTITY = { key: 'certs/device.key', csr: 'certs/device.csr', cert: 'certs/device.crt' } as const;

/** A certificate closer to its end than this is re-issued when provision runs again with the CA. */
const RENEW_BEFORE_DAYS = 30;
/** A device certificate's validity when --valid-days is not given (cut to the CA's own). */
const DEFAULT_VALID_DAYS = 825;

// ---- input checks -----------------------------------------------------------------------------------------------

/** The device ID rule (src/pki/device-id.ts), as a provisioning error naming the option. */
export function checkDeviceId(id: string): void {
  const problem = deviceIdProblem(id);
  if (problem === null) return;
  throw new ProvisionError(
    `--device ${JSON.stringify(id)} cannot be a device ID: ${problem} (it becomes the certificate's CN, the broker username and client ID, an MQTT topic level and a folder name)`,
  );
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function certificatesIn(option: string, file: string, pem: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new ProvisionError(`${option} ${file}: holds no PEM certificate`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new ProvisionError(`${option} ${file}: certificate #${i + 1} cannot be parsed (${(err as Error).message})`);
    }
  });
}

/**
 * A CA certificate file: every certificate in it must be a CA, valid now, and pass the chain check the agent makes
 * (src/pki/certificate-chain.ts) as a CA that is to issue: allowed to sign certificates, a CA's key, no unknown
 * critical extension, and where the file also holds its issuer (an intermediate with its root), no SHA-1 or MD5
 * signature and within the path lengths above it, counting itself (what it issues will be below it).
 */
function readCaFile(option: string, file: string): { pem: string; certs: X509Certificate[] } {
  const pem = readInputFile(option, file);
  const certs = certificatesIn(option, file, pem);
  const now = new Date();
  for (const cert of certs) {
    const name = cn(cert) ?? cert.subject.replace(/\n/g, ', ');
    if (!cert.ca) throw new ProvisionError(`${option} ${file}: '${name}' is not a CA certificate (basicConstraints CA:TRUE is missing)`);
    if (new Date(cert.validTo) < now) throw new ProvisionError(`${option} ${file}: the CA '${name}' expired on ${new Date(cert.validTo).toISOString()}`);
    if (new Date(cert.validFrom) > now)
      throw new ProvisionError(`${option} ${file}: the CA '${name}' is not valid before ${new Date(cert.validFrom).toISOString()} (is this clock right?)`);
  }
  const refuse = (refusal: ChainRefusal): never => {
    throw new ProvisionError(`${option} ${file}: ${refusal.message}`);
  };
  const roots = certs.filter(selfSigned).map((root) => {
    try {
      return describeCertificate(root);
    } catch (err) {
      if (err instanceof ChainRefusal) refuse(err);
      throw err;
    }
  });
  for (const cert of certs) {
    const verdict = verifyChain({
      certificates: [cert, ...certs.filter((c) => c !== cert)],
      anchors: roots,
      leaf: { kind: 'issuing-ca' },
      at: now.getTime(),
      maxLength: certs.length,
      anchoring: 'optional',
      names: {
        leaf: 'the CA',
        given: () => 'the CA',
        chain: file,
        anchor: 'the root CA',
        anchors: 'a root CA of the file',
        anAnchor: 'a root CA of the file',
        issues: option === '--command-ca' ? 'certificates for commands' : 'certificates',
      },
    });
    if (verdict instanceof ChainRefusal) refuse(verdict);
  }
  return { pem: normalizePem(pem), certs };
}

/** Only the certificates, one after the other: comments and text dumps around them are left out. */
function normalizePem(pem: string): string {
  return `${(pem.match(PEM_CERTIFICATE) ?? []).join('\n')}\n`;
}

function cn(cert: X509Certificate): string | undefined {
  return cert.subject
    .split('\n')
    .find((l) => l.startsWith('CN='))
    ?.slice(3);
}

function issuerCn(cert: X509Certificate): string {
  return (
    cert.issuer
      .split('\n')
      .find((l) => l.startsWith('CN='))
      ?.slice(3) ?? cert.issuer.replace(/\n/g, ', ')
  );
}

function day(date: string): string {
  return new Date(date).toISOString().slice(0, 10);
}

function selfSigned(cert: X509Certificate): boolean {
  return cert.checkIssued(cert) && cert.verify(cert.publicKey);
}

interface SigningCa {
  file: string;
  cert: X509Certificate;
  /** Certificates of the --ca file that are not self-signed: intermediates, which go into the device's chain. */
  intermediates: X509Certificate[];
  /** What signs: the CA's key (RSA of 2048 bits or more, or EC P-256 or P-384) with its exact subject. */
  authority: IssuingCa;
}

function readSigningCa(caFile: string, keyFile: string): SigningCa {
  const { certs } = readCaFile('--ca', caFile);
  const keyText = readInputFile('--ca-key', keyFile);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyText);
  } catch (err) {
    const message = (err as Error).message;
    if (/passphrase|encrypted/i.test(message) || keyText.includes('ENCRYPTED')) {
      throw new ProvisionError(
        `--ca-key ${keyFile} is encrypted: this tool signs with an unencrypted key only; sign the CSR with your CA's tooling instead (--csr-only)`,
      );
    }
    throw new ProvisionError(`--ca-key ${keyFile}: not a PEM private key (${message})`);
  }
  const cert = certs[0]!;
  if (!cert.checkPrivateKey(key)) throw new ProvisionError(`--ca-key ${keyFile} is not the private key of the CA certificate ${caFile}`);
  let authority: IssuingCa;
  try {
    authority = loadSigningCa(cert.toString(), keyText, { cert: `--ca ${caFile}`, key: `--ca-key ${keyFile}` });
  } catch (err) {
    if (!(err instanceof CertificateAuthorityError)) throw err;
    throw new ProvisionError(`${err.message}: this tool cannot sign with it; sign the CSR with your CA's tooling instead (--csr-only)`);
  }
  warnIfReadable(keyFile);
  return { file: caFile, cert, intermediates: certs.filter((c) => !selfSigned(c)), authority };
}

const warnings: string[] = [];
function warnIfReadable(keyFile: string): void {
  try {
    const mode = statSync(keyFile).mode & 0o777;
    if ((mode & 0o077) !== 0) warnings.push(`warning: the CA key ${keyFile} has mode ${octal(mode)}: other users can read it (chmod 600)`);
  } catch {
    // read a moment ago
  }
}

// ---- provision --------------------------------------------------------------------------------------------------

export interface ProvisionOptions {
  device: string;
  bundle?: string;
  /** Sign here: the CA certificate (first in the file; intermediates after it go into the chain) and its key. */
  ca?: string;
  caKey?: string;
  /** Sign elsewhere: the key and the CSR only; complete later with `cert`. */
  csrOnly?: boolean;
  /** Complete a --csr-only bundle with the signed certificate. */
  cert?: string;
  broker?: string;
  brokerCa?: string;
  commandCa?: string;
  configTemplate?: string;
  validDays?: number;
  newKey?: boolean;
  unit: UnitOptions;
}

export function runProvision(options: ProvisionOptions, say: Say): void {
  warnings.length = 0;
  checkDeviceId(options.device);
  const bundle = path.resolve(options.bundle ?? path.join(DEFAULT_BUNDLES_DIR, options.device));
  if (options.cert !== undefined) {
    for (const [given, name] of [
      [options.csrOnly, '--csr-only'],
      [options.caKey, '--ca-key'],
      [options.newKey, '--new-key'],
      [options.broker, '--broker'],
      [options.brokerCa, '--broker-ca'],
      [options.commandCa, '--command-ca'],
      [options.configTemplate, '--config-template'],
    ] as const) {
      if (given) throw new ProvisionError(`${name} does not go with --cert: --cert only adds the signed certificate to an existing bundle`);
    }
    completeBundle(bundle, options, say);
    return;
  }
  if (options.csrOnly && (options.ca || options.caKey))
    throw new ProvisionError('--csr-only and --ca/--ca-key exclude each other: sign here (--ca, --ca-key) or elsewhere (--csr-only)');
  if (!options.csrOnly && !options.ca) {
    throw new ProvisionError(
      'say how the device certificate is made: --ca CA --ca-key KEY (signed here), --csr-only (signed elsewhere), or --cert FILE (completes a --csr-only bundle)',
    );
  }
  if (options.ca && !options.caKey) throw new ProvisionError("--ca needs --ca-key (the CA's private key, to sign the device certificate)");
  if (options.caKey && !options.ca) throw new ProvisionError('--ca-key needs --ca (the CA certificate it belongs to)');
  makeBundle(bundle, options, say);
}

interface BundleInputs {
  signing?: SigningCa;
  brokerCa: { file: string; pem: string; certs: X509Certificate[] };
  commandCa: { file: string; pem: string };
  templateFile: string;
  config: Record<string, unknown>;
  /** Bundle-relative name -> source file (DBCs, replay logs). */
  copies: Map<string, string>;
  notes: string[];
}

/** Reads and checks everything the bundle is made of before anything is written: bad input leaves no half bundle. */
function readInputs(bundle: string, options: ProvisionOptions): BundleInputs {
  const notes: string[] = [];
  const signing = options.ca ? readSigningCa(path.resolve(options.ca), path.resolve(options.caKey!)) : undefined;
  let brokerCaFile = options.brokerCa;
  if (brokerCaFile === undefined) {
    if (!signing) throw new ProvisionError("--broker-ca is required with --csr-only: the CA the broker's certificate chains to, which the car pins");
    brokerCaFile = signing.file;
    notes.push(`broker CA: ${signing.file} (the --ca; pass --broker-ca when the broker's certificate comes from another CA)`);
  }
  const brokerCa = { file: path.resolve(brokerCaFile), ...readCaFile('--broker-ca', path.resolve(brokerCaFile)) };
  if (options.commandCa === undefined) {
    throw new ProvisionError(
      '--command-ca is required: the CA whose operators may send this car remote commands (scripts/dev-pki makes one: certs/dev/command-ca.crt)',
    );
  }
  const commandCaFile = path.resolve(options.commandCa);
  const commandCa = { file: commandCaFile, pem: readCaFile('--command-ca', commandCaFile).pem };

  const templateFile = path.resolve(options.configTemplate ?? DEFAULT_TEMPLATE);
  if (options.configTemplate === undefined) {
    notes.push(`config template: ${path.relative(PROJECT_ROOT, templateFile)} (the simulated demo car; --config-template FILE for a real vehicle's buses)`);
  }
  // What the template must give and what provisioning fills in: src/provision/template.ts.
  const made = bundleConfigFromTemplate(templateFile, {
    device: options.device,
    ...(options.broker !== undefined ? { broker: options.broker } : {}),
    layout: BUNDLE,
  });
  notes.push(...made.notes);
  const { config, copies } = made;
  // The bundle as the agent will load it on the car, at the paths flash installs it to.
  try {
    parseDeviceConfig(config, { file: path.join(bundle, BUNDLE.config), baseDir: bundle, checkFiles: false });
  } catch (err) {
    throw new ProvisionError(`the config made from ${templateFile} is not valid: ${(err as Error).message.split('\n').join(' ')}`);
  }
  return { ...(signing ? { signing } : {}), brokerCa, commandCa, templateFile, config, copies, notes };
}

/** The device ID a bundle folder already belongs to (from its config, certificate or CSR), if any. */
function bundleOwner(bundle: string): string | undefined {
  try {
    const config = JSON.parse(readFileSync(path.join(bundle, BUNDLE.config), 'utf8')) as { deviceId?: unknown };
    if (typeof config.deviceId === 'string') return config.deviceId;
  } catch {
    // next source
  }
  try {
    return cn(new X509Certificate(readFileSync(path.join(bundle, BUNDLE.cert))));
  } catch {
    // next source
  }
  try {
    return readCsr(readFileSync(path.join(bundle, BUNDLE.csr), 'utf8')).commonName;
  } catch {
    return undefined;
  }
}

function checkBundleFolder(bundle: string, device: string): void {
  if (!existsSync(bundle)) return;
  if (!lstatSync(bundle).isDirectory()) throw new ProvisionError(`--bundle ${bundle} is not a folder`);
  const owner = bundleOwner(bundle);
  if (owner !== undefined && owner !== device) throw new ProvisionError(`--bundle ${bundle} holds device '${owner}', not '${device}': use another folder`);
}

function makeBundle(bundle: string, options: ProvisionOptions, say: Say): void {
  checkBundleFolder(bundle, options.device);
  const inputs = readInputs(bundle, options);
  const count = new ChangeCount();
  const file = (rel: string): string => path.join(bundle, rel);
  const note = (change: Change, rel: string, detail = ''): void => {
    count.add(change);
    if (change !== 'unchanged') say(`  ${change} ${rel}${detail}`);
  };
  mkdirSync(path.dirname(bundle), { recursive: true });
  note(putDir(bundle, { mode: 0o700 }), `${bundle}/`);
  moveLegacyIdentity(bundle, say, count);
  note(putDir(file(BUNDLE.certsDir), { mode: 0o700 }), `${BUNDLE.certsDir}/`);
  note(putDir(file(BUNDLE.identityDir), { mode: 0o700 }), `${BUNDLE.identityDir}/`);

  // The device key: made once, kept on every later run (a new key is a new identity: --new-key).
  let keyPem: string | undefined;
  if (existsSync(file(BUNDLE.key)) && !options.newKey) {
    keyPem = readFileSync(file(BUNDLE.key), 'utf8');
    try {
      createPrivateKey(keyPem);
    } catch (err) {
      throw new ProvisionError(`${file(BUNDLE.key)} is not a usable private key (${(err as Error).message}); --new-key replaces it`);
    }
    const mode = statSync(file(BUNDLE.key)).mode & 0o777;
    if (mode !== 0o600) say(`  ${BUNDLE.key}: mode ${octal(mode)} -> 0600`);
    note(putFile(file(BUNDLE.key), keyPem, { mode: 0o600 }), BUNDLE.key);
  } else {
    const replaced = existsSync(file(BUNDLE.key));
    keyPem = createDeviceKey();
    note(
      putFile(file(BUNDLE.key), keyPem, { mode: 0o600 }),
      BUNDLE.key,
      replaced ? ' (new key: --new-key)' : ' (0600; it leaves this machine only inside the image flash writes)',
    );
  }
  const csrPem = createCsr(options.device, keyPem);
  note(putFile(file(BUNDLE.csr), csrPem, { mode: 0o644 }), BUNDLE.csr, ` (CN=${options.device})`);
  if (options.newKey && existsSync(file(BUNDLE.cert))) {
    // A certificate for the old key is worse than none: flash would install a pair that cannot connect.
    rmSync(file(BUNDLE.cert));
    count.removed++;
    say(`  removed ${BUNDLE.cert} (it was for the old key)`);
  }

  if (inputs.signing) {
    const reason = certificateToReplace(file(BUNDLE.cert), keyPem, options.device, inputs.signing);
    if (reason !== null) {
      // An hour back, for a car whose clock is a little behind the machine that provisions it.
      const notBefore = new Date(Date.now() - 3_600_000);
      const notAfter = new Date(notBefore.getTime() + (options.validDays ?? DEFAULT_VALID_DAYS) * 86_400_000);
      const leafPem = issueDeviceCertificate(inputs.signing.authority, readSigningRequest(csrPem), options.device, { notBefore, notAfter }).certPem;
      const chain = [leafPem.trim(), ...inputs.signing.intermediates.map((c) => c.toString().trim())].join('\n');
      const leaf = new X509Certificate(leafPem);
      note(
        putFile(file(BUNDLE.cert), `${chain}\n`, { mode: 0o644 }),
        BUNDLE.cert,
        ` (${reason === 'issued' ? '' : `${reason}; `}CN=${options.device}, issued by ${cn(inputs.signing.cert)}, valid until ${day(leaf.validTo)})`,
      );
    }
  } else if (existsSync(file(BUNDLE.cert)) && !new X509Certificate(readFileSync(file(BUNDLE.cert))).checkPrivateKey(createPrivateKey(keyPem))) {
    throw new ProvisionError(`${file(BUNDLE.cert)} does not carry the key ${file(BUNDLE.key)}: remove it, or start over with --new-key`);
  }

  note(putFile(file(BUNDLE.brokerCa), inputs.brokerCa.pem, { mode: 0o644 }), BUNDLE.brokerCa);
  note(putFile(file(BUNDLE.commandCa), inputs.commandCa.pem, { mode: 0o644 }), BUNDLE.commandCa);
  for (const [rel, source] of inputs.copies) {
    note(putDir(file(path.dirname(rel)), { mode: 0o755 }), `${path.dirname(rel)}/`);
    note(putFile(file(rel), readFileSync(source), { mode: 0o644 }), rel);
  }
  note(putFile(file(BUNDLE.config), `${JSON.stringify(inputs.config, null, 2)}\n`, { mode: 0o644 }), BUNDLE.config);
  note(putFile(file(BUNDLE.unit), serviceUnit(options.unit), { mode: 0o644 }), BUNDLE.unit);
  for (const line of inputs.notes) say(`  ${line}`);

  // The bundle must load as the agent will load it on the car.
  loadDeviceConfig(file(BUNDLE.config));
  const complete = existsSync(file(BUNDLE.cert));
  if (complete) checkIdentity(bundle, undefined, say);
  for (const w of warnings) say(w);
  if (complete) {
    say(`provision: bundle for ${options.device} complete in ${bundle} (${count.text()})`);
    say(`next: sudo scripts/flash --bundle ${bundle} --target <mounted root file system>; then delete the bundle (it holds the device key)`);
  } else {
    say(`provision: bundle for ${options.device} in ${bundle} awaits its certificate (${count.text()})`);
    say(
      `next: have ${file(BUNDLE.csr)} signed (client certificate, CN=${options.device}), then: scripts/provision --device ${options.device} --bundle ${bundle} --cert <signed.crt>`,
    );
  }
}

/**
 * A bundle made before the identity had its own folder: its key, CSR and certificate move from certs/ to identity/
 * (renamed, so the key is kept), and its config is pointed at them.
 */
function moveLegacyIdentity(bundle: string, say: Say, count: ChangeCount): void {
  const found = (Object.keys(LEGACY_IDENTITY) as (keyof typeof LEGACY_IDENTITY)[]).filter((k) => existsSync(path.join(bundle, LEGACY_IDENTITY[k])));
  if (found.length === 0) return;
  if (existsSync(path.join(bundle, BUNDLE.key))) {
    throw new ProvisionError(
      `--bundle ${bundle} holds a key in ${LEGACY_IDENTITY.key} and in ${BUNDLE.key}: remove the one that is not the car's (${BUNDLE.identityDir}/ is where it belongs)`,
    );
  }
  count.add(putDir(path.join(bundle, BUNDLE.identityDir), { mode: 0o700 }));
  for (const k of found) {
    renameSync(path.join(bundle, LEGACY_IDENTITY[k]), path.join(bundle, BUNDLE[k]));
    count.updated++;
  }
  const configFile = path.join(bundle, BUNDLE.config);
  if (existsSync(configFile)) {
    const config = JSON.parse(readFileSync(configFile, 'utf8')) as { uplink?: Record<string, unknown> };
    if (config.uplink?.certFile === LEGACY_IDENTITY.cert) config.uplink.certFile = BUNDLE.cert;
    if (config.uplink?.keyFile === LEGACY_IDENTITY.key) config.uplink.keyFile = BUNDLE.key;
    count.add(putFile(configFile, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o644 }));
  }
  say(
    `  moved ${found.map((k) => path.basename(LEGACY_IDENTITY[k])).join(', ')} from ${BUNDLE.certsDir}/ to ${BUNDLE.identityDir}/ (on the car the agent may write its identity, never the CAs beside it)`,
  );
}

/** Why the bundle's certificate must be (re-)issued by `ca`, or null when the one there is good. */
function certificateToReplace(certFile: string, keyPem: string, device: string, ca: SigningCa): string | null {
  if (!existsSync(certFile)) return 'issued';
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(readFileSync(certFile));
  } catch {
    return 're-issued: the certificate there could not be parsed';
  }
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) return 're-issued: the certificate there was for another key';
  if (cn(leaf) !== device) return `re-issued: the certificate there named '${cn(leaf)}'`;
  if (!(leaf.checkIssued(ca.cert) && leaf.verify(ca.cert.publicKey))) return 're-issued: the certificate there is from another CA';
  const daysLeft = (new Date(leaf.validTo).getTime() - Date.now()) / 86_400_000;
  if (daysLeft < RENEW_BEFORE_DAYS) return `renewed: the certificate there ${daysLeft < 0 ? 'expired' : `expires in ${Math.floor(daysLeft)} days`}`;
  return null;
}

/**
 * The bundle's identity as the agent will check it at start (key matches, valid, client authentication, the chain
 * rules of src/pki/certificate-chain.ts); warns when certificate rotation would refuse it later (the agent checks a
 * rotated certificate against the broker CA, with the same rules).
 */
function checkIdentity(bundle: string, issuerFile: string | undefined, say: Say, certFile = path.join(bundle, BUNDLE.cert)): void {
  const files = { certFile, keyFile: path.join(bundle, BUNDLE.key), caFile: path.join(bundle, BUNDLE.brokerCa) };
  try {
    const identity = loadIdentity({ ...files, ...(issuerFile !== undefined ? { issuerFile } : {}) });
    for (const w of identity.warnings) say(`warning: ${w}`);
  } catch (err) {
    if (!(err instanceof IdentityError)) throw err;
    if (err.problem === 'mismatch')
      throw new ProvisionError(`${certFile} does not carry the bundle's key: it was not signed from ${path.join(bundle, BUNDLE.csr)}`);
    if (err.rule === 'untrusted' && issuerFile !== undefined)
      throw new ProvisionError(
        `${certFile} is not issued by ${issuerFile}${issuerFile === files.caFile ? " (the bundle's broker CA; pass --ca with the CA that signed it)" : ''}`,
      );
    throw new ProvisionError(err.message);
  }
  try {
    loadIdentity({ ...files, requireIssuer: true });
  } catch (err) {
    if (!(err instanceof IdentityError)) throw err;
    say(
      err.rule === 'untrusted'
        ? `warning: the device certificate is not issued by a CA in ${BUNDLE.brokerCa}: the car connects, but certificate rotation checks the new ` +
            `certificate against that file and will refuse it; add the issuing CA to ${BUNDLE.brokerCa} if rotation is to work`
        : `warning: certificate rotation checks a new certificate against ${BUNDLE.brokerCa} and would refuse one like this: ${err.message}`,
    );
  }
}

/** `provision --cert`: checks the signed certificate against the bundle's key, device and CA, and adds it. */
function completeBundle(bundle: string, options: ProvisionOptions, say: Say): void {
  checkBundleFolder(bundle, options.device);
  if (existsSync(bundle)) moveLegacyIdentity(bundle, say, new ChangeCount());
  const keyFile = path.join(bundle, BUNDLE.key);
  if (!existsSync(keyFile)) throw new ProvisionError(`--bundle ${bundle} has no ${BUNDLE.key}: make the bundle first (--csr-only)`);
  const certFile = path.resolve(options.cert!);
  const text = readInputFile('--cert', certFile);
  const chain = certificatesIn('--cert', certFile, text);
  const name = cn(chain[0]!);
  if (name !== options.device) throw new ProvisionError(`--cert ${certFile} is for '${name ?? '(no CN)'}', not for device '${options.device}'`);
  const issuerFile = options.ca !== undefined ? path.resolve(options.ca) : path.join(bundle, BUNDLE.brokerCa);
  if (options.ca !== undefined) readCaFile('--ca', issuerFile);
  checkIdentity(bundle, issuerFile, say, certFile);
  const change = putFile(path.join(bundle, BUNDLE.cert), normalizePem(text), { mode: 0o644 });
  if (change !== 'unchanged') say(`  ${change} ${BUNDLE.cert} (CN=${name}, issued by ${issuerCn(chain[0]!)}, valid until ${day(chain[0]!.validTo)})`);
  say(`provision: bundle for ${options.device} complete in ${bundle} (${change === 'unchanged' ? 'nothing changed' : `1 ${change}`})`);
  say(`next: sudo scripts/flash --bundle ${bundle} --target <mounted root file system>; then delete the bundle (it holds the device key)`);
}
