/** The simulated vehicle on the bus: schedule, encoding of the drive-cycle state, multiplexing, time modes. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cloneFrame, type CanFrame } from '../../src/can/frame.js';
import type { SignalValue } from '../../src/dbc/index.js';
import type { VehicleState } from '../../src/sim/drive-cycle.js';
import { DEMO_DBC_PATH, SimulatedVehicle } from '../../src/sim/vehicle.js';
import { makeTempDir } from '../support/temp.js';

const START = 1_700_000_000;

/** What each demo signal must carry, written independently of the simulator's own mapping. Labels where the DBC has a
 * value table (decoded with choices), numbers otherwise. */
const EXPECTED: Record<string, (s: VehicleState, sent: number) => number | string> = {
  'ENGINE_DATA.EngineSpeed': (s) => s.engineRpm,
  'ENGINE_DATA.ThrottlePosition': (s) => s.throttlePct,
  'ENGINE_DATA.EngineLoad': (s) => s.engineLoadPct,
  'ENGINE_DATA.EngineTorque': (s) => s.engineTorqueNm,
  'ENGINE_DATA.EngineRunning': (s) => (s.engineRunning ? 'Running' : 'Stopped'),
  'ENGINE_DATA.FuelCutActive': (s) => Number(s.fuelCut),
  'ENGINE_DATA.EngineDataCounter': (_s, sent) => sent % 16,
  'VEHICLE_DYNAMICS.VehicleSpeed': (s) => s.speedKph,
  'VEHICLE_DYNAMICS.LongitudinalAccel': (s) => s.accelMps2,
  'VEHICLE_DYNAMICS.YawRate': (s) => s.yawRateDps,
  'VEHICLE_DYNAMICS.VehicleStandstill': (s) => (s.speedKph === 0 ? 'Standstill' : 'Moving'),
  'WHEEL_SPEEDS.WheelSpeedFL': (s) => s.wheelSpeedFlKph,
  'WHEEL_SPEEDS.WheelSpeedFR': (s) => s.wheelSpeedFrKph,
  'WHEEL_SPEEDS.WheelSpeedRL': (s) => s.wheelSpeedRlKph,
  'WHEEL_SPEEDS.WheelSpeedRR': (s) => s.wheelSpeedRrKph,
  'BRAKE_STATUS.BrakePressure': (s) => s.brakePressureBar,
  'BRAKE_STATUS.BrakePedalPressed': (s) => (s.brakePedalPressed ? 'Pressed' : 'Released'),
  'BRAKE_STATUS.ParkingBrakeEngaged': (s) => Number(s.parkingBrake),
  'BRAKE_STATUS.AbsActive': () => 0,
  'TRANSMISSION.GearLever': (s) => s.gearLever,
  'TRANSMISSION.GearEngaged': (s) => (s.gearLever === 'D' ? String(s.gear) : s.gearLever),
  'TRANSMISSION.TransOilTemp': (s) => s.transOilTempC,
  'TRANSMISSION.TorqueConverterLocked': (s) => Number(s.torqueConverterLocked),
  'TRANSMISSION.ShiftInProgress': (s) => Number(s.shiftInProgress),
  'TRANSMISSION.TransOutputSpeed': (s) => s.transOutputRpm,
  'BODY_STATUS.IgnitionState': (s) => s.ignition,
  'BODY_STATUS.DriverSeatbelt': (s) => (s.driverSeatbelt ? 'Buckled' : 'Unbuckled'),
  'BODY_STATUS.DoorOpenFL': (s) => (s.doorFlOpen ? 'Open' : 'Closed'),
  'BODY_STATUS.DoorOpenFR': (s) => (s.doorFrOpen ? 'Open' : 'Closed'),
  'BODY_STATUS.DoorOpenRL': (s) => (s.doorRlOpen ? 'Open' : 'Closed'),
  'BODY_STATUS.DoorOpenRR': (s) => (s.doorRrOpen ? 'Open' : 'Closed'),
  'BODY_STATUS.TrunkOpen': (s) => (s.trunkOpen ? 'Open' : 'Closed'),
  'ENGINE_TEMPS.CoolantTemp': (s) => s.coolantTempC,
  'ENGINE_TEMPS.OilTemp': (s) => s.oilTempC,
  'ENGINE_TEMPS.IntakeAirTemp': (s) => s.intakeAirTempC,
  'ENGINE_TEMPS.AmbientTemp': (s) => s.ambientTempC,
  'FUEL_STATUS.FuelLevel': (s) => s.fuelLevelPct,
  'FUEL_STATUS.FuelRemaining': (s) => s.fuelLiters,
  'FUEL_STATUS.FuelRate': (s) => s.fuelRateLph,
  'FUEL_STATUS.FuelConsumptionAvg': (s) => s.fuelConsumptionAvgL100km,
  'FUEL_STATUS.LowFuelWarning': (s) => Number(s.lowFuelWarning),
  'ODOMETER.Odometer': (s) => s.odometerKm,
  'ODOMETER.TripDistance': (s) => s.tripKm,
  'GNSS_POSITION.Latitude': (s) => s.latitudeDeg,
  'GNSS_POSITION.Longitude': (s) => s.longitudeDeg,
  'GNSS_MOTION.Heading': (s) => s.headingDeg,
  'GNSS_MOTION.GnssSpeed': (s) => s.speedKph,
  'GNSS_MOTION.Altitude': (s) => s.altitudeM,
  'GNSS_MOTION.SatellitesInUse': (s) => s.gnssSatellites,
  'GNSS_MOTION.FixType': (s) => s.gnssFix,
  'GNSS_MOTION.Hdop': (s) => s.gnssHdop,
  'ECU_DIAG_STATUS.DiagPage': (_s, sent) => ['Electrical', 'Runtime', 'Faults', 'Identity'][sent % 4]!,
  'ECU_DIAG_STATUS.BatteryVoltage': (s) => s.batteryVoltageV,
  'ECU_DIAG_STATUS.AlternatorCurrent': (s) => s.alternatorCurrentA,
  'ECU_DIAG_STATUS.EcuTemperature': (s) => s.ecuTempC,
  'ECU_DIAG_STATUS.EngineHours': (s) => s.engineHours,
  'ECU_DIAG_STATUS.IgnitionCycles': (s) => s.ignitionCycles,
  'ECU_DIAG_STATUS.ActiveDtcCount': () => 0,
  'ECU_DIAG_STATUS.MilOn': () => 0,
  'ECU_DIAG_STATUS.FirstDtc': () => 0,
  'ECU_DIAG_STATUS.SoftwareMajor': () => 2,
  'ECU_DIAG_STATUS.SoftwareMinor': () => 4,
  'ECU_DIAG_STATUS.SoftwarePatch': () => 1,
  'ECU_DIAG_STATUS.CalibrationId': () => 0x5d3a1c07,
};

