#!/usr/bin/env node
// ONNX Runtime side of scripts/bench/bench-vs-torch.mjs, in its own process (its thread pool spins
// between runs and must not share cores with the next measurement): the model dfl-native's
// `export` writes (buildOnnx with export's defaults, BatchNormalization nodes kept; seed 1 as
// benchmark() builds it), checked against the native forward, then timed in onnxruntime-node with
// the CPU execution provider, THREADS intra-op threads, graph optimisations "all", sequential.
//   node scripts/bench/ort_forward.mjs SPEC.json BATCH REPS WARMUP THREADS
// Prints one JSON line: {ort, forward_ms: [...], check: {...}, ops: {...}} or {error}.
import fs from 'node:fs';
import { createRequire } from 'node:module';

import * as ort from 'onnxruntime-node';

import { batchOf } from '../../dist/bench.js';
import { loadBinding } from '../../dist/binding.js';
import { buildOnnx, ONNX_INPUT } from '../../dist/io/onnx.js';
import { verifyOnnx } from '../../dist/io/onnx-verify.js';

const [specFile, batch, reps, warmup, threads] = [process.argv[2], ...process.argv.slice(3, 7).map(Number)];
const version = createRequire(import.meta.url)('onnxruntime-node/package.json').version;

try {
  const spec = JSON.parse(fs.readFileSync(specFile, 'utf8'));
  const b = loadBinding();
  b.setThreads(threads);
  const model = new b.Model(spec, 1);
  const classes = model.info().numClasses,
    C = spec.in_channels;
  const mean = new Array(C).fill(0.5),
    std = new Array(C).fill(0.25);
  const { bytes, ops } = buildOnnx(spec, model, {
    classNames: Array.from({ length: classes }, (_, i) => `class${i}`),
    mean,
    std,
  });
  const check = await verifyOnnx(bytes, model, [C, spec.height, spec.width], { mean, std });
  model.dispose();
  if (!check.ok) throw new Error(`the exported model differs from the native forward by ${check.relDiff} (relative)`);
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const feeds = {
    [ONNX_INPUT]: new ort.Tensor('float32', batchOf(spec, batch, classes).x, [batch, C, spec.height, spec.width]),
  };
  for (let i = 0; i < warmup; ++i) await session.run(feeds);
  const times = [];
  for (let i = 0; i < reps; ++i) {
    const t0 = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t0);
  }
  await session.release();
  console.log(JSON.stringify({ ort: version, threads, forward_ms: times, check, ops }));
} catch (e) {
  console.log(JSON.stringify({ ort: version, error: (e?.message ?? String(e)).split('\n')[0] }));
}
