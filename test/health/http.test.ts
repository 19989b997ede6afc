/**
 * The local health endpoint of a whole running agent (in-process: the demo car on a sim bus, the data path, the uplink
 * to a real mosquitto): /metrics live and against the Prometheus text format, `promtool check metrics` and /status,
 * the status page rendered by a real headless Chromium (and, for an agent with an ELM327 adapter and a replayed log
 * that has ended, its OBD section and its missing and stale values), the refusals (404, 405, foreign Host headers), a
 * port already taken, and the close.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { request as httpRequest, createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { before, describe, it } from 'node:test';
import { takeSnapshot, type AgentSnapshot } from '../../src/agent/snapshot.js';
import { runAgent } from '../../src/cli/run.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { renderMetrics } from '../../src/health/metrics.js';
import { Health, type LiveStatus } from '../../src/health/monitor.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { withBroker } from '../support/broker-fixture.js';
import { contractChecker } from '../support/contract.js';
import { candumpLine, le16 } from '../support/drive-log.js';
import { elmOnPty } from '../support/elm327.js';
import { freePort } from '../support/mosquitto.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

const STATUS_SIGNALS = ['VEHICLE_DYNAMICS.VehicleSpeed', 'ENGINE_DATA.EngineSpeed', 'TRANSMISSION.GearEngaged', 'ODOMETER.Odometer'];

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request with exactly the Host header given (fetch would not let a test forge it). */
function request(port: number, options: { method?: string; path?: string; host?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: { host: options.host ?? `127.0.0.1:${port}` },
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** An HTTP/1.0 request with no Host header at all, on a raw socket. */
function requestWithoutHost(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('GET /status HTTP/1.0\r\n\r\n'));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

/** GET /status; every answer must match the published status-page schema ([17.contract]). */
async function status(port: number): Promise<LiveStatus> {
  const answer = await request(port, { path: '/status' });
  assert.equal(answer.status, 200, answer.body);
  const live = JSON.parse(answer.body) as LiveStatus;
  assert.deepEqual(contractChecker().problems('status-page', live), [], 'the /status document against contract/status-page.schema.json');
  return live;
}

async function scrape(port: number): Promise<Answer> {
  const answer = await request(port, { path: '/metrics' });
  assert.equal(answer.status, 200, answer.body);
  return answer;
}

/** Asks /status until `condition` holds of it (the event a test waits for); the document that showed it. */
async function statusWhen(port: number, condition: (s: LiveStatus) => boolean, what: string, timeoutMs = 15_000): Promise<LiveStatus> {
  const start = performance.now();
  for (;;) {
    const s = await status(port);
    if (condition(s)) return s;
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; /status: ${JSON.stringify(s)}`);
    await delay(50);
  }
}

/** Debian's prometheus package installs promtool; scripts/install-test-deps.sh installs it. */
function promtoolPath(): string {
  const found = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).stdout.trim();
  if (!found) throw new Error('promtool is not installed (Debian package `prometheus`; scripts/install-test-deps.sh installs it)');
  return found;
}

/** `promtool check metrics` on `exposition`: its exit status and everything it printed. */
function promtoolCheck(exposition: string): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(promtoolPath(), ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ status: code, output }));
    child.stdin.end(exposition);
  });
}

/** Passes `exposition` to promtool and asserts it is clean: exit 0, nothing printed. */
async function assertPromtoolClean(exposition: string): Promise<void> {
  assert.ok(exposition.length > 0);
  const { status, output } = await promtoolCheck(exposition);
  assert.deepEqual({ status, output }, { status: 0, output: '' }, `promtool check metrics on:\n${exposition}`);
}

// The Prometheus text exposition format 0.0.4: metric and label names, label values with their escapes, and values as
// Go's ParseFloat reads them (NaN and ±Inf included); an optional timestamp.
const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
const VALUE = '(?:[-+]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][-+]?\\d+)?|[-+]?Inf|NaN)';
const SAMPLE = new RegExp(`^(${NAME})((?:\\{${LABEL}(?:,${LABEL})*\\})?) (${VALUE})(?: -?\\d+)?$`);
const HELP = new RegExp(`^# HELP (${NAME}) (?:[^\\\\\\n]|\\\\[\\\\n])*$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);

/** Checks every line against the grammar and the family rules; returns the samples by `name{labels}`. */
function parseExposition(text: string): Map<string, number> {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  const samples = new Map<string, number>();
  const typed = new Map<string, string>();
  const helped = new Set<string>();
  let current: string | undefined;
  for (const line of text.slice(0, -1).split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = HELP.exec(line))) {
      assert.ok(!helped.has(m[1]!), `HELP ${m[1]} twice`);
      helped.add(m[1]!);
      continue;
    }
    if ((m = TYPE.exec(line))) {
      assert.ok(!typed.has(m[1]!), `TYPE ${m[1]} twice: a family's samples must be together`);
      assert.ok(helped.has(m[1]!), `HELP before TYPE for ${m[1]}`);
      typed.set(m[1]!, m[2]!);
      current = m[1];
      continue;
    }
    m = SAMPLE.exec(line);
    assert.ok(m, `not a sample line of the exposition format: ${JSON.stringify(line)}`);
    const [, name, labels, value] = m;
    assert.equal(name, current, `${line}: a sample of the family whose TYPE came last`);
    assert.ok(name!.startsWith('telematics_'), line);
    assert.equal(name!.endsWith('_total'), typed.get(name!) === 'counter', `${name}: counters, and only counters, end in _total`);
    const key = `${name}${labels}`;
    assert.ok(!samples.has(key), `duplicate series ${key}`);
    samples.set(key, Number(value!.replace(/^\+?Inf$/, 'Infinity').replace(/^-Inf$/, '-Infinity')));
  }
  return samples;
}

/** Debian installs chromium in /usr/bin; scripts/install-test-deps.sh installs it. */
function chromiumPath(): string | null {
  const found = spawnSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
  if (found) return found;
  return existsSync('/usr/bin/chromium') ? '/usr/bin/chromium' : null;
}

/**
 * The DOM after the page's scripts ran for 5 s of virtual time. Asynchronous on purpose: the agent serving the page
 * runs in this process. --no-sandbox because the tests run as root; a profile of its own so that two runs never share
 * (or attach to) one browser.
 */
function renderInChromium(url: string): Promise<string> {
  const chromium = chromiumPath();
  if (!chromium) throw new Error('chromium is not installed (Debian package `chromium`; scripts/install-test-deps.sh installs it)');
  const profile = makeTempDir('chromium-profile-');
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--no-first-run',
    '--no-default-browser-check',
    `--user-data-dir=${profile}`,
    '--virtual-time-budget=5000',
    '--dump-dom',
    url,
  ];
  return new Promise((resolve, reject) => {
    execFile(chromium, args, { timeout: 60_000, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`chromium could not render ${url}: ${err.message}\n${stderr.slice(-3000)}`));
      else if (!stdout.includes('</html>')) reject(new Error(`chromium printed no DOM for ${url}:\n${stderr.slice(-3000)}`));
      else resolve(stdout);
    });
  });
}

