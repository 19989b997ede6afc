/**
 * The agent's dedicated system account in a target root file system: its user and group in etc/passwd, etc/group
 * (and etc/shadow, etc/gshadow when the image has them), membership of the serial-port group, created only when
 * missing, with IDs free in that image (not on the machine preparing it). What useradd --system would do, without
 * needing it (or a chroot) for another architecture. The databases are read as regular files of bounded size only
 * (readImageFile): a FIFO or a link out of the image in their place is refused in one line, never waited on.
 */
import { lstatSync } from 'node:fs';
import { ChangeCount, ProvisionError, putFile, readImageFile, resolveInRoot, whereLinksLead } from './files.js';

export interface AccountRequest {
  user: string;
  group: string;
  /** Home folder (the state directory), and a short description for the GECOS field. */
  home: string;
  gecos: string;
  /** Groups the user must belong to, e.g. dialout; created when the image lacks them. */
  supplementaryGroups: string[];
}

export interface ServiceAccount {
  user: string;
  group: string;
  uid: number;
  gid: number;
  /** Supplementary group -> gid in the image. */
  supplementary: Record<string, number>;
}

/** Debian's defaults for system accounts (login.defs SYS_UID_MIN/MAX, SYS_GID_MIN/MAX). */
const DEFAULT_SYSTEM_RANGE = { min: 100, max: 999 };
/** Debian's fixed gid of dialout, used when the image has no such group and 20 is free. */
const WELL_KNOWN_GIDS: Record<string, number> = { dialout: 20 };

/** A user or group name as shadow-utils accepts it for system accounts. */
export const ACCOUNT_NAME_PATTERN = /^[a-z_][a-z0-9_-]{0,30}$/;

/**
 * Accounts the agent must never run as, whatever the image holds: root (every privilege the unit drops would be
 * back), nobody and nogroup (shared by every service that wants "no one", so all of them could read the device key).
 */
const SHARED_ACCOUNTS = new Set(['root', 'nobody', 'nogroup']);

/** Refuses a service user or group name the agent must never run as (SHARED_ACCOUNTS). */
export function checkServiceUserName(name: string, what: string): void {
  if (SHARED_ACCOUNTS.has(name)) {
    const why = name === 'root' ? `'root': the agent must not run as root` : `'${name}' is shared by many services`;
    throw new ProvisionError(`${what}: ${why}: the agent runs as its own unprivileged account, which alone can read the device key`);
  }
}

interface DbFile {
  /** Path as named in the image (etc/passwd), for messages. */
  name: string;
  real: string;
  lines: string[];
  dirty: boolean;
}

function readDb(root: string, name: string, required: boolean): DbFile | undefined {
  const real = resolveInRoot(root, name);
  const content = readImageFile(root, name);
  if (content === undefined) {
    if (required) throw new ProvisionError(`${root} has no /${name}${whereLinksLead(root, name, real)}: is it a root file system?`);
    return undefined;
  }
  const text = content.toString('utf8');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return { name, real, lines, dirty: false };
}

/** Writes a changed database back with the mode and owner it had (etc/shadow stays 0640 root:shadow). */
function writeDb(db: DbFile | undefined, count: ChangeCount): void {
  if (!db || !db.dirty) return;
  const stats = lstatSync(db.real);
  count.add(putFile(db.real, `${db.lines.join('\n')}\n`, { mode: stats.mode & 0o7777, owner: { uid: stats.uid, gid: stats.gid } }));
}

function fields(line: string): string[] {
  return line.split(':');
}

/** Entries (not comments, not NIS '+'/'-' lines) as field arrays, with their line index. */
function entries(db: DbFile): { index: number; f: string[] }[] {
  const out: { index: number; f: string[] }[] = [];
  db.lines.forEach((line, index) => {
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) return;
    out.push({ index, f: fields(line) });
  });
  return out;
}

function find(db: DbFile | undefined, name: string): { index: number; f: string[] } | undefined {
  return db ? entries(db).find((e) => e.f[0] === name) : undefined;
}

