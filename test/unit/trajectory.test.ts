// The trajectory options as pure pieces, on known values: the EMA and SWA averages, SWA's batch-norm
// recompute, PS-KD's weight and store, symmetric label noise, diversity-aware selection, the
// warm-restart and SWA schedules, and the option combinations the config refuses.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { resolveConfig, resolveFields } from '../../dist/config.js';
import { symmetricLabelNoise } from '../../dist/data/label-noise.js';
import { GraphBuilder } from '../../dist/models/spec.js';
import type { BankEntry } from '../../dist/records.js';
import { counterOffsets, Ema, recomputeBatchNorm, shadowSpec, Swa } from '../../dist/train/averages.js';
import { isCycleEnd, isResetEpoch, lrAt, resetCycleOf, swaFirstEpoch } from '../../dist/train/schedule.js';
import { ONE_HOT_LOGIT, PredictionStore, pskdWeight } from '../../dist/train/targets.js';
import { disagreementOf, offerDiverse, offerToBank } from '../../dist/train/teachers.js';
import { binding } from '../helpers/native.js';

const f32 = (xs: number[]) => Float32Array.from(xs);

test('EMA: a plain mean of the weights until the decay takes over, then d * ema + (1 - d) * w; counters copied', () => {
  assert.deepEqual(
    [1, 2, 3, 9, 10, 1000].map((s) => Ema.decayAt(0.9, s)),
    [0.5, 2 / 3, 0.75, 0.9, 0.9, 0.9],
  );
  const ema = new Ema(0.9, f32([0, 10]), f32([1, 5]));
  ema.update(f32([2, 20]), f32([3, 7]), [1]); // d = 1/2
  assert.deepEqual([...ema.params], [1, 15]);
  assert.deepEqual([...ema.buffers], [2, 7], 'buffer 1 is a counter: copied');
  ema.update(f32([4, 30]), f32([6, 8]), [1]); // d = 2/3: the mean of 0, 2, 4 and of 10, 20, 30
  assert.deepEqual([...ema.params], [Math.fround(2), Math.fround(20)]);
  for (let s = 3; s <= 12; ++s) ema.update(f32([4, 30]), f32([6, 8]), [1]);
  assert.equal(ema.steps, 12);
  // until 1 / (s + 1) < 1 - decay the EMA is the plain mean (of 0 and s ones: s / (s + 1)); then d stays 0.9
  const m = new Ema(0.9, f32([0]), f32([]));
  for (let s = 1; s <= 9; ++s) m.update(f32([1]), f32([]), []);
  assert.ok(Math.abs(m.params[0] - 0.9) < 1e-6, `the mean of 0 and nine ones is 0.9, got ${m.params[0]}`);
  m.update(f32([1]), f32([]), []);
  assert.ok(
    Math.abs(m.params[0] - 0.91) < 1e-6,
    `then 0.9 * 0.9 + 0.1 = 0.91 (not the mean 10/11), got ${m.params[0]}`,
  );
  assert.throws(
    () => ema.update(f32([1]), f32([1, 2]), []),
    /Expected 2 parameters and 2 buffer values for the EMA but received 1 and 2/,
  );
});

test('SWA: the running mean of the models added, (m - avg) / n each', () => {
  const swa = new Swa();
  swa.add(f32([1, -2, 0.5]));
  swa.add(f32([3, 2, 0.25]));
  swa.add(f32([5, 3, 0]));
  assert.equal(swa.count, 3);
  assert.deepEqual([...swa.params!], [3, 1, 0.25]);
  assert.throws(() => swa.add(f32([1])), /Expected 3 parameters for SWA but received 1/);
});

