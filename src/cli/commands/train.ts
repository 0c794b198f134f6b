// `dfl-native train`: every trainer option as a flag, --config files, progress and epoch rows on a
// terminal, JSON lines otherwise, Ctrl-C = stop after the current batch and keep a checkpoint.
import fs from 'node:fs';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';

import { expected, type TrainConfig } from '../../config.js';
import { EXIT, UsageError } from '../../errors.js';
import { PRESET_NAMES, TRAIN_PRESETS, type PresetName } from '../../presets.js';
import type { BatchProgress, EpochRecord, TrainSummary } from '../../records.js';
import { train, type TrainOptions } from '../../train/trainer.js';
import { jsonOption } from '../common-flags.js';
import { fixed, formatDuration, Output, pct, progressBar, runCommand, Table } from '../output.js';
import {
  defaultOutDir,
  flagsToConfig,
  kebab,
  readConfigFile,
  resolveTrainConfig,
  trainOptions,
} from '../train-flags.js';

export interface TrainArgs {
  preset?: string;
  config?: string;
  resume?: string;
  allowDataChange?: boolean;
  json?: boolean;
  verbose?: boolean;
  [key: string]: unknown;
}

interface StartInfo {
  config: TrainConfig;
  params: number;
  macsPerImage: number;
  trainSize: number;
  valSize: number;
  testSize: number;
  classNames: string[];
  device?: string;
}

/** Keys a resumed run still takes from the command line (the trainer ignores the rest). */
const RESUME_KEYS = ['epochs', 'threads', 'out'] as const;

export function builder(y: Argv): Argv<TrainArgs> {
  return y
    .options(trainOptions())
    .option('preset', {
      type: 'string',
      requiresArg: true,
      group: 'Run:',
      describe: `A named recipe, under --config and the flags (which override it): ${PRESET_NAMES.map((n) => `${n}: ${TRAIN_PRESETS[n].describe}`).join('; ')}`,
    })
    .option('config', {
      type: 'string',
      requiresArg: true,
      group: 'Run:',
      describe: 'JSON file of train options (camelCase or kebab-case keys); flags override it',
    })
    .option('resume', {
      type: 'string',
      requiresArg: true,
      group: 'Run:',
      describe: 'Continue an interrupted run: its folder (or its checkpoint/); only --epochs, --threads, --out apply',
    })
    .option('allow-data-change', {
      type: 'boolean',
      group: 'Run:',
      describe:
        'With --resume: continue even if the data differ from those the run was trained on (refused otherwise, naming what changed)',
    })
    .option('json', { ...jsonOption('one line per event (start, epoch, log, summary)'), group: 'Run:' })
    .example('$0 train', 'DFL on the bundled sample with a small CPU-friendly model (about two minutes)')
    .example(
      '$0 train --data ./cifar-10-batches-bin --model resnet18 --width 0.5 --epochs 30',
      'CIFAR-10 from its binary files',
    )
    .example(
      '$0 train --data ./photos --image-size 64 --method base --out runs/base',
      'an image folder, plain training',
    )
    .example('$0 train --config exp.json --lr 0.1', 'options from a file, one overridden')
    .example('$0 train --data ./noisy --preset noisy-labels', 'the recipe the study found to pay under label noise')
    .example('$0 train --resume runs/2026-11-29_10-00-00', 'continue an interrupted run') as unknown as Argv<TrainArgs>;
}

/** The option layer of --preset NAME (a usage error naming the presets for an unknown one). */
function presetOptions(name: string): Partial<TrainConfig> {
  if (!(PRESET_NAMES as string[]).includes(name)) throw expected(`one of ${PRESET_NAMES.join(', ')}`, '--preset', name);
  return TRAIN_PRESETS[name as PresetName].options;
}