describe('health endpoint of a running agent', () => {
  const deviceId = 'car-http';
  let port: number;
  let agent: InProcessAgent;
  const fleet = withBroker();
  fleet.beforeStop(() => agent?.close());
  /** The agent's own state now: what the status line reads. */
  const snapshot = (): AgentSnapshot => agent.agent.snapshot();

  before(async () => {
    port = await freePort();
    const dir = makeTempDir('health-http-');
    const config = parseDeviceConfig(
      {
        deviceId,
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } }],
        // The simulated car's receiver: the page's Position section.
        obdAdapters: [{ type: 'sim-gnss', name: 'gnss', seed: 1, rateHz: 5 }],
        status: { intervalMs: 1000, signals: STATUS_SIGNALS },
        collection: { batch: { maxSamples: 50, maxDelayMs: 500 }, rules: [{ name: 'speed', mode: 'periodic', intervalMs: 500, signals: ['VehicleSpeed'] }] },
        outbox: { path: 'var/outbox.db', writeIntervalMs: 100 },
        uplink: { url: fleet.broker.url, ...fleet.pki.identityFiles(deviceId), reconnect: { initialMs: 100, maxMs: 500 } },
        // No scheduled report while these tests run: everything but the host's values must be live without one, and
        // the host's values stay those of the report taken at the start.
        health: { intervalS: 300, http: { port } },
      },
      { file: 'http.json', baseDir: dir },
    );
    agent = await InProcessAgent.start(config);
    const warnings = agent.log;
    await waitFor(() => warnings.includes(`health: status page on http://127.0.0.1:${port}/`), `the status page line in:\n${warnings.join('\n')}`, 10_000);
    // The events the tests need: the link up (in the agent's own state, which /metrics reads live), the host sampled
    // once (the report taken at the start), and a first live rate (a second after the start).
    await waitFor(() => snapshot().dataPath?.link?.state === 'connected', 'a connected link', 15_000);
    await statusWhen(port, (s) => s.report !== null && s.buses[0]!.framesPerS !== null, 'the report taken at the start and a live frame rate');
  });

  it('[16.metrics] /metrics is live: right after the start, with no report since, its counters and link agree with the agent state the status line shows', async () => {
    const before = snapshot();
    const answer = await scrape(port);
    const after = snapshot();
    const m = parseExposition(answer.body);
    // No scheduled report has been taken: only the one at the start, before any frame and before the connection.
    assert.equal(m.get('telematics_health_reports_total'), 0);
    const frames = m.get('telematics_bus_frames_total{bus="can0"}')!;
    assert.ok(
      frames >= before.buses[0]!.frames && frames <= after.buses[0]!.frames,
      `${frames} frames, the agent counted ${before.buses[0]!.frames}…${after.buses[0]!.frames}`,
    );
    assert.ok(frames > 0);
    assert.equal(m.get('telematics_uplink_connected'), 1);
    assert.equal(after.dataPath!.link!.state, 'connected');
    const acknowledged = m.get('telematics_uplink_acknowledged_total')!;
    assert.ok(acknowledged >= before.dataPath!.link!.publisher.acknowledged && acknowledged <= after.dataPath!.link!.publisher.acknowledged);
    const samples = m.get('telematics_collector_samples_total')!;
    assert.ok(samples >= before.dataPath!.report.collector.samples && samples <= after.dataPath!.report.collector.samples);
    // The live frame rate: the sim bus's 294 frames/s, over the last second or more (the simulator runs late on a busy
    // machine, then catches up).
    const rate = m.get('telematics_bus_frames_per_second{bus="can0"}')!;
    assert.ok(rate > 150 && rate < 450, `${rate} frames/s`);
    assert.ok(m.get('telematics_process_uptime_seconds')! > 0);
  });

  it('/metrics is Prometheus text 0.0.4 (HELP and TYPE before samples, telematics_ names, _total on counters only) and agrees with /status', async () => {
    // The agent's part is read per request: between two /status documents, counters lie between theirs.
    const before = await status(port);
    const answer = await scrape(port);
    const after = await status(port);
    assert.equal(answer.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    const m = parseExposition(answer.body);
    const between = (series: string, low: number, high: number): void => {
      const value = m.get(series);
      assert.ok(value !== undefined && value >= low && value <= high, `${series} ${value}, /status said ${low}…${high}`);
    };
    const [a, b] = [before.agent, after.agent];
    between('telematics_bus_frames_total{bus="can0"}', a.buses[0]!.frames, b.buses[0]!.frames);
    between('telematics_uplink_acknowledged_total', a.uplink!.acknowledged, b.uplink!.acknowledged);
    between('telematics_uplink_sent_total', a.uplink!.sent, b.uplink!.sent);
    between('telematics_collector_batches_total', a.collector!.batches, b.collector!.batches);
    between('telematics_process_uptime_seconds', a.processUptimeS, b.processUptimeS);
    // The learned heartbeat interval is one of the two (it may change between them).
    assert.ok([a.uplink!.heartbeat.intervalS, b.uplink!.heartbeat.intervalS].includes(m.get('telematics_uplink_heartbeat_interval_seconds{adaptive="true"}')!));
    const expectedAgent: [string, number][] = [
      ['telematics_bus_decode_errors_total{bus="can0"}', 0],
      ['telematics_outbox_evicted_total', 0],
      ['telematics_uplink_connected', 1],
      ['telematics_uplink_reconnects_total', 0],
      ['telematics_certificate_expiry_timestamp_seconds', Date.parse(b.certificate!.notAfter!) / 1000],
    ];
    for (const [series, value] of expectedAgent) assert.equal(m.get(series), value, series);

    // The host's values come from the latest report, the one /status carries (the same in both: none was taken since).
    const r = after.report!;
    assert.deepEqual(before.report, r);
    const expectedHost: [string, number | null][] = [
      ['telematics_health_reports_total', r.seq],
      ['telematics_health_report_timestamp_seconds', r.tsMs / 1000],
      ['telematics_system_sample_timestamp_seconds', r.system.tsMs / 1000],
      ['telematics_health_sample_duration_seconds', r.system.sampleMs / 1000],
      ['telematics_system_memory_total_bytes', r.system.memTotalBytes],
      ['telematics_system_memory_used_bytes', r.system.memUsedBytes],
      ['telematics_system_uptime_seconds', r.system.uptimeS],
      ['telematics_system_cpu_load_ratio', r.system.cpuLoadPercent === null ? null : r.system.cpuLoadPercent / 100],
      // A probe that timed out (a busy machine) leaves its field null in the report and its series out of /metrics.
      ...(r.system.disk
        ? [
            [`telematics_system_disk_free_bytes{path="${r.system.disk.path}",mount="${r.system.disk.mount ?? ''}"}`, r.system.disk.freeBytes] as [
              string,
              number,
            ],
          ]
        : []),
    ];
    for (const [series, value] of expectedHost) assert.equal(m.get(series), value ?? undefined, series);
    for (const i of r.system.interfaces ?? []) {
      assert.equal(m.get(`telematics_system_network_interface_up{interface="${i.name}",operstate="${i.operstate}"}`), i.up ? 1 : 0, i.name);
    }
    // Missing sensors are left out, not NaN.
    assert.ok(![...m.values()].some(Number.isNaN));
    assert.equal(m.has('telematics_system_temperature_celsius{sensor="cpu"}'), r.system.cpuTempC !== null);
    // Days are no base unit: the expiry is a timestamp.
    assert.ok(![...m.keys()].some((series) => series.includes('days')));
  });

  it('[16.metrics] promtool check metrics passes a real scrape, and every family the exposition can have, clean', async () => {
    await assertPromtoolClean((await scrape(port)).body);
    // Every family: the same document with the parts this agent lacks filled in (OBD pollers, commands, sensors, a disk).
    const s = await status(port);
    const agentPart = structuredClone(s.agent);
    agentPart.obd = [
      { name: 'obd', via: 'elm327', connected: true, state: 'ready', requests: 12, answers: 10, unsupportedPids: 1 },
      { name: 'can1', via: 'can', connected: false, state: 'down', requests: 3, answers: 0, unsupportedPids: 0 },
    ];
    agentPart.gnss = [
      {
        name: 'gnss',
        via: 'gnss',
        state: 'receiving',
        mode: 3,
        status: 2,
        lat: 48.1,
        lon: 11.5,
        altMSL: 519.8,
        speed: 3.2,
        track: 90,
        uSat: 9,
        nSat: 12,
        hdop: 0.9,
        fixTime: '2026-12-07T12:00:00.000Z',
        positionAgeS: 0.4,
        clockOffsetS: -0.2,
        clockWarning: false,
        fixes: 100,
      },
    ];
    agentPart.buses[0]!.errorFrames = 2;
    agentPart.buses[0]!.kernelDrops = 3; // [19.socketcan]
    agentPart.uplink!.heartbeat.rttMs = 42;
    agentPart.commands = {
      received: 9,
      accepted: 6,
      succeeded: 4,
      failed: 1,
      timedOut: 1,
      rejected: 3,
      rejectedByReason: { 'bad-signature': 2, replayed: 1 },
      running: 0,
      lostResults: 0,
      unanswerable: 1,
      unsignedNotAnswered: 0,
    };
    const report = structuredClone(s.report!);
    Object.assign(report.system, { cpuTempC: 51, cpuTempMaxC: 55, chipsetTempC: 48, coreTempsC: [50, 52] });
    report.system.disk ??= { path: '/var/lib/telematics', mount: '/', filesystem: '/dev/mmcblk0p2', totalBytes: 8e9, freeBytes: 5e9, usedPercent: 37.5 };
    const everything = renderMetrics(agentPart, report);
    for (const family of [
      'telematics_obd_requests_total',
      'telematics_commands_rejected_total',
      'telematics_system_temperature_celsius',
      'telematics_system_disk_free_bytes',
      'telematics_uplink_round_trip_seconds',
      'telematics_bus_error_frames_total',
      'telematics_bus_kernel_drops_total',
    ]) {
      assert.ok(everything.includes(`# TYPE ${family} `), family);
    }
    parseExposition(everything);
    await assertPromtoolClean(everything);
  });

  it('/status: the live status signals, link state, outbox and agent part, and the latest report', async () => {
    const s = await status(port);
    assert.equal(s.deviceId, deviceId);
    assert.ok(Math.abs(s.tsMs - Date.now()) < 2000);
    assert.deepEqual(
      s.signals.map((g) => g.name),
      STATUS_SIGNALS,
    );
    const text = Object.fromEntries(s.signals.map((g) => [g.name, g.text]));
    assert.match(text['VEHICLE_DYNAMICS.VehicleSpeed']!, /^\d+\.\d{2} km\/h$/);
    assert.match(text['TRANSMISSION.GearEngaged']!, /^(P|R|N|D|[1-6])$/);
    assert.match(text['ODOMETER.Odometer']!, /^\d+\.\d km$/);
    // Every value has arrived, and says how long ago.
    for (const g of s.signals) assert.ok(g.value !== null && g.ageS !== null && g.ageS >= 0 && typeof g.stale === 'boolean', JSON.stringify(g));
    // The link and the agent part are read from the same snapshot: the heartbeat interval is the same one.
    assert.deepEqual(s.link, { state: 'connected', url: fleet.broker.url, heartbeatS: s.agent.uplink!.heartbeat.intervalS });
    assert.equal(s.agent.uplink!.state, 'connected');
    assert.ok(s.outbox && s.outbox.messages >= 0 && s.outbox.bytes >= 0);
    assert.deepEqual(s.obd, []);
    assert.equal(s.report!.deviceId, deviceId);
    // The live frame rate, over the last second or more; the counts grow.
    const later = await statusWhen(port, (next) => next.buses[0]!.frames > s.buses[0]!.frames, 'more frames');
    const bus = later.buses[0]!;
    assert.deepEqual({ ...bus, frames: 0, framesPerS: 0 }, { name: 'can0', source: 'sim', frames: 0, framesPerS: 0, errors: 0, state: null });
    assert.ok(bus.framesPerS !== null && bus.framesPerS > 150 && bus.framesPerS < 450, `${bus.framesPerS} frames/s`);
    assert.equal(bus.framesPerS, later.agent.buses[0]!.framesPerS);
  });

  it('refuses what it does not serve: 404, 405 with Allow, 403 for a Host that is not localhost; HEAD without a body', async () => {
    for (const path of ['/nope', '/metrics/', '/status.json', '/index.html']) assert.equal((await request(port, { path })).status, 404, path);
    for (const [method, path] of [
      ['POST', '/status'],
      ['PUT', '/'],
      ['DELETE', '/metrics'],
      ['OPTIONS', '/status'],
    ] as const) {
      const answer = await request(port, { method, path });
      assert.equal(answer.status, 405, `${method} ${path}`);
      assert.equal(answer.headers.allow, 'GET, HEAD');
    }
    const head = await request(port, { method: 'HEAD', path: '/metrics' });
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal((await request(port, { path: '/status?refresh=1' })).status, 200, 'the query string is ignored');

    // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends its own name as Host.
    for (const host of ['evil.example', `evil.example:${port}`, `127.0.0.1.nip.io:${port}`, `localhost.evil.example:${port}`]) {
      const answer = await request(port, { path: '/status', host });
      assert.equal(answer.status, 403, host);
      assert.ok(!answer.body.includes(deviceId));
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'localhost']) {
      assert.equal((await request(port, { path: '/status', host })).status, 200, host);
    }
    assert.match(await requestWithoutHost(port), /^HTTP\/1\.1 403 /);

    const page = await request(port, { path: '/' });
    assert.equal(page.status, 200);
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
    assert.match(
      String(page.headers['content-security-policy']),
      /^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/=]+'; script-src 'sha256-[A-Za-z0-9+/=]+'; connect-src 'self'/,
    );
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['cache-control'], 'no-store');
    // Self-contained: nothing loaded from elsewhere.
    assert.ok(!/\b(src|href)=/.test(page.body), 'no external assets');
  });

  it('the status page renders in headless Chromium: device ID, live signal values, link state, outbox depth, certificate', { timeout: 90_000 }, async () => {
    const url = `http://127.0.0.1:${port}/`;
    const staticHtml = (await request(port)).body;
    const beforeRender = await status(port);
    const started = performance.now();
    const dom = await renderInChromium(url);
    const renderMs = performance.now() - started;
    const afterRender = await status(port);
    console.log(`chromium rendered the status page in ${renderMs.toFixed(0)} ms`);

    assert.match(dom, new RegExp(`<span id="device-id">${deviceId}</span>`), dom);
    assert.match(dom, /id="conn"[^>]*>live</, 'the page reached /status');
    // Every status signal has its row, filled in by the page's script with the value /status gave.
    for (const name of STATUS_SIGNALS) {
      const cell = new RegExp(`data-key="${name.replace('.', '\\.')}"[^>]*>([^<]*)<`).exec(dom);
      assert.ok(cell, `no row for ${name}`);
      const shown = [beforeRender, afterRender].map((s) => s.signals.find((g) => g.name === name)!.text);
      // A moving value may have changed between the render and the /status requests around it; the odometer of the
      // parked car has not.
      if (name === 'ODOMETER.Odometer') {
        assert.ok(shown.includes(cell[1]!), `${name}: the page shows ${cell[1]}, /status said ${shown.join(' / ')}`);
        assert.ok(!staticHtml.includes(cell[1]!), 'the value is not in the static page: the script put it there');
      } else assert.notEqual(cell[1], '');
    }
    assert.match(dom, /id="link-state" class="big ok">connected</);
    const depth = /id="outbox-messages" class="big">(\d+)</.exec(dom);
    assert.ok(depth, 'the outbox depth');
    assert.ok(Number(depth[1]) >= 0);
    assert.match(dom, /id="outbox-detail"[^>]*>\d+ k?B, (nothing waiting|oldest \d+ s)</);
    // The certificate as the agent reads it now; its days left may have ticked over during the render.
    const days = /id="cert-days" class="big ok">(\d+) days</.exec(dom);
    assert.ok(days, 'the certificate');
    assert.ok([beforeRender, afterRender].map((s) => s.agent.certificate!.daysLeft.toFixed(0)).includes(days[1]!), days[1]);
    // Live frame rates without a scheduled report (only the one taken at the start).
    assert.equal(afterRender.report!.seq, 0);
    assert.match(dom, /<td>can0 \(sim\)<\/td><td class="v" data-key="bus can0">\d+ frames\/s, 0 errors<\/td>/);
    assert.match(dom, /<tbody id="obd"><tr><td>no OBD-II polling configured<\/td>/);
    // The position: the fix, where the car is (the start of the demo route: it has not driven off yet), how long ago.
    assert.match(dom, /<td>gnss \(sim-gnss\)<\/td><td class="v ok" data-key="gnss gnss">receiving, 3D fix, 9 of 12 satellites<\/td>/);
    assert.match(dom, /data-key="gnss\.position">48\.13905\d, 11\.56590\d, 0\.0 km\/h, \d+ s ago</);
    // The host's values say how old they are.
    assert.match(dom, /id="system-age" class="(muted|stale)">sampled \d+ (s|min) ago, every 5 min/);
    // The placeholders of the static page are gone.
    assert.match(staticHtml, /<span id="device-id">–<\/span>/);
    assert.match(staticHtml, /<tbody id="signals"><\/tbody>/);
  });

  it('with its port taken, an agent says so once and runs on without the endpoint', async () => {
    const busy: Server = createServer((_, res) => res.end('someone else'));
    const busyPort = await new Promise<number>((resolve) => busy.listen(0, '127.0.0.1', () => resolve((busy.address() as { port: number }).port)));
    try {
      const config = parseDeviceConfig(
        {
          deviceId: 'car-busy-port',
          buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 2 } }],
          status: { intervalMs: 200, signals: ['VehicleSpeed'] },
          health: { intervalS: 1, http: { port: busyPort } },
        },
        { file: 'inline', baseDir: makeTempDir('health-busy-') },
      );
      const lines: string[] = [];
      let written = '';
      const summary = await runAgent({ config, durationS: 1.5, output: { write: (text: string) => (written += text) }, warn: (m) => lines.push(m) });
      assert.deepEqual(
        lines.filter((l) => l.startsWith('health:')),
        [`health: cannot serve the status page on 127.0.0.1:${busyPort}: the port is in use; running without it`],
      );
      assert.ok(summary.buses[0]!.frames > 300, `${summary.buses[0]!.frames} frames`);
      // The status line goes on (every 200 ms; fewer on a busy machine, whose timers run late).
      assert.ok(
        written.split('\n').some((l) => l.includes('frames/s')),
        written,
      );
      assert.equal((await request(busyPort)).body, 'someone else');
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('closes the endpoint when the run stops', async () => {
    const summary = await agent.close();
    assert.ok(summary.buses[0]!.frames > 0);
    await assert.rejects(request(port, { path: '/status' }), (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED');
  });
});

