#!/usr/bin/env node
// dfl-native vs PyTorch, measured in the same run on the same machine: for each model, the same
// graph (PyTorch: the twin, scripts/torch_twin.py, built from the same JSON spec), the same batch
// shape and thread count; a training step, an eval forward (what a teacher costs) and a DFL step with
// K teachers (PyTorch's teachers: copies in eval mode under no_grad), and the memory a DFL run adds.
// Each PyTorch found is timed (Debian's python3-torch 1.13 at /usr/bin/python3 and the pip CPU
// wheel in a venv, see --pythons); ratios are against the faster of them. Rounds alternate
// dfl-native and each PyTorch; medians are over every repetition of every round.
//   node scripts/bench-vs-torch.mjs [--models vgg8@0.25,resnet18@0.25] [--batch 128] [--reps 5]
//        [--warmup 2] [--rounds 2] [--threads N] [--k 3] [--pythons /usr/bin/python3,venv/bin/python]
//        [--json FILE]
// Needs a built addon and dist/ (npm install).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { benchmark } from '../dist/bench.js';
import { loadBinding } from '../dist/binding.js';
import { buildModel } from '../dist/models/zoo.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};

// Child mode: the resident-set growth of a DFL run, from before the model to the peak of REPS steps.
if (process.argv[2] === '--memory-child') {
  const [spec, batch, reps, k, threads] = [JSON.parse(fs.readFileSync(process.argv[3], 'utf8')), ...process.argv.slice(4).map(Number)];
  const b = loadBinding();
  b.setThreads(threads);
  const status = (field) => Number(/(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith(field)))[1]) / 1024;
  const x = Float32Array.from({ length: batch * spec.in_channels * spec.height * spec.width }, (_, i) => Math.sin(i * 0.37));
  const labels = Int32Array.from({ length: batch }, (_, i) => i % 10);
  const base = status('VmRSS');
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    /* peak then counts from the start of the process */
  }
  const m = new b.Model(spec, 1);
  const teachers = Array.from({ length: k }, () => m.snapshot());
  for (let i = 0; i < reps; ++i)
    await m.trainStep({ x, labels, batch, teachers, lr: 1e-3, momentum: 0.9, weightDecay: 5e-4, nesterov: true, decoupled: false, labelSmoothing: 0, distillWeight: 1, temperature: 4, dropoutSeed: i });
  console.log(JSON.stringify({ dfl_peak_delta_mb: status('VmHWM') - base }));
  process.exit(0);
}

