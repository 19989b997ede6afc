/**
 * The agent's local log: the component children and their explicit levels, JSON lines on stderr (the compiled CLI
 * as a child process), the level filter, the verbose start, setLogLevel through the command context of a running
 * agent, the text format, and the plain-text `warn` callback that tests and embedders use.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runAgent } from '../../src/cli/run.js';
import type { CommandContext } from '../../src/commands/handler.js';
import { setLogLevel } from '../../src/commands/handlers/set-log-level.js';
import { DeviceConfigError, parseDeviceConfig } from '../../src/config/device-config.js';
import { defaultLogFormat, fdDestination, Logger, type LogEntry } from '../../src/health/log.js';
import { loggingConfigSchema } from '../../src/health/log-config.js';
import { RemoteLog, type RemoteLogEntry, type RemoteLogSession } from '../../src/health/remote-log.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { writeConfig } from '../support/agent-process.js';
import { runProgramSync } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

interface JsonLine {
  level: string;
  time: string;
  component: string;
  msg: string;
  [field: string]: unknown;
}

/** Lines written to a destination, and the JSON objects they hold. */
function capture(): { write(line: string): void; lines: string[]; json(): JsonLine[] } {
  const lines: string[] = [];
  return {
    lines,
    write(line: string) {
      // The logger writes whole lines, one per call.
      assert.ok(line.endsWith('\n') && line.indexOf('\n') === line.length - 1, JSON.stringify(line));
      lines.push(line.slice(0, -1));
    },
    json: () => lines.map((line) => JSON.parse(line) as JsonLine),
  };
}

const logging = (section: object) => loggingConfigSchema.parse(section);
const simBus = { name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } };

/** Runs the setLogLevel handler as the dispatcher would, against the running agent's context. */
async function set(context: CommandContext, level: string): Promise<unknown> {
  return setLogLevel.run(setLogLevel.params.parse({ level }), context, { id: 'test', signal: new AbortController().signal, progress: () => undefined });
}

/** A session that keeps what the remote log publishes. */
function recordingSession(): RemoteLogSession & { published: RemoteLogEntry[] } {
  const published: RemoteLogEntry[] = [];
  return {
    state: 'connected',
    published,
    topic: (kind) => `vehicles/log-test/${kind}`,
    publish: (_topic, payload) => {
      published.push(JSON.parse(payload) as RemoteLogEntry);
      return Promise.resolve();
    },
    onStateChange: () => () => undefined,
  };
}

