// The study: its statistics on known inputs, the grid and its shards, the report from a folder of
// finished runs, and skip/resume of a real (tiny) grid.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { resolveConfig } from '../../dist/config.js';
import { ConfigError } from '../../dist/errors.js';
import type { EpochRecord, TrainSummary } from '../../dist/records.js';
import { loadGrid, parseShard, planRuns, shardRuns, validateGrid, type StudyGrid } from '../../dist/study/grid.js';
import { collectRuns, writeStudyReport } from '../../dist/study/report.js';
import { runState, runStudy, type StudyEvent } from '../../dist/study/runner.js';
import { mean, pairedDifference, sampleStd, tCentralProbability, tCritical, verdict } from '../../dist/study/stats.js';
import { writeImageFolder } from '../helpers/data.js';

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `dfl-study-${name}-`));
const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('mean and sample standard deviation', () => {
  assert.equal(mean([1, 2, 3, 4]), 2.5);
  close(sampleStd([2, 4, 4, 4, 5, 5, 7, 9]), Math.sqrt(32 / 7), 1e-12, 'std (n - 1)');
  assert.ok(Number.isNaN(sampleStd([1])));
  assert.ok(Number.isNaN(mean([])));
});

test('Student t: two-sided 95% critical values match the tables', () => {
  // t_{0.975, df} from standard tables (4 decimals)
  const table: [number, number][] = [
    [1, 12.7062],
    [2, 4.3027],
    [3, 3.1824],
    [4, 2.7764],
    [5, 2.5706],
    [6, 2.4469],
    [9, 2.2622],
    [10, 2.2281],
    [19, 2.093],
    [29, 2.0452],
    [30, 2.0423],
    [60, 2.0003],
    [120, 1.9799],
  ];
  for (const [df, t] of table) close(tCritical(df), t, 6e-5, `t(0.975, ${df})`);
  close(tCritical(4, 0.99), 4.6041, 1e-4, 't(0.995, 4)');
  close(tCritical(10, 0.9), 1.8125, 1e-4, 't(0.95, 10)');
  close(tCentralProbability(0, 3), 0, 1e-15, 'P(|T| < 0)');
  close(tCentralProbability(1, 1), 0.5, 1e-12, 'Cauchy: P(|T| < 1) = 1/2');
  close(tCentralProbability(Math.SQRT2, 2), Math.SQRT2 / 2, 1e-12, 'df 2: t / sqrt(2 + t^2)');
  assert.throws(() => tCritical(0), RangeError);
  assert.throws(() => tCritical(2.5), RangeError);
});

test('paired difference: per-seed differences, mean, t-interval over the shared seeds, verdict', () => {
  const arm = new Map([
    [0, 0.8],
    [1, 0.82],
    [2, 0.81],
    [7, 0.9],
  ]);
  const ref = new Map([
    [0, 0.79],
    [1, 0.8],
    [2, 0.8],
    [3, 0.7],
  ]);
  const d = pairedDifference(arm, ref);
  assert.deepEqual(d.seeds, [0, 1, 2], 'only seeds both arms have');
  d.differences.forEach((x, i) => close(x, [0.01, 0.02, 0.01][i], 1e-12, `difference ${i}`));
  assert.equal(d.n, 3);
  close(d.mean, 0.04 / 3, 1e-12, 'mean');
  close(d.std, Math.sqrt(((0.01 - 0.04 / 3) ** 2 * 2 + (0.02 - 0.04 / 3) ** 2) / 2), 1e-12, 'std');
  const half = (4.302652729911275 * d.std) / Math.sqrt(3);
  close(d.interval!.low, d.mean - half, 1e-9, 'low');
  close(d.interval!.high, d.mean + half, 1e-9, 'high');
  close(d.interval!.t, 4.302652729911275, 1e-9, 't(0.975, 2)');
  assert.equal(verdict(d), 'no clear difference');
  const gain = pairedDifference(
    new Map([
      [0, 0.82],
      [1, 0.83],
      [2, 0.825],
    ]),
    new Map([
      [0, 0.8],
      [1, 0.81],
      [2, 0.806],
    ]),
  );
  assert.equal(verdict(gain), 'gain');
  assert.equal(
    verdict(
      pairedDifference(
        new Map([
          [0, 0.7],
          [1, 0.71],
        ]),
        new Map([
          [0, 0.8],
          [1, 0.8],
        ]),
      ),
    ),
    'loss',
  );
  const one = pairedDifference(new Map([[0, 0.8]]), new Map([[0, 0.7]]));
  assert.equal(one.interval, null);
  assert.equal(verdict(one), 'too few seeds');
});

