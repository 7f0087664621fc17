"""Full-reference image quality in jnp: PSNR and SSIM (Wang et al. 2004, Gaussian window).

`ssim` is the standard Gaussian-window SSIM: an 11x11 Gaussian window (sigma 1.5, separable,
normalized to sum 1), K1 = 0.01, K2 = 0.03, population (not sample) covariances, the SSIM map
averaged over the valid positions (no padding: (H - 10) x (W - 10)) and over channels. It
equals `skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=..., channel_axis=-1)` (tests/test_train_autoencoder.py).
Both functions are differentiable (SSIM is a training loss of the autoencoder).

Both take an optional `mask` `[..., H, W]` (bool or 0/1, broadcast against the images'
leading axes) that restricts the comparison to a region, e.g. the part of a frame outside
the dubbing mask (`evaluate`'s preservation and upper-face rows):
  * `psnr`: the MSE over the pixels where the mask is 1 (all channels), then the same
    formula; a region without pixels gives NaN.
  * `ssim`: the SSIM map averaged over the valid positions whose whole 11x11 window lies in
    the region (the window's Gaussian taps are all > 0, so a window reaching outside it
    would see the pixels left out), then over channels; pixels outside the region change
    nothing. An image whose region holds no whole window gives NaN.
"""
from typing import Optional

import jax
import jax.numpy as jnp

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _gaussian_window(size: int, sigma: float) -> jax.Array:
  """[size] normalized 1-D Gaussian taps centred on the middle tap."""
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  w = jnp.exp(-0.5 * jnp.square(x / sigma))
  return w / w.sum()


def _filter(x: jax.Array, taps: jax.Array) -> jax.Array:
  """Separable valid filtering of `[N, H, W]` with `taps` along H then W:
  -> `[N, H - k + 1, W - k + 1]`."""
  k = taps.shape[0]
  lhs = x[:, None]  # [N, 1, H, W] (NCHW)
  out = jax.lax.conv_general_dilated(lhs, taps.reshape(1, 1, k, 1), (1, 1), "VALID",
                                     precision=jax.lax.Precision.HIGHEST)
  out = jax.lax.conv_general_dilated(out, taps.reshape(1, 1, 1, k), (1, 1), "VALID",
                                     precision=jax.lax.Precision.HIGHEST)
  return out[:, 0]


def _region(mask: jax.Array, lead: tuple[int, ...], h: int, w: int) -> jax.Array:
  """`mask` `[..., H, W]` as float32 `[*lead, H, W]` (1 = in the region)."""
  mask = jnp.asarray(mask)
  if mask.ndim < 2 or mask.shape[-2:] != (h, w):
    raise ValueError(f"mask must be [..., {h}, {w}] (the images' [..., H, W]), got "
                     f"{mask.shape}")
  return jnp.broadcast_to(mask.astype(jnp.float32), lead + (h, w))


def ssim(x: jax.Array, y: jax.Array, data_range: float = 2.0,
         mask: Optional[jax.Array] = None) -> jax.Array:
  """Mean SSIM of each image pair.

  Args:
    x, y: `[..., H, W, C]` images with values spanning `data_range` (2 for [-1, 1]);
      H and W >= 11.
    data_range: max - min of the value range (sets C1 = (K1 L)^2, C2 = (K2 L)^2).
    mask: optional `[..., H, W]` region (see the module docstring): only positions whose
      whole window lies where it is 1 are averaged.

  Returns:
    float32 `[...]`: the SSIM map averaged over valid positions (in the region) and
    channels; NaN for an image whose region holds no whole window.

  Raises:
    ValueError: shapes differ, an image is smaller than the 11x11 window, or the mask's
      last two axes are not the images' H, W.
  """
  if x.shape != y.shape:
    raise ValueError(f"ssim needs equal shapes, got {x.shape} and {y.shape}")
  if x.ndim < 3 or min(x.shape[-3:-1]) < SSIM_WINDOW:
    raise ValueError(f"ssim needs [..., H, W, C] images of at least {SSIM_WINDOW}x{SSIM_WINDOW}"
                     f", got shape {x.shape}")
  lead, (h, w, c) = x.shape[:-3], x.shape[-3:]
  # [..., H, W, C] -> [N * C, H, W]: every channel filtered on its own.
  to_planes = lambda a: jnp.moveaxis(a.astype(jnp.float32).reshape((-1, h, w, c)), -1,
                                     1).reshape((-1, h, w))
  x, y = to_planes(x), to_planes(y)
  taps = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
  mu_x, mu_y = _filter(x, taps), _filter(y, taps)
  var_x = _filter(x * x, taps) - mu_x * mu_x
  var_y = _filter(y * y, taps) - mu_y * mu_y
  cov = _filter(x * y, taps) - mu_x * mu_y
  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
      (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
  if mask is None:
    per_plane = ssim_map.mean(axis=(1, 2))  # [N * C]
    return per_plane.reshape(lead + (c,)).mean(axis=-1)
  # 1 where the whole window lies in the region: the box sum of the mask is k * k there.
  region = _region(mask, lead, h, w).reshape((-1, h, w))
  inside = _filter(region, jnp.ones((SSIM_WINDOW,), jnp.float32)) > SSIM_WINDOW ** 2 - 0.5
  inside = inside.astype(jnp.float32)                                   # [N, H', W']
  ssim_map = ssim_map.reshape((inside.shape[0], c) + ssim_map.shape[1:])  # [N, C, H', W']
  count = inside.sum(axis=(1, 2))
  total = (ssim_map * inside[:, None]).sum(axis=(1, 2, 3))
  per_image = jnp.where(count > 0, total / (c * jnp.maximum(count, 1.0)), jnp.nan)
  return per_image.reshape(lead)


def psnr(x: jax.Array, y: jax.Array, data_range: float = 2.0,
         mask: Optional[jax.Array] = None) -> jax.Array:
  """PSNR in dB of each image pair: `[..., H, W, C]` -> float32 `[...]`,
  10 log10(data_range^2 / MSE) (MSE floored at 1e-10). With `mask` `[..., H, W]`, the MSE
  over the pixels where it is 1 (NaN for an empty region)."""
  err = jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32))
  if mask is None:
    mse = jnp.mean(err, axis=(-3, -2, -1))
  else:
    if x.shape != y.shape:
      raise ValueError(f"psnr needs equal shapes, got {x.shape} and {y.shape}")
    region = _region(mask, x.shape[:-3], *x.shape[-3:-1])
    count = region.sum(axis=(-2, -1)) * x.shape[-1]
    total = jnp.sum(err * region[..., None], axis=(-3, -2, -1))
    mse = jnp.where(count > 0, total / jnp.maximum(count, 1.0), jnp.nan)
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-10))
