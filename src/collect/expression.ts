/**
 * Trigger conditions: a small expression language over live signal values, e.g.
 * `VehicleSpeed > 120 && BrakePressure > 80` or `abs(can0.VEHICLE_DYNAMICS.LongitudinalAccel) >= 6`.
 *
 * Grammar (lowest precedence first):
 *   or      := and ( '||' and )*
 *   and     := cmp ( '&&' cmp )*
 *   cmp     := sum ( ( '<' | '<=' | '>' | '>=' | '==' | '!=' ) sum )?
 *   sum     := product ( ( '+' | '-' ) product )*
 *   product := unary ( ( '*' | '/' ) unary )*
 *   unary   := ( '!' | '-' ) unary | primary
 *   primary := number | signal | label | function '(' or ( ',' or )* ')' | '(' or ')'
 * Numbers are decimal (`120`, `0.5`, `.5`, `1e3`) or hexadecimal (`0x1F`). A signal is an identifier with dots
 * (`VehicleSpeed`, `ENGINE_DATA.EngineSpeed`, `obd.rpm`); the functions are abs(x), min(a, b), max(a, b).
 *
 * A label of a signal's DBC value table stands for its number on the other side of `==` or `!=`: `IgnitionState ==
 * OFF`, or quoted when it is not an identifier, `GearEngaged != "R"`. A bare name is a signal when one has that name,
 * else a label; the match is exact, or else case-insensitive when only one label fits.
 *
 * Values are numbers; comparisons and logic give 1 or 0, and a value is true when it is neither 0 nor NaN. A signal
 * that has no value yet is NaN, and every comparison with NaN is false (`!=` included), so a condition never holds
 * on data the agent has not seen.
 *
 * The text is parsed once and compiled into a tree of closures reading a Float64Array by slot (no eval, no Function):
 * evaluating is a few nanoseconds per node and allocates nothing.
 */

export class ExpressionError extends Error {
  override readonly name = 'ExpressionError';
  constructor(
    readonly source: string,
    /** 1-based column in `source`. */
    readonly column: number,
    readonly reason: string,
  ) {
    super(`column ${column}: ${reason}`);
  }
}

export type ComparisonOperator = '<' | '<=' | '>' | '>=' | '==' | '!=';
export type ArithmeticOperator = '+' | '-' | '*' | '/';
export type FunctionName = 'abs' | 'min' | 'max';

/** The parsed form; `column` is 1-based, for messages about the node. */
export type ExpressionNode =
  | { type: 'number'; value: number; column: number }
  | { type: 'signal'; name: string; column: number }
  /** A quoted label (`"R"`); bound to its number by compileExpression. */
  | { type: 'label'; text: string; column: number }
  | { type: 'not'; operand: ExpressionNode; column: number }
  | { type: 'negate'; operand: ExpressionNode; column: number }
  | { type: 'arithmetic'; op: ArithmeticOperator; left: ExpressionNode; right: ExpressionNode; column: number }
  | { type: 'compare'; op: ComparisonOperator; left: ExpressionNode; right: ExpressionNode; column: number }
  | { type: 'logic'; op: '&&' | '||'; left: ExpressionNode; right: ExpressionNode; column: number }
  | { type: 'call'; fn: FunctionName; args: ExpressionNode[]; column: number };

const FUNCTION_ARITY: Record<FunctionName, number> = { abs: 1, min: 2, max: 2 };

type TokenKind = 'number' | 'name' | 'string' | 'op' | '(' | ')' | ',' | 'end';
interface Token {
  kind: TokenKind;
  text: string;
  value: number;
  /** 0-based offset. */
  at: number;
}

