// The addon validates at its boundary: every bad call throws an Error; the process survives.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { describeSimd } from '../../dist/binding.js';
import { binding, noise, tinyModel, tinySpec } from '../helpers/native.js';

const step = (over: Record<string, unknown> = {}) => ({
  x: noise(2 * 3 * 8 * 8),
  labels: Int32Array.from([0, 1]),
  batch: 2,
  lr: 0.1,
  momentum: 0.9,
  weightDecay: 5e-4,
  nesterov: true,
  decoupled: false,
  labelSmoothing: 0,
  distillWeight: 1,
  temperature: 4,
  dropoutSeed: 1,
  ...over,
});

test('runtime info reports the cpu backend, threads and the SIMD paths', () => {
  const info = binding.runtimeInfo();
  assert.ok(info.compiledBackends.includes('cpu'));
  assert.ok(info.usableBackends.includes('cpu'));
  const cuda = info.backends.find((b) => b.name === 'cuda');
  assert.ok(cuda, 'cuda is always listed, with why it cannot be used');
  if (!cuda.usable) assert.ok(cuda.detail.length > 10 && info.cudaStatus === cuda.detail, cuda.detail);
  assert.ok(['avx512', 'avx2', 'portable'].includes(info.gemmKernel));
  assert.equal(info.simdPaths.gemm, info.gemmKernel);
  assert.ok(['avx512', 'avx2', 'portable'].includes(info.simdLevel));
  // the one-line form benchmark headers print: every family, and the cap when one was asked for
  const line = describeSimd(info);
  for (const [family, level] of Object.entries(info.simdPaths)) assert.ok(line.includes(`${family} ${level}`), line);
  assert.match(describeSimd({ ...info, simdRequest: 'avx2' }), /\(DFL_SIMD=avx2\)$/);
  assert.ok(info.hardwareThreads >= 1);
});

test('bad model specs throw errors that name the node', () => {
  const bad: [unknown, RegExp][] = [
    [undefined, /Expected an object for spec but received undefined/],
    [{ ...tinySpec(), nodes: 'x' }, /Expected an array of nodes for spec.nodes/],
    [{ ...tinySpec(), in_channels: -1 }, /spec.in_channels/],
    [
      { ...tinySpec(), nodes: [{ op: 'input' }, { op: 'warp', inputs: [0] }] },
      /Expected one of input, conv, bn, .* for spec.nodes\[1\].op but received string 'warp'/,
    ],
    [{ ...tinySpec(), nodes: [{ op: 'input' }, { op: 'relu', inputs: [5] }] }, /inputs\[0\]/],
    [
      {
        ...tinySpec(),
        nodes: [{ op: 'input' }, { op: 'conv', name: 'c', inputs: [0], out_channels: 4, kernel_h: 99, kernel_w: 99 }],
      },
      /does not fit/,
    ],
    [
      { ...tinySpec(), nodes: [{ op: 'input' }, { op: 'conv', name: 'c', inputs: [0], out_channels: 4, groups: 2 }] },
      /groups 2 must divide/,
    ],
    [{ ...tinySpec(), nodes: [{ op: 'input' }, { op: 'relu', inputs: [0] }] }, /last node must output/],
  ];
  for (const [spec, re] of bad) assert.throws(() => new binding.Model(spec as never, 0), re);
  assert.throws(
    () => new binding.Model(tinySpec(), 0, 'cpu', 'xavier' as never),
    /Expected one of kaiming-normal, pytorch-default for convInit but received string 'xavier'/,
  );
  assert.throws(() => new binding.Model(tinySpec(), 0, 'cpu', 3 as never), /convInit/);
  // the two inits draw different conv weights from the same seed; linear layers are the same
  const a = new binding.Model(tinySpec(), 5, 'cpu', 'kaiming-normal'),
    b = new binding.Model(tinySpec(), 5, 'cpu', 'pytorch-default');
  assert.notDeepEqual(a.getParams(), b.getParams());
  a.dispose();
  b.dispose();
});

