"""Isotropic Gaussian mixture toy data with its exact (closed-form) denoiser, for tests/benchmarks.

x0 ~ sum_k w_k N(mu_k, s_k^2 I) in D dims. Under x_t = alpha x0 + sigma eps,
p(x_t) = sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I) and the exact denoiser is
E[x0 | x_t] = sum_k p(k | x_t) (mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k)).
With one component it is linear in x_t, which makes sampler comparisons exact.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from gcm_jax.diffusion import parameterization, schedules


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
  """means [K, D], stds [K], weights [K] summing to 1. Hashed by identity (jit-static)."""
  means: np.ndarray
  stds: np.ndarray
  weights: np.ndarray

  def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
    """n float64 samples [n, D]."""
    k = rng.choice(len(self.weights), size=n, p=self.weights)
    return self.means[k] + self.stds[k, None] * rng.standard_normal((n, self.means.shape[1]))


def ring_mixture(num_modes: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
  """num_modes equal-weight 2-D Gaussians evenly spaced on a circle."""
  angle = 2 * np.pi * np.arange(num_modes) / num_modes
  means = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
  return GaussianMixture(means, np.full(num_modes, std), np.full(num_modes, 1.0 / num_modes))


def exact_x0(mixture: GaussianMixture, x_t: jax.Array, alpha: jax.Array,
             sigma: jax.Array) -> jax.Array:
  """E[x0 | x_t] for x_t [B, D]; alpha, sigma scalars or [B]."""
  mu = jnp.asarray(mixture.means, x_t.dtype)
  s2 = jnp.asarray(mixture.stds, x_t.dtype)**2
  alpha = parameterization.expand_to(alpha, x_t)
  sigma = parameterization.expand_to(sigma, x_t)
  var = alpha**2 * s2 + sigma**2  # [B or 1, K]
  diff = x_t[:, None, :] - alpha[..., None] * mu  # [B, K, D]
  logp = (jnp.log(jnp.asarray(mixture.weights, x_t.dtype)) - 0.5 * mu.shape[1] * jnp.log(var)
          - 0.5 * jnp.sum(diff**2, -1) / var)
  post = jax.nn.softmax(logp, axis=-1)
  gain = (alpha * s2 / var)[..., None]
  return jnp.einsum("bk,bkd->bd", post, mu + gain * diff)


def exact_denoiser(mixture: GaussianMixture,
                   schedule: schedules.Schedule) -> parameterization.DenoiseFn:
  """x0-denoiser `(x_t [B, D], t, cond) -> x0 [B, D]` in schedule time (cond ignored)."""

  def denoise_fn(x_t, t, cond):
    del cond
    alpha, sigma = schedules.alpha_sigma(schedule, jnp.asarray(t, x_t.dtype))
    return exact_x0(mixture, x_t, alpha, sigma)

  return denoise_fn


def _mixture_quantiles(means_1d, stds, weights, probs, num_grid=1 << 16):
  """Quantiles of a 1-D Gaussian mixture by inverting its CDF on a fine grid."""
  lo, hi = np.min(means_1d - 9 * stds), np.max(means_1d + 9 * stds)
  xs = np.linspace(lo, hi, num_grid)
  cdf = special.ndtr((xs[:, None] - means_1d) / stds) @ weights
  return np.interp(probs, cdf, xs)


def sliced_w2(mixture: GaussianMixture, samples: np.ndarray, num_projections: int = 64,
              seed: int = 0) -> float:
  """Sliced 2-Wasserstein distance between samples [n, D] and the exact mixture.

  Averages W2^2 over random unit directions, each computed exactly against the projected 1-D
  mixture's quantile function; returns the square root.
  """
  samples = np.asarray(samples, np.float64)
  n, dim = samples.shape
  dirs = np.random.default_rng(seed).standard_normal((num_projections, dim))
  dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
  probs = (np.arange(n) + 0.5) / n
  total = 0.0
  for d in dirs:
    q = _mixture_quantiles(mixture.means @ d, mixture.stds, mixture.weights, probs)
    total += np.mean((np.sort(samples @ d) - q)**2)
  return float(np.sqrt(total / num_projections))



@jax.jit
def _empirical_cf(samples: jax.Array, w: jax.Array) -> jax.Array:
  """Means of cos(w . x) and sin(w . x) over samples [n, D]: [2, F] for w [chunks, F/chunks, D]."""
  def one(w_chunk):
    proj = samples @ w_chunk.T
    return jnp.stack([jnp.mean(jnp.cos(proj), 0), jnp.mean(jnp.sin(proj), 0)])
  return jnp.concatenate(jax.lax.map(one, w), axis=1)


def mmd(mixture: GaussianMixture, samples: np.ndarray, bandwidths=(0.05, 0.2, 1.0),
        num_frequencies: int = 1024, seed: int = 0) -> float:
  """Unbiased MMD^2 between samples [n, D] and the exact mixture, for a Gaussian kernel mixture.

  Random Fourier features: MMD^2 = E_w |phi_P(w) - phi_Q(w)|^2 with w ~ N(0, I / l^2), l drawn
  uniformly from `bandwidths` (a fixed draw per seed, i.e. a fixed kernel). phi_Q, the mixture's
  characteristic function, is exact, and |phi_P|^2 uses the unbiased (n |phi_n|^2 - 1) / (n - 1),
  so i.i.d. samples from the mixture score 0 in expectation (the estimate can be negative).
  num_frequencies must be a multiple of 128.
  """
  n, dim = np.shape(samples)
  rng = np.random.default_rng(seed)
  scale = rng.choice(np.asarray(bandwidths, np.float64), num_frequencies)
  w = rng.standard_normal((num_frequencies, dim)) / scale[:, None]
  phi_q = np.exp(1j * w @ mixture.means.T - 0.5 * np.sum(w**2, 1, keepdims=True)
                 * mixture.stds**2) @ mixture.weights
  cos_sin = np.asarray(_empirical_cf(jnp.asarray(samples, jnp.float32),
                                     jnp.asarray(w.reshape(-1, 128, dim), jnp.float32)), np.float64)
  phi_n = cos_sin[0] + 1j * cos_sin[1]
  p_sq = (n * np.abs(phi_n)**2 - 1) / (n - 1)
  return float(np.mean(p_sq - 2 * np.real(phi_n * np.conj(phi_q)) + np.abs(phi_q)**2))
