"""The synthetic talking faces' ground truth read back from pixels: the caption's colors
(`read_colors`, `color_accuracy`) and the audio-driven mouth opening (`oracle_lipsync`), the
`GroundTruth` hooks of the dataset's registry entry (`talking_faces.dataset`).

Both read what the renderer (`renderer.py`) paints: the face and background in caption
palette colors, the open mouth in one interior color whose area in the lower half of the
frame is ~ linear in the openness.
"""
from typing import Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import keypoint_maps
from gcm_jax.models import syncnet as syncnet_lib


def nearest_color(rgb: np.ndarray) -> np.ndarray:
  """Palette index of the nearest caption color to `rgb` `[..., 3]` in [-1, 1]."""
  palette = captions.COLOR_RGB.astype(np.float32) / 127.5 - 1.0
  return np.argmin(np.linalg.norm(rgb[..., None, :] - palette, axis=-1), axis=-1)


BACKGROUND_BORDER = 2  # pixels: the image border read_colors takes the background from


def border_mask(resolution: int) -> np.ndarray:
  """Bool `[R, R]`: the `BACKGROUND_BORDER`-pixel image border (the background read-out)."""
  border = np.ones((resolution, resolution), bool)
  border[BACKGROUND_BORDER:-BACKGROUND_BORDER, BACKGROUND_BORDER:-BACKGROUND_BORDER] = False
  return border


def read_colors(video: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(face, background) palette indices `[B]` of videos `[B, T, R, R, 3]`.

  Face: median pixel where the head layout of `keypoints` `[B, T, K, 2]` is > 0.9;
  background: median pixel of the image border (`border_mask`).
  """
  r = video.shape[2]
  inside = keypoint_maps.head_layout(keypoints, r)[..., 0] > 0.9
  border = border_mask(r)
  face = np.stack([np.median(v[m], axis=0) for v, m in zip(video, inside)])
  background = np.stack([np.median(v[:, border], axis=(0, 1)) for v in video])
  return nearest_color(face), nearest_color(background)


def color_accuracy(videos: np.ndarray, clips: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Fraction of videos `[N, T, R, R, 3]` whose face / background color (`read_colors`) is
  the caption's (`clips` of the synthetic set: keypoints, face_color, background_color)."""
  face, background = read_colors(videos, clips["keypoints"])
  return {"face": float(np.mean(face == clips["face_color"])),
          "background": float(np.mean(background == clips["background_color"]))}


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


def mouth_correlation(videos: np.ndarray, mouth_open: np.ndarray) -> np.ndarray:
  """`[N]` oracle mouth correlation (`oracle_lipsync`) of videos `[N, T, R, R, 3]` with the
  openness tracks `[N, T]`."""
  return np.asarray(oracle_lipsync(jnp.asarray(videos), jnp.asarray(mouth_open))["mouth_corr"])
