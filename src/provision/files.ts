/**
 * File operations of the provisioning tools (scripts/dev-pki, provision, flash, install-service): each one writes only
 * what differs, so a second run changes nothing (not even a timestamp), and sets mode and owner explicitly rather than
 * trusting the umask. A file is replaced by writing a temporary file beside it and renaming it over: a target is never
 * left half-written, and a secret is created with its final mode, so it is not readable by others even for a moment.
 *
 * Paths inside a target root file system go through `resolveInRoot`: an image's own symbolic links (`/var` ->
 * `/data/var` on a read-only root) must resolve inside the image, never on the machine preparing it. What is read from
 * a target goes through `readImageFile`: only a regular file of bounded size, opened without following a final link
 * and without blocking, so a hostile image (a link to /dev/zero, a FIFO, a huge sparse file) is refused in one line.
 */
import { chmodSync, chownSync, lchownSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import { readRegularFile, RegularFileError, type ReadLimit } from '../config/regular-file.js';
import { atomicWriteFile } from '../store/atomic-file.js';

/**
 * A problem with the tool's input or target: the CLI prints its message as one line, then each of `details` on a line
 * of its own (the problems of a config template, all at once), and exits with `exitCode` (1 unless said otherwise).
 */
export class ProvisionError extends Error {
  override readonly name = 'ProvisionError';
  readonly details: readonly string[];
  readonly exitCode: number;

  constructor(message: string, options: { details?: readonly string[]; exitCode?: number } = {}) {
    super(message);
    this.details = options.details ?? [];
    this.exitCode = options.exitCode ?? 1;
  }
}

/** The text of a file an option names; a missing or unreadable file is one line naming the option. */
export function readInputFile(option: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ProvisionError(`${option} ${file}: no such file`);
    if (code === 'EISDIR') throw new ProvisionError(`${option} ${file}: is a folder, not a file`);
    throw new ProvisionError(`${option} ${file}: cannot be read (${code ?? (err as Error).message})`);
  }
}

export type Change = 'created' | 'updated' | 'unchanged';

export interface Owner {
  uid: number;
  gid: number;
}

export interface Placement {
  /** Permission bits, e.g. 0o600. */
  mode: number;
  /** Numeric owner (in the target's own user database); default: left as the process creates it. */
  owner?: Owner;
}

/** Tallies what a run did, for its closing line ("3 created, 1 updated" or "nothing changed"). */
export class ChangeCount {
  created = 0;
  updated = 0;
  removed = 0;

  add(change: Change): Change {
    if (change === 'created') this.created++;
    else if (change === 'updated') this.updated++;
    return change;
  }

  get changed(): boolean {
    return this.created + this.updated + this.removed > 0;
  }

  text(): string {
    if (!this.changed) return 'nothing changed';
    return [
      this.created > 0 ? `${this.created} created` : '',
      this.updated > 0 ? `${this.updated} updated` : '',
      this.removed > 0 ? `${this.removed} removed` : '',
    ]
      .filter(Boolean)
      .join(', ');
  }
}

