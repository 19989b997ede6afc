/**
 * Adapter plug-in `gnss`: a GNSS receiver's NMEA 0183 output on a serial port (a USB receiver, a UART, the NMEA port
 * of a cellular modem). It yields values, not frames: each fix's fields as `<name>.gnss.<key>` (docs/gnss.md), one fix
 * per epoch of the receiver.
 *
 * Kept connected (src/gnss/serial-receiver.ts): a missing or unplugged receiver is a state the agent waits in, never a
 * failure. One log line per change of its state, never per fix.
 */
import { z } from 'zod';
import { RELEASE_DATE_FLOOR_MS } from '../../gnss/fix-assembler.js';
import type { GnssFix } from '../../gnss/fix.js';
import { CLOCK_OFFSET_WARN_MS, describePosition, PositionTracker } from '../../gnss/position.js';
import { SerialGnssReceiver, type ReceiverState } from '../../gnss/serial-receiver.js';
import type { ComponentLog } from '../../health/log.js';
import type { AdapterStatus, AdapterType } from './source-type.js';

const schema = z
  .strictObject({
    type: z.literal('gnss').describe('The kind of adapter: gnss (NMEA 0183 on a serial port).'),
    name: z.string().min(1).describe('Name the agent reports this receiver by, and the prefix of its values (`gnss` gives gnss.gnss.lat; gnss.lat reads it).'),
    port: z
      .string()
      .min(1)
      .refine((p) => !p.includes('\0'), 'a path cannot hold NUL')
      .describe("Serial port: /dev/ttyUSB1 (a Quectel modem's NMEA port), /dev/ttyACM0, /dev/ttyS1, or better a stable /dev/serial/by-id/... path."),
    baudRate: z
      .number()
      .int()
      .min(300)
      .max(4_000_000)
      .optional()
      .describe('Fixed baud rate; default: listen at 9600, 4800, 115200, 38400, 57600, 19200, 230400 in turn.'),
    weekRolloverFloor: z
      .union([z.iso.date(), z.literal(false)])
      .optional()
      .describe(
        'A receiver date before this one (YYYY-MM-DD) is the GPS week-number rollover bug and is moved forward by 1024 weeks; false: never. Default: the start of the release year.',
      ),
  })
  .describe('A GNSS receiver sending NMEA 0183 on a serial port. The agent waits for it when it is missing, and reopens it when it is unplugged.');

export type GnssAdapterConfig = z.output<typeof schema>;

/**
 * What the position adapters share: `take`, which gives each fix to the position (offering its values) and says once,
 * at warn, when the agent's clock and the receiver's time come more than 2 s apart (and at info when they agree
 * again); a log that says each change of state once; and the status (`gnss 3D DGPS 48.1173,11.5167`, or
 * the source's state, with the position for health).
 */
export function positionParts(
  name: string,
  offer: (name: string, value: number, ts: number) => void,
  log: ComponentLog,
): {
  take: (fix: GnssFix) => void;
  report: (line: string, level: 'info' | 'warn') => void;
  status: (state: string, port: string) => AdapterStatus;
} {
  const position = new PositionTracker(name, offer);
  let lastReport = '';
  let clockApart = false;
  return {
    take(fix) {
      position.take(fix);
      const offset = position.reading().clockOffsetMs;
      if (offset === null || fix.time === undefined || Math.abs(offset) > CLOCK_OFFSET_WARN_MS === clockApart) return;
      clockApart = !clockApart;
      if (clockApart) {
        log.warn(
          `the system clock is ${(Math.abs(offset) / 1000).toFixed(1)} s ${offset > 0 ? 'ahead of' : 'behind'} the receiver's time (${new Date(fix.time).toISOString()}): data is stamped by the system clock; set it (NTP, or chrony with gpsd)`,
        );
      } else log.info("the system clock agrees with the receiver's time again");
    },
    report(line, level) {
      if (line === lastReport) return;
      lastReport = line;
      log[level](line);
    },
    status(state, port) {
      const reading = position.reading();
      return { state, port, text: `${name} ${state === 'receiving' ? describePosition(reading, Date.now()) : state}`, position: reading };
    },
  };
}

export const gnssAdapter: AdapterType<GnssAdapterConfig> = {
  kind: 'adapter',
  type: 'gnss',
  schema,
  obdPolling: () => null,
  create(config, { log, offer }) {
    const { take, report, status } = positionParts(config.name, offer, log);
    let state: ReceiverState = 'idle';
    const floor = config.weekRolloverFloor;
    const receiver = new SerialGnssReceiver({
      path: config.port,
      ...(config.baudRate !== undefined ? { baudRate: config.baudRate } : {}),
      dateFloor: floor === false ? null : floor === undefined ? RELEASE_DATE_FLOOR_MS : Date.parse(`${floor}T00:00:00Z`),
      onFix: take,
      onState: (next, detail) => {
        if (next !== 'idle') state = next;
        if (next === 'receiving') report(`receiver on ${config.port} sending NMEA at ${detail.baudRate} baud`, 'info');
        else if (next === 'missing' && detail.reason) report(`receiver: ${detail.reason}; retrying`, 'warn');
        else if (next === 'silent') report(`receiver on ${config.port} went silent`, 'warn');
      },
    });
    return {
      obd: null,
      run: (signal) => receiver.run(signal),
      status: () => status(state, config.port),
    };
  },
};
