// The CLI as a user drives it: `node dist/cli/cli.js ...` in a child process, on a tiny image
// folder of real CIFAR-10 JPEGs (../shared/datasets, the JPEG mirror) or, where that archive is
// absent, synthetic class-separable JPEGs made with sharp.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';

/** The package root: the nearest folder above this (compiled) file with dfl-native's package.json. */
function packageRoot(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'dfl-native')
      return dir;
    if (path.dirname(dir) === dir) throw new Error('cannot find the dfl-native package root above the test file');
  }
}
const root = packageRoot();
const cli = path.join(root, 'dist', 'cli', 'cli.js');
const archive = path.resolve(root, '..', 'shared', 'datasets', 'cifar10-jpeg.tar.gz');
const CLASSES = ['airplane', 'automobile', 'frog'];
const TRAIN_PER_CLASS = 40;
const TEST_PER_CLASS = 12;

let work = '';
let data = '';
let run = '';

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function dfl(...args: string[]): Result {
  return dflWith({}, ...args);
}

function dflWith(env: Record<string, string>, ...args: string[]): Result {
  const r = spawnSync(process.execPath, [cli, ...args], {
    cwd: work,
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, FORCE_COLOR: '0', ...env },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      assert.doesNotMatch(l, /\x1b\[/, 'no escape codes off a terminal');
      return JSON.parse(l) as Record<string, unknown>;
    });
}

/** Synthetic fallback: class k is a distinct colour + stripe pattern with noise. */
async function writeSynthetic(dir: string): Promise<void> {
  let s = 12345;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (const [split, per] of [
    ['train', TRAIN_PER_CLASS],
    ['test', TEST_PER_CLASS],
  ] as const) {
    for (let k = 0; k < CLASSES.length; ++k) {
      const folder = path.join(dir, split, CLASSES[k]);
      fs.mkdirSync(folder, { recursive: true });
      for (let i = 0; i < per; ++i) {
        const px = Buffer.alloc(32 * 32 * 3);
        for (let y = 0; y < 32; ++y)
          for (let x = 0; x < 32; ++x)
            for (let c = 0; c < 3; ++c) {
              const stripe = (k === 0 ? y : k === 1 ? x : x + y) % 8 < 4 ? 90 : 0;
              px[(y * 32 + x) * 3 + c] = Math.min(255, Math.floor((c === k ? 120 : 40) + stripe + rnd() * 40));
            }
        await sharp(px, { raw: { width: 32, height: 32, channels: 3 } })
          .jpeg({ quality: 90 })
          .toFile(path.join(folder, `${String(i).padStart(4, '0')}.jpg`));
      }
    }
  }
}

function extractCifar(dir: string): void {
  const members: string[] = [];
  for (const c of CLASSES) {
    for (let i = 0; i < TRAIN_PER_CLASS; ++i) members.push(`train/${c}/${String(i).padStart(4, '0')}.jpg`);
    for (let i = 0; i < TEST_PER_CLASS; ++i) members.push(`test/${c}/${String(i).padStart(4, '0')}.jpg`);
  }
  const r = spawnSync('tar', ['-xzf', archive, '-C', dir, ...members], { encoding: 'utf8' });
  assert.equal(r.status, 0, `tar failed: ${r.stderr}`);
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-e2e-'));
  data = path.join(work, 'images');
  fs.mkdirSync(data);
  if (fs.existsSync(archive)) extractCifar(data);
  else await writeSynthetic(data);
  run = path.join(work, 'run');
});

