/**
 * Adapter plug-in `elm327`: an ELM327-compatible OBD-II adapter on a serial port (USB, UART, Bluetooth SPP). It yields
 * values, not frames: its PIDs are polled while it is ready and handed to the collector as `<name>.obd.<key>`.
 *
 * Kept connected (Elm327Client.start reopens and re-initialises it after an unplug or a hang); a missing adapter is a
 * state the agent waits in, never a failure. One log line per change of its state, never per request.
 */
import { z } from 'zod';
import { obdPidSchema, pidProblem, pollBackoffSchema, pollBudgetSchema } from '../../obd/config.js';
import { Elm327Client, type Elm327Info, type Elm327State } from '../../obd/elm327.js';
import { ObdPolling, type ObdConnector } from '../obd-polling.js';
import type { AdapterType } from './source-type.js';

/** ELM327 protocol numbers (ATSP): 1-5 J1850/ISO 9141/KWP, 6-9 ISO 15765-4 CAN, 10 J1939, 11-12 user CAN. */
const elmProtocolSchema = z
  .union([z.literal('auto'), z.number().int().min(1).max(12)], { error: 'expected "auto" or an ELM327 protocol number 1-12' })
  .default('auto')
  .describe(
    '"auto" (the adapter searches, ATSP0) or the ELM327 protocol number: 6 = ISO 15765-4 CAN 11-bit 500 kbit/s, 7 = 29-bit 500, 8/9 = 250 kbit/s, 3 = ISO 9141-2, 4/5 = KWP2000. Default auto.',
  );

const schema = z
  .strictObject({
    // Optional: adapters were ELM327s before there were other kinds, and their configs name no type.
    type: z.literal('elm327').optional().describe('The kind of adapter: elm327 (the default).'),
    name: z.string().min(1).describe('Name the agent reports this adapter by, e.g. obd.'),
    port: z
      .string()
      .min(1)
      .refine((p) => !p.includes('\0'), 'a path cannot hold NUL')
      .describe('Serial port: /dev/ttyUSB0, /dev/rfcomm0, or better a stable /dev/serial/by-id/... path.'),
    baudRate: z.number().int().min(300).max(4_000_000).optional().describe('Fixed baud rate; default: try 38400, 9600, 115200, 57600, 230400, 500000, 19200.'),
    protocol: elmProtocolSchema,
    pids: z.array(obdPidSchema).min(1).describe('The PIDs to poll and how often.'),
    budget: pollBudgetSchema,
    backoff: pollBackoffSchema,
  })
  .superRefine((adapter, ctx) => {
    adapter.pids.forEach((spec, k) => {
      const problem = pidProblem(spec.pid);
      if (problem) ctx.addIssue({ code: 'custom', path: ['pids', k, 'pid'], message: problem });
    });
  })
  .describe(
    'OBD-II (SAE J1979) polling through an ELM327-compatible adapter on a serial port (USB, UART, Bluetooth SPP). The agent waits for the adapter when it is missing, and reconnects when it is unplugged or stops answering.',
  );

export type Elm327AdapterConfig = z.output<typeof schema>;

function describeInfo(info: Elm327Info): string {
  return `${info.device ?? 'ELM327'} v${info.version} at ${info.baudRate} baud, ${info.protocol.description}${info.multiPid ? '' : ', one PID per request'}`;
}

export const elm327Adapter: AdapterType<Elm327AdapterConfig> = {
  kind: 'adapter',
  type: 'elm327',
  schema,
  obdPolling: (config) => config,
  create(config, { log, offer }) {
    /** The adapter's state; when the run has stopped, the one before it closed: what the summary reports. */
    let lastState: Elm327State = 'idle';
    let info: Elm327Info | null = null;
    let lastReport = '';
    const connector: ObdConnector = (onLinkChange) => {
      const client = new Elm327Client({
        port: config.port,
        protocol: config.protocol,
        ...(config.baudRate !== undefined ? { baudRate: config.baudRate } : {}),
      });
      client.onStateChange((state, detail) => {
        if (state !== 'closed') lastState = state;
        onLinkChange(state === 'ready');
        if (detail.info) info = detail.info;
        // One line per change that means something to a person: ready, or why not (the same failure only once).
        let report: { line: string; level: 'info' | 'warn' } | null = null;
        if (state === 'ready' && detail.info) report = { line: `adapter ready on ${config.port}: ${describeInfo(detail.info)}`, level: 'info' };
        else if (state === 'idle' && detail.error) report = { line: `adapter on ${config.port}: ${detail.error.message}; reconnecting`, level: 'warn' };
        if (report !== null && report.line !== lastReport) {
          lastReport = report.line;
          log[report.level](report.line);
        }
      });
      client.start();
      return { reader: client, close: () => client.close() };
    };
    const obd = new ObdPolling(config, connector, log, 'the adapter');
    obd.forwardValues(config.name, offer);
    return {
      obd,
      run: (signal) => obd.run(signal),
      status() {
        // `obd ready (ELM327 v1.5)`.
        const version = info ? ` (${info.device ?? 'ELM327'} v${info.version})` : '';
        return { state: lastState, port: config.port, text: `${config.name} ${lastState}${lastState === 'ready' ? version : ''}` };
      },
    };
  },
};
