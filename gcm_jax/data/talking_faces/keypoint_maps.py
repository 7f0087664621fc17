"""Per-pixel maps from the talking-faces keypoints `[B, T, K, 2]` ((x, y) in [0, 1]).

The keypoint order is `renderer.KEYPOINT_NAMES`; the maps invert the renderer's face
geometry (gcm_jax/data/talking_faces/renderer.py). They feed the ControlNet branch
(heatmaps, head layout), the evaluation (head layout) and the mouth-weighted loss.
"""
import jax
import jax.numpy as jnp

from gcm_jax.data.talking_faces import renderer

Array = jax.Array
_MOUTH_LEFT = renderer.KEYPOINT_NAMES.index("mouth_left")
_MOUTH_RIGHT = renderer.KEYPOINT_NAMES.index("mouth_right")


def _pixel_centers(resolution: int) -> Array:
  return (jnp.arange(resolution, dtype=jnp.float32) + 0.5) / resolution


def keypoint_heatmaps(keypoints: Array, resolution: int, sigma_pixels: float = 1.0) -> Array:
  """Gaussian heatmaps of keypoints `[B, T, K, 2]` -> `[B, T, R, R, K]` in [0, 1]."""
  coords = _pixel_centers(resolution)
  dx = coords[None, None, None, :, None] - keypoints[..., 0][:, :, None, None, :]
  dy = coords[None, None, :, None, None] - keypoints[..., 1][:, :, None, None, :]
  sigma = sigma_pixels / resolution
  return jnp.exp(-(dx**2 + dy**2) / (2 * sigma**2))


def head_layout(keypoints: Array, resolution: int) -> Array:
  """Composition map: a soft head-ellipse mask `[B, T, R, R, 1]` from eyes, nose and chin."""
  # Renderer geometry: eyes at cy - 0.25 ry, chin at cy + ry, eye distance 0.76 rx.
  eyes_y = keypoints[..., 0:2, 1].mean(-1)
  chin_y = keypoints[..., 7, 1]
  ry = (chin_y - eyes_y) / 1.25
  rx = (keypoints[..., 1, 0] - keypoints[..., 0, 0]) / 0.76
  cx, cy = keypoints[..., 2, 0], chin_y - ry
  coords = _pixel_centers(resolution)
  nx = (coords[None, None, None, :] - cx[..., None, None]) / rx[..., None, None]
  ny = (coords[None, None, :, None] - cy[..., None, None]) / ry[..., None, None]
  return jax.nn.sigmoid(8.0 * (1.0 - jnp.sqrt(nx**2 + ny**2)))[..., None]


def mouth_region(keypoints: Array, resolution: int, margin_pixels: float = 2.0) -> Array:
  """Bool `[B, T, R, R]`: pixels within (half mouth width + margin) of the mouth center.

  The disc covers the lips at any openness (the renderer's mouth is at most as tall as
  it is wide) plus `margin_pixels` of surrounding face.
  """
  left, right = keypoints[..., _MOUTH_LEFT, :], keypoints[..., _MOUTH_RIGHT, :]
  center = 0.5 * (left + right)
  radius = 0.5 * (right[..., 0] - left[..., 0]) + margin_pixels / resolution
  coords = _pixel_centers(resolution)
  dx = coords[None, None, None, :] - center[..., 0, None, None]
  dy = coords[None, None, :, None] - center[..., 1, None, None]
  return dx**2 + dy**2 <= radius[..., None, None]**2
