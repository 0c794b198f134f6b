// The trajectory options in the training loop, on real values: the EMA of the student's weights,
// SWA's average as the final model, PS-KD's target mix, DLB's carried images, warm restarts with
// cycle-end snapshots, label noise that leaves validation and test clean, and exact resumes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { loadCheckpoint } from '../../dist/io/checkpoint.js';
import { decodeSafetensors } from '../../dist/io/safetensors.js';
import type { EpochRecord } from '../../dist/records.js';
import { evaluate, softmaxRows } from '../../dist/train/evaluate.js';
import { train, type TrainOptions } from '../../dist/train/trainer.js';
import { noise, tinyModel } from '../helpers/native.js';
import { syntheticSplits } from '../helpers/synthetic.js';

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `dfl-${name}-`));
const base = { model: 'vgg8', width: 0.125, batchSize: 32, lr: 0.05, threads: 1, seed: 3 } as const;

async function records(
  options: TrainOptions,
): Promise<{ records: EpochRecord[]; summary: Awaited<ReturnType<typeof train>['summary']>; logs: string[] }> {
  const run = train(options);
  const logs: string[] = [];
  run.on('log', (m: string) => logs.push(m));
  const out: EpochRecord[] = [];
  for await (const r of run) out.push(r);
  return { records: out, summary: await run.summary, logs };
}

/** Every tensor of a checkpoint's files (model, optim, teachers, aux), keyed "<kind>:<name>". */
function checkpointTensors(out: string): Map<string, Float32Array | BigInt64Array> {
  const dir = path.join(out, 'checkpoint');
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
  const m = new Map<string, Float32Array | BigInt64Array>();
  for (const f of Object.values(state.files as Record<string, string | null>).filter((v): v is string => Boolean(v)))
    for (const [k, v] of decodeSafetensors(fs.readFileSync(path.join(dir, f)), f).tensors)
      m.set(`${f.split('-')[0]}:${k}`, v.data);
  return m;
}

test('PS-KD target mix: (1 - a) CE(y) + a KL(p_prev || q) is the cross-entropy with the target (1 - a) onehot + a p_prev, less a H(p_prev)', async () => {
  const B = 8,
    NC = 4,
    a = 0.6;
  const m = tinyModel(4);
  const prev = noise(B * NC, 9).map((v) => 3 * v);
  const labels = Int32Array.from({ length: B }, (_, i) => (i * 3) % NC);
  const step = await m.trainStep({
    x: noise(B * 3 * 8 * 8, 5),
    batch: B,
    labels,
    lr: 0.05,
    momentum: 0.9,
    weightDecay: 5e-4,
    nesterov: true,
    decoupled: false,
    labelSmoothing: 0,
    distillWeight: 0,
    temperature: 4,
    dropoutSeed: 1,
    ceWeight: 1 - a,
    targets: { logits: prev, rows: B, temperature: 1, weight: a },
    returnLogits: true,
  });
  const q = softmaxRows(step.logits!, NC),
    p = softmaxRows(prev, NC);
  let mixCe = 0,
    entropy = 0,
    ce = 0;
  for (let b = 0; b < B; ++b)
    for (let c = 0; c < NC; ++c) {
      const target = (1 - a) * (c === labels[b] ? 1 : 0) + a * p[b * NC + c];
      mixCe -= (target * Math.log(q[b * NC + c])) / B;
      entropy -= (p[b * NC + c] * Math.log(p[b * NC + c])) / B;
      if (c === labels[b]) ce -= Math.log(q[b * NC + c]) / B;
    }
  assert.ok(Math.abs(step.ceLoss - ce) < 1e-5, `CE ${step.ceLoss} vs ${ce}`);
  assert.ok(Math.abs(step.loss - (mixCe - a * entropy)) < 1e-5, `loss ${step.loss} vs ${mixCe - a * entropy}`);
  assert.ok(
    Math.abs(step.targetLoss - (mixCe - a * entropy - (1 - a) * ce) / a) < 1e-5,
    'the target term is KL(p_prev || q)',
  );
  m.dispose();
});

test("PS-KD in training: no target in epoch 1, then the previous epoch's predictions teach", async () => {
  const { records: r } = await records({
    ...base,
    dataset: syntheticSplits(200, 40, 4),
    epochs: 3,
    method: 'base',
    softTargets: 'pskd',
  });
  assert.equal(r[0].target_loss, 0);
  assert.ok(r[1].target_loss! > 0 && r[2].target_loss! > 0, `target terms ${r.map((x) => x.target_loss)}`);
  assert.ok(
    r.every((x) => x.distill_loss === 0 && x.bank.length === 0),
    'no teachers in method base',
  );
});

