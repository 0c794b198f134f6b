#!/usr/bin/env python3
"""References for the model zoo from torchvision's own models with the CIFAR changes the zoo
documents (docs/models.md). They are built here from torchvision's modules, NOT from dfl-native's
JSON spec, so a mis-wired zoo graph (a skip connection, a split, a shuffle) cannot be mirrored.

Run with Debian's python3-torch and python3-torchvision:
    /usr/bin/python3 scripts/zoo_reference.py
writes
    test/fixtures/zoo_reference.json     state_dict names and shapes (width 1, 10 classes) and MACs
                                         per 32x32 image, so checkpoints move between the two
    test/fixtures/zoo_step_<model>.bin   one training step of every zoo model at width 1/8 (below)
The output is deterministic: a re-run writes identical bytes.

CIFAR changes:
  resnet18/34:   conv1 = 3x3 stride 1, no max-pool
  mobilenetv2:   stride 1 in the stem and in the 24-channel stage (no parameter changes)
  shufflenetv2:  conv1 stride 1, no max-pool (no parameter changes)
  vgg8..19 (BN): torchvision's `features` (make_layers) for the layer list; the classifier is global
                 average pooling + one Linear (vgg8, the one-conv-per-stage VGG, is not in torchvision)
  width w:       every channel count c becomes max(1, round(c * w)) (shufflenetv2: stage outputs
                 2 * max(1, round(c * w / 2))); the 1280 / 1024 last convs stay unless w > 1

Step fixtures (DFLFIX format, test/fixtures/README.md), compared by test/unit/zoo-torch.test.ts:
every parameter and BN buffer is set by `hash_fill` (a formula both sides compute exactly, so no
weights need to be stored), the input too (key 'input', or 'input#<cfg.input_salt>': the first whose
forward keeps every ReLU/ReLU6 input KINK_MARGIN from its kinks, so float32 rounding cannot flip a
mask); dropout p = 0 (its mask comes from each side's own RNG).
One step in training mode: forward, cross-entropy (mean), backward, torch.optim.SGD (lr 0.1,
momentum 0.9, nesterov, weight decay 5e-4), all in float64 from float32 inputs.
Tensors: cfg.*, labels, logits, loss, grad_norm (all parameters), grad_norm.<param> for every
parameter, after_norm.<key> (L2 norm after the step) for every float state_dict entry, and in full
grad.<key> / after.<key> for a few tensors per model (FULL_TENSORS).
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import Fixture  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'zoo_reference.json')
MODELS = ['resnet18', 'resnet34', 'mobilenetv2', 'shufflenetv2', 'vgg8', 'vgg11', 'vgg13', 'vgg16', 'vgg19']


def rnd(x):
    """Math.round of JavaScript (half up), as the zoo rounds; Python's round() rounds half to even."""
    return int(math.floor(x + 0.5))


def scale(c, w):
    return max(1, rnd(c * w))


# --- the zoo as torchvision models ---------------------------------------------------------------

VGG_CFG = {
    'vgg8': [64, 'M', 128, 'M', 256, 'M', 512, 'M', 512, 'M'],
    'vgg11': torchvision.models.vgg.cfgs['A'],
    'vgg13': torchvision.models.vgg.cfgs['B'],
    'vgg16': torchvision.models.vgg.cfgs['D'],
    'vgg19': torchvision.models.vgg.cfgs['E'],
}


