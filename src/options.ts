// The allowed values of every option with a fixed set of values, each list written once. The
// config's validation (config.ts), the CLI's flag help and checks (cli/), the binding's typings
// (binding.ts), bench and the device policy read these lists, and the types below are derived from
// them, so a new value is one edit here. test/unit/options.test.ts checks that no other file
// spells a list again.
// This file imports nothing: every layer may use it.

/** base: plain training; reset: head reset only; sd: self-distillation only; dfl: both. */
export const METHODS = ['base', 'reset', 'sd', 'dfl'] as const;
/** Which snapshots enter the teacher bank (TrainConfig.teacherSource). */
export const TEACHER_SOURCES = ['meaningful', 'previous', 'random', 'cycle-end', 'diverse'] as const;
export const TEACHER_WEIGHTINGS = ['uniform', 'score', 'confidence'] as const;
export const SCHEDULES = ['cosine', 'step', 'constant', 'cosine-restarts'] as const;
/** How a weight average (EMA, SWA) teaches: not at all, as the only teacher, or beside the bank. */
export const AVERAGE_TEACHERS = ['off', 'alone', 'bank'] as const;
/** Per-sample soft targets from the student's own earlier predictions (none, PS-KD or DLB). */
export const SOFT_TARGETS = ['none', 'pskd', 'dlb'] as const;
export const RESET_MODES = ['reinit', 'shrink-perturb'] as const;
export const CONV_INITS = ['kaiming-normal', 'pytorch-default'] as const;
/** The backends a model can live on. */
export const DEVICE_NAMES = ['cpu', 'cuda'] as const;
/** What --device accepts: a backend, or auto (cuda when usable, else the CPU; see device.ts). */
export const DEVICES = ['auto', ...DEVICE_NAMES] as const;
export const PRECISIONS = ['fp32', 'bf16'] as const;
export const SCORE_METRICS = ['accuracy', 'loss'] as const;
/** CIFAR-100's label sets. */
export const LABEL_SETS = ['fine', 'coarse'] as const;
/** The kernels' instruction-set levels, lowest first; DFL_SIMD=<level> caps them (docs/native.md). */
export const SIMD_LEVELS = ['portable', 'avx2', 'avx512'] as const;

export type Method = (typeof METHODS)[number];
export type TeacherSource = (typeof TEACHER_SOURCES)[number];
export type TeacherWeighting = (typeof TEACHER_WEIGHTINGS)[number];
export type ScheduleName = (typeof SCHEDULES)[number];
export type AverageTeacher = (typeof AVERAGE_TEACHERS)[number];
export type SoftTargetsName = (typeof SOFT_TARGETS)[number];
export type ResetMode = (typeof RESET_MODES)[number];
export type ConvInit = (typeof CONV_INITS)[number];
export type DeviceName = (typeof DEVICE_NAMES)[number];
export type Device = (typeof DEVICES)[number];
export type Precision = (typeof PRECISIONS)[number];
export type ScoreMetric = (typeof SCORE_METRICS)[number];
export type LabelSet = (typeof LABEL_SETS)[number];
export type SimdLevel = (typeof SIMD_LEVELS)[number];

/** Whether `v` is one of `values` (narrows it to the list's type). */
export function isOneOf<T extends string>(values: readonly T[], v: unknown): v is T {
  return typeof v === 'string' && (values as readonly string[]).includes(v);
}
