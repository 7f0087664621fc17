"""Bilinear resizing as torch's `F.interpolate(mode="bilinear", align_corners=False)` does it
(no antialiasing; half-pixel centres, edge samples clamped), the resize of pytorch-fid's
Inception and of the FVD I3D preprocessing.
"""
import jax


def resize_bilinear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """`[..., H, W, C]` -> `[..., size[0], size[1], C]`, torch's bilinear (align_corners=False).

  `jax.image.resize(..., antialias=False)` uses the same half-pixel triangle kernel and
  renormalizes the weights at the border, which is torch's clamping of the source index.
  """
  if tuple(images.shape[-3:-1]) == tuple(size):
    return images
  shape = (*images.shape[:-3], *size, images.shape[-1])
  return jax.image.resize(images, shape, method="linear", antialias=False).astype(images.dtype)
