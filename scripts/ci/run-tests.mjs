#!/usr/bin/env node
// `npm test`: everything, in order of speed of failure.
//   1. C++ kernel tests (no Node): finite differences, PyTorch fixtures, thread determinism; on a
//      CPU with AVX-512 the whole suite a second time under DFL_SIMD=avx2, so the AVX2 paths that
//      AVX2-only machines run stay tested too (docs/native.md, "CPU dispatch"); then the per-backend
//      tests through the checking backend over the CPU (--backend checking:cpu: allocations,
//      256-byte alignment and workspaces checked on every call, the CUDA path's rules without a GPU).
//   2. TypeScript build (src -> dist, test -> dist-test), then node:test over dist-test.
// Options: --only native|js    run one half;  --filter SUBSTR   passed to the C++ runner.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const argv = process.argv.slice(2);
const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : null;
const filter = argv.includes('--filter') ? argv[argv.indexOf('--filter') + 1] : null;
const jobs = String(os.availableParallelism?.() ?? os.cpus().length);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(`\n\`${cmd} ${args.join(' ')}\` exited with ${r.status}`);
    process.exit(r.status ?? 1);
  }
}

function listTests(dir) {
  if (!fs.existsSync(dir)) return [];
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listTests(p));
    else if (e.name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

if (only === null || only === 'native') {
  const bdir = path.join(root, 'build', 'native-tests');
  run('cmake', [
    '-S',
    '.',
    '-B',
    bdir,
    '-DDFL_BUILD_ADDON=OFF',
    '-DDFL_BUILD_TESTS=ON',
    '-DCMAKE_BUILD_TYPE=Release',
    '--log-level=WARNING',
  ]);
  run('cmake', ['--build', bdir, '--parallel', jobs]);
  const tests = path.join(bdir, 'dfl_native_tests');
  run(tests, filter ? [filter] : []);
  const level = spawnSync(tests, ['--hardware-simd-level'], { encoding: 'utf8' }).stdout.trim();
  // A DFL_SIMD the caller set already chose the path to test.
  if (level === 'avx512' && !process.env.DFL_SIMD) {
    console.log('\n== the C++ suite again with DFL_SIMD=avx2 (the AVX2 paths of AVX2-only CPUs)');
    run(tests, filter ? [filter] : [], { env: { ...process.env, DFL_SIMD: 'avx2' } });
  }
  console.log('\n== the per-backend tests through the checking backend (docs/native.md, "The checking backend")');
  run(tests, ['--backend', 'checking:cpu', ...(filter ? [filter] : [])]);
}

if (only === null || only === 'js') {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  run(process.execPath, [tsc, '-p', 'tsconfig.json']);
  fs.rmSync(path.join(root, 'dist-test'), { recursive: true, force: true });
  run(process.execPath, [tsc, '-p', 'tsconfig.test.json']);
  const files = listTests(path.join(root, 'dist-test'));
  if (files.length === 0) {
    console.error('no JavaScript tests found under dist-test');
    process.exit(1);
  }
  // One file at a time: the native tests already use every core; concurrent files would fight.
  run(process.execPath, ['--test', '--test-concurrency=1', ...files]);
}
