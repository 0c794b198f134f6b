// Initialisation against its formulas (docs/models.md): conv weights Kaiming normal with fan_out
// and the ReLU gain, N(0, 2 / (OC * KH * KW)); conv biases 0; linear weight and bias
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BN weight 1, bias 0, running mean 0, running var 1. Each
// initialised tensor's empirical mean and standard deviation must lie within Z standard errors of
// the formula's, the errors computed from the tensor's size (and the distribution's kurtosis), so a
// wrong std, a wrong fan or a uniform drawn from the wrong range fails, while the seeded draws pass
// with a margin. A reset (reinit) must re-draw its layers from the same distributions.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { NativeModel, TensorInfo } from '../../dist/binding.js';
import { GraphBuilder } from '../../dist/models/spec.js';
import { buildModel } from '../../dist/models/zoo.js';
import { headLayers } from '../../dist/train/schedule.js';
import { binding } from '../helpers/native.js';

/** Standard errors allowed: a seeded draw outside 5 SE has odds of about 6e-7 per check. */
const Z = 5;

type Law = { kind: 'normal' | 'uniform'; std: number; bound?: number } | { kind: 'constant'; value: number };

/**
 * The initial distribution of a tensor, from its node's op, its shape and kind (docs/models.md);
 * `linearFanIn` maps a linear node to its input size (its bias has the weight's bound).
 */
function lawOf(t: TensorInfo, nodeOp: string, linearFanIn: Map<number, number>): Law {
  if (t.kind === 'buffer') return { kind: 'constant', value: t.name.endsWith('running_var') ? 1 : 0 };
  if (nodeOp === 'bn') return { kind: 'constant', value: t.kind === 'weight' ? 1 : 0 };
  if (nodeOp === 'conv') {
    if (t.kind === 'bias') return { kind: 'constant', value: 0 };
    const [oc, , kh, kw] = t.shape;
    return { kind: 'normal', std: Math.sqrt(2 / (oc * kh * kw)) };
  }
  // linear: weight (OUT, IN) and bias (OUT) share the bound 1/sqrt(IN)
  const bound = 1 / Math.sqrt(linearFanIn.get(t.node)!);
  return { kind: 'uniform', std: bound / Math.sqrt(3), bound };
}

/** Checks one tensor's values against its law; returns a message or null. */
function check(values: Float32Array, law: Law): string | null {
  const n = values.length;
  if (law.kind === 'constant') {
    const bad = values.findIndex((v) => v !== law.value);
    return bad < 0 ? null : `[${bad}] = ${values[bad]}, expected every value ${law.value}`;
  }
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / n;
  let ss = 0,
    within = 0,
    outside = 0;
  for (const v of values) {
    ss += (v - mean) ** 2;
    if (Math.abs(v) < law.std) within += 1;
    if (law.bound !== undefined && Math.abs(v) > law.bound) outside += 1;
  }
  const sd = Math.sqrt(ss / (n - 1));
  // SE of the mean: std/sqrt(n); SE of the sample std: std*sqrt((kurtosis - 1) / (4n)).
  const kurtosis = law.kind === 'normal' ? 3 : 1.8;
  const seMean = law.std / Math.sqrt(n),
    seStd = law.std * Math.sqrt((kurtosis - 1) / (4 * n));
  if (Math.abs(mean) > Z * seMean)
    return `mean ${mean.toExponential(3)} is more than ${Z} SE (${seMean.toExponential(2)}) from 0 (n ${n})`;
  if (Math.abs(sd - law.std) > Z * seStd)
    return `std ${sd.toExponential(4)} differs from ${law.std.toExponential(4)} by more than ${Z} SE (${seStd.toExponential(2)}; n ${n})`;
  if (outside > 0) return `${outside} values outside the bound ${law.bound}`;
  // The shape: P(|x| < std) is 0.6827 for a normal and 1/sqrt(3) = 0.5774 for a uniform.
  const p = law.kind === 'normal' ? 0.6827 : 1 / Math.sqrt(3);
  const frac = within / n,
    seFrac = Math.sqrt((p * (1 - p)) / n);
  if (Math.abs(frac - p) > Z * seFrac)
    return `${(frac * 100).toFixed(1)}% of values within one std, expected ${(p * 100).toFixed(1)}% for a ${law.kind} (n ${n})`;
  return null;
}