after(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

const small = [
  '--model',
  'vgg8',
  '--width',
  '0.125',
  '--batch-size',
  '32',
  '--threads',
  '2',
  '--seed',
  '1',
  '--cache-dir',
  'cache',
];

test('train writes summary.json, metrics.jsonl, curves.svg and a checkpoint; JSON lines off a terminal', () => {
  const r = dfl(
    'train',
    '--data',
    data,
    ...small,
    '--epochs',
    '2',
    '--reset-cycle',
    '1',
    '--teachers',
    '2',
    '--out',
    run,
  );
  assert.equal(r.status, 0, r.stderr);
  const lines = jsonLines(r.stdout);
  assert.equal(lines.filter((l) => l.event === 'start').length, 1);
  assert.deepEqual(
    lines.filter((l) => l.event === 'epoch').map((l) => l.epoch),
    [1, 2],
  );
  const last = lines[lines.length - 1];
  assert.equal(last.event, 'summary');
  // a run's log message is said once: a JSON line on stdout, not again on stderr (not a terminal)
  const deviceLogs = lines.filter((l) => l.event === 'log' && String(l.message).startsWith('device auto -> cpu'));
  assert.equal(deviceLogs.length, 1, r.stdout);
  assert.doesNotMatch(r.stderr, /device auto/);

  const summary = JSON.parse(fs.readFileSync(path.join(run, 'summary.json'), 'utf8'));
  for (const k of [
    'test_acc',
    'test_top5',
    'test_loss',
    'best_val_acc',
    'final_val_acc',
    'epochs',
    'seconds',
    'images_per_sec',
    'method',
    'model',
    'seed',
    'device',
    'config',
  ])
    assert.ok(k in summary, `summary.json has ${k}`);
  assert.equal(summary.epochs, 2);
  assert.equal(summary.method, 'dfl');
  assert.equal(summary.config.batchSize, 32);
  assert.equal(summary.n, TEST_PER_CLASS * CLASSES.length);
  assert.equal(last.test_acc, summary.test_acc);

  const metrics = fs
    .readFileSync(path.join(run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(metrics.length, 2);
  for (const m of metrics)
    for (const k of [
      'epoch',
      'lr',
      'train_loss',
      'train_acc',
      'val_acc',
      'distill_loss',
      'reset',
      'bank',
      'replaced',
      'seconds',
      'images_per_sec',
    ])
      assert.ok(k in m, `metrics has ${k}`);
  assert.equal(metrics[1].reset, true, '--reset-cycle 1 resets before epoch 2');
  assert.equal(metrics[1].bank.length, 2);

  const svg = fs.readFileSync(path.join(run, 'curves.svg'), 'utf8');
  assert.match(svg, /<svg[\s\S]*head reset[\s\S]*<\/svg>/);
  assert.ok(fs.existsSync(path.join(run, 'checkpoint', 'state.json')));
});

test("eval reproduces the summary's test accuracy from the checkpoint", () => {
  const summary = JSON.parse(fs.readFileSync(path.join(run, 'summary.json'), 'utf8'));
  const r = dfl('eval', '--checkpoint', run, '--json', '--per-class', '--threads', '2');
  assert.equal(r.status, 0, r.stderr);
  const [m] = jsonLines(r.stdout);
  assert.equal(m.n, summary.n);
  assert.ok(
    Math.abs((m.test_acc as number) - summary.test_acc) < 1e-9,
    `eval ${m.test_acc} vs summary ${summary.test_acc}`,
  );
  assert.ok(Math.abs((m.test_loss as number) - summary.test_loss) < 1e-5);
  assert.ok(Math.abs((m.test_top5 as number) - summary.test_top5) < 1e-9);
  const perClass = m.per_class as { label: string; acc: number; n: number }[];
  assert.deepEqual(
    perClass.map((p) => p.label),
    summary.class_names,
  );
  assert.equal(
    perClass.reduce((a, p) => a + p.n, 0),
    summary.n,
  );
});

test('export writes an ONNX file that onnxruntime-node runs like the checkpoint; predict agrees on JPEGs', async () => {
  const onnxFile = path.join(work, 'model.onnx');
  const r = dfl('export', '--checkpoint', path.join(run, 'checkpoint'), '--out', onnxFile, '--json');
  assert.equal(r.status, 0, r.stderr);
  const [e] = jsonLines(r.stdout);
  const v = e.verified as { rel_diff: number; samples: number };
  assert.ok(v.rel_diff <= 1e-4);
  assert.ok((e.opset as number) >= 13);
  assert.ok(fs.statSync(onnxFile).size > 1000);

  const images = CLASSES.map((c) => path.join(data, 'test', c, '0000.jpg'));
  const a = dfl('predict', '--checkpoint', run, '--json', '--top-k', '2', ...images);
  assert.equal(a.status, 0, a.stderr);
  const b = dfl('predict', '--onnx', onnxFile, '--json', '--top-k', '2', ...images);
  assert.equal(b.status, 0, b.stderr);
  const pa = jsonLines(a.stdout) as unknown as { file: string; top: { label: string; prob: number }[] }[];
  const pb = jsonLines(b.stdout) as unknown as typeof pa;
  assert.deepEqual(
    pa.map((p) => p.file),
    images,
  );
  assert.deepEqual(
    pb.map((p) => p.file),
    images,
  );
  for (let i = 0; i < images.length; ++i) {
    assert.equal(pa[i].top.length, 2);
    assert.ok(pa[i].top[0].prob >= pa[i].top[1].prob);
    assert.ok(CLASSES.includes(pa[i].top[0].label));
    assert.equal(pb[i].top[0].label, pa[i].top[0].label);
    assert.ok(Math.abs(pb[i].top[0].prob - pa[i].top[0].prob) < 1e-4);
  }
});

test('--config values are overridden by flags', () => {
  const cfg = path.join(work, 'exp.json');
  fs.writeFileSync(cfg, JSON.stringify({ epochs: 1, lr: 0.2, method: 'base', 'val-size': 0.2 }));
  const out = path.join(work, 'run-config');
  const r = dfl('train', '--data', data, ...small, '--config', cfg, '--lr', '0.02', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(s.config.lr, 0.02);
  assert.equal(s.config.epochs, 1);
  assert.equal(s.config.method, 'base');
  assert.equal(s.config.valSize, 0.2);
});

test('--preset noisy-labels trains the DLB recipe under the flags; an unknown preset exits 2 naming the presets', () => {
  const out = path.join(work, 'run-preset');
  const r = dfl(
    'train',
    '--data',
    data,
    ...small,
    '--epochs',
    '1',
    '--preset',
    'noisy-labels',
    '--dlb-weight',
    '0.5',
    '--out',
    out,
  );
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(s.config.method, 'base');
  assert.equal(s.config.softTargets, 'dlb');
  assert.equal(s.config.dlbTemperature, 3);
  assert.equal(s.config.dlbWeight, 0.5); // the flag wins over the preset
  const bad = dfl('train', '--preset', 'noisy');
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /^dfl-native: error: Expected one of noisy-labels for --preset but received 'noisy'/);
});

test('Ctrl-C stops after the current batch, saves a checkpoint and says how to resume', async () => {
  const out = path.join(work, 'run-int');
  const child = spawn(
    process.execPath,
    [cli, 'train', '--data', data, ...small, '--epochs', '4', '--batch-size', '8', '--out', out],
    { cwd: work },
  );
  let stdout = '',
    stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const status = await new Promise<number | null>((resolve) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('"event":"epoch"') && child.exitCode === null && !child.killed) child.kill('SIGINT');
    });
    child.on('exit', (code) => resolve(code));
  });
  assert.equal(status, 130, stderr);
  assert.match(stderr, /dfl-native train --resume /);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(summary.interrupted, true);
  const r = dfl('train', '--resume', out);
  assert.equal(r.status, 0, r.stderr);
  const s2 = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(s2.interrupted, false);
  assert.equal(s2.epochs, 4);
});

