/**
 * `rotateCertificate`: a new key made on the car, its signing request to the backend, the signed certificate back,
 * checked, swapped in and connected with, or rolled back (src/pki/rotation.ts). IN_PROGRESS reports each step.
 */
import { z } from 'zod';
import type { CommandContext, CommandHandler } from '../handler.js';

const rotateCertificateParams = z.strictObject({
  waitS: z.number().int().min(1).max(3600).optional().describe('How long to wait for the signed certificate, seconds. Default 120.'),
});

const certificateSummary = z.strictObject({
  fingerprint256: z.string().describe('SHA-256 fingerprint, colon-separated upper-case hex.'),
  notAfter: z.string().describe('ISO 8601.'),
  daysLeft: z.number().int(),
});
const rotateCertificateResult = z.strictObject({ previous: certificateSummary, current: certificateSummary });
const rotateCertificateProgress = z.union([
  z.strictObject({ step: z.literal('csr-sent'), topic: z.string().describe('Where the signing request went: vehicles/<deviceId>/csr.') }),
  z.strictObject({ step: z.enum(['certificate-received', 'reconnecting']) }),
]);

export const rotateCertificate: CommandHandler<z.output<typeof rotateCertificateParams>, CommandContext, z.output<typeof rotateCertificateResult>> = {
  name: 'rotateCertificate',
  description:
    'A new device key made on the car, its signing request to the backend, the signed certificate checked and swapped in, or rolled back if the broker refuses it.',
  params: rotateCertificateParams,
  result: rotateCertificateResult,
  progress: rotateCertificateProgress,
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
