/**
 * Groups a receiver's NMEA sentences into epochs and makes one GnssFix per epoch.
 *
 * An epoch is the run of sentences that carry the same time of day (GGA, RMC, GNS, GLL, ZDA, GST), with the sentences
 * that carry none (GSA, GSV, VTG, Garmin's PGRME) counted into the epoch they arrive in. An epoch ends when a sentence
 * with another time of day arrives, or, once learned, at the sentence that ended the two epochs before it (the
 * receiver's last sentence of a cycle, as gpsd learns it): then its fix is out without waiting for the next epoch.
 * `flush()` ends the epoch in hand (the end of a log, or a quiet serial line).
 *
 * Trust. A position is reported only when every position sentence of the epoch calls it valid (RMC/GLL status A,
 * GGA quality above 0, a GNS mode other than N); a receiver that says "no fix" in any of them gives a fix of mode 1
 * with no position, speed or track. Fields come from the epoch's own sentences only. The date comes from a valid RMC
 * (status A) or from ZDA, and is carried to later epochs (GGA has none), across midnight; a fix has a time once the
 * date is known, with or without a position (the receiver's clock runs on without a fix), and none before.
 * A fix dated before `dateFloor` is a receiver with the GPS week-number rollover bug (its week counter wrapped, every
 * 1024 weeks, about 19.6 years): 1024 weeks are added until it is not. A sentence of an epoch already ended (the
 * learned last sentence was not the last after all) is counted as late and not merged into a fix already out; the
 * learning starts over.
 *
 * Nothing throws on input: a sentence with a field that does not read contributes nothing of that field.
 */
import type { FixMode, FixStatus, GnssFix } from './fix.js';
import { angleField, dayNumber, numberField, rmcDateField, timeFieldOf, timeOfDayField, type DayNumber, type NmeaSentence } from './nmea.js';

const DAY_MS = 86_400_000;
const KNOTS_TO_MS = 1852 / 3600;
const WEEK_ROLLOVER_MS = 1024 * 7 * DAY_MS;
/** Sentences in one epoch beyond which it is ended anyway: no real receiver sends this many per epoch. */
const MAX_SENTENCES_PER_EPOCH = 256;

/**
 * The default `dateFloor`: the start of the year this release was made in. A receiver date before it cannot be true
 * on a car running this release; 1024 weeks later it may be.
 */
export const RELEASE_DATE_FLOOR_MS = Date.UTC(2026, 0, 1);

/** GGA's fix quality as gpsd's status (0 is no fix). */
const GGA_STATUS: readonly FixStatus[] = [0, 1, 2, 2, 3, 4, 5, 7, 8];

/** The mode indicator of RMC, GLL, VTG (one letter) and GNS (one letter per constellation) as a status, or null for N (no fix). */
function indicatorStatus(letter: string): FixStatus | null | undefined {
  switch (letter) {
    case 'A':
      return 1;
    case 'D':
    case 'P':
      return 2;
    case 'R':
      return 3;
    case 'F':
      return 4;
    case 'E':
      return 5;
    case 'M':
      return 7;
    case 'S':
      return 8;
    case 'N':
      return null;
    default:
      return undefined;
  }
}

export interface FixAssemblerCounters {
  /** Sentences taken into an epoch. */
  sentences: number;
  /** Sentences of a kind the assembler does not read (proprietary ones it has no use for, GRS, TXT ...). */
  ignored: number;
  /** Sentences that arrived after their epoch's fix was out (see the file comment). */
  late: number;
  /** Fixes dated before the floor and moved forward by 1024 weeks. */
  rolloverCorrections: number;
  fixes: number;
}

export interface FixAssemblerOptions {
  /** Each epoch's fix, with the epoch's time of day as the receiver sent it (ms since midnight UTC), undefined when it sent none. */
  readonly onFix: (fix: GnssFix, timeOfDay: number | undefined) => void;
  /** See the file comment; null: never correct (replaying an old recording). Default RELEASE_DATE_FLOOR_MS. */
  readonly dateFloor?: number | null;
}

