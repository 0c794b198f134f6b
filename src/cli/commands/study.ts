// `dfl-native study`: a grid of arms x seeds, each an ordinary train run in <out>/<arm>/seed<k>/;
// resumable, shardable (--shard I/N for job arrays), and `--report DIR` rebuilds study.md/.svg.
import fs from 'node:fs';
import type { Argv, CommandModule, Options } from 'yargs';

import { EXIT, UsageError } from '../../errors.js';
import { PRESETS, loadGrid, parseShard, type StudyGrid } from '../../study/grid.js';
import { writeStudyReport, type PairedFigures } from '../../study/report.js';
import { runStudy, type StudyEvent } from '../../study/runner.js';
import { verdict, type PairedDifference } from '../../study/stats.js';
import { jsonOption } from '../common-flags.js';
import { formatDuration, Output, pct, runCommand } from '../output.js';
import { flagsToConfig, resolveTrainConfig, trainOptions } from '../train-flags.js';

export interface StudyArgs {
  grid: string;
  out?: string;
  report?: string;
  seeds?: number[];
  seedCount?: number;
  arms?: string[];
  shard?: string;
  json?: boolean;
  verbose?: boolean;
  [key: string]: unknown;
}

/** Train flags that apply to every run of the study; the study itself sets --out and --seed. */
function commonTrainOptions(): Record<string, Options> {
  const o = trainOptions();
  delete o.out;
  delete o.seed;
  for (const v of Object.values(o)) v.group = `Train options for every run: ${String(v.group).replace(/:$/, '')}`;
  return o;
}

export function builder(y: Argv): Argv<StudyArgs> {
  return y
    .option('grid', {
      type: 'string',
      default: 'cpu',
      requiresArg: true,
      group: 'Study:',
      describe: `A preset (${Object.keys(PRESETS).join(', ')}) or a JSON grid file`,
    })
    .option('out', {
      type: 'string',
      requiresArg: true,
      group: 'Study:',
      describe: 'Study folder: runs go to <out>/<arm>/seed<k>/, the report to <out>/study.md and study.svg',
    })
    .option('seeds', {
      type: 'string',
      array: true,
      requiresArg: true,
      group: 'Study:',
      describe: "These seeds (0 1 2 or 0,1,2) [default: the grid's]",
      coerce: (v: unknown) =>
        (Array.isArray(v) ? v : [v])
          .flatMap((x) => String(x).split(','))
          .map((s) => s.trim())
          .filter(Boolean)
          .map(Number),
    })
    .option('seed-count', {
      type: 'number',
      requiresArg: true,
      group: 'Study:',
      describe: 'Seeds 0..N-1 (instead of --seeds)',
    })
    .option('arms', {
      type: 'string',
      array: true,
      requiresArg: true,
      group: 'Study:',
      describe: 'Run only these arms of the grid (names, space- or comma-separated)',
      coerce: (v: unknown) =>
        (Array.isArray(v) ? v : [v])
          .flatMap((x) => String(x).split(','))
          .map((s) => s.trim())
          .filter(Boolean),
    })
    .option('shard', {
      type: 'string',
      requiresArg: true,
      group: 'Study:',
      describe: 'I/N: run only the I-th of N slices of the run list (a job array writing into one --out)',
    })
    .option('report', {
      type: 'string',
      requiresArg: true,
      group: 'Study:',
      describe: 'Only rebuild study.md and study.svg from the finished runs in this folder',
    })
    .option('json', { ...jsonOption('one line per event (plan, run, epoch, done, summary, ...)'), group: 'Study:' })
    .options(commonTrainOptions())
    .example('$0 study --data /data/cifar10-jpeg --out studies/cpu', 'the default grid: 9 arms x 5 seeds at CPU scale')
    .example(
      '$0 study --data /data/cifar10-jpeg --out studies/cpu --arms base dfl --seed-count 10',
      'two arms, seeds 0-9',
    )
    .example(
      '$0 study --grid grid.json --out /shared/s --shard $SLURM_ARRAY_TASK_ID/8',
      'one slice of 8 in a Slurm job array',
    )
    .example(
      '$0 study --report studies/cpu',
      'rebuild the report from the finished runs',
    ) as unknown as Argv<StudyArgs>;
}

/** The grid narrowed by --arms and --seeds. */
function selectGrid(grid: StudyGrid, argv: StudyArgs): StudyGrid {
  let { arms, seeds } = grid;
  if (argv.arms) {
    const unknown = argv.arms.filter((a) => !(a in grid.arms));
    if (unknown.length)
      throw new UsageError(
        `--arms: no arm ${unknown.join(', ')} in grid '${grid.name}' (arms: ${Object.keys(grid.arms).join(', ')})`,
      );
    arms = Object.fromEntries(argv.arms.map((a) => [a, grid.arms[a]]));
  }
  if (argv.seeds !== undefined && argv.seedCount !== undefined)
    throw new UsageError('give --seeds (a list) or --seed-count (0..N-1), not both');
  if (argv.seeds !== undefined) {
    const s = argv.seeds;
    if (!s.length || !s.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32))
      throw new UsageError(
        `--seeds: expected non-negative integers (e.g. --seeds 0 1 2) but received ${JSON.stringify(argv.seeds)}`,
      );
    seeds = [...new Set(s)];
  }
  if (argv.seedCount !== undefined) {
    const n = argv.seedCount;
    if (!Number.isInteger(n) || n < 1 || n > 10000)
      throw new UsageError(`--seed-count: expected an integer in [1, 10000] but received ${String(n)}`);
    seeds = Array.from({ length: n }, (_, i) => i);
  }
  // The reference stays the grid's even when --arms leaves it out: it is what the report pairs with,
  // and the study folder records it (a later invocation may run it, or already has).
  return { ...grid, arms, seeds };
}