function buildOptions(argv: TrainArgs, signal: AbortSignal): { options: TrainOptions; outDir: string | undefined } {
  const flags = flagsToConfig(argv);
  if (argv.resume) {
    if (!fs.existsSync(argv.resume))
      throw new UsageError(`--resume ${argv.resume}: no such folder; give a run folder written by dfl-native train`);
    const ignored = Object.keys(flags).filter((k) => !(RESUME_KEYS as readonly string[]).includes(k));
    if (argv.config) ignored.push('config');
    if (argv.preset !== undefined) ignored.push('preset');
    if (ignored.length)
      throw new UsageError(
        `--resume continues with the run's saved options; drop ${ignored.map((k) => `--${kebab(k)}`).join(', ')} (only --epochs, --threads and --out may change)`,
      );
    const options: TrainOptions = { resume: argv.resume, allowDataChange: argv.allowDataChange, signal };
    for (const k of RESUME_KEYS) if (flags[k] !== undefined) (options as Record<string, unknown>)[k] = flags[k];
    return { options, outDir: flags.out };
  }
  if (argv.allowDataChange) throw new UsageError('--allow-data-change applies to --resume only');
  const preset = argv.preset !== undefined ? presetOptions(argv.preset) : undefined;
  const fileLayer =
    argv.config || preset ? { ...preset, ...(argv.config ? readConfigFile(argv.config) : {}) } : undefined;
  const hasOut = flags.out !== undefined || (fileLayer && fileLayer.out !== undefined);
  const config = resolveTrainConfig(fileLayer, flags, argv.config, hasOut ? undefined : { out: defaultOutDir() });
  if (config.data !== undefined && config.data !== 'sample' && !fs.existsSync(config.data))
    throw new UsageError(
      `--data ${config.data}: no such file or folder; give a CIFAR binary folder or an image folder (or omit --data for the bundled sample)`,
    );
  return { options: { ...config, signal }, outDir: config.out };
}

const epochTable = (epochs: () => number) =>
  new Table<EpochRecord>([
    { title: 'epoch', width: 7, value: (r) => `${r.epoch}/${epochs()}` },
    { title: 'lr', width: 8, value: (r) => r.lr.toPrecision(3) },
    { title: 'loss', width: 7, value: (r) => fixed(r.train_loss, 4) },
    { title: 'train', width: 7, value: (r) => pct(r.train_acc, 1) },
    { title: 'val', width: 7, value: (r) => pct(r.val_acc, 2) },
    { title: 'ens', width: 7, value: (r) => pct(r.ensemble_val_acc, 2) },
    { title: 'distill', width: 7, value: (r) => (r.distill_loss > 0 ? fixed(r.distill_loss, 4) : '-') },
    { title: 'reset', width: 5, value: (r) => (r.reset ? 'yes' : '') },
    { title: 'sec', width: 6, value: (r) => r.seconds.toFixed(1) },
    { title: 'img/s', width: 7, value: (r) => Math.round(r.images_per_sec).toString() },
    { title: 'bank (teacher epoch:score)', width: 0, left: true, value: (r) => bankText(r) },
  ]);

function bankText(r: EpochRecord): string {
  if (r.bank.length === 0) return '-';
  const score = (s: number) => (s >= 0 && s <= 1 ? (s * 100).toFixed(1) : s.toFixed(3));
  const items = r.bank.map((b) => `${b.id}:${score(b.score)}${b.id === r.added ? '*' : ''}`).join(' ');
  return `${items}${r.replaced !== null ? `  (-${r.replaced})` : ''}`;
}

function describeStart(s: StartInfo, outDir: string | undefined): string[] {
  const c = s.config;
  const macs =
    s.macsPerImage >= 1e9 ? `${(s.macsPerImage / 1e9).toFixed(2)}G` : `${(s.macsPerImage / 1e6).toFixed(1)}M`;
  const lines = [
    `dfl-native train: method ${c.method}, model ${c.model}${/\.json$/.test(c.model) ? '' : ` x${c.width}`} (${(s.params / 1e3).toFixed(1)}k params, ${macs} MACs/image), device ${s.device ?? c.device}${c.precision === 'bf16' ? ' (bf16)' : ''}${c.deterministic ? '' : ', non-deterministic algorithms'}`,
    `data: ${c.data ?? 'bundled sample'}: ${s.trainSize} train / ${s.valSize} val / ${s.testSize} test images, ${s.classNames.length} classes`,
  ];
  if (c.method === 'sd' || c.method === 'dfl')
    lines.push(
      `teachers: bank of ${c.teachers} (${c.teacherSource}, ${c.teacherWeighting} weights${c.skipWorseTeachers ? ', teaching only when better than the student' : ''}), T ${c.temperature}, alpha ${c.distillWeight}`,
    );
  if (c.method === 'reset' || c.method === 'dfl')
    lines.push(
      `reset: last ${c.resetDepth} layer(s) every ${c.resetCycle} epochs (${c.resetMode})${c.resetUntil < 1 ? `, none after ${Math.round(c.resetUntil * 100)}% of the epochs` : ''}`,
    );
  if (outDir) lines.push(`out: ${outDir}`);
  return lines;
}