test("SWA batch-norm recompute: each BN gets the mean over batches of the batches' mean and unbiased variance", async () => {
  // input -> bn -> gap -> linear: the BN's statistics are those of the normalised input itself.
  const g = new GraphBuilder(2, 2, 2);
  const bn = g.bn('bn', 0);
  g.linear('fc', g.flatten(g.gap(bn)), 3);
  const spec = g.build();
  const shadow = new binding.Model(shadowSpec(spec), 0);
  assert.ok(
    shadowSpec(spec)
      .nodes.filter((n) => n.op === 'bn')
      .every((n) => n.momentum === 1),
  );
  const n = 5,
    per = 8;
  const images = Uint8Array.from({ length: n * per }, (_, i) => (i * 37 + 11) % 256);
  const data = {
    images,
    labels: new Int32Array(n),
    n,
    channels: 2,
    height: 2,
    width: 2,
    classNames: ['a', 'b', 'c'],
    source: 'test',
  };
  const buffers = await recomputeBatchNorm(shadow, shadow.getParams(), {
    data,
    mean: [0, 0],
    std: [1, 1],
    batchSize: 2,
    augment: null,
    seedOf: () => 0,
  });
  // batches [0,1], [2,3]; the lone image 4 is left out
  const stats = (c: number) =>
    [
      [0, 1],
      [2, 3],
    ].map((batch) => {
      const v = batch.flatMap((i) => [0, 1, 2, 3].map((p) => images[i * per + c * 4 + p] / 255));
      const m = v.reduce((a, b) => a + b, 0) / v.length;
      return { m, var: v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1) };
    });
  const info = Object.fromEntries(
    shadow
      .tensors()
      .filter((t) => t.kind === 'buffer')
      .map((t) => [t.name, t]),
  );
  for (let c = 0; c < 2; ++c) {
    const s = stats(c);
    assert.ok(
      Math.abs(buffers[info['bn.running_mean'].offset + c] - (s[0].m + s[1].m) / 2) < 1e-6,
      `mean of channel ${c}`,
    );
    assert.ok(
      Math.abs(buffers[info['bn.running_var'].offset + c] - (s[0].var + s[1].var) / 2) < 1e-6,
      `variance of channel ${c}`,
    );
  }
  assert.deepEqual(
    counterOffsets(shadow.tensors()).map((o) => buffers[o]),
    [2],
    'the counter holds the batch count',
  );
  shadow.dispose();
});

test('PS-KD: the weight ramps linearly to alpha_T; the store gives earlier logits, or the label for an unseen sample', () => {
  assert.deepEqual(
    [1, 10, 20].map((e) => pskdWeight(0.8, e, 20)),
    [0.04, 0.4, 0.8],
  );
  const store = new PredictionStore(3, 2);
  store.record(Int32Array.from([2]), f32([0.5, -1]));
  assert.deepEqual([...store.gather([2, 0], [0, 1])], [0.5, -1, 0, ONE_HOT_LOGIT]);
  assert.throws(() => new PredictionStore(3, 2, new Float32Array(5)), /Expected 6 logits and 3 flags/);
});

test('symmetric label noise: exactly round(rate * n) labels, each moved to another class, seeded; the rest untouched', () => {
  const labels = Int32Array.from({ length: 1000 }, (_, i) => i % 10);
  const a = symmetricLabelNoise(labels, 10, 0.2, 42);
  assert.equal(a.flipped.length, 200);
  const flipped = new Set(a.flipped);
  let moved = 0;
  const to = new Array(10).fill(0);
  for (let i = 0; i < labels.length; ++i) {
    if (flipped.has(i)) {
      assert.notEqual(a.labels[i], labels[i], `item ${i} is flipped to another class`);
      assert.ok(a.labels[i] >= 0 && a.labels[i] < 10);
      to[a.labels[i]] += 1;
      moved += 1;
    } else assert.equal(a.labels[i], labels[i]);
  }
  assert.equal(moved, 200);
  assert.ok(
    to.every((c) => c > 5),
    `every class receives flipped labels: ${to}`,
  );
  assert.deepEqual(symmetricLabelNoise(labels, 10, 0.2, 42), a, 'the same seed flips the same labels the same way');
  assert.notDeepEqual(symmetricLabelNoise(labels, 10, 0.2, 43).flipped, a.flipped);
  assert.equal(labels[0], 0, 'the input is not changed');
  assert.equal(symmetricLabelNoise(labels, 10, 0, 1).flipped.length, 0);
  assert.throws(() => symmetricLabelNoise(labels, 10, 1, 1), /Expected a rate in \[0, 1\)/);
});

