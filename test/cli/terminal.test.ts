/**
 * [16.terminal] `telematics-agent run` in a real terminal: a pseudo-terminal of 80 and of 200 columns under tmux, its
 * screen captured as a person sees it. One status line, redrawn in place, that fits the width with the most
 * important fields first; log lines whole above it (before, while and after it is shown); human-readable text, no
 * JSON, unless the config asks for JSON; the status never logged a second time on that screen. The same run into the
 * journal keeps JSON lines and its status debug line. Every wait is for what the screen shows, never a fixed time.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, it, type TestContext } from 'node:test';
import { ensureDevPki } from '../../src/pki/dev-pki.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { terminalColumns } from '../../src/text/terminal-text.js';
import { writeConfig } from '../support/agent-process.js';
import { freePort } from '../support/mosquitto.js';
import { AGENT_CLI } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { TerminalSession, type Screen } from '../support/tmux.js';

const DEVICE = 'terminal-test';
const SIGNALS = [
  'VEHICLE_DYNAMICS.VehicleSpeed',
  'ENGINE_DATA.EngineSpeed',
  'TRANSMISSION.GearEngaged',
  'ENGINE_TEMPS.CoolantTemp',
  'FUEL_STATUS.FuelLevel',
  'ODOMETER.Odometer',
];
/** Generous: a loaded 2-core machine starts node, the development broker (mosquitto) and the TLS session slowly. */
const START_TIMEOUT_MS = 60_000;
/** Only the live status line says `frames/s` (the summary says `frames`, the status debug entry `framesPerS`). */
const isStatusLine = (line: string): boolean => line.includes('frames/s');
/** The first fields, in this order: the link, the outbox, the frame rate, the errors. */
const STATUS_HEAD = /^uplink connected, \d+ buffered, \d+ frames\/s, 0 errors( \| |$)/;

/** The development PKI the runs' embedded brokers use, made once (RSA keys in pure JS take seconds). */
let certsDir: string;
before(() => {
  certsDir = path.join(makeTempDir('terminal-pki-'), 'certs');
  ensureDevPki(certsDir, DEVICE);
});

/** The simulated demo car with a data path, the embedded broker on a free port and the status page on another. */
async function carConfig(extra: object = {}): Promise<{ file: string; url: string }> {
  const dir = makeTempDir('terminal-');
  const url = `mqtts://localhost:${await freePort()}`;
  const file = writeConfig(dir, 'car', {
    deviceId: DEVICE,
    buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', seed: 1 } }],
    status: { intervalMs: 200, signals: SIGNALS },
    collection: { rules: [{ name: 'driving', mode: 'periodic', intervalMs: 1000, priority: 3, signals: ['VehicleSpeed', 'EngineSpeed'] }] },
    outbox: { path: 'var/outbox.db' },
    uplink: { url, embeddedBroker: true, certsDir },
    health: { http: { port: 0 } },
    ...extra,
  });
  return { file, url };
}

/**
 * `telematics-agent run --config file` in a terminal of `columns` × 24, its tmux server ended with the test;
 * `argv` replaces the command (a shell around it).
 */
async function inTerminal(t: TestContext, columns: number, file: string, argv?: string[]): Promise<TerminalSession> {
  const session = await TerminalSession.start(argv ?? [process.execPath, AGENT_CLI, 'run', '--config', file], { columns, rows: 24 });
  t.after(() => session.close());
  return session;
}

const screenText = (screen: Screen): string => `the screen:\n${screen.joined.join('\n')}`;

/**
 * The screen holds exactly one status line, on one row, within the width (one column left free), beginning with the
 * most important fields; returns it.
 */
function oneStatusLine(screen: Screen, columns: number): string {
  const status = screen.joined.filter(isStatusLine);
  assert.equal(status.length, 1, screenText(screen));
  // Joined, a line the terminal had wrapped would be longer than the width: it was never wrapped.
  const line = status[0]!;
  assert.ok(terminalColumns(line) <= columns - 1, `${terminalColumns(line)} columns on a terminal of ${columns}: ${line}`);
  assert.equal(screen.rows.filter(isStatusLine).length, 1, screenText(screen));
  assert.match(line, STATUS_HEAD);
  return line;
}