function systemRange(root: string, kind: 'UID' | 'GID'): { min: number; max: number } {
  const content = readImageFile(root, 'etc/login.defs');
  if (content === undefined) return DEFAULT_SYSTEM_RANGE;
  const text = content.toString('utf8');
  const value = (key: string): number | undefined => {
    const m = new RegExp(`^\\s*${key}\\s+(\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const min = value(`SYS_${kind}_MIN`) ?? DEFAULT_SYSTEM_RANGE.min;
  const max = value(`SYS_${kind}_MAX`) ?? DEFAULT_SYSTEM_RANGE.max;
  return min <= max ? { min, max } : DEFAULT_SYSTEM_RANGE;
}

/** The highest free ID in the range, as useradd --system picks it (the low IDs are left to the distribution). */
function highestFree(range: { min: number; max: number }, ...taken: Set<number>[]): number | undefined {
  for (let id = range.max; id >= range.min; id--) if (taken.every((set) => !set.has(id))) return id;
  return undefined;
}

function idsOf(db: DbFile, field: number): Set<number> {
  return new Set(
    entries(db)
      .map((e) => Number(e.f[field]))
      .filter((n) => Number.isInteger(n)),
  );
}

function firstExisting(root: string, candidates: string[], fallback: string): string {
  for (const candidate of candidates) {
    try {
      lstatSync(resolveInRoot(root, candidate.slice(1)));
      return candidate;
    } catch {
      // next
    }
  }
  return fallback;
}

/**
 * An existing user is the agent's when it is a system account (uid in the image's system range, not 0) whose home is
 * the agent's state folder, as these tools and the sysusers.d entry create it. Anything else belongs to a person
 * (uid >= 1000), to everyone (nobody) or to another service.
 */
function checkOwnUser(f: string[], request: AccountRequest, range: { min: number; max: number }): void {
  const uid = Number(f[2]);
  const name = request.user;
  if (uid === 0) throw new ProvisionError(`the service user '${name}' has uid 0 in the image: the agent must not run as root`);
  if (!Number.isInteger(uid) || uid < range.min || uid > range.max) {
    throw new ProvisionError(
      `the image already has a user '${name}' with uid ${f[2]}, outside its system range ${range.min}-${range.max}: a person's or a shared account, ` +
        `which would be able to read the device key; choose another user name (provision --user) or remove that account`,
    );
  }
  if (f[5] !== request.home) {
    throw new ProvisionError(
      `the image already has a system user '${name}' (uid ${uid}) whose home is ${f[5] || '(none)'}, not ${request.home}: another service's account, ` +
        `which would be able to read the device key; choose another user name (provision --user), or set its home to ${request.home} if it is the agent's`,
    );
  }
}

/** An existing group is the agent's when it is a system group (not 0) that no other user has, as primary or member. */
function checkOwnGroup(f: string[], request: AccountRequest, range: { min: number; max: number }, passwd: DbFile): void {
  const gid = Number(f[2]);
  const name = request.group;
  if (!Number.isInteger(gid) || gid === 0 || gid < range.min || gid > range.max) {
    throw new ProvisionError(
      `the image already has a group '${name}' with gid ${f[2]}, outside its system range ${range.min}-${range.max}: the agent's config would be readable by its members; choose another user name (provision --user)`,
    );
  }
  const others = [
    ...(f[3] ?? '').split(',').filter(Boolean),
    ...entries(passwd)
      .filter((e) => Number(e.f[3]) === gid)
      .map((e) => e.f[0]!),
  ].filter((user) => user !== request.user);
  if (others.length > 0) {
    throw new ProvisionError(
      `the image already has a group '${name}' shared with ${[...new Set(others)].join(', ')}: the agent's config would be readable by them; choose another user name (provision --user)`,
    );
  }
}

/**
 * Makes sure the account exists in the image; returns its IDs. Says one line per thing it adds; adds nothing that is
 * already there (so a second run leaves every file as it was).
 */
