/**
 * Preconditions of commands on live signals, e.g. `VehicleSpeed == 0 && IgnitionState == OFF`, in the expression
 * language of trigger conditions (src/collect/expression.ts: parsed, never evaluated as code). They are evaluated on
 * the current decoded values when the command arrives. A signal with no value yet is NaN, so a precondition never
 * holds on data the agent has not seen.
 *
 * When it fails, the result says which parts failed and with what values: the top-level `&&` terms are checked one
 * by one, so `speed == 0 && ignition == 0` with the car moving reports `speed == 0` and the speed.
 */
import { bindLabels, compileExpression, expressionSignals, parseExpression, type ChoicesOf, type CompiledExpression, type ExpressionNode } from '../collect/expression.js';

export type SignalReader = (name: string) => number | string | undefined;

export interface FailedCondition {
  condition: string;
  /** The values it read; null: no value yet. */
  values: Record<string, number | string | null>;
}

export interface PreconditionOutcome {
  ok: boolean;
  precondition: string;
  /** The top-level `&&` terms that do not hold (empty when ok). */
  failed: FailedCondition[];
  /** Every signal the precondition reads, with its value. */
  values: Record<string, number | string | null>;
}

export class Precondition {
  private readonly terms: { text: string; compiled: CompiledExpression }[];
  private readonly names: string[];
  private readonly slots = new Map<string, number>();
  private readonly live: Float64Array;

  /** A precondition on the signals `describe` knows (CommandContext.describeSignal), their value tables for labels. */
  static forSignals(source: string, describe: (name: string) => { choices?: ReadonlyMap<number, string> } | undefined): Precondition {
    return new Precondition(source, (name) => describe(name) !== undefined, (name) => describe(name)?.choices);
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

  evaluate(read: SignalReader): PreconditionOutcome {
    const values: Record<string, number | string | null> = {};
    this.names.forEach((name, i) => {
      const value = read(name);
      values[name] = value ?? null;
      this.live[i] = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
    });
    const failed: FailedCondition[] = [];
    for (const term of this.terms) {
      if (term.compiled.test(this.live)) continue;
      const termValues: Record<string, number | string | null> = {};
      for (const { name } of term.compiled.signals) termValues[name] = values[name] ?? null;
      failed.push({ condition: term.text, values: termValues });
    }
    return { ok: failed.length === 0, precondition: this.source, failed, values };
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
