// CIFAR-10 / CIFAR-100 in their official *binary* versions (Krizhevsky, 2009).
//
//   cifar-10-batches-bin/   data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt
//                           record = 1 label byte + 3072 pixel bytes                  (3073 bytes)
//   cifar-100-binary/       train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt
//                           record = 1 coarse byte + 1 fine byte + 3072 pixel bytes   (3074 bytes)
//
// The 3072 pixel bytes are 1024 red, then 1024 green, then 1024 blue values, each plane row-major
// 32x32: already the (C, H, W) layout of a Dataset, so records are copied as they are.
import fs from 'node:fs';
import path from 'node:path';

import { DataError } from '../errors.js';
import type { LabelSet } from '../options.js';
import { type Dataset, type DataSplits } from './dataset.js';

export const CIFAR10_CLASSES = [
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
];
const PIXELS = 3072;
/** Records per file in the official distribution; more means the file is not what its name says. */
const MAX_RECORDS: Record<string, number> = { cifar10: 10000, 'cifar100-train': 50000, 'cifar100-test': 10000 };

export type CifarKind = 'cifar10' | 'cifar100';

export interface CifarOptions {
  /** CIFAR-100 only: 'fine' (100 classes, default) or 'coarse' (20 superclasses). */
  labels?: LabelSet;
  onWarning?: (message: string) => void;
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function cifar10Batches(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .map((f) => /^data_batch_(\d+)\.bin$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map((m) => m[0]);
}

/**
 * Which CIFAR binary format a folder holds, and the folder that holds the files (a parent of
 * `cifar-10-batches-bin/` or `cifar-100-binary/` is accepted too). null when it is neither.
 */
export function detectCifar(dir: string): { kind: CifarKind; dir: string } | null {
  if (!isDir(dir)) return null;
  if (cifar10Batches(dir).length > 0 || isFile(path.join(dir, 'test_batch.bin'))) return { kind: 'cifar10', dir };
  if (isFile(path.join(dir, 'train.bin')) || isFile(path.join(dir, 'test.bin'))) return { kind: 'cifar100', dir };
  for (const [sub, kind] of [
    ['cifar-10-batches-bin', 'cifar10'],
    ['cifar-100-binary', 'cifar100'],
  ] as const) {
    const inner = path.join(dir, sub);
    const found = detectCifar(inner);
    if (found && found.kind === kind) return found;
  }
  return null;
}

function readNames(
  file: string,
  expected: number,
  fallback: string[] | null,
  onWarning?: (m: string) => void,
): string[] {
  if (!isFile(file)) {
    const names = fallback ?? Array.from({ length: expected }, (_, k) => String(k));
    onWarning?.(`${file} is missing; using ${fallback ? 'the standard class names' : 'class numbers as names'}`);
    return names;
  }
  const names = fs
    .readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (names.length !== expected)
    throw new DataError(
      `${file}: lists ${names.length} class names but the format has ${expected} classes; restore the original file from the dataset archive`,
      file,
    );
  if (new Set(names).size !== names.length)
    throw new DataError(`${file}: lists a class name twice; restore the original file from the dataset archive`, file);
  return names;
}

interface RawRecords {
  file: string;
  buf: Buffer;
  records: number;
}

function readRecords(file: string, recordSize: number, maxRecords: number, formatName: string): RawRecords {
  const buf = fs.readFileSync(file);
  const fix = `re-extract the file from the original ${formatName} binary archive`;
  if (buf.length === 0) throw new DataError(`${file}: is empty (0 bytes); ${fix}`, file);
  const records = Math.floor(buf.length / recordSize);
  const rest = buf.length - records * recordSize;
  if (rest !== 0) {
    const other = recordSize === 3073 ? 3074 : 3073;
    const hint =
      buf.length % other === 0
        ? ` (its size is a multiple of ${other}, the ${other === 3074 ? 'CIFAR-100' : 'CIFAR-10'} record size: is it in the wrong folder?)`
        : '';
    throw new DataError(
      `${file}: truncated or padded: ${buf.length} bytes is ${records} whole ${recordSize}-byte ${formatName} records plus ${rest} stray bytes${hint}; ${fix}`,
      file,
    );
  }
  if (records > maxRecords)
    throw new DataError(
      `${file}: oversized: holds ${records} records but a ${formatName} file of this name holds at most ${maxRecords}; it is not an original ${formatName} file (concatenated or another format?); ${fix}`,
      file,
    );
  return { file, buf, records };
}

function checkLabelBytes(
  r: RawRecords,
  recordSize: number,
  offset: number,
  limit: number,
  what: string,
  formatName: string,
): void {
  const { buf } = r;
  for (let k = 0, o = offset; k < r.records; ++k, o += recordSize) {
    if (buf[o] >= limit)
      throw new DataError(
        `${r.file}: record ${k} (byte ${o}) has ${what} ${buf[o]}, outside 0..${limit - 1}; the file is corrupt or not a ${formatName} file; re-extract it from the original archive`,
        r.file,
      );
  }
}

function pack(
  parts: RawRecords[],
  recordSize: number,
  labelOffset: number,
  classNames: string[],
  source: string,
): Dataset {
  const n = parts.reduce((s, p) => s + p.records, 0);
  const images = new Uint8Array(n * PIXELS);
  const labels = new Int32Array(n);
  let k = 0;
  for (const { buf, records } of parts) {
    for (let r = 0, o = 0; r < records; ++r, ++k, o += recordSize) {
      labels[k] = buf[o + labelOffset];
      images.set(buf.subarray(o + recordSize - PIXELS, o + recordSize), k * PIXELS);
    }
  }
  return { images, labels, n, channels: 3, height: 32, width: 32, classNames, source };
}

/** Loads a `cifar-10-batches-bin/` folder: all data_batch_N.bin files as train, test_batch.bin as test. */
export function loadCifar10(dir: string, opts: CifarOptions = {}): DataSplits {
  const batches = cifar10Batches(dir);
  if (batches.length === 0)
    throw new DataError(
      `${dir}: has no data_batch_N.bin training files; a CIFAR-10 binary folder (cifar-10-batches-bin/) holds data_batch_1.bin .. data_batch_5.bin and test_batch.bin`,
      dir,
    );
  const missing = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`).filter((f) => !batches.includes(f));
  if (missing.length)
    opts.onWarning?.(`${dir}: ${missing.join(', ')} not found; training on ${batches.join(', ')} only`);
  const classNames = readNames(path.join(dir, 'batches.meta.txt'), 10, CIFAR10_CLASSES, opts.onWarning);
  const load = (f: string) => {
    const r = readRecords(path.join(dir, f), 3073, MAX_RECORDS.cifar10, 'CIFAR-10');
    checkLabelBytes(r, 3073, 0, 10, 'label', 'CIFAR-10');
    return r;
  };
  const train = pack(batches.map(load), 3073, 0, classNames, `CIFAR-10 binary ${dir} (train: ${batches.join(', ')})`);
  const testFile = path.join(dir, 'test_batch.bin');
  let test: Dataset | null = null;
  if (isFile(testFile))
    test = pack([load('test_batch.bin')], 3073, 0, classNames, `CIFAR-10 binary ${dir} (test: test_batch.bin)`);
  else opts.onWarning?.(`${testFile} not found; there is no test split`);
  return { train, test };
}

/** Loads a `cifar-100-binary/` folder (train.bin, test.bin) with fine (default) or coarse labels. */
export function loadCifar100(dir: string, opts: CifarOptions = {}): DataSplits {
  const which = opts.labels ?? 'fine';
  if (which !== 'fine' && which !== 'coarse')
    throw new DataError(`Expected 'fine' or 'coarse' for labels but received ${JSON.stringify(which)}`);
  const trainFile = path.join(dir, 'train.bin');
  if (!isFile(trainFile))
    throw new DataError(
      `${trainFile}: not found; a CIFAR-100 binary folder (cifar-100-binary/) holds train.bin, test.bin, fine_label_names.txt and coarse_label_names.txt`,
      trainFile,
    );
  const classNames =
    which === 'fine'
      ? readNames(path.join(dir, 'fine_label_names.txt'), 100, null, opts.onWarning)
      : readNames(path.join(dir, 'coarse_label_names.txt'), 20, null, opts.onWarning);
  const load = (file: string, max: number) => {
    const r = readRecords(file, 3074, max, 'CIFAR-100');
    checkLabelBytes(r, 3074, 0, 20, 'coarse label', 'CIFAR-100');
    checkLabelBytes(r, 3074, 1, 100, 'fine label', 'CIFAR-100');
    return r;
  };
  const labelOffset = which === 'fine' ? 1 : 0;
  const train = pack(
    [load(trainFile, MAX_RECORDS['cifar100-train'])],
    3074,
    labelOffset,
    classNames,
    `CIFAR-100 binary ${dir} (train.bin, ${which} labels)`,
  );
  const testFile = path.join(dir, 'test.bin');
  let test: Dataset | null = null;
  if (isFile(testFile))
    test = pack(
      [load(testFile, MAX_RECORDS['cifar100-test'])],
      3074,
      labelOffset,
      classNames,
      `CIFAR-100 binary ${dir} (test.bin, ${which} labels)`,
    );
  else opts.onWarning?.(`${testFile} not found; there is no test split`);
  return { train, test };
}

/** Loads whichever CIFAR binary format `dir` holds; throws a DataError when it holds neither. */
export function loadCifar(dir: string, opts: CifarOptions = {}): DataSplits {
  const found = detectCifar(dir);
  if (!found)
    throw new DataError(
      `${dir}: is not a CIFAR-10 or CIFAR-100 binary folder (no data_batch_N.bin, test_batch.bin, train.bin or test.bin)`,
      dir,
    );
  if (found.kind === 'cifar10' && opts.labels === 'coarse')
    opts.onWarning?.(`labels 'coarse' applies to CIFAR-100 only; ${found.dir} is CIFAR-10, so it is ignored`);
  return found.kind === 'cifar10' ? loadCifar10(found.dir, opts) : loadCifar100(found.dir, opts);
}
