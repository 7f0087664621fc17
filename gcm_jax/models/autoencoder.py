"""KL autoencoder (diffusers' AutoencoderKL, the Stable Diffusion VAE) in Flax, applied per frame.

Architecture (channels-last; `C = block_out_channels`, `L = layers_per_block`, every norm a
GroupNorm(norm_num_groups, eps 1e-6), every activation SiLU):

  Encoder: conv_in 3x3 -> C[0]; for each level i: L x ResnetBlock -> C[i], then (all but the
    last level) Downsample (pad bottom/right by 1, 3x3 stride-2 conv, no padding); mid:
    ResnetBlock, single-head self-attention over the H*W positions (residual), ResnetBlock;
    norm, act, conv_out 3x3 -> 2 * latent_channels. quant_conv 1x1 -> (mean, logvar).
  Decoder: post_quant_conv 1x1; conv_in 3x3 -> C[-1]; mid as above; for each level of
    reversed(C): (L + 1) x ResnetBlock, then (all but the last) Upsample (nearest x2, 3x3 conv);
    norm, act, conv_out 3x3 -> 3.
  ResnetBlock: x + conv2(act(norm2(conv1(act(norm1(x)))))), x through a 1x1 conv_shortcut
    when the width changes.

The spatial downsampling factor is 2^(len(C) - 1) (8 for the SD VAE). `encode` returns the
posterior's mean and log-variance (clamped to [-30, 20] like diffusers), `decode` maps latents
back to pixels; neither applies the latent scale: diffusion runs on
`(z - shift_factor) * scaling_factor` (`scale_latents` / `unscale_latents`).

Video `[B, T, H, W, 3]` is folded to `B * T` images for the 2-D encoder / decoder and unfolded
again, so frame t's latent depends on frame t only. A causal 3-D (temporal) variant fits the same
interface: it compresses T too and reports it through `latent_shape`.

Weights: `load_diffusers` reads a diffusers-format AutoencoderKL (a safetensors file, or a folder
with diffusion_pytorch_model.safetensors + config.json) through `gcm_jax.weights` with the
explicit `name_map`; nothing is downloaded. Every number comes from config.json (the widths and
depth checked against the tensors' shapes; the group count, latent scale and shift, which no
shape shows, from the file alone, so a `config=` passed beside a config.json must agree with
it), and a config.json asking for what this port does not compute (another class, block type
or activation, per-channel latent statistics) is refused with the field and value named.
"""
import dataclasses
import json
import os
from typing import Any, Mapping as MappingType, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import weights

# diffusers clamps the posterior's log-variance to this range.
LOGVAR_RANGE = (-30.0, 20.0)
_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  """Widths and depth of an AutoencoderKL (the fields of diffusers' config.json)."""
  block_out_channels: tuple[int, ...]
  layers_per_block: int
  latent_channels: int = 4
  norm_num_groups: int = 32
  in_channels: int = 3
  out_channels: int = 3
  scaling_factor: float = 0.18215
  shift_factor: float = 0.0
  mid_block_add_attention: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True

  def __post_init__(self):
    if not self.block_out_channels or self.layers_per_block < 1:
      raise ValueError("an autoencoder needs at least one block and one layer per block")
    bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
    if bad:
      raise ValueError(f"block_out_channels {self.block_out_channels}: {bad} not divisible by "
                       f"norm_num_groups={self.norm_num_groups}")

  @property
  def downsampling(self) -> int:
    """Spatial downsampling factor: 2^(number of levels - 1)."""
    return 2 ** (len(self.block_out_channels) - 1)


CONFIGS: dict[str, AutoencoderConfig] = {
    # Stable Diffusion 1.x / 2.x VAE (e.g. stabilityai/sd-vae-ft-mse): 83.7M params, 8x, 4 ch.
    "sd-vae": AutoencoderConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
    # The same 8x / 4-channel layout, narrow and shallow, for tests and CPU recipes.
    "tiny": AutoencoderConfig(block_out_channels=(16, 32, 32, 32), layers_per_block=1,
                              norm_num_groups=8),
}

