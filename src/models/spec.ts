// The model graph format shared by TypeScript, the native Model, checkpoints and the PyTorch twin
// (scripts/fixtures/torch_twin.py). It is plain JSON; attribute names are snake_case because the same file
// is read by C++ and Python. Semantics of each op: native/core/model.h.

export type Op =
  | 'input'
  | 'conv'
  | 'bn'
  | 'linear'
  | 'relu'
  | 'relu6'
  | 'add'
  | 'concat'
  | 'flatten'
  | 'dropout'
  | 'maxpool'
  | 'avgpool'
  | 'gap'
  | 'split'
  | 'shuffle';

export interface NodeSpec {
  op: Op;
  /** Parameter prefix (PyTorch state_dict style, e.g. "layer1.0.conv1"); required for conv/bn/linear. */
  name?: string;
  /** Indices of earlier nodes whose outputs this node reads. */
  inputs?: number[];
  out_channels?: number;
  kernel_h?: number;
  kernel_w?: number;
  stride_h?: number;
  stride_w?: number;
  pad_h?: number;
  pad_w?: number;
  groups?: number;
  bias?: boolean;
  out_features?: number;
  eps?: number;
  momentum?: number;
  p?: number;
  sizes?: number[];
  index?: number;
}

export interface ModelSpec {
  in_channels: number;
  height: number;
  width: number;
  nodes: NodeSpec[];
}

/** The attributes each op takes besides op, name and inputs (their meaning: native/core/model.h). */
export const OP_ATTRIBUTES: { readonly [K in Op]: readonly (keyof NodeSpec)[] } = {
  input: [],
  conv: ['out_channels', 'kernel_h', 'kernel_w', 'stride_h', 'stride_w', 'pad_h', 'pad_w', 'groups', 'bias'],
  bn: ['eps', 'momentum'],
  linear: ['out_features', 'bias'],
  relu: [],
  relu6: [],
  add: [],
  concat: [],
  flatten: [],
  gap: [],
  dropout: ['p'],
  maxpool: ['kernel_h', 'kernel_w', 'stride_h', 'stride_w', 'pad_h', 'pad_w'],
  avgpool: ['kernel_h', 'kernel_w', 'stride_h', 'stride_w', 'pad_h', 'pad_w'],
  split: ['sizes', 'index'],
  shuffle: ['groups'],
};

const SPEC_KEYS = ['in_channels', 'height', 'width', 'nodes'];

/**
 * The first key of a spec that is neither a spec field nor an attribute of its node's op, as a
 * message; null when there is none. The native Model checks values, ops and shapes but ignores
 * unknown keys, so a misspelt attribute ("kernal_h") would silently take its default.
 */
export function unknownSpecKey(spec: Record<string, unknown>): string | null {
  const extra = Object.keys(spec).find((k) => !SPEC_KEYS.includes(k));
  if (extra !== undefined) return `unknown key '${extra}' (a model spec has ${SPEC_KEYS.join(', ')})`;
  const nodes = Array.isArray(spec.nodes) ? (spec.nodes as unknown[]) : [];
  for (const [i, n] of nodes.entries()) {
    if (typeof n !== 'object' || n === null) continue; // the native Model names a node that is not an object
    const { op, name } = n as NodeSpec;
    if (typeof op !== 'string' || !Object.hasOwn(OP_ATTRIBUTES, op)) continue; // and an unknown op
    const takes = ['op', 'name', 'inputs', ...OP_ATTRIBUTES[op]];
    const bad = Object.keys(n).find((k) => !takes.includes(k));
    if (bad !== undefined)
      return `node ${i} (${op}${name ? ` '${name}'` : ''}): unknown attribute '${bad}' (a ${op} node takes ${takes.join(', ')})`;
  }
  return null;
}

/** Builds a graph node by node; each method returns the new node's index. */
export class GraphBuilder {
  readonly nodes: NodeSpec[] = [{ op: 'input' }];
  constructor(
    readonly inChannels: number,
    readonly height: number,
    readonly width: number,
  ) {}

  private push(node: NodeSpec): number {
    this.nodes.push(node);
    return this.nodes.length - 1;
  }
  conv(
    name: string,
    input: number,
    outChannels: number,
    kernel: number,
    stride = 1,
    pad = 0,
    groups = 1,
    bias = false,
  ): number {
    return this.push({
      op: 'conv',
      name,
      inputs: [input],
      out_channels: outChannels,
      kernel_h: kernel,
      kernel_w: kernel,
      stride_h: stride,
      stride_w: stride,
      pad_h: pad,
      pad_w: pad,
      groups,
      bias,
    });
  }
  bn(name: string, input: number): number {
    return this.push({ op: 'bn', name, inputs: [input], eps: 1e-5, momentum: 0.1 });
  }
  linear(name: string, input: number, outFeatures: number, bias = true): number {
    return this.push({ op: 'linear', name, inputs: [input], out_features: outFeatures, bias });
  }
  relu(input: number): number {
    return this.push({ op: 'relu', inputs: [input] });
  }
  relu6(input: number): number {
    return this.push({ op: 'relu6', inputs: [input] });
  }
  add(a: number, b: number): number {
    return this.push({ op: 'add', inputs: [a, b] });
  }
  concat(inputs: number[]): number {
    return this.push({ op: 'concat', inputs });
  }
  flatten(input: number): number {
    return this.push({ op: 'flatten', inputs: [input] });
  }
  dropout(input: number, p: number): number {
    return this.push({ op: 'dropout', inputs: [input], p });
  }
  maxpool(input: number, kernel: number, stride: number, pad = 0): number {
    return this.push({
      op: 'maxpool',
      inputs: [input],
      kernel_h: kernel,
      kernel_w: kernel,
      stride_h: stride,
      stride_w: stride,
      pad_h: pad,
      pad_w: pad,
    });
  }
  avgpool(input: number, kernel: number, stride: number, pad = 0): number {
    return this.push({
      op: 'avgpool',
      inputs: [input],
      kernel_h: kernel,
      kernel_w: kernel,
      stride_h: stride,
      stride_w: stride,
      pad_h: pad,
      pad_w: pad,
    });
  }
  gap(input: number): number {
    return this.push({ op: 'gap', inputs: [input] });
  }
  split(input: number, sizes: number[], index: number): number {
    return this.push({ op: 'split', inputs: [input], sizes, index });
  }
  shuffle(input: number, groups: number): number {
    return this.push({ op: 'shuffle', inputs: [input], groups });
  }
  /** conv + bn (+ relu or relu6), the usual unit. Names: `${name}` conv and `${bnName}` bn. */
  convBn(
    convName: string,
    bnName: string,
    input: number,
    outChannels: number,
    kernel: number,
    stride = 1,
    groups = 1,
    act: 'relu' | 'relu6' | 'none' = 'relu',
  ): number {
    const c = this.conv(convName, input, outChannels, kernel, stride, Math.floor(kernel / 2), groups, false);
    const b = this.bn(bnName, c);
    return act === 'relu' ? this.relu(b) : act === 'relu6' ? this.relu6(b) : b;
  }
  get last(): number {
    return this.nodes.length - 1;
  }
  build(): ModelSpec {
    return {
      in_channels: this.inChannels,
      height: this.height,
      width: this.width,
      nodes: this.nodes.map((n) => ({ ...n })),
    };
  }
}
