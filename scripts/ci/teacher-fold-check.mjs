#!/usr/bin/env node
// Folded (teacher) vs unfolded (eval forward) logits of each zoo model after 20 training steps of
// random-ish data (so the BN statistics are not their defaults), and what each holds in memory.
//   node scripts/ci/teacher-fold-check.mjs
import { loadBinding } from '../../dist/binding.js';
import { buildModel } from '../../dist/models/zoo.js';
const b = loadBinding();
for (const [name, w] of [
  ['vgg8', 0.25],
  ['vgg16', 0.25],
  ['resnet18', 0.25],
  ['mobilenetv2', 0.25],
  ['shufflenetv2', 0.5],
]) {
  const spec = buildModel(name, { numClasses: 10, inChannels: 3, height: 32, width: 32, width_multiplier: w });
  const m = new b.Model(spec, 1);
  const B = 16;
  const x = Float32Array.from({ length: B * 3072 }, (_, i) => Math.sin(i * 0.37) * 1.5);
  const labels = Int32Array.from({ length: B }, (_, i) => i % 10);
  for (let s = 0; s < 20; ++s)
    await m.trainStep({
      x,
      labels,
      batch: B,
      lr: 0.05,
      momentum: 0.9,
      weightDecay: 5e-4,
      nesterov: true,
      decoupled: false,
      labelSmoothing: 0,
      distillWeight: 0,
      temperature: 4,
      dropoutSeed: s,
    });
  const y = Float32Array.from({ length: B * 3072 }, (_, i) => Math.cos(i * 0.11));
  const want = m.forwardSync(y, B);
  const t = m.snapshot();
  const got = t.forwardSync(y, B);
  let maxAbs = 0,
    scale = 0;
  for (let i = 0; i < want.length; ++i) {
    maxAbs = Math.max(maxAbs, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  console.log(
    `${name}@${w}: max |folded - unfolded| = ${maxAbs.toExponential(2)}, max |logit| = ${scale.toFixed(2)}, relative ${(maxAbs / scale).toExponential(2)}; teacher ${(t.info().deviceBytes / 1048576).toFixed(2)} MB vs student ${(m.info().deviceBytes / 1048576).toFixed(1)} MB`,
  );
}
