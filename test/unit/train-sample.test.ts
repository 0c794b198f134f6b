// End to end on real images: a small DFL run on a stratified subset of the bundled CIFAR-10 sample
// (JPEG mirror) must land well above chance (10%).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { loadData, stratifiedSplit, subset } from '../../dist/data/index.js';
import { train } from '../../dist/train/trainer.js';

test('DFL on 2,000 real CIFAR-10 images for 4 epochs reaches > 30% test accuracy (chance: 10%)', async (t) => {
  const sample = await loadData(undefined, {});
  const pickTrain = stratifiedSplit(sample.train.labels, 0.2, 1).val; // 2,000 of 10,000, stratified
  const pickTest = stratifiedSplit(sample.test!.labels, 0.5, 1).val; // 1,000 of 2,000
  const dataset = { train: subset(sample.train, pickTrain), test: subset(sample.test!, pickTest) };
  const run = train({
    dataset,
    model: 'vgg8',
    width: 0.25,
    epochs: 4,
    batchSize: 64,
    lr: 0.05,
    resetCycle: 2,
    teachers: 2,
    seed: 1,
  });
  const records = [];
  for await (const r of run) records.push(r);
  const s = await run.summary;
  t.diagnostic(
    `test_acc ${s.test_acc} top5 ${s.test_top5} loss ${s.test_loss.toFixed(3)} ece ${s.test_ece.toFixed(3)}`,
  );
  assert.equal(records.length, 4);
  assert.equal(records[2].reset, true);
  assert.ok(records.at(-1)!.bank.length === 2);
  assert.equal(s.n, 1000);
  assert.ok(s.test_acc > 0.3, `test accuracy ${s.test_acc}`);
  assert.ok(s.test_top5 > 0.75, `top-5 ${s.test_top5}`);
  assert.ok(s.test_ece >= 0 && s.test_ece < 0.3);
});
