/**
 * A deterministic drive-cycle model of a petrol passenger car with a 6-speed automatic, stepped in simulated time.
 *
 * The scenario repeats: parked with the ignition off → ACC → ON → START → idle warm-up → a series of urban legs
 * (pull away, cruise, brake to a stop, wait) with the odd extra-urban leg → park and switch off → parked for a while.
 * Everything physical follows from a few equations (road load, gear ratios, a thermostat), so the values are plausible
 * together: rpm matches speed and gear, fuel burnt matches the power delivered, the odometer and the GNSS position
 * integrate the same speed.
 *
 * All randomness comes from one seeded generator (src/sim/prng.ts), so a seed reproduces a run exactly.
 */
import { createPrng } from './prng.js';

/** Ignition switch position, as the demo DBC's value table names it. */
export type IgnitionState = 'OFF' | 'ACC' | 'ON' | 'START';
/** Selector lever position. */
export type GearLever = 'P' | 'R' | 'N' | 'D';
export type GnssFix = 'NoFix' | 'Fix2D' | 'Fix3D';

export type DrivePhase = 'parked' | 'accessory' | 'ignition-on' | 'cranking' | 'warm-up' | 'pull-away' | 'cruise' | 'braking' | 'stopped' | 'shut-down';

/** The vehicle as its ECUs see it, in physical units. */
export interface VehicleState {
  /** Simulated seconds since the model started. */
  timeS: number;
  phase: DrivePhase;

  ignition: IgnitionState;
  engineRunning: boolean;
  engineRpm: number;
  throttlePct: number;
  engineLoadPct: number;
  /** Net brake torque; negative while the engine drags in overrun. */
  engineTorqueNm: number;
  fuelCut: boolean;

  speedKph: number;
  accelMps2: number;
  /** ISO 8855 sign: positive when turning left. */
  yawRateDps: number;
  wheelSpeedFlKph: number;
  wheelSpeedFrKph: number;
  wheelSpeedRlKph: number;
  wheelSpeedRrKph: number;

  gearLever: GearLever;
  /** Forward gear engaged, 1-6; 0 when the lever is in P, R or N. */
  gear: number;
  torqueConverterLocked: boolean;
  shiftInProgress: boolean;
  /** Transmission output shaft speed (before the final drive). */
  transOutputRpm: number;

  brakePressureBar: number;
  brakePedalPressed: boolean;
  parkingBrake: boolean;

  coolantTempC: number;
  oilTempC: number;
  transOilTempC: number;
  intakeAirTempC: number;
  ambientTempC: number;
  ecuTempC: number;

  fuelLiters: number;
  fuelLevelPct: number;
  fuelRateLph: number;
  /** Average since the trip meter was reset; 0 until the trip has some distance. */
  fuelConsumptionAvgL100km: number;
  lowFuelWarning: boolean;

  odometerKm: number;
  tripKm: number;
  tripFuelLiters: number;

  doorFlOpen: boolean;
  doorFrOpen: boolean;
  doorRlOpen: boolean;
  doorRrOpen: boolean;
  trunkOpen: boolean;
  driverSeatbelt: boolean;

  latitudeDeg: number;
  longitudeDeg: number;
  /** Course over ground, degrees clockwise from north, 0 <= heading < 360. */
  headingDeg: number;
  altitudeM: number;
  gnssSatellites: number;
  gnssFix: GnssFix;
  gnssHdop: number;

  batteryVoltageV: number;
  /** Positive when charging the battery. */
  alternatorCurrentA: number;
  engineHours: number;
  ignitionCycles: number;
}

