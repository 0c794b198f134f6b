// The zoo's parameter names and shapes are exactly those of the PyTorch twins (torchvision models
// with the documented CIFAR changes; test/fixtures/zoo_reference.json from scripts/fixtures/zoo_reference.py).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { buildModel, MODEL_NAMES } from '../../dist/models/zoo.js';
import { binding, noise } from '../helpers/native.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ref = JSON.parse(fs.readFileSync(path.join(here, '../../test/fixtures/zoo_reference.json'), 'utf8')) as {
  models: Record<string, [string, number[]][]>;
  macs_32x32: Record<string, number>;
};

for (const name of Object.keys(ref.models)) {
  test(`${name}: state_dict names and shapes match torchvision`, () => {
    const m = new binding.Model(buildModel(name, { numClasses: 10, inChannels: 3, height: 32, width: 32 }), 0);
    const ours = m
      .tensors()
      .map((t) => [t.name, t.name.endsWith('num_batches_tracked') ? [] : t.shape] as [string, number[]]);
    const sort = (a: [string, number[]][]) => [...a].sort((x, y) => (x[0] < y[0] ? -1 : 1));
    assert.deepEqual(sort(ours), sort(ref.models[name]));
    m.dispose();
  });
}

test('every zoo model runs forward at a small width, any class and channel count', () => {
  for (const name of MODEL_NAMES) {
    const spec = buildModel(name, { numClasses: 7, inChannels: 1, height: 32, width: 32, width_multiplier: 0.125 });
    const m = new binding.Model(spec, 3);
    const y = m.forwardSync(noise(2 * 32 * 32), 2);
    assert.equal(y.length, 14, name);
    assert.ok(y.every(Number.isFinite), name);
    assert.ok(m.info().macsPerImage > 0);
    m.dispose();
  }
});

test('MACs per image match PyTorch forward-hook counts (every zoo model at 32x32)', () => {
  for (const [name, want] of Object.entries(ref.macs_32x32)) {
    const m = new binding.Model(buildModel(name, { numClasses: 10, inChannels: 3, height: 32, width: 32 }), 0);
    assert.equal(m.info().macsPerImage, want, name);
    m.dispose();
  }
});
