/**
 * Preconditions of commands on live signals, e.g. `VehicleSpeed == 0 && IgnitionState == OFF`, in the expression
 * language of trigger conditions (src/collect/expression.ts: parsed, never evaluated as code). They are evaluated on
 * the current decoded values when the command arrives.
 *
 * A precondition holds only on values the agent has, and recently: a term that reads a signal with no value yet, or
 * with a stale one, fails whatever its operators (`!(Speed > 0)` included). A value is stale when it is older than its
 * limit (SignalFreshness: the command's own, else the signal's, else a few periods of its message or OBD poll, else a
 * default), or dated ahead of the car's clock (the clock was set back: its age cannot be known). A bus that went
 * silent while the car was stopped cannot make "VehicleSpeed == 0" hold once it moves.
 *
 * When it fails, the result says which parts failed and with what values: the top-level `&&` terms are checked one
 * by one, so `speed == 0 && ignition == 0` with the car moving reports `speed == 0` and the speed; a stale value is
 * reported with its age and its limit.
 */
import {
  bindLabels,
  compileExpression,
  expressionSignals,
  parseExpression,
  type ChoicesOf,
  type CompiledExpression,
  type ExpressionNode,
} from '../collect/expression.js';
import type { FreshnessConfig } from './config.js';

export type SignalReader = (name: string) => number | string | undefined;

/** How old a signal's value is and how old it may be, ms; undefined: not known (no value, or no time for it). */
export type FreshnessCheck = (name: string) => { ageMs: number; maxAgeMs: number } | undefined;

/** A value too old to be trusted: its age (negative: dated ahead of the clock) and its limit, ms. */
export interface StaleValue {
  ageMs: number;
  maxAgeMs: number;
}

export interface FailedCondition {
  condition: string;
  /** The values it read; null: no value yet. */
  values: Record<string, number | string | null>;
  /** Those of its values that are stale. */
  stale?: Record<string, StaleValue>;
}

export interface PreconditionOutcome {
  ok: boolean;
  precondition: string;
  /** The top-level `&&` terms that do not hold (empty when ok). */
  failed: FailedCondition[];
  /** Every signal the precondition reads, with its value. */
  values: Record<string, number | string | null>;
  /** The values that are stale, with their ages. */
  stale?: Record<string, StaleValue>;
}

/** What the agent knows of when a signal's latest value arrived (CommandContext.signalTiming). */
export interface SignalTiming {
  /** Its full name: `bus.Message.Signal`, `<adapter or bus>.obd.<key>`, or `obd.<key>`. */
  name: string;
  /** When its latest value arrived, unix ms; undefined: never. */
  receivedAt: number | undefined;
  /** How often it is expected (ms): its DBC message's GenMsgCycleTime, its OBD poll interval; undefined: not known. */
  periodMs: number | undefined;
}

/** A value dated further ahead of the clock than this was stamped by a clock since set back. */
const AHEAD_TOLERANCE_MS = 1000;

/**
 * The freshness limits of the `commands.freshness` section, against the agent's signals. The limit of a value, most
 * specific first: the command's own (`maxAgeMs` of its precondition), the signal's (`freshness.signals`), `cycles`
 * periods of the signal (at least `minMs`), else `defaultMs`.
 */
export class SignalFreshness {
  /** Per-signal limits by full name. */
  private readonly limits = new Map<string, number>();

  /** Throws an Error naming `freshness.signals.<name>` when no bus or OBD key has that signal. */
  constructor(
    private readonly config: FreshnessConfig,
    private readonly timing: (name: string) => SignalTiming | undefined,
  ) {
    for (const [name, limit] of Object.entries(config.signals)) {
      const found = timing(name);
      if (found === undefined) throw new Error(`commands.freshness.signals.${name}: no bus or OBD key has a signal '${name}'`);
      this.limits.set(found.name, limit);
    }
  }

  /** How old `signal`'s value may be, ms. */
  limitOf(signal: SignalTiming, commandMaxAgeMs?: number): number {
    if (commandMaxAgeMs !== undefined) return commandMaxAgeMs;
    const own = this.limits.get(signal.name);
    if (own !== undefined) return own;
    if (signal.periodMs !== undefined && signal.periodMs > 0) return Math.max(this.config.minMs, Math.ceil(this.config.cycles * signal.periodMs));
    return this.config.defaultMs;
  }

  /** The check a precondition evaluates with, at `now` (unix ms). */
  at(now: number, commandMaxAgeMs?: number): FreshnessCheck {
    return (name) => {
      const signal = this.timing(name);
      if (signal === undefined || signal.receivedAt === undefined) return undefined;
      return { ageMs: now - signal.receivedAt, maxAgeMs: this.limitOf(signal, commandMaxAgeMs) };
    };
  }
}

