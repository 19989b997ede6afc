/** The drive-cycle model: reproducible from a seed, and physically plausible step by step. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEMO_CAR, DriveCycle, type DrivePhase, type VehicleState } from '../../src/sim/drive-cycle.js';

const DT = 0.01;

function snapshots(seed: number, seconds: number, everyS: number): VehicleState[] {
  const cycle = new DriveCycle({ seed });
  const out: VehicleState[] = [];
  const perSnapshot = Math.round(everyS / DT);
  for (let i = 1; i <= seconds / DT; i++) {
    cycle.step(DT);
    if (i % perSnapshot === 0) out.push({ ...cycle.state });
  }
  return out;
}

/** Metres between two WGS-84 points (equirectangular: exact enough over a few metres). */
function metresBetween(lat1: number, lon1: number, lat2: number, lon2: number): { north: number; east: number } {
  const R = 6_371_000;
  const rad = Math.PI / 180;
  return { north: (lat2 - lat1) * rad * R, east: (lon2 - lon1) * rad * R * Math.cos(lat1 * rad) };
}

describe('DriveCycle', () => {
  it('is deterministic: the same seed gives the same drive, another seed another drive', () => {
    const first = snapshots(7, 300, 1);
    const again = snapshots(7, 300, 1);
    const other = snapshots(8, 300, 1);
    assert.deepEqual(again, first);
    assert.notDeepEqual(other, first);
    // The seed also picks the car's starting point in life: odometer and fuel differ.
    assert.notEqual(other[0]!.odometerKm, first[0]!.odometerKm);
  });

  describe('over 45 minutes of driving (seed 3)', () => {
    const cycle = new DriveCycle({ seed: 3 });
    const s = cycle.state;
    const start = { ...s };
    const phases = new Set<DrivePhase>();
    const gears = new Set<number>();
    const ignitionSequence: string[] = [s.ignition];
    const violations: string[] = [];
    let integratedKm = 0;
    let burntLiters = 0;
    let maxCoolant = -Infinity;
    let doorOpenings = 0;
    let hardBrakingSteps = 0;
    let warmIdleSamples: number[] = [];
    let gnssChecks = 0;
    let lockedSamples = 0;
    let lockedSteps = 0;
    let prev = { ...s };

    for (let i = 0; i < (45 * 60) / DT; i++) {
      cycle.step(DT);
      const t = s.timeS.toFixed(2);
      phases.add(s.phase);
      if (s.gear > 0) gears.add(s.gear);
      if (s.ignition !== ignitionSequence[ignitionSequence.length - 1]) ignitionSequence.push(s.ignition);

      if (s.speedKph < 0) violations.push(`${t}: speed ${s.speedKph}`);
      if (s.engineRunning && (s.engineRpm < 700 || s.engineRpm > DEMO_CAR.redlineRpm)) {
        violations.push(`${t}: rpm ${s.engineRpm} with the engine running`);
      }
      if (!s.engineRunning && s.ignition !== 'START' && s.engineRpm > prev.engineRpm + 1e-9) {
        violations.push(`${t}: rpm rising to ${s.engineRpm} with the engine off`);
      }
      const anyDoorOpen = s.doorFlOpen || s.doorFrOpen || s.doorRlOpen || s.doorRrOpen || s.trunkOpen;
      if (anyDoorOpen && s.speedKph !== 0) violations.push(`${t}: door open at ${s.speedKph} km/h`);
      const prevDoorOpen = prev.doorFlOpen || prev.doorFrOpen || prev.doorRlOpen || prev.doorRrOpen || prev.trunkOpen;
      if (anyDoorOpen && !prevDoorOpen) doorOpenings++;
      if (s.gearLever !== prev.gearLever && (s.speedKph !== 0 || prev.speedKph !== 0)) {
        violations.push(`${t}: lever ${prev.gearLever} -> ${s.gearLever} while moving`);
      }
      if (s.gearLever === 'D' && s.speedKph > 0 && s.gear === 0) violations.push(`${t}: moving in D without a gear`);
      if (s.odometerKm < prev.odometerKm) violations.push(`${t}: odometer went back`);
      if (s.fuelLiters > prev.fuelLiters) violations.push(`${t}: fuel rose`);
      if (s.coolantTempC > 95) violations.push(`${t}: coolant ${s.coolantTempC}`);
      if (s.brakePressureBar < 0 || s.throttlePct < 0 || s.throttlePct > 100) violations.push(`${t}: pedal out of range`);
      // Braking harder than road load and engine drag can explain needs the brakes.
      if (s.accelMps2 < -1.2) {
        hardBrakingSteps++;
        if (s.brakePressureBar < 5) violations.push(`${t}: decelerating at ${s.accelMps2} with ${s.brakePressureBar} bar`);
      }
      // Converter locked for half a second (lock-up itself is smooth), no shift: engine speed is wheel speed through
      // gear and final drive.
      lockedSteps = s.torqueConverterLocked && !s.shiftInProgress ? lockedSteps + 1 : 0;
      if (lockedSteps > 50 && Math.abs(s.accelMps2) < 0.3) {
        const wheelRpm = (s.speedKph / 3.6 / (2 * Math.PI * DEMO_CAR.wheelRadiusM)) * 60;
        const geared = wheelRpm * DEMO_CAR.gearRatios[s.gear - 1]! * DEMO_CAR.finalDrive;
        if (Math.abs(s.engineRpm - geared) / geared > 0.06) violations.push(`${t}: rpm ${s.engineRpm} vs geared ${geared}`);
        lockedSamples++;
      }
      if (s.engineRunning && s.coolantTempC > 60 && s.gearLever === 'P' && s.phase === 'stopped') {
        warmIdleSamples.push(s.engineRpm);
      }

      integratedKm += ((prev.speedKph + s.speedKph) / 2) * (DT / 3600);
      burntLiters += (s.fuelRateLph * DT) / 3600;
      maxCoolant = Math.max(maxCoolant, s.coolantTempC);

      // GNSS: the position moves by the integrated distance, along the heading (checked on straight steps).
      if (s.speedKph > 20 && Math.abs(s.yawRateDps) < 0.5) {
        const d = metresBetween(prev.latitudeDeg, prev.longitudeDeg, s.latitudeDeg, s.longitudeDeg);
        const expectedM = ((prev.speedKph + s.speedKph) / 2 / 3.6) * DT;
        const movedM = Math.hypot(d.north, d.east);
        if (Math.abs(movedM - expectedM) > 1e-3 * expectedM + 1e-6) violations.push(`${t}: moved ${movedM} m, drove ${expectedM} m`);
        const bearing = ((Math.atan2(d.east, d.north) * 180) / Math.PI + 360) % 360;
        const off = Math.abs(((bearing - s.headingDeg + 540) % 360) - 180);
        if (off > 0.5) violations.push(`${t}: moved towards ${bearing}°, heading ${s.headingDeg}°`);
        gnssChecks++;
      }
      if (s.speedKph === 0 && prev.speedKph === 0 && (s.latitudeDeg !== prev.latitudeDeg || s.longitudeDeg !== prev.longitudeDeg)) {
        violations.push(`${t}: position moved while stationary`);
      }
      prev = { ...s };
    }

    it('never breaks a physical rule (speed, rpm, doors, lever, odometer, fuel, coolant, brakes, GNSS)', () => {
      assert.deepEqual(violations.slice(0, 10), []);
      assert.ok(lockedSamples > 10_000, `${lockedSamples} steady locked-converter samples`);
      assert.ok(hardBrakingSteps > 500, `${hardBrakingSteps} hard braking steps`);
      assert.ok(gnssChecks > 10_000, `${gnssChecks} GNSS checks`);
    });

    it('goes through the whole scenario: key on, crank, warm up, stop-and-go, cruise, all six gears, park', () => {
      const all: DrivePhase[] = ['parked', 'accessory', 'ignition-on', 'cranking', 'warm-up', 'pull-away', 'cruise', 'braking', 'stopped', 'shut-down'];
      assert.deepEqual([...phases].sort(), [...all].sort());
      assert.deepEqual([...gears].sort(), [1, 2, 3, 4, 5, 6]);
      assert.deepEqual(ignitionSequence.slice(0, 6), ['OFF', 'ACC', 'ON', 'START', 'ON', 'OFF']);
      assert.ok(doorOpenings >= 3, `${doorOpenings} door openings`);
    });

    it('warms the coolant from ambient to about 90 °C and idles at about 750 rpm when warm', () => {
      assert.equal(start.coolantTempC, start.ambientTempC);
      assert.ok(maxCoolant > 88 && maxCoolant < 93, `max coolant ${maxCoolant}`);
      assert.ok(warmIdleSamples.length > 100, `${warmIdleSamples.length} warm idle samples`);
      warmIdleSamples = warmIdleSamples.slice(100); // let the rpm settle after the lever change
      for (const rpm of warmIdleSamples) assert.ok(Math.abs(rpm - DEMO_CAR.idleRpm) < 15, `warm idle at ${rpm} rpm`);
    });

    it('integrates distance into the odometer and fuel flow into the tank level', () => {
      assert.ok(integratedKm > 10, `${integratedKm} km driven`);
      assert.ok(Math.abs(s.odometerKm - start.odometerKm - integratedKm) < 1e-6, `odometer ${s.odometerKm - start.odometerKm} vs ${integratedKm}`);
      assert.ok(Math.abs(s.tripKm - integratedKm) < 1e-6);
      assert.ok(Math.abs(start.fuelLiters - s.fuelLiters - burntLiters) < 1e-6);
      assert.ok(Math.abs(s.fuelLevelPct - (s.fuelLiters / DEMO_CAR.tankLiters) * 100) < 1e-9);
      // A petrol compact in town: somewhere between 5 and 15 l/100 km.
      const perHundred = (burntLiters / integratedKm) * 100;
      assert.ok(perHundred > 5 && perHundred < 15, `${perHundred} l/100 km`);
      assert.ok(Math.abs(s.fuelConsumptionAvgL100km - perHundred) < 1e-6);
    });
  });
});
