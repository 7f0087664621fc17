"""Pasting generated face crops back into the source frames (dubbing a video).

The ingest (`faces.py`) cuts a square crop of side S out of a source frame: its `crop_box`
(x0, y0, x1, y1) in source pixels, rounded to whole pixels, the patch `frame[y0:y1, x0:x1]`
(x1, y1 exclusive; edge pixels repeated where the square leaves the frame) resampled to S x S.
`paste_back` is its inverse: the generated crop resized to the same rounded box and blended
into the frame with a weight, `feather_mask`.

Blending choice: only the region the model regenerates (the dubbing mask, e.g. the lower half
of the crop, `contract.lower_half`, or the mouth box) is replaced, with a soft edge that lies
*inside* that region: the weight is 1 deep inside it, falls smoothly to 0 over `feather_px`
pixels towards its border (the crop's own border included, since the source lies beyond it)
and is exactly 0 outside it. Every source pixel outside the region (and outside the box) is
therefore kept bit for bit, and the seam is a blend, not a step. Wav2Lip pastes the whole
crop with a hard edge (a visible seam where colours drift); LatentSync (a blurred mask) and
VideoReTalking (mask-weighted Laplacian-pyramid blending) blend with a soft mask; this is
the soft-mask choice, on the region the model actually regenerates (pass no region to
replace the whole crop).
"""
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from gcm_jax.data.video_folder import faces

Region = Union[np.ndarray, Sequence[float], None]


def _region_mask(size: int, region: Region) -> np.ndarray:
  """bool [S, S] of `region` (None, a bool [S, S] mask or a box [4] in [0, 1] of the crop)."""
  if region is None:
    return np.ones((size, size), bool)
  region = np.asarray(region)
  if region.shape == (4,):
    return faces.mouth_region(region.astype(np.float32), size)
  if region.shape != (size, size):
    raise ValueError(f"region must be a bool mask [{size}, {size}] or a box (x0, y0, x1, y1) "
                     f"in [0, 1] of the crop; got shape {region.shape}")
  return region.astype(bool)


def feather_mask(size: int, region: Region = None, feather_px: Optional[float] = None
                 ) -> np.ndarray:
  """float32 [S, S]: the blending weight of a generated S x S crop.

  Args:
    size: S, the crop's side in pixels.
    region: what to replace: None (the whole crop), a bool mask [S, S] (e.g. one frame of the
      dataset's `source_mask`, the dubbing area), or a box (x0, y0, x1, y1) in [0, 1] of the
      crop (as `mouth_box`; the pixels whose centres lie inside it, `faces.mouth_region`).
    feather_px: width of the soft edge in crop pixels (default S / 16, 8 px at S = 128);
      0 gives a hard 0/1 mask.

  Returns:
    1 where a pixel's centre is at least `feather_px` from the region's edge (the pixel edge
    between a region pixel and a pixel outside it or beyond the crop), smoothstep(d /
    feather_px) at distance d < feather_px inside the region, exactly 0 outside it.
  """
  mask = _region_mask(size, region)
  feather = size / 16 if feather_px is None else float(feather_px)
  if feather < 0:
    raise ValueError(f"feather_px must be >= 0, got {feather}")
  if feather == 0 or not mask.any():
    return mask.astype(np.float32)
  padded = np.pad(mask, 1).astype(np.uint8)  # Beyond the crop lies the source: outside.
  # Euclidean distance of each pixel centre to the nearest outside pixel centre; the region's
  # edge lies half a pixel before that centre.
  distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
  u = np.clip((distance - 0.5) / feather, 0.0, 1.0)
  weight = u * u * (3 - 2 * u)
  return np.where(mask, weight, 0.0).astype(np.float32)


def paste_box(crop_box: Sequence[float]) -> tuple[int, int, int, int]:
  """The whole-pixel box (x0, y0, x1, y1), x1 and y1 exclusive, that a float `crop_box`
  (source pixels) covers: rounded as `faces.crop` rounds it."""
  x0, y0, x1, y1 = (int(v) for v in np.round(np.asarray(crop_box, np.float64)))
  return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, crop_box: Sequence[float],
               weight: np.ndarray) -> np.ndarray:
  """The source frame with the generated crop blended in.

  Args:
    frame: uint8 [H, W, 3], the source frame (any aspect ratio).
    crop: [S, S, 3] generated crop: uint8, or float in [-1, 1] (the model's output;
      `video_io.to_uint8`'s convention).
    crop_box: (x0, y0, x1, y1) in source pixels where the crop came from: one row of the
      ingest's `crop_box` feature [T, 4] or `faces.crop_window`; rounded as `faces.crop`
      rounds it (`paste_box`); it may extend beyond the frame.
    weight: float32 [S, S] in [0, 1], the blending weight (`feather_mask`).

  Returns:
    uint8 [H, W, 3]: crop and weight resized to the box (cv2.resize, INTER_LINEAR, both),
    then `round(w crop + (1 - w) frame)` where the resized weight w > 0 inside the frame;
    every other pixel (w == 0, outside the box) bit-identical to `frame`.
  """
  frame = np.asarray(frame)
  if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
    raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
  crop, weight = np.asarray(crop), np.asarray(weight, np.float32)
  if crop.ndim != 3 or crop.shape[2] != 3 or weight.shape != crop.shape[:2]:
    raise ValueError(f"crop must be [S, S, 3] and weight [S, S]; got {crop.shape} and "
                     f"{weight.shape}")
  out = frame.copy()
  h, w = frame.shape[:2]
  x0, y0, x1, y1 = paste_box(crop_box)
  fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
  if x1 <= x0 or y1 <= y0 or fx1 <= fx0 or fy1 <= fy0:  # Empty, or wholly outside the frame.
    return out
  if crop.dtype == np.uint8:
    pixels = crop.astype(np.float32)
  else:
    pixels = (np.clip(crop.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5
  size = (x1 - x0, y1 - y0)
  pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR)
  alpha = np.clip(cv2.resize(weight, size, interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
  inside = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
  pixels, alpha = pixels[inside], alpha[inside]
  source = out[fy0:fy1, fx0:fx1]
  blended = alpha[..., None] * pixels + (1.0 - alpha[..., None]) * source.astype(np.float32)
  blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
  out[fy0:fy1, fx0:fx1] = np.where((alpha > 0)[..., None], blended, source)
  return out