function lstatOrUndefined(file: string): Stats | undefined {
  try {
    return lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Sets mode and owner where they differ; true when something changed. */
function fixMetadata(file: string, stats: Stats, placement: Placement): boolean {
  let changed = false;
  if (placement.owner && (stats.uid !== placement.owner.uid || stats.gid !== placement.owner.gid)) {
    chownSync(file, placement.owner.uid, placement.owner.gid);
    changed = true;
  }
  // After chown: changing the owner clears set-id bits, and the mode must be the one asked for.
  if ((stats.mode & 0o7777) !== placement.mode) {
    chmodSync(file, placement.mode);
    changed = true;
  }
  return changed;
}

/**
 * Makes `file` hold exactly `content` with the given mode and owner. An existing symbolic link in its place is
 * replaced (never written through); a folder there is an error.
 */
export function putFile(file: string, content: Buffer | string, placement: Placement): Change {
  const data = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
  const stats = lstatOrUndefined(file);
  if (stats?.isDirectory()) throw new ProvisionError(`${file} is a folder where a file belongs`);
  if (stats?.isFile() && stats.size === data.length && sameContent(file, data)) {
    return fixMetadata(file, stats, placement) ? 'updated' : 'unchanged';
  }
  // The secret is never readable by anyone else, not even before its mode is set; the old file stays whole until
  // the new one is complete and synced.
  atomicWriteFile(file, data, { mode: placement.mode, ...(placement.owner ? { owner: placement.owner } : {}) });
  return stats === undefined ? 'created' : 'updated';
}

/** Whether the regular file `file` holds `data` (read without following a link, at most data.length bytes). */
function sameContent(file: string, data: Buffer): boolean {
  try {
    return readRegularFile(file, { maxBytes: data.length }).equals(data);
  } catch (err) {
    if (err instanceof RegularFileError) return false; // changed under us: it is replaced
    throw err;
  }
}

/** Makes `dir` a folder with the given mode and owner (its parent must exist). A file or link in its place is an error. */
export function putDir(dir: string, placement: Placement): Change {
  const stats = lstatOrUndefined(dir);
  if (stats === undefined) {
    mkdirSync(dir, { mode: 0o700 });
    if (placement.owner) chownSync(dir, placement.owner.uid, placement.owner.gid);
    chmodSync(dir, placement.mode);
    return 'created';
  }
  if (!stats.isDirectory()) throw new ProvisionError(`${dir} is not a folder (${stats.isSymbolicLink() ? 'a symbolic link' : 'a file'} is in its place)`);
  return fixMetadata(dir, stats, placement) ? 'updated' : 'unchanged';
}

/** Makes `link` a symbolic link to `target` (replacing a file or another link there). */
export function putSymlink(link: string, target: string, owner?: Owner): Change {
  const stats = lstatOrUndefined(link);
  if (stats?.isSymbolicLink() && readlinkSync(link) === target) {
    if (owner && (stats.uid !== owner.uid || stats.gid !== owner.gid)) {
      lchown(link, owner);
      return 'updated';
    }
    return 'unchanged';
  }
  if (stats?.isDirectory()) throw new ProvisionError(`${link} is a folder where a symbolic link belongs`);
  if (stats) rmSync(link, { force: true });
  symlinkSync(target, link);
  if (owner) lchown(link, owner);
  return stats === undefined ? 'created' : 'updated';
}

function lchown(link: string, owner: Owner): void {
  // The link itself, not what it points to (which may not exist on this machine).
  lchownSync(link, owner.uid, owner.gid);
}

/**
 * The real location of `relative` inside the root file system `root`, following the image's own symbolic links as
 * the device will (an absolute link target starts again at `root`, `..` never climbs above it). The last component
 * need not exist; links among the existing components are followed.
 */
export function resolveInRoot(root: string, relative: string): string {
  const rootReal = path.resolve(root);
  const pending = relative.split('/').filter((part) => part !== '' && part !== '.');
  const done: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      done.pop();
      continue;
    }
    const candidate = path.join(rootReal, ...done, part);
    const stats = lstatOrUndefined(candidate);
    if (stats?.isSymbolicLink()) {
      if (++hops > 40) throw new ProvisionError(`too many symbolic links resolving /${relative} in ${root}`);
      const target = readlinkSync(candidate);
      const parts = target.split('/').filter((p) => p !== '' && p !== '.');
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...parts);
      continue;
    }
    done.push(part);
  }
  return path.join(rootReal, ...done);
}

/**
 * `relative` inside `root` with the image's links among its folders followed (as resolveInRoot), but not a link in
 * its own place: for files the tools themselves install, where a link is replaced (putFile), never written through.
 */
export function resolveParentInRoot(root: string, relative: string): string {
  const parent = path.posix.dirname(relative);
  const base = path.posix.basename(relative);
  return path.join(parent === '.' || parent === '/' ? path.resolve(root) : resolveInRoot(root, parent), base);
}

/** ` (a link to /x in the image)` when the image's links led `/relative` elsewhere (`real`), else '': for messages. */
export function whereLinksLead(root: string, relative: string, real: string): string {
  const inImage = `/${path.relative(path.resolve(root), real)}`;
  return inImage === `/${relative.replace(/^\/+/, '')}` ? '' : ` (a link to ${inImage} in the image)`;
}

/** The most a file read from a target may hold (user databases, login.defs, the agent's config and key). */
export const IMAGE_FILE_MAX_BYTES = 16 * 1024 * 1024;

/**
 * Reads `/relative` of the root file system `root`: undefined when it does not exist; a ProvisionError naming it when
 * it is not a regular file within `limit` (default IMAGE_FILE_MAX_BYTES). `followLink: true` (default): the image's
 * own file (/etc/passwd, /usr/bin/node), whose links are followed inside the image as the device will; false: a file
 * these tools install, where a link in its place is an error, never followed.
 */
export function readImageFile(root: string, relative: string, options: { limit?: ReadLimit; followLink?: boolean } = {}): Buffer | undefined {
  const rel = relative.replace(/^\/+/, '');
  const real = options.followLink === false ? resolveParentInRoot(root, rel) : resolveInRoot(root, rel);
  try {
    return readRegularFile(real, options.limit ?? { maxBytes: IMAGE_FILE_MAX_BYTES });
  } catch (err) {
    if (!(err instanceof RegularFileError)) throw err;
    if (err.problem === 'missing') return undefined;
    throw new ProvisionError(`/${rel}${whereLinksLead(root, rel, real)} in ${root} ${err.message}: only regular files are read from a target`);
  }
}

/** `mkdir -p` of `relative` inside `root`, each missing folder created with `placement` (usually root-owned 0755). */
export function ensureDirInRoot(root: string, relative: string, placement: Placement, count?: ChangeCount): string {
  const parts = relative.split('/').filter(Boolean);
  let sofar = '';
  let real = path.resolve(root);
  for (const part of parts) {
    sofar = sofar ? `${sofar}/${part}` : part;
    real = resolveInRoot(root, sofar);
    if (lstatOrUndefined(real) === undefined) {
      mkdirSync(real, { mode: 0o700 });
      if (placement.owner) chownSync(real, placement.owner.uid, placement.owner.gid);
      chmodSync(real, placement.mode);
      count?.add('created');
    } else if (!lstatSync(real).isDirectory()) {
      throw new ProvisionError(`/${sofar} in ${root} is not a folder`);
    }
  }
  return real;
}
