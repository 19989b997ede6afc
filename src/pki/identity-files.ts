/**
 * The device's certificate and key files as a pair that changes (certificate rotation) without ever leaving the car
 * unable to connect. Two files cannot be renamed in one step, so the change is made so that any moment a power cut
 * can stop it at is repaired at the next start:
 *
 *   stage:    <cert>.new and <key>.new written and fsynced beside the live files
 *   swap:     the live pair copied to <cert>.old and <key>.old, then <key>.new renamed over <key>, then <cert>.new
 *             over <cert>
 *   commit:   the .old pair deleted once the new one has connected
 *   rollback: the .old pair renamed back, key first
 *
 * Each .new and .old file is written whole through src/store/atomic-file.ts (a temporary `<file>.tmp` beside it,
 * fsynced, renamed, the folder fsynced), so a .new or .old file is never torn; only the renames of the swap and the
 * rollback above are this module's own.
 *
 * repairIdentityFiles (at start, before the identity is loaded) finds a pair that does not match (stopped between
 * the two renames) and completes it with whichever candidate matches the key in place. A swap that was never
 * committed (the new pair had not connected yet) is rolled back to the previous pair, which had. Leftovers of a
 * rotation that never swapped are removed, and so are the temporary files of a write a power cut stopped (part of a
 * key: one more key to steal).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { atomicWriteFile, syncFolder } from '../store/atomic-file.js';

export interface IdentityPair {
  certFile: string;
  keyFile: string;
}

const suffixed = (pair: IdentityPair, suffix: string): IdentityPair => ({ certFile: pair.certFile + suffix, keyFile: pair.keyFile + suffix });
const filesOf = (pair: IdentityPair): string[] => [pair.certFile, pair.keyFile];
/** The temporary name each .new and .old file is written under: fixed, so that what a power cut left is found. */
const TEMPORARY_SUFFIX = '.tmp';
const temporaryFiles = (pair: IdentityPair): string[] => ['.new', '.old'].flatMap((suffix) => filesOf(suffixed(pair, suffix + TEMPORARY_SUFFIX)));

/** Writes the new pair beside the live one (<file>.new), the key readable by its owner only. */
export function stageIdentity(pair: IdentityPair, certPem: string, keyPem: string): IdentityPair {
  const staged = suffixed(pair, '.new');
  writeDurably(staged.keyFile, keyPem, 0o600);
  writeDurably(staged.certFile, certPem, 0o644);
  return staged;
}

/** Puts the staged pair in place, keeping the live one as <file>.old for a rollback. */
export function swapIdentity(pair: IdentityPair): void {
  const staged = suffixed(pair, '.new');
  const old = suffixed(pair, '.old');
  copyDurably(pair.keyFile, old.keyFile, 0o600);
  copyDurably(pair.certFile, old.certFile, 0o644);
  renameSync(staged.keyFile, pair.keyFile);
  renameSync(staged.certFile, pair.certFile);
  syncDirs(pair);
}

/** Puts the previous pair back (after swapIdentity). */
export function rollbackIdentity(pair: IdentityPair): void {
  const old = suffixed(pair, '.old');
  renameSync(old.keyFile, pair.keyFile);
  renameSync(old.certFile, pair.certFile);
  syncDirs(pair);
}

/** Forgets the previous pair once the new one works: an old key left on disk is one more key to steal. */
export function commitIdentity(pair: IdentityPair): void {
  for (const file of filesOf(suffixed(pair, '.old'))) rmSync(file, { force: true });
  syncDirs(pair);
}

/** Removes a staged pair that was never swapped in. */
export function discardStaged(pair: IdentityPair): void {
  for (const file of filesOf(suffixed(pair, '.new'))) rmSync(file, { force: true });
}

