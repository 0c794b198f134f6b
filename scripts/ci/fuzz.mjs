#!/usr/bin/env node
// Seeded mutation fuzzing of every parser and loader (the engine and targets: test/helpers/fuzz.ts).
//
//   node scripts/ci/fuzz.mjs [--per-target N] [--seed S] [--targets a,b] [--start I]
//
// Needs the compiled tests (npx tsc -p tsconfig.json && npx tsc -p tsconfig.test.json). Each target
// runs in a child process (DFL_MAX_MEMORY_MB=2048) watched by this one: a process crash (signal, exit)
// or an input that makes no progress for 5 s is a finding; the target then continues from the next
// input. Exit code 1 when anything is not a clean accept/reject.
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const lib = path.join(root, 'dist-test', 'helpers', 'fuzz.js');
const argv = process.argv.slice(2);
const arg = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const HANG_S = 5;

if (!fs.existsSync(lib)) {
  console.error(`${lib} not found; build the tests first: npx tsc -p tsconfig.json && npx tsc -p tsconfig.test.json`);
  process.exit(2);
}

if (argv[0] === '--child') {
  // child: run one slice of one target, reporting each input before it starts
  const [, target, seed, start, count] = argv;
  const { fuzzTarget } = await import(pathToFileURL(lib).href);
  const res = await fuzzTarget(target, {
    seed: Number(seed),
    start: Number(start),
    count: Number(count),
    onInput: (i) => process.send({ type: 'input', i }),
  });
  process.send({ type: 'done', res }, () => process.exit(0));
} else {
  const perTarget = Number(arg('--per-target', '10000'));
  const seed = Number(arg('--seed', '1'));
  const first = Number(arg('--start', '0'));
  const { TARGETS } = await import(pathToFileURL(lib).href);
  const targets = arg('--targets', Object.keys(TARGETS).join(',')).split(',');
  if (!(Number.isInteger(perTarget) && perTarget > 0) || !Number.isInteger(seed)) {
    console.error('--per-target must be a positive integer and --seed an integer');
    process.exit(2);
  }
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-fuzz-cache-'));
  const started = new Date();
  console.log(
    `fuzz: seed ${seed}, ${perTarget} inputs per target, ${started.toISOString()}, node ${process.version}, ${os.cpus().length} cpus`,
  );

  /** Runs [start, end) in children, restarting after a crash or hang. */
  async function runTarget(target) {
    const total = { target, inputs: 0, accepted: 0, rejected: 0, crashes: 0, slowest: 0, findings: [], seconds: 0 };
    const t0 = performance.now();
    let next = first;
    const end = first + perTarget;
    while (next < end) {
      const outcome = await new Promise((resolve) => {
        const child = fork(
          fileURLToPath(import.meta.url),
          ['--child', target, String(seed), String(next), String(end - next)],
          {
            env: {
              ...process.env,
              DFL_MAX_MEMORY_MB: process.env.DFL_MAX_MEMORY_MB ?? '2048',
              DFL_CACHE_DIR: cacheDir,
            },
            stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
          },
        );
        let current = next,
          lastBeat = performance.now(),
          stderr = '',
          done = null;
        child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
        child.on('message', (m) => {
          lastBeat = performance.now();
          if (m.type === 'input') current = m.i;
          else if (m.type === 'done') done = m.res;
        });
        const dog = setInterval(() => {
          if (performance.now() - lastBeat > HANG_S * 1000 + 500) {
            clearInterval(dog);
            child.kill('SIGKILL');
            resolve({ hang: current });
          }
        }, 250);
        child.on('exit', (code, signal) => {
          clearInterval(dog);
          if (done) resolve({ res: done });
          else resolve({ died: current, why: signal ? `killed by ${signal}` : `exited with ${code}`, stderr });
        });
      });
      if (outcome.res) {
        const r = outcome.res;
        for (const k of ['inputs', 'accepted', 'rejected', 'crashes']) total[k] += r[k];
        total.slowest = Math.max(total.slowest, r.slowest);
        total.findings.push(...r.findings);
        next = end;
      } else {
        const i = outcome.hang ?? outcome.died;
        total.inputs += i - next + 1; // the inputs before it were judged in the lost child: count them as run
        total.crashes += 1;
        total.findings.push({
          index: i,
          message:
            outcome.hang !== undefined
              ? `hang: no progress for ${HANG_S} s`
              : `process ${outcome.why}: ${outcome.stderr.trim().split('\n').slice(-3).join(' | ')}`,
        });
        console.log(`  ${target}: input ${i}: ${total.findings.at(-1).message}; continuing`);
        next = i + 1;
      }
    }
    total.seconds = (performance.now() - t0) / 1000;
    return total;
  }

  const results = [];
  for (const t of targets) {
    const r = await runTarget(t);
    results.push(r);
    console.log(`  ${t}: ${r.inputs} inputs, ${r.crashes} crashes, ${r.seconds.toFixed(0)} s`);
  }
  fs.rmSync(cacheDir, { recursive: true, force: true });

  const rows = [['target', 'inputs', 'accepted', 'rejected (clear error)', 'crashes', 'slowest input', 'time']];
  for (const r of results)
    rows.push(
      [
        r.target,
        r.inputs,
        r.accepted,
        r.rejected,
        r.crashes,
        `${r.slowest.toFixed(2)} s`,
        `${r.seconds.toFixed(0)} s`,
      ].map(String),
    );
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r) => `| ${r.map((v, c) => v.padEnd(w[c])).join(' | ')} |`;
  console.log(
    `\n${line(rows[0])}\n|${w.map((n) => '-'.repeat(n + 2)).join('|')}|\n${rows.slice(1).map(line).join('\n')}`,
  );
  let bad = 0;
  for (const r of results) {
    for (const f of r.findings.slice(0, 10))
      console.log(
        `  finding ${r.target} #${f.index}: ${f.message.split('\n')[0].slice(0, 300)}  (reproduce: --targets ${r.target} --seed ${seed} --start ${f.index} --per-target 1)`,
      );
    bad += r.crashes;
  }
  console.log(
    `\n${bad === 0 ? 'OK: every input loaded or was rejected with a clear error' : `${bad} finding(s)`} (${((Date.now() - started) / 1000).toFixed(0)} s)`,
  );
  process.exit(bad === 0 ? 0 : 1);
}
