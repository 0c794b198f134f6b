// The `train` flags, declared once: one entry per TrainConfig key. The flag name is the kebab-case
// of the key, the default shown in --help is read from DEFAULT_CONFIG, and validation is
// resolveConfig's, so a default or a rule never lives in two places. yargs sets no defaults: a
// flag absent from argv is absent from the config layer, which lets --config values show through.
import fs from 'node:fs';
import type { Options } from 'yargs';

import { CONFIG_KEYS, DEFAULT_CONFIG, resolveConfig, type TrainConfig } from '../config.js';
import { ConfigError, UsageError } from '../errors.js';
import { MODEL_NAMES } from '../models/zoo.js';
import {
  AVERAGE_TEACHERS,
  CONV_INITS,
  LABEL_SETS,
  METHODS,
  RESET_MODES,
  SCHEDULES,
  SCORE_METRICS,
  SOFT_TARGETS,
  TEACHER_SOURCES,
  TEACHER_WEIGHTINGS,
} from '../options.js';
import { choicesText, kebab, SHARED_FLAGS } from './common-flags.js';
import { lastWins, numberFlag, numbersFlag } from './numbers.js';

type Kind = 'string' | 'number' | 'boolean' | 'numbers';

interface FlagDecl {
  kind: Kind;
  describe: string;
  group: string;
  choices?: readonly string[];
  /** Shown instead of the DEFAULT_CONFIG value (e.g. for undefined). */
  defaultText?: string;
  alias?: string;
}

const G = {
  data: 'Data:',
  model: 'Model:',
  optim: 'Optimisation:',
  dfl: 'Teachers and distillation (sd, dfl):',
  reset: 'Reset (reset, dfl):',
  traj: 'Weight averages and soft targets:',
  run: 'Run:',
} as const;