describe('[16.metrics] the status page of an agent with an ELM327 adapter and a replayed log that has ended', () => {
  it(
    'shows the OBD adapter and its values, a missing value as "no value yet" and an old one as stale; /metrics passes promtool',
    { timeout: 120_000 },
    async (t) => {
      const elm = await elmOnPty();
      const dir = makeTempDir('health-page-');
      // Two ENGINE_DATA frames (EngineSpeed 800.0 then 810.0 rpm) and nothing else: VehicleSpeed never arrives.
      const t0 = 1_700_000_000;
      writeFileSync(path.join(dir, 'drive.log'), [candumpLine(t0, 0xc8, le16(3200)), candumpLine(t0 + 0.01, 0xc8, le16(3240))].join('\n') + '\n');
      const port = await freePort();
      const config = parseDeviceConfig(
        {
          deviceId: 'car-page',
          buses: [{ name: 'rec', dbc: DEMO_DBC_PATH, source: { type: 'replay', file: 'drive.log' } }],
          obdAdapters: [
            {
              name: 'obd',
              port: elm.path,
              pids: [
                { pid: 'rpm', intervalMs: 200 },
                { pid: 'coolantTemp', intervalMs: 200 },
              ],
            },
          ],
          status: { signals: ['EngineSpeed', 'VehicleSpeed'] },
          health: { intervalS: 300, http: { port } },
        },
        { file: path.join(dir, 'device.json'), baseDir: dir },
      );
      const agent = await InProcessAgent.start(config);
      t.after(async () => {
        await agent.close();
        await elm.close();
      });
      // The events the page is rendered after: the log's value has aged past its limit (ENGINE_DATA is sent every 10 ms:
      // 1 s), the bus has been silent for a whole rate period, and the adapter's two values have arrived.
      const s = await statusWhen(
        port,
        (s) =>
          s.signals[0]!.stale &&
          s.buses[0]!.framesPerS === 0 &&
          s.agent.obd[0]?.state === 'ready' &&
          ['obd.obd.rpm', 'obd.obd.coolantTemp'].every((name) => s.obd.some((v) => v.name === name)),
        'a stale EngineSpeed, a silent bus and both OBD values',
        30_000,
      );
      assert.deepEqual(
        s.signals.map(({ name, value, text, stale }) => ({ name, value, text, stale })),
        [
          { name: 'EngineSpeed', value: 810, text: '810.0 rpm', stale: true },
          { name: 'VehicleSpeed', value: null, text: '–', stale: false },
        ],
      );
      // Stale: older than its limit (1 s), its age given to a tenth of a second.
      assert.ok(s.signals[0]!.ageS! >= 1, `${s.signals[0]!.ageS} s`);
      assert.equal(s.signals[1]!.ageS, null);
      assert.deepEqual(
        s.obd.map(({ name, value, text }) => ({ name, value, text })),
        [
          { name: 'obd.obd.rpm', value: 750, text: '750 rpm' },
          { name: 'obd.obd.coolantTemp', value: 90, text: '90 °C' },
        ],
      );

      const dom = await renderInChromium(`http://127.0.0.1:${port}/`);
      assert.match(dom, /id="conn"[^>]*>live</, 'the page reached /status');
      assert.match(dom, /<td class="v stale" data-key="EngineSpeed">810\.0 rpm<span class="flag">stale: \d+ s<\/span><\/td>/, dom);
      assert.match(dom, /<td class="v missing" data-key="VehicleSpeed">no value yet<\/td>/);
      assert.match(dom, /<td>rec \(replay\)<\/td><td class="v" data-key="bus rec">0 frames\/s, 0 errors<\/td>/);
      // The adapter, then its values under it (flagged stale only if this busy machine held a poll back).
      assert.match(dom, /<td>obd \(elm327\)<\/td><td class="v ok" data-key="obd obd">ready, \d+ answers to \d+ requests<\/td>/);
      assert.match(dom, /<td class="sub">rpm<\/td><td class="v( stale)?" data-key="obd\.obd\.rpm">750 rpm</);
      assert.match(dom, /<td class="sub">coolantTemp<\/td><td class="v( stale)?" data-key="obd\.obd\.coolantTemp">90 °C</);
      assert.match(dom, /id="link-state" class="big muted">none</);
      assert.match(dom, /id="outbox-messages" class="big muted">none</);

      // /metrics: the adapter's counters, live, and promtool has nothing to say about it.
      const before = await status(port);
      const metrics = (await scrape(port)).body;
      const after = await status(port);
      const m = parseExposition(metrics);
      const requests = m.get('telematics_obd_requests_total{source="obd",via="elm327"}')!;
      assert.ok(requests >= before.agent.obd[0]!.requests && requests <= after.agent.obd[0]!.requests, `${requests} requests`);
      assert.equal(m.get('telematics_obd_connected{source="obd",via="elm327"}'), 1);
      assert.equal(m.get('telematics_bus_frames_total{bus="rec"}'), 2);
      assert.equal(m.get('telematics_bus_frames_per_second{bus="rec"}'), 0);
      await assertPromtoolClean(metrics);
    },
  );
});