/** What one epoch's sentences said. */
class Epoch {
  tod: number | undefined = undefined;
  day: DayNumber | undefined = undefined;
  /** A sentence of the epoch that carries a time had it empty (an RMC or GGA of a receiver without time). */
  untimed = false;
  sentences = 0;
  /** Some position sentence said valid / said no fix. */
  valid = false;
  invalid = false;
  lat: number | undefined = undefined;
  lon: number | undefined = undefined;
  ggaStatus: FixStatus | undefined = undefined;
  indicator: FixStatus | undefined = undefined;
  gsaMode: FixMode | undefined = undefined;
  gsaUsed = 0;
  altMSL: number | undefined = undefined;
  geoidSep: number | undefined = undefined;
  speed: number | undefined = undefined;
  track: number | undefined = undefined;
  vtgSpeed: number | undefined = undefined;
  vtgTrack: number | undefined = undefined;
  magvar: number | undefined = undefined;
  hdop: number | undefined = undefined;
  vdop: number | undefined = undefined;
  pdop: number | undefined = undefined;
  uSat: number | undefined = undefined;
  /** Satellites in view per talker (GSV's third field, from its first part). */
  inView = new Map<string, number>();
  epx: number | undefined = undefined;
  epy: number | undefined = undefined;
  epv: number | undefined = undefined;
  eph: number | undefined = undefined;
  dgpsAge: number | undefined = undefined;
  dgpsSta: number | undefined = undefined;
  /** The key of the last sentence taken (the candidate end of a cycle). */
  lastKey = '';
}

export class FixAssembler {
  readonly counters: FixAssemblerCounters = { sentences: 0, ignored: 0, late: 0, rolloverCorrections: 0, fixes: 0 };
  private readonly onFix: (fix: GnssFix, timeOfDay: number | undefined) => void;
  private readonly dateFloor: number | null;
  private epoch = new Epoch();
  /** The last known date and the time of day it was known at (to carry it to GGA-only epochs, across midnight). */
  private knownDay: DayNumber | undefined = undefined;
  private knownTod = 0;
  /** The time of day of the epoch last ended early (by the learned last sentence), to recognise its late sentences. */
  private endedTod: number | undefined = undefined;
  /** The last sentence of the previous epoch, and whether it was the same two epochs running (then it ends epochs). */
  private enderCandidate = '';
  private ender = '';

  constructor(options: FixAssemblerOptions) {
    this.onFix = options.onFix;
    this.dateFloor = options.dateFloor === undefined ? RELEASE_DATE_FLOOR_MS : options.dateFloor;
  }

  /** Takes one checked sentence. */
  push(sentence: NmeaSentence): void {
    const { talker, type, fields } = sentence;
    const proprietary = talker === 'P';
    const key = proprietary ? type : `${talker}${type}`;
    const timeField = timeFieldOf(sentence);
    const tod = timeOfDayField(timeField);
    // A sentence that carries a time with its field empty: the receiver does not vouch for its clock this epoch.
    if (timeField === '') this.epoch.untimed = true;
    if (tod !== undefined) {
      if (tod === this.endedTod && this.epoch.tod === undefined) {
        // A sentence of the epoch already out: the learned end was wrong.
        this.counters.late++;
        this.ender = '';
        this.enderCandidate = '';
        return;
      }
      if (this.epoch.tod !== undefined && this.epoch.tod !== tod) this.end(true);
      this.epoch.tod = tod;
    }
    if (!this.read(talker, proprietary, type, fields)) {
      this.counters.ignored++;
      return;
    }
    this.counters.sentences++;
    const epoch = this.epoch;
    epoch.sentences++;
    // GSV: only the last part of a set can end a cycle.
    epoch.lastKey = type === 'GSV' && fields[0] !== fields[1] ? '' : key;
    if (key === this.ender && epoch.tod !== undefined) {
      this.endedTod = epoch.tod;
      this.end(false);
    } else if (epoch.sentences >= MAX_SENTENCES_PER_EPOCH) this.end(false);
  }

  /** Ends the epoch in hand (the end of a log, a quiet line): its fix is out now, if it has anything to say. */
  flush(): void {
    this.end(false);
  }