const e = (id: number, score: number): BankEntry => ({ id, epoch: id, score });

test('diverse bank: the most redundant member leaves; below the score floor the lowest leaves first', () => {
  assert.equal(disagreementOf([0, 1, 2, 3], [0, 1, 0, 0]), 0.5);
  // 1 and 2 predict alike; 3 differs from both: with 4 offered, 1 or 2 is the most redundant.
  const predictions = new Map<number, number[]>([
    [1, [0, 0, 0, 0]],
    [2, [0, 0, 0, 1]],
    [3, [1, 1, 1, 1]],
    [4, [2, 2, 0, 0]],
  ]);
  const bank = [e(1, 0.6), e(2, 0.61), e(3, 0.6)];
  // mean disagreement with the other three: 1: (1/4 + 1 + 1/2)/3, 2: (1/4 + 3/4 + 3/4)/3, 3: (1 + 3/4 + 1)/3,
  // 4: (1/2 + 3/4 + 1)/3: 1 and 2 tie as the most redundant, and the lower score (1) leaves
  let d = offerDiverse(bank, e(4, 0.6), { predictions, floor: 0.05 });
  assert.deepEqual([d.added, d.replaced, d.bank.map((b) => b.id)], [4, 1, [4, 2, 3]]);
  // a candidate that repeats member 1: 1, 2 and 5 tie at 1.25/3; of the lowest scores (1 and 5, 0.60) the older leaves
  predictions.set(5, [0, 0, 0, 0]);
  d = offerDiverse(bank, e(5, 0.6), { predictions, floor: 0.05 });
  assert.deepEqual([d.added, d.replaced], [5, 1]);
  d = offerDiverse(bank, e(5, 0.59), { predictions, floor: 0.05 });
  assert.deepEqual([d.added, d.replaced, d.bank], [null, null, bank], 'a lower-scoring twin does not enter');
  // the floor: teacher 3 scores 0.1 below the best (0.7) and leaves first, whatever its diversity
  d = offerDiverse([e(1, 0.7), e(2, 0.69), e(3, 0.6)], e(4, 0.68), { predictions, floor: 0.05 });
  assert.deepEqual([d.added, d.replaced], [4, 3]);
  d = offerDiverse([e(1, 0.7), e(2, 0.69), e(3, 0.68)], e(4, 0.5), { predictions, floor: 0.05 });
  assert.deepEqual([d.added, d.replaced], [null, null], 'a candidate below the floor does not enter');
  // while the bank has room, every snapshot enters; offerToBank needs the predictions
  assert.equal(offerToBank([e(1, 0.1)], e(2, 0.0), 3, 'diverse').added, 2);
  assert.throws(() => offerToBank(bank, e(4, 0.6), 3, 'diverse'), /needs the validation predictions/);
  assert.deepEqual(
    offerToBank([e(2, 0.9), e(4, 0.1)], e(6, 0.5), 2, 'cycle-end').bank.map((b) => b.id),
    [4, 6],
    'cycle-end keeps the last K',
  );
});