/** Powertrain and body figures of the demo car (a compact petrol hatchback). */
export const DEMO_CAR = {
  massKg: 1450,
  wheelRadiusM: 0.316,
  trackWidthM: 1.55,
  gearRatios: [4.17, 2.34, 1.52, 1.14, 0.87, 0.69],
  finalDrive: 3.46,
  drivelineEfficiency: 0.92,
  maxTorqueNm: 240,
  idleRpm: 750,
  redlineRpm: 6500,
  rollingResistance: 0.011,
  /** Drag coefficient times frontal area. */
  dragAreaM2: 0.65,
  tankLiters: 50,
  thermostatC: 89,
} as const;

const AIR_DENSITY = 1.2;
const GRAVITY = 9.81;
const EARTH_RADIUS_M = 6_371_000;
const DEG = Math.PI / 180;
/** Below this geared rpm the transmission changes down. */
const DOWNSHIFT_RPM = 1150;
/** Litres of petrol per kWh of indicated work (about 270 g/kWh). */
const FUEL_L_PER_KWH = 0.36;

export interface DriveCycleOptions {
  seed?: number;
  /** Outside temperature; also the start temperature of a cold engine. Default: 5-25 °C from the seed. */
  ambientTempC?: number;
  /** Default: 20 000-90 000 km from the seed. */
  odometerKm?: number;
  /** Default: 35-90 % from the seed. */
  fuelLevelPct?: number;
  /** Start position. Default: Munich city centre. */
  latitudeDeg?: number;
  longitudeDeg?: number;
  headingDeg?: number;
}

/** One pull-away, cruise, brake and stop. */
interface Leg {
  targetKph: number;
  accelMps2: number;
  cruiseS: number;
  coastS: number;
  brakeMps2: number;
  stopS: number;
  /** Signed turn at the start of the leg, degrees (positive = right, clockwise). */
  turnDeg: number;
  /** A door opens while waiting at the end of the leg. */
  doorAtStop: 'FR' | 'RL' | 'RR' | 'TRUNK' | undefined;
}

/** Distance over which a junction turn is driven. */
const TURN_DISTANCE_M = 25;

export class DriveCycle {
  readonly state: VehicleState;
  private readonly random: () => number;
  private phaseTimeS = 0;
  /** Length of the current timed phase (parked, stops, warm-up…). */
  private phaseDurationS = 0;
  private leg: Leg;
  private legsUntilPark: number;
  private turnRemainingDeg = 0;
  private cruiseWobblePhase = 0;
  private shiftTimerS = 0;
  /** Engine has fired during cranking and is running up to idle. */
  private engineCaught = false;
  /** The parked phase follows a drive, so the driver gets out first. */
  private driverLeaving = false;
  private readonly tyreFactors: [number, number, number, number];

  constructor(options: DriveCycleOptions = {}) {
    this.random = createPrng(options.seed ?? 1);
    const ambient = options.ambientTempC ?? round1(5 + 20 * this.random());
    const fuelPct = options.fuelLevelPct ?? 35 + 55 * this.random();
    const odometer = options.odometerKm ?? Math.round(20_000 + 70_000 * this.random());
    // Tyre wear differs a little per wheel, so the four wheel speeds are never identical while moving.
    this.tyreFactors = [0, 0, 0, 0].map(() => 1 + (this.random() - 0.5) * 0.006) as [number, number, number, number];
    this.state = {
      timeS: 0,
      phase: 'parked',
      ignition: 'OFF',
      engineRunning: false,
      engineRpm: 0,
      throttlePct: 0,
      engineLoadPct: 0,
      engineTorqueNm: 0,
      fuelCut: false,
      speedKph: 0,
      accelMps2: 0,
      yawRateDps: 0,
      wheelSpeedFlKph: 0,
      wheelSpeedFrKph: 0,
      wheelSpeedRlKph: 0,
      wheelSpeedRrKph: 0,
      gearLever: 'P',
      gear: 0,
      torqueConverterLocked: false,
      shiftInProgress: false,
      transOutputRpm: 0,
      brakePressureBar: 0,
      brakePedalPressed: false,
      parkingBrake: true,
      coolantTempC: ambient,
      oilTempC: ambient,
      transOilTempC: ambient,
      intakeAirTempC: ambient,
      ambientTempC: ambient,
      ecuTempC: ambient,
      fuelLiters: (DEMO_CAR.tankLiters * fuelPct) / 100,
      fuelLevelPct: fuelPct,
      fuelRateLph: 0,
      fuelConsumptionAvgL100km: 0,
      lowFuelWarning: false,
      odometerKm: odometer,
      tripKm: 0,
      tripFuelLiters: 0,
      doorFlOpen: false,
      doorFrOpen: false,
      doorRlOpen: false,
      doorRrOpen: false,
      trunkOpen: false,
      driverSeatbelt: false,
      latitudeDeg: options.latitudeDeg ?? 48.1371079,
      longitudeDeg: options.longitudeDeg ?? 11.5753822,
      headingDeg: options.headingDeg ?? 90,
      altitudeM: 519,
      gnssSatellites: 9,
      gnssFix: 'Fix3D',
      gnssHdop: 0.9,
      batteryVoltageV: 12.6,
      alternatorCurrentA: 0,
      engineHours: Math.round(odometer / 38),
      ignitionCycles: Math.round(odometer / 9),
    };
    this.leg = this.planLeg();
    this.legsUntilPark = this.randomInt(12, 20);
    this.enterPhase('parked', 2 + this.random());
  }

