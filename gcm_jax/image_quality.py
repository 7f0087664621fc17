"""Full-reference image quality in jnp: PSNR and SSIM (Wang et al. 2004, Gaussian window).

`ssim` is the standard Gaussian-window SSIM: an 11x11 Gaussian window (sigma 1.5, separable,
normalized to sum 1), K1 = 0.01, K2 = 0.03, population (not sample) covariances, the SSIM map
averaged over the valid positions (no padding: (H - 10) x (W - 10)) and over channels. It
equals `skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=..., channel_axis=-1)` (tests/test_train_autoencoder.py).
Both functions are differentiable (SSIM is a training loss of the autoencoder).
"""
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


def ssim(x: jax.Array, y: jax.Array, data_range: float = 2.0) -> jax.Array:
  """Mean SSIM of each image pair.

  Args:
    x, y: `[..., H, W, C]` images with values spanning `data_range` (2 for [-1, 1]);
      H and W >= 11.
    data_range: max - min of the value range (sets C1 = (K1 L)^2, C2 = (K2 L)^2).

  Returns:
    float32 `[...]`: the SSIM map averaged over valid positions and channels.

  Raises:
    ValueError: shapes differ or an image is smaller than the 11x11 window.
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
  per_plane = ssim_map.mean(axis=(1, 2))  # [N * C]
  return per_plane.reshape(lead + (c,)).mean(axis=-1)


def psnr(x: jax.Array, y: jax.Array, data_range: float = 2.0) -> jax.Array:
  """PSNR in dB of each image pair: `[..., H, W, C]` -> float32 `[...]`,
  10 log10(data_range^2 / MSE) (MSE floored at 1e-10)."""
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-10))