/** Every TrainConfig key has exactly one declaration (the type checker enforces completeness). */
export const TRAIN_FLAGS: { [K in keyof TrainConfig]: FlagDecl } = {
  data: {
    kind: 'string',
    group: G.data,
    describe:
      'Data: a CIFAR-10/100 binary folder or an image folder (class sub-folders; train/ and test/ splits if present)',
    defaultText: 'the bundled sample',
  },
  valSize: {
    kind: 'number',
    group: G.data,
    describe: 'Fraction of the training set held out (stratified) for validation and teacher scoring',
  },
  imageSize: {
    kind: 'number',
    group: G.data,
    describe: 'Resize image-folder images to this square size',
    defaultText: "the images' own size",
  },
  labels: { kind: 'string', group: G.data, choices: LABEL_SETS, describe: 'CIFAR-100 label set' },
  cacheDir: {
    kind: 'string',
    group: G.data,
    describe: 'Where decoded image-folder caches are kept',
    defaultText: 'the default cache folder',
  },
  mean: {
    kind: 'numbers',
    group: G.data,
    describe: 'Per-channel normalisation mean in [0,1] units (e.g. --mean 0.4914 0.4822 0.4465)',
    defaultText: 'computed from the training split',
  },
  std: {
    kind: 'numbers',
    group: G.data,
    describe: 'Per-channel normalisation std in [0,1] units',
    defaultText: 'computed from the training split',
  },
  skipBadFiles: {
    kind: 'boolean',
    group: G.data,
    describe: 'Skip unreadable images and empty class folders with a warning instead of failing',
  },
  augment: { kind: 'boolean', group: G.data, describe: 'Random crop + horizontal flip (--no-augment turns it off)' },
  labelNoise: {
    kind: 'number',
    group: G.data,
    describe:
      "Symmetric label noise: this fraction of the training split's labels (seeded) replaced by another class; validation and test stay clean (0: off)",
  },
  cropPadding: { kind: 'number', group: G.data, describe: 'Zero padding of the random crop, in pixels' },

  model: {
    kind: 'string',
    group: G.model,
    describe: `Zoo model (${MODEL_NAMES.join(', ')}) or a path to a JSON model spec`,
  },
  width: { kind: 'number', group: G.model, describe: 'Channel width multiplier of zoo models' },
  convInit: {
    kind: 'string',
    group: G.model,
    choices: CONV_INITS,
    describe: "Fresh conv weights (start and resets): torchvision's N(0, 2/fan_out) or nn.Conv2d's U(+-1/sqrt(fan_in))",
  },

  epochs: { kind: 'number', group: G.optim, describe: 'Training epochs' },
  batchSize: { ...SHARED_FLAGS.batchSize, group: G.optim },
  lr: { kind: 'number', group: G.optim, describe: 'Peak learning rate' },
  schedule: {
    kind: 'string',
    group: G.optim,
    choices: SCHEDULES,
    describe:
      'Learning-rate schedule (cosine-restarts: cosine to 0 in every --restart-cycle epochs; resets then happen at the restarts)',
  },
  restartCycle: {
    kind: 'number',
    group: G.optim,
    describe: 'Epochs per cycle of --schedule cosine-restarts (and of --teacher-source cycle-end snapshots)',
  },
  milestones: {
    kind: 'numbers',
    group: G.optim,
    describe: 'Epochs after which the step schedule multiplies the lr by --gamma (e.g. --milestones 30 60 or 30,60)',
    defaultText: 'none',
  },
  gamma: { kind: 'number', group: G.optim, describe: 'Step-schedule factor' },
  warmupEpochs: { kind: 'number', group: G.optim, describe: 'Linear warm-up epochs' },
  momentum: { kind: 'number', group: G.optim, describe: 'SGD momentum' },
  nesterov: { kind: 'boolean', group: G.optim, describe: 'Nesterov momentum (--no-nesterov turns it off)' },
  weightDecay: { kind: 'number', group: G.optim, describe: 'Weight decay' },
  decoupledWeightDecay: { kind: 'boolean', group: G.optim, describe: 'Decoupled weight decay (SGDW) instead of L2' },
  labelSmoothing: { kind: 'number', group: G.optim, describe: 'Label smoothing of the cross-entropy' },

  method: {
    kind: 'string',
    group: G.dfl,
    choices: METHODS,
    describe: 'base: plain training; reset: head reset only; sd: self-distillation only; dfl: both',
  },
  teachers: { kind: 'number', group: G.dfl, describe: 'Teacher bank size K' },
  teacherSource: {
    kind: 'string',
    group: G.dfl,
    choices: TEACHER_SOURCES,
    describe:
      'Which snapshots enter the bank (cycle-end: the last K cycle ends of cosine-restarts; diverse: the least redundant on validation, above a score floor)',
  },
  diversityFloor: {
    kind: 'number',
    group: G.dfl,
    describe: '--teacher-source diverse: teachers scoring more than this below the best leave first (accuracy units)',
  },
  teacherWeighting: {
    kind: 'string',
    group: G.dfl,
    choices: TEACHER_WEIGHTINGS,
    describe: "How the teachers' predictions are weighted",
  },
  skipWorseTeachers: {
    kind: 'boolean',
    group: G.dfl,
    describe:
      "Teach only with teachers scoring higher than the student's last validation score (all teach right after a reset; --no-skip-worse-teachers: every teacher teaches, as in the paper)",
  },
  scoreMetric: {
    kind: 'string',
    group: G.dfl,
    choices: SCORE_METRICS,
    describe: 'How teachers are scored on the validation split',
  },
  temperature: { kind: 'number', group: G.dfl, describe: 'Distillation temperature T' },
  distillWeight: { kind: 'number', group: G.dfl, describe: 'Weight alpha of the T^2 KL distillation term' },

  resetCycle: {
    kind: 'number',
    group: G.reset,
    describe: 'Reset the head every this many epochs (under --schedule cosine-restarts: every --restart-cycle)',
  },
  resetUntil: {
    kind: 'number',
    group: G.reset,
    describe:
      'Reset only before this fraction of the epochs has passed (0.7: no reset in the last 30%; 1: to the end, as in the paper)',
  },
  resetDepth: { kind: 'number', group: G.reset, describe: 'Number of last parametric layers reset' },
  resetMode: { kind: 'string', group: G.reset, choices: RESET_MODES, describe: 'Re-initialise, or shrink and perturb' },
  shrink: { kind: 'number', group: G.reset, describe: 'shrink-perturb: factor on the old weights' },
  perturb: { kind: 'number', group: G.reset, describe: 'shrink-perturb: factor on fresh weights' },

  emaDecay: {
    kind: 'number',
    group: G.traj,
    describe:
      'Keep an exponential moving average of the weights and BN buffers, updated every step, with this decay (e.g. 0.999; 0: off)',
  },
  emaTeacher: {
    kind: 'string',
    group: G.traj,
    choices: AVERAGE_TEACHERS,
    describe: 'The EMA as a teacher (method sd or dfl): alone (no snapshot bank) or beside the bank',
  },
  swaStart: {
    kind: 'number',
    group: G.traj,
    describe:
      'SWA: average the weights at the end of every epoch after this fraction of the epochs, BN statistics recomputed (e.g. 0.75; 1: off)',
  },
  swaLr: {
    kind: 'number',
    group: G.traj,
    describe: 'SWA: constant learning rate in the averaged epochs',
    defaultText: "the schedule's",
  },
  swaFinal: {
    kind: 'boolean',
    group: G.traj,
    describe: 'SWA: the final (tested, saved) model is the average (--no-swa-final: the last weights)',
  },
  swaTeacher: {
    kind: 'string',
    group: G.traj,
    choices: AVERAGE_TEACHERS,
    describe: 'The SWA average as a teacher (method sd or dfl): alone or beside the bank',
  },
  softTargets: {
    kind: 'string',
    group: G.traj,
    choices: SOFT_TARGETS,
    describe:
      "Targets from the student's own predictions: pskd (previous epoch's, weight ramping to --pskd-alpha), dlb (previous step's, on carried images)",
  },
  pskdAlpha: {
    kind: 'number',
    group: G.traj,
    describe: 'PS-KD: weight of the previous predictions in the target at the last epoch (alpha_T)',
  },
  dlbTemperature: { kind: 'number', group: G.traj, describe: 'DLB: distillation temperature' },
  dlbWeight: { kind: 'number', group: G.traj, describe: 'DLB: weight of its T^2 KL term' },

  seed: {
    kind: 'number',
    group: G.run,
    describe: 'Seed of every random choice (init, split, shuffle, augmentation, reset)',
  },
  device: { ...SHARED_FLAGS.device, group: G.run },
  precision: { ...SHARED_FLAGS.precision, group: G.run },
  deterministic: { ...SHARED_FLAGS.deterministic, group: G.run },
  threads: { ...SHARED_FLAGS.threads, group: G.run },
  out: {
    kind: 'string',
    group: G.run,
    describe: 'Output folder (summary.json, metrics.jsonl, checkpoint/, curves.svg)',
    defaultText: 'runs/<timestamp>',
  },
};

