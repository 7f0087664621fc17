"""The synthetic talking faces' ground truth read back from pixels: the caption's colors
(`read_colors`, `color_accuracy`), the audio-driven mouth opening (`oracle_lipsync`) and
whether a dubbed frame kept the source's eyes and head outline (`structure_kept`), the
`GroundTruth` hooks of the dataset's registry entry (`talking_faces.dataset`).

They read what the renderer (`renderer.py`) paints: the face and background in caption
palette colors, the open mouth in one interior color whose area in the lower half of the
frame is ~ linear in the openness, the eyes as a white ellipse with a dark pupil at the eye
keypoints.
"""
from typing import Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import identity
from gcm_jax.data.talking_faces import keypoint_maps
from gcm_jax.data.talking_faces import renderer
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


def mouth_pixels(frames: jax.Array) -> jax.Array:
  """bool `[..., H, W]`: the pixels of frames `[..., H, W, 3]` in [-1, 1] painted in the
  renderer's mouth-interior color (max-abs distance < MOUTH_COLOR_TOL); numpy in, numpy out."""
  xp = jnp if isinstance(frames, jax.Array) else np
  inside = xp.asarray(MOUTH_INSIDE_RGB, xp.float32) / 127.5 - 1.0
  return xp.max(xp.abs(frames - inside), axis=-1) < MOUTH_COLOR_TOL


def mouth_area(video: jax.Array) -> jax.Array:
  """Fraction of lower-half pixels painted in the renderer's mouth-interior color.

  Args:
    video: [B, T, H, W, 3] in [-1, 1].
  Returns:
    [B, T] area fractions in [0, 1].
  """
  if video.ndim != 5 or video.shape[-1] != 3:
    raise ValueError(f"video must be [B, T, H, W, 3], got {tuple(video.shape)}")
  mouth = mouth_pixels(syncnet_lib.lower_half(jnp.asarray(video)))
  return jnp.mean(mouth.astype(jnp.float32), axis=(2, 3))


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


# --- structure kept (dubbing): the source's eyes and head outline in a generated frame ---------

# An eye is kept when the generated pixels of its patch differ from the source's by at most
# EYE_TOLERANCE of the source eye's own contrast against the face (both L2 over the patch),
# the contrast floored at EYE_CONTRAST_FLOOR per pixel (RMS over the patch's pixels of the
# RGB distance in [-1, 1] units; a closed, blinking eye: then the generated patch must be as
# close to the source as to a just-visible eye's contrast).
EYE_TOLERANCE = 0.4
EYE_CONTRAST_FLOOR = 0.3
# The outline is kept when the head region (nearer the face colour than the background colour)
# of the generated frame has IoU >= OUTLINE_IOU with the source's, outside the dubbing mask.
OUTLINE_IOU = 0.9


def eye_patches(keypoints: np.ndarray, resolution: int) -> np.ndarray:
  """bool `[..., 2, R, R]`: per frame of keypoints `[..., K, 2]`, the pixels of each eye's
  patch: the box of the renderer's open eye (`renderer.draw`: half-width 0.16 hrx, half-height
  0.13 hry) around the eye keypoint, one pixel wider on every side (anti-aliasing)."""
  keypoints = np.asarray(keypoints, np.float32)
  flat = keypoints.reshape((-1,) + keypoints.shape[-2:])
  _, scale = renderer.head_geometry(flat)
  pixel = 1.0 / resolution
  half_w = (0.16 * 0.27 * scale + pixel)[:, None, None, None]
  half_h = (0.13 * 0.35 * scale + pixel)[:, None, None, None]
  coords = (np.arange(resolution, dtype=np.float32) + 0.5) * pixel
  eyes = flat[:, :2]                                                    # [B, 2, (x, y)]
  cols = np.abs(coords[None, None, None, :] - eyes[..., 0, None, None]) <= half_w
  rows = np.abs(coords[None, None, :, None] - eyes[..., 1, None, None]) <= half_h
  return (rows & cols).reshape(keypoints.shape[:-2] + (2, resolution, resolution))


