/** The seeded generator every simulation and fuzz loop draws from (src/sim/prng.ts): reproducible, spread, never stuck. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPrng } from '../../src/sim/prng.js';

describe('createPrng', () => {
  it('repeats its sequence for a seed, differs between seeds, stays in [0, 1)', () => {
    const a = createPrng(42);
    const b = createPrng(42);
    const c = createPrng(43);
    const seqA = Array.from({ length: 1000 }, a);
    assert.deepEqual(Array.from({ length: 1000 }, b), seqA);
    assert.notDeepEqual(Array.from({ length: 1000 }, c), seqA);
    assert.ok(seqA.every((x) => x >= 0 && x < 1));
    const mean = seqA.reduce((s, x) => s + x, 0) / seqA.length;
    assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
    // Seed 0 must not get stuck (xorshift's fixed point).
    const zero = createPrng(0);
    assert.notEqual(zero(), zero());
  });
});
