"""Gaussian-mixture toy: exact denoiser and the distribution metrics used by the benchmark."""
import jax.numpy as jnp
import numpy as np

from gcm_jax.diffusion import toy

MIXTURE_1D = toy.GaussianMixture(np.array([[-1.0], [0.5], [2.0]]), np.array([0.3, 0.1, 0.5]),
                                 np.array([0.2, 0.5, 0.3]))


def test_exact_denoiser_matches_numerical_posterior_mean():
  """E[x0 | x_t] by quadrature over x0 on a fine grid, float64 numpy."""
  x0 = np.linspace(-6, 6, 60_001)
  prior = sum(w * np.exp(-0.5 * ((x0 - m[0]) / s)**2) / s
              for m, s, w in zip(MIXTURE_1D.means, MIXTURE_1D.stds, MIXTURE_1D.weights))
  x_t = np.array([-2.0, -0.3, 0.4, 1.1, 3.0])
  for alpha, sigma in [(0.9, 0.4), (0.3, 1.2), (1.0, 0.05)]:
    like = np.exp(-0.5 * ((x_t[:, None] - alpha * x0) / sigma)**2)
    want = (like * prior * x0).sum(1) / (like * prior).sum(1)
    got = toy.exact_x0(MIXTURE_1D, jnp.asarray(x_t[:, None], jnp.float32), alpha, sigma)[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_metrics_are_small_for_true_samples_and_detect_errors():
  mixture = toy.ring_mixture()
  rng = np.random.default_rng(0)
  true = mixture.sample(rng, 10_000)
  mmd_true = toy.mmd(mixture, true, num_frequencies=128)
  mmd_wide = toy.mmd(mixture, true * 1.1, num_frequencies=128)
  assert abs(mmd_true) < 5e-4 < mmd_wide
  dropped = true[np.linalg.norm(true - mixture.means[0], axis=1) > 1.0]  # One mode missing.
  assert toy.mmd(mixture, dropped, num_frequencies=128) > 20 * abs(mmd_true)
  assert toy.sliced_w2(mixture, dropped, 8) > 3 * toy.sliced_w2(mixture, true, 8)
