#!/usr/bin/env python3
"""The PyTorch twin of dfl-native: the same graph model, built from the same JSON spec, as real
torch modules. It is the reference that the native kernels and one whole training step are checked
against (scripts/make_fixtures.py -> test/fixtures/), and a way to take a dfl-native checkpoint into
PyTorch (or back).

Run with Debian's python3-torch (the pyenv `python3` on PATH has no torch):
    /usr/bin/python3 scripts/torch_twin.py SPEC.json [model-eNNNN.safetensors]
prints the state_dict keys and shapes and, with a checkpoint, loads it and runs one eval forward.

The spec
--------
The JSON that TypeScript hands to the native Model (src/models/spec.ts, native/core/model.h):
    {"in_channels": 3, "height": 32, "width": 32,
     "nodes": [{"op": "input"}, {"op": "conv", "name": "conv1", "inputs": [0], "out_channels": 16,
                "kernel_h": 3, "kernel_w": 3, "stride_h": 1, "stride_w": 1, "pad_h": 1, "pad_w": 1,
                "groups": 1, "bias": false}, ...]}
Node 0 is the input. Every other node reads the outputs of earlier nodes (`inputs`) and its output is
node i's tensor; the last node's output is the logits (B, num_classes). Missing attributes take the
NodeSpec defaults of model.h (kernel 1, stride 1, pad 0, groups 1, bias false, eps 1e-5,
momentum 0.1, p 0, index 0).

Ops (the twin keeps every activation 4-D (B, C, H, W), as the native model does; flatten and linear
produce (B, F, 1, 1)):
    conv     nn.Conv2d(C, out_channels, (kernel_h, kernel_w), stride, pad, groups=groups, bias=bias)
    bn       nn.BatchNorm2d(C, eps, momentum)   (training: batch statistics, biased variance for
             normalising, unbiased variance into running_var; eval: running statistics)
    linear   nn.Linear(C*H*W, out_features, bias) on the flattened input
    relu, relu6, add (2 inputs), concat (channels), flatten, dropout (p, inverted)
    maxpool / avgpool  kernel stride pad (floor mode; avgpool counts padding)
    gap      mean over H, W -> (B, C, 1, 1)
    split    sizes index: channel chunk `index` of torch.split(x, sizes, dim=1)
    shuffle  groups: channel shuffle, out channel j*groups + g <- in channel g*(C/groups) + j

Parameter names
---------------
Each parametric node is a real module registered under its dotted `name` (nested nn.Module
containers are built for the dots), so `state_dict()` keys are exactly the native TensorView names:
"<name>.weight", "<name>.bias", and for BN "<name>.running_mean", "<name>.running_var",
"<name>.num_batches_tracked". state_dict order is module-registration order, which is node order,
and within a node weight, bias (then BN buffers) -- the order of Model::params()/buffers().

Initialisation: the twin uses torch's RNG, so its initial values are NOT the native ones (same
distributions: `init_like_native` applies them). To compare the two, copy one's state into the other
(the fixtures carry the initial state_dict for exactly that).

Dropout draws its mask from torch's RNG, so a spec with p > 0 cannot match the native model step by
step; the fixtures use p = 0.

The loss (Model::train_step, cpu/kernels.h)
-------------------------------------------
    total = CE(z, y; label_smoothing) + alpha * T^2 * KL(p_T || softmax(z / T))
    p_T[b] = sum_k w[k,b] softmax(t[k,b] / T) / sum_k w[k,b]     (w normalised per sample;
                                                                  no weights = uniform)
    KL(p || q) = sum_c p log(p / q) with 0 log 0 = 0, averaged over the batch ("batchmean").
CE uses PyTorch's label smoothing: target (1 - eps) onehot + eps / NC, mean over the batch.
`dfl_loss` implements it; the native model reports distill_loss = T^2 KL before alpha, and skips it
(reports 0) when there are no teachers or alpha == 0.

The optimiser
-------------
torch.optim.SGD(lr, momentum, weight_decay, nesterov, dampening=0) is the native sgd_step with
decoupled=false (L2: g = grad + wd p). decoupled=true (SGDW: p *= 1 - lr wd first, g = grad) is
`sgd_step` below. The native model applies weight decay to every parameter by default (its decay
mask is all ones), like torch.optim.SGD with one param group.

Checkpoints
-----------
A dfl-native checkpoint folder (src/io/checkpoint.ts) holds model-eNNNN.safetensors with the
student's parameters and BN buffers under these same state_dict names (F32, and I64 for
num_batches_tracked), and optim-eNNNN.safetensors with "momentum.<param name>". `load_safetensors`
below reads the format without the safetensors package (8-byte LE header length, JSON header, raw
LE data); with the package installed, `safetensors.torch.load_file` gives the same dict:
    net = GraphNet(json.load(open("spec.json")))
    net.load_state_dict(load_safetensors("checkpoint/model-e0003.safetensors"))
SGD momentum maps to optimizer.state[p]["momentum_buffer"] of the parameter with that name.
"""
import json
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['GraphNet', 'dfl_loss', 'ensemble_teacher_probs', 'sgd_step', 'init_like_native',
           'load_safetensors', 'save_safetensors']

