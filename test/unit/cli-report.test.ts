// Pure parts of the CLI and the run report: the flag table, config layering and curves.svg.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import yargs from 'yargs';

import { CONFIG_KEYS, DEFAULT_CONFIG } from '../../dist/config.js';
import {
  flagsToConfig,
  kebab,
  readConfigFile,
  resolveTrainConfig,
  TRAIN_FLAGS,
  trainOptions,
} from '../../dist/cli/train-flags.js';
import { ConfigError } from '../../dist/errors.js';
import { niceTicks, renderCurves, writeCurves } from '../../dist/io/report.js';
import type { EpochRecord } from '../../dist/records.js';

test('every trainer option has a kebab-case flag, including the documented names', () => {
  const opts = trainOptions();
  assert.equal(Object.keys(opts).length, CONFIG_KEYS.length);
  for (const k of CONFIG_KEYS) assert.ok(opts[kebab(k)], `no flag for ${k}`);
  for (const f of [
    'data',
    'model',
    'width',
    'epochs',
    'batch-size',
    'lr',
    'schedule',
    'method',
    'teachers',
    'teacher-source',
    'teacher-weighting',
    'temperature',
    'distill-weight',
    'reset-cycle',
    'reset-depth',
    'reset-mode',
    'val-size',
    'image-size',
    'seed',
    'device',
    'threads',
    'out',
    'label-smoothing',
    'weight-decay',
    'warmup-epochs',
    'milestones',
    'crop-padding',
    'augment',
    'score-metric',
    'shrink',
    'perturb',
    'labels',
    'cache-dir',
  ])
    assert.ok(opts[f], `missing --${f}`);
  assert.match(String(opts['batch-size'].describe), new RegExp(`\\[default: ${DEFAULT_CONFIG.batchSize}\\]`));
  assert.match(String(opts.method.describe), /base\|reset\|sd\|dfl/);
});

