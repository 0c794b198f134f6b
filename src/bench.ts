// Throughput of a model on a device: a training step, an eval forward (what one teacher costs) and a
// whole DFL step (K teacher forwards + the student's step with the ensemble KL), each timed after a
// warm-up over several repetitions (median and spread), with FLOPs and peak memory.
//
// FLOPs per image: a forward is 2 x MACs (convs and linears); a training step counts 3 forwards
// (forward, and a backward that computes input and weight gradients); a DFL step is a training step
// plus K forwards. Achieved GFLOP/s = those FLOPs / the median time. Peak memory is the process's
// peak resident set (Node's own ~40-60 MB included).
import { loadBinding, type NativeProfile, type SimdLevel } from './binding.js';

import { checkOption, DEFAULT_CONFIG } from './config.js';
import { chooseDevice } from './device.js';
import { ConfigError } from './errors.js';
import { resolveModelSpec } from './models/resolve.js';
import type { ModelSpec } from './models/spec.js';
import type { Device, DeviceName, Precision } from './options.js';

/**
 * What only bench chooses; every other option it leaves out (batch size, teachers, device, precision,
 * the optimiser's settings) is the train config's default (DEFAULT_CONFIG). width 1: a zoo model at
 * its published size; a CIFAR-sized synthetic batch.
 */
export const BENCH_DEFAULTS = Object.freeze({ width: 1, reps: 10, warmup: 3, imageSize: 32, classes: 10 });

/**
 * The step's learning rate: small, so repeating one fixed batch over every repetition stays finite
 * (a step that is not finite skips its update, and would time less work). The timing does not
 * depend on its value.
 */
const BENCH_LR = 1e-3;

export interface BenchOptions {
  /** Zoo name or a path to a JSON model spec. */
  model: string;
  /** Width multiplier of a zoo model. */
  width?: number;
  batchSize?: number;
  device?: Device;
  /** 'bf16': convolutions and linear layers on the GPU's tensor cores (see TrainConfig.precision). */
  precision?: Precision;
  /** false: cuDNN may use its non-deterministic algorithms (GPU). */
  deterministic?: boolean;
  /** Native threads; 0 = all cores. */
  threads?: number;
  /** Teachers in the DFL step. */
  teachers?: number;
  reps?: number;
  warmup?: number;
  /** Image size and classes of the synthetic batch (zoo models). */
  imageSize?: number;
  classes?: number;
  /** Also time every layer (slower: each layer is synchronised). */
  profile?: boolean;
  /** Receives a note on the device chosen (auto falling back to the CPU, and why). */
  log?: (message: string) => void;
}

export interface PhaseTiming {
  ms_median: number;
  ms_min: number;
  ms_max: number;
  img_s: number;
  gflop_s: number;
}

export interface LayerTime {
  node: number;
  /** "conv features.3" etc. */
  layer: string;
  /** Output (C,H,W). */
  shape: [number, number, number];
  forward_ms: number;
  backward_ms: number;
}

