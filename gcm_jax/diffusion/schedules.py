"""Noise schedules: x_t = alpha(t) x_0 + sigma(t) eps, continuous time t in [0, 1].

Every schedule is a frozen (hashable, jit-static) dataclass defined by its log-SNR
`logsnr(t) = log(alpha^2 / sigma^2)`, decreasing in t (t = 1 is the noisiest level), and the
analytic inverse `t_from_logsnr`. Variance-preserving (VP) schedules have alpha^2 + sigma^2 = 1;
the EDM schedule is variance-exploding (alpha = 1, sigma = exp(-logsnr / 2)).

What the network sees as its noise-level input (`model_time`):
  * VP schedules (`LinearSchedule`, `CosineSchedule`): t itself, continuous in [0, 1]
    (the model multiplies it by 1000 before its sinusoidal embedding).
  * `EDMSchedule`: c_noise = ln(sigma) / 4 (Karras et al. 2022, Table 1).

All functions accept numpy (evaluated in numpy, float64 for static sampler grids) or jax arrays.
"""
import dataclasses
from typing import ClassVar, Union

import jax.numpy as jnp
import numpy as np

Array = Union[np.ndarray, jnp.ndarray, float]

SPACINGS = ("time", "logsnr", "karras")


def _xp(x: Array):
  """numpy for numpy/python inputs (exact float64 grids), jax.numpy otherwise."""
  return np if isinstance(x, (float, int, np.ndarray, np.generic)) else jnp


@dataclasses.dataclass(frozen=True)
class LinearSchedule:
  """VP schedule with linear beta(t) (DDPM, Ho et al. 2020; continuous form of Song et al. 2021).

  alpha(t)^2 = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2)). The defaults match DDPM's
  discrete beta_1 = 1e-4 ... beta_1000 = 0.02, with discrete step n <-> t = n / 1000.
  """
  beta_min: float = 0.1
  beta_max: float = 20.0
  t_min: float = 1e-3
  t_max: float = 1.0
  variance_preserving: ClassVar[bool] = True

  def logsnr(self, t: Array) -> Array:
    xp = _xp(t)
    integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
    return -xp.log(xp.expm1(integral))

  def t_from_logsnr(self, logsnr: Array) -> Array:
    xp = _xp(logsnr)
    integral = xp.log1p(xp.exp(-logsnr))
    slope = self.beta_max - self.beta_min
    return (xp.sqrt(self.beta_min**2 + 2.0 * slope * integral) - self.beta_min) / slope

  def model_time(self, t: Array) -> Array:
    return t


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
  """VP cosine schedule alpha^2 = cos^2(pi t / 2) (Nichol & Dhariwal 2021), with its log-SNR
  truncated to [logsnr_min, logsnr_max] as in Kingma & Gao 2023:
  logsnr(t) = -2 log tan(a t + b).
  """
  logsnr_min: float = -15.0
  logsnr_max: float = 15.0
  t_min: float = 0.0
  t_max: float = 1.0
  variance_preserving: ClassVar[bool] = True

  def _ab(self):
    b = np.arctan(np.exp(-0.5 * self.logsnr_max))
    return np.arctan(np.exp(-0.5 * self.logsnr_min)) - b, b

  def logsnr(self, t: Array) -> Array:
    xp = _xp(t)
    a, b = self._ab()
    return -2.0 * xp.log(xp.tan(a * t + b))

  def t_from_logsnr(self, logsnr: Array) -> Array:
    xp = _xp(logsnr)
    a, b = self._ab()
    return (xp.arctan(xp.exp(-0.5 * logsnr)) - b) / a

  def model_time(self, t: Array) -> Array:
    return t


@dataclasses.dataclass(frozen=True)
class EDMSchedule:
  """Variance-exploding EDM schedule (Karras et al. 2022): alpha = 1 and
  sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,
  so a uniform grid in t is exactly EDM's time discretization (eq. 5).
  """
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  rho: float = 7.0
  t_min: float = 0.0
  t_max: float = 1.0
  variance_preserving: ClassVar[bool] = False

  def sigma(self, t: Array) -> Array:
    lo, hi = self.sigma_min**(1 / self.rho), self.sigma_max**(1 / self.rho)
    return (lo + t * (hi - lo))**self.rho

  def logsnr(self, t: Array) -> Array:
    return -2.0 * _xp(t).log(self.sigma(t))

  def t_from_logsnr(self, logsnr: Array) -> Array:
    lo, hi = self.sigma_min**(1 / self.rho), self.sigma_max**(1 / self.rho)
    return (_xp(logsnr).exp(-0.5 * logsnr / self.rho) - lo) / (hi - lo)

  def model_time(self, t: Array) -> Array:
    return 0.25 * _xp(t).log(self.sigma(t))


Schedule = Union[LinearSchedule, CosineSchedule, EDMSchedule]
BY_NAME = {"linear": LinearSchedule, "cosine": CosineSchedule, "edm": EDMSchedule}


def from_name(name: str) -> Schedule:
  """The schedule with default parameters for a config name ('linear', 'cosine', 'edm')."""
  if name not in BY_NAME:
    raise ValueError(f"unknown schedule {name!r}; expected one of {sorted(BY_NAME)}")
  return BY_NAME[name]()


def alpha_sigma_from_logsnr(schedule: Schedule, logsnr: Array) -> tuple[Array, Array]:
  """(alpha, sigma) for a log-SNR value under the schedule's family (VP or VE)."""
  xp = _xp(logsnr)
  if schedule.variance_preserving:
    return xp.sqrt(1.0 / (1.0 + xp.exp(-logsnr))), xp.sqrt(1.0 / (1.0 + xp.exp(logsnr)))
  return xp.ones_like(logsnr), xp.exp(-0.5 * logsnr)


def alpha_sigma(schedule: Schedule, t: Array) -> tuple[Array, Array]:
  """(alpha(t), sigma(t)), same shape as t."""
  return alpha_sigma_from_logsnr(schedule, schedule.logsnr(t))


def time_grid(schedule: Schedule, num_steps: int, spacing: str = "time",
              rho: float = 7.0) -> np.ndarray:
  """Decreasing float64 grid of `num_steps` times from schedule.t_max to schedule.t_min.

  spacing: "time" (uniform in t), "logsnr" (uniform in log-SNR, DPM-Solver), or "karras"
  (uniform in sigma_hat^(1/rho) where sigma_hat = sigma / alpha, EDM eq. 5).
  Samplers append the clean end point (alpha, sigma) = (1, 0) after this grid.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if spacing not in SPACINGS:
    raise ValueError(f"unknown spacing {spacing!r}; expected one of {SPACINGS}")
  u = np.linspace(0.0, 1.0, num_steps)
  if spacing == "time":
    return schedule.t_max + u * (schedule.t_min - schedule.t_max)
  hi, lo = schedule.logsnr(float(schedule.t_max)), schedule.logsnr(float(schedule.t_min))
  if spacing == "logsnr":
    return schedule.t_from_logsnr(hi + u * (lo - hi))
  s_max, s_min = np.exp(-0.5 * hi)**(1 / rho), np.exp(-0.5 * lo)**(1 / rho)
  return schedule.t_from_logsnr(-2.0 * rho * np.log(s_max + u * (s_min - s_max)))
