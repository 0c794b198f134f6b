// `dfl-native predict`: class probabilities for image files, from a checkpoint or an exported ONNX
// file (which carries its own class names, input size and normalisation).
import fs from 'node:fs';
import type { Argv, CommandModule } from 'yargs';

import { loadBinding } from '../../binding.js';
import { UsageError } from '../../errors.js';
import { loadCheckpoint } from '../../io/checkpoint.js';
import { readOnnxMetadata } from '../../io/onnx.js';
import { openOnnx, runSession } from '../../io/onnx-verify.js';
import { predictProbs, softmaxRows } from '../../train/evaluate.js';
import { decodeImages } from '../images.js';
import { DEFAULT_CONFIG } from '../../config.js';
import { jsonOption, sharedOption, sharedValue } from '../common-flags.js';
import { checkedNumber, numberFlag } from '../numbers.js';
import { Output, runCommand } from '../output.js';
import { requireCheckpoint } from './eval.js';

export interface PredictArgs {
  images: string[];
  checkpoint?: string;
  onnx?: string;
  /** Numeric flags hold the typed text until checked (numbers.ts). */
  topK?: unknown;
  threads?: unknown;
  json?: boolean;
  verbose?: boolean;
}

interface Predictor {
  classNames: string[];
  inputShape: [number, number, number];
  probs(images: Uint8Array, n: number): Promise<Float32Array>;
  close(): void | Promise<void>;
}

async function checkpointPredictor(dir: string): Promise<Predictor> {
  requireCheckpoint(dir);
  const ckpt = await loadCheckpoint(dir);
  const [c, h, w] = ckpt.inputShape;
  return {
    classNames: ckpt.classNames,
    inputShape: ckpt.inputShape,
    probs: (images, n) => predictProbs(ckpt.model, images, n, c, h, w, ckpt.mean, ckpt.std),
    close: () => ckpt.model.dispose(),
  };
}

async function onnxPredictor(file: string): Promise<Predictor> {
  if (!fs.existsSync(file))
    throw new UsageError(`--onnx ${file}: no such file; give a file written by dfl-native export`);
  const bytes = fs.readFileSync(file);
  const meta = readOnnxMetadata(bytes, file);
  const session = await openOnnx(bytes, file);
  const [c, h, w] = meta.inputShape;
  return {
    classNames: meta.classNames,
    inputShape: meta.inputShape,
    probs: async (images, n) => {
      const per = h * w;
      const x = new Float32Array(images.length);
      for (let i = 0; i < x.length; ++i) {
        const ch = Math.floor(i / per) % c;
        x[i] = (images[i] / 255 - meta.mean[ch]) / meta.std[ch];
      }
      return softmaxRows(await runSession(session, x, [n, c, h, w]), meta.classNames.length);
    },
    close: () => session.release(),
  };
}

export function builder(y: Argv): Argv<PredictArgs> {
  return y
    .positional('images', { type: 'string', array: true, describe: 'Image files (JPEG, PNG, WebP, ...)' })
    .option('checkpoint', {
      type: 'string',
      requiresArg: true,
      describe: 'A run folder written by train (or its checkpoint/)',
    })
    .option('onnx', {
      type: 'string',
      requiresArg: true,
      describe: 'An ONNX file written by export (runs in onnxruntime-node)',
    })
    .option('top-k', numberFlag({ describe: 'Classes listed per image [default: 5]' }))
    .option('threads', sharedOption('threads'))
    .option('json', jsonOption('one line per image, {"file", "top": [{"label", "prob"}, ...]}'))
    .conflicts('checkpoint', 'onnx')
    .check((a) => {
      if (!a.checkpoint && !a.onnx) throw new UsageError('predict needs --checkpoint DIR or --onnx FILE');
      if (!Array.isArray(a.images) || a.images.length === 0)
        throw new UsageError('predict needs at least one image file');
      return true;
    })
    .example('$0 predict --checkpoint runs/2026-11-29_10-00-00 cat.jpg dog.png', 'top-5 classes of two images')
    .example(
      '$0 predict --onnx model.onnx --top-k 1 --json photos/*.jpg',
      'the exported model, JSON lines',
    ) as unknown as Argv<PredictArgs>;
}

export async function handler(argv: PredictArgs): Promise<void> {
  await runCommand(argv.verbose, async () => {
    const out = new Output({ json: argv.json });
    const topK = checkedNumber(argv.topK, '--top-k', 'a positive integer', (n) => Number.isInteger(n) && n >= 1) ?? 5;
    const threads = sharedValue('threads', argv.threads) ?? DEFAULT_CONFIG.threads;
    const files = argv.images.map(String);
    for (const f of files) if (!fs.existsSync(f)) throw new UsageError(`${f}: no such image file`);
    if (argv.checkpoint) loadBinding().setThreads(threads); // onnxruntime keeps its own threads
    const p = argv.checkpoint ? await checkpointPredictor(argv.checkpoint) : await onnxPredictor(argv.onnx!);
    try {
      const [c, h, w] = p.inputShape;
      const nc = p.classNames.length;
      const k = Math.min(topK, nc);
      const chunk = 64;
      for (let start = 0; start < files.length; start += chunk) {
        const batch = files.slice(start, start + chunk);
        const probs = await p.probs(await decodeImages(batch, c, h, w), batch.length);
        batch.forEach((file, i) => {
          const row = Array.from(probs.subarray(i * nc, (i + 1) * nc), (prob, idx) => ({
            label: p.classNames[idx],
            prob,
          }));
          const top = row.sort((a, b) => b.prob - a.prob).slice(0, k);
          if (out.json) out.line({ file, top });
          else out.print(`${file}: ${top.map((t) => `${t.label} ${(t.prob * 100).toFixed(1)}%`).join(', ')}`);
        });
      }
    } finally {
      await p.close();
    }
  });
}

export const predictCommand: CommandModule<object, PredictArgs> = {
  command: 'predict [images..]',
  describe: 'Classify image files with a checkpoint (--checkpoint) or an exported ONNX model (--onnx)',
  builder,
  handler,
};