/** The failure's text for one term, e.g. `VehicleSpeed == 0 (VehicleSpeed = 0, stale: received 45.0 s ago, limit 1.0 s)`. */
export function describeFailure(failed: FailedCondition): string {
  const values = Object.entries(failed.values).map(([name, value]) => {
    const stale = failed.stale?.[name];
    const text = `${name} = ${value ?? 'no value'}`;
    if (stale === undefined) return text;
    const age = stale.ageMs < 0 ? `dated ${seconds(-stale.ageMs)} ahead of the car's clock` : `received ${seconds(stale.ageMs)} ago`;
    return `${text}, stale: ${age}, limit ${seconds(stale.maxAgeMs)}`;
  });
  return `${failed.condition} (${values.join(', ')})`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

export class Precondition {
  private readonly terms: { text: string; compiled: CompiledExpression }[];
  private readonly names: string[];
  private readonly slots = new Map<string, number>();
  private readonly live: Float64Array;

  /** A precondition on the signals `describe` knows (CommandContext.describeSignal), their value tables for labels. */
  static forSignals(source: string, describe: (name: string) => { choices?: ReadonlyMap<number, string> } | undefined): Precondition {
    return new Precondition(
      source,
      (name) => describe(name) !== undefined,
      (name) => describe(name)?.choices,
    );
  }

  /**
   * Throws ExpressionError on a syntax error; `known` rejects signal names no bus or OBD key has; `choices` gives the
   * value tables that labels (`IgnitionState == OFF`) are looked up in.
   */
  constructor(
    readonly source: string,
    known?: (name: string) => boolean,
    choices?: ChoicesOf,
  ) {
    const tree = parseExpression(source);
    // Without `known` every bare name is a signal: labels must then be quoted.
    this.names = expressionSignals(bindLabels(tree, source, known ?? (() => true), choices)).map((s) => s.name);
    this.names.forEach((name, i) => this.slots.set(name, i));
    this.live = new Float64Array(this.names.length);
    const resolve = (name: string): number | undefined => (known && !known(name) ? undefined : this.slots.get(name));
    // The whole expression first, so an unknown signal is reported at its column in what the user wrote.
    compileExpression(source, resolve, choices);
    // Each term printed as written (labels included), so a failure reads like the config.
    this.terms = conjuncts(tree).map((term) => {
      const text = print(term, true);
      return { text, compiled: compileExpression(text, resolve, choices) };
    });
  }

  get signals(): readonly string[] {
    return this.names;
  }

  /** Evaluates on the values `read` gives; with `freshness`, a value older than its limit fails every term reading it. */
  evaluate(read: SignalReader, freshness?: FreshnessCheck): PreconditionOutcome {
    const values: Record<string, number | string | null> = {};
    const stale: Record<string, StaleValue> = {};
    this.names.forEach((name, i) => {
      const value = read(name);
      values[name] = value ?? null;
      this.live[i] = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
      const age = value === undefined ? undefined : freshness?.(name);
      if (age !== undefined && (age.ageMs > age.maxAgeMs || age.ageMs < -AHEAD_TOLERANCE_MS))
        stale[name] = { ageMs: Math.round(age.ageMs), maxAgeMs: age.maxAgeMs };
    });
    const failed: FailedCondition[] = [];
    for (const term of this.terms) {
      const unusable = term.compiled.signals.some(({ name }) => values[name] === null || stale[name] !== undefined);
      if (!unusable && term.compiled.test(this.live)) continue;
      const termValues: Record<string, number | string | null> = {};
      const termStale: Record<string, StaleValue> = {};
      for (const { name } of term.compiled.signals) {
        termValues[name] = values[name] ?? null;
        if (stale[name] !== undefined) termStale[name] = stale[name];
      }
      failed.push({ condition: term.text, values: termValues, ...(Object.keys(termStale).length > 0 ? { stale: termStale } : {}) });
    }
    return { ok: failed.length === 0, precondition: this.source, failed, values, ...(Object.keys(stale).length > 0 ? { stale } : {}) };
  }
}

function conjuncts(node: ExpressionNode): ExpressionNode[] {
  return node.type === 'logic' && node.op === '&&' ? [...conjuncts(node.left), ...conjuncts(node.right)] : [node];
}

/** The expression as text again (parenthesised where nested), for the result and to compile a single term. */
function print(node: ExpressionNode, top = false): string {
  const wrap = (text: string): string => (top ? text : `(${text})`);
  switch (node.type) {
    case 'number':
      return String(node.value);
    case 'signal':
      return node.name;
    case 'label':
      // As written: the language has no escapes, so the quote is the one the label does not contain.
      return node.text.includes('"') ? `'${node.text}'` : `"${node.text}"`;
    case 'not':
      return `!${print(node.operand)}`;
    case 'negate':
      return `-${print(node.operand)}`;
    case 'call':
      return `${node.fn}(${node.args.map((arg) => print(arg, true)).join(', ')})`;
    default:
      return wrap(`${print(node.left)} ${node.op} ${print(node.right)}`);
  }
}