const OPERATORS = ['<=', '>=', '==', '!=', '&&', '||', '<', '>', '!', '+', '-', '*', '/'];
const NAME_START = /[A-Za-z_]/;
const NAME_PART = /[A-Za-z0-9_]/;

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const fail = (at: number, reason: string): never => {
    throw new ExpressionError(source, at + 1, reason);
  };
  while (i < source.length) {
    const c = source[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    const start = i;
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(source[i + 1] ?? ''))) {
      const hex = /^0[xX][0-9A-Fa-f]+/.exec(source.slice(i));
      const match = hex ?? /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/.exec(source.slice(i))!;
      i += match[0].length;
      // `12abc` or `1.2.3` is a typo, not a number followed by a name.
      if (i < source.length && (NAME_PART.test(source[i]!) || source[i] === '.')) fail(start, `malformed number '${source.slice(start, i + 1)}'`);
      const value = Number(match[0]);
      if (!Number.isFinite(value)) fail(start, `number out of range '${match[0]}'`);
      tokens.push({ kind: 'number', text: match[0], value, at: start });
      continue;
    }
    if (NAME_START.test(c)) {
      i++;
      for (;;) {
        while (i < source.length && NAME_PART.test(source[i]!)) i++;
        if (source[i] !== '.') break;
        if (!NAME_PART.test(source[i + 1] ?? '')) fail(i, `a signal name cannot end with '.'`);
        i++;
      }
      tokens.push({ kind: 'name', text: source.slice(start, i), value: 0, at: start });
      continue;
    }
    if (c === '"' || c === "'") {
      const end = source.indexOf(c, i + 1);
      if (end < 0) fail(i, `unterminated label: no closing ${c}`);
      tokens.push({ kind: 'string', text: source.slice(i + 1, end), value: 0, at: i });
      i = end + 1;
      continue;
    }
    if (c === '(' || c === ')' || c === ',') {
      tokens.push({ kind: c, text: c, value: 0, at: i++ });
      continue;
    }
    const op = OPERATORS.find((o) => source.startsWith(o, i));
    if (op === undefined) {
      if (c === '=') fail(i, `unexpected '=': compare with '=='`);
      if (c === '&' || c === '|') fail(i, `unexpected '${c}': logical operators are '&&' and '||'`);
      fail(i, `unexpected character '${c}'`);
    }
    tokens.push({ kind: 'op', text: op!, value: 0, at: i });
    i += op!.length;
  }
  tokens.push({ kind: 'end', text: '', value: 0, at: source.length });
  return tokens;
}

class Parser {
  private pos = 0;
  constructor(
    private readonly source: string,
    private readonly tokens: Token[],
  ) {}

  parse(): ExpressionNode {
    if (this.peek().kind === 'end') this.fail(this.peek(), 'empty expression');
    const node = this.or();
    const next = this.peek();
    if (next.kind !== 'end') this.fail(next, `unexpected ${describe(next)} after a complete expression`);
    return node;
  }

  private peek(): Token {
    return this.tokens[this.pos]!;
  }

  private take(): Token {
    return this.tokens[this.pos++]!;
  }

  private isOp(...ops: string[]): boolean {
    const t = this.peek();
    return t.kind === 'op' && ops.includes(t.text);
  }

  private fail(token: Token, reason: string): never {
    throw new ExpressionError(this.source, token.at + 1, reason);
  }

  private or(): ExpressionNode {
    let left = this.and();
    while (this.isOp('||')) {
      const op = this.take();
      left = { type: 'logic', op: '||', left, right: this.and(), column: op.at + 1 };
    }
    return left;
  }

  private and(): ExpressionNode {
    let left = this.comparison();
    while (this.isOp('&&')) {
      const op = this.take();
      left = { type: 'logic', op: '&&', left, right: this.comparison(), column: op.at + 1 };
    }
    return left;
  }

  private comparison(): ExpressionNode {
    const left = this.sum();
    if (!this.isOp('<', '<=', '>', '>=', '==', '!=')) return left;
    const op = this.take();
    const node: ExpressionNode = { type: 'compare', op: op.text as ComparisonOperator, left, right: this.sum(), column: op.at + 1 };
    // `a < b < c` means something else in every language that allows it: make it explicit.
    if (this.isOp('<', '<=', '>', '>=', '==', '!=')) this.fail(this.peek(), 'comparisons cannot be chained: use && between them');
    return node;
  }

  private sum(): ExpressionNode {
    let left = this.product();
    while (this.isOp('+', '-')) {
      const op = this.take();
      left = { type: 'arithmetic', op: op.text as ArithmeticOperator, left, right: this.product(), column: op.at + 1 };
    }
    return left;
  }

