// Helpers for the data-layer tests: temp folders, CIFAR files in exactly the official binary
// formats, and small image folders made with sharp.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import sharp from 'sharp';

/** A fresh temp folder; removed by the returned cleanup. */
export function tempDir(prefix = 'dfl-data-test-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** The pixel value of record `i`, channel c, row y, column x: a recognisable function of all four. */
export function pixelAt(i: number, c: number, y: number, x: number): number {
  return (i * 31 + c * 85 + y * 7 + x * 3) & 0xff;
}

/** 3072 channel-planar bytes (1024 R, 1024 G, 1024 B, each row-major 32x32) for record i. */
export function cifarPixels(i: number): Buffer {
  const b = Buffer.alloc(3072);
  for (let c = 0; c < 3; ++c)
    for (let y = 0; y < 32; ++y) for (let x = 0; x < 32; ++x) b[c * 1024 + y * 32 + x] = pixelAt(i, c, y, x);
  return b;
}

/** A CIFAR-10 batch file: records of <1 label byte><3072 pixel bytes>. */
export function cifar10File(labels: number[], first = 0): Buffer {
  return Buffer.concat(labels.map((y, k) => Buffer.concat([Buffer.from([y]), cifarPixels(first + k)])));
}

/** A CIFAR-100 file: records of <1 coarse byte><1 fine byte><3072 pixel bytes>. */
export function cifar100File(coarse: number[], fine: number[], first = 0): Buffer {
  return Buffer.concat(fine.map((f, k) => Buffer.concat([Buffer.from([coarse[k], f]), cifarPixels(first + k)])));
}

export const CIFAR10_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

/**
 * Writes dir/cifar-10-batches-bin/ with 5 training batches of `perBatch` records and a test batch
 * of `testCount`; labels cycle 0..9. Returns the folder.
 */
export function writeCifar10(dir: string, perBatch = 4, testCount = 5): string {
  const d = path.join(dir, 'cifar-10-batches-bin');
  fs.mkdirSync(d, { recursive: true });
  let i = 0;
  for (let b = 1; b <= 5; ++b) {
    const labels = Array.from({ length: perBatch }, (_, k) => (i + k) % 10);
    fs.writeFileSync(path.join(d, `data_batch_${b}.bin`), cifar10File(labels, i));
    i += perBatch;
  }
  fs.writeFileSync(
    path.join(d, 'test_batch.bin'),
    cifar10File(
      Array.from({ length: testCount }, (_, k) => (k * 3) % 10),
      1000,
    ),
  );
  fs.writeFileSync(path.join(d, 'batches.meta.txt'), CIFAR10_NAMES.join('\n') + '\n\n');
  return d;
}

export const fineNames = Array.from({ length: 100 }, (_, k) => `fine_${String(k).padStart(2, '0')}`);
export const coarseNames = Array.from({ length: 20 }, (_, k) => `coarse_${String(k).padStart(2, '0')}`);

/** Writes dir/cifar-100-binary/ with `n` training and `m` test records; fine = (7k) % 100, coarse = fine % 20. */
export function writeCifar100(dir: string, n = 12, m = 6): string {
  const d = path.join(dir, 'cifar-100-binary');
  fs.mkdirSync(d, { recursive: true });
  const fine = (count: number, off: number) => Array.from({ length: count }, (_, k) => ((k + off) * 7) % 100);
  const trF = fine(n, 0),
    teF = fine(m, 50);
  fs.writeFileSync(
    path.join(d, 'train.bin'),
    cifar100File(
      trF.map((f) => f % 20),
      trF,
      0,
    ),
  );
  fs.writeFileSync(
    path.join(d, 'test.bin'),
    cifar100File(
      teF.map((f) => f % 20),
      teF,
      500,
    ),
  );
  fs.writeFileSync(path.join(d, 'fine_label_names.txt'), fineNames.join('\n') + '\n');
  fs.writeFileSync(path.join(d, 'coarse_label_names.txt'), coarseNames.join('\n') + '\n');
  return d;
}

/** Interleaved (HWC) pixels of a small test image: a function of (seed, channel, y, x). */
export function hwcPixels(seed: number, w: number, h: number, channels: number): Buffer {
  const b = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; ++y)
    for (let x = 0; x < w; ++x)
      for (let c = 0; c < channels; ++c) b[(y * w + x) * channels + c] = (seed * 40 + c * 70 + y * 5 + x * 9) & 0xff;
  return b;
}

export type Fmt = 'jpg' | 'png' | 'webp';

/** Writes one image file made with sharp (png and webp lossless, so pixels are exact). */
export async function writeImage(
  file: string,
  seed: number,
  opts: { w?: number; h?: number; channels?: 1 | 3 | 4; fmt?: Fmt } = {},
): Promise<void> {
  const w = opts.w ?? 8,
    h = opts.h ?? 8,
    channels = opts.channels ?? 3;
  const fmt = opts.fmt ?? (path.extname(file).slice(1).toLowerCase().replace('jpeg', 'jpg') as Fmt);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let img = sharp(hwcPixels(seed, w, h, channels), { raw: { width: w, height: h, channels } });
  if (channels === 1) img = img.toColourspace('b-w');
  if (fmt === 'png') img = img.png();
  else if (fmt === 'webp') img = img.webp({ lossless: true });
  else img = img.jpeg({ quality: 95 });
  await img.toFile(file);
}

/**
 * Writes root/<class>/<k>.<fmt> for each class: `perClass` images each. Returns the files by class.
 */
export async function writeImageFolder(
  root: string,
  classes: string[],
  perClass: number,
  opts: { w?: number; h?: number; channels?: 1 | 3; fmt?: Fmt } = {},
): Promise<string[][]> {
  const out: string[][] = [];
  for (let y = 0; y < classes.length; ++y) {
    const files: string[] = [];
    for (let k = 0; k < perClass; ++k) {
      const f = path.join(root, classes[y], `${String(k).padStart(3, '0')}.${opts.fmt ?? 'png'}`);
      await writeImage(f, y * 100 + k, opts);
      files.push(f);
    }
    out.push(files);
  }
  return out;
}

/** Collects warnings. */
export function warnings(): { list: string[]; onWarning: (m: string) => void } {
  const list: string[] = [];
  return { list, onWarning: (m: string) => list.push(m) };
}
