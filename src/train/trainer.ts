// The DFL training loop. TypeScript decides (epochs, reset, teacher bank, evaluation, files);
// each batch step is one native call off the event loop (student + teachers forward, fused loss,
// backward, SGD).
//
// Reproducibility: every random choice is a pure function of (seed, epoch, batch): the shuffle
// order, the augmentation draws, dropout masks, reset weights. A resumed run therefore needs no
// RNG state beyond its position, and (for a fixed thread count) ends with exactly the weights of
// an uninterrupted run.
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';

import {
  loadBinding,
  type DeviceName,
  type LogitSource,
  type MathHolder,
  type MathMode,
  type NativeDeviceImages,
  type NativeModel,
  type NativeModelInfo,
  type NativeTeacher,
  type TrainStepOptions,
} from '../binding.js';
import { methodUses, resolveConfig, type TrainConfig } from '../config.js';
import { epochOrder, gatherBatch } from '../data/batches.js';
import { channelStats, checkDataset, subset, type Dataset, type DataSplits } from '../data/dataset.js';
import { dataChanges, dataFingerprint, type DataFingerprint } from '../data/fingerprint.js';
import { loadData } from '../data/load.js';
import { stratifiedSplit } from '../data/split.js';
import { symmetricLabelNoise } from '../data/label-noise.js';
import { chooseDevice } from '../device.js';
import { ConfigError, DivergenceError, writeFailure, WriteError, writeRemedy } from '../errors.js';
import {
  auxFloats,
  checkpointDir,
  loadModelTensors,
  readAux,
  readState,
  restoreModels,
  saveCheckpoint,
  type AverageState,
  type CheckpointState,
  type EpochPosition,
} from '../io/checkpoint.js';
import type { SafeTensor } from '../io/safetensors.js';
import { writeCurves } from '../io/report.js';
import { resolveModelSpec } from '../models/resolve.js';
import type { ModelSpec } from '../models/spec.js';
import type { BankEntry, BatchProgress, EpochRecord, TestMetrics, TrainSummary } from '../records.js';
import { writeFileAtomic } from '../util/atomic.js';
import { deriveSeed } from '../util/seed.js';
import { averageTeacher, counterOffsets, Ema, recomputeBatchNorm, shadowSpec, Swa } from './averages.js';
import { argmaxRows, datasetLogits, metricsFromLogits, softmaxRows } from './evaluate.js';
import { headLayers, isCycleEnd, isResetEpoch, lrAt, resetCycleOf, swaFirstEpoch } from './schedule.js';
import { PredictionStore, pskdWeight } from './targets.js';
import { offerToBank, teacherWeights, teaches, teachingEntries, type Diversity } from './teachers.js';

export interface TrainOptions extends Partial<TrainConfig> {
  /** Stops after the current batch; a checkpoint is saved when `out` is set. */
  signal?: AbortSignal;
  /**
   * In-memory data instead of `data` (see fromArrays in the data module): a Dataset (a stratified
   * 20% test split is held out, seeded) or { train, test } (test may be null: no test metrics).
   */
  dataset?: DataSplits | Dataset;
  /** A run folder (or its checkpoint/) to continue. */
  resume?: string;
  /**
   * Resume even though the data differ from those the checkpoint was trained on (the differences
   * are logged). Without it such a resume is refused, naming what changed: the validation split
   * and the batches would silently change.
   */
  allowDataChange?: boolean;
  /**
   * How a user continues this run after a failed write, if not with `dfl-native train --resume`
   * (a study reruns its own command); the run folder is passed in.
   */
  continueWith?: (runFolder: string) => string;
}

// Seed streams: one label per kind of randomness, so they never collide.
const STREAM = {
  init: 1,
  reset: 2,
  augment: 3,
  dropout: 4,
  randomTeacher: 5,
  split: 6,
  labelNoise: 7,
  swaBatchNorm: 8,
} as const;

export class TrainingRun extends EventEmitter implements AsyncIterable<EpochRecord> {
  /** Resolves with the summary when training ends; rejects on failure. */
  readonly summary: Promise<TrainSummary>;
  private readonly records: EpochRecord[] = [];
  private finished = false;
  private failure: unknown = null;
  private wake: (() => void) | null = null;

  constructor(options: TrainOptions) {
    super();
    this.summary = runTraining(options, this).then(
      (s) => {
        this.finished = true;
        this.wake?.();
        return s;
      },
      (err) => {
        this.finished = true;
        this.failure = err;
        this.wake?.();
        throw err;
      },
    );
    // The promise is also consumed through iteration; avoid an unhandled rejection warning there.
    this.summary.catch(() => undefined);
  }

