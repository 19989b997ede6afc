/**
 * systemd's service notifications for the unit's Type=notify and WatchdogSec= (scripts/install-service): READY=1 once
 * the run is up, WATCHDOG=1 every WATCHDOG_USEC/2 while the event loop turns, STOPPING=1 at shutdown. A hung agent
 * stops pinging and systemd kills and restarts it.
 *
 * Node cannot send on a unix datagram socket, so each message is one `systemd-notify` run (a few per minute, never
 * per frame). The unit has NotifyAccess=all because that child, not the main process, is the sender; systemd-notify
 * waits until systemd has read the message (its barrier), so systemd still knows the sender's unit when it does.
 * Without NOTIFY_SOCKET (not started by systemd) nothing is sent and nothing is spawned.
 */
import { spawn } from 'node:child_process';

export interface NotifierOptions {
  /** Default process.env: NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID. */
  env?: NodeJS.ProcessEnv;
  /** One line per problem (not installed, refused), each said once. */
  warn?: (message: string) => void;
  /** Default 'systemd-notify' (from PATH). */
  command?: string;
  /** The process the watchdog is meant for; default this one. */
  pid?: number;
  /** Default node's spawn; tests pass one that fails. */
  spawn?: typeof spawn;
}

export interface SystemdNotifier {
  /** False when not started by systemd (no NOTIFY_SOCKET): every call is then a no-op. */
  readonly enabled: boolean;
  /** READY=1 (once), and the watchdog pings from now on. */
  ready(): void;
  /** STOPPING=1 (once), and no more pings. */
  stopping(): void;
}

/** The watchdog interval systemd asks for (sd_watchdog_enabled): half of WATCHDOG_USEC, if meant for `pid`. */
export function watchdogInterval(env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isSafeInteger(usec) || usec <= 0) return undefined;
  // WATCHDOG_PID names the process the watchdog is for; a child that inherited the variables must not ping.
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== '' && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

const DISABLED: SystemdNotifier = { enabled: false, ready: () => undefined, stopping: () => undefined };

export function createSystemdNotifier(options: NotifierOptions = {}): SystemdNotifier {
  const env = options.env ?? process.env;
  if (!env.NOTIFY_SOCKET) return DISABLED;
  const command = options.command ?? 'systemd-notify';
  const warn = options.warn ?? (() => undefined);
  const intervalMs = watchdogInterval(env, options.pid ?? process.pid);
  const said = new Set<string>();
  const warnOnce = (message: string): void => {
    if (said.has(message)) return;
    said.add(message);
    warn(message);
  };
  let inFlight = 0;
  let timer: NodeJS.Timeout | undefined;
  let readySent = false;
  let stoppingSent = false;

  const run = options.spawn ?? spawn;

  const send = (message: string): void => {
    inFlight++;
    let stderr = '';
    let child: ReturnType<typeof spawn>;
    try {
      child = run(command, [message], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      // Node throws some spawn failures (ENOMEM, E2BIG...) instead of emitting 'error': inside the ping timer that
      // would crash the agent, and a count never taken back would stop the pings for good. The next ping tries again.
      inFlight--;
      warnOnce(`systemd: ${command} cannot be run: ${(err as Error).message}`);
      return;
    }
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => (stderr += chunk));
    // A failed spawn reports 'error' and may then 'close' too: count it down once, say it once.
    let finished = false;
    const finish = (problem: string | undefined): void => {
      if (finished) return;
      finished = true;
      inFlight--;
      if (problem !== undefined) warnOnce(problem);
    };
    child.once('error', (err: NodeJS.ErrnoException) => {
      finish(
        err.code === 'ENOENT'
          ? `systemd: ${command} is not installed: systemd cannot be told the agent is ready or alive, and will stop it`
          : `systemd: ${command} cannot be run: ${err.message}`,
      );
    });
    child.once('close', (code) => {
      finish(
        code !== 0 && code !== null
          ? `systemd: ${command} ${message} failed (exit ${code}${stderr.trim() ? `: ${stderr.trim().split('\n')[0]}` : ''})`
          : undefined,
      );
    });
  };

  return {
    enabled: true,
    ready(): void {
      if (readySent || stoppingSent) return;
      readySent = true;
      send('READY=1');
      if (intervalMs === undefined) return;
      timer = setInterval(() => {
        // A ping still on its way (systemd busy) is enough: two at once would only queue up.
        if (inFlight === 0) send('WATCHDOG=1');
      }, intervalMs);
      // The pings keep a live agent alive; they must not keep a finished one from exiting.
      timer.unref();
    },
    stopping(): void {
      if (stoppingSent) return;
      stoppingSent = true;
      clearInterval(timer);
      send('STOPPING=1');
    },
  };
}