function describeSummary(s: TrainSummary, outDir: string | undefined): string[] {
  const lines = [
    `test: acc ${pct(s.test_acc)}  top-5 ${pct(s.test_top5)}  loss ${fixed(s.test_loss)}  (${s.n} images)`,
    `val: best ${pct(s.best_val_acc)}  final ${pct(s.final_val_acc)}   ${s.epochs} epochs in ${formatDuration(s.seconds)} (${Math.round(s.images_per_sec)} img/s)`,
  ];
  if (outDir) lines.push(`wrote ${path.join(outDir, 'summary.json')}, metrics.jsonl, curves.svg, checkpoint/`);
  return lines;
}

export async function handler(argv: TrainArgs): Promise<void> {
  await runCommand(argv.verbose, async () => {
    const out = new Output({ json: argv.json });
    const controller = new AbortController();
    const { options, outDir: plannedOut } = buildOptions(argv, controller.signal);
    let outDir = plannedOut;
    let epochs = typeof options.epochs === 'number' ? options.epochs : 0;
    const table = epochTable(() => epochs);

    let sigints = 0;
    const onSigint = () => {
      sigints += 1;
      if (sigints === 1) {
        controller.abort();
        out.note('stopping after the current batch and saving a checkpoint (Ctrl-C again to quit at once)');
      } else {
        out.note('quitting without saving');
        process.exit(EXIT.interrupted);
      }
    };
    process.on('SIGINT', onSigint);

    const run = train(options);
    let epochStart = { epoch: -1, t: 0, batch0: 0 };
    run.on('start', (s: StartInfo) => {
      epochs = s.config.epochs;
      outDir = s.config.out ?? outDir;
      if (out.json) out.line({ event: 'start', ...s, out: outDir });
      else {
        for (const l of describeStart(s, outDir)) out.print(l);
        out.print(table.header());
      }
    });
    run.on('log', (message: string) => out.log(message));
    run.on('batch', (b: BatchProgress) => {
      if (!out.human) return;
      const now = performance.now();
      if (b.epoch !== epochStart.epoch) epochStart = { epoch: b.epoch, t: now, batch0: b.batch - 1 };
      const done = b.batch - epochStart.batch0;
      const perBatch = (now - epochStart.t) / 1000 / Math.max(done, 1);
      const eta = (b.batches - b.batch) * perBatch;
      out.bar(
        `epoch ${b.epoch}/${epochs} ${progressBar(b.batch, b.batches)} ${b.batch}/${b.batches}  loss ${b.loss.toFixed(4)}  ${Math.round(b.images_per_sec)} img/s  ETA ${formatDuration(eta)}`,
        b.batch === b.batches,
      );
    });
    run.on('epoch', (r: EpochRecord) => {
      if (out.json) out.line({ event: 'epoch', ...r });
      else out.print(table.row(r));
    });

    let summary: TrainSummary;
    try {
      summary = await run.summary;
    } finally {
      process.off('SIGINT', onSigint);
      out.clearBar();
    }
    if (out.json) out.line({ event: 'summary', ...summary, out: outDir });
    else for (const l of describeSummary(summary, outDir)) out.print(l);
    if (summary.interrupted) {
      const where = outDir ?? '<run folder>';
      out.note(
        `interrupted: the checkpoint is in ${path.join(where, 'checkpoint')}; resume with: dfl-native train --resume ${where}`,
      );
      return EXIT.interrupted;
    }
    return EXIT.ok;
  });
}

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Train a classifier (DFL by default) and write summary.json, metrics.jsonl, curves.svg and a checkpoint',
  builder,
  handler,
};
