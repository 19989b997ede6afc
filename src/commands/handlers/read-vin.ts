/** `readVin`: the vehicle identification number (Mode 09 info type 02). */
import { z } from 'zod';
import type { EcuAnswer } from '../../obd/can-client.js';
import type { CommandContext, CommandHandler } from '../handler.js';
import { describeAnswers, ecuAnswersSchema, obdRequest, requireObd, requireSomeSuccess } from './obd-errors.js';

const readVinParams = z.strictObject({
  ecu: z.number().int().min(0).max(255).optional().describe('Ask this ECU only; default every ECU (the engine ECU answers).'),
});

const vin = z.string().describe('The VIN, 17 characters as the ECU sent them.');
const readVinResult = z.strictObject({
  vin,
  ecu: z.number().int().min(0).max(255).describe('The ECU the VIN is from (the first that answered).'),
  ecus: ecuAnswersSchema('vin', vin),
});

export const readVin: CommandHandler<z.output<typeof readVinParams>, CommandContext, z.output<typeof readVinResult>> = {
  name: 'readVin',
  description: 'The vehicle identification number (OBD-II Mode 09, info type 02).',
  params: readVinParams,
  result: readVinResult,
  defaultTimeoutMs: 10_000,
  async run(params, context, run) {
    const client = requireObd(context);
    const answers = await obdRequest('reading the VIN', () => client.readVin({ signal: run.signal, ...(params.ecu !== undefined ? { ecu: params.ecu } : {}) }));
    requireSomeSuccess('reading the VIN', answers);
    // requireSomeSuccess has made sure one ECU answered.
    const first = answers.find((a): a is Extract<EcuAnswer<string>, { ok: true }> => a.ok)!;
    return { vin: first.value, ecu: first.ecu, ecus: describeAnswers(answers, 'vin') };
  },
};
