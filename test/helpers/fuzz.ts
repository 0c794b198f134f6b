// Seeded mutation fuzzing of every parser and loader. One place for the engine and the targets:
// test/unit/reliability-fuzz.test.ts runs a few hundred inputs per target in CI, and
// scripts/ci/fuzz.mjs (which imports the compiled dist-test/helpers/fuzz.js) runs 10,000+ per target
// in child processes with a hang/crash watchdog.
//
// Every input is a pure function of (seed, target, index): a finding is reproduced with
// `node scripts/ci/fuzz.mjs --targets T --seed S --start I --per-target 1`.
//
// Outcomes: 'accepted' (loaded, and the result passed the target's consistency checks),
// 'rejected' (a clean rejection: an Error that is not a TypeError/RangeError/SyntaxError/
// ReferenceError, on one line, naming the input file or option), or a crash with its reason.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { CONFIG_KEYS, resolveConfig } from '../../dist/config.js';
import { readCache } from '../../dist/data/cache.js';
import type { DataSplits } from '../../dist/data/dataset.js';
import { loadImageFolder } from '../../dist/data/images.js';
import { loadDataset } from '../../dist/data/load.js';
import { loadCheckpoint, modelFromState, readState, restoreModels, stateChecksum } from '../../dist/io/checkpoint.js';
import { decodeSafetensors } from '../../dist/io/safetensors.js';
import { train } from '../../dist/train/trainer.js';
import { cifar100File, cifar10File, coarseNames, CIFAR10_NAMES, fineNames, writeImageFolder } from './data.js';
import { syntheticSplits } from './synthetic.js';

// --- the engine ------------------------------------------------------------------------------------

/** xorshift128+-style 32-bit generator (splitmix32 seeded): fast and reproducible. */
export class Rng {
  private s: number;
  constructor(...seeds: number[]) {
    let h = 0x9e3779b9;
    for (const x of seeds) h = Math.imul(h ^ (x >>> 0), 0x85ebca6b) ^ (h >>> 13);
    this.s = h >>> 0;
  }
  next(): number {
    let z = (this.s = (this.s + 0x9e3779b9) >>> 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
  int(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
}

const INTERESTING_BYTES = [
  0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x20, 0x22, 0x2c, 0x5b, 0x7b, 0x7d, 0x5d, 0x3a, 0x30, 0x39, 0x2d, 0x2e, 0x65,
];
const INTERESTING_U32 = [
  0, 1, 2, 7, 8, 15, 16, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff,
];

/** One to four byte-level mutations: bit flips, interesting bytes, inserts, deletes, truncation, chunk copies, length fields. */
export function mutateBytes(src: Uint8Array, rng: Rng, lengthFieldOffsets: number[] = []): Buffer {
  let b = Buffer.from(src);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; ++r) {
    const n = b.length;
    switch (rng.int(9)) {
      case 0: // bit flips
      case 1: {
        if (!n) break;
        const flips = 1 + rng.int(8);
        for (let k = 0; k < flips; ++k) b[rng.int(n)] ^= 1 << rng.int(8);
        break;
      }
      case 2: // interesting byte
        if (n) b[rng.int(n)] = rng.pick(INTERESTING_BYTES);
        break;
      case 3: {
        // insert bytes
        const at = rng.int(n + 1);
        const ins = Buffer.alloc(1 + rng.int(rng.chance(0.2) ? 4096 : 16));
        for (let k = 0; k < ins.length; ++k) ins[k] = rng.chance(0.5) ? rng.pick(INTERESTING_BYTES) : rng.int(256);
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 4: {
        // delete a range
        if (!n) break;
        const at = rng.int(n);
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(n, at + 1 + rng.int(rng.chance(0.2) ? n : 16)))]);
        break;
      }
      case 5: // truncate (near the start, near the end, anywhere)
        b = b.subarray(0, rng.pick([rng.int(16), Math.max(0, n - 1 - rng.int(16)), rng.int(n + 1)]));
        break;
      case 6: {
        // copy a chunk over another place
        if (n < 2) break;
        const from = rng.int(n),
          to = rng.int(n),
          len = 1 + rng.int(Math.min(64, n - Math.max(from, to)));
        b.copy(b, to, from, from + len);
        break;
      }
      case 7: // append garbage or a duplicate of the tail
        b = Buffer.concat([
          b,
          rng.chance(0.5)
            ? b.subarray(Math.max(0, n - 1 - rng.int(4096)))
            : Buffer.alloc(1 + rng.int(64), rng.int(256)),
        ]);
        break;
      case 8: {
        // a length/count field: the known ones, else any aligned word
        const at =
          lengthFieldOffsets.length && rng.chance(0.8)
            ? rng.pick(lengthFieldOffsets)
            : rng.int(Math.max(1, n - 3)) & ~3;
        if (at + 4 > b.length) break;
        const old = b.readUInt32LE(at);
        const v =
          rng.pick([...INTERESTING_U32, old + 1, old - 1, old * 2, n, n - at, old + 8, old - 8, rng.next()]) >>> 0;
        b.writeUInt32LE(v, at);
        if (rng.chance(0.3) && at + 8 <= b.length) b.writeUInt32LE(rng.pick([0, 1, 0x7fffffff, 0xffffffff]), at + 4);
        break;
      }
    }
  }
  return b;
}

