// The typed native surface and the loader that finds the compiled addon. Everything above this file
// talks to native code only through these types.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { ConfigError } from './errors.js';
import type { ModelSpec } from './models/spec.js';
import {
  SIMD_LEVELS,
  isOneOf,
  type ConvInit,
  type DeviceName,
  type Precision,
  type ResetMode,
  type SimdLevel,
} from './options.js';

// The native surface speaks the option types of options.ts; re-exported for its callers.
export type { DeviceName, SimdLevel } from './options.js';

export interface TensorInfo {
  name: string;
  shape: number[];
  /** Offset into getParams() (weights, biases) or getBuffers() (kind 'buffer'). */
  offset: number;
  size: number;
  /** Index of the graph node that owns it. */
  node: number;
  /** Parametric layer (a conv or linear with its BN); the unit of reset. -1 for none. */
  layer: number;
  kind: 'weight' | 'bias' | 'buffer';
}

export interface NativeModelInfo {
  numParams: number;
  numBufferFloats: number;
  numClasses: number;
  numLayers: number;
  macsPerImage: number;
  /** Bytes of device memory the model holds now (weights, optimiser state, batch buffers). */
  deviceBytes: number;
  device: DeviceName;
}

export interface NativeTeacherInfo {
  numParams: number;
  numBufferFloats: number;
  numClasses: number;
  /** Bytes of device memory the teacher holds (its folded weights; no per-batch memory). */
  deviceBytes: number;
  device: DeviceName;
}

/** uint8 images (N, C, H, W) resident on a device (uploaded once); batches are made from them there. */
export interface NativeDeviceImages {
  info(): { count: number; channels: number; height: number; width: number; deviceBytes: number; device: DeviceName };
  dispose(): void;
  isDisposed(): boolean;
}

/**
 * A batch made on the device from resident images: the images at `indices`, normalised with
 * mean/std (one per channel) and, with `augment`, cropped and flipped with the same draws as
 * augmentBatch(..., pad, flip, ..., seed) makes on the host.
 */
export interface ImageBatch {
  images: NativeDeviceImages;
  indices: Int32Array;
  mean: Float32Array;
  std: Float32Array;
  augment?: { pad: number; flip: boolean; seed: number };
}

export interface TrainStepOptions {
  /** The normalised batch (B, C, H, W) and B; or, instead of both, `images`. */
  x?: Float32Array;
  batch?: number;
  images?: ImageBatch;
  labels: Int32Array;
  teachers?: NativeTeacher[];
  /** (K, batch) per-sample teacher weights; normalised per sample natively. Omit for uniform. */
  teacherWeights?: Float32Array;
  /** Weight each teacher per sample by its confidence, max_c softmax(z/T) (instead of teacherWeights). */
  confidenceWeights?: boolean;
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
  decoupled: boolean;
  labelSmoothing: number;
  distillWeight: number;
  temperature: number;
  /** Weight of the cross-entropy term (default 1; PS-KD: 1 - alpha_t). */
  ceWeight?: number;
  /**
   * Per-sample soft targets apart from the teachers (PS-KD, DLB): logits (rows, classes) for the
   * batch's first `rows` samples; adds weight * T^2 * KL(softmax(logits/T) || softmax(student/T)),
   * averaged over those rows (stats.targetLoss, before the weight).
   */
  targets?: { logits: Float32Array; rows: number; temperature: number; weight: number };
  /** Return the training forward's logits (batch, classes) as stats.logits. */
  returnLogits?: boolean;
  dropoutSeed: number;
}

export interface TrainStepStats {
  loss: number;
  ceLoss: number;
  distillLoss: number;
  /** The soft-target term's T^2 KL, before its weight (0 without targets). */
  targetLoss: number;
  /** With returnLogits: the training forward's logits (batch, classes). */
  logits?: Float32Array;
  correct: number;
  gradNorm: number;
  /** false when the loss or a gradient was NaN/Inf; the weights were then left untouched. */
  finite: boolean;
}