test('EMA: after each step ema <- d ema + (1 - d) student, with the mean-teacher ramp; alone it teaches without a bank', async () => {
  const out = tmp('ema');
  const seen: { student: Map<string, Float32Array | BigInt64Array>; ema: Float32Array }[] = [];
  // 30 training images in one batch: one step per epoch, so the checkpoints show every update
  const run = train({
    ...base,
    dataset: syntheticSplits(33, 10, 3),
    valSize: 0.1,
    batchSize: 64,
    epochs: 3,
    method: 'sd',
    emaDecay: 0.9,
    emaTeacher: 'alone',
    skipWorseTeachers: false,
    out,
  });
  run.on('epoch', () => {
    const t = checkpointTensors(out);
    seen.push({ student: t, ema: t.get('aux:ema.params') as Float32Array });
  });
  const recs: EpochRecord[] = [];
  for await (const r of run) recs.push(r);
  await run.summary;
  const layout = await loadCheckpoint(out);
  const params = (t: Map<string, Float32Array | BigInt64Array>) => {
    const flat = new Float32Array(layout.model.info().numParams);
    for (const x of layout.model.tensors())
      if (x.kind !== 'buffer') flat.set(t.get(`model:${x.name}`) as Float32Array, x.offset);
    return flat;
  };
  for (const k of [1, 2]) {
    const d = Math.min(0.9, (k + 1) / (k + 2)); // the (k+1)-th update
    const student = params(seen[k].student);
    const want = seen[k - 1].ema.map((e, i) => d * e + (1 - d) * student[i]);
    const worst = Math.max(...want.map((w, i) => Math.abs(w - seen[k].ema[i])));
    assert.ok(worst < 1e-6, `update ${k + 1}: EMA off by ${worst}`);
    assert.ok(
      seen[k].ema.some((e, i) => Math.abs(e - student[i]) > 1e-4),
      'the EMA is not the student',
    );
  }
  layout.model.dispose();
  assert.ok(
    recs.every((r) => r.bank.length === 0),
    'alone: no snapshot bank',
  );
  assert.equal(recs[0].distill_loss, 0, 'the EMA teaches once it has a score');
  assert.ok(recs[1].distill_loss > 0 && recs[2].distill_loss > 0);
  assert.ok(recs.every((r) => typeof r.ema_val_acc === 'number'));
});

test("SWA: the final model is the mean of the averaged epochs' weights with recomputed BN statistics; eval reproduces the summary", async () => {
  const out = tmp('swa');
  const data = syntheticSplits(300, 60, 4);
  const byEpoch: Map<string, Float32Array | BigInt64Array>[] = [];
  const run = train({ ...base, dataset: data, epochs: 4, method: 'base', swaStart: 0.5, swaLr: 0.01, out });
  run.on('epoch', () => byEpoch.push(checkpointTensors(out)));
  const recs: EpochRecord[] = [];
  for await (const r of run) recs.push(r);
  const summary = await run.summary;
  assert.deepEqual(
    recs.map((r) => r.swa_val_acc === null),
    [true, true, false, false],
  );
  assert.deepEqual(
    recs.slice(2).map((r) => r.lr),
    [0.01, 0.01],
    'the averaged epochs run at swaLr',
  );
  assert.equal(summary.final_model, 'swa');
  const state = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'state.json'), 'utf8'));
  assert.equal(state.final, 'swa');
  assert.match(state.files.model, /^model-e0004f\.safetensors$/);
  const final = checkpointTensors(out);
  let buffersMoved = false;
  for (const [k, v] of byEpoch[3]) {
    if (!k.startsWith('model:')) continue;
    const name = k.slice('model:'.length),
      got = final.get(k)!;
    assert.deepEqual(
      final.get(`aux:trajectory.${name}`),
      v,
      `${name}: the trajectory's own weights are kept for a resume`,
    );
    if (name.includes('running_')) buffersMoved ||= (got as Float32Array).some((x, i) => x !== (v as Float32Array)[i]);
    else if (!name.includes('num_batches')) {
      const e3 = byEpoch[2].get(k) as Float32Array,
        e4 = v as Float32Array;
      const worst = Math.max(...(got as Float32Array).map((x, i) => Math.abs(x - (e3[i] + e4[i]) / 2)));
      assert.ok(worst < 1e-6, `${name} is the mean of epochs 3 and 4 (off by ${worst})`);
    }
  }
  assert.ok(buffersMoved, "the BN statistics are recomputed, not the last epoch's");
  const ckpt = await loadCheckpoint(out);
  const m = await evaluate(ckpt.model, data.test!, ckpt.mean, ckpt.std);
  assert.deepEqual(
    [m.test_acc, m.test_loss],
    [summary.test_acc, summary.test_loss],
    'the checkpoint holds the evaluated model',
  );
  ckpt.model.dispose();
  // resuming the finished run for more epochs continues from the trajectory, not from the average
  const more = await train({ resume: out, dataset: data, epochs: 5 }).summary;
  assert.equal(more.epochs, 5);
});

test("DLB: every step after the first carries the previous step's images and distils toward their predictions", async () => {
  const data = syntheticSplits(300, 40, 4); // 270 training images: 8 batches of 32 and one of 14
  const plain = await records({ ...base, dataset: data, epochs: 1, method: 'base' });
  const dlb = await records({ ...base, dataset: data, epochs: 2, method: 'base', softTargets: 'dlb' });
  const images = (r: EpochRecord) => Math.round(r.images_per_sec * r.seconds);
  assert.equal(images(plain.records[0]), 270);
  assert.deepEqual(dlb.records.map(images), [270 + 8 * 32, 270 + 8 * 32]);
  assert.ok(dlb.records.every((r) => r.target_loss! > 0));
});

