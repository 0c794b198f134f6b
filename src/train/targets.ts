// Soft targets made from the student's own earlier predictions: PS-KD (Kim et al. 2021, the previous
// epoch's prediction of each sample) and DLB (Shen et al. 2022, the previous step's prediction of
// the images a step carries over). Both feed the training step's soft-target term (TrainStepOptions
// .targets); this file only keeps and gathers the logits.

/** PS-KD's weight on the previous predictions in epoch `epoch` (1-based): alpha_T * epoch / epochs. */
export function pskdWeight(alphaT: number, epoch: number, epochs: number): number {
  return (alphaT * epoch) / epochs;
}

/**
 * A sample with no earlier prediction (one left out of every step so far, as a lone last image
 * is) gets its label as the target: this logit on the label and 0 elsewhere, one-hot to within
 * exp(-50) at T = 1.
 */
export const ONE_HOT_LOGIT = 50;

/** The latest training-forward logits of every training sample (PS-KD), and which have one. */
export class PredictionStore {
  readonly logits: Float32Array;
  readonly seen: Uint8Array;

  constructor(
    readonly n: number,
    readonly classes: number,
    logits?: Float32Array,
    seen?: Uint8Array,
  ) {
    this.logits = logits ?? new Float32Array(n * classes);
    this.seen = seen ?? new Uint8Array(n);
    if (this.logits.length !== n * classes || this.seen.length !== n)
      throw new RangeError(
        `Expected ${n * classes} logits and ${n} flags for the PS-KD predictions but received ${this.logits.length} and ${this.seen.length}`,
      );
  }

  /** The targets' logits (b, classes) of the samples `indices`, labelled `labels`. */
  gather(indices: ArrayLike<number>, labels: ArrayLike<number>): Float32Array {
    const nc = this.classes,
      out = new Float32Array(indices.length * nc);
    for (let k = 0; k < indices.length; ++k) {
      const i = indices[k];
      if (this.seen[i]) out.set(this.logits.subarray(i * nc, (i + 1) * nc), k * nc);
      else out[k * nc + labels[k]] = ONE_HOT_LOGIT;
    }
    return out;
  }

  /** Records a step's logits (b, classes) of the samples `indices`. */
  record(indices: ArrayLike<number>, logits: Float32Array): void {
    const nc = this.classes;
    for (let k = 0; k < indices.length; ++k) {
      this.logits.set(logits.subarray(k * nc, (k + 1) * nc), indices[k] * nc);
      this.seen[indices[k]] = 1;
    }
  }
}