/** What evaluation needs: eval-mode logits of a batch, off the event loop. */
export interface LogitSource {
  info(): { numClasses: number };
  forward(x: Float32Array, batch: number): Promise<Float32Array>;
  /** The same from a batch made on the device from resident images. */
  forwardImages(batch: ImageBatch): Promise<Float32Array>;
}

/**
 * How convolutions and linear layers are computed. precision 'bf16': bf16 operands on a GPU's tensor
 * cores with float32 accumulation (weights, optimiser state and every other op stay float32); the
 * CPU backend refuses it. deterministic false: cuDNN may use its faster non-reproducible algorithms.
 */
export interface MathMode {
  precision: Precision;
  deterministic: boolean;
}

/** Settable compute mode (see MathMode); a snapshot starts with its model's. */
export interface MathHolder {
  /** Throws (with what to do) when the device cannot compute that way. */
  setMath(math: Partial<MathMode>): void;
  math(): MathMode;
}

/** Weights that can be read and written by tensor name (checkpoints, export). */
export interface TensorHolder {
  tensors(): TensorInfo[];
  getParams(): Float32Array;
  setParams(p: Float32Array): void;
  getBuffers(): Float32Array;
  setBuffers(b: Float32Array): void;
}

/**
 * An inference-only snapshot of a model (a teacher): weights resident on the device with each
 * BatchNorm folded into the conv/linear before it, and no gradients, optimiser state or
 * per-batch memory. tensors() lists the folded layout.
 */
export interface NativeTeacher extends LogitSource, TensorHolder, MathHolder {
  info(): NativeTeacherInfo;
  forwardSync(x: Float32Array, batch: number): Float32Array;
  dispose(): void;
  isDisposed(): boolean;
}

/** Where a model's time went since setProfiling(true) (each timed call is synchronised). */
export interface NativeProfile {
  steps: number;
  forwards: number;
  teachersMs: number;
  /** The loss and its gradient, with the zeroing of the gradients. */
  lossMs: number;
  /** Finiteness checks and the SGD update. */
  updateMs: number;
  transferMs: number;
  /** Per graph node (1..N-1), summed over calls. */
  nodes: { node: number; forwardMs: number; backwardMs: number }[];
}

/** Bytes a training step needs on the model's device, by part, and what the device has. */
export interface MemoryPlan {
  weights: number;
  activations: number;
  workspace: number;
  teachers: number;
  total: number;
  available: number;
  availableSource: string;
}

export interface NativeModel extends LogitSource, TensorHolder, MathHolder {
  info(): NativeModelInfo;
  /** What a step of `batch` with `teachers` teachers will need (checked before a GPU run). */
  memoryPlan(batch: number, teachers: number): MemoryPlan;
  nodeShapes(): [number, number, number][];
  getGrads(): Float32Array;
  getMomentum(): Float32Array;
  setMomentum(m: Float32Array): void;
  reinitLayers(layers: number[], seed: number, mode: ResetMode, shrink?: number, perturb?: number): void;
  /** A teacher holding the current weights, copied (and BN-folded) on the device. */
  snapshot(): NativeTeacher;
  /** Times every node and the step's phases from now on (clears what was gathered). */
  setProfiling(on: boolean): void;
  profile(): NativeProfile;
  forwardSync(x: Float32Array, batch: number, training?: boolean): Float32Array;
  trainStep(opts: TrainStepOptions): Promise<TrainStepStats>;
  dispose(): void;
  isDisposed(): boolean;
}

export interface BackendStatus {
  name: DeviceName;
  compiled: boolean;
  usable: boolean;
  /** The device when usable; otherwise why not, in the driver's or loader's own words. */
  detail: string;
  /** The libraries it was built against and runs with, and whether they agree ('' when none: cpu). */
  libraries: string;
}

