/**
 * The `collection` section of the device config: which signals become samples, when, at which priority, and how they
 * are batched into messages. Trigger conditions are checked for syntax here; whether their signals (and the rules'
 * signals) exist is known only against the DBCs, when the Collector is built.
 *
 * The memory the section may claim is bounded (`maxMemoryMB`, default 64): the trigger buffers and open batches it
 * asks for are estimated from its fields, and a section over the budget is refused with the biggest claims named,
 * at config load and through setConfig alike. The Collector checks again with what only the DBCs tell (the default
 * ring sizes, the post-trigger windows), through the same estimate.
 */
import { z } from 'zod';
import { expressionSyntaxError } from './expression.js';
import { MAX_PRIORITY, MIN_PRIORITY } from './sample.js';

const signalListSchema = z
  .array(z.string().min(1))
  .min(1)
  .describe(
    'Signals of the rule: `Message.Signal` or a bare signal name (first bus and message that has it), optionally prefixed by the bus ' +
      '(`can0.ENGINE_DATA.EngineSpeed`), or `obd.<key>` for an OBD-II PID (`obd.rpm`, any adapter or bus; `<name>.obd.<key>` for one).',
  );

const prioritySchema = z
  .number()
  .int()
  .min(MIN_PRIORITY)
  .max(MAX_PRIORITY)
  .default(3)
  .describe('0 (bulk) to 7 (critical): higher goes out first and is evicted from the outbox last. Default 3.');

const ruleBase = {
  name: z.string().min(1).describe('Names the rule in stats, and in events as the trigger that fired.'),
  signals: signalListSchema,
  priority: prioritySchema,
};

const periodicRuleSchema = z
  .strictObject({
    ...ruleBase,
    mode: z.literal('periodic'),
    intervalMs: z
      .number()
      .int()
      .min(1)
      .describe(
        'Sample each signal every this many ms: the first value received at or after each grid point, with its own timestamp. ' +
          'A signal that stops arriving produces nothing (no stale repeats).',
      ),
  })
  .describe('Downsampling: each signal at most once per interval.');

const changeRuleSchema = z
  .strictObject({
    ...ruleBase,
    mode: z.literal('change'),
    deadband: z
      .strictObject({
        absolute: z.number().min(0).optional().describe('Ignore changes of at most this much (signal units) from the last value sent.'),
        relative: z.number().min(0).optional().describe('Ignore changes of at most this fraction of the last value sent (0.01 = 1 %).'),
      })
      .optional()
      .describe(
        'A value is sent when it differs from the last value sent by more than every deadband given (the larger threshold wins). ' +
          'Without one, any change is sent.',
      ),
    minIntervalMs: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe('Send each signal at most once per this many ms; a change inside the interval waits for the next value after it.'),
  })
  .describe('On change: a signal is sent when its value changes beyond the deadband.');

const triggerSchema = z
  .strictObject({
    when: z
      .string()
      .min(1)
      .superRefine((text, ctx) => {
        const error = expressionSyntaxError(text);
        if (error) ctx.addIssue({ code: 'custom', message: `invalid condition: ${error.message}` });
      })
      .describe(
        'Condition over live signals, e.g. `VehicleSpeed > 120 && BrakePressure > 80`: numbers, signal names, < <= > >= == !=, ' +
          '&& || !, + - * /, parentheses, abs(x), min(a,b), max(a,b), and value-table labels beside == and != ' +
          '(`IgnitionState == OFF`, `GearEngaged != "R"`). A signal with no value yet makes comparisons false.',
      ),
    risingEdge: z
      .boolean()
      .default(true)
      .describe('Fire when the condition becomes true, once until it has been false again (default). false: fire on every change of its signals while true.'),
    preMs: z.number().int().min(0).default(0).describe('Capture the rule signals from this many ms before the trigger.'),
    postMs: z.number().int().min(0).default(0).describe('... up to this many ms after it; the event is sent when this window has passed.'),
    minIntervalMs: z.number().int().min(0).default(0).describe('Do not fire again within this many ms of the last firing.'),
    bufferSamples: z
      .number()
      .int()
      .min(16)
      .max(1_000_000)
      .optional()
      .describe("Size of the pre-trigger ring buffer, in samples; default: estimated from the messages' cycle times (twice preMs worth)."),
  })
  .describe('When to fire and which window of the rule signals to capture.');

