/**
 * What the simulator commands (sim-ecu, sim-elm327) share: their option parsers, and the demo car they drive in real
 * time until SIGINT or SIGTERM.
 */
import { InvalidArgumentError } from 'commander';
import { dtcToBytes } from '../obd/j1979.js';
import { DriveCycle } from '../sim/drive-cycle.js';
import { SIM_STEP_MS } from '../sim/vehicle.js';

/** The demo car `startS` seconds into its drive (the engine starts after a few seconds). */
export function demoCarAt(seed: number, startS: number): DriveCycle {
  const car = new DriveCycle({ seed });
  const stepS = SIM_STEP_MS / 1000;
  for (let k = 0, n = Math.round((startS * 1000) / SIM_STEP_MS); k < n; k++) car.step(stepS);
  return car;
}

/**
 * Drives `car` in real time (times `speed`), in the simulator's steps, until SIGINT or SIGTERM; whatever answers from
 * it reads its state when asked.
 */
export async function driveUntilStopped(car: DriveCycle, speed: number): Promise<void> {
  const stepS = SIM_STEP_MS / 1000;
  const startedAt = performance.now();
  let steps = 0;
  const drive = setInterval(() => {
    const due = Math.floor(((performance.now() - startedAt) * speed) / SIM_STEP_MS);
    for (; steps < due; steps++) car.step(stepS);
  }, SIM_STEP_MS);
  try {
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
  } finally {
    clearInterval(drive);
  }
}

/** Commander hands variadic values one at a time: each DTC is checked and collected. */
export function collectDtc(value: string, previous: string[] | undefined): string[] {
  const code = value.toUpperCase();
  try {
    dtcToBytes(code);
  } catch {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a DTC (a letter P, C, B or U and four hex digits, e.g. P0133)`);
  }
  return [...(previous ?? []), code];
}
