#!/usr/bin/env python3
"""The study recipe in plain PyTorch, with a switch for every place where two implementations of
"the same recipe" can differ, so that dfl-native can be compared with PyTorch piece by piece.

Recipe (the dfl-native defaults of the study, docs/study/README.md): vgg8 width 0.25 (conv with
bias + BN + ReLU + 2x2 max-pool per stage, global average pool, one linear layer), batch 128,
SGD Nesterov momentum 0.9, lr 0.05 cosine to 0, L2 weight decay 5e-4 on every parameter, random
crop (4 px zero padding) + horizontal flip, 45k/5k/10k split of the CIFAR-10 JPEG mirror. Methods:
base, reset (last layer re-initialised before epochs 1 + k*cycle), sd (teacher bank of K
"meaningful" snapshots scored by validation accuracy; CE + alpha T^2 KL(p_T || softmax(z/T)), with
p_T the mean of the teachers' softmax(t/T), teachers in eval mode on the student's augmented
batch), dfl (both).

Switches (the first value is what dfl-native does):
    --pixels  sharp|pil       decoded by sharp (dfl-native's dump, scripts/study/dump-data.mjs) or PIL
    --init    native|torch    conv: Kaiming normal fan_out + zero bias (dfl-native), or PyTorch's
                              nn.Conv2d default (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in)))
    --lr-step batch|epoch     cosine evaluated per batch, or per epoch (CosineAnnealingLR.step())
    --norm    train|cifar     mean/std of the training split, or the usual CIFAR-10 constants
    --decay   all|weights     weight decay on every parameter, or not on BN and biases
    --momentum-at-reset clear|keep   the reset layer's SGD momentum

Data comes from a dump folder written by scripts/study/dump-data.mjs: the sharp-decoded pixels in
dfl-native's order and dfl-native's seeded stratified validation split, so both sides train on the
same 45,000 images and validate on the same 5,000.

    /usr/bin/python3 scripts/study/torch_recipe.py --dump /work/data/dump --seed 0 --method dfl \
        --out /work/study-runs/torch/dfl-s0.json

Prints one JSON line per epoch; --out gets the summary (config, per-epoch records, test metrics).
Seeds: torch.manual_seed(seed) for init, shuffling and augmentation; the split is dfl-native's.
"""
import argparse
import copy
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dump', required=True, help='folder written by dump-data.mjs')
    p.add_argument('--jpeg', default='/work/data/cifar10-jpeg', help='the JPEG folder (for --pixels pil)')
    p.add_argument('--pixels', choices=['sharp', 'pil'], default='sharp')
    p.add_argument('--init', choices=['native', 'torch'], default='native')
    p.add_argument('--lr-step', choices=['batch', 'epoch'], default='batch')
    p.add_argument('--norm', choices=['train', 'cifar'], default='train')
    p.add_argument('--decay', choices=['all', 'weights'], default='all')
    p.add_argument('--momentum-at-reset', choices=['clear', 'keep'], default='clear')
    p.add_argument('--method', choices=['base', 'reset', 'sd', 'dfl'], default='base')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=0.05)
    p.add_argument('--weight-decay', type=float, default=5e-4)
    p.add_argument('--width', type=float, default=0.25)
    p.add_argument('--teachers', type=int, default=3)
    p.add_argument('--temperature', type=float, default=4.0)
    p.add_argument('--distill-weight', type=float, default=1.0)
    p.add_argument('--reset-cycle', type=int, default=5)
    p.add_argument('--train-limit', type=int, default=0, help='use only N training images of the split, stratified (0: all)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default=None)
    return p.parse_args(argv)


# --- data ----------------------------------------------------------------------------------------

def load_split(a):
    meta = json.load(open(os.path.join(a.dump, 'meta.json')))
    C, H, W = meta['shape']
    rd = lambda name, dt: np.fromfile(os.path.join(a.dump, name), dtype=dt)
    labels = {s: rd(f'{s}_labels.i32', np.int32) for s in ('train', 'test')}
    if a.pixels == 'sharp':
        images = {s: rd(f'{s}_images.u8', np.uint8).reshape(-1, C, H, W) for s in ('train', 'test')}
    else:
        images = {s: pil_images(a.jpeg, s, meta['classNames']) for s in ('train', 'test')}
    tr = rd(f'split_seed{a.seed}_train.i32', np.int32)
    va = rd(f'split_seed{a.seed}_val.i32', np.int32)
    if a.train_limit:  # the first N/classes images of each class in the split (stratified)
        y = labels['train'][tr]
        per = a.train_limit // len(meta['classNames'])
        tr = np.sort(np.concatenate([tr[y == c][:per] for c in range(len(meta['classNames']))]))
    return (images['train'][tr], labels['train'][tr]), (images['train'][va], labels['train'][va]), (images['test'], labels['test'])


def pil_images(root, split, class_names):
    """The JPEG folder decoded by PIL, in dfl-native's order (classes and files by code point)."""
    from PIL import Image
    out = []
    for c in class_names:
        d = os.path.join(root, split, c)
        for f in sorted(os.listdir(d)):
            out.append(np.asarray(Image.open(os.path.join(d, f)).convert('RGB')).transpose(2, 0, 1))
    return np.stack(out)


def channel_stats(images):
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def normalise(u8, mean, std):
    x = torch.from_numpy(u8).float().div_(255.0)
    return (x - torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)) / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)


