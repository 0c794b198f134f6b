// Evaluation: logits over a dataset in eval mode, and the metrics computed from them.
import { loadBinding, type LogitSource, type NativeDeviceImages } from '../binding.js';
import type { Dataset } from '../data/dataset.js';
import type { TestMetrics } from '../records.js';

/**
 * Eval-mode logits (N, classes) of a whole dataset, batch by batch off the event loop. With
 * `resident` (the same images already on the model's device) the batches are made there.
 */
/** Images per evaluation batch unless a caller says otherwise (no gradients are kept, so larger than a training batch). */
export const EVAL_BATCH_SIZE = 256;

export async function datasetLogits(
  model: LogitSource,
  ds: Dataset,
  mean: number[],
  std: number[],
  batchSize = EVAL_BATCH_SIZE,
  resident?: NativeDeviceImages,
): Promise<Float32Array> {
  const { normalizeBatch } = loadBinding();
  const nc = model.info().numClasses;
  const per = ds.channels * ds.height * ds.width;
  const out = new Float32Array(ds.n * nc);
  const m = Float32Array.from(mean),
    s = Float32Array.from(std);
  if (resident) {
    for (let start = 0; start < ds.n; start += batchSize) {
      const indices = Int32Array.from({ length: Math.min(batchSize, ds.n - start) }, (_, k) => start + k);
      out.set(await model.forwardImages({ images: resident, indices, mean: m, std: s }), start * nc);
    }
    return out;
  }
  const x = new Float32Array(Math.min(batchSize, ds.n) * per);
  for (let start = 0; start < ds.n; start += batchSize) {
    const b = Math.min(batchSize, ds.n - start);
    const xb = b * per === x.length ? x : x.subarray(0, b * per);
    normalizeBatch(xb, ds.images.subarray(start * per, (start + b) * per), b, ds.channels, ds.height, ds.width, m, s);
    out.set(await model.forward(xb, b), start * nc);
  }
  return out;
}

/** Row-wise softmax of (n, nc) logits. */
export function softmaxRows(logits: Float32Array, nc: number): Float32Array {
  const p = new Float32Array(logits.length);
  for (let o = 0; o < logits.length; o += nc) {
    let m = -Infinity;
    for (let c = 0; c < nc; ++c) m = Math.max(m, logits[o + c]);
    let s = 0;
    for (let c = 0; c < nc; ++c) s += Math.exp(logits[o + c] - m);
    for (let c = 0; c < nc; ++c) p[o + c] = Math.exp(logits[o + c] - m) / s;
  }
  return p;
}

export function argmaxRows(values: Float32Array, nc: number): Int32Array {
  const n = values.length / nc;
  const out = new Int32Array(n);
  for (let i = 0; i < n; ++i) {
    let best = 0;
    for (let c = 1; c < nc; ++c) if (values[i * nc + c] > values[i * nc + best]) best = c;
    out[i] = best;
  }
  return out;
}

export const ECE_BINS = 15;

/** Top-1, top-5, mean NLL and ECE (15 equal-width bins of max probability) from logits. */
export function metricsFromLogits(logits: Float32Array, labels: Int32Array, nc: number, perClass = false): TestMetrics {
  const n = labels.length;
  const probs = softmaxRows(logits, nc);
  let top1 = 0,
    top5 = 0,
    nll = 0;
  const binCount = new Float64Array(ECE_BINS),
    binConf = new Float64Array(ECE_BINS),
    binAcc = new Float64Array(ECE_BINS);
  const classTotal = new Float64Array(nc),
    classHit = new Float64Array(nc);
  const k = Math.min(5, nc);
  for (let i = 0; i < n; ++i) {
    const o = i * nc,
      y = labels[i];
    let pred = 0;
    for (let c = 1; c < nc; ++c) if (probs[o + c] > probs[o + pred]) pred = c;
    // Rank of the true class: how many classes score strictly higher.
    let higher = 0;
    for (let c = 0; c < nc; ++c) if (logits[o + c] > logits[o + y]) higher++;
    const hit = pred === y;
    top1 += hit ? 1 : 0;
    top5 += higher < k ? 1 : 0;
    nll -= Math.log(Math.max(probs[o + y], 1e-30));
    const conf = probs[o + pred];
    const bin = Math.min(ECE_BINS - 1, Math.floor(conf * ECE_BINS));
    binCount[bin] += 1;
    binConf[bin] += conf;
    binAcc[bin] += hit ? 1 : 0;
    classTotal[y] += 1;
    classHit[y] += hit ? 1 : 0;
  }
  let ece = 0;
  for (let b = 0; b < ECE_BINS; ++b) if (binCount[b] > 0) ece += Math.abs(binAcc[b] - binConf[b]) / Math.max(n, 1);
  const m: TestMetrics = {
    test_acc: top1 / Math.max(n, 1),
    test_top5: top5 / Math.max(n, 1),
    test_loss: nll / Math.max(n, 1),
    test_ece: ece,
    n,
  };
  if (perClass) m.per_class_acc = Array.from(classTotal, (t, c) => (t > 0 ? classHit[c] / t : NaN));
  return m;
}

export async function evaluate(
  model: LogitSource,
  ds: Dataset,
  mean: number[],
  std: number[],
  opts: { batchSize?: number; perClass?: boolean } = {},
): Promise<TestMetrics> {
  const logits = await datasetLogits(model, ds, mean, std, opts.batchSize ?? EVAL_BATCH_SIZE);
  return metricsFromLogits(logits, ds.labels, model.info().numClasses, opts.perClass ?? false);
}

/** Softmax probabilities (n, classes) for raw uint8 images (n, C, H, W). */
export async function predictProbs(
  model: LogitSource,
  images: Uint8Array,
  n: number,
  c: number,
  h: number,
  w: number,
  mean: number[],
  std: number[],
): Promise<Float32Array> {
  const ds: Dataset = {
    images,
    labels: new Int32Array(n),
    n,
    channels: c,
    height: h,
    width: w,
    classNames: [],
    source: 'predict',
  };
  const logits = await datasetLogits(model, ds, mean, std);
  return softmaxRows(logits, model.info().numClasses);
}

export interface Prediction {
  /** Classes by decreasing probability. */
  top: { label: string; index: number; prob: number }[];
}

/**
 * Classifies raw images with a loaded checkpoint: images are uint8 (n, C, H, W) at the checkpoint's
 * input size; returns the top-k classes of each.
 */
export async function predict(
  ckpt: {
    model: LogitSource;
    classNames: string[];
    mean: number[];
    std: number[];
    inputShape: [number, number, number];
  },
  images: Uint8Array,
  n: number,
  topK = 5,
): Promise<Prediction[]> {
  const [c, h, w] = ckpt.inputShape;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`Expected a positive integer for n but received ${n}`);
  if (images.length !== n * c * h * w)
    throw new RangeError(
      `Expected ${n * c * h * w} bytes (${n} images of ${c}x${h}x${w}) for images but received ${images.length}`,
    );
  const nc = ckpt.classNames.length;
  const probs = await predictProbs(ckpt.model, images, n, c, h, w, ckpt.mean, ckpt.std);
  const k = Math.max(1, Math.min(topK, nc));
  return Array.from({ length: n }, (_, i) => {
    const row = Array.from(probs.subarray(i * nc, (i + 1) * nc), (prob, index) => ({
      label: ckpt.classNames[index],
      index,
      prob,
    }));
    row.sort((a, b) => b.prob - a.prob);
    return { top: row.slice(0, k) };
  });
}
