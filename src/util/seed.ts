// Deterministic seed derivation: deriveSeed(base, a, b, ...) -> a 32-bit seed for one stream of
// randomness (e.g. the augmentation of epoch 3, batch 17). Each part is folded in with the
// murmur3 32-bit finaliser, so nearby inputs give unrelated seeds and no stream state is kept.
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function deriveSeed(base: number, ...parts: number[]): number {
  let h = fmix32((base >>> 0) ^ 0x9e3779b9);
  for (const p of parts) h = fmix32((h ^ fmix32((p >>> 0) + 0x7f4a7c15)) + 0x165667b1);
  return h;
}
