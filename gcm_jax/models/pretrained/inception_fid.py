"""The FID Inception-v3 of pytorch-fid (github mseitzer/pytorch-fid, `inception.py`:
`fid_inception_v3` + `InceptionV3(output_blocks=[3])`) in Flax, and the import of its weights
`pt_inception-2015-12-05-6726825d.pth` (the TF 2015-12-05 Inception graph of the original FID,
ported to torchvision's `Inception3` layout). Nothing is downloaded: users fetch the file
(pytorch-fid's `FID_WEIGHTS_URL`) themselves.

Forward pass, channels-last (`[N, H, W, 3]`, torch's `[N, 3, H, W]`):

1. resize to 299 x 299, bilinear, `align_corners=False`, no antialiasing (pytorch-fid's
   `resize_input=True`), on images in [-1, 1]. pytorch-fid resizes images in [0, 1] and then
   maps them to `2 x - 1`; bilinear weights sum to 1, so resizing the [-1, 1] image is the
   same map.
2. torchvision's Inception-v3 stem (`Conv2d_1a_3x3` .. `maxpool2`) and the Mixed blocks with
   pytorch-fid's patches: `FIDInceptionA`/`C`/`E_1` average-pool without counting the zero
   padding (TF's behaviour), `FIDInceptionE_2` (Mixed_7c) max-pools in its pool branch.
   BasicConv2d = conv without bias -> BatchNorm(eps 1e-3) -> ReLU.
3. global average pool: pool3, `[N, 2048]` (FID's features; `fc` is not used).

The layout is data (`STEM`, `MIXED`): each op is a named conv, a pool, a fork (parallel convs
on one input, concatenated) or a Mixed block (branches of ops, concatenated), and the name map
is read off the same data, so the torch keys (`Mixed_6b.branch7x7dbl_3.bn.running_var`) and
the Flax paths (`Mixed_6b/branch7x7dbl_3/bn/var`) cannot drift apart.
"""
import dataclasses
from typing import Any, Callable, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import weights
from gcm_jax.models.pretrained import conv_bn
from gcm_jax.models.pretrained.torch_resize import resize_bilinear

INPUT_SIZE = (299, 299)   # pytorch-fid's resize target.
FEATURE_DIM = 2048        # pool3.
BN_EPS = 1e-3             # torchvision BasicConv2d.
# Keys of the published file the FID features do not use (the 1008-way classifier).
UNUSED_KEYS = (r"fc\.(weight|bias)",)
# Their shapes in the published file, checked although unused: torchvision's ImageNet
# Inception-v3 has the same layout and keys (without AuxLogits when built with
# aux_logits=False) but another, 1000-way, classifier and other weights.
UNUSED_SHAPES = {"fc.weight": (1008, FEATURE_DIM), "fc.bias": (1008,)}


@dataclasses.dataclass(frozen=True)
class Conv:
  """torchvision `BasicConv2d` `name` (conv without bias, BatchNorm eps 1e-3, ReLU)."""
  name: str
  spec: conv_bn.ConvSpec


@dataclasses.dataclass(frozen=True)
class Pool:
  """A 2-D pool: `kind` "max" (padding -inf) or "avg" (padding not counted, TF's)."""
  kind: str
  window: int
  stride: int
  padding: int = 0


@dataclasses.dataclass(frozen=True)
class Fork:
  """Parallel convs on one input, concatenated on channels (InceptionE's 1x3 / 3x1 pairs)."""
  convs: tuple[Conv, ...]


Op = Union[Conv, Pool, Fork]


@dataclasses.dataclass(frozen=True)
class Mixed:
  """An Inception block `name`: its branches (op sequences) concatenated on channels."""
  name: str
  branches: tuple[tuple[Op, ...], ...]


def _conv(name: str, features: int, kernel: Union[int, tuple[int, int]], stride: int = 1,
          padding: Union[int, tuple[int, int]] = 0) -> Conv:
  return Conv(name, conv_bn.conv_spec(features, kernel, stride, padding, use_bias=False,
                                      eps=BN_EPS))


_AVG_POOL_3 = Pool("avg", 3, 1, 1)   # F.avg_pool2d(3, 1, 1, count_include_pad=False)
_MAX_POOL_3 = Pool("max", 3, 1, 1)   # FIDInceptionE_2's F.max_pool2d(3, 1, 1)
_REDUCE_POOL = Pool("max", 3, 2)     # F.max_pool2d(3, 2) / nn.MaxPool2d(3, 2)


