"""ControlNet-style control branch for the STDiT (Zhang et al. 2023; PixArt-delta for DiTs).

The branch is a trainable copy of the base model's input embedding, condition encoders
and first K blocks. Control maps `[B, T, H, W, Cc]` (keypoint heatmaps for motion, a
layout map for composition) are patchified and added to the copied tokens through a
zero-initialized linear layer; after each copied block a zero-initialized linear layer
produces a residual `[B, T, N, D]` that the base model adds after its own block i
(`cond['control']`). Both zero layers make every residual exactly zero at init, so the
controlled model starts as the base model.
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax.models import layers
from gcm_jax.models import stdit

Array = jax.Array


class ControlBranch(stdit.STDiT):
  """Control branch: `(x_t, t, cond, control_maps [B, T, H, W, Cc]) -> K residuals [B, T, N, D]`.

  Shares the STDiT fields (build it with the base model's config) plus `num_blocks` K.
  Parameter names match the base model's (`patch_embed`, `text_encoder`, `block_i`, ...)
  so `init_from_base` can copy them.
  """
  num_blocks: int = 1

  @nn.compact
  def __call__(self, x: Array, t: Array, cond: Mapping[str, Array],  # pytype: disable=signature-mismatch
               control_maps: Array) -> list[Array]:
    stdit._check_inputs(x, t, cond, self.in_channels, self.patch_size)  # pylint: disable=protected-access
    if control_maps.shape[:4] != x.shape[:4]:
      raise ValueError(f"control maps {control_maps.shape} must be [B, T, H, W, Cc] matching "
                       f"the video {x.shape}")
    if not 1 <= self.num_blocks <= self.depth:
      raise ValueError(f"num_blocks must be in [1, depth={self.depth}], got {self.num_blocks}")
    dtype = jnp.dtype(self.dtype)
    tokens = self._embed_video(x, cond, dtype)
    tokens = tokens + layers.dense(self.width, ("patch", "embed"), "control_embed", dtype,
                                   zero_init=True)(
                                       stdit.patchify(control_maps, self.patch_size).astype(dtype))
    c, text, text_mask, audio = self._conditioning(t, cond, dtype)
    residuals = []
    for i in range(self.num_blocks):
      tokens = self._block(i, dtype)(tokens, c, text, text_mask, audio)
      residuals.append(layers.dense(self.width, ("embed", "embed_out"), f"zero_proj_{i}", dtype,
                                    zero_init=True)(tokens))
    return residuals


def init_from_base(control_params: Mapping[str, Any], base_params: Mapping[str, Any]
                   ) -> dict[str, Any]:
  """Copies every base-model parameter subtree whose name the branch shares (its copied
  embedding, encoders and first K blocks); the zero layers keep their zero init."""
  return {name: jax.tree.map(jnp.copy, base_params[name]) if name in base_params else value
          for name, value in control_params.items()}


def keypoint_heatmaps(keypoints: Array, resolution: int, sigma_pixels: float = 1.0) -> Array:
  """Gaussian heatmaps of keypoints `[B, T, K, 2]` ((x, y) in [0, 1]) -> `[B, T, R, R, K]` in [0, 1]."""
  coords = (jnp.arange(resolution, dtype=jnp.float32) + 0.5) / resolution
  dx = coords[None, None, None, :, None] - keypoints[..., 0][:, :, None, None, :]
  dy = coords[None, None, :, None, None] - keypoints[..., 1][:, :, None, None, :]
  sigma = sigma_pixels / resolution
  return jnp.exp(-(dx**2 + dy**2) / (2 * sigma**2))


def head_layout(keypoints: Array, resolution: int) -> Array:
  """Composition map of the synthetic faces: a soft head-ellipse mask `[B, T, R, R, 1]`.

  The ellipse is recovered from the talking-faces keypoints (eyes, nose, chin) with the
  renderer's head geometry (gcm_jax/data/talking_faces/renderer.py).
  """
  # Renderer geometry: eyes at cy - 0.25 ry, chin at cy + ry, eye distance 0.76 rx.
  eyes_y = keypoints[..., 0:2, 1].mean(-1)
  chin_y = keypoints[..., 7, 1]
  ry = (chin_y - eyes_y) / 1.25
  rx = (keypoints[..., 1, 0] - keypoints[..., 0, 0]) / 0.76
  cx, cy = keypoints[..., 2, 0], chin_y - ry
  coords = (jnp.arange(resolution, dtype=jnp.float32) + 0.5) / resolution
  nx = (coords[None, None, None, :] - cx[..., None, None]) / rx[..., None, None]
  ny = (coords[None, None, :, None] - cy[..., None, None]) / ry[..., None, None]
  return jax.nn.sigmoid(8.0 * (1.0 - jnp.sqrt(nx**2 + ny**2)))[..., None]


def control_maps(keypoints: Array, resolution: int) -> Array:
  """Motion + composition control maps `[B, T, R, R, K + 1]` from keypoints `[B, T, K, 2]`."""
  return jnp.concatenate([keypoint_heatmaps(keypoints, resolution),
                          head_layout(keypoints, resolution)], axis=-1)