# diffusers' config.json key of each field that is read from it (with diffusers' defaults).
_DIFFUSERS_FIELDS = {
    "block_out_channels": (64,), "layers_per_block": 1, "latent_channels": 4,
    "norm_num_groups": 32, "in_channels": 3, "out_channels": 3, "scaling_factor": 0.18215,
    "shift_factor": None, "mid_block_add_attention": True, "use_quant_conv": True,
    "use_post_quant_conv": True,
}
# config.json values this port supports only at diffusers' defaults (`_class_name`: other
# diffusers autoencoders, e.g. AutoencoderKLTemporalDecoder, compute something else).
_DIFFUSERS_FIXED = {"_class_name": "AutoencoderKL", "act_fn": "silu", "latents_mean": None,
                    "latents_std": None}
# Names diffusers maps to the same activation (`get_activation`: both nn.SiLU).
_ACT_ALIASES = {"swish": "silu"}
# Block types (and diffusers' defaults, one level each) this port computes.
_BLOCK_TYPES = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}


def config_from_diffusers(hf: MappingType[str, Any]) -> AutoencoderConfig:
  """AutoencoderConfig from a diffusers AutoencoderKL config.json dict (missing fields take
  diffusers' defaults).

  Raises:
    weights.WeightImportError: a class, block type, block count, activation, per-channel
      latent statistics or group count this port does not compute; every such field named
      with its value.
  """
  values = dict(hf)
  if "act_fn" in values:
    values["act_fn"] = _ACT_ALIASES.get(values["act_fn"], values["act_fn"])
  problems = [f"{k}={hf[k]!r} (supported: {v!r})" for k, v in _DIFFUSERS_FIXED.items()
              if values.get(k, v) != v]
  levels = len(hf.get("block_out_channels", _DIFFUSERS_FIELDS["block_out_channels"]))
  for key, block in _BLOCK_TYPES.items():
    types = hf.get(key, (block,))
    if any(b != block for b in types):
      problems.append(f"{key}={hf[key]!r} (supported: all {block!r})")
    elif len(types) != levels:
      problems.append(f"{key} has {len(types)} entries but block_out_channels {levels} (one "
                      "block per level)")
  fields = {k: hf.get(k, default) for k, default in _DIFFUSERS_FIELDS.items()}
  fields["block_out_channels"] = tuple(fields["block_out_channels"])
  fields["shift_factor"] = fields["shift_factor"] or 0.0
  if not problems:
    try:
      return AutoencoderConfig(**fields)
    except ValueError as e:  # e.g. widths norm_num_groups does not divide.
      problems.append(str(e))
  raise weights.WeightImportError("unsupported AutoencoderKL config: " + "; ".join(problems))


# --- layers --------------------------------------------------------------------------------------

def _norm(groups: int, name: str, dtype: jnp.dtype) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, epsilon=_EPS, use_fast_variance=False, dtype=dtype,
                      name=name)


def _conv(features: int, kernel: int, name: str, dtype: jnp.dtype, stride: int = 1,
          padding: Any = "SAME") -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=padding, dtype=dtype,
                 name=name)


class ResnetBlock(nn.Module):
  """diffusers' ResnetBlock2D without time embedding: `[N, H, W, C_in]` -> `[N, H, W, C_out]`."""
  features: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = _conv(self.features, 3, "conv1", self.dtype)(nn.silu(_norm(self.groups, "norm1",
                                                                   self.dtype)(x)))
    h = _conv(self.features, 3, "conv2", self.dtype)(nn.silu(_norm(self.groups, "norm2",
                                                                   self.dtype)(h)))
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, "conv_shortcut", self.dtype)(x)
    return x + h


