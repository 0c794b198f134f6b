// The typed native surface and the loader that finds the compiled addon. Everything above this file
// talks to native code only through these types.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { ModelSpec } from './models/spec.js';

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
}

export interface TrainStepOptions {
  x: Float32Array;
  labels: Int32Array;
  batch: number;
  teachers?: NativeModel[];
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
  dropoutSeed: number;
}

export interface TrainStepStats {
  loss: number;
  ceLoss: number;
  distillLoss: number;
  correct: number;
  gradNorm: number;
  /** false when the loss or a gradient was NaN/Inf; the weights were then left untouched. */
  finite: boolean;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tensors(): TensorInfo[];
  nodeShapes(): [number, number, number][];
  getParams(): Float32Array;
  setParams(p: Float32Array): void;
  getGrads(): Float32Array;
  getBuffers(): Float32Array;
  setBuffers(b: Float32Array): void;
  getMomentum(): Float32Array;
  setMomentum(m: Float32Array): void;
  reinitLayers(layers: number[], seed: number, mode: 'reinit' | 'shrink-perturb', shrink?: number, perturb?: number): void;
  forwardSync(x: Float32Array, batch: number, training?: boolean): Float32Array;
  forward(x: Float32Array, batch: number): Promise<Float32Array>;
  trainStep(opts: TrainStepOptions): Promise<TrainStepStats>;
  dispose(): void;
  isDisposed(): boolean;
}

export interface RuntimeInfo {
  compiledBackends: string[];
  usableBackends: string[];
  cudaStatus: string;
  cpuFeatures: string[];
  gemmKernel: string;
  hardwareThreads: number;
  threads: number;
  openmp: boolean;
  buildSystem: string;
}

export interface NativeBinding {
  Model: new (spec: ModelSpec, seed?: number) => NativeModel;
  augmentBatch(out: Float32Array, images: Uint8Array, batch: number, channels: number, height: number, width: number,
    pad: number, flip: boolean, mean: Float32Array, std: Float32Array, seed: number): void;
  normalizeBatch(out: Float32Array, images: Uint8Array, batch: number, channels: number, height: number, width: number,
    mean: Float32Array, std: Float32Array): void;
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
export function loadBinding(): NativeBinding {
  if (cached) return cached;
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
      '  - set DFL_NATIVE_ADDON to the path of a built dfl_native.node'
  );
}
