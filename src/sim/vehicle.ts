/**
 * The simulated vehicle: a drive cycle put on a CAN bus through a DBC. Every message of the DBC is sent at its
 * GenMsgCycleTime (100 ms when the DBC gives none); signals of the demo DBC carry the drive-cycle state, all others
 * their GenSigStartValue (or 0), and multiplexed messages walk through their pages frame by frame.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { createFrame, type CanFrame, type FrameSink, type FrameSource } from '../can/frame.js';
import { compileDatabase, loadDbcFile, type CompiledDatabase, type MessageCodec } from '../dbc/index.js';
import type { SignalDef, SignalValue } from '../dbc/model.js';
import { DriveCycle, type DriveCycleOptions, type VehicleState } from './drive-cycle.js';

/** The project's demo vehicle DBC (device-config/dbc/demo_vehicle.dbc); this file runs as dist/src/sim/vehicle.js. */
export const DEMO_DBC_PATH = fileURLToPath(new URL('../../../device-config/dbc/demo_vehicle.dbc', import.meta.url));

/** Cycle time for messages whose DBC gives none. */
export const DEFAULT_CYCLE_MS = 100;
/** The drive cycle advances in steps of this size; frames carry the state of the latest step. */
export const SIM_STEP_MS = 10;
/** Real-time mode wakes up this often and sends every frame that has fallen due meanwhile. */
const REALTIME_TICK_MS = 10;

export interface SimulatedVehicleOptions {
  /** DBC to send; default: the demo vehicle. */
  dbcPath?: string;
  strictDbc?: boolean;
  /** An already compiled DBC to send (instead of loading `dbcPath`), e.g. the one the receiving side decodes with. */
  database?: CompiledDatabase;
  /** Interface name written into the frames, e.g. `can0`. */
  bus: string;
  /** Time factor in real-time mode: 2 runs the car twice as fast as the wall clock. */
  speed?: number;
  /** true (default): frames are paced by the wall clock. false: simulated time runs as fast as the CPU allows. */
  realtime?: boolean;
  /** Stop after this much simulated time; default: run until aborted. */
  durationS?: number;
  /** Seed of the drive cycle; the same seed gives the same frames. */
  seed?: number;
  /** Unix time (s) of simulated time 0, for the frames' timestamps; default: the wall clock when `run` starts. */
  startTime?: number;
  /** Further drive-cycle settings (start position, fuel level…); `seed` above takes precedence. */
  driveCycle?: DriveCycleOptions;
  /**
   * The fleet simulation's rate, Hz: every message at most this often, the real-time tick at this rate and the drive
   * cycle in steps of FLEET_STEP_MS, so that a thousand cars fit in one process (the full bus is some 300 frames/s).
   * The values still follow a drive of the same cycle and seed, at a coarser resolution in time (its trajectory is not
   * the full rate's: phases end on other steps). Default: every message at its cycle time.
   */
  rateHz?: number;
}

/** The drive cycle's step with a fleet rate (`rateHz`): ten steps a simulated second, a tenth of the full rate's cost. */
export const FLEET_STEP_MS = 100;

/** Where a demo signal's value comes from. Enumerations are numbered as the demo DBC's value tables number them. */
type SignalSource = (state: VehicleState, frameIndex: number) => number;

const IGNITION_CODES = { OFF: 0, ACC: 1, ON: 2, START: 3 } as const;
const LEVER_CODES = { P: 0, R: 1, N: 2, D: 3 } as const;
const FIX_CODES = { NoFix: 0, Fix2D: 1, Fix3D: 2 } as const;
/** GearEngaged: 1-6 forward gears, otherwise what the lever selects. */
const GEAR_ENGAGED_NEUTRAL = 0;
const GEAR_ENGAGED_REVERSE = 14;
const GEAR_ENGAGED_PARK = 15;
/** The demo ECU's software and calibration, as its identity page reports them. */
const ECU_SOFTWARE = { major: 2, minor: 4, patch: 1, calibrationId: 0x5d3a1c07 } as const;

const flag = (x: boolean): number => (x ? 1 : 0);

