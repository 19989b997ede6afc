/** Trigger condition language: parsing, evaluation, NaN semantics, errors with columns. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileExpression, ExpressionError, expressionSignals, expressionSyntaxError, parseExpression } from '../../src/collect/expression.js';

/** Compiles against named slots and evaluates with the given values (missing names are NaN). */
function run(source: string, values: Record<string, number> = {}): number {
  const names = Object.keys(values);
  const slots = new Map(names.map((n, i) => [n, i]));
  const buffer = new Float64Array(names.length + 8).fill(NaN);
  names.forEach((n, i) => (buffer[i] = values[n]!));
  let extra = names.length;
  const compiled = compileExpression(source, (name) => slots.get(name) ?? extra++);
  return compiled.value(buffer);
}

function errorOf(source: string): ExpressionError {
  const error = expressionSyntaxError(source);
  assert.ok(error, `expected a syntax error in ${source}`);
  return error;
}

describe('expression', () => {
  it('evaluates arithmetic with the usual precedence', () => {
    assert.equal(run('1 + 2 * 3'), 7);
    assert.equal(run('(1 + 2) * 3'), 9);
    assert.equal(run('10 - 4 - 3'), 3);
    assert.equal(run('12 / 4 / 3'), 1);
    assert.equal(run('-2 * -3'), 6);
    assert.equal(run('- (2 + 3)'), -5);
    assert.equal(run('.5 + 1e3 + 0x10 + 2.5E-1'), 1016.75);
  });

  it('evaluates comparisons and logic to 1 or 0', () => {
    assert.equal(run('3 > 2'), 1);
    assert.equal(run('3 < 2'), 0);
    assert.equal(run('2 <= 2 && 2 >= 2 && 2 == 2 && 2 != 3'), 1);
    assert.equal(run('1 > 2 || 3 > 2'), 1);
    assert.equal(run('!(1 > 2)'), 1);
    assert.equal(run('!0'), 1);
    assert.equal(run('!5'), 0);
    // && binds tighter than ||
    assert.equal(run('1 || 0 && 0'), 1);
    assert.equal(run('(1 || 0) && 0'), 0);
  });

  it('reads signals by slot, with dotted names', () => {
    const v = { VehicleSpeed: 130, 'BRAKE_STATUS.BrakePressure': 95, 'can0.ENGINE_DATA.EngineSpeed': 3000, 'obd.rpm': 800 };
    assert.equal(run('VehicleSpeed > 120 && BRAKE_STATUS.BrakePressure > 80', v), 1);
    assert.equal(run('VehicleSpeed > 120 && BRAKE_STATUS.BrakePressure > 100', v), 0);
    assert.equal(run('can0.ENGINE_DATA.EngineSpeed / 2 - obd.rpm', v), 700);
  });

  it('has abs, min and max', () => {
    assert.equal(run('abs(a)', { a: -6.5 }), 6.5);
    assert.equal(run('min(a, b)', { a: 3, b: -1 }), -1);
    assert.equal(run('max(a, b) + 1', { a: 3, b: -1 }), 4);
    assert.equal(run('abs(min(a, -10))', { a: 3 }), 10);
  });

  it('makes every comparison with a signal that has no value false', () => {
    for (const op of ['<', '<=', '>', '>=', '==', '!=']) {
      assert.equal(run(`speed ${op} 100`), 0, op);
      assert.equal(run(`100 ${op} speed`), 0, op);
      assert.equal(run(`speed + 1 ${op} 100`), 0, op);
      assert.equal(run(`abs(speed) ${op} 100`), 0, op);
      assert.equal(run(`max(speed, 1) ${op} 100`), 0, op);
    }
    assert.equal(run('speed > 100 || other > 1', { other: 2 }), 1);
    assert.equal(run('speed != 100', { speed: 100 }), 0);
    assert.equal(run('speed != 100', { speed: 101 }), 1);
    const compiled = compileExpression('speed', () => 0);
    assert.equal(compiled.test(new Float64Array([NaN])), false);
    assert.equal(compiled.test(new Float64Array([0])), false);
    assert.equal(compiled.test(new Float64Array([-1])), true);
  });

  it('lists its signals once, in order, and rejects unknown ones at their column', () => {
    assert.deepEqual(
      expressionSignals(parseExpression('a > 1 && b.c < a || max(d, b.c) == 0')).map((s) => s.name),
      ['a', 'b.c', 'd'],
    );
    const compiled = compileExpression('x + y > x', (n) => (n === 'x' ? 4 : 7));
    assert.deepEqual(compiled.signals, [
      { name: 'x', slot: 4 },
      { name: 'y', slot: 7 },
    ]);
    assert.throws(
      () => compileExpression('speed > 1 && nosuch < 2', (n) => (n === 'speed' ? 0 : -1)),
      (err: unknown) => err instanceof ExpressionError && err.column === 14 && /unknown signal 'nosuch'/.test(err.message),
    );
  });

  it('reports syntax errors with their column', () => {
    const cases: [string, number, RegExp][] = [
      ['', 1, /empty expression/],
      ['speed >', 8, /expected a number, a signal or '\(', got the end/],
      ['speed > 120 &&', 15, /got the end/],
      ['(speed > 1', 11, /expected '\)' to close the '\(' at column 1/],
      ['speed = 3', 7, /compare with '=='/],
      ['a & b', 3, /'&&' and '\|\|'/],
      ['a > 1 2', 7, /unexpected '2' after a complete expression/],
      ['sqrt(a)', 1, /unknown function 'sqrt'/],
      ['min(a)', 1, /min takes 2 arguments, got 1/],
      ['abs(a, b)', 1, /abs takes 1 argument, got 2/],
      ['max(a b)', 7, /expected '\)' or ','/],
      ['a < b < c', 7, /cannot be chained/],
      ['speed > 12abc', 9, /malformed number '12a'/],
      ['can0. > 3', 5, /cannot end with '\.'/],
      ['speed # 3', 7, /unexpected character '#'/],
      ['1.2.3', 1, /malformed number/],
    ];
    for (const [source, column, message] of cases) {
      const error = errorOf(source);
      assert.equal(error.column, column, `${source}: ${error.message}`);
      assert.match(error.message, message, source);
      assert.match(error.message, new RegExp(`^column ${column}: `));
    }
    assert.equal(expressionSyntaxError('speed > 120 && brake_pressure > 80'), null);
  });

  it('never evaluates text as code', () => {
    // Anything not in the grammar is a syntax error, not a lookup or a call.
    for (const source of ['process.exit(1)', 'constructor.constructor("x")()', 'a[0]', '"text"', 'a ? b : c', 'a > "x"', 'abs("x") == a']) {
      assert.ok(expressionSyntaxError(source), source);
    }
  });

  describe('labels of value tables', () => {
    const tables: Record<string, Map<number, string>> = {
      IgnitionState: new Map([
        [0, 'OFF'],
        [1, 'ACC'],
        [2, 'ON'],
        [3, 'START'],
      ]),
      GearEngaged: new Map([
        [0, 'N'],
        [1, '1'],
        [14, 'R'],
        [15, 'P'],
      ]),
      Mode: new Map([
        [0, 'eco'],
        [1, 'Eco'],
        [2, 'sport'],
      ]),
    };
    const slots = new Map(['IgnitionState', 'GearEngaged', 'Mode', 'VehicleSpeed', 'OFF'].map((n, i) => [n, i] as const));
    const compile = (source: string, known = (name: string) => slots.has(name) && name !== 'OFF') =>
      compileExpression(
        source,
        (name) => (known(name) ? slots.get(name) : undefined),
        (name) => tables[name],
      );
    const test = (source: string, values: Record<string, number>): boolean => {
      const buffer = new Float64Array(slots.size).fill(NaN);
      for (const [name, value] of Object.entries(values)) buffer[slots.get(name)!] = value;
      return compile(source).test(buffer);
    };

    it('stand for their numbers beside == and !=, bare or quoted, either side', () => {
      assert.equal(test('VehicleSpeed == 0 && IgnitionState == OFF', { VehicleSpeed: 0, IgnitionState: 0 }), true);
      assert.equal(test('VehicleSpeed == 0 && IgnitionState == OFF', { VehicleSpeed: 0, IgnitionState: 2 }), false);
      assert.equal(test('IgnitionState != off', { IgnitionState: 2 }), true, 'case-insensitive when only one label fits');
      assert.equal(test('"R" == GearEngaged', { GearEngaged: 14 }), true);
      assert.equal(test(`GearEngaged == '1'`, { GearEngaged: 1 }), true, 'a label that is not an identifier, quoted');
      assert.equal(test('Mode == Eco', { Mode: 1 }), true, 'exact match first');
      assert.equal(test('IgnitionState != ON', {}), false, 'no value yet still never satisfies');
      assert.deepEqual(
        compile('IgnitionState == ON || GearEngaged == R').signals.map((s) => s.name),
        ['IgnitionState', 'GearEngaged'],
      );
    });

    it('a signal of that name wins over a label; a label that fits nothing is an error at its column', () => {
      // With OFF a known signal, `IgnitionState == OFF` compares two signals.
      const both = compile('IgnitionState == OFF', (name) => slots.has(name));
      assert.deepEqual(
        both.signals.map((s) => s.name),
        ['IgnitionState', 'OFF'],
      );
      assert.throws(() => compile('IgnitionState == "RUN"'), /column 18: 'IgnitionState' has no label "RUN" \(its labels: "OFF", "ACC", "ON", "START"\)/);
      assert.throws(() => compile('IgnitionState == RUN'), /column 18: 'RUN' is neither a signal nor a label of 'IgnitionState'/);
      assert.throws(() => compile('Mode == ECO'), /'ECO' is neither a signal nor a label of 'Mode'/, 'two labels fit case-insensitively');
      assert.throws(() => compile('VehicleSpeed == "fast"'), /'VehicleSpeed' has no label "fast" \(it has no value table\)/);
      assert.throws(() => compile('VehicleSpeed == fast'), /column 17: unknown signal 'fast'/);
      assert.throws(() => compile('IgnitionState > OFF'), /unknown signal 'OFF'/, 'labels only with == and !=');
      assert.equal(errorOf('IgnitionState == "ON').message, 'column 18: unterminated label: no closing "');
    });
  });
});
