/**
 * `telematics-ops watch`: what the cars publish, decoded, one line per message, like `mosquitto_sub -v` but readable
 * (binary telemetry as signal=value pairs). Subscribes as the backend to `vehicles/<ID or +>/#`, or, with `--share
 * GROUP`, to `$share/GROUP/vehicles/<ID or +>/#` (an MQTT 5 shared subscription: the consumers of one group split the
 * traffic, each message goes to one of them). Every message goes through the reference decoder
 * (src/contract/decoder.ts), so what it prints has passed the contract's schemas.
 *
 * Failure: a message that does not decode or is off the contract is printed as `NOT IN CONTRACT: <why>` and the watch
 * goes on; car-sent text is escaped for the terminal (forTerminal / jsonForTerminal). `--share` on a connection that
 * fell back to MQTT 3.1.1, a refused subscription, a lost connection: a one-line error, exit 1. SIGINT/SIGTERM,
 * `--count` reached, `--timeout` passed: exit 0 (4 when `--timeout` passed before `--count` messages came).
 *
 * A stop by signal loses nothing the broker gave this watcher: it unsubscribes first (the broker sends the group's
 * next messages to the other consumers), prints what the broker had already queued for it until none came for
 * DRAIN_QUIET_MS (at most DRAIN_MAX_MS), then disconnects cleanly after its last acknowledgement. A second signal
 * stops it at once.
 */
import type { MqttClient } from 'mqtt';
import { InvalidArgumentError } from 'commander';
import { ContractError, decodeAgentMessage, type AgentMessage } from '../contract/decoder.js';
import { connectBackend } from '../commands/operator-client.js';
import { deviceIdProblem } from '../pki/device-id.js';
import { forTerminal, jsonForTerminal } from '../text/terminal-text.js';

export interface WatchOptions {
  device?: string;
  json?: boolean;
  share?: string;
  count?: number;
  timeout?: number;
}

/** At a stop, the broker is taken to have sent all it had queued for this watcher once none came for this long. */
export const DRAIN_QUIET_MS = 500;
/** And the stop does not wait longer than this for a quiet moment. */
export const DRAIN_MAX_MS = 10_000;

/** Signals shown per telemetry line (each once, with its latest value); the rest are counted. */
const SIGNALS_SHOWN = 8;

const value = (v: number | string | null): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));

function range(first: number, last: number): string {
  return first === last ? String(first) : `${first}-${last}`;
}

/** The one-line summary of a decoded message (before escaping). */
export function summarize(decoded: AgentMessage): string {
  switch (decoded.kind) {
    case 'telemetry':
    case 'events': {
      const m = decoded.message;
      // A periodic rule's batch holds many samples of few signals: one pair per signal (its latest value, and how many
      // samples it has here) says more in a line than the first few samples would.
      const bySignal = new Map<string, { value: number | string | null; ts: number; count: number }>();
      for (const s of m.samples) {
        const seen = bySignal.get(s.signal);
        if (!seen) bySignal.set(s.signal, { value: s.value, ts: s.ts, count: 1 });
        else {
          seen.count++;
          if (s.ts >= seen.ts) Object.assign(seen, { value: s.value, ts: s.ts });
        }
      }
      const pairs = [...bySignal]
        .slice(0, SIGNALS_SHOWN)
        .map(([signal, seen]) => `${signal}=${value(seen.value)}${seen.count > 1 ? ` (last of ${seen.count})` : ''}`);
      const more = bySignal.size > SIGNALS_SHOWN ? ` … (${bySignal.size - SIGNALS_SHOWN} more signals)` : '';
      const trigger = m.trigger ? ` trigger=${m.trigger.rule}` : '';
      return `seq=${m.seq} ${m.kind} p${m.priority}${trigger} ${m.samples.length} samples${pairs.length ? `: ${pairs.join(' ')}${more}` : ''}`;
    }
    case 'loss': {
      const m = decoded.message;
      return `seq=${m.seq} lost ${m.lost.map((r) => `${range(r.first, r.last)} (${r.count} ${r.reason}${r.exact ? '' : ', at most'})`).join(', ')}`;
    }
    case 'status': {
      const m = decoded.message;
      return m.online ? `online birthSeq=${m.birthSeq}` : `offline (${m.reason}) birthSeq=${m.birthSeq}`;
    }
    case 'health': {
      const m = decoded.message;
      const { outbox, uplink } = m.agent;
      const parts = [`seq=${m.seq}`, `up ${Math.round(m.agent.processUptimeS)} s`, `${m.agent.framesPerS} frames/s`];
      if (outbox) parts.push(`outbox ${outbox.messages} messages nextSeq=${outbox.nextSeq}`);
      if (uplink) parts.push(`uplink ${uplink.state} acknowledged=${uplink.acknowledged}`);
      return parts.join(', ');
    }
    case 'logs': {
      const m = decoded.message;
      return `${m.level} ${m.component}: ${m.msg}${m.count > 1 ? ` (x${m.count})` : ''}`;
    }
    case 'result': {
      const m = decoded.message;
      const reason = 'reason' in m ? ` ${m.reason}` : '';
      const message = 'message' in m ? `: ${m.message}` : '';
      return `${m.id ?? '(no id)'} ${m.status}${reason}${m.command ? ` ${m.command}` : ''}${message}`;
    }
    case 'csr':
      return `certificate request ${decoded.message.requestId}`;
    case 'certificate':
      return `certificate for request ${decoded.message.requestId}`;
    case 'command':
      return `command ${decoded.command}${decoded.message.signature ? ' (signed)' : ' (unsigned)'}`;
  }
}

