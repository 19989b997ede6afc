/**
 * The development broker of the default run when mosquitto is installed: Debian's mosquitto as a child process,
 * running the fleet broker configuration the project ships (made runnable by src/uplink/fleet-broker-config.ts), so
 * that `npm start` speaks MQTT 5 under exactly the production rules: cars on one listener, the backend on another.
 *
 * Its files live in `stateDir` (the agent's var/ folder, beside the outbox; mode 0700), never in /var/lib/mosquitto:
 * the generated mosquitto.conf, the persistence (sessions, queued commands, retained status; kept across starts on
 * the same ports, dropped when the ports change, as with url port 0), its log (mosquitto.log; the previous start's is
 * kept as mosquitto.log.1) and mosquitto.pid.
 *
 * - Ports: 0 means any free one, found by binding it first (mosquitto cannot listen on port 0). A port given that
 *   is already in use fails the start with BrokerPortInUse, naming it.
 * - Ready when mosquitto logs that it is running (it logs on stderr, read here), never after a fixed wait. One that
 *   exits at start, or says nothing within `startTimeoutMs`, fails the start with its own last lines.
 * - Never left behind: started under util-linux's `setpriv --pdeathsig TERM`, it gets SIGTERM from the kernel when
 *   the agent dies, even by SIGKILL. It runs in its own process group, so Ctrl-C on a terminal reaches only the
 *   agent, which stops it after the car's offline status has gone out. Without setpriv, a mosquitto that a killed
 *   agent left running is found at the next start by its pid file and its command line (this very config file),
 *   and stopped.
 * - An unexpected exit is reported as an error with its last log lines, and mosquitto is started again after a
 *   backoff (1 s, doubling to 60 s; back to 1 s once it ran for a minute). The agent keeps running: its session
 *   reconnects by itself.
 * - close(): SIGTERM, then SIGKILL after `stopTimeoutMs`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import path from 'node:path';
import { runnableFleetBrokerConfig, type FleetBrokerFiles } from './fleet-broker-config.js';

/** One line about the broker, with its level. */
export type BrokerReport = (line: string, level: 'info' | 'warn' | 'error') => void;

/** A listener's port is taken by another process. */
export class BrokerPortInUse extends Error {
  override readonly name = 'BrokerPortInUse';
  constructor(
    readonly host: string,
    readonly port: number,
    readonly listener: 'cars' | 'backend',
  ) {
    super(`${host}:${port} is in use`);
  }
}

export interface MosquittoBrokerOptions {
  /** The mosquitto binary (src/uplink/fleet-broker-config.ts, findMosquitto). */
  executable: string;
  /** The address both listeners bind to. */
  host: string;
  /** The cars' listener; 0: any free port. */
  port: number;
  /** The backend's listener; 0: any free port. */
  backendPort: number;
  files: FleetBrokerFiles;
  /** Its configuration, persistence, log and pid file. */
  stateDir: string;
  report?: BrokerReport;
  /** Default 20 s: a loaded machine starts it slowly, and a key it cannot read fails it at once anyway. */
  startTimeoutMs?: number;
  /** After SIGTERM, how long before SIGKILL. Default 1 s (the agent's whole stop has 4.5 s). */
  stopTimeoutMs?: number;
  /** The backoff of restarts after an unexpected exit. */
  restart?: { initialMs: number; maxMs: number };
}

/** The last lines of mosquitto's log kept for an error report. */
const RECENT_LINES = 8;
/** A run this long resets the restart backoff. */
const STABLE_RUN_MS = 60_000;
/** Where util-linux puts setpriv. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'];

/** Whether `port` can be listened on at `host`: null, or the error that refuses it (EADDRINUSE...). */
export function probePort(host: string, port: number): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err));
    server.listen({ host, port }, () => server.close(() => resolve(null)));
  });
}

/** A port nothing listens on at `host` now (the kernel's choice). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The user mosquitto should keep when started as root (when not root it cannot change user, and ignores this). */
function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.getuid?.() === 0 ? 'root' : 'nobody'; // a uid without a passwd entry (a container)
  }
}

