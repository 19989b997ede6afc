/**
 * `clearDtcs`: Mode 04, erases the DTCs, freeze frames and readiness monitors of every ECU (or one). Its
 * precondition (engine off, standing still…) is configured per command and checked by the dispatcher before it runs.
 */
import { z } from 'zod';
import type { CommandContext, CommandHandler } from '../handler.js';
import { describeAnswers, ecuAnswersSchema, obdRequest, requireObd, requireSomeSuccess } from './obd-errors.js';

const clearDtcsParams = z.strictObject({
  ecu: z.number().int().min(0).max(255).optional().describe('Clear this ECU only; default every ECU.'),
});

const clearDtcsResult = z.strictObject({
  cleared: z.array(z.number().int().min(0).max(255)).describe('The ECUs that confirmed.'),
  ecus: ecuAnswersSchema('cleared', z.literal(true)),
});

export const clearDtcs: CommandHandler<z.output<typeof clearDtcsParams>, CommandContext, z.output<typeof clearDtcsResult>> = {
  name: 'clearDtcs',
  description: 'Erases the DTCs, freeze frames and readiness monitors of every ECU, or one (OBD-II Mode 04). Give it a precondition in commands.preconditions.',
  params: clearDtcsParams,
  result: clearDtcsResult,
  defaultTimeoutMs: 10_000,
  async run(params, context, run) {
    const client = requireObd(context);
    const answers = await obdRequest('clearing DTCs', () => client.clearDtcs({ signal: run.signal, ...(params.ecu !== undefined ? { ecu: params.ecu } : {}) }));
    requireSomeSuccess('clearing DTCs', answers);
    return {
      cleared: answers.filter((a) => a.ok).map((a) => a.ecu),
      ecus: describeAnswers(answers, 'cleared'),
    };
  },
};
