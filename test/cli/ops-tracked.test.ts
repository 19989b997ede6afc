/**
 * Tracked commands as an operator runs them: the compiled `telematics-ops` as child processes (send, sign, status,
 * wait, history), a real mosquitto on the shipped fleet configuration (test/support/broker-fixture.ts), cars that are
 * the real agent in this process (test/support/commands.ts), the journal a real SQLite file, and Debian's own
 * `mosquitto_pub` publishing what `sign` wrote.
 *
 * The cars: two online; one that connected once and stopped cleanly (its retained status says offline, shutdown),
 * started again later with the same state folder (its persistent session gets what the broker kept for it); and one
 * ID that never connected.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { CommandResult } from '../../src/commands/result.js';
import { UNSIGNED_ANSWERS_PER_MINUTE } from '../../src/commands/dispatcher.js';
import { ENVELOPE_VERSION } from '../../src/commands/envelope.js';
import type { JournalEntry } from '../../src/fleet/command-journal.js';
import type { InProcessAgent } from '../support/agent-in-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { CommandPki, startCommandAgent } from '../support/commands.js';
import { TestPki } from '../support/mosquitto.js';
import { OPS_CLI, runProgram } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { TerminalSession } from '../support/tmux.js';

const ISO = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z';

const jsonLines = <T>(text: string): T[] =>
  text
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as T);

describe('[18.track] tracked commands: send, status, wait, history, sign, through a real mosquitto', { timeout: 420_000 }, () => {
  const pki = new TestPki('tracked commands test CA');
  const commandPki = new CommandPki();
  const fleet = withBroker({ pki });
  const journal = path.join(makeTempDir('ops-journal-'), 'commands.db');
  const [carA, carB] = [`car-a-${process.pid}`, `car-b-${process.pid}`];
  const carOff = `car-off-${process.pid}`;
  const ghost = `car-ghost-${process.pid}`;
  const offDir = makeTempDir('car-off-');
  const agents: InProcessAgent[] = [];

  const connection = (): string[] => {
    const backend = pki.backend();
    return ['--broker', fleet.broker.backendUrl, '--cert', backend.certFile, '--key', backend.keyFile, '--ca', pki.caFile];
  };
  const operator = ['--operator-cert', commandPki.operatorFiles.certFile, '--operator-key', commandPki.operatorFiles.keyFile];
  const ops = (args: string[]) => runProgram('telematics-ops', [...args, '--journal', journal]);
  const status = async (id: string): Promise<JournalEntry> => {
    const run = await ops(['status', id, '--json']);
    assert.equal(run.status, 0, run.stderr);
    return JSON.parse(run.stdout) as JournalEntry;
  };

  before(async () => {
    fleet.beforeStop(() => Promise.all(agents.map((a) => a.close())));
    for (const deviceId of [carA, carB]) agents.push(await startCommandAgent(fleet.broker, pki, commandPki, { deviceId }));
    // Connected once, stopped cleanly: retained {online: false, reason: 'shutdown'}, and a persistent session.
    const off = await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: carOff, dir: offDir });
    await off.close();
  });

  it('[18.track] send --wait to one car: its results as before, and the journal has the command and its lifecycle (status, history)', async () => {
    const run = await ops(['send', ...connection(), ...operator, '-d', carA, '-c', 'ping', '-p', '{"echo":"tracked"}', '--wait', '--json']);
    assert.equal(run.status, 0, run.stderr + run.stdout);
    const results = jsonLines<CommandResult>(run.stdout);
    assert.deepEqual(
      results.map((r) => r.status),
      ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED'],
    );
    const id = results[0]!.id!;
    const entry = await status(id);
    assert.equal(entry.deviceId, carA);
    assert.equal(entry.name, 'ping');
    assert.deepEqual(entry.params, { echo: 'tracked' });
    assert.equal(entry.operator, 'alice');
    assert.equal(entry.broker, fleet.broker.backendUrl);
    assert.ok(entry.expiresAt! - entry.issuedAt === 300_000);
    assert.deepEqual(
      entry.steps.map((s) => `${s.source} ${s.status}`),
      ['ops SENT', 'car ACCEPTED', 'car IN_PROGRESS', 'car SUCCEEDED'],
    );
    assert.deepEqual(
      entry.steps.map((s) => s.seq).slice(1),
      results.map((r) => r.seq),
    );
    assert.equal(entry.state, 'SUCCEEDED');
    assert.deepEqual((entry.final!.detail as { echo: string }).echo, 'tracked');
    const text = await ops(['status', id]);
    assert.match(text.stdout, new RegExp(`^command ${id}: ping to ${carA}\n  issued    ${ISO} by alice, sent through ${fleet.broker.backendUrl}\n`));
    assert.match(text.stdout, new RegExp(`^    ${ISO}  SUCCEEDED$`, 'm'));
    assert.match(text.stdout, /^ {2}outcome {3}SUCCEEDED$/m);
    // wait on a command the journal has a final result for: at once, with its exit code.
    const done = await ops(['wait', id]);
    assert.equal(done.status, 0, done.stderr);
    assert.match(done.stdout, /SUCCEEDED/);
    const missing = await ops(['status', 'no-such-id']);
    assert.equal(missing.status, 1);
    assert.equal(missing.stderr, `telematics-ops: no command "no-such-id" in the command journal ${journal}\n`);
  });

  it('[18.track] a journal that cannot be used stops send before anything is sent (one line naming the file); --no-journal sends untracked', async () => {
    const damaged = path.join(makeTempDir('ops-damaged-'), 'commands.db');
    writeFileSync(damaged, 'not a journal '.repeat(100));
    const before = fleet.backend.messages.length;
    const refused = await runProgram('telematics-ops', ['send', ...connection(), ...operator, '-d', carA, '-c', 'ping', '--journal', damaged]);
    assert.equal(refused.status, 1);
    assert.match(
      refused.stderr,
      new RegExp(
        `^telematics-ops: the command journal ${damaged} is damaged \\(.*\\): move it aside to start a new one; nothing was sent \\(--no-journal sends untracked\\)\n$`,
      ),
    );
    const untracked = await runProgram('telematics-ops', ['send', ...connection(), ...operator, '-d', carA, '-c', 'ping', '--wait', '--no-journal']);
    assert.equal(untracked.status, 0, untracked.stderr);
    assert.match(untracked.stdout, /SUCCEEDED/);
    // The refused send published nothing: the car's only new results are the untracked ping's.
    const results = fleet.backend.messages.slice(before).filter((m) => m.topic.startsWith(`vehicles/${carA}/results/`));
    assert.equal(new Set(results.map((m) => (JSON.parse(m.payload.toString('utf8')) as CommandResult).id)).size, 1);
  });

  it('[18.track] a car that never connected is told apart from one that is offline: exit 6, "no car ... has ever connected", with or without --wait', async () => {
    for (const wait of [['--wait', '--timeout', '1'], []]) {
      const run = await ops(['send', ...connection(), ...operator, '-d', ghost, '-c', 'ping', ...wait]);
      assert.equal(run.status, 6, run.stderr + run.stdout);
      const [line] = run.stdout.trim().split('\n');
      assert.match(line!, new RegExp(`^\\S+ no car ${ghost} has ever connected to this broker \\(no retained status\\): the command reaches no one`));
      const entry = await status(line!.split(' ')[0]!);
      assert.equal(entry.state, 'NO_SUCH_CAR');
    }
  });

  it('[18.track] many cars (--device repeated, --devices-file), in a pipe: one line per car, each its own command ID and journal entry, a summary, the worst exit code', async () => {
    const devicesFile = path.join(makeTempDir('devices-'), 'rollout.txt');
    writeFileSync(devicesFile, `# the pilot\n${carA}\n${carB}\n\n${carOff}   # parked\n${ghost}\n`);
    const run = await ops(['send', ...connection(), ...operator, '--devices-file', devicesFile, '-d', carA, '-c', 'ping', '--concurrency', '2']);
    assert.equal(run.status, 6, run.stderr + run.stdout);
    const lines = run.stdout.trim().split('\n');
    assert.equal(lines.length, 5, run.stdout);
    assert.equal(lines[4], '4 cars: 2 sent to an online car, 1 queued, 1 no such car (exit 6)');
    const byCar = new Map(lines.slice(0, 4).map((l) => [l.split(' ')[0]!, l]));
    assert.deepEqual([...byCar.keys()].sort(), [carA, carB, carOff, ghost].sort());
    assert.match(byCar.get(carA)!, new RegExp(`^${carA} \\S+ sent: ${carA} is online since ${ISO}$`));
    assert.match(
      byCar.get(carOff)!,
      new RegExp(`^${carOff} \\S+ queued: ${carOff} is offline since ${ISO} \\(shutdown\\); the broker keeps the command until it expires at ${ISO}$`),
    );
    const ids = lines.slice(0, 4).map((l) => l.split(' ')[1]!);
    assert.equal(new Set(ids).size, 4);
    const history = jsonLines<{ id: string; deviceId: string; command: string; state: string }>((await ops(['history', '--json', '--limit', '4'])).stdout);
    assert.deepEqual(new Set(history.map((h) => h.id)), new Set(ids));
    assert.deepEqual(
      history.map((h) => `${h.deviceId} ${h.state}`).sort(),
      [`${carA} SENT`, `${carB} SENT`, `${carOff} QUEUED`, `${ghost} NO_SUCH_CAR`].sort(),
    );
    const oneCar = jsonLines<{ deviceId: string }>((await ops(['history', '--json', '--device', carB])).stdout);
    assert.ok(oneCar.length >= 1 && oneCar.every((h) => h.deviceId === carB));
    const table = (await ops(['history', '--limit', '2'])).stdout.split('\n');
    assert.match(table[0]!, /^ID +DEVICE +COMMAND +SENT +STATE$/);

    // --wait on the online cars, as JSON: one object per car, the summary on stderr.
    const waited = await ops(['send', ...connection(), ...operator, '-d', carA, '-d', carB, '-c', 'ping', '--wait', '--timeout', '60', '--json']);
    assert.equal(waited.status, 0, waited.stderr + waited.stdout);
    const outcomes = jsonLines<{ device: string; id: string; status: string }>(waited.stdout);
    assert.deepEqual(outcomes.map((o) => `${o.device} ${o.status}`).sort(), [`${carA} SUCCEEDED`, `${carB} SUCCEEDED`]);
    assert.equal(waited.stderr, '2 cars: 2 succeeded (exit 0)\n');
  });

  it('[18.track] send --where picks the cars from the fleet view with the filters of fleet; beside a list it narrows the list and says what it left out', async () => {
    const mine = `device=car-*-${process.pid}`;
    const online = await ops(['send', ...connection(), ...operator, '--where', 'online', '--where', mine, '-c', 'ping', '--wait', '--json']);
    assert.equal(online.status, 0, online.stderr + online.stdout);
    const outcomes = jsonLines<{ device: string; status: string }>(online.stdout);
    assert.deepEqual(outcomes.map((o) => `${o.device} ${o.status}`).sort(), [`${carA} SUCCEEDED`, `${carB} SUCCEEDED`]);
    assert.equal(online.stderr, '2 cars: 2 succeeded (exit 0)\n');

    // A list narrowed by a filter: only the listed car that is offline gets it; the three others are named as left out.
    const devicesFile = path.join(makeTempDir('devices-'), 'all.txt');
    writeFileSync(devicesFile, [carA, carB, carOff, ghost].join('\n'));
    const offline = await ops(['send', ...connection(), ...operator, '--devices-file', devicesFile, '--where', 'offline', '-c', 'ping']);
    assert.equal(offline.status, 5, offline.stderr + offline.stdout);
    assert.equal(offline.stderr, '3 of the 4 listed cars do not match --where offline: not sent to them\n');
    assert.match(offline.stdout, new RegExp(`^\\S+ queued: ${carOff} is offline since ${ISO} \\(shutdown\\)`));

    // Nothing matches: nothing sent, exit 6 as for a car that does not exist.
    const none = await ops(['send', ...connection(), ...operator, '--where', 'agent-version=0.0.0-none', '--where', mine, '-c', 'ping']);
    assert.equal(none.status, 6, none.stderr + none.stdout);
    assert.equal(none.stderr, `no car of the fleet view matches --where agent-version=0.0.0-none --where ${mine}: nothing sent\n`);
    assert.equal(none.stdout, '');

    // A term that is not a filter, and a contradiction, are usage errors before anything is sent.
    for (const [terms, why] of [
      [['--where', 'speed>3'], 'not a filter'],
      [['--where', 'online', '--where', 'offline'], 'a car is not both online and offline'],
      [['--where', 'outbox-over=many'], 'expected outbox-over=<a number of at least 0>'],
    ] as const) {
      const bad = await ops(['send', ...connection(), ...operator, ...terms, '-c', 'ping']);
      assert.equal(bad.status, 1, bad.stderr);
      assert.ok(bad.stderr.includes(`${why} (one of online, offline, device=PATTERN, cert-expiring=DAYS, outbox-over=N, agent-version=V)`), bad.stderr);
    }
  });

  it('[18.track] many cars on a terminal: one progress line redrawn in place, the cars that did not end well above it, then the summary', async (t) => {
    const terminal = await TerminalSession.start(
      [process.execPath, OPS_CLI, 'send', ...connection(), ...operator, '-d', carA, '-d', ghost, '-d', carB, '-c', 'ping', '--journal', journal],
      { columns: 200, rows: 20 },
    );
    t.after(() => terminal.close());
    assert.equal(await terminal.exited(60_000), 6);
    const { joined } = await terminal.screen();
    const shown = joined.filter((line) => line.trim() !== '');
    assert.equal(shown.length, 2, shown.join('\n'));
    assert.match(shown[0]!, new RegExp(`^${ghost} \\S+ no car ${ghost} has ever connected to this broker`));
    // The progress line was cleared before the summary took its place.
    assert.equal(shown[1], '3 cars: 2 sent to an online car, 1 no such car (exit 6)');
  });

  it('[18.track] an offline car: send --wait exits 5 "queued"; wait ID follows it when the car comes back and gets it from the broker', async () => {
    const run = await ops(['send', ...connection(), ...operator, '-d', carOff, '-c', 'ping', '-p', '{"echo":"late"}', '--wait', '--timeout', '1', '--json']);
    assert.equal(run.status, 5, run.stderr + run.stdout);
    const last = jsonLines<{ id: string; status: string; message: string }>(run.stdout).pop()!;
    assert.equal(last.status, 'QUEUED');
    assert.match(
      last.message,
      new RegExp(`^queued: ${carOff} is offline since ${ISO} \\(shutdown\\); the broker keeps the command until it expires at ${ISO}$`),
    );
    assert.equal((await status(last.id)).state, 'QUEUED');

    // `wait` subscribes (it says so on stderr), then the car comes back.
    const child = spawn(process.execPath, [OPS_CLI, 'wait', last.id, '--timeout', '120', '--json', ...connection(), '--journal', journal], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    await new Promise<void>((resolve, reject) => {
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
        if (stderr.includes('waiting for ')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`wait exited (${code}) before it subscribed: ${stderr}`)));
    });
    assert.match(stderr, new RegExp(`^waiting for ${last.id} \\(ping to ${carOff}\\) on ${fleet.broker.backendUrl}, up to 120 s$`, 'm'));
    agents.push(await startCommandAgent(fleet.broker, pki, commandPki, { deviceId: carOff, dir: offDir }));
    assert.equal(await exited, 0, stderr + stdout);
    const results = jsonLines<CommandResult>(stdout);
    assert.equal(results.at(-1)!.status, 'SUCCEEDED');
    assert.equal((results.at(-1)!.detail as { echo: string }).echo, 'late');
    const entry = await status(last.id);
    assert.deepEqual(
      entry.steps.map((s) => `${s.source} ${s.status}`),
      ['ops SENT', 'ops QUEUED', 'car ACCEPTED', 'car IN_PROGRESS', 'car SUCCEEDED'],
    );
    assert.equal(entry.state, 'SUCCEEDED');
  });

  it('[18.track] sign writes the payload send would publish; mosquitto_pub publishes it and the car answers; unsigned and malformed payloads published the same way are answered too, within the rate limit', async () => {
    const dir = makeTempDir('signed-');
    const payloadFile = path.join(dir, 'ping.json');
    const signed = await ops(['sign', '-d', carA, '-c', 'ping', '-p', '{"echo":"pub"}', ...operator, '--out', payloadFile]);
    assert.equal(signed.status, 0, signed.stderr);
    assert.equal(signed.stdout, '');
    const id = new RegExp(`^signed (\\S+): ping for ${carA}, expires at ${ISO}; publish it \\(QoS 1\\) to vehicles/${carA}/commands/ping; `).exec(
      signed.stderr,
    )?.[1];
    assert.ok(id, signed.stderr);
    const wire = JSON.parse(readFileSync(payloadFile, 'utf8')) as { envelope: string; signature: string; signer: string };
    assert.deepEqual(Object.keys(wire), ['envelope', 'signature', 'signer']);
    assert.equal((JSON.parse(Buffer.from(wire.envelope, 'base64').toString('utf8')) as { id: string }).id, id);
    const entry = await status(id);
    assert.equal(entry.broker, undefined);
    assert.deepEqual(
      entry.steps.map((s) => s.status),
      ['SIGNED'],
    );
    assert.match((await ops(['status', id])).stdout, /by alice, signed, not sent by telematics-ops\n/);
    // To stdout, the same payload (and a newline).
    const toStdout = await ops(['sign', '-d', carA, '-c', 'ping', ...operator, '--no-journal']);
    assert.equal(toStdout.status, 0, toStdout.stderr);
    assert.deepEqual(Object.keys(JSON.parse(toStdout.stdout) as object), ['envelope', 'signature', 'signer']);

    const backend = pki.backend();
    const mosquittoPub = (args: string[], input?: string) => {
      const common = [
        '-h',
        'localhost',
        '-p',
        String(fleet.broker.backendPort),
        '--cafile',
        pki.caFile,
        '--cert',
        backend.certFile,
        '--key',
        backend.keyFile,
        '-q',
        '1',
      ];
      const child = promisify(execFile)('mosquitto_pub', [...common, ...args]);
      if (input !== undefined) child.child.stdin!.end(input);
      return child;
    };
    const resultsOn = (topic: string): CommandResult[] =>
      fleet.backend.messages.filter((m) => m.topic === topic).map((m) => JSON.parse(m.payload.toString('utf8')) as CommandResult);
    // The signed payload, as another tool publishes it (MQTT 3.1.1, no response topic): results on the default result topic.
    await mosquittoPub(['-t', `vehicles/${carA}/commands/ping`, '-f', payloadFile]);
    const defaultTopic = `vehicles/${carA}/commands/${id}/result`;
    await fleet.backend.waitFor(() => resultsOn(defaultTopic).some((r) => r.status === 'SUCCEEDED'), 'the car to answer the published payload', 30_000);
    assert.equal((resultsOn(defaultTopic).find((r) => r.status === 'SUCCEEDED')!.detail as { echo: string }).echo, 'pub');

    // Unsigned (an envelope with an ID, no signature): REJECTED no-signature, where its sender can read it.
    const unsignedId = `unsigned-${process.pid}`;
    const envelope = Buffer.from(
      JSON.stringify({ v: ENVELOPE_VERSION, id: unsignedId, deviceId: carA, name: 'ping', params: {}, issuedAt: Date.now() }),
    ).toString('base64');
    await mosquittoPub(['-t', `vehicles/${carA}/commands/ping`, '-m', JSON.stringify({ envelope })]);
    const unsignedTopic = `vehicles/${carA}/commands/${unsignedId}/result`;
    await fleet.backend.waitFor(() => resultsOn(unsignedTopic).length > 0, 'the answer to the unsigned payload', 30_000);
    assert.deepEqual(
      resultsOn(unsignedTopic).map((r) => [r.status, r.reason, r.command]),
      [['REJECTED', 'no-signature', undefined]],
    );
    // Not JSON at all, no ID: answered on the MQTT 5 response topic the sender gave.
    const responseTopic = `vehicles/${carA}/results/pub-${process.pid}`;
    await mosquittoPub(['-V', '5', '-D', 'publish', 'response-topic', responseTopic, '-t', `vehicles/${carA}/commands/ping`, '-m', 'not json']);
    await fleet.backend.waitFor(() => resultsOn(responseTopic).length > 0, 'the answer to the malformed payload', 30_000);
    assert.deepEqual(
      resultsOn(responseTopic).map((r) => [r.status, r.reason, r.id]),
      [['REJECTED', 'malformed', null]],
    );

    // A burst of them (one mosquitto_pub, one message a line): answered up to the dispatcher's limit, the rest counted.
    const car = agents.find((a) => a.config.deviceId === carA)!;
    const counted = (): { answered: number; notAnswered: number } => {
      const stats = car.dataPath.healthReport().commands as { unsignedNotAnswered: number };
      return { answered: resultsOn(burstTopic).length, notAnswered: stats.unsignedNotAnswered };
    };
    const burstTopic = `vehicles/${carA}/results/burst-${process.pid}`;
    const burst = 2 * UNSIGNED_ANSWERS_PER_MINUTE;
    const before = counted().notAnswered;
    await mosquittoPub(['-V', '5', '-D', 'publish', 'response-topic', burstTopic, '-t', `vehicles/${carA}/commands/ping`, '-l'], 'not json\n'.repeat(burst));
    await fleet.backend.waitFor(
      () => counted().answered + counted().notAnswered - before === burst,
      `every payload of the burst answered or counted (${JSON.stringify(counted())})`,
      30_000,
    );
    const { answered, notAnswered } = counted();
    // Two answers went before the burst; the bucket refills one every 2 s, so a slow machine answers a few more.
    assert.ok(answered >= UNSIGNED_ANSWERS_PER_MINUTE - 2 && notAnswered - before >= 1, JSON.stringify({ answered, notAnswered, before }));
    assert.ok(resultsOn(burstTopic).every((r) => r.status === 'REJECTED' && r.reason === 'malformed'));
  });
});
