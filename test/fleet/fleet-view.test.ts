/**
 * `telematics-ops fleet` against a real mosquitto on the shipped configuration and ACLs: a small fleet in every state
 * a car can be in (two agents running, one of them with an error logged and one held back by its data plan's budget;
 * one stopped cleanly; one killed -9, whose last will the broker published; one that never connected; one forged
 * car whose health report is off the contract), then the built CLI as a child process, which learns all of it from
 * what the broker retains (the status, and the latest health report, now published retained): each car's row with
 * the real values the agents reported, the table fitted to the width, the filters, and `selectCars` in-process.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { PACKAGE_VERSION } from '../../src/agent/package-version.js';
import { connectBackend } from '../../src/commands/operator-client.js';
import { parseDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import type { HealthReport } from '../../src/contract/health.js';
import type { FleetCar } from '../../src/fleet/fleet-view.js';
import { countLine, filterCars, selectCars } from '../../src/fleet/fleet-view.js';
import { fleetTable } from '../../src/cli/ops-fleet.js';
import { loggingConfig } from '../../src/health/log-config.js';
import { Logger } from '../../src/health/log.js';
import { issueDeviceCertificate, writeIssued } from '../../src/pki/dev-ca.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { AgentProcess, writeConfig } from '../support/agent-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { runProgram } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { terminalColumns } from '../../src/text/terminal-text.js';

const FORGED = 'car-forged';
/** The error car-a logs: car-sent text with an escape sequence in it, which the table must show escaped. */
const ERROR_MESSAGE = 'can0: bus-off \u001b[31m (controller reset)';

