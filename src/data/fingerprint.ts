// The data fingerprint a checkpoint records, so that a resume can refuse data that changed: the
// validation split, the batches of every epoch and the test figures all derive from the loaded
// arrays. It is taken of those arrays, whatever the source (CIFAR binary, image folder, sample,
// in-memory), because they are what the run sees: a file touched but not changed is no change, a
// file added, removed, edited or decoded differently is.
import crypto from 'node:crypto';

import type { Dataset, DataSplits } from './dataset.js';

/** One split: its size, image shape, classes and per-class counts, and SHA-256 of its labels and pixels. */
export interface SplitFingerprint {
  n: number;
  /** [C, H, W] */
  shape: [number, number, number];
  class_names: string[];
  class_counts: number[];
  labels_sha256: string;
  images_sha256: string;
}

export interface DataFingerprint {
  train: SplitFingerprint;
  test: SplitFingerprint | null;
}

function splitFingerprint(ds: Dataset): SplitFingerprint {
  const counts = new Array<number>(ds.classNames.length).fill(0);
  for (const y of ds.labels) counts[y] += 1;
  const labels = new Uint8Array(ds.labels.buffer, ds.labels.byteOffset, ds.labels.byteLength);
  const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');
  return {
    n: ds.n,
    shape: [ds.channels, ds.height, ds.width],
    class_names: [...ds.classNames],
    class_counts: counts,
    labels_sha256: sha(labels),
    images_sha256: sha(ds.images),
  };
}

export function dataFingerprint(splits: DataSplits): DataFingerprint {
  return { train: splitFingerprint(splits.train), test: splits.test ? splitFingerprint(splits.test) : null };
}

const list = (items: string[], max = 5) =>
  items.slice(0, max).join(', ') + (items.length > max ? `, ... (${items.length} in all)` : '');

/** What differs in one split, most telling first (size and classes before labels and pixels). */
function splitChanges(name: string, was: SplitFingerprint, now: SplitFingerprint): string[] {
  const out: string[] = [];
  if (now.shape.join('x') !== was.shape.join('x'))
    out.push(`${name}: images are ${now.shape.join('x')}, were ${was.shape.join('x')}`);
  if (now.n !== was.n) out.push(`${name}: ${now.n} images, was ${was.n}`);
  const added = now.class_names.filter((c) => !was.class_names.includes(c));
  const removed = was.class_names.filter((c) => !now.class_names.includes(c));
  if (added.length) out.push(`${name}: new classes ${list(added)}`);
  if (removed.length) out.push(`${name}: classes ${list(removed)} are gone`);
  if (!added.length && !removed.length && now.class_names.join('\n') !== was.class_names.join('\n'))
    out.push(`${name}: the classes are in another order`);
  if (!added.length && !removed.length) {
    const moved = was.class_names.flatMap((c, i) => {
      const j = now.class_names.indexOf(c);
      return now.class_counts[j] !== was.class_counts[i]
        ? [`${c} ${was.class_counts[i]} -> ${now.class_counts[j]}`]
        : [];
    });
    if (moved.length) out.push(`${name}: images per class changed (${list(moved)})`);
  }
  if (out.length === 0 && now.labels_sha256 !== was.labels_sha256)
    out.push(`${name}: the labels differ (same classes and counts: images were relabelled or reordered)`);
  if (out.length === 0 && now.images_sha256 !== was.images_sha256)
    out.push(`${name}: the pixels differ (same images per class: files were edited, replaced or decoded differently)`);
  return out;
}

/** Human-readable differences between the data a checkpoint was trained on and the data now; empty when equal. */
export function dataChanges(was: DataFingerprint, now: DataFingerprint): string[] {
  const out = splitChanges('train split', was.train, now.train);
  if (was.test && now.test) out.push(...splitChanges('test split', was.test, now.test));
  else if (was.test && !now.test) out.push('the test split is gone');
  else if (!was.test && now.test) out.push('there is now a test split');
  return out;
}