describe('health without anyone to report to', () => {
  it("no uplink and the page's port taken: no report timer, the host is never sampled", async () => {
    const busy: Server = createServer((_, res) => res.end('someone else'));
    const busyPort = await new Promise<number>((resolve) => busy.listen(0, '127.0.0.1', () => resolve((busy.address() as { port: number }).port)));
    const warnings: string[] = [];
    const start = (port: number) => {
      const config = parseDeviceConfig(
        { deviceId: 'car-nobody', buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }], health: { intervalS: 1, http: { port } } },
        { file: 'inline', baseDir: makeTempDir('health-nobody-') },
      );
      return Health.start({
        config,
        snapshot: () => takeSnapshot({ config, buses: [] }),
        log: { info: (m) => warnings.push(m), warn: (m) => warnings.push(m) },
      });
    };
    try {
      const health = await start(busyPort);
      try {
        assert.equal(health.http, null);
        assert.deepEqual(warnings, [`health: cannot serve the status page on 127.0.0.1:${busyPort}: the port is in use; running without it`]);
        // Two intervals: a timer would have taken (and kept) a report by now.
        await delay(2300);
        assert.equal(health.latest, null, 'no report taken');
      } finally {
        await health.close();
      }

      // The same with the page up: the reports are taken for it (the check above is not vacuous).
      const free = await freePort();
      const serving = await start(free);
      try {
        assert.ok(serving.http);
        await waitFor(() => (serving.latest?.seq ?? 0) >= 1, 'a scheduled report', 5000);
      } finally {
        await serving.close();
      }
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });
});