test("the cpu preset: the paper's 8 ablation arms and today's DFL x 5 seeds, base is the reference", () => {
  const g = loadGrid('cpu');
  assert.deepEqual(Object.keys(g.arms), [
    'base',
    'reset',
    'sd-previous',
    'sd-random',
    'sd-meaningful',
    'dfl',
    'dfl-score',
    'dfl-shrink-perturb',
    'dfl-gated',
  ]);
  assert.deepEqual(g.seeds, [0, 1, 2, 3, 4]);
  assert.equal(g.reference, 'base');
  const runs = planRuns(g, '/s', { data: '/d', threads: 2 });
  assert.equal(runs.length, 45);
  const recipe = (arm: string) => {
    const c = runs.find((r) => r.arm === arm)!.config;
    return [c.method, c.skipWorseTeachers, c.resetUntil];
  };
  assert.deepEqual(recipe('dfl'), ['dfl', false, 1], "the paper's DFL, whatever today's defaults");
  assert.deepEqual(recipe('reset'), ['reset', false, 1]);
  assert.deepEqual(recipe('dfl-gated'), ['dfl', true, 0.7]);
  const todays = resolveConfig({ method: 'dfl' });
  assert.deepEqual(
    recipe('dfl-gated'),
    [todays.method, todays.skipWorseTeachers, todays.resetUntil],
    'dfl-gated is what train --method dfl runs',
  );
  assert.deepEqual(
    runs.slice(0, 2).map((r) => [r.arm, r.seed, r.dir]),
    [
      ['base', 0, path.join('/s', 'base', 'seed0')],
      ['reset', 0, path.join('/s', 'reset', 'seed0')],
    ],
  );
  const sdr = runs.find((r) => r.arm === 'sd-random' && r.seed === 3)!;
  assert.equal(sdr.config.method, 'sd');
  assert.equal(sdr.config.teacherSource, 'random');
  assert.equal(sdr.config.seed, 3);
  assert.equal(sdr.config.epochs, 20);
  assert.equal(sdr.config.resetCycle, 5);
  assert.equal(sdr.config.data, '/d');
  assert.equal(sdr.config.out, path.join('/s', 'sd-random', 'seed3'));
  assert.equal(loadGrid('paper').options.model, 'vgg16');
});

test('shards: every run in exactly one shard, deterministically, sizes within one', () => {
  const runs = planRuns(loadGrid('cpu'), '/s');
  for (let n = 1; n <= 9; ++n) {
    const seen = new Map<string, number>();
    const sizes: number[] = [];
    for (let i = 1; i <= n; ++i) {
      const part = shardRuns(runs, { index: i, count: n });
      assert.deepEqual(
        part.map((r) => r.dir),
        shardRuns(runs, { index: i, count: n }).map((r) => r.dir),
        'deterministic',
      );
      sizes.push(part.length);
      for (const r of part) seen.set(r.dir, (seen.get(r.dir) ?? 0) + 1);
    }
    assert.equal(seen.size, runs.length, `${n} shards cover the grid`);
    assert.ok(
      [...seen.values()].every((c) => c === 1),
      `${n} shards: no run twice`,
    );
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `${n} shards balanced`);
  }
  assert.deepEqual(parseShard('2/4'), { index: 2, count: 4 });
  for (const bad of ['0/4', '5/4', '1/0', 'a/b', '2', '-1/3'])
    assert.throws(
      () => parseShard(bad),
      (e: Error) => e instanceof ConfigError && /Expected I\/N/.test(e.message),
      bad,
    );
});

