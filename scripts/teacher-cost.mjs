#!/usr/bin/env node
// What teachers cost: memory per teacher and the DFL step (student step + K teacher forwards + KL)
// against a plain step, for any built copy of dfl-native (so two builds can be compared):
//   node scripts/teacher-cost.mjs [--pkg DIR] [--model vgg8@0.25] [--batch 128] [--k 3] [--steps 10]
// DIR (default: this package) must hold dist/ and build/Release/. Works with builds whose teachers
// are Model snapshots (model.snapshot()) and with older builds whose teachers were whole Models.
// Memory per teacher: resident set growth over K teachers that each ran one forward of the batch,
// divided by K (and the native deviceBytes where the build reports it).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const pkg = path.resolve(arg('pkg', path.join(path.dirname(fileURLToPath(import.meta.url)), '..')));
const [name, width] = arg('model', 'vgg8@0.25').split('@');
const batch = Number(arg('batch', 128)), K = Number(arg('k', 3)), steps = Number(arg('steps', 10));
if (!fs.existsSync(path.join(pkg, 'dist', 'binding.js'))) throw new Error(`${pkg} has no dist/binding.js; build it first`);
const { loadBinding } = await import(path.join(pkg, 'dist', 'binding.js'));
const { buildModel } = await import(path.join(pkg, 'dist', 'models', 'zoo.js'));
const b = loadBinding();
const spec = buildModel(name, { numClasses: 10, inChannels: 3, height: 32, width: 32, width_multiplier: Number(width ?? 1) });
const x = Float32Array.from({ length: batch * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.37));
const labels = Int32Array.from({ length: batch }, (_, i) => i % 10);
const opts = { x, labels, batch, lr: 0.01, momentum: 0.9, weightDecay: 5e-4, nesterov: true, decoupled: false, labelSmoothing: 0, distillWeight: 1, temperature: 4, dropoutSeed: 1 };

const student = new b.Model(spec, 1);
await student.trainStep(opts);
const snapshots = typeof student.snapshot === 'function';
const makeTeacher = (seed) => {
  if (snapshots) return student.snapshot();
  const t = new b.Model(spec, seed); // the old way: a whole training model with copied weights
  t.setParams(student.getParams());
  t.setBuffers(student.getBuffers());
  return t;
};
globalThis.gc?.();
const rss0 = process.memoryUsage().rss;
const teachers = [];
for (let k = 0; k < K; ++k) {
  const t = makeTeacher(k);
  await t.forward(x, batch);
  teachers.push(t);
}
const perTeacher = (process.memoryUsage().rss - rss0) / K;
const deviceBytes = teachers[0].info().deviceBytes;

const time = async (o) => {
  for (let i = 0; i < 2; ++i) await student.trainStep(o);
  const t0 = performance.now();
  for (let i = 0; i < steps; ++i) await student.trainStep(o);
  return (performance.now() - t0) / steps;
};
const plainMs = await time({ ...opts, distillWeight: 0 });
const dflMs = await time({ ...opts, teachers });
const mb = (v) => (v / 1048576).toFixed(2);
console.log(JSON.stringify({
  pkg, model: `${name}@${width ?? 1}`, batch, k: K, threads: b.getThreads(), teacher_api: snapshots ? 'snapshot' : 'model',
  rss_mb_per_teacher: Number(mb(perTeacher)), device_mb_per_teacher: deviceBytes === undefined ? null : Number(mb(deviceBytes)),
  plain_step_ms: Number(plainMs.toFixed(1)), dfl_step_ms: Number(dflMs.toFixed(1)), dfl_over_plain: Number((dflMs / plainMs).toFixed(3)),
}));
for (const t of teachers) t.dispose();
student.dispose();