export interface RuntimeInfo {
  compiledBackends: DeviceName[];
  usableBackends: DeviceName[];
  backends: BackendStatus[];
  cudaStatus: string;
  cpuFeatures: string[];
  gemmKernel: string;
  /** The SIMD path each kernel family runs: { gemm: 'avx512', conv: 'avx2', batchnorm: 'avx2', pool: 'avx2' }. */
  simdPaths: Record<string, SimdLevel>;
  /** The highest instruction-set level the kernels may use (the CPU's, capped by DFL_SIMD). */
  simdLevel: SimdLevel;
  /** DFL_SIMD as the addon read it ('' when unset). */
  simdRequest: string;
  hardwareThreads: number;
  threads: number;
  openmp: boolean;
  buildSystem: string;
}

export interface NativeBinding {
  /** convInit: how fresh conv weights are drawn, here and at every reset (TrainConfig.convInit). */
  Model: new (spec: ModelSpec, seed?: number, device?: DeviceName, convInit?: ConvInit) => NativeModel;
  /** An empty teacher (zero weights in the folded layout) to restore saved teacher weights into. */
  Teacher: new (spec: ModelSpec, device?: DeviceName) => NativeTeacher;
  /** Copies images (count, channels, height, width) to the device once. */
  DeviceImages: new (
    images: Uint8Array,
    count: number,
    channels: number,
    height: number,
    width: number,
    device?: DeviceName,
  ) => NativeDeviceImages;
  augmentBatch(
    out: Float32Array,
    images: Uint8Array,
    batch: number,
    channels: number,
    height: number,
    width: number,
    pad: number,
    flip: boolean,
    mean: Float32Array,
    std: Float32Array,
    seed: number,
  ): void;
  normalizeBatch(
    out: Float32Array,
    images: Uint8Array,
    batch: number,
    channels: number,
    height: number,
    width: number,
    mean: Float32Array,
    std: Float32Array,
  ): void;
  setThreads(n: number): void;
  getThreads(): number;
  runtimeInfo(): RuntimeInfo;
}

export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Where the addon is looked for, in order. DFL_NATIVE_ADDON names a file explicitly. */
export function addonCandidates(): string[] {
  const list: string[] = [];
  if (process.env.DFL_NATIVE_ADDON) list.push(path.resolve(process.env.DFL_NATIVE_ADDON));
  list.push(path.join(packageRoot, 'build', 'Release', 'dfl_native.node'));
  list.push(path.join(packageRoot, 'build', 'Debug', 'dfl_native.node'));
  return list;
}

let cached: NativeBinding | undefined;

/** Loads the native addon once; throws an Error that says why and what to do. */
/** "gemm avx512, conv-rows avx512, conv avx2, batchnorm avx2, pool avx2": which SIMD path each kernel family runs, for reports. */
export function describeSimd(rt: RuntimeInfo): string {
  const paths = Object.entries(rt.simdPaths)
    .map(([family, level]) => `${family} ${level}`)
    .join(', ');
  return rt.simdRequest ? `${paths} (DFL_SIMD=${rt.simdRequest})` : paths;
}

/** DFL_SIMD must name a level: a typo would silently run the full instruction set. */
function checkSimdRequest(): void {
  const v = process.env.DFL_SIMD;
  if (v === undefined || v === '' || isOneOf(SIMD_LEVELS, v)) return;
  throw new ConfigError(
    `Expected one of ${SIMD_LEVELS.join(', ')} for the environment variable DFL_SIMD but received '${v}'; unset it to use every instruction set this CPU has`,
  );
}

export function loadBinding(): NativeBinding {
  if (cached) return cached;
  checkSimdRequest();
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const file of addonCandidates()) {
    if (!fs.existsSync(file)) {
      tried.push(`${file} (not found)`);
      continue;
    }
    try {
      cached = require(file) as NativeBinding;
      return cached;
    } catch (err) {
      tried.push(`${file} (${(err as Error).message.split('\n')[0]})`);
    }
  }
  throw new Error(
    'dfl-native could not load its native addon.\n' +
      `Tried:\n  ${tried.join('\n  ')}\n` +
      'Possible solutions:\n' +
      '  - build it: `npm run build:native` in the dfl-native package folder (needs g++ and cmake)\n' +
      '  - or with node-gyp: `npx node-gyp rebuild`\n' +
      '  - set DFL_NATIVE_ADDON to the path of a built dfl_native.node',
  );
}
