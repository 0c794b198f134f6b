// The training loop end to end on synthetic data: records, files, resume exactness, divergence.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { decodeSafetensors } from '../../dist/io/safetensors.js';
import { ConfigError, DivergenceError } from '../../dist/errors.js';
import type { EpochRecord } from '../../dist/records.js';
import { train } from '../../dist/train/trainer.js';
import { loadBinding } from '../../dist/binding.js';
import { syntheticSplits } from '../helpers/synthetic.js';

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `dfl-${name}-`));
const base = { model: 'vgg8', width: 0.125, batchSize: 32, lr: 0.05, threads: 1, seed: 3 } as const;

test('convInit reaches the native model: the same seed trains differently, and the run records it', async () => {
  const once = async (convInit: 'kaiming-normal' | 'pytorch-default') => {
    const run = train({ ...base, dataset: syntheticSplits(200, 40, 4), epochs: 1, method: 'base', convInit });
    const records: EpochRecord[] = [];
    for await (const r of run) records.push(r);
    return { loss: records[0].train_loss, summary: await run.summary };
  };
  const k = await once('kaiming-normal'),
    p = await once('pytorch-default'),
    k2 = await once('kaiming-normal');
  assert.equal(k.loss, k2.loss, 'deterministic');
  assert.notEqual(k.loss, p.loss);
  assert.equal(p.summary.config.convInit, 'pytorch-default');
});

test('a DFL run fills the bank, resets on schedule and writes its files', async () => {
  const out = tmp('run');
  // the paper's recipe (every teacher teaches, resets to the end); the gated default is tested in teacher-filter-reset-until
  const run = train({
    ...base,
    dataset: syntheticSplits(400, 100, 4),
    epochs: 6,
    resetCycle: 3,
    teachers: 2,
    skipWorseTeachers: false,
    resetUntil: 1,
    out,
  });
  const records: EpochRecord[] = [];
  for await (const r of run) records.push(r);
  const summary = await run.summary;
  assert.deepEqual(
    records.map((r) => r.epoch),
    [1, 2, 3, 4, 5, 6],
  );
  assert.deepEqual(
    records.map((r) => r.reset),
    [false, false, false, true, false, false],
  );
  assert.deepEqual(
    records.map((r) => r.bank.length),
    [1, 2, 2, 2, 2, 2],
  );
  assert.equal(records[0].ensemble_val_acc, null, 'the bank is empty during epoch 1');
  assert.equal(records[0].distill_loss, 0);
  assert.ok(records[1].distill_loss > 0, 'teachers teach from epoch 2');
  assert.ok(records[1].ensemble_val_acc !== null && records[1].disagreement !== null);
  for (const r of records) {
    assert.ok(r.bank.every((b) => b.epoch <= r.epoch));
    if (r.replaced !== null) assert.ok(!r.bank.some((b) => b.id === r.replaced));
  }
  assert.ok(summary.test_acc > 0.6, `synthetic classes are separable; got test_acc ${summary.test_acc}`);
  assert.ok(summary.test_top5 >= summary.test_acc);
  assert.equal(summary.n, 100);
  const lines = fs
    .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 6);
  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(s.test_acc, summary.test_acc);
  assert.equal(s.config.method, 'dfl');
  assert.ok(fs.existsSync(path.join(out, 'checkpoint', 'state.json')));
  assert.ok(fs.existsSync(path.join(out, 'curves.svg')));
});

test('base method never distills or resets', async () => {
  const run = train({ ...base, dataset: syntheticSplits(200, 50, 4), epochs: 3, resetCycle: 1, method: 'base' });
  const records: EpochRecord[] = [];
  for await (const r of run) records.push(r);
  assert.ok(records.every((r) => !r.reset && r.bank.length === 0 && r.distill_loss === 0));
});

function modelTensorsOf(out: string): Map<string, Float32Array | BigInt64Array> {
  const dir = path.join(out, 'checkpoint');
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
  const m = new Map<string, Float32Array | BigInt64Array>();
  for (const f of [state.files.model, state.files.optim, state.files.teachers].filter(Boolean))
    for (const [k, v] of decodeSafetensors(fs.readFileSync(path.join(dir, f)), f).tensors)
      m.set(`${f.split('-')[0]}:${k}`, v.data);
  return m;
}

