// The in-memory dataset every source loads into, and the helpers that work on it.
//
// Images are uint8, (N, C, H, W) channel-planar ("CHW" per image, images back to back): exactly
// the layout of a CIFAR record and of the native kernels' input. Labels are class indices into
// classNames. Float conversion, augmentation and normalisation happen natively per batch.
import { DataError } from '../errors.js';

export interface Dataset {
  /** (N, C, H, W) channel-planar uint8 pixels. */
  images: Uint8Array;
  /** N class indices in [0, classNames.length). */
  labels: Int32Array;
  n: number;
  channels: number;
  height: number;
  width: number;
  classNames: string[];
  /** Human description of where the data came from. */
  source: string;
}

export interface DataSplits {
  train: Dataset;
  test: Dataset | null;
}

export interface ChannelStats {
  /** Per-channel mean in [0, 1] units. */
  mean: number[];
  /** Per-channel (population) standard deviation in [0, 1] units. */
  std: number[];
}

/** Bytes per image. */
export function bytesPerImage(ds: Pick<Dataset, 'channels' | 'height' | 'width'>): number {
  return ds.channels * ds.height * ds.width;
}

/** A new dataset with the given images (copied, in the given order). */
export function subset(ds: Dataset, indices: ArrayLike<number>): Dataset {
  const per = bytesPerImage(ds);
  const n = indices.length;
  const images = new Uint8Array(n * per);
  const labels = new Int32Array(n);
  for (let k = 0; k < n; ++k) {
    const i = indices[k];
    if (!(i >= 0 && i < ds.n && Number.isInteger(i)))
      throw new RangeError(`Expected an index in [0, ${ds.n}) for indices[${k}] but received ${i}`);
    images.set(ds.images.subarray(i * per, (i + 1) * per), k * per);
    labels[k] = ds.labels[i];
  }
  return { ...ds, images, labels, n };
}

/** Per-class image counts. */
export function classCounts(ds: Pick<Dataset, 'labels' | 'classNames'>): number[] {
  const counts = new Array<number>(ds.classNames.length).fill(0);
  for (const y of ds.labels) counts[y]++;
  return counts;
}

/**
 * Per-channel mean and standard deviation over every pixel of the dataset, in [0, 1] units
 * (pixel / 255). Exact: computed from a 256-bin histogram per channel, so it is also fast.
 */
