// The ONNX exporter op by op: each spec below is exported (BatchNormalization nodes and folded BN),
// run in onnxruntime-node and compared with the native eval-mode forward.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { NativeModel } from '../../dist/binding.js';
import { buildOnnx, ONNX_OPSET, readOnnxMetadata } from '../../dist/io/onnx.js';
import { compareLogits, runOnnx, sampleInputs, verifyOnnx } from '../../dist/io/onnx-verify.js';
import { GraphBuilder, type ModelSpec } from '../../dist/models/spec.js';
import { buildModel } from '../../dist/models/zoo.js';
import { binding, noise, tinySpec } from '../helpers/native.js';

/** Non-trivial BN statistics and affine parameters, so folding and BN export are really tested. */
function perturbBn(model: NativeModel, seed: number): void {
  const params = model.getParams();
  const buffers = model.getBuffers();
  const r = noise(params.length + buffers.length, seed);
  let k = 0;
  const bnNodes = new Set(
    model
      .tensors()
      .filter((t) => t.name.endsWith('.running_var'))
      .map((t) => t.node),
  );
  for (const t of model.tensors()) {
    const dst = t.kind === 'buffer' ? buffers : params;
    for (let i = 0; i < t.size; ++i, ++k) {
      const u = r[k % r.length];
      if (t.name.endsWith('.running_var')) dst[t.offset + i] = 0.6 + 0.5 * (u + 1);
      else if (t.name.endsWith('.running_mean')) dst[t.offset + i] = 0.3 * u;
      else if (bnNodes.has(t.node) && t.kind === 'weight') dst[t.offset + i] = 1 + 0.4 * u;
      else if (bnNodes.has(t.node) && t.kind === 'bias') dst[t.offset + i] = 0.2 * u;
    }
  }
  model.setParams(params);
  model.setBuffers(buffers);
}

function check(name: string, spec: ModelSpec, expectOps: string[] = [], samples = 3): void {
  for (const foldBn of [false, true]) {
    test(`${name}${foldBn ? ' (BN folded)' : ''}: onnxruntime matches the native forward`, async () => {
      const model = new binding.Model(spec, 7);
      try {
        perturbBn(model, 11);
        const nc = model.info().numClasses;
        const classNames = Array.from({ length: nc }, (_, i) => `class ${i}`);
        const mean = new Array(spec.in_channels).fill(0.45),
          std = new Array(spec.in_channels).fill(0.22);
        const { bytes, ops, foldedBn } = buildOnnx(spec, model, { classNames, mean, std, foldBn });
        for (const op of expectOps) assert.ok(ops[op] > 0, `expected ${op} in ${JSON.stringify(ops)}`);
        if (foldBn)
          assert.equal(ops.BatchNormalization ?? 0, spec.nodes.filter((n) => n.op === 'bn').length - foldedBn);
        const r = await verifyOnnx(bytes, model, [spec.in_channels, spec.height, spec.width], {
          samples,
          mean,
          std,
          tolerance: 1e-4,
        });
        assert.ok(r.ok, `relative difference ${r.relDiff} (max abs ${r.maxAbsDiff})`);
        const meta = readOnnxMetadata(bytes);
        assert.deepEqual(meta.classNames, classNames);
        assert.deepEqual(meta.inputShape, [spec.in_channels, spec.height, spec.width]);
        assert.deepEqual(meta.mean, mean);
        assert.deepEqual(meta.std, std);
        assert.ok(meta.version);
      } finally {
        model.dispose();
      }
    });
  }
}

check('conv/bn/relu/maxpool/gap/flatten/linear', tinySpec(5, 3, 8), [
  'Conv',
  'Relu',
  'MaxPool',
  'GlobalAveragePool',
  'Gemm',
]);

/** Every remaining op: relu6, avgpool with padding, add, concat, split, shuffle, dropout, grouped and
 *  biased conv, rectangular kernels and strides, bias-free linear, linear straight from 4-D, bn after linear. */
