/**
 * The tests' one seeded generator: createPrng (src/sim/prng.ts, the simulators' own) with the few helpers fuzz loops
 * use. A seed reproduces a run exactly, so a failing case is rerun by its seed. Never Math.random in a test.
 */
import { createPrng } from '../../src/sim/prng.js';

/** Floats in [0, 1) when called, as createPrng's; `next` is the same. */
export interface SeededRandom {
  (): number;
  next(): number;
  /** An integer in [lo, hi], both included. */
  int(lo: number, hi: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
  /** One element of a non-empty list. */
  pick<T>(xs: readonly T[]): T;
}

export function seededRandom(seed: number): SeededRandom {
  const next = createPrng(seed);
  return Object.assign(() => next(), {
    next,
    int: (lo: number, hi: number): number => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p: number): boolean => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
  });
}
