"""ArcFace's IResNet (Deng et al. 2019; insightface `recognition/arcface_torch`,
`backbones/iresnet.py`: `IResNet` with `IBasicBlock`) in Flax, the identity network of the
CSIM metric (cosine similarity of ArcFace embeddings) that talking-head papers report, and
the import of its checkpoints as arcface_torch saves them.

Weights are the user's file; nothing is downloaded. arcface_torch's model zoo (its README,
"Model Zoo": OneDrive / Baidu Yun links, non-commercial research use only) ships each
backbone as `backbone.pth`, e.g. `ms1mv3_arcface_r100_fp16/backbone.pth`, and its training
script `train_v2.py` saves `model.pt`; both are `torch.save(backbone.state_dict())` (float32
tensors, keys `conv1.weight`, `layer1.0.bn1.running_mean`, ..., `features.running_var`).
`load_arcface` reads either (torch needed for the pickle) or the same state dict as
`.safetensors` (no torch needed). The training checkpoints `checkpoint_gpu_<rank>.pt` (the
backbone under `state_dict_backbone`) and insightface's ONNX packs (`buffalo_l`, ...) are not
read.

Architecture (upstream `IResNet`, inference; channels-last here, torch's NCHW in brackets):

* input `[B, 112, 112, 3]` RGB (torch `[B, 3, 112, 112]`) scaled as arcface_torch's
  `inference.py` does, `(pixel / 255 - 0.5) / 0.5`, i.e. in [-1, 1]: the project's video
  range, so frames go in unchanged;
* stem: `conv1` 3x3 stride 1 pad 1 (no bias) -> `bn1` -> `prelu` (one slope per channel);
* 4 stages `layer1..layer4` of `IBasicBlock`s, the first of each with stride 2:
  `bn1` -> `conv1` 3x3 -> `bn2` -> `prelu` -> `conv2` 3x3 (the stride) -> `bn3`, plus the
  input, through `downsample` (`0`: conv 1x1 stride 2 without bias, `1`: BatchNorm) in the
  first block (upstream's rule: stride != 1 or a change of width). No ReLU after the sum;
* `bn2` -> flatten -> dropout (the identity at inference) -> `fc` (with bias) -> `features`
  (BatchNorm1d) -> the embedding `[B, 512]`, not normalised (`embed` normalises it).

Every BatchNorm has eps 1e-5 (as set in upstream's iresnet.py throughout its history; the
2e-5 of the older MXNet models does not apply) and uses its running statistics.

torch flattens the `[B, C, 7, 7]` map channel-major (`c * 49 + h * 7 + w`); this port
flattens its `[B, 7, 7, C]` map (`(h * 7 + w) * C + c`), so the import reorders the columns
of `fc.weight` accordingly (`fc_kernel`), not the activations.

Every architecture number comes from the checkpoint (`module_for`): the blocks per stage from
the `layerN.i.` keys (iresnet18 (2, 2, 2, 2), 34 (3, 4, 6, 3), 50 (3, 4, 14, 3), 100 (3, 13,
30, 3), 200 (6, 26, 60, 6), or any other), the widths from the conv shapes, the embedding
size from `fc.weight`. `fc.weight`'s in_features must be the last width x 7 x 7: upstream
fixes `fc_scale = 7 * 7`, i.e. 112 px inputs; another count is refused naming the tensor.

CSIM here is crop-based: `prepare_faces` resizes the project's square face crops to 112 x 112
(bilinear, as `inference.py`'s `cv2.resize`). Papers usually align each face to ArcFace's
5-landmark template (similarity transform of eyes, nose tip and mouth corners, as the
training data was) before embedding; no landmarks are detected here, so absolute values
differ from those papers' and compare between runs of this code. Both crops of a pair go
through the same path, so the comparison stays fair.
"""
import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import weights
from gcm_jax.models.pretrained.torch_resize import resize_bilinear

