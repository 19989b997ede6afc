/**
 * The parts of remote commands that need no broker: the outbox migration for result rows, the replay memory's
 * persistence and its corrupt-file floor, the signer checks, and preconditions on live values.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { parseCommand, signCommand } from '../../src/commands/envelope.js';
import { freshnessConfigSchema } from '../../src/commands/config.js';
import { describeFailure, Precondition, SignalFreshness, type SignalTiming } from '../../src/commands/precondition.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile } from '../../src/dbc/index.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { ANCHOR_AHEAD_MS, anchorPath, ReplayGuard } from '../../src/commands/replay-guard.js';
import { readCertificateExtensions } from '../../src/pki/certificate-extensions.js';
import { CommandVerifier, VerifyFailure } from '../../src/commands/verifier.js';
import { createCommandCa, issueOperatorCertificate, KEY_USAGE } from '../../src/pki/command-pki.js';
import { SqliteOutbox } from '../../src/store/outbox.js';
import { messageFrame } from '../support/frames.js';
import { makeTempDir } from '../support/temp.js';
import { X509Certificate } from 'node:crypto';

describe('outbox: command results', () => {
  it('migrates a file written before results existed, keeps its messages, and stores topic and correlation', () => {
    const file = path.join(makeTempDir('outbox-migrate-'), 'outbox.db');
    // The layout of the previous agent version, with one telemetry message in it.
    const old = new Database(file);
    old.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE message (seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL, kind TEXT NOT NULL, created_at INTEGER NOT NULL, payload BLOB NOT NULL);
      CREATE INDEX message_send_order ON message (priority DESC, seq);
      CREATE INDEX message_age ON message (created_at);
    `);
    old.prepare("INSERT INTO meta VALUES ('next_seq', 11)").run();
    old.prepare("INSERT INTO message VALUES (10, 1, 'telemetry', ?, x'0102')").run(Date.now());
    old.close();
    const outbox = SqliteOutbox.open({ path: file, deviceId: 'car-1', maxBytes: 1_000_000, maxAgeMs: 3_600_000 });
    try {
      const { seqs } = outbox.append([
        {
          kind: 'result',
          priority: 7,
          createdAt: Date.now(),
          topic: 'vehicles/car-1/results/x',
          correlation: Buffer.from('c-1'),
          encode: (seq) => Buffer.from(`{"seq":${seq}}`),
        },
      ]);
      assert.deepEqual(seqs, [11]);
      const records = outbox.peek(10, Infinity, new Set());
      assert.deepEqual(
        records.map((r) => ({ seq: r.seq, kind: r.kind, topic: r.topic, correlation: r.correlation && Buffer.from(r.correlation).toString() })),
        [
          { seq: 11, kind: 'result', topic: 'vehicles/car-1/results/x', correlation: 'c-1' },
          { seq: 10, kind: 'telemetry', topic: undefined, correlation: undefined },
        ],
      );
      assert.equal(Buffer.from(records[0]!.payload).toString(), '{"seq":11}');
    } finally {
      outbox.close();
    }
  });
});

describe('replay memory', () => {
  it('remembers IDs across a reopen, tells a duplicate from a reused ID, and forgets them after their time', () => {
    const file = path.join(makeTempDir('replay-'), 'commands.db');
    let now = 1_000_000;
    let guard = ReplayGuard.open({ path: file, now: () => now });
    assert.deepEqual(guard.remember('a', 'd1', now, now + 120_000), { fresh: true });
    guard.close();
    guard = ReplayGuard.open({ path: file, now: () => now });
    const dup = guard.remember('a', 'd1', now, now + 120_000);
    assert.equal(dup.fresh === false && dup.why, 'duplicate');
    const reused = guard.remember('a', 'd2', now, now + 120_000);
    assert.equal(reused.fresh === false && reused.why, 'reused');
    now += 10 * 60_000;
    assert.deepEqual(guard.remember('b', 'd3', now, now + 1000), { fresh: true });
    assert.equal(guard.size, 1, "'a' was purged once it could no longer be valid");
    guard.close();
  });

  it('a clock that jumps ahead and back does not make it forget IDs still valid in real time', () => {
    const file = path.join(makeTempDir('replay-clock-'), 'commands.db');
    const t = 1_700_000_000_000;
    let now = t;
    const guard = ReplayGuard.open({ path: file, now: () => now });
    assert.deepEqual(guard.remember('x', 'dx', t, t + 3_600_000), { fresh: true });
    // A bad RTC fix: a year ahead, while a command signed a minute after 'x' arrives (the purge runs then).
    now = t + 365 * 86_400_000;
    assert.deepEqual(guard.remember('y', 'dy', t + 60_000, t + 3_600_000), { fresh: true });
    assert.equal(guard.size, 2, "'x' is still valid in real time: kept");
    // The clock is right again: the captured 'x' is still refused.
    now = t + 120_000;
    const replay = guard.remember('x', 'dx', t, t + 3_600_000);
    assert.equal(replay.fresh === false && replay.why, 'duplicate');
    // Once a command signed after x's expiry comes, x goes.
    now = t + 2 * 3_600_000;
    assert.deepEqual(guard.remember('z', 'dz', t + 2 * 3_600_000, t + 3 * 3_600_000), { fresh: true });
    assert.equal(guard.size, 1);
    guard.close();
  });

  it('keeps the commands running across a reopen, with their route, until they are finished', () => {
    const file = path.join(makeTempDir('running-'), 'commands.db');
    let guard = ReplayGuard.open({ path: file, now: () => 5000 });
    guard.started('c1', 'ping', { topic: 'vehicles/car/results/ops', correlation: Buffer.from('corr-1') });
    guard.started('c2', 'readVin', { topic: 'vehicles/car/commands/c2/result' });
    guard.started('c3', 'ping', { topic: 'vehicles/car/commands/c3/result' });
    guard.finished('c3');
    guard.close(); // as a crash leaves it: c1 and c2 never finished
    guard = ReplayGuard.open({ path: file });
    assert.deepEqual(guard.interrupted(), [
      { id: 'c1', name: 'ping', topic: 'vehicles/car/results/ops', correlation: Buffer.from('corr-1'), startedAt: 5000 },
      { id: 'c2', name: 'readVin', topic: 'vehicles/car/commands/c2/result', startedAt: 5000 },
    ]);
    guard.finished('c1');
    guard.finished('c2');
    assert.deepEqual(guard.interrupted(), []);
    guard.close();
  });

  it('a corrupt file is moved aside, and commands issued before that are refused', () => {
    const dir = makeTempDir('replay-corrupt-');
    const file = path.join(dir, 'commands.db');
    writeFileSync(file, 'this is not a database, and it is long enough to have a header'.repeat(20));
    const problems: string[] = [];
    const now = 5_000_000;
    const guard = ReplayGuard.open({ path: file, now: () => now, onProblem: (m) => problems.push(m) });
    try {
      assert.equal(problems.length, 1);
      assert.match(
        problems[0]!,
        /commands\.db is corrupt .* moved it aside as .*commands\.db\.corrupt-.*, started a new one: commands issued before 1970-01-01T01:23:20\.000Z are refused/,
      );
      const old = guard.remember('x', 'd', now - 1, now + 1000);
      assert.equal(old.fresh === false && old.why, 'before-reset');
      assert.deepEqual(guard.remember('y', 'd', now, now + 1000), { fresh: true });
    } finally {
      guard.close();
    }
  });

  /** Takes command `id` issued at `issuedAt` in a guard on `file` at `now`, then closes it (as an agent that stops). */
  function take(file: string, id: string, issuedAt: number, now = issuedAt): void {
    const guard = ReplayGuard.open({ path: file, now: () => now });
    assert.deepEqual(guard.remember(id, `digest-${id}`, issuedAt, issuedAt + 3_600_000), { fresh: true });
    guard.close();
  }

  it('[14.L4] the replay memory and its anchor are created 0600 whatever the umask; a link planted at its -wal refuses the open, naming it', () => {
    const dir = makeTempDir('replay-modes-');
    const file = path.join(dir, 'commands.db');
    const umask = process.umask(0o022);
    try {
      take(file, 'a', 1_760_000_000_000);
    } finally {
      process.umask(umask);
    }
    for (const name of ['commands.db', '.commands.db.anchor']) assert.equal(statSync(path.join(dir, name)).mode & 0o777, 0o600, name);
    const other = makeTempDir('replay-link-');
    const linked = path.join(other, 'commands.db');
    const target = path.join(other, 'elsewhere');
    writeFileSync(target, 'not yours');
    symlinkSync(target, `${linked}-wal`);
    assert.throws(() => ReplayGuard.open({ path: linked }), /commands\.replayDbPath: .*commands\.db-wal/);
    assert.equal(readFileSync(target, 'utf8'), 'not yours');
  });

  it('[14.2] the replay database deleted while the agent runs: the next command carries its IDs over, a captured one stays refused', () => {
    const dir = makeTempDir('replay-running-');
    const file = path.join(dir, 'commands.db');
    const t = 1_760_000_000_000;
    const problems: string[] = [];
    const guard = ReplayGuard.open({ path: file, now: () => t, onProblem: (m) => problems.push(m) });
    try {
      assert.deepEqual(guard.remember('captured', 'digest-captured', t, t + 3_600_000), { fresh: true });
      for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
      const replay = guard.remember('captured', 'digest-captured', t, t + 3_600_000);
      assert.equal(replay.fresh === false && replay.why, 'duplicate');
      assert.match(problems.join('\n'), /the replay memory .*commands\.db was deleted while the agent ran; carried its IDs over/);
    } finally {
      guard.close();
    }
    // And the new file holds them after a restart.
    const again = ReplayGuard.open({ path: file, now: () => t });
    try {
      const replay = again.remember('captured', 'digest-captured', t, t + 3_600_000);
      assert.equal(replay.fresh === false && replay.why, 'duplicate');
    } finally {
      again.close();
    }
  });

  it('[14.2] a deleted replay database: after a restart the captured command is refused (before-reset), and an error says so', () => {
    const dir = makeTempDir('replay-deleted-');
    const file = path.join(dir, 'commands.db');
    const t = 1_760_000_000_000;
    take(file, 'captured', t);
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
    const problems: string[] = [];
    const guard = ReplayGuard.open({ path: file, now: () => t + 60_000, onProblem: (m) => problems.push(m) });
    try {
      assert.deepEqual(problems.length, 1, problems.join('\n'));
      assert.match(
        problems[0]!,
        /^commands: the replay memory .*commands\.db is missing \(the agent has run before: .*\.commands\.db\.anchor\); started a new one: commands issued before \S+ are refused/,
      );
      const replay = guard.remember('captured', 'digest-captured', t, t + 3_600_000);
      assert.equal(replay.fresh === false && replay.why, 'before-reset');
      // A command signed after the loss runs.
      assert.deepEqual(guard.remember('new', 'digest-new', t + 2 * ANCHOR_AHEAD_MS, t + 3_600_000), { fresh: true });
    } finally {
      guard.close();
    }
  });

  it('[15.4] each problem comes with its severity: a memory lost or deleted while running is an error, an anchor written again a warning', () => {
    const dir = makeTempDir('replay-severity-');
    const file = path.join(dir, 'commands.db');
    const t = 1_760_000_000_000;
    take(file, 'captured', t);
    const said: [message: string, severity: string][] = [];
    const open = (): ReplayGuard => ReplayGuard.open({ path: file, now: () => t + 60_000, onProblem: (message, severity) => said.push([message, severity]) });
    // The anchor gone, the file intact: written again, nothing lost.
    rmSync(path.join(dir, '.commands.db.anchor'));
    open().close();
    // The file gone, the anchor there: the memory is lost.
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
    const guard = open();
    try {
      // Deleted under the running guard: carried over, and said as loudly.
      for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
      guard.remember('next', 'digest-next', t + 2 * ANCHOR_AHEAD_MS, t + 3_600_000);
    } finally {
      guard.close();
    }
    assert.deepEqual(
      said.map(([message, severity]) => [
        severity,
        /anchor .* was missing/.test(message)
          ? 'anchor missing'
          : / is missing /.test(message)
            ? 'memory missing'
            : / was deleted while the agent ran/.test(message)
              ? 'deleted while running'
              : message,
      ]),
      [
        ['warn', 'anchor missing'],
        ['error', 'memory missing'],
        ['error', 'deleted while running'],
      ],
    );
  });

  it('[14.2] a replay database truncated to 0 bytes is said to be lost, and the captured command is refused', () => {
    const dir = makeTempDir('replay-empty-');
    const file = path.join(dir, 'commands.db');
    const t = 1_760_000_000_000;
    take(file, 'captured', t);
    truncateSync(file, 0);
    const problems: string[] = [];
    const guard = ReplayGuard.open({ path: file, now: () => t + 60_000, onProblem: (m) => problems.push(m) });
    try {
      // Nothing in it to keep for a person: the new memory starts in the same file.
      assert.match(
        problems.join('\n'),
        /commands\.db is empty \(0 bytes: truncated\) \(the agent has run before: .*\); started a new one: commands issued before \S+ are refused/,
      );
      const replay = guard.remember('captured', 'digest-captured', t, t + 3_600_000);
      assert.equal(replay.fresh === false && replay.why, 'before-reset');
    } finally {
      guard.close();
    }
  });

  it('[14.2] a corrupt database found while the clock says 1970: once the clock is right, the captured command is still refused', () => {
    const dir = makeTempDir('replay-1970-');
    const file = path.join(dir, 'commands.db');
    const t = 1_760_000_000_000;
    take(file, 'captured', t);
    writeFileSync(file, 'this is not a database, and it is long enough to have a header'.repeat(20));
    // A car without an RTC boots at 1970 and finds its memory corrupt.
    const problems: string[] = [];
    ReplayGuard.open({ path: file, now: () => 5_000, onProblem: (m) => problems.push(m) }).close();
    assert.doesNotMatch(problems[0]!, /before 1970/, problems[0]);
    // GNSS sets the clock; the agent restarts; the captured command comes again.
    const guard = ReplayGuard.open({ path: file, now: () => t + 600_000 });
    try {
      assert.ok(guard.notBefore > t, `floor ${new Date(guard.notBefore).toISOString()}`);
      const replay = guard.remember('captured', 'digest-captured', t, t + 3_600_000);
      assert.equal(replay.fresh === false && replay.why, 'before-reset');
    } finally {
      guard.close();
    }
  });

  it('[14.2] without an anchor, the floor is never earlier than the signed times known from outside (knownSince)', () => {
    const dir = makeTempDir('replay-known-');
    const file = path.join(dir, 'commands.db');
    writeFileSync(file, 'this is not a database, and it is long enough to have a header'.repeat(20));
    const known = 1_750_000_000_000;
    const guard = ReplayGuard.open({ path: file, now: () => 5_000, knownSince: known, onProblem: () => undefined });
    try {
      assert.equal(guard.notBefore, known);
    } finally {
      guard.close();
    }
  });

  it('[14.2] a first start and a database of an earlier version (no anchor) set no floor; the anchor is written ahead of what is taken', () => {
    const dir = makeTempDir('replay-first-');
    const file = path.join(dir, 'commands.db');
    const t = 1_760_000_000_000;
    const problems: string[] = [];
    let guard = ReplayGuard.open({ path: file, now: () => t, onProblem: (m) => problems.push(m) });
    assert.equal(guard.notBefore, 0);
    assert.deepEqual(guard.remember('a', 'da', t, t + 1000), { fresh: true });
    const anchor = JSON.parse(readFileSync(anchorPath(file), 'utf8')) as { horizon: number };
    assert.equal(anchor.horizon, t + ANCHOR_AHEAD_MS);
    guard.close();
    // As an earlier version left it: the database, no anchor.
    rmSync(anchorPath(file));
    guard = ReplayGuard.open({ path: file, now: () => t, onProblem: (m) => problems.push(m) });
    try {
      assert.equal(guard.notBefore, 0);
      const dup = guard.remember('a', 'da', t, t + 1000);
      assert.equal(dup.fresh === false && dup.why, 'duplicate');
      assert.ok((JSON.parse(readFileSync(anchorPath(file), 'utf8')) as { horizon: number }).horizon >= t);
      assert.deepEqual(
        problems.filter((p) => /replay memory/.test(p)),
        [],
      );
    } finally {
      guard.close();
    }
  });
});