/** Demo DBC signals (`MESSAGE.Signal`) and the state they carry. */
export const DEMO_SIGNAL_SOURCES: Readonly<Partial<Record<string, SignalSource>>> = {
  'ENGINE_DATA.EngineSpeed': (s) => s.engineRpm,
  'ENGINE_DATA.ThrottlePosition': (s) => s.throttlePct,
  'ENGINE_DATA.EngineLoad': (s) => s.engineLoadPct,
  'ENGINE_DATA.EngineTorque': (s) => s.engineTorqueNm,
  'ENGINE_DATA.EngineRunning': (s) => flag(s.engineRunning),
  'ENGINE_DATA.FuelCutActive': (s) => flag(s.fuelCut),
  'ENGINE_DATA.EngineDataCounter': (_s, frameIndex) => frameIndex % 16,

  'VEHICLE_DYNAMICS.VehicleSpeed': (s) => s.speedKph,
  'VEHICLE_DYNAMICS.LongitudinalAccel': (s) => s.accelMps2,
  'VEHICLE_DYNAMICS.YawRate': (s) => s.yawRateDps,
  'VEHICLE_DYNAMICS.VehicleStandstill': (s) => flag(s.speedKph === 0),

  'WHEEL_SPEEDS.WheelSpeedFL': (s) => s.wheelSpeedFlKph,
  'WHEEL_SPEEDS.WheelSpeedFR': (s) => s.wheelSpeedFrKph,
  'WHEEL_SPEEDS.WheelSpeedRL': (s) => s.wheelSpeedRlKph,
  'WHEEL_SPEEDS.WheelSpeedRR': (s) => s.wheelSpeedRrKph,

  'BRAKE_STATUS.BrakePressure': (s) => s.brakePressureBar,
  'BRAKE_STATUS.BrakePedalPressed': (s) => flag(s.brakePedalPressed),
  'BRAKE_STATUS.ParkingBrakeEngaged': (s) => flag(s.parkingBrake),
  'BRAKE_STATUS.AbsActive': () => 0,

  'TRANSMISSION.GearLever': (s) => LEVER_CODES[s.gearLever],
  'TRANSMISSION.GearEngaged': (s) =>
    s.gearLever === 'D' ? s.gear : s.gearLever === 'P' ? GEAR_ENGAGED_PARK : s.gearLever === 'R' ? GEAR_ENGAGED_REVERSE : GEAR_ENGAGED_NEUTRAL,
  'TRANSMISSION.TransOilTemp': (s) => s.transOilTempC,
  'TRANSMISSION.TorqueConverterLocked': (s) => flag(s.torqueConverterLocked),
  'TRANSMISSION.ShiftInProgress': (s) => flag(s.shiftInProgress),
  'TRANSMISSION.TransOutputSpeed': (s) => s.transOutputRpm,

  'BODY_STATUS.IgnitionState': (s) => IGNITION_CODES[s.ignition],
  'BODY_STATUS.DriverSeatbelt': (s) => flag(s.driverSeatbelt),
  'BODY_STATUS.DoorOpenFL': (s) => flag(s.doorFlOpen),
  'BODY_STATUS.DoorOpenFR': (s) => flag(s.doorFrOpen),
  'BODY_STATUS.DoorOpenRL': (s) => flag(s.doorRlOpen),
  'BODY_STATUS.DoorOpenRR': (s) => flag(s.doorRrOpen),
  'BODY_STATUS.TrunkOpen': (s) => flag(s.trunkOpen),

  'ENGINE_TEMPS.CoolantTemp': (s) => s.coolantTempC,
  'ENGINE_TEMPS.OilTemp': (s) => s.oilTempC,
  'ENGINE_TEMPS.IntakeAirTemp': (s) => s.intakeAirTempC,
  'ENGINE_TEMPS.AmbientTemp': (s) => s.ambientTempC,

  'FUEL_STATUS.FuelLevel': (s) => s.fuelLevelPct,
  'FUEL_STATUS.FuelRemaining': (s) => s.fuelLiters,
  'FUEL_STATUS.FuelRate': (s) => s.fuelRateLph,
  'FUEL_STATUS.FuelConsumptionAvg': (s) => s.fuelConsumptionAvgL100km,
  'FUEL_STATUS.LowFuelWarning': (s) => flag(s.lowFuelWarning),

  // An odometer shows distance completed: truncate rather than round up to the next 100 m.
  'ODOMETER.Odometer': (s) => Math.floor(s.odometerKm * 10 + 1e-9) / 10,
  'ODOMETER.TripDistance': (s) => Math.floor(s.tripKm * 100 + 1e-9) / 100,

  'GNSS_POSITION.Latitude': (s) => s.latitudeDeg,
  'GNSS_POSITION.Longitude': (s) => s.longitudeDeg,

  'GNSS_MOTION.Heading': (s) => s.headingDeg,
  'GNSS_MOTION.GnssSpeed': (s) => s.speedKph,
  'GNSS_MOTION.Altitude': (s) => s.altitudeM,
  'GNSS_MOTION.SatellitesInUse': (s) => s.gnssSatellites,
  'GNSS_MOTION.FixType': (s) => FIX_CODES[s.gnssFix],
  'GNSS_MOTION.Hdop': (s) => s.gnssHdop,

  'ECU_DIAG_STATUS.BatteryVoltage': (s) => s.batteryVoltageV,
  'ECU_DIAG_STATUS.AlternatorCurrent': (s) => s.alternatorCurrentA,
  'ECU_DIAG_STATUS.EcuTemperature': (s) => s.ecuTempC,
  'ECU_DIAG_STATUS.EngineHours': (s) => s.engineHours,
  'ECU_DIAG_STATUS.IgnitionCycles': (s) => s.ignitionCycles,
  'ECU_DIAG_STATUS.ActiveDtcCount': () => 0,
  'ECU_DIAG_STATUS.MilOn': () => 0,
  'ECU_DIAG_STATUS.FirstDtc': () => 0,
  'ECU_DIAG_STATUS.SoftwareMajor': () => ECU_SOFTWARE.major,
  'ECU_DIAG_STATUS.SoftwareMinor': () => ECU_SOFTWARE.minor,
  'ECU_DIAG_STATUS.SoftwarePatch': () => ECU_SOFTWARE.patch,
  'ECU_DIAG_STATUS.CalibrationId': () => ECU_SOFTWARE.calibrationId,
};