  private product(): ExpressionNode {
    let left = this.unary();
    while (this.isOp('*', '/')) {
      const op = this.take();
      left = { type: 'arithmetic', op: op.text as ArithmeticOperator, left, right: this.unary(), column: op.at + 1 };
    }
    return left;
  }

  private unary(): ExpressionNode {
    if (this.isOp('!')) {
      const op = this.take();
      return { type: 'not', operand: this.unary(), column: op.at + 1 };
    }
    if (this.isOp('-')) {
      const op = this.take();
      const operand = this.unary();
      if (operand.type === 'number') return { type: 'number', value: -operand.value, column: op.at + 1 };
      return { type: 'negate', operand, column: op.at + 1 };
    }
    return this.primary();
  }

  private primary(): ExpressionNode {
    const t = this.take();
    switch (t.kind) {
      case 'number':
        return { type: 'number', value: t.value, column: t.at + 1 };
      case 'string':
        return { type: 'label', text: t.text, column: t.at + 1 };
      case 'name': {
        if (this.peek().kind !== '(') return { type: 'signal', name: t.text, column: t.at + 1 };
        if (!Object.hasOwn(FUNCTION_ARITY, t.text)) this.fail(t, `unknown function '${t.text}' (functions: abs, min, max)`);
        const fn = t.text as FunctionName;
        this.take();
        const args: ExpressionNode[] = [];
        if (this.peek().kind !== ')') {
          args.push(this.or());
          while (this.peek().kind === ',') {
            this.take();
            args.push(this.or());
          }
        }
        const close = this.peek();
        if (close.kind !== ')') this.fail(close, `expected ')' or ',' in the arguments of ${fn}, got ${describe(close)}`);
        this.take();
        const arity = FUNCTION_ARITY[fn];
        if (args.length !== arity) this.fail(t, `${fn} takes ${arity} argument${arity === 1 ? '' : 's'}, got ${args.length}`);
        return { type: 'call', fn, args, column: t.at + 1 };
      }
      case '(': {
        const inner = this.or();
        const close = this.peek();
        if (close.kind !== ')') this.fail(close, `expected ')' to close the '(' at column ${t.at + 1}, got ${describe(close)}`);
        this.take();
        return inner;
      }
      default:
        return this.fail(t, `expected a number, a signal or '(', got ${describe(t)}`);
    }
  }
}

function describe(t: Token): string {
  if (t.kind === 'string') return `the label "${t.text}"`;
  return t.kind === 'end' ? 'the end of the expression' : `'${t.text}'`;
}

/** Parses a condition; throws ExpressionError (with the column) on a syntax error. */
export function parseExpression(source: string): ExpressionNode {
  const tree = new Parser(source, tokenize(source)).parse();
  checkLabels(tree, source);
  return tree;
}

/** A quoted label is only an operand of `==` or `!=` whose other side is a signal. */
function checkLabels(node: ExpressionNode, source: string): void {
  switch (node.type) {
    case 'number':
    case 'signal':
      return;
    case 'label':
      throw new ExpressionError(source, node.column, `the label "${node.text}" must be compared (== or !=) with a signal`);
    case 'not':
    case 'negate':
      return checkLabels(node.operand, source);
    case 'call':
      return node.args.forEach((arg) => checkLabels(arg, source));
    case 'compare': {
      const { left, right } = node;
      const equality = node.op === '==' || node.op === '!=';
      if (equality && left.type === 'label' && right.type === 'signal') return;
      if (equality && right.type === 'label' && left.type === 'signal') return;
      checkLabels(left, source);
      return checkLabels(right, source);
    }
    default:
      checkLabels(node.left, source);
      checkLabels(node.right, source);
  }
}

/** The signal names an expression reads, each once, in order of first use (with the column of that use). */
export function expressionSignals(node: ExpressionNode): { name: string; column: number }[] {
  const found = new Map<string, number>();
  const walk = (n: ExpressionNode): void => {
    switch (n.type) {
      case 'number':
      case 'label':
        return;
      case 'signal':
        if (!found.has(n.name)) found.set(n.name, n.column);
        return;
      case 'not':
      case 'negate':
        return walk(n.operand);
      case 'call':
        return n.args.forEach(walk);
      default:
        walk(n.left);
        walk(n.right);
    }
  };
  walk(node);
  return [...found].map(([name, column]) => ({ name, column }));
}

