/**
 * `telematics-agent obd`: OBD-II from the command line, through a SocketCAN interface (`--iface`) or an ELM327 adapter
 * on a serial port (`--port`). Without an action it prints what a firmware engineer wants first on a new car: VIN,
 * protocol, supported PIDs, live values and DTCs. With one, a single query as JSON. Each run finds the ECUs first
 * (01 00), so it knows who must answer and fails early, with a clear message, when nobody does.
 */
import { Argument, InvalidArgumentError, type Command } from 'commander';
import { SocketCanBus } from '../can/socketcan.js';
import { ObdCanClient, ObdRequestError, type EcuAnswer, type ObdCanAddressing, type ObdEcuInfo } from '../obd/can-client.js';
import type { ObdClient } from '../obd/client.js';
import { Elm327Client, type Elm327Info } from '../obd/elm327.js';
import { formatPidValue } from '../agent/obd-polling.js';
import { MODE01_PIDS, MODE01_PIDS_BY_KEY, OBD_SERVICE, SUPPORTED_PID_BLOCKS, type PidDefinition, type PidValue } from '../obd/j1979.js';
import { checkCanInterface, checkEcuForAddressing, parseEcuAddress, parseInterfaceName, parseWholeMilliseconds } from './can-interface.js';
import { forTerminal, jsonForTerminal } from '../text/terminal-text.js';
import { parseBaud, parsePortPath } from './serial-options.js';

export const OBD_ACTIONS = ['read-vin', 'read-pids', 'read-dtcs', 'clear-dtcs', 'discover'] as const;
export type ObdAction = (typeof OBD_ACTIONS)[number];

interface ObdCliOptions {
  iface?: string;
  port?: string;
  baud?: number;
  protocol?: number | 'auto';
  json?: boolean;
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
  return `0x${id
    .toString(16)
    .toUpperCase()
    .padStart(extended ? 8 : 3, '0')}`;
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
  client: ObdClient,
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
      if (list.length === 0)
        throw new Error(ecu !== undefined ? `ECU ${ecu} reports no PIDs the agent can read` : 'the ECUs report no PIDs the agent can read');
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
      return {
        answered: answers.some((a) => a.ok),
        result: { cleared: answers.map((a) => (a.ok ? { ecu: a.ecu, ok: true } : { ecu: a.ecu, ok: false, ...errorJson(a.error) })) },
      };
    }
  }
}

/** What `obd` prints without an action: the car at a glance. */
export interface VehicleSummary {
  vin: string | null;
  protocol: string;
  /** Mode 01 PIDs any ECU reports, as the bitmaps list them: `010C`. */
  supportedPids: string[];
  /** Current values by J1979 key, in the table's units; the lowest ECU address wins when several report a PID. */
  values: Record<string, PidValue>;
  units: Record<string, string>;
  /** Stored (confirmed) DTCs of every ECU. */
  dtcs: string[];
  pendingDtcs: string[];
  ecus: number[];
  /** The questions that got no usable answer, and why. */
  errors?: Record<string, string>;
}

function pidCode(pid: number): string {
  return `01${pid.toString(16).toUpperCase().padStart(2, '0')}`;
}

/** Reads everything for the summary; a part that fails is reported in `errors`, the rest still shown. */
export async function readVehicleSummary(client: ObdClient, protocol: string): Promise<VehicleSummary> {
  const errors: Record<string, string> = {};
  const ecus = client.ecus;
  const supported = new Set<number>();
  for (const ecu of ecus) for (const pid of ecu.supportedPids) if (pid !== 0) supported.add(pid);
  const summary: VehicleSummary = {
    vin: null,
    protocol,
    supportedPids: [...supported].sort((a, b) => a - b).map(pidCode),
    values: {},
    units: {},
    dtcs: [],
    pendingDtcs: [],
    ecus: ecus.map((e) => e.ecu),
  };
  const failed = (what: string, err: unknown): void => {
    errors[what] = err instanceof Error ? err.message : String(err);
  };
  try {
    const answers = await client.readVin();
    const vin = answers.find((a) => a.ok);
    if (vin?.ok) summary.vin = vin.value;
    else if (answers[0] && !answers[0].ok) failed('vin', answers[0].error);
  } catch (err) {
    failed('vin', err);
  }
  const readable = readablePids(ecus);
  if (readable.length > 0) {
    try {
      for (const entry of await client.readPids(readable)) {
        for (const reading of entry.readings) {
          const key = reading.key ?? pidName(reading.pid);
          if (key in summary.values) continue;
          summary.values[key] = reading.value;
          summary.units[key] = reading.unit;
        }
      }
    } catch (err) {
      failed('values', err);
    }
  }
  for (const [field, service] of [
    ['dtcs', OBD_SERVICE.storedDtcs],
    ['pendingDtcs', OBD_SERVICE.pendingDtcs],
  ] as const) {
    try {
      const codes = new Set<string>();
      for (const answer of await client.readDtcs(service)) if (answer.ok) for (const code of answer.value) codes.add(code);
      summary[field] = [...codes];
    } catch (err) {
      // No answer to Mode 07 is common (and some ECUs do not have it): worth saying, not worth failing.
      failed(field, err);
    }
  }
  if (Object.keys(errors).length > 0) summary.errors = errors;
  return summary;
}

