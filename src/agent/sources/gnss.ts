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
import { describePosition, PositionTracker } from '../../gnss/position.js';
import { SerialGnssReceiver, type ReceiverState } from '../../gnss/serial-receiver.js';
import type { ComponentLog } from '../../health/log.js';
import type { AdapterType } from './source-type.js';

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
 * What the gnss and gpsd adapters share: the position the fixes feed (offering their values), a log that says each
 * change once, and the status line's words (`gnss 3D DGPS 48.11730,11.51667 8/12 sats`, or the source's state).
 */
export function positionParts(
  name: string,
  offer: (name: string, value: number, ts: number) => void,
  log: ComponentLog,
): {
  position: PositionTracker;
  report: (line: string, level: 'info' | 'warn') => void;
  text: (state: string) => string;
} {
  const position = new PositionTracker(name, offer);
  let lastReport = '';
  return {
    position,
    report(line, level) {
      if (line === lastReport) return;
      lastReport = line;
      log[level](line);
    },
    text: (state) => `${name} ${state === 'receiving' ? describePosition(position.reading(), Date.now()) : state}`,
  };
}

export const gnssAdapter: AdapterType<GnssAdapterConfig> = {
  kind: 'adapter',
  type: 'gnss',
  schema,
  obdPolling: () => null,
  create(config, { log, offer }) {
    const { position, report, text } = positionParts(config.name, offer, log);
    let state: ReceiverState = 'idle';
    const floor = config.weekRolloverFloor;
    const receiver = new SerialGnssReceiver({
      path: config.port,
      ...(config.baudRate !== undefined ? { baudRate: config.baudRate } : {}),
      dateFloor: floor === false ? null : floor === undefined ? RELEASE_DATE_FLOOR_MS : Date.parse(`${floor}T00:00:00Z`),
      onFix: (fix) => position.take(fix),
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
      status: () => ({ state, port: config.port, text: text(state) }),
    };
  },
};