const WEIRD_VALUES: unknown[] = [
  null,
  true,
  false,
  0,
  -0,
  -1,
  1,
  2,
  0.5,
  -0.5,
  1e-300,
  1e300,
  -1e300,
  2 ** 53,
  2 ** 53 + 2,
  -(2 ** 31),
  2 ** 32,
  1.5,
  3.999999,
  '',
  ' ',
  '0',
  '1',
  '-1',
  '1e400',
  'NaN',
  'Infinity',
  'true',
  '../../../etc/passwd',
  '/dev/zero',
  'C:\\x',
  '\u0000',
  '\ud800',
  'a'.repeat(10000),
  [],
  [1],
  [[]],
  ['x'],
  {},
  { a: 1 },
  { __proto__: { polluted: 1 } },
  [1, 2, 3, 1e9],
];

/** A structural mutation of parsed JSON: retype, delete, add, duplicate, deep-nest, or tweak a number. */
export function mutateJsonValue(v: unknown, rng: Rng, depth = 0): unknown {
  const isObj = typeof v === 'object' && v !== null;
  if (isObj && depth < 6 && rng.chance(0.75)) {
    const entries = Array.isArray(v)
      ? v.map((x, i) => [String(i), x] as [string, unknown])
      : Object.entries(v as Record<string, unknown>);
    if (entries.length && rng.chance(0.8)) {
      const k = rng.int(entries.length);
      const op = rng.int(10);
      if (op === 0) entries.splice(k, 1);
      else if (op === 1)
        entries.push(
          rng.pick([...entries.map((e) => e[0]), '__proto__', 'constructor', 'toString', 'extra', '']) === ''
            ? ['', 1]
            : [
                rng.pick(['__proto__', 'constructor', 'x', entries[k][0] + 'x', 'hasOwnProperty']),
                rng.pick(WEIRD_VALUES),
              ],
        );
      else entries[k] = [entries[k][0], mutateJsonValue(entries[k][1], rng, depth + 1)];
    } else {
      entries.push([rng.pick(['__proto__', 'constructor', 'x', '0', 'hasOwnProperty']), rng.pick(WEIRD_VALUES)]);
    }
    if (Array.isArray(v)) return entries.map((e) => e[1]);
    const o: Record<string, unknown> = {};
    for (const [k, x] of entries)
      Object.defineProperty(o, k, { value: x, enumerable: true, writable: true, configurable: true });
    return o;
  }
  if (typeof v === 'number' && rng.chance(0.6)) {
    return rng.pick([
      v + 1,
      v - 1,
      -v,
      v * 2,
      v / 2,
      v * 1e6,
      Math.floor(v) + 0.5,
      0,
      -1,
      2 ** 31,
      2 ** 53,
      1e308,
      String(v),
    ]);
  }
  if (typeof v === 'string' && rng.chance(0.5)) {
    return rng.pick([v + 'x', v.slice(1), v.toUpperCase(), v + v, '', Number(v) || 1, v.replace(/./, '\u0000')]);
  }
  if (rng.chance(0.1)) {
    let deep: unknown = 1;
    for (let k = 0; k < 2000; ++k) deep = [deep];
    return deep;
  }
  return rng.pick(WEIRD_VALUES);
}

