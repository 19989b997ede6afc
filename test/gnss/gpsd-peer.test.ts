/**
 * gpsd as the live peer: each shared recording sent through a pseudo-terminal into a real gpsd
 * (test/support/gpsd-peer.ts), read by the agent's gpsd source (src/gnss/gpsd-client.ts), and compared epoch by epoch
 * with the agent's own gnss source reading the same recording from a pseudo-terminal (src/gnss/serial-receiver.ts).
 * Each recording's test says how many epochs agreed. An epoch without a time cannot be matched and is not compared.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { GnssFix } from '../../src/gnss/fix.js';
import { GpsdClient } from '../../src/gnss/gpsd-client.js';
import { SerialGnssReceiver } from '../../src/gnss/serial-receiver.js';
import { nmeaOnPty, recordingLines, replayOnPty } from '../support/gnss-pty.js';
import { NO_GPSD, gpsdAvailable, startGpsd } from '../support/gpsd-peer.js';
import { disagreements, gnssRecordings } from '../support/gpsd-reports.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA } from '../support/shared.js';
import { delay, waitFor } from '../support/wait.js';

/**
 * gpsd 3.22 takes dates before 2017 for the GPS week-number rollover and moves them forward 1024 weeks, as the agent
 * does before its own floor (2014 and 2008 recordings come out as 2034 and 2028; 2020 stays): the agent's source is
 * given gpsd's floor here, so that both mean the same day.
 */
const GPSD_DATE_FLOOR = Date.UTC(2017, 0, 1);

/**
 * Epochs the agent dates that gpsd 3.22 reports without a time or not at all: recording, the epoch, and why. The
 * agent's reading of both is checked against gpsd's own regression output in gpsd-agreement.test.ts.
 */
const UNREPORTED: readonly { recording: string; time: string; why: string }[] = [
  {
    recording: 'bu353-glonass.log',
    time: '2034-01-09T08:14:20.000Z',
    why: 'the first epoch after the receiver lost its fix: gpsd 3.22 prints no TPV for it (its regression output, from a later gpsd, has one: mode 1, as the agent says)',
  },
  {
    recording: 'mtk-3301.log',
    time: '2028-04-08T08:14:36.000Z',
    why: "gpsd's report of this epoch has no time: the one it sends after the epoch's GGA, none after its RMC (the known difference of gpsd-agreement.test.ts)",
  },
];

/** The agent's gnss source on a pty replaying the recording once: its fixes with a time, by time. */
async function fixesFromPty(recording: string): Promise<Map<number, GnssFix>> {
  const pty = await nmeaOnPty();
  const stop = new AbortController();
  const fixes = new Map<number, GnssFix>();
  const receiver = new SerialGnssReceiver({ path: pty.path, dateFloor: GPSD_DATE_FLOOR, onFix: (fix) => fix.time !== undefined && fixes.set(fix.time, fix) });
  const running = receiver.run(stop.signal);
  try {
    await waitFor(() => receiver.state === 'opening' || receiver.state === 'receiving', 'the receiver opening the pty', 10_000);
    // The receiver reads from its first byte once it has the port: wait for it before sending.
    await waitFor(() => receiver.counters.connects > 0 || receiver.counters.line.bytes === 0, 'the port open', 10_000);
    await new Promise((resolve) => setTimeout(resolve, 200));
    await replayOnPty(pty, recordingLines(recording), { burst: 4, gapMs: 10 });
    await waitFor(() => receiver.counters.epochs.late + receiver.counters.epochs.fixes > 0, 'fixes from the pty', 10_000);
    await new Promise((resolve) => setTimeout(resolve, 400));
  } finally {
    stop.abort();
    await running;
    await pty.close();
  }
  return fixes;
}

describe(
  'GNSS: the gpsd source reports what the gnss source reads, with gpsd as the live peer',
  { skip: !hasSharedTestdata() ? NO_SHARED_TESTDATA : !gpsdAvailable() ? NO_GPSD : false },
  () => {
    for (const recording of hasSharedTestdata() ? gnssRecordings() : []) {
      it(`${recording}: every epoch gpsd reports agrees with the agent's own reading`, async (t) => {
        const reference = await fixesFromPty(recording);
        const pty = await nmeaOnPty();
        const gpsd = await startGpsd(pty.path);
        const stop = new AbortController();
        const fromGpsd: GnssFix[] = [];
        const client = new GpsdClient({ host: '127.0.0.1', port: gpsd.port, onFix: (fix) => fromGpsd.push(fix) });
        const running = client.run(stop.signal);
        try {
          await waitFor(() => client.state === 'receiving' && client.counters.reports >= 3, `watching gpsd (it said: ${gpsd.output()})`, 30_000);
          await replayOnPty(pty, recordingLines(recording), { burst: 4, gapMs: 10 });
          // Until gpsd has been quiet for a second: it has reported the recording's last epoch.
          for (let seen = -1, k = 0; seen !== fromGpsd.length && k < 60; k++) {
            seen = fromGpsd.length;
            await delay(1000);
          }
        } finally {
          stop.abort();
          await running;
          await gpsd.stop();
          await pty.close();
        }
        let compared = 0;
        const problems: string[] = [];
        for (const fix of fromGpsd) {
          if (fix.time === undefined) continue;
          const mine = reference.get(fix.time);
          compared++;
          if (mine === undefined) {
            problems.push(`${new Date(fix.time).toISOString()}: gpsd reported an epoch the gnss source did not`);
            continue;
          }
          const differences = disagreements(mine, { ...fix, time: new Date(fix.time).toISOString() });
          if (differences.length > 0) problems.push(`${new Date(fix.time).toISOString()}: ${differences.join('; ')}`);
        }
        t.diagnostic(
          `${recording}: ${compared - problems.length} of ${compared} epochs gpsd reported with a time agreed with the agent's reading (${reference.size} epochs with a time in the recording)`,
        );
        const reported = new Set(fromGpsd.map((fix) => fix.time));
        const unreported = [...reference.keys()].filter((time) => !reported.has(time)).map((time) => new Date(time).toISOString());
        assert.deepEqual(problems.slice(0, 10), []);
        assert.deepEqual(
          unreported,
          UNREPORTED.filter((u) => u.recording === recording).map((u) => u.time),
        );
      });
    }
  },
);
