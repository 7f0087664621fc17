"""wav2vec 2.0's encoder in Flax, its weight import, and per-video-frame feature windows.

Model (transformers' `Wav2Vec2Model` in eval mode: no attention mask, no SpecAugment, no
adapter): waveform `[B, N]` at 16 kHz -> `len(conv_dim)` 1-D convolutions over time (no
padding; kernel `conv_kernel[i]`, stride `conv_stride[i]`, `conv_dim[i]` channels, a bias if
`conv_bias`), each followed by exact erf GELU and by a norm before it: with
`feat_extract_norm = "group"` a per-channel GroupNorm over time after the first conv only, with
`"layer"` a LayerNorm over channels after every conv (both eps 1e-5, torch's default:
`layer_norm_eps` does not reach them) -> conv features `[B, L, conv_dim[-1]]` (the published
strides (5, 2, 2, 2, 2, 2, 2): 320 samples per frame, 50 frames per second, a 400-sample
receptive field) -> [with `num_frames`: linear interpolation to `num_frames` steps, Hallo] ->
LayerNorm + Dense to `hidden_size` (the feature projection) -> plus the positional convolution
(a grouped conv over time with `num_conv_pos_embeddings` taps in `num_conv_pos_embedding_groups`
groups, weight-normalised, padded by `K // 2` on both sides with the last step dropped for an
even K, then GELU) -> `num_hidden_layers` transformer layers (`num_attention_heads` heads with
biased q/k/v/out projections, a GELU MLP of width `intermediate_size`, LayerNorm eps
`layer_norm_eps`), either post-LN (`do_stable_layer_norm = False`, base: LayerNorm of the sum
before the first layer, then `x = LN(x + attn(x)); x = LN(x + mlp(x))`) or pre-LN (`True`,
large: `x += attn(LN(x)); x += mlp(LN(x))` and a LayerNorm after the last layer).

Positional conv weight norm (torch `weight_norm(conv, dim=2)`: `w = g v / |v|`, the norm over
every axis but the kernel-tap axis, no epsilon) is computed in the module from its two params,
`pos_conv/weight_g` `[K]` and `pos_conv/weight_v` `[K, D / G, D]`, so that both torch spellings
import by renaming alone: `pos_conv_embed.conv.weight_g` / `weight_v` (`nn.utils.weight_norm`,
e.g. facebook/wav2vec2-base-960h) and `pos_conv_embed.conv.parametrizations.weight.original0` /
`original1` (`nn.utils.parametrizations.weight_norm`, what transformers saves now).

Weights: `load_encoder` reads an HF folder (`config.json` + `model.safetensors`, sharded
safetensors or `pytorch_model.bin`) or a safetensors file (with `config.json` beside it, or not)
through `gcm_jax.weights`. `Wav2Vec2Model` keys have no prefix; `Wav2Vec2ForCTC` /
`Wav2Vec2ForPreTraining` / `...ForSequenceClassification` keys sit under `wav2vec2.`, and their
heads (`lm_head`, `quantizer`, `project_q`, `project_hid`, ...) and `masked_spec_embed` (used in
training only) are ignored. Every architecture number comes from `config.json` (checked against
the tensors' shapes); without one, from the named config whose dims the tensors show. A
`config.json` asking for what this encoder does not compute (another activation, an adapter,
another position embedding or model type, an unknown `feat_extract_norm`) is refused with the
field named. Nothing is downloaded: users fetch e.g. the HF `facebook/wav2vec2-base-960h`
folder themselves.

Frame features (`frame_features`), Hallo's convention (`hallo/datasets/audio_processor.py`,
`hallo/models/wav2vec.py`, `scripts/inference.py::process_audio_emb`): the clip is normalised to
zero mean and unit variance (`Wav2Vec2FeatureExtractor(do_normalize=True)`: float32,
`(x - mean) / sqrt(var + 1e-7)`), its length in video frames taken as Hallo does,
`seq_len = ceil(N / 16000 * fps)` (in float64, so that e.g. 7 * 640 samples give 8 frames, as in
Hallo), and the whole clip encoded at once with its conv features linearly interpolated
(`align_corners=True`) to `seq_len` steps before the feature projection. If the video has more
frames T than `seq_len`, the normalised audio is first zero-padded by `T - seq_len` frames of
`16000 // fps` samples and `seq_len = T` (Hallo's `preprocess(clip_length)` padding). Video frame
`i` takes feature frames `[i - context, i + context]` clamped to `[0, seq_len)`, each
contributing the hidden states of `layers`: `"blocks"` (Hallo's `features: all`: the output of
every transformer layer, `num_hidden_layers` vectors per frame) or `"final"`
(`last_hidden_state`, 1), ordered frame-major, layer-minor. The clip is encoded whole (attention
over all of it, as Hallo does), so each distinct (clip length, frame count) compiles once;
windows or padding would change the features (the first GroupNorm and the attention see the
whole clip). Hallo's vocal separation (before all this) is not part of this module.

"blocks" and transformers versions: Hallo pins transformers 4.39.2, whose `hidden_states[1:]`
are the outputs of layers 1 .. n - 1 and then `last_hidden_state`. For post-LN models (base,
Hallo's) that is every layer's output; for pre-LN models (large) the last entry is after the
encoder's final LayerNorm. transformers 5 returns the last layer's output before that LayerNorm
instead; here the last entry is `last_hidden_state` in both cases (Hallo's, 4.x).
"""
import dataclasses
import functools
import json
import math
import os
import re
from typing import Any, Callable, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import weights
from gcm_jax.models import attention
from gcm_jax.models.pretrained import named_configs


