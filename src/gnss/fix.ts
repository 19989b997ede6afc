/**
 * One GNSS fix: what a receiver said about one epoch (one instant of its own clock), merged from all the sentences of
 * that epoch. Field names and units are gpsd's TPV ones (https://gpsd.io/gpsd_json.html), so that people who know
 * gpsd read it at once; `hdop`/`vdop`/`pdop`, `uSat` and `nSat` are gpsd's SKY names, carried in the fix because a
 * fleet wants them with the position.
 *
 * A field the receiver did not give in that epoch is absent, never carried over from an older epoch and never a
 * default. A fix without a position (`mode` below 2) has no `lat`/`lon`/`alt*`/`speed`/`track`: a receiver that lost
 * its fix never yields a stale or invented position.
 */

/** gpsd's `mode`: 0 not seen yet, 1 no fix, 2 a 2D fix (no trusted altitude), 3 a 3D fix. */
export type FixMode = 0 | 1 | 2 | 3;

/**
 * gpsd's `status`: 0 unknown, 1 GPS (autonomous), 2 DGPS (SBAS or a reference station), 3 RTK fixed, 4 RTK float,
 * 5 dead reckoning, 6 GNSS with dead reckoning, 7 time only (surveyed-in or manual), 8 simulated.
 */
export type FixStatus = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8;

export const FIX_STATUS_NAMES: Readonly<Record<FixStatus, string>> = {
  0: 'unknown',
  1: 'GPS',
  2: 'DGPS',
  3: 'RTK fixed',
  4: 'RTK float',
  5: 'dead reckoning',
  6: 'GNSS + dead reckoning',
  7: 'time only',
  8: 'simulated',
};

export interface GnssFix {
  /** The receiver's UTC time of the epoch, ms since 1970 (absent when the receiver has no fix, or no date yet). */
  time?: number;
  mode: FixMode;
  status: FixStatus;
  /** Degrees, WGS84, north and east positive. */
  lat?: number;
  lon?: number;
  /** Altitude above mean sea level (the receiver's geoid), metres. */
  altMSL?: number;
  /** Altitude above the WGS84 ellipsoid, metres: altMSL + geoidSep, when the receiver gives both. */
  altHAE?: number;
  /** Geoid separation (ellipsoid to mean sea level), metres, as the receiver states it. */
  geoidSep?: number;
  /** Speed over ground, m/s. */
  speed?: number;
  /** Course over ground, degrees from true north. */
  track?: number;
  /** Magnetic variation, degrees, east positive, as the receiver states it. */
  magvar?: number;
  /** Dilutions of precision. */
  hdop?: number;
  vdop?: number;
  pdop?: number;
  /** Satellites used in the fix, and in view (all constellations). */
  uSat?: number;
  nSat?: number;
  /** The receiver's own error estimates where it gives them, metres: longitude, latitude, vertical, horizontal (see docs/gnss.md). */
  epx?: number;
  epy?: number;
  epv?: number;
  eph?: number;
  /** Age of the differential corrections, s, and the reference station's ID. */
  dgpsAge?: number;
  dgpsSta?: number;
}

/** The numeric fields of a fix that the agent offers as signals, in the order it offers them (docs/gnss.md). */
export const FIX_SIGNAL_KEYS = [
  'lat',
  'lon',
  'altMSL',
  'altHAE',
  'speed',
  'track',
  'mode',
  'status',
  'hdop',
  'vdop',
  'pdop',
  'uSat',
  'nSat',
  'eph',
  'epv',
] as const satisfies readonly (keyof GnssFix)[];

export type FixSignalKey = (typeof FIX_SIGNAL_KEYS)[number];

/** Whether the fix has a position (a 2D or 3D fix). */
export function hasPosition(fix: GnssFix): fix is GnssFix & { lat: number; lon: number } {
  return fix.mode >= 2 && fix.lat !== undefined && fix.lon !== undefined;
}

/** Decimals gpsd prints each field with: the TPV lines carry no more than the receiver measured. */
const TPV_DECIMALS: Partial<Record<keyof GnssFix, number>> = {
  lat: 9,
  lon: 9,
  altMSL: 4,
  altHAE: 4,
  geoidSep: 3,
  speed: 3,
  track: 4,
  magvar: 1,
  hdop: 2,
  vdop: 2,
  pdop: 2,
  epx: 3,
  epy: 3,
  epv: 3,
  eph: 3,
};

/** The fix as a gpsd TPV object (`{"class":"TPV", ...}`), numbers to gpsd's decimals: the `--json` line of `telematics-agent gnss`. */
export function toTpv(fix: GnssFix): Record<string, unknown> {
  const tpv: Record<string, unknown> = { class: 'TPV' };
  if (fix.time !== undefined) tpv.time = new Date(fix.time).toISOString();
  for (const [key, value] of Object.entries(fix) as [keyof GnssFix, number][]) {
    if (key === 'time') continue;
    const decimals = TPV_DECIMALS[key];
    tpv[key] = decimals === undefined ? value : Number(value.toFixed(decimals));
  }
  return tpv;
}
