// The decoded cache: a packed binary file holding decoded uint8 pixels + labels + class names, so a
// folder of JPEGs is decoded once and later runs load it in a fraction of a second.
//
// File layout (".dflc", all integers little-endian):
//   0   8 bytes  magic "DFLCACHE"
//   8   u32      format version (2)
//   12  u32      header length L
//   16  L bytes  header, UTF-8 JSON: { listing, payloadBytes, payloadSha256, partsSha256, parts: [ { name, n,
//                channels, height, width, classNames, source, imagesOffset, labelsOffset } ] }
//       zero padding to a multiple of 8
//   P   payload  per part: n*C*H*W pixel bytes (N, C, H, W), zero padding to 4, n int32 labels.
//                Offsets in the header are relative to P.
//
// `listing` is a SHA-256 of the source listing (relative paths, sizes, mtimes, load options): when
// the source changes, the cache is stale. `payloadSha256` guards the payload against corruption.
// Either mismatch makes the loader rebuild the cache with a warning. Writes are atomic (temp file,
// fsync, rename), so a killed run never leaves a torn cache behind.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { WriteError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { Dataset, DataSplits } from './dataset.js';

const MAGIC = 'DFLCACHE';
// 2: the header carries partsSha256 (a checksum of its parts and notes), so a flipped byte in the
// header (a class name, an offset) is caught like one in the payload.
const VERSION = 2;

/**
 * Where decoded caches go unless a cacheDir is given: $DFL_CACHE_DIR, else $XDG_CACHE_HOME/dfl-native,
 * else %LOCALAPPDATA%\dfl-native\cache on Windows, else ~/.cache/dfl-native.
 */
export function defaultCacheDir(): string {
  const env = process.env.DFL_CACHE_DIR;
  if (env) return path.resolve(env);
  if (process.env.XDG_CACHE_HOME) return path.join(process.env.XDG_CACHE_HOME, 'dfl-native');
  if (process.platform === 'win32' && process.env.LOCALAPPDATA)
    return path.join(process.env.LOCALAPPDATA, 'dfl-native', 'cache');
  let home = '';
  try {
    home = os.homedir();
  } catch {
    // no home directory (some containers)
  }
  return home ? path.join(home, '.cache', 'dfl-native') : path.join(os.tmpdir(), 'dfl-native-cache');
}

/** The cache file for a source (absolute path) loaded with given options (a stable string). */
export function cacheFileFor(cacheDir: string, source: string, optionsKey: string): string {
  const abs = path.resolve(source);
  const base =
    path
      .basename(abs)
      .replace(/[^A-Za-z0-9._-]+/g, '_')
      .slice(0, 40) || 'data';
  const h = crypto.createHash('sha256').update(abs).update('\0').update(optionsKey).digest('hex').slice(0, 16);
  return path.join(cacheDir, `${base}-${h}.dflc`);
}

export interface ListingEntry {
  /** Path relative to the source root, '/'-separated. */
  path: string;
  size: number;
  mtimeMs: number;
}

/** SHA-256 over the source listing and the load options: any change makes a cache stale. */
export function listingChecksum(entries: ListingEntry[], optionsKey: string): string {
  const h = crypto.createHash('sha256');
  h.update(`dflc${VERSION}\n${optionsKey}\n`);
  for (const e of entries) h.update(`${e.path}\0${e.size}\0${Math.round(e.mtimeMs)}\n`);
  return h.digest('hex');
}

interface PartHeader {
  name: 'train' | 'test';
  n: number;
  channels: number;
  height: number;
  width: number;
  classNames: string[];
  source: string;
  imagesOffset: number;
  labelsOffset: number;
}

interface Header {
  listing: string;
  payloadBytes: number;
  payloadSha256: string;
  /** SHA-256 of JSON.stringify([parts, notes]): guards the header as payloadSha256 guards the payload. */
  partsSha256: string;
  parts: PartHeader[];
  /** Warnings given when the cache was built (e.g. skipped files), repeated on every cached load. */
  notes?: string[];
}

const align = (x: number, a: number) => Math.ceil(x / a) * a;
const partsChecksum = (parts: unknown, notes: unknown) =>
  crypto
    .createHash('sha256')
    .update(JSON.stringify([parts, notes ?? []]))
    .digest('hex');

