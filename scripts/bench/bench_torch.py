#!/usr/bin/env python3
"""PyTorch side of scripts/bench/bench-vs-torch.mjs: the twin (scripts/fixtures/torch_twin.py's GraphNet, built
from the same JSON spec as the native model) on the same batch shape and thread count.

    python3 scripts/bench/bench_torch.py SPEC.json BATCH REPS WARMUP THREADS K MODE [COMPILE_MODE]

MODE speed: one JSON line with per-repetition milliseconds of a training step (forward, CE,
    backward, SGD Nesterov + weight decay), an eval forward (no_grad) and a DFL step (K teacher
    copies in eval mode under no_grad, then the student's step with CE + T^2 KL(p_T || q), alpha 1,
    T 4), eager.
MODE compile: the same three phases under torch.compile (inductor; COMPILE_MODE, default
    "default"): the training loss (forward + CE, its backward through AOTAutograd), the optimizer
    step (PyTorch's "compiling the optimizer" recipe), the eval forward, and for the DFL step the K
    teachers' ensemble as one compiled function and the student's CE + KL loss. The first calls of
    each phase compile (the optimizer step compiles again once its momentum buffers exist), so each
    phase runs max(WARMUP, 3) untimed calls first; compile_s is their time less as many steady
    steps. A phase that fails to compile reports its error instead of times.
MODE memory: the resident-set growth in MB from before the model was built to the peak of REPS
    eager DFL steps (the same measure bench-vs-torch.mjs takes of dfl-native).

Works with Debian's python3-torch 1.13 (/usr/bin/python3; no torch.compile, so MODE compile reports
that) and the pip CPU wheels 2.x. Inductor writes its caches to TORCHINDUCTOR_CACHE_DIR (the caller
points it at a fresh folder per run, so the first round's compile_s is a cold compile).
"""
import copy
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures'))
import torch_twin  # noqa: E402

T = 4.0


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


def short_error(e):
    """The first line of an exception, short enough for a table cell."""
    text = f'{type(e).__name__}: {e}'.strip().split('\n')[0]
    return text if len(text) <= 300 else text[:297] + '...'


class Bench:
    """The twin, its optimizer, K teacher copies and a fixed batch."""

    def __init__(self, spec, batch, K):
        self.batch = batch
        self.net = torch_twin.GraphNet(spec)
        self.x = torch.randn(batch, spec['in_channels'], spec['height'], spec['width'])
        nc = self.net(self.x[:2]).reshape(2, -1).shape[1]
        self.y = torch.arange(batch) % nc
        self.opt = torch.optim.SGD(self.net.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.teachers = [copy.deepcopy(self.net).eval() for _ in range(K)]

    # The pieces each phase is made of; compile mode wraps them in torch.compile.
    def train_loss(self, x, y):
        return torch.nn.functional.cross_entropy(self.net(x).reshape(self.batch, -1), y)

    def forward(self, x):
        return self.net(x)

    def ensemble(self, x):
        return torch.stack([torch.softmax(t(x).reshape(self.batch, -1) / T, dim=1) for t in self.teachers]).mean(0)

    def dfl_loss(self, x, y, p_t):
        z = self.net(x).reshape(self.batch, -1)
        kl = torch.nn.functional.kl_div(torch.log_softmax(z / T, dim=1), p_t, reduction='batchmean')
        return torch.nn.functional.cross_entropy(z, y) + T * T * kl

    def phases(self, train_loss, forward, ensemble, dfl_loss, opt_step):
        """The three timed phases, built from (possibly compiled) pieces."""
        net, opt, x, y = self.net, self.opt, self.x, self.y

        def train_step():
            opt.zero_grad(set_to_none=False)
            train_loss(x, y).backward()
            opt_step()

        def eval_forward():
            with torch.no_grad():
                forward(x)

        def dfl_step():
            with torch.no_grad():
                p_t = ensemble(x)
            opt.zero_grad(set_to_none=False)
            dfl_loss(x, y, p_t).backward()
            opt_step()

        return {'train': (train_step, True), 'forward': (eval_forward, False), 'dfl': (dfl_step, True)}


def timed(net, fn, train_mode, warmup, reps):
    """(first-call milliseconds, per-repetition milliseconds) of fn after warmup untimed calls."""
    net.train(train_mode)
    first = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        first.append((time.perf_counter() - t0) * 1000.0)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return first, out


def run_eager(b, warmup, reps):
    result = {}
    for name, (fn, train_mode) in b.phases(b.train_loss, b.forward, b.ensemble, b.dfl_loss, b.opt.step).items():
        result[name + '_ms'] = timed(b.net, fn, train_mode, warmup, reps)[1]
    return result


def run_compiled(b, warmup, reps, mode):
    if not hasattr(torch, 'compile'):
        return {'error': f'torch.compile needs PyTorch 2.0 or later; this is {torch.__version__}'}
    c = lambda f: torch.compile(f, mode=mode)  # noqa: E731
    opt_step = c(b.opt.step)
    result = {'compile_mode': mode, 'compile_s': {}, 'errors': {}}
    phases = b.phases(c(b.train_loss), c(b.forward), c(b.ensemble), c(b.dfl_loss), opt_step)
    for name, (fn, train_mode) in phases.items():
        try:
            first, times = timed(b.net, fn, train_mode, max(warmup, 3), reps)
        except Exception as e:  # noqa: BLE001 -- any compiler failure becomes the row's reason
            result['errors'][name] = short_error(e)
            continue
        result[name + '_ms'] = times
        result['compile_s'][name] = max(0.0, sum(first) - len(first) * statistics.median(times)) / 1000.0
    return result


def main():
    spec_path, batch, reps, warmup, threads, K, mode = sys.argv[1:8]
    compile_mode = sys.argv[8] if len(sys.argv) > 8 else 'default'
    batch, reps, warmup, threads, K = int(batch), int(reps), int(warmup), int(threads), int(K)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(spec_path) as f:
        spec = json.load(f)
    base_rss = rss_mb('VmRSS')
    reset_peak()
    b = Bench(spec, batch, K)
    head = {'torch': torch.__version__, 'threads': torch.get_num_threads()}
    if mode == 'memory':
        b.net.train()
        for _ in range(reps):
            b.phases(b.train_loss, b.forward, b.ensemble, b.dfl_loss, b.opt.step)['dfl'][0]()
        print(json.dumps({**head, 'dfl_peak_delta_mb': rss_mb('VmHWM') - base_rss}))
    elif mode == 'speed':
        print(json.dumps({**head, **run_eager(b, warmup, reps)}))
    elif mode == 'compile':
        print(json.dumps({**head, **run_compiled(b, warmup, reps, compile_mode)}))
    else:
        sys.exit(f'Expected one of speed, compile, memory for MODE but received {mode!r}')


if __name__ == '__main__':
    main()
