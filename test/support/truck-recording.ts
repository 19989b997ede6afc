/**
 * The real J1939 truck recording of the shared test data (`css_j1939_truck_…candump.log` with `css_j1939_demo.dbc`,
 * matched by parameter group), and every sample it holds derived twice over for the `every` collection tests:
 *
 * - `truckSamplesFromText` reads the log and the DBC as text, without the project's parser, decoder or J1939 code:
 *   a frame counts when its 29-bit identifier carries the parameter group of a DBC message (priority, source and,
 *   for PDU1, destination address dropped), and each signal's value is its little-endian unsigned bits times the
 *   factor plus the offset, as its `SG_` line says. The one DBC the helper reads has only such signals; anything
 *   else throws, naming the line.
 * - `truckSamplesFromDecoder` is what the agent's own candump parser and compiled decoder make of the same file.
 *
 * Both name a sample `<bus>.<Message>.<Signal>` on bus `can0` (the replay source delivers every frame of the log to
 * the bus it feeds). Failure: a missing file throws ENOENT; the tests check `truckFilesMissing()` first and skip
 * with the files' names when the shared data is not beside the checkout.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseCandumpText } from '../../src/can/candump.js';
import type { Sample } from '../../src/collect/sample.js';
import type { CompiledDatabase } from '../../src/dbc/index.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, sharedTestdata } from './shared.js';

export const TRUCK_LOG = sharedTestdata('logs', 'css_j1939_truck_11111111_00000012_00000001.candump.log');
export const TRUCK_DBC = sharedTestdata('dbc', 'css_j1939_demo.dbc');
/** The bus name the tests give the replayed recording. */
export const TRUCK_BUS = 'can0';

/** The recording's files this checkout lacks (none when the shared data is beside it). */
export function truckFilesMissing(): string[] {
  return [TRUCK_LOG, TRUCK_DBC].filter((file) => !existsSync(file));
}

/**
 * Why a truck test cannot run, or false: a skip only when the shared data is absent altogether, naming the files;
 * with the shared data present, a missing file is a failure the test reports itself.
 */
export function truckSkipReason(): string | false {
  return hasSharedTestdata() ? false : `${NO_SHARED_TESTDATA}; needs ${[TRUCK_LOG, TRUCK_DBC].join(', ')}`;
}

/** A frame time as whole microseconds, from the candump text (`1635188455.020850`), exact. */
function microseconds(text: string): number {
  const [seconds, fraction = ''] = text.split('.');
  return Number(seconds) * 1_000_000 + Number(fraction.padEnd(6, '0').slice(0, 6));
}

/** A J1939 parameter group number from a 29-bit identifier. */
function parameterGroup(id: number): number {
  const pgn = (id >>> 8) & 0x3ffff;
  const pduFormat = (pgn >>> 8) & 0xff;
  return pduFormat < 240 ? pgn & 0x3ff00 : pgn;
}

interface TextSignal {
  name: string;
  start: number;
  length: number;
  factor: number;
  offset: number;
}

/** The samples of the recording by text alone: `us` is the frame time in whole microseconds, as the log gives it. */
export function truckSamplesFromText(bus = TRUCK_BUS): { us: number; signal: string; value: number }[] {
  const messages = new Map<number, { name: string; signals: TextSignal[] }>();
  let current: TextSignal[] | undefined;
  for (const line of readFileSync(TRUCK_DBC, 'utf8').split('\n')) {
    const message = /^BO_ (\d+) (\w+):/.exec(line);
    if (message) {
      current = [];
      messages.set(parameterGroup(Number(message[1]) & 0x1fffffff), { name: message[2]!, signals: current });
      continue;
    }
    const signal = /^ SG_ (\w+) : (\d+)\|(\d+)@(\d)([+-]) \(([^,]+),([^)]+)\)/.exec(line);
    if (!signal) continue;
    if (!current || signal[4] !== '1' || signal[5] !== '+') throw new Error(`truck-recording: only little-endian unsigned signals are read here: ${line}`);
    current.push({ name: signal[1]!, start: Number(signal[2]), length: Number(signal[3]), factor: Number(signal[6]), offset: Number(signal[7]) });
  }
  const samples: { us: number; signal: string; value: number }[] = [];
  for (const line of readFileSync(TRUCK_LOG, 'utf8').split('\n')) {
    const frame = /^\((\d+\.\d+)\) \S+ ([0-9A-F]{8})#([0-9A-F]*)$/i.exec(line.trim());
    if (!frame) continue;
    const message = messages.get(parameterGroup(parseInt(frame[2]!, 16)));
    if (!message) continue;
    const bytes = frame[3]!;
    let payload = 0n;
    for (let i = bytes.length / 2 - 1; i >= 0; i--) payload = (payload << 8n) | BigInt(parseInt(bytes.slice(2 * i, 2 * i + 2), 16));
    for (const s of message.signals) {
      const raw = Number((payload >> BigInt(s.start)) & ((1n << BigInt(s.length)) - 1n));
      samples.push({ us: microseconds(frame[1]!), signal: `${bus}.${message.name}.${s.name}`, value: raw * s.factor + s.offset });
    }
  }
  return samples;
}

/** The samples of the recording as the project's candump parser and `database` (compiled with j1939) decode them. */
export function truckSamplesFromDecoder(database: CompiledDatabase, bus = TRUCK_BUS): Sample[] {
  const samples: Sample[] = [];
  parseCandumpText(readFileSync(TRUCK_LOG, 'utf8'), (frame) => {
    const decoded = database.decode(frame);
    if (!decoded) return;
    for (const [name, value] of Object.entries(decoded.signals)) {
      samples.push({ ts: frame.ts, signal: `${bus}.${decoded.message.name}.${name}`, value: typeof value === 'bigint' ? Number(value) : value });
    }
  });
  return samples;
}
