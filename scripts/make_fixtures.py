#!/usr/bin/env python3
"""Golden fixtures for the C++ kernel tests (test/native/test_fixtures.cpp), computed by PyTorch.

Run with Debian's python3-torch (the pyenv `python3` on PATH has no torch):
    /usr/bin/python3 scripts/make_fixtures.py          # writes test/fixtures/*.bin (+ model_step_spec.json)
The output is deterministic: a re-run writes identical bytes (seeded per file, one torch thread).

FILE FORMAT (DFLFIX version 1), all integers and data little-endian:
    magic      8 bytes   "DFLFIX1\\0"
    version    uint32    1
    count      uint32    number of tensors
    count x tensor:
        name_len  uint32, name  name_len bytes of UTF-8 (no terminator)
        dtype     uint32    0 = float32, 1 = int32
        ndim      uint32, dims  ndim x uint32  (ndim 0 = a scalar, one element)
        data      prod(dims) x 4 bytes, C order (row-major; NCHW for images)
Scalars (configuration values such as stride, eps, a loss) are 1-element float32 tensors of shape
[1] named "cfg.<what>" (integers stored exactly as floats). Tensor names are unique per file.

Every reference is computed in float64 from float32-representable inputs (inputs are drawn in
float32, then widened) and rounded to float32 once at the end, so the fixtures are the exact answer
(to float32 rounding) for the stored inputs; kernels computing in float32 differ only by their own
rounding. Gradients come from torch.autograd with a random upstream gradient "dout"
(loss = sum(out * dout)).

Files and their tensors are listed in test/fixtures/README.md; the model step's graph is
model_step_spec.json (the JSON spec of src/models/spec.ts), and its PyTorch twin is
scripts/torch_twin.py.
"""
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_twin import GraphNet, dfl_loss, ensemble_teacher_probs, channel_shuffle, init_like_native  # noqa: E402

OUT_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures'))
MAGIC = b'DFLFIX1\0'
VERSION = 1


class Fixture:
    def __init__(self):
        self.tensors = []  # (name, dtype code, shape, bytes)
        self.names = set()

    def add(self, name, t):
        assert name not in self.names, name
        self.names.add(name)
        t = t.detach()
        if t.dtype in (torch.int32, torch.int64):
            code, arr = 1, t.to(torch.int32).contiguous().numpy().astype('<i4')
        else:
            code, arr = 0, t.to(torch.float32).contiguous().numpy().astype('<f4')
        self.tensors.append((name, code, list(t.shape), arr.tobytes()))

    def cfg(self, name, value):
        self.add('cfg.' + name, torch.tensor([float(value)], dtype=torch.float64))

    def write(self, fname):
        out = bytearray(MAGIC)
        out += struct.pack('<II', VERSION, len(self.tensors))
        for name, code, shape, data in self.tensors:
            nb = name.encode('utf-8')
            out += struct.pack('<I', len(nb)) + nb
            out += struct.pack('<II', code, len(shape))
            out += struct.pack('<%dI' % len(shape), *shape)
            out += data
        path = os.path.join(OUT_DIR, fname)
        with open(path, 'wb') as f:
            f.write(out)
        print(f'wrote {os.path.relpath(path)}: {len(self.tensors)} tensors, {len(out)} bytes')
        return len(out)


def read_fixture(path):
    """Reads a DFLFIX1 file back: {name: numpy array} (for debugging and checks)."""
    import numpy as np
    with open(path, 'rb') as f:
        buf = f.read()
    assert buf[:8] == MAGIC, f'{path}: bad magic'
    version, count = struct.unpack_from('<II', buf, 8)
    assert version == VERSION, f'{path}: version {version}'
    pos, out = 16, {}
    for _ in range(count):
        (n,) = struct.unpack_from('<I', buf, pos)
        name = buf[pos + 4:pos + 4 + n].decode('utf-8')
        pos += 4 + n
        code, ndim = struct.unpack_from('<II', buf, pos)
        dims = struct.unpack_from('<%dI' % ndim, buf, pos + 8)
        pos += 8 + 4 * ndim
        size = int(np.prod(dims)) if ndim else 1
        out[name] = np.frombuffer(buf, dtype='<f4' if code == 0 else '<i4', count=size, offset=pos).reshape(dims)
        pos += 4 * size
    assert pos == len(buf), f'{path}: trailing bytes'
    return out


