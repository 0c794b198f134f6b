import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULT_CONFIG, methodUses, resolveConfig } from '../../dist/config.js';
import { ConfigError } from '../../dist/errors.js';

test('defaults resolve; later layers override earlier ones', () => {
  const c = resolveConfig({ epochs: 3 }, { epochs: 5, lr: 0.2 });
  assert.equal(c.epochs, 5);
  assert.equal(c.lr, 0.2);
  assert.equal(c.method, DEFAULT_CONFIG.method);
  assert.equal(c.temperature, 4);
  assert.equal(c.distillWeight, 1);
  assert.equal(c.teachers, 3);
  assert.equal(c.valSize, 0.1);
  assert.equal(c.momentum, 0.9);
  assert.equal(c.weightDecay, 5e-4);
});

test('invalid values get one error style naming the option', () => {
  assert.throws(
    () => resolveConfig({ epochs: 0 }),
    (e: Error) =>
      e instanceof ConfigError &&
      /^Expected an integer in \[1, 100000\] for epochs but received 0 \(number\)$/.test(e.message),
  );
  assert.throws(
    () => resolveConfig({ method: 'magic' }),
    /Expected one of base, reset, sd, dfl for method but received 'magic'/,
  );
  assert.throws(() => resolveConfig({ lr: Number.NaN }), /for lr but received NaN/);
  assert.throws(() => resolveConfig({ batchSize: 1 }), /for batchSize/);
  assert.throws(() => resolveConfig({ milestones: [30, 'abc'] }), /for milestones but received \[30, 'abc'\]$/);
});

test('unknown keys are rejected with a suggestion', () => {
  assert.throws(() => resolveConfig({ batch_size: 3 }), /Unknown option 'batch_size' \(did you mean 'batchSize'\?\)/);
});

test('methods switch teachers and reset as in the paper', () => {
  assert.deepEqual(methodUses('base'), { teachers: false, reset: false });
  assert.deepEqual(methodUses('reset'), { teachers: false, reset: true });
  assert.deepEqual(methodUses('sd'), { teachers: true, reset: false });
  assert.deepEqual(methodUses('dfl'), { teachers: true, reset: true });
});

test('typos get the nearest option name', () => {
  assert.throws(() => resolveConfig({ epochz: 1 }), /Unknown option 'epochz' \(did you mean 'epochs'\?\)/);
  assert.throws(() => resolveConfig({ 'distill-wieght': 1 }), /did you mean 'distillWeight'/);
  assert.throws(
    () => resolveConfig({ zzzzzzzz: 1 }),
    (e: Error) => !/did you mean/.test(e.message),
  );
});

test('train presets resolve, later layers override them, and each is the study arm it cites', async () => {
  const { TRAIN_PRESETS, PRESET_NAMES } = await import('../../dist/presets.js');
  const { PRESETS: GRIDS } = await import('../../dist/study/grid.js');
  const fs = await import('node:fs');
  assert.deepEqual(PRESET_NAMES, ['noisy-labels']);
  for (const name of PRESET_NAMES) {
    const preset = TRAIN_PRESETS[name];
    const c = resolveConfig(preset.options) as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(preset.options)) assert.deepEqual(c[k], v, `${name}: ${k}`);
    assert.ok(fs.existsSync(new URL(`../../${preset.evidence}`, import.meta.url)), `${name}: ${preset.evidence}`);
  }
  const noisy = resolveConfig(TRAIN_PRESETS['noisy-labels'].options, { dlbWeight: 0.5 });
  assert.equal(noisy.method, 'base');
  assert.equal(noisy.softTargets, 'dlb');
  assert.equal(noisy.dlbTemperature, 3);
  assert.equal(noisy.dlbWeight, 0.5);
  // the study measured exactly these options
  for (const grid of ['round2', 'round2-noise', 'round2-long', 'round2-resnet'])
    assert.deepEqual(GRIDS[grid].arms.dlb, TRAIN_PRESETS['noisy-labels'].options, grid);
});
