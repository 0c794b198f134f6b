// Export to ONNX (opset 13): the model graph (spec) plus its named weights become one ModelProto,
// built with the onnx-proto schema package (protobufjs). One ONNX node (or a short fixed
// sequence) per spec node:
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
import type { ModelSpec, NodeSpec } from '../models/spec.js';

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
const attrInts = (name: string, ints: number[]): IAttr => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints });
const attrFloat = (name: string, f: number): IAttr => ({ name, type: onnx.AttributeProto.AttributeType.FLOAT, f });

function floatTensor(name: string, dims: number[], data: Float32Array): ITensor {
  if (os.endianness() !== 'LE') throw new Error('ONNX export needs a little-endian machine (raw_data is little-endian)');
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

/** Builds the ONNX model of `spec` with the weights of `model` (which must have been built from it). */
export function buildOnnx(spec: ModelSpec, model: NativeModel, opts: OnnxExportOptions): OnnxExportResult {
  const nodes = spec.nodes;
  const N = nodes.length;
  const shapes = model.nodeShapes();
  const weights = tensorsByNode(model);
  const numClasses = model.info().numClasses;
  if (opts.classNames.length !== numClasses)
    throw new Error(`The model has ${numClasses} outputs but ${opts.classNames.length} class names were given`);
  const C = spec.in_channels, H = spec.height, W = spec.width;
  if (opts.mean.length !== C || opts.std.length !== C) throw new Error(`mean and std need ${C} values (one per input channel)`);

  const graphNodes: INode[] = [];
  const initializers: ITensor[] = [];
  const ops: Record<string, number> = {};
  const names: string[] = new Array(N).fill('');
  const rank: number[] = new Array(N).fill(4);
  names[0] = ONNX_INPUT;

  const readers = new Array(N).fill(0);
  for (const n of nodes) for (const j of n.inputs ?? []) readers[j] += 1;
  const folded = new Set<number>();

  const emit = (opType: string, inputs: string[], outputs: string[], attribute: IAttr[] = [], name?: string) => {
    ops[opType] = (ops[opType] ?? 0) + 1;
    graphNodes.push({ opType, input: inputs, output: outputs, attribute, name: name ?? `${opType}_${graphNodes.length}` });
  };
  const init = (t: ITensor): string => {
    initializers.push(t);
    return t.name!;
  };
  const param = (i: number, suffix: string): Float32Array | undefined => weights.get(i)?.get(suffix)?.data;
  const need = (i: number, suffix: string): Float32Array => {
    const d = param(i, suffix);
    if (!d) throw new Error(`node ${i} (${nodes[i].op} ${nodes[i].name ?? ''}): the model has no ${suffix} tensor`);
    return d;
  };
  const outName = (i: number, op: string) => (i === N - 1 ? ONNX_OUTPUT : `${op}_${i}`);
  const nameOf = (n: NodeSpec, i: number) => n.name ?? `${n.op}_${i}`;
  let clip: [string, string] | null = null;

  /** Input j as a rank-4 tensor (B, C, H, W): reshapes a flattened (B, F) input back. */
  const as4d = (j: number): string => {
    if (rank[j] === 4) return names[j];
    const [c, h, w] = shapes[j];
    const shapeName = init(int64Tensor(`reshape_${j}_4d`, [0, c, h, w]));
    const out = `${names[j]}_4d`;
    emit('Reshape', [names[j], shapeName], [out]);
    return out;
  };
  /** BN of node k folded into the weight (OUT, ...) and bias of its producer. */
  const foldInto = (k: number, w: Float32Array, b: Float32Array | undefined, outCh: number): [Float32Array, Float32Array] => {
    const eps = nodes[k].eps ?? 1e-5;
    const gamma = need(k, 'weight'), beta = need(k, 'bias'), mean = need(k, 'running_mean'), v = need(k, 'running_var');
    const per = w.length / outCh;
    const w2 = new Float32Array(w.length), b2 = new Float32Array(outCh);
    for (let o = 0; o < outCh; ++o) {
      const s = gamma[o] / Math.sqrt(v[o] + eps);
      for (let q = 0; q < per; ++q) w2[o * per + q] = w[o * per + q] * s;
      b2[o] = ((b ? b[o] : 0) - mean[o]) * s + beta[o];
    }
    return [w2, b2];
  };
  /** The BN node that reads only node i and may be folded into it, or -1. */
  const foldableBn = (i: number): number => {
    if (!opts.foldBn || readers[i] !== 1 || i === N - 1) return -1;
    const k = nodes.findIndex((n, idx) => idx > i && n.op === 'bn' && n.inputs?.[0] === i);
    return k;
  };

  for (let i = 1; i < N; ++i) {
    const n = nodes[i];
    const ins = (n.inputs ?? []).map((j) => names[j]);
    const src = n.inputs?.[0] ?? 0;
    switch (n.op) {
      case 'input':
        throw new Error(`node ${i}: only node 0 may be the input`);
      case 'conv': {
        const w = need(i, 'weight');
        let b = param(i, 'bias');
        const oc = n.out_channels!;
        const k = foldableBn(i);
        let wName = `${nameOf(n, i)}.weight`, bName = b ? `${nameOf(n, i)}.bias` : undefined;
        let wData = w;
        if (k >= 0) {
          [wData, b] = foldInto(k, w, b, oc);
          wName = `${nameOf(n, i)}.weight_bnfolded`;
          bName = `${nameOf(n, i)}.bias_bnfolded`;
          folded.add(k);
        }
        const inC = shapes[src][0];
        const g = n.groups ?? 1;
        const kh = n.kernel_h ?? 1, kw = n.kernel_w ?? 1;
        init(floatTensor(wName, [oc, inC / g, kh, kw], wData));
        if (b && bName) init(floatTensor(bName, [oc], b));
        names[i] = k >= 0 ? outName(k, 'conv_bn') : outName(i, 'conv');
        emit('Conv', [as4d(src), wName, ...(b && bName ? [bName] : [])], [names[i]], [
          attrInts('kernel_shape', [kh, kw]), attrInts('strides', [n.stride_h ?? 1, n.stride_w ?? 1]),
          attrInts('pads', [n.pad_h ?? 0, n.pad_w ?? 0, n.pad_h ?? 0, n.pad_w ?? 0]), attrInts('dilations', [1, 1]), attrInt('group', g),
        ], nameOf(n, i));
        if (k >= 0) {
          names[k] = names[i];
          rank[k] = 4;
        }
        break;
      }
      case 'linear': {
        const w = need(i, 'weight');
        let b = param(i, 'bias');
        const outF = n.out_features!;
        const k = foldableBn(i);
        let wName = `${nameOf(n, i)}.weight`, bName = b ? `${nameOf(n, i)}.bias` : undefined;
        let wData = w;
        if (k >= 0) {
          [wData, b] = foldInto(k, w, b, outF);
          wName = `${nameOf(n, i)}.weight_bnfolded`;
          bName = `${nameOf(n, i)}.bias_bnfolded`;
          folded.add(k);
        }
        let x = names[src];
        if (rank[src] !== 2) {
          x = `${names[src]}_flat`;
          emit('Flatten', [names[src]], [x], [attrInt('axis', 1)]);
        }
        init(floatTensor(wName, [outF, w.length / outF], wData));
        if (b && bName) init(floatTensor(bName, [outF], b));
        names[i] = k >= 0 ? outName(k, 'gemm_bn') : outName(i, 'gemm');
        emit('Gemm', [x, wName, ...(b && bName ? [bName] : [])], [names[i]], [attrInt('transB', 1)], nameOf(n, i));
        rank[i] = 2;
        if (k >= 0) {
          names[k] = names[i];
          rank[k] = 2;
        }
        break;
      }
      case 'bn': {
        if (folded.has(i)) break;
        const base = nameOf(n, i);
        const c = shapes[i][0];
        const t = ['weight', 'bias', 'running_mean', 'running_var'].map((s) => init(floatTensor(`${base}.${s}`, [c], need(i, s))));
        names[i] = outName(i, 'bn');
        rank[i] = rank[src];
        emit('BatchNormalization', [ins[0], ...t], [names[i]], [attrFloat('epsilon', n.eps ?? 1e-5)], base);
        break;
      }
      case 'relu':
        names[i] = outName(i, 'relu');
        rank[i] = rank[src];
        emit('Relu', [ins[0]], [names[i]]);
        break;
      case 'relu6':
        if (!clip) clip = [init({ name: 'clip_min', dims: [], dataType: onnx.TensorProto.DataType.FLOAT, floatData: [0] }), init({ name: 'clip_max', dims: [], dataType: onnx.TensorProto.DataType.FLOAT, floatData: [6] })];
        names[i] = outName(i, 'relu6');
        rank[i] = rank[src];
        emit('Clip', [ins[0], clip[0], clip[1]], [names[i]]);
        break;
      case 'dropout':
        names[i] = ins[0]; // identity at inference
        rank[i] = rank[src];
        break;
      case 'add':
        names[i] = outName(i, 'add');
        rank[i] = rank[src];
        emit('Add', ins, [names[i]]);
        break;
      case 'concat': {
        const r = rank[src];
        const parts = (n.inputs ?? []).map((j) => (r === 4 ? as4d(j) : names[j]));
        names[i] = outName(i, 'concat');
        rank[i] = r;
        emit('Concat', parts, [names[i]], [attrInt('axis', 1)]);
        break;
      }
      case 'flatten':
        names[i] = outName(i, 'flatten');
        rank[i] = 2;
        emit('Flatten', [ins[0]], [names[i]], [attrInt('axis', 1)]);
        break;
      case 'maxpool':
      case 'avgpool': {
        const attrs = [
          attrInts('kernel_shape', [n.kernel_h ?? 1, n.kernel_w ?? 1]), attrInts('strides', [n.stride_h ?? 1, n.stride_w ?? 1]),
          attrInts('pads', [n.pad_h ?? 0, n.pad_w ?? 0, n.pad_h ?? 0, n.pad_w ?? 0]),
        ];
        if (n.op === 'avgpool') attrs.push(attrInt('count_include_pad', 1));
        names[i] = outName(i, n.op);
        emit(n.op === 'maxpool' ? 'MaxPool' : 'AveragePool', [as4d(src)], [names[i]], attrs);
        break;
      }
      case 'gap':
        names[i] = outName(i, 'gap');
        emit('GlobalAveragePool', [as4d(src)], [names[i]]);
        break;
      case 'split': {
        const sizes = n.sizes ?? [];
        const idx = n.index ?? 0;
        const start = sizes.slice(0, idx).reduce((a, s) => a + s, 0);
        const starts = init(int64Tensor(`split_${i}_starts`, [start]));
        const ends = init(int64Tensor(`split_${i}_ends`, [start + sizes[idx]]));
        const axes = init(int64Tensor(`split_${i}_axes`, [1]));
        names[i] = outName(i, 'split');
        rank[i] = rank[src];
        emit('Slice', [ins[0], starts, ends, axes], [names[i]]);
        break;
      }
      case 'shuffle': {
        const g = n.groups ?? 1;
        const [c, h, w] = shapes[src];
        const s1 = init(int64Tensor(`shuffle_${i}_grouped`, [0, g, c / g, h, w]));
        const s2 = init(int64Tensor(`shuffle_${i}_merged`, [0, c, h, w]));
        const a = `shuffle_${i}_a`, b = `shuffle_${i}_b`;
        names[i] = outName(i, 'shuffle');
        emit('Reshape', [as4d(src), s1], [a]);
        emit('Transpose', [a], [b], [attrInts('perm', [0, 2, 1, 3, 4])]);
        emit('Reshape', [b, s2], [names[i]]);
        break;
      }
      default:
        throw new Error(`node ${i}: op '${(n as NodeSpec).op}' has no ONNX export`);
    }
  }
  // The output must be named "logits" and be (batch, classes).
  if (names[N - 1] !== ONNX_OUTPUT || rank[N - 1] !== 2) {
    emit('Flatten', [names[N - 1]], [ONNX_OUTPUT], [attrInt('axis', 1)]);
  }

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
      node: graphNodes,
      initializer: initializers,
      input: [valueInfo(ONNX_INPUT, ['batch', C, H, W])],
      output: [valueInfo(ONNX_OUTPUT, ['batch', numClasses])],
    },
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  });
  const bytes = onnx.ModelProto.encode(modelProto).finish();
  return { bytes, ops, foldedBn: folded.size };
}

/** Reads the metadata a dfl-native export carries (class names, input shape, normalisation). */
export function readOnnxMetadata(bytes: Uint8Array, file = 'model.onnx'): OnnxMetadata {
  let m: OnnxTypes.ModelProto;
  try {
    m = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new Error(`${file}: not an ONNX model (${(err as Error).message})`);
  }
  const props: Record<string, string> = {};
  for (const p of m.metadataProps ?? []) if (p.key) props[p.key] = p.value ?? '';
  const parse = <T>(key: string): T => {
    if (props[key] === undefined) throw new Error(`${file}: metadata "${key}" is missing; export the model with dfl-native export`);
    try {
      return JSON.parse(props[key]) as T;
    } catch {
      throw new Error(`${file}: metadata "${key}" is not valid JSON`);
    }
  };
  return {
    classNames: parse<string[]>('class_names'), inputShape: parse<[number, number, number]>('input_shape'),
    mean: parse<number[]>('mean'), std: parse<number[]>('std'), version: props['dfl-native'] ?? null, props,
  };
}
