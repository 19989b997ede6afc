/**
 * The shared opener of the agent's state files (src/store/state-database.ts) as a third owner would use it (the
 * command replay memory): what was found at the path, damage handed back to the owner, and the bounded set-aside files.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { DamagedStateFile, listSetAside, pruneSetAside, setAside, StateDatabase, type StateDatabaseOptions } from '../../src/store/state-database.js';
import { makeTempDir } from '../support/temp.js';
import { modeOf } from '../support/state-files.js';

const OPTIONS: StateDatabaseOptions = {
  configKey: 'commands.replayDbPath',
  synchronous: 'FULL',
  setup: (db) => db.exec('CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY) WITHOUT ROWID'),
};

describe('StateDatabase', () => {
  it('[14.L5] says what was at the path: nothing (created), a database, or a 0-byte file (its content was lost)', () => {
    const file = path.join(makeTempDir('state-found-'), 'replay.db');
    let store = StateDatabase.open(file, OPTIONS);
    assert.equal(store.found, 'created');
    assert.equal(modeOf(file), 0o600);
    store.db.prepare("INSERT INTO seen VALUES ('a')").run();
    store.close();
    store = StateDatabase.open(file, OPTIONS);
    assert.equal(store.found, 'existing');
    assert.equal(store.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM seen').get()!.n, 1);
    store.close();
    truncateSync(file, 0);
    store = StateDatabase.open(file, OPTIONS);
    assert.equal(store.found, 'empty');
    assert.equal(store.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM seen').get()!.n, 0, 'set up afresh');
    store.close();
  });

  it('hands damage back to its owner (DamagedStateFile), who sets the file aside and opens a fresh one', () => {
    const file = path.join(makeTempDir('state-damaged-'), 'replay.db');
    writeFileSync(file, Buffer.alloc(8192, 0x5a));
    assert.throws(
      () => StateDatabase.open(file, OPTIONS),
      (err: Error) => err instanceof DamagedStateFile && /SQLITE_NOTADB/.test(err.message),
    );
    const aside = setAside(file, 'corrupt', Date.UTC(2024, 0, 2, 3, 4, 5, 6));
    assert.equal(aside, `${file}.corrupt-2024-01-02T03-04-05-006Z`);
    const store = StateDatabase.open(file, OPTIONS);
    assert.equal(store.found, 'created');
    store.close();
  });

  it('[14.L5] prunes the files set aside: the oldest first, beyond a count or a byte budget; links and other names are left alone', () => {
    const dir = makeTempDir('state-prune-');
    const file = path.join(dir, 'outbox.db');
    const made: string[] = [];
    for (let hour = 1; hour <= 4; hour++) {
      const name = `${file}.${hour % 2 ? 'corrupt' : 'replaced'}-2024-06-01T0${hour}-00-00-000Z`;
      writeFileSync(name, Buffer.alloc(1000 * hour));
      if (hour === 2) writeFileSync(`${name}-wal`, Buffer.alloc(500));
      made.push(name);
    }
    symlinkSync('/etc/passwd', `${file}.corrupt-2024-06-01T00-00-00-000Z`);
    writeFileSync(path.join(dir, 'other.db.corrupt-2024-06-01T00-00-00-000Z'), 'x');
    mkdirSync(`${file}.corrupt-2024-05-01T00-00-00-000Z`);
    assert.deepEqual(
      listSetAside(file),
      made.map((f, i) => ({ file: f, bytes: 1000 * (i + 1) + (i === 1 ? 500 : 0) })),
    );

    let result = pruneSetAside(file, { keep: 3 });
    assert.deepEqual(
      result.removed.map((r) => r.file),
      [made[0]],
    );
    assert.deepEqual(result.kept, { files: 3, bytes: 2500 + 3000 + 4000 });
    result = pruneSetAside(file, { keep: 3, budgetBytes: 7000 });
    assert.deepEqual(
      result.removed.map((r) => r.file),
      [made[1]],
      'the -wal with it',
    );
    assert.deepEqual(result.kept, { files: 2, bytes: 7000 });
    assert.deepEqual(readdirSync(dir).sort(), [
      'other.db.corrupt-2024-06-01T00-00-00-000Z',
      'outbox.db.corrupt-2024-05-01T00-00-00-000Z',
      'outbox.db.corrupt-2024-06-01T00-00-00-000Z',
      'outbox.db.corrupt-2024-06-01T03-00-00-000Z',
      'outbox.db.replaced-2024-06-01T04-00-00-000Z',
    ]);
  });
});
