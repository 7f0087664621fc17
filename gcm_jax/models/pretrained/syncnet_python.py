"""syncnet_python's SyncNet (Chung & Zisserman 2016; github joonson/syncnet_python,
`SyncNetModel.S`) in Flax, and the import of its published `syncnet_v2.model`.

This is the network behind the LSE-D / LSE-C numbers of the talking-face literature
(`gcm_jax.alignment.lse` runs its evaluation). Layouts (channels-last here, torch's in
brackets):

* lip tower `netcnnlip` + `netfclip`: 5 consecutive face crops `[N, 5, 224, 224, 3]`
  (torch `[N, 3, 5, 224, 224]`), float pixel values 0..255 in *BGR* order (syncnet_python
  reads frames with `cv2.imread` and feeds them unnormalized) -> Conv3d/BN/ReLU/MaxPool3d
  stack down to `[N, 1, 1, 1, 512]` -> Linear 512, BN1d, ReLU, Linear 1024 -> `[N, 1024]`.
* audio tower `netcnnaud` + `netfcaud`: 13 MFCCs x 20 MFCC frames (0.2 s at 100 Hz)
  `[N, 13, 20]` (torch `[N, 1, 13, 20]`) -> Conv2d/BN/ReLU/MaxPool2d stack down to
  `[N, 1, 1, 512]` -> the same head -> `[N, 1024]`.

(1024 is `S(num_layers_in_fc_layers)` of `syncnet_v2.model`; the loader reads it from the
checkpoint's head, every other width being fixed by the architecture and checked.)

The embeddings are not normalized; LSE compares them by Euclidean distance.

Weights: `load_syncnet_python("syncnet_v2.model")` (a pickled state dict of `S`, keys
`netcnnaud.0.weight`, `netcnnaud.1.running_mean`, ...; torch needed to read it) returns the
module and its variables `{"params", "batch_stats"}`. Nothing is downloaded.
"""
import dataclasses
from typing import Any, Union

import flax.linen as nn
import jax
import numpy as np

from gcm_jax import weights
from gcm_jax.models.pretrained import conv_bn

VIDEO_FRAMES = 5       # Frames per lip window.
FRAME_SIZE = 224       # Face crops are 224 x 224.
NUM_MFCC = 13          # MFCCs per audio frame.
MFCC_WINDOW = 20       # MFCC frames (100 Hz) per window: 5 video frames at 25 fps.
HIDDEN = 512           # Width of the conv output and of the head's hidden layer.
EMBED_DIM = 1024       # syncnet_v2.model's `num_layers_in_fc_layers`.
_EMBED_WEIGHT = "netfcaud.3.weight"  # [embed_dim, 512]: the audio head's last Linear.


@dataclasses.dataclass(frozen=True)
class PoolSpec:
  """One torch `nn.MaxPoolNd(kernel, stride, padding)` (padding is -inf, as torch's)."""
  window: tuple[int, ...]
  strides: tuple[int, ...]
  padding: tuple[int, ...] = ()


StackSpec = tuple[Union[conv_bn.ConvSpec, PoolSpec], ...]
# Torch `nn.Sequential` slots each entry occupies: Conv+BatchNorm+ReLU, or MaxPool.
_TORCH_SLOTS = {conv_bn.ConvSpec: 3, PoolSpec: 1}

_c2 = lambda *a, **k: conv_bn.conv_spec(*a, ndim=2, **k)
_c3 = lambda *a, **k: conv_bn.conv_spec(*a, ndim=3, **k)