def inception_a(name: str, pool_features: int) -> Mixed:
  """`FIDInceptionA`: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""
  return Mixed(name, (
      (_conv("branch1x1", 64, 1),),
      (_conv("branch5x5_1", 48, 1), _conv("branch5x5_2", 64, 5, padding=2)),
      (_conv("branch3x3dbl_1", 64, 1), _conv("branch3x3dbl_2", 96, 3, padding=1),
       _conv("branch3x3dbl_3", 96, 3, padding=1)),
      (_AVG_POOL_3, _conv("branch_pool", pool_features, 1)),
  ))


def inception_b(name: str) -> Mixed:
  """`InceptionB` (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  return Mixed(name, (
      (_conv("branch3x3", 384, 3, stride=2),),
      (_conv("branch3x3dbl_1", 64, 1), _conv("branch3x3dbl_2", 96, 3, padding=1),
       _conv("branch3x3dbl_3", 96, 3, stride=2)),
      (_REDUCE_POOL,),
  ))


def inception_c(name: str, c7: int) -> Mixed:
  """`FIDInceptionC`: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""
  row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
  return Mixed(name, (
      (_conv("branch1x1", 192, 1),),
      (_conv("branch7x7_1", c7, 1), _conv("branch7x7_2", c7, **row),
       _conv("branch7x7_3", 192, **col)),
      (_conv("branch7x7dbl_1", c7, 1), _conv("branch7x7dbl_2", c7, **col),
       _conv("branch7x7dbl_3", c7, **row), _conv("branch7x7dbl_4", c7, **col),
       _conv("branch7x7dbl_5", 192, **row)),
      (_AVG_POOL_3, _conv("branch_pool", 192, 1)),
  ))


def inception_d(name: str) -> Mixed:
  """`InceptionD` (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  return Mixed(name, (
      (_conv("branch3x3_1", 192, 1), _conv("branch3x3_2", 320, 3, stride=2)),
      (_conv("branch7x7x3_1", 192, 1), _conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3)),
       _conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0)),
       _conv("branch7x7x3_4", 192, 3, stride=2)),
      (_REDUCE_POOL,),
  ))


def inception_e(name: str, pool: Pool) -> Mixed:
  """`FIDInceptionE_1` (`pool` avg) / `_2` (`pool` max): 1x1 | 1x1-(1x3, 3x1) |
  1x1-3x3-(1x3, 3x1) | pool-1x1."""
  def pair(prefix: str) -> Fork:
    return Fork((_conv(f"{prefix}a", 384, (1, 3), padding=(0, 1)),
                 _conv(f"{prefix}b", 384, (3, 1), padding=(1, 0))))
  return Mixed(name, (
      (_conv("branch1x1", 320, 1),),
      (_conv("branch3x3_1", 384, 1), pair("branch3x3_2")),
      (_conv("branch3x3dbl_1", 448, 1), _conv("branch3x3dbl_2", 384, 3, padding=1),
       pair("branch3x3dbl_3")),
      (pool, _conv("branch_pool", 192, 1)),
  ))


STEM: tuple[Op, ...] = (
    _conv("Conv2d_1a_3x3", 32, 3, stride=2),
    _conv("Conv2d_2a_3x3", 32, 3),
    _conv("Conv2d_2b_3x3", 64, 3, padding=1),
    _REDUCE_POOL,
    _conv("Conv2d_3b_1x1", 80, 1),
    _conv("Conv2d_4a_3x3", 192, 3),
    _REDUCE_POOL,
)
MIXED: tuple[Mixed, ...] = (
    inception_a("Mixed_5b", 32), inception_a("Mixed_5c", 64), inception_a("Mixed_5d", 64),
    inception_b("Mixed_6a"),
    inception_c("Mixed_6b", 128), inception_c("Mixed_6c", 160), inception_c("Mixed_6d", 160),
    inception_c("Mixed_6e", 192),
    inception_d("Mixed_7a"),
    inception_e("Mixed_7b", _AVG_POOL_3), inception_e("Mixed_7c", _MAX_POOL_3),
)


def _max_pool(x: jax.Array, p: Pool) -> jax.Array:
  pad = ((p.padding, p.padding),) * 2
  return nn.max_pool(x, (p.window,) * 2, (p.stride,) * 2, padding=pad)