export { kebab };
const camel = (flag: string): string => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function defaultText(key: keyof TrainConfig): string {
  const d = TRAIN_FLAGS[key];
  if (d.defaultText) return d.defaultText;
  const v = DEFAULT_CONFIG[key];
  return Array.isArray(v) ? (v.length ? v.join(' ') : 'none') : String(v);
}

/** yargs option declarations for every trainer flag (help text with defaults and choices). */
export function trainOptions(): Record<string, Options> {
  const out: Record<string, Options> = {};
  for (const key of CONFIG_KEYS) {
    const d = TRAIN_FLAGS[key];
    const o: Options = {
      describe: `${d.describe}${choicesText(d)} [default: ${defaultText(key)}]`,
      group: d.group,
      requiresArg: d.kind !== 'boolean',
    };
    // Numbers keep the typed text until resolveConfig checks them, so its error quotes it.
    if (d.kind === 'number') out[kebab(key)] = numberFlag(o);
    else if (d.kind === 'numbers') out[kebab(key)] = numbersFlag(o);
    else out[kebab(key)] = { ...o, type: d.kind, coerce: lastWins };
  }
  return out;
}

/** The config layer the flags give: only flags actually on the command line. */
export function flagsToConfig(argv: Record<string, unknown>): Partial<TrainConfig> {
  const layer: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) if (argv[key] !== undefined) layer[key] = argv[key];
  return layer as Partial<TrainConfig>;
}

/** Reads a --config JSON file: TrainConfig keys, camelCase or kebab-case. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `--config ${file}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    // JSON.parse quotes the offending text, which may hold a newline: keep the error on one line.
    throw new UsageError(`--config ${file}: not valid JSON (${(err as Error).message.replace(/\s+/g, ' ')})`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    throw new UsageError(`--config ${file}: expected a JSON object of train options, e.g. {"epochs": 10, "lr": 0.1}`);
  const layer: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) layer[k.includes('-') ? camel(k) : k] = v;
  return layer;
}

/**
 * Resolves file < flags (< extra, e.g. the default out folder) and rewrites a ConfigError so it
 * names the flag (--batch-size) or the file key it came from.
 */
export function resolveTrainConfig(
  fileLayer: Record<string, unknown> | undefined,
  flags: Partial<TrainConfig>,
  configFile?: string,
  extra?: Partial<TrainConfig>,
): TrainConfig {
  try {
    return resolveConfig(fileLayer, flags as Record<string, unknown>, extra as Record<string, unknown> | undefined);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const msg = err.message
      .replace(/ for ([a-zA-Z]+) but received/, (_m, key: string) => {
        const where = key in flags || !configFile ? `--${kebab(key)}` : `"${key}" in ${configFile}`;
        return ` for ${where} but received`;
      })
      .replace(
        /^Unknown option '([^']*)'/,
        (_m, key: string) => `Unknown option '${key}'${configFile ? ` in ${configFile}` : ''}`,
      );
    throw new ConfigError(msg);
  }
}

/** runs/<local timestamp>, e.g. runs/2026-11-29_04-15-09 (unique within the second). */
export function defaultOutDir(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())}_${p(now.getHours())}-${p(now.getMinutes())}-${p(now.getSeconds())}`;
  let dir = `runs/${stamp}`;
  for (let i = 2; fs.existsSync(dir); ++i) dir = `runs/${stamp}-${i}`;
  return dir;
}