  /** Advances the model by `dtS` seconds (the simulator uses 10 ms steps). */
  step(dtS: number): void {
    const s = this.state;
    this.phaseTimeS += dtS;
    const v0 = s.speedKph;
    const desiredAccel = this.drive();
    this.move(desiredAccel, dtS);
    const distanceM = ((v0 + s.speedKph) / 2 / 3.6) * dtS;
    this.runPowertrain(dtS);
    this.runThermal(dtS);
    this.burnFuel(dtS);
    this.travel(distanceM, dtS);
    this.runElectrics(dtS);
    s.timeS += dtS;
  }

  // ---- the driver: phases and what they ask of the car ----

  private enterPhase(phase: DrivePhase, durationS = 0): void {
    this.state.phase = phase;
    this.phaseTimeS = 0;
    this.phaseDurationS = durationS;
  }

  /**
   * Runs the scenario and returns the acceleration the driver asks for (m/s²; negative = braking), or -Infinity to
   * coast: off the pedals, slowing by road load only.
   */
  private drive(): number {
    const s = this.state;
    const t = this.phaseTimeS;
    switch (s.phase) {
      case 'parked': {
        // The driver's door opens as the driver gets out (after a drive) and again as the driver gets in.
        const d = this.phaseDurationS;
        const leaving = this.driverLeaving && t > 0.3 && t < 1.8;
        const entering = t > Math.max(0.3, d - 2.2) && t < d - 0.6;
        s.doorFlOpen = leaving || entering;
        if (t >= d) {
          s.doorFlOpen = false;
          s.driverSeatbelt = true;
          this.driverLeaving = false;
          if (s.fuelLevelPct < 12) this.refuel();
          this.enterPhase('accessory', 1 + 0.5 * this.random());
          s.ignition = 'ACC';
        }
        return 0;
      }
      case 'accessory':
        if (t >= this.phaseDurationS) {
          this.enterPhase('ignition-on', 1.5 + this.random());
          s.ignition = 'ON';
          s.ignitionCycles += 1;
        }
        return 0;
      case 'ignition-on':
        if (t >= this.phaseDurationS) {
          // Foot on the brake to crank.
          this.enterPhase('cranking', 0.7 + 0.4 * this.random());
          s.ignition = 'START';
          this.engineCaught = false;
        }
        return 0;
      case 'cranking':
        this.holdBrake(25);
        if (t >= this.phaseDurationS) this.engineCaught = true;
        if (this.engineCaught && s.engineRpm >= this.idleTargetRpm() * 0.97) {
          s.engineRunning = true;
          s.ignition = 'ON';
          s.parkingBrake = false;
          this.releaseBrake();
          this.enterPhase('warm-up', 3 + 5 * this.random());
        }
        return 0;
      case 'warm-up':
        if (t >= this.phaseDurationS - 1) this.holdBrake(20);
        if (t >= this.phaseDurationS) {
          this.selectLever('D');
          this.leg = this.planLeg();
          this.enterPhase('stopped', 1);
        }
        return 0;
      case 'stopped':
        return this.waitAtStop();
      case 'pull-away': {
        this.releaseBrake();
        const remainingKph = this.leg.targetKph - s.speedKph;
        if (remainingKph <= 0.3) {
          this.enterPhase('cruise', this.leg.cruiseS);
          this.cruiseWobblePhase = this.random() * 2 * Math.PI;
          return 0;
        }
        // Ease off over the last 8 km/h instead of hitting the target speed with full acceleration.
        return this.leg.accelMps2 * Math.min(1, Math.max(0.15, remainingKph / 8));
      }
      case 'cruise': {
        this.releaseBrake();
        if (t >= this.phaseDurationS) {
          this.enterPhase('braking');
          return 0;
        }
        // Real drivers do not hold a speed exactly: a slow wobble of a few km/h around the target.
        const wobble = 0.06 * this.leg.targetKph * Math.sin(this.cruiseWobblePhase + t / 9);
        return clamp(((this.leg.targetKph + wobble - s.speedKph) / 3.6) * 0.5, -0.8, 0.8);
      }
      case 'braking': {
        if (t < this.leg.coastS) {
          this.releaseBrake();
          return -Infinity; // coast: whatever the road load gives
        }
        if (s.speedKph <= 0) {
          this.holdBrake(18 + 4 * this.random());
          this.legsUntilPark -= 1;
          if (this.legsUntilPark <= 0) this.enterPhase('shut-down');
          else this.enterPhase('stopped', this.leg.stopS);
          return 0;
        }
        // Drivers brake harder at speed and ease off just before the stop, so the car does not pitch back.
        const ease = s.speedKph < 6 ? 0.45 + 0.55 * (s.speedKph / 6) : 1;
        const decel = this.leg.brakeMps2 * ease;
        this.applyBrakeForDecel(decel);
        return -decel;
      }
      case 'shut-down':
        this.holdBrake(20);
        if (t >= 0.6 && s.gearLever !== 'P') this.selectLever('P');
        if (t >= 1.5 && s.ignition !== 'OFF') {
          s.ignition = 'OFF';
          s.engineRunning = false;
          s.parkingBrake = true;
        }
        if (t >= 2) this.releaseBrake();
        if (t >= 2.5) s.driverSeatbelt = false;
        if (t >= 3) {
          this.legsUntilPark = this.randomInt(12, 20);
          this.driverLeaving = true;
          this.enterPhase('parked', 30 + 60 * this.random());
        }
        return 0;
    }
  }