/** Every tensor of `model` in `layers` (all when undefined) against its law; returns the tensors checked. */
function checkModel(model: NativeModel, ops: string[], layers?: number[]): number {
  const params = model.getParams(),
    buffers = model.getBuffers();
  const linearFanIn = new Map<number, number>();
  for (const t of model.tensors())
    if (ops[t.node] === 'linear' && t.kind === 'weight') linearFanIn.set(t.node, t.size / t.shape[0]);
  let checked = 0;
  for (const t of model.tensors()) {
    if (layers && !layers.includes(t.layer)) continue;
    const values = (t.kind === 'buffer' ? buffers : params).subarray(t.offset, t.offset + t.size);
    const problem = check(values, lawOf(t, ops[t.node], linearFanIn));
    assert.equal(problem, null, `${t.name} ${JSON.stringify(t.shape)}: ${problem}`);
    checked += 1;
  }
  return checked;
}

const zoo = [
  ['vgg8', 0.5],
  ['resnet18', 0.25],
  ['mobilenetv2', 0.25],
  ['shufflenetv2', 0.5],
] as const;

for (const [name, width] of zoo) {
  test(`${name} x${width}: every initialised tensor follows its formula (Kaiming fan_out, U(+-1/sqrt(fan_in)), BN 1/0)`, () => {
    const spec = buildModel(name, { numClasses: 100, inChannels: 3, height: 32, width: 32, width_multiplier: width });
    const m = new binding.Model(spec, 7);
    try {
      assert.ok(
        checkModel(
          m,
          spec.nodes.map((n) => n.op),
        ) > 20,
      );
    } finally {
      m.dispose();
    }
  });
}

test('a linear layer on a 4-D input uses fan_in = C*H*W; conv biases start at 0', () => {
  const g = new GraphBuilder(3, 8, 8);
  const c = g.conv('conv', 0, 16, 3, 1, 1, 1, true);
  g.linear('fc', c, 64);
  const spec = g.build();
  const m = new binding.Model(spec, 3);
  try {
    const fc = m.tensors().find((t) => t.name === 'fc.weight')!;
    assert.deepEqual(fc.shape, [64, 16 * 8 * 8]);
    assert.equal(
      checkModel(
        m,
        spec.nodes.map((n) => n.op),
      ),
      4,
    );
  } finally {
    m.dispose();
  }
});

test('reset (reinit) re-draws its layers from the initial distributions and leaves the others', () => {
  const spec = buildModel('vgg8', { numClasses: 100, inChannels: 3, height: 32, width: 32, width_multiplier: 0.5 });
  const ops = spec.nodes.map((n) => n.op);
  const m = new binding.Model(spec, 1);
  try {
    // Move every value away from its initial law first, so only the re-draw can restore it.
    m.setParams(m.getParams().map((v) => 3 * v + 0.5));
    m.setBuffers(m.getBuffers().map((v) => v + 2));
    const before = m.getParams();
    const head = headLayers(m.info().numLayers, 2);
    m.reinitLayers(head, 12345, 'reinit');
    assert.ok(checkModel(m, ops, head) >= 2 + 6, 'the last conv + BN and the classifier');
    const after = m.getParams();
    for (const t of m.tensors())
      if (!head.includes(t.layer) && t.kind !== 'buffer')
        assert.deepEqual(
          after.subarray(t.offset, t.offset + t.size),
          before.subarray(t.offset, t.offset + t.size),
          `${t.name} is outside the reset`,
        );
  } finally {
    m.dispose();
  }
});
