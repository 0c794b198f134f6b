// Schedules as small pure functions: the learning rate of a step, and the reset plan of an epoch.
import { DEFAULT_CONFIG, type ScheduleName } from '../config.js';

export interface LrSchedule {
  schedule: ScheduleName;
  lr: number;
  epochs: number;
  warmupEpochs: number;
  milestones: number[];
  gamma: number;
  /** cosine-restarts: epochs per cycle (TrainConfig.restartCycle). */
  restartCycle?: number;
  /** SWA: from the first averaged epoch on (swaFirstEpoch of swaStart), the lr is swaLr when it is set. */
  swaStart?: number;
  swaLr?: number;
}

/**
 * Learning rate at fractional epoch t in [0, epochs) (t = epoch - 1 + batch / batches).
 * Linear warmup from lr/warmup-steps to lr over warmupEpochs, then cosine to 0 over the remaining
 * epochs, steps of gamma after each milestone epoch, constant, or cosine from lr to 0 within every
 * restartCycle epochs (cycles counted from t = 0; warmup overrides the start of the first). With
 * SWA and swaLr, the epochs it averages run at swaLr.
 */
export function lrAt(s: LrSchedule, t: number): number {
  if (s.swaLr !== undefined && t >= swaFirstEpoch(s.swaStart ?? 1, s.epochs) - 1) return s.swaLr;
  if (s.warmupEpochs > 0 && t < s.warmupEpochs) return (s.lr * Math.max(t, 1e-3)) / s.warmupEpochs;
  switch (s.schedule) {
    case 'cosine-restarts': {
      const cycle = s.restartCycle ?? DEFAULT_CONFIG.restartCycle;
      const p = (t % cycle) / cycle;
      return 0.5 * s.lr * (1 + Math.cos(Math.PI * p));
    }
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
 * The first epoch (1-based) SWA averages: the first after the swaStart fraction of the epochs
 * (0.75 of 20: epoch 16); epochs + 1 (none) at swaStart 1. The 1e-9 absorbs float products such as
 * 0.7 * 20 = 14.000000000000002.
 */
export function swaFirstEpoch(swaStart: number, epochs: number): number {
  return Math.floor(swaStart * epochs + 1e-9) + 1;
}

/** Whether epoch (1-based) ends a cycle of the cosine-restarts schedule (its cycle-end snapshot). */
export function isCycleEnd(epoch: number, restartCycle: number): boolean {
  return epoch % restartCycle === 0;
}

/** The reset cycle in epochs: the restart cycle under cosine-restarts (resets at the restarts), else resetCycle. */
export function resetCycleOf(c: { schedule: ScheduleName; resetCycle: number; restartCycle: number }): number {
  return c.schedule === 'cosine-restarts' ? c.restartCycle : c.resetCycle;
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