/** Writes `splits` to `file` atomically. */
export function writeCache(file: string, listing: string, splits: DataSplits, notes: string[] = []): void {
  const parts: PartHeader[] = [];
  const chunks: Uint8Array[] = [];
  let off = 0;
  const push = (c: Uint8Array) => {
    chunks.push(c);
    off += c.length;
  };
  for (const [name, ds] of [
    ['train', splits.train],
    ['test', splits.test],
  ] as const) {
    if (!ds) continue;
    const imagesOffset = off;
    push(ds.images.subarray(0, ds.n * ds.channels * ds.height * ds.width));
    if (off % 4) push(new Uint8Array(4 - (off % 4)));
    const labelsOffset = off;
    const lab = Buffer.alloc(ds.n * 4);
    for (let i = 0; i < ds.n; ++i) lab.writeInt32LE(ds.labels[i], i * 4);
    push(lab);
    parts.push({
      name,
      n: ds.n,
      channels: ds.channels,
      height: ds.height,
      width: ds.width,
      classNames: ds.classNames,
      source: ds.source,
      imagesOffset,
      labelsOffset,
    });
  }
  const sha = crypto.createHash('sha256');
  for (const c of chunks) sha.update(c);
  const header: Header = {
    listing,
    payloadBytes: off,
    payloadSha256: sha.digest('hex'),
    partsSha256: partsChecksum(parts, notes),
    parts,
    notes,
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const pre = Buffer.alloc(align(16 + json.length, 8));
  pre.write(MAGIC, 0, 'latin1');
  pre.writeUInt32LE(VERSION, 8);
  pre.writeUInt32LE(json.length, 12);
  json.copy(pre, 16);

  writeFileAtomic(file, [pre, ...chunks]);
}

export type CacheRead =
  | { status: 'hit'; splits: DataSplits; notes: string[] }
  | { status: 'missing' }
  | { status: 'stale' }
  | { status: 'corrupt'; reason: string };

/** Reads a cache file and checks it against the expected listing checksum and its payload checksum. */
export function readCache(file: string, listing: string): CacheRead {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { status: 'missing' };
    return { status: 'corrupt', reason: `cannot be read: ${(err as Error).message}` };
  }
  const p = parseCache(buf);
  if ('status' in p) return p;
  return checkParsed(p, listing, crypto.createHash('sha256').update(p.payload).digest('hex'));
}

interface Parsed {
  header: Header;
  payload: Buffer;
}