const triggerRuleSchema = z
  .strictObject({
    ...ruleBase,
    mode: z.literal('trigger'),
    trigger: triggerSchema,
  })
  .describe('Event capture: when the condition fires, the rule signals around that moment go out as one events message.');

const everyRuleSchema = z
  .strictObject({
    ...ruleBase,
    mode: z.literal('every'),
  })
  .describe(
    "Every sample: each decoded value of each signal, with its frame's timestamp, in order; nothing dropped, merged or repeated " +
      '(a multiplexed signal only from frames carrying its page). The most data of any mode: see README "Collection" for its cost.',
  );

export const collectionRuleSchema = z.discriminatedUnion('mode', [periodicRuleSchema, changeRuleSchema, triggerRuleSchema, everyRuleSchema]);

/** One pre-trigger ring slot: its time (Float64), channel (Int32) and value (Float64). */
export const RING_SLOT_BYTES = 20;
/** One sample held as an object, in an open batch or a trigger's capture: about 90 bytes on Node 20 (x64), measured. */
export const HELD_SAMPLE_BYTES = 96;
/** Memory the collection may claim unless `maxMemoryMB` says otherwise, in MB (10^6 bytes). */
export const DEFAULT_COLLECTION_MEMORY_MB = 64;
/** Smallest ring the collector makes (the schema's minimum bufferSamples). */
const MIN_RING_SAMPLES = 16;

/** What one part of the collection may hold in memory at most. */
export interface MemoryClaim {
  /** `trigger 'hardBrake'`, `telemetry batches of 2 priorities`. */
  what: string;
  bytes: number;
  /** How the figure comes about: `1000000 buffered samples`. */
  basis: string;
}

/** Sizes only the collector knows (from the DBCs' cycle times): a trigger's ring, and the samples of its post window. */
export type TriggerSizes = (rule: TriggerRule, index: number) => { ringSamples: number; postSamples: number };

/**
 * The memory the section claims at most, part by part: each trigger's ring plus the capture copied out of it when it
 * fires (ring x (slot + held sample)) plus its post window (held samples), and one open telemetry batch per priority
 * in use (batch.maxSamples held samples). Without `sizes` a trigger counts its bufferSamples (or the minimum ring)
 * and no post window: what the fields alone say.
 */
export function collectionMemoryClaims(config: Pick<CollectionConfig, 'batch' | 'rules'>, sizes?: TriggerSizes): MemoryClaim[] {
  const claims: MemoryClaim[] = [];
  const priorities = new Set<number>();
  config.rules.forEach((rule, index) => {
    if (rule.mode !== 'trigger') {
      priorities.add(rule.priority);
      return;
    }
    const { ringSamples, postSamples } = sizes?.(rule, index) ?? { ringSamples: rule.trigger.bufferSamples ?? MIN_RING_SAMPLES, postSamples: 0 };
    const post = postSamples > 0 ? ` and about ${postSamples} in its ${rule.trigger.postMs} ms post window` : '';
    claims.push({
      what: `trigger '${rule.name}'`,
      bytes: ringSamples * (RING_SLOT_BYTES + HELD_SAMPLE_BYTES) + postSamples * HELD_SAMPLE_BYTES,
      basis: `${ringSamples} buffered samples${post}`,
    });
  });
  if (priorities.size > 0) {
    claims.push({
      what: `telemetry batches of ${priorities.size} priorit${priorities.size === 1 ? 'y' : 'ies'}`,
      bytes: priorities.size * config.batch.maxSamples * HELD_SAMPLE_BYTES,
      basis: `batch.maxSamples ${config.batch.maxSamples} each`,
    });
  }
  return claims;
}

