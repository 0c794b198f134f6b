// The flags several commands share, declared once: --threads, --batch-size, --device, --precision,
// --deterministic, --json and --verbose have one name, description, type, check and error message
// in every command that takes them. Those that are also train options are checked by the config's
// own rule (config.ts checkOption), so `train --threads x` and `eval --threads x` say the same thing,
// and their defaults are read from DEFAULT_CONFIG.
import type { Options } from 'yargs';

import { checkInteger, checkOption, DEFAULT_CONFIG, MAX_BATCH_SIZE, type TrainConfig } from '../config.js';
import { DEVICES, PRECISIONS } from '../options.js';
import { lastWins, numberFlag } from './numbers.js';

/** A flag's declaration: its type, its help text and, for a string, the values it takes. */
export interface SharedFlag {
  kind: 'string' | 'number' | 'boolean';
  describe: string;
  choices?: readonly string[];
}

/** The shared flags that are train options too; train-flags.ts declares them from here. */
export const SHARED_FLAGS = {
  threads: { kind: 'number', describe: 'Native threads (0: all cores)' },
  batchSize: { kind: 'number', describe: 'Images per batch' },
  device: { kind: 'string', choices: DEVICES, describe: 'Compute device (auto: cuda when usable, else the CPU)' },
  precision: {
    kind: 'string',
    choices: PRECISIONS,
    describe:
      "bf16: convolutions and linear layers on the GPU's tensor cores (float32 weights and accumulation, as PyTorch autocast); GPU only",
  },
  deterministic: {
    kind: 'boolean',
    describe: 'GPU: only reproducible cuDNN algorithms (--no-deterministic allows faster ones)',
  },
} as const satisfies Partial<Record<keyof TrainConfig, SharedFlag>>;

export type SharedKey = keyof typeof SHARED_FLAGS;

/** The flag of a config key: batchSize -> batch-size. */
export const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** " (a|b)" after a description, for a flag with a list of values. */
export const choicesText = (d: { choices?: readonly string[] }): string =>
  d.choices ? ` (${d.choices.join('|')})` : '';

/**
 * yargs options of a shared flag for a command other than train. The default shown is the
 * command's (DEFAULT_CONFIG's unless it has its own); yargs sets none, so an absent flag reads as
 * undefined and the command falls back to the same default.
 */
export function sharedOption(key: SharedKey, shownDefault: unknown = DEFAULT_CONFIG[key]): Options {
  const d: SharedFlag = SHARED_FLAGS[key];
  const describe = `${d.describe}${choicesText(d)} [default: ${String(shownDefault)}]`;
  if (d.kind === 'number') return numberFlag({ describe });
  return { type: d.kind, describe, requiresArg: d.kind !== 'boolean', coerce: lastWins };
}

/** A shared flag's value checked by the train option's rule (undefined when absent); the error names the flag. */
export function sharedValue<K extends SharedKey>(key: K, v: unknown): TrainConfig[K] | undefined {
  return v === undefined ? undefined : checkOption(key, v, `--${kebab(key)}`);
}

/**
 * --batch-size of an evaluation: the train option's upper bound, but one image is enough (a
 * training batch needs two for its batch-norm statistics).
 */
export function evalBatchSize(v: unknown): number | undefined {
  return v === undefined ? undefined : checkInteger(v, '--batch-size', 1, MAX_BATCH_SIZE);
}

/** --json: machine-readable output on stdout, also the default when stdout is not a terminal (output.ts). */
export function jsonOption(shape: string): Options {
  return { type: 'boolean', describe: `JSON on stdout (also when stdout is not a terminal): ${shape}` };
}

/** --verbose, global: the stack trace of errors. */
export const VERBOSE_OPTION: Options = { type: 'boolean', global: true, describe: 'Print the stack trace of errors' };
