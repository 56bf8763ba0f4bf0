/**
 * A small seeded PRNG (mulberry32): the reliability suites draw kill times, victims and hostile inputs
 * from it, so a failing run can be replayed exactly with the seed it prints.
 */
export type Rng = {
  readonly seed: number;
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [min, max] (both included). */
  int(min: number, max: number): number;
  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T;
  /** True with probability `p`. */
  chance(p: number): boolean;
};

/** A PRNG seeded with `seed` (any 32-bit integer). */
export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed,
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (items) => items[Math.floor(next() * items.length)]!,
    chance: (p) => next() < p,
  };
}

/** The seed of a run: `RELIABILITY_SEED` when set (to replay a run), else the given default. */
export function seedFromEnv(fallback: number): number {
  const s = Number(process.env.RELIABILITY_SEED);
  return Number.isInteger(s) ? s : fallback;
}
