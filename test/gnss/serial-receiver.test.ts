/**
 * A GNSS receiver on a real serial line (a socat pseudo-terminal replaying a shared recording): the `gnss` command's
 * fixes equal the recording's, the baud rate is found through noise at the wrong rates, a receiver unplugged and
 * plugged back is read again, and a port that is not there is a state with its reason, never a failure.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { before, describe, it } from 'node:test';
import { toTpv, type GnssFix } from '../../src/gnss/fix.js';
import { SerialGnssReceiver, type ReceiverState } from '../../src/gnss/serial-receiver.js';
import type { NmeaPty } from '../../src/sim/nmea-pty.js';
import { agentFixes } from '../support/gpsd-reports.js';
import { nmeaOnPty, recordingLines, replayOnPty } from '../support/gnss-pty.js';
import { AGENT_CLI } from '../support/programs.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA } from '../support/shared.js';
import { waitFor } from '../support/wait.js';

const RECORDING = 'garmin15x.log';

function receiverRig(
  path: string,
  options: { baudRate?: number; probeMs?: number } = {},
): {
  receiver: SerialGnssReceiver;
  fixes: GnssFix[];
  states: string[];
} {
  const fixes: GnssFix[] = [];
  const states: string[] = [];
  const receiver = new SerialGnssReceiver({
    path,
    ...options,
    dateFloor: null,
    onFix: (fix) => fixes.push(fix),
    onState: (state: ReceiverState, detail) =>
      states.push(`${state}${detail.reason ? `: ${detail.reason}` : ''}${detail.baudRate ? ` ${detail.baudRate}` : ''}`),
  });
  return { receiver, fixes, states };
}

describe('GNSS on a serial line', { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA }, () => {
  const expected = new Map<string, object>();
  before(() => {
    for (const { fix } of agentFixes(RECORDING)) expected.set(new Date(fix.time!).toISOString(), toTpv(fix));
  });

  it('`gnss --port --json` prints the fixes of the recording the receiver sends, one TPV per epoch', async () => {
    const pty = await nmeaOnPty();
    const replay = new AbortController();
    try {
      const child = spawn(process.execPath, [AGENT_CLI, 'gnss', '--port', pty.path, '--json', '--rollover-floor', 'off', '-n', '12'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await waitFor(() => stderr.includes('opening'), 'the command to open the port', 20_000);
      const sending = replayOnPty(pty, recordingLines(RECORDING), { loop: true, signal: replay.signal });
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([exited, new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), 60_000)))]);
      clearTimeout(timer);
      replay.abort();
      await sending;
      if (code === 'late') child.kill();
      assert.equal(code, 0, stderr);
      const lines = stdout.trim().split('\n');
      assert.equal(lines.length, 12);
      // The first epoch may have been joined halfway through; every later one is whole.
      for (const line of lines.slice(1)) {
        const tpv = JSON.parse(line) as { time: string };
        assert.deepEqual(tpv, expected.get(tpv.time), line);
      }
      assert.match(stderr, /receiving at 9600 baud/);
    } finally {
      replay.abort();
      await pty.close();
    }
  });

  it('finds the baud rate through the noise a UART gives at the wrong ones', async () => {
    const pty = await nmeaOnPty(38400);
    const stop = new AbortController();
    const { receiver, fixes, states } = receiverRig(pty.path, { probeMs: 600 });
    const running = receiver.run(stop.signal);
    const sending = replayOnPty(pty, recordingLines(RECORDING), { loop: true, signal: stop.signal });
    try {
      await waitFor(() => fixes.length >= 3, 'fixes at 38400 baud', 30_000);
      assert.equal(receiver.baudRate, 38400);
      assert.ok(states.includes('receiving 38400'), states.join(', '));
      const { problems } = receiver.counters.line;
      assert.ok(problems['too-long'] + problems['not-a-sentence'] > 0, 'the wrong rates gave noise');
      for (const fix of fixes.slice(1)) assert.deepEqual(toTpv(fix), expected.get(new Date(fix.time!).toISOString()));
    } finally {
      stop.abort();
      await Promise.all([running, sending]);
      await pty.close();
    }
  });

  it('waits for a receiver that is unplugged and reads it again when it is plugged back', async () => {
    const pty: NmeaPty = await nmeaOnPty();
    const stop = new AbortController();
    const { receiver, fixes, states } = receiverRig(pty.path, { probeMs: 1000 });
    const running = receiver.run(stop.signal);
    // One replay throughout: what it sends while the receiver is unplugged is lost, as a real receiver's is.
    const sending = replayOnPty(pty, recordingLines(RECORDING), { loop: true, signal: stop.signal });
    try {
      await waitFor(() => fixes.length >= 2, 'fixes before the unplug', 30_000);
      await pty.unplug();
      await waitFor(() => receiver.state === 'missing', 'the receiver missing after the unplug', 30_000);
      const before = fixes.length;
      await pty.plug();
      await waitFor(() => fixes.length >= before + 2 && receiver.state === 'receiving', 'fixes after the receiver is back', 60_000);
      assert.ok(receiver.counters.connects >= 2);
      assert.ok(
        states.some((s) => s.startsWith('missing: ') && s.includes(pty.path)),
        states.join(', '),
      );
    } finally {
      stop.abort();
      await Promise.all([running, sending]);
      await pty.close();
    }
  });

  it('says why when the port is not there, and keeps waiting', async () => {
    const stop = new AbortController();
    const { receiver, states } = receiverRig('/dev/ttyNO-SUCH-GNSS');
    const running = receiver.run(stop.signal);
    try {
      await waitFor(() => states.length >= 2, 'the missing state', 10_000);
      assert.deepEqual(states.slice(0, 2), ['opening', 'missing: /dev/ttyNO-SUCH-GNSS: no such serial port (is the receiver plugged in?)']);
      assert.equal(receiver.state, 'missing');
    } finally {
      stop.abort();
      await running;
    }
    assert.equal(receiver.state, 'idle');
  });
});
