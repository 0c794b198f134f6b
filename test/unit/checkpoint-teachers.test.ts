// Teachers in checkpoints: saved in their folded (inference) layout, and version-1 checkpoints,
// which stored whole teacher models, still resume.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { readState } from '../../dist/io/checkpoint.js';
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
  const oldTeachers = decodeSafetensors(fs.readFileSync(path.join(out, 'checkpoint', before.files.teachers!)), 'v1 teachers').tensors;
  assert.ok([...oldTeachers.keys()].some((k) => k.endsWith('features.1.running_mean')), 'v1 teachers carry their BN');

  const run = train({ resume: out, epochs: 4, dataset: syntheticSplits(200, 40, 4) });
  const records = [];
  for await (const r of run) records.push(r);
  await run.summary;
  assert.deepEqual(records.map((r) => r.epoch), [4]);
  assert.equal(records[0].bank.length, 2);
  assert.ok(records[0].distill_loss > 0 && records[0].ensemble_val_acc !== null, 'the restored teachers taught epoch 4');

  const after = readState(path.join(out, 'checkpoint'));
  assert.equal(after.version, 2);
  assert.deepEqual([after.config.skipWorseTeachers, after.config.resetUntil], [false, 1], 'the resumed run kept the recipe it started with, now written out');
  const folded = decodeSafetensors(fs.readFileSync(path.join(out, 'checkpoint', after.files.teachers!)), 'v2 teachers').tensors;
  const names = [...folded.keys()].filter((k) => k.startsWith(`teacher${after.bank[0].id}.`)).map((k) => k.replace(/^teacher\d+\./, '')).sort();
  // BN folded into the convs: each conv gains a bias, the BN tensors are gone.
  assert.deepEqual(names, ['classifier.bias', 'classifier.weight', 'features.0.bias', 'features.0.weight', 'features.4.bias', 'features.4.weight']);
});