def _avg_pool(x: jax.Array, p: Pool) -> jax.Array:
  pad = ((p.padding, p.padding),) * 2
  return nn.avg_pool(x, (p.window,) * 2, (p.stride,) * 2, padding=pad, count_include_pad=False)


POOLS: dict[str, Callable[[jax.Array, Pool], jax.Array]] = {"max": _max_pool, "avg": _avg_pool}


class InceptionFID(nn.Module):
  """pytorch-fid's `InceptionV3([3])`: `[N, H, W, 3]` in [-1, 1] -> pool3 `[N, 2048]`.

  Any H, W: the input is first resized to `size` (299 x 299), bilinear as torch's.
  Inference only (BatchNorm with running statistics).
  """
  size: tuple[int, int] = INPUT_SIZE

  def _op(self, op: Op, x: jax.Array, scope: str) -> jax.Array:
    if isinstance(op, Pool):
      return POOLS[op.kind](x, op)
    if isinstance(op, Fork):
      return jnp.concatenate([self._op(c, x, scope) for c in op.convs], axis=-1)
    return conv_bn.ConvBN(op.spec, name=f"{scope}{op.name}")(x)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [N, H, W, 3], got {tuple(images.shape)}")
    x = resize_bilinear(images.astype(jnp.float32), self.size)
    for op in STEM:
      x = self._op(op, x, "")
    for block in MIXED:
      outs = []
      for branch in block.branches:
        y = x
        for op in branch:
          y = self._op(op, y, f"{block.name}_")
        outs.append(y)
      x = jnp.concatenate(outs, axis=-1)
    return jnp.mean(x, axis=(1, 2))


def _convs(ops: tuple[Op, ...]) -> list[Conv]:
  out = []
  for op in ops:
    out += list(op.convs) if isinstance(op, Fork) else [op] if isinstance(op, Conv) else []
  return out


def name_map() -> list[weights.Mapping]:
  """Variables-tree paths <- torchvision `Inception3` keys (BatchNorm stats included).

  Flax names are the torch module paths with "." -> "_" at the block level
  (`Mixed_5b_branch1x1/conv/kernel` <- `Mixed_5b.branch1x1.conv.weight`).
  """
  pairs = [(c.name, c.name) for c in _convs(STEM)]
  for block in MIXED:
    for branch in block.branches:
      pairs += [(f"{block.name}_{c.name}", f"{block.name}.{c.name}") for c in _convs(branch)]
  return [m for flax, torch in pairs
          for m in conv_bn.conv_bn_map(flax, f"{torch}.conv", f"{torch}.bn", use_bias=False)]


def example_inputs() -> tuple[np.ndarray]:
  """One zero image `[1, 299, 299, 3]`."""
  return (np.zeros((1, *INPUT_SIZE, 3), np.float32),)


def import_variables(state_dict: weights.StateDict, module: InceptionFID,
                     source: str = "checkpoint") -> dict[str, Any]:
  """`{"params", "batch_stats"}` for `module` from an FID `Inception3` state dict.

  Raises:
    WeightImportError: a classifier (`fc`) of another shape than the published file's (another
      Inception-v3), or listing every missing, unexpected and mis-shaped tensor.
  """
  wrong = [f"{key}: checkpoint {tuple(np.shape(state_dict[key]))}, the FID Inception's {shape}"
           for key, shape in UNUSED_SHAPES.items()
           if key in state_dict and tuple(np.shape(state_dict[key])) != shape]
  if wrong:
    raise weights.WeightImportError(
        f"{source} is not pytorch-fid's FID Inception (pt_inception-2015-12-05; its 1008-way "
        "classifier, though unused, tells it from e.g. torchvision's ImageNet Inception-v3):\n"
        + "\n".join(f"  {line}" for line in wrong))
  expected = weights.expected_variables(module, *example_inputs())
  return weights.import_params(state_dict, name_map(), expected,
                               ignore=weights.BATCH_NORM_IGNORE + UNUSED_KEYS, source=source)


def load_inception_fid(path: str) -> tuple[InceptionFID, dict[str, Any]]:
  """Loads `pt_inception-2015-12-05-6726825d.pth` (or the same state dict as safetensors).

  Returns:
    (module, variables): `module.apply(variables, images)` -> pool3 `[N, 2048]`.

  Raises:
    WeightImportError: unreadable file, or a state dict that does not fit (all listed).
  """
  module = InceptionFID()
  return module, import_variables(weights.load_state_dict(path), module, source=path)