AUDIO_STACK: StackSpec = (
    _c2(64, 3, 1, 1), PoolSpec((1, 1), (1, 1)),
    _c2(192, 3, 1, 1), PoolSpec((3, 3), (1, 2)),
    _c2(384, 3, 1, 1),
    _c2(256, 3, 1, 1),
    _c2(256, 3, 1, 1), PoolSpec((3, 3), (2, 2)),
    _c2(512, (5, 4), 1, 0),
)
LIP_STACK: StackSpec = (
    _c3(96, (5, 7, 7), (1, 2, 2), 0), PoolSpec((1, 3, 3), (1, 2, 2)),
    _c3(256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), PoolSpec((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    _c3(256, (1, 3, 3), 1, (0, 1, 1)),
    _c3(256, (1, 3, 3), 1, (0, 1, 1)),
    _c3(256, (1, 3, 3), 1, (0, 1, 1)), PoolSpec((1, 3, 3), (1, 2, 2)),
    _c3(512, (1, 6, 6), 1, 0),
)


def _torch_indices(stack: StackSpec) -> list[int]:
  """Index in torch's `nn.Sequential` of each stack entry."""
  starts = np.cumsum([0] + [_TORCH_SLOTS[type(s)] for s in stack])
  return [int(i) for i in starts[:-1]]


class ConvStack(nn.Module):
  """A torch `nn.Sequential` of Conv/BN/ReLU and MaxPool: `[N, *spatial, C]` -> same rank."""
  stack: StackSpec
  use_running_average: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for spec, index in zip(self.stack, _torch_indices(self.stack)):
      if isinstance(spec, PoolSpec):
        pad = [(p, p) for p in spec.padding] if spec.padding else "VALID"
        x = nn.max_pool(x, spec.window, spec.strides, padding=pad)
      else:
        x = conv_bn.ConvBN(spec, self.use_running_average, name=f"layer{index}")(x)
    return x


class Head(nn.Module):
  """Linear 512 -> BatchNorm1d -> ReLU -> Linear `features`: `[N, 512]` -> `[N, features]`."""
  features: int = EMBED_DIM
  use_running_average: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(HIDDEN, name="fc0")(x)
    x = nn.BatchNorm(use_running_average=self.use_running_average,
                     momentum=conv_bn.BN_MOMENTUM, epsilon=conv_bn.BN_EPS,
                     use_fast_variance=False, name="bn1")(x)
    return nn.Dense(self.features, name="fc3")(nn.relu(x))


def _check(name: str, x: jax.Array, shape: tuple[int, ...]) -> None:
  if tuple(x.shape[1:]) != shape:
    raise ValueError(f"{name} must be [N, {', '.join(map(str, shape))}], got {tuple(x.shape)}")


class SyncNetPython(nn.Module):
  """syncnet_python's `S`: `embed_video` and `embed_audio` give `[N, embed_dim]` each.

  `apply(variables, frames, mfcc)` returns both; `apply(variables, x, method="embed_video")`
  (or "embed_audio") one tower. Set `use_running_average=False` only for training (then
  `mutable=["batch_stats"]`).
  """
  embed_dim: int = EMBED_DIM
  use_running_average: bool = True

  def setup(self):
    ura = self.use_running_average
    self.netcnnaud = ConvStack(AUDIO_STACK, ura)
    self.netfcaud = Head(self.embed_dim, ura)
    self.netcnnlip = ConvStack(LIP_STACK, ura)
    self.netfclip = Head(self.embed_dim, ura)

  def embed_video(self, frames: jax.Array) -> jax.Array:
    """`[N, 5, 224, 224, 3]` BGR pixel values 0..255 -> `[N, embed_dim]` (`forward_lip`)."""
    _check("frames", frames, (VIDEO_FRAMES, FRAME_SIZE, FRAME_SIZE, 3))
    x = self.netcnnlip(frames)
    return self.netfclip(x.reshape(x.shape[0], -1))

  def embed_audio(self, mfcc: jax.Array) -> jax.Array:
    """`[N, 13, 20]` MFCC windows (coefficient, time) -> `[N, embed_dim]` (`forward_aud`)."""
    _check("mfcc", mfcc, (NUM_MFCC, MFCC_WINDOW))
    x = self.netcnnaud(mfcc[..., None])
    return self.netfcaud(x.reshape(x.shape[0], -1))

  def __call__(self, frames: jax.Array, mfcc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(video embeddings `[N, embed_dim]`, audio embeddings `[M, embed_dim]`)."""
    return self.embed_video(frames), self.embed_audio(mfcc)


def example_inputs() -> tuple[np.ndarray, np.ndarray]:
  """One zero lip window `[1, 5, 224, 224, 3]` and one MFCC window `[1, 13, 20]`."""
  return (np.zeros((1, VIDEO_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), np.float32),
          np.zeros((1, NUM_MFCC, MFCC_WINDOW), np.float32))


def name_map() -> list[weights.Mapping]:
  """Variables-tree paths <- `SyncNetModel.S` state-dict keys (BatchNorm stats included)."""
  out = []
  for stack_name, stack in (("netcnnaud", AUDIO_STACK), ("netcnnlip", LIP_STACK)):
    for spec, i in zip(stack, _torch_indices(stack)):
      if isinstance(spec, conv_bn.ConvSpec):
        out += conv_bn.conv_bn_map(f"{stack_name}/layer{i}", f"{stack_name}.{i}",
                                   f"{stack_name}.{i + 1}")
  for head in ("netfcaud", "netfclip"):
    out += weights.in_collection("params", weights.dense(f"{head}/fc0", f"{head}.0")
                                 + weights.dense(f"{head}/fc3", f"{head}.3"))
    out += weights.batch_norm(f"{head}/bn1", f"{head}.1")
  return out


def import_variables(state_dict: weights.StateDict, module: SyncNetPython,
                     source: str = "checkpoint") -> dict[str, Any]:
  """`{"params", "batch_stats"}` for `module` from a `SyncNetModel.S` state dict.

  Raises:
    WeightImportError: listing every missing, unexpected and mis-shaped tensor.
  """
  expected = weights.expected_variables(module, *example_inputs())
  return weights.import_params(state_dict, name_map(), expected,
                               ignore=weights.BATCH_NORM_IGNORE, source=source)


def checkpoint_embed_dim(state_dict: weights.StateDict) -> int:
  """`S(num_layers_in_fc_layers)` of a state dict: the rows of the audio head's last Linear
  (1024 in `syncnet_v2.model`); `EMBED_DIM` when the key is absent or not a Linear weight (the
  import then names what is wrong). The lip head must agree: the import checks its shape."""
  w = state_dict.get(_EMBED_WEIGHT)
  return int(w.shape[0]) if w is not None and np.ndim(w) == 2 else EMBED_DIM


def load_syncnet_python(path: str) -> tuple[SyncNetPython, dict[str, Any]]:
  """Loads syncnet_python's `syncnet_v2.model` (or the same state dict as `.pt`/safetensors).

  The embedding width is the checkpoint's (`checkpoint_embed_dim`); every other width is
  fixed by the architecture and checked against the tensors' shapes.

  Returns:
    (module, variables): `module.apply(variables, frames, method="embed_video")`, ...

  Raises:
    WeightImportError: unreadable file, or a state dict that does not fit (all listed).
  """
  state = weights.load_state_dict(path)
  module = SyncNetPython(embed_dim=checkpoint_embed_dim(state))
  return module, import_variables(state, module, source=path)