export function channelStats(ds: Dataset): ChannelStats {
  const { channels: C, n } = ds;
  const hw = ds.height * ds.width;
  if (n === 0 || hw === 0)
    throw new DataError(`Expected at least one image for channelStats but received an empty dataset (${ds.source})`);
  const hist = new Float64Array(C * 256);
  const img = ds.images;
  const h32 = new Uint32Array(256);
  for (let c = 0; c < C; ++c) {
    for (let i = 0; i < n; ++i) {
      const start = (i * C + c) * hw;
      for (let j = start, end = start + hw; j < end; ++j) h32[img[j]]++;
      // flush before a Uint32 bin could overflow (after ~16M pixels)
      if ((i & 1023) === 1023 || i === n - 1) {
        for (let v = 0; v < 256; ++v) hist[c * 256 + v] += h32[v];
        h32.fill(0);
      }
    }
  }
  const mean: number[] = [];
  const std: number[] = [];
  const count = n * hw;
  for (let c = 0; c < C; ++c) {
    let s = 0;
    for (let v = 0; v < 256; ++v) s += hist[c * 256 + v] * v;
    const m = s / count;
    let ss = 0;
    for (let v = 0; v < 256; ++v) ss += hist[c * 256 + v] * (v - m) * (v - m);
    // A constant channel (all-black padding, a grey-scale image stored as RGB with one channel
    // zeroed) has std 0: normalising by it would divide by zero, so say which channel and why.
    if (!(ss > 0))
      throw new DataError(
        `Expected every channel of the training split to vary but channel ${c} is ${Math.round(m)} (of 255) in all ${n} images of ${ds.source}: ` +
          `its standard deviation is 0, so it cannot be normalised. Give the statistics yourself with --mean and --std ` +
          `(one value per channel in [0,1] units, e.g. --mean ${Array.from({ length: C }, () => '0.5').join(' ')} --std ${Array.from({ length: C }, () => '0.25').join(' ')}), or check the data.`,
      );
    mean.push(m / 255);
    std.push(Math.sqrt(ss / count) / 255);
  }
  return { mean, std };
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of length ${(v as unknown as ArrayLike<number>).length}`;
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  return typeof v;
}

export interface ArrayData {
  /** (N, C, H, W) channel-planar uint8 pixels (Uint8Array, Uint8ClampedArray or Buffer). */
  images: Uint8Array | Uint8ClampedArray;
  /** N integer class indices. */
  labels: Int32Array | Uint8Array | Uint16Array | Uint32Array | number[];
  /** [N, C, H, W]. */
  shape: [number, number, number, number] | number[];
  /** Defaults to "0", "1", ... up to the largest label. */
  classNames?: string[];
  /** Defaults to "in-memory arrays". */
  source?: string;
}

/**
 * Validates in-memory data from a user and wraps it as a Dataset (the pixel buffer is shared, not
 * copied). Every error reads "Expected X for Y but received Z".
 */
export function fromArrays(data: ArrayData): Dataset {
  if (data === null || typeof data !== 'object')
    throw new DataError(
      `Expected an object {images, labels, shape, classNames} for fromArrays() but received ${describe(data)}`,
    );
  const { images, labels, shape } = data;
  if (!Array.isArray(shape) || shape.length !== 4)
    throw new DataError(`Expected an array [N, C, H, W] for shape but received ${describe(shape)}`);
  const names = ['N', 'C', 'H', 'W'];
  shape.forEach((d, i) => {
    if (!(Number.isInteger(d) && d >= (i === 0 ? 0 : 1)))
      throw new DataError(
        `Expected a ${i === 0 ? 'non-negative' : 'positive'} integer for shape[${i}] (${names[i]}) but received ${describe(d)}`,
      );
  });
  const [n, c, h, w] = shape;
  if (c !== 1 && c !== 3)
    throw new DataError(`Expected 1 (grayscale) or 3 (RGB) for shape[1] (channels) but received ${c}`);
  if (!(images instanceof Uint8Array || images instanceof Uint8ClampedArray))
    throw new DataError(
      `Expected a Uint8Array of (N, C, H, W) channel-planar pixels for images but received ${describe(images)}`,
    );
  if (images.length !== n * c * h * w)
    throw new DataError(
      `Expected ${n * c * h * w} bytes (${n}x${c}x${h}x${w}) for images but received ${images.length}`,
    );
  if (!(
    Array.isArray(labels) ||
    labels instanceof Int32Array ||
    labels instanceof Uint8Array ||
    labels instanceof Uint16Array ||
    labels instanceof Uint32Array
  ))
    throw new DataError(`Expected an Int32Array or an array of integers for labels but received ${describe(labels)}`);
  if (labels.length !== n)
    throw new DataError(`Expected ${n} entries (shape[0]) for labels but received ${labels.length}`);
  let maxLabel = -1;
  for (let i = 0; i < n; ++i) {
    const y = labels[i];
    if (!(Number.isInteger(y) && y >= 0))
      throw new DataError(`Expected a non-negative integer class index for labels[${i}] but received ${describe(y)}`);
    if (y > maxLabel) maxLabel = y;
  }
  let classNames = data.classNames;
  if (classNames === undefined) classNames = Array.from({ length: maxLabel + 1 }, (_, k) => String(k));
  if (!Array.isArray(classNames) || classNames.some((s) => typeof s !== 'string'))
    throw new DataError(`Expected an array of strings for classNames but received ${describe(classNames)}`);
  if (classNames.length < 1) throw new DataError(`Expected at least 1 name for classNames but received 0`);
  if (new Set(classNames).size !== classNames.length) {
    const dup = classNames.find((s, i) => classNames!.indexOf(s) !== i);
    throw new DataError(`Expected distinct names for classNames but received ${JSON.stringify(dup)} twice`);
  }
  if (maxLabel >= classNames.length) {
    const i = Array.prototype.findIndex.call(labels, (y: number) => y >= classNames!.length);
    throw new DataError(
      `Expected a class index in [0, ${classNames.length}) for labels[${i}] but received ${labels[i]}`,
    );
  }
  const u8 = images instanceof Uint8Array ? images : new Uint8Array(images.buffer, images.byteOffset, images.length);
  return {
    images: u8,
    labels: labels instanceof Int32Array ? labels : Int32Array.from(labels as ArrayLike<number>),
    n,
    channels: c,
    height: h,
    width: w,
    classNames: classNames.slice(),
    source: data.source ?? 'in-memory arrays',
  };
}

/** Checks the invariants of a Dataset (sizes, label range); throws a DataError naming `what`. */
export function checkDataset(ds: Dataset, what = ds.source): void {
  const per = bytesPerImage(ds);
  if (ds.images.length !== ds.n * per)
    throw new DataError(`Expected ${ds.n * per} bytes of pixels for ${what} but received ${ds.images.length}`);
  if (ds.labels.length !== ds.n)
    throw new DataError(`Expected ${ds.n} labels for ${what} but received ${ds.labels.length}`);
  const k = ds.classNames.length;
  for (let i = 0; i < ds.n; ++i) {
    const y = ds.labels[i];
    if (!(y >= 0 && y < k))
      throw new DataError(`Expected a class index in [0, ${k}) for label ${i} of ${what} but received ${y}`);
  }
}

/** Converts a 1-channel dataset to 3 channels (gray replicated) — in place semantics, new arrays. */
export function grayToRgb(ds: Dataset): Dataset {
  if (ds.channels === 3) return ds;
  if (ds.channels !== 1) throw new DataError(`Expected 1 or 3 channels for ${ds.source} but received ${ds.channels}`);
  const hw = ds.height * ds.width;
  const out = new Uint8Array(ds.n * 3 * hw);
  for (let i = 0; i < ds.n; ++i) {
    const src = ds.images.subarray(i * hw, (i + 1) * hw);
    out.set(src, i * 3 * hw);
    out.set(src, i * 3 * hw + hw);
    out.set(src, i * 3 * hw + 2 * hw);
  }
  return { ...ds, images: out, channels: 3 };
}
