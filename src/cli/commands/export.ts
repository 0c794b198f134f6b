// `dfl-native export`: a checkpoint to a self-contained ONNX file (opset 13), checked in
// onnxruntime-node against the native forward before it is put in place.
import fs from 'node:fs';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';

import { RunError, UsageError } from '../../errors.js';
import { loadCheckpoint } from '../../io/checkpoint.js';
import { buildOnnx, ONNX_OPSET } from '../../io/onnx.js';
import { verifyOnnx } from '../../io/onnx-verify.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { jsonOption } from '../common-flags.js';
import { checkedNumber, numberFlag } from '../numbers.js';
import { Output, runCommand } from '../output.js';
import { requireCheckpoint } from './eval.js';

export interface ExportArgs {
  checkpoint: string;
  out: string;
  foldBn?: boolean;
  verify?: boolean;
  /** Numeric flags hold the typed text until checked (numbers.ts). */
  samples?: unknown;
  tolerance?: unknown;
  json?: boolean;
  verbose?: boolean;
}

export function builder(y: Argv): Argv<ExportArgs> {
  return y
    .option('checkpoint', {
      type: 'string',
      demandOption: true,
      requiresArg: true,
      describe: 'A run folder written by train (or its checkpoint/)',
    })
    .option('out', {
      type: 'string',
      demandOption: true,
      requiresArg: true,
      describe: 'The ONNX file to write, e.g. model.onnx',
    })
    .option('fold-bn', {
      type: 'boolean',
      describe: 'Fold BatchNorm into the convolution before it [default: false, BatchNormalization nodes]',
    })
    .option('verify', {
      type: 'boolean',
      describe: 'Check the file in onnxruntime-node against the native forward (--no-verify skips it) [default: true]',
    })
    .option('samples', numberFlag({ describe: 'Images compared by the check [default: 4]' }))
    .option(
      'tolerance',
      numberFlag({ describe: 'Largest relative logit difference the check accepts [default: 1e-4]' }),
    )
    .option('json', jsonOption('one object'))
    .example('$0 export --checkpoint runs/2026-11-29_10-00-00 --out model.onnx', 'export and check')
    .example(
      '$0 export --checkpoint runs/a --out a.onnx --fold-bn',
      'BatchNorm folded into the convolutions',
    ) as unknown as Argv<ExportArgs>;
}

export async function handler(argv: ExportArgs): Promise<void> {
  await runCommand(argv.verbose, async () => {
    const out = new Output({ json: argv.json });
    const samples =
      checkedNumber(
        argv.samples,
        '--samples',
        'an integer in [1, 1024]',
        (n) => Number.isInteger(n) && n >= 1 && n <= 1024,
      ) ?? 4;
    const tolerance = checkedNumber(argv.tolerance, '--tolerance', 'a positive number', (n) => n > 0) ?? 1e-4;
    const dir = path.dirname(path.resolve(argv.out));
    if (!fs.existsSync(dir))
      throw new UsageError(`--out ${argv.out}: the folder ${dir} does not exist; create it first`);
    if (fs.existsSync(argv.out) && fs.statSync(argv.out).isDirectory())
      throw new UsageError(
        `--out ${argv.out}: is a folder; give a file name such as ${path.join(argv.out, 'model.onnx')}`,
      );
    requireCheckpoint(argv.checkpoint);
    const ckpt = await loadCheckpoint(argv.checkpoint);
    try {
      const { bytes, ops, foldedBn } = buildOnnx(ckpt.spec, ckpt.model, {
        classNames: ckpt.classNames,
        mean: ckpt.mean,
        std: ckpt.std,
        foldBn: argv.foldBn ?? false,
        name: ckpt.config.model.replace(/[^A-Za-z0-9_]/g, '_'),
        metadata: {
          model: ckpt.config.model,
          method: ckpt.config.method,
          epoch: String(ckpt.epoch),
          width: String(ckpt.config.width),
        },
      });
      const verify = argv.verify ?? true;
      let check: Awaited<ReturnType<typeof verifyOnnx>> | null = null;
      if (verify) {
        check = await verifyOnnx(bytes, ckpt.model, ckpt.inputShape, {
          samples,
          tolerance,
          mean: ckpt.mean,
          std: ckpt.std,
        });
        if (!check.ok)
          throw new RunError(
            `ONNX check failed: onnxruntime and the native forward differ by ${check.relDiff.toExponential(2)} (relative; tolerance ${tolerance}); ${argv.out} was not written. Please report this with the checkpoint's model spec.`,
          );
      }
      // Written only once checked, atomically: --out never holds a half or unchecked file.
      writeFileAtomic(argv.out, bytes);
      const nodes = Object.values(ops).reduce((a, b) => a + b, 0);
      if (out.json) {
        out.line({
          out: argv.out,
          bytes: bytes.length,
          opset: ONNX_OPSET,
          nodes,
          ops,
          folded_bn: foldedBn,
          input_shape: ckpt.inputShape,
          classes: ckpt.classNames.length,
          verified: check
            ? { samples: check.samples, max_abs_diff: check.maxAbsDiff, rel_diff: check.relDiff, tolerance }
            : null,
        });
      } else {
        out.print(
          `wrote ${argv.out}: ${(bytes.length / 1024).toFixed(1)} KiB, opset ${ONNX_OPSET}, ${nodes} nodes (${Object.entries(
            ops,
          )
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')})${foldedBn ? `, ${foldedBn} BatchNorm folded` : ''}`,
        );
        out.print(
          `input "input" (batch, ${ckpt.inputShape.join(', ')}) float32, normalised (pixel/255 - mean)/std; output "logits" (batch, ${ckpt.classNames.length}); class names, mean and std are in the metadata`,
        );
        if (check)
          out.print(
            `checked in onnxruntime-node on ${check.samples} images: max |diff| ${check.maxAbsDiff.toExponential(2)}, relative ${check.relDiff.toExponential(2)} (tolerance ${tolerance})`,
          );
        else out.print('not checked (--no-verify)');
      }
    } finally {
      ckpt.model.dispose();
    }
  });
}

export const exportCommand: CommandModule<object, ExportArgs> = {
  command: 'export',
  describe: 'Export a checkpoint to ONNX (opset 13) and check it in onnxruntime-node',
  builder,
  handler,
};
