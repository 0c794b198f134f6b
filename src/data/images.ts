// Image folders, decoded with sharp:
//
//   root/train/<class>/*.{jpg,jpeg,png,webp}  +  root/test/<class>/...     (a train/test layout)
//   root/<class>/*.{jpg,jpeg,png,webp}                                      (one folder + a split)
//
// Class names are the folder names, sorted by code point (the same order on every machine); test
// classes must be among the training classes. Images may be grayscale or RGB (alpha is dropped): a
// folder of only grayscale images loads as 1 channel; otherwise grayscale images are replicated to
// RGB. Without imageSize every image must have the size of the first one; with it, each image is
// resized to imageSize x imageSize (cover: scaled to fill, centre-cropped, aspect ratio kept).
// The first load writes a decoded cache (cache.ts) so later loads skip decoding.
import fs from 'node:fs';
import path from 'node:path';

import sharp from 'sharp';

import { DataError } from '../errors.js';
import { overMemory } from '../util/memory.js';
import { deriveSeed } from '../util/seed.js';
import { withCache, listingChecksum, type CachedLoadOptions, type CacheStatus, type ListingEntry } from './cache.js';
import { subset, type Dataset, type DataSplits } from './dataset.js';
import { stratifiedSplit } from './split.js';

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];

export interface LoadProgress {
  /** What is happening: 'list', 'decode' or 'cache'. */
  stage: string;
  done: number;
  total: number;
  /** The split or source being worked on. */
  what: string;
}

export interface DecodeOptions {
  /** Resize every image to imageSize x imageSize; without it, all images must share one size. */
  imageSize?: number;
  /** Skip undecodable files with a warning instead of failing. */
  skipBadFiles?: boolean;
  onWarning?: (message: string) => void;
  onProgress?: (p: LoadProgress) => void;
  /** Files decoded concurrently per Promise.all batch (default 64). */
  batch?: number;
  /** Every input is known to be colour: decode straight to RGB (skips a header read per image). */
  rgb?: boolean;
}

export interface ImageFolderOptions extends DecodeOptions, CachedLoadOptions {
  /** Single-folder layout only: the fraction held out as the test split (default 0.2; 0 = none). */
  testSplit?: number;
  /** Seed of the single-folder test split (default 0). */
  seed?: number;
}

function fail(file: string, what: string): never {
  throw new DataError(`${file}: ${what}`, file);
}

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch {
    return null;
  }
}

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const isImageName = (f: string) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase());

export interface ListedFile extends ListingEntry {
  /** Absolute path. */
  file: string;
  label: number;
}

export interface ListedSplit {
  dir: string;
  classNames: string[];
  files: ListedFile[];
}

export type ImageFolderLayout = 'train-test' | 'single';

