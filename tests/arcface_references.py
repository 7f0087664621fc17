"""Torch reference for ArcFace's IResNet (test-only).

Re-implemented in torch from insightface's `recognition/arcface_torch/backbones/iresnet.py`
(MIT licence; github.com/deepinsight/insightface), with its module names, registration order,
BatchNorm eps (1e-05 everywhere), init and forward order, so the state-dict keys are those of
arcface_torch's `backbone.pth` / `model.pt`. Left out: fp16 autocast and gradient checkpointing
(training only), `groups` / `width_per_group` / dilation (upstream refuses other values).
Test-only addition: `widths` (upstream fixes (64, 128, 256, 512); conv1 takes the first), so
the loader can be checked to read widths from the tensors.

Also: `randomize`, non-trivial random weights and BatchNorm running statistics that keep the
activations O(1) through the depth.
"""
import torch
from torch import nn

UPSTREAM_WIDTHS = (64, 128, 256, 512)


def conv3x3(in_planes, out_planes, stride=1):
  """3x3 convolution with padding 1, no bias."""
  return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
  return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
    self.conv1 = conv3x3(inplanes, planes)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
    self.prelu = nn.PReLU(planes)
    self.conv2 = conv3x3(planes, planes, stride)
    self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
    self.downsample = downsample
    self.stride = stride

  def forward(self, x):
    identity = x
    out = self.bn1(x)
    out = self.conv1(out)
    out = self.bn2(out)
    out = self.prelu(out)
    out = self.conv2(out)
    out = self.bn3(out)
    if self.downsample is not None:
      identity = self.downsample(x)
    out += identity
    return out


class IResNet(nn.Module):
  fc_scale = 7 * 7

  def __init__(self, block, layers, dropout=0, num_features=512, zero_init_residual=False,
               widths=UPSTREAM_WIDTHS):
    super().__init__()
    self.inplanes = widths[0]
    self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
    self.prelu = nn.PReLU(self.inplanes)
    self.layer1 = self._make_layer(block, widths[0], layers[0], stride=2)
    self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
    self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
    self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
    self.bn2 = nn.BatchNorm2d(widths[3] * block.expansion, eps=1e-05)
    self.dropout = nn.Dropout(p=dropout, inplace=True)
    self.fc = nn.Linear(widths[3] * block.expansion * self.fc_scale, num_features)
    self.features = nn.BatchNorm1d(num_features, eps=1e-05)
    nn.init.constant_(self.features.weight, 1.0)
    self.features.weight.requires_grad = False

    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0, 0.1)
      elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)
    if zero_init_residual:
      for m in self.modules():
        if isinstance(m, IBasicBlock):
          nn.init.constant_(m.bn2.weight, 0)

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                 nn.BatchNorm2d(planes * block.expansion, eps=1e-05))
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    for _ in range(1, blocks):
      layers.append(block(self.inplanes, planes))
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.conv1(x)
    x = self.bn1(x)
    x = self.prelu(x)
    x = self.layer1(x)
    x = self.layer2(x)
    x = self.layer3(x)
    x = self.layer4(x)
    x = self.bn2(x)
    x = torch.flatten(x, 1)
    x = self.dropout(x)
    x = self.fc(x)
    x = self.features(x)
    return x


def iresnet(layers, **kwargs):
  """`IResNet(IBasicBlock, layers)`: iresnet18 is (2, 2, 2, 2), iresnet50 (3, 4, 14, 3), ..."""
  return IResNet(IBasicBlock, list(layers), **kwargs)


def iresnet18(**kwargs):
  return iresnet((2, 2, 2, 2), **kwargs)


def randomize(net, images, seed=0, scale=0.01):
  """Random parameters (BatchNorm affine, PReLU slopes, fc included, features.weight too) and
  running statistics: each BatchNorm's mean / variance are its batch statistics on `images`
  [N, 3, 112, 112] (so activations stay O(1) at every depth), then perturbed. Eval mode.

  Conv and fc weights are scaled by `scale` first: the BatchNorms after them (stem bn1, bn2,
  bn3, downsample.1, features) then see variances ~1e-4..1e-5, where their eps (1e-5) moves
  the output by percents, so a port with another eps fails parity."""
  g = torch.Generator().manual_seed(seed)
  norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        m.weight.mul_(scale)
    for m in norms:
      m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
      m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    for m in net.modules():
      if isinstance(m, nn.PReLU):
        m.weight.copy_(0.25 + 0.2 * torch.randn(m.weight.shape, generator=g))
    net.fc.bias.copy_(0.1 * torch.randn(net.fc.bias.shape, generator=g))
    for m in norms:
      m.reset_running_stats()
      m.momentum = None  # Cumulative average: one batch gives its own statistics.
    net.train()
    net(images)
    for m in norms:
      m.momentum = 0.1
      m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn(m.running_mean.shape,
                                                                    generator=g))
      m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=g))
  return net.eval()