  private waitAtStop(): number {
    const s = this.state;
    const t = this.phaseTimeS;
    const stop = this.phaseDurationS;
    const door = this.leg.doorAtStop;
    if (door && stop >= 6) {
      // Passenger gets out: shift to P first, open and close the door, back to D before moving off.
      if (t >= 0.5 && t < stop - 1 && s.gearLever !== 'P') this.selectLever('P');
      this.setDoor(door, t >= 1.2 && t < stop - 2);
      if (t >= stop - 1 && s.gearLever !== 'D') {
        this.holdBrake(18);
        this.selectLever('D');
      }
      if (s.gearLever === 'P' && t > 0.6) this.releaseBrake();
    } else {
      this.holdBrake(Math.max(s.brakePressureBar, 15));
    }
    if (t >= stop) {
      this.setDoor(door, false);
      if (s.gearLever !== 'D') this.selectLever('D');
      this.leg = this.planLeg();
      this.turnRemainingDeg = this.leg.turnDeg;
      this.enterPhase('pull-away');
    }
    return 0;
  }

  private planLeg(): Leg {
    const extraUrban = this.random() < 0.15;
    const door = this.random() < 0.25 ? (['FR', 'RL', 'RR', 'TRUNK'] as const)[this.randomInt(0, 3)] : undefined;
    const turn = this.random();
    return {
      targetKph: extraUrban ? 80 + 40 * this.random() : 25 + 30 * this.random(),
      accelMps2: 1.0 + 1.4 * this.random(),
      cruiseS: extraUrban ? 60 + 120 * this.random() : 5 + 25 * this.random(),
      coastS: 1 + 3 * this.random(),
      brakeMps2: 1.5 + 2 * this.random(),
      stopS: 3 + 25 * this.random(),
      turnDeg: turn < 0.3 ? 90 : turn < 0.6 ? -90 : 0,
      doorAtStop: door,
    };
  }