/** The summary as a person reads it. */
export function formatVehicleSummary(summary: VehicleSummary, connection: string): string {
  const lines = [`Connection  ${connection}`, `Protocol    ${summary.protocol}`, `VIN         ${summary.vin ?? '(not reported)'}`];
  lines.push(`ECUs        ${summary.ecus.length > 0 ? summary.ecus.join(', ') : '(none)'}`);
  lines.push(`Supported   ${summary.supportedPids.length} PIDs: ${summary.supportedPids.join(' ')}`);
  const keys = Object.keys(summary.values);
  const width = Math.max(0, ...keys.map((k) => k.length));
  lines.push(`Values${keys.length === 0 ? '      (none)' : ''}`);
  for (const key of keys) lines.push(`  ${key.padEnd(width)}  ${formatPidValue(summary.values[key]!, summary.units[key] ?? '')}`);
  lines.push(`DTCs        ${summary.dtcs.length > 0 ? summary.dtcs.join(' ') : 'none stored'}`);
  lines.push(`Pending     ${summary.pendingDtcs.length > 0 ? summary.pendingDtcs.join(' ') : 'none'}`);
  for (const [what, why] of Object.entries(summary.errors ?? {})) lines.push(`(${what}: ${why})`);
  // The adapter's name, the protocol and the errors quote what the adapter and the car said.
  return `${lines.map(forTerminal).join('\n')}\n`;
}

function describeAdapter(info: Elm327Info): string {
  const name = `${info.device ?? 'ELM327'} v${info.version}`;
  const volts = info.voltage !== null ? `, ${info.voltage} V` : '';
  return `${name} on ${info.port} at ${info.baudRate} baud${volts}`;
}

function parseElmProtocol(text: string): number | 'auto' {
  if (text === 'auto' || text === '0') return 'auto';
  if (/^([1-9]|[aAbBcC]|1[0-2])$/.test(text)) return /^[a-c]$/i.test(text) ? parseInt(text, 16) : Number(text);
  throw new InvalidArgumentError('expected auto or an ELM protocol number 1-9, A-C (6 = ISO 15765-4 CAN 11/500)');
}

/** Runs `run` on a connected ELM327 client; closes the port however it ends. */
async function withElm327<T>(opts: ObdCliOptions, run: (client: Elm327Client, info: Elm327Info) => Promise<T>): Promise<T> {
  const client = new Elm327Client({
    port: opts.port!,
    ...(opts.baud !== undefined ? { baudRate: opts.baud } : {}),
    ...(opts.protocol !== undefined ? { protocol: opts.protocol } : {}),
  });
  const stop = (): void => client.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const info = await client.connect();
    return await run(client, info);
  } finally {
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
    client.close();
  }
}

/** Runs `run` on a SocketCAN client whose ECUs have been found. */
async function withCan<T>(opts: ObdCliOptions, run: (client: ObdCanClient, addressing: ObdCanAddressing) => Promise<T>): Promise<T> {
  const iface = opts.iface!;
  if (opts.ecu !== undefined && opts.addressing !== 'auto') checkEcuForAddressing(opts.ecu, opts.addressing);
  // One-shot: a missing or down interface is an answer, not something to wait for.
  checkCanInterface(iface, 'fail');
  const client = new ObdCanClient(new SocketCanBus(iface), { addressing: opts.addressing, p2Ms: opts.p2 });
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
    return await run(client, addressing);
  } finally {
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
    client.close();
  }
}

