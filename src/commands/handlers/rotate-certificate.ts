/**
 * `rotateCertificate`: a new key made on the car, its signing request to the backend, the signed certificate back,
 * checked, swapped in and connected with, or rolled back (src/pki/rotation.ts). IN_PROGRESS reports each step.
 */
import { z } from 'zod';
import type { CommandHandler } from '../handler.js';

const rotateCertificateParams = z.strictObject({
  waitS: z.number().int().min(1).max(3600).optional().describe('How long to wait for the signed certificate, seconds. Default 120.'),
});

export const rotateCertificate: CommandHandler<z.output<typeof rotateCertificateParams>> = {
  name: 'rotateCertificate',
  description:
    'A new device key made on the car, its signing request to the backend, the signed certificate checked and swapped in, or rolled back if the broker refuses it.',
  params: rotateCertificateParams,
  // The wait for the certificate (120 s by default) plus the reconnection with the new pair (20 s) and a margin.
  defaultTimeoutMs: 180_000,
  async run(params, context, run) {
    return context.rotateCertificate({
      requestId: run.id,
      waitMs: (params.waitS ?? 120) * 1000,
      signal: run.signal,
      progress: (step, detail) => run.progress({ step, ...detail }),
    });
  },
};