describe('[15.4] log: component children with explicit levels', () => {
  it('a child logs with its component and the level it was called with; nothing is read from the text', () => {
    const out = capture();
    const logger = new Logger({ config: logging({ level: 'debug', verboseForS: 0 }), destination: out });
    const heard: LogEntry[] = [];
    logger.onEntry('debug', (entry) => heard.push(entry));
    const uplink = logger.child('uplink');
    const outbox = logger.child('outbox');
    const can0 = logger.child('can0', { prefix: true });
    uplink.info('uplink: connected to mqtts://localhost:8883');
    // The same text at another level is another level; the text of an error, logged at info, stays info.
    uplink.warn('uplink: connected to mqtts://localhost:8883');
    outbox.info('outbox: 3 message(s) rejected: disk full');
    outbox.error('outbox: 3 message(s) rejected: disk full');
    // A bus's child begins each message with the bus's name, as the messages of buses always began.
    can0.debug('interface can0 is open', { state: 'open' });
    // Another component's name in the text is only text; a message without a prefix still has its component.
    logger.child('commands').warn('uplink: restart requested by a remote command: stopping');
    // The methods work passed on alone (the modules' onProblem callbacks).
    const { warn } = logger.child('systemd');
    warn('systemd: systemd-notify is not installed');
    const expected = [
      ['info', 'uplink', 'uplink: connected to mqtts://localhost:8883'],
      ['warn', 'uplink', 'uplink: connected to mqtts://localhost:8883'],
      ['info', 'outbox', 'outbox: 3 message(s) rejected: disk full'],
      ['error', 'outbox', 'outbox: 3 message(s) rejected: disk full'],
      ['debug', 'can0', 'can0: interface can0 is open'],
      ['warn', 'commands', 'uplink: restart requested by a remote command: stopping'],
      ['warn', 'systemd', 'systemd: systemd-notify is not installed'],
    ];
    assert.deepEqual(
      out.json().map((l) => [l.level, l.component, l.msg]),
      expected,
    );
    assert.deepEqual(
      heard.map((e) => [e.level, e.component, e.msg]),
      expected,
    );
    assert.deepEqual(heard[4]!.fields, { state: 'open' });
    // The line as it always was: level, time, component (pino's child binding), the fields, msg.
    assert.match(out.lines[4]!, /^\{"level":"debug","time":"[^"]+","component":"can0","state":"open","msg":"can0: interface can0 is open"\}$/);
    logger.close();
  });

  it("the text format and the lines callback show the message as the child gave it, the bus's name first", () => {
    const out = capture();
    const textLogger = new Logger({ config: logging({ format: 'text', verboseForS: 0 }), destination: out });
    textLogger.child('can0', { prefix: true }).warn('interface can0 is down; waiting for it to come up', { reason: 'no-carrier' });
    textLogger.child('uplink').info('uplink: connected to mqtts://localhost:8883');
    textLogger.close();
    assert.deepEqual(out.lines, ['can0: interface can0 is down; waiting for it to come up reason=no-carrier', 'uplink: connected to mqtts://localhost:8883']);

    const lines: string[] = [];
    const lineLogger = new Logger({ config: logging({ level: 'warn' }), lines: (line) => lines.push(line) });
    lineLogger.child('obd', { prefix: true }).info('adapter ready on /dev/ttyUSB0: ELM327 v1.5');
    lineLogger.child('obd', { prefix: true }).warn('adapter on /dev/ttyUSB0: no answer; reconnecting');
    lineLogger.close();
    assert.deepEqual(lines, ['obd: adapter on /dev/ttyUSB0: no answer; reconnecting']);
  });

  it("the remote log gets the children's entries with their level and component, folds repeats by them, and keeps to its rate", async () => {
    let now = 1_700_000_000_000;
    const logger = new Logger({ config: logging({ level: 'info', verboseForS: 0 }), destination: capture(), now: () => now });
    const session = recordingSession();
    const remote = new RemoteLog({ config: { level: 'warn', maxPerMinute: 4, foldWindowS: 0.2 }, now: () => now });
    const stop = logger.onEntry('warn', (entry) => remote.add(entry));
    remote.attach(session);
    try {
      const can0 = logger.child('can0', { prefix: true });
      const can1 = logger.child('can1', { prefix: true });
      const uplink = logger.child('uplink');
      const t0 = now;
      // 10 repeats on can0 (the number masked), the same text on can1 (another component: another entry), an info line
      // (below the remote level: never sent), then 4 distinct uplink warnings: one past the minute's 4.
      for (let i = 0; i < 10; i++) can0.warn(`interface can0 is down (${i} s); waiting for it to come up`);
      can1.warn('interface can0 is down (0 s); waiting for it to come up');
      uplink.info('uplink: connected to mqtts://localhost:8883');
      for (const what of ['a', 'b', 'c', 'd']) uplink.warn(`uplink: trouble ${what}`);
      await delay(250);
      assert.deepEqual(
        session.published.map((e) => [e.level, e.component, e.msg, e.count]),
        [
          ['warn', 'can0', 'can0: interface can0 is down (0 s); waiting for it to come up', 1],
          ['warn', 'can1', 'can1: interface can0 is down (0 s); waiting for it to come up', 1],
          ['warn', 'uplink', 'uplink: trouble a', 1],
          ['warn', 'uplink', 'uplink: trouble b', 1],
        ],
      );
      // A minute later: the 9 folded repeats of can0 in one entry, with the two uplink warnings the rate dropped.
      now = t0 + 60_001;
      await delay(250);
      const folded = session.published[4]!;
      assert.deepEqual(
        [folded.component, folded.count, folded.suppressed, folded.msg],
        ['can0', 9, 2, 'can0: interface can0 is down (1 s); waiting for it to come up'],
      );
      assert.equal(session.published.length, 5);
    } finally {
      stop();
      remote.close();
      logger.close();
    }
  });
});

describe('log: JSON lines', () => {
  it('one object per line with time, level, msg, component and the fields; the level filters', () => {
    const out = capture();
    const logger = new Logger({ config: logging({ level: 'warn', verboseForS: 0 }), destination: out });
    const uplink = logger.child('uplink');
    logger.child('outbox').error('outbox: 2 message(s) rejected: disk full', { messages: 2 });
    uplink.warn('uplink: disconnected "x" \\ y', { retryInMs: 1200 });
    uplink.info('uplink: connected to mqtts://localhost:8883');
    logger.child('status').debug('status');
    uplink.info('uplink: connected to mqtts://localhost:1');
    logger.child('can0', { prefix: true }).warn('interface can0 is down; waiting for it to come up');
    const lines = out.json();
    assert.deepEqual(
      lines.map((l) => [l.level, l.component, l.msg]),
      [
        ['error', 'outbox', 'outbox: 2 message(s) rejected: disk full'],
        ['warn', 'uplink', 'uplink: disconnected "x" \\ y'],
        ['warn', 'can0', 'can0: interface can0 is down; waiting for it to come up'],
      ],
    );
    for (const line of lines) {
      assert.match(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(Math.abs(Date.parse(line.time) - Date.now()) < 5000);
    }
    assert.equal(lines[0]!.messages, 2);
    assert.equal(lines[1]!.retryInMs, 1200);
    // '/' is not escaped: tests and people can grep the stderr text for the message as it always was.
    logger.setLevel('info');
    assert.ok(out.lines.at(-1)!.includes('"msg":"log level warn -> info"'), out.lines.at(-1));
    uplink.info('uplink: connected to mqtts://localhost:8883');
    assert.match(out.lines.at(-1)!, /uplink: connected to mqtts:\/\/localhost:8883/);
    logger.close();
  });

  it('the CLI writes JSON lines on stderr: debug in the verbose start, then the configured level', async () => {
    const dir = makeTempDir('log-cli-');
    const verboseForS = 1.5;
    const file = writeConfig(dir, 'verbose', {
      deviceId: 'log-test',
      buses: [simBus],
      status: { intervalMs: 200, signals: ['VehicleSpeed'] },
      logging: { level: 'info', verboseForS },
    });
    const started = Date.now();
    const result = runProgramSync('telematics-agent', ['run', '--config', file, '--duration', '3.2']);
    assert.equal(result.status, 0, result.stderr);
    const lines = result.stderr.split('\n').filter(Boolean);
    const entries = lines.map((line) => {
      const entry = JSON.parse(line) as JsonLine;
      for (const key of ['time', 'level', 'component', 'msg']) assert.equal(typeof entry[key], 'string', `${key} in ${line}`);
      assert.ok(['error', 'warn', 'info', 'debug'].includes(entry.level), line);
      return Object.assign(entry, { at: Date.parse(entry.time) });
    });
    const first = entries[0]!;
    assert.equal(first.level, 'debug');
    assert.equal(first.msg, `logging at debug for the first ${verboseForS} s after start, then at info`);
    assert.ok(first.at >= started - 1000 && first.at < started + 5000);
    const over = entries.findIndex((e) => e.msg === 'verbose start over: logging at info');
    assert.ok(over > 0, result.stderr);
    assert.equal(entries[over]!.level, 'info');
    const endAt = entries[over]!.at;
    // A timer: never early, perhaps late on a busy machine.
    assert.ok(
      endAt - first.at >= verboseForS * 1000 - 50 && endAt - first.at < verboseForS * 1000 + 1000,
      `the window ended ${endAt - first.at} ms after start`,
    );
    // Within the window: the status rates every 200 ms (7 or so); after it: no debug line at all, though the run goes on.
    const status = entries.slice(0, over).filter((e) => e.component === 'status');
    assert.ok(status.length >= 2, `${status.length} status lines in ${verboseForS} s`);
    for (const s of status) {
      assert.equal(s.level, 'debug');
      assert.equal(typeof s.framesPerS, 'number');
    }
    assert.ok(
      status.some((s) => (s.framesPerS as number) > 100),
      JSON.stringify(status),
    );
    assert.deepEqual(
      entries.slice(over + 1).filter((e) => e.level === 'debug'),
      [],
    );
    // The status line itself still goes to stdout all along (every 200 ms for 3.2 s).
    assert.ok(result.stdout.split('\n').filter((l) => l.includes('frames/s')).length >= 6, result.stdout);

    // The level alone: warn and no verbose start is a silent run of the simulated car.
    const quiet = writeConfig(dir, 'quiet', { deviceId: 'log-test', buses: [simBus], logging: { level: 'warn', verboseForS: 0 } });
    const silent = runProgramSync('telematics-agent', ['run', '--config', quiet, '--duration', '1']);
    assert.equal(silent.status, 0, silent.stderr);
    assert.equal(silent.stderr, '');
  });
});

describe('log: the level at run time', () => {
  const config = (section: object) =>
    parseDeviceConfig(
      { deviceId: 'level-test', buses: [simBus], status: { intervalMs: 100, signals: ['VehicleSpeed'] }, logging: section },
      { file: 'inline', baseDir: repoRoot },
    );
  /** Runs the sim agent with its own Logger (capturing its lines) while `body` runs, then stops it. */
  const whileRunning = async (
    section: object,
    body: (rig: { out: ReturnType<typeof capture>; logger: Logger; context: () => CommandContext | undefined; loggerAt: number }) => Promise<void>,
  ): Promise<void> => {
    const out = capture();
    const agentConfig = config(section);
    const logger = new Logger({ config: agentConfig.logging, destination: out });
    // The verbose start's window opens with the Logger.
    const loggerAt = performance.now();
    const stop = new AbortController();
    let context: CommandContext | undefined;
    const running = runAgent({ config: agentConfig, signal: stop.signal, output: { write: () => undefined }, logger, onCommandContext: (c) => (context = c) });
    try {
      await body({ out, logger, context: () => context, loggerAt });
    } finally {
      stop.abort();
      await running;
      logger.close();
    }
  };

  it('setLogLevel through the command context: debug shows the status rates, error silences everything below', async () => {
    await whileRunning({ level: 'info', verboseForS: 0 }, async ({ out, logger, context }) => {
      await waitFor(() => context() !== undefined, 'the command context', 10_000);
      await delay(350);
      const debugLines = () => out.json().filter((l) => l.level === 'debug');
      assert.deepEqual(debugLines(), []);
      assert.deepEqual(await set(context()!, 'debug'), { level: 'debug' });
      assert.equal(logger.level, 'debug');
      await waitFor(() => debugLines().filter((l) => l.component === 'status').length >= 2, 'two status lines at debug', 5000);
      assert.ok(
        out.json().some((l) => l.level === 'info' && l.msg === 'log level info -> debug'),
        out.lines.join('\n'),
      );

      await set(context()!, 'error');
      const before = out.lines.length;
      await delay(350);
      logger.child('can0', { prefix: true }).warn('interface can0 is down; waiting for it to come up');
      logger.child('uplink').info('uplink: connected to mqtts://localhost:1');
      assert.equal(out.lines.length, before, out.lines.slice(before).join('\n'));
      logger.child('outbox').error('outbox: 1 message(s) rejected: disk full');
      assert.equal(out.json().at(-1)!.level, 'error');
    });
  });

  it('a level set by command ends the verbose start for good', async () => {
    await whileRunning({ level: 'info', verboseForS: 4 }, async ({ out, logger, context, loggerAt }) => {
      await waitFor(
        () => context() !== undefined && out.json().some((l) => l.component === 'status' && l.level === 'debug'),
        'a status line at debug in the verbose start',
        3000,
      );
      assert.equal(logger.level, 'debug');
      await set(context()!, 'warn');
      const before = out.lines.length;
      // Past the end of the window: it does not bring back `info` (the configured level).
      await delay(4000 - (performance.now() - loggerAt) + 500);
      assert.equal(logger.level, 'warn');
      assert.deepEqual(out.lines.slice(before), []);
    });
  });

  it('the verbose start alone: debug for verboseForS, then the configured level', async () => {
    const out = capture();
    const logger = new Logger({ config: logging({ level: 'warn', verboseForS: 0.3 }), destination: out });
    assert.equal(logger.level, 'debug');
    const log = logger.child('test');
    log.debug('early');
    await delay(450);
    assert.equal(logger.level, 'warn');
    log.debug('late');
    log.info('late info');
    log.warn('late warning');
    // The line saying the window is over is info: not written once the level is warn.
    assert.deepEqual(
      out.json().map((l) => l.msg),
      ['logging at debug for the first 0.3 s after start, then at warn', 'early', 'late warning'],
    );
    logger.close();
  });
});

describe('log: text format and the warn callback', () => {
  it('format text: the bare message per line, fields after it', () => {
    const out = capture();
    const logger = new Logger({ config: logging({ format: 'text', verboseForS: 0 }), destination: out });
    logger.child('uplink').info('uplink: connected to mqtts://localhost:8883');
    logger.child('shutdown').info('shutdown: done in 12 ms', { signal: 'SIGTERM', durationMs: 12, note: 'two words' });
    logger.child('status').debug('status');
    assert.deepEqual(out.lines, ['uplink: connected to mqtts://localhost:8883', 'shutdown: done in 12 ms signal=SIGTERM durationMs=12 note="two words"']);
    logger.close();
  });

  it('[14.L9] format text escapes control characters in messages and fields; JSON escapes the DEL, C1 and bidi controls it would leave raw', () => {
    // What a hostile DBC, log file, adapter or backend may put into a message: colours, a title, a one-byte CSI, a
    // right-to-left override, a line break that would forge a second entry.
    const msg = 'can0: labels.dbc:3:1: warning: signal Gear\u009b2J \x1b]0;owned\x07 \u202eevil\nfake: entry\x7f';
    const fields = { unit: 'km/h\x1b[31m', 'key\x1b[0m': 1 };
    const text = capture();
    const textLogger = new Logger({ config: logging({ format: 'text', verboseForS: 0 }), destination: text });
    textLogger.child('can0').warn(msg, fields);
    textLogger.close();
    assert.deepEqual(text.lines, [
      'can0: labels.dbc:3:1: warning: signal Gear\\x9b2J \\x1b]0;owned\\x07 \\u202eevil\\nfake: entry\\x7f unit=km/h\\x1b[31m key\\x1b[0m=1',
    ]);
    const json = capture();
    const jsonLogger = new Logger({ config: logging({ verboseForS: 0 }), destination: json });
    jsonLogger.child('can0').warn(msg, fields);
    jsonLogger.close();
    assert.doesNotMatch(json.lines[0]!, /[\x00-\x1f\x7f-\x9f\u202e]/);
    // The same entry once parsed: nothing lost.
    const entry = json.json()[0]!;
    assert.equal(entry.msg, msg);
    assert.equal(entry.unit, fields.unit);
    assert.equal(entry['key\x1b[0m'], 1);
  });

  it("runAgent's warn option: plain text at the configured level, no verbose start", async () => {
    const messages: string[] = [];
    // The default logging section (info, 300 s verbose start): no debug lines reach the callback.
    const agentConfig = parseDeviceConfig(
      { deviceId: 'cb-test', buses: [simBus], status: { intervalMs: 100, signals: ['VehicleSpeed'] } },
      { file: 'inline', baseDir: repoRoot },
    );
    let context: CommandContext | undefined;
    const stop = new AbortController();
    const running = runAgent({
      config: agentConfig,
      signal: stop.signal,
      output: { write: () => undefined },
      warn: (m) => messages.push(m),
      onCommandContext: (c) => (context = c),
    });
    await delay(300);
    // At info, only when the first frame was decoded (once a run, see agent.ts).
    const firstFrame = /^can0: first frame decoded \d+\.\d{3} s after the process started$/;
    assert.deepEqual(
      messages.filter((m) => !firstFrame.test(m)),
      [],
    );
    await set(context!, 'debug');
    await delay(300);
    stop.abort();
    await running;
    const afterStart = messages.filter((m) => !firstFrame.test(m));
    assert.equal(afterStart[0], 'log level info -> debug');
    assert.ok(
      messages.some((m) => /^status framesPerS=\d+ signalsPerS=\d+ unknownFrames=0 errors=0$/.test(m)),
      messages.join('\n'),
    );
  });
});

describe('log: a destination that fails', () => {
  it('stderr on a full disk (/dev/full): no call throws, the lost entries are counted, the remote feed told once', () => {
    const fd = openSync('/dev/full', 'w');
    try {
      for (const format of ['json', 'text'] as const) {
        const logger = new Logger({ config: logging({ level: 'info', verboseForS: 0, format }), destination: fdDestination(fd) });
        const heard: LogEntry[] = [];
        logger.onEntry('warn', (entry) => heard.push(entry));
        assert.deepEqual(logger.stats, { dropped: 0, lastError: null });
        logger.child('uplink').warn('uplink: disconnected, retrying in 0.7 s');
        logger.child('shutdown').info('shutdown: SIGTERM: stopping the sources', { deadlineMs: 4500 });
        logger.child('can0', { prefix: true }).warn('interface can0 is down; waiting for it to come up');
        logger.child('outbox').error('outbox: 1 message(s) rejected: disk full');
        logger.child('status').debug('status'); // below the level: not written, not lost
        assert.deepEqual(logger.stats, { dropped: 4, lastError: 'ENOSPC' }, format);
        // The remote feed still gets every entry, and one line about the broken local log, not one per entry.
        assert.deepEqual(
          heard.map((e) => [e.level, e.component, e.msg]),
          [
            ['error', 'logging', 'logging: cannot write the local log (ENOSPC): entries are dropped and counted'],
            ['warn', 'uplink', 'uplink: disconnected, retrying in 0.7 s'],
            ['warn', 'can0', 'can0: interface can0 is down; waiting for it to come up'],
            ['error', 'outbox', 'outbox: 1 message(s) rejected: disk full'],
          ],
          format,
        );
        logger.close();
      }
    } finally {
      closeSync(fd);
    }
  });

  it('a destination that throws anything: counted, never thrown; fdDestination writes whole lines to a file', () => {
    const logger = new Logger({
      config: logging({ level: 'info', verboseForS: 0 }),
      destination: {
        write: () => {
          throw new Error('gone');
        },
      },
    });
    assert.doesNotThrow(() => logger.child('x').warn('x: one'));
    assert.doesNotThrow(() => logger.child('x').warn('x: two'));
    assert.deepEqual(logger.stats, { dropped: 2, lastError: 'gone' });

    const file = path.join(makeTempDir('log-fd-'), 'log.txt');
    const fd = openSync(file, 'w');
    try {
      const ok = new Logger({ config: logging({ level: 'info', verboseForS: 0, format: 'text' }), destination: fdDestination(fd) });
      const x = ok.child('x');
      x.warn('x: ünïcode line');
      x.info('x: second', { n: 2 });
      assert.equal(readFileSync(file, 'utf8'), 'x: ünïcode line\nx: second n=2\n');
      assert.deepEqual(ok.stats, { dropped: 0, lastError: null });
    } finally {
      closeSync(fd);
    }
  });
});

describe('log: the config', () => {
  it("verboseForS is at most 2147483 s (setTimeout's limit: beyond it the window would end after 1 ms)", async () => {
    const parse = (verboseForS: number) =>
      parseDeviceConfig({ deviceId: 'log-config', buses: [simBus], logging: { verboseForS } }, { file: 'inline', baseDir: repoRoot });
    assert.equal(parse(2_147_483).logging?.verboseForS, 2_147_483);
    for (const verboseForS of [3_000_000, 2_147_484]) {
      assert.throws(
        () => parse(verboseForS),
        (err: unknown) => err instanceof DeviceConfigError && err.message.includes('logging.verboseForS: must be at most 2147483'),
        String(verboseForS),
      );
    }
    // The longest window allowed is still a window: debug now and a moment later, and node does not cut it short.
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const logger = new Logger({ config: logging({ level: 'info', verboseForS: 2_147_483 }), destination: capture() });
      await delay(50);
      assert.equal(logger.level, 'debug');
      assert.deepEqual(warnings, []);
      logger.close();
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('[16.terminal] log: the format where the log goes, and a live line on its terminal', () => {
  it('[16.terminal] without logging.format: JSON lines into a file or a pipe, the defaultFormat given for a terminal; an explicit format wins', () => {
    const dir = makeTempDir('log-format-');
    const fd = openSync(path.join(dir, 'stderr.log'), 'w');
    try {
      // A file (as stderr redirected, or a service's log file): JSON lines, whatever JOURNAL_STREAM says.
      assert.equal(defaultLogFormat(fd, {}), 'json');
      assert.equal(defaultLogFormat(fd, { JOURNAL_STREAM: '1:2' }), 'json');
    } finally {
      closeSync(fd);
    }
    // A terminal is the tmux tests' (test/cli/terminal.test.ts): here, the format the caller picked from it applies
    // only while the config names none.
    const line = (section: object, defaultFormat?: 'json' | 'text') => {
      const out = capture();
      const logger = new Logger({ config: logging({ verboseForS: 0, ...section }), destination: out, ...(defaultFormat ? { defaultFormat } : {}) });
      logger.child('uplink').info('uplink: connected to mqtts://localhost:8883');
      logger.close();
      return out.lines[0]!;
    };
    assert.equal(logging({}).format, undefined);
    assert.match(line({}), /^\{"level":"info",.*"msg":"uplink: connected to mqtts:\/\/localhost:8883"\}$/);
    assert.equal(line({}, 'text'), 'uplink: connected to mqtts://localhost:8883');
    assert.match(line({ format: 'json' }, 'text'), /^\{"level":"info"/);
    assert.equal(line({ format: 'text' }, 'json'), 'uplink: connected to mqtts://localhost:8883');
  });

  it('[16.terminal] a live line is hidden before each line the log writes and shown after it; not for entries below the level', () => {
    const events: string[] = [];
    for (const format of ['json', 'text'] as const) {
      events.length = 0;
      const logger = new Logger({
        config: logging({ level: 'info', verboseForS: 0, format }),
        destination: { write: (l: string) => events.push(`line ${l.slice(0, 8)}`) },
      });
      logger.setLiveLine({ hide: () => events.push('hide'), show: () => events.push('show') });
      logger.child('uplink').info('uplink: connected');
      logger.child('status').debug('status');
      logger.child('can0').warn('can0: down');
      logger.setLiveLine(undefined);
      logger.child('can0').warn('can0: up');
      logger.close();
      const first = format === 'json' ? '{"level"' : 'uplink: ';
      const second = format === 'json' ? '{"level"' : 'can0: do';
      const third = format === 'json' ? '{"level"' : 'can0: up';
      assert.deepEqual(events, ['hide', `line ${first}`, 'show', 'hide', `line ${second}`, 'show', `line ${third}`], format);
    }
  });
});
