// Weight averages of the student along its trajectory: an exponential moving average (EMA, updated
// every step) and stochastic weight averaging (SWA, one model per epoch at the end of training).
// The averages are plain arrays in the student's layout; a teacher or an evaluable model is made
// from them by a shadow model of the same graph (its BN folded on snapshot), and SWA's batch-norm
// statistics are recomputed on the training split, as torch.optim.swa_utils.update_bn does.
import { loadBinding, type NativeModel, type NativeTeacher, type TensorInfo } from '../binding.js';
import { gatherBatch } from '../data/batches.js';
import type { Dataset } from '../data/dataset.js';
import type { ModelSpec } from '../models/spec.js';

/** Buffer offsets that hold counters (num_batches_tracked): copied from the student, never averaged. */
export function counterOffsets(tensors: readonly TensorInfo[]): number[] {
  return tensors.filter((t) => t.kind === 'buffer' && t.name.endsWith('.num_batches_tracked')).map((t) => t.offset);
}

/**
 * The EMA of the weights and BN buffers (mean teacher, Tarvainen & Valpola 2017): after update s
 * (s = 1, 2, ...), ema <- d ema + (1 - d) student with d = min(decay, s / (s + 1)), so the average
 * starts as the plain mean of the weights seen so far (from the initialisation on) and becomes
 * exponential once 1 / (s + 1) < 1 - decay.
 */
export class Ema {
  constructor(
    readonly decay: number,
    readonly params: Float32Array,
    readonly buffers: Float32Array,
    public steps = 0,
  ) {}

  /** The weight on the old average at update number `step` (1-based). */
  static decayAt(decay: number, step: number): number {
    return Math.min(decay, step / (step + 1));
  }

  update(params: Float32Array, buffers: Float32Array, counters: readonly number[]): void {
    if (params.length !== this.params.length || buffers.length !== this.buffers.length)
      throw new RangeError(
        `Expected ${this.params.length} parameters and ${this.buffers.length} buffer values for the EMA but received ${params.length} and ${buffers.length}`,
      );
    this.steps += 1;
    const d = Ema.decayAt(this.decay, this.steps),
      e = 1 - d;
    const p = this.params,
      b = this.buffers;
    for (let i = 0; i < p.length; ++i) p[i] = d * p[i] + e * params[i];
    for (let i = 0; i < b.length; ++i) b[i] = d * b[i] + e * buffers[i];
    for (const o of counters) b[o] = buffers[o];
  }
}

/**
 * SWA's running mean of the parameters (Izmailov et al. 2018; torch.optim.swa_utils.AveragedModel):
 * the n-th model added moves the average by (model - average) / n. BN statistics are not averaged:
 * they are recomputed for the averaged weights (recomputeBatchNorm).
 */
export class Swa {
  constructor(
    public params: Float32Array | null = null,
    public count = 0,
  ) {}

  add(params: Float32Array): void {
    if (this.params === null) {
      this.params = Float32Array.from(params);
    } else {
      if (params.length !== this.params.length)
        throw new RangeError(`Expected ${this.params.length} parameters for SWA but received ${params.length}`);
      const a = this.params,
        n = this.count + 1;
      for (let i = 0; i < a.length; ++i) a[i] += (params[i] - a[i]) / n;
    }
    this.count += 1;
  }
}

/**
 * The graph with every batch norm's momentum set to 1: a training forward of it leaves the batch's
 * own statistics in the running buffers, which recomputeBatchNorm averages. Folding ignores the
 * momentum, so the same shadow model also makes the averages' teachers.
 */
export function shadowSpec(spec: ModelSpec): ModelSpec {
  return { ...spec, nodes: spec.nodes.map((n) => (n.op === 'bn' ? { ...n, momentum: 1 } : { ...n })) };
}

/** A teacher (BN folded) holding the given weights and buffers, made by the shadow model. */
export function averageTeacher(shadow: NativeModel, params: Float32Array, buffers: Float32Array): NativeTeacher {
  shadow.setParams(params);
  shadow.setBuffers(buffers);
  return shadow.snapshot();
}

export interface BatchNormPass {
  data: Dataset;
  mean: number[];
  std: number[];
  batchSize: number;
  /** Random crop (padding) + flip as in training, or the plain images. */
  augment: { pad: number } | null;
  /** Augmentation seed of batch i. */
  seedOf: (i: number) => number;
}

/**
 * BN statistics for `params`, recomputed on the training split (update_bn with momentum None): the
 * shadow model (momentum 1, shadowSpec) runs every batch in training mode, in order, and each BN's
 * running mean and (unbiased) variance become the mean over batches of the batches' statistics. A
 * last batch of one image is left out (it has no variance). Counters are set to the batch count.
 * Yields to the event loop between batches.
 */
export async function recomputeBatchNorm(
  shadow: NativeModel,
  params: Float32Array,
  pass: BatchNormPass,
): Promise<Float32Array> {
  const { augmentBatch, normalizeBatch } = loadBinding();
  const ds = pass.data,
    per = ds.channels * ds.height * ds.width;
  const bs = Math.min(pass.batchSize, ds.n);
  shadow.setParams(params);
  const tensors = shadow.tensors().filter((t) => t.kind === 'buffer');
  const counters = new Set(counterOffsets(tensors));
  const sum = new Float64Array(shadow.info().numBufferFloats);
  const x = new Float32Array(bs * per),
    images = new Uint8Array(bs * per),
    labels = new Int32Array(bs);
  const m = Float32Array.from(pass.mean),
    s = Float32Array.from(pass.std);
  let batches = 0;
  for (let i = 0, start = 0; start < ds.n; ++i, start += bs) {
    const b = Math.min(bs, ds.n - start);
    if (b < 2) break;
    gatherBatch(
      ds,
      Int32Array.from({ length: b }, (_, k) => start + k),
      images,
      labels,
    );
    const xb = x.subarray(0, b * per);
    if (pass.augment)
      augmentBatch(xb, images, b, ds.channels, ds.height, ds.width, pass.augment.pad, true, m, s, pass.seedOf(i));
    else normalizeBatch(xb, images, b, ds.channels, ds.height, ds.width, m, s);
    shadow.forwardSync(xb, b, true);
    const got = shadow.getBuffers();
    for (let j = 0; j < sum.length; ++j) sum[j] += got[j];
    batches += 1;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  if (batches === 0)
    throw new RangeError(`Expected at least 2 training images to recompute batch-norm statistics but received ${ds.n}`);
  const out = new Float32Array(sum.length);
  for (let j = 0; j < sum.length; ++j) out[j] = counters.has(j) ? batches : sum[j] / batches;
  return out;
}
