/** `readVin`: the vehicle identification number (Mode 09 info type 02). */
import { z } from 'zod';
import type { CommandHandler } from '../handler.js';
import { describeAnswers, obdRequest, requireObd, requireSomeSuccess } from './obd-errors.js';

const readVinParams = z.strictObject({
  ecu: z.number().int().min(0).max(255).optional().describe('Ask this ECU only; default every ECU (the engine ECU answers).'),
});

export const readVin: CommandHandler<z.output<typeof readVinParams>> = {
  name: 'readVin',
  description: 'The vehicle identification number (OBD-II Mode 09, info type 02).',
  params: readVinParams,
  defaultTimeoutMs: 10_000,
  async run(params, context, run) {
    const client = requireObd(context);
    const answers = await obdRequest('reading the VIN', () => client.readVin({ signal: run.signal, ...(params.ecu !== undefined ? { ecu: params.ecu } : {}) }));
    requireSomeSuccess('reading the VIN', answers);
    const first = answers.find((a) => a.ok)!;
    return { vin: first.ok ? first.value : null, ecu: first.ecu, ecus: describeAnswers(answers, 'vin') };
  },
};