function opZoo(): ModelSpec {
  const g = new GraphBuilder(3, 12, 10);
  const stem = g.convBn('stem', 'stem_bn', 0, 8, 3, 1, 1, 'relu6');
  const a = g.split(stem, [3, 5], 0);
  const b = g.split(stem, [3, 5], 1);
  const bb = g.conv('branch', b, 5, 3, 1, 1, 5, true); // depthwise, with bias
  const cat = g.concat([a, g.relu(bb)]);
  const sh = g.shuffle(cat, 2);
  const res = g.add(sh, stem);
  const rect =
    g.nodes.push({
      op: 'conv',
      name: 'rect',
      inputs: [res],
      out_channels: 6,
      kernel_h: 3,
      kernel_w: 1,
      stride_h: 2,
      stride_w: 1,
      pad_h: 1,
      pad_w: 0,
      groups: 1,
      bias: false,
    }) - 1;
  const ap = g.avgpool(g.bn('rect_bn', rect), 3, 2, 1);
  const mp = g.maxpool(ap, 2, 1, 1);
  const d = g.dropout(mp, 0.3);
  const fc1 = g.linear('fc1', d, 12, false); // reads a 4-D tensor directly
  const bn1 = g.bn('fc1_bn', fc1);
  const h = g.relu(bn1);
  g.linear('fc2', g.dropout(h, 0.1), 4);
  return g.build();
}
check('relu6/split/concat/shuffle/add/avgpool/dropout/linear-bn', opZoo(), [
  'Clip',
  'Slice',
  'Concat',
  'Transpose',
  'Reshape',
  'Add',
  'AveragePool',
  'MaxPool',
  'Gemm',
]);

check(
  'zoo vgg8 x0.125',
  buildModel('vgg8', { numClasses: 10, inChannels: 3, height: 32, width: 32, width_multiplier: 0.125 }),
);
check(
  'zoo resnet18 x0.125 (16x16)',
  buildModel('resnet18', { numClasses: 7, inChannels: 3, height: 16, width: 16, width_multiplier: 0.125 }),
  ['Add'],
);
check(
  'zoo mobilenetv2 x0.25',
  buildModel('mobilenetv2', { numClasses: 10, inChannels: 3, height: 32, width: 32, width_multiplier: 0.25 }),
  ['Clip', 'Add'],
  2,
);
check(
  'zoo shufflenetv2 x0.25',
  buildModel('shufflenetv2', { numClasses: 10, inChannels: 3, height: 32, width: 32, width_multiplier: 0.25 }),
  ['Slice', 'Transpose', 'Concat'],
  2,
);
check('grayscale input', tinySpec(3, 1, 8));

test('the exported graph declares opset 13 and runs any batch size', async () => {
  const spec = tinySpec(4, 3, 8);
  const model = new binding.Model(spec, 3);
  try {
    const { bytes } = buildOnnx(spec, model, { classNames: ['a', 'b', 'c', 'd'], mean: [0, 0, 0], std: [1, 1, 1] });
    assert.ok(ONNX_OPSET >= 13);
    for (const n of [1, 5]) {
      const x = sampleInputs(n, 3, 8, 8, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], n);
      const want = Float32Array.from(model.forwardSync(x, n, false));
      const got = await runOnnx(bytes, x, [n, 3, 8, 8]);
      assert.ok(compareLogits(got, want, 1e-4).ok);
    }
  } finally {
    model.dispose();
  }
});

test("the check is sensitive: another model's weights fail it", async () => {
  const spec = buildModel('shufflenetv2', {
    numClasses: 10,
    inChannels: 3,
    height: 32,
    width: 32,
    width_multiplier: 0.25,
  });
  const a = new binding.Model(spec, 1),
    b = new binding.Model(spec, 2);
  try {
    perturbBn(a, 5);
    perturbBn(b, 5);
    const { bytes } = buildOnnx(spec, a, {
      classNames: Array.from({ length: 10 }, (_, i) => `c${i}`),
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
    });
    const same = await verifyOnnx(bytes, a, [3, 32, 32], { samples: 2 });
    const other = await verifyOnnx(bytes, b, [3, 32, 32], { samples: 2 });
    assert.ok(same.ok);
    assert.ok(!other.ok, `relative difference ${other.relDiff} should exceed 1e-4`);
  } finally {
    a.dispose();
    b.dispose();
  }
});

test('class names that do not match the model are refused', () => {
  const spec = tinySpec(4, 3, 8);
  const model = new binding.Model(spec, 3);
  try {
    assert.throws(
      () => buildOnnx(spec, model, { classNames: ['a'], mean: [0, 0, 0], std: [1, 1, 1] }),
      /4 outputs but 1 class names/,
    );
  } finally {
    model.dispose();
  }
});
