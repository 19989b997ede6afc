/**
 * The simulated car's route: a closed loop of waypoints (real streets: Munich's old-town ring, about 3.5 km), driven at
 * whatever speed the drive cycle gives. `advance(metres)` moves along it; the position is interpolated on the current
 * leg and the heading is the leg's bearing, so that position, speed and course agree as a receiver's would.
 *
 * Distances are great-circle (haversine, on the mean Earth radius); on legs of a few hundred metres, interpolating
 * latitude and longitude linearly is within centimetres of the great circle.
 */

/** Mean Earth radius, m (IUGG). */
export const EARTH_RADIUS_M = 6_371_008.8;

/** The demo loop: Karlsplatz, Lenbachplatz, Odeonsplatz, the Altstadtring to Isartor, Sendlinger Tor, back. */
export const DEMO_ROUTE: readonly (readonly [number, number])[] = [
  [48.13905, 11.5659],
  [48.1414, 11.5693],
  [48.1431, 11.5724],
  [48.1428, 11.5774],
  [48.1429, 11.5825],
  [48.1391, 11.584],
  [48.135, 11.5818],
  [48.1328, 11.575],
  [48.1339, 11.5672],
];

const RAD = Math.PI / 180;

/** Great-circle distance between two points, m. */
export function distanceM(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const dLat = (lat2 - lat1) * RAD;
  const dLon = (lon2 - lon1) * RAD;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * RAD) * Math.cos(lat2 * RAD) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** Initial bearing from the first point to the second, degrees from true north, 0 to 360. */
export function bearingDeg(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const y = Math.sin((lon2 - lon1) * RAD) * Math.cos(lat2 * RAD);
  const x = Math.cos(lat1 * RAD) * Math.sin(lat2 * RAD) - Math.sin(lat1 * RAD) * Math.cos(lat2 * RAD) * Math.cos((lon2 - lon1) * RAD);
  return (Math.atan2(y, x) / RAD + 360) % 360;
}

export class Route {
  private leg = 0;
  /** Metres driven on the current leg. */
  private along = 0;
  private readonly lengths: number[];

  constructor(private readonly points: readonly (readonly [number, number])[] = DEMO_ROUTE) {
    if (points.length < 2) throw new RangeError('a route needs two points at least');
    this.lengths = points.map((p, i) => {
      const q = points[(i + 1) % points.length]!;
      return distanceM(p[0], p[1], q[0], q[1]);
    });
  }

  /** The loop's length, m. */
  get lengthM(): number {
    return this.lengths.reduce((a, b) => a + b, 0);
  }

  advance(metres: number): void {
    this.along += Math.max(0, metres);
    while (this.along >= this.lengths[this.leg]!) {
      this.along -= this.lengths[this.leg]!;
      this.leg = (this.leg + 1) % this.points.length;
    }
  }

  /** Where the car is now, and the bearing of the leg it drives. */
  position(): { lat: number; lon: number; headingDeg: number } {
    const [lat1, lon1] = this.points[this.leg]!;
    const [lat2, lon2] = this.points[(this.leg + 1) % this.points.length]!;
    const f = this.along / this.lengths[this.leg]!;
    return { lat: lat1 + (lat2 - lat1) * f, lon: lon1 + (lon2 - lon1) * f, headingDeg: bearingDeg(lat1, lon1, lat2, lon2) };
  }
}