/** Removes the temporary files of .new/.old writes a power cut stopped; returns their names. */
function removeTemporaryFiles(pair: IdentityPair): string[] {
  const found = temporaryFiles(pair).filter((file) => existsSync(file));
  for (const file of found) rmSync(file, { force: true });
  return found.map((file) => path.basename(file));
}

/**
 * Repairs what a power cut in the middle of a rotation left (see the file comment); returns a line saying what it
 * did, or undefined when there was nothing to repair. A pair that matches is never touched.
 */
export function repairIdentityFiles(pair: IdentityPair): string | undefined {
  const staged = suffixed(pair, '.new');
  const old = suffixed(pair, '.old');
  const cutShort = removeTemporaryFiles(pair);
  if (![staged.certFile, staged.keyFile, old.certFile, old.keyFile].some((f) => existsSync(f))) {
    return cutShort.length > 0 ? `identity: removed what a certificate rotation cut short while writing left (${cutShort.join(', ')})` : undefined;
  }
  const whole = matches(pair.certFile, pair.keyFile);
  // Swapped (or swapping) and never committed: the new pair was not seen to connect before the power went. The
  // previous one was, so it comes back (the rotation is reported interrupted and can be run again) while it works.
  if (matches(old.certFile, old.keyFile) && stillValid(old.certFile)) {
    rollbackIdentity(pair);
    discardStaged(pair);
    const name = path.basename(pair.certFile);
    return whole
      ? `identity: a certificate rotation was cut short before the new certificate had connected: the previous one (${name}) is back in use`
      : `identity: a certificate rotation was cut short during the swap: the previous certificate (${name}) is back in use`;
  }
  if (whole) {
    if (existsSync(old.certFile) || existsSync(old.keyFile)) {
      commitIdentity(pair);
      discardStaged(pair);
      return `identity: a certificate rotation was cut short after the swap; the previous pair is unusable, so the new one stays (${path.basename(pair.certFile)})`;
    }
    // The rotation never swapped: the live pair stands, the staged one goes.
    discardStaged(pair);
    return `identity: removed the staged pair of a certificate rotation that did not finish (${staged.certFile})`;
  }
  // Stopped during a rollback: the key in place is the truth; the certificate that goes with it is beside it.
  for (const candidate of [staged.certFile, old.certFile]) {
    if (existsSync(candidate) && matches(candidate, pair.keyFile)) {
      renameSync(candidate, pair.certFile);
      syncDirs(pair);
      return `identity: completed an interrupted certificate rotation: ${pair.certFile} restored from ${path.basename(candidate)}`;
    }
  }
  for (const candidate of [old.keyFile, staged.keyFile]) {
    if (existsSync(candidate) && matches(pair.certFile, candidate)) {
      renameSync(candidate, pair.keyFile);
      syncDirs(pair);
      return `identity: completed an interrupted certificate rotation: ${pair.keyFile} restored from ${path.basename(candidate)}`;
    }
  }
  return undefined; // nothing fits: loadIdentity reports the mismatch, naming the files
}

function stillValid(certFile: string, now = Date.now()): boolean {
  try {
    const cert = new X509Certificate(readFileSync(certFile));
    return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
  } catch {
    return false;
  }
}

function matches(certFile: string, keyFile: string): boolean {
  try {
    return new X509Certificate(readFileSync(certFile)).checkPrivateKey(createPrivateKey(readFileSync(keyFile)));
  } catch {
    return false;
  }
}

/** `file` replaced whole with `text`, mode exactly `mode`, durably (its folder fsynced too). */
function writeDurably(file: string, text: string, mode: number): void {
  atomicWriteFile(file, text, { mode, temporary: file + TEMPORARY_SUFFIX });
}

function copyDurably(from: string, to: string, mode: number): void {
  writeDurably(to, readFileSync(from, 'utf8'), mode);
}

function syncDirs(pair: IdentityPair): void {
  for (const dir of new Set([path.dirname(pair.certFile), path.dirname(pair.keyFile)])) syncFolder(dir);
}
