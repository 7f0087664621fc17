"""Per-pixel maps from the talking-faces keypoints `[..., K, 2]` ((x, y) in [0, 1]).

Numpy, run by the input pipeline on the CPU (`gcm_jax.data.pipeline.preprocess` makes
`mouth_region` and `control_maps` batch features) and by the evaluation. Leading axes
(`...`, e.g. `[T]` or `[B, T]`) broadcast. The keypoint order is
`renderer.KEYPOINT_NAMES`; the maps invert the renderer's face geometry
(gcm_jax/data/talking_faces/renderer.py).
"""
import numpy as np

from gcm_jax.data.talking_faces import renderer

_MOUTH_LEFT = renderer.KEYPOINT_NAMES.index("mouth_left")
_MOUTH_RIGHT = renderer.KEYPOINT_NAMES.index("mouth_right")
# Channels of `control_maps`: one heatmap per keypoint plus the head layout.
NUM_CONTROL_CHANNELS = renderer.NUM_KEYPOINTS + 1


def _pixel_centers(resolution: int, dtype=np.float32) -> np.ndarray:
  return ((np.arange(resolution) + 0.5) / resolution).astype(dtype)


def keypoint_heatmaps(keypoints: np.ndarray, resolution: int, sigma_pixels: float = 1.0
                      ) -> np.ndarray:
  """Gaussian heatmaps of keypoints `[..., K, 2]` -> float32 `[..., R, R, K]` in [0, 1]."""
  keypoints = np.asarray(keypoints, np.float32)
  coords = _pixel_centers(resolution)
  dx = coords[None, :, None] - keypoints[..., None, None, :, 0]
  dy = coords[:, None, None] - keypoints[..., None, None, :, 1]
  sigma = np.float32(sigma_pixels / resolution)
  return np.exp(-(dx**2 + dy**2) / (2 * sigma**2))


def head_layout(keypoints: np.ndarray, resolution: int) -> np.ndarray:
  """Composition map: a soft head-ellipse mask float32 `[..., R, R, 1]` from eyes, nose, chin."""
  keypoints = np.asarray(keypoints, np.float32)
  # Renderer geometry: eyes at cy - 0.25 ry, chin at cy + ry, eye distance 0.76 rx.
  eyes_y = keypoints[..., 0:2, 1].mean(-1)
  chin_y = keypoints[..., 7, 1]
  ry = (chin_y - eyes_y) / np.float32(1.25)
  rx = (keypoints[..., 1, 0] - keypoints[..., 0, 0]) / np.float32(0.76)
  cx, cy = keypoints[..., 2, 0], chin_y - ry
  coords = _pixel_centers(resolution)
  nx = (coords[None, :] - cx[..., None, None]) / rx[..., None, None]
  ny = (coords[:, None] - cy[..., None, None]) / ry[..., None, None]
  inside = np.float32(8.0) * (1 - np.sqrt(nx**2 + ny**2))
  return 0.5 * (1 + np.tanh(0.5 * inside))[..., None]  # sigmoid(inside), without overflow


def control_maps(keypoints: np.ndarray, resolution: int) -> np.ndarray:
  """ControlNet maps float32 `[..., R, R, K + 1]` from keypoints `[..., K, 2]`: the keypoint
  heatmaps (motion) then the head layout (composition)."""
  return np.concatenate([keypoint_heatmaps(keypoints, resolution),
                         head_layout(keypoints, resolution)], axis=-1)


def mouth_region(keypoints: np.ndarray, resolution: int, margin_pixels: float = 2.0
                 ) -> np.ndarray:
  """Bool `[..., R, R]`: pixels within (half mouth width + margin) of the mouth center.

  The disc covers the lips at any openness (the renderer's mouth is at most as tall as
  it is wide) plus `margin_pixels` of surrounding face. Computed in float64.
  """
  keypoints = np.asarray(keypoints, np.float64)
  left, right = keypoints[..., _MOUTH_LEFT, :], keypoints[..., _MOUTH_RIGHT, :]
  center = 0.5 * (left + right)
  radius = 0.5 * (right[..., 0] - left[..., 0]) + margin_pixels / resolution
  coords = _pixel_centers(resolution, np.float64)
  dx = coords[None, :] - center[..., 0, None, None]
  dy = coords[:, None] - center[..., 1, None, None]
  return dx**2 + dy**2 <= radius[..., None, None]**2
