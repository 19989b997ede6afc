/**
 * The wire format of a command (docs/commands.md is the reference).
 *
 * MQTT payload, UTF-8 JSON:
 *   {"envelope": "<base64 of the envelope's JSON bytes>", "signature": "<base64>", "signer": "<PEM certificate(s)>"}
 * envelope:
 *   {"v": 1, "id", "deviceId", "name", "params", "issuedAt" (unix ms), "expiresAt"? (unix ms), "timeoutMs"?}
 *
 * The signature is over the envelope's exact bytes, as carried in base64: no canonical JSON to get wrong, and what
 * is verified is byte for byte what is parsed. A key twice in one object, at any depth of the envelope or of the
 * outer object, is refused (malformed): JSON.parse keeps the last, another reader may keep the first, and a signed
 * text must mean one thing. The signer is the operator's certificate, optionally followed by
 * intermediates; it must chain to the command CA pinned in the device config (see verifier.ts).
 * Algorithms follow the key: ECDSA P-256 with SHA-256 (the default, DER signature), P-384 with SHA-384, Ed25519,
 * RSA (2048 bits or more) with PSS/SHA-256 (salt 32) or PKCS#1 v1.5/SHA-256.
 */
import { constants, createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { visit } from 'jsonc-parser';
import { z } from 'zod';
import { COMMAND_ID_PATTERN, ENVELOPE_VERSION, envelopeSchema, wireSchema, type CommandEnvelope } from '../contract/command-envelope.js';

// The schemas are the contract's (src/contract/command-envelope.ts): the files a backend reads are what is enforced.
export { COMMAND_ID_PATTERN, COMMAND_NAME_PATTERN, ENVELOPE_VERSION, envelopeSchema, wireSchema, type CommandEnvelope } from '../contract/command-envelope.js';

/** A payload read as far as it goes: what the dispatcher needs to answer even a payload it rejects. */
export interface ParsedCommand {
  /** The envelope's bytes, exactly as signed. */
  envelopeBytes: Buffer;
  envelope: CommandEnvelope;
  signature: Buffer | undefined;
  signerPem: string | undefined;
}

export class MalformedCommand extends Error {
  constructor(
    message: string,
    /** The ID, when the envelope was readable that far: the rejection can then be answered. */
    readonly id: string | undefined,
    readonly detail?: unknown,
  ) {
    super(message);
    this.name = 'MalformedCommand';
  }
}

/** Parses the wire format and the envelope's schema (nothing is verified here); throws MalformedCommand. */
export function parseCommand(payload: Buffer): ParsedCommand {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new MalformedCommand(`the payload is not JSON: ${(err as Error).message}`, undefined);
  }
  const twice = duplicateKey(payload.toString('utf8'));
  if (twice !== undefined) throw new MalformedCommand(`the payload has the key ${twice} twice in one object: every key once`, undefined);
  const wire = wireSchema.safeParse(json);
  if (!wire.success) throw new MalformedCommand(`the payload is not a command: ${summarise(wire.error)}`, undefined, wire.error.issues);
  const envelopeBytes = Buffer.from(wire.data.envelope, 'base64');
  // Only the canonical encoding: two texts for the same signed bytes would let a copy pass for a new message.
  if (envelopeBytes.toString('base64') !== wire.data.envelope) throw new MalformedCommand('the envelope is not canonical base64', undefined);
  if (wire.data.signature !== undefined && Buffer.from(wire.data.signature, 'base64').toString('base64') !== wire.data.signature) {
    throw new MalformedCommand('the signature is not canonical base64', undefined);
  }
  let envelopeJson: unknown;
  try {
    envelopeJson = JSON.parse(envelopeBytes.toString('utf8'));
  } catch (err) {
    throw new MalformedCommand(`the envelope is not JSON: ${(err as Error).message}`, undefined);
  }
  const envelopeTwice = duplicateKey(envelopeBytes.toString('utf8'));
  if (envelopeTwice !== undefined) {
    // Which ID it carries is itself in doubt when the key twice is the ID.
    throw new MalformedCommand(
      `the envelope has the key ${envelopeTwice} twice in one object: every key once`,
      envelopeTwice === "'id'" ? undefined : readableId(envelopeJson),
    );
  }
  const id = readableId(envelopeJson);
  const envelope = envelopeSchema.safeParse(envelopeJson);
  if (!envelope.success) throw new MalformedCommand(`the envelope does not fit its schema: ${summarise(envelope.error)}`, id, envelope.error.issues);
  if (envelope.data.expiresAt !== undefined && envelope.data.expiresAt < envelope.data.issuedAt) {
    throw new MalformedCommand('the envelope expires before it was issued', id);
  }
  return {
    envelopeBytes,
    envelope: envelope.data,
    signature: wire.data.signature === undefined || wire.data.signature === '' ? undefined : Buffer.from(wire.data.signature, 'base64'),
    signerPem: wire.data.signer === undefined || wire.data.signer.trim() === '' ? undefined : wire.data.signer,
  };
}