/** Distance counters show completed distance (truncated), everything else is rounded to the nearest step. */
const TRUNCATED = new Set(['ODOMETER.Odometer', 'ODOMETER.TripDistance']);

interface Sent {
  frame: CanFrame;
  /** State the frame was built from (a copy). */
  state: VehicleState;
}

async function drive(options: { seconds: number; seed?: number; dbcPath?: string }): Promise<{ vehicle: SimulatedVehicle; sent: Sent[]; wallMs: number }> {
  const vehicle = new SimulatedVehicle({
    bus: 'vcan0',
    realtime: false,
    durationS: options.seconds,
    seed: options.seed ?? 5,
    startTime: START,
    dbcPath: options.dbcPath,
  });
  const sent: Sent[] = [];
  const t0 = performance.now();
  await vehicle.run((frame) => sent.push({ frame: cloneFrame(frame), state: { ...vehicle.state } }));
  return { vehicle, sent, wallMs: performance.now() - t0 };
}

describe('SimulatedVehicle, 60 s of simulated time as fast as possible', async () => {
  const { vehicle, sent, wallMs } = await drive({ seconds: 60 });
  const db = vehicle.database;

  it('sends every message of the DBC at its cycle time', (t) => {
    t.diagnostic(`${sent.length} frames in ${wallMs.toFixed(0)} ms: ${Math.round(sent.length / (wallMs / 1000))} frames/s`);
    assert.equal(db.messages.length, 12);
    for (const codec of db.messages) {
      const { message } = codec;
      const frames = sent.filter((s) => s.frame.id === message.id).map((s) => s.frame);
      const expected = 60_000 / message.cycleTime!;
      assert.ok(Math.abs(frames.length - expected) <= 1, `${message.name}: ${frames.length} frames, expected ${expected}`);
      for (let i = 1; i < frames.length; i++) {
        const gapMs = (frames[i]!.ts - frames[i - 1]!.ts) * 1000;
        assert.ok(Math.abs(gapMs - message.cycleTime!) < 1e-3, `${message.name}: gap ${gapMs} ms`);
      }
      for (const f of frames) {
        assert.equal(f.bus, 'vcan0');
        assert.equal(f.extended, false);
        assert.equal(f.dlc, message.length);
        assert.equal(f.data.length, message.length);
      }
    }
    // 10 ms engine data, 20 ms chassis, … : 294 frames per second on this DBC.
    assert.equal(sent.length, 60 * 294);
    assert.ok(sent[0]!.frame.ts >= START && sent[sent.length - 1]!.frame.ts < START + 60);
    for (let i = 1; i < sent.length; i++) assert.ok(sent[i]!.frame.ts >= sent[i - 1]!.frame.ts, 'frames in time order');
    assert.equal(vehicle.simulatedTimeS, 60);
  });

  it('every frame decodes back to the drive-cycle state it was built from, within one step of resolution', () => {
    const covered = new Set<string>();
    const sentPerMessage = new Map<number, number>();
    for (const { frame, state } of sent) {
      const codec = db.find(frame.id, frame.extended)!;
      const index = sentPerMessage.get(frame.id) ?? 0;
      sentPerMessage.set(frame.id, index + 1);
      const decoded: Record<string, SignalValue> = codec.decode(frame.data, { choices: true });
      for (const [name, value] of Object.entries(decoded)) {
        const key = `${codec.message.name}.${name}`;
        const expect = EXPECTED[key];
        assert.ok(expect, `no expectation for ${key}`);
        covered.add(key);
        const want = expect(state, index);
        const signal = codec.message.signals.find((s) => s.name === name)!;
        if (typeof want === 'string') {
          assert.equal(value, want, `${key} at ${frame.ts}`);
          continue;
        }
        assert.equal(typeof value, 'number', `${key}: ${String(value)}`);
        const step = signal.factor;
        const got = value as number;
        if (TRUNCATED.has(key)) {
          assert.ok(got <= want + 1e-6 && want - got < step + 1e-6, `${key}: ${got} for ${want}`);
        } else if (key === 'GNSS_MOTION.Heading') {
          // Saturates at 359.99 just below north.
          const diff = Math.abs(((got - want + 540) % 360) - 180);
          assert.ok(diff <= 0.01 + 1e-9, `${key}: ${got} for ${want}`);
        } else {
          assert.ok(Math.abs(got - want) <= step / 2 + 1e-9 * Math.max(1, Math.abs(want)), `${key}: ${got} for ${want} at ${frame.ts}`);
        }
      }
    }
    const all = db.messages.flatMap((c) => c.message.signals.map((s) => `${c.message.name}.${s.name}`));
    assert.deepEqual([...covered].sort(), all.sort(), 'every signal of the DBC appeared');
  });

  it('walks the multiplexed ECU_DIAG_STATUS through all four pages in turn', () => {
    const codec = db.byName('ECU_DIAG_STATUS')!;
    const pages = sent.filter((s) => s.frame.id === codec.message.id).map((s) => codec.decode(s.frame.data).DiagPage);
    assert.equal(pages.length, 240);
    assert.deepEqual(pages.slice(0, 8), [0, 1, 2, 3, 0, 1, 2, 3]);
    for (const page of [0, 1, 2, 3]) assert.equal(pages.filter((p) => p === page).length, 60);
    // Each page carries only its own signals.
    const runtime = sent.find((s) => s.frame.id === codec.message.id && codec.decode(s.frame.data).DiagPage === 1)!;
    assert.deepEqual(Object.keys(codec.decode(runtime.frame.data)), ['DiagPage', 'EngineHours', 'IgnitionCycles']);
  });

  it('carries a start-up: ignition OFF → ACC → ON → START, then the engine idles', () => {
    const body = db.byName('BODY_STATUS')!;
    const engine = db.byName('ENGINE_DATA')!;
    const ignition: string[] = [];
    for (const s of sent.filter((x) => x.frame.id === body.message.id)) {
      const state = body.decode(s.frame.data, { choices: true }).IgnitionState as string;
      if (ignition[ignition.length - 1] !== state) ignition.push(state);
    }
    assert.deepEqual(ignition.slice(0, 5), ['OFF', 'ACC', 'ON', 'START', 'ON']);
    const rpm = sent.filter((x) => x.frame.id === engine.message.id).map((s) => engine.decode(s.frame.data).EngineSpeed as number);
    assert.equal(rpm[0], 0);
    assert.ok(Math.max(...rpm) > 1500, 'the car drives off within the minute');
  });
});