/** One signal the simulator fills, with the physical range its raw field can hold (so values saturate, never throw). */
interface SignalFeed {
  name: string;
  source: SignalSource;
  min: number;
  max: number;
  /** Round to an integer before encoding. */
  whole: boolean;
}

/** A multiplexer signal and the page values it walks through. */
interface MultiplexerFeed {
  name: string;
  pages: number[];
}

/** A message on the schedule. */
interface ScheduledMessage {
  codec: MessageCodec;
  cycleMs: number;
  /** Next transmission, simulated ms. */
  dueMs: number;
  /** Frames sent so far (drives rolling counters and multiplexer pages). */
  sent: number;
  feeds: SignalFeed[];
  multiplexers: MultiplexerFeed[];
  /** Reused for every frame of this message: same keys each time. */
  values: Record<string, SignalValue>;
}

export class SimulatedVehicle implements FrameSource {
  readonly name: string;
  readonly database: CompiledDatabase;
  readonly driveCycle: DriveCycle;
  private readonly bus: string;
  private readonly speed: number;
  private readonly realtime: boolean;
  private readonly durationMs: number;
  private readonly startTimeOption: number | undefined;
  private readonly schedule: ScheduledMessage[];
  /** Min-heap of indexes into `schedule`, ordered by due time, then message order. */
  private readonly queue: number[] = [];
  private readonly frame: CanFrame = createFrame();
  /** The drive cycle's step and the real-time tick, ms: SIM_STEP_MS and REALTIME_TICK_MS, coarser with a fleet rate. */
  private readonly stepMs: number;
  private readonly tickMs: number;
  /** Simulated time the drive cycle has reached, ms. */
  private stateMs = 0;
  /** Simulated time up to which frames have been sent, ms. */
  private simMs = 0;
  private epochS = 0;
  private running = false;