test('warm restarts with cycle-end teachers: snapshots enter only at cycle ends, the head is reset at the restarts', async () => {
  const { records: r } = await records({
    ...base,
    dataset: syntheticSplits(200, 40, 4),
    epochs: 6,
    method: 'dfl',
    schedule: 'cosine-restarts',
    restartCycle: 2,
    teacherSource: 'cycle-end',
    teachers: 2,
    resetUntil: 1,
  });
  assert.deepEqual(
    r.map((x) => x.reset),
    [false, false, true, false, true, false],
  );
  assert.deepEqual(
    r.map((x) => x.added),
    [null, 2, null, 4, null, 6],
  );
  assert.deepEqual(
    r.at(-1)!.bank.map((b) => b.id),
    [4, 6],
  );
  // 180 training images, 6 steps per epoch: the last step of each epoch is 5/12 or 11/12 into its cycle
  assert.ok(Math.abs(r[0].lr - 0.025 * (1 + Math.cos((Math.PI * 5) / 12))) < 1e-12, `lr ${r[0].lr}`);
  assert.ok(Math.abs(r[1].lr - 0.025 * (1 + Math.cos((Math.PI * 11) / 12))) < 1e-12, `lr ${r[1].lr}`);
  assert.ok(Math.abs(r[2].lr - r[0].lr) < 1e-12, 'the restart');
});

test('label noise changes training labels only: validation and test stay clean', async () => {
  // Symmetric noise at 0.5 over 4 classes leaves the true class the most frequent label of each
  // class, so a model learns the true classes: on clean labels it scores far above the ~0.5 a
  // perfect model would get on noisy ones, while it cannot fit the noisy training labels.
  const {
    records: r,
    summary,
    logs,
  } = await records({ ...base, dataset: syntheticSplits(800, 80, 4), epochs: 6, method: 'base', labelNoise: 0.5 });
  assert.ok(
    logs.includes('label noise: 360 of 720 training labels replaced by another class (rate 0.5)'),
    logs.join('\n'),
  );
  assert.ok(
    r.at(-1)!.val_acc > 0.9 && summary.test_acc > 0.9,
    `clean validation ${r.at(-1)!.val_acc} and test ${summary.test_acc}`,
  );
  assert.ok(r.at(-1)!.train_acc < 0.6, `noisy training labels ${r.at(-1)!.train_acc}`);
});

const resumable: Record<string, TrainOptions> = {
  'EMA and SWA teaching beside the bank': {
    method: 'dfl',
    emaDecay: 0.9,
    emaTeacher: 'bank',
    swaStart: 0.25,
    swaTeacher: 'bank',
    resetCycle: 2,
    teachers: 2,
    skipWorseTeachers: false,
  },
  'PS-KD': { method: 'base', softTargets: 'pskd' },
  'DLB with teachers': { method: 'sd', softTargets: 'dlb', teachers: 2 },
  'restarts with cycle-end teachers': {
    method: 'dfl',
    schedule: 'cosine-restarts',
    restartCycle: 2,
    teacherSource: 'cycle-end',
    teachers: 2,
  },
  'diverse selection under label noise': {
    method: 'dfl',
    teacherSource: 'diverse',
    teachers: 2,
    labelNoise: 0.2,
    resetCycle: 2,
  },
};
for (const [what, o] of Object.entries(resumable)) {
  test(`${what}: a run interrupted mid-epoch and resumed ends exactly as an uninterrupted one`, async () => {
    const data = syntheticSplits(300, 60, 4);
    const cfg = { ...base, dataset: data, epochs: 4, ...o };
    const a = tmp('traj-full');
    const full = await train({ ...cfg, out: a }).summary;
    const b = tmp('traj-cut');
    const ctl = new AbortController();
    const first = train({ ...cfg, out: b, signal: ctl.signal });
    first.on('batch', (p) => {
      if (p.epoch === 3 && p.batch === 3) ctl.abort();
    });
    assert.equal((await first.summary).interrupted, true);
    const resumed = await train({ resume: b, dataset: data }).summary;
    assert.deepEqual(
      [resumed.test_acc, resumed.test_loss, resumed.test_ensemble_acc],
      [full.test_acc, full.test_loss, full.test_ensemble_acc],
    );
    const ta = checkpointTensors(a),
      tb = checkpointTensors(b);
    assert.deepEqual([...tb.keys()].sort(), [...ta.keys()].sort());
    for (const [k, v] of ta) assert.deepEqual(tb.get(k), v, `${k} differs after resume`);
    const strip = (r: EpochRecord) => ({ ...r, seconds: 0, images_per_sec: 0 });
    const ra = fs
      .readFileSync(path.join(a, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => strip(JSON.parse(l)));
    const rb = fs
      .readFileSync(path.join(b, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => strip(JSON.parse(l)));
    assert.deepEqual(rb, ra);
  });
}