describe('[18.fleet] telematics-ops fleet', () => {
  const fixture = withBroker({ offContract: new RegExp(`^vehicles/${FORGED}/`) });
  const dir = makeTempDir('fleet-view-');
  const agents: InProcessAgent[] = [];
  let killed: AgentProcess | undefined;
  let forged: MqttClient | undefined;
  fixture.beforeStop(async () => {
    await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
    await killed?.stop('SIGKILL');
    await forged?.endAsync(true);
  });

  const configOf = (deviceId: string, extra: { certFile?: string; keyFile?: string; throttle?: object } = {}): object => ({
    deviceId,
    buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } }],
    collection: {
      batch: { maxSamples: 50, maxDelayMs: 300 },
      rules: [{ name: 'speed', mode: 'periodic', intervalMs: 200, signals: ['VehicleSpeed'] }],
    },
    outbox: { path: `var/${deviceId}.db`, writeIntervalMs: 100 },
    uplink: {
      url: fixture.broker.url,
      ...fixture.pki.identityFiles(deviceId),
      ...(extra.certFile !== undefined ? { certFile: extra.certFile, keyFile: extra.keyFile } : {}),
      reconnect: { initialMs: 100, maxMs: 500 },
      ...(extra.throttle ? { throttle: extra.throttle } : {}),
    },
    health: { intervalS: 1, http: { enabled: false } },
  });
  const parsed = (deviceId: string, raw: object): DeviceConfig => parseDeviceConfig(raw, { file: `${deviceId}.json`, baseDir: dir });
  const reports = (deviceId: string): HealthReport[] =>
    fixture.backend.on(deviceId, 'health').map((m) => JSON.parse(m.payload.toString('utf8')) as HealthReport);
  const statuses = (deviceId: string): { online: boolean; ts?: number; reason?: string; birthSeq: number }[] =>
    fixture.backend.on(deviceId, 'status').map((m) => JSON.parse(m.payload.toString('utf8')) as { online: boolean; birthSeq: number });
  const connection = (): string[] => {
    const backend = fixture.pki.backend();
    return ['--broker', fixture.broker.backendUrl, '--cert', backend.certFile, '--key', backend.keyFile, '--ca', fixture.pki.caFile];
  };
  const fleet = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> => {
    const run = await runProgram('telematics-ops', ['fleet', ...args, ...connection()], { env: { ...process.env, ...env }, timeoutMs: 60_000 });
    assert.equal(run.status, 0, `fleet ${args.join(' ')}: ${run.stderr}`);
    return run.stdout;
  };
  const fleetJson = async (args: string[] = []): Promise<FleetCar[]> => (JSON.parse(await fleet(['--json', ...args])) as { cars: FleetCar[] }).cars;

  /** Brings the fleet into its states once; every test reads it. */
  let ready: Promise<void> | undefined;
  const fleetReady = (): Promise<void> => (ready ??= setUpFleet());
  async function setUpFleet(): Promise<void> {
    const { backend, pki } = fixture;
    // car-a: running, with an error logged (the log's own child, as a bus would log it).
    const aConfig = parsed('car-a', configOf('car-a'));
    const aLogger = new Logger({ config: loggingConfig(aConfig.logging), lines: () => undefined });
    agents.push(await InProcessAgent.start(aConfig, { logger: aLogger }));
    aLogger.child('can0').error(ERROR_MESSAGE);
    // car-b: running, its certificate 20 days from expiry, its data plan's budget holding telemetry in the outbox.
    const bFiles = writeIssued(dir, 'car-b', issueDeviceCertificate(pki.ca, 'car-b', { validDays: 20 }));
    agents.push(await InProcessAgent.start(parsed('car-b', configOf('car-b', { ...bFiles, throttle: { messagesPerHour: 1, burstFraction: 1 } }))));
    // car-stopped: ran, then stopped cleanly.
    const stopped = await InProcessAgent.start(parsed('car-stopped', configOf('car-stopped')));
    agents.push(stopped);
    // car-killed: a real process, killed -9 like a car losing power.
    killed = AgentProcess.start(writeConfig(dir, 'car-killed', configOf('car-killed')));
    // car-never: has its certificate, never connects.
    pki.client('car-never');

    await backend.waitFor(
      () =>
        reports('car-a').some((r) => r.agent.lastError?.msg === ERROR_MESSAGE) &&
        reports('car-b').some((r) => (r.agent.outbox?.messages ?? 0) > 3) &&
        reports('car-stopped').length > 0 &&
        reports('car-killed').length > 0,
      'health reports of the four cars (car-a with its error, car-b with messages held back)',
      60_000,
    );
    await stopped.close();
    await killed.stop('SIGKILL');
    await backend.waitFor(
      () => statuses('car-stopped').at(-1)?.reason === 'shutdown' && statuses('car-killed').at(-1)?.reason === 'connection lost',
      'the shutdown of car-stopped and the last will of car-killed',
      30_000,
    );

    // The forged car: a valid birth, a health report off the contract.
    const files = pki.client(FORGED);
    forged = await mqtt.connectAsync(fixture.broker.url, {
      protocolVersion: 5,
      clientId: FORGED,
      reconnectPeriod: 0,
      ca: readFileSync(pki.caFile),
      cert: readFileSync(files.certFile),
      key: readFileSync(files.keyFile),
      rejectUnauthorized: true,
    });
    await forged.publishAsync(`vehicles/${FORGED}/status`, JSON.stringify({ online: true, birthSeq: 1, ts: 1_767_225_600_000 }), { qos: 1, retain: true });
    await forged.publishAsync(`vehicles/${FORGED}/health`, JSON.stringify({ version: 1, deviceId: FORGED, seq: 'one' }), { qos: 1, retain: true });
  }

  it(
    '[18.fleet] fleet --json: one row per car the broker retains, sorted, with the values the agents reported; a car that never connected is not there',
    { timeout: 180_000 },
    async () => {
      await fleetReady();
      const cars = await fleetJson();
      assert.deepEqual(
        cars.map((c) => [c.deviceId, c.state, c.reason]),
        [
          ['car-a', 'online', null],
          ['car-b', 'online', null],
          [FORGED, 'online', null],
          ['car-killed', 'offline', 'connection lost'],
          ['car-stopped', 'offline', 'shutdown'],
        ],
      );
      const row = (id: string): FleetCar => cars.find((c) => c.deviceId === id)!;

      const a = row('car-a');
      const aBirth = statuses('car-a').at(-1)!;
      assert.equal(a.sinceMs, aBirth.ts);
      assert.equal(a.birthSeq, aBirth.birthSeq);
      assert.equal(a.version, PACKAGE_VERSION);
      assert.equal(a.lastError?.component, 'can0');
      assert.equal(a.lastError?.msg, ERROR_MESSAGE);
      assert.equal(a.link?.state, 'connected');
      assert.ok(
        reports('car-a').some((r) => r.agent.uplink?.heartbeat.intervalS === a.link?.heartbeatS),
        `heartbeat ${a.link?.heartbeatS} s is one car-a reported`,
      );
      // The device certificate of the test PKI: 825 days.
      assert.ok(a.certificateDaysLeft !== null && a.certificateDaysLeft > 823 && a.certificateDaysLeft <= 825, `${a.certificateDaysLeft} days`);
      assert.deepEqual(a.problems, []);
      assert.ok(a.reportTsMs !== null && reports('car-a').some((r) => r.tsMs === a.reportTsMs));

      const b = row('car-b');
      assert.ok(b.certificateDaysLeft !== null && b.certificateDaysLeft > 18 && b.certificateDaysLeft <= 20, `${b.certificateDaysLeft} days`);
      assert.ok(b.outbox !== null && b.outbox.messages > 3 && b.outbox.oldestAgeS !== null, JSON.stringify(b.outbox));
      assert.equal(b.lastError, null);

      // Stopped: its last report is still there (retained), and when it stopped.
      const stopped = row('car-stopped');
      assert.equal(stopped.sinceMs, statuses('car-stopped').at(-1)!.ts);
      assert.equal(stopped.reportTsMs, reports('car-stopped').at(-1)!.tsMs);
      assert.equal(stopped.version, PACKAGE_VERSION);
      // Killed: the will has no time (the car could not know it); the last report it got out is there.
      const gone = row('car-killed');
      assert.equal(gone.sinceMs, null);
      assert.equal(gone.reportTsMs, reports('car-killed').at(-1)!.tsMs);
      assert.equal(gone.link?.state, 'connected', 'as of its last report');

      const bad = row(FORGED);
      assert.equal(bad.reportTsMs, null);
      assert.equal(bad.problems.length, 1);
      assert.match(bad.problems[0]!, /^health: not a health message of the contract: /);
    },
  );

  it('[18.fleet] fleet prints a table fitted to the width, car-sent text escaped, and a count line', { timeout: 180_000 }, async () => {
    await fleetReady();
    const wide = (await fleet([], { COLUMNS: '400' })).trimEnd().split('\n');
    assert.match(wide[0]!, /^DEVICE +STATE +LINK +OUTBOX +CERT +VERSION +REPORT +LAST ERROR$/);
    assert.equal(wide.length, 7, wide.join('\n'));
    assert.equal(wide.at(-1), '5 cars: 3 online, 2 offline');
    const line = (id: string): string => wide.find((l) => l.startsWith(`${id} `))!;
    assert.match(line('car-a'), /online since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ +connected, heartbeat \d+ s/);
    assert.ok(line('car-a').includes('can0: can0: bus-off \\x1b[31m (controller reset) ('), line('car-a'));
    assert.ok(!wide.join('\n').includes('\u001b'), 'no raw escape character reaches the terminal');
    assert.match(line('car-b'), / (19|20) d /);
    assert.match(line('car-stopped'), /offline since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(shutdown\)/);
    assert.match(line('car-killed'), /offline \(connection lost\)/);
    assert.match(line(FORGED), /NOT IN CONTRACT: health: not a health message of the contract/);
    assert.ok(line('car-a').includes(` ${PACKAGE_VERSION} `));

    // 80 columns: every line fits; the version and the report's age go first, the device and state never.
    const narrow = (await fleet([], { COLUMNS: '80' })).trimEnd().split('\n');
    for (const l of narrow) assert.ok(terminalColumns(l) <= 80, `${terminalColumns(l)} columns: ${l}`);
    assert.match(narrow[0]!, /^DEVICE +STATE +/);
    assert.ok(!narrow[0]!.includes('VERSION') && !narrow[0]!.includes('REPORT'), narrow[0]);
    assert.ok(narrow.some((l) => l.startsWith('car-stopped ') && l.includes('(shutdown)')));
    assert.equal(narrow.at(-1), '5 cars: 3 online, 2 offline');
  });

  it(
    '[18.fleet] filters: --online, --offline, --device PATTERN, --cert-expiring, --outbox-over, --agent-version; selectCars gives the same cars',
    { timeout: 180_000 },
    async () => {
      await fleetReady();
      const ids = async (args: string[]): Promise<string[]> => (await fleetJson(args)).map((c) => c.deviceId);
      assert.deepEqual(await ids(['--online']), ['car-a', 'car-b', FORGED]);
      assert.deepEqual(await ids(['--offline']), ['car-killed', 'car-stopped']);
      assert.deepEqual(await ids(['--device', 'car-*ed']), [FORGED, 'car-killed', 'car-stopped']);
      assert.deepEqual(await ids(['--device', 'car-a']), ['car-a']);
      assert.deepEqual(await ids(['--cert-expiring', '30']), ['car-b']);
      // The outbox depth is what each car's last report said: car-b's is held back by its data budget; another car's
      // last report may have been taken while a few messages waited (car-stopped's, at its shutdown, on a busy machine).
      const deeper = (await fleetJson([])).filter((c) => c.outbox !== null && c.outbox.messages > 3).map((c) => c.deviceId);
      assert.ok(deeper.includes('car-b'), deeper.join(', '));
      assert.deepEqual(await ids(['--outbox-over', '3']), deeper);
      assert.deepEqual(await ids(['--agent-version', PACKAGE_VERSION, '--online']), ['car-a', 'car-b']);
      assert.deepEqual(await ids(['--agent-version', '0.0.0-none']), []);
      assert.equal((await fleet(['--device', 'truck-*'])).trim(), '0 cars: 0 online, 0 offline');

      const backend = fixture.pki.backend();
      const client = await connectBackend({ url: fixture.broker.backendUrl, certFile: backend.certFile, keyFile: backend.keyFile, caFile: fixture.pki.caFile });
      try {
        assert.deepEqual(await selectCars(client, { offline: true, device: 'car-*' }), ['car-killed', 'car-stopped']);
      } finally {
        await client.endAsync(true);
      }
    },
  );

  it('[18.fleet] bad options are usage errors naming the option', async () => {
    const usage = async (args: string[], pattern: RegExp): Promise<void> => {
      const run = await runProgram('telematics-ops', ['fleet', ...args, '--certs-dir', dir]);
      assert.equal(run.status, 1, run.stdout);
      assert.match(run.stderr, pattern);
    };
    await usage(['--online', '--offline'], /option '--online' cannot be used with option '--offline'/);
    await usage(['--outbox-over', '-1'], /--outbox-over <n>' argument '-1' is invalid/);
    await usage(['--cert-expiring', 'soon'], /--cert-expiring <days>' argument 'soon' is invalid/);
    await usage(['--wait', '0'], /--wait <s>' argument '0' is invalid/);
  });
});

describe('[18.fleet] the fleet view, without a broker', () => {
  const car = (deviceId: string, over: Partial<FleetCar> = {}): FleetCar => ({
    deviceId,
    state: 'online',
    sinceMs: 1_796_000_000_000,
    reason: null,
    birthSeq: 1,
    reportTsMs: 1_796_000_060_000,
    reportAgeS: 5,
    link: { state: 'connected', heartbeatS: 60 },
    outbox: { messages: 0, oldestAgeS: null },
    certificateDaysLeft: 300.5,
    version: '0.1.0',
    lastError: null,
    problems: [],
    ...over,
  });

  it('[18.fleet] --device takes * as any run of characters and every other character as itself', () => {
    const cars = ['car.1', 'carX1', 'car-10', 'truck-1', 'car+1'].map((id) => car(id));
    const ids = (device: string): string[] => filterCars(cars, { device }).map((c) => c.deviceId);
    assert.deepEqual(ids('car.1'), ['car.1']);
    assert.deepEqual(ids('car-1*'), ['car-10']);
    assert.deepEqual(ids('*1'), ['car.1', 'carX1', 'truck-1', 'car+1']);
    assert.deepEqual(ids('car+1'), ['car+1']);
    assert.deepEqual(ids('*'), ['car.1', 'carX1', 'car-10', 'truck-1', 'car+1']);
  });

  it('[18.fleet] the table: the last error cut to the width first, then whole columns left out, wide characters counted as two columns', () => {
    const now = 1_796_000_065_000;
    const cars = [
      car('car-1', { lastError: { ts: now - 120_000, component: 'uplink', msg: 'the broker refused the connection: not authorized '.repeat(3) } }),
      car('車-2', { state: 'offline', sinceMs: null, reason: 'connection lost', version: null, lastError: null }),
    ];
    const wide = fleetTable(cars, Infinity, now);
    assert.match(wide[0]!, /LAST ERROR$/);
    assert.ok(wide[1]!.endsWith('not authorized  (2 min ago)'), wide[1]);
    for (const width of [160, 120, 100, 70, 50, 30]) {
      const lines = fleetTable(cars, width, now);
      for (const l of lines) assert.ok(terminalColumns(l) <= width, `${width}: ${terminalColumns(l)} columns: ${l}`);
      assert.match(lines[0]!, /^DEVICE +STATE/);
      assert.ok(lines[2]!.startsWith('車-2 '), lines[2]);
    }
    // 130 columns: everything but the last error fits whole, the last error is cut with an ellipsis.
    const cut = fleetTable(cars, 130, now);
    assert.match(cut[0]!, /VERSION +REPORT +LAST ERROR$/);
    assert.ok(cut[1]!.endsWith('…') && terminalColumns(cut[1]!) === 130, cut[1]);
    assert.deepEqual(countLine(cars), '2 cars: 1 online, 1 offline');
    assert.deepEqual(countLine([car('x', { state: 'unknown' })]), '1 car: 0 online, 0 offline, 1 unknown');
  });
});
