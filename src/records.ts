// Records a training run produces: the trainer makes them, io writes them (metrics.jsonl,
// summary.json, the checkpoint's bank and metrics, curves.svg) and the CLI prints them. They sit
// below both src/train and src/io, so neither has to import the other for a type.
import type { TrainConfig } from './config.js';
import type { DeviceName } from './options.js';

export interface BankEntry {
  /** Stable teacher id (the epoch whose snapshot it is; random teachers: -1, -2, ...). */
  id: number;
  epoch: number;
  score: number;
}

export interface EpochRecord {
  epoch: number;
  lr: number;
  train_loss: number;
  train_acc: number;
  /** Mean T^2 KL term over the epoch's batches (0 without teachers). */
  distill_loss: number;
  val_acc: number;
  val_loss: number;
  /** Top-1 accuracy of the teacher ensemble on the validation split (null: empty bank). */
  ensemble_val_acc: number | null;
  /** Share of validation images whose student top-1 differs from the ensemble's (null: empty bank). */
  disagreement: number | null;
  /** Whether the head was reset before this epoch. */
  reset: boolean;
  /** The bank after this epoch's update. */
  bank: BankEntry[];
  /** Id of the teacher replaced this epoch, or null. */
  replaced: number | null;
  /** Id of the teacher added this epoch, or null. */
  added: number | null;
  seconds: number;
  images_per_sec: number;
  /** With emaDecay > 0: the EMA's validation accuracy after this epoch. */
  ema_val_acc?: number;
  /** With SWA: the average's validation accuracy after this epoch (BN recomputed); null before it starts. */
  swa_val_acc?: number | null;
  /** With softTargets: the mean soft-target term (T^2 KL, before its weight) over the epoch's steps. */
  target_loss?: number;
}

export interface TestMetrics {
  test_acc: number;
  test_top5: number;
  test_loss: number;
  /** Expected calibration error, 15 equal-width confidence bins. */
  test_ece: number;
  n: number;
  per_class_acc?: number[];
}

export interface TrainSummary extends TestMetrics {
  method: TrainConfig['method'];
  model: string;
  seed: number;
  device: DeviceName;
  epochs: number;
  best_val_acc: number;
  final_val_acc: number;
  seconds: number;
  images_per_sec: number;
  params: number;
  macs_per_image: number;
  class_names: string[];
  /** True when the run was stopped early (AbortSignal / Ctrl-C); test metrics are then of the last model. */
  interrupted: boolean;
  /**
   * Top-1 test accuracy of the run's ensemble: the mean softmax of the final model and every
   * teacher it ends with (the bank, and the EMA or SWA average when they teach). Without teachers
   * it is test_acc. Absent in summaries written before this field.
   */
  test_ensemble_acc?: number;
  /** 'swa' when the test metrics are of the SWA average (swaFinal), else 'last' (the last epoch's weights; also when absent). */
  final_model?: 'last' | 'swa';
  config: TrainConfig;
}

/** Progress within an epoch, for progress bars. */
export interface BatchProgress {
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  images_per_sec: number;
}
