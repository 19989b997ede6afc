/**
 * gpsd as the reference for the GNSS tests: the `.log.chk` files of the shared recordings (gpsd's own report after
 * each sentence of a log, from its regression tests) read into epochs, and the comparison of a fix with gpsd's last
 * TPV of the same epoch, field by field, at the precision gpsd prints.
 *
 * An epoch of a `.chk` file is the run of its sentences with one time of day (the sentences with none belong to the
 * epoch they arrive in), the agent's rule (src/gnss/fix-assembler.ts); gpsd's verdict on an epoch is the last TPV it
 * printed in it, once it had read all of the epoch's sentences.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { FixAssembler } from '../../src/gnss/fix-assembler.js';
import type { GnssFix } from '../../src/gnss/fix.js';
import { parseSentence, timeFieldOf, timeOfDayField } from '../../src/gnss/nmea.js';
import { NmeaReader } from '../../src/gnss/nmea-reader.js';
import { sharedTestdata } from './shared.js';

/** A gpsd TPV report, as printed. */
export interface Tpv {
  readonly mode: number;
  readonly status?: number;
  readonly time?: string;
  readonly lat?: number;
  readonly lon?: number;
  readonly altHAE?: number;
  readonly altMSL?: number;
  readonly speed?: number;
  readonly track?: number;
}

export interface GpsdEpoch {
  /** The epoch's time of day in ms, undefined for sentences before the first that carries one. */
  readonly timeOfDay: number | undefined;
  /** gpsd's last TPV in the epoch. */
  readonly tpv: Tpv;
}

/** The shared GNSS recordings (`gnss/*.log` with their `.chk`), by file name. */
export function gnssRecordings(): string[] {
  return readdirSync(sharedTestdata('gnss'))
    .filter((name) => name.endsWith('.log'))
    .sort();
}

function timeOfDayOf(line: string): number | undefined {
  const sentence = parseSentence(line);
  return typeof sentence === 'string' ? undefined : timeOfDayField(timeFieldOf(sentence));
}

/** gpsd's epochs of a recording, with a TPV (epochs where gpsd printed none are not in the list). */
export function gpsdEpochs(recording: string): GpsdEpoch[] {
  const epochs: GpsdEpoch[] = [];
  let timeOfDay: number | undefined;
  let last: Tpv | undefined;
  const close = (): void => {
    if (last !== undefined) epochs.push({ timeOfDay, tpv: last });
    last = undefined;
  };
  for (const line of readFileSync(sharedTestdata('gnss', `${recording}.chk`), 'latin1').split(/\r?\n/)) {
    if (line.startsWith('{')) {
      const report = JSON.parse(line) as { class: string } & Tpv;
      if (report.class === 'TPV') last = report;
    } else if (line.startsWith('$')) {
      const tod = timeOfDayOf(line);
      if (tod !== undefined && tod !== timeOfDay) {
        if (timeOfDay !== undefined) close();
        timeOfDay = tod;
      }
    }
  }
  close();
  return epochs;
}

/** The agent's fixes of a recording, read from its file as a serial line would give it (no week-rollover floor: old recordings keep their dates). */
export function agentFixes(recording: string): { fix: GnssFix; timeOfDay: number | undefined }[] {
  const fixes: { fix: GnssFix; timeOfDay: number | undefined }[] = [];
  const assembler = new FixAssembler({ dateFloor: null, onFix: (fix, timeOfDay) => fixes.push({ fix, timeOfDay }) });
  const reader = new NmeaReader((sentence) => assembler.push(sentence));
  reader.write(readFileSync(sharedTestdata('gnss', recording)));
  reader.end();
  assembler.flush();
  return fixes;
}

/**
 * How the fix differs from gpsd's TPV, one phrase per field (empty: they agree). gpsd prints lat/lon to 1e-9 degree,
 * altitudes and track to 1e-4, speed to 1e-3: a field agrees when it is within half of that (and a float's rounding).
 * A field gpsd leaves out must be absent from the fix too for the position (lat, lon, altitudes, time): a position
 * gpsd did not give is a wrong one. gpsd leaves out `status` for 0 and 1.
 */
export function disagreements(fix: GnssFix, tpv: Tpv): string[] {
  const out: string[] = [];
  if (fix.mode !== tpv.mode) out.push(`mode ${fix.mode} vs ${tpv.mode}`);
  if (tpv.status !== undefined ? fix.status !== tpv.status : fix.status > 1) out.push(`status ${fix.status} vs ${tpv.status ?? '0/1'}`);
  const time = fix.time === undefined ? undefined : new Date(fix.time).toISOString();
  if (time !== tpv.time) out.push(`time ${time} vs ${tpv.time}`);
  const near = (name: keyof Tpv & keyof GnssFix, half: number, presence: boolean): void => {
    const mine = fix[name];
    const theirs = tpv[name] as number | undefined;
    if (mine === undefined || theirs === undefined) {
      if (mine !== theirs && (presence || mine === undefined)) out.push(`${name} ${mine} vs ${theirs}`);
      return;
    }
    if (Math.abs(mine - theirs) > half * (1 + 1e-6) + 1e-12) out.push(`${name} ${mine} vs ${theirs}`);
  };
  near('lat', 0.5e-9, true);
  near('lon', 0.5e-9, true);
  near('altMSL', 0.5e-4, true);
  near('altHAE', 0.5e-4, true);
  near('track', 0.5e-4, false);
  near('speed', 0.5e-3, false);
  return out;
}
