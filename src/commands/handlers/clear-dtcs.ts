/**
 * `clearDtcs`: Mode 04, erases the DTCs, freeze frames and readiness monitors of every ECU (or one). Its
 * precondition (engine off, standing still…) is configured per command and checked by the dispatcher before it runs.
 */
import { z } from 'zod';
import type { CommandHandler } from '../handler.js';
import { describeAnswers, obdRequest, requireObd, requireSomeSuccess } from './obd-errors.js';

const clearDtcsParams = z.strictObject({
  ecu: z.number().int().min(0).max(255).optional().describe('Clear this ECU only; default every ECU.'),
});

export const clearDtcs: CommandHandler<z.output<typeof clearDtcsParams>> = {
  name: 'clearDtcs',
  description: 'Erases the DTCs, freeze frames and readiness monitors of every ECU, or one (OBD-II Mode 04). Give it a precondition in commands.preconditions.',
  params: clearDtcsParams,
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
