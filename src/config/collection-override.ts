/**
 * The collection rules set by the `setConfig` command, kept across restarts in a file of their own: beside the outbox,
 * in the agent's state folder (/var/lib/telematics-agent/collection-override.json on a car), holding exactly
 * `{ "collection": { ... } }`. The device config (config.json) names the pinned broker and command CAs, so it is
 * read-only to the agent and never rewritten by it; the override can only ever replace its `collection` section.
 *
 * At start (applyCollectionOverride): no file means the config's own rules. A file that is not a regular file (a
 * link, a FIFO), larger than COLLECTION_OVERRIDE_MAX_BYTES, not JSON, holding anything but `collection`, or rules the
 * buses cannot serve is ignored with one warning that names it and says why, and the config's own rules run: a car
 * keeps collecting. The file is left as it is for whoever looks into it; the next setConfig replaces it.
 *
 * Writing (writeCollectionOverride, through src/store/atomic-file.ts): a temporary file beside it
 * (`.collection-override.json.<pid>.tmp`), created afresh (a link pre-placed at its name is removed, never followed),
 * flushed, and renamed over the file, then the folder flushed (best effort: the new file is in place either way, and
 * some file systems cannot flush a folder): at every moment the file is the old one or the complete new one. A new
 * file gets mode 0600; a rewrite keeps the mode the file had.
 */
import path from 'node:path';
import { z } from 'zod';
import { collectionConfigSchema, type CollectionConfig } from '../collect/config.js';
import type { ComponentLog } from '../health/log.js';
import { atomicWriteFile } from '../store/atomic-file.js';
import { formatConfigPath, type DeviceConfig } from './device-config.js';
import { readRegularFile, RegularFileError } from './regular-file.js';

export const COLLECTION_OVERRIDE_FILE_NAME = 'collection-override.json';
/** Far above any collection section a command can carry (commands.maxPayloadBytes is at most 1 MiB). */
export const COLLECTION_OVERRIDE_MAX_BYTES = 4 * 1024 * 1024;
/** The mode of a new override file: the agent's own (the unit's UMask=0077 says the same). */
export const COLLECTION_OVERRIDE_MODE = 0o600;

const overrideSchema = z.strictObject({ collection: collectionConfigSchema });

/** A collection override that cannot be used; the message names the file and says why, in one line. */
export class CollectionOverrideError extends Error {
  override readonly name = 'CollectionOverrideError';
}

/** Where setConfig keeps the collection rules of `config`: beside its outbox. Undefined without an outbox. */
export function collectionOverrideFile(config: Pick<DeviceConfig, 'outbox'>): string | undefined {
  return config.outbox ? path.join(path.dirname(config.outbox.path), COLLECTION_OVERRIDE_FILE_NAME) : undefined;
}

/** The collection section in `file`; undefined when there is none. Throws CollectionOverrideError. */
export function readCollectionOverride(file: string): CollectionConfig | undefined {
  let bytes: Buffer;
  try {
    bytes = readRegularFile(file, { maxBytes: COLLECTION_OVERRIDE_MAX_BYTES });
  } catch (err) {
    if (!(err instanceof RegularFileError)) throw err;
    if (err.problem === 'missing') return undefined;
    throw new CollectionOverrideError(`${file} ${err.message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new CollectionOverrideError(`${file} is not JSON (${(err as Error).message})`);
  }
  const parsed = overrideSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${formatConfigPath(issue.path)}: ${issue.message}`);
    throw new CollectionOverrideError(`${file} is not a collection override ({"collection": {...}} and nothing else): ${problems.slice(0, 3).join('; ')}`);
  }
  return parsed.data.collection;
}

/**
 * `config` with the collection rules setConfig left, when there are usable ones (see the file comment). `check`
 * throws when the buses cannot serve the rules (the Collector's own check); `warn` gets the one line about a file
 * that is ignored, `info` the one about a file that is used.
 */
export function applyCollectionOverride(
  config: DeviceConfig,
  check: (collection: CollectionConfig) => void,
  log: Pick<ComponentLog, 'warn' | 'info'>,
): DeviceConfig {
  const file = collectionOverrideFile(config);
  if (file === undefined || config.collection === undefined) return config;
  let collection: CollectionConfig | undefined;
  try {
    collection = readCollectionOverride(file);
    if (collection === undefined) return config;
    check(collection);
  } catch (err) {
    const why = err instanceof CollectionOverrideError ? err.message : `${file}: ${(err as Error).message}`;
    log.warn(`config: the collection rules set by setConfig are ignored: ${why}; the device config's own rules are in force`);
    return config;
  }
  log.info(`config: the collection rules set by setConfig (${file}) are in force, in place of the device config's`);
  return { ...config, collection };
}

/** Keeps `collection` (as the command sent it) in `file`, atomically (see the file comment). */
export function writeCollectionOverride(file: string, collection: unknown): void {
  // The override in place is what counts: a folder that cannot be flushed does not undo setConfig.
  atomicWriteFile(file, `${JSON.stringify({ collection }, null, 2)}\n`, { mode: COLLECTION_OVERRIDE_MODE, keepMode: true, folderSync: 'best-effort' });
}