test('grid files: unknown options, run-specific keys, bad names and clashes with common options are errors', () => {
  const ok = validateGrid(
    {
      options: { epochs: 3 },
      arms: { a: { method: 'base' }, b: { 'distill-weight': 0.5, method: 'dfl' } },
      seeds: [0, 2],
    },
    'g.json',
  );
  assert.equal(ok.reference, 'a', 'no base arm: the first arm is the reference');
  assert.equal(ok.arms.b.distillWeight, 0.5, 'kebab-case keys as in --config files');
  assert.throws(
    () => validateGrid({ arms: { a: { methd: 'base' } } }, 'g.json'),
    /g\.json arm 'a': Unknown option 'methd' \(did you mean 'method'\?\)/,
  );
  assert.throws(() => validateGrid({ arms: { a: { seed: 1 } } }, 'g.json'), /'seed' is set by the study/);
  assert.throws(() => validateGrid({ arms: { 'a/b': {} } }, 'g.json'), /arm name 'a\/b'/);
  assert.throws(() => validateGrid({ arms: {} }, 'g.json'), /at least one named arm/);
  assert.throws(() => validateGrid({ arms: { a: {} }, seeds: [1, 1] }, 'g.json'), /distinct non-negative integers/);
  assert.throws(
    () => validateGrid({ arms: { a: {} }, reference: 'z' }, 'g.json'),
    /"reference" must name one of the arms/,
  );
  assert.throws(() => validateGrid({ arms: { a: {} }, extra: 1 }, 'g.json'), /unknown key 'extra'/);
  assert.throws(() => planRuns(loadGrid('cpu'), '/s', { method: 'dfl' }), /method is set by arm 'base'/);
  assert.throws(
    () => loadGrid('no-such-preset'),
    /not a preset \(cpu, paper, round2, round2-long, round2-noise, round2-resnet\) nor a JSON file/,
  );
});

// --- the report from a folder of fake finished runs ---------------------------------------------

function fakeRun(
  dir: string,
  arm: string,
  seed: number,
  testAcc: number,
  vals: number[],
  wall: number,
  extra: Partial<TrainSummary> = {},
  options: Record<string, unknown> = {},
): void {
  const runDir = path.join(dir, arm, `seed${seed}`);
  fs.mkdirSync(runDir, { recursive: true });
  const config = resolveConfig({
    method: arm.startsWith('base') ? 'base' : 'dfl',
    seed,
    epochs: vals.length,
    out: runDir,
    ...options,
  });
  const summary = {
    test_acc: testAcc,
    test_top5: 0.99,
    test_loss: 0.6,
    test_ece: 0.05,
    n: 10000,
    method: config.method,
    model: 'vgg8',
    seed,
    device: 'cpu',
    epochs: vals.length,
    best_val_acc: Math.max(...vals),
    final_val_acc: vals.at(-1)!,
    seconds: wall - 10,
    images_per_sec: 1000,
    params: 1,
    macs_per_image: 1,
    class_names: [],
    interrupted: false,
    config,
    ...extra,
  } satisfies TrainSummary;
  fs.writeFileSync(path.join(runDir, 'summary.json'), JSON.stringify(summary));
  const metrics = vals.map(
    (v, i) =>
      ({
        epoch: i + 1,
        lr: 0.05,
        train_loss: 1,
        train_acc: 0.5,
        distill_loss: 0,
        val_acc: v,
        val_loss: 1,
        ensemble_val_acc: null,
        disagreement: null,
        reset: false,
        bank: [],
        replaced: null,
        added: null,
        seconds: 1,
        images_per_sec: 1,
      }) satisfies EpochRecord,
  );
  fs.writeFileSync(path.join(runDir, 'metrics.jsonl'), metrics.map((m) => JSON.stringify(m)).join('\n') + '\n');
  fs.writeFileSync(
    path.join(runDir, 'study-run.json'),
    JSON.stringify({
      wall_seconds: wall,
      started: '2026-11-30T10:00:00Z',
      finished: '2026-11-30T10:20:00Z',
      host: 'h',
      cpu: 'cpu',
      threads: 2,
      version: '0',
    }),
  );
}

