// Batches: the epoch's seeded order and the copy of a batch's images into one contiguous buffer.
import { permutation } from '../util/random.js';
import { deriveSeed } from '../util/seed.js';
import { bytesPerImage, type Dataset } from './dataset.js';

/**
 * The order in which epoch `epoch` visits the n training items: a seeded permutation that depends
 * only on (seed, epoch), so a resumed run needs no RNG state to continue mid-epoch.
 */
export function epochOrder(n: number, seed: number, epoch: number): Int32Array {
  if (!(Number.isInteger(n) && n >= 0)) throw new RangeError(`Expected a non-negative integer for n but received ${n}`);
  return permutation(n, deriveSeed(seed, 0x0e9c4, epoch));
}

export interface Batch {
  /** (B, C, H, W) uint8 pixels; a view of the output buffer of exactly B images. */
  images: Uint8Array;
  /** B labels; a view of the output buffer. */
  labels: Int32Array;
}

/**
 * Copies the images and labels of `indices` into contiguous buffers (allocated when not given;
 * given ones must hold at least B images / B labels) and returns views of exactly B items.
 */
export function gatherBatch(
  ds: Dataset,
  indices: ArrayLike<number>,
  outImages?: Uint8Array,
  outLabels?: Int32Array,
): Batch {
  const per = bytesPerImage(ds);
  const b = indices.length;
  const images = outImages ?? new Uint8Array(b * per);
  const labels = outLabels ?? new Int32Array(b);
  if (images.length < b * per)
    throw new RangeError(
      `Expected an image buffer of at least ${b * per} bytes (${b} images) but received ${images.length}`,
    );
  if (labels.length < b)
    throw new RangeError(`Expected a label buffer of at least ${b} entries but received ${labels.length}`);
  const src = ds.images;
  for (let k = 0; k < b; ++k) {
    const i = indices[k];
    if (!(i >= 0 && i < ds.n))
      throw new RangeError(`Expected an index in [0, ${ds.n}) for indices[${k}] but received ${i}`);
    const o = i * per;
    images.set(src.subarray(o, o + per), k * per);
    labels[k] = ds.labels[i];
  }
  return { images: images.subarray(0, b * per), labels: labels.subarray(0, b) };
}