test('--resume refuses an image folder that changed (exit 2, naming the change) unless --allow-data-change', () => {
  const copy = path.join(work, 'images-changed');
  fs.cpSync(data, copy, { recursive: true });
  const out = path.join(work, 'run-changed');
  const first = dfl('train', '--data', copy, ...small, '--epochs', '1', '--method', 'base', '--out', out);
  assert.equal(first.status, 0, first.stderr);
  fs.copyFileSync(path.join(copy, 'train', CLASSES[0], '0000.jpg'), path.join(copy, 'train', CLASSES[0], 'extra.jpg'));
  const refused = dfl('train', '--resume', out, '--epochs', '2');
  assert.equal(refused.status, 2, refused.stderr);
  const error = refused.stderr
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('dfl-native: error: '));
  assert.equal(error.length, 1, refused.stderr);
  assert.match(
    error[0],
    new RegExp(
      `train split: ${3 * TRAIN_PER_CLASS + 1} images, was ${3 * TRAIN_PER_CLASS}; train split: images per class changed \\(${CLASSES[0]} ${TRAIN_PER_CLASS} -> ${TRAIN_PER_CLASS + 1}\\)`,
    ),
  );
  assert.match(error[0], /--allow-data-change/);
  const allowed = dfl('train', '--resume', out, '--epochs', '2', '--allow-data-change');
  assert.equal(allowed.status, 0, allowed.stderr);
  // off a terminal the warning is a JSON log line on stdout (said once; docs/cli.md)
  assert.ok(
    jsonLines(allowed.stdout).some(
      (l) => l.event === 'log' && /resuming anyway \(--allow-data-change\)/.test(String(l.message)),
    ),
    allowed.stdout,
  );
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).epochs, 2);
  const misplaced = dfl('train', '--data', copy, '--allow-data-change');
  assert.equal(misplaced.status, 2);
  assert.match(misplaced.stderr, /--allow-data-change applies to --resume only/);
});

