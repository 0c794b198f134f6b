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

import { loadBinding, type DeviceName, type NativeModel, type NativeTeacher, type RuntimeInfo } from '../binding.js';
import { ConfigError, methodUses, resolveConfig, type TrainConfig } from '../config.js';
import { epochOrder, gatherBatch } from '../data/batches.js';
import { channelStats, checkDataset, subset, type Dataset, type DataSplits } from '../data/dataset.js';
import { loadData } from '../data/load.js';
import { stratifiedSplit } from '../data/split.js';
import { checkpointDir, readState, restoreModels, saveCheckpoint, type CheckpointState, type EpochPosition } from '../io/checkpoint.js';
import { writeCurves } from '../io/report.js';
import { resolveModelSpec } from '../models/resolve.js';
import type { ModelSpec } from '../models/spec.js';
import { writeFileAtomic } from '../util/atomic.js';
import { deriveSeed } from '../util/seed.js';
import { argmaxRows, datasetLogits, metricsFromLogits, softmaxRows } from './evaluate.js';
import { headLayers, isResetEpoch, lrAt } from './schedule.js';
import { offerToBank, teacherWeights } from './teachers.js';
import type { BankEntry, BatchProgress, EpochRecord, TrainSummary } from './types.js';

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
}

/** Thrown when the loss or weights become NaN/Inf. */
export class DivergenceError extends Error {
  override name = 'DivergenceError';
}

// Seed streams: one label per kind of randomness, so they never collide.
const STREAM = { init: 1, reset: 2, augment: 3, dropout: 4, randomTeacher: 5, split: 6 } as const;

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
      }
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

/** The device to train on: cuda when asked for (and usable) or when auto finds it; else the CPU. */
function checkDevice(config: TrainConfig, info: RuntimeInfo, log: (m: string) => void): DeviceName {
  const cudaUsable = info.usableBackends.includes('cuda');
  if (config.device === 'cuda' && !cudaUsable)
    throw new ConfigError(`--device cuda is not available: ${info.cudaStatus}. Use --device cpu (or auto).`);
  if (config.device === 'auto' && !cudaUsable) log(`device auto -> cpu (cuda: ${info.cudaStatus})`);
  return config.device === 'cpu' || !cudaUsable ? 'cpu' : 'cuda';
}

/** Normalisation: the given per-channel mean/std, else statistics of the training split. */
function normalisation(config: TrainConfig, trainSet: Dataset): { mean: number[]; std: number[] } {
  if ((config.mean === undefined) !== (config.std === undefined))
    throw new ConfigError('Expected both mean and std (or neither) for the normalisation');
  if (config.mean === undefined || config.std === undefined) return channelStats(trainSet);
  for (const [name, v] of [['mean', config.mean], ['std', config.std]] as const)
    if (v.length !== trainSet.channels)
      throw new ConfigError(`Expected ${trainSet.channels} values (one per image channel) for ${name} but received ${v.length}`);
  return { mean: config.mean, std: config.std };
}

/** In-memory data as train/test splits, validated with the usual error style. */
function inMemorySplits(d: DataSplits | Dataset, seed: number): DataSplits {
  const isDataset = (x: unknown): x is Dataset =>
    typeof x === 'object' && x !== null && (x as Dataset).images instanceof Uint8Array && (x as Dataset).labels instanceof Int32Array;
  if (isDataset(d)) {
    checkDataset(d, 'dataset');
    const parts = stratifiedSplit(d.labels, 0.2, deriveSeed(seed, STREAM.split, 1));
    return { train: subset(d, parts.train), test: subset(d, parts.val) };
  }
  if (typeof d !== 'object' || d === null || !isDataset((d as DataSplits).train))
    throw new ConfigError(`Expected a Dataset (see fromArrays) or { train, test } for dataset but received ${d === null ? 'null' : typeof d}`);
  checkDataset(d.train, 'dataset.train');
  if (d.test !== null && d.test !== undefined) {
    if (!isDataset(d.test)) throw new ConfigError('Expected a Dataset or null for dataset.test');
    checkDataset(d.test, 'dataset.test');
    if (d.test.classNames.join('\n') !== d.train.classNames.join('\n'))
      throw new ConfigError('Expected dataset.test to have the class names of dataset.train, in the same order');
  }
  return { train: d.train, test: d.test ?? null };
}

