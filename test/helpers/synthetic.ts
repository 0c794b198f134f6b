// A class-separable synthetic image dataset (for fast trainer tests): class k sets the colour
// (which channels are bright) and the brightness, plus seeded noise; crops and flips keep the class.
import type { Dataset, DataSplits } from '../../dist/data/dataset.js';

export function synthetic(n: number, classes: number, seed: number, size = 8, channels = 3): Dataset {
  const per = channels * size * size;
  const images = new Uint8Array(n * per);
  const labels = new Int32Array(n);
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (let i = 0; i < n; ++i) {
    const y = i % classes;
    labels[i] = y;
    const hw = size * size;
    for (let j = 0; j < per; ++j) {
      const c = Math.floor(j / hw);
      const bright = (y + c) % 2 === 0 ? 90 : 0;
      images[i * per + j] = Math.min(255, Math.floor(30 + bright + 25 * (y % 3) + rnd() * 60));
    }
  }
  return {
    images,
    labels,
    n,
    channels,
    height: size,
    width: size,
    classNames: Array.from({ length: classes }, (_, k) => `c${k}`),
    source: 'synthetic',
  };
}

export function syntheticSplits(nTrain: number, nTest: number, classes: number, size = 8): DataSplits {
  return { train: synthetic(nTrain, classes, 1, size), test: synthetic(nTest, classes, 2, size) };
}