test('bad usage exits 2 with one clear line', () => {
  const cases: [string[], RegExp][] = [
    [['train', '--bogus', '1'], /Unknown argument: bogus/],
    [['train', '--lr', 'abc'], /for --lr but received 'abc'/],
    [['train', '--milestones', '5', 'x'], /for --milestones but received \[5, 'x'\]/],
    [['eval', '--checkpoint', 'x', '--batch-size', 'abc'], /for --batch-size but received 'abc'/],
    [['eval', '--checkpoint', 'x', '--threads', '1e400'], /for --threads but received '1e400'/],
    [['export', '--checkpoint', 'x', '--out', 'y.onnx', '--samples', 'four'], /for --samples but received 'four'/],
    [['export', '--checkpoint', 'x', '--out', 'y.onnx', '--tolerance', 'abc'], /for --tolerance but received 'abc'/],
    [['predict', '--checkpoint', 'x', '--top-k', 'abc', 'a.jpg'], /for --top-k but received 'abc'/],
    [['predict', '--checkpoint', 'x', '--threads', 'two', 'a.jpg'], /for --threads but received 'two'/],
    [['train', '--method', 'nope'], /one of base, reset, sd, dfl for --method/],
    [['train', '--precision', 'fp16'], /one of fp32, bf16 for --precision/],
    [
      ['train', '--precision', 'bf16', '--device', 'cpu'],
      /--precision bf16 runs convolutions and linear layers on a GPU's tensor cores, but this run is on the cpu\. Use --precision fp32 on the CPU/,
    ],
    [
      ['bench', '--precision', 'bf16', '--device', 'cpu'],
      /--precision bf16 runs convolutions and linear layers on a GPU's tensor cores, but this run is on the cpu\. Use --precision fp32 on the CPU/,
    ],
    [['train', '--epochs'], /epochs/],
    [['eval'], /checkpoint/],
    [['predict', '--checkpoint', 'x'], /at least one image file/],
    [['predict', 'a.jpg'], /--checkpoint DIR or --onnx FILE/],
    [[], /Give a command/],
    [['frobnicate'], /Unknown argument: frobnicate|Did you mean/],
  ];
  for (const [args, re] of cases) {
    const r = dfl(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
    assert.match(lines[0], /^dfl-native: error: /);
    assert.match(lines[0], re);
  }
});

test('every error in what the user gave exits 2 with one line: model spec files and data included', () => {
  const spec = (nodes: unknown[], dims: Record<string, number> = { in_channels: 3, height: 32, width: 32 }) =>
    JSON.stringify({ ...dims, nodes });
  const conv = { op: 'conv', name: 'c', inputs: [0], out_channels: 4, kernel_h: 3, kernel_w: 3, pad_h: 1, pad_w: 1 };
  const head = [
    { op: 'gap', inputs: [1] },
    { op: 'flatten', inputs: [2] },
    { op: 'linear', name: 'fc', inputs: [3], out_features: 3 },
  ];
  const files: Record<string, string> = {
    'no-dims.json': spec([{ op: 'input' }, conv, ...head], {}),
    'bad-node.json': spec([
      { op: 'input' },
      conv,
      { op: 'add', inputs: [1, 0] },
      { op: 'gap', inputs: [2] },
      { op: 'flatten', inputs: [3] },
      { op: 'linear', name: 'fc', inputs: [4], out_features: 3 },
    ]),
    'typo.json': spec([{ op: 'input' }, { ...conv, kernal_h: 5 }, ...head]),
  };
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(work, name), text);
  const bad = path.join(work, 'images-bad');
  fs.mkdirSync(path.join(bad, 'train', 'a'), { recursive: true });
  fs.mkdirSync(path.join(bad, 'train', 'b'), { recursive: true });
  fs.writeFileSync(path.join(bad, 'train', 'a', 'broken.jpg'), 'not a jpeg');
  fs.copyFileSync(path.join(data, 'train', CLASSES[0], '0000.jpg'), path.join(bad, 'train', 'b', 'ok.jpg'));
  const cases: [string[], RegExp][] = [
    [['--model', 'no-dims.json'], /no-dims\.json: .*for spec\.in_channels but received undefined/],
    [
      ['--model', 'bad-node.json'],
      /bad-node\.json: node 2 .*add needs equal shapes but its inputs are 4x32x32 and 3x32x32/,
    ],
    [['--model', 'typo.json'], /typo\.json: node 1 \(conv 'c'\): unknown attribute 'kernal_h'/],
    [['--data', bad], /broken\.jpg: .*--skip-bad-files/],
  ];
  for (const [args, re] of cases) {
    const r = dfl('train', '--data', data, ...small, '--epochs', '1', ...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    const errors = r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('dfl-native: error: '));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0], re);
    assert.doesNotMatch(errors[0], /undefinedx/);
  }
});