/** Lists root/<class>/ images; `classNames` given (test split) fixes the label order. */
function listSplit(
  root: string,
  dir: string,
  opts: { classNames?: string[]; skipBadFiles?: boolean; onWarning?: (m: string) => void },
): ListedSplit {
  const st = statOrNull(dir);
  if (!st)
    fail(
      dir,
      'folder not found; give an existing image folder (root/<class>/*.jpg, or root/train/<class>/ and root/test/<class>/)',
    );
  if (!st.isDirectory())
    fail(dir, 'is a file, not a folder; give an image folder (root/<class>/*.jpg) or a CIFAR binary folder');
  const entries = fs.readdirSync(dir, { withFileTypes: true }).filter((e) => !e.name.startsWith('.'));
  const classDirs = entries
    .filter((e) => e.isDirectory() || (e.isSymbolicLink() && statOrNull(path.join(dir, e.name))?.isDirectory()))
    .map((e) => e.name)
    .sort(byCodePoint);
  const loose = entries.filter((e) => !classDirs.includes(e.name) && isImageName(e.name));
  if (classDirs.length === 0) {
    fail(
      dir,
      loose.length
        ? `holds ${loose.length} images but no class folders; put each class's images in a folder named after the class (${path.join(dir, '<class>', loose[0].name)})`
        : 'has no class folders; expected <class>/*.{jpg,jpeg,png,webp} inside it (or train/ and test/ folders)',
    );
  }
  if (loose.length)
    opts.onWarning?.(`${dir}: ignoring ${loose.length} image(s) outside class folders (e.g. ${loose[0].name})`);
  let classNames = classDirs;
  if (opts.classNames) {
    const unknown = classDirs.filter((c) => !opts.classNames!.includes(c));
    if (unknown.length)
      fail(
        path.join(dir, unknown[0]),
        `class folder "${unknown[0]}" is not among the ${opts.classNames.length} training classes (${opts.classNames.slice(0, 5).join(', ')}${opts.classNames.length > 5 ? ', ...' : ''}); rename or remove it, or add it to train/`,
      );
    const absent = opts.classNames.filter((c) => !classDirs.includes(c));
    if (absent.length)
      opts.onWarning?.(
        `${dir}: has no folder for training class(es) ${absent.slice(0, 5).join(', ')}${absent.length > 5 ? ', ...' : ''}`,
      );
    classNames = opts.classNames;
  }
  const files: ListedFile[] = [];
  const kept: string[] = [];
  for (const cls of classDirs) {
    const cdir = path.join(dir, cls);
    const names = fs.readdirSync(cdir).filter((f) => !f.startsWith('.'));
    const images = names.filter(isImageName).sort(byCodePoint);
    const others = names.length - images.length;
    if (others > 0)
      opts.onWarning?.(
        `${cdir}: ignoring ${others} file(s) that are not .jpg/.jpeg/.png/.webp (e.g. ${names.find((f) => !isImageName(f))})`,
      );
    if (images.length === 0) {
      const what = `empty class folder: no .jpg, .jpeg, .png or .webp images in it; add images or remove the folder`;
      if (opts.skipBadFiles) {
        // in train (no classNames given yet) the class disappears; in test it just has no images
        opts.onWarning?.(
          `${cdir}: ${what}; skipped (skipBadFiles)${opts.classNames ? '' : `, so class "${cls}" is left out`}`,
        );
        continue;
      }
      fail(cdir, what + ' (or pass --skip-bad-files to leave it out with a warning)');
    }
    kept.push(cls);
    const label = opts.classNames ? opts.classNames.indexOf(cls) : -1;
    for (const f of images) {
      const file = path.join(cdir, f);
      const s = statOrNull(file);
      if (!s || !s.isFile()) {
        if (opts.skipBadFiles) {
          opts.onWarning?.(`${file}: not a readable file; skipped (skipBadFiles)`);
          continue;
        }
        fail(file, 'not a readable file; remove it or pass --skip-bad-files');
      }
      files.push({
        file,
        path: path.relative(root, file).split(path.sep).join('/'),
        size: s.size,
        mtimeMs: s.mtimeMs,
        label,
      });
    }
  }
  if (!opts.classNames) {
    classNames = kept;
    if (classNames.length === 0) fail(dir, 'every class folder is empty; there are no images to load');
    for (const f of files) f.label = classNames.indexOf(f.file.split(path.sep).at(-2)!);
  }
  return { dir, classNames, files };
}

/** Lists an image folder in either layout (no decoding). */
export function listImageFolder(
  root: string,
  opts: { skipBadFiles?: boolean; onWarning?: (m: string) => void } = {},
): { layout: ImageFolderLayout; train: ListedSplit; test: ListedSplit | null } {
  const st = statOrNull(root);
  if (!st)
    fail(
      root,
      'folder not found; give an existing image folder (root/<class>/*.jpg, or root/train/<class>/ and root/test/<class>/)',
    );
  if (!st.isDirectory())
    fail(root, 'is a file, not a folder; give an image folder (root/<class>/*.jpg) or a CIFAR binary folder');
  const trainDir = path.join(root, 'train');
  const testDir = path.join(root, 'test');
  if (statOrNull(trainDir)?.isDirectory()) {
    const train = listSplit(root, trainDir, opts);
    let test: ListedSplit | null = null;
    if (statOrNull(testDir)?.isDirectory()) test = listSplit(root, testDir, { ...opts, classNames: train.classNames });
    else opts.onWarning?.(`${root}: has train/ but no test/ folder; there is no test split`);
    return { layout: 'train-test', train, test };
  }
  if (statOrNull(testDir)?.isDirectory())
    fail(root, 'has a test/ folder but no train/ folder; add train/<class>/ images');
  return { layout: 'single', train: listSplit(root, root, opts), test: null };
}

interface Decoded {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}

/**
 * Whether encoded image bytes are grayscale, from the file header alone: PNG colour type 0/4, JPEG
 * frame with 1 component. WebP has no grayscale mode. null when the header is not recognised.
 */
