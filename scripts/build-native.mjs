#!/usr/bin/env node
// Builds the native addon with cmake-js (the primary build; it will also carry CUDA).
//   node scripts/build-native.mjs            Release build into build/Release/dfl_native.node
//   node scripts/build-native.mjs --debug    Debug build
// Environment: DFL_JOBS (parallel compile jobs, default: CPU count).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const debug = process.argv.includes('--debug');

let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js');
} catch {
  console.error('dfl-native: cmake-js is not installed. Run `npm install` in the package folder first.');
  process.exit(1);
}

const jobs = process.env.DFL_JOBS || String(os.availableParallelism?.() ?? os.cpus().length);
const args = [cmakeJs, 'compile', '--log-level', 'warn', '--parallel', jobs];
if (debug) args.push('--debug');
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error(
    '\ndfl-native: building the native addon failed.\n' +
      'Possible solutions:\n' +
      '  - install a C++17 compiler and CMake >= 3.19 (Debian: apt-get install g++ cmake)\n' +
      '  - re-run `npm run build:native` to see the full compiler output\n' +
      '  - or build with node-gyp instead: `npx node-gyp rebuild`'
  );
  process.exit(r.status ?? 1);
}
