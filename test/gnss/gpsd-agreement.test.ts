/**
 * The agent's NMEA decoding against gpsd's, on every shared recording of a real receiver: each epoch's fix (time,
 * lat/lon to 1e-9 degree, altitudes, speed, track, mode, status) against gpsd's last TPV of that epoch, from the
 * `.chk` files gpsd's regression tests made (test/support/gpsd-reports.ts). Each recording's test says how many epochs
 * agreed.
 *
 * One epoch is a known difference, named below with why: there gpsd's last report of the epoch was printed before the
 * epoch's RMC, and it printed none after it, so gpsd's own file does not hold its verdict on the whole epoch.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentFixes, disagreements, gnssRecordings, gpsdEpochs } from '../support/gpsd-reports.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA } from '../support/shared.js';

/** Epochs where gpsd's file has no report after all of the epoch's sentences: recording, time of day, why. */
const KNOWN: readonly { recording: string; timeOfDay: string; why: string }[] = [
  {
    recording: 'mtk-3301.log',
    timeOfDay: '08:14:36.000',
    why:
      "gpsd printed its TPV after the epoch's GGA (mode 2: its mode before had been 1; no time: its date was still 1980) and none after the " +
      "epoch's RMC, the first with a real date; the agent reads the whole epoch (3D: GGA gives an altitude; the RMC's date)",
  },
];

function clock(ms: number | undefined): string {
  return ms === undefined ? '(none)' : new Date(ms).toISOString().slice(11, 23);
}

describe('GNSS: the agent decodes every shared recording as gpsd does', { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA }, () => {
  const recordings = hasSharedTestdata() ? gnssRecordings() : [];
  it('has the six recordings the README lists', () => {
    assert.deepEqual(recordings, ['bu353-glonass.log', 'garmin15x.log', 'mtk-3301.log', 'nmea-rtk.log', 'quectel-L70.log', 'quectel-eg25-g.log']);
  });

  for (const recording of recordings) {
    it(`${recording}: every epoch of gpsd's report agrees`, (t) => {
      const epochs = gpsdEpochs(recording);
      const fixes = new Map(agentFixes(recording).map(({ fix, timeOfDay }) => [timeOfDay, fix]));
      let agreed = 0;
      let known = 0;
      const problems: string[] = [];
      for (const { timeOfDay, tpv } of epochs) {
        const fix = fixes.get(timeOfDay);
        const differences = fix === undefined ? ['no fix for this epoch'] : disagreements(fix, tpv);
        if (differences.length === 0) agreed++;
        else if (KNOWN.some((k) => k.recording === recording && k.timeOfDay === clock(timeOfDay))) known++;
        else problems.push(`${clock(timeOfDay)}: ${differences.join('; ')}`);
      }
      t.diagnostic(`${recording}: ${agreed} of ${epochs.length} epochs agreed with gpsd${known > 0 ? `, ${known} known difference` : ''}`);
      assert.deepEqual(problems, []);
      assert.equal(agreed + known, epochs.length);
      assert.ok(epochs.length >= 7, `only ${epochs.length} epochs read from the .chk file`);
      // A known difference is still there: when it goes away, the list above should shrink.
      assert.equal(known, KNOWN.filter((k) => k.recording === recording).length);
    });
  }

  it('agrees on 234 of the 235 epochs in all, the one left being the known difference', () => {
    let total = 0;
    let agreed = 0;
    for (const recording of recordings) {
      const fixes = new Map(agentFixes(recording).map(({ fix, timeOfDay }) => [timeOfDay, fix]));
      for (const { timeOfDay, tpv } of gpsdEpochs(recording)) {
        total++;
        const fix = fixes.get(timeOfDay);
        if (fix !== undefined && disagreements(fix, tpv).length === 0) agreed++;
      }
    }
    assert.equal(total, 235);
    assert.equal(agreed, 235 - KNOWN.length);
  });
});
