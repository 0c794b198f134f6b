// The model zoo: CIFAR variants (stride-1 stems, 32x32 inputs; any class and channel count).
// Parameter names follow the PyTorch twins (torchvision naming where torchvision has the model), so
// checkpoints move between the two. Layer configurations are documented in docs/models.md.
import { ConfigError } from '../errors.js';
import { GraphBuilder, type ModelSpec } from './spec.js';

export interface ZooOptions {
  numClasses: number;
  inChannels: number;
  height: number;
  width: number;
  /** Channel width multiplier (1 = the paper's width). */
  width_multiplier?: number;
}

export const MODEL_NAMES = [
  'vgg8',
  'vgg11',
  'vgg13',
  'vgg16',
  'vgg19',
  'resnet18',
  'resnet34',
  'mobilenetv2',
  'shufflenetv2',
] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

// Every layer width is round(c * w). A width multiplier so small that a layer rounds below one
// channel (per group) is refused by buildModel, not silently clamped: `narrowest` records the
// narrowest such layer of the build in progress, `smallestBase` the narrowest layer of the model.
let narrowest: { c: number; groups: number } | null = null;
let smallestBase = Infinity;
const scaled = (c: number, w: number, groups = 1): number => {
  smallestBase = Math.min(smallestBase, c / groups);
  const r = Math.round((c * w) / groups);
  if (r < 1 && (narrowest === null || c / groups < narrowest.c / narrowest.groups)) narrowest = { c, groups };
  return Math.max(1, r);
};
const scale = (c: number, w: number): number => scaled(c, w);

// VGG with BatchNorm. Numbers are conv widths, 'M' a 2x2 max-pool. vgg8 is the CRD/KD-benchmark
// VGG-8 (one conv per stage). Classifier: global average pool + one linear layer, as in the common
// CIFAR VGGs (the 5 pools already reduce 32x32 to 1x1, so the pool is a no-op there).
const VGG_CFG: Record<string, (number | 'M')[]> = {
  vgg8: [64, 'M', 128, 'M', 256, 'M', 512, 'M', 512, 'M'],
  vgg11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  vgg19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};

function vgg(cfg: (number | 'M')[], o: ZooOptions): ModelSpec {
  const w = o.width_multiplier ?? 1;
  const g = new GraphBuilder(o.inChannels, o.height, o.width);
  let x = 0;
  let idx = 0; // torchvision's features.<idx> numbering: conv, bn, relu each take an index
  let h = o.height,
    wd = o.width;
  for (const v of cfg) {
    if (v === 'M') {
      if (h >= 2 && wd >= 2) {
        x = g.maxpool(x, 2, 2);
        h = Math.floor(h / 2);
        wd = Math.floor(wd / 2);
      }
      idx += 1;
    } else {
      x = g.conv(`features.${idx}`, x, scale(v, w), 3, 1, 1, 1, true); // torchvision's VGG convs carry a bias
      x = g.bn(`features.${idx + 1}`, x);
      x = g.relu(x);
      idx += 3;
    }
  }
  x = g.gap(x);
  x = g.flatten(x);
  g.linear('classifier', x, o.numClasses);
  return g.build();
}

// ResNet (He et al. 2016), CIFAR variant: 3x3 stride-1 stem, no max-pool; torchvision names.
function resnet(blocks: number[], o: ZooOptions): ModelSpec {
  const w = o.width_multiplier ?? 1;
  const g = new GraphBuilder(o.inChannels, o.height, o.width);
  let inC = scale(64, w);
  let x = g.convBn('conv1', 'bn1', 0, inC, 3);
  const widths = [64, 128, 256, 512];
  blocks.forEach((n, s) => {
    const c = scale(widths[s], w);
    for (let b = 0; b < n; ++b) {
      const stride = s > 0 && b === 0 ? 2 : 1;
      const p = `layer${s + 1}.${b}`;
      let y = g.convBn(`${p}.conv1`, `${p}.bn1`, x, c, 3, stride);
      y = g.conv(`${p}.conv2`, y, c, 3, 1, 1);
      y = g.bn(`${p}.bn2`, y);
      let shortcut = x;
      if (stride !== 1 || inC !== c) {
        shortcut = g.conv(`${p}.downsample.0`, x, c, 1, stride, 0);
        shortcut = g.bn(`${p}.downsample.1`, shortcut);
      }
      x = g.relu(g.add(y, shortcut));
      inC = c;
    }
  });
  x = g.flatten(g.gap(x));
  g.linear('fc', x, o.numClasses);
  return g.build();
}

