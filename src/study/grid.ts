// A study grid: named arms (option sets) x seeds on one dataset and model. Presets, JSON grid
// files, the resolved run list and its deterministic slicing into shards.
import fs from 'node:fs';
import path from 'node:path';

import { resolveConfig, resolveFields, type TrainConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { TRAIN_PRESETS } from '../presets.js';

export interface StudyGrid {
  name: string;
  description: string;
  /** Options every arm shares (TrainConfig keys; data, model, epochs, ...). */
  options: Partial<TrainConfig>;
  /** Arm name -> the options that make it that arm, in report order. */
  arms: Record<string, Partial<TrainConfig>>;
  seeds: number[];
  /** The arm every other arm is compared with, seed by seed. */
  reference: string;
  /**
   * More arms every arm is compared with in the report, after the reference: an arm, or a list of
   * arms of which the one with the best mean final validation accuracy is taken (a control tuned on
   * validation, e.g. label smoothing over two values). They change only the report.
   */
  controls: (string | string[])[];
}

export interface PlannedRun {
  arm: string;
  seed: number;
  /** <study dir>/<arm>/seed<k> */
  dir: string;
  config: TrainConfig;
}

// The paper's method as it describes it: every teacher teaches, resets run to the end. Pinned in
// the presets' shared options, so that their arms keep meaning the paper's ablation whatever
// today's defaults are (which gate the teachers and stop resetting at 70%: the dfl-gated arm).
const PAPER_METHOD: Partial<TrainConfig> = { skipWorseTeachers: false, resetUntil: 1 };

// The CPU-scale recipe of the reproduction study (docs/study/README.md): vgg8 x0.25, 20 epochs,
// reset of the last layer every 5 epochs, K = 3 teachers, T = 4, alpha = 1.
const CPU_RECIPE: Partial<TrainConfig> = {
  model: 'vgg8',
  width: 0.25,
  epochs: 20,
  batchSize: 128,
  lr: 0.05,
  schedule: 'cosine',
  momentum: 0.9,
  nesterov: true,
  weightDecay: 5e-4,
  augment: true,
  cropPadding: 4,
  valSize: 0.1,
  teachers: 3,
  temperature: 4,
  distillWeight: 1,
  resetCycle: 5,
  resetDepth: 1,
  ...PAPER_METHOD,
};

// The ablation arms of the paper: reset only, self-distillation from three kinds of teachers, and
// DFL with its weighting and reset variants; then DFL as this tool's defaults run it.
const ABLATION_ARMS: Record<string, Partial<TrainConfig>> = {
  base: { method: 'base' },
  reset: { method: 'reset' },
  'sd-previous': { method: 'sd', teacherSource: 'previous' },
  'sd-random': { method: 'sd', teacherSource: 'random' },
  'sd-meaningful': { method: 'sd', teacherSource: 'meaningful' },
  dfl: { method: 'dfl' },
  'dfl-score': { method: 'dfl', teacherWeighting: 'score' },
  'dfl-shrink-perturb': { method: 'dfl', resetMode: 'shrink-perturb' },
  'dfl-gated': { method: 'dfl', skipWorseTeachers: true, resetUntil: 0.7 },
};

// Round 2 (issue 27, docs/study/round2.md): the controls a self-distillation gain must beat (base,
// label smoothing tuned on validation over two values, the paper's ablations) and the trajectory
// teachers and targets, on the confirmation's recipe with the bank source spelled out. Its control
// arms are those of the grid file the round-2 study folder started with, option for option.
const ROUND2_RECIPE: Partial<TrainConfig> = { ...CPU_RECIPE, teacherSource: 'meaningful' };
const ROUND2_CONTROLS: (string | string[])[] = [['base-ls0.1', 'base-ls0.2']];

/** Regime 1's arms; cycle is the reset (and restart) cycle in epochs of the regime's budget. */
function round2Arms(cycle: number): Record<string, Partial<TrainConfig>> {
  // Trajectory teachers teach only while they score above the student (the gate this project's
  // study found), as the gated dfl does; the paper's ablations keep the paper's recipe.
  const gated = { skipWorseTeachers: true };
  return {
    base: { method: 'base' },
    'base-ls0.1': { method: 'base', labelSmoothing: 0.1 },
    'base-ls0.2': { method: 'base', labelSmoothing: 0.2 },
    reset: { method: 'reset' },
    sd: { method: 'sd' },
    dfl: { method: 'dfl' },
    'dfl-gated': { method: 'dfl', skipWorseTeachers: true, resetUntil: 0.7 },
    ema: { method: 'sd', emaDecay: 0.999, emaTeacher: 'alone', ...gated },
    swa: { method: 'base', swaStart: 0.75, swaLr: 0.01 },
    pskd: { method: 'base', softTargets: 'pskd', pskdAlpha: 0.8 },
    dlb: TRAIN_PRESETS['noisy-labels'].options, // the preset is this arm, option for option
    'snapshot-restart': {
      method: 'dfl',
      schedule: 'cosine-restarts',
      restartCycle: cycle,
      teacherSource: 'cycle-end',
      ...gated,
      resetUntil: 1,
    },
    'dfl-diverse': {
      method: 'dfl',
      teacherSource: 'diverse',
      diversityFloor: 0.02,
      skipWorseTeachers: true,
      resetUntil: 0.7,
    },
  };
}

/**
 * A regime-2 grid: every regime-1 arm, and each with label smoothing 0.1 and 0.2 ("<arm>-ls0.1"),
 * under one change of the recipe; run the three best arms of regime 1 and base, with and without
 * label smoothing, by naming them with --arms (docs/study/round2.md).
 */
function round2Regime(name: string, description: string, change: Partial<TrainConfig>, cycle: number): StudyGrid {
  const arms: Record<string, Partial<TrainConfig>> = {};
  for (const [arm, layer] of Object.entries(round2Arms(cycle))) {
    if (arm.startsWith('base-ls')) continue;
    arms[arm] = layer;
    for (const ls of [0.1, 0.2]) arms[`${arm}-ls${ls}`] = { ...layer, labelSmoothing: ls };
  }
  return {
    name,
    description,
    options: { ...ROUND2_RECIPE, resetCycle: cycle, ...change },
    arms,
    seeds: [0, 1, 2, 3, 4],
    reference: 'base',
    controls: ROUND2_CONTROLS,
  };
}

export const PRESETS: Record<string, StudyGrid> = {
  cpu: {
    name: 'cpu',
    description:
      "CPU scale: vgg8 x0.25, 20 epochs, the paper's 8 ablation arms and today's default DFL (dfl-gated) x 5 seeds (about 15 hours on 2 cores for 45k images)",
    options: CPU_RECIPE,
    arms: ABLATION_ARMS,
    seeds: [0, 1, 2, 3, 4],
    reference: 'base',
    controls: [],
  },
  // The paper's scale (VGG-16 on CIFAR-100): a GPU-sized grid. Give --data a cifar-100-binary folder.
  paper: {
    name: 'paper',
    description:
      "the paper's scale: VGG-16 (width 1) on CIFAR-100, 240 epochs, the paper's 8 ablation arms and today's default DFL (dfl-gated) x 5 seeds (a GPU grid)",
    options: {
      model: 'vgg16',
      width: 1,
      epochs: 240,
      batchSize: 128,
      lr: 0.05,
      schedule: 'cosine',
      momentum: 0.9,
      nesterov: true,
      weightDecay: 5e-4,
      augment: true,
      cropPadding: 4,
      valSize: 0.1,
      labels: 'fine',
      teachers: 3,
      temperature: 4,
      distillWeight: 1,
      resetCycle: 40,
      resetDepth: 1,
      ...PAPER_METHOD,
    },
    arms: ABLATION_ARMS,
    seeds: [0, 1, 2, 3, 4],
    reference: 'base',
    controls: [],
  },
  round2: {
    name: 'round2',
    description:
      'Round 2, regime 1 (full scale, the CPU recipe of the confirmation: vgg8 x0.25, 20 epochs, 45k/5k/10k of the CIFAR-10 JPEG mirror): ' +
      "the controls (base, base + label smoothing 0.1 / 0.2, the paper's ablations: reset only, meaningful teachers only, the paper's dfl) and the gated dfl; " +
      'the trajectory teachers and targets: EMA teacher, SWA, PS-KD, DLB, snapshot teachers at warm restarts, diversity-aware selection. x 5 seeds',
    options: ROUND2_RECIPE,
    arms: round2Arms(5),
    seeds: [0, 1, 2, 3, 4],
    reference: 'base',
    controls: ROUND2_CONTROLS,
  },
  'round2-long': round2Regime(
    'round2-long',
    'Round 2, regime 2: the round-2 arms at a 60-epoch budget (resets and restarts every 15 epochs), with and without label smoothing; pick arms with --arms',
    { epochs: 60 },
    15,
  ),
  'round2-noise': round2Regime(
    'round2-noise',
    'Round 2, regime 2: the round-2 arms under 20% symmetric label noise on the training split (validation and test clean), with and without label smoothing; pick arms with --arms',
    { labelNoise: 0.2 },
    5,
  ),
  'round2-resnet': round2Regime(
    'round2-resnet',
    'Round 2, regime 2: the round-2 arms on resnet18 x0.25, with and without label smoothing; pick arms with --arms',
    { model: 'resnet18', width: 0.25 },
    5,
  ),
};

const ARM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function fail(where: string, what: string): never {
  throw new ConfigError(`${where}: ${what}`);
}

function optionLayer(v: unknown, where: string): Partial<TrainConfig> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    fail(where, 'expected an object of train options, e.g. {"method": "dfl"}');
  const layer: Record<string, unknown> = {};
  // kebab-case keys are accepted as in --config files
  for (const [k, val] of Object.entries(v)) layer[k.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())] = val;
  try {
    resolveFields(layer); // unknown keys and bad values fail here, naming the key (combinations: in planRuns, with every layer)
  } catch (err) {
    fail(where, (err as Error).message);
  }
  for (const k of ['out', 'seed'] as const)
    if (k in layer) fail(where, `'${k}' is set by the study (<dir>/<arm>/seed<k>), not by the grid`);
  return layer as Partial<TrainConfig>;
}