test('bad arguments to model methods throw, never crash', () => {
  const m = tinyModel();
  const n = m.info().numParams;
  assert.throws(() => m.setParams(new Float32Array(n - 1)), /Expected a Float32Array of length/);
  assert.throws(
    () => m.setParams(new Float64Array(n) as never),
    /Expected a Float32Array for params but received Float64Array/,
  );
  assert.throws(() => m.forwardSync(new Float32Array(5), 1), /Expected a Float32Array of length 192/);
  assert.throws(() => m.forwardSync(noise(192), 0), /batch/);
  assert.throws(() => m.forwardSync(noise(192), 1.5), /batch/);
  assert.throws(() => m.reinitLayers([7], 1, 'reinit'), /layers\[0\]/);
  assert.throws(() => m.reinitLayers([0], 1, 'explode' as never), /'reinit' or 'shrink-perturb'/);
  assert.throws(() => m.reinitLayers([0], -1, 'reinit'), /seed/);
});

test('bad training steps reject or throw with a clear message', async () => {
  const m = tinyModel();
  assert.throws(() => m.trainStep(step({ labels: Int32Array.from([0, 9]) }) as never), /labels\[1\] is 9/);
  assert.throws(() => m.trainStep(step({ labels: Int32Array.from([0]) }) as never), /Int32Array of length 2/);
  assert.throws(
    () => m.trainStep(step({ teachers: [{}] }) as never),
    /Expected a Teacher \(from model.snapshot\(\)\) for teachers\[0\]/,
  );
  assert.throws(() => m.trainStep(step({ teachers: [m] }) as never), /Expected a Teacher/);
  const t = tinyModel(2).snapshot();
  assert.throws(() => m.trainStep(step({ teachers: [t, t] }) as never), /busy|listed twice/);
  assert.throws(
    () => m.trainStep(step({ teachers: [t], teacherWeights: new Float32Array(2) }) as never),
    /positive sum/,
  );
  assert.throws(() => m.trainStep(step({ temperature: 0 }) as never), /temperature/);
  assert.throws(() => m.trainStep(step({ lr: Number.NaN }) as never), /Expected a finite number for lr/);
  const other = new binding.Model(tinySpec(5), 0).snapshot();
  assert.throws(() => m.trainStep(step({ teachers: [other] }) as never), /different input or class count/);
  // After every failure the model is still usable.
  const stats = await m.trainStep(step() as never);
  assert.ok(Number.isFinite(stats.loss));
});

test('devices are chosen by name; an unknown or unusable one is a clear error', () => {
  assert.equal(new binding.Model(tinySpec(), 0, 'cpu').info().device, 'cpu');
  assert.throws(
    () => new binding.Model(tinySpec(), 0, 'tpu' as never),
    /Unknown backend 'tpu' \(expected cpu or cuda, or checking:cpu \/ checking:cuda for the checking wrapper\)/,
  );
  if (!binding.runtimeInfo().usableBackends.includes('cuda'))
    assert.throws(() => new binding.Model(tinySpec(), 0, 'cuda'), /The cuda backend is not usable: ./);
  assert.throws(() => new binding.Model(tinySpec(), 0, 7 as never), /Expected a string for device/);
});

test('math modes: fp32 and deterministic by default, bf16 refused on the cpu with what to do, snapshots inherit the mode', () => {
  const m = new binding.Model(tinySpec(), 0, 'cpu');
  assert.deepEqual(m.math(), { precision: 'fp32', deterministic: true });
  assert.throws(
    () => m.setMath({ precision: 'bf16' }),
    /Cannot compute in bf16: the cpu backend computes in float32 only .*; use --precision fp32, or --device cuda on a machine with a GPU/,
  );
  assert.deepEqual(m.math(), { precision: 'fp32', deterministic: true }, 'a refused mode is not kept');
  assert.throws(
    () => m.setMath({ precision: 'fp16' as never }),
    /Expected one of fp32, bf16 for math.precision but received string 'fp16'/,
  );
  assert.throws(() => m.setMath({ deterministic: 'no' as never }), /Expected a boolean for math.deterministic/);
  assert.throws(() => m.setMath(3 as never), /Expected an object for math/);
  m.setMath({ deterministic: false });
  assert.deepEqual(m.math(), { precision: 'fp32', deterministic: false });
  const t = m.snapshot();
  assert.deepEqual(t.math(), { precision: 'fp32', deterministic: false });
  assert.throws(() => t.setMath({ precision: 'bf16' }), /Cannot compute in bf16/);
  t.setMath({});
  assert.deepEqual(t.math(), { precision: 'fp32', deterministic: true });
  t.dispose();
  m.dispose();
});

