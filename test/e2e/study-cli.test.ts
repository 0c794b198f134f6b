// `dfl-native study` as a user drives it: usage errors exit 2 with one line, and --report rebuilds
// the report of a folder of finished runs (JSON summary off a terminal).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli', 'cli.js');

function dfl(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('study: usage errors exit 2 with one line naming the problem', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-study-cli-'));
  const badGrid = path.join(work, 'grid.json');
  fs.writeFileSync(badGrid, JSON.stringify({ arms: { a: { methd: 'base' } } }));
  const cases: [string[], RegExp][] = [
    [['study'], /give --out DIR/],
    [['study', '--out', work, '--shard', '5/4'], /Expected I\/N with 1 <= I <= N/],
    [
      ['study', '--out', work, '--grid', 'nope'],
      /not a preset \(cpu, paper, round2, round2-long, round2-noise, round2-resnet\)/,
    ],
    [['study', '--out', work, '--arms', 'base', 'nope'], /--arms: no arm nope in grid 'cpu'/],
    [['study', '--out', work, '--seed', '3'], /Unknown argument: seed/],
    [['study', '--out', work, '--method', 'dfl'], /method is set by arm 'base'/],
    [['study', '--out', work, '--grid', badGrid], /Unknown option 'methd' \(did you mean 'method'\?\)/],
    [['study', '--out', work, '--epochs', '0'], /for --epochs but received 0/],
    [['study', '--out', work, '--seeds', 'x'], /--seeds: expected non-negative integers/],
    [['study', '--out', work, '--seed-count', '0'], /--seed-count: expected an integer in \[1, 10000\]/],
    [['study', '--out', work, '--seeds', '0', '--seed-count', '3'], /not both/],
    [['study', '--report', path.join(work, 'missing')], /--report .*missing: no such folder/],
    [['study', '--report', work, '--out', work], /--report only rebuilds the report/],
  ];
  for (const [args, message] of cases) {
    const r = dfl(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status}, stderr ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^dfl-native: error: /);
  }
  fs.rmSync(work, { recursive: true, force: true });
});

test('study --arms without the reference arm continues the study it belongs to (the reference stays)', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-study-arms-'));
  const grid = {
    name: 'g',
    description: '',
    options: { epochs: 1 },
    arms: { base: { method: 'base' }, dfl: { method: 'dfl' } },
    seeds: [0],
    reference: 'base',
  };
  fs.writeFileSync(path.join(work, 'grid.json'), JSON.stringify(grid));
  fs.writeFileSync(path.join(work, 'study.json'), JSON.stringify({ grid, common: {} }));
  const dir = path.join(work, 'dfl', 'seed0');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'summary.json'),
    JSON.stringify({
      test_acc: 0.5,
      test_ece: 0.02,
      seconds: 1,
      seed: 0,
      interrupted: false,
      config: { method: 'dfl', seed: 0 },
    }),
  );
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), JSON.stringify({ epoch: 1, val_acc: 0.5 }) + '\n');
  const r = dfl('study', '--grid', path.join(work, 'grid.json'), '--arms', 'dfl', '--out', work);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /"event":"skip","arm":"dfl","seed":0/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(work, 'study.json'), 'utf8')).grid.reference, 'base');
  fs.rmSync(work, { recursive: true, force: true });
});

test('study --report: rebuilds study.md and study.svg from finished runs; JSON summary off a terminal', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-study-report-'));
  for (const [arm, seed, acc] of [
    ['base', 0, 0.8],
    ['base', 1, 0.82],
    ['dfl', 0, 0.79],
    ['dfl', 1, 0.8],
  ] as const) {
    const dir = path.join(work, arm, `seed${seed}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(
      path.join(dir, 'summary.json'),
      JSON.stringify({
        test_acc: acc,
        test_ece: 0.02,
        seconds: 60,
        seed,
        interrupted: false,
        config: { method: arm, seed },
      }),
    );
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), JSON.stringify({ epoch: 1, val_acc: acc }) + '\n');
  }
  const r = dfl('study', '--report', work);
  assert.equal(r.status, 0, r.stderr);
  const line = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
    event: string;
    finished: number;
    paired: Record<string, { n: number; mean: number; verdict: string }>;
  };
  assert.equal(line.event, 'summary');
  assert.equal(line.finished, 4);
  assert.equal(line.paired.dfl.n, 2);
  assert.ok(Math.abs(line.paired.dfl.mean - -0.015) < 1e-12);
  assert.equal(line.paired.dfl.verdict, 'no clear difference');
  assert.match(fs.readFileSync(path.join(work, 'study.md'), 'utf8'), /\| dfl \| 2 \| -1\.00 \| -2\.00 \| -1\.50 \|/);
  assert.ok(fs.readFileSync(path.join(work, 'study.svg'), 'utf8').includes('</svg>'));
  fs.rmSync(work, { recursive: true, force: true });
});
