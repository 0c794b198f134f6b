// `dfl-native bench`: images/s of a training step, an eval forward and a DFL step for one or more
// models on a device, with spread, FLOPs, achieved GFLOP/s and peak memory (src/bench.ts measures).
import type { Argv, CommandModule } from 'yargs';

import { BENCH_DEFAULTS, benchmark, type BenchResult } from '../../bench.js';
import { describeSimd, loadBinding } from '../../binding.js';
import { DEFAULT_CONFIG } from '../../config.js';
import { UsageError } from '../../errors.js';
import { jsonOption, sharedOption, sharedValue } from '../common-flags.js';
import { checkedNumber, numberFlag } from '../numbers.js';
import { fixed, Output, runCommand, Table } from '../output.js';

export interface BenchArgs {
  model: string;
  profile?: boolean;
  json?: boolean;
  verbose?: boolean;
  /** Shared and numeric flags hold the typed text until checked (common-flags.ts, numbers.ts). */
  device?: unknown;
  precision?: unknown;
  deterministic?: unknown;
  width?: unknown;
  batchSize?: unknown;
  threads?: unknown;
  teachers?: unknown;
  reps?: unknown;
  warmup?: unknown;
}

export function builder(y: Argv): Argv<BenchArgs> {
  return y
    .option('model', {
      type: 'string',
      default: 'vgg8',
      requiresArg: true,
      describe:
        'Zoo name(s), comma-separated, or a JSON model spec; name@width sets a width per model (vgg8@0.25,resnet18)',
    })
    .option(
      'width',
      numberFlag({ describe: `Width multiplier of zoo models without @width [default: ${BENCH_DEFAULTS.width}]` }),
    )
    .option('batch-size', sharedOption('batchSize'))
    .option('device', sharedOption('device'))
    .option('precision', sharedOption('precision'))
    .option('deterministic', sharedOption('deterministic'))
    .option('threads', sharedOption('threads'))
    .option('teachers', numberFlag({ describe: `Teachers K in the DFL step [default: ${DEFAULT_CONFIG.teachers}]` }))
    .option(
      'reps',
      numberFlag({
        describe: `Timed repetitions per phase (median and spread reported) [default: ${BENCH_DEFAULTS.reps}]`,
      }),
    )
    .option('warmup', numberFlag({ describe: `Untimed repetitions first [default: ${BENCH_DEFAULTS.warmup}]` }))
    .option('profile', {
      type: 'boolean',
      describe: 'Also time every layer of a training step (each layer synchronised)',
    })
    .option('json', jsonOption('one object per model'))
    .example('$0 bench', 'vgg8 on the best device, batch 128')
    .example('$0 bench --model vgg8@0.25,resnet18@0.25 --threads 2 --json', 'two models, machine-readable')
    .example('$0 bench --model resnet18 --device cuda --batch-size 512', 'GPU throughput')
    .example(
      '$0 bench --model mobilenetv2@0.25 --profile',
      'where the time goes, layer by layer',
    ) as unknown as Argv<BenchArgs>;
}

/** "vgg8@0.25" -> { model: 'vgg8', width: 0.25 }; a bare name takes the --width flag. */
function parseModels(list: string, width: number): { model: string; width: number }[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const at = s.lastIndexOf('@');
      if (at < 0 || s.endsWith('.json')) return { model: s, width };
      const w = Number(s.slice(at + 1));
      if (!Number.isFinite(w) || w <= 0)
        throw new UsageError(`--model ${s}: expected name@width with a positive width`);
      return { model: s.slice(0, at), width: w };
    });
}

const ms = (p: { ms_median: number; ms_min: number; ms_max: number }) =>
  `${fixed(p.ms_median, 1)} (${fixed(p.ms_min, 1)}-${fixed(p.ms_max, 1)})`;

