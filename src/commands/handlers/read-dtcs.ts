/** `readDtcs`: diagnostic trouble codes from every ECU (or one), stored (Mode 03), pending (07) or permanent (0A). */
import { z } from 'zod';
import { OBD_SERVICE } from '../../obd/j1979.js';
import type { CommandContext, CommandHandler } from '../handler.js';
import { describeAnswers, ecuAnswersSchema, obdRequest, requireObd, requireSomeSuccess } from './obd-errors.js';

const SERVICES = { stored: OBD_SERVICE.storedDtcs, pending: OBD_SERVICE.pendingDtcs, permanent: OBD_SERVICE.permanentDtcs } as const;

const readDtcsParams = z.strictObject({
  kind: z.enum(['stored', 'pending', 'permanent']).default('stored').describe('Which DTCs: stored (Mode 03, default), pending (07), permanent (0A).'),
  ecu: z.number().int().min(0).max(255).optional().describe('Ask this ECU only; default every ECU.'),
});

const dtc = z
  .string()
  .regex(/^[PCBU][0-3][0-9A-F]{3}$/)
  .describe('A DTC as SAE J2012 writes it, e.g. P0301.');
const readDtcsResult = z.strictObject({
  kind: z.enum(['stored', 'pending', 'permanent']),
  dtcs: z.array(dtc).describe("Every ECU's codes together, each once."),
  ecus: ecuAnswersSchema('dtcs', z.array(dtc)),
});

export const readDtcs: CommandHandler<z.output<typeof readDtcsParams>, CommandContext, z.output<typeof readDtcsResult>> = {
  name: 'readDtcs',
  description: 'Diagnostic trouble codes from every ECU, or one: stored (OBD-II Mode 03), pending (07) or permanent (0A).',
  params: readDtcsParams,
  result: readDtcsResult,
  defaultTimeoutMs: 10_000,
  async run(params, context, run) {
    const client = requireObd(context);
    const answers = await obdRequest('reading DTCs', () =>
      client.readDtcs(SERVICES[params.kind], { signal: run.signal, ...(params.ecu !== undefined ? { ecu: params.ecu } : {}) }),
    );
    requireSomeSuccess('reading DTCs', answers);
    const dtcs = [...new Set(answers.flatMap((a) => (a.ok ? a.value : [])))];
    return { kind: params.kind, dtcs, ecus: describeAnswers(answers, 'dtcs') };
  },
};