describe('signer checks', () => {
  const ca = createCommandCa('unit CA');
  const verifier = new CommandVerifier(ca.certPem);
  const signed = (signer: { certPem: string; keyPem: string }) => parseCommand(Buffer.from(signCommand({ deviceId: 'car', name: 'ping' }, signer).payload));

  it('accepts an operator of the pinned CA, with key usage digitalSignature and code signing', () => {
    const alice = issueOperatorCertificate(ca, 'alice');
    assert.equal(readCertificateExtensions(new X509Certificate(alice.certPem).raw).keyUsage, KEY_USAGE.digitalSignature);
    assert.deepEqual(verifier.verify(signed(alice)).subject, 'CN=alice');
  });

  it('refuses a signer without digitalSignature and a CA as signer; a leaf certificate cannot be pinned as the CA', () => {
    const noSign = issueOperatorCertificate(ca, 'eve', { keyUsage: KEY_USAGE.cRLSign });
    assert.throws(
      () => verifier.verify(signed(noSign)),
      (err: unknown) => err instanceof VerifyFailure && err.reason === 'untrusted-signer' && /lacks digitalSignature/.test(err.message),
    );
    assert.throws(
      () => verifier.verify(signed(ca)),
      (err: unknown) => err instanceof VerifyFailure && /is a CA certificate/.test(err.message),
    );
    assert.throws(() => new CommandVerifier(issueOperatorCertificate(ca, 'leaf').certPem), /is not a CA certificate/);
  });
});