function describe(e: StudyEvent): string | null {
  switch (e.event) {
    case 'plan':
      return `study: ${e.todo} runs in shard ${e.shard} of a ${e.total}-run grid (${e.finished} finished, ${e.partial} to resume)`;
    case 'skip':
      return `[${e.index}/${e.total}] ${e.arm} seed ${e.seed}: finished, skipped`;
    case 'run':
      return `[${e.index}/${e.total}] ${e.arm} seed ${e.seed}: ${e.resume ? 'resuming' : 'training'} in ${e.dir}`;
    case 'epoch':
      return (
        `  ${e.arm} seed ${e.seed} epoch ${e.record.epoch}/${e.epochs}: val ${pct(e.record.val_acc)}` +
        `${e.record.ensemble_val_acc !== null ? `  ensemble ${pct(e.record.ensemble_val_acc)}` : ''}${e.record.reset ? '  (reset)' : ''}  ${e.record.seconds.toFixed(1)} s`
      );
    case 'done':
      return `  ${e.arm} seed ${e.seed}: test ${pct(e.test_acc)} in ${formatDuration(e.wall_seconds)}`;
    case 'report':
      return `  report: ${e.file}`;
    case 'log':
      return null;
  }
}

function printReportSummary(out: Output, dir: string): void {
  const { stats, runs } = writeStudyReport(dir);
  if (out.json) {
    const figures = (p: PairedFigures) => ({
      ...p.test,
      verdict: verdict(p.test),
      anytime: p.anytime,
      ece: p.ece,
      ensemble: { ...p.ensemble, verdict: verdict(p.ensemble) },
    });
    out.line({
      event: 'summary',
      dir,
      finished: runs.finished.length,
      unfinished: runs.unfinished.length,
      reference: stats.reference,
      arms: stats.arms,
      paired: Object.fromEntries(Object.entries(stats.paired).map(([a, p]) => [a, figures(p)])),
      controls: stats.controls,
      paired_controls: Object.fromEntries(
        Object.entries(stats.pairedControls).map(([c, rows]) => [
          c,
          Object.fromEntries(Object.entries(rows).map(([a, p]) => [a, figures(p)])),
        ]),
      ),
    });
    return;
  }
  out.print(
    `${dir}: ${runs.finished.length} finished runs${runs.unfinished.length ? `, ${runs.unfinished.length} unfinished` : ''}; wrote study.md and study.svg`,
  );
  const vs = (name: string, p: PairedDifference | undefined) =>
    p ? `  vs ${name}: ${p.mean >= 0 ? '+' : ''}${(p.mean * 100).toFixed(2)} pp, n ${p.n}, ${verdict(p)}` : '';
  for (const a of stats.arms) {
    const controls = Object.entries(stats.pairedControls)
      .map(([c, rows]) => vs(c, rows[a.arm]?.test))
      .join('');
    out.print(
      `  ${a.arm.padEnd(20)} n ${String(a.n).padStart(2)}  test ${pct(a.testAcc.mean)}${vs(stats.reference, stats.paired[a.arm]?.test)}${controls}`,
    );
  }
}

export async function handler(argv: StudyArgs): Promise<void> {
  await runCommand(argv.verbose, async () => {
    const out = new Output({ json: argv.json });
    if (argv.report !== undefined) {
      if (argv.out !== undefined || argv.shard !== undefined)
        throw new UsageError('--report only rebuilds the report; drop --out and --shard');
      if (!fs.existsSync(argv.report) || !fs.statSync(argv.report).isDirectory())
        throw new UsageError(`--report ${argv.report}: no such folder; give a study folder`);
      printReportSummary(out, argv.report);
      return EXIT.ok;
    }
    if (argv.out === undefined)
      throw new UsageError('give --out DIR (the study folder), or --report DIR to rebuild a report');
    const grid = selectGrid(loadGrid(argv.grid), argv);
    const shard = argv.shard !== undefined ? parseShard(argv.shard) : undefined;
    // Validate the command-line layer now (a bad flag is exit 2 before any run starts).
    const { out: _studyDir, ...common } = flagsToConfig(argv); // --out is the study folder, not a run's
    resolveTrainConfig(undefined, common);
    if (common.data !== undefined && common.data !== 'sample' && !fs.existsSync(common.data))
      throw new UsageError(`--data ${common.data}: no such file or folder`);

    const controller = new AbortController();
    let sigints = 0;
    const onSigint = () => {
      if (++sigints === 1) {
        controller.abort();
        out.note(
          'stopping after the current batch; the run keeps a checkpoint and the same command resumes the study (Ctrl-C again to quit at once)',
        );
      } else process.exit(EXIT.interrupted);
    };
    process.on('SIGINT', onSigint);
    try {
      const result = await runStudy({ grid, dir: argv.out, common, shard, signal: controller.signal }, (e) => {
        if (e.event === 'log')
          return out.log(e.message, { arm: e.arm, seed: e.seed }, `${e.arm} seed ${e.seed}: ${e.message}`);
        if (out.json) out.line(e);
        const text = describe(e);
        if (text !== null) out.print(text);
      });
      printReportSummary(out, argv.out);
      return result.interrupted ? EXIT.interrupted : EXIT.ok;
    } finally {
      process.off('SIGINT', onSigint);
    }
  });
}

export const studyCommand: CommandModule<object, StudyArgs> = {
  command: 'study',
  describe: 'Run a grid of arms x seeds (each a train run), resumable and shardable; write study.md and study.svg',
  builder,
  handler,
};
