// A small seeded PRNG for data work (shuffles, splits, sample selection).
//
// Algorithm: SplitMix32 — a 32-bit state advanced by the golden-ratio increment 0x9e3779b9 and
// passed through the murmur3-style finaliser (xor-shift / multiply, constants 0x21f0aaad and
// 0x735a2d97, from Chris Wellons' hash-prospector). It has a full 2^32 period, passes the usual
// statistical batteries for shuffling-scale use, needs only Math.imul, and gives identical streams
// on every platform. It is NOT cryptographic.
//
// Every consumer builds its generator from an explicit seed (see deriveSeed in ./seed.ts for
// folding several numbers into one), so no global RNG state exists anywhere in the data layer.

export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** The next 32-bit unsigned integer. */
  nextU32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  }

  /** A float in [0, 1) with 32 bits of randomness. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** An unbiased integer in [0, n), 1 <= n <= 2^32 (rejection sampling, no modulo bias). */
  int(n: number): number {
    if (!(n >= 1 && n <= 4294967296 && Number.isInteger(n)))
      throw new RangeError(`Expected an integer in [1, 2^32] for n but received ${n}`);
    const limit = 4294967296 - (4294967296 % n); // largest multiple of n that fits
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** Fisher-Yates shuffle of `a` in place; returns `a`. */
  shuffle<T extends { length: number; [i: number]: number }>(a: T): T {
    for (let i = a.length - 1; i > 0; --i) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }
}

/** A seeded permutation of 0..n-1. */
export function permutation(n: number, seed: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; ++i) p[i] = i;
  return new Rng(seed).shuffle(p);
}
