// One device policy (src/device.ts) for train, study and bench: cuda is refused with the reason
// when it cannot run, auto falls back to the CPU saying why, bf16 is refused on the CPU.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { benchmark } from '../../dist/bench.js';
import { loadBinding, type RuntimeInfo } from '../../dist/binding.js';
import { chooseDevice } from '../../dist/device.js';
import { ConfigError, exitCodeFor } from '../../dist/errors.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli', 'cli.js');
const real = loadBinding().runtimeInfo();
const machine = (compiled: ('cpu' | 'cuda')[], usable: ('cpu' | 'cuda')[], cudaStatus: string): RuntimeInfo => ({
  ...real,
  compiledBackends: compiled,
  usableBackends: usable,
  cudaStatus,
});
const cpuBuild = machine(['cpu'], ['cpu'], 'not compiled in: no nvcc');
const noDriver = machine(['cpu', 'cuda'], ['cpu'], 'no CUDA driver (cudaErrorInsufficientDriver)');
const gpu = machine(['cpu', 'cuda'], ['cpu', 'cuda'], 'ok: NVIDIA H100');

const refused = (fn: () => unknown, re: RegExp) =>
  assert.throws(fn, (e: Error) => e instanceof ConfigError && exitCodeFor(e) === 2 && re.test(e.message), re.source);

test('cpu and cuda are taken as asked where they run; auto picks cuda when usable and says nothing', () => {
  assert.deepEqual(chooseDevice('cpu', 'fp32', gpu), { device: 'cpu', note: null });
  assert.deepEqual(chooseDevice('cuda', 'bf16', gpu), { device: 'cuda', note: null });
  assert.deepEqual(chooseDevice('auto', 'fp32', gpu), { device: 'cuda', note: null });
  assert.deepEqual(chooseDevice('cpu', 'fp32', cpuBuild), { device: 'cpu', note: null });
});

test("auto without a usable GPU runs on the CPU and says why: briefly for a CPU-only build, the driver's words otherwise", () => {
  assert.deepEqual(chooseDevice('auto', 'fp32', cpuBuild), {
    device: 'cpu',
    note: 'device auto -> cpu (this build has no CUDA backend; `dfl-native info` says why)',
  });
  assert.deepEqual(chooseDevice('auto', 'fp32', noDriver), {
    device: 'cpu',
    note: 'device auto -> cpu (cuda: no CUDA driver (cudaErrorInsufficientDriver))',
  });
});

test('cuda where it cannot run, and bf16 on the CPU, are refused with the reason and what to use instead', () => {
  refused(
    () => chooseDevice('cuda', 'fp32', noDriver),
    /^--device cuda is not available: no CUDA driver \(cudaErrorInsufficientDriver\)\. Use --device cpu \(or auto\)\.$/,
  );
  refused(() => chooseDevice('cuda', 'fp32', cpuBuild), /^--device cuda is not available: not compiled in: no nvcc\./);
  refused(
    () => chooseDevice('cpu', 'bf16', gpu),
    /^--precision bf16 runs convolutions and linear layers on a GPU's tensor cores, but this run is on the cpu\. Use --precision fp32 on the CPU\.$/,
  );
  refused(
    () => chooseDevice('auto', 'bf16', noDriver),
    /but this run is on the cpu \(cuda: no CUDA driver \(cudaErrorInsufficientDriver\)\)\. Use --precision fp32/,
  );
});

test(
  'bench follows the same policy as train: the same refusals, exit 2, and the auto note on stderr',
  { skip: real.usableBackends.includes('cuda') ? 'this machine has a usable GPU' : false },
  async () => {
    await assert.rejects(
      benchmark({ model: 'vgg8', width: 0.125, device: 'cuda', reps: 1, warmup: 0 }),
      (e: Error) => e instanceof ConfigError && /^--device cuda is not available: /.test(e.message),
    );
    const notes: string[] = [];
    const r = await benchmark({
      model: 'vgg8',
      width: 0.125,
      batchSize: 2,
      device: 'auto',
      reps: 1,
      warmup: 0,
      teachers: 0,
      threads: 1,
      log: (m) => notes.push(m),
    });
    assert.equal(r.device, 'cpu');
    assert.deepEqual(notes, [chooseDevice('auto', 'fp32', real).note]);
    for (const command of ['bench', 'train']) {
      const cuda = spawnSync(process.execPath, [cli, command, '--device', 'cuda'], { encoding: 'utf8' });
      assert.equal(cuda.status, 2, `${command}: ${cuda.stderr}`);
      assert.equal(
        cuda.stderr,
        `dfl-native: error: --device cuda is not available: ${real.cudaStatus}. Use --device cpu (or auto).\n`,
      );
      const bf16 = spawnSync(process.execPath, [cli, command, '--device', 'cpu', '--precision', 'bf16'], {
        encoding: 'utf8',
      });
      assert.equal(bf16.status, 2, `${command}: ${bf16.stderr}`);
      assert.match(
        bf16.stderr,
        /^dfl-native: error: --precision bf16 runs convolutions and linear layers on a GPU's tensor cores, but this run is on the cpu\. Use --precision fp32 on the CPU\.\n$/,
      );
    }
    const json = spawnSync(
      process.execPath,
      [
        cli,
        'bench',
        '--model',
        'vgg8@0.125,vgg8@0.25',
        '--batch-size',
        '2',
        '--reps',
        '1',
        '--warmup',
        '0',
        '--teachers',
        '0',
        '--threads',
        '1',
        '--json',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(json.status, 0, json.stderr);
    assert.equal(json.stdout.trim().split('\n').length, 2, 'stdout: one JSON object per model, nothing else');
    assert.equal(json.stderr, `${chooseDevice('auto', 'fp32', real).note}\n`, 'the device note once, on stderr');
  },
);