  constructor(options: SimulatedVehicleOptions) {
    const dbcPath = options.database?.db.file ?? options.dbcPath ?? DEMO_DBC_PATH;
    this.bus = options.bus;
    this.speed = options.speed ?? 1;
    const rateHz = options.rateHz;
    if (rateHz !== undefined && !(rateHz > 0 && rateHz <= 1000 / REALTIME_TICK_MS))
      throw new RangeError(`simulator rate must be above 0 and at most ${1000 / REALTIME_TICK_MS} Hz, got ${rateHz}`);
    const minCycleMs = rateHz === undefined ? 0 : 1000 / rateHz;
    this.stepMs = rateHz === undefined ? SIM_STEP_MS : Math.max(SIM_STEP_MS, Math.min(FLEET_STEP_MS, minCycleMs));
    this.tickMs = rateHz === undefined ? REALTIME_TICK_MS : minCycleMs;
    if (!(this.speed > 0)) throw new RangeError(`simulator speed must be positive, got ${options.speed}`);
    this.realtime = options.realtime ?? true;
    this.durationMs = options.durationS === undefined ? Infinity : options.durationS * 1000;
    this.startTimeOption = options.startTime;
    this.name = `sim:${path.resolve(dbcPath) === DEMO_DBC_PATH ? 'demo' : path.basename(dbcPath)}`;
    this.database = options.database ?? compileDatabase(loadDbcFile(dbcPath, { strict: options.strictDbc ?? false }));
    this.driveCycle = new DriveCycle({ ...options.driveCycle, seed: options.seed ?? options.driveCycle?.seed ?? 1 });
    this.schedule = this.database.messages
      .filter((codec) => codec.message.name !== 'VECTOR__INDEPENDENT_SIG_MSG')
      .map((codec, index) => scheduleMessage(codec, index, minCycleMs));
    this.schedule.forEach((_, i) => this.heapPush(i));
  }

  /** The drive-cycle state the latest frames were built from. */
  get state(): Readonly<VehicleState> {
    return this.driveCycle.state;
  }

  /** Simulated time of the frames sent so far, seconds. */
  get simulatedTimeS(): number {
    return this.simMs / 1000;
  }

  /** Runs until `durationS` of simulated time has been sent or `signal` aborts. A second `run` continues the drive. */
  async run(sink: FrameSink, signal?: AbortSignal): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    if (signal?.aborted) return;
    this.running = true;
    this.epochS = (this.startTimeOption ?? Date.now() / 1000) - this.simMs / 1000;
    try {
      if (this.realtime) await this.runRealtime(sink, signal);
      else await this.runFlatOut(sink, signal);
    } finally {
      this.running = false;
    }
  }

  private async runFlatOut(sink: FrameSink, signal: AbortSignal | undefined): Promise<void> {
    // One simulated second per slice, then a turn of the event loop so an abort (or a timer) gets a look in.
    while (this.simMs < this.durationMs && !signal?.aborted) {
      this.sendBefore(Math.min(this.simMs + 1000, this.durationMs), sink);
      await yieldToEventLoop();
    }
  }

  private runRealtime(sink: FrameSink, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const wallStart = performance.now();
      const simStart = this.simMs;
      const finish = (failure?: { error: unknown }): void => {
        clearInterval(timer);
        signal?.removeEventListener('abort', onAbort);
        if (failure) reject(failure.error);
        else resolve();
      };
      const onAbort = (): void => finish();
      const tick = (): void => {
        try {
          const target = Math.min(simStart + (performance.now() - wallStart) * this.speed, this.durationMs);
          this.sendBefore(target, sink);
          if (target >= this.durationMs) finish();
        } catch (err) {
          finish({ error: err });
        }
      };
      // One timer for the whole bus: each tick sends every frame that has fallen due since the last.
      const timer = setInterval(tick, this.tickMs);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Sends, in time order, every frame due before `limitMs` (simulated). */
  private sendBefore(limitMs: number, sink: FrameSink): void {
    const { schedule, queue, frame } = this;
    frame.bus = this.bus;
    while (queue.length > 0) {
      const next = schedule[queue[0]!]!;
      if (next.dueMs >= limitMs) break;
      this.advanceStateTo(next.dueMs);
      const message = next.codec.message;
      frame.ts = this.epochS + next.dueMs / 1000;
      frame.id = message.id;
      frame.extended = message.extended;
      frame.fd = message.fd;
      frame.fdFlags = 0;
      frame.remote = false;
      frame.error = false;
      frame.data = this.encode(next);
      frame.dlc = frame.data.length;
      next.sent += 1;
      next.dueMs += next.cycleMs;
      this.heapSiftDown(0);
      sink(frame);
    }
    this.simMs = Math.max(this.simMs, limitMs);
  }

  private advanceStateTo(ms: number): void {
    const step = this.stepMs;
    while (this.stateMs + step <= ms) {
      this.driveCycle.step(step / 1000);
      this.stateMs += step;
    }
  }

  private encode(message: ScheduledMessage): Uint8Array {
    const state = this.driveCycle.state;
    const { values } = message;
    for (const feed of message.feeds) {
      let x = feed.source(state, message.sent);
      if (feed.whole) x = Math.round(x);
      values[feed.name] = x < feed.min ? feed.min : x > feed.max ? feed.max : x;
    }
    for (const mux of message.multiplexers) values[mux.name] = mux.pages[message.sent % mux.pages.length]!;
    return message.codec.encode(values);
  }

  // ---- the schedule: a binary min-heap on (due time, message order) ----

  private before(a: number, b: number): boolean {
    const da = this.schedule[a]!.dueMs;
    const db = this.schedule[b]!.dueMs;
    return da < db || (da === db && a < b);
  }

  private heapPush(index: number): void {
    const q = this.queue;
    q.push(index);
    let i = q.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(q[i]!, q[parent]!)) break;
      [q[i], q[parent]] = [q[parent]!, q[i]!];
      i = parent;
    }
  }

  private heapSiftDown(start: number): void {
    const q = this.queue;
    let i = start;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < q.length && this.before(q[left]!, q[smallest]!)) smallest = left;
      if (right < q.length && this.before(q[right]!, q[smallest]!)) smallest = right;
      if (smallest === i) return;
      [q[i], q[smallest]] = [q[smallest]!, q[i]!];
      i = smallest;
    }
  }
}

