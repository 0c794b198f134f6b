#!/usr/bin/env node
// The dfl-native command line: yargs wiring only; each command lives in commands/<name>.ts.
// Exit codes (src/errors.ts, docs/cli.md): 0 success, 1 a failed run, 2 bad input, 130 interrupted (checkpoint saved).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';

import { EXIT } from '../errors.js';
import { packageVersion } from '../io/onnx.js';
import { VERBOSE_OPTION } from './common-flags.js';
import { benchCommand } from './commands/bench.js';
import { evalCommand } from './commands/eval.js';
import { exportCommand } from './commands/export.js';
import { infoCommand } from './commands/info.js';
import { predictCommand } from './commands/predict.js';
import { studyCommand } from './commands/study.js';
import { trainCommand } from './commands/train.js';

const argv = hideBin(process.argv);
const verbose = argv.includes('--verbose');
const COMMANDS = ['train', 'eval', 'export', 'predict', 'info', 'study', 'bench'];

await yargs(argv)
  .scriptName('dfl-native')
  .usage(
    "$0 <command> [options]\n\nTrain image classifiers with Diverse Feature Learning (self-distillation from a bank of the model's own snapshots + periodic head reset) on a native C++ core.",
  )
  .command(trainCommand)
  .command(evalCommand)
  .command(exportCommand)
  .command(predictCommand)
  .command(infoCommand)
  .command(studyCommand)
  .command(benchCommand)
  .option('verbose', VERBOSE_OPTION)
  .demandCommand(1, 'Give a command: train, eval, export, predict, info, study or bench')
  .strict()
  // numeric flags parse their own text (numbers.ts), so an error quotes what was typed
  .parserConfiguration({ 'parse-numbers': false })
  .recommendCommands()
  .version(packageVersion())
  .alias('help', 'h')
  .wrap(Math.min(120, process.stdout.columns || 100))
  .epilog('Docs: docs/cli.md. Exit codes: 0 success, 1 a failed run, 2 bad input, 130 interrupted.')
  .fail((msg, err) => {
    // Usage errors (unknown flags, missing values, failed checks): one line, exit 2.
    const command = argv.find((a) => !a.startsWith('-'));
    const help = command && COMMANDS.includes(command) ? `dfl-native ${command} --help` : 'dfl-native --help';
    const text = (msg || err?.message || 'bad usage').replace(/\s*\n\s*/g, ' ').trim();
    process.stderr.write(`dfl-native: error: ${text} (see ${help})\n`);
    if (verbose && err?.stack) process.stderr.write(`${err.stack}\n`);
    process.exit(EXIT.usage);
  })
  .parseAsync();
