"""Whisper's audio encoder in Flax, its weight import, and per-video-frame feature windows.

Model (openai-whisper `model.AudioEncoder` = transformers' `WhisperEncoder`): log-mel
`[B, 3000, n_mels]` -> conv1 (k3, s1) + GELU -> conv2 (k3, s2) + GELU -> + sinusoidal
positions `[1500, D]` -> `n_audio_layer` pre-LN residual blocks (self-attention whose key
projection has no bias, then a GELU MLP of width `n_audio_mlp`, 4D in every openai-whisper
checkpoint; LayerNorm eps 1e-5, exact erf GELU) -> ln_post -> `[B, 1500, D]`: 50 feature
frames per second.

Weights: `load_encoder` reads an openai-whisper `.pt` (`{"dims", "model_state_dict"}`,
keys `encoder.blocks.N.attn.query.weight`, ...) or an HF `openai/whisper-*` safetensors
file / folder (keys `model.encoder.layers.N.self_attn.q_proj.weight`, ..., with or without
`model.`) through `gcm_jax.weights`; decoder keys are ignored. Every dimension comes from the
checkpoint (its `dims` or `config.json`: mel bins, positions, width, heads, layers and MLP
width, checked against the tensors' shapes); metadata asking for what this encoder does not
compute (another activation, heads that do not split the width, dims lacking a field) is
refused with the field named. Nothing is downloaded: users fetch e.g. openai-whisper's
`tiny.pt` or the HF `openai/whisper-tiny` folder themselves.

Frame features (`frame_features`), LatentSync's convention
(`latentsync/whisper/audio2feature.py`): the audio is encoded in consecutive 30 s windows
(the last zero-padded, features trimmed to the real length `N // 320`), and video frame `i`
at `fps` takes feature frames `[c - 2k, c + 2k + 2)` with `c = int(i * 50 / fps)`, indices
clamped to the clip, each frame contributing the hidden states of `layers`:
`"blocks"` (LatentSync: the input of the first block and the output of every block, without
ln_post, `n_audio_layer + 1` vectors per frame) or `"final"` (the ln_post output, 1).
One difference: LatentSync pads the last window with 0 in the normalized log-mel; here the
audio is zero-padded before the mel (Whisper's `pad_or_trim`), so the tail is Whisper's
silence floor.
"""
import dataclasses
import functools
import json
import os
from typing import Any, Callable, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import weights
from gcm_jax.models import attention
from gcm_jax.models.pretrained import named_configs
from gcm_jax.models.pretrained import whisper_mel


FEATURES_PER_SECOND = 50  # Encoder frames per second (conv2 halves the 100 Hz mel).
SAMPLES_PER_FEATURE = whisper_mel.SAMPLE_RATE // FEATURES_PER_SECOND  # 320


@dataclasses.dataclass(frozen=True)
class WhisperConfig:
  """The encoder half of openai-whisper's `ModelDimensions`, plus the MLP width
  (transformers' `encoder_ffn_dim`; 0 means openai-whisper's 4 x n_audio_state)."""
  n_mels: int
  n_audio_ctx: int
  n_audio_state: int
  n_audio_head: int
  n_audio_layer: int
  n_audio_mlp: int = 0

  def __post_init__(self):
    if not self.n_audio_mlp:
      object.__setattr__(self, "n_audio_mlp", 4 * self.n_audio_state)


