#!/usr/bin/env node
// dfl-native against the CPU engines users would pick, measured in the same run on the same machine:
// for each model, the same graph (PyTorch: the twin, scripts/fixtures/torch_twin.py, built from the same JSON
// spec; ONNX Runtime: the file `dfl-native export` writes), the same batch and thread count.
//   - dfl-native: a training step, an eval forward (what a teacher costs) and a DFL step with K
//     teachers (src/bench.ts), and the memory a DFL run adds;
//   - PyTorch eager and torch.compile (inductor) for each Python found (Debian's 1.13 at
//     /usr/bin/python3, which has no torch.compile, and a pip 2.x wheel in a venv; see --pythons),
//     bench_torch.py; compile time excluded and reported separately;
//   - ONNX Runtime (onnxruntime-node, CPU execution provider) for the eval forward, ort_forward.mjs;
//   - the roofline: the SGEMM peak of this machine (native/dev/gemm_peak.cpp, before and after the
//     models) and every phase's achieved GFLOP/s as a share of it.
// Rounds alternate the engines; each child is its own process. The targets (report.mjs) are checked
// per row. Writes OUT/<date>-<cpu>-<commit>.json (everything) and .md (the tables; what
// docs/performance.md holds for the latest full run).
//   node scripts/bench/bench-vs-torch.mjs [--models vgg8@0.25,resnet18@0.25] [--batch 128] [--reps 5]
//        [--warmup 2] [--rounds 2] [--threads N] [--k 3] [--pythons /usr/bin/python3,venv/bin/python]
//        [--no-compile] [--compile-mode default] [--no-ort] [--peak-ms 300] [--out bench-results]
// Needs a built addon and dist/ (npm install), cmake and a C++ compiler (the peak tool; inductor).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { benchmark } from '../../dist/bench.js';
import { describeSimd, loadBinding } from '../../dist/binding.js';
import { buildModel } from '../../dist/models/zoo.js';
import { markdown, median, OURS, summarise } from './report.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const argv = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const flag = (name) => argv.includes(`--${name}`);

// Child mode: the resident-set growth of a DFL run, from before the model to the peak of REPS steps.
if (argv[0] === '--memory-child') {
  const [spec, batch, reps, k, threads] = [JSON.parse(fs.readFileSync(argv[1], 'utf8')), ...argv.slice(2).map(Number)];
  const b = loadBinding();
  b.setThreads(threads);
  const status = (field) =>
    Number(
      /(\d+) kB/.exec(
        fs
          .readFileSync('/proc/self/status', 'utf8')
          .split('\n')
          .find((l) => l.startsWith(field)),
      )[1],
    ) / 1024;
  const x = Float32Array.from({ length: batch * spec.in_channels * spec.height * spec.width }, (_, i) =>
    Math.sin(i * 0.37),
  );
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
    await m.trainStep({
      x,
      labels,
      batch,
      teachers,
      lr: 1e-3,
      momentum: 0.9,
      weightDecay: 5e-4,
      nesterov: true,
      decoupled: false,
      labelSmoothing: 0,
      distillWeight: 1,
      temperature: 4,
      dropoutSeed: i,
    });
  console.log(JSON.stringify({ dfl_peak_delta_mb: status('VmHWM') - base }));
  process.exit(0);
}

const NINE =
  'vgg8@0.25,vgg8@1,vgg16@1,resnet18@0.25,resnet18@1,mobilenetv2@0.25,mobilenetv2@1,shufflenetv2@0.5,shufflenetv2@1';
const models = arg('models', NINE).split(',').filter(Boolean);
const batch = Number(arg('batch', 128)),
  reps = Number(arg('reps', 5)),
  warmup = Number(arg('warmup', 2));
const rounds = Number(arg('rounds', 2)),
  K = Number(arg('k', 3)),
  peakMs = Number(arg('peak-ms', 300));
const binding = loadBinding();
const rt = binding.runtimeInfo();
const threads = Number(arg('threads', rt.hardwareThreads));
for (const [name, v, min] of [
  ['batch', batch, 2],
  ['reps', reps, 1],
  ['warmup', warmup, 0],
  ['rounds', rounds, 1],
  ['k', K, 1],
  ['threads', threads, 1],
  ['peak-ms', peakMs, 1],
])
  if (!Number.isInteger(v) || v < min) {
    console.error(`Expected an integer >= ${min} for --${name} but received ${arg(name)}`);
    process.exit(2);
  }
const venvs = ['torchvenv', 'venv-torch213']
  .map((v) => path.join(root, '..', v, 'bin', 'python'))
  .filter((p) => fs.existsSync(p));