  private selectLever(lever: GearLever): void {
    // A lever change needs the car stationary (the lever is interlocked with the brake pedal).
    if (this.state.speedKph > 0) return;
    this.state.gearLever = lever;
  }

  private setDoor(door: Leg['doorAtStop'], open: boolean): void {
    // Doors are only ever opened at a standstill.
    const s = this.state;
    const value = open && s.speedKph === 0;
    if (door === 'FR') s.doorFrOpen = value;
    else if (door === 'RL') s.doorRlOpen = value;
    else if (door === 'RR') s.doorRrOpen = value;
    else if (door === 'TRUNK') s.trunkOpen = value;
  }

  private holdBrake(pressureBar: number): void {
    this.state.brakePressureBar = pressureBar;
    this.state.brakePedalPressed = true;
  }

  private releaseBrake(): void {
    this.state.brakePressureBar = 0;
    this.state.brakePedalPressed = false;
  }

  /** Master cylinder pressure for a deceleration: about 11 bar per m/s² on this car, less what road load provides. */
  private applyBrakeForDecel(decelMps2: number): void {
    const roadDecel = this.roadLoadN(this.state.speedKph / 3.6) / DEMO_CAR.massKg;
    this.holdBrake(Math.max(0, decelMps2 - roadDecel) * 11 + 1);
  }

  private refuel(): void {
    const s = this.state;
    s.fuelLiters = DEMO_CAR.tankLiters * (0.9 + 0.08 * this.random());
    s.fuelLevelPct = (s.fuelLiters / DEMO_CAR.tankLiters) * 100;
  }

  // ---- physics ----

  /** Rolling resistance and aerodynamic drag at a speed, N. */
  private roadLoadN(speedMps: number): number {
    if (speedMps <= 0) return 0;
    const rolling = DEMO_CAR.massKg * GRAVITY * DEMO_CAR.rollingResistance;
    return rolling + 0.5 * AIR_DENSITY * DEMO_CAR.dragAreaM2 * speedMps * speedMps;
  }

  /** Tractive force the engine can deliver in the current gear, N. */
  private maxTractionN(): number {
    const s = this.state;
    if (!s.engineRunning || s.gearLever !== 'D' || s.gear === 0) return 0;
    const ratio = DEMO_CAR.gearRatios[s.gear - 1]! * DEMO_CAR.finalDrive;
    return (DEMO_CAR.maxTorqueNm * ratio * DEMO_CAR.drivelineEfficiency) / DEMO_CAR.wheelRadiusM;
  }

