/**
 * The simulated ELM327 on a serial line: socat makes a pseudo-terminal pair, the simulator opens one end with
 * `serialport` and the agent (or any other OBD program) opens the other, as it would a USB adapter's /dev/ttyUSB0.
 *
 * `unplug()` ends socat, so both terminals vanish, as a USB adapter pulled out of the car; `plug()` makes them again
 * under the same path. With `baudRate`, the simulator reads the host end's speed (stty, the kernel's termios) and
 * answers noise to a host talking at another rate, as a real UART would.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { SerialPort } from 'serialport';
import type { Elm327Simulator } from './elm327.js';

export class PtyError extends Error {
  override readonly name = 'PtyError';
}

/** Whether socat is installed (`scripts/install-test-deps.sh` installs it on Debian). */
export function socatAvailable(): boolean {
  return spawnSync('socat', ['-V'], { stdio: 'ignore' }).status === 0;
}

/** A socat pseudo-terminal pair: `hostPath` for the program under test, `devicePath` for the simulated device. */
export class SocatPtyPair {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  /**
   * With `hold`, the host end is made under a temporary name and appears at `hostPath` only on `release()`: a host
   * waiting for the path then never writes before the device end is open (what it wrote would be lost).
   */
  constructor(
    readonly hostPath: string,
    readonly devicePath: string,
    private readonly hold = false,
  ) {}

  private get madeHostPath(): string {
    return this.hold ? `${this.hostPath}.pending` : this.hostPath;
  }

  /** Puts a held host end at its path (atomically: a rename). */
  release(): void {
    if (this.hold) renameSync(this.madeHostPath, this.hostPath);
  }

  get running(): boolean {
    return this.child !== null;
  }

  async start(timeoutMs = 5000): Promise<void> {
    if (this.child) return;
    if (!socatAvailable()) throw new PtyError('socat is not installed: run scripts/install-test-deps.sh (Debian package socat)');
    // Links left by a socat that was killed hard would make the new one fail.
    for (const path of [this.hostPath, this.madeHostPath, this.devicePath]) rmSync(path, { force: true });
    // rawer: no echo, no line discipline on either side, so bytes pass exactly as a serial line carries them.
    const child = spawn('socat', [`PTY,link=${this.madeHostPath},rawer`, `PTY,link=${this.devicePath},rawer`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('exit', () => {
      if (this.child === child) this.child = null;
    });
    const start = Date.now();
    while (!(existsSync(this.madeHostPath) && existsSync(this.devicePath))) {
      if (this.child !== child) throw new PtyError(`socat exited before making the pty pair: ${stderr.trim()}`);
      if (Date.now() - start > timeoutMs) {
        await this.stop();
        throw new PtyError(`socat made no pty pair within ${timeoutMs} ms: ${stderr.trim()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /**
   * Starts the pair and opens its device end at `baudRate` (a pty has no speed of its own), handing what the host
   * writes to `onData`. Errors on the device end mean the pair is going away (an unplug) and are ignored. A held host
   * end is still the caller's to `release()`, once it is ready to serve.
   */
  async openDevice(onData: (chunk: Buffer) => void, baudRate = 9600): Promise<SerialPort> {
    await this.start();
    const port = new SerialPort({ path: this.devicePath, baudRate, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    port.on('error', () => undefined);
    port.on('data', onData);
    return port;
  }

  /** Ends socat: both terminals disappear (and socat removes the links). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGTERM');
    await this.exited;
    this.child = null;
    for (const path of [this.hostPath, this.madeHostPath, this.devicePath]) rmSync(path, { force: true });
  }
}

export interface Elm327PtyServerOptions {
  /** Path the host opens (a symlink to /dev/pts/N). */
  link: string;
  /** Only a host set to this rate is understood; others get line noise. Unset: any rate (a pty has none). */
  baudRate?: number;
}

/** Serves an Elm327Simulator on a pty pair. */
export class Elm327PtyServer {
  readonly path: string;
  private readonly pair: SocatPtyPair;
  private readonly sim: Elm327Simulator;
  private readonly baudRate: number | undefined;
  private port: SerialPort | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(sim: Elm327Simulator, options: Elm327PtyServerOptions) {
    this.sim = sim;
    this.path = options.link;
    this.baudRate = options.baudRate;
    this.pair = new SocatPtyPair(options.link, `${options.link}.device`, true);
  }

  get plugged(): boolean {
    return this.port !== null;
  }

  /** Makes the pty pair and opens the device end. */
  async plug(): Promise<void> {
    if (this.port) return;
    const port = await this.pair.openDevice((chunk) => this.fromHost(chunk), 38400);
    this.unsubscribe = this.sim.onOutput((bytes) => {
      if (this.port === port && port.isOpen) port.write(bytes);
    });
    this.port = port;
    this.pair.release();
  }

  /** As pulling the adapter out: the device end closes and both terminals vanish. */
  async unplug(): Promise<void> {
    const port = this.port;
    this.port = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
    await this.pair.stop();
  }

  async close(): Promise<void> {
    await this.unplug();
  }

  private fromHost(chunk: Buffer): void {
    if (this.baudRate !== undefined) {
      const speed = hostSpeed(this.path);
      if (speed !== this.baudRate) {
        // What a UART makes of bytes at the wrong rate: framing errors, a few bytes of nonsense (high bytes: never a prompt).
        const noise = Buffer.alloc(Math.max(1, chunk.length >> 1));
        for (let k = 0; k < noise.length; k++) noise[k] = 0x80 | ((chunk[k % chunk.length]! * 37 + k) & 0x7f);
        this.port?.write(noise);
        return;
      }
    }
    this.sim.write(chunk);
  }
}

/** The host end's speed as the kernel has it, or null. */
export function hostSpeed(path: string): number | null {
  const result = spawnSync('stty', ['-F', path, 'speed'], { encoding: 'utf8' });
  const value = Number.parseInt(result.stdout ?? '', 10);
  return Number.isFinite(value) ? value : null;
}