for (const threads of [1, 2]) {
  test(`a run interrupted mid-epoch and resumed ends with exactly the uninterrupted weights (${threads} threads)`, async () => {
    const data = syntheticSplits(300, 60, 4);
    const cfg = { ...base, threads, dataset: data, epochs: 4, resetCycle: 2, teachers: 2 };
    const a = tmp('full');
    await train({ ...cfg, out: a }).summary;

    const b = tmp('cut');
    const ctl = new AbortController();
    const first = train({ ...cfg, out: b, signal: ctl.signal });
    first.on('batch', (p) => {
      if (p.epoch === 3 && p.batch === 3) ctl.abort();
    });
    const s1 = await first.summary;
    assert.equal(s1.interrupted, true);
    const resumed = await train({ resume: b, dataset: data }).summary;
    assert.equal(resumed.interrupted, false);
    assert.equal(resumed.epochs, 4);
    // Training time counts each second once: the interrupted part of epoch 3 is in its record only.
    const records = fs
      .readFileSync(path.join(b, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as EpochRecord);
    const perEpoch = records.reduce((sum, r) => sum + r.seconds, 0);
    assert.ok(Math.abs(resumed.seconds - perEpoch) < 1e-6, `summary ${resumed.seconds} s vs epochs ${perEpoch} s`);

    const ta = modelTensorsOf(a),
      tb = modelTensorsOf(b);
    assert.deepEqual([...tb.keys()].sort(), [...ta.keys()].sort());
    for (const [k, v] of ta) assert.deepEqual(tb.get(k), v, `${k} differs after resume`);
  });
}

test('an absurd learning rate stops with a DivergenceError in epoch 1, before anything is saved', async () => {
  const out = tmp('nan');
  const run = train({ ...base, dataset: syntheticSplits(200, 40, 4), epochs: 3, lr: 1e4, out, method: 'base' });
  await assert.rejects(
    run.summary,
    (e: Error) =>
      e instanceof DivergenceError &&
      /at epoch 1, batch \d+ the loss or a gradient is NaN\/Inf/.test(e.message) &&
      /Try a lower --lr \(e\.g\. 1\.0e\+3\)/.test(e.message) &&
      !/last good checkpoint/.test(e.message),
  );
  assert.equal(fs.existsSync(path.join(out, 'checkpoint', 'state.json')), false, 'no epoch finished, so no checkpoint');
  assert.equal(fs.existsSync(path.join(out, 'metrics.jsonl')), false);
});

test('a run that diverges after finished epochs keeps the last good checkpoint: finite, loadable, of the epoch before', async () => {
  const out = tmp('nan-late');
  // lr warms up towards 1e4 over 300 epochs: epochs 1-2 (lr up to 67) end finite, epoch 3 diverges.
  const run = train({
    ...base,
    dataset: syntheticSplits(200, 40, 4),
    epochs: 3,
    lr: 1e4,
    warmupEpochs: 300,
    out,
    method: 'base',
  });
  let message = '';
  await assert.rejects(run.summary, (e: Error) => e instanceof DivergenceError && Boolean((message = e.message)));
  const diverged = Number(/at epoch (\d+), batch/.exec(message)?.[1]);
  assert.ok(diverged >= 2, `diverged in epoch ${diverged}, after at least one saved epoch: ${message}`);
  assert.ok(message.includes(`The last good checkpoint is in ${path.join(out, 'checkpoint')}`), message);
  const state = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'state.json'), 'utf8'));
  assert.equal(state.epoch, diverged - 1, 'the checkpoint is of the last finished epoch');
  assert.equal(state.metrics.length, diverged - 1);
  const tensors = modelTensorsOf(out);
  assert.ok(tensors.size > 0);
  for (const [k, v] of tensors) if (v instanceof Float32Array) assert.ok(v.every(Number.isFinite), `${k} is finite`);
  const { loadCheckpoint } = await import('../../dist/io/checkpoint.js');
  const ckpt = await loadCheckpoint(out); // refuses non-finite weights
  assert.equal(ckpt.epoch, diverged - 1);
  ckpt.model.dispose();
});

