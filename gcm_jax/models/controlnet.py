"""ControlNet-style control branch for the STDiT (Zhang et al. 2023; PixArt-delta for DiTs).

The branch is a trainable copy of the base model's input embedding, condition encoders
and first K blocks. Control maps `[B, T, H, W, Cc]` (for the talking faces: keypoint
heatmaps for motion and a head-layout map for composition, made by the input pipeline from
the dataset entry's `derived['control_maps']`) are patchified and added to the copied tokens
through a zero-initialized linear layer; after each copied block a zero-initialized linear layer
produces a residual `[B, T, N, D]` that the base model adds after its own block i
(`cond['control']`). Both zero layers make every residual exactly zero at init, so the
controlled model starts as the base model.

The branch runs its K blocks as a Python loop (`scan_blocks=False`); the base model may
be scanned (`init_from_base` then unstacks its blocks).
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

  Shares the STDiT fields (build it with the base model's config, but scan_blocks=False)
  plus `num_blocks` K. Parameter names match the looped base model's (`patch_embed`,
  `text_encoder`, `block_i`, ...) so `init_from_base` can copy them.
  """
  num_blocks: int = 1

  @nn.compact
  def __call__(self, x: Array, t: Array, cond: Mapping[str, Array],  # pytype: disable=signature-mismatch
               control_maps: Array) -> list[Array]:
    self._check_inputs(x, t, cond)
    if control_maps.shape[:4] != x.shape[:4]:
      raise ValueError(f"control maps {control_maps.shape} must be [B, T, H, W, Cc] matching "
                       f"the video {x.shape}")
    if self.scan_blocks:
      raise ValueError("ControlBranch runs its blocks in a Python loop: build it with "
                       "scan_blocks=False (config.model.scan_blocks); the base model may stay "
                       "scanned, init_from_base unstacks its blocks")
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
  embedding, encoders and first K blocks); the zero layers keep their zero init.
  `base_params` may be in the scanned layout (`stdit.stack_block_params`)."""
  if stdit.SCANNED_BLOCKS in base_params:
    base_params = stdit.unstack_block_params(base_params)
  return {name: jax.tree.map(jnp.copy, base_params[name]) if name in base_params else value
          for name, value in control_params.items()}