/** Reads a value from the live value array. */
type Evaluator = (v: Float64Array) => number;

export interface CompiledExpression {
  readonly source: string;
  /** The signals it reads, in order of first use, with the slot each was resolved to. */
  readonly signals: readonly { name: string; slot: number }[];
  /** The numeric value (1/0 for conditions). */
  readonly value: Evaluator;
  /** Whether the condition holds: the value is neither 0 nor NaN. */
  test(values: Float64Array): boolean;
}

/** The value table of a signal (DBC `VAL_`), for labels in conditions; undefined when it has none. */
export type ChoicesOf = (signal: string) => ReadonlyMap<number, string> | undefined;

/**
 * Parses and compiles `source`; `resolve` maps a signal name to its slot in the value array the evaluator will read,
 * or returns a negative number (or undefined) for an unknown signal, which is an ExpressionError at its column.
 * `choices` gives the value tables that labels are looked up in.
 */
export function compileExpression(source: string, resolve: (name: string) => number | undefined, choices?: ChoicesOf): CompiledExpression {
  const known = (name: string): boolean => {
    const slot = resolve(name);
    return slot !== undefined && slot >= 0;
  };
  const tree = bindLabels(parseExpression(source), source, known, choices);
  const signals: { name: string; slot: number }[] = [];
  for (const { name, column } of expressionSignals(tree)) {
    const slot = resolve(name);
    if (slot === undefined || slot < 0) throw new ExpressionError(source, column, `unknown signal '${name}'`);
    signals.push({ name, slot });
  }
  const slots = new Map(signals.map((s) => [s.name, s.slot]));
  const value = build(tree, slots);
  return {
    source,
    signals,
    value,
    test: (values) => {
      const x = value(values);
      return x !== 0 && x === x;
    },
  };
}

/**
 * Replaces the labels on the other side of `==`/`!=` from a signal with their numbers: a quoted label always, a bare
 * name when no signal has that name but the signal's value table has it. Throws ExpressionError for a label that
 * matches nothing, or one that is not compared with a signal.
 */
export function bindLabels(tree: ExpressionNode, source: string, known: (name: string) => boolean, choices: ChoicesOf = () => undefined): ExpressionNode {
  const bind = (node: ExpressionNode, signal: string): ExpressionNode => {
    const quoted = node.type === 'label';
    if (!quoted && (node.type !== 'signal' || known(node.name))) return walk(node);
    const text = node.type === 'label' ? node.text : (node as { name: string }).name;
    const table = choices(signal);
    const value = table && labelValue(table, text);
    if (value !== undefined) return { type: 'number', value, column: node.column };
    const listed = table ? `its labels: ${[...table.values()].map((l) => `"${l}"`).join(', ')}` : 'it has no value table';
    if (quoted) throw new ExpressionError(source, node.column, `'${signal}' has no label "${text}" (${listed})`);
    // A bare name: with no value table it is just an unknown signal, which compileExpression reports.
    if (!table) return node;
    throw new ExpressionError(source, node.column, `'${text}' is neither a signal nor a label of '${signal}' (${listed})`);
  };
  const walk = (node: ExpressionNode): ExpressionNode => {
    switch (node.type) {
      case 'number':
      case 'signal':
        return node;
      case 'label': // parseExpression allows none elsewhere
        throw new ExpressionError(source, node.column, `the label "${node.text}" must be compared (== or !=) with a signal`);
      case 'not':
      case 'negate':
        return { ...node, operand: walk(node.operand) };
      case 'call':
        return { ...node, args: node.args.map(walk) };
      case 'compare':
        if (node.op === '==' || node.op === '!=') {
          if (node.left.type === 'signal' && known(node.left.name)) return { ...node, right: bind(node.right, node.left.name) };
          if (node.right.type === 'signal' && known(node.right.name)) return { ...node, left: bind(node.left, node.right.name) };
        }
        return { ...node, left: walk(node.left), right: walk(node.right) };
      default:
        return { ...node, left: walk(node.left), right: walk(node.right) };
    }
  };
  return walk(tree);
}

