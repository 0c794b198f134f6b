// scripts/bench/bench-vs-torch.mjs: the target arithmetic on made-up rows (report.mjs), and the script
// end to end on a tiny model without PyTorch (dfl-native, ONNX Runtime, the SGEMM peak).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bench = path.join(root, 'scripts', 'bench');

interface Target {
  phase: string;
  rival: string | null;
  ratio: number;
  met: boolean | null;
  min: number;
}
interface Summary {
  ms: Record<string, Record<string, number>>;
  targets: Target[];
  gflop_s: Record<string, Record<string, number>>;
  peak_share: Record<string, Record<string, number>>;
}
interface Report {
  summarise(row: unknown, o: { batch: number; K: number; peak: number }): Summary;
  markdown(run: unknown): string;
}

const row = {
  model: 'net@1',
  gflop_per_img: 0.01,
  rounds: {
    'dfl-native': { train: [100, 110], infer: [20, 20], dfl: [200, 220] },
    'torch 1.13 eager': { train: [150, 150], infer: [40, 40], dfl: [300, 300] },
    'torch 2.13 eager': { train: [140, 140], infer: [45, 45], dfl: [400, 400] },
    'torch 2.13 compile': { train: [126, 126], infer: [15, 15], dfl: [360, 360] },
    'onnxruntime 1.30': { train: [], infer: [25, 25], dfl: [] },
  },
  compile_s: { 'torch 2.13 compile': { train: 30, infer: 5, dfl: 20 } },
  errors: {
    'torch 1.13 compile': {
      train: 'torch.compile needs PyTorch 2.0',
      infer: 'torch.compile needs PyTorch 2.0',
      dfl: 'torch.compile needs PyTorch 2.0',
    },
  },
  mem: { ours: 50, torch: 80 },
};

test('the targets compare with the fastest PyTorch (eager or compiled) and with ONNX Runtime, and the table marks misses', async () => {
  const report = (await import(path.join(bench, 'report.mjs'))) as Report;
  const s = report.summarise(row, { batch: 128, K: 3, peak: 100 });
  const t = Object.fromEntries(s.targets.map((x) => [x.phase, x]));
  assert.equal(s.ms['dfl-native'].train, 105, 'median of the rounds');
  assert.equal(t.train.rival, 'torch 2.13 compile');
  assert.ok(Math.abs(t.train.ratio - 126 / 105) < 1e-12);
  assert.equal(t.train.met, true, '1.2x holds');
  assert.equal(t.dfl.rival, 'torch 1.13 eager');
  assert.ok(Math.abs(t.dfl.ratio - 300 / 210) < 1e-12);
  assert.equal(t.dfl.met, false, '1.43x is short of 1.5x');
  assert.equal(
    t.infer.rival,
    'onnxruntime 1.30',
    'the eval forward is held against ONNX Runtime, not the faster compiled torch',
  );
  assert.equal(t.infer.ratio, 1.25);
  // a training step is 3 forwards: 128 images x 0.03 GFLOP in 105 ms
  assert.ok(Math.abs(s.gflop_s['dfl-native'].train - (128 * 0.03) / 0.105) < 1e-9);
  assert.ok(
    Math.abs(s.peak_share['dfl-native'].dfl - (128 * 0.06) / 0.21 / 100) < 1e-12,
    'a DFL step is 3 + K forwards',
  );
  const meta = {
    date: '2026-12-07T00:00:00Z',
    started: 'a',
    finished: 'b',
    commit: 'abc',
    cpu: 'cpu',
    hardware_threads: 2,
    cpu_features: ['avx2'],
    simd: 'gemm avx2',
    batch: 128,
    input: [3, 32, 32],
    threads: 2,
    K: 3,
    reps: 1,
    warmup: 0,
    rounds: 2,
    engines: ['dfl-native'],
    command: 'x',
    peak: { gflop_s: 100, gemm: 'avx2', runs: [{ peak_gflop_s: 99 }, { peak_gflop_s: 100 }] },
    load: { start: [0, 0, 0], end: [0, 0, 0] },
  };
  const md = report.markdown({ meta, rows: [{ ...row, summary: s }] });
  assert.match(
    md,
    /\| net@1 \| 105\.0 \| 126\.0 \(2\.13 compile\) \| 1\.20x \| 210\.0 \| 300\.0 \(1\.13 eager\) \| \*\*1\.43x miss\*\* \| 20\.0 \| 25\.0 \| 1\.25x \| 0\.75x \| 50 \/ 80 \|/,
  );
  assert.match(
    md,
    /\| torch 1\.13 compile \| - \| - \| - \|  \| torch\.compile needs PyTorch 2\.0 \|/,
    'an engine that could not run says why, once',
  );
  assert.match(md, /\| torch 2\.13 compile \| 126\.0 \| 15\.0 \| 360\.0 \| 30 \/ 5 \/ 20 \|/);
  assert.match(md, /Targets missed: net@1 DFL step: 1\.43x 1\.13 eager \(target 1\.5x, short by 5%\)\./);
});

test('bench-vs-torch runs end to end without PyTorch and writes one JSON and one Markdown file', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-bench-test-'));
  try {
    const r = spawnSync(
      process.execPath,
      [
        path.join(bench, 'bench-vs-torch.mjs'),
        '--models',
        'vgg8@0.125',
        '--batch',
        '8',
        '--reps',
        '1',
        '--warmup',
        '0',
        '--rounds',
        '1',
        '--threads',
        '1',
        '--pythons',
        '',
        '--peak-ms',
        '1',
        '--out',
        out,
      ],
      { encoding: 'utf8', timeout: 600_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const files = fs.readdirSync(out).sort();
    assert.equal(files.length, 2, files.join(', '));
    assert.ok(files[0].endsWith('.json') && files[1].endsWith('.md'));
    const run = JSON.parse(fs.readFileSync(path.join(out, files[0]), 'utf8'));
    assert.ok(run.meta.peak.gflop_s > 0, 'the SGEMM peak was measured');
    assert.match(run.meta.simd, /^gemm (avx512|avx2|portable), conv-rows (avx512|avx2|portable), conv /);
    const [row] = run.rows;
    assert.ok(row.rounds['dfl-native'].train[0] > 0);
    const ort = Object.keys(row.rounds).find((e) => e.startsWith('onnxruntime '));
    assert.ok(ort && row.rounds[ort].infer[0] > 0, 'ONNX Runtime timed the exported model');
    const infer = row.summary.targets.find((t: Target) => t.phase === 'infer');
    assert.equal(infer.rival, ort);
    assert.equal(row.summary.targets.find((t: Target) => t.phase === 'train').met, null, 'no PyTorch: no verdict');
    assert.equal(
      fs.readFileSync(path.join(out, files[1]), 'utf8'),
      r.stdout.slice(0, fs.readFileSync(path.join(out, files[1]), 'utf8').length),
    );
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