const models = arg('models', 'vgg8@0.25,vgg8@1,vgg16@1,resnet18@0.25,resnet18@1,mobilenetv2@1,shufflenetv2@1').split(',');
const batch = Number(arg('batch', 128)), reps = Number(arg('reps', 5)), warmup = Number(arg('warmup', 2));
const rounds = Number(arg('rounds', 2)), K = Number(arg('k', 3));
const threads = Number(arg('threads', loadBinding().runtimeInfo().hardwareThreads));
const venv = path.join(root, '..', 'venv-torch213', 'bin', 'python');
const pythons = arg('pythons', ['/usr/bin/python3', process.env.PYTHON, fs.existsSync(venv) ? venv : null].filter(Boolean).join(',')).split(',');

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function torchRun(python, specFile, mode) {
  const r = spawnSync(python, [path.join(root, 'scripts', 'bench_torch.py'), specFile, String(batch), String(reps), String(warmup), String(threads), String(K), mode], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) return { error: r.error ? `${python} not runnable` : (r.stderr.trim().split('\n').at(-1) ?? 'failed') };
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

const rows = [];
for (const m of models) {
  const [name, w] = m.split('@');
  const spec = buildModel(name, { numClasses: 10, inChannels: 3, height: 32, width: 32, width_multiplier: Number(w ?? 1) });
  const specFile = path.join(os.tmpdir(), `dfl-bench-${process.pid}-${name}.json`);
  fs.writeFileSync(specFile, JSON.stringify(spec));
  const ours = { train: [], infer: [], dfl: [] };
  const theirs = Object.fromEntries(pythons.map((p) => [p, { train: [], infer: [], dfl: [], version: null, error: null }]));
  for (let r = 0; r < rounds; ++r) {
    process.stderr.write(`${m}: round ${r + 1}/${rounds}\n`);
    const res = await benchmark({ model: name, width: Number(w ?? 1), batchSize: batch, device: 'cpu', threads, teachers: K, reps, warmup });
    // benchmark() reports medians; re-time per repetition is not exposed, so keep its min/median/max.
    ours.train.push(res.train.ms_median);
    ours.infer.push(res.infer.ms_median);
    ours.dfl.push(res.dfl.ms_median);
    for (const p of pythons) {
      const t = torchRun(p, specFile, 'speed');
      if (t.error) {
        theirs[p].error = t.error;
        continue;
      }
      theirs[p].version = t.torch;
      theirs[p].train.push(median(t.train_ms));
      theirs[p].infer.push(median(t.forward_ms));
      theirs[p].dfl.push(median(t.dfl_ms));
    }
  }
  const memOurs = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--memory-child', specFile, String(batch), '3', String(K), String(threads)], { encoding: 'utf8' });
  const ourMem = memOurs.status === 0 ? JSON.parse(memOurs.stdout.trim().split('\n').at(-1)).dfl_peak_delta_mb : NaN;
  const torchMem = Object.fromEntries(pythons.map((p) => [p, theirs[p].error ? NaN : torchRun(p, specFile, 'memory').dfl_peak_delta_mb ?? NaN]));
  fs.rmSync(specFile, { force: true });
  const med = (o) => ({ train: median(o.train), infer: median(o.infer), dfl: median(o.dfl) });
  const torchMeds = pythons.filter((p) => !theirs[p].error && theirs[p].train.length).map((p) => ({ python: p, version: theirs[p].version, ...med(theirs[p]), mem: torchMem[p] }));
  const best = (phase) => (torchMeds.length ? Math.min(...torchMeds.map((t) => t[phase])) : NaN);
  const o = med(ours);
  // Each round's medians too: on a noisy machine they show how far a row moved within the run.
  const perRound = (x) => ({ train: x.train, infer: x.infer, dfl: x.dfl });
  rows.push({
    model: m, ours: { ...o, mem: ourMem }, torch: torchMeds,
    rounds: { ours: perRound(ours), ...Object.fromEntries(pythons.filter((p) => !theirs[p].error).map((p) => [p, perRound(theirs[p])])) },
    ratio: { train: best('train') / o.train, infer: best('infer') / o.infer, dfl: best('dfl') / o.dfl },
    mem_vs_torch: ourMem / Math.min(...torchMeds.map((t) => t.mem)),
    errors: pythons.filter((p) => theirs[p].error).map((p) => `${p}: ${theirs[p].error}`),
  });
}

const f = (v, d = 1) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(d));
const cpu = os.cpus()[0]?.model ?? 'cpu';
const versions = [...new Set(rows.flatMap((r) => r.torch.map((t) => `${t.version} (${t.python})`)))].join(', ');
console.log(`\ndfl-native vs PyTorch (${versions || 'no PyTorch found'}), batch ${batch}x3x32x32, ${threads} threads, K = ${K}, ${new Date().toISOString().slice(0, 10)}, ${cpu}, gemm ${loadBinding().runtimeInfo().gemmKernel}`);
console.log('times: median ms of dfl-native | of the faster PyTorch; speed = PyTorch time / dfl-native time (> 1: dfl-native faster)');
console.log('| model | train ms | torch train ms | train speed | eval fwd ms | torch fwd ms | fwd speed | DFL step ms | torch DFL ms | DFL speed | DFL MB (ours / torch) |');
console.log('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
for (const r of rows) {
  const b = (phase) => (r.torch.length ? Math.min(...r.torch.map((t) => t[phase])) : NaN);
  console.log(`| ${r.model} | ${f(r.ours.train)} | ${f(b('train'))} | ${f(r.ratio.train, 2)}x | ${f(r.ours.infer)} | ${f(b('infer'))} | ${f(r.ratio.infer, 2)}x | ${f(r.ours.dfl)} | ${f(b('dfl'))} | ${f(r.ratio.dfl, 2)}x | ${f(r.ours.mem, 0)} / ${f(Math.min(...r.torch.map((t) => t.mem)), 0)} |${r.errors.length ? ' ' + r.errors.join('; ') : ''}`);
}
for (const r of rows) for (const t of r.torch) console.log(`  ${r.model} torch ${t.version}: train ${f(t.train)} ms, fwd ${f(t.infer)} ms, DFL ${f(t.dfl)} ms, DFL +${f(t.mem, 0)} MB`);
const each = (v) => v.map((x) => f(x)).join(' / ');
for (const r of rows)
  for (const [who, x] of Object.entries(r.rounds))
    console.log(`  ${r.model} per round, ${who === 'ours' ? 'dfl-native' : who}: train ${each(x.train)} ms, fwd ${each(x.infer)}, DFL ${each(x.dfl)}`);
const out = arg('json', null);
if (out) fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), cpu, threads, batch, K, reps, rounds, rows }, null, 1));