test('a missing data folder or checkpoint is named in the error', () => {
  const missing = path.join(work, 'no-such-folder');
  const r = dfl('train', '--data', missing, '--epochs', '1');
  assert.equal(r.status, 2, r.stderr);
  assert.ok(r.stderr.includes(missing));
  assert.equal(r.stderr.trim().split('\n').length, 1);
  const e = dfl('eval', '--checkpoint', missing);
  assert.equal(e.status, 2);
  assert.ok(e.stderr.includes(missing));
  // a corrupt checkpoint is bad input too: exit 2, the file named (docs/cli.md, exit codes)
  const corrupt = path.join(work, 'corrupt-run');
  fs.cpSync(run, corrupt, { recursive: true });
  fs.writeFileSync(path.join(corrupt, 'checkpoint', 'state.json'), '{"format": "dfl-native-checkpoint", trunc');
  const c = dfl('eval', '--checkpoint', corrupt);
  assert.equal(c.status, 2, c.stderr);
  assert.match(c.stderr, /state\.json: cannot read the checkpoint state/);
  const p = dfl('predict', '--checkpoint', run, path.join(work, 'nope.jpg'));
  assert.equal(p.status, 2);
  assert.match(p.stderr, /nope\.jpg: no such image file/);
});

/** The one error line of a failed command (docs/cli.md: errors are one line on stderr). */
function errorLine(r: Result): string {
  const errors = r.stderr
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('dfl-native: error: '));
  assert.equal(errors.length, 1, r.stderr);
  return errors[0];
}