export function sniffGrayscale(b: Uint8Array): boolean | null {
  if (b.length >= 26 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47)
    return b[25] === 0 || b[25] === 4;
  if (
    b.length >= 12 &&
    b[0] === 0x52 &&
    b[1] === 0x49 &&
    b[2] === 0x46 &&
    b[3] === 0x46 &&
    b[8] === 0x57 &&
    b[9] === 0x45
  )
    return false;
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let o = 2;
    while (o + 9 < b.length) {
      if (b[o] !== 0xff) return null;
      const m = b[o + 1];
      if (m === 0xff) {
        ++o; // fill byte
        continue;
      }
      if (m === 0xd8 || (m >= 0xd0 && m <= 0xd7) || m === 0x01) {
        o += 2;
        continue;
      }
      if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) return b[o + 9] === 1;
      o += 2 + ((b[o + 2] << 8) | b[o + 3]);
    }
  }
  return null;
}

async function decodeOne(input: string | Buffer, imageSize: number | undefined, rgb: boolean): Promise<Decoded> {
  const bytes = typeof input === 'string' ? await fs.promises.readFile(input) : input;
  const img = sharp(bytes, { failOn: 'warning' });
  // Grayscale sources (1 channel, or 2 with alpha) stay 1 channel; everything else becomes sRGB.
  const gray = rgb ? false : (sniffGrayscale(bytes) ?? ((await img.metadata()).channels ?? 3) <= 2);
  let p = img.removeAlpha().toColourspace(gray ? 'b-w' : 'srgb');
  if (imageSize) p = p.resize(imageSize, imageSize, { fit: 'cover' });
  const { data, info } = await p.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 1 && info.channels !== 3)
    throw new Error(`decoded to ${info.channels} channels, expected 1 (grayscale) or 3 (RGB)`);
  if (data.length !== info.width * info.height * info.channels)
    throw new Error(`unexpected decoded size ${data.length} for ${info.width}x${info.height}x${info.channels}`);
  return { data, width: info.width, height: info.height, channels: info.channels };
}

export interface DecodeItem {
  /** A file path or encoded bytes. */
  input: string | Buffer;
  /** Shown in messages (the file, or "sample.dfls image 17"). */
  name: string;
  label: number;
}

export interface ShapeRef {
  channels?: number;
  height: number;
  width: number;
  name: string;
}

/**
 * Decodes images to one (N, C, H, W) uint8 dataset. `ref` (e.g. the training split's first image)
 * fixes the expected size; otherwise the first image does. Skipped items are reported through
 * onWarning and listed in `skipped`.
 */