// MobileNetV2 (Sandler et al. 2018), CIFAR variant: stride-1 stem and stride 1 in the second
// stage (as in the common CIFAR ports); torchvision names.
function mobilenetv2(o: ZooOptions): ModelSpec {
  const w = o.width_multiplier ?? 1;
  const cfg: [number, number, number, number][] = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
  ];
  const g = new GraphBuilder(o.inChannels, o.height, o.width);
  let inC = scale(32, w);
  let x = g.convBn('features.0.0', 'features.0.1', 0, inC, 3, 1, 1, 'relu6');
  let f = 1;
  for (const [t, c, n, s] of cfg) {
    const outC = scale(c, w);
    for (let i = 0; i < n; ++i) {
      const stride = i === 0 ? s : 1;
      const hidden = inC * t;
      const p = `features.${f}.conv`;
      let y = x;
      let k = 0;
      if (t !== 1) {
        y = g.convBn(`${p}.0.0`, `${p}.0.1`, y, hidden, 1, 1, 1, 'relu6');
        k = 1;
      }
      y = g.convBn(`${p}.${k}.0`, `${p}.${k}.1`, y, hidden, 3, stride, hidden, 'relu6');
      y = g.conv(`${p}.${k + 1}`, y, outC, 1, 1, 0);
      y = g.bn(`${p}.${k + 2}`, y);
      x = stride === 1 && inC === outC ? g.add(y, x) : y;
      inC = outC;
      f += 1;
    }
  }
  const last = w > 1 ? scale(1280, w) : 1280;
  x = g.convBn(`features.${f}.0`, `features.${f}.1`, x, last, 1, 1, 1, 'relu6');
  x = g.flatten(g.gap(x));
  x = g.dropout(x, 0.2);
  g.linear('classifier.1', x, o.numClasses);
  return g.build();
}

// ShuffleNetV2 1.0x (Ma et al. 2018), CIFAR variant: stride-1 stem conv, no max-pool; torchvision names.
function shufflenetv2(o: ZooOptions): ModelSpec {
  const w = o.width_multiplier ?? 1;
  const stageOut = [116, 232, 464].map((c) => 2 * scaled(c, w, 2)); // two branches of equal width
  const repeats = [4, 8, 4];
  const g = new GraphBuilder(o.inChannels, o.height, o.width);
  let inC = scale(24, w);
  let x = g.convBn('conv1.0', 'conv1.1', 0, inC, 3);
  stageOut.forEach((outC, s) => {
    const half = outC / 2;
    for (let i = 0; i < repeats[s]; ++i) {
      const p = `stage${s + 2}.${i}`;
      let left: number, right: number;
      if (i === 0) {
        // Down-sampling unit: both branches see the whole input.
        let b1 = g.conv(`${p}.branch1.0`, x, inC, 3, 2, 1, inC);
        b1 = g.bn(`${p}.branch1.1`, b1);
        left = g.convBn(`${p}.branch1.2`, `${p}.branch1.3`, b1, half, 1);
        right = x;
      } else {
        left = g.split(x, [inC / 2, inC / 2], 0);
        right = g.split(x, [inC / 2, inC / 2], 1);
      }
      let b2 = g.convBn(`${p}.branch2.0`, `${p}.branch2.1`, right, half, 1);
      b2 = g.conv(`${p}.branch2.3`, b2, half, 3, i === 0 ? 2 : 1, 1, half);
      b2 = g.bn(`${p}.branch2.4`, b2);
      b2 = g.convBn(`${p}.branch2.5`, `${p}.branch2.6`, b2, half, 1);
      x = g.shuffle(g.concat([left, b2]), 2);
      inC = outC;
    }
  });
  x = g.convBn('conv5.0', 'conv5.1', x, w > 1 ? scale(1024, w) : 1024, 1);
  x = g.flatten(g.gap(x));
  g.linear('fc', x, o.numClasses);
  return g.build();
}

export function buildModel(name: string, o: ZooOptions): ModelSpec {
  narrowest = null;
  smallestBase = Infinity;
  const spec = buildZooModel(name, o);
  const tooNarrow = narrowest as { c: number; groups: number } | null;
  if (tooNarrow !== null) {
    const w = o.width_multiplier ?? 1;
    // round(x) >= 1 needs x >= 0.5; 3 significant digits, rounded up so the figure itself is accepted
    const minimum = Math.ceil((0.5 / smallestBase) * 1000) / 1000;
    const layer =
      tooNarrow.groups > 1
        ? `a ${tooNarrow.c}-channel layer of ${tooNarrow.groups} groups`
        : `a ${tooNarrow.c}-channel layer`;
    throw new ConfigError(
      `Expected a width multiplier that leaves every layer of ${name} at least one channel${tooNarrow.groups > 1 ? ' per group' : ''} but received ${w}: ` +
        `it makes ${layer} ${((tooNarrow.c * w) / tooNarrow.groups).toPrecision(2)} channels wide. Give --width ${minimum} or more.`,
    );
  }
  return spec;
}

function buildZooModel(name: string, o: ZooOptions): ModelSpec {
  switch (name) {
    case 'vgg8':
    case 'vgg11':
    case 'vgg13':
    case 'vgg16':
    case 'vgg19':
      return vgg(VGG_CFG[name], o);
    case 'resnet18':
      return resnet([2, 2, 2, 2], o);
    case 'resnet34':
      return resnet([3, 4, 6, 3], o);
    case 'mobilenetv2':
      return mobilenetv2(o);
    case 'shufflenetv2':
      return shufflenetv2(o);
    default:
      throw new ConfigError(`Expected one of ${MODEL_NAMES.join(', ')} for model but received '${name}'`);
  }
}
