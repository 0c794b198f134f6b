// Reliability of checkpoints and training: integrity (a flipped byte is named), divergence keeps the
// last good checkpoint, memory budgets refuse before allocating, concurrent runs do not interfere,
// and the regressions the fuzzer found.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { loadBinding } from '../../dist/binding.js';
import { resolveConfig } from '../../dist/config.js';
import { readCache, writeCache } from '../../dist/data/cache.js';
import { decodeImages } from '../../dist/data/images.js';
import { CheckpointError, DivergenceError, exitCodeFor } from '../../dist/errors.js';
import { loadCheckpoint, readState, stateText } from '../../dist/io/checkpoint.js';
import { decodeSafetensors } from '../../dist/io/safetensors.js';
import { train } from '../../dist/train/trainer.js';
import { tinySpec } from '../helpers/native.js';
import { syntheticSplits } from '../helpers/synthetic.js';

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `dfl-rel-${name}-`));
const base = {
  model: 'vgg8',
  width: 0.125,
  batchSize: 32,
  lr: 0.05,
  threads: 1,
  seed: 3,
  method: 'dfl',
  teachers: 2,
  resetCycle: 2,
} as const;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let sharedRun: string | null = null;
async function trainedRun(): Promise<string> {
  if (!sharedRun) {
    sharedRun = tmp('ckpt');
    await train({ ...base, dataset: syntheticSplits(128, 32, 4), epochs: 2, out: sharedRun }).summary;
  }
  return sharedRun;
}

async function withEnv<T>(key: string, value: string, body: () => T): Promise<Awaited<T>> {
  const old = process.env[key];
  process.env[key] = value;
  try {
    return await body();
  } finally {
    if (old === undefined) delete process.env[key];
    else process.env[key] = old;
  }
}

test('integrity: a flipped byte in any checkpoint file is detected and the file named', async () => {
  const run = await trainedRun();
  const src = path.join(run, 'checkpoint');
  const files = fs.readdirSync(src).filter((f) => !f.startsWith('.'));
  assert.ok(files.includes('state.json') && files.some((f) => f.startsWith('teachers-')));
  for (const f of files) {
    const size = fs.statSync(path.join(src, f)).size;
    for (const at of [0, Math.floor(size / 2), size - 2]) {
      const copy = tmp('flip');
      for (const g of files) fs.copyFileSync(path.join(src, g), path.join(copy, g));
      const b = fs.readFileSync(path.join(copy, f));
      b[at] ^= 0x10;
      fs.writeFileSync(path.join(copy, f), b);
      const named = (e: Error) => e.message.includes(path.join(copy, f)) && !e.message.includes('\n');
      if (!f.startsWith('teachers-') && !f.startsWith('optim-'))
        await assert.rejects(loadCheckpoint(copy), named, `loadCheckpoint: ${f} byte ${at}`);
      // resume reads every file (student, momentum, teachers)
      await assert.rejects(
        train({ resume: copy, dataset: syntheticSplits(128, 32, 4) }).summary,
        named,
        `resume: ${f} byte ${at}`,
      );
      fs.rmSync(copy, { recursive: true, force: true });
    }
  }
});

test('divergence after a good epoch: a clear error suggesting a lower --lr; the last good checkpoint stays loadable', async () => {
  const out = tmp('diverge');
  const data = syntheticSplits(128, 32, 4);
  await train({ ...base, method: 'base', dataset: data, epochs: 1, out }).summary;
  const dir = path.join(out, 'checkpoint');
  const before = fs.readFileSync(path.join(dir, readState(dir).files.model));
  // Continue with an absurd learning rate: edit the saved config (re-sealing state.json, as a user
  // re-running with another lr would) and resume for 3 epochs.
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
  delete raw.state_sha256;
  raw.config.lr = 1e4;
  fs.writeFileSync(path.join(dir, 'state.json'), stateText(raw));
  await assert.rejects(
    train({ resume: out, dataset: data, epochs: 3 }).summary,
    (e: Error) =>
      e instanceof DivergenceError &&
      /NaN\/Inf/.test(e.message) &&
      /Try a lower --lr/.test(e.message) &&
      e.message.includes(dir),
  );
  const st = readState(dir);
  assert.equal(st.epoch, 1, 'the checkpoint is still the last good epoch');
  assert.deepEqual(fs.readFileSync(path.join(dir, st.files.model)), before);
  const c = await loadCheckpoint(out);
  assert.ok(c.model.getParams().every(Number.isFinite));
  c.model.dispose();
});