const pythons = arg('pythons', ['/usr/bin/python3', process.env.PYTHON, ...venvs].filter(Boolean).join(','))
  .split(',')
  .filter(Boolean);
const compile = !flag('no-compile'),
  compileMode = arg('compile-mode', 'default'),
  withOrt = !flag('no-ort');
const outDir = path.resolve(arg('out', path.join(root, 'bench-results')));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-bench-'));
// One inductor cache for the run: round 1 compiles cold, later rounds find the compiled code.
const torchEnv = { ...process.env, TORCHINDUCTOR_CACHE_DIR: path.join(work, 'inductor') };

const lastJson = (text) => JSON.parse(text.trim().split('\n').at(-1));
function child(cmd, args, env = process.env) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, env });
  if (r.error) return { error: `${cmd} not runnable (${r.error.code ?? r.error.message})` };
  if (r.status !== 0)
    return { error: (r.stderr.trim().split('\n').at(-1) || r.stdout.trim().split('\n').at(-1)) ?? `exit ${r.status}` };
  try {
    return lastJson(r.stdout);
  } catch {
    return { error: `unreadable output: ${r.stdout.trim().split('\n').at(-1)}` };
  }
}
const torchRun = (python, specFile, mode) =>
  child(
    python,
    [
      path.join(here, 'bench_torch.py'),
      specFile,
      String(batch),
      String(reps),
      String(warmup),
      String(threads),
      String(K),
      mode,
      compileMode,
    ],
    torchEnv,
  );

// The SGEMM peak tool, built with the C++ tests (the same CMake build that `npm test` configures).
function gemmPeak() {
  const bdir = path.join(root, 'build', 'native-tests');
  for (const args of [
    [
      '-S',
      root,
      '-B',
      bdir,
      '-DDFL_BUILD_ADDON=OFF',
      '-DDFL_BUILD_TESTS=ON',
      '-DCMAKE_BUILD_TYPE=Release',
      '--log-level=WARNING',
    ],
    ['--build', bdir, '--target', 'dfl_gemm_peak', '--parallel', String(os.availableParallelism?.() ?? 2)],
  ]) {
    const r = spawnSync('cmake', args, { encoding: 'utf8' });
    if (r.status !== 0)
      return {
        error: `cmake ${args[0]} failed: ${(r.stderr || r.stdout || String(r.error)).trim().split('\n').at(-1)}`,
      };
  }
  return child(path.join(bdir, 'dfl_gemm_peak'), ['--threads', String(threads), '--ms', String(peakMs)]);
}