  private move(desiredAccel: number, dtS: number): void {
    const s = this.state;
    const v = s.speedKph / 3.6;
    const roadDecel = this.roadLoadN(v) / DEMO_CAR.massKg;
    let accel: number;
    if (desiredAccel === -Infinity) accel = -roadDecel;
    else if (desiredAccel > -roadDecel) {
      // Needs engine power: limited by what the engine delivers in this gear.
      const maxAccel = this.maxTractionN() / DEMO_CAR.massKg - roadDecel;
      accel = Math.min(desiredAccel, maxAccel);
    } else accel = desiredAccel;
    if (s.phase === 'stopped' || (s.brakePedalPressed && v === 0)) accel = Math.max(0, accel);
    let next = v + accel * dtS;
    if (next <= 0) {
      next = 0;
      accel = -v / dtS;
    }
    s.accelMps2 = v === 0 && next === 0 ? 0 : accel;
    s.speedKph = next * 3.6;
  }

  private idleTargetRpm(): number {
    // Cold engines idle faster, up to +250 rpm, fading out as the coolant reaches 50 °C.
    return DEMO_CAR.idleRpm + clamp((50 - this.state.coolantTempC) * 6, 0, 250);
  }

  private runPowertrain(dtS: number): void {
    const s = this.state;
    const v = s.speedKph / 3.6;
    const wheelRpm = (v / (2 * Math.PI * DEMO_CAR.wheelRadiusM)) * 60;

    // Shift schedule: later upshifts under more throttle.
    if (s.gearLever === 'D') {
      if (s.gear === 0 || v === 0) s.gear = 1;
      this.shiftTimerS = Math.max(0, this.shiftTimerS - dtS);
      if (this.shiftTimerS === 0) {
        const geared = wheelRpm * DEMO_CAR.gearRatios[s.gear - 1]! * DEMO_CAR.finalDrive;
        // The base sits far enough above DOWNSHIFT_RPM × the step between ratios that gears do not hunt.
        const upshiftRpm = Math.min(4500, 2000 + s.throttlePct * 30);
        if (geared > upshiftRpm && s.gear < 6 && s.accelMps2 > -0.5) {
          s.gear += 1;
          this.shiftTimerS = 0.4;
        } else if (geared < DOWNSHIFT_RPM && s.gear > 1) {
          s.gear -= 1;
          this.shiftTimerS = 0.4;
        }
      }
    } else {
      s.gear = 0;
      this.shiftTimerS = 0;
    }
    s.shiftInProgress = this.shiftTimerS > 0;
    const overallRatio = s.gear > 0 ? DEMO_CAR.gearRatios[s.gear - 1]! * DEMO_CAR.finalDrive : 0;
    const gearedRpm = wheelRpm * overallRatio;
    s.transOutputRpm = wheelRpm * DEMO_CAR.finalDrive;
    s.torqueConverterLocked = s.gear >= 3 && gearedRpm > 1300 && !s.shiftInProgress;

    // Torque the wheels need, back through the driveline to the crankshaft.
    const tractionN = s.accelMps2 * DEMO_CAR.massKg + this.roadLoadN(v);
    let torque = 0;
    /** Torque the driver asks for with the pedal (creep and idle need none). */
    let pedalTorque = 0;
    s.fuelCut = false;
    if (s.engineRunning) {
      if (overallRatio > 0 && tractionN > 0 && (v > 0 || s.accelMps2 > 0)) {
        torque = (tractionN * DEMO_CAR.wheelRadiusM) / (overallRatio * DEMO_CAR.drivelineEfficiency);
        pedalTorque = torque;
      } else if (overallRatio > 0 && v > 0 && tractionN <= 0) {
        // Overrun: injection cut above the cut-in speed, the engine drags.
        s.fuelCut = gearedRpm > 1100;
        torque = s.fuelCut ? -18 : 0;
      } else if (overallRatio > 0 && v === 0) {
        torque = 8; // creep held against the brake through the converter
      }
    }
    s.engineTorqueNm = torque;
    const positive = Math.max(0, torque);
    s.throttlePct = clamp((pedalTorque / DEMO_CAR.maxTorqueNm) * 100, 0, 100);
    s.engineLoadPct = !s.engineRunning ? 0 : s.fuelCut ? 6 : clamp(18 + (positive / DEMO_CAR.maxTorqueNm) * 82, 0, 100);

    // Engine speed: starter, flare and idle, or geared to the wheels (with converter slip in low gears).
    let target: number;
    if (s.ignition === 'START' && !s.engineRunning) target = this.engineCaught ? 1350 : 230;
    else if (!s.engineRunning) target = 0;
    else {
      const idle = this.idleTargetRpm();
      const slip = s.torqueConverterLocked ? 0 : s.throttlePct * 12 * Math.max(0, 1 - gearedRpm / 3000);
      target = Math.max(idle, gearedRpm) + slip;
    }
    const tau = s.engineRunning ? 0.15 : 0.25;
    s.engineRpm += (target - s.engineRpm) * (1 - Math.exp(-dtS / tau));
    if (s.engineRunning) s.engineRpm = clamp(s.engineRpm, DEMO_CAR.idleRpm * 0.95, DEMO_CAR.redlineRpm);
    else if (s.engineRpm < 1) s.engineRpm = 0;
    if (s.engineRunning) s.engineHours += dtS / 3600;
  }

