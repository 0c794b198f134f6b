// The reset plan, the lr schedules and the teacher bank as pure functions.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { BankEntry } from '../../dist/records.js';
import { headLayers, isResetEpoch, lrAt } from '../../dist/train/schedule.js';
import { offerToBank, teacherWeights } from '../../dist/train/teachers.js';

test('reset happens before epochs 1 + k*cycle, never before epoch 1', () => {
  const epochs = Array.from({ length: 12 }, (_, i) => i + 1).filter((e) => isResetEpoch(e, 4, true));
  assert.deepEqual(epochs, [5, 9]);
  assert.deepEqual(
    Array.from({ length: 5 }, (_, i) => i + 1).filter((e) => isResetEpoch(e, 1, true)),
    [2, 3, 4, 5],
  );
  assert.equal(isResetEpoch(5, 4, false), false);
});

test('the head is the last D parametric layers, clipped to the model', () => {
  assert.deepEqual(headLayers(6, 1), [5]);
  assert.deepEqual(headLayers(6, 3), [3, 4, 5]);
  assert.deepEqual(headLayers(2, 5), [0, 1]);
});

test('cosine schedule: lr at start, half at the middle, ~0 at the end; warmup ramps linearly', () => {
  const s = { schedule: 'cosine' as const, lr: 0.1, epochs: 10, warmupEpochs: 0, milestones: [], gamma: 0.1 };
  assert.equal(lrAt(s, 0), 0.1);
  assert.ok(Math.abs(lrAt(s, 5) - 0.05) < 1e-12);
  assert.ok(lrAt(s, 9.999) < 1e-6);
  const w = { ...s, warmupEpochs: 2 };
  assert.ok(Math.abs(lrAt(w, 1) - 0.05) < 1e-12);
  assert.ok(Math.abs(lrAt(w, 2) - 0.1) < 1e-12);
  assert.ok(Math.abs(lrAt(w, 6) - 0.05) < 1e-12, 'cosine spans the epochs after warmup');
});

test('step schedule multiplies by gamma after each milestone', () => {
  const s = { schedule: 'step' as const, lr: 0.1, epochs: 10, warmupEpochs: 0, milestones: [3, 6], gamma: 0.1 };
  assert.equal(lrAt(s, 2.99), 0.1);
  assert.ok(Math.abs(lrAt(s, 3) - 0.01) < 1e-12);
  assert.ok(Math.abs(lrAt(s, 7) - 0.001) < 1e-12);
  assert.equal(lrAt({ ...s, schedule: 'constant' }, 7), 0.1);
});

const e = (id: number, score: number): BankEntry => ({ id, epoch: id, score });

test('meaningful bank: fills to K, then replaces the lowest only when the newcomer scores higher', () => {
  let bank: BankEntry[] = [];
  for (const [id, score] of [
    [1, 0.5],
    [2, 0.6],
    [3, 0.4],
  ] as const) {
    const d = offerToBank(bank, e(id, score), 3, 'meaningful');
    assert.equal(d.added, id);
    assert.equal(d.replaced, null);
    bank = d.bank;
  }
  let d = offerToBank(bank, e(4, 0.45), 3, 'meaningful');
  assert.deepEqual([d.added, d.replaced], [4, 3]);
  assert.deepEqual(d.bank.map((b) => b.id).sort(), [1, 2, 4]);
  d = offerToBank(d.bank, e(5, 0.45), 3, 'meaningful');
  assert.deepEqual([d.added, d.replaced], [null, null], 'a tie keeps the older teacher');
  d = offerToBank(d.bank, e(6, 0.2), 3, 'meaningful');
  assert.deepEqual([d.added, d.replaced], [null, null]);
  assert.equal(bank.length, 3, 'the input bank is not mutated');
});

test('previous bank keeps the last K epochs; random bank never changes', () => {
  let bank: BankEntry[] = [];
  for (let id = 1; id <= 5; ++id) bank = offerToBank(bank, e(id, 0), 2, 'previous').bank;
  assert.deepEqual(bank.map((b) => b.id).sort(), [4, 5]);
  const fixed = [e(-1, 0.1), e(-2, 0.1)];
  const d = offerToBank(fixed, e(7, 0.9), 2, 'random');
  assert.deepEqual(d.bank, fixed);
  assert.equal(d.added, null);
});

test('teacher weighting: uniform is native averaging, score is a softmax of scores', () => {
  assert.equal(teacherWeights([e(1, 0.5)], 'uniform'), null);
  assert.equal(teacherWeights([e(1, 0.5)], 'confidence'), null);
  const w = teacherWeights([e(1, 0.5), e(2, 0.55)], 'score')!;
  assert.ok(Math.abs(w[0] + w[1] - 1) < 1e-12);
  assert.ok(Math.abs(w[1] / w[0] - Math.exp(0.05 / 0.05)) < 1e-9, 'ratio exp(delta / 0.05)');
});
