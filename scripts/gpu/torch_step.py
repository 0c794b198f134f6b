#!/usr/bin/env python3
"""The PyTorch side of scripts/gpu/check.sh: the twin (scripts/fixtures/torch_twin.py, the same graph from the
same JSON spec) on the GPU, timed like native/dev/step_bench.cpp: a training step (forward, CE,
backward, SGD Nesterov + weight decay), a DFL step (K teacher copies in eval mode under no_grad,
confidence-weighted p_T, CE + T^2 KL, T 4) and an eval forward. fp32 with TF32 off and cuDNN's
heuristic (non-benchmark) algorithms, as dfl-native runs by default; with TORCH_STEP_PRECISION=bf16
every forward runs under torch.autocast('cuda', torch.bfloat16), PyTorch's AMP (what dfl-native's
--precision bf16 does: bf16 convolutions and linear layers, float32 weights). Each timed run of
`steps` steps is closed by one synchronisation (PyTorch's best case; dfl-native reads each step's
loss back). With TORCH_STEP_MODE=compile the student and the teachers run through torch.compile
(default options); the warm-up steps then include the compilation, which is not timed.

    python3 scripts/gpu/torch_step.py STEPS K BATCHES SPEC.json...   (BATCHES like 128,512)
        one JSON line per spec and batch (one process: PyTorch starts once)
"""
import contextlib
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'fixtures'))
import torch_twin  # noqa: E402


PRECISION = os.environ.get('TORCH_STEP_PRECISION', 'fp32')
MODE = os.environ.get('TORCH_STEP_MODE', 'eager')
if MODE not in ('eager', 'compile'):
    sys.exit(f'torch_step.py: expected eager or compile for TORCH_STEP_MODE but received {MODE!r}')


def amp():
    if PRECISION == 'bf16':
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_one(spec_path, batch, steps, K):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(0)
    dev = torch.device('cuda')
    with open(spec_path) as f:
        spec = json.load(f)
    net = torch_twin.GraphNet(spec).to(dev)
    x = torch.randn(batch, spec['in_channels'], spec['height'], spec['width'], device=dev)
    nc = net(x[:2]).reshape(2, -1).shape[1]
    y = torch.arange(batch, device=dev) % nc
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    teachers = [copy.deepcopy(net).eval() for _ in range(K)]
    student = net
    if MODE == 'compile':
        student = torch.compile(net)
        teachers = [torch.compile(t) for t in teachers]
    T = 4.0

    def train_step():
        opt.zero_grad(set_to_none=False)
        with amp():
            loss = F.cross_entropy(student(x).reshape(batch, -1).float(), y)
        loss.backward()
        opt.step()

    def dfl_step():
        with torch.no_grad(), amp():
            zt = torch.stack([t(x).reshape(batch, -1) for t in teachers]).float()
        with torch.no_grad():
            w = torch.softmax(zt / T, dim=2).amax(dim=2)  # each teacher's confidence
            p_t = torch_twin.ensemble_teacher_probs(zt, w, T)
        opt.zero_grad(set_to_none=False)
        with amp():
            z = student(x).reshape(batch, -1).float()
        kl = (torch.xlogy(p_t, p_t) - p_t * F.log_softmax(z / T, dim=1)).sum(1).mean()
        (F.cross_entropy(z, y) + T * T * kl).backward()
        opt.step()

    def forward():
        with torch.no_grad(), amp():
            student(x)

    def ms(fn, train_mode, warmup=3):
        net.train(train_mode)
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000.0 / steps

    print(json.dumps({'spec': spec_path, 'batch': batch, 'teachers': K, 'precision': PRECISION, 'mode': MODE, 'torch': torch.__version__,
                      'cudnn': torch.backends.cudnn.version(), 'train_ms': ms(train_step, True),
                      'dfl_ms': ms(dfl_step, True) if K > 0 else 0.0, 'eval_ms': ms(forward, False)}), flush=True)


def main():
    steps, K, batches, specs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    for spec in specs:
        for batch in (int(b) for b in batches.split(',')):
            time_one(spec, batch, steps, K)
            torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
