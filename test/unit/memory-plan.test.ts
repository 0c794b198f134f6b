// The device-memory estimate a GPU run is checked against before training (Model.memoryPlan): it
// matches what a step really allocates, and reports the backend's limit. Run on the CPU backend,
// whose allocations are counted the same way.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { noise, tinyModel } from '../helpers/native.js';

const B = 16,
  PER = 3 * 8 * 8;
const step = {
  batch: B,
  labels: Int32Array.from({ length: B }, (_, i) => i % 4),
  lr: 0.1,
  momentum: 0.9,
  weightDecay: 5e-4,
  nesterov: true,
  decoupled: false,
  labelSmoothing: 0,
  temperature: 4,
  dropoutSeed: 1,
};

test('memoryPlan matches the memory a DFL step allocates (within 5%)', async () => {
  const m = tinyModel(1);
  const plan = m.memoryPlan(B, 3);
  assert.equal(plan.total, plan.weights + plan.activations + plan.workspace + plan.teachers);
  const teachers = [m.snapshot(), m.snapshot(), m.snapshot()];
  await m.trainStep({ ...step, x: noise(B * PER, 1), teachers, distillWeight: 1 });
  // The plan also counts the uint8 batch of resident images, which this step did not use.
  const used = m.info().deviceBytes + teachers.reduce((s, t) => s + t.info().deviceBytes, 0) + B * PER;
  assert.ok(Math.abs(plan.total - used) <= 0.05 * used, `plan ${plan.total} vs allocated ${used}`);
  assert.ok(m.memoryPlan(B, 0).teachers === 0);
  for (const x of [m, ...teachers]) x.dispose();
});

test("memoryPlan reports the backend's limit and where it comes from", () => {
  const m = tinyModel(1);
  const before = process.env.DFL_MAX_MEMORY_MB;
  process.env.DFL_MAX_MEMORY_MB = '3';
  try {
    const plan = m.memoryPlan(B, 2);
    assert.equal(plan.availableSource, 'DFL_MAX_MEMORY_MB');
    // 3 MiB beyond what the model holds already.
    assert.equal(plan.available, 3 * 2 ** 20 + m.info().deviceBytes);
  } finally {
    if (before === undefined) delete process.env.DFL_MAX_MEMORY_MB;
    else process.env.DFL_MAX_MEMORY_MB = before;
    m.dispose();
  }
  assert.throws(() => m.memoryPlan(0, 1), /disposed|batch/);
});