export function ensureServiceAccount(root: string, request: AccountRequest, say: (line: string) => void, count: ChangeCount): ServiceAccount {
  for (const name of [request.user, request.group, ...request.supplementaryGroups]) {
    if (!ACCOUNT_NAME_PATTERN.test(name))
      throw new ProvisionError(`'${name}' cannot be a system user or group name (lower-case letters, digits, '_' and '-', at most 31)`);
  }
  const passwd = readDb(root, 'etc/passwd', true)!;
  const group = readDb(root, 'etc/group', true)!;
  const shadow = readDb(root, 'etc/shadow', false);
  const gshadow = readDb(root, 'etc/gshadow', false);
  const uidRange = systemRange(root, 'UID');
  const gidRange = systemRange(root, 'GID');

  const addGroup = (name: string, gid: number): void => {
    group.lines.push([name, 'x', String(gid), ''].join(':'));
    group.dirty = true;
    if (gshadow && !find(gshadow, name)) {
      gshadow.lines.push([name, '!', '', ''].join(':'));
      gshadow.dirty = true;
    }
  };

  checkServiceUserName(request.user, 'the service user');
  checkServiceUserName(request.group, 'the service group');
  const existingUser = find(passwd, request.user);
  const groupEntry = find(group, request.group);
  // An account that is already there is reused only if it is the agent's own: the device key (0600) and the config
  // (0640) become readable by it. See docs/provisioning.md ("The service account").
  if (existingUser) checkOwnUser(existingUser.f, request, uidRange);
  if (groupEntry) checkOwnGroup(groupEntry.f, request, gidRange, passwd);
  let gid: number;
  if (groupEntry) {
    gid = Number(groupEntry.f[2]);
  } else {
    const usedGids = idsOf(group, 2);
    const preferred = existingUser && request.group === request.user ? Number(existingUser.f[3]) : undefined;
    if (preferred !== undefined && !usedGids.has(preferred)) gid = preferred;
    else {
      // The same number for user and group when one is free for both, as useradd does.
      const both = existingUser
        ? undefined
        : highestFree({ min: Math.max(uidRange.min, gidRange.min), max: Math.min(uidRange.max, gidRange.max) }, idsOf(passwd, 2), usedGids);
      const id = both ?? highestFree(gidRange, usedGids);
      if (id === undefined) throw new ProvisionError(`no free system group ID between ${gidRange.min} and ${gidRange.max} in ${root}/etc/group`);
      gid = id;
    }
    addGroup(request.group, gid);
    say(`created group ${request.group} (gid ${gid}) in /etc/group`);
  }

  let uid: number;
  if (existingUser) {
    uid = Number(existingUser.f[2]);
  } else {
    const usedUids = idsOf(passwd, 2);
    const id = !usedUids.has(gid) && gid >= uidRange.min && gid <= uidRange.max ? gid : highestFree(uidRange, usedUids);
    if (id === undefined) throw new ProvisionError(`no free system user ID between ${uidRange.min} and ${uidRange.max} in ${root}/etc/passwd`);
    uid = id;
    const shell = firstExisting(root, ['/usr/sbin/nologin', '/sbin/nologin'], '/bin/false');
    passwd.lines.push([request.user, 'x', String(uid), String(gid), request.gecos, request.home, shell].join(':'));
    passwd.dirty = true;
    say(`created system user ${request.user} (uid ${uid}, gid ${gid}, no login) in /etc/passwd`);
  }
  // A locked password ('!'), no ageing: the account only ever runs the service.
  if (shadow && !find(shadow, request.user)) {
    shadow.lines.push([request.user, '!', '', '', '', '', '', '', ''].join(':'));
    shadow.dirty = true;
  }

  const supplementary: Record<string, number> = {};
  for (const name of request.supplementaryGroups) {
    let entry = find(group, name);
    if (!entry) {
      const usedGids = idsOf(group, 2);
      const wellKnown = WELL_KNOWN_GIDS[name];
      const id = wellKnown !== undefined && !usedGids.has(wellKnown) ? wellKnown : highestFree(gidRange, usedGids);
      if (id === undefined) throw new ProvisionError(`no free system group ID for ${name} in ${root}/etc/group`);
      addGroup(name, id);
      entry = find(group, name)!;
      say(`created group ${name} (gid ${id}) in /etc/group: the image had none (check that udev gives the serial ports to it)`);
    }
    supplementary[name] = Number(entry.f[2]);
    const members = (entry.f[3] ?? '').split(',').filter(Boolean);
    if (!members.includes(request.user)) {
      entry.f[3] = [...members, request.user].join(',');
      group.lines[entry.index] = entry.f.join(':');
      group.dirty = true;
      say(`added ${request.user} to group ${name}`);
    }
    const gentry = find(gshadow, name);
    if (gshadow && gentry) {
      const gmembers = (gentry.f[3] ?? '').split(',').filter(Boolean);
      if (!gmembers.includes(request.user)) {
        while (gentry.f.length < 4) gentry.f.push('');
        gentry.f[3] = [...gmembers, request.user].join(',');
        gshadow.lines[gentry.index] = gentry.f.join(':');
        gshadow.dirty = true;
      }
    }
  }
  for (const db of [group, gshadow, passwd, shadow]) writeDb(db, count);
  return { user: request.user, group: request.group, uid, gid, supplementary };
}
