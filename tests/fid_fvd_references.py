"""Torch references of the FID Inception-v3 and the FVD I3D (test-only).

Re-implemented (not copied) in torch from the published sources, with their module names, so
the state-dict keys are those of the published weight files:

* pytorch-fid (github mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`, Apache-2.0):
  `fid_inception_v3` = torchvision's `Inception3(num_classes=1008, aux_logits=False)`
  (torchvision `models/inception.py`, BSD-3: `BasicConv2d`, `InceptionA`..`InceptionE`) with
  the Mixed blocks replaced by `FIDInceptionA/C/E_1/E_2`, and `InceptionV3.forward` with
  `resize_input=True, normalize_input=True, output_blocks=[3]` (`fid_pool3`).
* piergiaj/pytorch-i3d (`pytorch_i3d.py`, Apache-2.0): `Unit3D`, `MaxPool3dSamePadding`,
  `InceptionModule`, `InceptionI3d` (forward and `extract_features`).

torchvision is not installable next to the pinned torch, hence the re-implementation; the
parity tests compare it with the Flax ports on random weights.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


# --- pytorch-fid's FID Inception-v3 ----------------------------------------------------------

class BasicConv2d(nn.Module):
    """torchvision: conv (no bias) -> BatchNorm2d(eps=0.001) -> ReLU."""

    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    """FID patch: TF's average pool ignores the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, cin, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                      self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """`max_pool=False`: FIDInceptionE_1 (TF average pool); True: FIDInceptionE_2."""

    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        a = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = (F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool
                else _tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), a, d, self.branch_pool(pool)], 1)


class FIDInception3(nn.Module):
    """`fid_inception_v3()`'s modules (state-dict keys of pt_inception-2015-12-05)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def fid_pool3(self, images01):
        """pytorch-fid `InceptionV3([3])(images01)[0]` flattened: `[N, 3, H, W]` in [0, 1] ->
        `[N, 2048]` (resize to 299, bilinear; `2 x - 1`; blocks 0..3)."""
        x = F.interpolate(images01, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


# --- piergiaj/pytorch-i3d's InceptionI3d -----------------------------------------------------

def _same_pad(x, kernel, stride):
    """TF 'SAME' zero padding of `[N, C, T, H, W]` (the larger half at the end)."""
    pad = []
    for dim, (k, s) in enumerate(zip(kernel, stride)):
        size = x.shape[2 + dim]
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pad.append((total // 2, total - total // 2))
    flat = [p for pair in reversed(pad) for p in pair]  # F.pad: last dim first.
    return F.pad(x, flat)


class MaxPool3dSamePadding(nn.MaxPool3d):
    def forward(self, x):
        return super().forward(_same_pad(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    def __init__(self, cin, cout, kernel_shape=(1, 1, 1), stride=(1, 1, 1), activation=True,
                 use_batch_norm=True, use_bias=False):
        super().__init__()
        self.kernel_shape, self.stride, self.activation = tuple(kernel_shape), stride, activation
        self.conv3d = nn.Conv3d(cin, cout, kernel_shape, stride=stride, padding=0,
                                bias=use_bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if use_batch_norm else None

    def forward(self, x):
        x = self.conv3d(_same_pad(x, self.kernel_shape, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], kernel_shape=(3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], kernel_shape=(3, 3, 3))
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(cin, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """`InceptionI3d(num_classes=400)` in eval mode: `forward` -> logits `[N, 400, T']`,
    `extract_features` -> `[N, 1024, T', 1, 1]` (input `[N, 3, T, H, W]` in [-1, 1])."""

    MIXED = {"Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
             "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
             "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
             "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
             "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
             "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
             "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
             "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
             "Mixed_5c": (832, (384, 192, 384, 48, 128, 128))}

    def __init__(self, num_classes=400):
        super().__init__()
        pool = lambda k, s: MaxPool3dSamePadding(kernel_size=k, stride=s, padding=0)
        layers = [
            ("Conv3d_1a_7x7", Unit3D(3, 64, (7, 7, 7), stride=(2, 2, 2))),
            ("MaxPool3d_2a_3x3", pool((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", pool((1, 3, 3), (1, 2, 2))),
        ]
        for name, (cin, c) in self.MIXED.items():
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", pool((3, 3, 3), (2, 2, 2))))
            if name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", pool((2, 2, 2), (2, 2, 2))))
            layers.append((name, InceptionModule(cin, c)))
        self.order = [name for name, _ in layers]
        for name, layer in layers:
            self.add_module(name, layer)
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(1024, num_classes, activation=False, use_batch_norm=False,
                             use_bias=True)

    def extract_features(self, x):
        for name in self.order:
            x = self._modules[name](x)
        return self.avg_pool(x)

    def forward(self, x):
        return self.logits(self.extract_features(x)).squeeze(3).squeeze(3)
