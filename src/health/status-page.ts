/**
 * The technician's status page (GET /): one self-contained HTML document, no external assets (the head unit may have
 * no network). Its script fetches /status every second and fills the page in with textContent only, so nothing the
 * agent reports is ever parsed as HTML. The static document holds placeholders, no values.
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
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
`;

const SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
const set = (id, text, cls) => { const el = $(id); el.textContent = text; if (cls !== undefined) el.className = cls; };
const bytes = (n) => n == null ? '–' : n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(0) + ' kB' : n < 1073741824 ? (n / 1048576).toFixed(1) + ' MB' : (n / 1073741824).toFixed(2) + ' GB';
const age = (s) => s == null ? '–' : s < 120 ? Math.round(s) + ' s' : s < 7200 ? Math.round(s / 60) + ' min' : s < 172800 ? (s / 3600).toFixed(1) + ' h' : (s / 86400).toFixed(1) + ' d';
const num = (n, d) => n == null ? '–' : n.toFixed(d);
function rows(id, list) {
  const body = $(id);
  body.replaceChildren(...list.map(([name, value, key]) => {
    const tr = document.createElement('tr');
    const a = document.createElement('td'); a.textContent = name;
    const b = document.createElement('td'); b.className = 'v'; b.textContent = value;
    if (key) b.dataset.key = key;
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
    set('outbox-detail', bytes(s.outbox.bytes) + ', oldest ' + age(s.outbox.oldestAgeS));
  } else {
    set('outbox-messages', 'none', 'big muted');
    set('outbox-detail', 'no outbox configured');
  }
  rows('signals', s.signals.map((g) => [g.name, g.text, g.name]).concat(s.obd.map((o) => [o.name, String(o.value), o.name])));
  rows('buses', s.buses.map((b) => [b.name + ' (' + b.source + ')', num(b.framesPerS, 0) + ' frames/s, ' + b.errors + ' errors' + (b.state ? ', ' + b.state : '')]));
  const r = s.report;
  const cert = r && r.agent.certificate;
  if (cert) {
    set('cert-days', num(cert.daysLeft, 0) + ' days', cert.daysLeft <= 0 ? 'big bad' : cert.expiringSoon ? 'big warn' : 'big ok');
    set('cert-detail', 'valid until ' + (cert.notAfter || '?'));
  } else {
    set('cert-days', '–', 'big muted');
    set('cert-detail', 'no certificate information');
  }
  if (!r) return;
  const y = r.system;
  rows('system', [
    ['CPU', num(y.cpuLoadPercent, 0) + ' %'],
    ['memory used', bytes(y.memUsedBytes) + ' of ' + bytes(y.memTotalBytes)],
    ['disk free', y.disk ? bytes(y.disk.freeBytes) + ' of ' + bytes(y.disk.totalBytes) : '–'],
    ['CPU temperature', y.cpuTempC == null ? '–' : num(y.cpuTempC, 0) + ' °C'],
    ['network', (y.interfaces || []).filter((i) => i.up && !i.internal).map((i) => i.name + (i.default ? '*' : '')).join(', ') || 'none up'],
    ['uptime', age(y.uptimeS)],
    ['sample', y.sampleMs + ' ms' + (y.failed.length ? ', failed: ' + y.failed.join('; ') : '')],
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
<section class="wide"><h2>System</h2><table><tbody id="system"></tbody></table></section>
</div>
<script>${SCRIPT}</script>
</body>
</html>
`;
