/**
 * The command catalogue: every command the agent understands (HANDLERS), with its description, its default timeout
 * and its parameters as JSON Schema, made from the same zod schemas the dispatcher checks a command's parameters
 * with. `telematics-ops commands` prints it, so what an operator reads is what the car enforces (for a car running
 * this version).
 *
 * Failure: none at run time; a handler whose schema JSON Schema cannot express throws here, which the catalogue's
 * test catches for every handler.
 */
import { z } from 'zod';
import { HANDLERS } from './handlers/index.js';

/** A JSON Schema document (draft 2020-12), as zod writes it. */
export type JsonSchema = Record<string, unknown>;

export interface CatalogueEntry {
  name: string;
  description: string;
  /** Used when the command names no timeout and the car's config sets no `commands.defaultTimeoutMs`. */
  defaultTimeoutMs: number;
  /** The parameters object: `properties`, `required`, `additionalProperties: false` (unknown fields are refused). */
  params: JsonSchema;
}

/** The catalogue, in the order HANDLERS lists the commands. Schemas are of the input: a field with a default is optional. */
export function commandCatalogue(): CatalogueEntry[] {
  return HANDLERS.map((handler) => ({
    name: handler.name,
    description: handler.description,
    defaultTimeoutMs: handler.defaultTimeoutMs,
    params: z.toJSONSchema(handler.params, { io: 'input' }),
  }));
}