/** Mutated JSON text: mostly structural (parse, mutate, stringify), sometimes byte-level. */
export function mutateJsonText(text: string, rng: Rng): Buffer {
  if (rng.chance(0.7)) {
    try {
      const v = mutateJsonValue(JSON.parse(text), rng);
      const out = JSON.stringify(v, null, rng.chance(0.5) ? 1 : undefined);
      if (out !== undefined) return Buffer.from(out, 'utf8');
    } catch {
      // fall through to bytes
    }
  }
  return mutateBytes(Buffer.from(text, 'utf8'), rng);
}

export type Outcome = { kind: 'accepted' } | { kind: 'rejected'; message: string } | { kind: 'crash'; message: string };
const ACCEPTED: Outcome = { kind: 'accepted' };

/** A thrown value judged: a clean rejection names one of `names` on one line; anything else is a crash. */
export function judge(err: unknown, names: string[]): Outcome {
  if (!(err instanceof Error)) return { kind: 'crash', message: `threw a non-Error: ${String(err)}` };
  const ctor = err.constructor?.name ?? err.name;
  if (
    ['TypeError', 'RangeError', 'SyntaxError', 'ReferenceError', 'AssertionError'].includes(ctor) ||
    err.name === 'AssertionError'
  )
    return { kind: 'crash', message: `${ctor}: ${err.message.split('\n')[0]}` };
  if (err.message.includes('\n')) return { kind: 'crash', message: `multi-line error: ${err.message.slice(0, 200)}` };
  if (!names.some((n) => err.message.includes(n)))
    return { kind: 'crash', message: `error names none of [${names.join(', ')}]: ${err.message.slice(0, 300)}` };
  return { kind: 'rejected', message: err.message };
}

async function attempt(names: string[], body: () => Promise<void> | void): Promise<Outcome> {
  try {
    await body();
    return ACCEPTED;
  } catch (err) {
    return judge(err, names);
  }
}

export interface FuzzTarget {
  name: string;
  /** Builds the valid inputs (in a temp folder). */
  setup(): Promise<void>;
  /** Input `i`: mutate, load, judge, restore. */
  run(rng: Rng, i: number): Promise<Outcome>;
  cleanup(): void;
}

const tmpDir = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `dfl-fuzz-${name}-`));

function checkSplits(s: DataSplits, classes: number): void {
  for (const ds of [s.train, s.test]) {
    if (!ds) continue;
    assert.equal(ds.images.length, ds.n * ds.channels * ds.height * ds.width, 'images length matches n*C*H*W');
    assert.equal(ds.labels.length, ds.n);
    assert.equal(ds.classNames.length, classes);
    for (const y of ds.labels) assert.ok(y >= 0 && y < ds.classNames.length, `label ${y} in range`);
  }
}

// --- CIFAR binary ----------------------------------------------------------------------------------

