// Two options from the reproduction study (docs/study/README.md): no reset late in the schedule
// (resetUntil) and no teaching by snapshots worse than the student (skipWorseTeachers).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULT_CONFIG, resolveConfig, resolveSavedConfig } from '../../dist/config.js';
import { ConfigError } from '../../dist/errors.js';
import type { EpochRecord } from '../../dist/records.js';
import { isResetEpoch } from '../../dist/train/schedule.js';
import { teachingEntries } from '../../dist/train/teachers.js';
import { train } from '../../dist/train/trainer.js';
import { syntheticSplits } from '../helpers/synthetic.js';

test('resetUntil: resets only while (epoch - 1) < until * epochs; 1 keeps every reset', () => {
  const resets = (until: number, epochs = 20, cycle = 5) =>
    Array.from({ length: epochs }, (_, i) => i + 1).filter((e) => isResetEpoch(e, cycle, true, until, epochs));
  assert.deepEqual(resets(1), [6, 11, 16]);
  assert.deepEqual(resets(0.75), [6, 11], 'epoch 16 starts at 75%: no reset there');
  assert.deepEqual(resets(0.76), [6, 11, 16]);
  assert.deepEqual(resets(0.5), [6]);
  assert.deepEqual(resets(0), []);
  assert.deepEqual(
    Array.from({ length: 12 }, (_, i) => i + 1).filter((e) => isResetEpoch(e, 3, true)),
    [4, 7, 10],
    'defaults: no limit',
  );
  assert.equal(DEFAULT_CONFIG.resetUntil, 0.7, 'the default from the study: no reset in the last 30%');
  assert.throws(
    () => resolveConfig({ resetUntil: 1.5 }),
    (e: Error) => e instanceof ConfigError && /\[0, 1\] for resetUntil/.test(e.message),
  );
});

test('skipWorseTeachers: only teachers scoring higher than the student teach, all of them right after a reset', () => {
  const bank = [
    { id: 3, epoch: 3, score: 0.6 },
    { id: 5, epoch: 5, score: 0.7 },
    { id: 6, epoch: 6, score: 0.65 },
  ];
  assert.deepEqual(
    teachingEntries(bank, true, 0.65, false).map((b) => b.id),
    [5],
    'a tie does not teach (the last snapshot is the student itself)',
  );
  assert.deepEqual(
    teachingEntries(bank, true, 0.71, false),
    [],
    'a student better than every teacher learns from the labels alone',
  );
  assert.deepEqual(
    teachingEntries(bank, true, 0.71, true).map((b) => b.id),
    [3, 5, 6],
    'after a reset every snapshot beats the fresh head',
  );
  assert.deepEqual(
    teachingEntries(bank, true, null, false).map((b) => b.id),
    [3, 5, 6],
    'no student score yet',
  );
  assert.deepEqual(
    teachingEntries(bank, false, 0.99, false).map((b) => b.id),
    [3, 5, 6],
    'off: the whole bank teaches',
  );
  assert.equal(DEFAULT_CONFIG.skipWorseTeachers, true, 'the default from the study');
});

test('a config saved before the two options existed reads as it ran (the paper recipe); one that names them keeps them', () => {
  const old = resolveSavedConfig({ method: 'dfl', epochs: 20 });
  assert.deepEqual([old.skipWorseTeachers, old.resetUntil, old.epochs], [false, 1, 20]);
  const recent = resolveSavedConfig({ method: 'dfl', skipWorseTeachers: true, resetUntil: 0.5 });
  assert.deepEqual([recent.skipWorseTeachers, recent.resetUntil], [true, 0.5]);
  const fresh = resolveConfig({ method: 'dfl' });
  assert.deepEqual([fresh.skipWorseTeachers, fresh.resetUntil], [true, 0.7], "a new run gets today's defaults");
  assert.throws(() => resolveSavedConfig({ methd: 'dfl' }), /Unknown option 'methd'/, 'still validated');
});

test('skipWorseTeachers in training: random teachers teach until the student beats them, then the labels alone', async () => {
  const run = train({
    model: 'vgg8',
    width: 0.125,
    batchSize: 32,
    lr: 0.05,
    threads: 1,
    seed: 5,
    dataset: syntheticSplits(300, 60, 4),
    epochs: 5,
    method: 'sd',
    teachers: 2,
    teacherSource: 'random',
    skipWorseTeachers: true,
  });
  const records: EpochRecord[] = [];
  for await (const r of run) records.push(r);
  await run.summary;
  assert.ok(records[0].distill_loss > 0, 'epoch 1: no student score yet, every teacher teaches');
  let beaten = 0;
  for (let i = 1; i < records.length; ++i) {
    const best = Math.max(...records[i - 1].bank.map((b) => b.score));
    if (records[i - 1].val_acc >= best) {
      beaten += 1;
      assert.equal(
        records[i].distill_loss,
        0,
        `epoch ${i + 1}: the student (${records[i - 1].val_acc}) beats every teacher (${best})`,
      );
    } else if (records[i - 1].val_acc < best)
      assert.ok(records[i].distill_loss > 0, `epoch ${i + 1}: a better teacher teaches`);
  }
  assert.ok(beaten >= 1, 'the student beats the random teachers within 5 epochs');
});
