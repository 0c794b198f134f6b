#!/usr/bin/env node
// Training-step speed, dfl-native vs PyTorch measured in the same run on the same machine: for each
// model, the native Model and the PyTorch twin (scripts/torch_twin.py, same graph from the same
// JSON spec) time a training step (forward, CE, backward, SGD Nesterov + weight decay) and an eval
// forward (what each teacher costs) on the same batch shape, same thread count.
//   node scripts/bench-step.mjs [--models vgg8@0.25,resnet18@0.25] [--batch 128] [--steps 10] [--threads N]
// Needs a built addon and dist/ (npm install). The PyTorch column needs Debian's python3-torch
// (/usr/bin/python3, or PYTHON=...); without it the table says so and shows dfl-native alone.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadBinding } from '../dist/binding.js';
import { buildModel } from '../dist/models/zoo.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const models = arg('models', 'vgg8@0.25,resnet18@0.25,mobilenetv2@0.25,shufflenetv2@0.5').split(',');
const batch = Number(arg('batch', 128));
const steps = Number(arg('steps', 10));
const b = loadBinding();
const threads = Number(arg('threads', b.runtimeInfo().hardwareThreads));
b.setThreads(threads);
const python = process.env.PYTHON ?? '/usr/bin/python3';

const rows = [];
for (const m of models) {
  const [name, w] = m.split('@');
  const spec = buildModel(name, { numClasses: 10, inChannels: 3, height: 32, width: 32, width_multiplier: Number(w ?? 1) });
  const model = new b.Model(spec, 1);
  const x = Float32Array.from({ length: batch * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.37));
  const labels = Int32Array.from({ length: batch }, (_, i) => i % 10);
  const opts = { x, labels, batch, lr: 0.01, momentum: 0.9, weightDecay: 5e-4, nesterov: true, decoupled: false, labelSmoothing: 0, distillWeight: 0, temperature: 4, dropoutSeed: 1 };
  for (let i = 0; i < 3; ++i) await model.trainStep(opts);
  let t = performance.now();
  for (let i = 0; i < steps; ++i) await model.trainStep(opts);
  const trainMs = (performance.now() - t) / steps;
  await model.forward(x, batch);
  t = performance.now();
  for (let i = 0; i < steps; ++i) await model.forward(x, batch);
  const fwdMs = (performance.now() - t) / steps;
  model.dispose();

  let torch = null, note = '';
  const specFile = path.join(os.tmpdir(), `dfl-bench-${process.pid}-${name}.json`);
  fs.writeFileSync(specFile, JSON.stringify(spec));
  const r = spawnSync(python, [path.join(root, 'scripts', 'bench_torch_step.py'), specFile, String(batch), String(steps), String(threads)], { encoding: 'utf8' });
  fs.rmSync(specFile, { force: true });
  if (r.status === 0) torch = JSON.parse(r.stdout.trim().split('\n').at(-1));
  else note = r.error ? `${python} not found` : (r.stderr.trim().split('\n').at(-1) ?? 'PyTorch failed');
  rows.push({ model: m, trainMs, fwdMs, torch, note });
}

const f = (v, d = 1) => (v === null || v === undefined ? '-' : v.toFixed(d));
const info = b.runtimeInfo();
console.log(`\ndfl-native vs PyTorch: training step and eval forward, batch ${batch}x3x32x32, ${threads} threads, ${new Date().toISOString().slice(0, 10)}, ${os.cpus()[0]?.model ?? 'cpu'}, gemm ${info.gemmKernel}`);
console.log('| model | dfl step ms | torch step ms | step speed vs torch | dfl fwd ms | torch fwd ms | fwd speed vs torch | dfl img/s (train) |');
console.log('|---|--:|--:|--:|--:|--:|--:|--:|');
for (const r of rows) {
  const st = r.torch ? r.torch.train_ms / r.trainMs : null, sf = r.torch ? r.torch.forward_ms / r.fwdMs : null;
  console.log(`| ${r.model} | ${f(r.trainMs)} | ${f(r.torch?.train_ms)} | ${st === null ? '-' : f(st, 2) + 'x'} | ${f(r.fwdMs)} | ${f(r.torch?.forward_ms)} | ${sf === null ? '-' : f(sf, 2) + 'x'} | ${Math.round((batch / r.trainMs) * 1000)} |${r.note ? ' ' + r.note : ''}`);
}
console.log('speed vs torch = PyTorch time / dfl-native time (> 1: dfl-native is faster).');