describe('SimulatedVehicle', () => {
  it('sends identical frames for the same seed', async () => {
    const hex = (sent: Sent[]): string[] => sent.map((s) => `${s.frame.ts} ${s.frame.id} ${Buffer.from(s.frame.data).toString('hex')}`);
    const a = await drive({ seconds: 10, seed: 11 });
    const b = await drive({ seconds: 10, seed: 11 });
    const c = await drive({ seconds: 10, seed: 12 });
    assert.deepEqual(hex(b.sent), hex(a.sent));
    assert.notDeepEqual(hex(c.sent), hex(a.sent));
  });

  it('sends any DBC: 100 ms without a cycle time, extended IDs, undriven signals at their start value, mux pages in turn', async () => {
    const dir = makeTempDir('sim-dbc-');
    const dbcPath = path.join(dir, 'other.dbc');
    writeFileSync(
      dbcPath,
      [
        'VERSION ""',
        'BS_:',
        'BU_: GW',
        'BO_ 2566844926 Status: 8 GW',
        ' SG_ Level : 0|8@1+ (1,0) [0|255] "" GW',
        ' SG_ Temp : 8|8@1+ (1,-40) [-40|215] "degC" GW',
        'BO_ 1536 Muxed: 4 GW',
        ' SG_ Page M : 0|8@1+ (1,0) [0|255] "" GW',
        ' SG_ A m5 : 8|16@1+ (1,0) [0|65535] "" GW',
        ' SG_ B m9 : 8|16@1- (1,0) [-32768|32767] "" GW',
        'BA_DEF_ SG_ "GenSigStartValue" INT 0 255;',
        'BA_ "GenSigStartValue" SG_ 2566844926 Level 77;',
        '',
      ].join('\n'),
    );
    const { vehicle, sent } = await drive({ seconds: 2, dbcPath });
    assert.equal(vehicle.name, 'sim:other.dbc');
    const status = sent.filter((s) => s.frame.extended);
    const muxed = sent.filter((s) => !s.frame.extended);
    assert.equal(status.length, 20);
    assert.equal(muxed.length, 20);
    assert.equal(status[0]!.frame.id, 0x18fef1fe);
    const statusCodec = vehicle.database.byName('Status')!;
    assert.deepEqual(statusCodec.decode(status[0]!.frame.data), { Level: 77, Temp: -40 });
    const muxCodec = vehicle.database.byName('Muxed')!;
    assert.deepEqual(
      muxed.slice(0, 4).map((s) => muxCodec.decode(s.frame.data).Page),
      [5, 9, 5, 9],
    );
  });

  it('paces frames by the wall clock in real time, scaled by the speed factor', async () => {
    const vehicle = new SimulatedVehicle({ bus: 'can0', realtime: true, speed: 10, durationS: 3, startTime: START });
    let frames = 0;
    const t0 = performance.now();
    await vehicle.run(() => frames++);
    const wallMs = performance.now() - t0;
    assert.equal(frames, 3 * 294);
    // 3 s of simulated time at 10× is 300 ms of wall time (plus timer granularity).
    assert.ok(wallMs >= 290 && wallMs < 1500, `${wallMs} ms`);
  });

  it('stops promptly when aborted, in real time and flat out', async () => {
    for (const realtime of [true, false]) {
      const vehicle = new SimulatedVehicle({ bus: 'can0', realtime, startTime: START });
      const stop = new AbortController();
      let frames = 0;
      setTimeout(() => stop.abort(), 150);
      const t0 = performance.now();
      await vehicle.run(() => frames++, stop.signal);
      const wallMs = performance.now() - t0;
      assert.ok(wallMs < 1000, `${realtime ? 'real time' : 'flat out'}: stopped after ${wallMs} ms`);
      assert.ok(frames > 0);
      // A second run continues the same drive.
      const simulated = vehicle.simulatedTimeS;
      const again = new AbortController();
      again.abort();
      await vehicle.run(() => frames++, again.signal);
      assert.equal(vehicle.simulatedTimeS, simulated);
    }
  });

  it('loads the demo DBC from the package by default', () => {
    const vehicle = new SimulatedVehicle({ bus: 'can0' });
    assert.equal(vehicle.name, 'sim:demo');
    assert.equal(vehicle.database.db.file, DEMO_DBC_PATH);
    assert.ok(DEMO_DBC_PATH.endsWith(path.join('device-config', 'dbc', 'demo_vehicle.dbc')));
  });
});

