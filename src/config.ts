// One declared default config, validated into a plain object. The library API, the CLI flags and
// --config files all resolve through resolveConfig, so defaults and error messages live here only.
import { ConfigError } from './errors.js';
import {
  AVERAGE_TEACHERS,
  CONV_INITS,
  DEVICES,
  LABEL_SETS,
  METHODS,
  PRECISIONS,
  RESET_MODES,
  SCHEDULES,
  SCORE_METRICS,
  SOFT_TARGETS,
  TEACHER_SOURCES,
  TEACHER_WEIGHTINGS,
  type AverageTeacher,
  type ConvInit,
  type Device,
  type LabelSet,
  type Method,
  type Precision,
  type ResetMode,
  type ScheduleName,
  type ScoreMetric,
  type SoftTargetsName,
  type TeacherSource,
  type TeacherWeighting,
} from './options.js';

// The option types are declared with their value lists in options.ts; re-exported for the callers of config.
export type {
  AverageTeacher,
  ConvInit,
  Device,
  LabelSet,
  Method,
  Precision,
  ResetMode,
  ScheduleName,
  ScoreMetric,
  SoftTargetsName,
  TeacherSource,
  TeacherWeighting,
} from './options.js';

export interface TrainConfig {
  /** Data source: a CIFAR binary folder, an image folder, or undefined for the bundled sample. */
  data: string | undefined;
  /** Zoo name (vgg8 ... shufflenetv2) or a path to a JSON model spec. */
  model: string;
  /** Channel width multiplier for zoo models. */
  width: number;
  /**
   * Fresh convolution weights (at the start and at every reset): 'kaiming-normal' N(0, 2/fan_out),
   * torchvision's; 'pytorch-default' U(+-1/sqrt(fan_in)), nn.Conv2d's own (docs/study/README.md,
   * section 1, compares them).
   */
  convInit: ConvInit;
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  /** false: L2 (added to the gradient, PyTorch SGD); true: decoupled (SGDW). */
  decoupledWeightDecay: boolean;
  /**
   * 'cosine-restarts': cosine from lr to 0 in every cycle of restartCycle epochs, restarting at lr
   * (SGDR with equal cycles). With resets on, the head is reset at the restarts (every restartCycle
   * epochs; resetCycle is not used then), so a fresh head meets a high learning rate.
   */
  schedule: ScheduleName;
  /** Epochs per cycle of the cosine-restarts schedule (and of cycle-end snapshots). */
  restartCycle: number;
  /** Epochs (1-based) after which the step schedule multiplies the lr by gamma. */
  milestones: number[];
  gamma: number;
  warmupEpochs: number;
  labelSmoothing: number;
  /**
   * Symmetric label noise on the training split: this fraction of its labels (chosen by a seeded
   * permutation of the run's seed) is replaced by a uniformly drawn other class. The validation and
   * test splits stay clean. 0: off.
   */
  labelNoise: number;
  /** Random crop (zero padding `cropPadding`) + horizontal flip. */
  augment: boolean;
  cropPadding: number;
  method: Method;
  /** Bank size K. */
  teachers: number;
  /**
   * Which snapshots enter the bank. meaningful: the K best-scoring; previous: the last K epochs';
   * random: K fixed random initialisations; cycle-end: the snapshot at the end of each cycle of the
   * cosine-restarts schedule, the last K kept (snapshot ensembles); diverse: like meaningful while
   * the bank fills, then the member least in disagreement with the others leaves (top-1
   * disagreement on the validation split), among those scoring at least diversityFloor below the
   * best (src/train/teachers.ts offerDiverse).
   */
  teacherSource: TeacherSource;
  /** teacherSource diverse: members scoring more than this below the best of the bank and the candidate leave first. */
  diversityFloor: number;
  teacherWeighting: TeacherWeighting;
  /**
   * Teach only with teachers scoring higher than the student's last validation score (all teach in
   * the epoch after a reset, whose fresh head every snapshot beats): the student is never pulled
   * toward a snapshot no better than itself, its own previous epoch included.
   */
  skipWorseTeachers: boolean;
  /** How teachers are scored on the validation split. */
  scoreMetric: ScoreMetric;
  temperature: number;
  /** alpha: weight of T^2 * KL(p_T || q). */
  distillWeight: number;
  /**
   * Exponential moving average of the student's weights and BN buffers, updated after every step:
   * ema <- d * ema + (1 - d) * student with d = min(emaDecay, s / (s + 1)) at step s = 1, 2, ...
   * (the mean teacher's ramp: a plain mean of the weights so far until the decay takes over, so the
   * initialisation does not dominate early averages). 0: off.
   */
  emaDecay: number;
  /** The EMA as a teacher (needs emaDecay > 0 and method sd or dfl): alone (the bank is not used) or beside the bank. */
  emaTeacher: AverageTeacher;
  /**
   * Stochastic weight averaging: the weights at the end of every epoch after this fraction of the
   * epochs are averaged (equal weights); the average's BN statistics are recomputed on the training
   * split (a pass in training mode, the batch statistics averaged). 1: off.
   */
  swaStart: number;
  /** A constant learning rate from the first averaged epoch on; undefined: the schedule's own lr continues. */
  swaLr: number | undefined;
  /** With SWA: the run's final model (test metrics, checkpoint, export) is the average; false: the last weights (the average only teaches). */
  swaFinal: boolean;
  /** The SWA average as a teacher (needs swaStart < 1 and method sd or dfl), from the epoch after the first averaged one. */
  swaTeacher: AverageTeacher;
  /**
   * Soft targets from the student's own predictions, added to any teachers. pskd (progressive
   * self-knowledge distillation): the loss is (1 - a) CE(y) + a KL(p_prev || q) with p_prev the
   * previous epoch's training prediction of the sample and a = pskdAlpha * epoch / epochs (epoch 1:
   * plain CE). dlb (last-mini-batch distillation): each step also carries the previous step's
   * images and adds dlbWeight * T^2 KL toward that step's predictions of them (T = dlbTemperature);
   * a step then holds 2 x batchSize images, so an epoch costs about twice as much.
   */
  softTargets: SoftTargetsName;
  /** PS-KD's alpha_T: the target's weight on the previous predictions at the last epoch. */
  pskdAlpha: number;
  dlbTemperature: number;
  dlbWeight: number;
  /** Reset every resetCycle epochs (before epochs 1 + k*cycle, k >= 1). */
  resetCycle: number;
  /** Resets happen only before this fraction of the epochs has passed (1: throughout; 0.7: none in the last 30%). */
  resetUntil: number;
  /** Number of last parametric layers re-initialised (a conv/linear with its BN is one). */
  resetDepth: number;
  resetMode: ResetMode;
  /** shrink-perturb: theta <- shrink * theta + perturb * theta_fresh. */
  shrink: number;
  perturb: number;
  /** Validation fraction held out from the training set (stratified). */
  valSize: number;
  /** Resize images to this square size (image folders). */
  imageSize: number | undefined;
  /** 'fine' or 'coarse' labels for CIFAR-100. */
  labels: LabelSet;
  seed: number;
  device: Device;
  /**
   * 'bf16': convolutions and linear layers (student and teachers) take bf16 operands on a GPU's tensor
   * cores and accumulate in float32, as PyTorch's autocast; weights, optimiser state and every other
   * op stay float32. GPU only (sm_80 or newer).
   */
  precision: Precision;
  /** false: cuDNN may pick faster algorithms whose results vary run to run in the last bits (GPU). */
  deterministic: boolean;
  /** Native threads; 0 = all cores. */
  threads: number;
  /** Output folder; undefined = no files written (library use). */
  out: string | undefined;
  /** Where decoded image-folder caches go; undefined = the default cache dir. */
  cacheDir: string | undefined;
  /** Image folders: skip unreadable images and empty class folders with a warning instead of failing. */
  skipBadFiles: boolean;
  /** Per-channel normalisation mean in [0, 1] units; undefined = computed from the training split. */
  mean: number[] | undefined;
  /** Per-channel normalisation std in [0, 1] units; undefined = computed from the training split. */
  std: number[] | undefined;
}