test('a resume refuses data that changed since the checkpoint, naming the change, unless allowDataChange', async () => {
  const data = syntheticSplits(200, 40, 4);
  const out = tmp('data-change');
  await train({ ...base, dataset: data, epochs: 1, method: 'base', out }).summary;
  const stateFile = path.join(out, 'checkpoint', 'state.json');
  const fp = JSON.parse(fs.readFileSync(stateFile, 'utf8')).data;
  assert.deepEqual(
    [fp.train.n, fp.train.shape, fp.train.class_names, fp.train.class_counts, fp.test.n],
    [200, [3, 8, 8], ['c0', 'c1', 'c2', 'c3'], [50, 50, 50, 50], 40],
  );
  assert.match(fp.train.images_sha256, /^[0-9a-f]{64}$/);

  const refused = async (dataset: typeof data, change: RegExp) =>
    assert.rejects(
      train({ resume: out, dataset, epochs: 2 }).summary,
      (e: Error) =>
        e instanceof ConfigError &&
        e.message.startsWith(
          `The data differ from those the run in ${path.join(out, 'checkpoint')} was trained on: `,
        ) &&
        change.test(e.message) &&
        /pass --allow-data-change \(allowDataChange: true\)/.test(e.message),
      String(change),
    );
  const edited = { train: { ...data.train, images: data.train.images.slice() }, test: data.test };
  edited.train.images[123] ^= 1;
  await refused(edited, /: train split: the pixels differ \(same images per class/);
  await refused(
    syntheticSplits(203, 40, 4),
    /: train split: 203 images, was 200; train split: images per class changed \(c0 50 -> 51, c1 50 -> 51, c2 50 -> 51\)\./,
  );
  const relabelled = { train: { ...data.train, labels: data.train.labels.slice() }, test: data.test };
  [relabelled.train.labels[0], relabelled.train.labels[1]] = [relabelled.train.labels[1], relabelled.train.labels[0]];
  await refused(relabelled, /: train split: the labels differ/);
  await refused({ train: data.train, test: null }, /: the test split is gone\./);
  const renamed = ['c0', 'c1', 'c2', 'dog'];
  await refused(
    { train: { ...data.train, classNames: renamed }, test: { ...data.test!, classNames: renamed } },
    /: train split: new classes dog; train split: classes c3 are gone; test split: new classes dog/,
  );
  assert.equal(JSON.parse(fs.readFileSync(stateFile, 'utf8')).epoch, 1, 'a refused resume leaves the checkpoint alone');

  const logs: string[] = [];
  const allowed = train({ resume: out, dataset: edited, epochs: 2, allowDataChange: true });
  allowed.on('log', (m: string) => logs.push(m));
  assert.equal((await allowed.summary).epochs, 2);
  assert.ok(
    logs.some((l) =>
      /^the data differ from the checkpoint's \(train split: the pixels differ .*\); resuming anyway/.test(l),
    ),
    logs.join('\n'),
  );
  const after = JSON.parse(fs.readFileSync(stateFile, 'utf8')).data;
  assert.notEqual(
    after.train.images_sha256,
    fp.train.images_sha256,
    'the checkpoint now records the data it continued on',
  );
});

test('in-memory data: a plain Dataset gets a held-out test split; bad data gets one clear error', async () => {
  const { train: ds } = syntheticSplits(200, 10, 4);
  const s = await train({ ...base, dataset: ds, epochs: 1, method: 'base' }).summary;
  assert.equal(s.n, 40, '20% of 200 held out for testing');
  await assert.rejects(
    train({ ...base, dataset: 5 as never, epochs: 1 }).summary,
    /Expected a Dataset \(see fromArrays\) or \{ train, test \} for dataset but received number/,
  );
  const other = syntheticSplits(100, 20, 3);
  await assert.rejects(
    train({ ...base, dataset: { train: ds, test: other.test }, epochs: 1 }).summary,
    /class names of dataset.train/,
  );
});

test('an output folder that already holds a run is not overwritten', async () => {
  const out = tmp('twice');
  const data = syntheticSplits(100, 20, 4);
  await train({ ...base, dataset: data, epochs: 1, method: 'base', out }).summary;
  const before = fs.readFileSync(path.join(out, 'checkpoint', 'state.json'));
  await assert.rejects(
    train({ ...base, dataset: data, epochs: 1, method: 'base', out }).summary,
    /already holds a training run; continue it with --resume/,
  );
  assert.deepEqual(fs.readFileSync(path.join(out, 'checkpoint', 'state.json')), before);
});

test('predict returns the top-k classes of raw images from a checkpoint', async () => {
  const out = tmp('pred');
  const data = syntheticSplits(200, 20, 4);
  await train({ ...base, dataset: data, epochs: 2, method: 'base', out }).summary;
  const { loadCheckpoint } = await import('../../dist/io/checkpoint.js');
  const { predict } = await import('../../dist/train/evaluate.js');
  const ckpt = await loadCheckpoint(out);
  const per = 3 * 8 * 8;
  const preds = await predict(ckpt, data.test!.images.subarray(0, 5 * per), 5, 3);
  assert.equal(preds.length, 5);
  for (const p of preds) {
    assert.equal(p.top.length, 3);
    assert.ok(p.top[0].prob >= p.top[1].prob && p.top[1].prob >= p.top[2].prob);
    assert.ok(ckpt.classNames.includes(p.top[0].label));
  }
  await assert.rejects(predict(ckpt, new Uint8Array(7), 1), /Expected 192 bytes/);
});

test('normalisation statistics: computed from the training split, or given', async () => {
  const data = syntheticSplits(100, 20, 4);
  const given = { mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };
  const a = tmp('norm');
  await train({ ...base, dataset: data, epochs: 1, method: 'base', out: a, ...given }).summary;
  const state = JSON.parse(fs.readFileSync(path.join(a, 'checkpoint', 'state.json'), 'utf8'));
  assert.deepEqual([state.mean, state.std], [given.mean, given.std]);
  const b = tmp('norm2');
  await train({ ...base, dataset: data, epochs: 1, method: 'base', out: b }).summary;
  const computed = JSON.parse(fs.readFileSync(path.join(b, 'checkpoint', 'state.json'), 'utf8'));
  assert.equal(computed.mean.length, 3);
  assert.notDeepEqual(computed.mean, given.mean);
  await assert.rejects(
    train({ ...base, dataset: data, epochs: 1, mean: [0.5], std: [0.2] }).summary,
    /Expected 3 values \(one per image channel\) for mean/,
  );
  await assert.rejects(
    train({ ...base, dataset: data, epochs: 1, mean: [0.5, 0.5, 0.5] }).summary,
    /both mean and std/,
  );
  await assert.rejects(
    train({ ...base, dataset: data, epochs: 1, mean: [0.5, 0.5, 0.5], std: [1, 0, 1] }).summary,
    /positive finite numbers, one per channel for std/,
  );
});

test('device auto on a machine without a usable GPU says where it runs: briefly for a CPU-only build, with the reason for a CUDA build', async () => {
  const info = loadBinding().runtimeInfo();
  const logs: string[] = [];
  const run = train({ ...base, dataset: syntheticSplits(64, 16, 4), epochs: 1, method: 'base', device: 'auto' });
  run.on('log', (m: string) => logs.push(m));
  assert.equal((await run.summary).device, info.usableBackends.includes('cuda') ? 'cuda' : 'cpu');
  const said = logs.filter((l) => l.startsWith('device auto'));
  if (info.usableBackends.includes('cuda')) assert.deepEqual(said, []);
  else if (info.compiledBackends.includes('cuda'))
    assert.deepEqual(said, [`device auto -> cpu (cuda: ${info.cudaStatus})`]);
  else assert.deepEqual(said, ['device auto -> cpu (this build has no CUDA backend; `dfl-native info` says why)']);
});
