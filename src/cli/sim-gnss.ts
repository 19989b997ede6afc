/**
 * `telematics-agent sim-gnss`: the simulated car's GNSS receiver on a pseudo-terminal (src/sim/gnss-receiver.ts: the
 * demo drive cycle along the demo route), writing NMEA at 1 Hz or `--rate`. A bench stand-in for a receiver: `gnss
 * --port`, the agent's `gnss` adapter, gpsd or any NMEA program open the printed path as they would /dev/ttyUSB1.
 * Needs socat (Debian package socat). Runs until Ctrl-C.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { SimulatedReceiver } from '../sim/gnss-receiver.js';
import { NmeaPty } from '../sim/nmea-pty.js';
import { parseInteger, parsePositiveNumber } from './can-interface.js';
import { parseBaud } from './serial-options.js';

interface SimGnssOptions {
  link: string;
  rate: number;
  baud?: number;
  seed: number;
  speed: number;
}

export function registerSimGnssCommand(program: Command): void {
  program
    .command('sim-gnss')
    .description("serve the simulated car's GNSS receiver (NMEA, driving the demo route) on a pseudo-terminal until Ctrl-C")
    .requiredOption('--link <path>', 'path of the pseudo-terminal to create (a symlink, like /dev/serial/by-id/...), e.g. /tmp/ttyGNSS')
    .option('--rate <hz>', 'epochs per second (1-20)', parsePositiveNumber, 1)
    .option('--baud <rate>', 'readable only by a host set to this baud rate, noise otherwise (a pty has none: default any)', parseBaud)
    .option('--seed <n>', 'drive cycle seed: the same seed drives the same way', parseInteger, 1)
    .option('--speed <factor>', 'time factor: 2 drives twice as fast as the wall clock', parsePositiveNumber, 1)
    .action(async (opts: SimGnssOptions) => {
      if (opts.rate > 20) throw new Error('--rate: at most 20 epochs a second');
      const note = (message: string): void => void process.stderr.write(`sim-gnss: ${message}\n`);
      const link = path.resolve(opts.link);
      const pty = new NmeaPty({ link, ...(opts.baud !== undefined ? { baudRate: opts.baud } : {}) });
      await pty.plug();
      note(`receiver on ${link} at ${opts.rate} Hz; try: telematics-agent gnss --port ${link}; Ctrl-C stops it`);
      const receiver = new SimulatedReceiver({ seed: opts.seed });
      const periodMs = 1000 / opts.rate;
      let last = performance.now();
      let epochs = 0;
      const timer = setInterval(() => {
        const now = performance.now();
        receiver.step(((now - last) / 1000) * opts.speed);
        last = now;
        pty.send(receiver.epoch(Date.now()));
        epochs++;
      }, periodMs);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      clearInterval(timer);
      await pty.close();
      note(`stopped after ${epochs} epochs${pty.dropped > 0 ? `, ${pty.dropped} sentences dropped while nobody read` : ''}`);
    });
}
