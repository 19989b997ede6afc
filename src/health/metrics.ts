/**
 * The health endpoint's Prometheus text exposition format 0.0.4 (GET /metrics). Live: the agent's counters and states
 * (buses, OBD, collector, outbox, uplink, certificate, commands, the process) are read at scrape time; only the host's
 * values (systeminformation's probes, which take up to seconds) come from the latest health report, and
 * `telematics_system_sample_timestamp_seconds` says when they were sampled.
 *
 * Names follow Prometheus' rules, which `promtool check metrics` checks: they start with `telematics_`; counters, and
 * only counters, end in `_total`; units are base units (seconds, bytes, ratios) and part of the name; every family has
 * its HELP and TYPE once, before its samples. A value that is null (a missing sensor, a rate before its first period)
 * is left out rather than exported as NaN.
 */
import type { AgentHealth, HealthReport } from './report.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type MetricType = 'counter' | 'gauge';
type Labels = Record<string, string>;

interface Family {
  type: MetricType;
  help: string;
  samples: string[];
}

/** Collects samples by family, so that each family's HELP and TYPE come once, before its samples. */
class Exposition {
  private readonly families = new Map<string, Family>();

  add(name: string, type: MetricType, help: string, value: number | boolean | null | undefined, labels?: Labels): void {
    if (value === null || value === undefined) return;
    const number = typeof value === 'boolean' ? (value ? 1 : 0) : value;
    let family = this.families.get(name);
    if (!family) {
      family = { type, help, samples: [] };
      this.families.set(name, family);
    }
    family.samples.push(`${name}${formatLabels(labels)} ${formatValue(number)}`);
  }

  text(): string {
    let out = '';
    for (const [name, family] of this.families) {
      out += `# HELP ${name} ${family.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n`;
      out += `# TYPE ${name} ${family.type}\n`;
      for (const sample of family.samples) out += `${sample}\n`;
    }
    return out;
  }
}

