/**
 * A simulated GNSS receiver in the simulated car: the drive cycle (src/sim/drive-cycle.ts, the same seed as the
 * simulated bus gives the same drive) moves the car along its route (src/sim/route.ts), and each epoch the receiver
 * writes what a real one would: RMC, GGA, GSA and GSV (GPS and GLONASS), with checksums, at 1 Hz or the rate asked.
 * The agent reads it through the same NMEA parser as a real receiver's (`sim-gnss` adapter), or through a
 * pseudo-terminal (`telematics-agent sim-gnss --link PATH`).
 *
 * Deterministic for a seed and a sequence of steps; `now` gives the receiver's UTC time.
 */
import { sentenceLine } from '../gnss/nmea.js';
import { DriveCycle } from './drive-cycle.js';
import { Route } from './route.js';

const KNOTS_PER_MS = 3600 / 1852;

/** `ddmm.mmmmm` / `dddmm.mmmmm` with the hemisphere letter. */
function nmeaAngle(value: number, degreeDigits: 2 | 3, positive: string, negative: string): [string, string] {
  const abs = Math.abs(value);
  const degrees = Math.floor(abs);
  const minutes = (abs - degrees) * 60;
  return [`${String(degrees).padStart(degreeDigits, '0')}${minutes.toFixed(5).padStart(8, '0')}`, value < 0 ? negative : positive];
}

function nmeaTime(ms: number): { time: string; date: string } {
  const d = new Date(ms);
  const two = (n: number): string => String(n).padStart(2, '0');
  return {
    time: `${two(d.getUTCHours())}${two(d.getUTCMinutes())}${two(d.getUTCSeconds())}.${String(Math.floor(d.getUTCMilliseconds() / 10)).padStart(2, '0')}`,
    date: `${two(d.getUTCDate())}${two(d.getUTCMonth() + 1)}${two(d.getUTCFullYear() % 100)}`,
  };
}

/** Satellites in view: PRN, elevation, azimuth, C/N0; GPS then GLONASS. The first nine are used. */
const SKY: readonly (readonly [number, number, number, number])[] = [
  [2, 61, 318, 44],
  [5, 77, 132, 46],
  [11, 29, 52, 38],
  [12, 46, 186, 47],
  [18, 19, 264, 35],
  [20, 48, 49, 43],
  [25, 58, 245, 45],
  [29, 45, 323, 42],
  [13, 9, 132, 22],
  [70, 38, 36, 40],
  [71, 53, 313, 41],
  [80, 22, 80, 33],
];
const USED = SKY.slice(0, 9).map((s) => s[0]);

export interface SimulatedReceiverOptions {
  readonly seed?: number;
  /** Altitude above mean sea level, m (Munich: about 520). */
  readonly altMSL?: number;
}

export class SimulatedReceiver {
  readonly drive: DriveCycle;
  readonly route = new Route();
  private readonly altMSL: number;

  constructor(options: SimulatedReceiverOptions = {}) {
    this.drive = new DriveCycle({ seed: options.seed ?? 1 });
    this.altMSL = options.altMSL ?? 519.8;
  }

  /** Drives `dtS` seconds (in steps of at most 10 ms, as the simulated bus does). */
  step(dtS: number): void {
    for (let left = dtS; left > 1e-9; left -= 0.01) {
      const dt = Math.min(0.01, left);
      this.drive.step(dt);
      this.route.advance((this.drive.state.speedKph / 3.6) * dt);
    }
  }

  /** The sentences of one epoch at UTC time `nowMs`. */
  epoch(nowMs: number): string[] {
    const { time, date } = nmeaTime(nowMs);
    const { lat, lon, headingDeg } = this.route.position();
    const [latText, ns] = nmeaAngle(lat, 2, 'N', 'S');
    const [lonText, ew] = nmeaAngle(lon, 3, 'E', 'W');
    const knots = ((this.drive.state.speedKph / 3.6) * KNOTS_PER_MS).toFixed(2);
    // Standing still, a receiver's course is noise: it repeats the last one, as most do.
    const course = headingDeg.toFixed(1);
    const gsv = (talker: string, sats: readonly (readonly [number, number, number, number])[]): string[] => {
      const parts = Math.ceil(sats.length / 4);
      return Array.from({ length: parts }, (_, k) => {
        const group = sats.slice(k * 4, k * 4 + 4).map(([prn, el, az, snr]) => `${String(prn).padStart(2, '0')},${el},${String(az).padStart(3, '0')},${snr}`);
        return sentenceLine(`${talker}GSV,${parts},${k + 1},${sats.length},${group.join(',')}`);
      });
    };
    return [
      sentenceLine(`GPRMC,${time},A,${latText},${ns},${lonText},${ew},${knots},${course},${date},3.1,E,A`),
      sentenceLine(`GPGGA,${time},${latText},${ns},${lonText},${ew},1,${String(USED.length).padStart(2, '0')},0.9,${this.altMSL.toFixed(1)},M,47.5,M,,`),
      sentenceLine(`GPGSA,A,3,${USED.map((p) => String(p).padStart(2, '0')).join(',')},,,,1.6,0.9,1.3`),
      ...gsv(
        'GP',
        SKY.filter((s) => s[0] < 65),
      ),
      ...gsv(
        'GL',
        SKY.filter((s) => s[0] >= 65),
      ),
    ];
  }
}
