#!/usr/bin/env node
// Dumps an image folder as dfl-native decodes it (sharp) plus dfl-native's seeded stratified
// validation splits (val-size 0.1, seeds 0-9), so scripts/study/torch_recipe.py trains on the same
// pixels and the same 45k/5k split:
//   node scripts/study/dump-data.mjs /work/data/cifar10-jpeg /work/data/dump
// Writes {train,test}_images.u8 (N,C,H,W), {train,test}_labels.i32, split_seed<k>_{train,val}.i32, meta.json.
import fs from 'node:fs';
import path from 'node:path';

import { loadData } from '../../dist/index.js';
import { stratifiedSplit } from '../../dist/data/split.js';
import { deriveSeed } from '../../dist/util/seed.js';

const [data, out] = process.argv.slice(2);
if (!data || !out) {
  console.error('usage: node scripts/study/dump-data.mjs IMAGE_FOLDER OUT_DIR');
  process.exit(2);
}
const SPLIT_STREAM = 6; // the trainer's seed stream of the validation split (src/train/trainer.ts STREAM.split)
fs.mkdirSync(out, { recursive: true });
const splits = await loadData(data, {});
for (const [name, ds] of [
  ['train', splits.train],
  ['test', splits.test],
]) {
  fs.writeFileSync(path.join(out, `${name}_images.u8`), ds.images);
  fs.writeFileSync(
    path.join(out, `${name}_labels.i32`),
    Buffer.from(ds.labels.buffer, ds.labels.byteOffset, ds.labels.byteLength),
  );
}
for (let seed = 0; seed < 10; ++seed) {
  const s = stratifiedSplit(splits.train.labels, 0.1, deriveSeed(seed, SPLIT_STREAM));
  for (const part of ['train', 'val'])
    fs.writeFileSync(path.join(out, `split_seed${seed}_${part}.i32`), Buffer.from(Int32Array.from(s[part]).buffer));
}
const d = splits.train;
fs.writeFileSync(
  path.join(out, 'meta.json'),
  JSON.stringify({
    source: data,
    classNames: d.classNames,
    shape: [d.channels, d.height, d.width],
    train: d.n,
    test: splits.test.n,
  }) + '\n',
);
console.log(`wrote ${out}: ${d.n} train, ${splits.test.n} test images`);