test('a checkpoint holding Inf weights (with valid checksums) is refused, naming the tensor and file', async () => {
  const run = await trainedRun();
  const copy = tmp('inf');
  for (const g of fs.readdirSync(path.join(run, 'checkpoint')))
    fs.copyFileSync(path.join(run, 'checkpoint', g), path.join(copy, g));
  const st = readState(copy);
  const file = path.join(copy, st.files.model);
  const buf = fs.readFileSync(file);
  const { tensors } = decodeSafetensors(buf, file);
  const [name, t] = [...tensors].find(([, v]) => v.dtype === 'F32')!;
  (t.data as Float32Array)[0] = Infinity;
  const { encodeSafetensors } = await import('../../dist/io/safetensors.js');
  const nb = encodeSafetensors(tensors, { format: 'pt' });
  fs.writeFileSync(file, nb);
  const raw = JSON.parse(fs.readFileSync(path.join(copy, 'state.json'), 'utf8'));
  delete raw.state_sha256;
  raw.sha256[st.files.model] = (await import('node:crypto')).createHash('sha256').update(nb).digest('hex');
  fs.writeFileSync(path.join(copy, 'state.json'), stateText(raw));
  await assert.rejects(
    loadCheckpoint(copy),
    (e: Error) => e.message.includes(file) && e.message.includes(name) && /NaN or Inf/.test(e.message),
  );
});

test('fuzz regressions: malformed state.json fields and cache headers are clean rejections', async () => {
  const run = await trainedRun();
  const copy = tmp('forge');
  for (const g of fs.readdirSync(path.join(run, 'checkpoint')))
    fs.copyFileSync(path.join(run, 'checkpoint', g), path.join(copy, g));
  const good = JSON.parse(fs.readFileSync(path.join(copy, 'state.json'), 'utf8'));
  delete good.state_sha256;
  const forged: [string, (s: Record<string, any>) => void, RegExp][] = [
    ['sha256 null', (s) => (s.sha256 = null), /sha256 field/],
    ['files.optim a number', (s) => (s.files.optim = 5), /files field/],
    ['bank not a list', (s) => (s.bank = 'x'), /teacher bank/],
    ['spec too big', (s) => (s.spec.nodes[1].out_channels = 1e6), /model spec cannot be built/],
    ['class count', (s) => s.class_names.push('extra'), /class_names lists 5/],
    ['bad config', (s) => (s.config.lr = 'fast'), /config is invalid/],
    ['data fingerprint without its train split', (s) => delete s.data.train, /data fingerprint is malformed/],
    [
      'data fingerprint counts for other classes',
      (s) => s.data.train.class_counts.push(3),
      /data fingerprint is malformed/,
    ],
  ];
  for (const [what, edit, re] of forged) {
    const s = structuredClone(good);
    edit(s);
    fs.writeFileSync(path.join(copy, 'state.json'), stateText(s));
    await withEnv('DFL_MAX_MEMORY_MB', '512', () =>
      assert.rejects(
        loadCheckpoint(copy),
        (e: Error) =>
          e instanceof CheckpointError &&
          exitCodeFor(e) === 2 &&
          re.test(e.message) &&
          e.message.includes(path.join(copy, 'state.json')),
        what,
      ),
    );
  }
  // a corrupt JSON state gives one line
  fs.writeFileSync(path.join(copy, 'state.json'), '{\n"format": \n#\n}');
  await assert.rejects(
    loadCheckpoint(copy),
    (e: Error) => !e.message.includes('\n') && /cannot read the checkpoint state/.test(e.message),
  );
  // config keys inherited from Object.prototype are unknown options, not silently ignored
  assert.throws(() => resolveConfig(JSON.parse('{"constructor": 1}')), /Unknown option 'constructor'/);
  assert.throws(() => resolveConfig(JSON.parse('{"__proto__": {"lr": 1}}')), /Unknown option '__proto__'/);
  // a cache whose header was edited (class names, offsets) is corrupt, never a silent hit or a RangeError
  const dir = tmp('cache');
  const file = path.join(dir, 'c.dflc');
  const ds = syntheticSplits(6, 2, 2).train;
  writeCache(file, 'L', { train: ds, test: null });
  assert.equal(readCache(file, 'L').status, 'hit');
  const b = fs.readFileSync(file);
  for (const [from, to] of [
    ['"c0"', '"cX"'],
    ['"imagesOffset":0', '"imagesOffset":9'],
    ['"n":6', '"n":9'],
  ]) {
    const text = b.toString('latin1').replace(from, to);
    fs.writeFileSync(file, Buffer.from(text, 'latin1'));
    const r = readCache(file, 'L');
    assert.equal(r.status, 'corrupt', `${from} -> ${to}`);
  }
  fs.writeFileSync(
    file,
    Buffer.concat([b.subarray(0, 12), Buffer.from([4, 0, 0, 0]), Buffer.from('null'), Buffer.alloc(4)]),
  );
  assert.equal(readCache(file, 'L').status, 'corrupt');
});