/** A teacher: the student's current weights, copied and BN-folded on the device. */
function snapshotOf(student: NativeModel, own: Own): NativeTeacher {
  return own(student.snapshot());
}

/** Something the run frees when it ends. */
type Own = <T extends { dispose(): void; isDisposed(): boolean }>(m: T) => T;

async function runTraining(options: TrainOptions, run: TrainingRun): Promise<TrainSummary> {
  // Every native model made here is freed when training ends, on success or failure.
  const owned = new Set<{ dispose(): void; isDisposed(): boolean }>();
  // Let the caller attach listeners before the first 'log' or 'start' event.
  await Promise.resolve();
  try {
    return await trainLoop(options, run, (m) => (owned.add(m), m));
  } finally {
    for (const m of owned) if (!m.isDisposed()) m.dispose();
  }
}

async function trainLoop(options: TrainOptions, run: TrainingRun, own: Own): Promise<TrainSummary> {
  const { signal, dataset, resume, ...rest } = options;
  const log = (m: string) => run.emit('log', m);
  const binding = loadBinding();

  // --- configuration (a resumed run continues with its saved config) ---------------------------
  let resumeDir: string | null = null;
  let saved: CheckpointState | null = null;
  let config: TrainConfig;
  if (resume) {
    resumeDir = checkpointDir(resume);
    saved = readState(resumeDir);
    const overrides: Partial<TrainConfig> = {};
    for (const k of ['threads', 'epochs', 'out'] as const) if (rest[k] !== undefined) (overrides as Record<string, unknown>)[k] = rest[k];
    // A resumed run writes where it was resumed from (a copied run folder continues in the copy).
    if (overrides.out === undefined) overrides.out = path.dirname(resumeDir);
    config = resolveConfig(saved.config as unknown as Record<string, unknown>, overrides);
  } else {
    config = resolveConfig(rest as Record<string, unknown>);
  }
  binding.setThreads(config.threads);
  const device = checkDevice(config, binding.runtimeInfo(), log);
  const uses = methodUses(config.method);

  // --- data ------------------------------------------------------------------------------------
  const splits = dataset !== undefined ? inMemorySplits(dataset, config.seed)
    : await loadData(config.data, { imageSize: config.imageSize, labels: config.labels, cacheDir: config.cacheDir, seed: config.seed, skipBadFiles: config.skipBadFiles, onWarning: log });
  const full = splits.train;
  const split = stratifiedSplit(full.labels, config.valSize, deriveSeed(config.seed, STREAM.split));
  const trainSet = subset(full, split.train);
  const valSet = subset(full, split.val);
  const testSet: Dataset | null = splits.test;
  if (trainSet.n < 2) throw new ConfigError(`Expected at least 2 training images after the validation split but received ${trainSet.n}`);
  if (valSet.n < 1) throw new ConfigError(`Expected at least 1 validation image for val-size ${config.valSize} but received 0; raise --val-size or use more data`);
  const stats = saved ? { mean: saved.mean, std: saved.std } : normalisation(config, trainSet);
  const classNames = full.classNames;

  // --- model -----------------------------------------------------------------------------------
  const spec = saved ? saved.spec : resolveModelSpec(config.model, { numClasses: classNames.length, inChannels: full.channels, height: full.height, width: full.width, width_multiplier: config.width });
  if (spec.in_channels !== full.channels || spec.height !== full.height || spec.width !== full.width)
    throw new ConfigError(`The model expects ${spec.in_channels}x${spec.height}x${spec.width} images but the data has ${full.channels}x${full.height}x${full.width}; use --image-size or another model spec`);
  const student = own(new binding.Model(spec, deriveSeed(config.seed, STREAM.init), device));
  const info = student.info();
  if (info.numClasses !== classNames.length)
    throw new ConfigError(`The model has ${info.numClasses} outputs but the data has ${classNames.length} classes` +
      (saved ? '' : `; set the last linear node's out_features to ${classNames.length} in ${config.model}`));

  const bank = new Map<number, NativeTeacher>();
  let entries: BankEntry[] = [];
  const valLogitsCache = new Map<number, Float32Array>();
  const metrics: EpochRecord[] = [];
  let startEpoch = 1;
  let partial: EpochPosition | null = null;
  let secondsBefore = 0;
  if (saved && resumeDir) {
    for (const [id, t] of restoreModels(resumeDir, saved, student, device)) bank.set(id, own(t));
    entries = saved.bank;
    metrics.push(...saved.metrics);
    startEpoch = saved.epoch + 1;
    partial = saved.partial ?? null;
    secondsBefore = saved.seconds;
    log(`resuming from ${resumeDir} after epoch ${saved.epoch}${partial ? ` (+${partial.batch} batches of epoch ${partial.epoch})` : ''}`);
  } else if (uses.teachers && config.teacherSource === 'random') {
    // Random teachers: K fixed random initialisations, scored once on the validation split.
    for (let k = 1; k <= config.teachers; ++k) {
      const init = own(new binding.Model(spec, deriveSeed(config.seed, STREAM.randomTeacher, k), device));
      bank.set(-k, snapshotOf(init, own));
      init.dispose();
    }
  }
  const nc = info.numClasses;
  const valScore = (logits: Float32Array) => {
    const m = metricsFromLogits(logits, valSet.labels, nc);
    return { acc: m.test_acc, loss: m.test_loss, score: config.scoreMetric === 'accuracy' ? m.test_acc : -m.test_loss };
  };
  const teacherValLogits = async (id: number) => {
    let l = valLogitsCache.get(id);
    if (!l) {
      l = await datasetLogits(bank.get(id)!, valSet, stats.mean, stats.std);
      valLogitsCache.set(id, l);
    }
    return l;
  };
  if (!saved && bank.size > 0) {
    for (const id of bank.keys()) entries.push({ id, epoch: 0, score: valScore(await teacherValLogits(id)).score });
  }

  run.emit('start', { config, params: info.numParams, macsPerImage: info.macsPerImage, trainSize: trainSet.n, valSize: valSet.n, testSize: testSet?.n ?? 0, classNames, device });

  const out = config.out;
  const ckptDir = out ? path.join(out, 'checkpoint') : null;
  if (ckptDir && !saved && fs.existsSync(path.join(ckptDir, 'state.json')))
    throw new ConfigError(`${out} already holds a training run; continue it with --resume ${out}, or choose another --out`);
  if (out) fs.mkdirSync(out, { recursive: true });
  const writeMetrics = () => {
    if (out) writeFileAtomic(path.join(out, 'metrics.jsonl'), metrics.map((m) => JSON.stringify(m)).join('\n') + (metrics.length ? '\n' : ''));
  };
  const save = (epochDone: number, p: EpochPosition | null, seconds: number) => {
    if (!ckptDir) return;
    saveCheckpoint(ckptDir, {
      student, teachers: bank,
      state: { epoch: epochDone, config, spec, class_names: classNames, mean: stats.mean, std: stats.std, bank: entries, metrics,
        best_val_acc: Math.max(0, ...metrics.map((m) => m.val_acc)), seconds, ...(p ? { partial: p } : {}) },
    });
  };

  // --- the epochs ------------------------------------------------------------------------------
  const per = trainSet.channels * trainSet.height * trainSet.width;
  const bs = Math.min(config.batchSize, trainSet.n);
  const nFull = Math.floor(trainSet.n / bs);
  const rem = trainSet.n - nFull * bs;
  const batches = nFull + (rem >= 2 ? 1 : 0); // a last batch of 1 cannot train batch norm: dropped
  const x = new Float32Array(bs * per);
  const images = new Uint8Array(bs * per);
  const labels = new Int32Array(bs);
  const mean = Float32Array.from(stats.mean), std = Float32Array.from(stats.std);
  const divergence = (what: string) => new DivergenceError(`Training diverged: ${what}. ` +
    (ckptDir && fs.existsSync(path.join(ckptDir, 'state.json')) ? `The last good checkpoint is in ${ckptDir}. ` : '') +
    `Try a lower --lr (e.g. ${(config.lr / 10).toPrecision(2)}).`);
  const sched = { schedule: config.schedule, lr: config.lr, epochs: config.epochs, warmupEpochs: config.warmupEpochs, milestones: config.milestones, gamma: config.gamma };
  let interrupted = false;
  let trainSeconds = secondsBefore;

  for (let epoch = startEpoch; epoch <= config.epochs && !interrupted; ++epoch) {
    const t0 = performance.now();
    const resumeHere = partial && partial.epoch === epoch ? partial : null;
    partial = null;
    const reset = resumeHere ? resumeHere.reset : isResetEpoch(epoch, config.resetCycle, uses.reset);
    if (reset && !resumeHere) {
      const layers = headLayers(info.numLayers, config.resetDepth);
      student.reinitLayers(layers, deriveSeed(config.seed, STREAM.reset, epoch), config.resetMode, config.shrink, config.perturb);
      log(`epoch ${epoch}: reset the last ${layers.length} layer(s) (${config.resetMode})`);
    }
    const order = epochOrder(trainSet.n, config.seed, epoch);
    const teachers = uses.teachers ? entries.map((e) => bank.get(e.id)!) : [];
    const tw = uses.teachers ? teacherWeights(entries, config.teacherWeighting) : null;
    let lossSum = resumeHere?.loss_sum ?? 0, distillSum = resumeHere?.distill_sum ?? 0;
    let correct = resumeHere?.correct ?? 0, count = resumeHere?.count ?? 0;
    const secondsAtStart = resumeHere?.seconds ?? 0;
    let lr = 0;

    const prepare = (i: number): number => {
      const b = i < nFull ? bs : rem;
      gatherBatch(trainSet, order.subarray(i * bs, i * bs + b), images, labels);
      const xb = x.subarray(0, b * per);
      if (config.augment) binding.augmentBatch(xb, images, b, trainSet.channels, trainSet.height, trainSet.width, config.cropPadding, true, mean, std, deriveSeed(config.seed, STREAM.augment, epoch, i));
      else binding.normalizeBatch(xb, images, b, trainSet.channels, trainSet.height, trainSet.width, mean, std);
      return b;
    };
    const firstBatch = resumeHere?.batch ?? 0;
    for (let i = firstBatch; i < batches; ++i) {
      const b = prepare(i);
      lr = lrAt(sched, epoch - 1 + i / batches);
      const stepStats = await student.trainStep({
        x: x.subarray(0, b * per), labels: labels.subarray(0, b), batch: b, teachers,
        teacherWeights: tw ? Float32Array.from({ length: tw.length * b }, (_, j) => tw[Math.floor(j / b)]) : undefined,
        confidenceWeights: uses.teachers && config.teacherWeighting === 'confidence' && teachers.length > 0,
        lr, momentum: config.momentum, weightDecay: config.weightDecay, nesterov: config.nesterov, decoupled: config.decoupledWeightDecay,
        labelSmoothing: config.labelSmoothing, distillWeight: config.distillWeight, temperature: config.temperature,
        dropoutSeed: deriveSeed(config.seed, STREAM.dropout, epoch, i),
      });
      if (!stepStats.finite)
        throw divergence(`at epoch ${epoch}, batch ${i + 1} the loss or a gradient is NaN/Inf (lr ${lr.toPrecision(3)}); the weights were not updated`);
      lossSum += stepStats.loss * b;
      distillSum += stepStats.distillLoss * b;
      correct += stepStats.correct;
      count += b;
      const elapsed = secondsAtStart + (performance.now() - t0) / 1000;
      run.emit('batch', { epoch, batch: i + 1, batches, loss: lossSum / count, images_per_sec: count / Math.max(elapsed, 1e-9) } satisfies BatchProgress);
      if (signal?.aborted && i + 1 < batches) {
        interrupted = true;
        const p: EpochPosition = { epoch, batch: i + 1, loss_sum: lossSum, distill_sum: distillSum, correct, count, seconds: elapsed, reset };
        save(epoch - 1, p, trainSeconds + elapsed);
        log(`interrupted at epoch ${epoch}, batch ${i + 1}/${batches}${ckptDir ? `; checkpoint saved` : ''}`);
        break;
      }
    }
    if (interrupted) break;
    const epochSeconds = secondsAtStart + (performance.now() - t0) / 1000;
    trainSeconds += epochSeconds;

    // Validation: the student, then the bank that taught this epoch (its ensemble and disagreement).
    const sLogits = await datasetLogits(student, valSet, stats.mean, stats.std);
    const sv = valScore(sLogits);
    // Finite training steps can still leave a model whose predictions overflow: that is divergence
    // too, and such a model must neither enter the bank nor be saved.
    if (!Number.isFinite(sv.loss) || !sLogits.every(Number.isFinite))
      throw divergence(`after epoch ${epoch} the validation loss is not finite (train loss ${(lossSum / count).toPrecision(3)})`);
    let ensembleAcc: number | null = null, disagreement: number | null = null;
    if (uses.teachers && entries.length > 0) {
      const w = teacherWeights(entries, config.teacherWeighting) ?? entries.map(() => 1 / entries.length);
      const ens = new Float32Array(valSet.n * nc);
      for (let k = 0; k < entries.length; ++k) {
        const p = softmaxRows(await teacherValLogits(entries[k].id), nc);
        for (let j = 0; j < ens.length; ++j) ens[j] += w[k] * p[j];
      }
      const ePred = argmaxRows(ens, nc), sPred = argmaxRows(sLogits, nc);
      let hit = 0, differ = 0;
      for (let j = 0; j < valSet.n; ++j) {
        hit += ePred[j] === valSet.labels[j] ? 1 : 0;
        differ += ePred[j] !== sPred[j] ? 1 : 0;
      }
      ensembleAcc = hit / valSet.n;
      disagreement = differ / valSet.n;
    }
    // Bank update with this epoch's snapshot.
    let added: number | null = null, replaced: number | null = null;
    if (uses.teachers && config.teacherSource !== 'random') {
      const d = offerToBank(entries, { id: epoch, epoch, score: sv.score }, config.teachers, config.teacherSource);
      added = d.added;
      replaced = d.replaced;
      if (replaced !== null) {
        bank.get(replaced)?.dispose();
        bank.delete(replaced);
        valLogitsCache.delete(replaced);
      }
      if (added !== null) {
        bank.set(added, snapshotOf(student, own));
        valLogitsCache.set(added, sLogits);
      }
      entries = d.bank;
    }
    const record: EpochRecord = {
      epoch, lr, train_loss: lossSum / count, train_acc: correct / count, distill_loss: distillSum / count,
      val_acc: sv.acc, val_loss: sv.loss, ensemble_val_acc: ensembleAcc, disagreement, reset,
      bank: entries.map((e) => ({ ...e })), replaced, added, seconds: epochSeconds, images_per_sec: count / Math.max(epochSeconds, 1e-9),
    };
    metrics.push(record);
    writeMetrics();
    save(epoch, null, trainSeconds);
    run.pushRecord(record);
    if (signal?.aborted && epoch < config.epochs) {
      interrupted = true;
      log(`interrupted after epoch ${epoch}${ckptDir ? '; checkpoint saved' : ''}`);
    }
  }

  // --- the end: the last epoch's model on the test split ----------------------------------------
  const testMetrics = testSet
    ? metricsFromLogits(await datasetLogits(student, testSet, stats.mean, stats.std), testSet.labels, nc, true)
    : { test_acc: NaN, test_top5: NaN, test_loss: NaN, test_ece: NaN, n: 0 };
  const imagesSeen = metrics.reduce((a, m) => a + m.images_per_sec * m.seconds, 0);
  const summary: TrainSummary = {
    ...testMetrics,
    method: config.method, model: config.model, seed: config.seed, device, epochs: metrics.length,
    best_val_acc: Math.max(0, ...metrics.map((m) => m.val_acc)), final_val_acc: metrics.at(-1)?.val_acc ?? NaN,
    seconds: trainSeconds, images_per_sec: imagesSeen / Math.max(trainSeconds, 1e-9),
    params: info.numParams, macs_per_image: info.macsPerImage, class_names: classNames, interrupted, config,
  };
  if (out) {
    writeFileAtomic(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    writeCurves(out, metrics, summary);
  }
  return summary;
}