def seed(s):
    torch.manual_seed(s)


def r32(*shape, scale=1.0, shift=0.0):
    """Normal values drawn in float32, widened to float64 exactly."""
    return (torch.randn(*shape) * scale + shift).float().double()


def u32(*shape, lo=0.0, hi=1.0):
    return (torch.rand(*shape) * (hi - lo) + lo).float().double()


def leaf(t):
    return t.clone().requires_grad_(True)


def grad_of(out, dout, *leaves):
    gs = torch.autograd.grad(out, leaves, dout, allow_unused=True)
    return [torch.zeros_like(l) if g is None else g for l, g in zip(leaves, gs)]


# ------------------------------------------------------------------------------------------------
def conv_case(fname, s, B, C, H, W, OC, KH, KW, sh, sw, ph, pw, groups, bias):
    seed(s)
    x = r32(B, C, H, W)
    w = r32(OC, C // groups, KH, KW, scale=0.5)
    b = r32(OC, scale=0.3) if bias else None
    fx = Fixture()
    for k, v in dict(B=B, C=C, H=H, W=W, OC=OC, KH=KH, KW=KW, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                     groups=groups, bias=int(bias)).items():
        fx.cfg(k, v)
    xl, wl = leaf(x), leaf(w)
    bl = leaf(b) if bias else None
    out = F.conv2d(xl, wl, bl, (sh, sw), (ph, pw), 1, groups)
    dout = r32(*out.shape)
    grads = grad_of(out, dout, xl, wl, *([bl] if bias else []))
    fx.add('inp', x)
    fx.add('weight', w)
    if bias:
        fx.add('bias', b)
    fx.add('dout', dout)
    fx.add('out', out)
    fx.add('dinp', grads[0])
    fx.add('dweight', grads[1])
    if bias:
        fx.add('dbias', grads[2])
    return fx.write(fname)


def linear_case():
    seed(101)
    B, IN, OUT = 3, 7, 5
    x, w, b = r32(B, IN), r32(OUT, IN, scale=0.5), r32(OUT, scale=0.3)
    xl, wl, bl = leaf(x), leaf(w), leaf(b)
    out = F.linear(xl, wl, bl)
    dout = r32(B, OUT)
    dx, dw, db = grad_of(out, dout, xl, wl, bl)
    fx = Fixture()
    fx.cfg('B', B), fx.cfg('IN', IN), fx.cfg('OUT', OUT)
    for k, v in dict(inp=x, weight=w, bias=b, dout=dout, out=out, dinp=dx, dweight=dw, dbias=db).items():
        fx.add(k, v)
    return fx.write('linear.bin')


def batchnorm_cases():
    B, C, H, W = 3, 4, 5, 3
    momentum, eps = 0.1, 1e-5
    seed(201)
    x = r32(B, C, H, W, scale=2.0, shift=0.5)
    gamma, beta = u32(C, lo=0.5, hi=1.5), r32(C, scale=0.3)
    rmean, rvar = r32(C, scale=0.2), u32(C, lo=0.5, hi=2.0)
    xl, gl, bl = leaf(x), leaf(gamma), leaf(beta)
    rm, rv = rmean.clone(), rvar.clone()
    out = F.batch_norm(xl, rm, rv, gl, bl, training=True, momentum=momentum, eps=eps)
    dout = r32(B, C, H, W)
    dx, dg, db = grad_of(out, dout, xl, gl, bl)
    mean = x.mean(dim=(0, 2, 3))
    var_b = x.var(dim=(0, 2, 3), unbiased=False)
    fx = Fixture()
    for k, v in dict(B=B, C=C, H=H, W=W, momentum=momentum, eps=eps).items():
        fx.cfg(k, v)
    for k, v in dict(inp=x, gamma=gamma, beta=beta, running_mean=rmean, running_var=rvar, dout=dout, out=out,
                     save_mean=mean, save_invstd=1.0 / torch.sqrt(var_b + eps), running_mean_after=rm,
                     running_var_after=rv, dinp=dx, dgamma=dg, dbeta=db).items():
        fx.add(k, v)
    size = fx.write('batchnorm_train.bin')

    seed(202)
    x = r32(B, C, H, W, scale=2.0, shift=0.5)
    gamma, beta = u32(C, lo=0.5, hi=1.5), r32(C, scale=0.3)
    rmean, rvar = r32(C, scale=0.5), u32(C, lo=0.5, hi=2.0)
    out = F.batch_norm(x, rmean.clone(), rvar.clone(), gamma, beta, training=False, eps=eps)
    fx = Fixture()
    for k, v in dict(B=B, C=C, H=H, W=W, eps=eps).items():
        fx.cfg(k, v)
    for k, v in dict(inp=x, gamma=gamma, beta=beta, running_mean=rmean, running_var=rvar, out=out).items():
        fx.add(k, v)
    return size + fx.write('batchnorm_eval.bin')


def activation_case(fname, s, fn, scale):
    seed(s)
    shape = (2, 3, 5, 3)
    x = r32(*shape, scale=scale)
    # Pin PyTorch's kinks: gradient 0 at exactly 0 (relu, relu6) and exactly 6 (relu6).
    x.view(-1)[:3] = torch.tensor([0.0, 6.0, -0.0], dtype=torch.float64)
    xl = leaf(x)
    out = fn(xl)
    dout = r32(*shape)
    (dx,) = grad_of(out, dout, xl)
    fx = Fixture()
    for k, v in dict(inp=x, dout=dout, out=out, dinp=dx).items():
        fx.add(k, v)
    return fx.write(fname)


def pool_case(fname, s, kind, B, C, H, W, k, st, p, ties=False):
    seed(s)
    if ties:
        x = torch.randint(0, 3, (B, C, H, W)).double()  # many equal values: first max wins
    else:
        x = r32(B, C, H, W)
    xl = leaf(x)
    fx = Fixture()
    for key, v in dict(B=B, C=C, H=H, W=W, KH=k, KW=k, stride_h=st, stride_w=st, pad_h=p, pad_w=p).items():
        fx.cfg(key, v)
    if kind == 'max':
        out, idx = F.max_pool2d(xl, k, st, p, return_indices=True)
    else:
        out = F.avg_pool2d(xl, k, st, p, count_include_pad=True)
    dout = r32(*out.shape)
    (dx,) = grad_of(out, dout, xl)
    fx.add('inp', x)
    fx.add('dout', dout)
    fx.add('out', out)
    if kind == 'max':
        fx.add('argmax', idx.to(torch.int32))
    fx.add('dinp', dx)
    return fx.write(fname)


def gap_case():
    seed(401)
    B, C, H, W = 2, 3, 5, 3
    x = r32(B, C, H, W)
    xl = leaf(x)
    out = xl.mean(dim=(2, 3))
    dout = r32(B, C)
    (dx,) = grad_of(out, dout, xl)
    fx = Fixture()
    for k, v in dict(B=B, C=C, H=H, W=W).items():
        fx.cfg(k, v)
    for k, v in dict(inp=x, dout=dout, out=out, dinp=dx).items():
        fx.add(k, v)
    return fx.write('gap.bin')


def ce_case(fname, s, eps):
    seed(s)
    B, NC = 5, 7
    z = r32(B, NC, scale=2.0)
    y = torch.randint(0, NC, (B,))
    dloss = 0.7
    zl = leaf(z)
    losses = F.cross_entropy(zl, y, label_smoothing=eps, reduction='none')
    loss = losses.mean()
    (dz,) = grad_of(loss, torch.tensor(dloss, dtype=torch.float64), zl)
    fx = Fixture()
    for k, v in dict(B=B, NC=NC, label_smoothing=eps, dloss=dloss).items():
        fx.cfg(k, v)
    fx.add('logits', z)
    fx.add('targets', y.to(torch.int32))
    fx.add('losses', losses)
    fx.add('loss', loss.reshape(1))
    fx.add('probs', F.softmax(z, dim=1))
    fx.add('dlogits', dz)
    return fx.write(fname)


def ensemble_kl_case():
    seed(601)
    K, B, NC, T = 3, 4, 6, 4.0
    z = r32(B, NC, scale=3.0)
    t = r32(K, B, NC, scale=3.0)
    w = u32(K, B, lo=0.1, hi=2.0)
    w[1, 2] = 0.0  # a teacher with no say for one sample
    dloss = 0.7
    zl = leaf(z)
    pt = ensemble_teacher_probs(t, w, T)
    logq = F.log_softmax(zl / T, dim=1)
    losses = T * T * (torch.xlogy(pt, pt) - pt * logq).sum(dim=1)
    loss = losses.mean()
    (dz,) = grad_of(loss, torch.tensor(dloss, dtype=torch.float64), zl)
    # Cross-check the twin's loss helper (alpha = 1, no CE contribution difference).
    _, _, distill = dfl_loss(z, torch.zeros(B, dtype=torch.long), t, w, 0.0, 1.0, T)
    assert abs(distill.item() - loss.item()) < 1e-12
    fx = Fixture()
    for k, v in dict(K=K, B=B, NC=NC, T=T, dloss=dloss).items():
        fx.cfg(k, v)
    for k, v in dict(student_logits=z, teacher_logits=t, weights=w, losses=losses, loss=loss.reshape(1),
                     student_probs=F.softmax(z / T, dim=1), teacher_probs=pt, dlogits=dz).items():
        fx.add(k, v)
    return fx.write('ensemble_kl.bin')


def sgd_case(fname, s, nesterov, decoupled, use_mask):
    seed(s)
    n, steps = 13, 3
    lr, momentum, wd = 0.1, 0.9, 0.05
    p0 = r32(n)
    grads = [r32(n) for _ in range(steps)]
    mask = (torch.arange(n) % 4 != 3).double() if use_mask else torch.ones(n, dtype=torch.float64)
    fx = Fixture()
    for k, v in dict(n=n, steps=steps, lr=lr, momentum=momentum, weight_decay=wd, nesterov=int(nesterov),
                     decoupled=int(decoupled), has_mask=int(use_mask)).items():
        fx.cfg(k, v)
    fx.add('params', p0)
    if use_mask:
        fx.add('decay_mask', mask)
    # The reference: torch.optim.SGD for L2 weight decay, with the mask as two parameter groups
    # (decayed / not decayed elements); decoupled (SGDW) has no torch optimiser: p *= 1 - lr*wd*mask
    # first, then SGD without weight decay.
    on, off = mask != 0, mask == 0
    pa, pb = p0[on].clone().requires_grad_(True), p0[off].clone().requires_grad_(True)
    groups = [{'params': [pa], 'weight_decay': 0.0 if decoupled else wd},
              {'params': [pb], 'weight_decay': 0.0}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    for i, g in enumerate(grads):
        if decoupled:
            with torch.no_grad():
                pa.mul_(1 - lr * wd)
        pa.grad, pb.grad = g[on].clone(), g[off].clone()
        opt.step()
        p, buf = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
        p[on], p[off] = pa.detach(), pb.detach()
        buf[on], buf[off] = opt.state[pa]['momentum_buffer'], opt.state[pb]['momentum_buffer']
        fx.add(f'grad.{i}', g)
        fx.add(f'params.{i}', p)
        fx.add(f'momentum.{i}', buf)
    return fx.write(fname)


def channel_shuffle_case():
    seed(701)
    B, C, H, W, g = 2, 6, 3, 2, 3
    x = r32(B, C, H, W)
    xl = leaf(x)
    out = channel_shuffle(xl, g)
    dout = r32(B, C, H, W)
    (dx,) = grad_of(out, dout, xl)
    fx = Fixture()
    for k, v in dict(B=B, C=C, H=H, W=W, groups=g).items():
        fx.cfg(k, v)
    for k, v in dict(inp=x, dout=dout, out=out, dinp=dx).items():
        fx.add(k, v)
    return fx.write('channel_shuffle.bin')


def concat_split_case():
    seed(801)
    B, H, W = 2, 3, 2
    chans = [2, 3, 1]
    xs = [r32(B, c, H, W) for c in chans]
    ls = [leaf(x) for x in xs]
    out = torch.cat(ls, dim=1)
    dout = r32(*out.shape)
    dxs = grad_of(out, dout, *ls)
    fx = Fixture()
    for k, v in dict(B=B, H=H, W=W, n=len(chans)).items():
        fx.cfg(k, v)
    fx.add('channels', torch.tensor(chans, dtype=torch.int32))
    for i, x in enumerate(xs):
        fx.add(f'concat.inp.{i}', x)
    fx.add('concat.dout', dout)
    fx.add('concat.out', out)
    for i, d in enumerate(dxs):
        fx.add(f'concat.dinp.{i}', d)
    # split: the adjoint; chunk 1 is unused (no upstream gradient) in the "partial" backward.
    x = r32(B, sum(chans), H, W)
    xl = leaf(x)
    parts = torch.split(xl, chans, dim=1)
    douts = [r32(*p.shape) for p in parts]
    (dx,) = grad_of(parts, douts, xl)
    (dx_partial,) = grad_of([parts[0], parts[2]], [douts[0], douts[2]], xl)
    fx.add('split.inp', x)
    for i, (p, d) in enumerate(zip(parts, douts)):
        fx.add(f'split.out.{i}', p)
        fx.add(f'split.dout.{i}', d)
    fx.add('split.dinp', dx)
    fx.add('split.dinp_partial', dx_partial)
    return fx.write('concat_split.bin')


# ------------------------------------------------------------------------------------------------
def model_step_spec():
    def conv(name, i, oc, k, s=1, p=0, g=1, bias=False):
        return dict(op='conv', name=name, inputs=[i], out_channels=oc, kernel_h=k, kernel_w=k, stride_h=s,
                    stride_w=s, pad_h=p, pad_w=p, groups=g, bias=bias)

    def bn(name, i):
        return dict(op='bn', name=name, inputs=[i], eps=1e-5, momentum=0.1)

    def pool(op, i, k, s, p):
        return dict(op=op, inputs=[i], kernel_h=k, kernel_w=k, stride_h=s, stride_w=s, pad_h=p, pad_w=p)

    nodes = [
        dict(op='input'),                                   # 0  (3,8,8)
        conv('stem.conv', 0, 8, 3, 1, 1),                   # 1  (8,8,8)
        bn('stem.bn', 1),                                   # 2
        dict(op='relu', inputs=[2]),                        # 3
        pool('maxpool', 3, 3, 2, 1),                        # 4  (8,4,4)
        conv('layer1.0.conv1', 4, 8, 3, 1, 1),              # 5
        bn('layer1.0.bn1', 5),                              # 6
        dict(op='relu', inputs=[6]),                        # 7
        conv('layer1.0.conv2', 7, 8, 3, 1, 1),              # 8
        bn('layer1.0.bn2', 8),                              # 9
        dict(op='add', inputs=[9, 4]),                      # 10 residual
        dict(op='relu', inputs=[10]),                       # 11
        dict(op='split', inputs=[11], sizes=[4, 4], index=0),  # 12 (4,4,4) passthrough half
        dict(op='split', inputs=[11], sizes=[4, 4], index=1),  # 13 (4,4,4)
        conv('branch.dw', 13, 4, 3, 1, 1, g=4),             # 14 depthwise
        bn('branch.dw_bn', 14),                             # 15
        conv('branch.pw', 15, 4, 1, bias=True),             # 16 pointwise with bias
        dict(op='relu6', inputs=[16]),                      # 17
        dict(op='concat', inputs=[12, 17]),                 # 18 (8,4,4)
        dict(op='shuffle', inputs=[18], groups=2),          # 19
        pool('avgpool', 19, 2, 2, 0),                       # 20 (8,2,2)
        dict(op='gap', inputs=[20]),                        # 21 (8,1,1)
        dict(op='flatten', inputs=[21]),                    # 22
        dict(op='dropout', inputs=[22], p=0.0),             # 23 deterministic
        dict(op='linear', name='fc', inputs=[23], out_features=5, bias=True),  # 24 logits
    ]
    return dict(in_channels=3, height=8, width=8, nodes=nodes)


def model_step_case():
    spec = model_step_spec()
    with open(os.path.join(OUT_DIR, 'model_step_spec.json'), 'w') as f:
        json.dump(spec, f, indent=1)
        f.write('\n')
    print(f'wrote {os.path.relpath(os.path.join(OUT_DIR, "model_step_spec.json"))}')
    seed(901)
    net = init_like_native(GraphNet(spec))
    B, K, NC = 4, 2, net.num_classes
    cfg = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=1, decoupled=0, label_smoothing=0.1,
               alpha=0.5, T=4.0)
    with torch.no_grad():  # non-trivial BN affine and running statistics, rounded to float32
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(u32(m.num_features, lo=0.6, hi=1.4))
                m.bias.copy_(r32(m.num_features, scale=0.2))
                m.running_mean.copy_(r32(m.num_features, scale=0.1))
                m.running_var.copy_(u32(m.num_features, lo=0.8, hi=1.2))
        for p in net.parameters():
            p.copy_(p.float())
    net = net.double()
    x = r32(B, 3, 8, 8)
    y = torch.randint(0, NC, (B,))
    t = r32(K, B, NC, scale=2.0)
    w = u32(K, B, lo=0.2, hi=1.0)
    state0 = {k: v.clone() for k, v in net.state_dict().items()}

    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=cfg['lr'], momentum=cfg['momentum'],
                          weight_decay=cfg['weight_decay'], nesterov=bool(cfg['nesterov']))
    opt.zero_grad()
    logits = net(x)
    total, ce, distill = dfl_loss(logits, y, t, w, cfg['label_smoothing'], cfg['alpha'], cfg['T'])
    total.backward()
    named = dict(net.named_parameters())
    grads = {k: p.grad.clone() for k, p in named.items()}
    grad_norm = torch.sqrt(sum((g * g).sum() for g in grads.values()))
    opt.step()
    correct = int((logits.argmax(dim=1) == y).sum())

    fx = Fixture()
    for k, v in dict(B=B, K=K, NC=NC, correct=correct, **cfg).items():
        fx.cfg(k, v)
    for k, v in state0.items():
        fx.add('param.' + k, v)
    fx.add('input', x)
    fx.add('labels', y.to(torch.int32))
    fx.add('teacher_logits', t)
    fx.add('teacher_weights', w)
    fx.add('logits', logits)
    fx.add('loss', total.reshape(1))
    fx.add('ce_loss', ce.reshape(1))
    fx.add('distill_loss', distill.reshape(1))
    fx.add('grad_norm', grad_norm.reshape(1))
    for k, g in grads.items():
        fx.add('grad.' + k, g)
    for k, v in net.state_dict().items():
        fx.add('after.' + k, v)  # parameters after the SGD step, BN buffers after the forward
    for k, p in named.items():
        fx.add('momentum.' + k, opt.state[p]['momentum_buffer'])
    return fx.write('model_step.bin')


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    total += conv_case('conv2d_basic.bin', 11, 2, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, True)
    total += conv_case('conv2d_stride2_pad1.bin', 12, 2, 3, 9, 7, 5, 3, 3, 2, 2, 1, 1, 1, False)
    total += conv_case('conv2d_groups2.bin', 13, 2, 4, 6, 5, 6, 3, 3, 1, 1, 1, 1, 2, True)
    total += conv_case('conv2d_depthwise.bin', 14, 2, 5, 7, 7, 5, 3, 3, 2, 2, 1, 1, 5, False)
    total += conv_case('conv2d_5x5_rect.bin', 15, 2, 3, 9, 11, 4, 5, 5, 2, 1, 2, 1, 1, True)
    total += conv_case('conv2d_1x1.bin', 16, 3, 6, 5, 3, 7, 1, 1, 1, 1, 0, 0, 1, False)
    total += conv_case('conv2d_rect_kernel.bin', 17, 2, 4, 7, 6, 4, 3, 1, 1, 2, 1, 0, 2, True)
    # CIFAR-sized maps, one per fast CPU algorithm (native/cpu/conv_internal.h picks by shape):
    # direct 3x3 rows at 32x32, 16x16 (an output-channel tail) and 8x8 with 64 channels, the
    # output-channel kernel (stride 2), pointwise rows, depthwise rows, and the GEMM path at 4x4.
    total += conv_case('conv2d_cifar32_stem.bin', 21, 2, 3, 32, 32, 8, 3, 3, 1, 1, 1, 1, 1, False)
    total += conv_case('conv2d_cifar16.bin', 22, 2, 16, 16, 16, 12, 3, 3, 1, 1, 1, 1, 1, True)
    total += conv_case('conv2d_cifar8_c64.bin', 23, 2, 64, 8, 8, 8, 3, 3, 1, 1, 1, 1, 1, False)
    total += conv_case('conv2d_cifar32_stride2.bin', 24, 2, 4, 32, 32, 8, 3, 3, 2, 2, 1, 1, 1, False)
    total += conv_case('conv2d_cifar16_pointwise.bin', 25, 2, 4, 16, 16, 24, 1, 1, 1, 1, 0, 0, 1, True)
    total += conv_case('conv2d_cifar16_depthwise.bin', 26, 2, 6, 16, 16, 6, 3, 3, 1, 1, 1, 1, 6, False)
    total += conv_case('conv2d_cifar4.bin', 27, 3, 16, 4, 4, 32, 3, 3, 1, 1, 1, 1, 1, False)
    total += linear_case()
    total += batchnorm_cases()
    total += activation_case('relu.bin', 301, F.relu, 1.0)
    total += activation_case('relu6.bin', 302, F.relu6, 5.0)
    total += pool_case('maxpool.bin', 311, 'max', 2, 3, 9, 7, 3, 2, 1)
    total += pool_case('maxpool_ties.bin', 312, 'max', 2, 2, 6, 5, 2, 2, 0, ties=True)
    total += pool_case('avgpool.bin', 313, 'avg', 2, 3, 9, 7, 3, 2, 1)
    total += gap_case()
    total += ce_case('cross_entropy.bin', 501, 0.0)
    total += ce_case('cross_entropy_smooth.bin', 502, 0.1)
    total += ensemble_kl_case()
    total += sgd_case('sgd_nesterov_l2.bin', 651, True, False, True)
    total += sgd_case('sgd_plain_decoupled.bin', 652, False, True, False)
    total += channel_shuffle_case()
    total += concat_split_case()
    total += model_step_case()
    print(f'total {total} bytes (torch {torch.__version__})')


if __name__ == '__main__':
    main()