function cifarTarget(kind: 'cifar10' | 'cifar100'): FuzzTarget {
  let root = '',
    dir = '';
  let originals = new Map<string, Buffer>();
  const recordSize = kind === 'cifar10' ? 3073 : 3074;
  return {
    name: kind,
    async setup() {
      root = tmpDir(kind);
      dir = path.join(root, kind === 'cifar10' ? 'cifar-10-batches-bin' : 'cifar-100-binary');
      fs.mkdirSync(dir);
      const files: [string, Buffer][] =
        kind === 'cifar10'
          ? [
              ...[1, 2, 3, 4, 5].map(
                (b) => [`data_batch_${b}.bin`, cifar10File([b % 10, (b + 3) % 10], b * 10)] as [string, Buffer],
              ),
              ['test_batch.bin', cifar10File([1, 2, 3], 100)],
              ['batches.meta.txt', Buffer.from(CIFAR10_NAMES.join('\n') + '\n\n')],
            ]
          : [
              ['train.bin', cifar100File([1, 2, 19, 0], [21, 42, 99, 0], 0)],
              ['test.bin', cifar100File([3, 4], [23, 44], 50)],
              ['fine_label_names.txt', Buffer.from(fineNames.join('\n') + '\n')],
              ['coarse_label_names.txt', Buffer.from(coarseNames.join('\n') + '\n')],
            ];
      originals = new Map(files);
      for (const [f, b] of files) fs.writeFileSync(path.join(dir, f), b);
    },
    async run(rng) {
      const name = rng.pick([...originals.keys()]);
      const file = path.join(dir, name);
      const orig = originals.get(name)!;
      const text = name.endsWith('.txt');
      const labels = kind === 'cifar100' && rng.chance(0.5) ? 'coarse' : 'fine';
      const classes = kind === 'cifar10' ? 10 : labels === 'coarse' ? 20 : 100;
      if (rng.chance(0.04)) fs.rmSync(file);
      else if (text && rng.chance(0.5)) {
        const lines = orig.toString('utf8').split('\n');
        const k = rng.int(lines.length);
        const op = rng.int(4);
        if (op === 0) lines.splice(k, 1);
        else if (op === 1) lines.splice(k, 0, rng.pick(['', 'x', lines[k], '\u0000', ' \t ']));
        else if (op === 2) lines[k] = lines[(k + 1) % lines.length];
        else lines[k] = lines[k] + rng.pick(['\r', ' ', '\u00e9', '\ufffd']);
        fs.writeFileSync(file, lines.join('\n'));
      } else if (!text && rng.chance(0.3)) {
        // record-structure mutations: label bytes, whole-record truncation/duplication
        const b = Buffer.from(orig);
        const records = b.length / recordSize;
        const op = rng.int(3);
        if (op === 0)
          b[rng.int(records) * recordSize + (kind === 'cifar100' ? rng.int(2) : 0)] = rng.pick([
            9, 10, 19, 20, 99, 100, 255,
          ]);
        const out =
          op === 1
            ? b.subarray(0, recordSize * rng.int(records + 1) + rng.pick([0, 0, 1, -1]))
            : op === 2
              ? Buffer.concat([b, b.subarray(0, recordSize * (1 + rng.int(records)))])
              : b;
        fs.writeFileSync(file, out);
      } else fs.writeFileSync(file, mutateBytes(orig, rng));
      try {
        return await attempt([file, dir, root], async () => {
          const r = await loadDataset(root, { labels, cache: false });
          try {
            checkSplits(r.splits, classes);
          } catch (e) {
            throw Object.assign(new Error(`accepted inconsistent data: ${(e as Error).message}`), {
              name: 'AssertionError',
            });
          }
        });
      } finally {
        fs.writeFileSync(file, orig);
      }
    },
    cleanup() {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

// --- image folder + decoded cache --------------------------------------------------------------------

function sameSplits(a: DataSplits, b: DataSplits): boolean {
  const eq = (x: DataSplits['train'] | null, y: DataSplits['train'] | null) =>
    x === y ||
    (!!x &&
      !!y &&
      x.n === y.n &&
      x.channels === y.channels &&
      x.height === y.height &&
      x.width === y.width &&
      Buffer.compare(
        Buffer.from(x.images.buffer, x.images.byteOffset, x.images.byteLength),
        Buffer.from(y.images.buffer, y.images.byteOffset, y.images.byteLength),
      ) === 0 &&
      x.labels.every((v, i) => v === y.labels[i]) &&
      JSON.stringify(x.classNames) === JSON.stringify(y.classNames));
  return eq(a.train, b.train) && eq(a.test, b.test);
}

function imagesTarget(): FuzzTarget {
  let root = '',
    cacheDir = '',
    cacheFile = '',
    cacheBytes = Buffer.alloc(0),
    listing = '';
  let images: string[] = [];
  let reference: DataSplits | null = null;
  const opts = () => ({ cacheDir, testSplit: 0 });
  const rebuild = async () => {
    for (const f of fs.readdirSync(cacheDir)) fs.rmSync(path.join(cacheDir, f));
    const r = await loadImageFolder(root, opts());
    reference = r.splits;
    cacheFile = r.cacheFile!;
    cacheBytes = fs.readFileSync(cacheFile);
    const hlen = cacheBytes.readUInt32LE(12);
    listing = JSON.parse(cacheBytes.toString('utf8', 16, 16 + hlen)).listing;
  };
  return {
    name: 'images+cache',
    async setup() {
      root = tmpDir('images');
      cacheDir = tmpDir('images-cache');
      images = (await writeImageFolder(root, ['cat', 'dog'], 3, { w: 6, h: 6, fmt: 'png' })).flat();
      await rebuild();
    },
    async run(rng) {
      if (rng.chance(0.9)) {
        // the decoded cache: mostly read directly (fast), sometimes through the loader (rebuilds)
        fs.writeFileSync(cacheFile, mutateBytes(cacheBytes, rng, [8, 12, 16]));
        try {
          if (rng.chance(0.85)) {
            const r = readCache(cacheFile, listing);
            if (r.status === 'hit')
              return sameSplits(r.splits, reference!)
                ? ACCEPTED
                : { kind: 'crash', message: 'a mutated cache was accepted with different data' };
            if (r.status === 'missing') return { kind: 'crash', message: 'an existing cache read as missing' };
            return { kind: 'rejected', message: `${r.status}${'reason' in r ? `: ${r.reason}` : ''}` };
          }
          return await attempt([cacheFile, root], async () => {
            const r = await loadImageFolder(root, opts());
            if (!sameSplits(r.splits, reference!))
              throw Object.assign(new Error('loaded data differs from the source'), { name: 'AssertionError' });
          });
        } finally {
          fs.writeFileSync(cacheFile, cacheBytes);
        }
      }
      // an image file (changes the listing: the cache is stale and the folder is decoded again)
      const file = rng.pick(images);
      const orig = fs.readFileSync(file);
      fs.writeFileSync(file, mutateBytes(orig, rng));
      try {
        return await attempt([file], async () => {
          const r = await loadImageFolder(root, { ...opts(), skipBadFiles: rng.chance(0.2) });
          checkSplits(r.splits, 2);
        });
      } finally {
        fs.writeFileSync(file, orig);
        await rebuild();
      }
    },
    cleanup() {
      fs.rmSync(root, { recursive: true, force: true });
      fs.rmSync(cacheDir, { recursive: true, force: true });
    },
  };
}

// --- checkpoints (state.json + safetensors) ----------------------------------------------------------

/** Structured safetensors mutations: header length, offsets, shapes, dtypes, entries. */
export function mutateSafetensors(buf: Buffer, rng: Rng): Buffer {
  const hlen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + hlen)) as Record<
    string,
    { dtype: unknown; shape: unknown; data_offsets: unknown }
  >;
  let data = buf.subarray(8 + hlen);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const name = rng.pick(names);
  const e = header[name];
  const offs = e.data_offsets as number[];
  const shape = e.shape as number[];
  switch (rng.int(8)) {
    case 0:
      e.data_offsets = [offs[0] + rng.pick([-4, -1, 1, 4, 8, data.length]), offs[1]];
      break;
    case 1:
      e.data_offsets = [offs[0], offs[1] + rng.pick([-4, -1, 1, 4, data.length, 2 ** 53])];
      break;
    case 2:
      e.data_offsets = rng.pick([
        [offs[1], offs[0]],
        [0, offs[1] - offs[0]],
        [-4, offs[1]],
        [offs[0], 1e300],
        [String(offs[0]), offs[1]],
        [offs[0]],
        null,
        [0.5, offs[1]],
      ]);
      break;
    case 3:
      e.shape = rng.pick([
        [...shape, 1],
        [...shape, 0],
        shape.slice(1),
        shape.map((d) => d * 2),
        [-1],
        [2 ** 31, 2 ** 31],
        [1.5],
        'x',
        [shape.reduce((a, b) => a * b, 1)],
      ]);
      break;
    case 4:
      e.dtype = rng.pick(['F16', 'I64', 'F32', 'F64', 'BOOL', 123, null]);
      break;
    case 5:
      delete header[name];
      break;
    case 6:
      header[rng.pick(['__metadata__', name + 'x', '__proto__'])] = rng.pick([
        { a: 1 },
        { a: 'b' },
        e,
        null,
        [],
      ]) as never;
      break;
    case 7:
      data = rng.chance(0.5)
        ? data.subarray(0, rng.int(data.length))
        : Buffer.concat([data, Buffer.alloc(1 + rng.int(16))]);
      break;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(8 + json.length + data.length);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  data.copy(out, 8 + json.length);
  if (rng.chance(0.25))
    out.writeBigUInt64LE(
      rng.pick([
        0n,
        1n,
        BigInt(json.length + 1),
        BigInt(json.length - 1),
        BigInt(out.length),
        2n ** 63n,
        2n ** 64n - 1n,
        100n * 1024n * 1024n,
      ]),
      0,
    );
  return out;
}

function checkpointTarget(): FuzzTarget {
  let out = '',
    dir = '';
  let originals = new Map<string, Buffer>();
  let stateText = '';
  const sha = async (b: Uint8Array) => (await import('node:crypto')).createHash('sha256').update(b).digest('hex');
  /** Rewrites state.json's checksums for edited files, as a hostile (not a corrupted) checkpoint would. */
  const forge = async (state: Record<string, unknown>, edited: Map<string, Buffer>) => {
    const hashes = state.sha256 as Record<string, string> | undefined;
    if (hashes && typeof hashes === 'object') for (const [n, b] of edited) hashes[n] = await sha(b);
    state.state_sha256 = stateChecksum(state);
    return JSON.stringify(state, null, 1);
  };
  return {
    name: 'checkpoint',
    async setup() {
      out = tmpDir('ckpt');
      await train({
        model: 'vgg8',
        width: 0.125,
        batchSize: 16,
        epochs: 2,
        teachers: 2,
        resetCycle: 1,
        threads: 1,
        seed: 1,
        dataset: syntheticSplits(48, 8, 3),
        out,
      }).summary;
      dir = path.join(out, 'checkpoint');
      stateText = fs.readFileSync(path.join(dir, 'state.json'), 'utf8');
      originals = new Map(fs.readdirSync(dir).map((f) => [f, fs.readFileSync(path.join(dir, f))]));
    },
    async run(rng) {
      const mode = rng.int(10);
      const state = JSON.parse(stateText);
      const stFiles = [state.files.model, state.files.optim, state.files.teachers] as string[];
      if (mode <= 3) {
        // the safetensors decoder alone, on hostile bytes
        const name = rng.pick(stFiles);
        const b = rng.chance(0.5)
          ? mutateSafetensors(originals.get(name)!, rng)
          : mutateBytes(originals.get(name)!, rng, [0, 4]);
        return attempt([name], () => {
          const r = decodeSafetensors(b, name);
          for (const [k, t] of r.tensors) {
            const count = t.shape.reduce((a, c) => a * c, 1);
            if (t.data.length !== count)
              throw Object.assign(new Error(`${k}: ${t.data.length} values for shape [${t.shape}]`), {
                name: 'AssertionError',
              });
          }
        });
      }
      const edited = new Map<string, Buffer>();
      let names: string[];
      if (mode <= 6) {
        // state.json: corrupted (checksum catches it) or forged (checksum recomputed: the validation behind it)
        const text = mutateJsonText(stateText, rng);
        let written: string | Buffer = text;
        if (rng.chance(0.6)) {
          try {
            const v = JSON.parse(text.toString('utf8'));
            if (typeof v === 'object' && v !== null && !Array.isArray(v)) written = await forge(v, edited);
          } catch {
            // not JSON: written as is
          }
        }
        fs.writeFileSync(path.join(dir, 'state.json'), written);
        // an edited state can show as a mismatch in the file it names (e.g. a spec vs. its weights)
        names = [path.join(dir, 'state.json'), ...stFiles.map((f) => path.join(dir, f))];
      } else {
        // a weights file: corrupted (sha256 mismatch) or forged (sha256 updated: the decoder and shape checks behind it)
        const name = rng.pick(stFiles);
        const b = rng.chance(0.6)
          ? mutateSafetensors(originals.get(name)!, rng)
          : mutateBytes(originals.get(name)!, rng, [0, 4]);
        fs.writeFileSync(path.join(dir, name), b);
        edited.set(name, b);
        if (rng.chance(0.7)) fs.writeFileSync(path.join(dir, 'state.json'), await forge(state, edited));
        names = [path.join(dir, name), path.join(dir, 'state.json')];
      }
      try {
        return await attempt(names, async () => {
          if (rng.chance(0.5)) {
            const c = await loadCheckpoint(out);
            try {
              if (!c.model.getParams().every(Number.isFinite))
                throw Object.assign(new Error('accepted non-finite weights'), { name: 'AssertionError' });
            } finally {
              c.model.dispose();
            }
          } else {
            // the resume path: state, student (weights + momentum) and teachers
            const st = readState(dir);
            const student = modelFromState(dir, st);
            try {
              for (const t of restoreModels(dir, st, student, 'cpu').values()) t.dispose();
            } finally {
              student.dispose();
            }
          }
        });
      } finally {
        for (const [f, b] of originals) fs.writeFileSync(path.join(dir, f), b);
        for (const f of fs.readdirSync(dir)) if (!originals.has(f)) fs.rmSync(path.join(dir, f), { force: true });
      }
    },
    cleanup() {
      fs.rmSync(out, { recursive: true, force: true });
    },
  };
}

// --- config files and CLI values ---------------------------------------------------------------------

const BASE_CONFIG = {
  model: 'vgg8',
  width: 0.5,
  epochs: 10,
  batchSize: 64,
  lr: 0.1,
  milestones: [3, 6],
  schedule: 'step',
  method: 'dfl',
  teachers: 3,
  augment: true,
  'val-size': 0.1,
  seed: 7,
  threads: 1,
  labels: 'fine',
};

interface CliModule {
  readConfigFile(file: string): Record<string, unknown>;
  resolveTrainConfig(
    file: Record<string, unknown> | undefined,
    flags: Record<string, unknown>,
    configFile?: string,
  ): unknown;
  trainOptions(): Record<string, unknown>;
  flagsToConfig(argv: Record<string, unknown>): Record<string, unknown>;
}

async function cliModule(): Promise<CliModule | null> {
  try {
    return (await import('../../dist/cli/train-flags.js')) as unknown as CliModule;
  } catch {
    return null;
  }
}

/** An accepted config must be valid, complete, and made only of known keys (no silent typos). */
function checkConfig(cfg: unknown, layers: Record<string, unknown>[]): void {
  const again = resolveConfig(cfg as Record<string, unknown>);
  assert.deepEqual(again, cfg, 'an accepted config resolves to itself');
  for (const layer of layers)
    for (const k of Object.keys(layer))
      assert.ok(Object.hasOwn(cfg as object, k), `unknown key '${k}' was accepted silently`);
}

function configTarget(): FuzzTarget {
  let dir = '';
  let cli: CliModule | null = null;
  return {
    name: 'config-file',
    async setup() {
      dir = tmpDir('config');
      cli = await cliModule();
    },
    async run(rng, i) {
      const file = path.join(dir, `c${i % 8}.json`);
      fs.writeFileSync(file, mutateJsonText(JSON.stringify(BASE_CONFIG), rng));
      return attempt([file, 'for '], () => {
        if (cli) {
          const layer = cli.readConfigFile(file);
          const cfg = cli.resolveTrainConfig(layer, {}, file);
          checkConfig(cfg, [layer]);
        } else {
          let obj: Record<string, unknown>;
          try {
            obj = JSON.parse(fs.readFileSync(file, 'utf8'));
          } catch (e) {
            throw new Error(`${file}: ${(e as Error).message}`);
          }
          checkConfig(resolveConfig(obj), [obj]);
        }
      });
    },
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const VALID_VALUES: Record<string, string[]> = {
  lr: ['0.1'],
  epochs: ['3'],
  batchSize: ['32'],
  width: ['0.5'],
  model: ['vgg8'],
  method: ['dfl', 'base'],
  milestones: ['3', '3,6'],
  seed: ['1'],
  threads: ['1'],
  valSize: ['0.2'],
  labels: ['coarse'],
  imageSize: ['32'],
  augment: ['true'],
  teachers: ['2'],
  temperature: ['4'],
  schedule: ['cosine'],
};
const CLI_VALUES = [
  '',
  ' ',
  '0',
  '-0',
  '-1',
  '1e400',
  '-1e400',
  'NaN',
  'Infinity',
  '0x10',
  '1_000',
  '1e3',
  ' 5 ',
  '5abc',
  '1,2,,3',
  '3,-1',
  'true',
  'false',
  'null',
  'undefined',
  '[]',
  '{}',
  '--',
  '-',
  '--lr',
  '9'.repeat(400),
  '\u0000',
  '\u00e9',
  '0.1.2',
  '.5',
  '5.',
  '+5',
  '0b11',
  '1/2',
  'vgg8',
  'cuda',
  'fine,coarse',
];

function cliTarget(): FuzzTarget {
  let cli: CliModule | null = null;
  let yargs: ((argv: string[]) => { options(o: unknown): unknown }) | null = null;
  return {
    name: 'cli-values',
    async setup() {
      cli = await cliModule();
      if (cli) yargs = ((await import('yargs')) as unknown as { default: typeof yargs }).default;
    },
    async run(rng) {
      const keys = CONFIG_KEYS.filter((k) => k !== 'out' && k !== 'data' && k !== 'cacheDir');
      const argv: string[] = [];
      const used: string[] = [];
      const count = 1 + rng.int(3);
      for (let k = 0; k < count; ++k) {
        const key = rng.pick(keys);
        used.push(key);
        const valid = VALID_VALUES[key] ?? ['1'];
        let value = rng.chance(0.5)
          ? rng.pick(CLI_VALUES)
          : mutateBytes(Buffer.from(rng.pick(valid)), rng).toString('utf8');
        if (rng.chance(0.1)) value = rng.pick(valid);
        const flag = rng.chance(0.05) ? `--no-${kebab(key)}` : `--${kebab(key)}`;
        if (rng.chance(0.2)) argv.push(`${flag}=${value}`);
        else if (rng.chance(0.05)) argv.push(flag);
        else argv.push(flag, value);
      }
      // a clean rejection names the flag, or the stray token itself ("Unknown argument: 5abc")
      const names = [
        ...used.map(kebab),
        ...used,
        ...argv.map((a) => a.replace(/^-+/, '').split('=')[0]).filter((a) => a.trim().length > 0),
      ];
      // yargs strict mode names stray tokens itself: "Unknown argument: 5abc", "Unknown arguments: "", NaN"
      return attempt([...names, 'Unknown argument: ', 'Unknown arguments: '], () => {
        if (cli && yargs) {
          let parsed: Record<string, unknown>;
          const y = yargs(argv) as unknown as {
            options(o: unknown): typeof y;
            strict(): typeof y;
            exitProcess(b: boolean): typeof y;
            fail(f: (m: string, e: Error) => void): typeof y;
            parseSync(): Record<string, unknown>;
            help(b: boolean): typeof y;
            version(b: boolean): typeof y;
          };
          try {
            parsed = y
              .options(cli.trainOptions())
              .strict()
              .help(false)
              .version(false)
              .exitProcess(false)
              .fail((m, e) => {
                throw e ?? new Error(m);
              })
              .parseSync();
          } catch (e) {
            // yargs' own messages ("Not enough arguments following: lr") name the flag; CLI prints them as usage errors
            throw e instanceof Error ? new Error(e.message.split('\n')[0]) : e;
          }
          const flags = cli.flagsToConfig(parsed);
          checkConfig(cli.resolveTrainConfig(undefined, flags), [flags]);
        } else {
          const layer: Record<string, unknown> = {};
          for (let k = 0; k < argv.length; ++k) if (argv[k].startsWith('--')) layer[argv[k].slice(2)] = argv[k + 1];
          checkConfig(resolveConfig(layer), [layer]);
        }
      });
    },
    cleanup() {},
  };
}

export const TARGETS: Record<string, () => FuzzTarget> = {
  cifar10: () => cifarTarget('cifar10'),
  cifar100: () => cifarTarget('cifar100'),
  'images+cache': imagesTarget,
  checkpoint: checkpointTarget,
  'config-file': configTarget,
  'cli-values': cliTarget,
};

export interface FuzzResult {
  target: string;
  inputs: number;
  accepted: number;
  rejected: number;
  crashes: number;
  /** Seconds of the slowest input. */
  slowest: number;
  findings: { index: number; message: string }[];
}

/** Runs inputs [start, start + count) of a target; `onInput` is told before each one (watchdogs). */
export async function fuzzTarget(
  name: string,
  opts: { seed: number; count: number; start?: number; onInput?: (i: number) => void },
): Promise<FuzzResult> {
  const make = TARGETS[name];
  if (!make) throw new Error(`unknown fuzz target '${name}' (known: ${Object.keys(TARGETS).join(', ')})`);
  const t = make();
  const res: FuzzResult = { target: name, inputs: 0, accepted: 0, rejected: 0, crashes: 0, slowest: 0, findings: [] };
  const nameSeed = [...name].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261);
  await t.setup();
  try {
    const start = opts.start ?? 0;
    for (let i = start; i < start + opts.count; ++i) {
      opts.onInput?.(i);
      const t0 = performance.now();
      let o: Outcome;
      try {
        o = await t.run(new Rng(opts.seed, nameSeed, i), i);
      } catch (err) {
        o = { kind: 'crash', message: `the harness failed: ${(err as Error)?.stack ?? String(err)}` };
      }
      const dt = (performance.now() - t0) / 1000;
      res.slowest = Math.max(res.slowest, dt);
      if (dt > 5 && o.kind !== 'crash') o = { kind: 'crash', message: `hang: input took ${dt.toFixed(1)} s` };
      ++res.inputs;
      if (o.kind === 'accepted') ++res.accepted;
      else if (o.kind === 'rejected') ++res.rejected;
      else {
        ++res.crashes;
        if (res.findings.length < 50) res.findings.push({ index: i, message: o.message });
      }
    }
  } finally {
    t.cleanup();
  }
  return res;
}