SAMPLE_RATE = 16000
NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor's zero_mean_unit_var_norm.
CONV_NORM_EPS = 1e-5  # torch's GroupNorm / LayerNorm default, used by the conv feature encoder.
FEAT_EXTRACT_NORMS = ("group", "layer")


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
  """Every number and switch of transformers' `Wav2Vec2Config` that `Wav2Vec2Model` computes
  with in eval mode (same names; lists become tuples)."""
  conv_dim: tuple[int, ...]
  conv_kernel: tuple[int, ...]
  conv_stride: tuple[int, ...]
  conv_bias: bool
  feat_extract_norm: str  # "group" (GroupNorm after the first conv) | "layer" (after each).
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  num_conv_pos_embeddings: int  # Kernel taps of the positional conv.
  num_conv_pos_embedding_groups: int
  do_stable_layer_norm: bool  # True: pre-LN layers and a final LayerNorm; False: post-LN.
  layer_norm_eps: float = 1e-5

  def __post_init__(self):
    for name in ("conv_dim", "conv_kernel", "conv_stride"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    for name in ("conv_bias", "do_stable_layer_norm"):
      object.__setattr__(self, name, bool(getattr(self, name)))
    object.__setattr__(self, "layer_norm_eps", float(self.layer_norm_eps))
    problems = []
    if not self.conv_dim or not len(self.conv_dim) == len(self.conv_kernel) == len(
        self.conv_stride):
      problems.append(f"conv_dim, conv_kernel and conv_stride need one entry per conv layer, "
                      f"got {self.conv_dim}, {self.conv_kernel}, {self.conv_stride}")
    if self.feat_extract_norm not in FEAT_EXTRACT_NORMS:
      problems.append(f"feat_extract_norm must be one of {FEAT_EXTRACT_NORMS}, "
                      f"got {self.feat_extract_norm!r}")
    if self.hidden_size % self.num_attention_heads:
      problems.append(f"hidden_size {self.hidden_size} is not divisible by "
                      f"num_attention_heads {self.num_attention_heads}")
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      problems.append(f"hidden_size {self.hidden_size} is not divisible by "
                      f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")
    if problems:
      raise ValueError("invalid Wav2Vec2Config: " + "; ".join(problems))


_CONV_STACK = dict(conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                   conv_stride=(5, 2, 2, 2, 2, 2, 2))
CONFIGS: dict[str, Wav2Vec2Config] = {
    # facebook/wav2vec2-base-960h (= transformers' Wav2Vec2Config defaults); Hallo's encoder.
    "base": Wav2Vec2Config(
        **_CONV_STACK, conv_bias=False, feat_extract_norm="group", hidden_size=768,
        num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        do_stable_layer_norm=False),
    # facebook/wav2vec2-large-960h-lv60-self (and -lv60, xlsr-53: same architecture).
    "large": Wav2Vec2Config(
        **_CONV_STACK, conv_bias=True, feat_extract_norm="layer", hidden_size=1024,
        num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        do_stable_layer_norm=True),
}


def receptive_field(config: Wav2Vec2Config) -> int:
  """Samples one conv feature frame sees (400 for the published strides): the shortest input."""
  field = 1
  for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
    field = (field - 1) * stride + kernel
  return field


def num_conv_frames(config: Wav2Vec2Config, num_samples: int) -> int:
  """Conv feature frames L of `num_samples` samples (`_get_feat_extract_output_lengths`)."""
  length = num_samples
  for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    length = max((length - kernel) // stride + 1, 0)
  return length


def _gelu(x: jax.Array) -> jax.Array:
  return nn.gelu(x, approximate=False)  # transformers' ACT2FN["gelu"]: exact erf.


def interpolation_weights(length: int, num_frames: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """torch `F.interpolate(mode="linear", align_corners=True)` from `length` to `num_frames`:
  (lower int `[T]`, upper int `[T]`, lower weight float32 `[T]`, upper weight float32 `[T]`).

  As torch computes it (float32): the source position of output `j` is
  `float32(length - 1) / (num_frames - 1) * j` (0 for one output step), its floor the lower
  index, the fraction the upper weight; equal lengths copy.
  """
  if length < 1 or num_frames < 1:
    raise ValueError(f"cannot interpolate {length} frames to {num_frames}")
  steps = np.arange(num_frames)
  if length == num_frames:
    return steps, steps, np.ones(num_frames, np.float32), np.zeros(num_frames, np.float32)
  scale = np.float32(length - 1) / np.float32(num_frames - 1) if num_frames > 1 else np.float32(0)
  source = scale * steps.astype(np.float32)
  lower = np.minimum(np.floor(source).astype(np.int64), length - 1)
  upper_weight = np.clip(source - lower.astype(np.float32), 0, 1).astype(np.float32)
  upper = np.minimum(lower + 1, length - 1)
  return lower, upper, (np.float32(1) - upper_weight).astype(np.float32), upper_weight


def linear_interpolation(x: jax.Array, num_frames: int) -> jax.Array:
  """Hallo's `linear_interpolation`: `[B, L, C]` -> `[B, num_frames, C]` along time."""
  lower, upper, lower_weight, upper_weight = interpolation_weights(x.shape[1], num_frames)
  return x[:, lower] * lower_weight[:, None] + x[:, upper] * upper_weight[:, None]


class FeatureEncoder(nn.Module):
  """The conv feature encoder: waveform `[B, N]` -> conv features `[B, L, conv_dim[-1]]`."""
  config: Wav2Vec2Config

  @nn.compact
  def __call__(self, waveform: jax.Array) -> jax.Array:
    c = self.config
    x = waveform[..., None]
    for i, (dim, kernel, stride) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
      x = nn.Conv(dim, (kernel,), strides=(stride,), padding="VALID", use_bias=c.conv_bias,
                  name=f"conv_{i}")(x)
      if c.feat_extract_norm == "layer":
        x = nn.LayerNorm(epsilon=CONV_NORM_EPS, use_fast_variance=False, name=f"norm_{i}")(x)
      elif i == 0:  # GroupNorm with a group per channel: each channel normalised over time.
        x = nn.GroupNorm(num_groups=dim, epsilon=CONV_NORM_EPS, use_fast_variance=False,
                         name="norm_0")(x)
      x = _gelu(x)
    return x


class PositionalConv(nn.Module):
  """The weight-normalised grouped positional conv + GELU, `[B, L, D]` -> `[B, L, D]`."""
  kernel_size: int
  groups: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d, k = x.shape[-1], self.kernel_size
    norm = lambda v: jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2)))  # Per kernel tap.
    v = self.param("weight_v", nn.initializers.lecun_normal(), (k, d // self.groups, d))
    g = self.param("weight_g", lambda _: norm(v))  # torch's weight_norm starts at g = |v|.
    bias = self.param("bias", nn.initializers.zeros_init(), (d,))
    kernel = v * (g / norm(v))[:, None, None]
    # torch pads K // 2 on both sides and drops the last step for an even K.
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1,), padding=[(k // 2, (k - 1) // 2)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups)
    return _gelu(y + bias)


class EncoderLayer(nn.Module):
  """One transformer layer, post-LN or pre-LN (`pre_norm`), `[B, L, D]` -> `[B, L, D]`."""
  num_heads: int
  mlp_width: int
  epsilon: float
  pre_norm: bool
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, length, d = x.shape
    attn_ln = nn.LayerNorm(epsilon=self.epsilon, use_fast_variance=False, name="attn_ln")
    mlp_ln = nn.LayerNorm(epsilon=self.epsilon, use_fast_variance=False, name="mlp_ln")

    def attend(h: jax.Array) -> jax.Array:
      heads = lambda y: y.reshape(b, length, self.num_heads, d // self.num_heads)
      q = heads(nn.Dense(d, name="query")(h))
      k = heads(nn.Dense(d, name="key")(h))
      v = heads(nn.Dense(d, name="value")(h))
      out = attention.attend(q, k, v, implementation=self.implementation)
      return nn.Dense(d, name="out")(out.reshape(b, length, d))

    def mlp(h: jax.Array) -> jax.Array:
      return nn.Dense(d, name="mlp2")(_gelu(nn.Dense(self.mlp_width, name="mlp1")(h)))

    if self.pre_norm:  # Wav2Vec2EncoderLayerStableLayerNorm.
      x = x + attend(attn_ln(x))
      return x + mlp(mlp_ln(x))
    x = attn_ln(x + attend(x))  # Wav2Vec2EncoderLayer.
    return mlp_ln(x + mlp(x))


class Wav2Vec2Encoder(nn.Module):
  """wav2vec 2.0's encoder: waveform `[B, N]` (16 kHz, normalised as the checkpoint expects)
  -> features at 50 Hz (the published strides), or at `num_frames` steps.

  Args (of `__call__`):
    waveform: float32 `[B, N]`, N at least `receptive_field(config)` samples.
    num_frames: if given, the conv features `[B, L, C]` are linearly interpolated to
      `num_frames` steps (`align_corners=True`, Hallo's `Wav2VecModel`) before the feature
      projection; None: transformers' `Wav2Vec2Model`.

  Returns:
    (final `[B, L', D]` = transformers' `last_hidden_state`, hidden `[B, L', n_layers, D]`:
    the output of every transformer layer, the last one = final (after the final LayerNorm of
    a pre-LN model), i.e. transformers 4.x's `hidden_states[1:]`), `L'` = `num_frames` or L.
  """
  config: Wav2Vec2Config
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, waveform: jax.Array, num_frames: Optional[int] = None
               ) -> tuple[jax.Array, jax.Array]:
    c = self.config
    if waveform.ndim != 2 or waveform.shape[1] < receptive_field(c):
      raise ValueError(f"wav2vec2 takes a waveform [B, N] with N >= {receptive_field(c)} "
                       f"samples, got shape {waveform.shape}")
    x = FeatureEncoder(c, name="feature_extractor")(waveform)
    if num_frames is not None:
      x = linear_interpolation(x, num_frames)
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, use_fast_variance=False, name="projection_ln")(x)
    x = nn.Dense(c.hidden_size, name="projection")(x)
    x = x + PositionalConv(c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups,
                           name="pos_conv")(x)
    encoder_ln = nn.LayerNorm(epsilon=c.layer_norm_eps, use_fast_variance=False,
                              name="encoder_ln")
    if not c.do_stable_layer_norm:
      x = encoder_ln(x)
    hidden = []
    for i in range(c.num_hidden_layers):
      x = EncoderLayer(c.num_attention_heads, c.intermediate_size, c.layer_norm_eps,
                       c.do_stable_layer_norm, self.implementation, name=f"layers_{i}")(x)
      hidden.append(x)
    if c.do_stable_layer_norm:
      x = encoder_ln(x)
      hidden[-1] = x
    return x, jnp.stack(hidden, axis=2)


def random_encoder(size: str, seed: int) -> tuple[Wav2Vec2Encoder, dict[str, Any]]:
  """A `CONFIGS[size]` encoder with random (Flax-initialised) weights, for ablations and tests."""
  if size not in CONFIGS:
    raise ValueError(f"unknown wav2vec2 size {size!r}; expected one of {tuple(CONFIGS)}")
  module = Wav2Vec2Encoder(CONFIGS[size])
  waveform = np.zeros((1, receptive_field(module.config)), np.float32)
  return module, jax.jit(module.init)(jax.random.key(seed), waveform)["params"]


# --- weight import ---------------------------------------------------------------------------

# Where the encoder sits: Wav2Vec2ForCTC / ForPreTraining / ForSequenceClassification, or a
# bare Wav2Vec2Model.
_PREFIXES = ("wav2vec2.", "")
# (weight_g, weight_v) of the positional conv: torch.nn.utils.parametrizations.weight_norm
# (transformers' current saves), torch.nn.utils.weight_norm (older checkpoints).
POS_CONV_SPELLINGS = {
    "parametrizations": ("parametrizations.weight.original0", "parametrizations.weight.original1"),
    "weight_norm": ("weight_g", "weight_v"),
}
_POS_CONV = "encoder.pos_conv_embed.conv."


def _pos_conv_g(g: np.ndarray) -> np.ndarray:
  """weight_norm's g `[1, 1, K]` (dim=2) -> `[K]`."""
  if g.ndim != 3 or g.shape[:2] != (1, 1):
    raise ValueError(f"a dim=2 weight-norm g must be [1, 1, K], got shape {g.shape}")
  return g.reshape(-1)


def name_map(config: Wav2Vec2Config, prefix: str = "", spelling: str = "parametrizations"
             ) -> list[weights.Mapping]:
  """The full encoder name map (Flax path <- torch key) under `prefix`, the positional conv's
  weight norm spelled as `spelling` (a `POS_CONV_SPELLINGS` key)."""
  extractor = f"{prefix}feature_extractor.conv_layers."
  out = []
  for i in range(len(config.conv_dim)):
    out += weights.convolution(f"feature_extractor/conv_{i}", f"{extractor}{i}.conv",
                               config.conv_bias)
    if config.feat_extract_norm == "layer" or i == 0:
      out += weights.norm(f"feature_extractor/norm_{i}", f"{extractor}{i}.layer_norm")
  g, v = POS_CONV_SPELLINGS[spelling]
  out += (weights.norm("projection_ln", f"{prefix}feature_projection.layer_norm")
          + weights.dense("projection", f"{prefix}feature_projection.projection")
          + [weights.Mapping("pos_conv/weight_g", prefix + _POS_CONV + g, _pos_conv_g),
             weights.Mapping("pos_conv/weight_v", prefix + _POS_CONV + v, weights.conv),
             weights.Mapping("pos_conv/bias", prefix + _POS_CONV + "bias")]
          + weights.norm("encoder_ln", f"{prefix}encoder.layer_norm"))
  block_map = {"query": "attention.q_proj", "key": "attention.k_proj",
               "value": "attention.v_proj", "out": "attention.out_proj",
               "mlp1": "feed_forward.intermediate_dense", "mlp2": "feed_forward.output_dense"}
  for i in range(config.num_hidden_layers):
    layer = f"{prefix}encoder.layers.{i}."
    for flax, torch in block_map.items():
      out += weights.dense(f"layers_{i}/{flax}", layer + torch)
    out += (weights.norm(f"layers_{i}/attn_ln", layer + "layer_norm")
            + weights.norm(f"layers_{i}/mlp_ln", layer + "final_layer_norm"))
  return out


def _read_state(path: str) -> weights.StateDict:
  """The state dict of a file, or of an HF folder (safetensors, else `pytorch_model.bin`)."""
  if os.path.isdir(path) and not any(
      f == "model.safetensors" or f.endswith(".safetensors.index.json") for f in os.listdir(path)):
    if os.path.exists(os.path.join(path, "pytorch_model.bin")):
      return weights.load_state_dict(os.path.join(path, "pytorch_model.bin"))
  return weights.load_state_dict(path)


def _detect(state: weights.StateDict, source: str) -> str:
  """The encoder key prefix of a wav2vec2 state dict."""
  for prefix in _PREFIXES:
    if (f"{prefix}feature_extractor.conv_layers.0.conv.weight" in state
        and f"{prefix}feature_projection.projection.weight" in state):
      return prefix
  raise weights.WeightImportError(
      f"{source}: no wav2vec2 encoder found (expected transformers keys like "
      "'feature_extractor.conv_layers.0.conv.weight', 'feature_projection.projection.weight', "
      "with or without the 'wav2vec2.' prefix)")


def _spelling(state: weights.StateDict, prefix: str) -> str:
  """Which weight-norm spelling the positional conv has (the current one if neither)."""
  for name, (g, _) in POS_CONV_SPELLINGS.items():
    if prefix + _POS_CONV + g in state:
      return name
  return "parametrizations"


def _indices(state: weights.StateDict, pattern: str) -> int:
  """1 + the largest index `(\\d+)` of `pattern` (a regex) among the keys, 0 if none."""
  found = [int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))]
  return max(found) + 1 if found else 0


def _checkpoint_dims(state: weights.StateDict, prefix: str) -> dict[str, Any]:
  """The config fields the tensors show (None where a tensor is missing); the head count,
  strides, eps and pre-/post-LN are not in any shape."""
  p = re.escape(prefix)
  n_conv = _indices(state, p + r"feature_extractor\.conv_layers\.(\d+)\..*")
  convs = [state.get(f"{prefix}feature_extractor.conv_layers.{i}.conv.weight")
           for i in range(n_conv)]
  known = all(w is not None and w.ndim == 3 for w in convs)
  norm = None
  if f"{prefix}feature_extractor.conv_layers.1.layer_norm.weight" in state:
    norm = "layer"
  elif n_conv > 1 and f"{prefix}feature_extractor.conv_layers.0.layer_norm.weight" in state:
    norm = "group"
  projection = state.get(f"{prefix}feature_projection.projection.weight")
  hidden = projection.shape[0] if projection is not None and projection.ndim == 2 else None
  mlp1 = state.get(f"{prefix}encoder.layers.0.feed_forward.intermediate_dense.weight")
  v = state.get(prefix + _POS_CONV + POS_CONV_SPELLINGS[_spelling(state, prefix)][1])
  pos = v is not None and v.ndim == 3 and hidden is not None and v.shape[1] > 0
  return dict(
      conv_dim=tuple(w.shape[0] for w in convs) if known else None,
      conv_kernel=tuple(w.shape[2] for w in convs) if known else None,
      conv_bias=f"{prefix}feature_extractor.conv_layers.0.conv.bias" in state,
      feat_extract_norm=norm, hidden_size=hidden,
      num_hidden_layers=_indices(state, p + r"encoder\.layers\.(\d+)\..*"),
      intermediate_size=mlp1.shape[0] if mlp1 is not None and mlp1.ndim == 2 else None,
      num_conv_pos_embeddings=v.shape[2] if pos else None,
      num_conv_pos_embedding_groups=hidden // v.shape[1] if pos else None)


# transformers config.json fields that change the computation and are fixed here:
# field -> (the one value this encoder computes, how to say it). A field absent means its
# transformers default, which is that value.
_TRANSFORMERS_FIXED: dict[str, tuple[Any, str]] = {
    "model_type": ("wav2vec2", "'wav2vec2'"),
    "hidden_act": ("gelu", "'gelu' (exact erf GELU)"),
    "feat_extract_activation": ("gelu", "'gelu' (exact erf GELU)"),
    "add_adapter": (False, "no adapter after the encoder"),
    "adapter_attn_dim": (None, "no per-layer attention adapters"),
    "position_embeddings_type": (None, "the convolutional position embedding only"),
}


def _transformers_metadata(path: str) -> Optional[Wav2Vec2Config]:
  """The config of an HF `config.json` in `path` (a folder) or next to it (a file)."""
  config_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(path),
                             "config.json")
  if not os.path.exists(config_path):
    return None
  with open(config_path) as f:
    hf = json.load(f)
  unsupported = [f"{key} = {hf[key]!r} (this encoder computes {said})"
                 for key, (value, said) in _TRANSFORMERS_FIXED.items()
                 if key in hf and hf[key] != value]
  if hf.get("feat_extract_norm", "group") not in FEAT_EXTRACT_NORMS:
    unsupported.append(f"feat_extract_norm = {hf['feat_extract_norm']!r} (this encoder computes "
                       f"one of {FEAT_EXTRACT_NORMS})")
  if unsupported:
    raise weights.WeightImportError(
        f"{config_path} asks for a wav2vec2 encoder this port does not compute: "
        + "; ".join(unsupported))
  defaults = CONFIGS["base"]  # transformers' Wav2Vec2Config defaults.
  try:
    return Wav2Vec2Config(**{f.name: hf.get(f.name, getattr(defaults, f.name))
                             for f in dataclasses.fields(Wav2Vec2Config)})
  except (TypeError, ValueError) as e:
    raise weights.WeightImportError(f"{config_path}: {e}") from None


def load_encoder(path: str, size: Union[None, str, Wav2Vec2Config] = None,
                 implementation: Optional[str] = None
                 ) -> tuple[Wav2Vec2Encoder, dict[str, Any]]:
  """Loads a wav2vec2 encoder from an HF folder or safetensors file.

  Args:
    path: an HF folder (`facebook/wav2vec2-base-960h`: `config.json` and `model.safetensors`,
      sharded safetensors or `pytorch_model.bin`), or a `.safetensors` / `.bin` file (its
      `config.json`, if any, beside it). `Wav2Vec2Model` keys, or `wav2vec2.`-prefixed ones of
      `Wav2Vec2ForCTC` / `Wav2Vec2ForPreTraining` (their heads are ignored).
    size: a `CONFIGS` name or a `Wav2Vec2Config`; by default the checkpoint's `config.json`,
      else the named config whose dims the tensors have.
    implementation: the attention kernel (`gcm_jax.models.attention.attend`).

  Returns:
    (module, params): `module.apply({"params": params}, waveform)`.

  Raises:
    WeightImportError: not a wav2vec2 checkpoint, a `config.json` field this port does not
      compute, dims that do not fit `size` or `config.json`, or missing / unexpected /
      mis-shaped tensors (all listed).
    ValueError: an unknown `size` name.
  """
  state = _read_state(path)
  prefix = _detect(state, path)
  config = named_configs.resolve(
      "wav2vec2", CONFIGS, _checkpoint_dims(state, prefix), size, _transformers_metadata(path),
      path, "there is no config.json for the rest (heads, strides, pre-/post-LN); pass "
      "size=Wav2Vec2Config(...)", "config.json")
  module = Wav2Vec2Encoder(config, implementation)
  expected = weights.expected_params(module, np.zeros((1, receptive_field(config)), np.float32))
  ignore = [re.escape(prefix) + "masked_spec_embed"]  # SpecAugment's mask vector (training).
  if prefix:
    ignore.append(f"(?!{re.escape(prefix)}).*")  # Heads: lm_head, quantizer, project_q, ...
  params = weights.import_params(state, name_map(config, prefix, _spelling(state, prefix)),
                                 expected, ignore=ignore, source=path)
  return module, params


# --- frame features --------------------------------------------------------------------------

# Which hidden states each feature frame contributes: name -> encoder outputs -> [B, L, n, D].
LAYERS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "blocks": lambda final, hidden: hidden,  # Hallo (features: all): hidden_states[1:].
    "final": lambda final, hidden: final[:, :, None],  # last_hidden_state.
}