class AttentionBlock(nn.Module):
  """Single-head self-attention over all H*W positions, residual: `[N, H, W, C]` -> same."""
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, height, width, c = x.shape
    h = _norm(self.groups, "group_norm", self.dtype)(x).reshape(n, height * width, 1, c)
    q, k, v = (nn.Dense(c, dtype=self.dtype, name=name)(h) for name in ("to_q", "to_k", "to_v"))
    out = jax.nn.dot_product_attention(q, k, v)  # scale 1/sqrt(c)
    out = nn.Dense(c, dtype=self.dtype, name="to_out")(out)
    return x + out.reshape(x.shape).astype(x.dtype)


class MidBlock(nn.Module):
  """ResnetBlock, (optional) AttentionBlock, ResnetBlock at constant width."""
  config: AutoencoderConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, groups = x.shape[-1], self.config.norm_num_groups
    x = ResnetBlock(c, groups, self.dtype, name="resnets_0")(x)
    if self.config.mid_block_add_attention:
      x = AttentionBlock(groups, self.dtype, name="attentions_0")(x)
    return ResnetBlock(c, groups, self.dtype, name="resnets_1")(x)


class Encoder(nn.Module):
  """Images `[N, H, W, in_channels]` -> moments `[N, H/f, W/f, 2 * latent_channels]`."""
  config: AutoencoderConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    x = _conv(c.block_out_channels[0], 3, "conv_in", self.dtype)(x)
    for i, features in enumerate(c.block_out_channels):
      for j in range(c.layers_per_block):
        x = ResnetBlock(features, c.norm_num_groups, self.dtype,
                        name=f"down_blocks_{i}_resnets_{j}")(x)
      if i < len(c.block_out_channels) - 1:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        x = _conv(features, 3, f"down_blocks_{i}_downsample", self.dtype, stride=2,
                  padding="VALID")(x)
    x = MidBlock(c, self.dtype, name="mid_block")(x)
    x = nn.silu(_norm(c.norm_num_groups, "conv_norm_out", self.dtype)(x))
    return _conv(2 * c.latent_channels, 3, "conv_out", self.dtype)(x)


class Decoder(nn.Module):
  """Latents `[N, h, w, latent_channels]` -> images `[N, h*f, w*f, out_channels]`."""
  config: AutoencoderConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    c = self.config
    x = _conv(c.block_out_channels[-1], 3, "conv_in", self.dtype)(z)
    x = MidBlock(c, self.dtype, name="mid_block")(x)
    for i, features in enumerate(reversed(c.block_out_channels)):
      for j in range(c.layers_per_block + 1):
        x = ResnetBlock(features, c.norm_num_groups, self.dtype,
                        name=f"up_blocks_{i}_resnets_{j}")(x)
      if i < len(c.block_out_channels) - 1:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = _conv(features, 3, f"up_blocks_{i}_upsample", self.dtype)(x)
    x = nn.silu(_norm(c.norm_num_groups, "conv_norm_out", self.dtype)(x))
    return _conv(c.out_channels, 3, "conv_out", self.dtype)(x)


# --- the video autoencoder -----------------------------------------------------------------------

def _check_video(x: jax.Array, channels: int, what: str, multiple: int = 1) -> None:
  if x.ndim != 5:
    raise ValueError(f"{what} must be [B, T, H, W, {channels}], got rank {x.ndim} shape "
                     f"{tuple(x.shape)}")
  if x.shape[-1] != channels:
    raise ValueError(f"{what} must have {channels} channels (last axis), got shape "
                     f"{tuple(x.shape)}")
  if x.shape[2] % multiple or x.shape[3] % multiple:
    raise ValueError(f"{what} height and width must be multiples of the autoencoder's "
                     f"downsampling factor {multiple}, got {x.shape[2]}x{x.shape[3]}")