test('report: per-arm table, paired differences with t-intervals, unfinished runs, svg dots and curves', () => {
  const dir = tmp('report');
  fakeRun(dir, 'base', 0, 0.8, [0.5, 0.7], 600);
  fakeRun(dir, 'base', 1, 0.81, [0.6, 0.7], 620);
  fakeRun(dir, 'base', 2, 0.79, [0.4, 0.7], 640);
  fakeRun(dir, 'dfl', 0, 0.82, [0.6, 0.8], 1200);
  fakeRun(dir, 'dfl', 1, 0.82, [0.6, 0.8], 1260);
  fakeRun(dir, 'dfl', 2, 0.8, [0.6, 0.8], 1320);
  fs.mkdirSync(path.join(dir, 'sd', 'seed0', 'checkpoint'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'sd', 'seed0', 'checkpoint', 'state.json'), '{}');
  fs.mkdirSync(path.join(dir, 'dfl', 'seed3', 'checkpoint'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'dfl', 'seed3', 'checkpoint', 'state.json'), '{}');
  fs.mkdirSync(path.join(dir, 'notes')); // not an arm with runs: ignored
  // base/seed0 as an older build wrote it, before two options existed: they count at the values it
  // ran with (skipWorseTeachers false, resetUntil 1), so today's dfl runs differ from it in them too
  const oldSummary = path.join(dir, 'base', 'seed0', 'summary.json');
  const old = JSON.parse(fs.readFileSync(oldSummary, 'utf8'));
  delete old.config.resetUntil;
  delete old.config.skipWorseTeachers;
  fs.writeFileSync(oldSummary, JSON.stringify(old));

  const { markdown, svg, stats } = writeStudyReport(dir);
  assert.equal(fs.readFileSync(path.join(dir, 'study.md'), 'utf8'), markdown);
  assert.ok(fs.existsSync(path.join(dir, 'study.svg')));
  assert.deepEqual(
    stats.arms.map((a) => [a.arm, a.n]),
    [
      ['base', 3],
      ['dfl', 3],
      ['sd', 0],
    ],
  );
  assert.match(markdown, /\| sd \| 0 \| - \| - \| - \| - \| - \| - \| \(no finished run yet\) \|/);
  close(stats.arms[0].testAcc.mean, 0.8, 1e-12, 'base mean');
  close(stats.arms[0].testAcc.std, 0.01, 1e-12, 'base std');
  close(stats.arms[0].anytimeAcc.mean, 0.6, 1e-12, 'base anytime = mean over epochs and seeds');
  close(stats.arms[1].wallSeconds, 1260, 1e-9, 'wall time from study-run.json');
  assert.deepEqual(stats.arms[1].differs, { method: 'dfl', skipWorseTeachers: true, resetUntil: 0.7 });
  const p = stats.paired.dfl.test;
  assert.deepEqual(
    p.differences.map((x) => Math.round(x * 1e6) / 1e6),
    [0.02, 0.01, 0.01],
  );
  // mean 1.333 pp, sd 0.577 pp, t(0.975, 2) = 4.3027 -> half width 1.434 pp
  // train acc 50 from the last epoch; ensemble: a summary without the field trained without teachers is its own test accuracy, with teachers unknown
  assert.match(
    markdown,
    /\| base \| 3 \| 80\.00 ± 1\.00 \| 60\.00 ± 5\.00 \| 50\.00 ± 0\.00 \| 5\.00 ± 0\.00 \| 80\.00 ± 1\.00 \| 10 min 20 s \| \(reference\) \|/,
  );
  assert.match(
    markdown,
    /\| dfl \| 3 \| 81\.33 ± 1\.15 \| 70\.00 ± 0\.00 \| 50\.00 ± 0\.00 \| 5\.00 ± 0\.00 \| - \| 21 min 00 s \|/,
  );
  assert.match(
    markdown,
    /\| dfl \| 3 \| \+2\.00 \| \+1\.00 \| \+1\.00 \| \+1\.33 \| \[-0\.10, \+2\.77\] \| no clear difference \|/,
  );
  assert.match(
    markdown,
    /\| dfl \| 3 \| \+10\.00 \| \+5\.00 \| \+15\.00 \| \+10\.00 \| \[-2\.42, \+22\.42\] \| no clear difference \|/,
    'anytime paired row',
  );
  assert.match(markdown, /6 finished, 2 unfinished \(dfl\/seed3, sd\/seed0\)/);
  assert.equal((svg.match(/<circle /g) ?? []).length, 6, 'one dot per finished run');
  assert.match(svg, /<title>dfl seed 2: 80\.00%<\/title>/);
  assert.equal((svg.match(/stroke-opacity="0.3"/g) ?? []).length, 6, 'one validation curve per run');
  assert.equal(collectRuns(dir).unfinished.length, 2);
  const csv = fs.readFileSync(path.join(dir, 'runs.csv'), 'utf8').trim().split('\n');
  assert.equal(
    csv[0],
    'arm,seed,test_acc,anytime_val_acc,final_val_acc,final_train_acc,test_ece,test_ensemble_acc,test_loss,epochs,wall_seconds,finished',
  );
  assert.equal(csv.length, 7, 'header + one line per finished run');
  assert.equal(csv[1], 'base,0,0.8,0.6,0.7,0.5,0.05,0.8,0.6,2,600,2026-11-30T10:20:00Z');
  assert.equal(
    csv[4],
    'dfl,0,0.82,0.7,0.8,0.5,0.05,,0.6,2,1200,2026-11-30T10:20:00Z',
    'an older dfl summary has no ensemble accuracy',
  );
  fs.rmSync(dir, { recursive: true, force: true });
});