def _check_layers(layers: str) -> None:
  if layers not in LAYERS:
    raise ValueError(f"unknown layers {layers!r}; expected one of {sorted(LAYERS)}")


def layers_per_frame(config: Wav2Vec2Config, layers: str) -> int:
  """Hidden states per feature frame for `layers` (`num_hidden_layers` or 1)."""
  _check_layers(layers)
  return config.num_hidden_layers if layers == "blocks" else 1


def window_shape(config: Wav2Vec2Config, context: int = 2, layers: str = "blocks"
                 ) -> tuple[int, int]:
  """`(W, D)` of `frame_features`: `W = (2 context + 1) * layers_per_frame`, D = hidden_size."""
  return (2 * context + 1) * layers_per_frame(config, layers), config.hidden_size


def normalize(audio: np.ndarray) -> np.ndarray:
  """`Wav2Vec2FeatureExtractor(do_normalize=True)`: float32 `(x - mean) / sqrt(var + 1e-7)`."""
  x = np.asarray(audio, np.float32)
  return (x - x.mean()) / np.sqrt(x.var() + NORMALIZE_EPS)


def hallo_num_frames(num_samples: int, fps: float = 25) -> int:
  """Hallo's `seq_len` of a 16 kHz clip: `ceil(N / 16000 * fps)`, in float64 as Hallo computes
  it (so 7 * 640 samples at 25 fps give 8)."""
  return math.ceil(num_samples / SAMPLE_RATE * fps)


