/**
 * The operator's command journal on real SQLite files: what it records and in which order, the copies it drops, where
 * the file lives and with which modes, and the one-line errors of a journal that cannot be used (damaged, of a newer
 * version, in a folder that refuses writes). The CLI around it, against a real broker: test/cli/ops-tracked.test.ts.
 */
import assert from 'node:assert/strict';
import { statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { CommandResult } from '../../src/commands/result.js';
import { CommandJournal, defaultJournalPath, JOURNAL_VERSION, JournalError, journalPath } from '../../src/fleet/command-journal.js';
import { progressLine, readDevicesFile, worstExitCode } from '../../src/cli/ops-tracked.js';
import { makeTempDir } from '../support/temp.js';

const command = (id: string, deviceId: string, issuedAt: number) => ({
  id,
  deviceId,
  name: 'ping',
  params: { echo: id },
  issuedAt,
  expiresAt: issuedAt + 300_000,
  operator: 'alice',
  broker: 'mqtts://broker.fleet.example:8884',
});

const result = (deviceId: string, id: string, status: CommandResult['status'], seq: number | undefined, extra: Partial<CommandResult> = {}): CommandResult => ({
  deviceId,
  id,
  command: 'ping',
  status,
  ts: 1_767_225_600_000 + (seq ?? 0),
  ...(seq !== undefined ? { seq } : {}),
  ...extra,
});

describe('[18.track] the command journal', () => {
  it('[18.track] records a command before it is sent and each result as it comes; a copy with a (device, seq) already recorded is dropped', () => {
    const file = path.join(makeTempDir('journal-'), 'commands.db');
    const journal = CommandJournal.open(file);
    journal.recordCommand(command('c-1', 'car-1', 1000), 'SENT', 1001);
    assert.equal(journal.get('c-1')!.state, 'SENT');
    assert.equal(journal.recordResult('c-1', result('car-1', 'c-1', 'ACCEPTED', 11, { detail: { timeoutMs: 5000 } })), true);
    assert.equal(journal.recordResult('c-1', result('car-1', 'c-1', 'IN_PROGRESS', 12)), true);
    // The car sends results at least once: the same seq again is a copy.
    assert.equal(journal.recordResult('c-1', result('car-1', 'c-1', 'IN_PROGRESS', 12)), false);
    assert.equal(journal.get('c-1')!.state, 'IN_PROGRESS');
    assert.equal(journal.recordResult('c-1', result('car-1', 'c-1', 'SUCCEEDED', 13, { detail: { echo: 'c-1' } })), true);
    // A second final (an `interrupted` after a crash between storing the result and clearing the note): the first counts.
    journal.recordResult('c-1', result('car-1', 'c-1', 'FAILED', 14, { reason: 'interrupted' }));
    journal.close();

    const again = CommandJournal.open(file);
    const entry = again.get('c-1')!;
    assert.deepEqual(
      { ...entry, steps: entry.steps.map((s) => [s.source, s.status, s.seq ?? null]) },
      {
        ...command('c-1', 'car-1', 1000),
        steps: [
          ['ops', 'SENT', null],
          ['car', 'ACCEPTED', 11],
          ['car', 'IN_PROGRESS', 12],
          ['car', 'SUCCEEDED', 13],
          ['car', 'FAILED', 14],
        ],
        final: { source: 'car', status: 'SUCCEEDED', detail: { echo: 'c-1' }, ts: 1_767_225_600_013, seq: 13 },
        state: 'SUCCEEDED',
      },
    );
    assert.deepEqual(entry.steps[1]!.detail, { timeoutMs: 5000 });
    // The same seq from another car is another result.
    again.recordCommand(command('c-2', 'car-2', 2000), 'SENT');
    assert.equal(again.recordResult('c-2', result('car-2', 'c-2', 'REJECTED', 11, { reason: 'bad-params', message: 'no' })), true);
    again.recordCommand(command('c-3', 'car-1', 3000), 'SENT');
    again.recordState('c-3', 'car-1', 'QUEUED', 'queued: car-1 is offline since ...');
    // A rejection sent at once (no seq) is recorded too.
    assert.equal(again.recordResult('c-3', result('car-1', 'c-3', 'REJECTED', undefined, { reason: 'expired' })), true);
    assert.equal(again.get('c-2')!.final!.reason, 'bad-params');
    assert.equal(again.get('c-3')!.state, 'REJECTED');
    assert.equal(again.get('nope'), undefined);
    assert.deepEqual(
      again.history({ limit: 10 }).map((e) => [e.id, e.state]),
      [
        ['c-3', 'REJECTED'],
        ['c-2', 'REJECTED'],
        ['c-1', 'SUCCEEDED'],
      ],
    );
    assert.deepEqual(
      again.history({ deviceId: 'car-1', limit: 1 }).map((e) => e.id),
      ['c-3'],
    );
    again.close();
  });

  it('[18.track] lives at --journal, else $TELEMATICS_OPS_JOURNAL, else $XDG_STATE_HOME/telematics-ops/commands.db (~/.local/state): 0600 in a 0700 folder', () => {
    assert.equal(journalPath('/x/j.db', { TELEMATICS_OPS_JOURNAL: '/y/j.db', XDG_STATE_HOME: '/z' }), '/x/j.db');
    assert.equal(journalPath(undefined, { TELEMATICS_OPS_JOURNAL: '/y/j.db', XDG_STATE_HOME: '/z' }), '/y/j.db');
    assert.equal(journalPath(undefined, { XDG_STATE_HOME: '/z' }), '/z/telematics-ops/commands.db');
    assert.equal(defaultJournalPath({}), path.join(os.homedir(), '.local', 'state', 'telematics-ops', 'commands.db'));
    // The XDG spec: a relative value is to be ignored.
    assert.equal(defaultJournalPath({ XDG_STATE_HOME: 'relative' }), path.join(os.homedir(), '.local', 'state', 'telematics-ops', 'commands.db'));
    const home = makeTempDir('journal-home-');
    const file = journalPath(undefined, { XDG_STATE_HOME: home });
    const umask = process.umask(0o022);
    try {
      CommandJournal.open(file).close();
    } finally {
      process.umask(umask);
    }
    assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const db = new Database(file, { readonly: true });
    assert.equal(db.pragma('user_version', { simple: true }), JOURNAL_VERSION);
    db.close();
  });

  it('[18.track] a damaged journal, one of a newer version, one whose folder cannot be made: one line naming the file', () => {
    const dir = makeTempDir('journal-bad-');
    const damaged = path.join(dir, 'damaged.db');
    writeFileSync(damaged, 'this is not a SQLite database, and it is long enough to have a header that SQLite reads...'.repeat(20));
    assert.throws(
      () => CommandJournal.open(damaged),
      (err: Error) => err instanceof JournalError && err.message.startsWith(`the command journal ${damaged} is damaged`) && !err.message.includes('\n'),
    );
    const newer = path.join(dir, 'newer.db');
    const db = new Database(newer);
    db.pragma(`user_version = ${JOURNAL_VERSION + 1}`);
    db.close();
    assert.throws(
      () => CommandJournal.open(newer),
      new JournalError(
        `the command journal ${newer} is of version ${JOURNAL_VERSION + 1}, made by a newer telematics-ops (this one reads up to ${JOURNAL_VERSION}): use that version, or another --journal`,
      ),
    );
    // A file where its folder should be (root passes every permission check: this refuses even root).
    const notAFolder = path.join(dir, 'not-a-folder');
    writeFileSync(notAFolder, '');
    const inside = path.join(notAFolder, 'commands.db');
    assert.throws(() => CommandJournal.open(inside), new JournalError(`the command journal ${inside}: cannot create its folder ${notAFolder}: EEXIST`));
  });
});

describe('[18.track] many cars: the devices file, the progress line, the worst exit code', () => {
  it('[18.track] a devices file: one ID a line, # comments and blank lines skipped, a bad ID named with its line', () => {
    const dir = makeTempDir('devices-');
    const good = path.join(dir, 'cars.txt');
    writeFileSync(good, '# the pilot fleet\ncar-1\n\n  car-2   # in the workshop\ncar-3\r\n');
    assert.deepEqual(readDevicesFile(good), ['car-1', 'car-2', 'car-3']);
    const bad = path.join(dir, 'bad.txt');
    writeFileSync(bad, 'car-1\nvehicles/+\n');
    assert.throws(() => readDevicesFile(bad), new RegExp(`^InvalidArgumentError: --devices-file ${bad} line 2: "vehicles/\\+" cannot be a device ID: `));
    assert.throws(() => readDevicesFile(path.join(dir, 'missing.txt')), /--devices-file .*missing\.txt: file not found/);
  });

  it("[18.track] the progress line counts what was sent and the outcomes so far; the exit code is the worst car's", () => {
    assert.equal(
      progressLine(
        40,
        12,
        new Map([
          ['QUEUED', 8],
          ['SUCCEEDED', 30],
          ['FAILED', 2],
        ]),
      ),
      '12/40 sent, 30 succeeded, 2 failed, 8 queued',
    );
    assert.equal(progressLine(3, 0, new Map()), '0/3 sent');
    assert.equal(worstExitCode([]), 0);
    assert.equal(worstExitCode([0, 5, 0]), 5);
    assert.equal(worstExitCode([5, 4, 2]), 2);
    assert.equal(worstExitCode([2, 3]), 3);
    assert.equal(worstExitCode([3, 6, 0]), 6);
    assert.equal(worstExitCode([6, 1]), 1);
  });
});