export const DEFAULT_CONFIG: Readonly<TrainConfig> = Object.freeze({
  data: undefined,
  model: 'vgg8',
  width: 0.25,
  convInit: 'kaiming-normal',
  epochs: 8,
  batchSize: 128,
  lr: 0.05,
  momentum: 0.9,
  nesterov: true,
  weightDecay: 5e-4,
  decoupledWeightDecay: false,
  schedule: 'cosine',
  restartCycle: 4,
  milestones: [],
  gamma: 0.1,
  warmupEpochs: 0,
  labelSmoothing: 0,
  labelNoise: 0,
  augment: true,
  cropPadding: 4,
  method: 'dfl',
  teachers: 3,
  teacherSource: 'meaningful',
  diversityFloor: 0.02,
  teacherWeighting: 'uniform',
  // From the study (docs/study/README.md, section 3): on the CPU recipe, gating the teachers and
  // ending resets at 70% beat the paper's DFL (skipWorseTeachers false, resetUntil 1), paired over
  // seeds. FORMER_DEFAULTS keeps old runs' meaning.
  skipWorseTeachers: true,
  scoreMetric: 'accuracy',
  temperature: 4,
  distillWeight: 1,
  emaDecay: 0,
  emaTeacher: 'off',
  swaStart: 1,
  swaLr: undefined,
  swaFinal: true,
  swaTeacher: 'off',
  softTargets: 'none',
  pskdAlpha: 0.8,
  dlbTemperature: 3,
  dlbWeight: 1,
  resetCycle: 4,
  resetUntil: 0.7,
  resetDepth: 1,
  resetMode: 'reinit',
  shrink: 0.4,
  perturb: 0.1,
  valSize: 0.1,
  imageSize: undefined,
  labels: 'fine',
  seed: 0,
  device: 'auto',
  precision: 'fp32',
  deterministic: true,
  threads: 0,
  out: undefined,
  cacheDir: undefined,
  skipBadFiles: false,
  mean: undefined,
  std: undefined,
} satisfies TrainConfig);

