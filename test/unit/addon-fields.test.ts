// The addon has no defaults of its own: every hyperparameter of a training step comes from the
// caller (the config's defaults live in src/config.ts only), and a missing one is a TypeError that
// names it, thrown before anything runs; the model stays usable.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { noise, tinyModel } from '../helpers/native.js';

const full = {
  x: noise(2 * 3 * 8 * 8),
  labels: Int32Array.from([0, 1]),
  batch: 2,
  lr: 0.1,
  momentum: 0.9,
  weightDecay: 5e-4,
  nesterov: true,
  decoupled: false,
  labelSmoothing: 0,
  distillWeight: 1,
  temperature: 4,
  dropoutSeed: 1,
};

const REQUIRED: [keyof typeof full, string][] = [
  ['lr', 'a finite number'],
  ['momentum', 'a finite number'],
  ['weightDecay', 'a finite number'],
  ['nesterov', 'a boolean'],
  ['decoupled', 'a boolean'],
  ['labelSmoothing', 'a finite number'],
  ['distillWeight', 'a finite number'],
  ['temperature', 'a finite number'],
  ['dropoutSeed', 'an integer in [0, 9007199254740991]'],
];

test('trainStep refuses a missing hyperparameter with a TypeError naming it', async () => {
  const m = tinyModel();
  for (const [key, what] of REQUIRED) {
    const { [key]: _left, ...rest } = full;
    assert.throws(
      () => m.trainStep(rest as never),
      (e: Error) => {
        assert.ok(e instanceof TypeError, `${key}: ${e.constructor.name}`);
        assert.equal(e.message, `Expected ${what} for ${key} but received undefined`);
        return true;
      },
    );
  }
  // the optional parts of a step may be left out: no teachers, no soft targets, plain cross-entropy
  const stats = await m.trainStep(full as never);
  assert.ok(Number.isFinite(stats.loss) && stats.finite);
  assert.equal(stats.logits, undefined, 'returnLogits left out: no logits');
  m.dispose();
});
