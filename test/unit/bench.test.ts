// The benchmark users run: every figure present and consistent, the profile adds up, bad flags exit 2.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { benchmark } from '../../dist/bench.js';
import { loadBinding } from '../../dist/binding.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli', 'cli.js');

test('benchmark() times train, infer and DFL steps and derives img/s, FLOPs and memory from them', async () => {
  const r = await benchmark({
    model: 'vgg8',
    width: 0.125,
    batchSize: 8,
    device: 'cpu',
    threads: 1,
    teachers: 2,
    reps: 2,
    warmup: 1,
    profile: true,
  });
  assert.equal(r.device, 'cpu');
  assert.deepEqual(r.simd_paths, loadBinding().runtimeInfo().simdPaths, 'which SIMD path each kernel family ran');
  assert.equal(
    r.macs_per_image,
    1254016,
    'vgg8 x0.125 MACs per 32x32 image (zoo.test.ts checks the zoo against PyTorch)',
  );
  assert.equal(r.gflops_per_img, (2 * r.macs_per_image) / 1e9);
  for (const p of [r.train, r.infer, r.dfl]) {
    assert.ok(p.ms_min > 0 && p.ms_min <= p.ms_median && p.ms_median <= p.ms_max, JSON.stringify(p));
    assert.ok(Math.abs(p.img_s - (8 * 1000) / p.ms_median) < 1e-9);
  }
  assert.ok(
    Math.abs(r.train.gflop_s - (8 * 3 * r.gflops_per_img) / (r.train.ms_median / 1000)) < 1e-9,
    'a step counts 3 forwards',
  );
  assert.ok(
    Math.abs(r.dfl.gflop_s - (8 * 5 * r.gflops_per_img) / (r.dfl.ms_median / 1000)) < 1e-9,
    'a DFL step adds K forwards',
  );
  assert.equal(r.train_img_s, r.train.img_s);
  assert.ok(r.teacher_mb > 0 && r.teacher_mb < r.student_mb / 4 && r.peak_rss_mb > r.student_mb);
  assert.ok(r.layers && r.layers.length === 23 && r.layers.every((l) => l.forward_ms >= 0 && l.backward_ms >= 0));
  assert.deepEqual(r.layers[0].shape, [8, 32, 32]);
  assert.equal(r.layers[0].layer, 'conv features.0');
});

test('bench prints one JSON object per model; bad flags exit 2 naming the flag', () => {
  const ok = spawnSync(
    process.execPath,
    [
      cli,
      'bench',
      '--model',
      'vgg8@0.125,resnet18@0.125',
      '--batch-size',
      '4',
      '--reps',
      '1',
      '--warmup',
      '0',
      '--threads',
      '1',
      '--json',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(ok.status, 0, ok.stderr);
  const lines = ok.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => [l.model, l.width]),
    [
      ['vgg8', 0.125],
      ['resnet18', 0.125],
    ],
  );
  for (const l of lines)
    for (const k of ['train_img_s', 'infer_img_s', 'dfl_img_s', 'peak_rss_mb', 'gflops_per_img'])
      assert.ok(Number.isFinite(l[k]) && l[k] > 0, k);
  for (const [args, re] of [
    [['--batch-size', 'abc'], /--batch-size but received 'abc'/],
    [['--device', 'tpu'], /cpu, cuda for --device but received 'tpu'|auto, cpu, cuda for --device/],
    [['--model', 'vgg8@x'], /name@width/],
    [['--model', 'nosuchnet'], /Expected one of vgg8/],
  ] as const) {
    const r = spawnSync(process.execPath, [cli, 'bench', '--reps', '1', '--warmup', '0', ...args], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
});
