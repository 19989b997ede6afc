/**
 * The reference decoder for backends: the package's entry point (`import { decodeAgentMessage } from
 * 'telematics-agent'`). Given a topic under `vehicles/<deviceId>/` and its payload, it returns what the message is
 * (`kind`), which car sent it, and the message decoded and checked against the contract's zod schema: the very schema
 * the agent builds it with, so a backend reads exactly what the car writes.
 *
 * Telemetry and events come in either format (first byte `{`: JSON, checked against `telemetry`; 0x01 or 0x02: binary,
 * decoded by the agent's own codec to the `telemetry-decoded` shape). A binary value NaN or ±Infinity is kept as it is
 * (the binary layout keeps them; JSON would write null). Messages the backend sends (`command`, `certificate`) decode
 * too, so one subscriber on `vehicles/+/#` can read everything.
 *
 * Failure: anything that is not a message of the contract (a topic it does not name, bytes that do not decode, a field
 * off its schema, a deviceId other than the topic's, a kind other than the topic's) throws ContractError, one line
 * naming the topic and the field. Nothing else is thrown. Never logs.
 */
import type { z } from 'zod';
import { decodeMessage, PayloadError } from '../uplink/codec.js';
import { commandResultSchema, commandSchemas } from './command-results.js';
import { wireSchema } from './command-envelope.js';
import { healthReportSchema } from './health.js';
import { certificateAnswerSchema, certificateRequestSchema, remoteLogEntrySchema, statusMessageSchema } from './messages.js';
import { decodedTelemetrySchema, lossNoticeSchema, telemetryMessageSchema } from './telemetry.js';

export * from './index.js';

/** A message that is not one of the contract's: the topic and what is wrong, in one line. */
export class ContractError extends Error {
  override readonly name = 'ContractError';
  constructor(
    readonly topic: string,
    readonly problem: string,
  ) {
    super(`${topic}: ${problem}`);
  }
}

type Out<S extends z.ZodType> = z.output<S>;

/** What `decodeAgentMessage` returns: `kind` tells which message (and so the type of `message`). */
export type AgentMessage =
  | { deviceId: string; kind: 'telemetry' | 'events'; format: 'json' | 'cbor'; message: Out<typeof telemetryMessageSchema> }
  | { deviceId: string; kind: 'loss'; message: Out<typeof lossNoticeSchema> }
  | { deviceId: string; kind: 'status'; message: Out<typeof statusMessageSchema> }
  | { deviceId: string; kind: 'health'; message: Out<typeof healthReportSchema> }
  | { deviceId: string; kind: 'logs'; message: Out<typeof remoteLogEntrySchema> }
  | { deviceId: string; kind: 'csr'; message: Out<typeof certificateRequestSchema> }
  | { deviceId: string; kind: 'result'; message: Out<typeof commandResultSchema> }
  | { deviceId: string; kind: 'command'; command: string; message: Out<typeof wireSchema> }
  | { deviceId: string; kind: 'certificate'; message: Out<typeof certificateAnswerSchema> };

export type AgentMessageKind = AgentMessage['kind'];

