// The bundled sample: a stratified subset of CIFAR-10 (JPEG mirror) packed in the package, so
// `dfl-native train` with no data option trains on real images. Made by scripts/fixtures/make-sample.mjs.
//
// Container ".dfls" (all integers little-endian):
//   0   8 bytes  magic "DFLSAMP1"
//   8   u32      format version (1)
//   12  u32      header length L
//   16  L bytes  header, UTF-8 JSON: { name, description, source, license, classNames, channels,
//                height, width, encoding: "jpeg", payloadSha256,
//                splits: [ { name: "train"|"test", count, offset } ] }
//   16+L payload per split, at `offset` (relative to the payload start):
//                count u8 labels, count u32 byte lengths, then the images' ORIGINAL JPEG files
//                back to back (not re-encoded).
// The first load decodes the JPEGs with sharp and writes a decoded cache (cache.ts); later loads
// read that cache.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { DataError } from '../errors.js';
import { withCache, listingChecksum, type CachedLoadOptions, type CacheStatus } from './cache.js';
import { type Dataset, type DataSplits } from './dataset.js';
import { decodeImages, type DecodeItem, type LoadProgress } from './images.js';

export const SAMPLE_MAGIC = 'DFLSAMP1';
export const SAMPLE_VERSION = 1;

/** data/cifar10-sample.dfls in the package. */
export const SAMPLE_FILE = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'data',
  'cifar10-sample.dfls',
);

export interface SampleHeader {
  name: string;
  description: string;
  source: string;
  license: string;
  classNames: string[];
  channels: number;
  height: number;
  width: number;
  encoding: 'jpeg';
  payloadSha256: string;
  splits: { name: 'train' | 'test'; count: number; offset: number }[];
}

export interface SampleSplitRaw {
  name: 'train' | 'test';
  labels: Uint8Array;
  /** One encoded image (a JPEG file's bytes) per item. */
  images: Buffer[];
}

/** Reads and checks a .dfls container without decoding its images. */
export function readSampleContainer(
  file: string,
  opts: { verify?: boolean } = {},
): { header: SampleHeader; splits: SampleSplitRaw[] } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new DataError(
      `${file}: cannot read the bundled sample (${code ?? (err as Error).message}); reinstall dfl-native, or give --data a CIFAR or image folder`,
      file,
    );
  }
  const bad = (what: string): never => {
    throw new DataError(
      `${file}: is not a valid dfl-native sample (${what}); reinstall dfl-native or regenerate it with scripts/fixtures/make-sample.mjs`,
      file,
    );
  };
  if (buf.length < 16 || buf.toString('latin1', 0, 8) !== SAMPLE_MAGIC) bad('bad magic bytes');
  if (buf.readUInt32LE(8) !== SAMPLE_VERSION) bad(`format version ${buf.readUInt32LE(8)}, expected ${SAMPLE_VERSION}`);
  const hlen = buf.readUInt32LE(12);
  if (16 + hlen > buf.length) bad('header runs past the end of the file');
  let header: SampleHeader;
  try {
    header = JSON.parse(buf.toString('utf8', 16, 16 + hlen)) as SampleHeader;
  } catch {
    return bad('header is not valid JSON');
  }
  const payload = buf.subarray(16 + hlen);
  if (opts.verify && crypto.createHash('sha256').update(payload).digest('hex') !== header.payloadSha256)
    bad('payload checksum mismatch: the file is corrupt');
  const splits: SampleSplitRaw[] = [];
  for (const s of header.splits) {
    let o = s.offset;
    if (o + s.count * 5 > payload.length) bad(`split ${s.name} runs past the end of the file`);
    const labels = new Uint8Array(payload.subarray(o, o + s.count));
    o += s.count;
    const images: Buffer[] = [];
    const lens = payload.subarray(o, o + 4 * s.count);
    o += 4 * s.count;
    for (let i = 0; i < s.count; ++i) {
      const len = lens.readUInt32LE(4 * i);
      if (o + len > payload.length) bad(`image ${i} of split ${s.name} runs past the end of the file`);
      if (labels[i] >= header.classNames.length)
        bad(`image ${i} of split ${s.name} has label ${labels[i]}, outside 0..${header.classNames.length - 1}`);
      images.push(payload.subarray(o, o + len));
      o += len;
    }
    splits.push({ name: s.name, labels, images });
  }
  return { header, splits };
}

export interface SampleOptions extends CachedLoadOptions {
  /** Another .dfls file instead of the bundled one. */
  file?: string;
  /** Resize to imageSize x imageSize (the sample is 32x32). */
  imageSize?: number;
  onProgress?: (p: LoadProgress) => void;
}

/** Loads the bundled CIFAR-10 sample (decoding it on first use, then from the decoded cache). */
export async function loadSample(
  opts: SampleOptions = {},
): Promise<{ splits: DataSplits; cache: CacheStatus; cacheFile: string | null }> {
  const file = path.resolve(opts.file ?? SAMPLE_FILE);
  const { header, splits: raw } = readSampleContainer(file);
  const size = opts.imageSize !== undefined && opts.imageSize !== header.height ? opts.imageSize : undefined;
  const optionsKey = JSON.stringify({ kind: 'sample', imageSize: size ?? null });
  const listing = listingChecksum(
    [{ path: path.basename(file), size: 0, mtimeMs: 0 }],
    `${optionsKey}\n${header.payloadSha256}`,
  );
  const desc = `bundled sample ${header.name} (${path.basename(file)})`;
  const build = async () => {
    readSampleContainer(file, { verify: true });
    const out: DataSplits = { train: null as unknown as Dataset, test: null };
    for (const s of raw) {
      const items: DecodeItem[] = s.images.map((b, i) => ({
        input: b,
        name: `${file} (${s.name} image ${i})`,
        label: s.labels[i],
      }));
      const { dataset } = await decodeImages(
        items,
        header.classNames,
        `${desc}, ${s.name}: ${s.images.length} images`,
        {
          imageSize: size,
          rgb: header.channels === 3,
          onProgress: opts.onProgress,
          onWarning: opts.onWarning,
          what: `sample ${s.name}`,
        },
      );
      if (s.name === 'train') out.train = dataset;
      else out.test = dataset;
    }
    if (!out.train) throw new DataError(`${file}: has no training split; reinstall dfl-native`, file);
    return { splits: out, notes: [] };
  };
  const r = await withCache(file, optionsKey, () => listing, build, opts);
  return { splits: r.splits, cache: r.cache, cacheFile: r.file };
}
