// Teachers in checkpoints: saved in their folded (inference) layout, and version-1 checkpoints,
// which stored whole teacher models, still resume.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { loadBinding } from '../../dist/binding.js';
import { readState, restoreModels, saveCheckpoint } from '../../dist/io/checkpoint.js';
import { decodeSafetensors } from '../../dist/io/safetensors.js';
import { train } from '../../dist/train/trainer.js';
import { syntheticSplits } from '../helpers/synthetic.js';

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures');

test('a version-1 checkpoint (whole teacher models) resumes; the next save is version 2 with folded teachers', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-v1-'));
  fs.cpSync(path.join(fixtures, 'checkpoint-v1'), path.join(out, 'checkpoint'), { recursive: true });
  const before = readState(path.join(out, 'checkpoint'));
  assert.equal(before.version, 1);
  // written before skipWorseTeachers and resetUntil existed: read at the values it ran with, not today's defaults
  assert.deepEqual([before.config.skipWorseTeachers, before.config.resetUntil], [false, 1]);
  const oldTeachers = decodeSafetensors(
    fs.readFileSync(path.join(out, 'checkpoint', before.files.teachers!)),
    'v1 teachers',
  ).tensors;
  assert.ok(
    [...oldTeachers.keys()].some((k) => k.endsWith('features.1.running_mean')),
    'v1 teachers carry their BN',
  );

  const run = train({ resume: out, epochs: 4, dataset: syntheticSplits(200, 40, 4) });
  const records = [];
  for await (const r of run) records.push(r);
  await run.summary;
  assert.deepEqual(
    records.map((r) => r.epoch),
    [4],
  );
  assert.equal(records[0].bank.length, 2);
  assert.ok(
    records[0].distill_loss > 0 && records[0].ensemble_val_acc !== null,
    'the restored teachers taught epoch 4',
  );

  const after = readState(path.join(out, 'checkpoint'));
  assert.equal(after.version, 2);
  assert.deepEqual(
    [after.config.skipWorseTeachers, after.config.resetUntil],
    [false, 1],
    'the resumed run kept the recipe it started with, now written out',
  );
  const folded = decodeSafetensors(
    fs.readFileSync(path.join(out, 'checkpoint', after.files.teachers!)),
    'v2 teachers',
  ).tensors;
  const names = [...folded.keys()]
    .filter((k) => k.startsWith(`teacher${after.bank[0].id}.`))
    .map((k) => k.replace(/^teacher\d+\./, ''))
    .sort();
  // BN folded into the convs: each conv gains a bias, the BN tensors are gone.
  assert.deepEqual(names, [
    'classifier.bias',
    'classifier.weight',
    'features.0.bias',
    'features.0.weight',
    'features.4.bias',
    'features.4.weight',
  ]);
});

test('the teachers file is the same bytes whatever order the bank map holds its teachers in (a resumed run rebuilds it in bank order)', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-order-'));
  await train({
    model: 'vgg8',
    width: 0.125,
    batchSize: 32,
    threads: 1,
    seed: 3,
    method: 'dfl',
    teachers: 2,
    epochs: 2,
    dataset: syntheticSplits(96, 32, 4),
    out,
  }).summary;
  const dir = path.join(out, 'checkpoint');
  const state = readState(dir);
  assert.equal(state.bank.length, 2);
  const { Model } = loadBinding();
  const student = new Model(state.spec, 0, 'cpu');
  const teachers = restoreModels(dir, state, student, 'cpu');
  try {
    const ids = [...teachers.keys()];
    const { format: _f, version: _v, files: _files, sha256: _s, final: _final, ...rest } = state;
    const bytes = (order: number[]) => {
      const d = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-order-save-'));
      saveCheckpoint(d, { student, teachers: new Map(order.map((id) => [id, teachers.get(id)!])), state: rest });
      return fs.readFileSync(path.join(d, readState(d).files.teachers!));
    };
    assert.ok(bytes(ids).equals(bytes([...ids].reverse())));
  } finally {
    for (const t of teachers.values()) t.dispose();
    student.dispose();
  }
});
