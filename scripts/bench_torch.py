#!/usr/bin/env python3
"""PyTorch side of scripts/bench-vs-torch.mjs: the twin (torch_twin.GraphNet, built from the same JSON
spec as the native model) on the same batch shape and thread count.

    python3 scripts/bench_torch.py SPEC.json BATCH REPS WARMUP THREADS K speed
        one JSON line: per-repetition milliseconds of a training step (forward, CE, backward, SGD
        Nesterov + weight decay), an eval forward (no_grad), and a DFL step (K teacher copies in
        eval mode under no_grad, then the student's step with CE + T^2 KL(p_T || q), alpha 1, T 4)
    python3 scripts/bench_torch.py SPEC.json BATCH REPS WARMUP THREADS K memory
        one JSON line: the resident-set growth in MB from before the model was built to the peak of
        REPS DFL steps (the same measure bench-vs-torch.mjs takes of dfl-native)

Works with Debian's python3-torch 1.13 (/usr/bin/python3) and the pip CPU wheel 2.x.
"""
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import torch_twin  # noqa: E402


def rss_mb(field):
    """VmRSS or VmHWM (peak) of this process in MB, from /proc/self/status."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def reset_peak():
    """Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass


def main():
    spec_path, batch, reps, warmup, threads, K, mode = sys.argv[1:8]
    batch, reps, warmup, threads, K = int(batch), int(reps), int(warmup), int(threads), int(K)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(spec_path) as f:
        spec = json.load(f)
    base_rss = rss_mb('VmRSS')
    reset_peak()
    net = torch_twin.GraphNet(spec)
    x = torch.randn(batch, spec['in_channels'], spec['height'], spec['width'])
    nc = net(x[:2]).reshape(2, -1).shape[1]
    y = torch.arange(batch) % nc
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    teachers = [copy.deepcopy(net).eval() for _ in range(K)]
    T = 4.0

    def train_step():
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(net(x).reshape(batch, -1), y)
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad():
            net(x)

    def dfl_step():
        with torch.no_grad():
            p_t = torch.stack([torch.softmax(t(x).reshape(batch, -1) / T, dim=1) for t in teachers]).mean(0)
        opt.zero_grad(set_to_none=False)
        z = net(x).reshape(batch, -1)
        kl = torch.nn.functional.kl_div(torch.log_softmax(z / T, dim=1), p_t, reduction='batchmean')
        loss = torch.nn.functional.cross_entropy(z, y) + T * T * kl
        loss.backward()
        opt.step()

    def timed(fn, train_mode):
        net.train(train_mode)
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000.0)
        return out

    if mode == 'memory':
        net.train()
        for _ in range(reps):
            dfl_step()
        print(json.dumps({'torch': torch.__version__, 'dfl_peak_delta_mb': rss_mb('VmHWM') - base_rss}))
        return
    result = {'torch': torch.__version__, 'threads': torch.get_num_threads(),
              'train_ms': timed(train_step, True), 'forward_ms': timed(forward, False), 'dfl_ms': timed(dfl_step, True)}
    print(json.dumps(result))


if __name__ == '__main__':
    main()
