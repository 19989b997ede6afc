/**
 * `telematics-agent obd`: one OBD-II query on a SocketCAN interface, printed as JSON. Each run discovers the ECUs
 * first (01 00), so it knows who must answer and fails early, with a clear message, when nobody does.
 */
import { Argument, InvalidArgumentError, type Command } from 'commander';
import { SocketCanBus } from '../can/socketcan.js';
import { ObdCanClient, ObdRequestError, type EcuAnswer, type ObdCanAddressing, type ObdEcuInfo } from '../obd/can-client.js';
import { MODE01_PIDS, MODE01_PIDS_BY_KEY, OBD_SERVICE, SUPPORTED_PID_BLOCKS, type PidDefinition } from '../obd/j1979.js';
import { checkCanInterface, checkEcuForAddressing, parseEcuAddress, parseInterfaceName, parseWholeMilliseconds } from './can-interface.js';

export const OBD_ACTIONS = ['read-vin', 'read-pids', 'read-dtcs', 'clear-dtcs', 'discover'] as const;
export type ObdAction = (typeof OBD_ACTIONS)[number];

interface ObdCliOptions {
  iface: string;
  addressing: ObdCanAddressing | 'auto';
  ecu?: number;
  p2: number;
}

/** A PID as typed: 12, 0x0C or rpm. */
export function parsePidArgument(text: string): PidDefinition {
  const number = /^0x[0-9a-f]{1,2}$/i.test(text) ? Number.parseInt(text, 16) : /^\d{1,3}$/.test(text) ? Number(text) : undefined;
  const def = number !== undefined ? MODE01_PIDS.get(number) : MODE01_PIDS_BY_KEY.get(text);
  if (def === undefined) {
    throw new InvalidArgumentError(
      number !== undefined
        ? `PID ${text} is not a J1979 Mode 01 PID the agent can decode`
        : `unknown PID ${JSON.stringify(text)} (names are J1979 keys such as rpm, speed, coolantTemp; numbers such as 12 or 0x0C)`,
    );
  }
  return def;
}

function parseAddressingOrAuto(text: string): ObdCanAddressing | 'auto' {
  if (text === '11-bit' || text === '29-bit' || text === 'auto') return text;
  throw new InvalidArgumentError('expected 11-bit, 29-bit or auto');
}

function hexId(id: number, extended: boolean): string {
  return `0x${id.toString(16).toUpperCase().padStart(extended ? 8 : 3, '0')}`;
}

function pidName(pid: number): string {
  return MODE01_PIDS.get(pid)?.key ?? `0x${pid.toString(16).toUpperCase().padStart(2, '0')}`;
}

/** Supported PIDs worth reading: the bitmap PIDs only say which others exist, unknown ones cannot be decoded. */
function readablePids(ecus: readonly ObdEcuInfo[]): number[] {
  const pids = new Set<number>();
  for (const ecu of ecus) for (const pid of ecu.supportedPids) if (!SUPPORTED_PID_BLOCKS.includes(pid) && MODE01_PIDS.has(pid)) pids.add(pid);
  return [...pids].sort((a, b) => a - b);
}

function errorJson(error: ObdRequestError): { code: string; error: string } {
  return { code: error.code, error: error.message };
}

function answersJson<T>(answers: EcuAnswer<T>[], field: string): Record<string, unknown>[] {
  return answers.map((a) => (a.ok ? { ecu: a.ecu, [field]: a.value } : { ecu: a.ecu, ...errorJson(a.error) }));
}

