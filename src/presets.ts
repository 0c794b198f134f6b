// Named training recipes: option layers over DEFAULT_CONFIG that the study found to pay in one
// regime but not everywhere, so they are offered by name and not made the default. Each names
// its evidence. `train --preset NAME` applies one under --config and the flags (which override
// it); in code, spread `TRAIN_PRESETS[name].options` into train()'s options. The study grids use
// the same layers for their arms, so a preset is what was measured, option for option.
import type { TrainConfig } from './config.js';

export interface TrainPreset {
  /** One line for --help and docs/cli.md: what it does, where it pays, what it costs. */
  readonly describe: string;
  /** Where the evidence is (a page of docs/study/). */
  readonly evidence: string;
  readonly options: Readonly<Partial<TrainConfig>>;
}

export const TRAIN_PRESETS = {
  'noisy-labels': {
    describe:
      'labels with errors: plain training plus last-mini-batch distillation (DLB, T = 3); about +1 point over ' +
      'plain training and label smoothing under 20% label noise, no clear gain on clean labels; twice the compute per epoch',
    evidence: 'docs/study/round2.md',
    options: { method: 'base', softTargets: 'dlb', dlbTemperature: 3, dlbWeight: 1 },
  },
} as const satisfies Record<string, TrainPreset>;

export type PresetName = keyof typeof TRAIN_PRESETS;
export const PRESET_NAMES = Object.keys(TRAIN_PRESETS) as PresetName[];