  /** Merges a sentence into the epoch; false for a sentence it does not read. */
  private read(talker: string, proprietary: boolean, type: string, f: readonly string[]): boolean {
    const e = this.epoch;
    if (proprietary) {
      if (type === 'GRME') {
        // Garmin's estimated horizontal and vertical position errors, metres.
        e.eph = numberField(f[0]) ?? e.eph;
        e.epv = numberField(f[2]) ?? e.epv;
        return true;
      }
      // Quectel's GSV for the constellations its standard GSV leaves out: the same fields, the system ID last.
      if (type === 'QGSV') return this.readGsv(`Q${f[f.length - 1] ?? ''}`, f);
      return false;
    }
    switch (type) {
      case 'GGA': {
        const quality = numberField(f[5]);
        if (quality === undefined || quality === 0) e.invalid = true;
        else if (quality > 0 && quality < GGA_STATUS.length && Number.isInteger(quality)) {
          e.valid = true;
          e.ggaStatus = GGA_STATUS[quality];
        }
        this.readPosition(f[1], f[2], f[3], f[4]);
        e.uSat = numberField(f[6]) ?? e.uSat;
        e.hdop = numberField(f[7]) ?? e.hdop;
        if (f[9] === 'M' || f[9] === '') e.altMSL = numberField(f[8]) ?? e.altMSL;
        if (f[11] === 'M' || f[11] === '') e.geoidSep = numberField(f[10]) ?? e.geoidSep;
        e.dgpsAge = numberField(f[12]) ?? e.dgpsAge;
        e.dgpsSta = numberField(f[13]) ?? e.dgpsSta;
        return true;
      }
      case 'GNS': {
        const letters = f[5] ?? '';
        let status: FixStatus | undefined;
        for (const letter of letters) {
          const s = indicatorStatus(letter);
          if (s !== null && s !== undefined && (status === undefined || s > status)) status = s;
        }
        if (status === undefined) e.invalid = true;
        else {
          e.valid = true;
          e.indicator ??= status;
        }
        this.readPosition(f[1], f[2], f[3], f[4]);
        e.uSat = numberField(f[6]) ?? e.uSat;
        e.hdop = numberField(f[7]) ?? e.hdop;
        e.altMSL = numberField(f[8]) ?? e.altMSL;
        e.geoidSep = numberField(f[9]) ?? e.geoidSep;
        e.dgpsAge = numberField(f[10]) ?? e.dgpsAge;
        e.dgpsSta = numberField(f[11]) ?? e.dgpsSta;
        return true;
      }
      case 'RMC': {
        const mode = f[11] !== undefined && f[11] !== '' ? indicatorStatus(f[11]) : undefined;
        if (f[1] !== 'A' || mode === null) e.invalid = true;
        else e.valid = true;
        if (mode !== null && mode !== undefined) e.indicator ??= mode;
        this.readPosition(f[2], f[3], f[4], f[5]);
        const knots = numberField(f[6]);
        if (knots !== undefined) e.speed = knots * KNOTS_TO_MS;
        e.track = numberField(f[7]) ?? e.track;
        // The date of an RMC that calls itself invalid is not trusted (a receiver without time says 1980).
        const day = rmcDateField(f[8]);
        if (day !== undefined && f[1] === 'A') e.day = day;
        const magvar = numberField(f[9]);
        if (magvar !== undefined && (f[10] === 'E' || f[10] === 'W')) e.magvar = f[10] === 'W' ? -magvar : magvar;
        return true;
      }
      case 'GLL': {
        const mode = f[6] !== undefined && f[6] !== '' ? indicatorStatus(f[6]) : undefined;
        if (f[5] !== 'A' || mode === null) e.invalid = true;
        else e.valid = true;
        if (mode !== null && mode !== undefined) e.indicator ??= mode;
        this.readPosition(f[0], f[1], f[2], f[3]);
        return true;
      }
      case 'VTG': {
        // VTG's course and speed, used when the epoch has no RMC (the receiver's choice of sentences).
        if (f[1] === 'T') e.vtgTrack = numberField(f[0]) ?? e.vtgTrack;
        const knots = f[5] === 'N' ? numberField(f[4]) : undefined;
        const kmh = f[7] === 'K' ? numberField(f[6]) : undefined;
        if (knots !== undefined) e.vtgSpeed = knots * KNOTS_TO_MS;
        else if (kmh !== undefined) e.vtgSpeed = kmh / 3.6;
        return true;
      }
      case 'GSA': {
        const fixType = numberField(f[1]);
        if (fixType === 1 || fixType === 2 || fixType === 3) e.gsaMode = Math.max(e.gsaMode ?? 0, fixType) as FixMode;
        for (let i = 2; i < 14; i++) if (f[i] !== undefined && f[i] !== '') e.gsaUsed++;
        e.pdop = numberField(f[14]) ?? e.pdop;
        e.hdop ??= numberField(f[15]);
        e.vdop = numberField(f[16]) ?? e.vdop;
        return true;
      }
      case 'GSV':
        // NMEA 4.1 adds a signal ID after the satellites: the same constellation's sets per signal repeat satellites.
        return this.readGsv(talker, f);
      case 'ZDA': {
        const day = dayNumber(Number(f[3]), Number(f[2]), Number(f[1]));
        if (day !== undefined && f[3]?.length === 4) e.day = day;
        return true;
      }
      case 'GST': {
        // Standard deviations of latitude, longitude and altitude error, metres: as 95 % figures (x 1.96), as gpsd's.
        const latSd = numberField(f[5]);
        const lonSd = numberField(f[6]);
        const altSd = numberField(f[7]);
        if (lonSd !== undefined) e.epx = lonSd * 1.96;
        if (latSd !== undefined) e.epy = latSd * 1.96;
        if (altSd !== undefined) e.epv = altSd * 1.96;
        if (latSd !== undefined && lonSd !== undefined) e.eph = Math.hypot(latSd, lonSd) * 1.96;
        return true;
      }
      default:
        return false;
    }
  }

