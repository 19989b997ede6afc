/**
 * The project's one seeded pseudo-random generator: the drive-cycle simulator (and so the simulated car) and the tests'
 * fuzz and soak loops draw from it, so a seed reproduces a run exactly. Not for anything but reproducible simulations
 * and tests: never for keys, nonces or IDs (those come from node:crypto). Pure arithmetic: it cannot fail.
 */

/**
 * A small seeded generator (xorshift32 behind a seed scrambler): floats in [0, 1). Equal seeds give equal sequences;
 * any number is a seed (it is taken as a 32-bit integer).
 */
export function createPrng(seed: number): () => number {
  // Scramble the seed so that nearby seeds (1, 2, 3…) start far apart; xorshift must never hold 0.
  let x = Math.imul((seed | 0) ^ 0x9e3779b9, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  if (x === 0) x = 0x6d2b79f5;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}
