// Every zoo model's training step against torchvision's own model (test/fixtures/zoo_step_<model>.bin
// from scripts/fixtures/zoo_reference.py): the same weights (hash-filled on both sides), the same input, then
// logits, loss, gradients and the parameters and BN statistics after one SGD step must agree. The
// PyTorch side is built from torchvision's modules, not from the zoo's JSON spec, so a mis-wired
// skip connection, split or shuffle in src/models/zoo.ts fails here.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { NativeModel, TensorInfo } from '../../dist/binding.js';
import { buildModel, MODEL_NAMES } from '../../dist/models/zoo.js';
import { Fixture } from '../helpers/fixture.js';
import { hashFillModel, hashUniform } from '../helpers/hash-fill.js';
import { binding } from '../helpers/native.js';

/** max |got - want| relative to max |want| (and at least `floor`, for tensors near zero). */
function relDiff(got: ArrayLike<number>, want: ArrayLike<number>, floor = 1e-6): number {
  assert.equal(got.length, want.length, 'length');
  let d = 0,
    m = floor;
  for (let i = 0; i < want.length; ++i) {
    d = Math.max(d, Math.abs(got[i] - want[i]));
    m = Math.max(m, Math.abs(want[i]));
  }
  return d / m;
}

function norm(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; ++i) s += a[i] * a[i];
  return Math.sqrt(s);
}

// float32 against a float64 reference through 10-40 layers; a wiring error is off by O(1).
const TOL = { logits: 1e-4, loss: 1e-5, grad: 2e-3, after: 1e-4 };

for (const name of MODEL_NAMES) {
  test(`${name} x1/8: one training step matches torchvision (logits, loss, gradients, weights after SGD)`, async () => {
    const fx = Fixture.open(`zoo_step_${name}.bin`);
    const [B, C, H, W, NC] = ['B', 'C', 'H', 'W', 'NC'].map((k) => fx.cfg(k));
    const spec = buildModel(name, {
      numClasses: NC,
      inChannels: C,
      height: H,
      width: W,
      width_multiplier: fx.cfg('width'),
    });
    for (const n of spec.nodes) if (n.op === 'dropout') n.p = 0; // the fixture's dropout is off too (its mask is per-RNG)
    const m: NativeModel = new binding.Model(spec, 0);
    try {
      hashFillModel(m);
      const buffers0 = m.getBuffers();
      // The fixture's input key: the first whose forward keeps every ReLU/ReLU6 input away from its kinks.
      const salt = fx.cfg('input_salt');
      const x = Float32Array.from(hashUniform(salt === 0 ? 'input' : `input#${salt}`, B * C * H * W));
      const labels = fx.i('labels');

      const logits = m.forwardSync(x, B, true);
      assert.ok(
        relDiff(logits, fx.f('logits')) < TOL.logits,
        `logits differ by ${relDiff(logits, fx.f('logits')).toExponential(2)}`,
      );
      m.setBuffers(buffers0); // the training forward updated the BN statistics; the step starts again from the same state

      const stats = await m.trainStep({
        x,
        labels,
        batch: B,
        lr: fx.cfg('lr'),
        momentum: fx.cfg('momentum'),
        weightDecay: fx.cfg('weight_decay'),
        nesterov: fx.cfg('nesterov') === 1,
        decoupled: false,
        labelSmoothing: 0,
        distillWeight: 0,
        temperature: 1,
        dropoutSeed: 0,
      });
      assert.ok(stats.finite);
      assert.ok(
        Math.abs(stats.loss - fx.scalar('loss')) <= TOL.loss * Math.abs(fx.scalar('loss')),
        `loss ${stats.loss} vs ${fx.scalar('loss')}`,
      );
      assert.ok(
        Math.abs(stats.gradNorm - fx.scalar('grad_norm')) <= TOL.grad * fx.scalar('grad_norm'),
        `grad norm ${stats.gradNorm} vs ${fx.scalar('grad_norm')}`,
      );

      const grads = m.getGrads(),
        params = m.getParams(),
        buffers = m.getBuffers();
      const gradFloor = 1e-5 * fx.scalar('grad_norm');
      const slice = (t: TensorInfo, of: Float32Array) => of.subarray(t.offset, t.offset + t.size);
      let full = 0;
      for (const t of m.tensors()) {
        if (t.name.endsWith('num_batches_tracked')) continue;
        const after = slice(t, t.kind === 'buffer' ? buffers : params);
        const wantAfter = fx.scalar(`after_norm.${t.name}`);
        assert.ok(
          Math.abs(norm(after) - wantAfter) <= TOL.after * wantAfter,
          `${t.name}: norm after the step ${norm(after)} vs ${wantAfter}`,
        );
        if (t.kind !== 'buffer') {
          const wantGrad = fx.scalar(`grad_norm.${t.name}`);
          const got = norm(slice(t, grads));
          // A conv bias before a BN has an exact gradient of zero: float32 rounding noise, bounded by gradFloor
          assert.ok(
            Math.abs(got - wantGrad) <= TOL.grad * wantGrad + gradFloor,
            `${t.name}: gradient norm ${got} vs ${wantGrad}`,
          );
        }
        if (fx.has(`grad.${t.name}`)) {
          const d = relDiff(slice(t, grads), fx.f(`grad.${t.name}`));
          assert.ok(d < TOL.grad, `${t.name}: gradient differs by ${d.toExponential(2)}`);
        }
        if (fx.has(`after.${t.name}`)) {
          const d = relDiff(after, fx.f(`after.${t.name}`));
          assert.ok(d < TOL.after, `${t.name}: value after the step differs by ${d.toExponential(2)}`);
          full += 1;
        }
      }
      assert.ok(full >= 3, `the fixture compares a few tensors in full (got ${full})`);
    } finally {
      m.dispose();
    }
  });
}