/** Every line on the screen is whole: a known message from its first character, the status line, or the summary. */
function everyLineWhole(screen: Screen, url: string): void {
  const port = url.slice(url.lastIndexOf(':'));
  const known = [
    /^logging at debug for the first 300 s after start, then at info$/,
    new RegExp(
      `^broker: mosquitto \\d+\\.\\d+\\.\\d+ on mqtts://localhost${port} \\(cars\\) and mqtts://localhost:\\d+ \\(backend, certificates in ${certsDir}\\), MQTT 5$`,
    ),
    new RegExp(
      `^data path open: 1 collection rules, \\d+ messages waiting in the outbox rules=\\["driving"\\] outbox=\\S+outbox\\.db uplink=mqtts://localhost${port}$`,
    ),
    // The development signer's start, at debug (the verbose start shows it).
    /^broker: the development certificate signer connected to mqtts:\/\/localhost:\d+; answering vehicles\/\+\/csr$/,
    /^health: status page on http:\/\/127\.0\.0\.1:\d+\/$/,
    new RegExp(`^uplink: connected to mqtts://localhost${port}$`),
    // [19.wakeup] The wake-up time, once per bus, at info.
    /^can0: first frame decoded \d+\.\d{3} s after the process started$/,
    /^shutdown: SIGINT: stopping the sources, committing open batches to the outbox, closing the MQTT session deadlineMs=\d+$/,
    /^shutdown: [a-z][^=]* atMs=\d+$/,
    /^shutdown: done in \d+ ms signal=SIGINT durationMs=\d+$/,
    /^stopped after \d+\.\d s$/,
    /^ {2}can0 \(sim:demo\): \d+ frames, \d+ signals, 0 unknown frames, 0 decode errors$/,
    new RegExp(`^ {2}data: \\d+ samples in \\d+ messages, \\d+ published to mqtts://localhost${port}, \\d+ buffered$`),
  ];
  for (const line of screen.joined) {
    if (isStatusLine(line)) continue;
    assert.doesNotMatch(line, /^\{|"level":/, `JSON on the screen: ${line}\n${screenText(screen)}`);
    assert.ok(
      known.some((pattern) => pattern.test(line)),
      `not a whole line: ${JSON.stringify(line)}\n${screenText(screen)}`,
    );
  }
}

/** Runs the car in a terminal of `columns` until its link is up, stops it with Ctrl-C; the live and the last screen. */
async function runAndStop(t: TestContext, columns: number): Promise<{ live: Screen; last: Screen; url: string }> {
  const { file, url } = await carConfig();
  const session = await inTerminal(t, columns, file);
  const live = await session.waitForScreen(
    (screen) => screen.joined.some((line) => isStatusLine(line) && line.startsWith('uplink connected')),
    'a status line with the link up',
    START_TIMEOUT_MS,
  );
  // A person presses Ctrl-C: the terminal sends SIGINT, and the stop's log lines come while the status line is shown.
  await session.sendKeys('C-c');
  assert.equal(await session.exited(START_TIMEOUT_MS), 0);
  return { live, last: await session.screen(), url };
}

/** The stop's lines above the status line, which shows the last state, then the summary, then the stop's end. */
function stopInOrder(last: Screen): void {
  const lines = last.joined;
  const status = lines.findIndex(isStatusLine);
  const stopping = lines.findIndex((line) => line.startsWith('shutdown: SIGINT: stopping'));
  assert.ok(stopping >= 0 && stopping < status, screenText(last));
  assert.ok(
    lines.slice(stopping, status).every((line) => line.startsWith('shutdown: ')),
    screenText(last),
  );
  assert.match(lines[status + 1]!, /^stopped after /);
  assert.match(lines[lines.length - 1]!, /^shutdown: done in /);
}

describe('[16.terminal] run in a terminal', () => {
  it('[16.terminal] at 80 columns: one status line that fits, link and outbox first; log lines whole above it; text, no JSON', async (t) => {
    const { live, last, url } = await runAndStop(t, 80);
    // While it runs: the status line is the last line, under the log lines of the start.
    const line = oneStatusLine(live, 80);
    assert.equal(live.joined[live.joined.length - 1], line);
    everyLineWhole(live, url);
    assert.ok(live.joined.includes(`uplink: connected to ${url}`), screenText(live));
    // After Ctrl-C: still one status line; the stop's lines whole above it.
    oneStatusLine(last, 80);
    everyLineWhole(last, url);
    stopInOrder(last);
    // The verbose start logs at debug, but not the status: the status line shows it.
    assert.ok(!last.joined.some((l) => /^status\b|framesPerS/.test(l)), screenText(last));
    t.diagnostic(`the screen at 80 columns after Ctrl-C:\n${last.rows.join('\n')}`);
  });

  it('[16.terminal] at 200 columns: one status line that fits, with every configured signal', async (t) => {
    const { live, last, url } = await runAndStop(t, 200);
    const line = oneStatusLine(live, 200);
    assert.match(
      line,
      /\| VehicleSpeed \d+\.\d\d km\/h, EngineSpeed \d+\.\d rpm, GearEngaged [A-Z0-9]+, CoolantTemp -?\d+ degC, FuelLevel \d+\.\d %, Odometer \d+\.\d km( \| |$)/,
    );
    everyLineWhole(live, url);
    oneStatusLine(last, 200);
    everyLineWhole(last, url);
    stopInOrder(last);
  });

  it('[16.terminal] a window made wider shows more of the status line at once, still one line', async (t) => {
    const { file } = await carConfig();
    const session = await inTerminal(t, 80, file);
    await session.waitForScreen(
      (screen) => screen.joined.some((l) => isStatusLine(l) && STATUS_HEAD.test(l)),
      'a status line with the link up',
      START_TIMEOUT_MS,
    );
    await session.resize(200, 24);
    const wide = await session.waitForScreen(
      (screen) => screen.joined.some((l) => isStatusLine(l) && l.includes('Odometer')),
      'the status line at 200 columns',
      10_000,
    );
    oneStatusLine(wide, 200);
    await session.sendKeys('C-c');
    assert.equal(await session.exited(START_TIMEOUT_MS), 0);
  });

  it('[16.terminal] logging.format json wins on a terminal too: whole JSON lines above the one status line, no status entry', async (t) => {
    const { file } = await carConfig({ logging: { format: 'json' } });
    const session = await inTerminal(t, 80, file);
    await session.waitForScreen(
      (screen) => screen.joined.some((l) => isStatusLine(l) && STATUS_HEAD.test(l)),
      'a status line with the link up',
      START_TIMEOUT_MS,
    );
    await session.sendKeys('C-c');
    assert.equal(await session.exited(START_TIMEOUT_MS), 0);
    const last = await session.screen();
    oneStatusLine(last, 80);
    const entries = last.joined.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as { level: string; component: string; msg: string });
    assert.ok(
      entries.some((e) => e.component === 'uplink' && e.msg.startsWith('uplink: connected')),
      screenText(last),
    );
    assert.ok(
      entries.some((e) => e.msg.startsWith('shutdown: done')),
      screenText(last),
    );
    // Debug lines of the verbose start are there, the status entry is not.
    assert.ok(
      entries.some((e) => e.level === 'debug'),
      screenText(last),
    );
    assert.deepEqual(
      entries.filter((e) => e.component === 'status'),
      [],
    );
    // Nothing else: every line is a JSON entry, the status line or the summary.
    for (const line of last.joined) assert.match(line, /^(\{.*\}|uplink connected, .*|stopped after .*| {2}(can0|data)\b.*)$/, screenText(last));
  });

  it('[16.terminal] into the journal (JOURNAL_STREAM names the stream): JSON lines with the status entry, no live status line', async (t) => {
    const { file } = await carConfig();
    // As systemd names the journal stream it connects stdout and stderr to: here, the terminal itself.
    const script = `JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$0" "$@"`;
    const session = await inTerminal(t, 80, file, ['sh', '-c', script, process.execPath, AGENT_CLI, 'run', '--config', file]);
    await session.waitForScreen((screen) => screen.joined.some((l) => l.includes('"component":"status"')), 'a status entry in the log', START_TIMEOUT_MS);
    await session.sendKeys('C-c');
    assert.equal(await session.exited(START_TIMEOUT_MS), 0);
    const last = await session.screen();
    assert.equal(last.joined.filter(isStatusLine).length, 0, screenText(last));
    const status = last.joined.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(
      status.some((e) => e.component === 'status' && e.level === 'debug' && typeof e.framesPerS === 'number'),
      screenText(last),
    );
  });
});