export interface BenchResult {
  model: string;
  width: number;
  batch: number;
  device: DeviceName;
  precision: Precision;
  deterministic: boolean;
  threads: number;
  /** The SIMD path each CPU kernel family ran (device cpu). */
  simd_paths?: Record<string, SimdLevel>;
  teachers: number;
  reps: number;
  params: number;
  macs_per_image: number;
  /** Forward FLOPs of one image. */
  gflops_per_img: number;
  train: PhaseTiming;
  infer: PhaseTiming;
  dfl: PhaseTiming;
  train_img_s: number;
  infer_img_s: number;
  dfl_img_s: number;
  peak_rss_mb: number;
  /** Device memory of the student (weights, optimiser state, batch buffers) and of one teacher. */
  student_mb: number;
  teacher_mb: number;
  /** Per-layer time of one training step (with --profile). */
  layers?: LayerTime[];
  /** Other phases of one training step (with --profile), ms. */
  phases?: { loss_ms: number; update_ms: number; transfer_ms: number };
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function timeIt(reps: number, warmup: number, fn: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < warmup; ++i) await fn();
  const out: number[] = [];
  for (let i = 0; i < reps; ++i) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

function phase(times: number[], batch: number, flopsPerImg: number): PhaseTiming {
  const ms = median(times);
  return {
    ms_median: ms,
    ms_min: Math.min(...times),
    ms_max: Math.max(...times),
    img_s: (batch * 1000) / ms,
    gflop_s: (batch * flopsPerImg) / (ms * 1e6),
  };
}

/** A synthetic but fixed batch: the same numbers every run. */
export function batchOf(spec: ModelSpec, batch: number, classes: number): { x: Float32Array; labels: Int32Array } {
  const per = spec.in_channels * spec.height * spec.width;
  return {
    x: Float32Array.from({ length: batch * per }, (_, i) => Math.sin(i * 0.37) * 1.3),
    labels: Int32Array.from({ length: batch }, (_, i) => i % classes),
  };
}

function layerTimes(spec: ModelSpec, shapes: [number, number, number][], p: NativeProfile): LayerTime[] {
  const steps = Math.max(1, p.steps);
  return p.nodes.map((n) => {
    const node = spec.nodes[n.node];
    return {
      node: n.node,
      layer: `${node.op}${node.name ? ` ${node.name}` : ''}`,
      shape: shapes[n.node],
      forward_ms: n.forwardMs / steps,
      backward_ms: n.backwardMs / steps,
    };
  });
}

export async function benchmark(o: BenchOptions): Promise<BenchResult> {
  const b = loadBinding();
  const width = o.width ?? BENCH_DEFAULTS.width,
    batch = checkOption('batchSize', o.batchSize ?? DEFAULT_CONFIG.batchSize),
    K = o.teachers ?? DEFAULT_CONFIG.teachers;
  const reps = o.reps ?? BENCH_DEFAULTS.reps,
    warmup = o.warmup ?? BENCH_DEFAULTS.warmup;
  const size = o.imageSize ?? BENCH_DEFAULTS.imageSize,
    classes = o.classes ?? BENCH_DEFAULTS.classes;
  // teachers 0 is allowed here (the DFL step is then a training step), unlike in a training run
  for (const [name, v, ok] of [
    ['teachers', K, K >= 0],
    ['reps', reps, reps >= 1],
    ['warmup', warmup, warmup >= 0],
  ] as const)
    if (!Number.isInteger(v) || !ok) throw new ConfigError(`Expected a valid integer for ${name} but received ${v}`);
  const precision = o.precision ?? DEFAULT_CONFIG.precision;
  const { device, note } = chooseDevice(o.device ?? DEFAULT_CONFIG.device, precision, b.runtimeInfo());
  if (note) o.log?.(note);
  if (o.threads !== undefined) b.setThreads(o.threads);
  const spec = resolveModelSpec(o.model, {
    numClasses: classes,
    inChannels: 3,
    height: size,
    width: size,
    width_multiplier: width,
  });
  const student = new b.Model(spec, 1, device, DEFAULT_CONFIG.convInit);
  const math = { precision, deterministic: o.deterministic ?? DEFAULT_CONFIG.deterministic };
  try {
    student.setMath(math);
  } catch (e) {
    student.dispose();
    throw new ConfigError(`${(e as Error).message.replace(/^dfl-native: /, '')}`);
  }
  const teachers = Array.from({ length: K }, () => student.snapshot()); // compute as the student does
  try {
    const info = student.info();
    const { x, labels } = batchOf(spec, batch, info.numClasses); // a JSON spec brings its own class count
    const c = DEFAULT_CONFIG;
    const step = {
      x,
      labels,
      batch,
      lr: BENCH_LR,
      momentum: c.momentum,
      weightDecay: c.weightDecay,
      nesterov: c.nesterov,
      decoupled: c.decoupledWeightDecay,
      labelSmoothing: c.labelSmoothing,
      temperature: c.temperature,
      dropoutSeed: 1,
    };
    const fwdFlops = 2 * info.macsPerImage;
    const train = phase(
      await timeIt(reps, warmup, () => student.trainStep({ ...step, distillWeight: 0 })),
      batch,
      3 * fwdFlops,
    );
    const infer = phase(await timeIt(reps, warmup, () => student.forward(x, batch)), batch, fwdFlops);
    const dfl = phase(
      await timeIt(reps, warmup, () => student.trainStep({ ...step, teachers, distillWeight: 1 })),
      batch,
      (3 + K) * fwdFlops,
    );
    let layers: LayerTime[] | undefined, phases: BenchResult['phases'];
    if (o.profile) {
      student.setProfiling(true);
      for (let i = 0; i < reps; ++i) await student.trainStep({ ...step, distillWeight: 0 });
      const p = student.profile();
      student.setProfiling(false);
      layers = layerTimes(spec, student.nodeShapes(), p);
      const n = Math.max(1, p.steps);
      phases = { loss_ms: p.lossMs / n, update_ms: p.updateMs / n, transfer_ms: p.transferMs / n };
    }
    return {
      model: o.model,
      width,
      batch,
      device,
      ...math,
      threads: b.getThreads(),
      ...(device === 'cpu' ? { simd_paths: b.runtimeInfo().simdPaths } : {}),
      teachers: K,
      reps,
      params: info.numParams,
      macs_per_image: info.macsPerImage,
      gflops_per_img: fwdFlops / 1e9,
      train,
      infer,
      dfl,
      train_img_s: train.img_s,
      infer_img_s: infer.img_s,
      dfl_img_s: dfl.img_s,
      peak_rss_mb: process.resourceUsage().maxRSS / 1024,
      student_mb: student.info().deviceBytes / 1048576,
      teacher_mb: K ? teachers[0].info().deviceBytes / 1048576 : 0,
      ...(layers ? { layers, phases } : {}),
    };
  } finally {
    for (const t of teachers) t.dispose();
    student.dispose();
  }
}