  private runThermal(dtS: number): void {
    const s = this.state;
    const ambient = s.ambientTempC;
    // Heat from combustion grows with load; above the thermostat the radiator takes it away.
    let coolantRate = -(s.coolantTempC - ambient) * 0.0004;
    if (s.engineRunning) {
      coolantRate += 0.05 + 0.004 * s.engineLoadPct;
      if (s.coolantTempC > DEMO_CAR.thermostatC) coolantRate -= (s.coolantTempC - DEMO_CAR.thermostatC) * 0.2;
    }
    s.coolantTempC += coolantRate * dtS;
    const oilTarget = s.engineRunning ? s.coolantTempC + s.engineLoadPct * 0.12 : ambient;
    s.oilTempC += (oilTarget - s.oilTempC) * (1 - Math.exp(-dtS / (s.engineRunning ? 240 : 2400)));
    const transTarget = s.engineRunning ? s.coolantTempC - 5 : ambient;
    s.transOilTempC += (transTarget - s.transOilTempC) * (1 - Math.exp(-dtS / (s.engineRunning ? 420 : 2400)));
    // Intake air is heated under the bonnet, less so when the car moves fast.
    const intakeTarget = ambient + (s.engineRunning ? 12 * Math.max(0.2, 1 - s.speedKph / 100) : 2);
    s.intakeAirTempC += (intakeTarget - s.intakeAirTempC) * (1 - Math.exp(-dtS / 60));
    const ecuTarget = ambient + (s.ignition === 'OFF' ? 0 : 18);
    s.ecuTempC += (ecuTarget - s.ecuTempC) * (1 - Math.exp(-dtS / 600));
  }

  private burnFuel(dtS: number): void {
    const s = this.state;
    if (!s.engineRunning || s.fuelCut) s.fuelRateLph = 0;
    else {
      // Indicated power: brake torque plus friction (which grows with rpm), times crank speed.
      const frictionNm = 12 + s.engineRpm / 300;
      const powerKw = ((Math.max(0, s.engineTorqueNm) + frictionNm) * s.engineRpm * 2 * Math.PI) / 60 / 1000;
      s.fuelRateLph = powerKw * FUEL_L_PER_KWH + 0.1;
    }
    const burnt = (s.fuelRateLph * dtS) / 3600;
    s.fuelLiters = Math.max(0, s.fuelLiters - burnt);
    s.tripFuelLiters += burnt;
    s.fuelLevelPct = (s.fuelLiters / DEMO_CAR.tankLiters) * 100;
    s.lowFuelWarning = s.fuelLiters < 7;
  }

