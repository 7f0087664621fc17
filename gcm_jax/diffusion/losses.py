"""Denoising losses with weightings: uniform, min-SNR-gamma (Hang et al. 2023), EDM (Karras et al.).

The network regresses `parameterization.training_target` of its prediction type. Writing
SNR = alpha^2 / sigma^2 and MSE_x0 = ||x0_hat - x0||^2, the weightings are
  * "uniform": plain MSE on the target (the DDPM "simple" loss for eps).
  * "min_snr": min(SNR, gamma) MSE_x0, i.e. target MSE times min(SNR, gamma) / SNR for eps,
               min(SNR, gamma) for x0 and min(SNR, gamma) / (SNR + 1) for v (VP).
  * "v":       (min(SNR, gamma) + 1) MSE_x0: the v-MSE (whose x0 weight is SNR + 1 for VP),
               with SNR capped at gamma so the weight stays finite as t -> 0. With the x0
               prediction this is JiT's x-prediction + v-loss (Li & He 2025, "Back to Basics:
               Let Denoising Generative Models Denoise"; they cap the weight at 400): the
               network outputs clean images and the loss still weighs the low-noise levels
               where the details are decided (docs/results.md).
  * "edm":     lambda(sigma_hat) MSE_x0 with lambda = (sigma_hat^2 + sigma_data^2) /
               (sigma_hat sigma_data)^2, sigma_hat = sigma / alpha (EDM eq. 8; = F-target MSE).
Noise levels: "uniform" t ~ U(t_min, t_max), or EDM's "lognormal" ln sigma_hat ~ N(p_mean, p_std^2).
"uniform" with `time_shift` s != 1 draws u ~ U(0, 1) and takes the fraction s u / (1 + (s - 1) u)
of the way from t_min to t_max (Stable Diffusion 3's timestep shift, Esser et al. 2024, eq. 23,
applied to the training levels only): s > 1 trains more often at high noise, where only the
conditions say what the picture is (s = 3 trains t > 0.95 on 13.6% of the examples, not 5%).
"""
import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from gcm_jax.diffusion import parameterization, schedules