export async function handler(argv: BenchArgs): Promise<void> {
  await runCommand(argv.verbose, async () => {
    const out = new Output({ json: argv.json });
    const int = (v: unknown, flag: string, min: number) =>
      checkedNumber(v, flag, `an integer >= ${min}`, (n) => Number.isInteger(n) && n >= min);
    const width = checkedNumber(argv.width, '--width', 'a positive number', (n) => n > 0) ?? BENCH_DEFAULTS.width;
    const opts = {
      batchSize: sharedValue('batchSize', argv.batchSize),
      threads: sharedValue('threads', argv.threads),
      teachers: int(argv.teachers, '--teachers', 0),
      reps: int(argv.reps, '--reps', 1),
      warmup: int(argv.warmup, '--warmup', 0),
      profile: argv.profile,
      device: sharedValue('device', argv.device),
      precision: sharedValue('precision', argv.precision),
      deterministic: sharedValue('deterministic', argv.deterministic),
    };
    const models = parseModels(argv.model, width);
    const table = new Table<BenchResult>([
      { title: 'model', width: 18, left: true, value: (r) => `${r.model}@${r.width}` },
      { title: 'dev', width: 4, left: true, value: (r) => r.device },
      { title: 'prec', width: 4, left: true, value: (r) => r.precision },
      { title: 'train img/s', width: 11, value: (r) => fixed(r.train_img_s, 0) },
      { title: 'infer img/s', width: 11, value: (r) => fixed(r.infer_img_s, 0) },
      { title: 'DFL img/s', width: 9, value: (r) => fixed(r.dfl_img_s, 0) },
      { title: 'train ms (min-max)', width: 22, value: (r) => ms(r.train) },
      { title: 'GFLOP/s', width: 7, value: (r) => fixed(r.train.gflop_s, 1) },
      { title: 'GFLOP/img', width: 9, value: (r) => fixed(r.gflops_per_img, 3) },
      { title: 'peak MB', width: 7, value: (r) => fixed(r.peak_rss_mb, 0) },
    ]);
    let printedHeader = false;
    // the device note once per command (each model would repeat it), on stderr: stdout keeps one object per model
    let noted = false;
    const deviceNote = (m: string) => {
      if (!noted) out.note(m);
      noted = true;
    };
    for (const m of models) {
      out.bar(`benchmarking ${m.model}@${m.width} ...`, true);
      const r = await benchmark({ ...m, ...opts, log: deviceNote });
      out.clearBar();
      if (out.json) {
        out.line(r);
        continue;
      }
      if (!printedHeader) {
        const simd = r.device === 'cpu' ? `, SIMD: ${describeSimd(loadBinding().runtimeInfo())}` : '';
        out.print(
          `batch ${r.batch}, ${r.threads} threads${simd}, DFL step with K = ${r.teachers} teachers, median of ${r.reps} after warm-up`,
        );
        out.print(table.header());
        printedHeader = true;
      }
      out.print(table.row(r));
      if (r.layers) printProfile(out, r);
    }
  });
}

function printProfile(out: Output, r: BenchResult): void {
  const total =
    r.layers!.reduce((a, l) => a + l.forward_ms + l.backward_ms, 0) +
    r.phases!.loss_ms +
    r.phases!.update_ms +
    r.phases!.transfer_ms;
  const rows = [...r.layers!].sort((a, b) => b.forward_ms + b.backward_ms - (a.forward_ms + a.backward_ms));
  const t = new Table<(typeof rows)[number]>([
    { title: '  layer', width: 30, left: true, value: (l) => `  ${l.layer}` },
    { title: 'output', width: 12, left: true, value: (l) => l.shape.join('x') },
    { title: 'fwd ms', width: 8, value: (l) => fixed(l.forward_ms, 2) },
    { title: 'bwd ms', width: 8, value: (l) => fixed(l.backward_ms, 2) },
    { title: 'share', width: 6, value: (l) => `${fixed((100 * (l.forward_ms + l.backward_ms)) / total, 1)}%` },
  ]);
  out.print(
    `  one training step, ${fixed(total, 1)} ms when each layer is synchronised: loss ${fixed(r.phases!.loss_ms, 2)} ms, update ${fixed(r.phases!.update_ms, 2)} ms, upload ${fixed(r.phases!.transfer_ms, 2)} ms; layers by time:`,
  );
  out.print(t.header());
  for (const l of rows.slice(0, 15)) out.print(t.row(l));
  if (rows.length > 15) out.print(`  ... ${rows.length - 15} more layers`);
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: 'bench',
  describe: 'Throughput of training, inference and DFL steps (img/s, GFLOP/s, peak memory) on cpu or cuda',
  builder,
  handler,
};