INPUT_SIZE = 112        # Face crops are 112 x 112 (arcface_torch's training and inference).
FC_SIDE = 7             # The last stage's map is 7 x 7 (upstream `fc_scale = 7 * 7`).
NUM_STAGES = 4          # layer1 .. layer4.
BN_EPS = 1e-5           # Every BatchNorm of upstream's iresnet.py.
PRECISION = jax.lax.Precision.HIGHEST  # Full float32 convs and matmul (no TF32 / bf16 passes).
# Blocks per stage of the published backbones (`backbones/iresnet.py`).
ARCHS = {(2, 2, 2, 2): "iresnet18", (3, 4, 6, 3): "iresnet34", (3, 4, 14, 3): "iresnet50",
         (3, 13, 30, 3): "iresnet100", (6, 26, 60, 6): "iresnet200"}


class PReLU(nn.Module):
  """torch `nn.PReLU(C)`: `max(0, x) + a_c min(0, x)`, one slope per channel (last axis)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    slope = self.param("negative_slope", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, slope * x)


def _bn(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=name)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(pad, pad)] * 2,
                 use_bias=False, precision=PRECISION, name=name)


class IBasicBlock(nn.Module):
  """Upstream `IBasicBlock` (expansion 1): `[B, H, W, Cin]` -> `[B, H/stride, W/stride, planes]`."""
  planes: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = _bn("bn1")(x)
    out = _conv(self.planes, 3, 1, "conv1")(out)
    out = _bn("bn2")(out)
    out = PReLU(name="prelu")(out)
    out = _conv(self.planes, 3, self.stride, "conv2")(out)
    out = _bn("bn3")(out)
    identity = x
    if self.stride != 1 or x.shape[-1] != self.planes:   # Upstream `_make_layer`'s rule.
      identity = _bn("downsample_1")(_conv(self.planes, 1, self.stride, "downsample_0")(x))
    return out + identity


class IResNet(nn.Module):
  """arcface_torch's `IResNet` at inference: `[B, 112, 112, 3]` in [-1, 1] -> `[B, embed_dim]`.

  `layers`: IBasicBlocks per stage; `widths`: the stages' widths (upstream's 64, 128, 256,
  512); `stem_width`: conv1's (upstream 64); `embed_dim`: fc's outputs (`num_features`).
  The defaults are iresnet50's; `module_for` reads all four from a state dict.
  """
  layers: tuple[int, ...] = (3, 4, 14, 3)
  widths: tuple[int, ...] = (64, 128, 256, 512)
  stem_width: int = 64
  embed_dim: int = 512

  @property
  def arch(self) -> str:
    """Upstream's name of this layout ("iresnet100"), or `iresnet(l1, l2, l3, l4)`."""
    return ARCHS.get(tuple(self.layers), f"iresnet{tuple(self.layers)}")

  @nn.compact
  def __call__(self, faces: jax.Array) -> jax.Array:
    if faces.ndim != 4 or tuple(faces.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f"faces must be [B, {INPUT_SIZE}, {INPUT_SIZE}, 3] (RGB in [-1, 1]; "
                       f"prepare_faces resizes square crops), got {tuple(faces.shape)}")
    x = _conv(self.stem_width, 3, 1, "conv1")(faces.astype(jnp.float32))
    x = PReLU(name="prelu")(_bn("bn1")(x))
    for s, (blocks, width) in enumerate(zip(self.layers, self.widths)):
      for i in range(blocks):
        x = IBasicBlock(width, 2 if i == 0 else 1, name=f"layer{s + 1}_{i}")(x)
    x = _bn("bn2")(x)
    x = x.reshape(x.shape[0], -1)   # [B, 7 * 7 * C], (h, w, c) order; fc_kernel matches it.
    x = nn.Dense(self.embed_dim, precision=PRECISION, name="fc")(x)
    return _bn("features")(x)


# --- the checkpoint's architecture -----------------------------------------------------------

def _refuse(source: str, message: str) -> None:
  raise weights.WeightImportError(f"{source} is not an arcface_torch IResNet state dict this "
                                  f"port can express: {message}")


def _shape(state_dict: weights.StateDict, key: str, ndim: int, source: str) -> tuple[int, ...]:
  if key not in state_dict:
    _refuse(source, f"no `{key}`")
  shape = tuple(np.shape(state_dict[key]))
  if len(shape) != ndim:
    _refuse(source, f"`{key}` has shape {shape}, expected {ndim} dims")
  return shape