/** Runs one action and returns what to print, and whether any ECU answered it positively. */
export async function runObdAction(
  client: ObdCanClient,
  action: ObdAction,
  pids: readonly PidDefinition[],
  ecu: number | undefined,
): Promise<{ result: Record<string, unknown>; answered: boolean }> {
  const target = ecu !== undefined ? { ecu } : {};
  switch (action) {
    case 'discover': {
      const ecus = client.ecus;
      return {
        answered: ecus.length > 0,
        result: {
          ecus: ecus.map((e) => ({
            ecu: e.ecu,
            requestId: hexId(e.requestId, e.extended),
            responseId: hexId(e.responseId, e.extended),
            supportedPids: e.supportedPids.filter((pid) => !SUPPORTED_PID_BLOCKS.includes(pid)).map(pidName),
          })),
        },
      };
    }
    case 'read-pids': {
      const asked = ecu !== undefined ? client.ecus.filter((e) => e.ecu === ecu) : client.ecus;
      const list = pids.length > 0 ? pids.map((p) => p.pid) : readablePids(asked);
      if (list.length === 0) throw new Error(ecu !== undefined ? `ECU ${ecu} reports no PIDs the agent can read` : 'the ECUs report no PIDs the agent can read');
      const results = await client.readPids(list, target);
      return {
        answered: results.some((r) => r.readings.length > 0),
        result: {
          ecus: results.map((r) => ({
            ecu: r.ecu,
            pids: Object.fromEntries(r.readings.map((reading) => [reading.key ?? pidName(reading.pid), { value: reading.value, unit: reading.unit }])),
            ...(r.missing.length > 0 ? { missing: r.missing.map(pidName) } : {}),
            ...(r.error ? errorJson(r.error) : {}),
          })),
        },
      };
    }
    case 'read-vin': {
      const answers = await client.readVin(target);
      const vin = answers.find((a) => a.ok);
      return { answered: vin !== undefined, result: { vin: vin?.ok ? vin.value : null, ecus: answersJson(answers, 'vin') } };
    }
    case 'read-dtcs': {
      // Stored (confirmed), pending and permanent: the whole picture a workshop asks for, in one run.
      const stored = await client.readDtcs(OBD_SERVICE.storedDtcs, target);
      const pending = await client.readDtcs(OBD_SERVICE.pendingDtcs, target);
      const permanent = await client.readDtcs(OBD_SERVICE.permanentDtcs, target);
      return {
        answered: stored.some((a) => a.ok),
        result: { stored: answersJson(stored, 'dtcs'), pending: answersJson(pending, 'dtcs'), permanent: answersJson(permanent, 'dtcs') },
      };
    }
    case 'clear-dtcs': {
      const answers = await client.clearDtcs(target);
      return { answered: answers.some((a) => a.ok), result: { cleared: answers.map((a) => (a.ok ? { ecu: a.ecu, ok: true } : { ecu: a.ecu, ok: false, ...errorJson(a.error) })) } };
    }
  }
}

export function registerObdCommand(program: Command): void {
  program
    .command('obd')
    .description('one OBD-II query on a SocketCAN interface, printed as JSON (clear-dtcs erases the fault memory: only on purpose)')
    .addArgument(new Argument('<action>', 'what to do').choices(OBD_ACTIONS))
    .argument('[pids...]', 'read-pids only: PIDs by number (12, 0x0C) or name (rpm); default every PID the ECUs support')
    .requiredOption('--iface <name>', 'SocketCAN interface, e.g. can0', parseInterfaceName)
    .option('--addressing <mode>', 'ISO 15765-4 identifiers: 11-bit, 29-bit, or auto (try 11-bit, then 29-bit)', parseAddressingOrAuto, '11-bit' as const)
    .option('--ecu <address>', 'ask this ECU only (physical addressing): 0-7 with 11-bit identifiers, 0x00-0xFF with 29-bit ones', parseEcuAddress)
    .option('--p2 <ms>', "wait for the ECUs' first answer (ISO 15765-4 P2CAN is 50 ms; raise it for slow gateways)", parseWholeMilliseconds, 50)
    .action(async (action: ObdAction, pidArgs: string[], opts: ObdCliOptions) => {
      if (pidArgs.length > 0 && action !== 'read-pids') throw new Error(`${action} takes no PIDs (only read-pids does): ${pidArgs.join(' ')}`);
      const pids = pidArgs.map(parsePidArgument);
      if (opts.ecu !== undefined && opts.addressing !== 'auto') checkEcuForAddressing(opts.ecu, opts.addressing);
      // One-shot: a missing or down interface is an answer, not something to wait for.
      checkCanInterface(opts.iface, 'fail');

      const client = new ObdCanClient(new SocketCanBus(opts.iface), { addressing: opts.addressing, p2Ms: opts.p2 });
      const stop = (): void => client.close();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        try {
          await client.discover();
        } catch (err) {
          if (err instanceof ObdRequestError && err.code === 'timeout') {
            throw new Error(`${err.message}: is the ignition on, and the addressing right (--addressing 29-bit or auto)?`);
          }
          throw err;
        }
        const addressing = client.addressingInUse!;
        if (opts.ecu !== undefined) checkEcuForAddressing(opts.ecu, addressing);
        const { result, answered } = await runObdAction(client, action, pids, opts.ecu);
        process.stdout.write(`${JSON.stringify({ interface: opts.iface, addressing, ...result }, null, 2)}\n`);
        // The JSON says what each ECU answered; the exit status says whether the question got an answer at all.
        if (!answered) process.exitCode = 1;
      } finally {
        process.removeListener('SIGINT', stop);
        process.removeListener('SIGTERM', stop);
        client.close();
      }
    });
}