def augment(u8, gen, pad=4):
    """Random crop from the zero-padded image, then a horizontal flip of the crop (torchvision's
    RandomCrop(32, padding=4) -> RandomHorizontalFlip on uint8 pixels)."""
    B, C, H, W = u8.shape
    padded = np.zeros((B, C, H + 2 * pad, W + 2 * pad), dtype=np.uint8)
    padded[:, :, pad:pad + H, pad:pad + W] = u8
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=gen).numpy()
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=gen).numpy()
    flip = torch.randint(0, 2, (B,), generator=gen).numpy().astype(bool)
    rows = dy[:, None] + np.arange(H)[None, :]                       # (B, H)
    cols = dx[:, None] + np.arange(W)[None, :]                       # (B, W)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(B)[:, None, None, None], np.arange(C)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


# --- model ---------------------------------------------------------------------------------------

VGG8 = [64, 'M', 128, 'M', 256, 'M', 512, 'M', 512, 'M']


class VGG(nn.Module):
    def __init__(self, width, num_classes=10, cfg=VGG8):
        super().__init__()
        layers, c = [], 3
        for v in cfg:
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2))
            else:
                oc = max(1, round(v * width))
                layers += [nn.Conv2d(c, oc, 3, padding=1, bias=True), nn.BatchNorm2d(oc), nn.ReLU(inplace=True)]
                c = oc
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def init_weights(net, how):
    """native: dfl-native's Model::init (conv Kaiming normal fan_out, bias 0; linear and BN as
    PyTorch). torch: every module's own reset_parameters() (PyTorch's defaults)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            m.reset_parameters()
        if how == 'native' and isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(m.bias)


# --- training ------------------------------------------------------------------------------------

def cosine(lr, t, epochs):
    return 0.5 * lr * (1 + math.cos(math.pi * min(max(t / epochs, 0.0), 1.0)))


@torch.no_grad()
def logits_of(net, x, bs=500):
    net.eval()
    return torch.cat([net(x[i:i + bs]) for i in range(0, len(x), bs)])


def accuracy(logits, y):
    return (logits.argmax(1) == y).float().mean().item()


def ece(logits, y, bins=15):
    p = F.softmax(logits, 1)
    conf, pred = p.max(1)
    hit = (pred == y).float()
    b = torch.clamp((conf * bins).long(), max=bins - 1)
    e = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            e += abs(hit[m].sum().item() - conf[m].sum().item()) / len(y)
    return e


def main(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    (xtr, ytr), (xva, yva), (xte, yte) = load_split(a)
    mean, std = channel_stats(xtr) if a.norm == 'train' else (CIFAR10_MEAN, CIFAR10_STD)
    Xva, Yva = normalise(xva, mean, std), torch.from_numpy(yva).long()
    Xte, Yte = normalise(xte, mean, std), torch.from_numpy(yte).long()
    Ytr = torch.from_numpy(ytr).long()

    net = VGG(a.width)
    init_weights(net, a.init)
    decay = [p for n, p in net.named_parameters() if a.decay == 'all' or (p.dim() > 1)]
    no_decay = [p for n, p in net.named_parameters() if not (a.decay == 'all' or (p.dim() > 1))]
    opt = torch.optim.SGD([{'params': decay, 'weight_decay': a.weight_decay}, {'params': no_decay, 'weight_decay': 0.0}],
                          lr=a.lr, momentum=0.9, nesterov=True)
    uses_teachers, uses_reset = a.method in ('sd', 'dfl'), a.method in ('reset', 'dfl')
    bank = []  # [{'epoch', 'score', 'model'}]
    n, bs = len(ytr), a.batch_size
    batches = n // bs + (1 if n % bs >= 2 else 0)
    records, t_start = [], time.time()
    T = a.temperature
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        reset = uses_reset and epoch > 1 and (epoch - 1) % a.reset_cycle == 0
        if reset:
            net.classifier.reset_parameters()
            if a.momentum_at_reset == 'clear':
                for p in net.classifier.parameters():
                    opt.state.pop(p, None)
        net.train()
        order = torch.randperm(n, generator=gen).numpy()
        loss_sum = distill_sum = correct = count = 0.0
        for i in range(batches):
            idx = order[i * bs:(i + 1) * bs]
            x = normalise(augment(xtr[idx], gen), mean, std)
            y = Ytr[idx]
            lr = cosine(a.lr, epoch - 1 + (i / batches if a.lr_step == 'batch' else 0.0), a.epochs)
            for g in opt.param_groups:
                g['lr'] = lr
            z = net(x)
            loss = F.cross_entropy(z, y)
            if uses_teachers and bank and a.distill_weight > 0:
                with torch.no_grad():
                    pt = torch.stack([F.softmax(t['model'](x) / T, 1) for t in bank]).mean(0)
                kl = (torch.xlogy(pt, pt) - pt * F.log_softmax(z / T, 1)).sum(1).mean()
                distill = T * T * kl
                loss = loss + a.distill_weight * distill
                distill_sum += distill.item() * len(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (z.argmax(1) == y).sum().item()
            count += len(y)
        sec = time.time() - t0
        lv = logits_of(net, Xva)
        val_acc = accuracy(lv, Yva)
        ens_acc = None
        if uses_teachers and bank:
            pe = torch.stack([F.softmax(logits_of(t['model'], Xva), 1) for t in bank]).mean(0)
            ens_acc = accuracy(pe, Yva)
        if uses_teachers:  # meaningful teachers: fill the bank, then replace the worst if better
            snap = copy.deepcopy(net).eval()
            if len(bank) < a.teachers:
                bank.append({'epoch': epoch, 'score': val_acc, 'model': snap})
            else:
                worst = min(range(len(bank)), key=lambda k: bank[k]['score'])
                if val_acc > bank[worst]['score']:
                    bank[worst] = {'epoch': epoch, 'score': val_acc, 'model': snap}
        r = dict(epoch=epoch, lr=lr, train_loss=loss_sum / count, train_acc=correct / count, distill_loss=distill_sum / count,
                 val_acc=val_acc, ensemble_val_acc=ens_acc, reset=reset, bank=[[t['epoch'], t['score']] for t in bank], seconds=sec)
        records.append(r)
        print(json.dumps(r), flush=True)
    lt = logits_of(net, Xte)
    summary = dict(config=vars(a), test_acc=accuracy(lt, Yte), test_ece=ece(lt, Yte), test_loss=F.cross_entropy(lt, Yte).item(),
                   final_val_acc=records[-1]['val_acc'], seconds=time.time() - t_start, metrics=records,
                   torch=torch.__version__, norm_mean=list(map(float, mean)), norm_std=list(map(float, std)))
    print(json.dumps({k: v for k, v in summary.items() if k != 'metrics'}), flush=True)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, 'w') as f:
            json.dump(summary, f, indent=1)


if __name__ == '__main__':
    main(parse_args())