/** `minCycleMs`: the fleet rate's period (0: none); a message is never sent more often. */
function scheduleMessage(codec: MessageCodec, index: number, minCycleMs: number): ScheduledMessage {
  const message = codec.message;
  const cycleMs = Math.max(minCycleMs, message.cycleTime && message.cycleTime > 0 ? message.cycleTime : DEFAULT_CYCLE_MS);
  const feeds: SignalFeed[] = [];
  const multiplexers: MultiplexerFeed[] = [];
  // No prototype: a signal named like an Object.prototype member (toString…) must read as absent, not inherited.
  const values = Object.create(null) as Record<string, SignalValue>;
  for (const signal of message.signals) {
    const pages = multiplexerPages(message.signals, signal);
    if (pages.length > 0) {
      multiplexers.push({ name: signal.name, pages });
      values[signal.name] = pages[0]!;
      continue;
    }
    const source = DEMO_SIGNAL_SOURCES[`${message.name}.${signal.name}`];
    if (source) {
      const { min, max } = physicalRange(signal);
      // The codec takes unscaled signals as raw integers, so physical values must already be whole.
      const whole = signal.valueType === 'integer' && signal.factor === 1 && signal.offset === 0;
      feeds.push({ name: signal.name, source, min, max, whole });
      values[signal.name] = 0;
    }
  }
  // Spread the start of each message over the first milliseconds, as ECUs that boot at different moments do,
  // so that not every message of the bus is sent in the same millisecond.
  const dueMs = index % Math.min(cycleMs, 10);
  return { codec, cycleMs, dueMs, sent: 0, feeds, multiplexers, values };
}

/** Page values a multiplexer signal selects (empty for a signal that is not a multiplexer, or has no branches). */
function multiplexerPages(signals: SignalDef[], mux: SignalDef): number[] {
  if (!mux.isMultiplexer) return [];
  const pages = new Set<number>();
  for (const s of signals) if (s.multiplexerSignal === mux.name) for (const id of s.multiplexerIds ?? []) pages.add(id);
  return [...pages].sort((a, b) => a - b);
}

/**
 * Physical values a signal can carry: its raw field's range scaled, narrowed to the DBC's [min|max] when that is
 * given (min < max), as an ECU saturates a value rather than wrapping it.
 */
function physicalRange(signal: SignalDef): { min: number; max: number } {
  if (signal.valueType !== 'integer') return { min: -Infinity, max: Infinity };
  const bits = signal.length;
  const rawMin = signal.signed ? -(2 ** (bits - 1)) : 0;
  const rawMax = signal.signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  const a = rawMin * signal.factor + signal.offset;
  const b = rawMax * signal.factor + signal.offset;
  let min = Math.min(a, b);
  let max = Math.max(a, b);
  if (signal.minimum < signal.maximum) {
    min = Math.max(min, signal.minimum);
    max = Math.min(max, signal.maximum);
  }
  return { min, max };
}