/**
 * Options added after the first release whose default later changed, with the value a config saved
 * without them ran with. A saved config (checkpoint, run summary, study record) always holds every
 * option of the build that wrote it, so a missing one predates it: read it at its former default,
 * never at today's (a resumed or reported paper-recipe DFL run must stay one).
 */
export const FORMER_DEFAULTS: Readonly<Partial<TrainConfig>> = Object.freeze({
  skipWorseTeachers: false,
  resetUntil: 1,
});

/** A config as a run saved it, resolved as the build that wrote it meant it (see FORMER_DEFAULTS). */
export function resolveSavedConfig(saved: Partial<Record<string, unknown>>): TrainConfig {
  return resolveConfig(FORMER_DEFAULTS, saved);
}

/** A string as typed, in quotes; JSON-escaped so a value with newlines still gives a one-line message. */
function quote(s: string): string {
  return `'${JSON.stringify(s.length > 40 ? s.slice(0, 40) : s).slice(1, -1)}${s.length > 40 ? '...' : ''}'`;
}

function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'string') return `${quote(v)} (string)`;
  if (typeof v === 'number') return `${v} (number)`;
  // a short list in full, so `--milestones 30 abc` shows the 'abc'
  if (Array.isArray(v))
    return v.length <= 8
      ? `[${v.map((x) => (typeof x === 'string' ? quote(x) : String(x))).join(', ')}]`
      : `an array of length ${v.length}`;
  return `${String(v)} (${typeof v})`;
}

export function expected(what: string, name: string, got: unknown): ConfigError {
  return new ConfigError(`Expected ${what} for ${name} but received ${describe(got)}`);
}

type Check = (v: unknown, name: string) => unknown;
/** The largest batch (train and evaluation). */
export const MAX_BATCH_SIZE = 65536;
const num =
  (lo: number, hi: number, integer = false, loOpen = false): Check =>
  (v, name) => {
    const ok =
      typeof v === 'number' &&
      Number.isFinite(v) &&
      (loOpen ? v > lo : v >= lo) &&
      v <= hi &&
      (!integer || Number.isInteger(v));
    if (!ok) throw expected(`${integer ? 'an integer' : 'a number'} in ${loOpen ? '(' : '['}${lo}, ${hi}]`, name, v);
    return v;
  };