test('memory: a model or batch over the budget is refused before allocating, with what to do', async () => {
  const { Model } = loadBinding();
  await withEnv('DFL_MAX_MEMORY_MB', '1', () => {
    const big = tinySpec();
    (big.nodes[1] as { out_channels: number }).out_channels = 20000;
    assert.throws(
      () => new Model(big, 0),
      /Refusing to allocate \d+ MiB for a model of \d+ parameters.*more than the 1 MiB available \(DFL_MAX_MEMORY_MB\); use a smaller model or --width/,
    );
    const m = new Model(tinySpec(), 0);
    assert.throws(
      () => m.forwardSync(new Float32Array(4096 * 192), 4096),
      /Refusing to allocate \d+ MiB for a batch of 4096.*use a smaller --batch-size/,
    );
    assert.equal(m.forwardSync(new Float32Array(2 * 192), 2).length, 8, 'a small batch still runs');
    m.dispose();
  });
});

test('memory: a dataset too big to decode is refused before decoding the rest', async () => {
  const { writeImage } = await import('../helpers/data.js');
  const dir = tmp('bigdata');
  const f = path.join(dir, 'a.png');
  await writeImage(f, 1, { w: 8, h: 8 });
  const items = Array.from({ length: 100000 }, (_, i) => ({ input: f, name: `${f}#${i}`, label: 0 }));
  await withEnv('DFL_MAX_MEMORY_MB', '1', () =>
    assert.rejects(
      decodeImages(items, ['a'], 'image folder X', { batch: 4 }),
      /image folder X: decoding 100000 images of 3x8x8 needs 19 MiB, more than the 1 MiB.*--image-size/,
    ),
  );
});

test('concurrency: two runs at once in one process give exactly the results of each run alone', async () => {
  const cfgA = { ...base, dataset: syntheticSplits(160, 40, 4), epochs: 3, seed: 1 };
  const cfgB = {
    ...base,
    dataset: syntheticSplits(96, 40, 3, 8),
    epochs: 3,
    seed: 9,
    method: 'sd' as const,
    batchSize: 16,
  };
  const aAlone = await train(cfgA).summary;
  const bAlone = await train(cfgB).summary;
  const [a, b] = await Promise.all([train(cfgA).summary, train(cfgB).summary]);
  for (const k of ['test_acc', 'test_loss', 'test_ece', 'final_val_acc', 'best_val_acc'] as const) {
    assert.equal(a[k], aAlone[k], `run A ${k}`);
    assert.equal(b[k], bAlone[k], `run B ${k}`);
  }
});

test('crash safety (CI size): SIGKILLed runs resume to the uninterrupted weights', { timeout: 120_000 }, () => {
  const r = spawnSync(
    process.execPath,
    [path.join(root, 'scripts', 'ci', 'crash-safety.mjs'), '--trials', '2', '--epochs', '3', '--seed', '7'],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /2\/2 trials passed/);
});