CONFIGS: dict[str, WhisperConfig] = {
    "tiny": WhisperConfig(80, 1500, 384, 6, 4),
    "base": WhisperConfig(80, 1500, 512, 8, 6),
    "small": WhisperConfig(80, 1500, 768, 12, 12),
    "medium": WhisperConfig(80, 1500, 1024, 16, 24),
    "large-v2": WhisperConfig(80, 1500, 1280, 20, 32),
    "large-v3": WhisperConfig(128, 1500, 1280, 20, 32),
}


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's positional embedding `[length, channels]` (float32, computed as torch does)."""
  increment = np.log(max_timescale) / (channels // 2 - 1)
  inv_timescales = np.exp(np.float32(-increment) * np.arange(channels // 2, dtype=np.float32))
  scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
  return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class ResidualAttentionBlock(nn.Module):
  """Pre-LN self-attention + MLP block, `[B, L, D]` -> `[B, L, D]`."""
  num_heads: int
  mlp_width: int
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, length, d = x.shape
    h = nn.LayerNorm(epsilon=1e-5, name="attn_ln")(x)
    heads = lambda y: y.reshape(b, length, self.num_heads, d // self.num_heads)
    q = heads(nn.Dense(d, name="query")(h))
    k = heads(nn.Dense(d, use_bias=False, name="key")(h))
    v = heads(nn.Dense(d, name="value")(h))
    out = attention.attend(q, k, v, implementation=self.implementation)
    x = x + nn.Dense(d, name="out")(out.reshape(b, length, d))
    h = nn.LayerNorm(epsilon=1e-5, name="mlp_ln")(x)
    h = nn.Dense(self.mlp_width, name="mlp1")(h)
    return x + nn.Dense(d, name="mlp2")(nn.gelu(h, approximate=False))


class WhisperEncoder(nn.Module):
  """Whisper's audio encoder: log-mel `[B, 2 n_audio_ctx, n_mels]` -> features.

  Returns:
    (final `[B, n_audio_ctx, D]` after ln_post, hidden `[B, n_audio_ctx, n_audio_layer + 1,
    D]`: the first block's input and every block's output, before ln_post).
  """
  config: WhisperConfig
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
    c = self.config
    if mel.shape[1:] != (2 * c.n_audio_ctx, c.n_mels):
      raise ValueError(f"Whisper takes log-mel [B, {2 * c.n_audio_ctx}, {c.n_mels}] "
                       f"(30 s), got {mel.shape}")
    conv = functools.partial(nn.Conv, c.n_audio_state, kernel_size=(3,), padding=((1, 1),))
    x = nn.gelu(conv(name="conv1")(mel), approximate=False)
    x = nn.gelu(conv(strides=(2,), name="conv2")(x), approximate=False)
    positions = self.param("positional_embedding",
                           lambda _: jnp.asarray(sinusoids(c.n_audio_ctx, c.n_audio_state)))
    x = x + positions
    hidden = [x]
    for i in range(c.n_audio_layer):
      x = ResidualAttentionBlock(c.n_audio_head, c.n_audio_mlp, self.implementation,
                                 name=f"blocks_{i}")(x)
      hidden.append(x)
    return nn.LayerNorm(epsilon=1e-5, name="ln_post")(x), jnp.stack(hidden, axis=2)


# --- weight import ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Format:
  """One checkpoint naming scheme: per-block torch names and the encoder-level ones."""
  block: str  # Torch prefix of block i (relative to the encoder prefix), with {i}.
  block_map: dict[str, tuple[str, bool]]  # Flax sublayer -> (torch sublayer, has bias).
  block_norms: dict[str, str]  # Flax norm -> torch norm.
  ln_post: str
  positions: str  # Torch key (relative) of the [n_ctx, D] positional embedding.

  def name_map(self, prefix: str, n_layer: int) -> list[weights.Mapping]:
    """The full encoder name map under `prefix` for `n_layer` blocks."""
    out = (weights.convolution("conv1", f"{prefix}conv1")
           + weights.convolution("conv2", f"{prefix}conv2")
           + [weights.Mapping("positional_embedding", prefix + self.positions)]
           + weights.norm("ln_post", prefix + self.ln_post))
    for i in range(n_layer):
      torch_block = prefix + self.block.format(i=i)
      for flax, (torch, bias) in self.block_map.items():
        out += weights.dense(f"blocks_{i}/{flax}", torch_block + torch, bias)
      for flax, torch in self.block_norms.items():
        out += weights.norm(f"blocks_{i}/{flax}", torch_block + torch)
    return out


FORMATS: dict[str, _Format] = {
    "openai-whisper": _Format(
        block="blocks.{i}.",
        block_map={"query": ("attn.query", True), "key": ("attn.key", False),
                   "value": ("attn.value", True), "out": ("attn.out", True),
                   "mlp1": ("mlp.0", True), "mlp2": ("mlp.2", True)},
        block_norms={"attn_ln": "attn_ln", "mlp_ln": "mlp_ln"},
        ln_post="ln_post", positions="positional_embedding"),
    "transformers": _Format(
        block="layers.{i}.",
        block_map={"query": ("self_attn.q_proj", True), "key": ("self_attn.k_proj", False),
                   "value": ("self_attn.v_proj", True), "out": ("self_attn.out_proj", True),
                   "mlp1": ("fc1", True), "mlp2": ("fc2", True)},
        block_norms={"attn_ln": "self_attn_layer_norm", "mlp_ln": "final_layer_norm"},
        ln_post="layer_norm", positions="embed_positions.weight"),
}
# Where the encoder sits: WhisperForConditionalGeneration, openai-whisper / WhisperModel,
# a bare WhisperEncoder.
_PREFIXES = ("model.encoder.", "encoder.", "")


def _detect(state: weights.StateDict, source: str) -> tuple[str, str]:
  """(format name, encoder key prefix) of a Whisper state dict."""
  for prefix in _PREFIXES:
    for name, fmt in FORMATS.items():
      if (f"{prefix}conv1.weight" in state
          and prefix + fmt.block.format(i=0) + fmt.block_map["query"][0] + ".weight" in state):
        return name, prefix
  raise weights.WeightImportError(
      f"{source}: no Whisper encoder found (expected openai-whisper keys like "
      "'encoder.conv1.weight', 'encoder.blocks.0.attn.query.weight' or transformers keys like "
      "'model.encoder.conv1.weight', 'model.encoder.layers.0.self_attn.q_proj.weight')")


def _checkpoint_dims(state: weights.StateDict, fmt: _Format, prefix: str) -> dict[str, int]:
  """The dims the tensors show (all but the head count, which shapes do not reveal)."""
  n_state, n_mels, _ = state[f"{prefix}conv1.weight"].shape
  n_layer = 0
  while f"{prefix}{fmt.block.format(i=n_layer)}{fmt.block_map['query'][0]}.weight" in state:
    n_layer += 1
  n_ctx = state[prefix + fmt.positions].shape[0] if prefix + fmt.positions in state else None
  mlp1 = f"{prefix}{fmt.block.format(i=0)}{fmt.block_map['mlp1'][0]}.weight"
  n_mlp = state[mlp1].shape[0] if mlp1 in state else None
  return dict(n_mels=n_mels, n_audio_ctx=n_ctx, n_audio_state=n_state, n_audio_layer=n_layer,
              n_audio_mlp=n_mlp)


def _refuse(source: str, problems: list[str]) -> None:
  """Raises a WeightImportError naming every problem of `source`'s metadata, if any."""
  if problems:
    raise weights.WeightImportError(
        f"{source} asks for a Whisper encoder this port does not compute: "
        + "; ".join(problems))


def _heads_problems(width_field: str, width: int, heads_field: str, heads: int) -> list[str]:
  """["..."] if `width` does not split into `heads` equal heads, else []."""
  if heads > 0 and width % heads == 0:
    return []
  return [f"{width_field} = {width} is not a multiple of {heads_field} = {heads}"]


def _openai_metadata(path: str) -> Optional[WhisperConfig]:
  """The encoder dims stored in an openai-whisper `.pt` (`{"dims": ...}`), if any.

  Raises:
    weights.WeightImportError: dims lacking an encoder field, or heads that do not split
      n_audio_state; every such field named.
  """
  if os.path.isdir(path) or path.endswith(".safetensors"):
    return None
  import torch  # pylint: disable=import-outside-toplevel  (load_state_dict needed it too)
  obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
  dims = obj.get("dims") if isinstance(obj, dict) else None
  if not isinstance(dims, dict):
    return None
  # n_audio_mlp is no ModelDimensions field: openai-whisper's MLP is 4 x n_audio_state.
  required = [f.name for f in dataclasses.fields(WhisperConfig) if f.name != "n_audio_mlp"]
  _refuse(f"{path} (dims)", [f"{name} missing" for name in required if name not in dims])
  config = WhisperConfig(**{f.name: int(dims[f.name]) for f in dataclasses.fields(WhisperConfig)
                            if f.name in dims})
  _refuse(f"{path} (dims)", _heads_problems("n_audio_state", config.n_audio_state,
                                            "n_audio_head", config.n_audio_head))
  return config


# transformers' WhisperConfig field (and its default) of each encoder dim; the other fields
# either do not touch the encoder (decoder sizes, scale_embedding: the encoder never scales)
# or only act in training (dropouts, layerdrop, SpecAugment). LayerNorm eps is not
# configurable (torch's 1e-5), nor are the convolutions' GELUs.
_TRANSFORMERS_FIELDS = {
    "n_mels": ("num_mel_bins", 80), "n_audio_ctx": ("max_source_positions", 1500),
    "n_audio_state": ("d_model", 384), "n_audio_head": ("encoder_attention_heads", 6),
    "n_audio_layer": ("encoder_layers", 4), "n_audio_mlp": ("encoder_ffn_dim", 1536)}
# transformers' WhisperConfig fields that change the encoder's computation and are fixed here.
_TRANSFORMERS_FIXED = {"activation_function": "gelu"}


def _transformers_metadata(path: str) -> Optional[WhisperConfig]:
  """The encoder dims of an HF `config.json` in `path` (a folder) or next to it (a file);
  missing fields take transformers' WhisperConfig defaults.

  Raises:
    weights.WeightImportError: an activation this port does not compute, or heads that do not
      split d_model; every such field named.
  """
  config_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(path),
                             "config.json")
  if not os.path.exists(config_path):
    return None
  with open(config_path) as f:
    hf = json.load(f)
  config = WhisperConfig(**{field: hf.get(key, default)
                            for field, (key, default) in _TRANSFORMERS_FIELDS.items()})
  _refuse(config_path, [f"{key} = {hf[key]!r} (this encoder computes {value!r})"
                        for key, value in _TRANSFORMERS_FIXED.items()
                        if key in hf and hf[key] != value]
          + _heads_problems("d_model", config.n_audio_state,
                            "encoder_attention_heads", config.n_audio_head))
  return config


_METADATA: dict[str, Callable[[str], Optional[WhisperConfig]]] = {
    "openai-whisper": _openai_metadata, "transformers": _transformers_metadata}


def load_encoder(path: str, size: Union[None, str, WhisperConfig] = None,
                 implementation: Optional[str] = None) -> tuple[WhisperEncoder, dict[str, Any]]:
  """Loads a Whisper encoder from an openai-whisper `.pt` or an HF safetensors file/folder.

  Args:
    path: openai-whisper checkpoint (`tiny.pt`, ...), or HF `model.safetensors` or its folder
      (`openai/whisper-tiny`); the decoder weights in it are ignored.
    size: a `CONFIGS` name or a `WhisperConfig`; by default the checkpoint's `dims` (`.pt`)
      or `config.json` (HF), else the named config whose dims the tensors have.
    implementation: the attention kernel (`gcm_jax.models.attention.attend`).

  Returns:
    (module, params): `module.apply({"params": params}, mel)`.

  Raises:
    WeightImportError: not a Whisper checkpoint, dims that do not fit `size` or the
      checkpoint's metadata, or missing / unexpected / mis-shaped tensors (all listed).
    ValueError: an unknown `size` name.
  """
  state = weights.load_state_dict(path)
  format_name, prefix = _detect(state, path)
  fmt = FORMATS[format_name]
  found = _checkpoint_dims(state, fmt, prefix)
  config = named_configs.resolve(
      "Whisper", CONFIGS, found, size, _METADATA[format_name](path), path,
      "the checkpoint names no head count; pass size=WhisperConfig(...)", "dims")
  module = WhisperEncoder(config, implementation)
  expected = weights.expected_params(
      module, np.zeros((1, 2 * config.n_audio_ctx, config.n_mels), np.float32))
  outside = [f"(?!{prefix.replace('.', '[.]')}).*"] if prefix else []
  params = weights.import_params(state, fmt.name_map(prefix, config.n_audio_layer), expected,
                                 ignore=outside, source=path)
  return module, params


def random_encoder(size: str, seed: int) -> tuple[WhisperEncoder, dict[str, Any]]:
  """A `CONFIGS[size]` encoder with seeded random weights (ablations and tests)."""
  if size not in CONFIGS:
    raise ValueError(f"unknown Whisper size {size!r}; expected one of {sorted(CONFIGS)}")
  module = WhisperEncoder(CONFIGS[size])
  mel = np.zeros((1, 2 * module.config.n_audio_ctx, module.config.n_mels), np.float32)
  return module, jax.jit(module.init)(jax.random.key(seed), mel)["params"]


# --- frame features --------------------------------------------------------------------------

# Which hidden states each feature frame contributes: name -> encoder outputs -> [B, L, n, D].
LAYERS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "blocks": lambda final, hidden: hidden,  # LatentSync / MuseTalk.
    "final": lambda final, hidden: final[:, :, None],
}


def _check_layers(layers: str) -> None:
  if layers not in LAYERS:
    raise ValueError(f"unknown layers {layers!r}; expected one of {sorted(LAYERS)}")


def layers_per_frame(config: WhisperConfig, layers: str) -> int:
  """Hidden states per feature frame for `layers` (`n_audio_layer + 1` or 1)."""
  _check_layers(layers)
  return config.n_audio_layer + 1 if layers == "blocks" else 1


def window_shape(config: WhisperConfig, context: int = 2, layers: str = "blocks"
                 ) -> tuple[int, int]:
  """`(W, D)` of `frame_features`: `W = 2 (2 context + 1) * layers_per_frame`, `D` the width."""
  return 2 * (2 * context + 1) * layers_per_frame(config, layers), config.n_audio_state


@functools.partial(jax.jit, static_argnames=("module", "layers"))
def encode(module: WhisperEncoder, params: Any, mel: jax.Array, layers: str = "blocks"
           ) -> jax.Array:
  """Features of 30 s log-mel windows `[B, 3000, n_mels]` -> `[B, 1500, n, D]`."""
  return LAYERS[layers](*module.apply({"params": params}, mel))


def whisper_features(module: WhisperEncoder, params: Any, audio_16k: np.ndarray,
                     layers: str = "blocks") -> jax.Array:
  """50 Hz features of a clip of any length: `[N]` samples -> `[N // 320, n, D]`.

  The clip is zero-padded to whole 30 s windows, its log-mel taken at once (one floor for
  the clip) and cut into windows encoded one at a time (one compiled shape for any length);
  the features are concatenated and trimmed to the real length.
  """
  _check_layers(layers)
  audio = np.asarray(audio_16k, np.float32)
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono [num_samples], got shape {audio.shape}")
  mel = whisper_mel.log_mel_spectrogram(whisper_mel.pad_to_windows(audio),
                                        n_mels=module.config.n_mels)
  windows = mel.reshape(-1, 1, whisper_mel.N_FRAMES, module.config.n_mels)
  features = jnp.concatenate([encode(module, params, w, layers)[0] for w in windows])
  return features[:audio.shape[0] // SAMPLES_PER_FEATURE]


def frame_window_indices(num_features: int, num_video_frames: int, fps: float = 25,
                         context: int = 2) -> np.ndarray:
  """Feature frames of each video frame's window: int `[T, 2 (2 context + 1)]`.

  Frame `i` takes `[c - 2 context, c + 2 context + 2)` with `c = int(i * 50 / fps)`, clamped
  to `[0, num_features)` (LatentSync's `get_sliced_feature`).
  """
  if num_features < 1:
    raise ValueError(f"need at least one feature frame, got {num_features}")
  centers = (np.arange(num_video_frames) * (FEATURES_PER_SECOND / fps)).astype(np.int64)
  offsets = np.arange(-2 * context, 2 * context + 2)
  return np.clip(centers[:, None] + offsets[None, :], 0, num_features - 1)


def frame_features(module: WhisperEncoder, params: Any, audio_16k: np.ndarray,
                           num_video_frames: int, fps: float = 25, context: int = 2,
                           layers: str = "blocks") -> jax.Array:
  """Per-video-frame Whisper feature windows, LatentSync's convention.

  Args:
    module, params: from `load_encoder` (or `WhisperEncoder(...).init`).
    audio_16k: mono float audio `[N]` at 16 kHz, any length (30 s windows inside).
    num_video_frames: T; frames past the audio repeat its last feature frame.
    fps: video frame rate.
    context: k, video frames of context on each side.
    layers: `"blocks"` (LatentSync) or `"final"`, see `LAYERS`.

  Returns:
    float32 `[T, W, D]`, `(W, D) = window_shape(module.config, context, layers)`, ordered
    feature-frame major, layer minor (LatentSync's `reshape(-1, D)`).
  """
  features = whisper_features(module, params, audio_16k, layers)
  idx = frame_window_indices(features.shape[0], num_video_frames, fps, context)
  return features[idx].reshape(num_video_frames, -1, features.shape[-1])