class VGGCifar(nn.Module):
    """torchvision's VGG-BN feature layers, then global average pooling and one Linear."""

    def __init__(self, cfg, num_classes, width):
        super().__init__()
        self.features = torchvision.models.vgg.make_layers([v if v == 'M' else scale(v, width) for v in cfg], batch_norm=True)
        self.classifier = nn.Linear(scale(512, width), num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def resnet_cifar(blocks, num_classes, width):
    m = torchvision.models.ResNet(BasicBlock, blocks, num_classes=num_classes)
    c = [scale(v, width) for v in (64, 128, 256, 512)]
    m.inplanes = c[0]  # _make_layer reads and advances it
    m.conv1 = nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
    m.bn1 = nn.BatchNorm2d(c[0])
    m.maxpool = nn.Identity()
    m.layer1 = m._make_layer(BasicBlock, c[0], blocks[0])
    m.layer2 = m._make_layer(BasicBlock, c[1], blocks[1], stride=2)
    m.layer3 = m._make_layer(BasicBlock, c[2], blocks[2], stride=2)
    m.layer4 = m._make_layer(BasicBlock, c[3], blocks[3], stride=2)
    m.fc = nn.Linear(c[3], num_classes)
    return m


def mobilenetv2_cifar(num_classes, width):
    setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    m = torchvision.models.MobileNetV2(num_classes=num_classes, width_mult=width, inverted_residual_setting=setting, round_nearest=1)
    m.features[0][0].stride = (1, 1)
    return m


def shufflenetv2_cifar(num_classes, width):
    stages = [2 * max(1, rnd(c * width / 2)) for c in (116, 232, 464)]
    last = scale(1024, width) if width > 1 else 1024
    m = torchvision.models.ShuffleNetV2([4, 8, 4], [scale(24, width)] + stages + [last], num_classes=num_classes)
    m.conv1[0].stride = (1, 1)
    m.maxpool = nn.Identity()
    return m


def cifar_model(name, num_classes=10, width=1.0):
    if name in VGG_CFG:
        return VGGCifar(VGG_CFG[name], num_classes, width)
    if name == 'resnet18':
        return resnet_cifar([2, 2, 2, 2], num_classes, width)
    if name == 'resnet34':
        return resnet_cifar([3, 4, 6, 3], num_classes, width)
    if name == 'mobilenetv2':
        return mobilenetv2_cifar(num_classes, width)
    if name == 'shufflenetv2':
        return shufflenetv2_cifar(num_classes, width)
    raise ValueError(name)


# --- names, shapes and MACs (zoo_reference.json) -------------------------------------------------

def macs(model, size=32):
    """Multiply-accumulates of convs and linears for one image, counted with forward hooks."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total[0] += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0]


def write_reference():
    torch.manual_seed(0)
    ref = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'num_classes': 10, 'models': {},
           'macs_32x32': {}}
    for name in MODELS:
        m = cifar_model(name)
        ref['models'][name] = [[k, list(v.shape)] for k, v in m.state_dict().items()]
        ref['macs_32x32'][name] = macs(m)
    text = json.dumps(ref, separators=(',', ':')).replace('],[', '],\n[')
    with open(OUT, 'w') as f:
        f.write(text + '\n')
    for k, v in ref['models'].items():
        print(f'{k}: {len(v)} tensors, {ref["macs_32x32"][k]} MACs')


# --- one training step per model (zoo_step_<model>.bin) -----------------------------------------

def fnv1a32(text):
    h = 0x811c9dc5
    for b in text.encode('utf-8'):
        h = ((h ^ b) * 0x01000193) & 0xffffffff
    return h


def hash_uniform(key, n):
    """n values in [-1, 1), multiples of 2^-23 (exact in float32): xorshift32 seeded by FNV-1a(key).
    The TypeScript twin is test/helpers/hash-fill.ts; both must give the same bits."""
    x = fnv1a32(key) or 1
    out = []
    for _ in range(n):
        x ^= (x << 13) & 0xffffffff
        x ^= x >> 17
        x ^= (x << 5) & 0xffffffff
        out.append((x >> 8) / 2.0 ** 23 - 1.0)
    return out


def hash_fill(key, shape):
    """The value of state_dict entry `key` of `shape` (float32-rounded), as hash-fill.ts computes it:
    conv weight U(+-sqrt(6/fan_in)), linear weight U(+-1/sqrt(fan_in)), BN weight and running_var
    1 + U(+-0.25), every bias and running_mean U(+-0.1), num_batches_tracked 0."""
    n = math.prod(shape)
    if key.endswith('num_batches_tracked'):
        return torch.zeros(shape, dtype=torch.int64)
    v = hash_uniform(key, n)
    if key.endswith('.weight') and len(shape) == 4:
        b = math.sqrt(6.0 / (n // shape[0]))
        vals = [b * u for u in v]
    elif key.endswith('.weight') and len(shape) == 2:
        b = 1.0 / math.sqrt(n // shape[0])
        vals = [b * u for u in v]
    elif key.endswith('.weight') or key.endswith('.running_var'):
        vals = [1.0 + 0.25 * u for u in v]
    else:
        vals = [0.1 * u for u in v]
    return torch.tensor(vals, dtype=torch.float64).float().reshape(shape)


STEP = dict(width=0.125, B=4, C=3, H=32, W=32, NC=10, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=1)

# A few tensors per model compared in full (the rest by norms): the stem, one inside a skip,
# split or shuffle path (or a BN weight), a deep BN's statistics, and the classifier. No conv bias
# before a BN: its exact gradient is zero, so only rounding noise would be compared.
FULL_TENSORS = {
    'vgg8': ['features.0.weight', 'features.9.weight', 'features.13.running_var', 'classifier.bias'],
    'vgg11': ['features.0.weight', 'features.9.weight', 'features.26.running_var', 'classifier.bias'],
    'vgg13': ['features.0.weight', 'features.32.running_mean', 'classifier.bias'],
    'vgg16': ['features.0.weight', 'features.41.running_var', 'classifier.bias'],
    'vgg19': ['features.0.weight', 'features.50.running_mean', 'classifier.bias'],
    'resnet18': ['conv1.weight', 'layer2.0.downsample.0.weight', 'layer4.1.bn2.running_mean', 'fc.bias'],
    'resnet34': ['conv1.weight', 'layer3.0.downsample.0.weight', 'layer4.2.bn2.running_var', 'fc.bias'],
    'mobilenetv2': ['features.0.0.weight', 'features.3.conv.1.0.weight', 'features.17.conv.3.running_mean', 'classifier.1.bias'],
    'shufflenetv2': ['conv1.0.weight', 'stage3.0.branch1.0.weight', 'stage2.1.branch2.3.weight', 'stage4.3.branch2.6.running_var', 'fc.bias'],
}


# A ReLU/ReLU6 input this close to a kink (0, or 6) would let float32 rounding on the compared side
# flip the activation's mask and move gradients by O(1) in a few elements: a fixture input must keep
# every activation input at least this far from its kinks (float32 forwards here differ from
# float64 by about 1e-6).
KINK_MARGIN = 5e-6


def input_key(salt):
    return 'input' if salt == 0 else f'input#{salt}'


def kink_distance(net, x):
    """The smallest distance of any ReLU/ReLU6 input to its kink(s) in one training-mode forward
    (on a copy: the forward updates BN statistics)."""
    import copy
    probe = copy.deepcopy(net)
    nearest = [math.inf]

    def hook(module, inputs):
        v = inputs[0].detach()
        d = v.abs().min().item()
        if isinstance(module, nn.ReLU6):
            d = min(d, (v - 6.0).abs().min().item())
        nearest[0] = min(nearest[0], d)

    for m in probe.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.register_forward_pre_hook(hook)
    with torch.no_grad():
        probe(x)
    return nearest[0]


def step_fixture(name):
    s = STEP
    net = cifar_model(name, s['NC'], s['width'])
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    with torch.no_grad():
        for key, t in net.state_dict().items():
            t.copy_(hash_fill(key, list(t.shape)))
    net = net.double().train()
    shape = (s['B'], s['C'], s['H'], s['W'])
    # The first input (salt 0, 1, ...) with no activation input near a kink; the salt is recorded.
    for salt in range(100):
        x = torch.tensor(hash_uniform(input_key(salt), math.prod(shape)), dtype=torch.float64).reshape(shape)
        margin = kink_distance(net, x)
        if margin >= KINK_MARGIN:
            break
    else:
        raise RuntimeError(f'{name}: no input among 100 keeps its activations {KINK_MARGIN} from their kinks')
    print(f'{name}: input {input_key(salt)!r}, nearest activation kink {margin:.2e}')
    y = torch.tensor([(3 * i + 1) % s['NC'] for i in range(s['B'])])
    state0 = {k: v.clone() for k, v in net.state_dict().items()}

    opt = torch.optim.SGD(net.parameters(), lr=s['lr'], momentum=s['momentum'], weight_decay=s['weight_decay'], nesterov=bool(s['nesterov']))
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    opt.step()
    after = net.state_dict()

    fx = Fixture()
    for k, v in s.items():
        fx.cfg(k, v)
    fx.cfg('input_salt', salt)
    fx.add('labels', y.to(torch.int32))
    fx.add('logits', logits)
    fx.add('loss', loss.reshape(1))
    fx.add('grad_norm', torch.sqrt(sum((g * g).sum() for g in grads.values())).reshape(1))
    for k, g in grads.items():
        fx.add('grad_norm.' + k, g.norm().reshape(1))
    for k, v in after.items():
        if v.is_floating_point():
            fx.add('after_norm.' + k, v.norm().reshape(1))
    for k in FULL_TENSORS[name]:
        if k not in state0:
            raise KeyError(f'{name}: FULL_TENSORS names {k}, which the model does not have')
        if k in grads:
            fx.add('grad.' + k, grads[k])
        fx.add('after.' + k, after[k])
    return fx.write(f'zoo_step_{name}.bin')


def main():
    torch.set_num_threads(1)
    write_reference()
    total = sum(step_fixture(name) for name in MODELS)
    print(f'zoo step fixtures: {total} bytes (torch {torch.__version__}, torchvision {torchvision.__version__})')


if __name__ == '__main__':
    main()
