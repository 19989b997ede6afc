/**
 * The technician's status page (GET /): one self-contained HTML document, no external assets (the head unit may have
 * no network). Its script fetches /status every second and fills the page in with textContent only, so nothing the
 * agent reports is ever parsed as HTML. The static document holds placeholders, no values. Everything but the host's
 * values is live (frame rates from the first second on); the host's values say how old they are, and a value that is
 * missing or stale is marked as such, never shown as if it were current.
 *
 * The Content-Security-Policy allows exactly this page's inline style and script (by hash) and fetches to itself.
 */
import { createHash } from 'node:crypto';

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #b35900; --bad: #c62828; --muted: #777; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; padding: 12px 16px; }
header { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: baseline; margin-bottom: 12px; }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 0 0 6px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }
section { border: 1px solid #8884; border-radius: 6px; padding: 10px 12px; min-width: 0; }
section.wide { grid-column: span 2; }
@media (max-width: 600px) { section.wide { grid-column: auto; } }
.big { font-size: 22px; font-weight: 600; }
.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
td { padding: 2px 8px 2px 0; vertical-align: top; overflow-wrap: anywhere; }
td.v { text-align: right; font-variant-numeric: tabular-nums; padding-right: 0; }
td.sub { padding-left: 16px; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
.missing { color: var(--muted); font-style: italic; }
.stale { color: var(--warn); }
.flag { font-size: 12px; border: 1px solid currentColor; border-radius: 3px; padding: 0 3px; margin-left: 4px; }
`;

// Plain script, no template literals: it is itself inside one. A missing value says so ("no value yet"), a stale one
// says how old it is ("stale: 42 s"): a technician must never take an old or absent value for a live one.
const SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
const set = (id, text, cls) => { const el = $(id); el.textContent = text; if (cls !== undefined) el.className = cls; };
const bytes = (n) => n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(0) + ' kB' : n < 1073741824 ? (n / 1048576).toFixed(1) + ' MB' : (n / 1073741824).toFixed(2) + ' GB';
const age = (s) => s < 120 ? Math.round(s) + ' s' : s < 7200 ? Math.round(s / 60) + ' min' : s < 172800 ? (s / 3600).toFixed(1) + ' h' : (s / 86400).toFixed(1) + ' d';
const NO_VALUE_YET = { text: 'no value yet', cls: 'missing' };
const NO_VALUE = { text: 'no value', cls: 'missing' };
const GNSS_STATUS = ['unknown', 'GPS', 'DGPS', 'RTK fixed', 'RTK float', 'dead reckoning', 'GNSS + dead reckoning', 'time only', 'simulated'];
// A host value the sample did not get (no sensor, a probe that failed): marked, never shown as 0.
const host = (n, format) => n == null ? NO_VALUE : format(n);
// A live value: none yet, or flagged once older than its freshness limit.
const fresh = (v) => v.value == null || v.ageS == null ? NO_VALUE_YET : v.stale ? { text: v.text, cls: 'stale', flag: 'stale: ' + age(v.ageS) } : { text: v.text };
// Rows of { name, value, key, sub }: value is text or { text, cls, flag }; key goes to the value cell's data-key.
function rows(id, list) {
  $(id).replaceChildren(...list.map((row) => {
    const tr = document.createElement('tr');
    const a = document.createElement('td'); a.textContent = row.name;
    if (row.sub) a.className = 'sub';
    const value = typeof row.value === 'string' ? { text: row.value } : row.value;
    const b = document.createElement('td'); b.className = 'v' + (value.cls ? ' ' + value.cls : ''); b.textContent = value.text;
    if (value.flag) { const f = document.createElement('span'); f.className = 'flag'; f.textContent = value.flag; b.append(f); }
    if (row.key) b.dataset.key = row.key;
    tr.append(a, b);
    return tr;
  }));
}
function render(s) {
  document.title = s.deviceId + ' – telematics agent';
  set('device-id', s.deviceId);
  set('updated', 'updated ' + new Date(s.tsMs).toLocaleTimeString());
  const link = s.link.state;
  set('link-state', link, link === 'connected' ? 'big ok' : link === 'none' ? 'big muted' : 'big warn');
  set('link-detail', (s.link.url || 'no uplink configured') + (s.link.heartbeatS != null ? ', heartbeat ' + s.link.heartbeatS + ' s' : ''));
  if (s.outbox) {
    set('outbox-messages', String(s.outbox.messages), 'big');
    set('outbox-detail', bytes(s.outbox.bytes) + ', ' + (s.outbox.oldestAgeS == null ? 'nothing waiting' : 'oldest ' + age(s.outbox.oldestAgeS)));
  } else {
    set('outbox-messages', 'none', 'big muted');
    set('outbox-detail', 'no outbox configured');
  }
  const cert = s.agent.certificate;
  if (cert) {
    set('cert-days', cert.daysLeft.toFixed(0) + ' days', cert.daysLeft <= 0 ? 'big bad' : cert.expiringSoon ? 'big warn' : 'big ok');
    set('cert-detail', 'valid until ' + (cert.notAfter || '?'));
  } else {
    set('cert-days', 'none', 'big muted');
    set('cert-detail', 'no certificate information (no uplink)');
  }
  const signals = s.signals.map((g) => ({ name: g.name, value: fresh(g), key: g.name }));
  rows('signals', signals.length ? signals : [{ name: 'no bus signals', value: NO_VALUE }]);
  rows('buses', s.buses.map((b) => ({
    name: b.name + ' (' + b.source + ')',
    value: { text: (b.framesPerS == null ? 'measuring frames/s' : b.framesPerS.toFixed(0) + ' frames/s') + ', ' + b.errors + ' errors' + (b.state ? ', ' + b.state : ''), cls: b.framesPerS == null ? 'missing' : '' },
    key: 'bus ' + b.name,
  })));
  const obd = [];
  for (const o of s.agent.obd) {
    const counts = o.answers + ' answers to ' + o.requests + ' requests' + (o.unsupportedPids ? ', ' + o.unsupportedPids + ' PIDs unsupported' : '');
    obd.push({ name: o.name + ' (' + o.via + ')', value: { text: o.state + (o.connected ? '' : ', no link to the ECUs') + ', ' + counts, cls: o.connected ? 'ok' : 'warn' }, key: 'obd ' + o.name });
    const prefix = o.name + '.obd.';
    const values = s.obd.filter((v) => v.name.startsWith(prefix));
    for (const v of values) obd.push({ name: v.name.slice(prefix.length), value: fresh(v), key: v.name, sub: true });
    if (!values.length) obd.push({ name: 'values', value: NO_VALUE_YET, sub: true });
  }
  rows('obd', obd.length ? obd : [{ name: 'no OBD-II polling configured', value: '' }]);
  const gnss = [];
  for (const g of s.agent.gnss || []) {
    const quality = g.mode >= 2 ? (g.mode === 3 ? '3D' : '2D') + ' fix' + (g.status > 1 ? ' (' + (GNSS_STATUS[g.status] || g.status) + ')' : '') : g.mode === 1 ? 'no fix' : 'no fix yet';
    const sats = g.uSat != null ? g.uSat + (g.nSat != null ? ' of ' + g.nSat : '') + ' satellites' : g.nSat != null ? g.nSat + ' in view' : '';
    gnss.push({ name: g.name + ' (' + g.via + ')', value: { text: g.state + ', ' + quality + (sats ? ', ' + sats : ''), cls: g.mode >= 2 ? 'ok' : 'warn' }, key: 'gnss ' + g.name });
    const stale = g.positionAgeS != null && g.positionAgeS > 10;
    gnss.push({
      name: 'position',
      value: g.lat == null ? NO_VALUE_YET : { text: g.lat.toFixed(6) + ', ' + g.lon.toFixed(6) + (g.speed != null ? ', ' + (g.speed * 3.6).toFixed(1) + ' km/h' : '') + ', ' + g.positionAgeS.toFixed(0) + ' s ago', cls: stale ? 'stale' : '' },
      key: g.name + '.position',
      sub: true,
    });
    if (g.clockOffsetS != null) gnss.push({ name: 'clock', value: { text: (g.clockWarning ? 'the agent is ' : '') + Math.abs(g.clockOffsetS).toFixed(1) + ' s ' + (g.clockOffsetS >= 0 ? 'ahead of' : 'behind') + ' the receiver', cls: g.clockWarning ? 'warn' : '' }, key: g.name + '.clock', sub: true });
  }
  rows('gnss', gnss.length ? gnss : [{ name: 'no position source configured', value: '' }]);
  const r = s.report;
  if (!r) {
    set('system-age', 'sampling the host…', 'missing');
    rows('system', []);
    return;
  }
  const y = r.system;
  // The host is sampled once per report; a sample that missed more than one report is stale.
  const sampledS = Math.max(0, (s.tsMs - y.tsMs) / 1000);
  const staleHost = sampledS > 2 * r.intervalS + 10;
  set('system-age', 'sampled ' + age(sampledS) + ' ago, every ' + age(r.intervalS) + (staleHost ? ' (stale)' : ''), staleHost ? 'stale' : 'muted');
  rows('system', [
    { name: 'CPU', value: host(y.cpuLoadPercent, (n) => n.toFixed(0) + ' %') },
    { name: 'memory used', value: y.memUsedBytes == null || y.memTotalBytes == null ? NO_VALUE : bytes(y.memUsedBytes) + ' of ' + bytes(y.memTotalBytes) },
    { name: 'disk free', value: host(y.disk, (d) => bytes(d.freeBytes) + ' of ' + bytes(d.totalBytes)) },
    { name: 'CPU temperature', value: host(y.cpuTempC, (n) => n.toFixed(0) + ' °C') },
    { name: 'network', value: host(y.interfaces, (list) => list.filter((i) => i.up && !i.internal).map((i) => i.name + (i.default ? '*' : '')).join(', ') || 'none up') },
    { name: 'uptime', value: host(y.uptimeS, age) },
    { name: 'sample', value: { text: y.sampleMs + ' ms' + (y.failed.length ? ', failed: ' + y.failed.join('; ') : ''), cls: y.failed.length ? 'warn' : '' } },
  ]);
}
async function refresh() {
  try {
    const res = await fetch('/status', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    render(await res.json());
    set('conn', 'live', 'ok');
  } catch (err) {
    set('conn', 'agent not answering (' + err.message + ')', 'bad');
  }
}
refresh();
setInterval(refresh, 1000);
`;

const hash = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

export const STATUS_PAGE_CSP =
  `default-src 'none'; style-src ${hash(STYLE)}; script-src ${hash(SCRIPT)}; connect-src 'self'; ` +
  `base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>telematics agent</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>Telematics agent <span id="device-id">–</span></h1><span id="updated" class="muted">waiting for the agent…</span><span id="conn" class="muted"></span></header>
<div class="grid">
<section><h2>Link</h2><div id="link-state" class="big">–</div><div id="link-detail" class="muted"></div></section>
<section><h2>Outbox</h2><div><span id="outbox-messages" class="big">–</span> <span class="muted">messages waiting</span></div><div id="outbox-detail" class="muted"></div></section>
<section><h2>Certificate</h2><div id="cert-days" class="big">–</div><div id="cert-detail" class="muted"></div></section>
<section class="wide"><h2>Signals</h2><table><tbody id="signals"></tbody></table></section>
<section><h2>Buses</h2><table><tbody id="buses"></tbody></table></section>
<section class="wide"><h2>OBD-II</h2><table><tbody id="obd"></tbody></table></section>
<section class="wide"><h2>Position</h2><table><tbody id="gnss"></tbody></table></section>
<section class="wide"><h2>System</h2><div id="system-age" class="muted"></div><table><tbody id="system"></tbody></table></section>
</div>
<script>${SCRIPT}</script>
</body>
</html>
`;
