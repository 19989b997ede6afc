/**
 * `telematics-agent sim-elm327`: the project's ELM327 simulator on a pseudo-terminal, the demo car behind it driving
 * in real time. A bench stand-in for an adapter plugged into a car: `obd --port`, the agent's `obdAdapters`, or any
 * other OBD program open the printed path as they would /dev/ttyUSB0. Needs socat (Debian package socat).
 */
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { Elm327Simulator, type Elm327CarProtocol, type Elm327Profile } from '../sim/elm327.js';
import { Elm327PtyServer } from '../sim/elm327-pty.js';
import { parseInteger, parsePositiveNumber } from './can-interface.js';
import { collectDtc, demoCarAt, driveUntilStopped } from './sim-options.js';

interface SimElm327Options {
  link: string;
  protocol: Elm327CarProtocol;
  profile: Elm327Profile;
  baud?: number;
  answerMs: number;
  dtc: string[];
  seed: number;
  speed: number;
  start: number;
}

const PROFILES: readonly Elm327Profile[] = ['elm327-v1.5', 'clone-v1.5', 'clone-v2.1'];

function parseCarProtocol(text: string): Elm327CarProtocol {
  const n = Number(text);
  if (/^[3-9]$/.test(text)) return n as Elm327CarProtocol;
  throw new InvalidArgumentError('expected 3-9: 6/7 CAN 11/29-bit 500 kbit/s, 8/9 at 250 kbit/s, 3 ISO 9141-2, 4/5 KWP2000');
}

function parseProfile(text: string): Elm327Profile {
  if ((PROFILES as readonly string[]).includes(text)) return text as Elm327Profile;
  throw new InvalidArgumentError(`expected ${PROFILES.join(', ')}`);
}

function parseMs(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 10_000) throw new InvalidArgumentError('expected whole milliseconds, 0-10000');
  return n;
}

export function registerSimElm327Command(program: Command): void {
  program
    .command('sim-elm327')
    .description('serve a simulated ELM327 adapter, plugged into the demo car, on a pseudo-terminal until Ctrl-C')
    .requiredOption('--link <path>', 'path of the pseudo-terminal to create (a symlink, like /dev/serial/by-id/...), e.g. /tmp/ttyELM')
    .option('--protocol <n>', "the car's OBD protocol: 6 (CAN 11/500), 7, 8, 9, or 3, 4, 5 (ISO 9141-2, KWP2000)", parseCarProtocol, 6 as Elm327CarProtocol)
    .option('--profile <name>', `adapter firmware: ${PROFILES.join(', ')} (clones lack some commands)`, parseProfile, 'elm327-v1.5' as Elm327Profile)
    .option('--baud <rate>', 'understand only a host set to this baud rate (a pty has none: default any)', parsePositiveNumber)
    .option('--answer-ms <ms>', 'time the adapter takes to get each answer off the bus', parseMs, 25)
    .option('--dtc <codes...>', 'stored DTCs to report, e.g. --dtc P0133 P0300', collectDtc, [])
    .option('--seed <n>', 'drive cycle seed: the same seed drives the same way', parseInteger, 1)
    .option('--speed <factor>', 'time factor: 2 drives twice as fast as the wall clock', parsePositiveNumber, 1)
    .option('--start <seconds>', 'start this far into the drive (the engine starts after a few seconds)', parsePositiveNumber, 30)
    .action(async (opts: SimElm327Options) => {
      const note = (message: string): void => void process.stderr.write(`sim-elm327: ${message}\n`);
      const car = demoCarAt(opts.seed, opts.start);

      const sim = new Elm327Simulator({
        vehicle: car,
        protocol: opts.protocol,
        profile: opts.profile,
        dtcs: { stored: opts.dtc },
        timing: { answerMs: opts.answerMs },
      });
      const link = path.resolve(opts.link);
      const server = new Elm327PtyServer(sim, { link, ...(opts.baud !== undefined ? { baudRate: opts.baud } : {}) });
      await server.plug();
      note(`${opts.profile} on ${link} (car protocol ${opts.protocol}); try: telematics-agent obd --port ${link}; Ctrl-C stops it`);

      await driveUntilStopped(car, opts.speed);
      await server.close();
      sim.close();
      const c = sim.counters;
      note(`stopped: ${c.commands} commands, ${c.obdRequests} OBD requests, ${c.unknownCommands} answered ?, ${c.interrupted} interrupted`);
    });
}
