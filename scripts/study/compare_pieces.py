#!/usr/bin/env python3
"""Deterministic piece-by-piece comparison of dfl-native's recipe with the usual PyTorch choices:
pixels (sharp vs PIL decoding of the same JPEGs), normalisation statistics, the scale of the
initial conv weights (which sets the effective learning rate of a conv followed by BatchNorm), and
the cosine schedule's granularity. Prints a JSON object.

    /usr/bin/python3 scripts/study/compare_pieces.py --dump /work/data/dump --jpeg /work/data/cifar10-jpeg
"""
import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn

from torch_recipe import CIFAR10_MEAN, CIFAR10_STD, VGG, channel_stats, cosine, init_weights, pil_images


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--dump', required=True)
    p.add_argument('--jpeg', required=True)
    a = p.parse_args()
    meta = json.load(open(os.path.join(a.dump, 'meta.json')))
    sharp_test = np.fromfile(os.path.join(a.dump, 'test_images.u8'), dtype=np.uint8).reshape(-1, 3, 32, 32)
    pil_test = pil_images(a.jpeg, 'test', meta['classNames'])
    d = sharp_test.astype(np.int16) - pil_test.astype(np.int16)
    tr = np.fromfile(os.path.join(a.dump, 'split_seed0_train.i32'), dtype=np.int32)
    train = np.fromfile(os.path.join(a.dump, 'train_images.u8'), dtype=np.uint8).reshape(-1, 3, 32, 32)[tr]
    mean, std = channel_stats(train)
    out = {
        'pixels_sharp_vs_pil_test': {
            'images': int(len(d)), 'differing_values_share': float((d != 0).mean()),
            'images_with_any_difference_share': float((d != 0).reshape(len(d), -1).any(1).mean()),
            'mean_abs_difference': float(np.abs(d).mean()), 'max_abs_difference': int(np.abs(d).max()),
            'mean_signed_difference_per_channel': [float(d[:, c].mean()) for c in range(3)],
        },
        'normalisation': {'train_split_mean': list(map(float, mean)), 'train_split_std': list(map(float, std)),
                          'cifar10_constants_mean': CIFAR10_MEAN, 'cifar10_constants_std': CIFAR10_STD},
    }
    norms = {}
    for how in ('native', 'torch'):
        torch.manual_seed(0)
        net = VGG(0.25)
        init_weights(net, how)
        norms[how] = {n: float(p.detach().pow(2).sum()) for n, p in net.named_parameters() if p.dim() == 4}
    out['conv_weight_sq_norm'] = {n: {'native': norms['native'][n], 'torch': norms['torch'][n],
                                      'ratio': norms['native'][n] / norms['torch'][n]} for n in norms['native']}
    batches = 352
    per_batch = [cosine(0.05, e + i / batches, 20) for e in range(20) for i in range(batches)]
    per_epoch = [cosine(0.05, e, 20) for e in range(20) for i in range(batches)]
    out['cosine_20_epochs'] = {'mean_lr_per_batch': float(np.mean(per_batch)), 'mean_lr_per_epoch': float(np.mean(per_epoch)),
                               'last_epoch_lr_per_epoch': cosine(0.05, 19, 20)}
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
