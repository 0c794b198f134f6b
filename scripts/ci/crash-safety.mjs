#!/usr/bin/env node
// Crash safety: SIGKILL a training run at random moments (some inside a checkpoint write), check
// that the checkpoint folder is always readable (or absent before the first save), resume, and check
// that every run ends with exactly the weights (student, momentum, teachers) of an uninterrupted run.
//
//   node scripts/ci/crash-safety.mjs [--trials N] [--seed S] [--epochs E]
//
// Needs the compiled tests (npx tsc -p tsconfig.json && npx tsc -p tsconfig.test.json). The run:
// vgg8 --width 0.125, DFL (2 teachers, reset every 2 epochs), synthetic 8x8 data, threads 1, in a
// child process. Trials alternate between a kill at a random time and a kill inside a checkpoint
// save (DFL_TEST_SLOW_CHECKPOINT_MS stretches each save; the kill lands 0-300 ms into it).
// Exit code 1 when any trial fails.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const self = fileURLToPath(import.meta.url);
const argv = process.argv.slice(2);
const arg = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const imp = (rel) => import(pathToFileURL(path.join(root, rel)).href);

const RUN = {
  model: 'vgg8',
  width: 0.125,
  batchSize: 16,
  lr: 0.05,
  threads: 1,
  seed: 5,
  method: 'dfl',
  teachers: 2,
  resetCycle: 2,
};

if (argv[0] === '--child') {
  // child: train (or resume) into `out`
  const [, out, epochs] = argv;
  const { train } = await imp('dist/train/trainer.js');
  const { syntheticSplits } = await imp('dist-test/helpers/synthetic.js');
  const dataset = syntheticSplits(320, 40, 4);
  const resume = fs.existsSync(path.join(out, 'checkpoint', 'state.json'));
  const run = resume ? train({ resume: out, dataset }) : train({ ...RUN, epochs: Number(epochs), dataset, out });
  await run.summary;
  process.exit(0);
}

const trials = Number(arg('--trials', '10'));
const epochs = Number(arg('--epochs', '6'));
let seed = Number(arg('--seed', '1')) >>> 0;
const rnd = () => (seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32;
const { readState, loadCheckpoint } = await imp('dist/io/checkpoint.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-crash-'));

function launch(out, env = {}) {
  const child = spawn(process.execPath, [self, '--child', out, String(epochs)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr })));
  return { child, exited };
}

/** The files state.json names, as bytes (the comparison is byte-for-byte). */
function finalFiles(out) {
  const dir = path.join(out, 'checkpoint');
  const st = readState(dir);
  const files = {};
  for (const f of [st.files.model, st.files.optim, st.files.teachers].filter(Boolean))
    files[f] = fs.readFileSync(path.join(dir, f));
  return { epoch: st.epoch, files };
}

/** The checkpoint folder after a kill: absent/empty (no save finished yet) or fully loadable. */
async function checkReadable(out) {
  const dir = path.join(out, 'checkpoint');
  if (!fs.existsSync(path.join(dir, 'state.json'))) return 'none yet';
  const st = readState(dir);
  const c = await loadCheckpoint(out);
  c.model.dispose();
  for (const f of [st.files.optim, st.files.teachers].filter(Boolean))
    if (!fs.existsSync(path.join(dir, f))) throw new Error(`${f} named by state.json is missing`);
  return `epoch ${st.epoch}${st.partial ? '+' : ''}`;
}

/** Resolves when a checkpoint save is in progress: a weights file state.json does not name yet. */
async function waitForSave(out, deadline) {
  const dir = path.join(out, 'checkpoint');
  while (performance.now() < deadline) {
    try {
      const names = fs.readdirSync(dir);
      let named = [];
      try {
        const st = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
        named = Object.values(st.files);
      } catch {
        // no state yet
      }
      if (names.some((f) => f.endsWith('.tmp') || (f.endsWith('.safetensors') && !named.includes(f)))) return true;
    } catch {
      // no folder yet
    }
    await new Promise((r) => setTimeout(r, 3));
  }
  return false;
}

