// Seeded symmetric label noise on a training split: a controlled amount of memorisation pressure
// for studies (validation and test splits are never touched; the trainer applies it after the
// validation split is held out). Pure: the result depends only on (labels, classes, rate, seed).
import { Rng, permutation } from '../util/random.js';
import { deriveSeed } from '../util/seed.js';

export interface NoisyLabels {
  /** The labels with the noise applied (a new array). */
  labels: Int32Array;
  /** Indices whose label was changed, ascending. */
  flipped: Int32Array;
}

/**
 * Symmetric noise at `rate`: exactly round(rate * n) items, chosen by a seeded permutation, each
 * get a label drawn uniformly from the other `classes - 1` classes (so every changed label is
 * wrong, and the fraction of wrong labels is the rate, not rate * (classes - 1) / classes).
 */
export function symmetricLabelNoise(labels: Int32Array, classes: number, rate: number, seed: number): NoisyLabels {
  if (!(rate >= 0 && rate < 1))
    throw new RangeError(`Expected a rate in [0, 1) for the label noise but received ${rate}`);
  if (!(Number.isInteger(classes) && classes >= 2))
    throw new RangeError(`Expected at least 2 classes for label noise but received ${classes}`);
  const n = labels.length;
  const count = Math.round(rate * n);
  const flipped = permutation(n, deriveSeed(seed, 1)).subarray(0, count).sort();
  const out = Int32Array.from(labels);
  const rng = new Rng(deriveSeed(seed, 2));
  for (const i of flipped) {
    if (!(labels[i] >= 0 && labels[i] < classes))
      throw new RangeError(`Expected labels in [0, ${classes}) but labels[${i}] is ${labels[i]}`);
    out[i] = (labels[i] + 1 + rng.int(classes - 1)) % classes;
  }
  return { labels: out, flipped: Int32Array.from(flipped) };
}
