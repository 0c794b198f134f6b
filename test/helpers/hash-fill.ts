// Model weights both PyTorch and the native model can compute exactly, so a fixture need not store
// them: the TypeScript twin of hash_uniform / hash_fill in scripts/fixtures/zoo_reference.py (same bits).
import type { NativeModel } from '../../dist/binding.js';

function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(text, 'utf8')) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** n values in [-1, 1), multiples of 2^-23: xorshift32 seeded by FNV-1a(key). */
export function hashUniform(key: string, n: number): Float64Array {
  let x = fnv1a32(key) || 1;
  const out = new Float64Array(n);
  for (let i = 0; i < n; ++i) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out[i] = (x >>> 8) / 2 ** 23 - 1;
  }
  return out;
}

/** The value of state_dict entry `name` of `shape` (hash_fill in zoo_reference.py documents the rule). */
export function hashFill(name: string, shape: number[]): Float32Array {
  const n = shape.reduce((a, d) => a * d, 1);
  if (name.endsWith('num_batches_tracked')) return new Float32Array(n);
  const u = hashUniform(name, n);
  const fanIn = n / shape[0];
  let value: (v: number) => number;
  if (name.endsWith('.weight') && shape.length === 4) value = (v) => Math.sqrt(6 / fanIn) * v;
  else if (name.endsWith('.weight') && shape.length === 2) value = (v) => (1 / Math.sqrt(fanIn)) * v;
  else if (name.endsWith('.weight') || name.endsWith('.running_var')) value = (v) => 1 + 0.25 * v;
  else value = (v) => 0.1 * v;
  return Float32Array.from(u, value);
}

/** Sets every parameter and BN buffer of `model` by hashFill. */
export function hashFillModel(model: NativeModel): void {
  const params = model.getParams();
  const buffers = model.getBuffers();
  for (const t of model.tensors()) (t.kind === 'buffer' ? buffers : params).set(hashFill(t.name, t.shape), t.offset);
  model.setParams(params);
  model.setBuffers(buffers);
}
