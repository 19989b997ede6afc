/**
 * What a backend sends to command a car (`vehicles/<deviceId>/commands/<name>`): the wire object and the signed
 * envelope inside it (docs/commands.md). The dispatcher parses with these very schemas, so the published files are
 * what the car enforces. Each command's parameters are registered with the results (command-results.ts), beside
 * its handler's own schema.
 */
import { z } from 'zod';
import { contractSchema } from './registry.js';

export const ENVELOPE_VERSION = 1;

/**
 * Command IDs become a topic level (`commands/<id>/result`) and the certificate rotation's requestId: no '/', '+',
 * '#', bounded, and not `.` or `..` (a level that a bridge or a tool mapping topics to paths would walk up with).
 */
export const COMMAND_ID_PATTERN = /^(?!\.{1,2}$)[A-Za-z0-9_.:-]{1,64}$/;
export const COMMAND_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** Canonical base64 (RFC 4648 section 4, the standard alphabet with `+` and `/`, padded): nothing else is accepted. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export const commandIdSchema = z
  .string()
  .regex(COMMAND_ID_PATTERN, { message: "expected 1-64 characters of A-Z a-z 0-9 _ . : -, not '.' or '..'" })
  .describe('Unique per command (a UUID will do); it becomes a topic level.');

export const envelopeSchema = contractSchema(
  'command-envelope',
  'Command envelope',
  "The signed part of a command: UTF-8 JSON, carried base64-encoded in the wire object's `envelope`; the signature covers exactly those bytes. A key twice in one object is refused.",
  z.strictObject({
    v: z.literal(ENVELOPE_VERSION),
    id: commandIdSchema,
    deviceId: z.string().min(1).max(256).describe('The car it is for; another car rejects it (wrong-device).'),
    name: z.string().regex(COMMAND_NAME_PATTERN, { message: 'expected a command name (a letter, then letters, digits or _)' }),
    params: z.unknown().optional().describe("The command's parameters (contract/commands/<name>.params.schema.json); {} when absent."),
    issuedAt: z.number().int().nonnegative().describe("Unix ms, the operator's clock."),
    expiresAt: z.number().int().nonnegative().optional().describe('Unix ms: refused after this time, whenever delivered. Not before issuedAt.'),
    timeoutMs: z.number().int().min(1).max(86_400_000).optional().describe("How long it may run; default the command's own, capped by commands.maxTimeoutMs."),
  }),
  'accepted',
);
export type CommandEnvelope = z.output<typeof envelopeSchema>;

export const wireSchema = contractSchema(
  'command',
  'Command',
  'vehicles/<deviceId>/commands/<name>, UTF-8 JSON, QoS 1, from the backend; at most commands.maxPayloadBytes (16 KiB by default). The topic must name the command the envelope names.',
  z.strictObject({
    envelope: z.string().min(1).regex(BASE64, { message: 'expected base64' }).describe("Canonical base64 of the envelope's UTF-8 JSON bytes."),
    signature: z
      .string()
      .regex(BASE64, { message: 'expected base64' })
      .optional()
      .describe("Canonical base64 of the signature over those bytes; the algorithm follows the signer's key (ECDSA signatures DER-encoded)."),
    signer: z.string().optional().describe('PEM: the operator certificate (code signing), optionally followed by intermediates, at most 4 in all.'),
  }),
  'accepted',
);