/**
 * Checks a grid (a preset or a parsed JSON file) and returns it with defaults filled in. `recorded`:
 * a grid as a study folder records it, whose arms `--arms` may have narrowed below its reference
 * and controls (they stay the study's, and later invocations may run them).
 */
export function validateGrid(raw: unknown, where: string, recorded = false): StudyGrid {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    fail(where, 'expected a JSON object {"options": {...}, "arms": {...}, "seeds": [...]}');
  const g = raw as Record<string, unknown>;
  for (const k of Object.keys(g))
    if (!['name', 'description', 'options', 'arms', 'seeds', 'reference', 'controls'].includes(k))
      fail(where, `unknown key '${k}' (valid: name, description, options, arms, seeds, reference, controls)`);
  const options = g.options === undefined ? {} : optionLayer(g.options, `${where} options`);
  if (typeof g.arms !== 'object' || g.arms === null || Array.isArray(g.arms) || Object.keys(g.arms).length === 0)
    fail(
      where,
      'expected "arms": an object of at least one named arm, e.g. {"base": {"method": "base"}, "dfl": {"method": "dfl"}}',
    );
  const arms: Record<string, Partial<TrainConfig>> = {};
  for (const [name, layer] of Object.entries(g.arms as Record<string, unknown>)) {
    if (!ARM_NAME.test(name))
      fail(where, `arm name '${name}' must be letters, digits, '.', '_' or '-' (it names a folder)`);
    arms[name] = optionLayer(layer, `${where} arm '${name}'`);
  }
  const seeds = g.seeds === undefined ? [0, 1, 2, 3, 4] : g.seeds;
  if (
    !Array.isArray(seeds) ||
    seeds.length === 0 ||
    !seeds.every((s) => Number.isInteger(s) && s >= 0 && s < 2 ** 32) ||
    new Set(seeds).size !== seeds.length
  )
    fail(where, 'expected "seeds": distinct non-negative integers, e.g. [0, 1, 2, 3, 4]');
  const reference = g.reference === undefined ? ('base' in arms ? 'base' : Object.keys(arms)[0]) : g.reference;
  if (typeof reference !== 'string' || !(recorded || reference in arms))
    fail(where, `"reference" must name one of the arms (${Object.keys(arms).join(', ')})`);
  const controls = g.controls === undefined ? [] : g.controls;
  const isArm = (a: unknown) => typeof a === 'string' && (recorded || a in arms);
  if (
    !Array.isArray(controls) ||
    !controls.every((c) => isArm(c) || (Array.isArray(c) && c.length > 0 && c.every(isArm)))
  )
    fail(
      where,
      `"controls" must be a list of arm names or lists of arm names (${Object.keys(arms).join(', ')}), e.g. [["base-ls0.1", "base-ls0.2"]]`,
    );
  return {
    name: typeof g.name === 'string' ? g.name : path.basename(where, '.json'),
    description: typeof g.description === 'string' ? g.description : '',
    options,
    arms,
    seeds: [...(seeds as number[])],
    reference,
    controls: (controls as (string | string[])[]).map((c) => (Array.isArray(c) ? [...c] : c)),
  };
}