_DEFAULTS = dict(out_channels=0, kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
                 groups=1, bias=False, out_features=0, eps=1e-5, momentum=0.1, p=0.0, sizes=[], index=0)


def _attr(node, key):
    return node.get(key, _DEFAULTS[key])


class GraphNet(nn.Module):
    """A dfl-native graph model (JSON spec) as torch modules; forward runs the nodes in order."""

    def __init__(self, spec):
        super().__init__()
        if isinstance(spec, str):
            spec = json.loads(spec)
        self.spec = spec
        nodes = spec['nodes']
        if not nodes or nodes[0].get('op') != 'input':
            raise ValueError('model spec: node 0 must be {"op": "input"}')
        shapes = [(spec['in_channels'], spec['height'], spec['width'])]
        self._node_modules = []  # per node: its module or None (a plain list: not registered twice)
        for i, n in enumerate(nodes):
            if i == 0:
                self._node_modules.append(None)
                continue
            op = n['op']
            ins = n.get('inputs', [])
            if not ins or any(j < 0 or j >= i for j in ins):
                raise ValueError(f'model spec: node {i} ({op}) needs inputs from earlier nodes, got {ins}')
            C, H, W = shapes[ins[0]]
            mod = None
            if op == 'conv':
                kh, kw = _attr(n, 'kernel_h'), _attr(n, 'kernel_w')
                sh, sw = _attr(n, 'stride_h'), _attr(n, 'stride_w')
                ph, pw = _attr(n, 'pad_h'), _attr(n, 'pad_w')
                oc = n['out_channels']
                mod = nn.Conv2d(C, oc, (kh, kw), (sh, sw), (ph, pw), groups=_attr(n, 'groups'),
                                bias=bool(_attr(n, 'bias')))
                shape = (oc, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
            elif op == 'bn':
                mod = nn.BatchNorm2d(C, eps=_attr(n, 'eps'), momentum=_attr(n, 'momentum'))
                shape = (C, H, W)
            elif op == 'linear':
                mod = nn.Linear(C * H * W, n['out_features'], bias=bool(_attr(n, 'bias')))
                shape = (n['out_features'], 1, 1)
            elif op in ('relu', 'relu6', 'dropout'):
                shape = (C, H, W)
            elif op == 'add':
                if len(ins) != 2 or shapes[ins[1]] != (C, H, W):
                    raise ValueError(f'model spec: node {i} add needs 2 inputs of equal shape')
                shape = (C, H, W)
            elif op == 'concat':
                shape = (sum(shapes[j][0] for j in ins), H, W)
            elif op == 'flatten':
                shape = (C * H * W, 1, 1)
            elif op in ('maxpool', 'avgpool'):
                kh, kw = _attr(n, 'kernel_h'), _attr(n, 'kernel_w')
                sh, sw = _attr(n, 'stride_h'), _attr(n, 'stride_w')
                ph, pw = _attr(n, 'pad_h'), _attr(n, 'pad_w')
                shape = (C, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
            elif op == 'gap':
                shape = (C, 1, 1)
            elif op == 'split':
                sizes = n['sizes']
                if sum(sizes) != C:
                    raise ValueError(f'model spec: node {i} split sizes {sizes} do not sum to {C}')
                shape = (sizes[_attr(n, 'index')], H, W)
            elif op == 'shuffle':
                if C % _attr(n, 'groups'):
                    raise ValueError(f'model spec: node {i} shuffle groups must divide {C}')
                shape = (C, H, W)
            else:
                raise ValueError(f'model spec: node {i} has unknown op {op!r}')
            if mod is not None:
                self._register_dotted(n.get('name') or '', mod, i)
            self._node_modules.append(mod)
            shapes.append(shape)
        self.shapes = shapes
        last = shapes[-1]
        if last[1:] != (1, 1):
            raise ValueError(f'model spec: the last node must output (classes,1,1), got {last}')
        self.num_classes = last[0]

    def _register_dotted(self, name, mod, i):
        if not name:
            raise ValueError(f'model spec: parametric node {i} needs a name')
        parts = name.split('.')
        parent = self
        for p in parts[:-1]:
            child = parent._modules.get(p)
            if child is None:
                child = nn.Module()
                parent.add_module(p, child)
            elif isinstance(child, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                raise ValueError(f'model spec: name {name!r} nests under the layer {p!r}')
            parent = child
        if parts[-1] in parent._modules:
            raise ValueError(f'model spec: duplicate parameter prefix {name!r} (node {i})')
        parent.add_module(parts[-1], mod)

    def forward(self, x, return_all=False):
        """x (B, C, H, W) -> logits (B, NC); return_all=True also returns every node's output."""
        B = x.shape[0]
        outs = [x]
        for i, n in enumerate(self.spec['nodes']):
            if i == 0:
                continue
            op = n['op']
            ins = [outs[j] for j in n['inputs']]
            a = ins[0]
            mod = self._node_modules[i]
            if op in ('conv', 'bn'):
                y = mod(a)
            elif op == 'linear':
                y = mod(a.reshape(B, -1)).reshape(B, -1, 1, 1)
            elif op == 'relu':
                y = F.relu(a)
            elif op == 'relu6':
                y = F.relu6(a)
            elif op == 'add':
                y = a + ins[1]
            elif op == 'concat':
                y = torch.cat(ins, dim=1)
            elif op == 'flatten':
                y = a.reshape(B, -1, 1, 1)
            elif op == 'dropout':
                y = F.dropout(a, _attr(n, 'p'), self.training)
            elif op == 'maxpool':
                y = F.max_pool2d(a, (n['kernel_h'], n['kernel_w']), (_attr(n, 'stride_h'), _attr(n, 'stride_w')),
                                 (_attr(n, 'pad_h'), _attr(n, 'pad_w')))
            elif op == 'avgpool':
                y = F.avg_pool2d(a, (n['kernel_h'], n['kernel_w']), (_attr(n, 'stride_h'), _attr(n, 'stride_w')),
                                 (_attr(n, 'pad_h'), _attr(n, 'pad_w')), count_include_pad=True)
            elif op == 'gap':
                y = a.mean(dim=(2, 3), keepdim=True)
            elif op == 'split':
                y = torch.split(a, n['sizes'], dim=1)[_attr(n, 'index')]
            elif op == 'shuffle':
                y = channel_shuffle(a, n['groups'])
            else:
                raise ValueError(op)
            outs.append(y)
        logits = outs[-1].reshape(B, -1)
        return (logits, outs) if return_all else logits

    def load_dfl_checkpoint(self, path):
        """Loads model-eNNNN.safetensors (parameters and BN buffers, PyTorch names)."""
        self.load_state_dict(load_safetensors(path))


def channel_shuffle(x, groups):
    B, C, H, W = x.shape
    return x.reshape(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


def init_like_native(net):
    """The native Model::init_all distributions (values differ: torch's RNG): conv Kaiming normal
    (fan_out, relu), conv bias 0; linear weight and bias U(-1/sqrt(in), 1/sqrt(in)); BN 1, 0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.in_features ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.uniform_(m.bias, -bound, bound)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    return net


def ensemble_teacher_probs(teacher_logits, weights, T):
    """p_T (B, NC) from teacher_logits (K, B, NC) and weights (K, B) or None (uniform)."""
    p = F.softmax(teacher_logits / T, dim=-1)
    if weights is None:
        weights = torch.ones(teacher_logits.shape[:2], dtype=teacher_logits.dtype)
    w = weights / weights.sum(dim=0, keepdim=True)
    return (w.unsqueeze(-1) * p).sum(dim=0)


def dfl_loss(logits, labels, teacher_logits=None, teacher_weights=None, label_smoothing=0.0, alpha=0.0, T=4.0):
    """(total, ce, distill) as Model::train_step computes them; distill = T^2 KL before alpha.
    labels: int64 (or int32) class indices (B,)."""
    ce = F.cross_entropy(logits, labels.long(), label_smoothing=label_smoothing)
    if teacher_logits is None or teacher_logits.shape[0] == 0 or alpha == 0:
        distill = torch.zeros((), dtype=logits.dtype)
        return ce, ce, distill
    pt = ensemble_teacher_probs(teacher_logits, teacher_weights, T)
    logq = F.log_softmax(logits / T, dim=-1)
    kl = (torch.xlogy(pt, pt) - pt * logq).sum(dim=-1).mean()  # batchmean, 0 log 0 = 0
    distill = T * T * kl
    return ce + alpha * distill, ce, distill


@torch.no_grad()
def sgd_step(params, grads, bufs, lr, momentum, weight_decay, nesterov, decoupled, decay_mask=None):
    """The native sgd_step on lists of tensors, in place (bufs start as zeros)."""
    for i, (p, g, b) in enumerate(zip(params, grads, bufs)):
        wd = weight_decay if decay_mask is None else weight_decay * decay_mask[i]
        if decoupled:
            p.mul_(1 - lr * wd)
            d = g.clone()
        else:
            d = g + wd * p
        b.mul_(momentum).add_(d)
        step = d + momentum * b if nesterov else b
        p.sub_(lr * step)


_ST_DTYPES = {'F32': (torch.float32, 4), 'F64': (torch.float64, 8), 'I64': (torch.int64, 8), 'I32': (torch.int32, 4)}


def load_safetensors(path):
    """A dependency-free safetensors reader (the dtypes dfl-native writes, plus F64/I32)."""
    with open(path, 'rb') as f:
        buf = f.read()
    (hlen,) = struct.unpack_from('<Q', buf, 0)
    header = json.loads(buf[8:8 + hlen].decode('utf-8'))
    base = 8 + hlen
    out = {}
    for name, meta in header.items():
        if name == '__metadata__':
            continue
        dtype, size = _ST_DTYPES[meta['dtype']]
        b, e = meta['data_offsets']
        t = torch.frombuffer(bytearray(buf[base + b:base + e]), dtype=dtype) if e > b else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(meta['shape']).clone()
    return out


def save_safetensors(tensors, path):
    """Writes a dict of float32/int64 tensors as dfl-native does (header padded to 8 bytes)."""
    rev = {v[0]: k for k, v in _ST_DTYPES.items()}
    header, chunks, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {'dtype': rev[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    js = json.dumps(header, separators=(',', ':'))
    js += ' ' * ((8 - (8 + len(js.encode())) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(js.encode())) + js.encode() + b''.join(chunks))


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 1
    with open(argv[1]) as f:
        net = GraphNet(json.load(f))
    for k, v in net.state_dict().items():
        print(f'{k:50s} {list(v.shape)}')
    if len(argv) > 2:
        net.load_dfl_checkpoint(argv[2])
        net.eval()
        s = net.spec
        with torch.no_grad():
            y = net(torch.zeros(1, s['in_channels'], s['height'], s['width']))
        print('loaded', argv[2], '; logits of a zero image:', y.tolist())
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