WEIGHTINGS = ("uniform", "min_snr", "v", "edm")
NOISE_DISTRIBUTIONS = ("uniform", "lognormal")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static loss configuration."""
  schedule: schedules.Schedule
  prediction: str = "eps"
  weighting: str = "uniform"
  min_snr_gamma: float = 5.0
  sigma_data: float = 0.5
  noise_distribution: str = "uniform"
  p_mean: float = -1.2
  p_std: float = 1.2
  time_shift: float = 1.0

  def __post_init__(self):
    parameterization.check_prediction(self.prediction)
    if self.weighting not in WEIGHTINGS:
      raise ValueError(f"unknown weighting {self.weighting!r}; expected one of {WEIGHTINGS}")
    if self.noise_distribution not in NOISE_DISTRIBUTIONS:
      raise ValueError(f"unknown noise_distribution {self.noise_distribution!r}; expected one of "
                       f"{NOISE_DISTRIBUTIONS}")
    if not self.time_shift > 0:
      raise ValueError(f"time_shift must be > 0, got {self.time_shift}")
    if self.time_shift != 1.0 and self.noise_distribution != "uniform":
      raise ValueError(f"time_shift {self.time_shift} shifts the 'uniform' noise distribution; "
                       f"noise_distribution is {self.noise_distribution!r}")


def sample_times(key: jax.Array, batch_size: int, cfg: LossConfig) -> jax.Array:
  """Training noise levels as schedule times t [B]."""
  if cfg.noise_distribution == "uniform":
    if cfg.time_shift == 1.0:
      return jax.random.uniform(key, (batch_size,), minval=cfg.schedule.t_min,
                                maxval=cfg.schedule.t_max)
    u = jax.random.uniform(key, (batch_size,))
    shifted = cfg.time_shift * u / (1.0 + (cfg.time_shift - 1.0) * u)
    return cfg.schedule.t_min + (cfg.schedule.t_max - cfg.schedule.t_min) * shifted
  log_sigma = cfg.p_mean + cfg.p_std * jax.random.normal(key, (batch_size,))
  return cfg.schedule.t_from_logsnr(-2.0 * log_sigma)


def loss_weight(cfg: LossConfig, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
  """Weight on the per-example target-space MSE for alpha, sigma [B]."""
  if cfg.weighting == "uniform":
    return jnp.ones_like(alpha)
  if cfg.weighting == "min_snr":
    x0_weight = jnp.minimum(alpha**2 / sigma**2, cfg.min_snr_gamma)
  elif cfg.weighting == "v":
    x0_weight = jnp.minimum(alpha**2 / sigma**2, cfg.min_snr_gamma) + 1.0
  else:
    s = sigma / alpha
    x0_weight = (s**2 + cfg.sigma_data**2) / (s * cfg.sigma_data)**2
  ratio = parameterization.target_to_x0_error_ratio(cfg.prediction, alpha, sigma, cfg.sigma_data)
  return x0_weight / ratio


def denoising_terms(model_fn: parameterization.ModelFn, key: jax.Array, x0: jax.Array, cond: Any,
                    cfg: LossConfig, loss_mask: Optional[jax.Array] = None,
                    known_fn: Optional[parameterization.KnownFn] = None
                    ) -> dict[str, jax.Array]:
  """Noises `x0`, runs the model once and returns the pieces of the denoising loss.

  Args: as `denoising_loss`; with `known_fn` (`parameterization.KnownFn`) the output is first
    given the known region (`parameterization.keep_known`), as `make_denoiser` gives it in
    sampling: where the known values equal x0 the error is 0 and the network learns the rest.
  Returns:
    'per_example': [B] weighted losses; 'x0_hat': the model's x0 estimate (shape of x0),
    for auxiliary losses on it (e.g. the SyncNet lip-sync loss); 'logsnr': [B] noise levels.
  """
  k_t, k_eps = jax.random.split(key)
  t = sample_times(k_t, x0.shape[0], cfg)
  alpha, sigma = schedules.alpha_sigma(cfg.schedule, t)
  a, s = parameterization.expand_to(alpha, x0), parameterization.expand_to(sigma, x0)
  eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
  x_t = a * x0 + s * eps
  scale = parameterization.model_input_scale(cfg.prediction, a, s, cfg.sigma_data)
  output = model_fn(scale * x_t, cfg.schedule.model_time(t), cond)
  if known_fn is not None:
    known, keep = known_fn(cond)
    output = parameterization.keep_known(cfg.prediction, output, x_t, a, s, known, keep,
                                         cfg.sigma_data)
  target = parameterization.training_target(cfg.prediction, x0, eps, a, s, cfg.sigma_data)
  err = (output - target)**2
  mask = jnp.ones_like(err) if loss_mask is None else jnp.broadcast_to(
      parameterization.expand_to(loss_mask, err), err.shape).astype(err.dtype)
  axes = tuple(range(1, err.ndim))
  mse = jnp.sum(err * mask, axes) / jnp.maximum(jnp.sum(mask, axes), 1.0)
  return {
      "per_example": loss_weight(cfg, alpha, sigma) * mse,
      "x0_hat": parameterization.output_to_x0(cfg.prediction, output, x_t, a, s,
                                               cfg.sigma_data),
      "logsnr": 2.0 * (jnp.log(alpha) - jnp.log(sigma)),
  }


def denoising_loss(model_fn: parameterization.ModelFn, key: jax.Array, x0: jax.Array, cond: Any,
                   cfg: LossConfig,
                   loss_mask: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  """Weighted denoising loss.

  Args:
    model_fn: `(x_in [B, ...], model_time [B], cond) -> output [B, ...]` (closes over params);
      called once on the noised batch as in `parameterization.make_denoiser`.
    key: PRNG key (noise level and noise).
    x0: clean data [B, ...], e.g. video [B, T, H, W, C].
    cond: passed to model_fn unchanged.
    cfg: LossConfig.
    loss_mask: optional bool mask or float weights broadcastable to x0 after right-padding
      its dims (e.g. [B, T] = ~cond['frame_mask'] so given frames do not count, or
      per-pixel weights [B, T, H, W]); the per-example MSE is the mask-weighted mean.
  Returns:
    (scalar loss = mean over the batch, per-example weighted losses [B]).
  """
  per_example = denoising_terms(model_fn, key, x0, cond, cfg, loss_mask)["per_example"]
  return jnp.mean(per_example), per_example
