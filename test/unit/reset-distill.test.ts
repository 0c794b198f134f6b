// Reset touches exactly the head; distillation pulls the student toward a fixed bank.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { headLayers } from '../../dist/train/schedule.js';
import { binding, noise, tinyModel } from '../helpers/native.js';

const B = 8,
  PER = 3 * 8 * 8;
const stepOpts = (x: Float32Array, labels: Int32Array, extra: Record<string, unknown> = {}) => ({
  x,
  labels,
  batch: B,
  lr: 0.05,
  momentum: 0.9,
  weightDecay: 5e-4,
  nesterov: true,
  decoupled: false,
  labelSmoothing: 0,
  distillWeight: 0,
  temperature: 4,
  dropoutSeed: 0,
  ...extra,
});
const labelsOf = (seed: number) => Int32Array.from({ length: B }, (_, i) => (i * 7 + seed) % 4);

test('reset re-initialises exactly the head layers and clears their momentum', async () => {
  const m = tinyModel(5);
  for (let s = 0; s < 3; ++s) await m.trainStep(stepOpts(noise(B * PER, s + 1), labelsOf(s)) as never);
  const p0 = m.getParams(),
    m0 = m.getMomentum(),
    b0 = m.getBuffers();
  const layers = headLayers(m.info().numLayers, 2); // the last conv+bn and the linear
  m.reinitLayers(layers, 99, 'reinit');
  const p1 = m.getParams(),
    m1 = m.getMomentum(),
    b1 = m.getBuffers();
  for (const t of m.tensors()) {
    const inHead = layers.includes(t.layer);
    const before = (t.kind === 'buffer' ? b0 : p0).subarray(t.offset, t.offset + t.size);
    const after = (t.kind === 'buffer' ? b1 : p1).subarray(t.offset, t.offset + t.size);
    const same = before.every((v, i) => v === after[i]);
    if (!inHead) {
      assert.ok(same, `${t.name} is outside the head and must not change`);
      if (t.kind !== 'buffer')
        assert.deepEqual(
          m1.subarray(t.offset, t.offset + t.size),
          m0.subarray(t.offset, t.offset + t.size),
          `${t.name} momentum kept`,
        );
      continue;
    }
    if (t.kind !== 'buffer') {
      assert.ok(
        m1.subarray(t.offset, t.offset + t.size).every((v) => v === 0),
        `${t.name} momentum cleared`,
      );
      assert.ok(
        m0.subarray(t.offset, t.offset + t.size).some((v) => v !== 0),
        `${t.name} had momentum before`,
      );
    }
    if (t.name.endsWith('running_var'))
      assert.ok(
        after.every((v) => v === 1),
        t.name,
      );
    else if (t.name.endsWith('running_mean') || t.name.endsWith('num_batches_tracked'))
      assert.ok(
        after.every((v) => v === 0),
        t.name,
      );
    else if (t.name.endsWith('.1.weight') || t.name === 'features.5.weight')
      assert.ok(
        after.every((v) => v === 1),
        `${t.name} (BN weight) back to 1`,
      );
    else assert.ok(!same, `${t.name} is in the head and must change`);
  }
});

test('shrink-perturb mixes old weights with fresh ones: lambda*theta + p*fresh', async () => {
  const a = tinyModel(5),
    fresh = tinyModel(5);
  await a.trainStep(stepOpts(noise(B * PER, 3), labelsOf(1)) as never);
  fresh.setParams(a.getParams());
  const old = a.getParams();
  const head = headLayers(a.info().numLayers, 1);
  a.reinitLayers(head, 7, 'shrink-perturb', 0.4, 0.1);
  fresh.reinitLayers(head, 7, 'reinit');
  const got = a.getParams(),
    f = fresh.getParams();
  for (const t of a.tensors().filter((t) => t.kind !== 'buffer')) {
    for (let i = t.offset; i < t.offset + t.size; ++i) {
      const want = head.includes(t.layer) ? Math.fround(Math.fround(0.4 * old[i]) + Math.fround(0.1 * f[i])) : old[i];
      assert.ok(Math.abs(got[i] - want) <= 1e-6 * (1 + Math.abs(want)), `${t.name}[${i - t.offset}]`);
    }
  }
});

function klToEnsemble(student: Float32Array, teachers: Float32Array[], nc: number, T: number): number {
  const soft = (z: Float32Array, o: number) => {
    const m = Math.max(...z.subarray(o, o + nc));
    const e = Array.from(z.subarray(o, o + nc), (v) => Math.exp((v - m) / T));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  let kl = 0;
  const n = student.length / nc;
  for (let i = 0; i < n; ++i) {
    const q = soft(student, i * nc);
    const p = new Array(nc).fill(0);
    for (const t of teachers) soft(t, i * nc).forEach((v, c) => (p[c] += v / teachers.length));
    for (let c = 0; c < nc; ++c) if (p[c] > 0) kl += p[c] * Math.log(p[c] / q[c]);
  }
  return kl / n;
}

test('with alpha > 0 and a fixed bank, student-teacher KL on held-out data falls below the alpha = 0 run', async () => {
  const teachers = [tinyModel(11).snapshot(), tinyModel(12).snapshot()];
  const held = noise(64 * PER, 999);
  const teacherHeld = teachers.map((t) => t.forwardSync(held, 64));
  const kl: Record<string, number> = {};
  for (const alpha of [0, 1]) {
    const s = tinyModel(3);
    for (let step = 0; step < 60; ++step) {
      await s.trainStep(
        stepOpts(noise(B * PER, 100 + step), labelsOf(step), { teachers, distillWeight: alpha }) as never,
      );
    }
    kl[alpha] = klToEnsemble(s.forwardSync(held, 64), teacherHeld, 4, 4);
    s.dispose();
  }
  assert.ok(
    kl[1] < 0.5 * kl[0],
    `KL with distillation ${kl[1].toFixed(4)} should be well below without ${kl[0].toFixed(4)}`,
  );
});

test('a training step is bitwise identical for 1 and 2 threads', async () => {
  const run = async (threads: number) => {
    binding.setThreads(threads);
    const m = tinyModel(4);
    const t = tinyModel(8).snapshot();
    for (let s = 0; s < 3; ++s)
      await m.trainStep(stepOpts(noise(B * PER, s), labelsOf(s), { teachers: [t], distillWeight: 1 }) as never);
    return m.getParams();
  };
  const one = await run(1),
    two = await run(2);
  binding.setThreads(0);
  let maxDiff = 0;
  for (let i = 0; i < one.length; ++i) maxDiff = Math.max(maxDiff, Math.abs(one[i] - two[i]));
  assert.equal(maxDiff, 0, 'kernels parallelise only over outputs, so the thread count changes nothing');
});