function labelValue(table: ReadonlyMap<number, string>, text: string): number | undefined {
  for (const [value, label] of table) if (label === text) return value;
  const lower = text.toLowerCase();
  const matches = [...table].filter(([, label]) => label.toLowerCase() === lower);
  return matches.length === 1 ? matches[0]![0] : undefined;
}

const truth = (x: number): boolean => x !== 0 && x === x;

function build(node: ExpressionNode, slots: Map<string, number>): Evaluator {
  switch (node.type) {
    case 'number': {
      const k = node.value;
      return () => k;
    }
    case 'signal': {
      const slot = slots.get(node.name)!;
      return (v) => v[slot]!;
    }
    case 'label':
      throw new Error(`label "${node.text}" not bound (bindLabels runs first)`);
    case 'not': {
      const a = build(node.operand, slots);
      return (v) => (truth(a(v)) ? 0 : 1);
    }
    case 'negate': {
      const a = build(node.operand, slots);
      return (v) => -a(v);
    }
    case 'call': {
      const [a, b] = node.args.map((arg) => build(arg, slots));
      if (node.fn === 'abs') return (v) => Math.abs(a!(v));
      // Math.min/max already propagate NaN, which keeps "no value yet" from satisfying a comparison.
      return node.fn === 'min' ? (v) => Math.min(a!(v), b!(v)) : (v) => Math.max(a!(v), b!(v));
    }
    case 'logic': {
      const a = build(node.left, slots);
      const b = build(node.right, slots);
      return node.op === '&&' ? (v) => (truth(a(v)) && truth(b(v)) ? 1 : 0) : (v) => (truth(a(v)) || truth(b(v)) ? 1 : 0);
    }
    case 'arithmetic':
      return arithmetic(node.op, build(node.left, slots), build(node.right, slots));
    case 'compare':
      return comparison(node, slots);
  }
}

function arithmetic(op: ArithmeticOperator, a: Evaluator, b: Evaluator): Evaluator {
  switch (op) {
    case '+':
      return (v) => a(v) + b(v);
    case '-':
      return (v) => a(v) - b(v);
    case '*':
      return (v) => a(v) * b(v);
    case '/':
      return (v) => a(v) / b(v);
  }
}

/** Comparisons, with the common `signal <op> constant` shape specialised (one closure call less). */
function comparison(node: Extract<ExpressionNode, { type: 'compare' }>, slots: Map<string, number>): Evaluator {
  if (node.left.type === 'signal' && node.right.type === 'number') {
    const s = slots.get(node.left.name)!;
    const k = node.right.value;
    switch (node.op) {
      case '<':
        return (v) => (v[s]! < k ? 1 : 0);
      case '<=':
        return (v) => (v[s]! <= k ? 1 : 0);
      case '>':
        return (v) => (v[s]! > k ? 1 : 0);
      case '>=':
        return (v) => (v[s]! >= k ? 1 : 0);
      case '==':
        return (v) => (v[s] === k ? 1 : 0);
      case '!=': {
        return (v) => {
          const x = v[s]!;
          return x !== k && x === x && k === k ? 1 : 0;
        };
      }
    }
  }
  const a = build(node.left, slots);
  const b = build(node.right, slots);
  switch (node.op) {
    case '<':
      return (v) => (a(v) < b(v) ? 1 : 0);
    case '<=':
      return (v) => (a(v) <= b(v) ? 1 : 0);
    case '>':
      return (v) => (a(v) > b(v) ? 1 : 0);
    case '>=':
      return (v) => (a(v) >= b(v) ? 1 : 0);
    case '==':
      return (v) => (a(v) === b(v) ? 1 : 0);
    case '!=':
      return (v) => {
        const x = a(v);
        const y = b(v);
        return x !== y && x === x && y === y ? 1 : 0;
      };
  }
}

/** Null when `source` parses, otherwise the error (for config validation, which has no signal names yet). */
export function expressionSyntaxError(source: string): ExpressionError | null {
  try {
    parseExpression(source);
    return null;
  } catch (err) {
    if (err instanceof ExpressionError) return err;
    throw err;
  }
}