  /** @internal */
  pushRecord(r: EpochRecord): void {
    this.records.push(r);
    this.emit('epoch', r);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<EpochRecord> {
    let i = 0;
    for (;;) {
      if (i < this.records.length) {
        yield this.records[i++];
        continue;
      }
      if (this.finished) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }
}

/** Starts training; iterate the result for epoch records, await `.summary` for the end. */
export function train(options: TrainOptions = {}): TrainingRun {
  return new TrainingRun(options);
}

/** How the run's models compute (--precision, --deterministic). */
export function mathOf(config: Pick<TrainConfig, 'precision' | 'deterministic'>): MathMode {
  return { precision: config.precision, deterministic: config.deterministic };
}

/** Sets a model's or teacher's math mode; a device that cannot (bf16 before sm_80) is a ConfigError. */
function setMath(target: MathHolder, config: TrainConfig): void {
  try {
    target.setMath(mathOf(config));
  } catch (e) {
    throw new ConfigError(`${(e as Error).message.replace(/^dfl-native: /, '')}`);
  }
}

/** Normalisation: the given per-channel mean/std, else statistics of the training split. */
function normalisation(config: TrainConfig, trainSet: Dataset): { mean: number[]; std: number[] } {
  if ((config.mean === undefined) !== (config.std === undefined))
    throw new ConfigError('Expected both mean and std (or neither) for the normalisation');
  if (config.mean === undefined || config.std === undefined) return channelStats(trainSet);
  for (const [name, v] of [
    ['mean', config.mean],
    ['std', config.std],
  ] as const)
    if (v.length !== trainSet.channels)
      throw new ConfigError(
        `Expected ${trainSet.channels} values (one per image channel) for ${name} but received ${v.length}`,
      );
  return { mean: config.mean, std: config.std };
}

/** In-memory data as train/test splits, validated with the usual error style. */
function inMemorySplits(d: DataSplits | Dataset, seed: number): DataSplits {
  const isDataset = (x: unknown): x is Dataset =>
    typeof x === 'object' &&
    x !== null &&
    (x as Dataset).images instanceof Uint8Array &&
    (x as Dataset).labels instanceof Int32Array;
  if (isDataset(d)) {
    checkDataset(d, 'dataset');
    const parts = stratifiedSplit(d.labels, 0.2, deriveSeed(seed, STREAM.split, 1));
    return { train: subset(d, parts.train), test: subset(d, parts.val) };
  }
  if (typeof d !== 'object' || d === null || !isDataset((d as DataSplits).train))
    throw new ConfigError(
      `Expected a Dataset (see fromArrays) or { train, test } for dataset but received ${d === null ? 'null' : typeof d}`,
    );
  checkDataset(d.train, 'dataset.train');
  if (d.test !== null && d.test !== undefined) {
    if (!isDataset(d.test)) throw new ConfigError('Expected a Dataset or null for dataset.test');
    checkDataset(d.test, 'dataset.test');
    if (d.test.classNames.join('\n') !== d.train.classNames.join('\n'))
      throw new ConfigError('Expected dataset.test to have the class names of dataset.train, in the same order');
  }
  return { train: d.train, test: d.test ?? null };
}

interface Disposable {
  dispose(): void;
  isDisposed(): boolean;
}

/** Something the run frees when it ends (the student, teachers); `release` frees one early (a replaced average's teacher). */
interface Own {
  <T extends Disposable>(m: T): T;
  release(m: Disposable): void;
}

/**
 * Before a GPU run: the student, its batches, the teachers and the resident images must fit in free
 * device memory; otherwise the run is refused now, with the sizes, instead of failing part-way.
 */
function checkDeviceMemory(run: Run): void {
  const { config, data, student } = run;
  const k =
    (run.uses.bank ? config.teachers : 0) +
    (run.uses.teachers ? Number(config.emaTeacher !== 'off') + Number(config.swaTeacher !== 'off') : 0);
  const p = student.memoryPlan(Math.min(stepBatch(config), data.train.n), k);
  const images = [data.train, data.val, data.test].reduce((s, d) => s + (d ? d.images.length : 0), 0);
  const mb = (bytes: number) => `${Math.ceil(bytes / 2 ** 20)} MB`;
  const need = p.total + images;
  if (need > p.available)
    throw new ConfigError(
      `The run needs ${mb(need)} of ${run.device} memory but ${mb(p.available)} are available (${p.availableSource}): ` +
        `model ${mb(p.weights)}, activations ${mb(p.activations + p.workspace)} at batch ${config.batchSize}, ${k} teachers ${mb(p.teachers)}, images ${mb(images)}; ` +
        'use a smaller --batch-size, --width, model or fewer --teachers',
    );
}

/** Images per training step: DLB carries the previous step's images beside the batch's own. */
function stepBatch(config: TrainConfig): number {
  return config.softTargets === 'dlb' ? 2 * config.batchSize : config.batchSize;
}

/** A teacher: the student's current weights, copied and BN-folded on the device. */
function snapshotOf(student: NativeModel, own: Own): NativeTeacher {
  return own(student.snapshot());
}

async function runTraining(options: TrainOptions, run: TrainingRun): Promise<TrainSummary> {
  // Every native model made here is freed when training ends, on success or failure.
  const owned = new Set<Disposable>();
  const own = (<T extends Disposable>(m: T): T => (owned.add(m), m)) as Own;
  own.release = (m) => {
    if (!m.isDisposed()) m.dispose();
    owned.delete(m);
  };
  // Let the caller attach listeners before the first 'log' or 'start' event.
  await Promise.resolve();
  try {
    return await trainLoop(options, run, own);
  } finally {
    for (const m of owned) if (!m.isDisposed()) m.dispose();
  }
}

// --- the run ------------------------------------------------------------------------------------
//
// trainLoop is DFL itself; setup() gathers what a run works with, and each step of an epoch is a
// function below it.

/** The teacher bank: the only place teacher models live, their entries (id, epoch, score) and cached validation logits. */
interface Bank {
  models: Map<number, NativeTeacher>;
  entries: BankEntry[];
  valLogits: Map<number, Float32Array>;
}

/** The data of a run: the training split, the validation split held out of it, the test split. */
interface RunData {
  train: Dataset;
  val: Dataset;
  test: Dataset | null;
  classNames: string[];
  /** Per-channel normalisation (of the training split, or given, or the checkpoint's). */
  mean: number[];
  std: number[];
  /** Of the data as loaded (train and test), recorded in every checkpoint. */
  fingerprint: DataFingerprint;
}

/**
 * The state of the trajectory options (all null when off): the weight averages, their teachers and
 * last validation scores, PS-KD's predictions and DLB's carried logits.
 */
interface Trajectory {
  /** Makes the averages' teachers and recomputes SWA's BN statistics (the graph with BN momentum 1). */
  shadow: NativeModel | null;
  /** Buffer offsets of BN counters (copied, not averaged). */
  counters: number[];
  ema: Ema | null;
  /** The EMA as a teacher, as of the last step while it teaches, else of the last epoch's end. */
  emaTeacher: NativeTeacher | null;
  emaScore: number | null;
  swa: Swa | null;
  /** BN buffers recomputed for the current SWA average. */
  swaBuffers: Float32Array | null;
  swaTeacher: NativeTeacher | null;
  swaScore: number | null;
  pskd: PredictionStore | null;
  /** DLB: the last step's logits of its own images (the next step carries them); null at an epoch's start. */
  dlbCarry: Float32Array | null;
}

/** What a run works with once set up; the bank, the records, the clock and the position change as it goes. */
interface Run {
  config: TrainConfig;
  /** bank: snapshots are kept and teach (teachers on and no average teaches alone). */
  uses: { teachers: boolean; reset: boolean; bank: boolean };
  traj: Trajectory;
  device: DeviceName;
  spec: ModelSpec;
  student: NativeModel;
  info: NativeModelInfo;
  data: RunData;
  bank: Bank;
  /** One record per finished epoch (a resumed run starts with the saved ones). */
  metrics: EpochRecord[];
  /** Seconds of training in finished epochs. */
  trainSeconds: number;
  /** First epoch to run, and where inside it a resumed run continues (null: from its start). */
  startEpoch: number;
  partial: EpochPosition | null;
  ckptDir: string | null;
  /** The newest complete checkpoint (this run's last save, or the one it resumed from); null: none yet. */
  lastCheckpoint: { dir: string; what: string } | null;
  signal: AbortSignal | undefined;
  events: TrainingRun;
  own: Own;
  log: (m: string) => void;
  /** On the GPU: the splits' images resident on the device (batches are made there). */
  resident: { train: NativeDeviceImages; val: NativeDeviceImages; test: NativeDeviceImages | null } | null;
  /** TrainOptions.continueWith (null: the advice names `train --resume`). */
  continueWith: ((runFolder: string) => string) | null;
}

/** An epoch's running sums; `stoppedAfter` is the number of batches done when it was interrupted, else null. */
interface EpochTotals {
  lossSum: number;
  distillSum: number;
  targetSum: number;
  correct: number;
  count: number;
  seconds: number;
  /** The learning rate of the epoch's last step. */
  lr: number;
  batches: number;
  stoppedAfter: number | null;
}

async function trainLoop(options: TrainOptions, events: TrainingRun, own: Own): Promise<TrainSummary> {
  const run = await setup(options, events, own);
  try {
    return await trainEpochs(run);
  } catch (err) {
    throw err instanceof WriteError ? withCheckpointAdvice(run, err) : err;
  }
}

async function trainEpochs(run: Run): Promise<TrainSummary> {
  for (let epoch = run.startEpoch; epoch <= run.config.epochs; ++epoch) {
    const resumed = run.partial?.epoch === epoch ? run.partial : null; // an interrupted epoch continues where it stopped
    run.partial = null;
    // Learn new: reset the head before every resetCycle-th epoch (a resumed epoch already was).
    const reset = resumed
      ? resumed.reset
      : isResetEpoch(epoch, resetCycleOf(run.config), run.uses.reset, run.config.resetUntil, run.config.epochs);
    if (reset && !resumed) resetHead(run, epoch);
    // Preserve: train on the labels and on the bank's predictions.
    const totals = await trainEpoch(run, epoch, resumed, reset);
    if (totals.stoppedAfter !== null) {
      saveInterrupted(run, epoch, reset, totals);
      return finish(run, true);
    }
    // Score the snapshot on the validation split; a meaningful one enters the bank.
    endEpoch(run, await validateAndUpdateBank(run, epoch, reset, totals));
    if (run.signal?.aborted && epoch < run.config.epochs) {
      run.log(`interrupted after epoch ${epoch}${run.ckptDir ? '; checkpoint saved' : ''}`);
      return finish(run, true);
    }
  }
  return finish(run, false);
}

// --- setup ----------------------------------------------------------------------------------------

async function setup(options: TrainOptions, events: TrainingRun, own: Own): Promise<Run> {
  const { signal, dataset, resume, allowDataChange, continueWith, ...rest } = options;
  const log = (m: string) => events.emit('log', m);
  const binding = loadBinding();
  const { config, saved, resumeDir } = runConfig(rest, resume);
  binding.setThreads(config.threads);
  const { device, note } = chooseDevice(config.device, config.precision, binding.runtimeInfo());
  if (note) log(note);
  const method = methodUses(config.method);
  const uses = { ...method, bank: method.teachers && config.emaTeacher !== 'alone' && config.swaTeacher !== 'alone' };

  const data = await runData(config, dataset, saved, log);
  if (saved && resumeDir) checkSameData(saved, data.fingerprint, resumeDir, allowDataChange ?? false, log);
  const spec = saved
    ? saved.spec
    : resolveModelSpec(config.model, {
        numClasses: data.classNames.length,
        inChannels: data.train.channels,
        height: data.train.height,
        width: data.train.width,
        width_multiplier: config.width,
      });
  if (spec.in_channels !== data.train.channels || spec.height !== data.train.height || spec.width !== data.train.width)
    throw new ConfigError(
      `The model expects ${spec.in_channels}x${spec.height}x${spec.width} images but the data has ${data.train.channels}x${data.train.height}x${data.train.width}; use --image-size or another model spec`,
    );
  const student = own(new binding.Model(spec, deriveSeed(config.seed, STREAM.init), device, config.convInit));
  setMath(student, config); // teachers snapshot from it compute the same way
  const info = student.info();
  if (info.numClasses !== data.classNames.length)
    throw new ConfigError(
      `The model has ${info.numClasses} outputs but the data has ${data.classNames.length} classes` +
        (saved ? '' : `; set the last linear node's out_features to ${data.classNames.length} in ${config.model}`),
    );

  const run: Run = {
    config,
    uses,
    traj: newTrajectory(config, spec, student, device, data.train.n, own),
    device,
    spec,
    student,
    info,
    data,
    bank: { models: new Map(), entries: [], valLogits: new Map() },
    metrics: [],
    trainSeconds: 0,
    startEpoch: 1,
    partial: null,
    ckptDir: config.out ? path.join(config.out, 'checkpoint') : null,
    lastCheckpoint:
      saved && resumeDir ? { dir: resumeDir, what: checkpointPosition(saved.epoch, saved.partial ?? null) } : null,
    signal,
    events,
    own,
    log,
    resident: null,
    continueWith: continueWith ?? null,
  };
  if (device === 'cuda') {
    checkDeviceMemory(run);
    // Uploaded once: per step only indices, augmentation draws and labels go to the GPU.
    const up = (ds: Dataset) =>
      own(new binding.DeviceImages(ds.images, ds.n, ds.channels, ds.height, ds.width, device));
    run.resident = { train: up(data.train), val: up(data.val), test: data.test ? up(data.test) : null };
  }
  if (saved && resumeDir) {
    for (const [id, t] of restoreModels(resumeDir, saved, student, device)) {
      run.bank.models.set(id, own(t));
      setMath(t, config);
    }
    run.bank.entries = saved.bank;
    restoreTrajectory(run, resumeDir, saved);
    run.metrics.push(...saved.metrics);
    run.startEpoch = saved.epoch + 1;
    run.partial = saved.partial ?? null;
    // state.seconds includes the interrupted epoch's part, which that epoch's record will count again.
    run.trainSeconds = saved.seconds - (run.partial?.seconds ?? 0);
    log(
      `resuming from ${resumeDir} after epoch ${saved.epoch}${run.partial ? ` (+${run.partial.batch} batches of epoch ${run.partial.epoch})` : ''}`,
    );
  } else if (uses.bank && config.teacherSource === 'random') {
    // Random teachers: K fixed random initialisations, scored once on the validation split.
    for (let k = 1; k <= config.teachers; ++k) {
      const init = own(
        new binding.Model(spec, deriveSeed(config.seed, STREAM.randomTeacher, k), device, config.convInit),
      );
      setMath(init, config);
      run.bank.models.set(-k, snapshotOf(init, own));
      init.dispose();
    }
    for (const id of run.bank.models.keys())
      run.bank.entries.push({ id, epoch: 0, score: valScore(run, await teacherValLogits(run, id)).score });
  }

  events.emit('start', {
    config,
    params: info.numParams,
    macsPerImage: info.macsPerImage,
    trainSize: data.train.n,
    valSize: data.val.n,
    testSize: data.test?.n ?? 0,
    classNames: data.classNames,
    device,
  });
  if (run.ckptDir && !saved && fs.existsSync(path.join(run.ckptDir, 'state.json')))
    throw new ConfigError(
      `${config.out} already holds a training run; continue it with --resume ${config.out}, or choose another --out`,
    );
  if (config.out) fs.mkdirSync(config.out, { recursive: true });
  return run;
}

/** The run's config; a resumed run continues with its saved config (only threads, epochs and out may change). */
function runConfig(
  rest: Partial<TrainConfig>,
  resume: string | undefined,
): { config: TrainConfig; saved: CheckpointState | null; resumeDir: string | null } {
  if (!resume) return { config: resolveConfig(rest as Record<string, unknown>), saved: null, resumeDir: null };
  const resumeDir = checkpointDir(resume);
  const saved = readState(resumeDir);
  const overrides: Partial<TrainConfig> = {};
  for (const k of ['threads', 'epochs', 'out'] as const)
    if (rest[k] !== undefined) (overrides as Record<string, unknown>)[k] = rest[k];
  // A resumed run writes where it was resumed from (a copied run folder continues in the copy).
  if (overrides.out === undefined) overrides.out = path.dirname(resumeDir);
  return { config: resolveConfig(saved.config as unknown as Record<string, unknown>, overrides), saved, resumeDir };
}

/** Loads the data and holds out the validation split (seeded, stratified). */
async function runData(
  config: TrainConfig,
  dataset: DataSplits | Dataset | undefined,
  saved: CheckpointState | null,
  log: (m: string) => void,
): Promise<RunData> {
  const splits =
    dataset !== undefined
      ? inMemorySplits(dataset, config.seed)
      : await loadData(config.data, {
          imageSize: config.imageSize,
          labels: config.labels,
          cacheDir: config.cacheDir,
          seed: config.seed,
          skipBadFiles: config.skipBadFiles,
          onWarning: log,
        });
  const fingerprint = dataFingerprint(splits);
  const full = splits.train;
  const split = stratifiedSplit(full.labels, config.valSize, deriveSeed(config.seed, STREAM.split));
  let train = subset(full, split.train);
  const val = subset(full, split.val);
  if (config.labelNoise > 0) {
    // After the validation split is held out: validation and test keep their true labels.
    const noisy = symmetricLabelNoise(
      train.labels,
      full.classNames.length,
      config.labelNoise,
      deriveSeed(config.seed, STREAM.labelNoise),
    );
    train = { ...train, labels: noisy.labels };
    log(
      `label noise: ${noisy.flipped.length} of ${train.n} training labels replaced by another class (rate ${config.labelNoise})`,
    );
  }
  if (train.n < 2)
    throw new ConfigError(`Expected at least 2 training images after the validation split but received ${train.n}`);
  if (val.n < 1)
    throw new ConfigError(
      `Expected at least 1 validation image for val-size ${config.valSize} but received 0; raise --val-size or use more data`,
    );
  const stats = saved ? { mean: saved.mean, std: saved.std } : normalisation(config, train);
  return { train, val, test: splits.test, classNames: full.classNames, ...stats, fingerprint };
}

/** A resume continues on the data it was trained on: a change is refused (naming it) unless allowed. */
function checkSameData(
  saved: CheckpointState,
  now: DataFingerprint,
  resumeDir: string,
  allow: boolean,
  log: (m: string) => void,
): void {
  if (!saved.data) {
    log(
      `${resumeDir} records no fingerprint of its data (an older checkpoint): cannot check that the data are unchanged`,
    );
    return;
  }
  const changes = dataChanges(saved.data, now);
  if (changes.length === 0) return;
  if (allow) {
    log(`the data differ from the checkpoint's (${changes.join('; ')}); resuming anyway (--allow-data-change)`);
    return;
  }
  throw new ConfigError(
    `The data differ from those the run in ${resumeDir} was trained on: ${changes.join('; ')}. ` +
      'Resuming would silently change the validation split and the batches. Restore the data, or pass --allow-data-change (allowDataChange: true) to resume with them anyway',
  );
}

// --- one epoch ------------------------------------------------------------------------------------

/** Re-initialises the head (the last resetDepth parametric layers) and clears its momentum. */
function resetHead(run: Run, epoch: number): void {
  const { config } = run;
  const layers = headLayers(run.info.numLayers, config.resetDepth);
  run.student.reinitLayers(
    layers,
    deriveSeed(config.seed, STREAM.reset, epoch),
    config.resetMode,
    config.shrink,
    config.perturb,
  );
  run.log(`epoch ${epoch}: reset the last ${layers.length} layer(s) (${config.resetMode})`);
}

/**
 * One pass over the training split in the epoch's seeded order: per batch one native step (student
 * and teachers forward, CE + distillation from the teachers + the soft targets, backward, SGD),
 * then the EMA's update. Stops early, after a batch, when the signal is aborted.
 */
async function trainEpoch(
  run: Run,
  epoch: number,
  resumed: EpochPosition | null,
  afterReset: boolean,
): Promise<EpochTotals> {
  const { config, data, student, traj } = run;
  const binding = loadBinding();
  const t0 = performance.now();
  const ds = data.train;
  const per = ds.channels * ds.height * ds.width;
  const nc = run.info.numClasses;
  const bs = Math.min(config.batchSize, ds.n);
  const nFull = Math.floor(ds.n / bs);
  const rem = ds.n - nFull * bs;
  const batches = nFull + (rem >= 2 ? 1 : 0); // a last batch of 1 cannot train batch norm: dropped
  const room = (config.softTargets === 'dlb' ? 2 : 1) * bs;
  const x = new Float32Array(room * per);
  const images = new Uint8Array(room * per);
  const labels = new Int32Array(room);
  const mean = Float32Array.from(data.mean),
    std = Float32Array.from(data.std);
  const order = epochOrder(ds.n, config.seed, epoch);
  const teaching = epochTeachers(run, afterReset);
  const pskdAlpha = traj.pskd && epoch > 1 ? pskdWeight(config.pskdAlpha, epoch, config.epochs) : 0;
  const sched = {
    schedule: config.schedule,
    lr: config.lr,
    epochs: config.epochs,
    warmupEpochs: config.warmupEpochs,
    milestones: config.milestones,
    gamma: config.gamma,
    restartCycle: config.restartCycle,
    swaStart: config.swaStart,
    swaLr: config.swaLr,
  };
  const totals: EpochTotals = {
    lossSum: resumed?.loss_sum ?? 0,
    distillSum: resumed?.distill_sum ?? 0,
    targetSum: resumed?.target_sum ?? 0,
    correct: resumed?.correct ?? 0,
    count: resumed?.count ?? 0,
    seconds: resumed?.seconds ?? 0,
    lr: 0,
    batches,
    stoppedAfter: null,
  };
  const secondsAtStart = totals.seconds;
  if (!resumed) traj.dlbCarry = null; // DLB carries images within an epoch only

  for (let i = resumed?.batch ?? 0; i < batches; ++i) {
    const b = i < nFull ? bs : rem;
    const fresh = order.subarray(i * bs, i * bs + b);
    // DLB: the previous step's images (always a full batch) first, then the batch's own.
    const carried = traj.dlbCarry ? order.subarray((i - 1) * bs, i * bs) : null;
    const indices = carried ? Int32Array.from([...carried, ...fresh]) : fresh;
    const sb = indices.length;
    const augmentSeed = deriveSeed(config.seed, STREAM.augment, epoch, i);
    let batch: Pick<TrainStepOptions, 'x' | 'batch' | 'images'>;
    if (run.resident) {
      // The same batch, made on the device: the draws come from the same seed.
      for (let k = 0; k < sb; ++k) labels[k] = ds.labels[indices[k]];
      batch = {
        images: {
          images: run.resident.train,
          indices,
          mean,
          std,
          augment: config.augment ? { pad: config.cropPadding, flip: true, seed: augmentSeed } : undefined,
        },
      };
    } else {
      gatherBatch(ds, indices, images, labels);
      const xb = x.subarray(0, sb * per);
      if (config.augment)
        binding.augmentBatch(
          xb,
          images,
          sb,
          ds.channels,
          ds.height,
          ds.width,
          config.cropPadding,
          true,
          mean,
          std,
          augmentSeed,
        );
      else binding.normalizeBatch(xb, images, sb, ds.channels, ds.height, ds.width, mean, std);
      batch = { x: xb, batch: sb };
    }
    const targets: TrainStepOptions['targets'] = carried
      ? { logits: traj.dlbCarry!, rows: carried.length, temperature: config.dlbTemperature, weight: config.dlbWeight }
      : pskdAlpha > 0
        ? { logits: traj.pskd!.gather(fresh, labels.subarray(0, b)), rows: b, temperature: 1, weight: pskdAlpha }
        : undefined;
    const teachers = teaching.models();
    totals.lr = lrAt(sched, epoch - 1 + i / batches);
    const step = await student.trainStep({
      ...batch,
      labels: labels.subarray(0, sb),
      teachers,
      teacherWeights: teaching.weights
        ? Float32Array.from({ length: teaching.weights.length * sb }, (_, j) => teaching.weights![Math.floor(j / sb)])
        : undefined,
      confidenceWeights: run.uses.teachers && config.teacherWeighting === 'confidence' && teachers.length > 0,
      lr: totals.lr,
      momentum: config.momentum,
      weightDecay: config.weightDecay,
      nesterov: config.nesterov,
      decoupled: config.decoupledWeightDecay,
      labelSmoothing: config.labelSmoothing,
      distillWeight: config.distillWeight,
      temperature: config.temperature,
      ...(pskdAlpha > 0 ? { ceWeight: 1 - pskdAlpha } : {}),
      ...(targets ? { targets } : {}),
      ...(config.softTargets !== 'none' ? { returnLogits: true } : {}),
      dropoutSeed: deriveSeed(config.seed, STREAM.dropout, epoch, i),
    });
    if (!step.finite)
      throw divergence(
        run,
        `at epoch ${epoch}, batch ${i + 1} the loss or a gradient is NaN/Inf (lr ${totals.lr.toPrecision(3)}); the weights were not updated`,
      );
    afterStep(run, step, fresh, carried?.length ?? 0, teaching.ema);
    totals.lossSum += step.loss * sb;
    totals.distillSum += step.distillLoss * sb;
    totals.targetSum += step.targetLoss * sb;
    totals.correct += step.correct;
    totals.count += sb;
    totals.seconds = secondsAtStart + (performance.now() - t0) / 1000;
    run.events.emit('batch', {
      epoch,
      batch: i + 1,
      batches,
      loss: totals.lossSum / totals.count,
      images_per_sec: totals.count / Math.max(totals.seconds, 1e-9),
    } satisfies BatchProgress);
    if (run.signal?.aborted && i + 1 < batches) {
      totals.stoppedAfter = i + 1;
      break;
    }
  }
  totals.seconds = secondsAtStart + (performance.now() - t0) / 1000;
  return totals;
}

/**
 * The teachers of an epoch: the bank's that pass the gate, then the SWA and EMA averages when they
 * teach and pass it; their weights (score weighting) are fixed for the epoch, while the EMA's
 * teacher is remade after every step, so `models()` is asked per step.
 */
function epochTeachers(
  run: Run,
  afterReset: boolean,
): { models: () => NativeTeacher[]; weights: number[] | null; ema: boolean } {
  const { config, traj, uses } = run;
  const last = run.metrics.at(-1);
  const studentScore = last ? (config.scoreMetric === 'accuracy' ? last.val_acc : -last.val_loss) : null;
  const gate = (score: number | null) =>
    score !== null && teaches(score, config.skipWorseTeachers, studentScore, afterReset);
  const bank = uses.bank ? teachingEntries(run.bank.entries, config.skipWorseTeachers, studentScore, afterReset) : [];
  const swa = uses.teachers && config.swaTeacher !== 'off' && traj.swaTeacher !== null && gate(traj.swaScore);
  const ema = uses.teachers && config.emaTeacher !== 'off' && traj.emaTeacher !== null && gate(traj.emaScore);
  const fixed = [...bank.map((e) => run.bank.models.get(e.id)!), ...(swa ? [traj.swaTeacher!] : [])];
  const scored = [...bank, ...(swa ? [{ score: traj.swaScore! }] : []), ...(ema ? [{ score: traj.emaScore! }] : [])];
  return {
    models: () => (ema ? [...fixed, traj.emaTeacher!] : fixed),
    weights: scored.length ? teacherWeights(scored, config.teacherWeighting) : null,
    ema,
  };
}

/** After a finite step: PS-KD records the predictions, DLB keeps this step's logits of the batch's own images, the EMA moves. */
function afterStep(
  run: Run,
  step: { logits?: Float32Array },
  fresh: Int32Array,
  carriedRows: number,
  emaTeaches: boolean,
): void {
  const { traj, info } = run;
  if (traj.pskd) traj.pskd.record(fresh, step.logits!);
  if (run.config.softTargets === 'dlb') traj.dlbCarry = step.logits!.slice(carriedRows * info.numClasses);
  if (traj.ema) {
    traj.ema.update(run.student.getParams(), run.student.getBuffers(), traj.counters);
    if (emaTeaches) refreshEmaTeacher(run);
  }
}

/** (Re)makes the EMA's teacher from the current average. */
function refreshEmaTeacher(run: Run): void {
  const t = run.traj;
  if (t.emaTeacher) run.own.release(t.emaTeacher);
  t.emaTeacher = run.own(averageTeacher(t.shadow!, t.ema!.params, t.ema!.buffers));
}

/**
 * The student scored on the validation split, the ensemble of the bank that taught this epoch, and
 * the bank's update with this epoch's snapshot; returns the epoch's record.
 */
async function validateAndUpdateBank(run: Run, epoch: number, reset: boolean, t: EpochTotals): Promise<EpochRecord> {
  const { config, data, bank } = run;
  const sLogits = await datasetLogits(run.student, data.val, data.mean, data.std, undefined, run.resident?.val);
  const sv = valScore(run, sLogits);
  // Finite training steps can still leave a model whose predictions overflow: that is divergence
  // too, and such a model must neither enter the bank nor be saved.
  if (!Number.isFinite(sv.loss) || !sLogits.every(Number.isFinite))
    throw divergence(
      run,
      `after epoch ${epoch} the validation loss is not finite (train loss ${(t.lossSum / t.count).toPrecision(3)})`,
    );
  const { ensembleAcc, disagreement } = await ensembleAgreement(run, sLogits);

  let added: number | null = null,
    replaced: number | null = null;
  const offered =
    config.teacherSource !== 'random' &&
    (config.teacherSource !== 'cycle-end' || isCycleEnd(epoch, config.restartCycle));
  if (run.uses.bank && offered) {
    const diversity = config.teacherSource === 'diverse' ? await diversityOf(run, epoch, sLogits) : undefined;
    const d = offerToBank(
      bank.entries,
      { id: epoch, epoch, score: sv.score },
      config.teachers,
      config.teacherSource,
      diversity,
    );
    ({ added, replaced } = d);
    if (replaced !== null) {
      bank.models.get(replaced)?.dispose();
      bank.models.delete(replaced);
      bank.valLogits.delete(replaced);
    }
    if (added !== null) {
      bank.models.set(added, snapshotOf(run.student, run.own));
      bank.valLogits.set(added, sLogits);
    }
    bank.entries = d.bank;
  }
  const averages = await updateAverages(run, epoch);
  return {
    epoch,
    lr: t.lr,
    train_loss: t.lossSum / t.count,
    train_acc: t.correct / t.count,
    distill_loss: t.distillSum / t.count,
    val_acc: sv.acc,
    val_loss: sv.loss,
    ensemble_val_acc: ensembleAcc,
    disagreement,
    reset,
    bank: bank.entries.map((e) => ({ ...e })),
    replaced,
    added,
    seconds: t.seconds,
    images_per_sec: t.count / Math.max(t.seconds, 1e-9),
    ...averages,
    ...(config.softTargets !== 'none' ? { target_loss: t.targetSum / t.count } : {}),
  };
}

/** teacherSource diverse: the top-1 validation predictions of the bank's teachers and of this epoch's candidate. */
async function diversityOf(run: Run, epoch: number, studentLogits: Float32Array): Promise<Diversity> {
  const nc = run.info.numClasses;
  const predictions = new Map<number, Int32Array>([[epoch, argmaxRows(studentLogits, nc)]]);
  for (const e of run.bank.entries) predictions.set(e.id, argmaxRows(await teacherValLogits(run, e.id), nc));
  return { predictions, floor: run.config.diversityFloor };
}

/**
 * After an epoch: SWA adds the student from its first averaged epoch on (BN statistics recomputed
 * on the training split, its teacher remade); the EMA's teacher is remade; both are scored on the
 * validation split, for the gate, the score weighting and the record.
 */
async function updateAverages(run: Run, epoch: number): Promise<Pick<EpochRecord, 'ema_val_acc' | 'swa_val_acc'>> {
  const { config, traj, data } = run;
  const out: Pick<EpochRecord, 'ema_val_acc' | 'swa_val_acc'> = {};
  const score = async (t: NativeTeacher) =>
    valScore(run, await datasetLogits(t, data.val, data.mean, data.std, undefined, run.resident?.val));
  if (traj.swa) {
    if (epoch >= swaFirstEpoch(config.swaStart, config.epochs)) {
      traj.swa.add(run.student.getParams());
      traj.swaBuffers = await recomputeBatchNorm(traj.shadow!, traj.swa.params!, {
        data: data.train,
        mean: data.mean,
        std: data.std,
        batchSize: config.batchSize,
        augment: config.augment ? { pad: config.cropPadding } : null,
        seedOf: (i) => deriveSeed(config.seed, STREAM.swaBatchNorm, epoch, i),
      });
      if (traj.swaTeacher) run.own.release(traj.swaTeacher);
      traj.swaTeacher = run.own(averageTeacher(traj.shadow!, traj.swa.params!, traj.swaBuffers));
      const v = await score(traj.swaTeacher);
      traj.swaScore = v.score;
      out.swa_val_acc = v.acc;
    } else {
      out.swa_val_acc = null;
    }
  }
  if (traj.ema) {
    refreshEmaTeacher(run);
    const v = await score(traj.emaTeacher!);
    traj.emaScore = v.score;
    out.ema_val_acc = v.acc;
  }
  return out;
}

/** The bank's (weighted) ensemble accuracy on the validation split and its top-1 disagreement with the student; null for an empty bank. */
async function ensembleAgreement(
  run: Run,
  studentLogits: Float32Array,
): Promise<{ ensembleAcc: number | null; disagreement: number | null }> {
  const { entries } = run.bank;
  if (!run.uses.teachers || entries.length === 0) return { ensembleAcc: null, disagreement: null };
  const val = run.data.val,
    nc = run.info.numClasses;
  const w = teacherWeights(entries, run.config.teacherWeighting) ?? entries.map(() => 1 / entries.length);
  const ens = new Float32Array(val.n * nc);
  for (let k = 0; k < entries.length; ++k) {
    const p = softmaxRows(await teacherValLogits(run, entries[k].id), nc);
    for (let j = 0; j < ens.length; ++j) ens[j] += w[k] * p[j];
  }
  const ePred = argmaxRows(ens, nc),
    sPred = argmaxRows(studentLogits, nc);
  let hit = 0,
    differ = 0;
  for (let j = 0; j < val.n; ++j) {
    hit += ePred[j] === val.labels[j] ? 1 : 0;
    differ += ePred[j] !== sPred[j] ? 1 : 0;
  }
  return { ensembleAcc: hit / val.n, disagreement: differ / val.n };
}

/** A model's validation accuracy and loss, and its bank score (higher is better). */
function valScore(run: Run, logits: Float32Array): { acc: number; loss: number; score: number } {
  const m = metricsFromLogits(logits, run.data.val.labels, run.info.numClasses);
  return {
    acc: m.test_acc,
    loss: m.test_loss,
    score: run.config.scoreMetric === 'accuracy' ? m.test_acc : -m.test_loss,
  };
}

/** A teacher's validation logits, computed once per teacher. */
async function teacherValLogits(run: Run, id: number): Promise<Float32Array> {
  let l = run.bank.valLogits.get(id);
  if (!l) {
    l = await datasetLogits(
      run.bank.models.get(id)!,
      run.data.val,
      run.data.mean,
      run.data.std,
      undefined,
      run.resident?.val,
    );
    run.bank.valLogits.set(id, l);
  }
  return l;
}

// --- records and checkpoints ----------------------------------------------------------------------

/** A finished epoch: its record in metrics.jsonl, a checkpoint, and the 'epoch' event. */
function endEpoch(run: Run, record: EpochRecord): void {
  run.metrics.push(record);
  run.trainSeconds += record.seconds;
  writeMetrics(run);
  saveState(run, record.epoch, null, run.trainSeconds);
  run.events.pushRecord(record);
}

/** An epoch stopped after `t.stoppedAfter` batches: a checkpoint that continues from there. */
function saveInterrupted(run: Run, epoch: number, reset: boolean, t: EpochTotals): void {
  const p: EpochPosition = {
    epoch,
    batch: t.stoppedAfter!,
    loss_sum: t.lossSum,
    distill_sum: t.distillSum,
    correct: t.correct,
    count: t.count,
    seconds: t.seconds,
    reset,
    ...(run.config.softTargets !== 'none' ? { target_sum: t.targetSum } : {}),
  };
  saveState(run, epoch - 1, p, run.trainSeconds + t.seconds);
  run.log(`interrupted at epoch ${epoch}, batch ${p.batch}/${t.batches}${run.ckptDir ? '; checkpoint saved' : ''}`);
}

function writeMetrics(run: Run): void {
  if (run.config.out)
    writeFileAtomic(
      path.join(run.config.out, 'metrics.jsonl'),
      run.metrics.map((m) => JSON.stringify(m) + '\n').join(''),
    );
}

/** final: a model to store instead of the student (the SWA average at the end; see saveCheckpoint). */
function saveState(
  run: Run,
  epochDone: number,
  partial: EpochPosition | null,
  seconds: number,
  final?: NativeModel,
): void {
  if (!run.ckptDir) return;
  const { config, spec, data, bank, metrics } = run;
  const { aux, averages } = trajectoryState(run, partial !== null);
  saveCheckpoint(run.ckptDir, {
    student: run.student,
    teachers: bank.models,
    aux,
    final,
    state: {
      epoch: epochDone,
      config,
      spec,
      class_names: data.classNames,
      mean: data.mean,
      std: data.std,
      bank: bank.entries,
      metrics,
      best_val_acc: Math.max(0, ...metrics.map((m) => m.val_acc)),
      seconds,
      ...(partial ? { partial } : {}),
      data: data.fingerprint,
      ...(averages ? { averages } : {}),
    },
  });
  run.lastCheckpoint = { dir: run.ckptDir, what: checkpointPosition(epochDone, partial) };
}

function checkpointPosition(epochDone: number, partial: EpochPosition | null): string {
  return partial ? `epoch ${epochDone} + ${partial.batch} batches of epoch ${partial.epoch}` : `epoch ${epochDone}`;
}

/**
 * A file of the run could not be written (a full disk): say which checkpoint is still whole
 * (saveCheckpoint never leaves a partial one behind state.json) and how to go on from it.
 */
function withCheckpointAdvice(run: Run, err: WriteError): WriteError {
  const fix = writeRemedy(err);
  const last = run.lastCheckpoint;
  if (!last)
    return writeFailure(
      err.file,
      err,
      `No checkpoint was saved yet. ${fix} (or choose another --out) and start the run again.`,
    );
  const folder = path.dirname(last.dir);
  const how = run.continueWith
    ? run.continueWith(folder)
    : `continue with \`dfl-native train --resume ${folder}\`, or continue on a disk with room: \`dfl-native train --resume ${folder} --out DIR\``;
  return writeFailure(
    err.file,
    err,
    `The checkpoint of ${last.what} in ${last.dir} is intact (its state.json names only complete files). ${fix} and ${how}.`,
  );
}

// --- the trajectory options' state ------------------------------------------------------------------

function newTrajectory(
  config: TrainConfig,
  spec: ModelSpec,
  student: NativeModel,
  device: DeviceName,
  nTrain: number,
  own: Own,
): Trajectory {
  const averaging = config.emaDecay > 0 || config.swaStart < 1;
  const shadow = averaging ? own(new (loadBinding().Model)(shadowSpec(spec), 0, device, config.convInit)) : null;
  if (shadow) setMath(shadow, config);
  return {
    shadow,
    counters: counterOffsets(student.tensors()),
    ema: config.emaDecay > 0 ? new Ema(config.emaDecay, student.getParams(), student.getBuffers()) : null,
    emaTeacher: null,
    emaScore: null,
    swa: config.swaStart < 1 ? new Swa() : null,
    swaBuffers: null,
    swaTeacher: null,
    swaScore: null,
    pskd: config.softTargets === 'pskd' ? new PredictionStore(nTrain, student.info().numClasses) : null,
    dlbCarry: null,
  };
}

/** What a checkpoint keeps of the trajectory: aux tensors and the averages' counters and scores (nothing when all is off). */
function trajectoryState(run: Run, partial: boolean): { aux: Map<string, SafeTensor>; averages: AverageState | null } {
  const t = run.traj,
    aux = new Map<string, SafeTensor>();
  const f32 = (data: Float32Array, shape = [data.length]): SafeTensor => ({ dtype: 'F32', shape, data });
  const averages: AverageState = {};
  if (t.ema) {
    aux.set('ema.params', f32(t.ema.params));
    aux.set('ema.buffers', f32(t.ema.buffers));
    Object.assign(averages, { ema_steps: t.ema.steps, ema_score: t.emaScore });
  }
  if (t.swa) {
    if (t.swa.params && t.swaBuffers) {
      aux.set('swa.params', f32(t.swa.params));
      aux.set('swa.buffers', f32(t.swaBuffers));
    }
    Object.assign(averages, { swa_count: t.swa.count, swa_score: t.swaScore });
  }
  if (t.pskd) {
    aux.set('pskd.logits', f32(t.pskd.logits, [t.pskd.n, t.pskd.classes]));
    aux.set('pskd.seen', f32(Float32Array.from(t.pskd.seen)));
  }
  if (partial && t.dlbCarry)
    aux.set('dlb.carry', f32(t.dlbCarry, [t.dlbCarry.length / run.info.numClasses, run.info.numClasses]));
  return { aux, averages: t.ema || t.swa ? averages : null };
}

/** A resumed run's trajectory state from its checkpoint (and the trajectory's weights, when the model file holds a final SWA model). */
function restoreTrajectory(run: Run, dir: string, saved: CheckpointState): void {
  const t = run.traj,
    aux = readAux(dir, saved),
    a = saved.averages ?? {};
  const np = run.info.numParams,
    nb = run.info.numBufferFloats,
    nc = run.info.numClasses;
  if (saved.final === 'swa')
    loadModelTensors(run.student, aux, path.join(dir, saved.files.aux ?? 'aux'), 'trajectory.');
  if (t.ema) {
    t.ema.params.set(auxFloats(aux, 'ema.params', np, dir));
    t.ema.buffers.set(auxFloats(aux, 'ema.buffers', nb, dir));
    t.ema.steps = a.ema_steps ?? 0;
    t.emaScore = a.ema_score ?? null;
    if (t.emaScore !== null) refreshEmaTeacher(run);
  }
  if (t.swa && (a.swa_count ?? 0) > 0) {
    t.swa.params = Float32Array.from(auxFloats(aux, 'swa.params', np, dir));
    t.swa.count = a.swa_count!;
    t.swaBuffers = Float32Array.from(auxFloats(aux, 'swa.buffers', nb, dir));
    t.swaScore = a.swa_score ?? null;
    t.swaTeacher = run.own(averageTeacher(t.shadow!, t.swa.params, t.swaBuffers));
  }
  if (t.pskd) {
    t.pskd.logits.set(auxFloats(aux, 'pskd.logits', t.pskd.n * nc, dir));
    t.pskd.seen.set(auxFloats(aux, 'pskd.seen', t.pskd.n, dir));
  }
  if (saved.partial && run.config.softTargets === 'dlb' && aux.has('dlb.carry'))
    t.dlbCarry = Float32Array.from(auxFloats(aux, 'dlb.carry', aux.get('dlb.carry')!.data.length, dir));
}

function divergence(run: Run, what: string): DivergenceError {
  const { ckptDir, config } = run;
  return new DivergenceError(
    `Training diverged: ${what}. ` +
      (ckptDir && fs.existsSync(path.join(ckptDir, 'state.json'))
        ? `The last good checkpoint is in ${ckptDir}. `
        : '') +
      `Try a lower --lr (e.g. ${(config.lr / 10).toPrecision(2)}).`,
  );
}

// --- the end: the final model on the test split ------------------------------------------------------

async function finish(run: Run, interrupted: boolean): Promise<TrainSummary> {
  const { config, data, info, metrics, traj } = run;
  // With swaFinal the average is the run's model: evaluated, and stored as the checkpoint's model.
  const swaFinal =
    !interrupted && config.swaFinal && traj.swa !== null && traj.swa.count > 0 && traj.swaTeacher !== null;
  if (swaFinal) {
    traj.shadow!.setParams(traj.swa!.params!);
    traj.shadow!.setBuffers(traj.swaBuffers!);
    saveState(run, metrics.length, null, run.trainSeconds, traj.shadow!);
  }
  const finalModel: LogitSource = swaFinal ? traj.swaTeacher! : run.student;
  let testMetrics: TestMetrics = { test_acc: NaN, test_top5: NaN, test_loss: NaN, test_ece: NaN, n: 0 };
  let ensembleAcc = NaN;
  if (data.test) {
    const logits = await datasetLogits(
      finalModel,
      data.test,
      data.mean,
      data.std,
      undefined,
      run.resident?.test ?? undefined,
    );
    testMetrics = metricsFromLogits(logits, data.test.labels, info.numClasses, true);
    ensembleAcc = await ensembleTestAccuracy(run, logits, swaFinal);
  }
  const imagesSeen = metrics.reduce((a, m) => a + m.images_per_sec * m.seconds, 0);
  const summary: TrainSummary = {
    ...testMetrics,
    method: config.method,
    model: config.model,
    seed: config.seed,
    device: run.device,
    epochs: metrics.length,
    best_val_acc: Math.max(0, ...metrics.map((m) => m.val_acc)),
    final_val_acc: metrics.at(-1)?.val_acc ?? NaN,
    seconds: run.trainSeconds,
    images_per_sec: imagesSeen / Math.max(run.trainSeconds, 1e-9),
    params: info.numParams,
    macs_per_image: info.macsPerImage,
    class_names: data.classNames,
    interrupted,
    test_ensemble_acc: ensembleAcc,
    final_model: swaFinal ? 'swa' : 'last',
    config,
  };
  if (config.out) {
    writeFileAtomic(path.join(config.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    writeCurves(config.out, metrics, summary);
  }
  return summary;
}

/**
 * Top-1 test accuracy of the mean softmax of the final model (its logits given) and the teachers
 * the run ends with: every bank teacher, the EMA when it teaches, and SWA when it teaches and is
 * not already the final model.
 */
async function ensembleTestAccuracy(run: Run, finalLogits: Float32Array, swaFinal: boolean): Promise<number> {
  const { config, data, traj, info } = run;
  const test = data.test!,
    nc = info.numClasses;
  const members: NativeTeacher[] = [...run.bank.entries.map((e) => run.bank.models.get(e.id)!)];
  if (run.uses.teachers && config.swaTeacher !== 'off' && !swaFinal && traj.swaTeacher) members.push(traj.swaTeacher);
  if (run.uses.teachers && config.emaTeacher !== 'off' && traj.emaTeacher) members.push(traj.emaTeacher);
  const sum = softmaxRows(finalLogits, nc);
  for (const m of members) {
    const p = softmaxRows(
      await datasetLogits(m, test, data.mean, data.std, undefined, run.resident?.test ?? undefined),
      nc,
    );
    for (let j = 0; j < sum.length; ++j) sum[j] += p[j];
  }
  const pred = argmaxRows(sum, nc);
  let hit = 0;
  for (let i = 0; i < test.n; ++i) hit += pred[i] === test.labels[i] ? 1 : 0;
  return hit / test.n;
}
