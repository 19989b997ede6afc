/**
 * The OBD-II parts of the device config: the PIDs to poll and how often, the load a poller may cause, and the
 * `obd` section of a bus (ISO 15765-4 on its interface). An ELM327 adapter's section (src/agent/sources/elm327.ts)
 * is built from the same pieces. Zod schemas and pure checks: a bad PID is a config error naming it, with a hint.
 */
import { z } from 'zod';
import { MODE01_PIDS, MODE01_PIDS_BY_KEY, SUPPORTED_PID_BLOCKS, type PidDefinition } from './j1979.js';

/** A PID as the config names it: its number, or its J1979 key ('rpm', 'coolantTemp'…). */
export const obdPidSchema = z.strictObject({
  pid: z
    .union([z.number(), z.string()], { error: 'expected a Mode 01 PID number (e.g. 12) or its name (e.g. "rpm")' })
    .describe('Mode 01 PID: its number (12 or 0x0C written as 12) or its J1979 name, e.g. "rpm", "speed", "coolantTemp".'),
  intervalMs: z.number().int().min(10).describe('How often to read it, ms.'),
  ecu: z
    .number()
    .int()
    .min(0)
    .max(255)
    .optional()
    .describe('Read it from this ECU only (0-7 with 11-bit identifiers, the ECU address with 29-bit ones); default every ECU that has it.'),
});

export const obdConfigSchema = z
  .strictObject({
    addressing: z
      .enum(['11-bit', '29-bit'])
      .default('11-bit')
      .describe('ISO 15765-4 identifiers: 11-bit (0x7DF/0x7E8…) or 29-bit (0x18DB33F1…). Default 11-bit.'),
    p2Ms: z
      .number()
      .int()
      .min(1)
      .max(5000)
      .optional()
      .describe("Wait for the ECUs' first answer, ms. Default 50 (ISO 15765-4 P2CAN); raise it for slow gateways."),
    pids: z.array(obdPidSchema).min(1).describe('The PIDs to poll and how often.'),
    budget: z
      .strictObject({
        maxRequestsPerSecond: z.number().positive().optional().describe('Most OBD requests per second the poller sends.'),
        maxFramesPerSecond: z.number().positive().optional().describe("Most frames per second the poller causes, the ECUs' answers included."),
      })
      .optional()
      .describe('Bus load the poller may cause; when the schedule asks for more, reads are delayed.'),
    backoff: z
      .strictObject({
        maxMs: z.number().int().positive().optional().describe('Longest wait before asking again for a PID an ECU did not return, ms. Default 60000.'),
      })
      .optional(),
  })
  .describe('OBD-II (SAE J1979) polling over ISO 15765-4 on this bus. Needs a socketcan source.');

/** Pollers' shared settings: the PIDs, the load they may cause, the backoff for PIDs an ECU does not return. */
export const pollBudgetSchema = z
  .strictObject({
    maxRequestsPerSecond: z.number().positive().optional().describe('Most OBD requests per second the poller sends.'),
    maxFramesPerSecond: z.number().positive().optional().describe("Most frames per second the poller causes, the ECUs' answers included."),
  })
  .optional()
  .describe('Load the poller may cause; when the schedule asks for more, reads are delayed.');

export const pollBackoffSchema = z
  .strictObject({
    maxMs: z.number().int().positive().optional().describe('Longest wait before asking again for a PID an ECU did not return, ms. Default 60000.'),
  })
  .optional();

export type ObdConfig = z.output<typeof obdConfigSchema>;

/** The J1979 definition a configured PID names; undefined when it names none. */
export function resolveObdPid(pid: number | string): PidDefinition | undefined {
  return typeof pid === 'number' ? MODE01_PIDS.get(pid) : MODE01_PIDS_BY_KEY.get(pid);
}

/** Why a configured PID cannot be polled, or null. */
export function pidProblem(pid: number | string): string | null {
  const def = resolveObdPid(pid);
  if (def === undefined) {
    if (typeof pid === 'number') {
      if (!Number.isInteger(pid) || pid < 0 || pid > 0xff) return `a PID is a byte (0-255), got ${pid}`;
      return `PID ${pid} (0x${hex2(pid)}) is not a J1979 Mode 01 PID the agent can decode`;
    }
    const folded = pid.toLowerCase();
    const near = [...MODE01_PIDS_BY_KEY.keys()].filter((key) => key.toLowerCase() === folded || key.toLowerCase().startsWith(folded));
    const hint =
      near.length > 0
        ? `; did you mean ${near
            .slice(0, 3)
            .map((k) => JSON.stringify(k))
            .join(' or ')}?`
        : ' (names are J1979 keys such as "rpm", "speed", "coolantTemp")';
    return `unknown PID name ${JSON.stringify(pid)}${hint}`;
  }
  if (SUPPORTED_PID_BLOCKS.includes(def.pid)) {
    return `PID 0x${hex2(def.pid)} (${def.key}) only lists supported PIDs; the agent reads it when it discovers the ECUs`;
  }
  return null;
}

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}
