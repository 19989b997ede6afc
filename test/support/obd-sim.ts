/** Helpers shared by the OBD-on-CAN tests: a car on the move, frames on a MemoryCanBus. */
import type { MemoryCanBus } from '../../src/can/bus.js';
import type { CanFrame } from '../../src/can/frame.js';
import { DriveCycle } from '../../src/sim/drive-cycle.js';

/** A demo car stepped until it drives at more than 20 km/h with the engine well above idle: every PID is non-trivial. */
export function drivingCar(seed = 3): DriveCycle {
  const car = new DriveCycle({ seed });
  for (let k = 0; k < 200_000 && !(car.state.speedKph > 20 && car.state.engineRpm > 1200); k++) car.step(0.01);
  if (!(car.state.speedKph > 20)) throw new Error(`seed ${seed}: the car never got going`);
  return car;
}

/** Frames of the bus log (from `from` on) with identifier `id`, as byte arrays. */
export function framesOn(bus: MemoryCanBus, id: number, from = 0): number[][] {
  return bus.log
    .slice(from)
    .filter((f: CanFrame) => f.id === id)
    .map((f) => [...f.data]);
}

/** A single frame as ISO 15765-4 sends it: PCI length byte, payload, padding to 8 bytes. */
export function singleFrame(payload: readonly number[] | Uint8Array, padding = 0xcc): number[] {
  return [payload.length, ...payload, ...new Array<number>(7 - payload.length).fill(padding)];
}

/** Timers alive in the process (for "nothing left behind" checks). */
export function activeTimers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}