console.log(
  `crash-safety: ${trials} trials, ${epochs} epochs, ${new Date().toISOString()}, node ${process.version}, ${os.cpus().length} cpus`,
);
const t0 = performance.now();
const refOut = path.join(tmp, 'reference');
const ref = launch(refOut);
const r0 = await ref.exited;
if (r0.code !== 0) {
  console.error(`the reference run failed (${r0.code ?? r0.signal}):\n${r0.stderr}`);
  process.exit(1);
}
const refSeconds = (performance.now() - t0) / 1000;
const reference = finalFiles(refOut);
console.log(
  `reference: ${refSeconds.toFixed(1)} s, epoch ${reference.epoch}, files ${Object.keys(reference.files).join(', ')}`,
);

const rows = [];
let passed = 0;
for (let t = 1; t <= trials; ++t) {
  const out = path.join(tmp, `trial-${t}`);
  const inSave = t % 2 === 0; // even trials: kill inside a checkpoint save
  const kills = 1 + (rnd() < 0.4 ? 1 : 0);
  const notes = [];
  let ok = true;
  try {
    for (let k = 0; k < kills; ++k) {
      const env = inSave ? { DFL_TEST_SLOW_CHECKPOINT_MS: '60' } : {};
      const run = launch(out, env);
      const start = performance.now();
      let when;
      if (inSave) {
        // skip a random number of saves, then kill 0-300 ms into one
        const skip = Math.floor(rnd() * 2);
        let found = await waitForSave(out, start + 60_000);
        for (let s = 0; s < skip && found; ++s) {
          await new Promise((r) => setTimeout(r, 400));
          found = await waitForSave(out, start + 60_000);
        }
        await new Promise((r) => setTimeout(r, rnd() * 300));
        when = `in save${found ? '' : ' (none seen)'}`;
      } else {
        await new Promise((r) => setTimeout(r, 150 + rnd() * refSeconds * 1000));
        when = 'random';
      }
      run.child.kill('SIGKILL');
      const e = await run.exited;
      const state = await checkReadable(out);
      notes.push(
        `kill ${k + 1} ${when} at ${((performance.now() - start) / 1000).toFixed(2)} s${e.signal ? '' : ` (had exited ${e.code})`} -> ${state}`,
      );
    }
    // resume (or start over when nothing was saved) and let it finish
    const fin = launch(out);
    const e = await fin.exited;
    if (e.code !== 0)
      throw new Error(
        `the resumed run failed (${e.code ?? e.signal}): ${e.stderr.trim().split('\n').slice(-3).join(' | ')}`,
      );
    const got = finalFiles(out);
    if (got.epoch !== reference.epoch)
      throw new Error(`ended at epoch ${got.epoch}, the reference at ${reference.epoch}`);
    for (const [f, b] of Object.entries(reference.files)) {
      if (!got.files[f]) throw new Error(`${f} is missing`);
      if (Buffer.compare(got.files[f], b) !== 0) throw new Error(`${f} differs from the uninterrupted run`);
    }
    if (Object.keys(got.files).length !== Object.keys(reference.files).length)
      throw new Error('a different set of weight files');
  } catch (err) {
    ok = false;
    notes.push(`FAIL: ${err.message}`);
  }
  if (ok) ++passed;
  rows.push([String(t), inSave ? 'in save' : 'random', String(kills), ok ? 'identical' : 'FAIL', notes.join('; ')]);
  console.log(`trial ${t}: ${ok ? 'ok' : 'FAIL'}  ${notes.join('; ')}`);
}
fs.rmSync(tmp, { recursive: true, force: true });
const head = ['trial', 'kill', 'kills', 'final weights', 'what happened'];
const w = head.map((h, c) => Math.max(h.length, ...rows.map((r) => (c === 4 ? 0 : r[c].length))));
console.log(`\n| ${head.map((h, c) => (c === 4 ? h : h.padEnd(w[c]))).join(' | ')} |`);
for (const r of rows) console.log(`| ${r.map((v, c) => (c === 4 ? v : v.padEnd(w[c]))).join(' | ')} |`);
console.log(`\n${passed}/${trials} trials passed (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
process.exit(passed === trials ? 0 : 1);
