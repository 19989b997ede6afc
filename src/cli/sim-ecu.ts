/**
 * `telematics-agent sim-ecu`: a simulated engine ECU answering OBD-II on a SocketCAN interface, its values taken from
 * the demo car's drive cycle running in real time. A bench stand-in for a car: the agent's poller, the `obd` command
 * or any scan tool can talk to it over vcan or a real CAN adapter.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { SocketCanBus } from '../can/socketcan.js';
import { obdEcuIds, type ObdCanAddressing } from '../obd/can-client.js';
import { SimulatedObdEcu } from '../sim/obd-ecu.js';
import {
  checkCanInterface,
  checkEcuForAddressing,
  parseAddressing,
  parseEcuAddress,
  parseInteger,
  parseInterfaceName,
  parsePositiveNumber,
} from './can-interface.js';
import { endpointStateReporter } from '../can/interface-report.js';
import { collectDtc, demoCarAt, driveUntilStopped } from './sim-options.js';

interface SimEcuOptions {
  iface: string;
  addressing: ObdCanAddressing;
  ecu?: number;
  legacy: boolean;
  dtc: string[];
  seed: number;
  speed: number;
  start: number;
}

function parseStartSeconds(text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < 0 || value > 86_400) throw new InvalidArgumentError('expected seconds, 0-86400');
  return value;
}

function hexId(id: number, extended: boolean): string {
  return `0x${id
    .toString(16)
    .toUpperCase()
    .padStart(extended ? 8 : 3, '0')}`;
}

export function registerSimEcuCommand(program: Command): void {
  program
    .command('sim-ecu')
    .description('answer OBD-II requests on a SocketCAN interface as a simulated engine ECU of the demo car, until Ctrl-C')
    .requiredOption('-i, --iface <name>', 'SocketCAN interface, e.g. vcan0', parseInterfaceName)
    .option('--addressing <mode>', 'ISO 15765-4 identifiers: 11-bit or 29-bit', parseAddressing, '11-bit' as ObdCanAddressing)
    .option('--ecu <address>', 'ECU address: 0-7 with 11-bit identifiers (default 0), 0x00-0xFF with 29-bit ones (default 0x10)', parseEcuAddress)
    .option('--legacy', 'refuse multi-PID requests with NRC 0x12, as ECUs before 2008 do', false)
    .option('--dtc <codes...>', 'stored DTCs to report, e.g. --dtc P0133 C0035', collectDtc, [])
    .option('--seed <n>', 'drive cycle seed: the same seed drives the same way', parseInteger, 1)
    .option('--speed <factor>', 'time factor: 2 drives twice as fast as the wall clock', parsePositiveNumber, 1)
    .option('--start <seconds>', 'start this far into the drive (0: parked, ignition off; the engine starts after a few seconds)', parseStartSeconds, 0)
    .action(async (opts: SimEcuOptions) => {
      if (opts.ecu !== undefined) checkEcuForAddressing(opts.ecu, opts.addressing);
      checkCanInterface(opts.iface, 'wait');
      const note = (message: string): void => void process.stderr.write(`sim-ecu: ${message}\n`);

      const car = demoCarAt(opts.seed, opts.start);

      const bus = new SocketCanBus(opts.iface, { onStateChange: endpointStateReporter(note) });
      const ecu = new SimulatedObdEcu(bus, {
        vehicle: car,
        addressing: opts.addressing,
        ...(opts.ecu !== undefined ? { ecu: opts.ecu } : {}),
        legacy: opts.legacy,
        dtcs: { stored: opts.dtc },
      });
      const extended = opts.addressing === '29-bit';
      const { requestId, responseId } = obdEcuIds(opts.addressing, ecu.ecu);
      note(
        `ECU ${ecu.ecu} on ${opts.iface}: requests on ${hexId(ecu.functionalId, extended)} and ${hexId(requestId, extended)}, ` +
          `answers on ${hexId(responseId, extended)}${opts.legacy ? ', one PID per request' : ''}` +
          `${opts.dtc.length > 0 ? `, DTCs ${opts.dtc.join(' ')}` : ''}; Ctrl-C stops it`,
      );

      await driveUntilStopped(car, opts.speed);
      ecu.close();
      const c = ecu.counters;
      note(
        `stopped: ${c.functionalRequests} functional and ${c.physicalRequests} physical requests, ` +
          `${c.unanswered} left unanswered, ${c.negativeResponses} negative responses, ${c.sendErrors} answers not sent`,
      );
    });
}