export async function decodeImages(
  items: DecodeItem[],
  classNames: string[],
  source: string,
  opts: DecodeOptions & { ref?: ShapeRef; what?: string } = {},
): Promise<{ dataset: Dataset; skipped: string[]; ref: ShapeRef | undefined }> {
  const total = items.length;
  const batch = Math.max(1, opts.batch ?? 64);
  const what = opts.what ?? source;
  let ref = opts.ref;
  let C = 0,
    H = 0,
    W = 0;
  let images = new Uint8Array(0);
  const labels = new Int32Array(total);
  let n = 0;
  const skipped: string[] = [];
  const prevConcurrency = sharp.concurrency();
  sharp.concurrency(1); // one libvips thread per image; parallelism comes from images in flight
  const prevCache = sharp.cache();
  sharp.cache(false);
  const sizeHint = opts.imageSize
    ? ''
    : `; all images must share one size: pass --image-size N (the imageSize option) to resize them`;
  try {
    for (let start = 0; start < total; start += batch) {
      const chunk = items.slice(start, start + batch);
      const results = await Promise.allSettled(chunk.map((it) => decodeOne(it.input, opts.imageSize, !!opts.rgb)));
      for (let k = 0; k < chunk.length; ++k) {
        const it = chunk[k];
        const r = results[k];
        if (r.status === 'rejected') {
          const msg = String((r.reason as Error)?.message ?? r.reason).split('\n')[0];
          const what = `cannot be decoded as an image (${msg}); the file is corrupt, truncated or not an image`;
          if (opts.skipBadFiles) {
            const m = `${it.name}: ${what}; skipped (skipBadFiles)`;
            skipped.push(m);
            opts.onWarning?.(m);
            continue;
          }
          throw new DataError(
            `${it.name}: ${what}. Replace or remove it, or pass --skip-bad-files (skipBadFiles) to skip it with a warning`,
            typeof it.input === 'string' ? it.input : undefined,
          );
        }
        const d = r.value;
        if (!ref) ref = { channels: d.channels, height: d.height, width: d.width, name: it.name };
        if (d.height !== ref.height || d.width !== ref.width) {
          throw new DataError(
            `${it.name}: is ${d.width}x${d.height} but ${ref.name} is ${ref.width}x${ref.height}${sizeHint}`,
            typeof it.input === 'string' ? it.input : undefined,
          );
        }
        if (C === 0) {
          H = d.height;
          W = d.width;
          C = Math.max(d.channels, ref.channels ?? 1);
          const tooBig = overMemory(
            total * C * H * W,
            `decoding ${total} images of ${C}x${H}x${W}`,
            'use a smaller --image-size or fewer images',
          );
          if (tooBig) throw new DataError(`${source}: ${tooBig}`, source);
          images = new Uint8Array(total * C * H * W);
        } else if (d.channels > C) {
          // a colour image after grayscale ones: widen what is there to RGB
          const hw = H * W;
          const wide = new Uint8Array(total * 3 * hw);
          for (let i = 0; i < n; ++i)
            for (let c = 0; c < 3; ++c) wide.set(images.subarray(i * hw, (i + 1) * hw), (i * 3 + c) * hw);
          images = wide;
          C = 3;
        }
        const hw = H * W;
        const o = n * C * hw;
        const src = d.data;
        if (d.channels === 1) {
          for (let c = 0; c < C; ++c) images.set(src.subarray(0, hw), o + c * hw);
        } else {
          // interleaved HWC -> planar CHW
          for (let j = 0, s = 0; j < hw; ++j, s += 3) {
            images[o + j] = src[s];
            images[o + hw + j] = src[s + 1];
            images[o + 2 * hw + j] = src[s + 2];
          }
        }
        labels[n++] = it.label;
      }
      opts.onProgress?.({ stage: 'decode', done: Math.min(start + batch, total), total, what });
    }
  } finally {
    sharp.concurrency(prevConcurrency);
    sharp.cache({ memory: prevCache.memory.max, files: prevCache.files.max, items: prevCache.items.max });
  }
  if (n === 0) throw new DataError(`${source}: no image could be decoded (${skipped.length} skipped)`, source);
  const per = C * H * W;
  const dataset: Dataset = {
    images: n === total ? images : images.slice(0, n * per),
    labels: n === total ? labels : labels.slice(0, n),
    n,
    channels: C,
    height: H,
    width: W,
    classNames,
    source,
  };
  return { dataset, skipped, ref: ref && { ...ref, channels: C } };
}

/** When one split turned out RGB and the other grayscale, widen the grayscale one. */
function matchChannels(splits: DataSplits): DataSplits {
  const { train, test } = splits;
  if (!test || test.channels === train.channels) return splits;
  const widen = (ds: Dataset): Dataset => {
    const hw = ds.height * ds.width;
    const out = new Uint8Array(ds.n * 3 * hw);
    for (let i = 0; i < ds.n; ++i)
      for (let c = 0; c < 3; ++c) out.set(ds.images.subarray(i * hw, (i + 1) * hw), (i * 3 + c) * hw);
    return { ...ds, images: out, channels: 3 };
  };
  return train.channels === 1 ? { train: widen(train), test } : { train, test: widen(test) };
}

export interface ImageFolderResult {
  splits: DataSplits;
  layout: ImageFolderLayout;
  cache: CacheStatus;
  cacheFile: string | null;
}

