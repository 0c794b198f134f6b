#!/usr/bin/env node
// Data-loading benchmark: images/s for each source, printed as a table.
//
//   npm run build:ts && node scripts/bench/bench-data.mjs [--images 5000] [--cifar-records 60000] [--batch 128]
//
//   cifar10-bin        the CIFAR-10 binary loader on files written to a temp folder (all 6 files by default)
//   image folder       a folder of CIFAR-10 JPEGs (--images of them, from ../shared/datasets/cifar10-jpeg.tar.gz):
//                      first load (decode with sharp + write the cache) and cached load
//   bundled sample     data/cifar10-sample.dfls: first load (decode + cache) and cached load
//   gather             epochOrder + gatherBatch over the sample's training split (uint8 batches)
//   gather+augment     the same + native augmentBatch (random crop with padding 4, flip, normalise)
//   gather+normalize   the same + native normalizeBatch
// The native rows need the built addon (npm run build:native); they are skipped without it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const argv = process.argv.slice(2);
const opt = (name, def) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : def);
const nImages = opt('--images', 5000);
const cifarRecords = opt('--cifar-records', 60000);
const B = opt('--batch', 128);

const data = await import(path.join(root, 'dist', 'data', 'index.js'));
let binding = null;
try {
  binding = (await import(path.join(root, 'dist', 'binding.js'))).loadBinding();
  if (typeof binding.augmentBatch !== 'function') binding = null;
} catch (err) {
  console.error(`(native addon not loaded: ${err.message.split('\n')[0]}; the native rows are skipped)`);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-bench-data-'));
const rows = [];
const row = (source, what, n, ms, note = '') => {
  rows.push({ source, what, n, ms, rate: n / (ms / 1000), note });
  console.error(`  ${source} / ${what}: ${n} images in ${ms.toFixed(0)} ms`);
};
const time = async (fn) => {
  const t = performance.now();
  const r = await fn();
  return [r, performance.now() - t];
};

try {
  // --- CIFAR-10 binary -----------------------------------------------------------------------
  {
    const dir = path.join(tmp, 'cifar-10-batches-bin');
    fs.mkdirSync(dir);
    const perFile = Math.ceil(cifarRecords / 6);
    const names = [
      'data_batch_1.bin',
      'data_batch_2.bin',
      'data_batch_3.bin',
      'data_batch_4.bin',
      'data_batch_5.bin',
      'test_batch.bin',
    ];
    for (const f of names) {
      const buf = Buffer.alloc(perFile * 3073);
      for (let r = 0; r < perFile; ++r) {
        buf[r * 3073] = r % 10;
        for (let j = 1; j < 3073; j += 61) buf[r * 3073 + j] = (r * j) & 0xff;
      }
      fs.writeFileSync(path.join(dir, f), buf);
    }
    fs.writeFileSync(path.join(dir, 'batches.meta.txt'), data.CIFAR10_CLASSES.join('\n'));
    const [s, ms] = await time(() => data.loadData(dir));
    row(
      'cifar10-bin',
      'load (read + check + copy)',
      s.train.n + s.test.n,
      ms,
      `${(((s.train.n + s.test.n) * 3073) / 1e6).toFixed(0)} MB of files`,
    );
    const [, msStats] = await time(() => data.channelStats(s.train));
    row('cifar10-bin', 'channelStats (train)', s.train.n, msStats);
  }

  // --- image folder --------------------------------------------------------------------------
  const archive = path.resolve(root, '../shared/datasets/cifar10-jpeg.tar.gz');
  if (fs.existsSync(archive)) {
    const x = path.join(tmp, 'x');
    fs.mkdirSync(x);
    execFileSync('tar', ['-xzf', archive, '-C', x]);
    const folder = path.join(tmp, 'folder');
    const classes = fs.readdirSync(path.join(x, 'train')).sort();
    const per = Math.ceil(nImages / classes.length);
    for (const [split, k] of [
      ['train', per],
      ['test', Math.ceil(per / 5)],
    ]) {
      for (const c of classes) {
        fs.mkdirSync(path.join(folder, split, c), { recursive: true });
        for (const f of fs
          .readdirSync(path.join(x, split, c))
          .sort()
          .slice(0, k))
          fs.copyFileSync(path.join(x, split, c, f), path.join(folder, split, c, f));
      }
    }
    fs.rmSync(x, { recursive: true, force: true });
    const cacheDir = path.join(tmp, 'cache-folder');
    const [r1, ms1] = await time(() => data.loadDataset(folder, { cacheDir }));
    const n = r1.splits.train.n + r1.splits.test.n;
    row(
      'image folder (JPEG)',
      `first load (sharp decode + cache write) [${r1.cache}]`,
      n,
      ms1,
      `sharp ${os.cpus().length} cpu(s)`,
    );
    const [r2, ms2] = await time(() => data.loadDataset(folder, { cacheDir }));
    row('image folder (JPEG)', `cached load (stat listing + read + sha256) [${r2.cache}]`, n, ms2);
  } else {
    console.error(`(${archive} not found: image-folder rows skipped)`);
  }

  // --- bundled sample ------------------------------------------------------------------------
  const cacheDir = path.join(tmp, 'cache-sample');
  const [s1, ms1] = await time(() => data.loadDataset(undefined, { cacheDir }));
  const ns = s1.splits.train.n + s1.splits.test.n;
  row(
    'bundled sample',
    `first load (decode + cache write) [${s1.cache}]`,
    ns,
    ms1,
    `${fs.statSync(data.SAMPLE_FILE).size} B file`,
  );
  const [s2, ms2] = await time(() => data.loadDataset(undefined, { cacheDir }));
  row('bundled sample', `cached load [${s2.cache}]`, ns, ms2);

  // --- batches -------------------------------------------------------------------------------
  const ds = s2.splits.train;
  const per = ds.channels * ds.height * ds.width;
  const images = new Uint8Array(B * per);
  const labels = new Int32Array(B);
  const out = new Float32Array(B * per);
  const st = data.channelStats(ds);
  const mean = Float32Array.from(st.mean),
    std = Float32Array.from(st.std);
  const epochs = 3;
  const runEpochs = (mode) => {
    let count = 0;
    for (let e = 1; e <= epochs; ++e) {
      const order = data.epochOrder(ds.n, 1, e);
      for (let i = 0; i + B <= ds.n; i += B) {
        data.gatherBatch(ds, order.subarray(i, i + B), images, labels);
        if (mode === 'augment')
          binding.augmentBatch(out, images, B, ds.channels, ds.height, ds.width, 4, true, mean, std, e * 100003 + i);
        else if (mode === 'normalize')
          binding.normalizeBatch(out, images, B, ds.channels, ds.height, ds.width, mean, std);
        count += B;
      }
    }
    return count;
  };
  runEpochs('gather'); // warm-up
  let [c, ms] = await time(() => runEpochs('gather'));
  row(`batches ${B}x3x32x32`, 'epochOrder + gatherBatch (uint8)', c, ms);
  if (binding) {
    runEpochs('augment');
    [c, ms] = await time(() => runEpochs('augment'));
    row(
      `batches ${B}x3x32x32`,
      `gather + native augmentBatch (pad 4, flip; ${binding.getThreads?.() ?? '?'} threads)`,
      c,
      ms,
    );
    [c, ms] = await time(() => runEpochs('normalize'));
    row(`batches ${B}x3x32x32`, 'gather + native normalizeBatch', c, ms);
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}

const fmt = (x) => Math.round(x).toLocaleString('en-US');
const head = ['source', 'what', 'images', 'ms', 'images/s', 'note'];
const body = rows.map((r) => [r.source, r.what, fmt(r.n), fmt(r.ms), fmt(r.rate), r.note]);
const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
const line = (cells) =>
  '| ' + cells.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(w[i]) : c.padEnd(w[i]))).join(' | ') + ' |';
console.log(
  `\ndfl-native data benchmark — ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}`,
);
console.log(line(head));
console.log('|' + w.map((n, i) => (i >= 2 && i <= 4 ? '-'.repeat(n + 1) + ':' : '-'.repeat(n + 2))).join('|') + '|');
for (const b of body) console.log(line(b));