const TOPIC = /^vehicles\/([^/+#]+)\/(.+)$/;

/** The first problem zod found, as `field: message` (the field dot-joined; `(message)` for the whole object). */
function firstIssue(error: z.ZodError, prefix = ''): string {
  const issue = error.issues[0];
  if (!issue) return 'does not match the contract';
  const field = [prefix, ...issue.path.map(String)].filter((p) => p !== '').join('.');
  return `${field === '' ? '(message)' : field}: ${issue.message}`;
}

function checked<S extends z.ZodType>(topic: string, schema: S, value: unknown, name: string, prefix = ''): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ContractError(topic, `not a ${name} message of the contract: ${firstIssue(parsed.error, prefix)}`);
  return parsed.data;
}

function json(topic: string, payload: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch (err) {
    throw new ContractError(topic, `not JSON: ${(err as Error).message}`);
  }
}

function sameDevice(topic: string, deviceId: string, message: { deviceId?: unknown }): void {
  if (message.deviceId !== undefined && message.deviceId !== deviceId) {
    throw new ContractError(topic, `deviceId: ${JSON.stringify(message.deviceId)} is not the topic's ${deviceId}`);
  }
}

/** A binary value NaN or ±Infinity, as JSON writes it, for the schema's check only (the message keeps the value). */
function finiteForCheck(message: Out<typeof decodedTelemetrySchema>): unknown {
  if (message.samples.every((s) => typeof s.value !== 'number' || Number.isFinite(s.value))) return message;
  return { ...message, samples: message.samples.map((s) => (typeof s.value === 'number' && !Number.isFinite(s.value) ? { ...s, value: null } : s)) };
}

function telemetry(topic: string, deviceId: string, kind: 'telemetry' | 'events', payload: Uint8Array): AgentMessage {
  let message: Out<typeof telemetryMessageSchema>;
  let format: 'json' | 'cbor';
  if (payload[0] === 0x7b) {
    format = 'json';
    message = checked(topic, telemetryMessageSchema, json(topic, payload), 'telemetry');
  } else {
    format = 'cbor';
    let decoded: ReturnType<typeof decodeMessage>;
    try {
      decoded = decodeMessage(payload, 'cbor');
    } catch (err) {
      if (!(err instanceof PayloadError)) throw err;
      throw new ContractError(topic, `binary payload does not decode: ${err.message}`);
    }
    message = { ...decoded.header, samples: decoded.samples };
    checked(topic, decodedTelemetrySchema, finiteForCheck(message), 'telemetry-decoded');
  }
  sameDevice(topic, deviceId, message);
  if (message.kind !== kind) throw new ContractError(topic, `kind: ${message.kind} on the ${kind} topic`);
  return { deviceId, kind, format, message };
}

/** A command result, its SUCCEEDED or IN_PROGRESS detail checked against the command's own schema when it has one. */
function result(topic: string, deviceId: string, payload: Uint8Array): AgentMessage {
  const message = checked(topic, commandResultSchema, json(topic, payload), 'result');
  sameDevice(topic, deviceId, message);
  const schemas = message.command === undefined ? undefined : commandSchemas.get(message.command);
  if (schemas && message.detail !== undefined) {
    if (message.status === 'SUCCEEDED') checked(topic, schemas.result, message.detail, `commands/${message.command}.result`, 'detail');
    if (message.status === 'IN_PROGRESS' && schemas.progress)
      checked(topic, schemas.progress, message.detail, `commands/${message.command}.progress`, 'detail');
  }
  return { deviceId, kind: 'result', message };
}

/**
 * Decodes the message published on `topic` (`vehicles/<deviceId>/...`) and checks it against the contract; throws
 * ContractError naming the topic and the field when it is not a message of the contract.
 */
export function decodeAgentMessage(topic: string, payload: Uint8Array): AgentMessage {
  const match = TOPIC.exec(topic);
  if (!match) throw new ContractError(topic, 'not a topic of the contract (vehicles/<deviceId>/...)');
  const deviceId = match[1]!;
  const rest = match[2]!;
  const simple = <K extends 'loss' | 'status' | 'health' | 'logs' | 'csr', S extends z.ZodType>(kind: K, schema: S) => {
    const message = checked(topic, schema, json(topic, payload), kind);
    sameDevice(topic, deviceId, message as { deviceId?: unknown });
    return { deviceId, kind, message } as AgentMessage;
  };
  switch (rest) {
    case 'telemetry':
    case 'events':
      return telemetry(topic, deviceId, rest, payload);
    case 'loss':
      return simple('loss', lossNoticeSchema);
    case 'status':
      return simple('status', statusMessageSchema);
    case 'health':
      return simple('health', healthReportSchema);
    case 'logs':
      return simple('logs', remoteLogEntrySchema);
    case 'csr':
      return simple('csr', certificateRequestSchema);
    case 'certificate':
      return { deviceId, kind: 'certificate', message: checked(topic, certificateAnswerSchema, json(topic, payload), 'certificate') };
  }
  if (/^commands\/[^/]+\/result$/.test(rest) || /^results\/[^/]+$/.test(rest)) return result(topic, deviceId, payload);
  const command = /^commands\/([^/]+)$/.exec(rest);
  if (command) return { deviceId, kind: 'command', command: command[1]!, message: checked(topic, wireSchema, json(topic, payload), 'command') };
  throw new ContractError(topic, 'not a topic of the contract');
}
