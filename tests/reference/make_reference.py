"""Writes the PyTorch reference for tests/parity.rs: fixed weights, inputs, the forward output and the
gradients of a class-weighted cross-entropy, for U-Net and FCN-8s at a narrow width.

Run once (PyTorch installed with pip, see ../shared/peers/README.md); the outputs are committed so the
Rust test needs no PyTorch:

    python tests/reference/make_reference.py            # writes tests/reference/{unet,fcn8}.safetensors

The modules below are the networks of src/models/{unet,fcn}.rs written in PyTorch with the same variable
names, so the Rust test loads `w.<name>` straight into its VarMap. Conventions shared with the Rust code:
PyTorch conv weight layouts (candle uses the same), transposed-conv weights (in, out, k, k), bilinear
resize with align_corners=False, mean-reduced weighted cross-entropy. The forward runs in eval mode
(dropout off) so the gradients are deterministic.
"""
import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def ch(c, width):
    return max(1, int(round(c * width)))


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3)
        self.conv2 = nn.Conv2d(cout, cout, 3)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class UNet(nn.Module):
    def __init__(self, width, in_ch, classes, depth=4):
        super().__init__()
        c = [ch(64 << i, width) for i in range(depth + 1)]
        self.down = nn.ModuleList()
        prev = in_ch
        for i in range(depth):
            self.down.append(DoubleConv(prev, c[i]))
            prev = c[i]
        self.bottom = DoubleConv(c[depth - 1], c[depth])
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2))
            self.upconv.append(DoubleConv(2 * c[i], c[i]))
        self.head = nn.Conv2d(c[0], classes, 1)

    def forward(self, x):
        skips = []
        for blk in self.down:
            x = blk(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, blk, skip in zip(self.up, self.upconv, reversed(skips)):
            x = up(x)
            h, w = x.shape[-2:]
            H, W = skip.shape[-2:]
            y0, x0 = (H - h) // 2, (W - w) // 2
            x = blk(torch.cat([skip[..., y0:y0 + h, x0:x0 + w], x], 1))
        return self.head(x)


class FCN8(nn.Module):
    BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]

    def __init__(self, width, in_ch, classes):
        super().__init__()
        prev = in_ch
        self.names = []
        for b, (c, n) in enumerate(self.BLOCKS):
            c = ch(c, width)
            block = []
            for l in range(n):
                name = "conv%d_%d" % (b + 1, l + 1)
                setattr(self, name, nn.Conv2d(prev, c, 3, padding=1))
                block.append(name)
                prev = c
            self.names.append(block)
        fc = ch(4096, width)
        self.fc6 = nn.Conv2d(prev, fc, 7, padding=3)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.score_fr = nn.Conv2d(fc, classes, 1)
        self.score_pool4 = nn.Conv2d(ch(512, width), classes, 1)
        self.score_pool3 = nn.Conv2d(ch(256, width), classes, 1)
        self.upscore2 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)

    def forward(self, x):
        H, W = x.shape[-2:]
        feats = []
        for block in self.names:
            for name in block:
                x = F.relu(getattr(self, name)(x))
            x = F.max_pool2d(x, 2)
            feats.append(x)
        f = F.relu(self.fc7(F.relu(self.fc6(feats[4]))))
        s = self.score_fr(f)
        s = self.upscore2(s) + self.score_pool4(feats[3])
        s = self.upscore_pool4(s) + self.score_pool3(feats[2])
        return F.interpolate(s, size=(H, W), mode="bilinear", align_corners=False)


def make(name, model, x, classes, path):
    torch.manual_seed(1)
    # Perturb every parameter away from PyTorch's init so biases and skip scores matter.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    out = model(x)
    target = torch.randint(0, classes, (x.shape[0],) + tuple(out.shape[-2:]))
    weights = torch.linspace(0.2, 0.9, classes)
    loss = F.cross_entropy(out, target, weight=weights)
    loss.backward()
    tensors = {"x": x, "target": target.to(torch.int64), "class_weights": weights, "out": out.detach(),
               "loss": loss.detach().reshape(1)}
    for n, p in model.named_parameters():
        tensors["w." + n] = p.detach().contiguous()
        tensors["g." + n] = p.grad.detach().contiguous()
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    nparam = sum(p.numel() for p in model.parameters())
    print("%s: %d parameters, output %s, loss %.6f -> %s (%d bytes)"
          % (name, nparam, tuple(out.shape), loss.item(), path, os.path.getsize(path)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=HERE)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    classes = 3
    # U-Net width 1/16 (base 4), 188 -> 4, batch 2.
    unet = UNet(width=1 / 16, in_ch=3, classes=classes)
    make("unet", unet, torch.randn(2, 3, 188, 188), classes, os.path.join(a.out, "unet.safetensors"))
    # FCN-8s width 1/32, 64 x 96, batch 2.
    torch.manual_seed(0)
    fcn = FCN8(width=1 / 32, in_ch=3, classes=classes)
    make("fcn8", fcn, torch.randn(2, 3, 64, 96), classes, os.path.join(a.out, "fcn8.safetensors"))
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