/** The first key found twice in one object of `text` (JSON that parsed), quoted with its path; undefined when none. */
function duplicateKey(text: string): string | undefined {
  const objects: Set<string>[] = [];
  let found: string | undefined;
  visit(
    text,
    {
      onObjectBegin: () => {
        objects.push(new Set());
      },
      onObjectProperty: (property, _offset, _length, _line, _column, path) => {
        const keys = objects[objects.length - 1]!;
        if (found === undefined && keys.has(property)) found = `'${[...path(), property].join('.')}'`;
        keys.add(property);
      },
      onObjectEnd: () => {
        objects.pop();
      },
    },
    { disallowComments: true, allowTrailingComma: false },
  );
  return found;
}

/** The envelope's ID when it is a usable one, even if the rest of the envelope is not. */
function readableId(json: unknown): string | undefined {
  if (json === null || typeof json !== 'object') return undefined;
  const id = (json as { id?: unknown }).id;
  return typeof id === 'string' && COMMAND_ID_PATTERN.test(id) ? id : undefined;
}

function summarise(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(top level)'}: ${issue.message}`)
    .join('; ');
}

// ---- signing (the fleet-operations side: the ops CLI, tests, the benchmark) ----

export interface CommandRequest {
  deviceId: string;
  name: string;
  params?: unknown;
  /** Default: a random UUID. */
  id?: string;
  /** Default: now. */
  issuedAt?: number;
  expiresAt?: number;
  timeoutMs?: number;
}

export interface Signer {
  /** The operator's certificate, PEM (optionally followed by intermediates). */
  certPem: string;
  /** Its private key, PEM. */
  keyPem: string | KeyObject;
}

/** Signs `envelopeBytes` with the algorithm the key implies (see the module comment). */
export function signBytes(bytes: Buffer, key: KeyObject): Buffer {
  switch (key.asymmetricKeyType) {
    case 'ec':
      return sign(key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'sha384' : 'sha256', bytes, key);
    case 'ed25519':
      return sign(null, bytes, key);
    case 'rsa':
      return sign('sha256', bytes, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    default:
      throw new RangeError(`cannot sign commands with a ${key.asymmetricKeyType ?? 'secret'} key (ECDSA P-256, P-384, Ed25519 or RSA)`);
  }
}

/** The envelope of `request` and the MQTT payload carrying it, signed. */
export function signCommand(
  request: CommandRequest,
  signer: Signer,
  overrides: { envelope?: Record<string, unknown> } = {},
): { envelope: CommandEnvelope; payload: string } {
  const envelope: CommandEnvelope = {
    v: ENVELOPE_VERSION,
    id: request.id ?? randomUUID(),
    deviceId: request.deviceId,
    name: request.name,
    params: request.params ?? {},
    issuedAt: request.issuedAt ?? Date.now(),
    ...(request.expiresAt !== undefined ? { expiresAt: request.expiresAt } : {}),
    ...(request.timeoutMs !== undefined ? { timeoutMs: request.timeoutMs } : {}),
  };
  const bytes = Buffer.from(JSON.stringify({ ...envelope, ...overrides.envelope }), 'utf8');
  const key = typeof signer.keyPem === 'string' ? createPrivateKey(signer.keyPem) : signer.keyPem;
  const payload = JSON.stringify({ envelope: bytes.toString('base64'), signature: signBytes(bytes, key).toString('base64'), signer: signer.certPem });
  return { envelope, payload };
}