  /**
   * A GSV part: the satellites in view of one constellation (`constellation`: the talker). NMEA 4.1 receivers send a
   * set per signal (L1, L5 ...) of the same satellites: the constellation counts with its largest set.
   */
  private readGsv(constellation: string, f: readonly string[]): boolean {
    const part = numberField(f[1]);
    const inView = numberField(f[2]);
    const map = this.epoch.inView;
    if (part === 1 && inView !== undefined && inView > (map.get(constellation) ?? -1)) map.set(constellation, inView);
    return true;
  }

  private readPosition(lat: string | undefined, ns: string | undefined, lon: string | undefined, ew: string | undefined): void {
    const e = this.epoch;
    const latitude = angleField(lat, ns, 90);
    const longitude = angleField(lon, ew, 180);
    if (latitude !== undefined && longitude !== undefined) {
      e.lat = latitude;
      e.lon = longitude;
    }
  }

  /** Ends the epoch: makes its fix (when it said anything about a fix) and starts the next. */
  private end(byTimeChange: boolean): void {
    const e = this.epoch;
    if (byTimeChange) {
      // The sentence before the change of time ended this cycle: the same one twice running is the receiver's habit.
      if (e.lastKey !== '' && e.lastKey === this.enderCandidate) this.ender = e.lastKey;
      this.enderCandidate = e.lastKey;
      this.endedTod = undefined;
    }
    this.epoch = new Epoch();
    if (e.tod === undefined && !e.valid && !e.invalid && e.gsaMode === undefined) return;
    const fix = this.fixOf(e);
    this.counters.fixes++;
    this.onFix(fix, e.tod);
  }

  private fixOf(e: Epoch): GnssFix {
    // The date: this epoch's own, or the last known one carried forward (a day later once the time of day wrapped).
    let day = e.day;
    if (day === undefined && this.knownDay !== undefined && e.tod !== undefined) day = this.knownDay + (e.tod < this.knownTod - DAY_MS / 2 ? 1 : 0);
    if (day !== undefined && e.tod !== undefined) {
      this.knownDay = day;
      this.knownTod = e.tod;
    }
    const positioned = e.valid && !e.invalid && e.lat !== undefined && e.lon !== undefined;
    const fix: GnssFix = { mode: 1, status: 0 };
    if (positioned) {
      // 3D when either claim says so, as gpsd decides: GSA's fix type, or an altitude given with the fix (GGA, GNS).
      const threeD = e.gsaMode === 3 || e.altMSL !== undefined;
      fix.mode = threeD ? 3 : 2;
      fix.status = e.ggaStatus ?? e.indicator ?? 1;
      fix.lat = e.lat;
      fix.lon = e.lon;
      if (threeD && e.altMSL !== undefined) {
        fix.altMSL = e.altMSL;
        if (e.geoidSep !== undefined) fix.altHAE = e.altMSL + e.geoidSep;
      }
      const speed = e.speed ?? e.vtgSpeed;
      const track = e.track ?? e.vtgTrack;
      if (speed !== undefined) fix.speed = speed;
      if (track !== undefined) fix.track = track;
      if (e.magvar !== undefined) fix.magvar = e.magvar;
      if (e.dgpsAge !== undefined) fix.dgpsAge = e.dgpsAge;
      if (e.dgpsSta !== undefined) fix.dgpsSta = e.dgpsSta;
      if (e.epx !== undefined) fix.epx = e.epx;
      if (e.epy !== undefined) fix.epy = e.epy;
      if (e.epv !== undefined) fix.epv = e.epv;
      if (e.eph !== undefined) fix.eph = e.eph;
    }
    // The time, whenever the date is known: a receiver that lost its fix still keeps time (as gpsd reports it).
    if (day !== undefined && e.tod !== undefined && !e.untimed) fix.time = this.corrected(day * DAY_MS + e.tod);
    if (e.geoidSep !== undefined && positioned) fix.geoidSep = e.geoidSep;
    if (e.hdop !== undefined) fix.hdop = e.hdop;
    if (e.vdop !== undefined) fix.vdop = e.vdop;
    if (e.pdop !== undefined) fix.pdop = e.pdop;
    const used = e.uSat ?? (e.gsaUsed > 0 ? e.gsaUsed : undefined);
    if (used !== undefined) fix.uSat = used;
    if (e.inView.size > 0) {
      let visible = 0;
      for (const n of e.inView.values()) visible += n;
      fix.nSat = visible;
    }
    return fix;
  }

  private corrected(time: number): number {
    if (this.dateFloor === null || time >= this.dateFloor) return time;
    this.counters.rolloverCorrections++;
    let t = time;
    while (t < this.dateFloor) t += WEEK_ROLLOVER_MS;
    return t;
  }
}
