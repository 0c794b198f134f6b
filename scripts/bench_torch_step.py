#!/usr/bin/env python3
"""PyTorch side of scripts/bench-step.mjs: times the twin (torch_twin.GraphNet, built from the same
JSON spec) on the same batch: a training step (forward, CE, backward, SGD with Nesterov momentum and
weight decay) and an eval forward. Prints one JSON line. Needs Debian's python3-torch:
    /usr/bin/python3 scripts/bench_torch_step.py SPEC.json BATCH STEPS THREADS
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import torch_twin  # noqa: E402


def main():
    spec_path, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(spec_path) as f:
        spec = json.load(f)
    net = torch_twin.GraphNet(spec)
    x = torch.randn(batch, spec['in_channels'], spec['height'], spec['width'])
    nc = net(x[:2]).reshape(2, -1).shape[1]
    y = torch.arange(batch) % nc
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(net(x).reshape(batch, -1), y)
        loss.backward()
        opt.step()

    net.train()
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    train_ms = (time.perf_counter() - t) / steps * 1000
    net.eval()
    with torch.no_grad():
        for _ in range(2):
            net(x)
        t = time.perf_counter()
        for _ in range(steps):
            net(x)
        fwd_ms = (time.perf_counter() - t) / steps * 1000
    print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), 'train_ms': train_ms, 'forward_ms': fwd_ms}))


if __name__ == '__main__':
    main()
