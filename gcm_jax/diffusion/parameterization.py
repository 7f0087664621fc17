"""Network output parameterizations (eps, x0, v, EDM) and the x0-denoiser built from a model.

With x_t = alpha x0 + sigma eps:
  * "eps": the network predicts eps (Ho et al. 2020).
  * "x0":  the network predicts x0.
  * "v":   the network predicts v = alpha eps - sigma x0 (Salimans & Ho 2022); for general
           (non-VP) alpha, sigma we invert with x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2).
  * "edm": Karras et al. 2022 preconditioning with sigma_hat = sigma / alpha, x_hat = x_t / alpha:
           D = c_skip x_hat + c_out F(c_in x_hat); the network also sees its input scaled by c_in.

Samplers consume an x0-denoiser `denoise_fn(x_t, t, cond) -> x0_hat` in schedule time t;
`make_denoiser` builds one from a raw `model_fn(x_in, model_time [B], cond) -> output`.

A known region (inpainting, dubbing: `KnownFn`) replaces the x0 estimate there by the known
values, in training (`keep_known` on the raw output) and sampling (`make_denoiser`) alike, so
that the network only ever draws the rest.
"""
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from gcm_jax.diffusion import schedules

PREDICTIONS = ("eps", "x0", "v", "edm")

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
DenoiseFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
# cond -> (known x0 values [B, ...], keep weights broadcastable to them: 1 = known, 0 = drawn).
KnownFn = Callable[[Any], tuple[jax.Array, jax.Array]]


def check_prediction(prediction: str) -> None:
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


def expand_to(a: jax.Array, x: jax.Array) -> jax.Array:
  """Right-pads the dims of a per-example array `[B]` (or a scalar) to broadcast against x."""
  a = jnp.asarray(a)
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def _edm_coefficients(alpha, sigma, sigma_data):
  """(c_skip, c_out, c_in) of EDM Table 1 at sigma_hat = sigma / alpha, acting on x_hat."""
  s = sigma / alpha
  norm = s**2 + sigma_data**2
  return sigma_data**2 / norm, s * sigma_data / jnp.sqrt(norm), 1.0 / jnp.sqrt(norm)


def model_input_scale(prediction: str, alpha: jax.Array, sigma: jax.Array,
                      sigma_data: float = 0.5) -> jax.Array:
  """Factor applied to x_t before the network: c_in / alpha for "edm", 1 otherwise."""
  if prediction == "edm":
    return _edm_coefficients(alpha, sigma, sigma_data)[2] / alpha
  return jnp.ones_like(alpha)


def output_to_x0(prediction: str, output: jax.Array, x_t: jax.Array, alpha: jax.Array,
                 sigma: jax.Array, sigma_data: float = 0.5) -> jax.Array:
  """x0 from the raw network output; alpha, sigma broadcast against x_t."""
  if prediction == "eps":
    return (x_t - sigma * output) / alpha
  if prediction == "x0":
    return output
  if prediction == "v":
    return (alpha * x_t - sigma * output) / (alpha**2 + sigma**2)
  c_skip, c_out, _ = _edm_coefficients(alpha, sigma, sigma_data)
  return c_skip * x_t / alpha + c_out * output


def training_target(prediction: str, x0: jax.Array, eps: jax.Array, alpha: jax.Array,
                    sigma: jax.Array, sigma_data: float = 0.5) -> jax.Array:
  """The regression target for the network output (inverse of `output_to_x0` at the truth)."""
  if prediction == "eps":
    return eps
  if prediction == "x0":
    return x0
  if prediction == "v":
    return alpha * eps - sigma * x0
  c_skip, c_out, _ = _edm_coefficients(alpha, sigma, sigma_data)
  return (x0 - c_skip * (alpha * x0 + sigma * eps) / alpha) / c_out


def x0_to_output(prediction: str, x0: jax.Array, x_t: jax.Array, alpha: jax.Array,
                 sigma: jax.Array, sigma_data: float = 0.5) -> jax.Array:
  """The raw network output that `output_to_x0` maps to `x0` at this x_t (its inverse)."""
  return training_target(prediction, x0, (x_t - alpha * x0) / sigma, alpha, sigma, sigma_data)


def keep_known(prediction: str, output: jax.Array, x_t: jax.Array, alpha: jax.Array,
               sigma: jax.Array, known: jax.Array, keep: jax.Array,
               sigma_data: float = 0.5) -> jax.Array:
  """The raw output whose x0 is keep * known + (1 - keep) * (the output's own x0): the known
  region given, the network's estimate elsewhere (keep in [0, 1], broadcast against x_t)."""
  x0 = keep * known + (1 - keep) * output_to_x0(prediction, output, x_t, alpha, sigma, sigma_data)
  return x0_to_output(prediction, x0, x_t, alpha, sigma, sigma_data)


def target_to_x0_error_ratio(prediction: str, alpha: jax.Array, sigma: jax.Array,
                             sigma_data: float = 0.5) -> jax.Array:
  """k such that ||output - target||^2 = k ||x0_hat - x0||^2 (at fixed x_t)."""
  if prediction == "eps":
    return alpha**2 / sigma**2
  if prediction == "x0":
    return jnp.ones_like(alpha)
  if prediction == "v":
    return (alpha**2 + sigma**2)**2 / sigma**2
  return 1.0 / _edm_coefficients(alpha, sigma, sigma_data)[1]**2


def make_denoiser(model_fn: ModelFn, schedule: schedules.Schedule, prediction: str,
                  sigma_data: float = 0.5, known_fn: Optional[KnownFn] = None) -> DenoiseFn:
  """Wraps a raw network into an x0-denoiser `(x_t [B, ...], t scalar or [B], cond) -> x0 [B, ...]`.

  The network is called as `model_fn(scale * x_t, schedule.model_time(t) [B], cond)` where
  scale = `model_input_scale` (1 unless prediction == "edm"). With `known_fn`, x0 is the known
  values of `known_fn(cond)` where its keep weight is 1 (blended where it is in between).
  """
  check_prediction(prediction)

  def denoise_fn(x_t: jax.Array, t: jax.Array, cond: Any) -> jax.Array:
    t = jnp.broadcast_to(jnp.asarray(t, x_t.dtype), x_t.shape[:1])
    alpha, sigma = schedules.alpha_sigma(schedule, t)
    alpha, sigma = expand_to(alpha, x_t), expand_to(sigma, x_t)
    scale = model_input_scale(prediction, alpha, sigma, sigma_data)
    output = model_fn(scale * x_t, schedule.model_time(t), cond)
    x0 = output_to_x0(prediction, output, x_t, alpha, sigma, sigma_data)
    if known_fn is None:
      return x0
    known, keep = known_fn(cond)
    return keep * known + (1 - keep) * x0

  return denoise_fn
