"""Identity metrics of `evaluate` (docs/alignment.md, "Evaluation"): masked PSNR / SSIM
against float64 numpy references, the re-voiced (dubbing) rows, preservation outside the
dubbing mask, identity vs the reference frames, CSIM with ArcFace, and runs without person
conditions left as they were."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax import evaluate
from gcm_jax import image_quality
from gcm_jax import latents
from gcm_jax.data.talking_faces import ground_truth
from gcm_jax.models import diffusion_model
from gcm_jax.train import trainer
from tests import train_utils


# --- masked PSNR / SSIM ----------------------------------------------------------------------

def _psnr64(x, y, mask, data_range=2.0):
  """float64 masked PSNR of one image pair `[H, W, C]` with mask `[H, W]`."""
  x, y, m = np.float64(x), np.float64(y), np.asarray(mask, bool)
  mse = np.mean(np.square(x - y)[m])
  return 10 * np.log10(data_range ** 2 / max(mse, 1e-10))


def _ssim64(x, y, mask, data_range=2.0):
  """float64 SSIM (Wang et al. 2004) written out window by window: 11x11 Gaussian weights
  (sigma 1.5, sum 1), population moments, mean over the windows lying wholly in `mask` and
  over channels."""
  x, y = np.float64(x), np.float64(y)
  k, sigma = 11, 1.5
  g = np.exp(-0.5 * ((np.arange(k) - 5) / sigma) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  h, wd, c = x.shape
  values = []
  for i in range(h - k + 1):
    for j in range(wd - k + 1):
      if not np.all(mask[i:i + k, j:j + k]):
        continue
      for ch in range(c):
        a, b = x[i:i + k, j:j + k, ch], y[i:i + k, j:j + k, ch]
        mu_a, mu_b = np.sum(w * a), np.sum(w * b)
        var_a, var_b = np.sum(w * (a - mu_a) ** 2), np.sum(w * (b - mu_b) ** 2)
        cov = np.sum(w * (a - mu_a) * (b - mu_b))
        values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                      / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
  return np.mean(values) if values else np.nan


def test_masked_psnr_and_ssim_match_float64_references():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 3, 20, 18, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
  mask = rng.uniform(size=(2, 3, 20, 18)) < 0.7
  mask[:, :, :13, :13] = True  # At least one whole window in the region.
  psnr = np.asarray(image_quality.psnr(jnp.asarray(x), jnp.asarray(y), mask=mask))
  ssim = np.asarray(image_quality.ssim(jnp.asarray(x), jnp.asarray(y), mask=mask))
  assert psnr.shape == ssim.shape == (2, 3)
  for i in range(2):
    for t in range(3):
      np.testing.assert_allclose(psnr[i, t], _psnr64(x[i, t], y[i, t], mask[i, t]), atol=1e-4)
      np.testing.assert_allclose(ssim[i, t], _ssim64(x[i, t], y[i, t], mask[i, t]), atol=1e-5)
  # An all-ones mask is the unmasked metric; a broadcast mask [H, W] is one per image.
  full = np.ones((20, 18), bool)
  np.testing.assert_allclose(image_quality.psnr(x, y, mask=full), image_quality.psnr(x, y),
                             rtol=1e-6)
  np.testing.assert_allclose(image_quality.ssim(x, y, mask=full), image_quality.ssim(x, y),
                             atol=1e-6)
  np.testing.assert_allclose(ssim[0, 0], _ssim64(x[0, 0], y[0, 0], full & mask[0, 0]),
                             atol=1e-5)


def test_a_mask_leaving_out_where_images_differ_reads_them_equal():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (2, 24, 24, 3)).astype(np.float32)
  y = x.copy()
  y[:, 12:] = rng.uniform(-1, 1, y[:, 12:].shape)  # They differ in the lower rows only.
  upper = np.zeros((24, 24), bool)
  upper[:12] = True
  identical = image_quality.psnr(x, x)
  np.testing.assert_array_equal(image_quality.psnr(x, y, mask=upper), identical)  # MSE 0.
  np.testing.assert_array_equal(image_quality.ssim(x, y, mask=upper), np.ones(2, np.float32))
  # Left in, the difference shows; a region without a whole 11x11 window is NaN.
  assert np.all(np.asarray(image_quality.psnr(x, y)) < 20)
  assert np.all(np.asarray(image_quality.ssim(x, y, mask=~upper)) < 0.5)
  thin = np.zeros((24, 24), bool)
  thin[:10] = True
  assert np.all(np.isnan(image_quality.ssim(x, y, mask=thin)))
  assert np.all(np.isnan(image_quality.psnr(x, y, mask=np.zeros((24, 24), bool))))
  with pytest.raises(ValueError, match=r"mask must be \[\.\.\., 24, 24\]"):
    image_quality.psnr(x, y, mask=np.ones((24, 23), bool))
