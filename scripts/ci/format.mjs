#!/usr/bin/env node
// Formats the sources (TypeScript and JavaScript with prettier, C++ and CUDA with clang-format, both
// pinned in devDependencies), or with --check lists the files that are not formatted and exits 1.
//   node scripts/ci/format.mjs [--check]        (npm run format / npm run format:check)
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const check = process.argv.includes('--check');
const unknown = process.argv.slice(2).filter((a) => a !== '--check');
if (unknown.length) {
  console.error(`format: unknown argument ${unknown.join(' ')}; the only option is --check`);
  process.exit(2);
}

const tracked = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], {
  cwd: root,
  encoding: 'utf8',
})
  .split('\n')
  .filter(Boolean);
const scripts = tracked.filter((f) => /^(src|test|scripts|bin)\/.*\.(ts|mjs|js)$/.test(f));
const native = tracked.filter((f) => /^(native|test\/native)\/.*\.(h|cpp|cu|cuh)$/.test(f));

function run(label, bin, args) {
  const r = spawnSync(bin, args, { cwd: root, encoding: 'utf8' });
  if (r.error) {
    console.error(`format: cannot run ${label} (${r.error.message}); run npm install first`);
    process.exit(2);
  }
  return r;
}

const bin = (name) => path.join(root, 'node_modules', '.bin', name);
let failed = false;

const prettier = run('prettier', bin('prettier'), [
  check ? '--list-different' : '--write',
  '--log-level',
  'warn',
  ...scripts,
]);
if (check && prettier.stdout.trim()) {
  failed = true;
  console.error(`Not formatted (prettier):\n${prettier.stdout.trim().replace(/^/gm, '  ')}`);
} else if (prettier.status !== 0 && !(check && prettier.status === 1)) {
  process.stderr.write(prettier.stderr);
  process.exit(2);
}

const clang = run(
  'clang-format',
  bin('clang-format'),
  check ? ['--dry-run', '--Werror', ...native] : ['-i', ...native],
);
if (clang.status !== 0) {
  failed = true;
  const files = [...new Set([...clang.stderr.matchAll(/^([^:\n]+):\d+:\d+: (?:error|warning)/gm)].map((m) => m[1]))];
  console.error(
    check ? `Not formatted (clang-format):\n${files.map((f) => `  ${f}`).join('\n') || clang.stderr}` : clang.stderr,
  );
}

if (failed) {
  if (check) console.error('Run npm run format to format them.');
  process.exit(1);
}
console.log(
  `${check ? 'formatted' : 'formatted now'}: ${scripts.length} TypeScript/JavaScript and ${native.length} C++/CUDA files`,
);
