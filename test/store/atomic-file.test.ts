/**
 * The one write-then-rename of the agent and its tools (src/store/atomic-file.ts), on real file systems: the mode set
 * exactly or kept, nothing placed at the temporary name followed or waited on, the old file whole when a write fails
 * part-way (a full tmpfs), and errors that name the file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { atomicWriteFile, AtomicWriteError, defaultTemporaryName } from '../../src/store/atomic-file.js';
import { canMount, makeReadOnly, mkfifo, modeOf, mountTmpfs } from '../support/state-files.js';
import { makeTempDir } from '../support/temp.js';

const moduleUrl = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'store', 'atomic-file.js')).href;

/** `fn` under `umask`, the process's umask put back after. */
function withUmask<T>(umask: number, fn: () => T): T {
  const previous = process.umask(umask);
  try {
    return fn();
  } finally {
    process.umask(previous);
  }
}

/** The AtomicWriteError `fn` throws. */
function writeError(fn: () => void): AtomicWriteError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof AtomicWriteError, `an AtomicWriteError, not ${String(err)}`);
    return err;
  }
  assert.fail('the write did not throw');
}

describe('atomicWriteFile', () => {
  for (const umask of [0o000, 0o022, 0o077, 0o277]) {
    it(`[15.5] a new file gets exactly the mode given under umask ${umask.toString(8).padStart(3, '0')}; a rewrite sets it again`, () => {
      const dir = makeTempDir('atomic-mode-');
      const key = path.join(dir, 'device.key');
      const cert = path.join(dir, 'device.crt');
      withUmask(umask, () => {
        atomicWriteFile(key, 'secret\n', { mode: 0o600 });
        atomicWriteFile(cert, 'public\n', { mode: 0o644 });
      });
      assert.equal(modeOf(key), 0o600);
      assert.equal(modeOf(cert), 0o644);
      chmodSync(key, 0o644);
      withUmask(umask, () => atomicWriteFile(key, 'another secret\n', { mode: 0o600 }));
      assert.equal(modeOf(key), 0o600, 'the mode given, not the one the file had');
      assert.equal(readFileSync(key, 'utf8'), 'another secret\n');
      assert.deepEqual(readdirSync(dir).sort(), ['device.crt', 'device.key'], 'no temporary file left');
    });
  }

  it('[15.5] keepMode: a rewrite keeps the mode the file had; a new file, or a link at the name, gets the mode given', () => {
    const dir = makeTempDir('atomic-keep-');
    const file = path.join(dir, 'override.json');
    atomicWriteFile(file, '{}\n', { mode: 0o600, keepMode: true });
    assert.equal(modeOf(file), 0o600);
    chmodSync(file, 0o640);
    withUmask(0o077, () => atomicWriteFile(file, '{"a":1}\n', { mode: 0o600, keepMode: true }));
    assert.equal(modeOf(file), 0o640);
    assert.equal(readFileSync(file, 'utf8'), '{"a":1}\n');

    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'not yours\n');
    chmodSync(victim, 0o666);
    const linked = path.join(dir, 'linked.json');
    symlinkSync(victim, linked);
    atomicWriteFile(linked, '{}\n', { mode: 0o600, keepMode: true });
    assert.ok(lstatSync(linked).isFile(), 'the link is replaced by a file');
    assert.equal(modeOf(linked), 0o600, "the mode given, not the link target's");
    assert.equal(readFileSync(victim, 'utf8'), 'not yours\n');
    assert.equal(modeOf(victim), 0o666);
  });

  it('[15.5] a link planted at the temporary name (the default one, or one the caller names) is removed, never written through', () => {
    const dir = makeTempDir('atomic-temp-link-');
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    chmodSync(victim, 0o644);
    for (const [file, temporary] of [
      [path.join(dir, 'anchor.json'), undefined],
      [path.join(dir, '.hidden.anchor'), undefined],
      [path.join(dir, 'outbox.db.seq'), path.join(dir, 'outbox.db.seq.tmp')],
    ] as const) {
      const at = temporary ?? defaultTemporaryName(file);
      symlinkSync(victim, at);
      atomicWriteFile(file, 'new\n', { mode: 0o600, ...(temporary ? { temporary } : {}) });
      assert.equal(readFileSync(victim, 'utf8'), 'precious\n', `nothing written through ${at}`);
      assert.equal(modeOf(victim), 0o644);
      assert.equal(readFileSync(file, 'utf8'), 'new\n');
      assert.equal(existsSync(at), false, `${at} is gone`);
    }
    assert.equal(defaultTemporaryName(path.join(dir, 'anchor.json')), path.join(dir, `.anchor.json.${process.pid}.tmp`));
    assert.equal(defaultTemporaryName(path.join(dir, '.hidden.anchor')), path.join(dir, `.hidden.anchor.${process.pid}.tmp`), 'no second dot');
    assert.deepEqual(readdirSync(dir).sort(), ['.hidden.anchor', 'anchor.json', 'outbox.db.seq', 'victim']);
  });

  it('[15.5] a FIFO planted at the temporary name does not block the write (run in a child, killed if it blocks)', () => {
    const dir = makeTempDir('atomic-temp-fifo-');
    const file = path.join(dir, 'anchor.json');
    const temporary = path.join(dir, 'anchor.json.tmp');
    mkfifo(temporary);
    const script = `import { atomicWriteFile } from ${JSON.stringify(moduleUrl)};
atomicWriteFile(${JSON.stringify(file)}, 'written\\n', { mode: 0o600, temporary: ${JSON.stringify(temporary)} });`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
    assert.equal(child.signal, null, `the write blocked on the FIFO at ${temporary}`);
    assert.equal(child.status, 0, child.stderr);
    assert.equal(readFileSync(file, 'utf8'), 'written\n');
    assert.equal(existsSync(temporary), false);
  });

  it('[15.5] a folder at the temporary name: an error naming the file and the name, the file and the folder as they were', () => {
    const dir = makeTempDir('atomic-temp-dir-');
    const file = path.join(dir, 'collection-override.json');
    writeFileSync(file, 'old\n');
    const blocker = defaultTemporaryName(file);
    mkdirSync(blocker);
    const err = writeError(() => atomicWriteFile(file, 'new\n', { mode: 0o600 }));
    assert.equal(
      err.message,
      `cannot write ${file}: its temporary name ${blocker} cannot be cleared (EISDIR: illegal operation on a directory); the file is unchanged`,
    );
    assert.equal(err.file, file);
    assert.equal(err.code, 'EISDIR');
    assert.equal(err.replaced, false);
    assert.equal(readFileSync(file, 'utf8'), 'old\n');
    assert.ok(statSync(blocker).isDirectory());
    rmdirSync(blocker);
  });

  it(
    '[15.5] a write that fails part-way (a full disk) leaves the old file whole and no temporary file; the error names the file, code ENOSPC',
    { skip: !canMount && 'mounting a tmpfs is not permitted here' },
    () => {
      const dir = makeTempDir('atomic-full-');
      const unmount = mountTmpfs(dir, '64k');
      try {
        const file = path.join(dir, 'anchor.json');
        atomicWriteFile(file, 'old and whole\n', { mode: 0o600 });
        const big = Buffer.alloc(1024 * 1024, 0x41);
        const err = writeError(() => atomicWriteFile(file, big, { mode: 0o600 }));
        assert.equal(
          err.message,
          `cannot write ${file}: writing ${defaultTemporaryName(file)} failed (ENOSPC: no space left on device); the file is unchanged`,
        );
        assert.equal(err.code, 'ENOSPC', 'the errno code, for callers that fold storage failures');
        assert.equal(err.replaced, false);
        assert.equal(readFileSync(file, 'utf8'), 'old and whole\n', 'a reader still sees the old file, whole');
        assert.deepEqual(readdirSync(dir), ['anchor.json'], 'the partial temporary file is removed');
        // Room again: the same write goes through.
        atomicWriteFile(file, 'new\n', { mode: 0o600 });
        assert.equal(readFileSync(file, 'utf8'), 'new\n');
      } finally {
        unmount();
      }
    },
  );

  it(
    '[15.5] a read-only folder or a missing one: one line naming the file and what could not be made',
    { skip: !canMount && 'mounting is not permitted here' },
    () => {
      const dir = makeTempDir('atomic-readonly-');
      const file = path.join(dir, 'anchor.json');
      writeFileSync(file, 'old\n');
      const undo = makeReadOnly(dir);
      try {
        const err = writeError(() => atomicWriteFile(file, 'new\n', { mode: 0o600 }));
        assert.equal(err.message, `cannot write ${file}: cannot create ${defaultTemporaryName(file)} (EROFS: read-only file system); the file is unchanged`);
        assert.equal(err.code, 'EROFS');
      } finally {
        undo();
      }
      assert.equal(readFileSync(file, 'utf8'), 'old\n');
      const missing = path.join(dir, 'no-such-folder', 'anchor.json');
      const absent = writeError(() => atomicWriteFile(missing, 'new\n', { mode: 0o600 }));
      assert.match(
        absent.message,
        new RegExp(`^cannot write ${missing.replace(/[.]/g, '\\.')}: cannot create .* \\(ENOENT: no such file or directory\\); the file is unchanged$`),
      );
    },
  );

  it(
    '[15.5] an owner given is set before the mode, so set-id bits asked for stay',
    { skip: process.geteuid?.() !== 0 && 'changing the owner needs root' },
    () => {
      const dir = makeTempDir('atomic-owner-');
      const file = path.join(dir, 'tool');
      atomicWriteFile(file, '#!/bin/sh\n', { mode: 0o2755, owner: { uid: 1234, gid: 5678 } });
      const stats = lstatSync(file);
      assert.equal(stats.uid, 1234);
      assert.equal(stats.gid, 5678);
      assert.equal(stats.mode & 0o7777, 0o2755);
    },
  );
});
