// Installing stays offline-safe and quiet: onnxruntime-node's postinstall (which downloads CUDA
// files from NuGet on linux/x64) is turned off by package.json's allowScripts (npm >= 11.16), not by
// a project .npmrc key, which npm 11 warns about on every npm/npx command.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  allowScripts?: Record<string, boolean>;
};

test("every dependency with an install script has an allowScripts decision; onnxruntime-node's is off", () => {
  const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { hasInstallScript?: boolean }>;
  };
  const withScripts = Object.entries(lock.packages)
    .filter(([k, p]) => p.hasInstallScript && k.includes('node_modules/')) // '' is dfl-native itself
    .map(([k]) => k.slice(k.lastIndexOf('node_modules/') + 'node_modules/'.length));
  assert.ok(withScripts.includes('onnxruntime-node'));
  for (const name of withScripts)
    assert.equal(typeof pkg.allowScripts?.[name], 'boolean', `allowScripts has no decision for ${name}`);
  assert.equal(pkg.allowScripts?.['onnxruntime-node'], false);
  // Its CPU build ships in the package: nothing has to be downloaded.
  const bin = path.join(
    root,
    'node_modules',
    'onnxruntime-node',
    'bin',
    'napi-v6',
    process.platform,
    process.arch,
    'onnxruntime_binding.node',
  );
  assert.ok(fs.existsSync(bin), `${bin} is bundled`);
});

test('npm in the package folder prints no warnings (no unknown project config)', () => {
  const execPath = process.env.npm_execpath;
  const [cmd, args] = execPath && execPath.endsWith('.js') ? [process.execPath, [execPath]] : ['npm', []];
  const r = spawnSync(cmd, [...args, 'pkg', 'get', 'name'], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, npm_config_loglevel: 'warn' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), '"dfl-native"');
  assert.doesNotMatch(r.stderr, /warn/i);
});

test('the dfl-native command is a tracked executable launcher, so `npx dfl-native` runs in a fresh clone', () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    bin: Record<string, string>;
    files: string[];
    version: string;
  };
  const launcher = path.join(root, manifest.bin['dfl-native']!);
  assert.ok(
    fs.readFileSync(launcher, 'utf8').startsWith('#!/usr/bin/env node\n'),
    `${launcher} starts with a node shebang`,
  );
  assert.ok((fs.statSync(launcher).mode & 0o111) !== 0, `${launcher} is executable`);
  // git keeps the mode a clone checks out (a build output would not have it)
  const mode = execFileSync('git', ['ls-files', '-s', manifest.bin['dfl-native']!], {
    cwd: root,
    encoding: 'utf8',
  }).split(' ')[0];
  assert.equal(mode, '100755', 'tracked with mode 100755');
  assert.ok(manifest.files.includes('bin/'), 'bin/ is published');
  const out = execFileSync(process.execPath, [launcher, '--version'], { encoding: 'utf8' }).trim();
  assert.equal(out, manifest.version);
});

test('the package ships the install script, the sources it builds and the user docs, not benchmark or study dumps', () => {
  const execPath = process.env.npm_execpath;
  const [cmd, args] = execPath && execPath.endsWith('.js') ? [process.execPath, [execPath]] : ['npm', []];
  // --ignore-scripts: list what would be packed without running `prepare` (dist/ is already built).
  const r = spawnSync(cmd, [...args, 'pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, npm_config_loglevel: 'error' },
  });
  assert.equal(r.status, 0, r.stderr);
  const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };
  const installScript = /^node (\S+)$/.exec(manifest.scripts.install!)?.[1];
  assert.ok(installScript, `the install script is one node script: ${manifest.scripts.install}`);
  for (const f of [
    installScript,
    'CMakeLists.txt',
    'binding.gyp',
    'native/sources.json',
    'data/cifar10-sample.dfls',
    'dist/index.js',
    'dist/cli/cli.js',
    'README.md',
    'docs/cli.md',
    'docs/models.md',
    'docs/performance.md',
    'docs/study/README.md',
  ])
    assert.ok(files.includes(f), `${f} is packed`);
  const dumps = files.filter(
    (f) => f.startsWith('docs/bench/') || (f.startsWith('docs/') && !f.endsWith('.md')) || /^docs\/study\/.+\//.test(f),
  );
  assert.deepEqual(dumps, [], 'no benchmark output, study runs or grids in the package');
  assert.deepEqual(
    files.filter((f) => f.startsWith('native/dev/') || f.startsWith('test/') || f.startsWith('scripts/bench/')),
    [],
    'no kernel lab, tests or benchmarks',
  );
});