/** Whether `pid` is a live process (a zombie is not: its ports are closed). Linux's /proc. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > end) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

export class MosquittoBroker {
  readonly name = 'mosquitto';
  /** mosquitto speaks MQTT 5 (and 3.1.1). */
  readonly protocol = 5;
  /** As mosquitto says when it runs ("2.0.11"). */
  version = '';
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private restartDelayMs: number;
  private startedAt = 0;
  /** The last lines mosquitto wrote. */
  private readonly recent: string[] = [];
  private readonly report: BrokerReport;
  private readonly configFile: string;
  private readonly pidFile: string;
  private readonly logFile: string;

  private constructor(
    private readonly options: MosquittoBrokerOptions,
    readonly port: number,
    readonly backendPort: number,
  ) {
    this.report = options.report ?? (() => undefined);
    this.configFile = path.join(options.stateDir, 'mosquitto.conf');
    this.pidFile = path.join(options.stateDir, 'mosquitto.pid');
    this.logFile = path.join(options.stateDir, 'mosquitto.log');
    this.restartDelayMs = options.restart?.initialMs ?? 1000;
  }

  private get where(): string {
    return this.options.host === '127.0.0.1' ? 'localhost' : this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
  }

  /** Where cars connect. */
  get url(): string {
    return `mqtts://${this.where}:${this.port}`;
  }

  /** Where the backend connects. */
  get backendUrl(): string {
    return `mqtts://${this.where}:${this.backendPort}`;
  }

  /** The running mosquitto's process ID (null while it is down). */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /**
   * Writes the configuration into `stateDir`, starts mosquitto and resolves once it runs. Throws BrokerPortInUse for
   * a port given that is taken, or an Error with mosquitto's last lines.
   */
  static async start(options: MosquittoBrokerOptions): Promise<MosquittoBroker> {
    mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
    // It holds the cars' queued commands and sessions: its owner's alone, whatever the umask or an older folder.
    chmodSync(options.stateDir, 0o700);
    const configFile = path.join(options.stateDir, 'mosquitto.conf');
    await stopLeftover(path.join(options.stateDir, 'mosquitto.pid'), configFile, options.report ?? (() => undefined));
    const { host } = options;
    if (options.port !== 0 && options.port === options.backendPort) throw new Error(`the cars and the backend cannot share port ${options.port}`);
    for (const [port, listener] of [
      [options.port, 'cars'],
      [options.backendPort, 'backend'],
    ] as const) {
      if (port === 0) continue;
      const refused = await probePort(host, port);
      if (refused?.code === 'EADDRINUSE') throw new BrokerPortInUse(host, port, listener);
      if (refused) throw new Error(`cannot listen on ${host}:${port}: ${refused.message}`);
    }
    // Ports the kernel chose may be taken in the moment before mosquitto binds them: choose again, a few times.
    for (let attempt = 1; ; attempt++) {
      const port = options.port === 0 ? await freePort(host) : options.port;
      let backendPort = options.backendPort === 0 ? await freePort(host) : options.backendPort;
      while (options.backendPort === 0 && backendPort === port) backendPort = await freePort(host);
      const broker = new MosquittoBroker(options, port, backendPort);
      broker.writeConfig();
      try {
        await broker.launch();
        return broker;
      } catch (err) {
        const chosen = err instanceof BrokerPortInUse && (err.listener === 'cars' ? options.port : options.backendPort) === 0;
        if (!chosen || attempt >= 3) throw err;
      }
    }
  }

  private writeConfig(): void {
    const { host } = this.options;
    // mosquitto ties each saved session to its listener by port (per_listener_settings): sessions saved on other
    // ports (url port 0 chooses new ones each start) cannot be matched, and are not kept.
    const listeners = (text: string): string => [...text.matchAll(/^listener .*$/gm)].map((m) => m[0]).join('\n');
    const previous = existsSync(this.configFile) ? listeners(readFileSync(this.configFile, 'utf8')) : null;
    const text = runnableFleetBrokerConfig({
      files: this.options.files,
      deviceListener: `${this.port} ${host}`,
      backendListener: `${this.backendPort} ${host}`,
      user: currentUser(),
      persistenceDir: this.options.stateDir,
      // Its own file for the developer to read, and stderr for this process: readiness and the last lines of a crash.
      logDest: [`file ${this.logFile}`, 'stderr'],
    });
    if (previous !== null && previous !== listeners(text)) rmSync(path.join(this.options.stateDir, 'mosquitto.db'), { force: true });
    writeFileSync(this.configFile, `# Generated by telematics-agent from deploy/mosquitto/mosquitto.conf at each start: edit that, not this.\n${text}`, {
      mode: 0o600,
    });
  }

  /** Starts mosquitto on the written config; resolves once it runs, rejects (it is killed) if it does not. */
  private launch(): Promise<void> {
    if (existsSync(this.logFile)) renameSync(this.logFile, `${this.logFile}.1`);
    const setpriv = SETPRIV.find((file) => existsSync(file));
    const mosquitto = [this.options.executable, '-c', this.configFile];
    const child = spawn(setpriv ?? mosquitto[0]!, setpriv ? ['--pdeathsig', 'TERM', '--', ...mosquitto] : mosquitto.slice(1), {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    let ready = false;
    let listening = 0;
    let inUse = false;
    let partial = '';
    let settle: (error: Error | null) => void = () => undefined;
    const started = new Promise<void>((resolve, reject) => {
      settle = (error) => {
        settle = () => undefined;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve();
      };
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      settle(new Error(`mosquitto did not start within ${this.options.startTimeoutMs ?? 20_000} ms${this.lastLines()}`));
    }, this.options.startTimeoutMs ?? 20_000);
    const onOutput = (chunk: Buffer): void => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line === '') continue;
        this.recent.push(line);
        if (this.recent.length > RECENT_LINES) this.recent.shift();
        if (ready) continue;
        const opening = /listen socket on port (\d+)\.$/.exec(line);
        if (opening) listening = Number(opening[1]);
        if (/Error: Address already in use/.test(line)) inUse = true;
        const running = /mosquitto version (\S+) running$/.exec(line);
        if (running) {
          ready = true;
          this.version = running[1]!;
          this.startedAt = performance.now();
          settle(null);
        }
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    child.once('error', (err) => settle(new Error(`cannot run ${this.options.executable}: ${err.message}`)));
    if (child.pid !== undefined) writeFileSync(this.pidFile, `${child.pid}\n`, { mode: 0o600 });
    child.once('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      if (!ready) {
        if (inUse && (listening === this.port || listening === this.backendPort)) {
          settle(new BrokerPortInUse(this.options.host, listening, listening === this.port ? 'cars' : 'backend'));
        } else settle(new Error(`mosquitto exited at start (${how(code, signal)})${this.lastLines()}`));
        return;
      }
      if (!this.stopping) this.exitedUnexpectedly(child.pid, code, signal);
    });
    return started;
  }

  private lastLines(): string {
    return this.recent.length > 0 ? `; its last lines: ${this.recent.map((line) => JSON.stringify(line)).join(' / ')}` : '';
  }

  private exitedUnexpectedly(pid: number | undefined, code: number | null, signal: NodeJS.Signals | null): void {
    if (performance.now() - this.startedAt >= STABLE_RUN_MS) this.restartDelayMs = this.options.restart?.initialMs ?? 1000;
    this.report(
      `broker: mosquitto (pid ${pid}) exited unexpectedly (${how(code, signal)}); starting it again in ${(this.restartDelayMs / 1000).toFixed(1)} s${this.lastLines()}`,
      'error',
    );
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    const delayMs = this.restartDelayMs;
    this.restartDelayMs = Math.min(delayMs * 2, this.options.restart?.maxMs ?? 60_000);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping) return;
      this.recent.length = 0;
      this.launch().then(
        () => this.report(`broker: mosquitto ${this.version} running again (pid ${this.pid}) on ${this.url} and ${this.backendUrl}`, 'info'),
        (err: Error) => {
          if (this.stopping) return;
          const what = err instanceof BrokerPortInUse ? `${err.host}:${err.port} is in use by another process` : err.message;
          this.report(`broker: mosquitto did not start again: ${what}; trying again in ${(this.restartDelayMs / 1000).toFixed(1)} s`, 'error');
          this.scheduleRestart();
        },
      );
    }, delayMs);
  }

  /** Stops mosquitto (SIGTERM, then SIGKILL after the deadline) and any restart that was due. */
  async close(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (child) {
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), this.options.stopTimeoutMs ?? 1000);
      await this.exited;
      clearTimeout(kill);
    }
    rmSync(this.pidFile, { force: true });
  }
}

function how(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `signal ${signal}` : `exit code ${code}`;
}

/**
 * A mosquitto that an earlier agent left running on this config (killed where setpriv was not there to take it
 * along): found by the pid file and its command line, stopped, and said so. Anything else with that pid is left
 * alone.
 */
async function stopLeftover(pidFile: string, configFile: string, report: BrokerReport): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return;
  }
  let ours = false;
  try {
    ours = Number.isInteger(pid) && pid > 0 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(configFile);
  } catch {
    ours = false; // gone
  }
  if (ours && alive(pid)) {
    try {
      process.kill(pid, 'SIGTERM');
      if (!(await until(() => !alive(pid), 3000))) {
        process.kill(pid, 'SIGKILL');
        await until(() => !alive(pid), 2000);
      }
      report(`broker: stopped mosquitto (pid ${pid}), left running by an earlier run of this agent`, 'warn');
    } catch (err) {
      // Another user's process: the port check that follows says what is in the way.
      report(`broker: cannot stop mosquitto (pid ${pid}), left running by an earlier run: ${(err as Error).message}`, 'warn');
    }
  }
  rmSync(pidFile, { force: true });
}