class AutoencoderKL(nn.Module):
  """The KL autoencoder applied frame by frame to video.

  Methods (call through `apply(..., method=...)`): `encode`, `decode`; `__call__` encodes,
  samples (or takes the mean) and decodes (used by `init` and training).
  """
  config: AutoencoderConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    c = self.config
    self.encoder = Encoder(c, self.dtype)
    self.decoder = Decoder(c, self.dtype)
    if c.use_quant_conv:
      self.quant_conv = _conv(2 * c.latent_channels, 1, "quant_conv", self.dtype)
    if c.use_post_quant_conv:
      self.post_quant_conv = _conv(c.latent_channels, 1, "post_quant_conv", self.dtype)

  def latent_shape(self, video_shape: tuple[int, ...]) -> tuple[int, ...]:
    """`[B, T, H, W, in_channels]` -> `[B, T, H/f, W/f, latent_channels]`."""
    b, t, h, w, _ = video_shape
    f = self.config.downsampling
    return (b, t, h // f, w // f, self.config.latent_channels)

  def encode(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior of each frame.

    Args:
      video: `[B, T, H, W, in_channels]` in [-1, 1], H and W multiples of the downsampling.

    Returns:
      (mean, logvar), each float32 `[B, T, H/f, W/f, latent_channels]`; logvar clamped to
      LOGVAR_RANGE.

    Raises:
      ValueError: wrong rank, channel count, or a size not divisible by the downsampling.
    """
    c = self.config
    _check_video(video, c.in_channels, "video", c.downsampling)
    b, t = video.shape[:2]
    moments = self.encoder(video.reshape((b * t,) + video.shape[2:]))
    if c.use_quant_conv:
      moments = self.quant_conv(moments)
    moments = moments.astype(jnp.float32).reshape((b, t) + moments.shape[1:])
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, latents: jax.Array) -> jax.Array:
    """Latents `[B, T, h, w, latent_channels]` (unscaled) -> video `[B, T, h*f, w*f, 3]`
    (float32, not clipped).

    Raises:
      ValueError: wrong rank or channel count.
    """
    c = self.config
    _check_video(latents, c.latent_channels, "latents")
    b, t = latents.shape[:2]
    z = latents.reshape((b * t,) + latents.shape[2:])
    if c.use_post_quant_conv:
      z = self.post_quant_conv(z)
    x = self.decoder(z).astype(jnp.float32)
    return x.reshape((b, t) + x.shape[1:])

  def __call__(self, video: jax.Array, key: Optional[jax.Array] = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """video `[B, T, H, W, 3]` -> (reconstruction `[B, T, H, W, 3]`, mean, logvar); decodes a
    posterior sample if `key` is given, else the mean."""
    mean, logvar = self.encode(video)
    z = mean if key is None else sample(key, mean, logvar)
    return self.decode(z), mean, logvar


def sample(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """A posterior sample `mean + exp(logvar / 2) * eps`, same shape as `mean`."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(posterior || N(0, I)) summed over all but the first two axes: `[B, T, ...]` -> `[B, T]`
  (diffusers' `DiagonalGaussianDistribution.kl` per frame)."""
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return kl.sum(axis=tuple(range(2, kl.ndim)))


def scale_latents(z: jax.Array, config: AutoencoderConfig) -> jax.Array:
  """Autoencoder latents -> the diffusion model's latents: `(z - shift) * scale`."""
  return (z - config.shift_factor) * config.scaling_factor


def unscale_latents(z: jax.Array, config: AutoencoderConfig) -> jax.Array:
  """The diffusion model's latents -> autoencoder latents: `z / scale + shift`."""
  return z / config.scaling_factor + config.shift_factor


# --- diffusers weights ---------------------------------------------------------------------------

# diffusers' attention key names: current (Attention) and pre-0.14 (AttentionBlock), the latter
# in e.g. the diffusers-format stabilityai/sd-vae-ft-mse.
ATTENTION_KEYS = {
    "current": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    "legacy": {"to_q": "query", "to_k": "key", "to_v": "value", "to_out": "proj_attn"},
}


def _attention_linear(w: np.ndarray) -> np.ndarray:
  """A Linear weight [out, in], or a 1x1 conv weight [out, in, 1, 1] (older conversions)
  -> Dense.kernel [in, out]; any other shape passes unchanged, for the import to report as
  mis-shaped."""
  if w.ndim == 4 and w.shape[2:] == (1, 1):
    return weights.squeeze_linear(w)
  return weights.linear(w) if w.ndim == 2 else w


def _resnet(flax: str, torch: str, has_shortcut: bool) -> list[weights.Mapping]:
  out = (weights.norm(f"{flax}/norm1", f"{torch}.norm1")
         + weights.convolution(f"{flax}/conv1", f"{torch}.conv1")
         + weights.norm(f"{flax}/norm2", f"{torch}.norm2")
         + weights.convolution(f"{flax}/conv2", f"{torch}.conv2"))
  return out + (weights.convolution(f"{flax}/conv_shortcut", f"{torch}.conv_shortcut")
                if has_shortcut else [])


def _mid_block(flax: str, torch: str, config: AutoencoderConfig,
               attention_keys: str) -> list[weights.Mapping]:
  out = _resnet(f"{flax}/resnets_0", f"{torch}.resnets.0", False)
  out += _resnet(f"{flax}/resnets_1", f"{torch}.resnets.1", False)
  if config.mid_block_add_attention:
    f, t = f"{flax}/attentions_0", f"{torch}.attentions.0"
    out += weights.norm(f"{f}/group_norm", f"{t}.group_norm")
    for name, key in ATTENTION_KEYS[attention_keys].items():
      out += [weights.Mapping(f"{f}/{name}/kernel", f"{t}.{key}.weight", _attention_linear),
              weights.Mapping(f"{f}/{name}/bias", f"{t}.{key}.bias")]
  return out


def name_map(config: AutoencoderConfig, attention_keys: str = "current"
             ) -> list[weights.Mapping]:
  """Flax AutoencoderKL params <- diffusers AutoencoderKL state-dict keys.

  Args:
    config: the architecture.
    attention_keys: "current" (to_q/to_k/to_v/to_out.0) or "legacy" (query/key/value/proj_attn)
      names of the mid-block attention.
  """
  if attention_keys not in ATTENTION_KEYS:
    raise ValueError(f"attention_keys must be one of {sorted(ATTENTION_KEYS)}, "
                     f"got {attention_keys!r}")
  channels, levels = config.block_out_channels, len(config.block_out_channels)
  out = weights.convolution("encoder/conv_in", "encoder.conv_in")
  previous = channels[0]
  for i, features in enumerate(channels):
    for j in range(config.layers_per_block):
      out += _resnet(f"encoder/down_blocks_{i}_resnets_{j}", f"encoder.down_blocks.{i}.resnets.{j}",
                     (previous if j == 0 else features) != features)
    previous = features
    if i < levels - 1:
      out += weights.convolution(f"encoder/down_blocks_{i}_downsample",
                                 f"encoder.down_blocks.{i}.downsamplers.0.conv")
  out += _mid_block("encoder/mid_block", "encoder.mid_block", config, attention_keys)
  out += (weights.norm("encoder/conv_norm_out", "encoder.conv_norm_out")
          + weights.convolution("encoder/conv_out", "encoder.conv_out"))

  out += weights.convolution("decoder/conv_in", "decoder.conv_in")
  out += _mid_block("decoder/mid_block", "decoder.mid_block", config, attention_keys)
  previous = channels[-1]
  for i, features in enumerate(reversed(channels)):
    for j in range(config.layers_per_block + 1):
      out += _resnet(f"decoder/up_blocks_{i}_resnets_{j}", f"decoder.up_blocks.{i}.resnets.{j}",
                     (previous if j == 0 else features) != features)
    previous = features
    if i < levels - 1:
      out += weights.convolution(f"decoder/up_blocks_{i}_upsample",
                                 f"decoder.up_blocks.{i}.upsamplers.0.conv")
  out += (weights.norm("decoder/conv_norm_out", "decoder.conv_norm_out")
          + weights.convolution("decoder/conv_out", "decoder.conv_out"))
  if config.use_quant_conv:
    out += weights.convolution("quant_conv", "quant_conv")
  if config.use_post_quant_conv:
    out += weights.convolution("post_quant_conv", "post_quant_conv")
  return out


def detect_attention_keys(state_dict: MappingType[str, Any]) -> str:
  """Which ATTENTION_KEYS naming a diffusers state dict uses ("current" if neither is found,
  so the import error lists the current names)."""
  for kind, keys in ATTENTION_KEYS.items():
    if f"encoder.mid_block.attentions.0.{keys['to_q']}.weight" in state_dict:
      return kind
  return "current"


def expected_params(config: AutoencoderConfig) -> Any:
  """Shapes / dtypes of `AutoencoderKL(config)`'s params (nothing allocated)."""
  f = config.downsampling
  return weights.expected_params(AutoencoderKL(config),
                                 jnp.zeros((1, 1, f, f, config.in_channels)))


def _config_path(path: str) -> str:
  """The config.json beside the weights: in the folder `path`, or in the file's folder."""
  return os.path.join(path if os.path.isdir(path) else os.path.dirname(path), "config.json")


def _read_config(path: str) -> Optional[AutoencoderConfig]:
  """The AutoencoderConfig of the config.json beside the weights, None if there is none."""
  config_path = _config_path(path)
  if not os.path.exists(config_path):
    return None
  with open(config_path) as f:
    hf = json.load(f)
  try:
    return config_from_diffusers(hf)
  except weights.WeightImportError as e:  # Name the file whose field is refused.
    raise weights.WeightImportError(f"{config_path}: {e}") from None


def _check_against_file(config: AutoencoderConfig, path: str) -> None:
  """Refuses a `config` that differs from the config.json beside the weights (if any): the
  file holds numbers the tensors do not show (groups, latent scale and shift)."""
  stored = _read_config(path)
  if stored is None or stored == config:
    return
  wrong = [f"  {f.name}: config.json {getattr(stored, f.name)!r}, config= "
           f"{getattr(config, f.name)!r}" for f in dataclasses.fields(AutoencoderConfig)
           if getattr(stored, f.name) != getattr(config, f.name)]
  raise weights.WeightImportError(
      f"{path}: the config= passed differs from {_config_path(path)}:\n" + "\n".join(wrong)
      + "\n(leave config=None to use the file's; change scale / shift after loading with "
      "dataclasses.replace)")


def load_diffusers(path: str, config: Optional[AutoencoderConfig] = None
                   ) -> tuple[AutoencoderConfig, dict[str, Any]]:
  """Imports diffusers AutoencoderKL weights (no torch needed for safetensors).

  Args:
    path: a `.safetensors` file, or a folder with `diffusion_pytorch_model.safetensors` (e.g. a
      downloaded stabilityai/sd-vae-ft-mse).
    config: the architecture; None reads `config.json` beside the weights (in the folder, or
      the file's folder). When both are there they must agree.

  Returns:
    (config, params) for `AutoencoderKL(config).apply({"params": params}, ...)`.

  Raises:
    WeightImportError: the checkpoint does not fit (every missing, unexpected and mis-shaped key
      named), there is neither a config nor a config.json, config.json describes an
      architecture this port lacks (the field and value named), or `config` differs from
      config.json (every differing field named).
  """
  if config is None:
    config = _read_config(path)
    if config is None:
      raise weights.WeightImportError(
          f"{path}: no config.json beside the weights; pass config= (e.g. "
          f"autoencoder.CONFIGS['sd-vae'])")
  else:
    _check_against_file(config, path)
  state_dict = weights.load_state_dict(path)
  params = weights.import_params(state_dict, name_map(config, detect_attention_keys(state_dict)),
                                 expected_params(config), source=path)
  return config, params