describe('preconditions', () => {
  it('reports the failing top-level terms with the values they read; no value yet never satisfies', () => {
    const p = new Precondition('VehicleSpeed == 0 && (EngineSpeed < 900 || abs(Accel) > 2) && Gear != 3');
    const values: Record<string, number> = { VehicleSpeed: 12, EngineSpeed: 1500, Accel: -1 };
    const outcome = p.evaluate((name) => values[name]);
    assert.equal(outcome.ok, false);
    assert.deepEqual(outcome.failed, [
      { condition: 'VehicleSpeed == 0', values: { VehicleSpeed: 12 } },
      { condition: '(EngineSpeed < 900) || (abs(Accel) > 2)', values: { EngineSpeed: 1500, Accel: -1 } },
      { condition: 'Gear != 3', values: { Gear: null } },
    ]);
    values.VehicleSpeed = 0;
    values.EngineSpeed = 700;
    values.Gear = 0;
    assert.equal(p.evaluate((name) => values[name]).ok, true);
  });

  it('[14.5] a stale value fails every term reading it, with its age and limit; a missing one fails even under !', () => {
    const p = new Precondition('Speed == 0 && !(Gear == 3) && Ignition == 1');
    const values: Record<string, number> = { Speed: 0, Ignition: 1 };
    const ages: Record<string, number> = { Speed: 45_000, Ignition: 100 };
    const outcome = p.evaluate(
      (name) => values[name],
      (name) => (ages[name] === undefined ? undefined : { ageMs: ages[name], maxAgeMs: 1000 }),
    );
    assert.equal(outcome.ok, false);
    assert.deepEqual(outcome.failed, [
      { condition: 'Speed == 0', values: { Speed: 0 }, stale: { Speed: { ageMs: 45_000, maxAgeMs: 1000 } } },
      // No value for Gear: `!(Gear == 3)` would hold on NaN; it fails.
      { condition: '!(Gear == 3)', values: { Gear: null } },
    ]);
    assert.deepEqual(outcome.stale, { Speed: { ageMs: 45_000, maxAgeMs: 1000 } });
    assert.equal(describeFailure(outcome.failed[0]!), 'Speed == 0 (Speed = 0, stale: received 45.0 s ago, limit 1.0 s)');
    // Dated ahead of the clock (the clock was set back): its age cannot be known.
    values.Gear = 2;
    ages.Speed = -3_600_000;
    const ahead = p.evaluate(
      (name) => values[name],
      (name) => (ages[name] === undefined ? undefined : { ageMs: ages[name], maxAgeMs: 1000 }),
    );
    assert.equal(describeFailure(ahead.failed[0]!), "Speed == 0 (Speed = 0, stale: dated 3600.0 s ahead of the car's clock, limit 1.0 s)");
    ages.Speed = 999;
    assert.equal(
      p.evaluate(
        (name) => values[name],
        (name) => (ages[name] === undefined ? undefined : { ageMs: ages[name], maxAgeMs: 1000 }),
      ).ok,
      true,
    );
  });

  it("[14.5] the limit: the command's own, else the signal's, else a few cycles of its message (with a floor), else the default", () => {
    const timings: Record<string, SignalTiming> = {
      Speed: { name: 'can0.DYN.Speed', receivedAt: 10_000, periodMs: 20 },
      Temp: { name: 'can0.TEMPS.Temp', receivedAt: 10_000, periodMs: 1000 },
      Door: { name: 'can0.BODY.Door', receivedAt: 10_000, periodMs: undefined },
      'obd.rpm': { name: 'obd.rpm', receivedAt: 10_000, periodMs: 500 },
      'DYN.Speed': { name: 'can0.DYN.Speed', receivedAt: 10_000, periodMs: 20 },
    };
    const config = freshnessConfigSchema.parse({ signals: { 'DYN.Speed': 250 } });
    const freshness = new SignalFreshness(config, (name) => timings[name]);
    assert.equal(freshness.limitOf(timings.Speed!), 250, 'its own, by another name of the same signal');
    assert.equal(freshness.limitOf(timings.Temp!), 3000, '3 cycles');
    assert.equal(freshness.limitOf(timings['obd.rpm']!), 1500, '3 poll intervals');
    assert.equal(freshness.limitOf({ ...timings.Temp!, periodMs: 10 }), 1000, 'the floor');
    assert.equal(freshness.limitOf(timings.Door!), 5000, 'no cycle time: the default');
    assert.equal(freshness.limitOf(timings.Door!, 700), 700, "the command's own");
    assert.deepEqual(freshness.at(12_000)('Temp'), { ageMs: 2000, maxAgeMs: 3000 });
    assert.throws(
      () => new SignalFreshness(freshnessConfigSchema.parse({ signals: { Nope: 5 } }), (name) => timings[name]),
      /commands\.freshness\.signals\.Nope: no bus or OBD key has a signal 'Nope'/,
    );
  });

  it('[14.5] the bus decoder stamps each value with its frame time; a multiplexed signal only when its page is in the frame', () => {
    const decoder = new BusDecoder('can0', compileDatabase(loadDbcFile(DEMO_DBC_PATH, { strict: true })));
    const diag = decoder.database.byName('ECU_DIAG_STATUS')!;
    const frame = (ts: number, values: Record<string, number>) => {
      decoder.decode(messageFrame(diag, values, { ts, bus: 'can0' }));
    };
    const at = (signal: string): number => decoder.receivedAt[diag.slot(signal)]!;
    assert.equal(at('MilOn'), 0, 'never received');
    frame(100, { DiagPage: 2, MilOn: 1, ActiveDtcCount: 1, FirstDtc: 0 });
    frame(200, { DiagPage: 0, BatteryVoltage: 12.5, AlternatorCurrent: 0, EcuTemperature: 30 });
    assert.equal(at('DiagPage'), 200);
    assert.equal(at('BatteryVoltage'), 200);
    assert.equal(at('MilOn'), 100, 'page 2 was not in the last frame');
    const engine = decoder.database.byName('ENGINE_DATA')!;
    decoder.decode(messageFrame(engine, { EngineSpeed: 800 }, { ts: 300, bus: 'can0' }));
    assert.ok(engine.slots.every((slot) => decoder.receivedAt[slot] === 300));
  });

  it('rejects a syntax error and, given the known signals, an unknown one, at its column', () => {
    assert.throws(() => new Precondition('speed = 0'), /column 7: unexpected '=': compare with '=='/);
    assert.throws(() => new Precondition('Speed == 0 && Ignition == 0', (name) => name === 'Speed'), /column 15: unknown signal 'Ignition'/);
  });

  it('reads value-table labels and reports a failed term as written', () => {
    const ignition = new Map([
      [0, 'OFF'],
      [1, 'ACC'],
      [2, 'ON'],
    ]);
    const p = new Precondition(
      'speed == 0 && ignition == off',
      (name) => name === 'speed' || name === 'ignition',
      (name) => (name === 'ignition' ? ignition : undefined),
    );
    assert.deepEqual(p.signals, ['speed', 'ignition']);
    const values: Record<string, number> = { speed: 0, ignition: 2 };
    assert.deepEqual(p.evaluate((name) => values[name]).failed, [{ condition: 'ignition == off', values: { ignition: 2 } }]);
    values.ignition = 0;
    assert.equal(p.evaluate((name) => values[name]).ok, true);
    // Labels with a backslash or a quote in them: each term is compiled again from what it prints.
    const odd = new Map([
      [0, 'A\\B'],
      [1, 'say "x"'],
      [2, "it's"],
    ]);
    const known = (name: string): boolean => name === 'mode';
    const quoted = new Precondition(`mode != 'A\\B' && mode != 'say "x"' && mode == "it's"`, known, () => odd);
    assert.deepEqual(
      quoted.evaluate(() => 2),
      { ok: true, precondition: quoted.source, failed: [], values: { mode: 2 } },
    );
    assert.deepEqual(quoted.evaluate(() => 1).failed, [
      { condition: `mode != 'say "x"'`, values: { mode: 1 } },
      { condition: `mode == "it's"`, values: { mode: 1 } },
    ]);
    assert.deepEqual(quoted.evaluate(() => 0).failed[0], { condition: `mode != "A\\B"`, values: { mode: 0 } });
    assert.throws(() => new Precondition('speed < 1e400', () => true), /column 9: number out of range '1e400'/);
    assert.throws(
      () =>
        new Precondition(
          'ignition == running',
          (name) => name === 'ignition',
          () => ignition,
        ),
      /column 13: 'running' is neither a signal nor a label of 'ignition' \(its labels: "OFF", "ACC", "ON"\)/,
    );
  });
});
