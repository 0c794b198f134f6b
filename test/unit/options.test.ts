// Each allowed-values list lives once, in src/options.ts: the config validates with it, the train
// flags show it, and a shared flag (--threads, --device, ...) is refused with the same message in
// every command. No other source file spells a list again.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { BENCH_DEFAULTS } from '../../dist/bench.js';
import { sharedOption, SHARED_FLAGS } from '../../dist/cli/common-flags.js';
import { TRAIN_FLAGS, trainOptions } from '../../dist/cli/train-flags.js';
import { DEFAULT_CONFIG, resolveFields, type TrainConfig } from '../../dist/config.js';
import * as options from '../../dist/options.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'cli.js');

/** Every train option with a fixed set of values, and its list. */
const LISTED: [keyof TrainConfig, readonly string[]][] = [
  ['method', options.METHODS],
  ['teacherSource', options.TEACHER_SOURCES],
  ['teacherWeighting', options.TEACHER_WEIGHTINGS],
  ['schedule', options.SCHEDULES],
  ['emaTeacher', options.AVERAGE_TEACHERS],
  ['swaTeacher', options.AVERAGE_TEACHERS],
  ['softTargets', options.SOFT_TARGETS],
  ['resetMode', options.RESET_MODES],
  ['convInit', options.CONV_INITS],
  ['device', options.DEVICES],
  ['precision', options.PRECISIONS],
  ['scoreMetric', options.SCORE_METRICS],
  ['labels', options.LABEL_SETS],
];

test('each list is the one the config validates with and the train flag shows', () => {
  const listedKeys = Object.entries(TRAIN_FLAGS)
    .filter(([, d]) => d.choices)
    .map(([k]) => k)
    .sort();
  assert.deepEqual(listedKeys, LISTED.map(([k]) => k).sort(), 'every train flag with choices is listed here');
  const help = trainOptions();
  for (const [key, list] of LISTED) {
    assert.equal(TRAIN_FLAGS[key].choices, list, `${key}: the flag's choices are options.ts's array itself`);
    assert.ok(
      String(help[key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)].describe).includes(`(${list.join('|')})`),
      key,
    );
    for (const v of list) assert.equal(resolveFields({ [key]: v })[key], v, `${key} ${v} is accepted`);
    assert.throws(
      () => resolveFields({ [key]: 'nope' }),
      new RegExp(`^ConfigError: Expected one of ${list.join(', ')} for ${key} but received 'nope' \\(string\\)$`),
    );
  }
  assert.ok(
    options.isOneOf(options.DEVICES, 'auto') &&
      !options.isOneOf(options.DEVICES, 'tpu') &&
      !options.isOneOf(options.DEVICES, 3),
  );
});

/** The first line of stderr without the "(see dfl-native <command> --help)" tail, and the exit code. */
function refusal(...args: string[]): { status: number | null; message: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return {
    status: r.status,
    message: r.stderr
      .trim()
      .split('\n')[0]
      .replace(/ \(see dfl-native \w+ --help\)$/, ''),
  };
}

test('a shared flag is refused with the same message by every command that takes it', () => {
  const cases: [string[], string[][], string][] = [
    [
      ['--device', 'tpu'],
      [['train'], ['bench'], ['study', '--out', 'x']],
      "Expected one of auto, cpu, cuda for --device but received 'tpu' (string)",
    ],
    [
      ['--precision', 'fp16'],
      [['train'], ['bench']],
      "Expected one of fp32, bf16 for --precision but received 'fp16' (string)",
    ],
    [
      ['--threads', 'two'],
      [['train'], ['bench'], ['eval', '--checkpoint', 'x'], ['predict', '--checkpoint', 'x', 'a.jpg']],
      "Expected an integer in [0, 1024] for --threads but received 'two' (string)",
    ],
    [
      ['--batch-size', '1'],
      [['train'], ['bench']],
      'Expected an integer in [2, 65536] for --batch-size but received 1 (number)',
    ],
  ];
  for (const [flag, commands, message] of cases) {
    for (const command of commands) {
      const r = refusal(...command, ...flag);
      assert.equal(r.status, 2, `${command.join(' ')} ${flag.join(' ')}`);
      assert.equal(r.message, `dfl-native: error: ${message}`, `${command.join(' ')} ${flag.join(' ')}`);
    }
  }
  // an evaluation batch may hold one image; the phrase and the bound are the train option's
  assert.equal(
    refusal('eval', '--checkpoint', 'x', '--batch-size', '0').message,
    'dfl-native: error: Expected an integer in [1, 65536] for --batch-size but received 0 (number)',
  );
});

test("a shared flag has one description; its default is the config's unless the command has its own", () => {
  const train = trainOptions();
  for (const key of Object.keys(SHARED_FLAGS) as (keyof typeof SHARED_FLAGS)[]) {
    const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    assert.equal(train[flag].describe, sharedOption(key).describe, `train --${flag} reads the shared declaration`);
    assert.ok(String(sharedOption(key).describe).endsWith(`[default: ${String(DEFAULT_CONFIG[key])}]`), key);
  }
  assert.deepEqual(
    Object.keys(BENCH_DEFAULTS).sort(),
    ['classes', 'imageSize', 'reps', 'warmup', 'width'],
    'bench keeps only what a train run has no option for',
  );
});

/** src/**\/*.ts except options.ts, as [relative path, text]. */
function sources(dir = path.join(root, 'src')): [string, string][] {
  const out: [string, string][] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts') && p !== path.join(root, 'src', 'options.ts'))
      out.push([path.relative(root, p), fs.readFileSync(p, 'utf8')]);
  }
  return out;
}

test('no source file outside src/options.ts spells an allowed-values list', () => {
  const lists = Object.entries(options).filter(([, v]) => Array.isArray(v)) as [string, readonly string[]][];
  assert.ok(lists.length >= 13, 'the lists are exported arrays');
  const offences: string[] = [];
  for (const [file, text] of sources()) {
    if (/choices:\s*\[\s*'/.test(text)) offences.push(`${file}: a literal choices list`);
    if (/oneOf\(\s*\[/.test(text)) offences.push(`${file}: a literal oneOf list`);
    // two values of one list side by side, as a union ('a' | 'b') or an array ('a', 'b')
    for (const [name, list] of lists)
      for (const a of list)
        for (const b of list)
          if (a !== b && new RegExp(`'${a}'\\s*[|,]\\s*'${b}'`).test(text))
            offences.push(`${file}: '${a}', '${b}' of ${name}`);
  }
  assert.deepEqual(offences, [], 'use the list (or its type) from src/options.ts');
});