test('report: a control tuned on validation, and paired test accuracy, ECE and ensemble accuracy against the reference and the control', () => {
  const dir = tmp('controls');
  const grid = validateGrid(
    {
      name: 'c',
      arms: { base: {}, 'base-ls0.1': { labelSmoothing: 0.1 }, 'base-ls0.2': { labelSmoothing: 0.2 }, ema: {} },
      reference: 'base',
      controls: [['base-ls0.1', 'base-ls0.2']],
    },
    'c.json',
  );
  fs.writeFileSync(path.join(dir, 'study.json'), JSON.stringify({ grid, common: {} }));
  for (const seed of [0, 1, 2]) {
    fakeRun(dir, 'base', seed, [0.8, 0.81, 0.79][seed], [0.7], 600, { test_ece: 0.02 });
    // ls0.1 validates better than ls0.2 (0.72 vs 0.71): it is the control, although ls0.2 tests better
    fakeRun(dir, 'base-ls0.1', seed, [0.81, 0.81, 0.8][seed], [0.72], 600, { test_ece: 0.08 }, { labelSmoothing: 0.1 });
    fakeRun(
      dir,
      'base-ls0.2',
      seed,
      [0.83, 0.83, 0.82][seed],
      [0.71],
      600,
      { test_ece: 0.15 },
      { labelSmoothing: 0.2 },
    );
    fakeRun(dir, 'ema', seed, [0.82, 0.83, 0.81][seed], [0.73], 600, {
      test_ece: 0.03,
      test_ensemble_acc: [0.83, 0.84, 0.82][seed],
    });
  }
  const { markdown, stats } = writeStudyReport(dir);
  assert.deepEqual(stats.controls, [{ arm: 'base-ls0.1', pickedFrom: ['base-ls0.1', 'base-ls0.2'] }]);
  const vsBase = stats.paired.ema,
    vsLs = stats.pairedControls['base-ls0.1'].ema;
  assert.deepEqual(
    vsBase.test.differences.map((x) => Math.round(x * 1e6) / 1e6),
    [0.02, 0.02, 0.02],
  );
  assert.deepEqual(
    vsLs.test.differences.map((x) => Math.round(x * 1e6) / 1e6),
    [0.01, 0.02, 0.01],
  );
  assert.deepEqual(
    vsLs.ece.differences.map((x) => Math.round(x * 1e6) / 1e6),
    [-0.05, -0.05, -0.05],
  );
  assert.deepEqual(
    vsBase.ensemble.differences.map((x) => Math.round(x * 1e6) / 1e6),
    [0.03, 0.03, 0.03],
    'base (no teachers) is its own ensemble',
  );
  assert.match(
    markdown,
    /## Paired differences to base-ls0\.1, the best of base-ls0\.1, base-ls0\.2 by mean final validation accuracy: test accuracy, ECE, ensemble accuracy/,
  );
  // vs base-ls0.1: test +1.33 [-0.10, +2.77] (as in the report test above), ECE -5.00 exactly, ensemble +2.33
  assert.match(
    markdown,
    /\| ema \| 3 \| \+1\.33 \| \[-0\.10, \+2\.77\] \| no clear difference \| -5\.00 \| \[-5\.00, -5\.00\] \| lower \| 3 \| \+2\.33 \| \[\+0\.90, \+3\.77\] \| gain \|/,
  );
  assert.match(markdown, /## Paired differences to base \(the reference\): test accuracy, ECE, ensemble accuracy/);
  assert.match(markdown, /\| base-ls0\.2 \| 3 \| \+2\.67 \|/);
  assert.throws(
    () => validateGrid({ arms: { a: {} }, controls: [['a', 'z']] }, 'g.json'),
    /"controls" must be a list of arm names or lists of arm names/,
  );
  fs.rmSync(dir, { recursive: true, force: true });
});

test("the round2 preset: the running control grid's arms option for option, the new arms, regime-2 presets, and it continues the round-2 study folder", async () => {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const controls = loadGrid(path.join(root, 'docs', 'study', 'round2-controls-grid.json'));
  const r2 = loadGrid('round2');
  assert.deepEqual(Object.keys(r2.arms), [
    'base',
    'base-ls0.1',
    'base-ls0.2',
    'reset',
    'sd',
    'dfl',
    'dfl-gated',
    'ema',
    'swa',
    'pskd',
    'dlb',
    'snapshot-restart',
    'dfl-diverse',
  ]);
  assert.deepEqual(r2.controls, [['base-ls0.1', 'base-ls0.2']]);
  const common = { data: '/d', threads: 2 };
  const planned = new Map(planRuns(r2, '/s', common).map((r) => [r.dir, r.config]));
  for (const r of planRuns(controls, '/s', common))
    assert.deepEqual(planned.get(r.dir), r.config, `${r.arm} seed ${r.seed} trains as in the control grid`);
  assert.deepEqual(
    planRuns(loadGrid(path.join(root, 'docs', 'study', 'round2-grid.json')), '/s', common),
    planRuns(r2, '/s', common),
    'docs/study/round2-grid.json is the preset',
  );
  const c = (arm: string) => planned.get(path.join('/s', arm, 'seed0'))!;
  assert.deepEqual(
    [c('ema').method, c('ema').emaDecay, c('ema').emaTeacher, c('ema').skipWorseTeachers],
    ['sd', 0.999, 'alone', true],
  );
  assert.deepEqual([c('swa').method, c('swa').swaStart, c('swa').swaLr, c('swa').swaFinal], ['base', 0.75, 0.01, true]);
  assert.deepEqual(
    [c('pskd').softTargets, c('pskd').pskdAlpha, c('dlb').softTargets, c('dlb').dlbTemperature, c('dlb').dlbWeight],
    ['pskd', 0.8, 'dlb', 3, 1],
  );
  assert.deepEqual(
    [
      c('snapshot-restart').schedule,
      c('snapshot-restart').restartCycle,
      c('snapshot-restart').teacherSource,
      c('snapshot-restart').resetUntil,
    ],
    ['cosine-restarts', 5, 'cycle-end', 1],
  );
  assert.deepEqual(
    [c('dfl-diverse').teacherSource, c('dfl-diverse').skipWorseTeachers, c('dfl-diverse').resetUntil],
    ['diverse', true, 0.7],
  );
  const long = loadGrid('round2-long'),
    noise = loadGrid('round2-noise'),
    resnet = loadGrid('round2-resnet');
  assert.equal(Object.keys(long.arms).length, 33, '11 arms, each also with label smoothing 0.1 and 0.2');
  const lc = (g: StudyGrid, arm: string) => planRuns(g, '/s').find((r) => r.arm === arm)!.config;
  assert.deepEqual(
    [
      lc(long, 'base').epochs,
      lc(long, 'dfl').resetCycle,
      lc(long, 'snapshot-restart').restartCycle,
      lc(long, 'ema-ls0.1').labelSmoothing,
    ],
    [60, 15, 15, 0.1],
  );
  assert.deepEqual(
    [lc(noise, 'swa-ls0.2').labelNoise, lc(noise, 'swa-ls0.2').labelSmoothing, lc(noise, 'base').epochs],
    [0.2, 0.2, 20],
  );
  assert.deepEqual([lc(resnet, 'pskd').model, lc(resnet, 'pskd').width], ['resnet18', 0.25]);

  // The folder the control grid started (its study.json, by the build before these options): the
  // preset continues it, adding the new arms; finished runs are skipped.
  const dir = tmp('round2');
  fs.copyFileSync(path.join(root, 'test', 'fixtures', 'round2-study-record.json'), path.join(dir, 'study.json'));
  const record = JSON.parse(fs.readFileSync(path.join(dir, 'study.json'), 'utf8'));
  const narrowed = {
    ...r2,
    arms: Object.fromEntries(Object.entries(r2.arms).filter(([a]) => ['base', 'dfl-gated', 'ema', 'swa'].includes(a))),
    seeds: [0],
  };
  for (const r of planRuns(narrowed, dir, record.common, record.defaults))
    fakeRun(dir, r.arm, 0, 0.8, [0.7], 60, {}, { ...r.config, out: r.dir });
  const result = await runStudy({ grid: narrowed, dir, common: record.common });
  assert.deepEqual([result.ran, result.skipped], [0, 4]);
  const merged = JSON.parse(fs.readFileSync(path.join(dir, 'study.json'), 'utf8'));
  assert.deepEqual(Object.keys(merged.grid.arms), [
    'base',
    'base-ls0.1',
    'base-ls0.2',
    'reset',
    'sd',
    'dfl',
    'dfl-gated',
    'ema',
    'swa',
  ]);
  assert.deepEqual(merged.grid.controls, [['base-ls0.1', 'base-ls0.2']]);
  assert.deepEqual(merged.defaults, record.defaults, 'the study keeps the defaults it started with');
  fs.rmSync(dir, { recursive: true, force: true });
});

// --- a real tiny grid: skip finished runs, resume an interrupted one ----------------------------

test('runStudy: runs each arm x seed in <dir>/<arm>/seed<k>, resumes an interrupted run and skips finished ones', async () => {
  const work = tmp('grid');
  const data = path.join(work, 'images');
  await writeImageFolder(path.join(data, 'train'), ['a', 'b', 'c'], 12, { w: 8, h: 8 });
  await writeImageFolder(path.join(data, 'test'), ['a', 'b', 'c'], 4, { w: 8, h: 8 });
  const grid: StudyGrid = validateGrid(
    {
      name: 'tiny',
      options: { model: 'vgg8', width: 0.125, epochs: 2, batchSize: 8, valSize: 0.1, resetCycle: 1, teachers: 2 },
      arms: { base: { method: 'base' }, dfl: { method: 'dfl' } },
      seeds: [0],
    },
    'tiny',
  );
  const dir = path.join(work, 'study');
  const common = { data, threads: 1, cacheDir: path.join(work, 'cache') };

  // First pass: interrupt the second run (dfl seed 0) during its first epoch.
  const controller = new AbortController();
  const first: StudyEvent[] = [];
  const r1 = await runStudy({ grid, dir, common, signal: controller.signal }, (e) => {
    first.push(e);
    if (e.event === 'run' && e.arm === 'dfl') controller.abort();
  });
  assert.equal(r1.interrupted, true);
  assert.equal(runState(path.join(dir, 'base', 'seed0')), 'finished');
  assert.equal(runState(path.join(dir, 'dfl', 'seed0')), 'partial');
  assert.ok(fs.existsSync(path.join(dir, 'study.json')));

  // Second pass: base is skipped, dfl resumes and finishes.
  const second: StudyEvent[] = [];
  const r2 = await runStudy({ grid, dir, common }, (e) => second.push(e));
  assert.deepEqual(
    { ran: r2.ran, skipped: r2.skipped, interrupted: r2.interrupted },
    { ran: 1, skipped: 1, interrupted: false },
  );
  assert.deepEqual(
    second.filter((e) => e.event === 'skip').map((e) => (e as { arm: string }).arm),
    ['base'],
  );
  const resumed = second.find((e) => e.event === 'run') as Extract<StudyEvent, { event: 'run' }>;
  assert.equal(resumed.arm, 'dfl');
  assert.equal(resumed.resume, true);
  const summary = JSON.parse(fs.readFileSync(path.join(dir, 'dfl', 'seed0', 'summary.json'), 'utf8')) as TrainSummary;
  assert.equal(summary.epochs, 2);
  assert.equal(summary.interrupted, false);
  assert.equal(summary.config.method, 'dfl');
  const log = JSON.parse(fs.readFileSync(path.join(dir, 'dfl', 'seed0', 'study-run.json'), 'utf8'));
  assert.ok(log.wall_seconds > 0 && log.finished !== null);

  // Third pass: nothing to do. A second seed extends the same study (the record merges).
  const r3 = await runStudy({ grid, dir, common });
  assert.deepEqual({ ran: r3.ran, skipped: r3.skipped }, { ran: 0, skipped: 2 });
  const md = fs.readFileSync(path.join(dir, 'study.md'), 'utf8');
  assert.match(md, /Runs: 2 finished of 2 planned/);
  const shard = await runStudy({ grid: { ...grid, seeds: [1] }, dir, common, shard: { index: 2, count: 2 } });
  assert.equal(shard.ran, 1, 'shard 2/2 of [base s1, dfl s1] is dfl s1');
  assert.equal(runState(path.join(dir, 'base', 'seed1')), 'new');
  assert.equal(runState(path.join(dir, 'dfl', 'seed1')), 'finished');
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'study.json'), 'utf8')).grid.seeds, [0, 1]);

  // Another study's options in the same folder: refused.
  await assert.rejects(
    runStudy({ grid: { ...grid, arms: { base: { method: 'base', lr: 0.1 } } }, dir, common }),
    /holds another study \(arm base has other options/,
  );

  // The record keeps the defaults the study started with; a study started by a build older than the
  // record's defaults ran with the former ones, and new runs of its arms keep them.
  const recordFile = path.join(dir, 'study.json');
  const record = JSON.parse(fs.readFileSync(recordFile, 'utf8'));
  assert.deepEqual([record.defaults.skipWorseTeachers, record.defaults.resetUntil], [true, 0.7]);
  delete record.defaults;
  fs.writeFileSync(recordFile, JSON.stringify(record));
  const dflOnly = { ...grid, arms: { dfl: { method: 'dfl' as const } }, seeds: [2] };
  assert.equal((await runStudy({ grid: dflOnly, dir, common })).ran, 1);
  const old = JSON.parse(fs.readFileSync(path.join(dir, 'dfl', 'seed2', 'summary.json'), 'utf8')) as TrainSummary;
  assert.deepEqual(
    [old.config.skipWorseTeachers, old.config.resetUntil],
    [false, 1],
    "the older study's dfl arm stays the paper recipe",
  );
  assert.deepEqual(JSON.parse(fs.readFileSync(recordFile, 'utf8')).defaults, {
    skipWorseTeachers: false,
    resetUntil: 1,
  });
  // the same arm with those options spelled out is the same arm; today's values are another
  assert.equal(
    (
      await runStudy({
        grid: { ...dflOnly, arms: { dfl: { method: 'dfl', skipWorseTeachers: false, resetUntil: 1 } } },
        dir,
        common,
      })
    ).skipped,
    1,
  );
  await assert.rejects(
    runStudy({ grid: { ...dflOnly, arms: { dfl: { method: 'dfl', skipWorseTeachers: true } } }, dir, common }),
    /arm dfl has other options/,
  );
  // A hand-damaged or foreign record is a usage error naming the file, not a crash.
  const saved = fs.readFileSync(recordFile, 'utf8');
  for (const bad of [
    { ...record, grid: { ...record.grid, seeds: 'all' } },
    { ...record, common: 'x' },
    { ...record, grid: { ...record.grid, arms: { dfl: { methd: 'dfl' } } } },
  ]) {
    fs.writeFileSync(recordFile, JSON.stringify(bad));
    await assert.rejects(
      runStudy({ grid: dflOnly, dir, common }),
      (e: Error) => e instanceof ConfigError && e.message.includes(recordFile),
      JSON.stringify(bad).slice(0, 80),
    );
  }
  fs.writeFileSync(recordFile, saved);
  fs.rmSync(work, { recursive: true, force: true });
});