const oneOf =
  (values: readonly string[]): Check =>
  (v, name) => {
    if (typeof v !== 'string' || !values.includes(v)) throw expected(`one of ${values.join(', ')}`, name, v);
    return v;
  };
const bool: Check = (v, name) => {
  if (typeof v !== 'boolean') throw expected('a boolean', name, v);
  return v;
};
const optString: Check = (v, name) => {
  if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw expected('a non-empty string', name, v);
  return v;
};
const str: Check = (v, name) => {
  if (typeof v !== 'string' || v.length === 0) throw expected('a non-empty string', name, v);
  return v;
};

/** Optional per-channel values: finite numbers (positive for std), one per image channel. */
const channelValues =
  (positive: boolean): Check =>
  (v, name) => {
    if (v === undefined) return v;
    const ok =
      Array.isArray(v) &&
      v.length >= 1 &&
      v.length <= 4096 &&
      v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0));
    if (!ok) throw expected(`an array of ${positive ? 'positive ' : ''}finite numbers, one per channel`, name, v);
    return [...v];
  };

const CHECKS: { [K in keyof TrainConfig]: Check } = {
  data: optString,
  model: str,
  width: num(0, 16, false, true),
  convInit: oneOf(CONV_INITS),
  epochs: num(1, 100000, true),
  batchSize: num(2, MAX_BATCH_SIZE, true),
  lr: num(0, 1e4, false, true),
  momentum: num(0, 0.999999),
  nesterov: bool,
  weightDecay: num(0, 1),
  decoupledWeightDecay: bool,
  schedule: oneOf(SCHEDULES),
  restartCycle: num(1, 100000, true),
  milestones: (v, name) => {
    if (!Array.isArray(v) || !v.every((m) => Number.isInteger(m) && m >= 1))
      throw expected('an array of positive epoch numbers', name, v);
    return [...v].sort((a: number, b: number) => a - b);
  },
  gamma: num(0, 1, false, true),
  warmupEpochs: num(0, 100000),
  labelSmoothing: num(0, 0.999),
  labelNoise: num(0, 0.99),
  augment: bool,
  cropPadding: num(0, 64, true),
  method: oneOf(METHODS),
  teachers: num(1, 64, true),
  teacherSource: oneOf(TEACHER_SOURCES),
  diversityFloor: num(0, 1000),
  teacherWeighting: oneOf(TEACHER_WEIGHTINGS),
  skipWorseTeachers: bool,
  scoreMetric: oneOf(SCORE_METRICS),
  temperature: num(0, 1000, false, true),
  distillWeight: num(0, 1000),
  emaDecay: num(0, 0.999999),
  emaTeacher: oneOf(AVERAGE_TEACHERS),
  swaStart: num(0, 1),
  swaLr: (v, name) => (v === undefined ? v : num(0, 1e4, false, true)(v, name)),
  swaFinal: bool,
  swaTeacher: oneOf(AVERAGE_TEACHERS),
  softTargets: oneOf(SOFT_TARGETS),
  pskdAlpha: num(0, 1),
  dlbTemperature: num(0, 1000, false, true),
  dlbWeight: num(0, 1000),
  resetCycle: num(1, 100000, true),
  resetUntil: num(0, 1),
  resetDepth: num(1, 10000, true),
  resetMode: oneOf(RESET_MODES),
  shrink: num(0, 1),
  perturb: num(0, 10),
  valSize: num(0, 0.9, false, true),
  imageSize: (v, name) => (v === undefined ? v : num(1, 4096, true)(v, name)),
  labels: oneOf(LABEL_SETS),
  seed: num(0, 2 ** 32 - 1, true),
  device: oneOf(DEVICES),
  precision: oneOf(PRECISIONS),
  deterministic: bool,
  threads: num(0, 1024, true),
  out: optString,
  cacheDir: optString,
  skipBadFiles: bool,
  mean: channelValues(false),
  std: channelValues(true),
};