test('warm restarts: cosine from lr to 0 in every cycle; resets and cycle-end snapshots at the restarts', () => {
  const s = {
    schedule: 'cosine-restarts' as const,
    lr: 0.1,
    epochs: 20,
    warmupEpochs: 0,
    milestones: [],
    gamma: 0.1,
    restartCycle: 5,
  };
  assert.equal(lrAt(s, 0), 0.1);
  assert.ok(Math.abs(lrAt(s, 2.5) - 0.05) < 1e-12);
  assert.ok(lrAt(s, 4.999) < 1e-6);
  assert.equal(lrAt(s, 5), 0.1, 'restart');
  assert.ok(Math.abs(lrAt(s, 17.5) - 0.05) < 1e-12);
  const c = { schedule: 'cosine-restarts' as const, resetCycle: 4, restartCycle: 5 };
  assert.equal(resetCycleOf(c), 5);
  assert.equal(resetCycleOf({ ...c, schedule: 'cosine' }), 4);
  assert.deepEqual(
    Array.from({ length: 20 }, (_, i) => i + 1).filter((ep) => isResetEpoch(ep, resetCycleOf(c), true)),
    [6, 11, 16],
  );
  assert.deepEqual(
    Array.from({ length: 20 }, (_, i) => i + 1).filter((ep) => isCycleEnd(ep, 5)),
    [5, 10, 15, 20],
  );
});

test('SWA schedule: the epochs after the start fraction are averaged and run at swaLr', () => {
  assert.deepEqual(
    [
      [0.75, 20],
      [0.7, 20],
      [0, 20],
      [1, 20],
      [0.5, 3],
    ].map(([f, n]) => swaFirstEpoch(f, n)),
    [16, 15, 1, 21, 2],
  );
  const s = {
    schedule: 'cosine' as const,
    lr: 0.1,
    epochs: 20,
    warmupEpochs: 0,
    milestones: [],
    gamma: 0.1,
    swaStart: 0.75,
    swaLr: 0.01,
  };
  assert.ok(Math.abs(lrAt(s, 14.99) - lrAt({ ...s, swaLr: undefined }, 14.99)) < 1e-15, 'the schedule before');
  assert.equal(lrAt(s, 15), 0.01);
  assert.equal(lrAt(s, 19.99), 0.01);
  assert.ok(lrAt({ ...s, swaLr: undefined }, 19.99) < 1e-4, 'without swaLr the schedule continues');
});

test('options that need others are refused, naming what to set', () => {
  assert.throws(
    () => resolveConfig({ method: 'sd', emaTeacher: 'alone' }),
    /Expected emaDecay > 0 \(e\.g\. 0\.999\) for emaTeacher 'alone'/,
  );
  assert.throws(
    () => resolveConfig({ method: 'base', emaDecay: 0.99, emaTeacher: 'bank' }),
    /Expected method sd or dfl for emaTeacher 'bank' but received 'base'/,
  );
  assert.throws(
    () => resolveConfig({ method: 'dfl', swaTeacher: 'alone' }),
    /Expected swaStart < 1 \(e\.g\. 0\.75\) for swaTeacher 'alone'/,
  );
  assert.throws(
    () => resolveConfig({ teacherSource: 'cycle-end' }),
    /Expected schedule 'cosine-restarts' for teacherSource 'cycle-end' but received 'cosine'/,
  );
  assert.throws(() => resolveConfig({ swaLr: 0.01 }), /Expected swaStart < 1 for swaLr 0\.01/);
  assert.throws(
    () => resolveConfig({ labelNoise: 1 }),
    /Expected a number in \[0, 0\.99\] for labelNoise but received 1/,
  );
  assert.throws(() => resolveConfig({ softTargets: 'pkd' }), /Expected one of none, pskd, dlb for softTargets/);
  assert.doesNotThrow(() => resolveFields({ teacherSource: 'cycle-end' }), 'a layer alone is checked field by field');
  const ok = resolveConfig({
    method: 'sd',
    emaDecay: 0.999,
    emaTeacher: 'alone',
    schedule: 'cosine-restarts',
    teacherSource: 'cycle-end',
    swaStart: 0.75,
    swaLr: 0.01,
  });
  assert.equal(ok.emaTeacher, 'alone');
  const d = resolveConfig({});
  assert.deepEqual(
    [d.emaDecay, d.emaTeacher, d.swaStart, d.swaLr, d.swaTeacher, d.softTargets, d.labelNoise],
    [0, 'off', 1, undefined, 'off', 'none', 0],
    'all off by default',
  );
});