@functools.partial(jax.jit, static_argnames=("module", "num_frames", "layers"))
def encode(module: Wav2Vec2Encoder, params: Any, waveform: jax.Array,
           num_frames: Optional[int] = None, layers: str = "blocks") -> jax.Array:
  """Features of waveforms `[B, N]` (already normalised) -> `[B, L', n, D]`."""
  return LAYERS[layers](*module.apply({"params": params}, waveform, num_frames))


def frame_window_indices(num_features: int, num_video_frames: int, context: int = 2
                         ) -> np.ndarray:
  """Feature frames of each video frame's window: int `[T, 2 context + 1]`, frame `i` taking
  `[i - context, i + context]` clamped to `[0, num_features)` (Hallo's `process_audio_emb`)."""
  if num_features < 1:
    raise ValueError(f"need at least one feature frame, got {num_features}")
  offsets = np.arange(-context, context + 1)
  return np.clip(np.arange(num_video_frames)[:, None] + offsets[None, :], 0, num_features - 1)


def frame_features(module: Wav2Vec2Encoder, params: Any, audio_16k: np.ndarray,
                   num_video_frames: int, fps: float = 25, context: int = 2,
                   layers: str = "blocks") -> np.ndarray:
  """Per-video-frame wav2vec2 feature windows, Hallo's convention (see the module docstring).

  Args:
    module, params: from `load_encoder` (or `random_encoder`).
    audio_16k: mono float audio `[N]` at 16 kHz, any length (encoded whole), raw: it is
      normalised here as `Wav2Vec2FeatureExtractor(do_normalize=True)` does.
    num_video_frames: T. The clip is encoded at `max(T, hallo_num_frames(N, fps))` steps
      (zero-padded first if T is larger, as Hallo pads to whole clips).
    fps: video frame rate.
    context: video frames of context on each side.
    layers: `"blocks"` (Hallo) or `"final"`, see `LAYERS`.

  Returns:
    float32 `[T, W, D]`, `(W, D) = window_shape(module.config, context, layers)`, ordered
    frame-major, layer-minor.
  """
  _check_layers(layers)
  audio = np.asarray(audio_16k, np.float32)
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono [num_samples], got shape {audio.shape}")
  if num_video_frames < 1:
    raise ValueError(f"need at least one video frame, got {num_video_frames}")
  waveform = normalize(audio)
  seq_len = hallo_num_frames(audio.size, fps)
  if num_video_frames > seq_len:
    pad = (num_video_frames - seq_len) * int(SAMPLE_RATE // fps)
    waveform = np.concatenate([waveform, np.zeros(pad, np.float32)])
    seq_len = num_video_frames
  features = encode(module, params, waveform[None], seq_len, layers)[0]  # [seq_len, n, D]
  idx = frame_window_indices(seq_len, num_video_frames, context)
  return np.asarray(features[idx].reshape(num_video_frames, -1, features.shape[-1]), np.float32)
