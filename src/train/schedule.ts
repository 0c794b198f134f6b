// Schedules as small pure functions: the learning rate of a step, and the reset plan of an epoch.
import type { ScheduleName } from '../config.js';

export interface LrSchedule {
  schedule: ScheduleName;
  lr: number;
  epochs: number;
  warmupEpochs: number;
  milestones: number[];
  gamma: number;
}

/**
 * Learning rate at fractional epoch t in [0, epochs) (t = epoch - 1 + batch / batches).
 * Linear warmup from lr/warmup-steps to lr over warmupEpochs, then cosine to 0 over the remaining
 * epochs, steps of gamma after each milestone epoch, or constant.
 */
export function lrAt(s: LrSchedule, t: number): number {
  if (s.warmupEpochs > 0 && t < s.warmupEpochs) return (s.lr * Math.max(t, 1e-3)) / s.warmupEpochs;
  switch (s.schedule) {
    case 'constant':
      return s.lr;
    case 'step': {
      const passed = s.milestones.filter((m) => t >= m).length;
      return s.lr * s.gamma ** passed;
    }
    case 'cosine': {
      const span = Math.max(s.epochs - s.warmupEpochs, 1e-9);
      const p = Math.min(Math.max((t - s.warmupEpochs) / span, 0), 1);
      return 0.5 * s.lr * (1 + Math.cos(Math.PI * p));
    }
  }
}

/**
 * DFL reset rule: before epoch e (1-based), reset when e > 1 and (e - 1) is a multiple of cycle, and
 * (with `until`, a fraction of `epochs`) only while (e - 1) < until * epochs: a reset late in a
 * decaying schedule leaves the fresh head too little learning rate to recover.
 */
export function isResetEpoch(epoch: number, cycle: number, enabled: boolean, until = 1, epochs = Infinity): boolean {
  return enabled && epoch > 1 && (epoch - 1) % cycle === 0 && (until >= 1 || epoch - 1 < until * epochs);
}

/** The head: the last `depth` parametric layers of a model with `numLayers` of them. */
export function headLayers(numLayers: number, depth: number): number[] {
  const d = Math.min(Math.max(depth, 0), numLayers);
  return Array.from({ length: d }, (_, i) => numLayers - d + i);
}
