// Export to ONNX (opset 13): the model graph (spec) plus its named weights become one ModelProto,
// built with the onnx-proto schema package (protobufjs). One emitter per spec op (EMITTERS) writes
// one ONNX node, or a short fixed sequence, per spec node:
//   conv -> Conv            bn -> BatchNormalization (or folded into the conv/linear before it)
//   linear -> [Flatten] Gemm(transB=1)    relu -> Relu    relu6 -> Clip(min 0, max 6)
//   maxpool -> MaxPool      avgpool -> AveragePool(count_include_pad=1, as PyTorch and native)
//   gap -> GlobalAveragePool   flatten -> Flatten   add -> Add   concat -> Concat(axis 1)
//   split -> Slice(axis 1)     shuffle -> Reshape, Transpose, Reshape   dropout -> (nothing)
// Input "input" (batch, C, H, W) float32, normalised as in training; output "logits" (batch, classes).
// metadata_props carry what a user needs without dfl-native: class names, input shape, mean/std.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

import { packageRoot, type NativeModel, type TensorInfo } from '../binding.js';
import { CheckpointError } from '../errors.js';
import type { ModelSpec, NodeSpec, Op } from '../models/spec.js';

const { onnx } = onnxProto;
type INode = OnnxTypes.INodeProto;
type ITensor = OnnxTypes.ITensorProto;
type IAttr = OnnxTypes.IAttributeProto;
type IValueInfo = OnnxTypes.IValueInfoProto;

export const ONNX_OPSET = 13;
/** IR version 7 is the one that goes with opset 13. */
export const ONNX_IR_VERSION = 7;
export const ONNX_INPUT = 'input';
export const ONNX_OUTPUT = 'logits';

export interface OnnxExportOptions {
  classNames: string[];
  /** Per-channel normalisation of pixel/255, as in training. */
  mean: number[];
  std: number[];
  /** Fold each BatchNorm into the conv/linear right before it (when that is its only reader). */
  foldBn?: boolean;
  /** Extra metadata_props (e.g. model, method, epoch). */
  metadata?: Record<string, string>;
  /** Graph name. */
  name?: string;
}

export interface OnnxExportResult {
  bytes: Uint8Array;
  /** ONNX op type -> count. */
  ops: Record<string, number>;
  foldedBn: number;
}

export interface OnnxMetadata {
  classNames: string[];
  inputShape: [number, number, number];
  mean: number[];
  std: number[];
  version: string | null;
  props: Record<string, string>;
}

export function packageVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const attrInt = (name: string, i: number): IAttr => ({ name, type: onnx.AttributeProto.AttributeType.INT, i });
const attrInts = (name: string, ints: number[]): IAttr => ({
  name,
  type: onnx.AttributeProto.AttributeType.INTS,
  ints,
});
const attrFloat = (name: string, f: number): IAttr => ({ name, type: onnx.AttributeProto.AttributeType.FLOAT, f });

function floatTensor(name: string, dims: number[], data: Float32Array): ITensor {
  if (os.endianness() !== 'LE')
    throw new Error('ONNX export needs a little-endian machine (raw_data is little-endian)');
  const raw = new Uint8Array(data.byteLength);
  raw.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: raw };
}

function int64Tensor(name: string, values: number[]): ITensor {
  return { name, dims: [values.length], dataType: onnx.TensorProto.DataType.INT64, int64Data: values };
}

