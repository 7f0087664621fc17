"""Noise schedules: x_t = alpha(t) x_0 + sigma(t) eps, continuous time t in [0, 1].

Every schedule is a frozen (hashable, jit-static) dataclass defined by its log-SNR
`logsnr(t) = log(alpha^2 / sigma^2)`, decreasing in t (t = 1 is the noisiest level), and the
exact inverse `t_from_logsnr`. Variance-preserving (VP) schedules have alpha^2 + sigma^2 = 1;
the EDM schedule is variance-exploding (alpha = 1, sigma = exp(-logsnr / 2)).

What the network sees as its noise-level input (`model_time`):
  * VP schedules (`LinearSchedule`, `CosineSchedule`, `DiscreteSchedule`): t itself
    (the STDiT multiplies it by config.model.time_scale = 1000 before its sinusoidal
    embedding; for a `DiscreteSchedule` of N = 1000 steps that is diffusers' timestep n).
  * `EDMSchedule`: c_noise = ln(sigma) / 4 (Karras et al. 2022, Table 1).

`BY_NAME` maps the config names (`config.diffusion.schedule`) to schedules with default
parameters; `SPACINGS` maps the sampler grid names (`config.sampling.spacing`) to grids.
All functions accept numpy (evaluated in numpy, float64 for static sampler grids) or jax arrays.
"""
import dataclasses
import functools
from typing import Callable, ClassVar, Union

import jax.numpy as jnp
import numpy as np