test('a snapshot is an inference-only teacher: same logits, a fraction of the memory, independent of the student', async () => {
  const m = tinyModel(6);
  const x = noise(3 * 192, 5);
  m.forwardSync(noise(4 * 192, 1), 4, true); // move the BN running statistics off their defaults
  const want = m.forwardSync(x, 3);
  const t = m.snapshot();
  const got = await t.forward(x, 3);
  for (let i = 0; i < want.length; ++i)
    assert.ok(Math.abs(got[i] - want[i]) <= 1e-5 * (1 + Math.abs(want[i])), `logit ${i}: ${got[i]} vs ${want[i]}`);
  assert.ok(
    t.info().deviceBytes < m.info().deviceBytes / 4,
    `teacher ${t.info().deviceBytes} B vs model ${m.info().deviceBytes} B`,
  );
  assert.ok(
    t.tensors().every((k) => !/running_|bn/.test(k.name)),
    'BN folded away',
  );
  await m.trainStep(step() as never);
  assert.deepEqual(t.forwardSync(x, 3), got, 'training the student does not move its teacher');
  // An empty teacher restored from the snapshot's weights computes the same logits.
  const r = new binding.Teacher(tinySpec(), 'cpu');
  r.setParams(t.getParams());
  r.setBuffers(t.getBuffers());
  assert.deepEqual(r.forwardSync(x, 3), got);
  assert.throws(() => r.setParams(new Float32Array(3)), /Expected a Float32Array of length \d+ for params/);
  t.dispose();
  assert.throws(() => t.forwardSync(x, 3), /disposed/);
});

test('a busy model refuses other calls; dispose during a step is safe', async () => {
  const m = tinyModel();
  const p = m.trainStep(step() as never);
  assert.throws(() => m.getParams(), /busy/);
  assert.throws(() => m.trainStep(step() as never), /busy/);
  m.dispose();
  const stats = await p; // the worker kept the model alive
  assert.ok(Number.isFinite(stats.loss));
  assert.equal(m.isDisposed(), true);
  assert.throws(() => m.getParams(), /disposed/);
  assert.throws(() => m.forwardSync(noise(192), 1), /disposed/);
});

test('a NaN input gives a non-finite step that leaves the weights untouched', async () => {
  const m = tinyModel();
  const before = m.getParams();
  const x = noise(2 * 192);
  x[5] = Number.NaN;
  const stats = await m.trainStep(step({ x }) as never);
  assert.equal(stats.finite, false);
  assert.deepEqual(m.getParams(), before);
});

test('a step whose SGD update itself overflows is undone: weights, momentum and BN statistics stay as they were', async () => {
  const m = tinyModel();
  try {
    await m.trainStep(step() as never); // momentum and BN statistics now hold non-trivial values
    const params = m.getParams(),
      momentum = m.getMomentum(),
      buffers = m.getBuffers();
    // The loss and gradients are finite; only the update lr * (grad + wd * w), about 1e40 * w, overflows float32.
    const stats = await m.trainStep(step({ x: noise(2 * 192, 7), lr: 1e20, weightDecay: 1e20 }) as never);
    assert.ok(Number.isFinite(stats.loss), 'the forward is finite: only the update overflows');
    assert.equal(stats.finite, false);
    assert.deepEqual(m.getParams(), params, 'parameters restored');
    assert.deepEqual(m.getMomentum(), momentum, 'momentum restored');
    assert.deepEqual(m.getBuffers(), buffers, 'BN statistics restored');
  } finally {
    m.dispose();
  }
});

test('augmentBatch and normalizeBatch check their buffers', () => {
  const out = new Float32Array(2 * 3 * 4 * 4);
  const img = new Uint8Array(2 * 3 * 4 * 4);
  const mean = Float32Array.from([0.5, 0.5, 0.5]),
    std = Float32Array.from([0.25, 0.25, 0.25]);
  assert.throws(
    () => binding.augmentBatch(out, img.subarray(0, 10), 2, 3, 4, 4, 1, true, mean, std, 1),
    /at least 96 bytes for images/,
  );
  assert.throws(
    () => binding.augmentBatch(out, img, 2, 3, 4, 4, 1, true, mean.subarray(0, 2), std, 1),
    /one per channel/,
  );
  assert.throws(
    () => binding.normalizeBatch(out, img, 2, 3, 4, 4, mean, Float32Array.from([1, 0, 1])),
    /positive finite std for every channel but channel 1 has mean [\d.]+ and std 0\.0+ \(give --mean and --std/,
  );
  binding.normalizeBatch(out, img, 2, 3, 4, 4, mean, std);
  assert.ok(out.every((v) => v === -2));
});