/** The line printed for one message: `<time> <topic> <summary>`, or the JSON object with --json; always escaped. */
export function watchLine(topic: string, payload: Uint8Array, json: boolean, now = new Date()): string {
  let decoded: AgentMessage;
  try {
    decoded = decodeAgentMessage(topic, payload);
  } catch (err) {
    const problem = err instanceof ContractError ? err.problem : (err as Error).message;
    return json ? jsonForTerminal(JSON.stringify({ topic, error: problem })) : forTerminal(`${now.toISOString()} ${topic} NOT IN CONTRACT: ${problem}`);
  }
  if (json) return jsonForTerminal(JSON.stringify({ topic, kind: decoded.kind, message: decoded.message }));
  return forTerminal(`${now.toISOString()} ${topic} ${summarize(decoded)}`);
}

/** `--share`'s group: one topic level, no wildcard. */
export function shareGroup(text: string): string {
  if (!/^[^/+#\s]{1,64}$/.test(text)) throw new InvalidArgumentError('expected a group name: 1-64 characters, no /, +, # or space');
  return text;
}

export function watchFilter(opts: WatchOptions): string {
  const filter = `vehicles/${opts.device ?? '+'}/#`;
  return opts.share === undefined ? filter : `$share/${opts.share}/${filter}`;
}

export interface WatchConnection {
  url: string;
  certFile: string;
  keyFile: string;
  caFile: string;
}

/** Runs the watch until a signal, --count or --timeout; resolves with the exit code. */
export async function watch(
  opts: WatchOptions,
  connection: WatchConnection,
  out: (line: string) => void,
  note: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<number> {
  if (opts.device !== undefined) {
    const problem = deviceIdProblem(opts.device);
    if (problem !== null) throw new InvalidArgumentError(`--device ${JSON.stringify(opts.device)} cannot be a device ID: ${problem}`);
  }
  const client: MqttClient = await connectBackend(connection).catch((err: unknown) => {
    throw new Error(`cannot connect to ${connection.url}: ${(err as Error).message}`);
  });
  try {
    if (opts.share !== undefined && client.options.protocolVersion !== 5) {
      throw new Error(`--share needs MQTT 5 (shared subscriptions); the broker at ${connection.url} speaks MQTT 3.1.1 only`);
    }
    const filter = watchFilter(opts);
    let drained = false;
    const code = await new Promise<number>((resolve, reject) => {
      let seen = 0;
      let lastMessageAt = 0;
      let stopping = false;
      let timer: NodeJS.Timeout | undefined;
      const onSignal = (): void => {
        if (stopping) return finish(0);
        stopping = true;
        clearTimeout(timer);
        void drain().then(() => {
          drained = true;
          finish(0);
        });
      };
      // Unsubscribe, then take what the broker had queued for this watcher until a quiet moment (see the header).
      const drain = async (): Promise<void> => {
        try {
          await client.unsubscribeAsync(filter);
        } catch {
          return;
        }
        const unsubscribedAt = Date.now();
        while (Date.now() - unsubscribedAt < DRAIN_MAX_MS) {
          const wait = DRAIN_QUIET_MS - (Date.now() - Math.max(lastMessageAt, unsubscribedAt));
          if (wait <= 0) break;
          await new Promise((r) => setTimeout(r, wait));
        }
      };
      const finish = (code: number, error?: Error): void => {
        clearTimeout(timer);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        client.removeAllListeners('message');
        if (error) reject(error);
        else resolve(code);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      if (opts.timeout !== undefined) timer = setTimeout(() => finish(opts.count !== undefined && seen < opts.count ? 4 : 0), opts.timeout * 1000);
      client.once('close', () => finish(1, new Error(`the connection to ${connection.url} closed`)));
      client.on('message', (topic, payload) => {
        out(watchLine(topic, payload, opts.json === true));
        seen += 1;
        lastMessageAt = Date.now();
        if (opts.count !== undefined && seen >= opts.count) finish(0);
      });
      client.subscribeAsync(filter, { qos: 1 }).then(
        (granted) => {
          const refused = granted.find((g) => g.qos >= 0x80);
          if (refused) finish(1, new Error(`the broker does not let this identity read ${filter} (reason 0x${refused.qos.toString(16)})`));
          // On stderr: stdout holds only messages, for a pipe.
          else note(`watching ${filter} on ${connection.url} (MQTT ${client.options.protocolVersion === 5 ? '5' : '3.1.1'})`);
        },
        (err: unknown) => finish(1, new Error(`cannot subscribe to ${filter}: ${(err as Error).message}`)),
      );
    });
    // After a drain, a clean DISCONNECT once the acknowledgements of what was printed are out.
    if (drained) await client.endAsync(false).catch(() => undefined);
    return code;
  } finally {
    await client.endAsync(true).catch(() => undefined);
  }
}
