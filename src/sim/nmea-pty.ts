/**
 * A simulated GNSS receiver's serial line: NMEA sentences written to the device end of a socat pseudo-terminal pair
 * (src/sim/elm327-pty.ts), and the agent (or gpsd, or any NMEA program) opens the host end as it would a receiver's
 * /dev/ttyUSB1.
 *
 * `unplug()` ends socat, so both terminals vanish, as a receiver pulled out; `plug()` makes them again under the same
 * path. With `baudRate`, the line checks the host end's speed (stty, the kernel's termios) before each burst and sends
 * what a UART at the wrong rate would deliver (noise with no line structure) to a host set to another rate: that is
 * what the agent's baud-rate search must get through. Writes while unplugged are dropped, as a receiver's are.
 */
import type { SerialPort } from 'serialport';
import { hostSpeed, SocatPtyPair } from './elm327-pty.js';

/** Bytes that may wait for a host that does not read, about 4 s of a busy receiver at 115200 baud. */
const BACKLOG_BYTES = 64 * 1024;

export interface NmeaPtyOptions {
  /** Path the host opens (a symlink to /dev/pts/N). */
  readonly link: string;
  /** Only a host set to this rate reads sentences; others read noise. Unset: any rate (a pty has none). */
  readonly baudRate?: number;
}

export class NmeaPty {
  readonly path: string;
  private readonly pair: SocatPtyPair;
  private port: SerialPort | null = null;
  /** Lines dropped because nobody read the host end. */
  dropped = 0;

  constructor(private readonly options: NmeaPtyOptions) {
    this.path = options.link;
    this.pair = new SocatPtyPair(options.link, `${options.link}.device`, true);
  }

  get plugged(): boolean {
    return this.port !== null;
  }

  async plug(): Promise<void> {
    if (this.port) return;
    // What the host writes (a receiver's configuration commands) is ignored.
    this.port = await this.pair.openDevice(() => undefined);
    this.pair.release();
  }

  async unplug(): Promise<void> {
    const port = this.port;
    this.port = null;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
    await this.pair.stop();
  }

  async close(): Promise<void> {
    await this.unplug();
  }

  /**
   * Sends one burst of lines (each gets CR LF). A receiver does not wait for its host: while nobody reads the host end
   * and more than BACKLOG_BYTES wait, a burst is dropped (counted in `dropped`).
   */
  send(lines: readonly string[]): void {
    const port = this.port;
    if (port === null || !port.isOpen || lines.length === 0) return;
    if (port.writableLength > BACKLOG_BYTES) {
      this.dropped += lines.length;
      return;
    }
    let bytes = Buffer.from(lines.map((line) => `${line}\r\n`).join(''), 'latin1');
    if (this.options.baudRate !== undefined && hostSpeed(this.path) !== this.options.baudRate) {
      // What a UART makes of bytes at the wrong rate: framing errors, high bytes, no line ends.
      const noise = Buffer.alloc(Math.max(1, bytes.length >> 1));
      for (let k = 0; k < noise.length; k++) noise[k] = 0x80 | ((bytes[k % bytes.length]! * 37 + k) & 0x7f);
      bytes = noise;
    }
    port.write(bytes);
  }
}