const commit = (() => {
  const r = spawnSync('git', ['-C', root, 'describe', '--always', '--dirty'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
})();
const started = new Date();
const load = { start: os.loadavg(), end: null };
const simd = describeSimd(rt);
process.stderr.write(`SIMD paths: ${simd}; measuring the SGEMM peak ...\n`);
const peakRuns = [gemmPeak()];
if (peakRuns[0].error) process.stderr.write(`no SGEMM peak: ${peakRuns[0].error}\n`);

const rows = [];
const versions = {};
for (const m of models) {
  const [name, w] = m.split('@');
  const spec = buildModel(name, {
    numClasses: 10,
    inChannels: 3,
    height: 32,
    width: 32,
    width_multiplier: Number(w ?? 1),
  });
  const specFile = path.join(work, `${name}@${w ?? 1}.json`);
  fs.writeFileSync(specFile, JSON.stringify(spec));
  const row = { model: m, gflop_per_img: NaN, rounds: {}, compile_s: {}, errors: {}, mem: {} };
  const record = (engine, phase, ms) => (row.rounds[engine] ??= { train: [], infer: [], dfl: [] })[phase].push(ms);
  const fail = (engine, phase, why) => ((row.errors[engine] ??= {})[phase] = why);
  for (let r = 0; r < rounds; ++r) {
    process.stderr.write(`${m}: round ${r + 1}/${rounds}\n`);
    const res = await benchmark({
      model: name,
      width: Number(w ?? 1),
      batchSize: batch,
      device: 'cpu',
      threads,
      teachers: K,
      reps,
      warmup,
    });
    row.gflop_per_img = res.gflops_per_img;
    record(OURS, 'train', res.train.ms_median);
    record(OURS, 'infer', res.infer.ms_median);
    record(OURS, 'dfl', res.dfl.ms_median);
    for (const py of pythons) {
      for (const mode of compile ? ['speed', 'compile'] : ['speed']) {
        const t = torchRun(py, specFile, mode);
        const engine = t.torch
          ? `torch ${t.torch} ${mode === 'speed' ? 'eager' : 'compile'}`
          : `torch (${py}) ${mode === 'speed' ? 'eager' : 'compile'}`;
        if (t.torch) versions[`torch ${t.torch}`] = py;
        if (t.error) {
          for (const p of ['train', 'infer', 'dfl']) fail(engine, p, t.error);
          continue;
        }
        for (const [p, key] of [
          ['train', 'train_ms'],
          ['infer', 'forward_ms'],
          ['dfl', 'dfl_ms'],
        ]) {
          if (t[key]) record(engine, p, median(t[key]));
          else fail(engine, p, t.errors?.[key === 'forward_ms' ? 'forward' : p] ?? 'not measured');
        }
        if (t.compile_s && r === 0)
          row.compile_s[engine] = { train: t.compile_s.train, infer: t.compile_s.forward, dfl: t.compile_s.dfl };
      }
    }
    if (withOrt) {
      const o = child(process.execPath, [
        path.join(here, 'ort_forward.mjs'),
        specFile,
        String(batch),
        String(reps),
        String(Math.max(1, warmup)),
        String(threads),
      ]);
      const engine = `onnxruntime ${o.ort ?? '?'}`;
      versions[engine] = 'onnxruntime-node, CPU EP, graph optimisations all';
      if (o.error) fail(engine, 'infer', o.error);
      else record(engine, 'infer', median(o.forward_ms));
    }
  }
  const memOurs = child(process.execPath, [
    fileURLToPath(import.meta.url),
    '--memory-child',
    specFile,
    String(batch),
    '3',
    String(K),
    String(threads),
  ]);
  const memTorch = pythons.map((py) => torchRun(py, specFile, 'memory').dfl_peak_delta_mb).filter(Number.isFinite);
  row.mem = { ours: memOurs.dfl_peak_delta_mb ?? NaN, torch: memTorch.length ? Math.min(...memTorch) : NaN };
  rows.push(row);
}
fs.rmSync(work, { recursive: true, force: true });
process.stderr.write('measuring the SGEMM peak again ...\n');
peakRuns.push(gemmPeak());
load.end = os.loadavg();

const goodPeaks = peakRuns.filter((p) => !p.error);
const peak = {
  gflop_s: goodPeaks.length ? Math.max(...goodPeaks.map((p) => p.peak_gflop_s)) : NaN,
  gemm: goodPeaks[0]?.gemm ?? rt.gemmKernel,
  runs: peakRuns,
};
for (const row of rows) row.summary = summarise(row, { batch, K, peak: peak.gflop_s });
const finished = new Date();
const cpu = os.cpus()[0]?.model ?? 'cpu';
const meta = {
  date: started.toISOString(),
  started: started.toISOString().slice(0, 16) + 'Z',
  finished: finished.toISOString().slice(0, 16) + 'Z',
  commit,
  cpu,
  hardware_threads: rt.hardwareThreads,
  cpu_features: rt.cpuFeatures,
  simd,
  simd_paths: rt.simdPaths,
  node: process.version,
  threads,
  batch,
  input: [3, 32, 32],
  K,
  reps,
  warmup,
  rounds,
  compile_mode: compile ? compileMode : null,
  engines: [`dfl-native (${commit})`, ...Object.entries(versions).map(([e, where]) => `${e} (${where})`)],
  peak,
  load,
  command: `node scripts/bench/bench-vs-torch.mjs ${argv.join(' ')}`.trim(),
};
const run = { meta, rows };
const md = markdown(run);
fs.mkdirSync(outDir, { recursive: true });
const stamp = `${started.toISOString().slice(0, 16).replace(/:/g, '')}Z-${cpu
  .toLowerCase()
  .replace(/[^a-z0-9]+/g, '-')
  .replace(/^-|-$/g, '')}-${commit}`;
fs.writeFileSync(
  path.join(outDir, `${stamp}.json`),
  JSON.stringify(run, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1),
);
fs.writeFileSync(path.join(outDir, `${stamp}.md`), md);
console.log(md);
// Each round's medians: on a noisy machine they show how far a row moved within the run.
const each = (v) => (v.length ? v.map((x) => (Number.isFinite(x) ? x.toFixed(1) : '-')).join(' / ') : '-');
for (const r of rows)
  for (const [engine, x] of Object.entries(r.rounds))
    console.log(
      `  ${r.model} per round, ${engine}: train ${each(x.train)} ms, fwd ${each(x.infer)}, DFL ${each(x.dfl)}`,
    );
console.log(`\nwrote ${path.join(outDir, stamp)}.json and .md`);