/** Loads an image folder (see the top of this file), through the decoded cache. */
export async function loadImageFolder(root: string, opts: ImageFolderOptions = {}): Promise<ImageFolderResult> {
  if (
    opts.imageSize !== undefined &&
    !(Number.isInteger(opts.imageSize) && opts.imageSize >= 1 && opts.imageSize <= 4096)
  )
    throw new DataError(`Expected an integer in [1, 4096] for imageSize but received ${opts.imageSize}`);
  const testSplit = opts.testSplit ?? 0.2;
  if (!(testSplit >= 0 && testSplit < 1))
    throw new DataError(`Expected a fraction in [0, 1) for testSplit but received ${testSplit}`);
  const abs = path.resolve(root);
  // The listing (a stat of every file) runs while the cache file is read and hashed off-thread.
  const optionsKey = JSON.stringify({
    kind: 'images',
    imageSize: opts.imageSize ?? null,
    skipBadFiles: !!opts.skipBadFiles,
  });
  let listing: ReturnType<typeof listImageFolder> | undefined;
  const listingFn = () => {
    opts.onProgress?.({ stage: 'list', done: 0, total: 1, what: abs });
    listing = listImageFolder(abs, opts);
    opts.onProgress?.({ stage: 'list', done: 1, total: 1, what: abs });
    return listingChecksum([...listing.train.files, ...(listing.test?.files ?? [])], optionsKey);
  };
  const desc = `image folder ${abs}`;
  const build = async () => {
    const l = listing!;
    const notes: string[] = [];
    const dopts = {
      ...opts,
      onWarning: (m: string) => {
        notes.push(m);
        opts.onWarning?.(m);
      },
    };
    const toItems = (s: ListedSplit) => s.files.map((f) => ({ input: f.file, name: f.file, label: f.label }));
    const tr = await decodeImages(
      toItems(l.train),
      l.train.classNames,
      `${desc}${l.layout === 'train-test' ? ' (train/)' : ''}`,
      { ...dopts, what: 'train' },
    );
    let test: Dataset | null = null;
    if (l.test && l.test.files.length > 0) {
      test = (
        await decodeImages(toItems(l.test), l.train.classNames, `${desc} (test/)`, {
          ...dopts,
          ref: tr.ref,
          what: 'test',
        })
      ).dataset;
    }
    return { splits: matchChannels({ train: tr.dataset, test }), notes };
  };
  const r = await withCache(abs, optionsKey, listingFn, build, opts);
  const layout = listing!.layout;
  let splits = r.splits;
  if (layout === 'single' && testSplit > 0) {
    const seed = opts.seed ?? 0;
    const s = stratifiedSplit(splits.train.labels, testSplit, deriveSeed(seed, 0x7e57));
    const base = splits.train.source;
    splits = {
      train: {
        ...subset(splits.train, s.train),
        source: `${base} (train: ${s.train.length} of ${splits.train.n}, seed ${seed})`,
      },
      test: s.val.length
        ? {
            ...subset(splits.train, s.val),
            source: `${base} (test: ${Math.round(testSplit * 100)}% held out, seed ${seed})`,
          }
        : null,
    };
  }
  return { splits, layout, cache: r.cache, cacheFile: r.file };
}

/** Resizes every image of a dataset to size x size (sharp, 'fill': square images stay undistorted). */
export async function resizeDataset(
  ds: Dataset,
  size: number,
  opts: { onProgress?: (p: LoadProgress) => void; batch?: number } = {},
): Promise<Dataset> {
  if (ds.height === size && ds.width === size) return ds;
  const { channels: C, height: H, width: W } = ds;
  const tooBig = overMemory(
    ds.n * C * size * size,
    `resizing ${ds.n} images to ${C}x${size}x${size}`,
    'use a smaller --image-size',
  );
  if (tooBig) throw new DataError(`${ds.source}: ${tooBig}`);
  const hw = H * W,
    ohw = size * size;
  const out = new Uint8Array(ds.n * C * ohw);
  const batch = opts.batch ?? 64;
  const prev = sharp.concurrency();
  sharp.concurrency(1);
  try {
    for (let start = 0; start < ds.n; start += batch) {
      const end = Math.min(ds.n, start + batch);
      const jobs: Promise<Buffer>[] = [];
      for (let i = start; i < end; ++i) {
        const hwc = Buffer.alloc(C * hw);
        const src = ds.images.subarray(i * C * hw, (i + 1) * C * hw);
        for (let c = 0; c < C; ++c) for (let j = 0; j < hw; ++j) hwc[j * C + c] = src[c * hw + j];
        jobs.push(
          sharp(hwc, { raw: { width: W, height: H, channels: C as 1 | 3 } })
            .resize(size, size, { fit: 'fill' })
            .raw()
            .toBuffer(),
        );
      }
      const res = await Promise.all(jobs);
      res.forEach((buf, k) => {
        const o = (start + k) * C * ohw;
        for (let c = 0; c < C; ++c) for (let j = 0; j < ohw; ++j) out[o + c * ohw + j] = buf[j * C + c];
      });
      opts.onProgress?.({ stage: 'resize', done: end, total: ds.n, what: ds.source });
    }
  } finally {
    sharp.concurrency(prev);
  }
  return { ...ds, images: out, height: size, width: size, source: `${ds.source}, resized to ${size}x${size}` };
}
