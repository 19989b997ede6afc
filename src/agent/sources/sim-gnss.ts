/**
 * Adapter plug-in `sim-gnss`: the simulated car's GNSS receiver (src/sim/gnss-receiver.ts), in the agent's own process:
 * each epoch's NMEA goes through the same reader and assembler as a real receiver's (src/gnss/), and the fixes give the
 * same `<name>.gnss.<key>` values. With the simulated bus's seed it drives the same drive cycle along the demo route,
 * so the position moves as the bus's speed says. It cannot fail: no port, no device.
 */
import { z } from 'zod';
import { setTimeout as delay } from 'node:timers/promises';
import { FixAssembler } from '../../gnss/fix-assembler.js';
import { NmeaReader } from '../../gnss/nmea-reader.js';
import { SimulatedReceiver } from '../../sim/gnss-receiver.js';
import { positionParts } from './gnss.js';
import type { AdapterType } from './source-type.js';

const schema = z
  .strictObject({
    type: z.literal('sim-gnss').describe('The kind of adapter: sim-gnss (the simulated car’s receiver).'),
    name: z.string().min(1).describe('Name the agent reports this receiver by, and the prefix of its values (`gnss` gives gnss.gnss.lat; gnss.lat reads it).'),
    seed: z.number().int().optional().describe("Seed of the drive cycle; the simulated bus's seed drives the same drive. Default 1."),
    speed: z.number().positive().optional().describe('Time factor: 2 drives twice as fast as real time. Default 1.'),
    rateHz: z.number().positive().max(20).optional().describe('Epochs per second. Default 1.'),
  })
  .describe('The simulated car’s GNSS receiver, driving the demo route (Munich’s old-town ring) with the drive cycle of the simulated bus.');

export type SimGnssConfig = z.output<typeof schema>;

export const simGnssAdapter: AdapterType<SimGnssConfig> = {
  kind: 'adapter',
  type: 'sim-gnss',
  schema,
  obdPolling: () => null,
  create(config, { log, offer }) {
    const { take, status } = positionParts(config.name, offer, log);
    const assembler = new FixAssembler({ onFix: take });
    const reader = new NmeaReader((sentence) => assembler.push(sentence));
    const receiver = new SimulatedReceiver({ seed: config.seed ?? 1 });
    const periodMs = 1000 / (config.rateHz ?? 1);
    const speed = config.speed ?? 1;
    let state = 'idle';
    return {
      obd: null,
      async run(signal) {
        state = 'receiving';
        let last = performance.now();
        while (!signal.aborted) {
          const now = performance.now();
          receiver.step(((now - last) / 1000) * speed);
          last = now;
          reader.write(`${receiver.epoch(Date.now()).join('\r\n')}\r\n`);
          assembler.flush();
          await delay(periodMs, undefined, { signal }).catch(() => undefined);
        }
      },
      status: () => status(state, 'simulated'),
    };
  },
};
