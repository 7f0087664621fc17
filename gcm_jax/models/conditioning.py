"""Which batch features carry the caption and the voice into the STDiT, per encoder choice.

`model.text_encoder` names how the caption is encoded:
  'bytes': the model's own byte-token encoder, trained with it; batch 'text_tokens' int
    `[B, L]` + 'text_mask' bool `[B, L]`.
  a pretrained encoder ('minilm', 't5', 'clip'; `gcm_jax.models.pretrained.text_encoders`):
    frozen, run once per caption outside the model; batch 'text_embeddings' float
    `[B, L, E]` + 'text_mask'.
`model.audio_encoder` names how the voice is encoded:
  'mel': log-mel windows encoded by the model's own trained layers, batch 'mel' float
    `[B, T, mel_window, num_mels]`.
  a frozen pretrained encoder ('whisper', 'wav2vec2';
    `gcm_jax.models.pretrained.audio_encoders`): its feature window around each video frame,
    computed outside the model, batch `<encoder name>` float `[B, T, W, D]`.
The SyncNet (lip-sync loss, metrics) always reads 'mel'.
"""
from typing import Any, Callable, Mapping, Optional

from gcm_jax.models.pretrained import audio_encoders
from gcm_jax.models.pretrained import text_encoders

BYTE_TEXT = "bytes"
PRETRAINED_TEXT_KEYS = ("text_embeddings", "text_mask")
# model.text_encoder -> its batch keys; the pretrained names are text_encoders.ENCODERS'.
TEXT_KEYS = {BYTE_TEXT: ("text_tokens", "text_mask"),
             **{name: PRETRAINED_TEXT_KEYS for name in text_encoders.ENCODERS}}
MEL = "mel"
# model.audio_encoder -> the batch key of its windows (a frozen encoder's is its name).
AUDIO_KEYS = {MEL: MEL, **{name: name for name in audio_encoders.ENCODERS}}


def text_keys(model: Mapping[str, Any]) -> tuple[str, str]:
  """('text_tokens' | 'text_embeddings', 'text_mask') for `config.model` (`TEXT_KEYS`)."""
  name = model.get("text_encoder", BYTE_TEXT)
  if name not in TEXT_KEYS:
    raise ValueError(f"unknown text_encoder {name!r}; expected one of {tuple(TEXT_KEYS)}")
  return TEXT_KEYS[name]


def audio_key(model: Mapping[str, Any]) -> str:
  """The batch key of the per-frame audio windows the model reads (`AUDIO_KEYS`)."""
  name = model.get("audio_encoder", MEL)
  if name not in AUDIO_KEYS:
    raise ValueError(f"unknown audio_encoder {name!r}; expected one of {tuple(AUDIO_KEYS)}")
  return AUDIO_KEYS[name]


def identity_keys(model: Mapping[str, Any]) -> tuple[str, ...]:
  """The batch features of the person's conditions: 'reference' (`reference_frames` > 0)
  and 'source_mask' (`masked_source`)."""
  return ((("reference",) if model.get("reference_frames", 0) else ())
          + (("source_mask",) if model.get("masked_source", False) else ()))


def identity_cond(model: Mapping[str, Any], batch: Mapping[str, Any], source: Any
                  ) -> dict[str, Any]:
  """The model's person conditions from a batch: 'reference' `[B, K, H, W, C]` as the batch
  has it and, for dubbing, 'source' = `source` `[B, T, H, W, C]` (the frames to re-voice)
  with 'source_mask' `[B, T, H, W, 1]` float from the batch's bool `[B, T, H, W]` (the model
  zeroes the source inside it). Empty for a model without them."""
  out = {}
  if model.get("reference_frames", 0):
    out["reference"] = batch["reference"]
  if model.get("masked_source", False):
    out["source"] = source
    out["source_mask"] = batch["source_mask"].astype(source.dtype)[..., None]
  return out


def known_source(diffusion: Mapping[str, Any]
                 ) -> Optional[Callable[[Mapping[str, Any]], tuple[Any, Any]]]:
  """With `diffusion.keep_source` (a dubbing run), `cond -> (source [B, T, H, W, C], keep
  [B, T, H, W, 1])`, keep = 1 - 'source_mask': the denoiser's x0 outside the dubbing mask is
  the source itself (`parameterization.KnownFn`), so the network draws only the mouth area.
  None otherwise."""
  if not diffusion.get("keep_source", False):
    return None
  return lambda cond: (cond["source"], 1 - cond["source_mask"])


def cond_keys(model: Mapping[str, Any]) -> tuple[str, ...]:
  """The batch features the model's `cond` takes from a batch (text, mask, audio)."""
  return text_keys(model) + (audio_key(model),)
