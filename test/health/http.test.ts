/**
 * The local health endpoint of a whole running agent (in-process: the demo car on a sim bus, the data path, the uplink
 * to a real mosquitto): /metrics against the Prometheus text format and against /status, the status page rendered by
 * a real headless Chromium, the refusals (404, 405, foreign Host headers), a port already taken, and the close.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request as httpRequest, createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { before, describe, it } from 'node:test';
import { takeSnapshot } from '../../src/agent/snapshot.js';
import { runAgent } from '../../src/cli/run.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { Health, type LiveStatus } from '../../src/health/monitor.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { InProcessAgent } from '../support/agent-in-process.js';
import { withBroker } from '../support/broker-fixture.js';
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

async function status(port: number): Promise<LiveStatus> {
  const answer = await request(port, { path: '/status' });
  assert.equal(answer.status, 200, answer.body);
  return JSON.parse(answer.body) as LiveStatus;
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
    if (typed.get(name!) === 'counter') assert.ok(name!.endsWith('_total'), `counter ${name} ends in _total`);
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

  before(async () => {
    port = await freePort();
    const dir = makeTempDir('health-http-');
    const config = parseDeviceConfig(
      {
        deviceId,
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } }],
        status: { intervalMs: 1000, signals: STATUS_SIGNALS },
        collection: { batch: { maxSamples: 50, maxDelayMs: 500 }, rules: [{ name: 'speed', mode: 'periodic', intervalMs: 500, signals: ['VehicleSpeed'] }] },
        outbox: { path: 'var/outbox.db', writeIntervalMs: 100 },
        uplink: { url: fleet.broker.url, ...fleet.pki.identityFiles(deviceId), reconnect: { initialMs: 100, maxMs: 500 } },
        health: { intervalS: 1, http: { port } },
      },
      { file: 'http.json', baseDir: dir },
    );
    agent = await InProcessAgent.start(config);
    const warnings = agent.log;
    // The page is up once the run says so; the first scheduled report (with rates) a second later.
    await waitFor(() => warnings.includes(`health: status page on http://127.0.0.1:${port}/`), `the status page line in:\n${warnings.join('\n')}`, 10_000);
    for (let i = 0; ; i++) {
      const s = await status(port);
      if (s.report && s.report.seq >= 1 && s.link.state === 'connected') break;
      assert.ok(i < 100, 'a scheduled report and a connected link within 10 s');
      await delay(100);
    }
  });

  it('/metrics is Prometheus text 0.0.4 (HELP and TYPE before samples, telematics_ names, counters _total) and agrees with /status', async () => {
    let metrics = '';
    let contentType: string | string[] | undefined;
    let s: LiveStatus | undefined;
    // The three requests must see the same report (one is taken every second).
    for (let i = 0; i < 20; i++) {
      const before = await status(port);
      const answer = await request(port, { path: '/metrics' });
      const afterwards = await status(port);
      assert.equal(answer.status, 200);
      if (before.report!.seq === afterwards.report!.seq) {
        metrics = answer.body;
        contentType = answer.headers['content-type'];
        s = afterwards;
        break;
      }
    }
    assert.ok(s?.report, 'three requests within one report');
    assert.equal(contentType, 'text/plain; version=0.0.4; charset=utf-8');
    const m = parseExposition(metrics);
    const r = s.report;
    const bus = r.agent.buses[0]!;
    const expected: [string, number | null][] = [
      ['telematics_health_reports_total', r.seq],
      ['telematics_health_report_timestamp_seconds', r.tsMs / 1000],
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
      ['telematics_bus_frames_total{bus="can0"}', bus.frames],
      ['telematics_bus_frames_per_second{bus="can0"}', bus.framesPerS],
      ['telematics_bus_decode_errors_total{bus="can0"}', 0],
      ['telematics_outbox_messages', r.agent.outbox!.messages],
      ['telematics_outbox_bytes', r.agent.outbox!.bytes],
      ['telematics_outbox_evicted_total', 0],
      ['telematics_uplink_connected', 1],
      ['telematics_uplink_acknowledged_total', r.agent.uplink!.acknowledged],
      ['telematics_uplink_reconnects_total', 0],
      ['telematics_uplink_heartbeat_interval_seconds{adaptive="true"}', r.agent.uplink!.heartbeat.intervalS],
      ['telematics_certificate_days_left', r.agent.certificate!.daysLeft],
      ['telematics_process_resident_memory_bytes', r.agent.rssBytes],
    ];
    for (const [series, value] of expected) assert.equal(m.get(series), value ?? undefined, series);
    for (const i of r.system.interfaces ?? []) {
      assert.equal(m.get(`telematics_system_network_interface_up{interface="${i.name}",operstate="${i.operstate}"}`), i.up ? 1 : 0, i.name);
    }
    // 294 frames/s on the sim bus; one report's period may be short of frames the simulator caught up with later.
    assert.ok(bus.framesPerS! > 150 && bus.framesPerS! < 450, `${bus.framesPerS} frames/s`);
    // Missing sensors are left out, not NaN.
    assert.ok(![...m.values()].some(Number.isNaN));
    assert.equal(m.has('telematics_system_temperature_celsius{sensor="cpu"}'), r.system.cpuTempC !== null);
  });

  it('/status: the latest report with the live status signals, link state and outbox', async () => {
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
    assert.deepEqual(s.link, { state: 'connected', url: fleet.broker.url, heartbeatS: s.report!.agent.uplink!.heartbeat.intervalS });
    assert.ok(s.outbox && s.outbox.messages >= 0 && s.outbox.bytes >= 0);
    assert.equal(s.report!.deviceId, deviceId);
    // The live frame rate: between /status requests at least a second apart, as the page makes them.
    await delay(1100);
    const later = await status(port);
    const bus = later.buses[0]!;
    assert.deepEqual({ ...bus, frames: 0, framesPerS: 0 }, { name: 'can0', source: 'sim', frames: 0, framesPerS: 0, errors: 0, state: null });
    assert.ok(bus.frames > s.buses[0]!.frames);
    assert.ok(bus.framesPerS !== null && bus.framesPerS > 240 && bus.framesPerS < 350, `${bus.framesPerS} frames/s`);
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
    assert.match(dom, /id="outbox-detail"[^>]*>\d+ k?B, oldest (–|\d+ s)</);
    const days = beforeRender.report!.agent.certificate!.daysLeft;
    assert.match(dom, new RegExp(`id="cert-days" class="big ok">${days.toFixed(0)} days<`));
    assert.match(dom, /<td>can0 \(sim\)<\/td><td class="v">\d+ frames\/s, 0 errors<\/td>/);
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
      assert.ok(written.split('\n').filter((l) => l.includes('frames/s')).length >= 3, written);
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