def structure_kept(videos: np.ndarray, sources: np.ndarray, clips: Mapping[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
  """Per frame, whether generated videos `[N, T, R, R, 3]` (in [-1, 1]) kept the eyes and the
  head outline of the source clips `sources` `[N, T, R, R, 3]` (`contract.GroundTruth.
  structure_kept`; `clips`: the clips' 'keypoints' `[N, T, K, 2]`, and 'source_mask'
  `[N, T, R, R]` if they have it, else `identity.source_mask` of the keypoints).

  Returns bool `[N, T]` each:
    'eyes': each eye of the source is still there: inside the eye's patch (`eye_patches`, at
      the source's eye keypoint), L2(generated - source) <= EYE_TOLERANCE x max(L2(source -
      face colour), EYE_CONTRAST_FLOOR x sqrt(patch pixels)). The face colour is
      `read_colors`' of the source.
    'outline': the head region (pixels nearer the face colour than the background colour,
      both `read_colors`' of the source) of the generated frame has IoU >= OUTLINE_IOU with
      the source's, counted outside the dubbing mask.

  Calibration (6 talking-faces test clips x 12 frames at 32 and 64 px; the eye ratio
  L2(generated - source) / max(L2(source - face), floor) of the worse eye over the frames
  whose eyes stand out of the floor (94%; the rest blink), the outline IoU over all frames;
  tests/test_structure_kept.py checks each case):

    case                       eye ratio 32 px / 64 px    outline IoU 32 px / 64 px
    source vs itself           0 / 0                      1 / 1
    eyes painted face colour   1.0 / 1.0                  1 / 1
    +-3/255 uniform noise      <= 0.06 / <= 0.04          >= 0.98 / >= 0.99
    +-10/255 uniform noise     <= 0.21 / <= 0.13          >= 0.97 / >= 0.98
    3x3 box blur               0.59-0.94 / 0.53-0.71      -
    5x5 box blur               0.69-0.96 / 0.78-0.92      0.88-0.97 / 0.91-0.99
    1-pixel shift              0.94-1.38 / 0.84-1.19      0.73-0.83 / 0.86-0.91
    2-pixel shift              0.84-1.42 / 1.16-1.51      0.61-0.70 / 0.75-0.83

  EYE_TOLERANCE = 0.4 lies between noise (<= 0.21 even at +-10/255) and the mildest damage
  measured (a 3x3 blur, >= 0.53); a painted-over eye reads 1 by construction.
  OUTLINE_IOU = 0.9 lies between noise (>= 0.97) and a 1-pixel shift of a 32-px head
  (<= 0.83) or a 2-pixel shift at 64 px (<= 0.83). A blur leaves the silhouette about where
  it was: it fails 'eyes' always and 'outline' only sometimes (IoU 0.88-0.99). The contrast
  floor (0.3 per pixel; an open eye's patch reads 0.4-0.8 at 32 px, 0.6-1.3 at 64 px, a
  blinking one 0.02-0.16) keeps a closed source eye from dividing by ~0: there the generated
  patch must stay within 0.12 per pixel of the source (+-10/255 noise reads <= 0.29 of the
  floor), and painting over a closed eye changes nothing (kept).
  """
  videos, sources = np.asarray(videos, np.float32), np.asarray(sources, np.float32)
  keypoints = np.asarray(clips["keypoints"], np.float32)
  n, t, r = sources.shape[:3]
  palette = captions.COLOR_RGB.astype(np.float32) / 127.5 - 1.0
  face_id, background_id = read_colors(sources, keypoints)
  face = palette[face_id][:, None, None, None]                         # [N, 1, 1, 1, 3]
  background = palette[background_id][:, None, None, None]

  patches = eye_patches(keypoints, r)                                   # [N, T, 2, R, R]
  diff = np.sum(np.square(videos - sources), -1)[:, :, None]            # [N, T, 1, R, R]
  contrast = np.sum(np.square(sources - face), -1)[:, :, None]
  error = np.sqrt(np.sum(diff * patches, axis=(-2, -1)))                # [N, T, 2]
  eye = np.sqrt(np.sum(contrast * patches, axis=(-2, -1)))
  floor = EYE_CONTRAST_FLOOR * np.sqrt(np.sum(patches, axis=(-2, -1)))
  eyes = np.all(error <= EYE_TOLERANCE * np.maximum(eye, floor), axis=-1)

  if "source_mask" in clips:
    outside = ~np.asarray(clips["source_mask"], bool)
  else:
    outside = ~np.stack([identity.source_mask({"keypoints": k}, r) for k in keypoints])

  def head(v):
    return (np.linalg.norm(v - face, axis=-1) < np.linalg.norm(v - background, axis=-1))

  src_head, gen_head = head(sources) & outside, head(videos) & outside
  union = np.sum(src_head | gen_head, axis=(-2, -1))
  iou = np.sum(src_head & gen_head, axis=(-2, -1)) / np.maximum(union, 1)
  outline = np.where(union > 0, iou, 1.0) >= OUTLINE_IOU
  assert eyes.shape == outline.shape == (n, t)
  return {"eyes": eyes, "outline": outline}
