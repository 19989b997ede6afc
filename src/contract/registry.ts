/**
 * The contract's registry: every message schema the agent publishes or accepts is registered here under a name, and
 * `contract/<name>.schema.json` (JSON Schema 2020-12) is generated from it by scripts/write-contract.mjs. The zod
 * schemas are the one truth: the agent's TypeScript types come from them, the published files are written from them,
 * and the contract tests check the agent's real messages against the published files with another validator (ajv).
 *
 * Every `$id` carries the contract version: `https://telematics-agent.invalid/contract/v<N>/<name>.schema.json`.
 * The host is an identifier, not a location (`.invalid` never resolves): the files ship in the package's
 * `contract/` folder. The version changes when a field changes meaning or goes away; a new field keeps it.
 *
 * Registering the same name twice throws at import (a programming error, found by any test).
 */
import { z } from 'zod';

/** The contract's version: the `v<N>` of every `$id`. */
export const CONTRACT_VERSION = 1;

const CONTRACT_BASE = `https://telematics-agent.invalid/contract/v${CONTRACT_VERSION}/`;

/** The `$id` of the schema registered as `name`. */
export function contractUri(name: string): string {
  return `${CONTRACT_BASE}${name}.schema.json`;
}

/** Where the generated files live, relative to the package root. */
export const CONTRACT_FOLDER = 'contract';

/**
 * Which way a message goes decides which side of its zod schema is published: what the agent sends is described as it
 * comes out (defaults filled in: `io: 'output'`), what it accepts as it may come in (a field with a default is
 * optional: `io: 'input'`).
 */
export type ContractDirection = 'published' | 'accepted';

interface ContractMeta {
  id: string;
  title: string;
  description: string;
}

const registries: Record<ContractDirection, z.core.$ZodRegistry<ContractMeta>> = {
  published: z.registry<ContractMeta>(),
  accepted: z.registry<ContractMeta>(),
};
const described = new Map<string, { title: string; description: string }>();

/**
 * Registers `schema` as the contract's `name` (its file `contract/<name>.schema.json`, its `$id`) and returns it.
 * `name` may have one folder level (`commands/ping.params`).
 */
export function contractSchema<S extends z.ZodType>(
  name: string,
  title: string,
  description: string,
  schema: S,
  direction: ContractDirection = 'published',
): S {
  if (described.has(name)) throw new Error(`contract: the name ${name} is registered twice`);
  described.set(name, { title, description });
  registries[direction].add(schema, { id: name, title, description });
  return schema;
}

/** The JSON Schema documents of the whole contract, by name, with `$ref`s across files by `$id`. */
export function contractJsonSchemas(): Record<string, Record<string, unknown>> {
  const documents: Record<string, Record<string, unknown>> = {};
  for (const [direction, registry] of Object.entries(registries)) {
    const io = direction === 'accepted' ? 'input' : 'output';
    const out = z.toJSONSchema(registry, { uri: contractUri, io, unrepresentable: 'throw' });
    for (const [name, document] of Object.entries(out.schemas)) {
      // Title and description first, as a reader of the file expects them.
      const { $schema, $id, ...rest } = document as Record<string, unknown>;
      documents[name] = { $schema, $id, ...described.get(name), ...rest };
    }
  }
  return documents;
}

/** Shared field shapes: written once, so the same concept has the same schema in every message. */
export const unixMs = z.number().int().nonnegative().describe('Unix time in milliseconds.');

export const count = z.number().int().nonnegative();

export const deviceId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)
  .describe('The device: 1-64 letters, digits, `.`, `_` and `-`, starting with a letter or a digit; as in the topic.');

/**
 * A sequence number of the outbox: up to 2^53 - 1. New databases start from the clock (ms x 1000, about 1.8e15):
 * a 32-bit column does not hold it; use a 64-bit integer or a double.
 */
export const outboxSeq = z
  .number()
  .int()
  .nonnegative()
  .max(Number.MAX_SAFE_INTEGER)
  .describe('Per-device sequence number, about 1.8e15 (needs a 64-bit integer or a double; never a 32-bit column).');