function valueInfo(name: string, dims: (number | string)[]): IValueInfo {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

/** The model's tensors grouped by owning node: node index -> suffix ("weight", "running_mean", ...) -> data. */
function tensorsByNode(model: NativeModel): Map<number, Map<string, { info: TensorInfo; data: Float32Array }>> {
  const params = model.getParams();
  const buffers = model.getBuffers();
  const out = new Map<number, Map<string, { info: TensorInfo; data: Float32Array }>>();
  for (const t of model.tensors()) {
    const src = t.kind === 'buffer' ? buffers : params;
    const suffix = t.name.slice(t.name.lastIndexOf('.') + 1);
    if (!out.has(t.node)) out.set(t.node, new Map());
    out.get(t.node)!.set(suffix, { info: t, data: src.slice(t.offset, t.offset + t.size) });
  }
  return out;
}

/**
 * The ONNX graph under construction. An emitter (EMITTERS, one per spec op) reads spec node i and
 * appends ONNX nodes and initializers, then records the ONNX name and rank of node i's output;
 * this class holds the state they share and the steps several of them need.
 */
class OnnxGraph {
  readonly nodes: INode[] = [];
  readonly initializers: ITensor[] = [];
  /** ONNX op type -> count. */
  readonly ops: Record<string, number> = {};
  /** The ONNX value holding each spec node's output, and its rank: 2 after flatten/linear ((batch, features)), else 4. */
  readonly names: string[];
  readonly rank: number[];
  /** BN nodes folded into the conv/linear before them. */
  readonly folded = new Set<number>();
  private readonly readers: number[];
  private clipBounds: [string, string] | null = null;

  constructor(
    readonly spec: ModelSpec,
    readonly shapes: [number, number, number][],
    private readonly weights: ReturnType<typeof tensorsByNode>,
    private readonly foldBn: boolean,
  ) {
    const N = spec.nodes.length;
    this.names = new Array(N).fill('');
    this.names[0] = ONNX_INPUT;
    this.rank = new Array(N).fill(4);
    this.readers = new Array(N).fill(0);
    for (const n of spec.nodes) for (const j of n.inputs ?? []) this.readers[j] += 1;
  }

  emit(opType: string, inputs: string[], outputs: string[], attribute: IAttr[] = [], name?: string): void {
    this.ops[opType] = (this.ops[opType] ?? 0) + 1;
    this.nodes.push({
      opType,
      input: inputs,
      output: outputs,
      attribute,
      name: name ?? `${opType}_${this.nodes.length}`,
    });
  }

  /** Adds an initializer; returns its name. */
  init(t: ITensor): string {
    this.initializers.push(t);
    return t.name!;
  }

  param(i: number, suffix: string): Float32Array | undefined {
    return this.weights.get(i)?.get(suffix)?.data;
  }

  need(i: number, suffix: string): Float32Array {
    const d = this.param(i, suffix);
    if (!d)
      throw new Error(
        `node ${i} (${this.spec.nodes[i].op} ${this.spec.nodes[i].name ?? ''}): the model has no ${suffix} tensor`,
      );
    return d;
  }

  /** The name of node i's output: "logits" for the last node, else `${op}_${i}`. */
  outName(i: number, op: string): string {
    return i === this.spec.nodes.length - 1 ? ONNX_OUTPUT : `${op}_${i}`;
  }

  /** Node i's output is the value `name` of rank `rank`. */
  setOutput(i: number, name: string, rank = this.rank[i]): string {
    this.names[i] = name;
    this.rank[i] = rank;
    return name;
  }

  /** The ONNX value of node i's k-th input. */
  input(i: number, k = 0): string {
    return this.names[this.spec.nodes[i].inputs?.[k] ?? 0];
  }

  /** Node j's output as a rank-4 tensor (B, C, H, W): a flattened (B, F) one is reshaped back. */
  as4d(j: number): string {
    if (this.rank[j] === 4) return this.names[j];
    const [c, h, w] = this.shapes[j];
    const shapeName = this.init(int64Tensor(`reshape_${j}_4d`, [0, c, h, w]));
    const out = `${this.names[j]}_4d`;
    this.emit('Reshape', [this.names[j], shapeName], [out]);
    return out;
  }

  /** The scalar bounds of relu6's Clip, made once. */
  relu6Bounds(): [string, string] {
    const scalar = (name: string, v: number) =>
      this.init({ name, dims: [], dataType: onnx.TensorProto.DataType.FLOAT, floatData: [v] });
    this.clipBounds ??= [scalar('clip_min', 0), scalar('clip_max', 6)];
    return this.clipBounds;
  }

  /**
   * The weight (of shape `dims`) and bias initializers of conv/linear node i. With foldBn, a BN that
   * is the only reader of node i is folded into them (and marked folded); `bn` is its index, or -1.
   */
  weightAndBias(i: number, dims: number[]): { inputs: string[]; bn: number } {
    const outCh = dims[0];
    let w = this.need(i, 'weight'),
      b = this.param(i, 'bias');
    const bn = this.foldableBn(i);
    if (bn >= 0) {
      [w, b] = this.foldInto(bn, w, b, outCh);
      this.folded.add(bn);
    }
    const base = nameOf(this.spec.nodes[i], i),
      suffix = bn >= 0 ? '_bnfolded' : '';
    const inputs = [this.init(floatTensor(`${base}.weight${suffix}`, dims, w))];
    if (b) inputs.push(this.init(floatTensor(`${base}.bias${suffix}`, [outCh], b)));
    return { inputs, bn };
  }

  /** The BN node that reads only node i and may be folded into it, or -1. */
  private foldableBn(i: number): number {
    if (!this.foldBn || this.readers[i] !== 1 || i === this.spec.nodes.length - 1) return -1;
    return this.spec.nodes.findIndex((n, idx) => idx > i && n.op === 'bn' && n.inputs?.[0] === i);
  }

  /** BN node k folded into the weight (OUT, ...) and bias of its producer. */
  private foldInto(
    k: number,
    w: Float32Array,
    b: Float32Array | undefined,
    outCh: number,
  ): [Float32Array, Float32Array] {
    const eps = this.spec.nodes[k].eps ?? 1e-5;
    const gamma = this.need(k, 'weight'),
      beta = this.need(k, 'bias'),
      mean = this.need(k, 'running_mean'),
      v = this.need(k, 'running_var');
    const per = w.length / outCh;
    const w2 = new Float32Array(w.length),
      b2 = new Float32Array(outCh);
    for (let o = 0; o < outCh; ++o) {
      const s = gamma[o] / Math.sqrt(v[o] + eps);
      for (let q = 0; q < per; ++q) w2[o * per + q] = w[o * per + q] * s;
      b2[o] = ((b ? b[o] : 0) - mean[o]) * s + beta[o];
    }
    return [w2, b2];
  }
}

const nameOf = (n: NodeSpec, i: number): string => n.name ?? `${n.op}_${i}`;

/** Kernel, stride and padding attributes of a conv or pool node (pads: begin h, w, end h, w). */
const windowAttrs = (n: NodeSpec): IAttr[] => [
  attrInts('kernel_shape', [n.kernel_h ?? 1, n.kernel_w ?? 1]),
  attrInts('strides', [n.stride_h ?? 1, n.stride_w ?? 1]),
  attrInts('pads', [n.pad_h ?? 0, n.pad_w ?? 0, n.pad_h ?? 0, n.pad_w ?? 0]),
];

/** Emits the ONNX nodes of spec node i (of op n.op). */
type Emitter = (g: OnnxGraph, i: number, n: NodeSpec) => void;

/** An op with the same ONNX op on all of its inputs, keeping their rank (relu, add). */
const sameRank =
  (opType: string): Emitter =>
  (g, i, n) =>
    g.emit(
      opType,
      (n.inputs ?? []).map((j) => g.names[j]),
      [g.setOutput(i, g.outName(i, n.op), g.rank[n.inputs![0]])],
    );

const pool =
  (opType: string, extra: IAttr[] = []): Emitter =>
  (g, i, n) =>
    g.emit(opType, [g.as4d(n.inputs![0])], [g.setOutput(i, g.outName(i, n.op), 4)], [...windowAttrs(n), ...extra]);

/** One emitter per op of the model graph (src/models/spec.ts). */
const EMITTERS: { readonly [K in Op]: Emitter } = {
  input: (_g, i) => {
    throw new Error(`node ${i}: only node 0 may be the input`);
  },
  conv: (g, i, n) => {
    const src = n.inputs![0];
    const groups = n.groups ?? 1;
    const { inputs, bn } = g.weightAndBias(i, [
      n.out_channels!,
      g.shapes[src][0] / groups,
      n.kernel_h ?? 1,
      n.kernel_w ?? 1,
    ]);
    const out = bn >= 0 ? g.setOutput(bn, g.outName(bn, 'conv_bn'), 4) : g.outName(i, 'conv');
    g.emit(
      'Conv',
      [g.as4d(src), ...inputs],
      [g.setOutput(i, out, 4)],
      [...windowAttrs(n), attrInts('dilations', [1, 1]), attrInt('group', groups)],
      nameOf(n, i),
    );
  },
  linear: (g, i, n) => {
    const src = n.inputs![0];
    let x = g.names[src];
    if (g.rank[src] !== 2) {
      x = `${g.names[src]}_flat`;
      g.emit('Flatten', [g.names[src]], [x], [attrInt('axis', 1)]);
    }
    const outF = n.out_features!;
    const { inputs, bn } = g.weightAndBias(i, [outF, g.need(i, 'weight').length / outF]);
    const out = bn >= 0 ? g.setOutput(bn, g.outName(bn, 'gemm_bn'), 2) : g.outName(i, 'gemm');
    g.emit('Gemm', [x, ...inputs], [g.setOutput(i, out, 2)], [attrInt('transB', 1)], nameOf(n, i));
  },
  bn: (g, i, n) => {
    if (g.folded.has(i)) return;
    const base = nameOf(n, i),
      c = g.shapes[i][0];
    const t = ['weight', 'bias', 'running_mean', 'running_var'].map((s) =>
      g.init(floatTensor(`${base}.${s}`, [c], g.need(i, s))),
    );
    g.emit(
      'BatchNormalization',
      [g.input(i), ...t],
      [g.setOutput(i, g.outName(i, 'bn'), g.rank[n.inputs![0]])],
      [attrFloat('epsilon', n.eps ?? 1e-5)],
      base,
    );
  },
  relu: sameRank('Relu'),
  relu6: (g, i, n) => {
    const [lo, hi] = g.relu6Bounds();
    g.emit('Clip', [g.input(i), lo, hi], [g.setOutput(i, g.outName(i, 'relu6'), g.rank[n.inputs![0]])]);
  },
  dropout: (g, i, n) => {
    g.setOutput(i, g.input(i), g.rank[n.inputs![0]]); // identity at inference
  },
  add: sameRank('Add'),
  concat: (g, i, n) => {
    const r = g.rank[n.inputs![0]];
    const parts = n.inputs!.map((j) => (r === 4 ? g.as4d(j) : g.names[j]));
    g.emit('Concat', parts, [g.setOutput(i, g.outName(i, 'concat'), r)], [attrInt('axis', 1)]);
  },
  flatten: (g, i) =>
    g.emit('Flatten', [g.input(i)], [g.setOutput(i, g.outName(i, 'flatten'), 2)], [attrInt('axis', 1)]),
  maxpool: pool('MaxPool'),
  avgpool: pool('AveragePool', [attrInt('count_include_pad', 1)]),
  gap: (g, i, n) => g.emit('GlobalAveragePool', [g.as4d(n.inputs![0])], [g.setOutput(i, g.outName(i, 'gap'), 4)]),
  split: (g, i, n) => {
    const sizes = n.sizes ?? [];
    const idx = n.index ?? 0;
    const start = sizes.slice(0, idx).reduce((a, s) => a + s, 0);
    const starts = g.init(int64Tensor(`split_${i}_starts`, [start]));
    const ends = g.init(int64Tensor(`split_${i}_ends`, [start + sizes[idx]]));
    const axes = g.init(int64Tensor(`split_${i}_axes`, [1]));
    g.emit('Slice', [g.input(i), starts, ends, axes], [g.setOutput(i, g.outName(i, 'split'), g.rank[n.inputs![0]])]);
  },
  shuffle: (g, i, n) => {
    const src = n.inputs![0];
    const groups = n.groups ?? 1;
    const [c, h, w] = g.shapes[src];
    const grouped = g.init(int64Tensor(`shuffle_${i}_grouped`, [0, groups, c / groups, h, w]));
    const merged = g.init(int64Tensor(`shuffle_${i}_merged`, [0, c, h, w]));
    const a = `shuffle_${i}_a`,
      b = `shuffle_${i}_b`;
    const out = g.setOutput(i, g.outName(i, 'shuffle'), 4);
    g.emit('Reshape', [g.as4d(src), grouped], [a]);
    g.emit('Transpose', [a], [b], [attrInts('perm', [0, 2, 1, 3, 4])]);
    g.emit('Reshape', [b, merged], [out]);
  },
};

/** Builds the ONNX model of `spec` with the weights of `model` (which must have been built from it). */
export function buildOnnx(spec: ModelSpec, model: NativeModel, opts: OnnxExportOptions): OnnxExportResult {
  const numClasses = model.info().numClasses;
  if (opts.classNames.length !== numClasses)
    throw new Error(`The model has ${numClasses} outputs but ${opts.classNames.length} class names were given`);
  const C = spec.in_channels,
    H = spec.height,
    W = spec.width;
  if (opts.mean.length !== C || opts.std.length !== C)
    throw new Error(`mean and std need ${C} values (one per input channel)`);

  const g = new OnnxGraph(spec, model.nodeShapes(), tensorsByNode(model), opts.foldBn ?? false);
  spec.nodes.forEach((n, i) => {
    if (i === 0) return;
    const emitter = Object.hasOwn(EMITTERS, n.op) ? EMITTERS[n.op] : undefined;
    if (!emitter) throw new Error(`node ${i}: op '${n.op}' has no ONNX export`);
    emitter(g, i, n);
  });
  const N = spec.nodes.length;
  // The output must be named "logits" and be (batch, classes).
  if (g.names[N - 1] !== ONNX_OUTPUT || g.rank[N - 1] !== 2)
    g.emit('Flatten', [g.names[N - 1]], [ONNX_OUTPUT], [attrInt('axis', 1)]);

  const version = packageVersion();
  const metadata: Record<string, string> = {
    class_names: JSON.stringify(opts.classNames),
    input_shape: JSON.stringify([C, H, W]),
    input_layout: 'NCHW float32',
    mean: JSON.stringify(opts.mean),
    std: JSON.stringify(opts.std),
    normalization: 'input = (pixel / 255 - mean[c]) / std[c] for pixel values 0..255 (RGB order for 3 channels)',
    output: 'logits (batch, classes); softmax gives class probabilities in class_names order',
    'dfl-native': version,
    ...opts.metadata,
  };
  const modelProto = onnx.ModelProto.create({
    irVersion: ONNX_IR_VERSION,
    opsetImport: [{ domain: '', version: ONNX_OPSET }],
    producerName: 'dfl-native',
    producerVersion: version,
    docString: `Image classifier exported by dfl-native ${version}. Input "${ONNX_INPUT}": (batch, ${C}, ${H}, ${W}) float32, normalised as in metadata "normalization". Output "${ONNX_OUTPUT}": (batch, ${numClasses}).`,
    graph: {
      name: opts.name ?? 'dfl_native_model',
      node: g.nodes,
      initializer: g.initializers,
      input: [valueInfo(ONNX_INPUT, ['batch', C, H, W])],
      output: [valueInfo(ONNX_OUTPUT, ['batch', numClasses])],
    },
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  });
  const bytes = onnx.ModelProto.encode(modelProto).finish();
  return { bytes, ops: g.ops, foldedBn: g.folded.size };
}

/** Reads the metadata a dfl-native export carries (class names, input shape, normalisation). */
export function readOnnxMetadata(bytes: Uint8Array, file = 'model.onnx'): OnnxMetadata {
  let m: OnnxTypes.ModelProto;
  try {
    m = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new CheckpointError(
      `${file}: not an ONNX model (${(err as Error).message}); give a file written by dfl-native export`,
    );
  }
  const props: Record<string, string> = {};
  for (const p of m.metadataProps ?? []) if (p.key) props[p.key] = p.value ?? '';
  const parse = <T>(key: string): T => {
    if (props[key] === undefined)
      throw new CheckpointError(`${file}: metadata "${key}" is missing; export the model with dfl-native export`);
    try {
      return JSON.parse(props[key]) as T;
    } catch {
      throw new CheckpointError(`${file}: metadata "${key}" is not valid JSON`);
    }
  };
  const meta: OnnxMetadata = {
    classNames: parse<string[]>('class_names'),
    inputShape: parse<[number, number, number]>('input_shape'),
    mean: parse<number[]>('mean'),
    std: parse<number[]>('std'),
    version: props['dfl-native'] ?? null,
    props,
  };
  // predict sizes its buffers from these: a bad value is a corrupt file, not a crash later
  const { classNames, inputShape, mean, std } = meta;
  const bad =
    !Array.isArray(classNames) || classNames.length === 0 || !classNames.every((n) => typeof n === 'string')
      ? 'class_names is not a list of names'
      : !Array.isArray(inputShape) ||
          inputShape.length !== 3 ||
          !inputShape.every((d) => Number.isSafeInteger(d) && d >= 1 && d <= 4096)
        ? 'input_shape is not [channels, height, width]'
        : !Array.isArray(mean) || mean.length !== inputShape[0] || !mean.every(Number.isFinite)
          ? `mean is not ${inputShape[0]} finite numbers`
          : !Array.isArray(std) || std.length !== inputShape[0] || !std.every((v) => Number.isFinite(v) && v > 0)
            ? `std is not ${inputShape[0]} positive numbers`
            : null;
  if (bad)
    throw new CheckpointError(
      `${file}: metadata ${bad}; the file is corrupt or was edited (export the model again with dfl-native export)`,
    );
  return meta;
}
