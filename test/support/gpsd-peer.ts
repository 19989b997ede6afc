/**
 * gpsd as a live peer: a real gpsd (Debian's gpsd; scripts/install-test-deps.sh installs it, with gpsd-clients) reading
 * a pseudo-terminal the test feeds, on a free port. This is what gpsfake does (a pty into gpsd), with the feeding in
 * the test's hands: gpsfake starts sending at once and loops, so a client joins at a random point and sees the next
 * pass with the date the last one taught gpsd; here the client is watching before the first sentence.
 *
 * gpsd runs in the foreground (-N), opens the device at once (-n) and never writes to it (-b).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { freePort } from '../../src/uplink/mosquitto-broker.js';

const GPSD = '/usr/sbin/gpsd';

export function gpsdAvailable(): boolean {
  return existsSync(GPSD) && spawnSync(GPSD, ['-V'], { stdio: 'ignore' }).status === 0;
}

export const NO_GPSD = 'gpsd is not installed: run scripts/install-test-deps.sh (Debian packages gpsd, gpsd-clients)';

export interface GpsdPeer {
  readonly port: number;
  /** What gpsd said, for a failure's message. */
  output(): string;
  stop(): Promise<void>;
}

/** Starts gpsd on `device` (a pty's host end), listening on a free port of 127.0.0.1. */
export async function startGpsd(device: string): Promise<GpsdPeer> {
  const port = await freePort();
  const child: ChildProcess = spawn(GPSD, ['-N', '-n', '-b', '-S', String(port), device], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    port,
    output: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