describe('[18.sim] SimulatedVehicle at a fleet rate (rateHz)', () => {
  it('[18.sim] sends each message at most rateHz times a second, the slower ones at their own cycle, while the car drives', async () => {
    const full = new SimulatedVehicle({ bus: 'vcan0', realtime: false, durationS: 120, seed: 3, startTime: START });
    const fleet = new SimulatedVehicle({ bus: 'vcan0', realtime: false, durationS: 120, seed: 3, startTime: START, rateHz: 2 });
    const counts = new Map<number, number>();
    await full.run(() => undefined);
    await fleet.run((frame) => counts.set(frame.id, (counts.get(frame.id) ?? 0) + 1));
    for (const codec of fleet.database.messages) {
      const { message } = codec;
      const expected = 120_000 / Math.max(500, message.cycleTime!);
      assert.ok(Math.abs((counts.get(message.id) ?? 0) - expected) <= 1, `${message.name}: ${counts.get(message.id)} frames, expected ${expected}`);
    }
    // Coarser steps of the same drive cycle: the same start, and the car drives (the trajectory differs from the
    // full rate's: the phases end on other steps).
    const startKm = new SimulatedVehicle({ bus: 'vcan0', seed: 3 }).state.odometerKm;
    assert.ok(fleet.state.odometerKm - startKm > 0.5, `${fleet.state.odometerKm - startKm} km in two minutes`);
    assert.ok(full.state.odometerKm - startKm > 0.5, `${full.state.odometerKm - startKm} km in two minutes at full rate`);
  });

  it('[18.sim] refuses a rate it cannot keep, naming it', () => {
    assert.throws(() => new SimulatedVehicle({ bus: 'vcan0', rateHz: 0 }), /simulator rate must be above 0 and at most 100 Hz, got 0/);
    assert.throws(() => new SimulatedVehicle({ bus: 'vcan0', rateHz: 500 }), /got 500/);
  });
});