Array = Union[np.ndarray, jnp.ndarray, float]

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
  """VP cosine schedule of Kingma & Gao 2023 (App. E) and Hoogeboom et al. 2023 ("simple
  diffusion"): alpha^2 = cos^2(pi t / 2) without offset, i.e. logsnr = -2 log tan(pi t / 2),
  truncated to [logsnr_min, logsnr_max] by mapping t affinely onto the angle range:
  logsnr(t) = -2 log tan(a t + b), b = arctan(exp(-logsnr_max / 2)),
  a = arctan(exp(-logsnr_min / 2)) - b.

  It is *not* Nichol & Dhariwal 2021's cosine schedule (offset s = 0.008 and discrete betas
  clipped at 0.999, diffusers' "squaredcos_cap_v2"): that one is `BY_NAME["squaredcos_cap_v2"]`.
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


def _linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
  """diffusers "linear" (DDPM, Ho et al. 2020): beta_n = linspace(beta_start, beta_end, N)."""
  return np.linspace(beta_start, beta_end, num_train_timesteps)


def _scaled_linear_betas(num_train_timesteps: int, beta_start: float,
                         beta_end: float) -> np.ndarray:
  """diffusers "scaled_linear" (Stable Diffusion): betas linspace(sqrt(beta_start),
  sqrt(beta_end), N)^2."""
  return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps)**2


def _squaredcos_cap_v2_betas(num_train_timesteps: int, beta_start: float,
                             beta_end: float) -> np.ndarray:
  """diffusers "squaredcos_cap_v2" (`betas_for_alpha_bar`; Nichol & Dhariwal 2021 eq. 17 with
  s = 0.008): beta_n = min(1 - f((n + 1) / N) / f(n / N), 0.999) with
  f(t) = cos^2((t + 0.008) / 1.008 pi / 2). beta_start and beta_end are unused, as in diffusers.
  """
  del beta_start, beta_end
  f = np.cos((np.arange(num_train_timesteps + 1) / num_train_timesteps + 0.008) / 1.008
             * np.pi / 2)**2
  return np.minimum(1.0 - f[1:] / f[:-1], 0.999)


# diffusers' `beta_schedule` names -> betas [N] from (num_train_timesteps, beta_start, beta_end).
BETA_SCHEDULES: dict[str, Callable[[int, float, float], np.ndarray]] = {
    "linear": _linear_betas,
    "scaled_linear": _scaled_linear_betas,
    "squaredcos_cap_v2": _squaredcos_cap_v2_betas,
}


@dataclasses.dataclass(frozen=True)
class DiscreteSchedule:
  """VP schedule given by a table of N discrete betas, as trained with DDPM / diffusers.

  Step n in {0, ..., N - 1} (diffusers' integer `timestep`, n = N - 1 the noisiest) is t = n / N,
  and alpha(n / N)^2 = alphabar_n = prod_{m <= n} (1 - beta_m) (to float64 rounding). So
  t_min = 0 is step 0 (alphabar_0 = 1 - beta_0, not clean) and t_max = (N - 1) / N.
  Between grid points the log-SNR lambda_n = log(alphabar_n / (1 - alphabar_n)) is interpolated
  linearly in t: logsnr(t) = (1 - w) lambda_n + w lambda_{n + 1}, n = floor(N t), w = N t - n,
  continued linearly beyond [t_min, t_max] by the end segments (for EDM churn or log-normal
  training noise levels); `t_from_logsnr` is its exact inverse. `model_time(t) = t`, so the
  STDiT embeds time_scale * t = n * time_scale / N: diffusers' timestep n when
  config.model.time_scale == N (1000 for the `BY_NAME` presets).

  Attributes:
    betas: beta_0 ... beta_{N - 1}, N >= 2, each in (0, 1) (any sequence; stored as a tuple).
    label: shown in repr; not compared.
  """
  betas: tuple[float, ...] = dataclasses.field(repr=False)
  label: str = dataclasses.field(default="custom", compare=False)
  t_min: ClassVar[float] = 0.0
  variance_preserving: ClassVar[bool] = True

  def __post_init__(self):
    betas = np.asarray(self.betas, np.float64)
    if betas.ndim != 1 or betas.size < 2 or not np.all((betas > 0) & (betas < 1)):
      raise ValueError(f"betas must be a 1-D table of >= 2 values in (0, 1), got {self.betas!r}")
    object.__setattr__(self, "betas", tuple(float(b) for b in betas))

  @classmethod
  def from_diffusers(cls, beta_schedule: str, num_train_timesteps: int = 1000,
                     beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiscreteSchedule":
    """The schedule of a diffusers scheduler config (same argument names and defaults)."""
    if beta_schedule not in BETA_SCHEDULES:
      raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected one of "
                       f"{sorted(BETA_SCHEDULES)}")
    betas = BETA_SCHEDULES[beta_schedule](num_train_timesteps, beta_start, beta_end)
    return cls(betas, label=f"{beta_schedule}(num_train_timesteps={num_train_timesteps}, "
               f"beta_start={beta_start}, beta_end={beta_end})")

  @property
  def num_train_timesteps(self) -> int:
    return len(self.betas)

  @property
  def t_max(self) -> float:
    return (self.num_train_timesteps - 1) / self.num_train_timesteps

  @functools.cached_property
  def _logsnr_table(self) -> np.ndarray:
    """float64 lambda_n [N], strictly decreasing."""
    alphabar = np.cumprod(1.0 - np.asarray(self.betas))
    return np.log(alphabar) - np.log1p(-alphabar)

  def logsnr(self, t: Array) -> Array:
    xp = _xp(t)
    lam, n = xp.asarray(self._logsnr_table), self.num_train_timesteps
    steps = n * t
    i = xp.clip(xp.floor(steps), 0, n - 2).astype(int)
    w = steps - i
    return (1 - w) * lam[i] + w * lam[i + 1]

  def t_from_logsnr(self, logsnr: Array) -> Array:
    xp = _xp(logsnr)
    lam, n = xp.asarray(self._logsnr_table), self.num_train_timesteps
    i = xp.clip(xp.searchsorted(-lam, -logsnr, side="right") - 1, 0, n - 2)
    return (i + (lam[i] - logsnr) / (lam[i] - lam[i + 1])) / n

  def model_time(self, t: Array) -> Array:
    return t


Schedule = Union[LinearSchedule, CosineSchedule, EDMSchedule, DiscreteSchedule]
# config.diffusion.schedule names -> schedule constructors (no arguments).
BY_NAME: dict[str, Callable[[], Schedule]] = {
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "edm": EDMSchedule,
    "squaredcos_cap_v2": functools.partial(DiscreteSchedule.from_diffusers, "squaredcos_cap_v2"),
    "scaled_linear": functools.partial(DiscreteSchedule.from_diffusers, "scaled_linear",
                                       beta_start=0.00085, beta_end=0.012),
    "linear_discrete": functools.partial(DiscreteSchedule.from_diffusers, "linear",
                                         beta_start=1e-4, beta_end=0.02),
}


def from_name(name: str) -> Schedule:
  """The schedule with default parameters for a config name (a key of `BY_NAME`)."""
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


def _uniform(num_steps: int) -> np.ndarray:
  return np.linspace(0.0, 1.0, num_steps)


def _time_spacing(schedule: Schedule, num_steps: int, rho: float) -> np.ndarray:
  """Uniform in t."""
  del rho
  return schedule.t_max + _uniform(num_steps) * (schedule.t_min - schedule.t_max)


def _logsnr_bounds(schedule: Schedule) -> tuple[float, float]:
  return schedule.logsnr(float(schedule.t_max)), schedule.logsnr(float(schedule.t_min))


def _logsnr_spacing(schedule: Schedule, num_steps: int, rho: float) -> np.ndarray:
  """Uniform in log-SNR (DPM-Solver)."""
  del rho
  hi, lo = _logsnr_bounds(schedule)
  return schedule.t_from_logsnr(hi + _uniform(num_steps) * (lo - hi))


def _karras_spacing(schedule: Schedule, num_steps: int, rho: float) -> np.ndarray:
  """Uniform in sigma_hat^(1/rho), sigma_hat = sigma / alpha (EDM eq. 5)."""
  hi, lo = _logsnr_bounds(schedule)
  s_max, s_min = np.exp(-0.5 * hi)**(1 / rho), np.exp(-0.5 * lo)**(1 / rho)
  return schedule.t_from_logsnr(
      -2.0 * rho * np.log(s_max + _uniform(num_steps) * (s_min - s_max)))


def _train_steps(schedule: Schedule, num_steps: int, spacing: str) -> int:
  """N of a discrete schedule, checking that `spacing` applies (1 <= num_steps <= N)."""
  if not isinstance(schedule, DiscreteSchedule):
    raise ValueError(f"spacing {spacing!r} needs a DiscreteSchedule (e.g. schedule "
                     f"'scaled_linear'), got {type(schedule).__name__}")
  if num_steps > schedule.num_train_timesteps:
    raise ValueError(f"spacing {spacing!r}: num_steps={num_steps} exceeds the schedule's "
                     f"{schedule.num_train_timesteps} discrete steps")
  return schedule.num_train_timesteps


def _leading_spacing(schedule: Schedule, num_steps: int, rho: float) -> np.ndarray:
  """diffusers "leading" (steps_offset = 0): steps n_i = (K - 1 - i) floor(N / K), t = n / N."""
  del rho
  n = _train_steps(schedule, num_steps, "leading")
  return np.arange(num_steps - 1, -1, -1) * (n // num_steps) / n


def _trailing_spacing(schedule: Schedule, num_steps: int, rho: float) -> np.ndarray:
  """diffusers "trailing": steps n_i = round(N - i N / K) - 1 (from N - 1 down), t = n / N."""
  del rho
  n = _train_steps(schedule, num_steps, "trailing")
  return (np.round(n - np.arange(num_steps) * (n / num_steps)) - 1) / n


# config.sampling.spacing names -> (schedule, num_steps, rho) -> decreasing float64 times [N].
SPACINGS: dict[str, Callable[[Schedule, int, float], np.ndarray]] = {
    "time": _time_spacing,
    "logsnr": _logsnr_spacing,
    "karras": _karras_spacing,
    "leading": _leading_spacing,
    "trailing": _trailing_spacing,
}


def time_grid(schedule: Schedule, num_steps: int, spacing: str = "time",
              rho: float = 7.0) -> np.ndarray:
  """Decreasing float64 grid of `num_steps` sampler times.

  spacing (a key of SPACINGS): from schedule.t_max to schedule.t_min "time" (uniform in t),
  "logsnr" (uniform in log-SNR, DPM-Solver) or "karras" (uniform in sigma_hat^(1/rho) where
  sigma_hat = sigma / alpha, EDM eq. 5); for a `DiscreteSchedule` also diffusers' "leading" and
  "trailing" timesteps n (as t = n / N; "leading" starts below t_max).
  Samplers append the clean end point (alpha, sigma) = (1, 0) after this grid.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if spacing not in SPACINGS:
    raise ValueError(f"unknown spacing {spacing!r}; expected one of {sorted(SPACINGS)}")
  return SPACINGS[spacing](schedule, num_steps, rho)