function megabytes(bytes: number): string {
  const mb = bytes / 1e6;
  return `${mb >= 10 ? Math.round(mb) : mb.toFixed(1)} MB`;
}

/** Why the section is over its memory budget (the total and the three biggest claims), or undefined when it is not. */
export function memoryBudgetProblem(config: Pick<CollectionConfig, 'batch' | 'rules'> & { maxMemoryMB?: number }, sizes?: TriggerSizes): string | undefined {
  const budgetMB = config.maxMemoryMB ?? DEFAULT_COLLECTION_MEMORY_MB;
  const claims = collectionMemoryClaims(config, sizes);
  const total = claims.reduce((sum, claim) => sum + claim.bytes, 0);
  if (total <= budgetMB * 1e6) return undefined;
  const biggest = [...claims].sort((a, b) => b.bytes - a.bytes).slice(0, 3);
  const more = claims.length > biggest.length ? `, and ${claims.length - biggest.length} more` : '';
  return (
    `the rules would hold up to ${megabytes(total)} in memory, over the budget of ${budgetMB} MB (maxMemoryMB): ` +
    `${biggest.map((c) => `${c.what} ${megabytes(c.bytes)} (${c.basis})`).join(', ')}${more}; ` +
    'lower trigger.bufferSamples, trigger.postMs or batch.maxSamples, or raise maxMemoryMB if the device has the memory'
  );
}

export const collectionConfigSchema = z
  .strictObject({
    batch: z
      .strictObject({
        maxSamples: z.number().int().min(1).max(100_000).default(500).describe('Close a telemetry batch at this many samples. Default 500.'),
        maxDelayMs: z.number().int().min(10).default(5000).describe('Close a telemetry batch this many ms after its first sample at the latest. Default 5000.'),
        maxBytes: z
          .number()
          .int()
          .min(256)
          .optional()
          .describe('Close a telemetry batch when its encoded size (estimated before compression) reaches this many bytes.'),
      })
      .prefault({})
      .describe('How samples are grouped into messages (one batch per priority at a time).'),
    format: z
      .enum(['json', 'cbor'])
      .default('cbor')
      .describe('Payload encoding: cbor (compact columnar CBOR, deflated; default) or json (readable). See docs/payload-format.md.'),
    rules: z.array(collectionRuleSchema).default([]).describe('What to collect.'),
    maxMemoryMB: z
      .number()
      .int()
      .min(1)
      .default(DEFAULT_COLLECTION_MEMORY_MB)
      .describe(
        'Memory the collection may claim for trigger buffers and open batches, in MB, as estimated from the rules ' +
          `(about ${RING_SLOT_BYTES + HELD_SAMPLE_BYTES} bytes per buffered trigger sample, ${HELD_SAMPLE_BYTES} per batched sample). ` +
          `A section over it is refused. Default ${DEFAULT_COLLECTION_MEMORY_MB}.`,
      ),
  })
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.rules.forEach((rule, i) => {
      if (seen.has(rule.name)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `duplicate rule name '${rule.name}'` });
      seen.add(rule.name);
    });
    const overBudget = memoryBudgetProblem(config);
    if (overBudget !== undefined) ctx.addIssue({ code: 'custom', path: [], message: overBudget });
  })
  .describe('Collection: rules that turn decoded signals into samples, and how samples are batched into messages.');

export type CollectionConfig = z.output<typeof collectionConfigSchema>;
export type CollectionRule = z.output<typeof collectionRuleSchema>;
export type PeriodicRule = z.output<typeof periodicRuleSchema>;
export type ChangeRule = z.output<typeof changeRuleSchema>;
export type TriggerRule = z.output<typeof triggerRuleSchema>;
export type EveryRule = z.output<typeof everyRuleSchema>;
export type BatchConfig = CollectionConfig['batch'];
export type PayloadFormat = CollectionConfig['format'];
