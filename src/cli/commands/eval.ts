// `dfl-native eval`: test metrics of a checkpoint, by default on the test split of the data it was
// trained on.
import fs from 'node:fs';
import type { Argv, CommandModule } from 'yargs';

import { loadBinding } from '../../binding.js';
import type { Dataset } from '../../data/dataset.js';
import { loadData } from '../../data/load.js';
import { UsageError } from '../../errors.js';
import { loadCheckpoint, type LoadedCheckpoint } from '../../io/checkpoint.js';
import { DEFAULT_CONFIG } from '../../config.js';
import { EVAL_BATCH_SIZE, evaluate } from '../../train/evaluate.js';
import { evalBatchSize, jsonOption, sharedOption, sharedValue } from '../common-flags.js';
import { fixed, Output, pct, runCommand, Table } from '../output.js';

export interface EvalArgs {
  checkpoint: string;
  data?: string;
  perClass?: boolean;
  skipBadFiles?: boolean;
  /** Numeric flags hold the typed text until checked (numbers.ts). */
  batchSize?: unknown;
  threads?: unknown;
  json?: boolean;
  verbose?: boolean;
}

export function requireCheckpoint(dir: string, flag = '--checkpoint'): void {
  if (!fs.existsSync(dir))
    throw new UsageError(
      `${flag} ${dir}: no such folder; give a run folder written by dfl-native train (or its checkpoint/)`,
    );
}

/** Labels of `ds` re-expressed in the checkpoint's class order (matched by class name). */
export function alignClasses(ds: Dataset, ckpt: LoadedCheckpoint, source: string): Dataset {
  const names = ckpt.classNames;
  if (ds.classNames.length === names.length && ds.classNames.every((c, i) => c === names[i])) return ds;
  const map = ds.classNames.map((c) => names.indexOf(c));
  const missing = ds.classNames.filter((_, i) => map[i] < 0);
  if (missing.length)
    throw new UsageError(
      `${source}: classes ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''} are not among the checkpoint's ${names.length} classes (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', ...' : ''})`,
    );
  const labels = Int32Array.from(ds.labels, (y) => map[y]);
  return { ...ds, labels, classNames: names };
}

export async function loadTestSplit(
  ckpt: LoadedCheckpoint,
  data: string | undefined,
  skipBadFiles = false,
): Promise<{ test: Dataset; source: string }> {
  const spec = data ?? ckpt.config.data;
  const source = spec ?? 'the bundled sample';
  if (data !== undefined && data !== 'sample' && !fs.existsSync(data))
    throw new UsageError(`--data ${data}: no such file or folder; give a CIFAR binary folder or an image folder`);
  const [C, H, W] = ckpt.inputShape;
  const splits = await loadData(spec, {
    imageSize: ckpt.config.imageSize ?? (data !== undefined && H === W ? H : undefined),
    labels: ckpt.config.labels,
    cacheDir: ckpt.config.cacheDir,
    seed: ckpt.config.seed,
    skipBadFiles,
    onWarning: (m: string) => process.stderr.write(`dfl-native: warning: ${m}\n`),
  });
  if (!splits.test)
    throw new UsageError(
      `${source}: has no test split; give --data with a test split (an image folder with test/, or CIFAR test files)`,
    );
  const t = splits.test;
  if (t.channels !== C || t.height !== H || t.width !== W)
    throw new UsageError(
      `${source}: images are ${t.channels}x${t.height}x${t.width} but the checkpoint expects ${C}x${H}x${W}`,
    );
  return { test: alignClasses(t, ckpt, source), source };
}

export function builder(y: Argv): Argv<EvalArgs> {
  return y
    .option('checkpoint', {
      type: 'string',
      demandOption: true,
      requiresArg: true,
      describe: 'A run folder written by train (or its checkpoint/)',
    })
    .option('data', {
      type: 'string',
      requiresArg: true,
      describe: 'Data to evaluate on (its test split) [default: the data the checkpoint was trained on]',
    })
    .option('per-class', { type: 'boolean', describe: 'Also report the accuracy of each class' })
    .option('skip-bad-files', {
      type: 'boolean',
      describe:
        'Leave out unreadable images and empty class folders with a warning (the accuracy is then over the rest)',
    })
    .option('batch-size', sharedOption('batchSize', EVAL_BATCH_SIZE))
    .option('threads', sharedOption('threads'))
    .option('json', jsonOption('one object'))
    .example('$0 eval --checkpoint runs/2026-11-29_10-00-00', 'test accuracy on the data it was trained on')
    .example(
      '$0 eval --checkpoint runs/a --data ./other-photos --per-class --json',
      'another image folder, per-class accuracy',
    ) as unknown as Argv<EvalArgs>;
}

export async function handler(argv: EvalArgs): Promise<void> {
  await runCommand(argv.verbose, async () => {
    const out = new Output({ json: argv.json });
    const batchSize = evalBatchSize(argv.batchSize);
    const threads = sharedValue('threads', argv.threads) ?? DEFAULT_CONFIG.threads;
    requireCheckpoint(argv.checkpoint);
    const ckpt = await loadCheckpoint(argv.checkpoint);
    try {
      loadBinding().setThreads(threads);
      const { test, source } = await loadTestSplit(ckpt, argv.data, argv.skipBadFiles ?? false);
      const m = await evaluate(ckpt.model, test, ckpt.mean, ckpt.std, { batchSize, perClass: argv.perClass });
      if (out.json) {
        out.line({
          checkpoint: ckpt.dir,
          data: source,
          epoch: ckpt.epoch,
          model: ckpt.config.model,
          method: ckpt.config.method,
          test_acc: m.test_acc,
          test_top5: m.test_top5,
          test_loss: m.test_loss,
          test_ece: m.test_ece,
          n: m.n,
          ...(m.per_class_acc
            ? {
                per_class: ckpt.classNames.map((label, i) => ({
                  label,
                  acc: m.per_class_acc![i],
                  n: count(test.labels, i),
                })),
              }
            : {}),
        });
        return;
      }
      out.print(`checkpoint ${ckpt.dir}: ${ckpt.config.model} (${ckpt.config.method}) after epoch ${ckpt.epoch}`);
      out.print(`data: ${source}, test split, ${m.n} images`);
      out.print(
        `test acc ${pct(m.test_acc)}  top-5 ${pct(m.test_top5)}  loss ${fixed(m.test_loss)}  ECE ${fixed(m.test_ece)}`,
      );
      if (m.per_class_acc) {
        const rows = ckpt.classNames.map((label, i) => ({ label, acc: m.per_class_acc![i], n: count(test.labels, i) }));
        const width = Math.max(5, ...rows.map((r) => r.label.length));
        const t = new Table<(typeof rows)[number]>([
          { title: 'class', width, left: true, value: (r) => r.label },
          { title: 'images', width: 6, value: (r) => String(r.n) },
          { title: 'acc', width: 8, value: (r) => pct(r.acc) },
        ]);
        out.print(t.header());
        for (const r of rows) out.print(t.row(r));
      }
    } finally {
      ckpt.model.dispose();
    }
  });
}

function count(labels: Int32Array, c: number): number {
  let n = 0;
  for (const y of labels) n += y === c ? 1 : 0;
  return n;
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'Test accuracy (top-1, top-5), loss and calibration of a checkpoint',
  builder,
  handler,
};
