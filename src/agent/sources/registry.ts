/**
 * The source types the agent knows: one line per type below. The config loader builds `buses[].source` and
 * `obdAdapters[]` from this list (and rebuilds when it changes), the agent creates sources through it, the command
 * context asks it where a written frame goes, provisioning asks which files a bus's source needs.
 *
 * A new type is one module (see source-type.ts) and one line in BUILT_IN. `registerSourceType` adds one at run time
 * (a test, an integration): the config loader accepts it from then on. Looking up a type nobody registered throws,
 * naming the type; registering a type twice throws.
 */
import { elm327Adapter } from './elm327.js';
import { gnssAdapter } from './gnss.js';
import { gpsdAdapter } from './gpsd.js';
import { simGnssAdapter } from './sim-gnss.js';
import { replaySource } from './replay.js';
import { simSource } from './sim.js';
import { socketcanSource } from './socketcan.js';
import type { AdapterConfig, AdapterType, BusSourceType, SourceConfig, SourceType } from './source-type.js';

/** The built-in types, in the order the config's error messages list them. */
const BUILT_IN: readonly SourceType[] = [simSource, replaySource, socketcanSource, elm327Adapter, gnssAdapter, gpsdAdapter, simGnssAdapter];

/** The adapter type of an `obdAdapters[]` entry that names none: adapters were all ELM327s before there were types. */
export const DEFAULT_ADAPTER_TYPE = 'elm327';

const busTable = new Map<string, BusSourceType>();
const adapterTable = new Map<string, AdapterType>();
let changes = 0;

/**
 * Adds a source type; returns a function that removes it again. Throws when its kind already has a type of that
 * name. The config loader accepts the type from the next config it reads.
 */
export function registerSourceType(sourceType: SourceType): () => void {
  // The registry stores every type by its base config type: each plug-in checks its own config with its schema.
  const table = (sourceType.kind === 'bus' ? busTable : adapterTable) as Map<string, SourceType>;
  if (table.has(sourceType.type)) throw new Error(`a ${sourceType.kind === 'bus' ? 'bus source' : 'adapter'} type '${sourceType.type}' is already registered`);
  table.set(sourceType.type, sourceType);
  changes++;
  return () => {
    if (table.get(sourceType.type) !== sourceType) return;
    table.delete(sourceType.type);
    changes++;
  };
}

for (const sourceType of BUILT_IN) registerSourceType(sourceType);

/** The bus source types, in registration order. */
export function busSourceTypes(): readonly BusSourceType[] {
  return [...busTable.values()];
}

/** The adapter types, in registration order. */
export function adapterTypes(): readonly AdapterType[] {
  return [...adapterTable.values()];
}

/** Counts registrations and removals: the config loader rebuilds its schema when this changes. */
export function sourceTypesVersion(): number {
  return changes;
}

/** The plug-in of a bus source config; throws naming the type when none is registered. */
export function busSourceType(source: SourceConfig): BusSourceType {
  const found = busTable.get(source.type);
  if (found === undefined) throw new Error(`no bus source type '${source.type}' is registered`);
  return found;
}

/** The plug-in of an `obdAdapters[]` entry; throws naming the type when none is registered. */
export function adapterType(adapter: AdapterConfig): AdapterType {
  const type = adapter.type ?? DEFAULT_ADAPTER_TYPE;
  const found = adapterTable.get(type);
  if (found === undefined) throw new Error(`no adapter type '${type}' is registered`);
  return found;
}

/** A file a bus's source needs: the field of `buses[].source` that names it, and the file (absolute once loaded). */
export interface SourceFile {
  key: string;
  file: string;
}

/**
 * The files the source of `bus` needs besides the bus's DBC (a replay's log), as a provisioning bundle must carry
 * them: for each, the field of `bus.source` that names it, to be rewritten to the bundle's copy. Empty for a source
 * that needs none; throws for a type nobody registered.
 */
export function sourceFiles(bus: { readonly source: SourceConfig }): SourceFile[] {
  const files: SourceFile[] = [];
  for (const key of busSourceType(bus.source).files ?? []) {
    const file = bus.source[key];
    if (typeof file === 'string') files.push({ key, file });
  }
  return files;
}