test('flags override --config values, which override defaults; errors name the flag or the file key', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-cfg-'));
  const file = path.join(dir, 'c.json');
  fs.writeFileSync(file, JSON.stringify({ epochs: 3, lr: 0.2, 'reset-cycle': 5 }));
  const layer = readConfigFile(file);
  const c = resolveTrainConfig(layer, flagsToConfig({ lr: 0.01, _: [] }), file);
  assert.equal(c.epochs, 3);
  assert.equal(c.lr, 0.01);
  assert.equal(c.resetCycle, 5);
  assert.equal(c.batchSize, DEFAULT_CONFIG.batchSize);
  fs.writeFileSync(file, JSON.stringify({ method: 'nope' }));
  assert.throws(() => resolveTrainConfig(readConfigFile(file), {}, file), /for "method" in .*c\.json/);
  fs.writeFileSync(file, JSON.stringify({ batch_size: 3 }));
  assert.throws(
    () => resolveTrainConfig(readConfigFile(file), {}, file),
    /Unknown option 'batch_size' in .*did you mean 'batchSize'/,
  );
  fs.writeFileSync(file, '{ not json');
  assert.throws(() => readConfigFile(file), /not valid JSON/);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The train config from a command line, parsed as cli.ts parses it. */
function configFromArgs(argv: string[]) {
  const parsed = yargs(argv)
    .options(trainOptions())
    .parserConfiguration({ 'parse-numbers': false })
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .parseSync() as Record<string, unknown>;
  return resolveTrainConfig(undefined, flagsToConfig(parsed));
}

test("numeric flags report what was typed: --lr abc -> received 'abc', for every numeric flag", () => {
  const numeric = CONFIG_KEYS.filter((k) => TRAIN_FLAGS[k].kind === 'number' || TRAIN_FLAGS[k].kind === 'numbers');
  assert.ok(numeric.length >= 20);
  for (const k of numeric) {
    const flag = `--${kebab(k)}`;
    for (const typed of ['abc', '1e400', '0x10']) {
      assert.throws(
        () => configFromArgs([flag, typed]),
        (e: Error) =>
          e instanceof ConfigError &&
          e.message.includes(`for ${flag} but received`) &&
          e.message.includes(`'${typed}'`),
        `${flag} ${typed}`,
      );
    }
  }
  assert.throws(
    () => configFromArgs(['--lr', 'abc']),
    /Expected a number in \(0, 10000\] for --lr but received 'abc' \(string\)$/,
  );
  assert.throws(() => configFromArgs(['--milestones', '30', 'abc']), /for --milestones but received \[30, 'abc'\]$/);
  // numbers still parse, the last of repeated flags wins, lists take spaces or commas
  const c = configFromArgs([
    '--lr',
    '0.2',
    '--lr',
    '.05',
    '--epochs',
    '3',
    '--milestones',
    '1,2',
    '3',
    '--mean',
    '0.5',
    '-0.25',
    '+1e-1',
    '--std',
    '1',
    '1',
    '1',
  ]);
  assert.deepEqual([c.lr, c.epochs, c.milestones, c.mean], [0.05, 3, [1, 2, 3], [0.5, -0.25, 0.1]]);
  // the paper's recipe from the command line: a default-on boolean turns off with --no-
  const paper = configFromArgs(['--no-skip-worse-teachers', '--reset-until', '1']);
  assert.deepEqual([paper.skipWorseTeachers, paper.resetUntil], [false, 1]);
  const plain = configFromArgs([]);
  assert.deepEqual([plain.skipWorseTeachers, plain.resetUntil, plain.convInit], [true, 0.7, 'kaiming-normal']);
  assert.equal(configFromArgs(['--conv-init', 'pytorch-default']).convInit, 'pytorch-default');
  assert.throws(() => configFromArgs(['--conv-init', 'xavier']), /conv-init/);
});

function record(epoch: number, reset: boolean, bank: number[]): EpochRecord {
  return {
    epoch,
    lr: 0.05,
    train_loss: 2 / epoch,
    train_acc: 0.3 + 0.05 * epoch,
    distill_loss: bank.length ? 0.3 : 0,
    val_acc: 0.25 + 0.05 * epoch,
    val_loss: 1.8 / epoch,
    ensemble_val_acc: bank.length ? 0.3 + 0.04 * epoch : null,
    disagreement: bank.length ? 0.1 : null,
    reset,
    bank: bank.map((id) => ({ id, epoch: id, score: 0.25 + 0.05 * id })),
    replaced: null,
    added: epoch,
    seconds: 1,
    images_per_sec: 100,
  };
}

test('curves.svg: axes, legend, reset markers and teacher dots, written atomically', () => {
  const records = [record(1, false, []), record(2, false, [1]), record(3, true, [1, 2]), record(4, false, [1, 2, 3])];
  const svg = renderCurves(records);
  assert.match(svg, /^<\?xml[^>]*>\s*<svg /);
  assert.match(svg, /<\/svg>\s*$/);
  assert.equal((svg.match(/head reset before epoch 3/g) ?? []).length, 2, 'one reset marker per panel');
  for (const label of [
    'train',
    'val (student)',
    'val (teacher ensemble)',
    'teacher scores (bank)',
    'head reset',
    'epoch',
    'accuracy (%)',
    'loss',
  ])
    assert.ok(svg.includes(`>${label}<`), `legend/axis text ${label}`);
  assert.equal((svg.match(/fill-opacity="0.55"/g) ?? []).length, 1 + 2 + 3, 'one dot per teacher per epoch');
  assert.ok(!/NaN|undefined/.test(svg));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-svg-'));
  const file = writeCurves(dir, records);
  assert.equal(fs.readFileSync(file, 'utf8'), svg);
  assert.deepEqual(fs.readdirSync(dir), ['curves.svg'], 'no temp files left behind');
  fs.rmSync(dir, { recursive: true, force: true });
  assert.match(renderCurves([]), /No epoch has finished yet/);
});

test('nice ticks are round and cover the range', () => {
  assert.deepEqual(niceTicks(0, 100), [0, 20, 40, 60, 80, 100]);
  const t = niceTicks(0, 1.85);
  assert.equal(t[0], 0);
  assert.ok(t.every((v, i) => i === 0 || v > t[i - 1]));
});