/** A preset name (cpu, paper) or a path to a JSON grid file. */
export function loadGrid(nameOrFile: string): StudyGrid {
  if (Object.hasOwn(PRESETS, nameOrFile)) return validateGrid(PRESETS[nameOrFile], `preset ${nameOrFile}`);
  if (!nameOrFile.endsWith('.json') && !fs.existsSync(nameOrFile))
    fail(`--grid ${nameOrFile}`, `not a preset (${Object.keys(PRESETS).join(', ')}) nor a JSON file`);
  let text: string;
  try {
    text = fs.readFileSync(nameOrFile, 'utf8');
  } catch (err) {
    fail(
      `--grid ${nameOrFile}`,
      `cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    fail(`--grid ${nameOrFile}`, `not valid JSON (${(err as Error).message.replace(/\s+/g, ' ')})`);
  }
  return validateGrid(raw, nameOrFile);
}

/**
 * Every run of the grid, seed-major (all arms of seed 0, then of seed 1, ...), so that a grid cut
 * short still holds complete pairs. Layers: defaults (today's, or those a study folder recorded) <
 * grid options < common (command line) < arm.
 */
export function planRuns(
  grid: StudyGrid,
  dir: string,
  common: Partial<TrainConfig> = {},
  defaults: Partial<TrainConfig> = {},
): PlannedRun[] {
  for (const [arm, layer] of Object.entries(grid.arms)) {
    const clash = Object.keys(common).filter((k) => k in layer && common[k as keyof TrainConfig] !== undefined);
    if (clash.length)
      throw new ConfigError(
        `${clash.join(', ')} ${clash.length > 1 ? 'are' : 'is'} set by arm '${arm}' of the grid; an option that makes an arm cannot be given for the whole study`,
      );
  }
  const runs: PlannedRun[] = [];
  for (const seed of grid.seeds) {
    for (const [arm, layer] of Object.entries(grid.arms)) {
      const runDir = path.join(dir, arm, `seed${seed}`);
      const config = resolveConfig(
        defaults as Record<string, unknown>,
        grid.options as Record<string, unknown>,
        common as Record<string, unknown>,
        layer as Record<string, unknown>,
        { seed, out: runDir },
      );
      runs.push({ arm, seed, dir: runDir, config });
    }
  }
  return runs;
}

/** Parses "I/N" (1 <= I <= N): the I-th of N shards. */
export function parseShard(text: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : NaN,
    count = m ? Number(m[2]) : NaN;
  if (!m || !(count >= 1) || !(index >= 1 && index <= count))
    throw new ConfigError(`Expected I/N with 1 <= I <= N (e.g. 2/4) for --shard but received '${text}'`);
  return { index, count };
}

/** The runs of shard I of N: every N-th run starting at the I-th, so shards take turns over seeds and arms. */
export function shardRuns<T>(runs: readonly T[], shard: { index: number; count: number }): T[] {
  return runs.filter((_, i) => i % shard.count === shard.index - 1);
}