def stage_blocks(state_dict: weights.StateDict, source: str = "checkpoint") -> tuple[int, ...]:
  """Blocks per stage, from the `layerN.i.` keys (N = 1..4; i must run 0, 1, ..., n - 1)."""
  found: dict[int, set[int]] = {}
  for key in state_dict:
    m = re.match(r"layer(\d+)\.(\d+)\.", key)
    if m:
      found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  extra = sorted(n for n in found if not 1 <= n <= NUM_STAGES)
  if extra:
    _refuse(source, f"keys of stage `layer{extra[0]}.` (upstream has layer1..layer{NUM_STAGES})")
  layers = []
  for n in range(1, NUM_STAGES + 1):
    indices = found.get(n, set())
    if not indices:
      _refuse(source, f"no `layer{n}.<i>.` keys (upstream has {NUM_STAGES} stages)")
    gaps = sorted(set(range(max(indices) + 1)) - indices)
    if gaps:
      _refuse(source, f"no `layer{n}.{gaps[0]}.` keys although `layer{n}.{max(indices)}.` "
              "exists (blocks must be numbered 0, 1, ...)")
    layers.append(max(indices) + 1)
  return tuple(layers)


def module_for(state_dict: weights.StateDict, source: str = "checkpoint") -> IResNet:
  """The `IResNet` a state dict describes: blocks per stage (`stage_blocks`), widths (conv
  shapes), embedding size (`fc.weight` rows).

  Raises:
    WeightImportError: naming the key that is absent or odd: no `conv1.weight` (not an
      IResNet: a MobileFaceNet or ViT of arcface_torch, a training checkpoint), a stage
      without blocks or with a gap in its numbering, or an `fc.weight` whose in_features is
      not the last width x 7 x 7 (an input other than 112 px, which upstream cannot build).
  """
  stem = _shape(state_dict, "conv1.weight", 4, source)[0]
  layers = stage_blocks(state_dict, source)
  widths = tuple(_shape(state_dict, f"layer{n}.0.conv1.weight", 4, source)[0]
                 for n in range(1, NUM_STAGES + 1))
  embed_dim, in_features = _shape(state_dict, "fc.weight", 2, source)
  if in_features != widths[-1] * FC_SIDE * FC_SIDE:
    _refuse(source, f"`fc.weight` has {in_features} in_features, expected the last width "
            f"{widths[-1]} x {FC_SIDE} x {FC_SIDE} = {widths[-1] * FC_SIDE * FC_SIDE} "
            f"(upstream's fc_scale: a {FC_SIDE} x {FC_SIDE} map from {INPUT_SIZE} px inputs)")
  return IResNet(layers=layers, widths=widths, stem_width=stem, embed_dim=embed_dim)


# --- weight import ---------------------------------------------------------------------------

def fc_kernel(width: int, side: int = FC_SIDE) -> Callable[[np.ndarray], np.ndarray]:
  """`fc.weight` [out, C * side * side] over torch's (c, h, w) flatten -> Dense kernel
  [side * side * C, out] over this port's (h, w, c) flatten."""
  def transform(w: np.ndarray) -> np.ndarray:
    if w.ndim != 2 or w.shape[1] != width * side * side:
      raise ValueError(f"fc.weight must be [out, {width * side * side}], got {w.shape}")
    w = w.reshape(w.shape[0], width, side, side).transpose(2, 3, 1, 0)
    return w.reshape(side * side * width, -1)
  return transform


def _conv_map(flax: str, torch: str) -> list[weights.Mapping]:
  return weights.in_collection("params", weights.convolution(flax, torch, bias=False))


def _prelu_map(flax: str, torch: str) -> list[weights.Mapping]:
  return [weights.Mapping(f"params/{flax}/negative_slope", f"{torch}.weight")]


