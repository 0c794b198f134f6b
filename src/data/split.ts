// Stratified, seeded, deterministic hold-out split (the trainer's validation split, and the test
// split of a single image folder). Pure: the result depends only on (labels, fraction, seed).
import { Rng } from '../util/random.js';

export interface SplitIndices {
  /** Indices kept for training, ascending. */
  train: Int32Array;
  /** Indices held out, ascending. */
  val: Int32Array;
}

/**
 * Holds out `fraction` of the items, class by class.
 *
 * The held-out total is round(n * fraction); it is shared among classes in proportion to their
 * sizes by the largest-remainder method (so every class gets floor or ceil of its exact share, and
 * ties go to the lower class index). Within a class, the items held out are chosen by a seeded
 * Fisher-Yates shuffle. Labels may be any non-negative integers (gaps allowed).
 */
export function stratifiedSplit(labels: ArrayLike<number>, fraction: number, seed: number): SplitIndices {
  if (!(fraction >= 0 && fraction < 1))
    throw new RangeError(`Expected a fraction in [0, 1) for the split but received ${fraction}`);
  const n = labels.length;
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < n; ++i) {
    const y = labels[i];
    if (!(Number.isInteger(y) && y >= 0))
      throw new RangeError(`Expected a non-negative integer for labels[${i}] but received ${y}`);
    let list = byClass.get(y);
    if (!list) byClass.set(y, (list = []));
    list.push(i);
  }
  const classes = [...byClass.keys()].sort((a, b) => a - b);
  const total = Math.round(n * fraction);
  // largest-remainder apportionment of `total` among classes
  const exact = classes.map((y) => byClass.get(y)!.length * fraction);
  const take = exact.map(Math.floor);
  let left = total - take.reduce((a, b) => a + b, 0);
  const order = classes.map((_, k) => k).sort((a, b) => exact[b] - take[b] - (exact[a] - take[a]) || a - b);
  for (const k of order) {
    if (left <= 0) break;
    if (take[k] < byClass.get(classes[k])!.length) {
      take[k]++;
      left--;
    }
  }
  const rng = new Rng(seed);
  const held = new Uint8Array(n);
  classes.forEach((y, k) => {
    const list = Int32Array.from(byClass.get(y)!);
    rng.shuffle(list);
    for (let j = 0; j < take[k]; ++j) held[list[j]] = 1;
  });
  const nVal = take.reduce((a, b) => a + b, 0);
  const train = new Int32Array(n - nVal);
  const val = new Int32Array(nVal);
  let t = 0,
    v = 0;
  for (let i = 0; i < n; ++i) {
    if (held[i]) val[v++] = i;
    else train[t++] = i;
  }
  return { train, val };
}
