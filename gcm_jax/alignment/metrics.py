"""Audio-visual sync metrics (LSE-D, LSE-C, AV offset), the synthetic-data oracle metric, and
the text-video alignment score.

LSE-D / LSE-C / offset are syncnet_python's read-out of SyncNet embeddings
(`gcm_jax.models.sync_offsets`); this module adds the synthetic-data oracle and the scores
used to train and judge the contrastive models.
"""
from typing import Dict

import jax
import jax.numpy as jnp

from gcm_jax.alignment import contrastive
from gcm_jax.models import syncnet as syncnet_lib


# Oracle metric: the synthetic renderer (gcm_jax/data/talking_faces/renderer.py) paints the
# open mouth in this RGB; its area in the lower half of the frame is ~ linear in the openness.
MOUTH_INSIDE_RGB = (50, 10, 20)
MOUTH_COLOR_TOL = 0.2          # max-abs color distance in [-1, 1] units (~25/255)
AREA_PER_OPENNESS = 0.058      # lower-half area per unit openness (fit on 32/64 px renders)


def mouth_area(video: jax.Array) -> jax.Array:
  """Fraction of lower-half pixels painted in the renderer's mouth-interior color.

  Args:
    video: [B, T, H, W, 3] in [-1, 1].
  Returns:
    [B, T] area fractions in [0, 1].
  """
  if video.ndim != 5 or video.shape[-1] != 3:
    raise ValueError(f"video must be [B, T, H, W, 3], got {tuple(video.shape)}")
  inside = jnp.asarray(MOUTH_INSIDE_RGB, jnp.float32) / 127.5 - 1.0
  dist = jnp.max(jnp.abs(syncnet_lib.lower_half(video) - inside), axis=-1)
  return jnp.mean((dist < MOUTH_COLOR_TOL).astype(jnp.float32), axis=(2, 3))


def oracle_lipsync(video: jax.Array, mouth_open: jax.Array) -> Dict[str, jax.Array]:
  """Oracle lip-sync metric on the synthetic talking faces.

  The audio's phonemes determine a per-frame mouth openness (dataset key 'mouth_open', from
  the viseme track); the generated frames' openness is measured from the mouth area. On
  ground-truth renders the correlation is ~0.96 at 32 px and ~0.98 at 64 px.

  Args:
    video: [B, T, H, W, 3] generated frames in [-1, 1].
    mouth_open: [B, T] openness (0 closed .. 1 wide open) implied by the driving audio.

  Returns:
    {'mouth_corr': [B] Pearson correlation over time of measured area vs openness (0 when
     either is constant), 'mouth_mae': [B] mean |area / AREA_PER_OPENNESS - openness|}.
  """
  if mouth_open.shape != video.shape[:2]:
    raise ValueError(f"mouth_open must be [B, T]={tuple(video.shape[:2])}, got "
                     f"{tuple(mouth_open.shape)}")
  area = mouth_area(video)
  x = area - jnp.mean(area, axis=1, keepdims=True)
  y = mouth_open - jnp.mean(mouth_open, axis=1, keepdims=True)
  denom = jnp.sqrt(jnp.sum(x * x, axis=1) * jnp.sum(y * y, axis=1))
  corr = jnp.where(denom > 0, jnp.sum(x * y, axis=1) / jnp.where(denom > 0, denom, 1.0), 0.0)
  mae = jnp.mean(jnp.abs(area / AREA_PER_OPENNESS - mouth_open), axis=1)
  return {"mouth_corr": corr, "mouth_mae": mae}


def sync_accuracy(video_emb: jax.Array, audio_emb: jax.Array, label: jax.Array,
                  threshold: float = 0.5) -> jax.Array:
  """In-sync vs off-sync pair classification accuracy with p = cos(v, a) > threshold.

  Args:
    video_emb, audio_emb: [N, D] unit embeddings of N pairs; label: [N] 1 in sync, 0 off.
  Returns:
    Scalar fraction of correctly classified pairs.
  """
  cos = jnp.sum(video_emb * audio_emb, axis=-1)
  return jnp.mean(((cos > threshold) == (label > 0.5)).astype(jnp.float32))


def text_video_score(text_emb: jax.Array, video_emb: jax.Array) -> jax.Array:
  """CLIPScore-style text-video alignment: 100 * max(cos(text, video), 0) per pair.

  Args:
    text_emb, video_emb: [B, D] embeddings from the contrastive text-video model
      (`gcm_jax.alignment.contrastive.TextVideoCLIP`).
  Returns:
    [B] scores in [0, 100].
  """
  cos = jnp.sum(contrastive.l2_normalize(text_emb) * contrastive.l2_normalize(video_emb), -1)
  return 100.0 * jnp.maximum(cos, 0.0)