test('every command keeps the exit codes of docs/cli.md: bad input 2, a failed run 1', async () => {
  // inputs: a corrupt image and ONNX file, a corrupt checkpoint, a folder whose blue channel never changes
  const badImage = path.join(work, 'corrupt.jpg');
  fs.writeFileSync(badImage, 'not a jpeg');
  const badOnnx = path.join(work, 'corrupt.onnx');
  fs.writeFileSync(badOnnx, fs.readFileSync(path.join(work, 'model.onnx')).subarray(0, 300));
  const corrupt = path.join(work, 'corrupt-weights');
  fs.cpSync(run, corrupt, { recursive: true });
  const state = JSON.parse(fs.readFileSync(path.join(corrupt, 'checkpoint', 'state.json'), 'utf8'));
  fs.appendFileSync(path.join(corrupt, 'checkpoint', state.files.model), 'x');
  const flat = path.join(work, 'images-flat-blue');
  for (const split of ['train', 'test'])
    for (const c of CLASSES) {
      fs.mkdirSync(path.join(flat, split, c), { recursive: true });
      for (let i = 0; i < 4; ++i) {
        const px = Buffer.alloc(8 * 8 * 3);
        for (let j = 0; j < px.length; ++j) px[j] = j % 3 === 2 ? 17 : (j * 31 + i * 7 + c.length * 13) % 256;
        await sharp(px, { raw: { width: 8, height: 8, channels: 3 } })
          .png()
          .toFile(path.join(flat, split, c, `${i}.png`));
      }
    }
  // --skip-bad-files skips the corrupt file, then an image of another size is still bad input
  const mixed = path.join(work, 'images-mixed');
  fs.cpSync(data, mixed, { recursive: true });
  fs.writeFileSync(path.join(mixed, 'train', CLASSES[0], 'broken.jpg'), 'not a jpeg');
  await sharp(Buffer.alloc(16 * 16 * 3, 99), { raw: { width: 16, height: 16, channels: 3 } })
    .png()
    .toFile(path.join(mixed, 'train', CLASSES[1], 'small.png'));
  const image = path.join(data, 'test', CLASSES[0], '0000.jpg');

  const cases: [string[], number, RegExp, Record<string, string>?][] = [
    [
      ['train', '--data', data, ...small, '--width', '1e-6'],
      2,
      /Expected a width multiplier that leaves every layer of vgg8 at least one channel but received 0\.000001: .*Give --width 0\.008 or more\./,
    ],
    [
      ['train', '--data', flat, ...small, '--epochs', '1'],
      2,
      /Expected every channel of the training split to vary but channel 2 is 17 \(of 255\) in all \d+ images of .*Give the statistics yourself with --mean and --std/,
    ],
    [
      ['train', '--data', mixed, ...small, '--epochs', '1', '--skip-bad-files'],
      2,
      /small\.png: is 16x16 but .* is 32x32; all images must share one size: pass --image-size N/,
    ],
    [['train', '--resume', corrupt], 2, /model-e0002\.safetensors: checksum mismatch/],
    [['eval', '--checkpoint', corrupt], 2, /model-e0002\.safetensors: checksum mismatch/],
    [
      ['export', '--checkpoint', corrupt, '--out', path.join(work, 'never.onnx')],
      2,
      /model-e0002\.safetensors: checksum mismatch/,
    ],
    [['predict', '--checkpoint', corrupt, image], 2, /model-e0002\.safetensors: checksum mismatch/],
    [
      ['predict', '--checkpoint', run, badImage],
      2,
      /corrupt\.jpg: cannot decode the image \(.*\); the file is corrupt, truncated or not an image/,
    ],
    [
      ['predict', '--onnx', badOnnx, image],
      2,
      /corrupt\.onnx: not an ONNX model \(.*\); give a file written by dfl-native export/,
    ],
    [['study', '--grid', 'nosuchgrid', '--out', path.join(work, 'study-x')], 2, /nosuchgrid/],
    [['bench', '--model', 'vgg8@0.125', '--device', 'cuda'], 2, /--device cuda is not available: /],
    [['info', '--bogus'], 2, /Unknown argument: bogus/],
    // failed runs: divergence, and a disk that fills up during the first checkpoint
    [
      [
        'train',
        '--data',
        data,
        ...small,
        '--epochs',
        '1',
        '--lr',
        '10000',
        '--method',
        'base',
        '--out',
        path.join(work, 'run-nan'),
      ],
      1,
      /Training diverged: .*\. Try a lower --lr \(e\.g\. 1\.0e\+3\)\./,
    ],
    [
      ['train', '--data', data, ...small, '--epochs', '1', '--out', path.join(work, 'run-full')],
      1,
      /Cannot write .*run-full\/checkpoint\/optim-e0001\.safetensors: no space left on the device \(ENOSPC\)\. No checkpoint was saved yet\. Free some disk space \(or choose another --out\) and start the run again\./,
      { DFL_TEST_DISK_FREE_BYTES: String(fs.statSync(path.join(run, 'checkpoint', state.files.model)).size + 20_000) },
    ],
    [
      ['export', '--checkpoint', run, '--out', path.join(work, 'full.onnx')],
      1,
      /Cannot write .*full\.onnx: no space left on the device \(ENOSPC\)\. Free some disk space or write somewhere else/,
      { DFL_TEST_DISK_FREE_BYTES: '1000' },
    ],
  ];
  for (const [args, status, re, env] of cases) {
    const r = dflWith(env ?? {}, ...args);
    assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
    assert.match(errorLine(r), re, args.join(' '));
  }
  // the failed save took its files with it: no partial model file, no temp file, no state.json
  assert.deepEqual(fs.readdirSync(path.join(work, 'run-full', 'checkpoint')), []);
  for (const f of ['never.onnx', 'full.onnx']) assert.ok(!fs.existsSync(path.join(work, f)), f);
  assert.deepEqual(
    fs.readdirSync(work).filter((f) => f.endsWith('.tmp')),
    [],
    'no temp file left',
  );
});

