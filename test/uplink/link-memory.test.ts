/**
 * The link memory's file on real file systems: deleted or replaced while the agent runs (what was learned is carried
 * over), the mode it is created with, a link planted beside it, a read-only folder (a real read-only bind mount, as
 * root) and the number of damaged files kept.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, renameSync, symlinkSync, unlinkSync, writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { keepaliveConfigSchema } from '../../src/uplink/config.js';
import type { HeartbeatMemory } from '../../src/uplink/heartbeat.js';
import { openAdaptiveHeartbeat } from '../../src/uplink/keepalive.js';
import { LinkMemory } from '../../src/uplink/link-memory.js';
import { canMount, makeReadOnly, modeOf } from '../support/state-files.js';
import { makeTempDir } from '../support/temp.js';

const HOME: HeartbeatMemory = { intervalS: 43.2, lastGoodS: 48, knownBadS: 50.6, phase: 'settled', cyclesLeft: 0 };
const CARRIER: HeartbeatMemory = { intervalS: 120, lastGoodS: 120, knownBadS: null, phase: 'probe', cyclesLeft: 3 };

function memoryFile(prefix: string): string {
  return path.join(makeTempDir(prefix), 'link-memory.db');
}

describe('LinkMemory: its file', () => {
  for (const loss of ['deleted', 'replaced'] as const) {
    it(`[14.7] ${loss} while the agent runs: the next change says so and carries what was learned over, nothing is lost at exit`, () => {
      const file = memoryFile(`link-memory-${loss}-`);
      const problems: string[] = [];
      const memory = LinkMemory.open(file, (m) => problems.push(m));
      memory.remember('wlan0/HomeWifi', HOME, 1000);
      if (loss === 'deleted') unlinkSync(file);
      else {
        writeFileSync(`${file}.other`, "someone else's file");
        renameSync(`${file}.other`, file);
      }
      memory.remember('wwan0', CARRIER, 2000);
      assert.equal(problems.length, 1, problems.join('\n'));
      assert.match(
        problems[0]!,
        loss === 'deleted'
          ? new RegExp(
              `^link memory: ${file.replace(/[.]/g, '\\.')} was deleted while the agent was running; what was learned was carried over to a new file at the same path$`,
            )
          : /^link memory: .* was replaced by another file \(moved aside as .*link-memory\.db\.replaced-[\dT-]+Z\) while the agent was running; what was learned was carried over/,
      );
      memory.close();
      const again = LinkMemory.open(file);
      assert.deepEqual(
        again.networks().map((n) => n.network),
        ['wwan0', 'wlan0/HomeWifi'],
      );
      again.close();
      if (loss === 'replaced') {
        const aside = readdirSync(path.dirname(file)).filter((name) => name.startsWith('link-memory.db.replaced-'));
        assert.equal(aside.length, 1);
        assert.equal(readFileSync(path.join(path.dirname(file), aside[0]!), 'utf8'), "someone else's file");
      }
    });
  }

  it('[14.7] deleted with no change afterwards: close carries what was learned over', () => {
    const file = memoryFile('link-memory-close-');
    const memory = LinkMemory.open(file);
    memory.remember('wwan0', CARRIER, 2000);
    unlinkSync(file);
    memory.close();
    const again = LinkMemory.open(file);
    assert.equal(again.recall('wwan0')?.intervalS, 120);
    again.close();
  });

  it('[14.L4] created 0600 (with its -wal and -shm) under umask 000, and a file left 0644 is narrowed', () => {
    const file = path.join(makeTempDir('link-memory-mode-'), 'var', 'link-memory.db');
    const previous = process.umask(0);
    let memory: LinkMemory;
    try {
      memory = LinkMemory.open(file);
      memory.remember('wwan0', CARRIER);
    } finally {
      process.umask(previous);
    }
    for (const suffix of ['', '-wal', '-shm']) assert.equal(modeOf(file + suffix).toString(8), '600', suffix || 'the database');
    memory.close();
    chmodSync(file, 0o644);
    LinkMemory.open(file).close();
    assert.equal(modeOf(file).toString(8), '600', 'narrowed at open');
  });

  it('[14.L4] a symbolic link planted at link-memory.db-wal is refused, naming the config key; the heartbeat learns without the memory', () => {
    const dir = makeTempDir('link-memory-link-');
    const file = path.join(dir, 'link-memory.db');
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    symlinkSync(victim, `${file}-wal`);
    const expected = `uplink.keepalive.memoryPath: ${file}-wal is a symbolic link: SQLite would follow or block on it; refusing to open ${file} (remove link-memory.db-wal)`;
    assert.throws(() => LinkMemory.open(file), { message: expected });
    const warnings: string[] = [];
    const adaptive = openAdaptiveHeartbeat(keepaliveConfigSchema.parse({ adaptive: true }), file, (m) => warnings.push(m));
    assert.equal(adaptive?.memory, null);
    assert.deepEqual(warnings, [`link memory: ${expected}; the heartbeat learns without remembering`]);
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
  });

  it('[14.L7] a read-only folder: the error names uplink.keepalive.memoryPath and the file', { skip: !canMount && 'mounting is not permitted here' }, () => {
    const dir = path.join(makeTempDir('link-memory-ro-'), 'state');
    mkdirSync(dir);
    const file = path.join(dir, 'link-memory.db');
    const writable = makeReadOnly(dir);
    try {
      assert.throws(() => LinkMemory.open(file), { message: `uplink.keepalive.memoryPath: cannot create ${file}: the folder ${dir} is not writable (EROFS)` });
    } finally {
      writable();
    }
  });

  it('[14.L5] damaged files moved aside: at most 3 are kept, the oldest removed first, each removal said', async () => {
    const file = memoryFile('link-memory-aside-');
    const problems: string[] = [];
    for (let round = 0; round < 5; round++) {
      writeFileSync(file, 'not a database '.repeat(100));
      LinkMemory.open(file, (m) => problems.push(m)).close();
      // The names carry the time to the millisecond: the next one must be later.
      const last = Date.now();
      while (Date.now() === last) await new Promise((resolve) => setImmediate(resolve));
    }
    const moved = problems.filter((p) => p.includes('is unusable')).map((p) => /moved it aside as (\S+),/.exec(p)![1]!);
    assert.equal(moved.length, 5);
    const kept = readdirSync(path.dirname(file))
      .filter((name) => name.startsWith('link-memory.db.corrupt-'))
      .sort();
    assert.deepEqual(
      kept,
      moved.slice(2).map((f) => path.basename(f)),
    );
    assert.deepEqual(
      problems.filter((p) => p.includes('removed')),
      moved.slice(0, 2).map((f) => `link memory: removed ${f} (set aside earlier): at most 3 are kept`),
    );
    assert.ok(existsSync(file));
  });
});
