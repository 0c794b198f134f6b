// dfl-native: the public library API.
export {
  DflError,
  InputError,
  UsageError,
  ConfigError,
  DataError,
  CheckpointError,
  RunError,
  DivergenceError,
  WriteError,
  exitCodeFor,
  EXIT,
} from './errors.js';
export { train, TrainingRun, type TrainOptions } from './train/trainer.js';
export { evaluate, predict, predictProbs, datasetLogits, metricsFromLogits, softmaxRows } from './train/evaluate.js';
export { lrAt, isResetEpoch, headLayers, type LrSchedule } from './train/schedule.js';
export { offerToBank, teacherWeights, type BankDecision } from './train/teachers.js';
export type { Prediction } from './train/evaluate.js';
export type { BankEntry, EpochRecord, TrainSummary, TestMetrics, BatchProgress } from './records.js';
export { resolveConfig, DEFAULT_CONFIG, CONFIG_KEYS, methodUses } from './config.js';
export { TRAIN_PRESETS, PRESET_NAMES, type PresetName, type TrainPreset } from './presets.js';
export * from './options.js';
export type {
  TrainConfig,
  Method,
  TeacherSource,
  TeacherWeighting,
  ScheduleName,
  ResetMode,
  Device,
  ScoreMetric,
} from './config.js';
export {
  loadCheckpoint,
  saveCheckpoint,
  modelTensors,
  loadModelTensors,
  type LoadedCheckpoint,
  type CheckpointState,
} from './io/checkpoint.js';
export { encodeSafetensors, decodeSafetensors, type SafeTensor } from './io/safetensors.js';
export { buildModel, MODEL_NAMES, type ModelName, type ZooOptions } from './models/zoo.js';
export { resolveModelSpec } from './models/resolve.js';
export { GraphBuilder, type ModelSpec, type NodeSpec, type Op } from './models/spec.js';
export {
  loadBinding,
  type NativeModel,
  type NativeBinding,
  type TensorInfo,
  type RuntimeInfo,
  type TrainStepOptions,
  type TrainStepStats,
} from './binding.js';
export * from './data/index.js';