function formatLabels(labels: Labels | undefined): string {
  if (!labels) return '';
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** The exposition: the agent part `a` as read now, the host's values from `report` (none before the first). */
export function renderMetrics(a: AgentHealth, report: HealthReport | null): string {
  const m = new Exposition();
  const seconds = (ms: number | null): number | null => (ms === null ? null : ms / 1000);
  if (report) renderHost(m, report);

  m.add('telematics_process_uptime_seconds', 'gauge', 'Agent process uptime.', a.processUptimeS);
  m.add('telematics_process_resident_memory_bytes', 'gauge', 'Agent process resident memory.', a.rssBytes);
  m.add('telematics_process_heap_used_bytes', 'gauge', 'Agent process JavaScript heap in use.', a.heapUsedBytes);

  for (const b of a.buses) m.add('telematics_bus_frames_total', 'counter', 'Frames received per bus.', b.frames, { bus: b.name });
  for (const b of a.buses)
    m.add('telematics_bus_frames_per_second', 'gauge', 'Frames per second per bus, over the last second or more.', b.framesPerS, { bus: b.name });
  for (const b of a.buses)
    m.add('telematics_bus_signals_per_second', 'gauge', 'Decoded signal values per second per bus, over the last second or more.', b.signalsPerS, {
      bus: b.name,
    });
  for (const b of a.buses)
    m.add('telematics_bus_unknown_frames_total', 'counter', 'Frames no message of the bus DBC describes.', b.unknownFrames, { bus: b.name });
  for (const b of a.buses)
    m.add('telematics_bus_decode_errors_total', 'counter', 'Frames of a known message that could not be decoded.', b.decodeErrors, { bus: b.name });
  for (const b of a.buses)
    m.add('telematics_bus_malformed_log_lines_total', 'counter', 'Malformed lines skipped by a log replay.', b.malformedLogLines, { bus: b.name });
  for (const b of a.buses)
    m.add('telematics_bus_error_frames_total', 'counter', 'CAN error frames the controller reported (SocketCAN buses).', b.errorFrames, { bus: b.name });
  for (const b of a.buses)
    m.add('telematics_bus_kernel_drops_total', 'counter', 'Frames the kernel dropped because the receive buffer was full (SocketCAN buses).', b.kernelDrops, {
      bus: b.name,
    });

  for (const o of a.obd) m.add('telematics_obd_requests_total', 'counter', 'OBD-II requests sent.', o.requests, { source: o.name, via: o.via });
  for (const o of a.obd) m.add('telematics_obd_answers_total', 'counter', 'OBD-II values the ECUs returned.', o.answers, { source: o.name, via: o.via });
  for (const o of a.obd)
    m.add('telematics_obd_unsupported_pids', 'gauge', 'Configured PIDs no ECU supports.', o.unsupportedPids, { source: o.name, via: o.via });
  for (const o of a.obd) m.add('telematics_obd_connected', 'gauge', 'The OBD link to the ECUs is up (1).', o.connected, { source: o.name, via: o.via });

  for (const g of a.gnss)
    m.add('telematics_gnss_fix_mode', 'gauge', 'The latest fix: 0 none yet, 1 no fix, 2 2D, 3 3D.', g.mode, { source: g.name, via: g.via });
  for (const g of a.gnss) m.add('telematics_gnss_fixes_total', 'counter', 'Fixes (receiver epochs) read.', g.fixes, { source: g.name, via: g.via });
  for (const g of a.gnss) m.add('telematics_gnss_satellites_used', 'gauge', 'Satellites used in the latest fix.', g.uSat, { source: g.name, via: g.via });
  for (const g of a.gnss)
    m.add('telematics_gnss_position_age_seconds', 'gauge', 'Time since the last fix with a position arrived.', g.positionAgeS, { source: g.name, via: g.via });
  for (const g of a.gnss)
    m.add('telematics_gnss_clock_offset_seconds', 'gauge', "The agent's clock minus the receiver's time.", g.clockOffsetS, { source: g.name, via: g.via });

  if (a.collector) {
    m.add('telematics_collector_samples_total', 'counter', 'Samples the collection rules emitted.', a.collector.samples);
    m.add('telematics_collector_batches_total', 'counter', 'Batches the collection rules closed.', a.collector.batches);
    m.add('telematics_collector_triggers_total', 'counter', 'Trigger rules fired.', a.collector.triggers);
    m.add('telematics_collector_dropped_batches_total', 'counter', 'Batches that could not be encoded and were dropped.', a.collector.droppedBatches);
  }
  if (a.outbox) {
    m.add('telematics_outbox_messages', 'gauge', 'Messages waiting in the outbox.', a.outbox.messages);
    m.add('telematics_outbox_bytes', 'gauge', 'Size of the messages waiting in the outbox.', a.outbox.bytes);
    m.add('telematics_outbox_oldest_age_seconds', 'gauge', 'Age of the oldest message waiting in the outbox.', a.outbox.oldestAgeS);
    m.add('telematics_outbox_evicted_total', 'counter', 'Messages evicted unsent because the outbox was full.', a.outbox.evicted);
    m.add('telematics_outbox_evicted_bytes_total', 'counter', 'Bytes evicted unsent because the outbox was full.', a.outbox.evictedBytes);
    m.add('telematics_outbox_expired_total', 'counter', 'Messages deleted unsent because they were too old.', a.outbox.expired);
    m.add('telematics_outbox_rejected_total', 'counter', 'Messages the outbox could not store.', a.outbox.rejected);
    m.add('telematics_outbox_set_aside_files', 'gauge', 'Damaged outbox files kept beside it.', a.outbox.setAsideFiles);
    m.add('telematics_outbox_set_aside_bytes', 'gauge', 'Size of the damaged outbox files kept beside it.', a.outbox.setAsideBytes);
    m.add(
      'telematics_outbox_file_lost_total',
      'counter',
      'Times the outbox file was deleted or replaced under the running agent.',
      a.outbox.fileLostWhileRunning,
    );
    m.add('telematics_outbox_loss_notices_total', 'counter', 'Loss notices written: announcements of lost data-stream messages.', a.outbox.lossNotices);
    m.add('telematics_outbox_lost_announced_total', 'counter', 'Data-stream messages announced lost (evicted, expired, refused).', a.outbox.lostAnnounced);
  }
  const u = a.uplink;
  if (u) {
    m.add('telematics_uplink_connected', 'gauge', 'The MQTT session is connected (1).', u.state === 'connected');
    m.add('telematics_uplink_acknowledged_total', 'counter', 'Outbox messages the broker acknowledged.', u.acknowledged);
    m.add(
      'telematics_uplink_acknowledged_per_second',
      'gauge',
      'Messages acknowledged per second, over the last second or more (the publish rate).',
      u.acknowledgedPerS,
    );
    m.add('telematics_uplink_sent_total', 'counter', 'Publishes sent, resends included.', u.sent);
    m.add('telematics_uplink_resent_total', 'counter', 'Messages sent again after a lost connection.', u.resent);
    m.add('telematics_uplink_refused_total', 'counter', 'Publishes the broker refused.', u.refused);
    m.add('telematics_uplink_dropped_total', 'counter', 'Messages deleted unsent after repeated refusals.', u.dropped);
    m.add('telematics_uplink_inflight', 'gauge', 'Messages sent and not yet acknowledged.', u.inflight);
    m.add('telematics_uplink_connect_attempts_total', 'counter', 'Connection attempts.', u.connectAttempts);
    m.add('telematics_uplink_connections_total', 'counter', 'Connections established.', u.connections);
    m.add('telematics_uplink_reconnects_total', 'counter', 'Connections established after the first.', u.reconnects);
    m.add('telematics_uplink_losses_total', 'counter', 'Established connections that were lost.', u.losses);
    m.add('telematics_uplink_throttled', 'gauge', "The data plan's budget is holding messages back (1).", u.throttled);
    m.add('telematics_uplink_heartbeat_interval_seconds', 'gauge', 'The heartbeat interval in use (learned when adaptive).', u.heartbeat.intervalS, {
      adaptive: String(u.heartbeat.adaptive),
    });
    m.add('telematics_uplink_round_trip_seconds', 'gauge', 'Measured round trip to the broker.', seconds(u.heartbeat.rttMs));
    m.add('telematics_uplink_dead_links_total', 'counter', 'Dead links the liveness check detected.', u.heartbeat.deadLinks);
  }
  if (a.certificate) {
    const notAfter = a.certificate.notAfter === null ? null : Date.parse(a.certificate.notAfter) / 1000;
    m.add('telematics_certificate_expiry_timestamp_seconds', 'gauge', 'When the device certificate expires, Unix time.', notAfter);
  }
  const c = a.commands;
  if (c) {
    m.add('telematics_commands_received_total', 'counter', 'Command messages received.', c.received);
    const results: [string, number][] = [
      ['succeeded', c.succeeded],
      ['failed', c.failed],
      ['timed-out', c.timedOut],
      ['rejected', c.rejected],
    ];
    for (const [result, n] of results) m.add('telematics_commands_total', 'counter', 'Commands by result.', n, { result });
    for (const [reason, n] of Object.entries(c.rejectedByReason))
      m.add('telematics_commands_rejected_total', 'counter', 'Rejected commands by reason.', n, { reason });
    m.add('telematics_commands_running', 'gauge', 'Commands running now.', c.running);
    const unanswered: [string, number][] = [
      ['unanswerable', c.unanswerable],
      ['rate-limited', c.unsignedNotAnswered],
    ];
    for (const [why, n] of unanswered)
      m.add(
        'telematics_commands_unanswered_total',
        'counter',
        'Rejected payloads not answered: nowhere to answer, or unsigned beyond the answers allowed per minute.',
        n,
        { why },
      );
  }
  return m.text();
}

/** The host's values, from the report's sample; the report's own counter and time. */
function renderHost(m: Exposition, report: HealthReport): void {
  const s = report.system;
  const seconds = (ms: number | null): number | null => (ms === null ? null : ms / 1000);
  const ratio = (percent: number | null): number | null => (percent === null ? null : percent / 100);

  m.add('telematics_health_reports_total', 'counter', 'Health reports taken since the agent started.', report.seq);
  m.add('telematics_health_report_timestamp_seconds', 'gauge', 'When the latest health report was taken, Unix time.', report.tsMs / 1000);
  m.add('telematics_health_sample_duration_seconds', 'gauge', 'How long sampling the host took for the latest report.', seconds(s.sampleMs));
  m.add('telematics_health_probe_failures', 'gauge', 'Host probes that failed or timed out in the latest report.', s.failed.length);
  m.add(
    'telematics_system_sample_timestamp_seconds',
    'gauge',
    'When the telematics_system_ values were sampled (the latest health report), Unix time.',
    s.tsMs / 1000,
  );

  m.add('telematics_system_cpu_load_ratio', 'gauge', 'CPU busy time over the last report period, 0-1.', ratio(s.cpuLoadPercent));
  m.add('telematics_system_load_average_1m', 'gauge', '1-minute load average.', s.loadAverage1m);
  m.add('telematics_system_cpu_cores', 'gauge', 'CPU cores available.', s.cpuCores);
  m.add('telematics_system_memory_total_bytes', 'gauge', 'Physical memory.', s.memTotalBytes);
  m.add('telematics_system_memory_available_bytes', 'gauge', 'Memory available to programs without swapping.', s.memAvailableBytes);
  m.add('telematics_system_memory_used_bytes', 'gauge', 'Memory in use (total minus available).', s.memUsedBytes);
  m.add('telematics_system_swap_used_bytes', 'gauge', 'Swap in use.', s.swapUsedBytes);
  const temp = (sensor: string, value: number | null): void =>
    m.add('telematics_system_temperature_celsius', 'gauge', 'Temperature sensors the host has.', value, { sensor });
  temp('cpu', s.cpuTempC);
  temp('cpu_max', s.cpuTempMaxC);
  temp('chipset', s.chipsetTempC);
  s.coreTempsC.forEach((t, i) => temp(`core${i}`, t));
  if (s.disk) {
    const labels = { path: s.disk.path, mount: s.disk.mount ?? '' };
    m.add('telematics_system_disk_total_bytes', 'gauge', 'Size of the filesystem holding the outbox.', s.disk.totalBytes, labels);
    m.add('telematics_system_disk_free_bytes', 'gauge', 'Free space on the filesystem holding the outbox, available to the agent.', s.disk.freeBytes, labels);
  }
  for (const i of s.interfaces ?? []) {
    m.add('telematics_system_network_interface_up', 'gauge', 'Network interface up (1) or down (0).', i.up, { interface: i.name, operstate: i.operstate });
  }
  for (const i of s.interfaces ?? []) {
    m.add('telematics_system_network_interface_default', 'gauge', 'The interface of the default route (1).', i.default, { interface: i.name });
  }
  m.add('telematics_system_uptime_seconds', 'gauge', 'Host uptime.', s.uptimeS);
}
