/**
 * Source plug-in `sim`: the simulated demo vehicle (src/sim/vehicle.ts), sending every message of the bus DBC at its
 * cycle time, in real time, from a repeatable drive cycle. Its bus exists only inside the agent, so a frame a remote
 * command writes is received back as the bus's own traffic. It has no link to report, and cannot fail to open.
 */
import { z } from 'zod';
import { SimulatedVehicle } from '../../sim/vehicle.js';
import type { BusSourceType } from './source-type.js';

const schema = z
  .strictObject({
    type: z.literal('sim'),
    speed: z.number().positive().optional().describe('Time factor: 2 drives the simulated car twice as fast as real time. Default 1.'),
    seed: z.number().int().optional().describe('Seed of the drive cycle; the same seed replays the same drive. Default 1.'),
    rateHz: z
      .number()
      .positive()
      .max(100)
      .optional()
      .describe(
        "Fleet simulation: every message at most this often (Hz) and the drive cycle in 100 ms steps, a small fraction of the full bus's CPU " +
          '(telematics-ops simulate runs many cars in one process). Default: every message at its cycle time.',
      ),
  })
  .describe('The simulated demo vehicle (drive cycle), sending every message of the bus DBC at its cycle time.');

export type SimSourceConfig = z.output<typeof schema>;

export const simSource: BusSourceType<SimSourceConfig> = {
  kind: 'bus',
  type: 'sim',
  schema,
  writeRoute: () => ({ to: 'loopback' }),
  create(bus, { decoder }) {
    const source = bus.source;
    const vehicle = new SimulatedVehicle({
      database: decoder.database,
      bus: bus.name,
      speed: source.speed,
      seed: source.seed,
      realtime: true,
      rateHz: source.rateHz,
    });
    return { frames: vehicle, obd: null, link: () => null, run: (sink, signal) => vehicle.run(sink, signal) };
  },
};
