// Checks an exported ONNX model against the native forward: the same normalised inputs through
// onnxruntime-node and through NativeModel.forwardSync (eval mode); the logits must agree within a
// relative tolerance: max |ort - native| <= tol * max |native| (the largest logit sets the scale).
import * as ort from 'onnxruntime-node';

import type { NativeModel } from '../binding.js';
import { CheckpointError } from '../errors.js';
import { ONNX_INPUT, ONNX_OUTPUT } from './onnx.js';

export interface VerifyOptions {
  /** Number of images to compare (default 4). */
  samples?: number;
  /** Relative tolerance (default 1e-4). */
  tolerance?: number;
  seed?: number;
  /** Inputs (samples, C, H, W) already normalised; default: seeded noise images normalised with mean/std. */
  inputs?: Float32Array;
  mean?: number[];
  std?: number[];
}

export interface VerifyResult {
  ok: boolean;
  samples: number;
  maxAbsDiff: number;
  /** max |ort - native| / max |native|. */
  relDiff: number;
  tolerance: number;
}

/** Seeded uint8 noise images normalised as in training: (pixel/255 - mean)/std. */
export function sampleInputs(
  n: number,
  c: number,
  h: number,
  w: number,
  mean: number[],
  std: number[],
  seed = 1,
): Float32Array {
  const per = h * w;
  const x = new Float32Array(n * c * per);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < x.length; ++i) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const pixel = s >>> 24; // 0..255
    const ch = Math.floor(i / per) % c;
    x[i] = (pixel / 255 - (mean[ch] ?? 0)) / (std[ch] ?? 1);
  }
  return x;
}

/** An onnxruntime session; a model onnxruntime cannot load is a CheckpointError naming `file`. */
export async function openOnnx(model: Uint8Array, file: string): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(model);
  } catch (err) {
    throw new CheckpointError(
      `${file}: onnxruntime cannot load the model (${String((err as Error).message).split('\n')[0]}); the file is corrupt or not from dfl-native export`,
    );
  }
}

/** The logits of a session for the (normalised) inputs `x` of shape `dims`. */
export async function runSession(
  session: ort.InferenceSession,
  x: Float32Array,
  dims: [number, number, number, number],
): Promise<Float32Array> {
  const result = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x, dims) });
  const out = result[ONNX_OUTPUT];
  if (!out)
    throw new CheckpointError(`the ONNX model has no output named ${ONNX_OUTPUT}; export it with dfl-native export`);
  return Float32Array.from(out.data as Float32Array);
}

export async function runOnnx(
  model: Uint8Array | string,
  x: Float32Array,
  dims: [number, number, number, number],
): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model as Uint8Array);
  try {
    return await runSession(session, x, dims);
  } finally {
    await session.release();
  }
}

export function compareLogits(a: Float32Array, b: Float32Array, tolerance: number): Omit<VerifyResult, 'samples'> {
  if (a.length !== b.length) return { ok: false, maxAbsDiff: Infinity, relDiff: Infinity, tolerance };
  let maxAbs = 0,
    maxRef = 0;
  for (let i = 0; i < a.length; ++i) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= maxAbs)) maxAbs = d; // NaN propagates
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  const rel = maxAbs === 0 ? 0 : maxAbs / Math.max(maxRef, 1e-30);
  return { ok: rel <= tolerance, maxAbsDiff: maxAbs, relDiff: rel, tolerance };
}

/** Runs `onnxModel` (bytes or a file) and `native` on the same inputs and compares their logits. */
export async function verifyOnnx(
  onnxModel: Uint8Array | string,
  native: NativeModel,
  inputShape: [number, number, number],
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const [c, h, w] = inputShape;
  const n = opts.samples ?? 4;
  const tolerance = opts.tolerance ?? 1e-4;
  const x =
    opts.inputs ??
    sampleInputs(n, c, h, w, opts.mean ?? new Array(c).fill(0.5), opts.std ?? new Array(c).fill(0.25), opts.seed ?? 1);
  const want = Float32Array.from(native.forwardSync(x, n, false));
  const got = await runOnnx(onnxModel, x, [n, c, h, w]);
  return { ...compareLogits(got, want, tolerance), samples: n };
}