export function registerObdCommand(program: Command): void {
  program
    .command('obd')
    .description(
      'OBD-II through a SocketCAN interface (--iface) or an ELM327 adapter (--port). Without an action: VIN, protocol, supported PIDs, live values and DTCs. ' +
        'With one: that query, as JSON (clear-dtcs erases the fault memory: only on purpose)',
    )
    .addArgument(new Argument('[action]', 'one query instead of the summary').choices(OBD_ACTIONS))
    .argument('[pids...]', 'read-pids only: PIDs by number (12, 0x0C) or name (rpm); default every PID the ECUs support')
    .option('-i, --iface <name>', 'SocketCAN interface, e.g. can0', parseInterfaceName)
    .option('-p, --port <path>', 'serial port of an ELM327-compatible adapter, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...', parsePortPath)
    .option('-j, --json', 'the summary as one JSON object (actions always print JSON)')
    .option('--baud <rate>', "with --port: the adapter's baud rate (default: try 38400, 9600, 115200, ...)", parseBaud)
    .option('--protocol <n>', 'with --port: ELM protocol, auto or 1-9/A-C (6 = CAN 11-bit 500 kbit/s)', parseElmProtocol)
    .option(
      '--addressing <mode>',
      'with --iface: ISO 15765-4 identifiers: 11-bit, 29-bit, or auto (try 11-bit, then 29-bit)',
      parseAddressingOrAuto,
      '11-bit' as const,
    )
    .option('--ecu <address>', 'ask this ECU only: 0-7 with 11-bit identifiers, 0x00-0xFF with 29-bit ones', parseEcuAddress)
    .option('--p2 <ms>', "with --iface: wait for the ECUs' first answer (ISO 15765-4 P2CAN is 50 ms; raise it for slow gateways)", parseWholeMilliseconds, 50)
    .action(async (action: ObdAction | undefined, pidArgs: string[], opts: ObdCliOptions) => {
      if ((opts.iface === undefined) === (opts.port === undefined)) {
        throw new Error(
          opts.iface === undefined
            ? 'say where the car is: --iface <can interface> or --port <serial port of an ELM327 adapter>'
            : '--iface and --port exclude each other',
        );
      }
      if (opts.port === undefined && (opts.baud !== undefined || opts.protocol !== undefined)) throw new Error('--baud and --protocol go with --port');
      if (pidArgs.length > 0 && action !== 'read-pids') throw new Error(`${action ?? 'the summary'} takes no PIDs (only read-pids does): ${pidArgs.join(' ')}`);
      const pids = pidArgs.map(parsePidArgument);
      const print = (value: unknown): void => void process.stdout.write(`${jsonForTerminal(JSON.stringify(value, null, 2))}\n`);

      if (opts.port !== undefined) {
        await withElm327(opts, async (client, info) => {
          if (action === undefined) {
            const summary = await readVehicleSummary(client, info.protocol.description);
            if (opts.json) print({ ...summary, adapter: { device: info.device, version: info.version, baudRate: info.baudRate, voltage: info.voltage } });
            else process.stdout.write(formatVehicleSummary(summary, describeAdapter(info)));
            return;
          }
          const { result, answered } = await runObdAction(client, action, pids, opts.ecu);
          print({ port: info.port, adapter: `${info.device ?? 'ELM327'} v${info.version}`, protocol: info.protocol.description, ...result });
          // The JSON says what each ECU answered; the exit status says whether the question got an answer at all.
          if (!answered) process.exitCode = 1;
        });
        return;
      }
      await withCan(opts, async (client, addressing) => {
        if (action === undefined) {
          const protocol = `ISO 15765-4 (CAN ${addressing === '11-bit' ? '11' : '29'}-bit identifiers)`;
          const summary = await readVehicleSummary(client, protocol);
          if (opts.json) print({ ...summary, interface: opts.iface });
          else process.stdout.write(formatVehicleSummary(summary, `${opts.iface} (SocketCAN)`));
          return;
        }
        const { result, answered } = await runObdAction(client, action, pids, opts.ecu);
        print({ interface: opts.iface, addressing, ...result });
        if (!answered) process.exitCode = 1;
      });
    });
}