test('eval on a test split with a corrupt image: exit 2 naming it and --skip-bad-files, which leaves it out', () => {
  const broken = path.join(work, 'images-broken-test');
  fs.cpSync(data, broken, { recursive: true });
  fs.writeFileSync(path.join(broken, 'test', CLASSES[0], 'broken.jpg'), 'not a jpeg');
  const bad = dfl('eval', '--checkpoint', run, '--data', broken, '--threads', '2');
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(errorLine(bad), /broken\.jpg: cannot be decoded as an image .*pass --skip-bad-files/);
  const ok = dfl('eval', '--checkpoint', run, '--data', broken, '--skip-bad-files', '--json', '--threads', '2');
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /broken\.jpg: .*skipped/);
  const [m] = jsonLines(ok.stdout);
  const summary = JSON.parse(fs.readFileSync(path.join(run, 'summary.json'), 'utf8'));
  assert.equal(m.n, summary.n, 'the corrupt file is left out, every other test image is counted');
  assert.ok(Math.abs((m.test_acc as number) - summary.test_acc) < 1e-9);
});

test('info --json reports version, backends, threads and CPU features', () => {
  const r = dfl('info', '--json');
  assert.equal(r.status, 0, r.stderr);
  const [info] = jsonLines(r.stdout) as [
    {
      version: string;
      backends: { compiled: string[]; usable: string[]; libraries: Record<string, string> };
      threads: number;
      cpu_features: string[];
    },
  ];
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(info.version, pkg.version);
  assert.ok(info.backends.compiled.includes('cpu'));
  assert.ok(info.backends.usable.includes('cpu'));
  // libraries: only backends that link libraries of their own (cuda where libdfl_cuda.so loads);
  // the same line in the text form.
  assert.equal(typeof info.backends.libraries, 'object');
  assert.equal(info.backends.libraries.cpu, undefined);
  // The text form needs a terminal (off one, every command prints JSON): util-linux's script gives one.
  const tty = spawnSync(
    'script',
    ['-q', '-c', `${JSON.stringify(process.execPath)} ${JSON.stringify(cli)} info`, '/dev/null'],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (tty.error) throw new Error(`info's text form is checked through script(1) (util-linux): ${tty.error.message}`);
  const text = tty.stdout;
  assert.match(text, /^version +\d/m, `not the text form:\n${text}`);
  const cudaLibraries = info.backends.libraries.cuda;
  if (cudaLibraries !== undefined) {
    assert.match(cudaLibraries, /^CUDA runtime \d+\.\d+ .*; cuDNN \d+\.\d+\.\d+ built for CUDA \d+\.\d+.*; cuBLAS /);
    assert.ok(text.includes(cudaLibraries), `info's text lacks the cuda libraries line:\n${text}`);
  } else {
    assert.doesNotMatch(text, /libraries/);
  }
  assert.ok(Number.isInteger(info.threads) && info.threads >= 1);
  assert.ok(Array.isArray(info.cpu_features));
});

test('info reports the SIMD path of every kernel family, and DFL_SIMD lowers them all', () => {
  const levels = ['portable', 'avx2', 'avx512'];
  type Info = {
    simd_paths: Record<string, string>;
    simd_level: string;
    simd_request: string | null;
    gemm_kernel: string;
  };
  const [full] = jsonLines(dfl('info', '--json').stdout) as [Info];
  assert.deepEqual(Object.keys(full.simd_paths), ['gemm', 'conv-rows', 'conv', 'batchnorm', 'pool']);
  assert.equal(full.simd_paths.gemm, full.gemm_kernel);
  assert.equal(full.simd_request, null);
  for (const cap of levels.slice(0, levels.indexOf(full.simd_level) + 1)) {
    const r = dflWith({ DFL_SIMD: cap }, 'info', '--json');
    assert.equal(r.status, 0, r.stderr);
    const [info] = jsonLines(r.stdout) as [Info];
    assert.equal(info.simd_level, cap);
    assert.equal(info.simd_request, cap);
    assert.equal(info.simd_paths.gemm, cap, 'GEMM has every level');
    for (const [family, level] of Object.entries(info.simd_paths))
      assert.ok(levels.indexOf(level) <= levels.indexOf(cap), `${family} ${level} under DFL_SIMD=${cap}`);
  }
  const bad = dflWith({ DFL_SIMD: 'avx' }, 'info');
  assert.notEqual(bad.status, 0);
  assert.match(
    bad.stdout + bad.stderr,
    /Expected one of portable, avx2, avx512 for the environment variable DFL_SIMD but received 'avx'/,
  );
});

test('--help lists every command, and train --help its flags with defaults and examples', () => {
  const top = dfl('--help');
  assert.equal(top.status, 0);
  for (const c of ['train', 'eval', 'export', 'predict', 'info'])
    assert.match(top.stdout, new RegExp(`dfl-native ${c}`));
  const t = dfl('train', '--help');
  assert.equal(t.status, 0);
  for (const f of [
    '--batch-size',
    '--teacher-source',
    '--reset-mode',
    '--config',
    '--resume',
    '--json',
    '--no-augment|--augment',
  ])
    assert.match(t.stdout, new RegExp(f));
  assert.match(t.stdout, /\[default: 128\]/);
  assert.match(t.stdout, /Examples:/);
});