function parseCache(buf: Buffer): Parsed | CacheRead {
  if (buf.length < 16 || buf.toString('latin1', 0, 8) !== MAGIC)
    return { status: 'corrupt', reason: 'not a dfl-native cache file (bad magic bytes)' };
  const version = buf.readUInt32LE(8);
  if (version !== VERSION) return { status: 'stale' };
  const hlen = buf.readUInt32LE(12);
  if (16 + hlen > buf.length) return { status: 'corrupt', reason: 'header runs past the end of the file' };
  let header: Header;
  try {
    header = JSON.parse(buf.toString('utf8', 16, 16 + hlen)) as Header;
  } catch {
    return { status: 'corrupt', reason: 'header is not valid JSON' };
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    return { status: 'corrupt', reason: 'header is not a JSON object' };
  const p0 = align(16 + hlen, 8);
  if (buf.length !== p0 + header.payloadBytes)
    return { status: 'corrupt', reason: `size is ${buf.length} bytes, expected ${p0 + header.payloadBytes}` };
  return { header, payload: buf.subarray(p0) };
}

function checkParsed({ header, payload }: Parsed, listing: string, sha: string): CacheRead {
  if (header.listing !== listing) return { status: 'stale' };
  if (sha !== header.payloadSha256) return { status: 'corrupt', reason: 'payload checksum mismatch' };
  if (header.partsSha256 !== partsChecksum(header.parts, header.notes))
    return { status: 'corrupt', reason: 'header checksum mismatch' };
  // The checksum matched, so the parts are what writeCache wrote; check the bounds anyway, so no
  // header can make the reader index outside the payload.
  if (!Array.isArray(header.parts)) return { status: 'corrupt', reason: 'header has no parts list' };
  const out: DataSplits = { train: null as unknown as Dataset, test: null };
  const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  for (const p of header.parts) {
    if (
      typeof p !== 'object' ||
      p === null ||
      !['n', 'channels', 'height', 'width', 'imagesOffset', 'labelsOffset'].every((k) =>
        isCount((p as unknown as Record<string, unknown>)[k]),
      ) ||
      !Array.isArray(p.classNames) ||
      !p.classNames.every((c) => typeof c === 'string') ||
      typeof p.source !== 'string'
    )
      return { status: 'corrupt', reason: 'header has a malformed part' };
    const per = p.channels * p.height * p.width;
    if (
      p.imagesOffset + p.n * per > payload.length ||
      p.labelsOffset % 4 !== 0 ||
      p.labelsOffset + 4 * p.n > payload.length
    )
      return { status: 'corrupt', reason: `part ${String(p.name)} lies outside the payload` };
    const images = new Uint8Array(payload.buffer, payload.byteOffset + p.imagesOffset, p.n * per);
    const labels = new Int32Array(p.n);
    for (let i = 0; i < p.n; ++i) labels[i] = payload.readInt32LE(p.labelsOffset + 4 * i);
    if (labels.some((y) => y < 0 || y >= p.classNames.length))
      return {
        status: 'corrupt',
        reason: `part ${String(p.name)} has a label outside its ${p.classNames.length} classes`,
      };
    const ds: Dataset = {
      images,
      labels,
      n: p.n,
      channels: p.channels,
      height: p.height,
      width: p.width,
      classNames: p.classNames,
      source: p.source,
    };
    if (p.name === 'train') out.train = ds;
    else out.test = ds;
  }
  if (!out.train) return { status: 'corrupt', reason: 'has no training part' };
  return { status: 'hit', splits: out, notes: header.notes ?? [] };
}

/**
 * readCache, but the file read and the payload SHA-256 run off the main thread (libuv pool, WebCrypto),
 * so they overlap with `listing()` (e.g. stat-ing every source file) on the main thread.
 */
export async function readCacheOverlapped(file: string, listing: () => string): Promise<CacheRead> {
  const pending = (async (): Promise<{ parsed: Parsed; sha: string } | CacheRead> => {
    let buf: Buffer;
    try {
      buf = await fs.promises.readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { status: 'missing' };
      return { status: 'corrupt', reason: `cannot be read: ${(err as Error).message}` };
    }
    const parsed = parseCache(buf);
    if ('status' in parsed) return parsed;
    const digest = await crypto.webcrypto.subtle.digest('SHA-256', parsed.payload);
    return { parsed, sha: Buffer.from(digest).toString('hex') };
  })();
  pending.catch(() => undefined); // handled below; avoid an unhandled rejection while listing() runs
  let want: string;
  try {
    want = listing();
  } catch (err) {
    await pending.catch(() => undefined);
    throw err;
  }
  const r = await pending;
  if ('status' in r) return r;
  return checkParsed(r.parsed, want, r.sha);
}

/** How a load used the cache. */
export type CacheStatus = 'hit' | 'miss' | 'stale' | 'corrupt' | 'off';

export interface CachedLoadOptions {
  /** Cache folder; defaults to defaultCacheDir(). */
  cacheDir?: string;
  /** false: neither read nor write a cache. */
  cache?: boolean;
  onWarning?: (message: string) => void;
}

/**
 * `listingFn` computes the source's listing checksum; it runs while the cache file is read and hashed.
 * Returns the cached splits when the cache is current; otherwise builds them, writes the cache
 * (warning, not failing, when it cannot be written) and returns them.
 */
export async function withCache(
  source: string,
  optionsKey: string,
  listingFn: () => string,
  build: () => Promise<{ splits: DataSplits; notes: string[] }>,
  opts: CachedLoadOptions,
): Promise<{ splits: DataSplits; cache: CacheStatus; file: string | null }> {
  if (opts.cache === false) {
    listingFn();
    return { splits: (await build()).splits, cache: 'off', file: null };
  }
  const file = cacheFileFor(opts.cacheDir ?? defaultCacheDir(), source, optionsKey);
  let listing = '';
  const r = await readCacheOverlapped(file, () => (listing = listingFn()));
  if (r.status === 'hit') {
    const note = ` (cached in ${file})`;
    r.splits.train.source += note;
    if (r.splits.test) r.splits.test.source += note;
    for (const m of r.notes) opts.onWarning?.(`${m} (when ${file} was built)`);
    return { splits: r.splits, cache: 'hit', file };
  }
  if (r.status === 'stale')
    opts.onWarning?.(`cache ${file} is stale (${source} changed since it was written); rebuilding it`);
  if (r.status === 'corrupt') opts.onWarning?.(`cache ${file} is corrupt (${r.reason}); rebuilding it`);
  const { splits, notes } = await build();
  try {
    writeCache(file, listing, splits, notes);
  } catch (err) {
    opts.onWarning?.(
      `could not write the decoded cache ${file} (${err instanceof WriteError ? err.reason : (err as Error).message}); the next run decodes again. Set DFL_CACHE_DIR or --cache-dir to a writable folder`,
    );
  }
  return { splits, cache: r.status === 'missing' ? 'miss' : r.status, file };
}
