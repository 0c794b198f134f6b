#!/usr/bin/env python3
"""Reference state_dict names and shapes for the model zoo, from torchvision's own models with the
CIFAR changes the zoo documents (docs/models.md), so a test can check that dfl-native's parameter
names and shapes are exactly PyTorch's: checkpoints then move between the two.

Run with Debian's python3-torch and python3-torchvision:
    /usr/bin/python3 scripts/zoo_reference.py      # writes test/fixtures/zoo_reference.json

CIFAR changes, 10 classes:
  resnet18/34:   conv1 = 3x3 stride 1 (no max-pool; the max-pool has no parameters)
  mobilenetv2:   strides change only (no parameter changes); classifier.1 -> 10 classes
  shufflenetv2:  conv1 stride 1, no max-pool (no parameter changes); fc -> 10 classes
  vgg11/13/16/19 (BN): torchvision's `features` as is; the classifier is one Linear(512, 10)
"""
import json
import os

import torch
import torch.nn as nn
import torchvision

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'zoo_reference.json')


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


def entries(model):
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def main():
    torch.manual_seed(0)
    ref = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'num_classes': 10, 'models': {},
           'macs_32x32': {}}
    for name, blocks in (('resnet18', torchvision.models.resnet18), ('resnet34', torchvision.models.resnet34)):
        m = blocks(num_classes=10)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
        ref['models'][name] = entries(m)
        ref['macs_32x32'][name] = macs(m)
    ref['models']['mobilenetv2'] = entries(torchvision.models.mobilenet_v2(num_classes=10))
    ref['models']['shufflenetv2'] = entries(torchvision.models.shufflenet_v2_x1_0(num_classes=10))
    for name, ctor in (('vgg11', torchvision.models.vgg11_bn), ('vgg13', torchvision.models.vgg13_bn),
                       ('vgg16', torchvision.models.vgg16_bn), ('vgg19', torchvision.models.vgg19_bn)):
        m = ctor(num_classes=10)
        feats = [[f'features.{k}', list(v.shape)] for k, v in m.features.state_dict().items()]
        ref['models'][name] = feats + [['classifier.weight', [10, 512]], ['classifier.bias', [10]]]
        m.avgpool = nn.Identity()
        m.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 10))
        ref['macs_32x32'][name] = macs(m)
    text = json.dumps(ref, separators=(',', ':')).replace('],[', '],\n[')
    with open(OUT, 'w') as f:
        f.write(text + '\n')
    for k, v in ref['models'].items():
        print(f'{k}: {len(v)} tensors')


if __name__ == '__main__':
    main()
