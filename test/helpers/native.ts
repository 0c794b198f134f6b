// Small models and batches for tests of the native binding.
import { loadBinding, type NativeModel } from '../../dist/binding.js';
import { GraphBuilder, type ModelSpec } from '../../dist/models/spec.js';

export const binding = loadBinding();

/** conv-bn-relu, pool, conv-bn-relu, gap, linear: 3 parametric layers. */
export function tinySpec(classes = 4, channels = 3, size = 8): ModelSpec {
  const g = new GraphBuilder(channels, size, size);
  let x = g.convBn('features.0', 'features.1', 0, 6, 3);
  x = g.maxpool(x, 2, 2);
  x = g.convBn('features.4', 'features.5', x, 8, 3);
  x = g.flatten(g.gap(x));
  g.linear('classifier', x, classes);
  return g.build();
}

export function tinyModel(seed = 1, classes = 4): NativeModel {
  return new binding.Model(tinySpec(classes), seed);
}

/** Deterministic pseudo-random floats in [-1, 1). */
export function noise(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; ++i) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}
