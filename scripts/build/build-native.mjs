#!/usr/bin/env node
// Builds the native addon with cmake-js (the primary build), with the CUDA backend (libdfl_cuda.so)
// beside it when nvcc, cuDNN 9 and cuBLAS 13 are found (native/cuda/cuda.cmake says where it looks).
//   node scripts/build/build-native.mjs            Release build into build/Release/dfl_native.node
//   node scripts/build/build-native.mjs --debug    Debug build
// Environment: DFL_JOBS (parallel compile jobs, default: CPU count), DFL_CUDA=OFF|ON (CPU only |
// CUDA or fail; unset: CUDA when it builds),
// CUDNN_ROOT / CUBLAS_ROOT / DFL_PYTHON (where cuDNN and cuBLAS are), DFL_CUDA_WERROR=1 (CI).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const debug = process.argv.includes('--debug');

let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js');
} catch {
  console.error('dfl-native: cmake-js is not installed. Run `npm install` in the package folder first.');
  process.exit(1);
}

const jobs = process.env.DFL_JOBS || String(os.availableParallelism?.() ?? os.cpus().length);
// Configured every time (seconds), so that cuDNN/cuBLAS installed since the last build are found.
// DFL_CUDA unset: the CUDA backend when it can be built; OFF: the CPU addon alone; ON: the CUDA
// backend or fail (CI, GPU machines).
const want = (process.env.DFL_CUDA ?? '').toUpperCase();
const cuda = want === 'OFF' ? 'OFF' : 'ON';
const required = want === 'ON' ? ['--CDDFL_CUDA_REQUIRED=ON'] : ['--CDDFL_CUDA_REQUIRED=OFF'];
const common = ['--log-level', 'warn', ...(debug ? ['--debug'] : [])];
const cmake = (args) => spawnSync(process.execPath, [cmakeJs, ...args, ...common], { cwd: root, stdio: 'inherit' }).status;
const build = (cudaFlag) =>
  cmake(['configure', `--CDDFL_CUDA=${cudaFlag}`, ...required]) === 0 && cmake(['build', '--parallel', jobs]) === 0;

let ok = build(cuda);
if (!ok && cuda === 'ON' && want !== 'ON') {
  // An install never fails because of CUDA: build the CPU addon alone and say so.
  console.error('\ndfl-native: the build with the CUDA backend failed (see above); building the CPU addon alone.\n' +
    '  `npx dfl-native info` will list cuda as not compiled in; DFL_CUDA=OFF skips the attempt.');
  ok = build('OFF');
}
if (!ok) {
  console.error(
    '\ndfl-native: building the native addon failed.\n' +
      'Possible solutions:\n' +
      '  - install a C++17 compiler and CMake >= 3.19 (Debian: apt-get install g++ cmake)\n' +
      '  - re-run `npm run build:native` to see the full compiler output\n' +
      '  - or build with node-gyp instead: `npx node-gyp rebuild`'
  );
  process.exit(1);
}
