/** A GNSS receiver on a real pseudo-terminal (socat), replaying a shared recording, for the serial receiver and CLI tests. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { NmeaPty } from '../../src/sim/nmea-pty.js';
import { sharedTestdata } from './shared.js';
import { makeTempDir } from './temp.js';

/** A recording's sentences (its comment lines left out), in order. */
export function recordingLines(recording: string): string[] {
  return readFileSync(sharedTestdata('gnss', recording), 'latin1')
    .split(/\r?\n/)
    .filter((line) => line.startsWith('$'));
}

/** A receiver line on a fresh pty (plugged), at `baudRate` when given. */
export async function nmeaOnPty(baudRate?: number): Promise<NmeaPty> {
  const pty = new NmeaPty({ link: path.join(makeTempDir('gnss-'), 'ttyGNSS'), ...(baudRate !== undefined ? { baudRate } : {}) });
  await pty.plug();
  return pty;
}

/**
 * Sends `lines` in bursts of `burst` lines, `gapMs` apart (a receiver sends a cycle at a time), until done or
 * `signal` aborts; again from the start when `loop`.
 */
export async function replayOnPty(
  pty: NmeaPty,
  lines: readonly string[],
  options: { burst?: number; gapMs?: number; loop?: boolean; signal?: AbortSignal } = {},
): Promise<void> {
  const burst = options.burst ?? 6;
  const gapMs = options.gapMs ?? 20;
  do {
    for (let k = 0; k < lines.length && options.signal?.aborted !== true; k += burst) {
      pty.send(lines.slice(k, k + burst));
      await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
  } while (options.loop === true && options.signal?.aborted !== true);
}