export const CONFIG_KEYS = Object.keys(CHECKS) as (keyof TrainConfig)[];

/** An integer in [lo, hi] for `name`, or the ConfigError every option check gives. */
export function checkInteger(v: unknown, name: string, lo: number, hi: number): number {
  return num(lo, hi, true)(v, name) as number;
}

/**
 * One option's value checked by its rule, an error naming it `name` (e.g. a command's --threads):
 * a flag that is also a train option is checked by the same rule in every command.
 */
export function checkOption<K extends keyof TrainConfig>(key: K, v: unknown, name: string = key): TrainConfig[K] {
  return CHECKS[key](v, name) as TrainConfig[K];
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; ++i) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; ++j) {
      const cur = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return d[b.length];
}

/** The option a typo most likely meant (case, dashes and underscores ignored; edit distance <= 2). */
function nearestKey(k: string): string | undefined {
  const norm = (x: string) => x.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined,
    bestD = 3;
  for (const c of CONFIG_KEYS) {
    const dist = editDistance(norm(k), norm(c));
    if (dist < bestD) [best, bestD] = [c, dist];
  }
  return best;
}

/**
 * Merges partial configs left to right over the defaults (later wins) and validates every field and
 * the options that only work together (checkCombination). Unknown keys are an error (a typo must
 * not be silently ignored).
 */
export function resolveConfig(...layers: (Partial<Record<string, unknown>> | undefined)[]): TrainConfig {
  return checkCombination(resolveFields(...layers));
}

/** resolveConfig without the cross-option rules: for a layer checked on its own (a study arm without the grid's shared options). */
export function resolveFields(...layers: (Partial<Record<string, unknown>> | undefined)[]): TrainConfig {
  const merged: Record<string, unknown> = { ...DEFAULT_CONFIG };
  for (const layer of layers) {
    if (!layer) continue;
    for (const [k, v] of Object.entries(layer)) {
      if (!Object.hasOwn(CHECKS, k)) {
        const near = nearestKey(k);
        throw new ConfigError(
          `Unknown option '${k}'${near ? ` (did you mean '${near}'?)` : ''}; valid options: ${CONFIG_KEYS.join(', ')}`,
        );
      }
      if (v !== undefined) merged[k] = v;
    }
  }
  const out: Record<string, unknown> = {};
  for (const k of CONFIG_KEYS) out[k] = CHECKS[k](merged[k], k);
  return out as unknown as TrainConfig;
}

/**
 * Options that need others: an option that would silently do nothing is an error naming what to
 * set (the teaching averages need their average and a teaching method; cycle-end snapshots need the
 * restarts; swaLr needs SWA).
 */
export function checkCombination(c: TrainConfig): TrainConfig {
  const teaches = methodUses(c.method).teachers;
  for (const [role, name, on, need] of [
    [c.emaTeacher, 'emaTeacher', c.emaDecay > 0, 'emaDecay > 0 (e.g. 0.999)'],
    [c.swaTeacher, 'swaTeacher', c.swaStart < 1, 'swaStart < 1 (e.g. 0.75)'],
  ] as const) {
    if (role === 'off') continue;
    if (!on) throw new ConfigError(`Expected ${need} for ${name} '${role}': the average it teaches with is off`);
    if (!teaches)
      throw new ConfigError(
        `Expected method sd or dfl for ${name} '${role}' but received '${c.method}' (teachers teach only in those)`,
      );
  }
  if (c.teacherSource === 'cycle-end' && c.schedule !== 'cosine-restarts')
    throw new ConfigError(
      `Expected schedule 'cosine-restarts' for teacherSource 'cycle-end' but received '${c.schedule}' (its snapshots are taken at the restarts)`,
    );
  if (c.swaLr !== undefined && c.swaStart >= 1)
    throw new ConfigError(`Expected swaStart < 1 for swaLr ${c.swaLr} (SWA is off at swaStart 1)`);
  return c;
}

/** What the method switches on. */
export function methodUses(method: Method): { teachers: boolean; reset: boolean } {
  return { teachers: method === 'sd' || method === 'dfl', reset: method === 'reset' || method === 'dfl' };
}