def name_map(module: IResNet) -> list[weights.Mapping]:
  """Variables-tree paths <- arcface_torch `IResNet` state-dict keys, for `module`'s layout.

  Flax names are torch's with "." -> "_" at the block level (`layer2_0/downsample_0/kernel`
  <- `layer2.0.downsample.0.weight`).
  """
  out = (_conv_map("conv1", "conv1") + weights.batch_norm("bn1", "bn1")
         + _prelu_map("prelu", "prelu"))
  for s, blocks in enumerate(module.layers):
    for i in range(blocks):
      f, t = f"layer{s + 1}_{i}", f"layer{s + 1}.{i}"
      out += (weights.batch_norm(f"{f}/bn1", f"{t}.bn1") + _conv_map(f"{f}/conv1", f"{t}.conv1")
              + weights.batch_norm(f"{f}/bn2", f"{t}.bn2") + _prelu_map(f"{f}/prelu", f"{t}.prelu")
              + _conv_map(f"{f}/conv2", f"{t}.conv2") + weights.batch_norm(f"{f}/bn3", f"{t}.bn3"))
      if i == 0:
        out += (_conv_map(f"{f}/downsample_0", f"{t}.downsample.0")
                + weights.batch_norm(f"{f}/downsample_1", f"{t}.downsample.1"))
  out += weights.batch_norm("bn2", "bn2")
  out += [weights.Mapping("params/fc/kernel", "fc.weight", fc_kernel(module.widths[-1])),
          weights.Mapping("params/fc/bias", "fc.bias")]
  return out + weights.batch_norm("features", "features")


def example_inputs() -> tuple[np.ndarray]:
  """One zero face `[1, 112, 112, 3]`."""
  return (np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32),)


def import_variables(state_dict: weights.StateDict, module: IResNet,
                     source: str = "checkpoint") -> dict[str, Any]:
  """`{"params", "batch_stats"}` for `module` from an arcface_torch `IResNet` state dict.

  Raises:
    WeightImportError: listing every missing, unexpected and mis-shaped tensor.
  """
  expected = weights.expected_variables(module, *example_inputs())
  return weights.import_params(state_dict, name_map(module), expected,
                               ignore=weights.BATCH_NORM_IGNORE, source=source)


def load_arcface(path: str) -> tuple[IResNet, dict[str, Any]]:
  """Loads an arcface_torch backbone (`backbone.pth`, `model.pt`, or its `.safetensors`).

  The layout (iresnet18 .. iresnet200, widths, embedding size) is the checkpoint's
  (`module_for`).

  Returns:
    (module, variables): `embed(module, variables, faces)` -> unit embeddings `[B, D]`.

  Raises:
    WeightImportError: unreadable file, a state dict the port cannot express (the key named),
      or one that does not fit the layout it describes (every problem listed).
  """
  state = weights.load_state_dict(path)
  module = module_for(state, source=path)
  return module, import_variables(state, module, source=path)


# --- CSIM ------------------------------------------------------------------------------------

def prepare_faces(frames: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Square face crops `[B, H, W, 3]` in [-1, 1] -> `[B, 112, 112, 3]` float32 in [-1, 1].

  Bilinear without antialiasing, half-pixel centres (torch's `align_corners=False`, which is
  `inference.py`'s `cv2.resize(img, (112, 112))`, INTER_LINEAR). A crop, not a 5-point
  alignment (see the module docstring).

  Raises:
    ValueError: not `[B, H, W, 3]`, or not square.
  """
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
    raise ValueError(f"frames must be square face crops [B, H, H, 3], got {tuple(frames.shape)}")
  return resize_bilinear(jnp.asarray(frames, jnp.float32), (size, size))


def _unit(x: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm (torch's `F.normalize`: norm clamped at 1e-12)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnums=0)
def _embed(module: IResNet, variables: Any, faces: jax.Array) -> jax.Array:
  return _unit(module.apply(variables, faces))


def embed(module: IResNet, variables: Any, faces: jax.Array) -> jax.Array:
  """Faces `[B, 112, 112, 3]` RGB in [-1, 1] -> L2-normalised embeddings `[B, embed_dim]`."""
  return _embed(module, variables, jnp.asarray(faces, jnp.float32))


def csim(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity of each row of `a` `[B, D]` with the same row of `b` -> `[B]`.

  Embeddings need not be normalised. CSIM of a generated video against its source is the
  mean over frames of `csim(embed(generated), embed(reference))`.
  """
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"a and b must be [B, D] of one shape, got {a.shape} and {b.shape}")
  return jnp.sum(_unit(a) * _unit(b), axis=-1)