  private travel(distanceM: number, dtS: number): void {
    const s = this.state;
    s.odometerKm += distanceM / 1000;
    s.tripKm += distanceM / 1000;
    s.fuelConsumptionAvgL100km = s.tripKm > 0.5 ? (s.tripFuelLiters / s.tripKm) * 100 : 0;

    // Heading only changes while the car rolls: junction turns over a few metres, gentle curves when cruising.
    let headingChange = 0;
    if (distanceM > 0) {
      if (this.turnRemainingDeg !== 0) {
        const step = Math.min(Math.abs(this.turnRemainingDeg), (90 / TURN_DISTANCE_M) * distanceM);
        headingChange = Math.sign(this.turnRemainingDeg) * step;
        this.turnRemainingDeg -= headingChange;
        if (Math.abs(this.turnRemainingDeg) < 1e-9) this.turnRemainingDeg = 0;
      } else if (s.phase === 'cruise') {
        headingChange = 0.004 * distanceM * Math.sin(this.cruiseWobblePhase + this.phaseTimeS / 23);
      }
    }
    // Move along the mean heading of the step.
    const mid = (s.headingDeg + headingChange / 2) * DEG;
    const latRad = s.latitudeDeg * DEG;
    s.latitudeDeg += (distanceM * Math.cos(mid)) / EARTH_RADIUS_M / DEG;
    s.longitudeDeg += (distanceM * Math.sin(mid)) / (EARTH_RADIUS_M * Math.cos(latRad)) / DEG;
    s.headingDeg = (((s.headingDeg + headingChange) % 360) + 360) % 360;
    s.yawRateDps = dtS > 0 ? -headingChange / dtS : 0;
    s.altitudeM = 519 + 14 * Math.sin(s.tripKm / 1.7) + 6 * Math.sin(s.tripKm / 0.45);

    // Wheel speeds: the outer wheels run faster in a turn; tyres differ slightly in rolling radius.
    const v = s.speedKph;
    const yawRad = s.yawRateDps * DEG;
    const halfTrackKph = (yawRad * DEMO_CAR.trackWidthM * 3.6) / 2;
    const left = v === 0 ? 0 : Math.max(0, v - halfTrackKph);
    const right = v === 0 ? 0 : Math.max(0, v + halfTrackKph);
    s.wheelSpeedFlKph = left * this.tyreFactors[0];
    s.wheelSpeedFrKph = right * this.tyreFactors[1];
    s.wheelSpeedRlKph = left * this.tyreFactors[2];
    s.wheelSpeedRrKph = right * this.tyreFactors[3];

    // The constellation changes slowly: a satellite rises or sets now and then.
    if (this.random() < dtS / 20) s.gnssSatellites = clamp(s.gnssSatellites + (this.random() < 0.5 ? -1 : 1), 6, 14);
    s.gnssHdop = round1(clamp(2.4 - s.gnssSatellites * 0.13, 0.6, 2));
  }

  private runElectrics(dtS: number): void {
    const s = this.state;
    let volts: number;
    let amps: number;
    if (s.ignition === 'START' && !s.engineRunning) {
      volts = 10.4;
      amps = -180;
    } else if (s.engineRunning) {
      volts = 14.2 - 0.002 * s.engineLoadPct;
      amps = 12 + 6 * (s.engineRpm / 3000);
    } else if (s.ignition === 'ON') {
      volts = 12.3;
      amps = -14;
    } else if (s.ignition === 'ACC') {
      volts = 12.45;
      amps = -4;
    } else {
      volts = 12.6;
      amps = -0.05;
    }
    // Smooth the steps so the bus shows a plausible voltage trace, not jumps.
    s.batteryVoltageV += (volts - s.batteryVoltageV) * (1 - Math.exp(-dtS / 0.3));
    s.alternatorCurrentA += (amps - s.alternatorCurrentA) * (1 - Math.exp(-dtS / 0.3));
  }

  private randomInt(min: number, max: number): number {
    return min + Math.floor(this.random() * (max - min + 1));
  }
}

function clamp(x: number, min: number, max: number): number {
  return x < min ? min : x > max ? max : x;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
