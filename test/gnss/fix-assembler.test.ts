/**
 * Epochs and fixes (src/gnss/fix-assembler.ts) on made sentences: a receiver that loses its fix and finds it again, a
 * 2D fix, midnight, a leap second, the GPS week-number rollover, a fix out at its cycle's last sentence, a sentence
 * that comes after its epoch's fix is out, and an epoch of nothing but noise.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FixAssembler, RELEASE_DATE_FLOOR_MS } from '../../src/gnss/fix-assembler.js';
import type { GnssFix } from '../../src/gnss/fix.js';
import { parseSentence, sentenceLine } from '../../src/gnss/nmea.js';

function feed(assembler: FixAssembler, ...bodies: string[]): void {
  for (const body of bodies) {
    const sentence = parseSentence(sentenceLine(body));
    assert.ok(typeof sentence !== 'string', body);
    assembler.push(sentence);
  }
}

function collect(options: { dateFloor?: number | null } = {}): { assembler: FixAssembler; fixes: GnssFix[] } {
  const fixes: GnssFix[] = [];
  return { assembler: new FixAssembler({ ...options, onFix: (fix) => fixes.push(fix) }), fixes };
}

const gga = (time: string, quality = 1, alt = '54.3'): string => `GPGGA,${time},4807.038,N,01131.000,E,${quality},08,0.9,${alt},M,46.9,M,,`;
const rmc = (time: string, date = '071226', status = 'A'): string => `GPRMC,${time},${status},4807.038,N,01131.000,E,022.4,084.4,${date},003.1,W,A`;

describe('GNSS fixes', () => {
  it('merges an epoch into one fix with gpsd field names and units', () => {
    const { assembler, fixes } = collect();
    feed(
      assembler,
      rmc('123519'),
      gga('123519'),
      'GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1',
      'GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45',
    );
    assembler.flush();
    assert.equal(fixes.length, 1);
    const fix = fixes[0]!;
    assert.equal(fix.time, Date.UTC(2026, 11, 7, 12, 35, 19));
    assert.equal(fix.mode, 3);
    assert.equal(fix.status, 1);
    assert.equal(fix.lat, 48 + 7.038 / 60);
    assert.equal(fix.lon, 11 + 31 / 60);
    assert.equal(fix.altMSL, 54.3);
    assert.equal(fix.altHAE, 54.3 + 46.9);
    assert.equal(fix.speed, 22.4 * (1852 / 3600));
    assert.equal(fix.track, 84.4);
    assert.equal(fix.magvar, -3.1);
    assert.deepEqual([fix.hdop, fix.pdop, fix.vdop, fix.uSat, fix.nSat], [0.9, 2.5, 2.1, 8, 8]);
  });

  it('gives no position, speed or track while the receiver has lost its fix (its clock runs on), and the position again when it finds it', () => {
    const { assembler, fixes } = collect();
    feed(assembler, rmc('120000'), gga('120000'), rmc('120001', '071226', 'V'), gga('120001', 0), rmc('120002'), gga('120002'));
    assembler.flush();
    assert.deepEqual(
      fixes.map((f) => [f.mode, f.lat !== undefined, f.speed !== undefined, f.track !== undefined, f.time]),
      [
        [3, true, true, true, Date.UTC(2026, 11, 7, 12)],
        [1, false, false, false, Date.UTC(2026, 11, 7, 12, 0, 1)],
        [3, true, true, true, Date.UTC(2026, 11, 7, 12, 0, 2)],
      ],
    );
  });

  it('gives no time before a valid date, nor in an epoch whose sentences leave their time empty', () => {
    const { assembler, fixes } = collect({ dateFloor: null });
    // An invalid RMC's date is the receiver's default (1980): not a date.
    feed(assembler, rmc('000001', '060180', 'V'), gga('000001', 0), rmc('120000'), 'GNGNS,120001.00,,,,,NNN,,,,,,', 'GPRMC,,V,,,,,,,,,,N');
    assembler.flush();
    assert.deepEqual(
      fixes.map((f) => [f.mode, f.time]),
      [
        [1, undefined],
        [2, Date.UTC(2026, 11, 7, 12)],
        [1, undefined],
      ],
    );
  });

  it('trusts no position when any sentence of the epoch says no fix', () => {
    const { assembler, fixes } = collect();
    feed(assembler, rmc('120000'), gga('120000', 0));
    assembler.flush();
    assert.equal(fixes[0]!.mode, 1);
    assert.equal(fixes[0]!.lat, undefined);
  });

  it('calls a fix without an altitude 2D and gives it none', () => {
    const { assembler, fixes } = collect();
    feed(assembler, rmc('120000'), 'GPGSA,A,2,04,05,09,,,,,,,,,,3.1,2.9,1.0');
    assembler.flush();
    assert.equal(fixes[0]!.mode, 2);
    assert.equal(fixes[0]!.altMSL, undefined);
    assert.equal(fixes[0]!.lat, 48 + 7.038 / 60);
  });

  it('carries the date to GGA-only epochs, across midnight', () => {
    const { assembler, fixes } = collect();
    feed(assembler, rmc('235959'), gga('235959'), gga('000000'), gga('000001'));
    assembler.flush();
    assert.deepEqual(
      fixes.map((f) => f.time),
      [Date.UTC(2026, 11, 7, 23, 59, 59), Date.UTC(2026, 11, 8, 0, 0, 0), Date.UTC(2026, 11, 8, 0, 0, 1)],
    );
  });

  it('gives a leap second its own epoch, stamped as POSIX time counts it (the next second)', () => {
    const { assembler, fixes } = collect({ dateFloor: null });
    feed(assembler, rmc('235959', '311216'), rmc('235960', '311216'), rmc('000000', '010117'));
    assembler.flush();
    assert.equal(fixes.length, 3);
    assert.deepEqual(
      fixes.map((f) => f.time),
      [Date.UTC(2016, 11, 31, 23, 59, 59), Date.UTC(2017, 0, 1), Date.UTC(2017, 0, 1)],
    );
  });

  it('moves a date from before the release floor forward by 1024 weeks (the week-number rollover), and leaves it when told to', () => {
    // A receiver with the rollover bug on 2026-12-07 says 2007-04-23.
    assert.ok(Date.UTC(2007, 3, 23) < RELEASE_DATE_FLOOR_MS);
    const buggy = collect();
    feed(buggy.assembler, rmc('120000', '230407'), gga('120000'));
    buggy.assembler.flush();
    assert.equal(buggy.fixes[0]!.time, Date.UTC(2026, 11, 7, 12));
    assert.equal(buggy.assembler.counters.rolloverCorrections, 1);
    const replay = collect({ dateFloor: null });
    feed(replay.assembler, rmc('120000', '230407'), gga('120000'));
    replay.assembler.flush();
    assert.equal(replay.fixes[0]!.time, Date.UTC(2007, 3, 23, 12));
  });

  it("hands a fix out at its cycle's last sentence once it has seen that sentence end two cycles", () => {
    const { assembler, fixes } = collect();
    const cycle = (time: string): string[] => [rmc(time), gga(time), 'GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1'];
    feed(assembler, ...cycle('120000'), ...cycle('120001'));
    assert.equal(fixes.length, 1, 'the first cycle ends when the second begins');
    feed(assembler, ...cycle('120002'));
    assert.equal(fixes.length, 3, 'GSA ended two cycles running: the fix of 12:00:02 is out at its own GSA');
    assert.equal(fixes[2]!.time, Date.UTC(2026, 11, 7, 12, 0, 2));
    feed(assembler, ...cycle('120003'));
    assert.equal(fixes.length, 4);
    // A receiver that sends one more sentence of 12:00:03 after all: counted, not merged, and the learning starts over.
    feed(assembler, gga('120003'), ...cycle('120004'), ...cycle('120005'));
    assert.equal(assembler.counters.late, 1);
    assembler.flush();
    assert.deepEqual(
      fixes.map((f) => new Date(f.time!).toISOString().slice(11, 19)),
      ['12:00:00', '12:00:01', '12:00:02', '12:00:03', '12:00:04', '12:00:05'],
    );
  });

  it('makes no fix of sentences that say nothing about one', () => {
    const { assembler, fixes } = collect();
    feed(assembler, 'GPGSV,1,1,01,01,40,083,46', 'GPTXT,01,01,02,ANTSTATUS=OK');
    assembler.flush();
    assert.deepEqual(fixes, []);
    assert.equal(assembler.counters.ignored, 1);
  });
});
