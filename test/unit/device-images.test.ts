// Resident image sets (DeviceImages): a batch made on the device from indices and augmentation
// draws is the batch the host makes (augmentBatch / normalizeBatch), so a step or a forward from it
// gives the same numbers. Run on the CPU backend here; on a GPU the C++ tests cover the kernels.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { binding, tinyModel } from '../helpers/native.js';

const N = 12,
  C = 3,
  S = 8,
  PER = C * S * S;
const images = Uint8Array.from({ length: N * PER }, (_, i) => (i * 37 + 11) % 256);
const mean = Float32Array.from([0.4, 0.5, 0.6]),
  std = Float32Array.from([0.2, 0.25, 0.3]);
const sgd = {
  lr: 0.05,
  momentum: 0.9,
  weightDecay: 5e-4,
  nesterov: true,
  decoupled: false,
  labelSmoothing: 0.1,
  distillWeight: 1,
  temperature: 4,
  dropoutSeed: 3,
};

function hostBatch(indices: Int32Array, augmentSeed: number | null): Float32Array {
  const b = indices.length,
    raw = new Uint8Array(b * PER),
    x = new Float32Array(b * PER);
  indices.forEach((k, j) => raw.set(images.subarray(k * PER, (k + 1) * PER), j * PER));
  if (augmentSeed === null) binding.normalizeBatch(x, raw, b, C, S, S, mean, std);
  else binding.augmentBatch(x, raw, b, C, S, S, 2, true, mean, std, augmentSeed);
  return x;
}

test('a training step from resident images equals the step from the host batch', async () => {
  const resident = new binding.DeviceImages(images, N, C, S, S, 'cpu');
  assert.deepEqual(resident.info(), {
    count: N,
    channels: C,
    height: S,
    width: S,
    deviceBytes: N * PER,
    device: 'cpu',
  });
  const a = tinyModel(7),
    b = tinyModel(7);
  const teachers = [a.snapshot()];
  const teachersB = [b.snapshot()];
  for (let s = 0; s < 3; ++s) {
    const indices = Int32Array.from([5, 0, 11, 3, 3, 8], (v) => (v + s) % N);
    const labels = Int32Array.from(indices, (k) => k % 4);
    const fromDevice = await a.trainStep({
      ...sgd,
      images: { images: resident, indices, mean, std, augment: { pad: 2, flip: true, seed: 40 + s } },
      labels,
      teachers,
    });
    const fromHost = await b.trainStep({
      ...sgd,
      x: hostBatch(indices, 40 + s),
      batch: indices.length,
      labels,
      teachers: teachersB,
    });
    assert.deepEqual(fromDevice, fromHost);
  }
  assert.deepEqual(a.getParams(), b.getParams());
  const indices = Int32Array.from({ length: N }, (_, k) => k);
  const eval1 = await a.forwardImages({ images: resident, indices, mean, std });
  assert.deepEqual(eval1, await a.forward(hostBatch(indices, null), N));
  const t = a.snapshot();
  assert.deepEqual(
    await t.forwardImages({ images: resident, indices, mean, std }),
    await t.forward(hostBatch(indices, null), N),
  );
  for (const m of [a, b, t, ...teachers, ...teachersB, resident]) m.dispose();
  assert.ok(resident.isDisposed());
});

test("image batches are checked: indices in range, mean/std per channel, the model's image size", async () => {
  const resident = new binding.DeviceImages(images, N, C, S, S);
  const m = tinyModel(1);
  const labels = Int32Array.from([0, 1]);
  await assert.rejects(
    async () =>
      m.trainStep({ ...sgd, images: { images: resident, indices: Int32Array.from([0, N]), mean, std }, labels }),
    /indices in \[0, 12\)/,
  );
  await assert.rejects(
    async () => m.forwardImages({ images: resident, indices: Int32Array.from([0]), mean: new Float32Array(2), std }),
    /mean/,
  );
  assert.throws(() => new binding.DeviceImages(images, N + 1, C, S, S), /Uint8Array of/);
  const small = new binding.DeviceImages(new Uint8Array(2 * C * 4 * 4), 2, C, 4, 4);
  await assert.rejects(
    async () => m.forwardImages({ images: small, indices: Int32Array.from([0]), mean, std }),
    /4x4 but the model takes 3x8x8|the images are 3x4x4/,
  );
  for (const x of [m, resident, small]) x.dispose();
});
