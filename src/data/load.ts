// One entry point for every data source: loadData(spec, opts) finds out what `spec` names and loads it.
//
//   undefined, 'sample'              the bundled CIFAR-10 sample (data/cifar10-sample.dfls)
//   a .dfls file                     a sample container made by scripts/fixtures/make-sample.mjs
//   cifar-10-batches-bin/ (or parent) CIFAR-10 binary version
//   cifar-100-binary/ (or parent)     CIFAR-100 binary version, fine or coarse labels
//   any other folder                 an image folder: root/train|test/<class>/*.jpg or root/<class>/*.jpg
import fs from 'node:fs';
import path from 'node:path';

import { DataError } from '../errors.js';
import type { LabelSet } from '../options.js';
import type { CacheStatus } from './cache.js';
import { detectCifar, loadCifar } from './cifar.js';
import { type DataSplits } from './dataset.js';
import { loadImageFolder, resizeDataset, type LoadProgress } from './images.js';
import { loadSample } from './sample.js';

export type DataKind = 'sample' | 'cifar10' | 'cifar100' | 'images';

export interface LoadDataOptions {
  /** Resize every image to imageSize x imageSize. Image folders need it when sizes differ. */
  imageSize?: number;
  /** CIFAR-100: 'fine' (100 classes, default) or 'coarse' (20 superclasses). */
  labels?: LabelSet;
  /** Folder for decoded caches (default: $DFL_CACHE_DIR, else ~/.cache/dfl-native). */
  cacheDir?: string;
  /** false: no decoded cache is read or written. */
  cache?: boolean;
  /** Single image folder (no train/ + test/): fraction held out as test (default 0.2; 0 = none). */
  testSplit?: number;
  /** Seed of the single-folder test split (default 0). */
  seed?: number;
  /** Image folders: skip undecodable files and empty class folders with a warning. */
  skipBadFiles?: boolean;
  onProgress?: (p: LoadProgress) => void;
  onWarning?: (message: string) => void;
}

export interface LoadResult {
  splits: DataSplits;
  kind: DataKind;
  /** How the decoded cache was used ('off' for sources that are not cached: CIFAR binary). */
  cache: CacheStatus;
  cacheFile: string | null;
}

const MISSING_HINT =
  'give --data a CIFAR-10/100 binary folder (cifar-10-batches-bin/, cifar-100-binary/) or an image folder (root/<class>/*.jpg, or root/train/<class>/ + root/test/<class>/), or omit it to use the bundled CIFAR-10 sample';

/** What kind of source `spec` names (without loading it); throws a DataError when it does not exist. */
export function detectSource(spec: string | undefined): DataKind {
  if (spec === undefined || spec === 'sample') return 'sample';
  let st: fs.Stats;
  try {
    st = fs.statSync(spec);
  } catch {
    throw new DataError(`${spec}: no such file or folder; ${MISSING_HINT}`, spec);
  }
  if (st.isFile()) {
    if (spec.endsWith('.dfls')) return 'sample';
    throw new DataError(`${spec}: is a file; ${MISSING_HINT}`, spec);
  }
  const c = detectCifar(spec);
  return c ? c.kind : 'images';
}

/** Loads `spec` (see the top of this file) and reports how. */
export async function loadDataset(spec: string | undefined, opts: LoadDataOptions = {}): Promise<LoadResult> {
  const { imageSize } = opts;
  if (imageSize !== undefined && !(Number.isInteger(imageSize) && imageSize >= 1 && imageSize <= 4096))
    throw new DataError(`Expected an integer in [1, 4096] for imageSize but received ${imageSize}`);
  if (opts.labels !== undefined && opts.labels !== 'fine' && opts.labels !== 'coarse')
    throw new DataError(`Expected 'fine' or 'coarse' for labels but received ${JSON.stringify(opts.labels)}`);
  const kind = detectSource(spec);
  if (opts.labels === 'coarse' && kind !== 'cifar100')
    opts.onWarning?.(`labels 'coarse' applies to CIFAR-100 only; ignored for ${spec ?? 'the bundled sample'}`);
  if (kind === 'sample') {
    const r = await loadSample({ ...opts, file: spec === undefined || spec === 'sample' ? undefined : spec });
    return { splits: r.splits, kind, cache: r.cache, cacheFile: r.cacheFile };
  }
  if (kind === 'images') {
    const r = await loadImageFolder(spec!, opts);
    return { splits: r.splits, kind, cache: r.cache, cacheFile: r.cacheFile };
  }
  let splits = loadCifar(spec!, { labels: opts.labels, onWarning: opts.onWarning });
  if (imageSize !== undefined && imageSize !== 32) {
    splits = {
      train: await resizeDataset(splits.train, imageSize, opts),
      test: splits.test && (await resizeDataset(splits.test, imageSize, opts)),
    };
  }
  return { splits, kind, cache: 'off', cacheFile: null };
}

/** Loads a data source into train (+ test) splits; `spec` undefined loads the bundled sample. */
export async function loadData(spec: string | undefined, opts: LoadDataOptions = {}): Promise<DataSplits> {
  return (await loadDataset(spec, opts)).splits;
}
