// scripts/gpu/check.sh as far as it runs without a GPU: --dry-run's preflight and configure write
// status.json and say what is missing; a driver older than the toolkit stops the run at preflight
// with the reason; a wrong mode is refused (exit 2). The GPU phases run on a lent GPU machine only.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The package root: the nearest folder above this (compiled) file with scripts/gpu/check.sh. */
function packageRoot(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'scripts', 'gpu', 'check.sh'))) return dir;
    if (path.dirname(dir) === dir) throw new Error('cannot find scripts/gpu/check.sh above the test file');
  }
}
const script = path.join(packageRoot(), 'scripts', 'gpu', 'check.sh');

interface Phase {
  name: string;
  result: string;
  elapsed_s: number;
  note: string;
}
interface Status {
  mode: string;
  phase: string;
  state: string;
  elapsed_s: number;
  driver_cuda: string;
  toolkit: string;
  passed: number;
  failed: number;
  first_failure: string;
  stopped: string;
  phases: Phase[];
}

function check(args: string[], out: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync('bash', [script, ...args], {
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, OUT: out, ...env },
  });
  if (r.error) throw r.error;
  return r;
}
function onPath(cmd: string): boolean {
  return spawnSync('bash', ['-c', `command -v ${cmd}`]).status === 0;
}

test('check.sh --dry-run: preflight and configure, each phase in status.json, the missing driver named', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-gpu-check-'));
  try {
    const r = check(['--dry-run'], out);
    assert.equal(r.status, 0, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
    const s = JSON.parse(fs.readFileSync(path.join(out, 'status.json'), 'utf8')) as Status;
    assert.equal(s.mode, 'dry-run');
    assert.equal(s.phase, 'done');
    assert.ok(Number.isInteger(s.elapsed_s) && s.elapsed_s >= 0, `elapsed_s ${s.elapsed_s}`);
    assert.deepEqual(
      s.phases.map((p) => p.name),
      ['preflight', 'configure'],
    );
    const [preflight, configure] = s.phases;
    assert.ok(
      fs.readFileSync(path.join(out, 'preflight.txt'), 'utf8').includes('cmake: '),
      'preflight.txt lists the tools',
    );
    if (!onPath('nvidia-smi')) {
      assert.equal(s.driver_cuda, 'none');
      assert.equal(preflight.result, 'ok');
      assert.match(preflight.note, /no NVIDIA driver: nvidia-smi is not found, so nothing can run on a GPU here/);
    } else {
      assert.match(s.driver_cuda, /^\d+\.\d+$/);
    }
    // Configure with the CUDA backend required: it is built, or CMake's own reason is the note.
    if (configure.result === 'ok') {
      assert.match(configure.note, /building the CUDA backend/);
      assert.equal(s.state, 'passed');
    } else {
      assert.equal(configure.result, 'fail', JSON.stringify(configure));
      assert.match(
        configure.note,
        /the CUDA backend was required \(DFL_CUDA_REQUIRED\) but: (nvcc was not found|cuDNN 9: |cuBLAS 13: )/,
      );
      assert.equal(s.state, 'failed');
      assert.equal(s.first_failure, `configure: ${configure.note}`);
    }
    assert.ok(
      fs.readFileSync(path.join(out, 'configure.log'), 'utf8').includes('-- '),
      "configure.log holds CMake's messages",
    );
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('check.sh build-test stops at preflight when the driver is older than the toolkit', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-gpu-check-'));
  try {
    const bin = path.join(out, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(
      path.join(bin, 'nvidia-smi'),
      '#!/bin/sh\necho "| NVIDIA-SMI 570.86   Driver Version: 570.86   CUDA Version: 12.8 |"\n',
      { mode: 0o755 },
    );
    fs.writeFileSync(
      path.join(bin, 'nvcc'),
      '#!/bin/sh\necho "nvcc: NVIDIA (R) Cuda compiler driver"\necho "Cuda compilation tools, release 13.0, V13.0.88"\n',
      { mode: 0o755 },
    );
    const r = check(['build-test'], path.join(out, 'results'), { PATH: `${bin}:${process.env.PATH}` });
    assert.equal(r.status, 1, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
    const s = JSON.parse(fs.readFileSync(path.join(out, 'results', 'status.json'), 'utf8')) as Status;
    assert.equal(s.mode, 'build-test');
    assert.equal(s.state, 'failed');
    assert.equal(s.stopped, 'driver older than the toolkit');
    assert.equal(s.driver_cuda, '12.8');
    assert.equal(s.toolkit, '13.0');
    assert.deepEqual(
      s.phases.map((p) => [p.name, p.result]),
      [['preflight', 'fail']],
    );
    assert.match(s.first_failure, /^preflight: the driver supports CUDA 12\.8 but nvcc is 13\.0/);
    assert.ok(!fs.existsSync(path.join(out, 'results', 'configure.log')), 'nothing past preflight ran');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('check.sh refuses an unknown mode with exit 2 and one line', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-gpu-check-'));
  try {
    const r = check(['tests'], out);
    assert.equal(r.status, 2);
    assert.equal(
      r.stderr.trim(),
      "check.sh: expected build-test, bench or --dry-run as the first argument but received 'tests'",
    );
    assert.ok(!fs.existsSync(path.join(out, 'status.json')));
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
