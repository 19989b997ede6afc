/**
 * The small JSON messages around the data: the retained status (birth, last will, clean shutdown), the remote log,
 * and the certificate rotation's request and answer. The code that sends them builds them through these types, so a
 * field cannot change without the schema (and the published contract file) changing with it.
 */
import { z } from 'zod';
import { COMMAND_ID_PATTERN } from './command-envelope.js';
import { contractSchema, deviceId, unixMs } from './registry.js';

const birthSeq = z
  .number()
  .int()
  .nonnegative()
  .describe('Grows with every connection (the connect time in unix ms, or one more than the last): a stale will can be told from the current birth.');

export const statusBirthSchema = z.strictObject({
  online: z.literal(true),
  birthSeq,
  ts: unixMs.describe('When the connection was made.'),
});

export const statusWillSchema = z.strictObject({
  online: z.literal(false),
  birthSeq,
  reason: z.literal('connection lost').describe('The broker published the last will: the connection ended without a DISCONNECT.'),
});

export const statusShutdownSchema = z.strictObject({
  online: z.literal(false),
  birthSeq,
  ts: unixMs.describe('When the agent stopped.'),
  reason: z.literal('shutdown').describe('The agent stopped cleanly.'),
});

export const statusMessageSchema = contractSchema(
  'status',
  'Status',
  'vehicles/<deviceId>/status, JSON, QoS 1, retained. After each connection the birth; the last will (set at CONNECT, published by the broker when the connection ends without a DISCONNECT: it has no `ts`, the car cannot know when); at a clean stop the shutdown message.',
  z.union([statusBirthSchema, statusWillSchema, statusShutdownSchema]),
);

export type StatusBirth = z.output<typeof statusBirthSchema>;
export type StatusWill = z.output<typeof statusWillSchema>;
export type StatusShutdown = z.output<typeof statusShutdownSchema>;

export const remoteLogEntrySchema = contractSchema(
  'logs',
  'Remote log entry',
  'vehicles/<deviceId>/logs, JSON, QoS 1, not retained: warnings and errors (logging.remote.level), one entry per message, folded and rate-limited (docs/logging.md).',
  z.strictObject({
    ts: unixMs.describe('The occurrence (first entry) or the close of the fold window.'),
    level: z.enum(['error', 'warn', 'info', 'debug']),
    component: z
      .string()
      .describe('The component that logged it: a bus or adapter name, outbox, uplink, commands, health...; `logs` for the notice of suppressed entries.'),
    msg: z.string(),
    count: z.number().int().min(1).describe('Occurrences this entry stands for (1 for the first, the repeats for a fold entry).'),
    firstTs: unixMs,
    lastTs: unixMs,
    suppressed: z.number().int().min(1).optional().describe('Entries dropped before this one (rate limit, or the offline ring overflowing).'),
  }),
);

export type RemoteLogMessage = z.output<typeof remoteLogEntrySchema>;

export const certificateRequestSchema = contractSchema(
  'csr',
  'Certificate signing request',
  'vehicles/<deviceId>/csr, JSON, QoS 1, not retained: sent by the rotateCertificate command; a backend signer answers on vehicles/<deviceId>/certificate (docs/commands.md).',
  z.strictObject({
    requestId: z.string().regex(COMMAND_ID_PATTERN).describe('The rotateCertificate command ID; the answer must carry it.'),
    deviceId,
    csr: z.string().describe('PEM, PKCS#10: a new RSA 2048 key made on the car, subject CN = the device ID.'),
    ts: unixMs,
  }),
);

export const certificateAnswerSchema = contractSchema(
  'certificate',
  'Signed certificate',
  'vehicles/<deviceId>/certificate, JSON, QoS 1, not retained, from the backend signer. The car ignores an answer to another request, a late one, or one over 65,536 characters.',
  z.object({
    requestId: z.string().regex(COMMAND_ID_PATTERN).describe("The request's requestId."),
    certificate: z.string().max(65_536).describe('PEM: the leaf, then any intermediates.'),
  }),
  'accepted',
);

export type CertificateRequest = z.output<typeof certificateRequestSchema>;
export type CertificateAnswer = z.output<typeof certificateAnswerSchema>;
