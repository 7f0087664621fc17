"""Conv -> BatchNorm [-> + input] -> ReLU, the block of the published BatchNorm CNNs
(syncnet_python's SyncNet, Wav2Lip's SyncNet_color, the FID Inception-v3, the FVD I3D), and
its weight-import name map.

Torch conventions kept: zero padding given per spatial dim (torch's `padding=p`), BatchNorm
eps 1e-5 unless the spec says otherwise (Inception-v3 and I3D use 1e-3, and convs without
bias), running stats in the `batch_stats` collection (torch momentum 0.1 = Flax 0.9).
Inputs are channels-last (`[N, *spatial, C]`). With batch statistics the variance is two-pass
(`use_fast_variance=False`), as torch computes it.
"""
import dataclasses
from typing import Union

import flax.linen as nn
import jax

from gcm_jax import weights

BN_EPS = 1e-5       # torch nn.BatchNormNd default.
BN_MOMENTUM = 0.9   # Flax's decay = 1 - torch's momentum 0.1.

IntOrTuple = Union[int, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One torch `nn.ConvNd(cin, features, kernel, stride, padding)` + BatchNorm (+ residual)."""
  features: int
  kernel: tuple[int, ...]
  strides: tuple[int, ...]
  padding: tuple[int, ...]  # Symmetric zero padding per spatial dim.
  residual: bool = False
  use_bias: bool = True     # The conv's bias (False when the BatchNorm's shift replaces it).
  eps: float = BN_EPS       # BatchNorm epsilon.


def conv_spec(features: int, kernel: IntOrTuple, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
              residual: bool = False, ndim: int = 2, use_bias: bool = True,
              eps: float = BN_EPS) -> ConvSpec:
  """A `ConvSpec` from torch-style arguments (ints broadcast to `ndim` spatial dims)."""
  as_tuple = lambda v: tuple(v) if isinstance(v, tuple) else (v,) * ndim
  return ConvSpec(features, as_tuple(kernel), as_tuple(stride), as_tuple(padding), residual,
                  use_bias, eps)


class ConvBN(nn.Module):
  """`[N, *spatial, C]` -> conv -> BatchNorm (-> + input if residual) -> ReLU."""
  spec: ConvSpec
  use_running_average: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.spec
    y = nn.Conv(s.features, s.kernel, s.strides, padding=[(p, p) for p in s.padding],
                use_bias=s.use_bias, name="conv")(x)
    y = nn.BatchNorm(use_running_average=self.use_running_average, momentum=BN_MOMENTUM,
                     epsilon=s.eps, use_fast_variance=False, name="bn")(y)
    return nn.relu(y + x if s.residual else y)


def conv_bn_map(flax: str, torch_conv: str, torch_bn: str,
                use_bias: bool = True) -> list[weights.Mapping]:
  """Variables-tree mappings of one `ConvBN` at `flax` from torch's conv and BatchNorm keys."""
  return (weights.in_collection("params",
                                weights.convolution(f"{flax}/conv", torch_conv, use_bias))
          + weights.batch_norm(f"{flax}/bn", torch_bn))
