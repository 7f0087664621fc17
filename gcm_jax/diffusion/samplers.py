"""Diffusion samplers as pure functions `(denoise_fn, key, x_T, cond, cfg) -> x_0`.

`denoise_fn(x_t, t, cond) -> x0_hat` is an x0-denoiser in schedule time (see
`parameterization.make_denoiser`); it is called with a scalar float t. `x_T` may be any pytree of
float arrays (a video `[B, T, H, W, C]` or a toy `[B, D]`); `cond` is passed through untouched.
Every loop is one `jax.lax.scan`, so a sampler is jittable with `cfg` and `denoise_fn` static.

The discretization is `schedules.time_grid(cfg.schedule, cfg.num_steps, cfg.spacing)` followed by
the clean end point (alpha, sigma) = (1, 0); every sampler's last step returns the denoiser's
output there. Per-step noise for step i is `noise_like(jax.random.split(key, num_steps)[i], x)`.

Samplers (NFE = number of denoise_fn calls):
  ddpm      Ho et al. 2020 Alg. 2 (ancestral), variance beta or posterior beta-tilde.     NFE = N
  ddim      Song et al. 2021 eq. 12 with eta (eta = 1 is ancestral with beta-tilde).      NFE = N
  dpmpp_2m  Lu et al. 2022 DPM-Solver++(2M) Alg. 2.                                       NFE = N
  dpmpp_3m  third-order multistep DPM-Solver++ (reference implementation).                NFE = N
  euler     Karras et al. 2022 Alg. 2 without the 2nd-order correction (Alg. 1 if no churn).
  heun      Karras et al. 2022 Alg. 1 (S_churn = 0) / Alg. 2 (stochastic churn).      NFE = 2N - 1

The first four are linear multistep updates x_{i+1} = a_i x_i + sum_j b_ij D_{i-j} + c_i z_i whose
coefficients are computed in float64 numpy from each paper's formula at trace time.
"""
import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax.diffusion import schedules


DDPM_VARIANCES = ("posterior", "beta")

DenoiseFn = Callable[[Any, jax.Array, Any], Any]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Static sampler configuration (hashable; pass as a static jit argument).

  Attributes:
    name: a key of SAMPLERS.
    num_steps: N >= 1 grid points before the clean end point.
    schedule: a `schedules` schedule.
    spacing: a key of `schedules.SPACINGS`: "time", "logsnr", "karras", or for a
      `schedules.DiscreteSchedule` diffusers' "leading" / "trailing" (see `schedules.time_grid`).
    rho: exponent of the "karras" spacing.
    eta: DDIM stochasticity (0 = deterministic DDIM, 1 = DDPM posterior variance).
    ddpm_variance: "posterior" (beta-tilde) or "beta" (Ho et al. 2020 Sec. 3.2).
    s_churn, s_tmin, s_tmax, s_noise: EDM Alg. 2 stochasticity, with s_tmin/s_tmax compared to
      sigma / alpha (EDM's sigma). s_churn = 0 gives the deterministic Alg. 1.
  """
  name: str
  num_steps: int
  schedule: schedules.Schedule = schedules.EDMSchedule()
  spacing: str = "time"
  rho: float = 7.0
  eta: float = 0.0
  ddpm_variance: str = "posterior"
  s_churn: float = 0.0
  s_tmin: float = 0.0
  s_tmax: float = math.inf
  s_noise: float = 1.0

  def __post_init__(self):
    if self.name not in SAMPLERS:
      raise ValueError(f"unknown sampler {self.name!r}; expected one of {tuple(SAMPLERS)}")
    if not isinstance(self.num_steps, (int, np.integer)) or self.num_steps < 1:
      raise ValueError(f"num_steps must be an int >= 1, got {self.num_steps!r}")
    schedules.time_grid(self.schedule, self.num_steps, self.spacing, self.rho)  # Validates.
    if self.ddpm_variance not in DDPM_VARIANCES:
      raise ValueError(f"ddpm_variance must be one of {DDPM_VARIANCES}, got {self.ddpm_variance!r}")
    if self.eta < 0 or self.s_churn < 0 or self.s_noise < 0:
      raise ValueError("eta, s_churn and s_noise must be >= 0")


def nfe(cfg: SamplerConfig) -> int:
  """Number of denoiser evaluations the sampler makes."""
  return 2 * cfg.num_steps - 1 if cfg.name == "heun" else cfg.num_steps


def noise_like(key: jax.Array, tree: Any) -> Any:
  """Standard normal noise with the structure, shapes and dtypes of `tree`."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten(
      [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def initial_noise(key: jax.Array, like: Any, cfg: SamplerConfig) -> Any:
  """x_T ~ N(0, sigma_0^2 I) at the grid's first time (t_max unless the spacing is "leading"),
  shaped like `like` (arrays or jax.ShapeDtypeStruct)."""
  sigma = grid(cfg)[2][0]
  return jax.tree.map(lambda z: sigma * z, noise_like(key, like))


def grid(cfg: SamplerConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float64 (t [N], alpha [N + 1], sigma [N + 1]) with the clean end point (1, 0) appended."""
  t = schedules.time_grid(cfg.schedule, cfg.num_steps, cfg.spacing, cfg.rho)
  alpha, sigma = schedules.alpha_sigma(cfg.schedule, t)
  return t, np.append(alpha, 1.0), np.append(sigma, 0.0)


def _float_dtype(tree) -> jnp.dtype:
  """Common dtype of the leaves: the precision the static grid coefficients are cast to."""
  return jnp.result_type(*jax.tree.leaves(tree))


def _lincomb(coefs, trees):
  """sum_k coefs[k] * trees[k] over matching pytrees (coefs are scalars)."""
  return jax.tree.map(
      lambda *xs: sum(c.astype(x.dtype) * x for c, x in zip(coefs, xs)), *trees)


def _step_keys(key, num_steps: int, stochastic: bool) -> jax.Array:
  """One key per step; deterministic samplers accept key=None (a placeholder is scanned)."""
  return jax.random.split(key, num_steps) if stochastic else jnp.zeros((num_steps,))


def _multistep(denoise_fn: DenoiseFn, key, x, cond, t, c_x, c_d, c_z):
  """Scans x_{i+1} = c_x[i] x_i + sum_j c_d[i, j] D_{i-j} + c_z[i] z_i, D_i = denoise(x_i, t_i)."""
  order = int(np.max(np.nonzero(np.any(c_d != 0, axis=0))[0], initial=0)) + 1
  stochastic = bool(np.any(c_z != 0))
  keys = _step_keys(key, len(t), stochastic)

  def step(carry, inputs):
    x, history = carry
    t_i, cx, cd, cz, k = inputs
    d = denoise_fn(x, t_i, cond)
    trees = (x, d) + history
    coefs = (cx,) + tuple(cd[j] for j in range(order))
    if stochastic:
      trees, coefs = trees + (noise_like(k, x),), coefs + (cz,)
    return (_lincomb(coefs, trees), ((d,) + history)[:order - 1]), None

  history = tuple(jax.tree.map(jnp.zeros_like, x) for _ in range(order - 1))
  dtype = _float_dtype(x)
  inputs = (jnp.asarray(t, dtype), jnp.asarray(c_x, dtype), jnp.asarray(c_d[:, :order], dtype),
            jnp.asarray(c_z, dtype), keys)
  (x, _), _ = jax.lax.scan(step, (x, history), inputs)
  return x


def _ddpm_coefficients(alpha, sigma, variance):
  """Ho et al. 2020 Alg. 2 for the (possibly respaced) grid: with alpha_t|s = alpha_t / alpha_s and
  beta_t = sigma_t|s^2 = sigma_t^2 - alpha_t|s^2 sigma_s^2 (= 1 - alphabar_t / alphabar_s in VP),
  x_s = (x_t - beta_t / sigma_t eps_hat) / alpha_t|s + std z, eps_hat = (x_t - alpha_t D) / sigma_t.
  """
  a_t, s_t, a_s, s_s = alpha[:-1], sigma[:-1], alpha[1:], sigma[1:]
  a_ts = a_t / a_s
  beta = s_t**2 - a_ts**2 * s_s**2
  c_x = (1.0 - beta / s_t**2) / a_ts
  c_d = beta * a_t / (s_t**2 * a_ts)
  var = beta * s_s**2 / s_t**2 if variance == "posterior" else np.where(s_s > 0, beta, 0.0)
  return c_x, c_d[:, None], np.sqrt(var)


def _ddim_coefficients(alpha, sigma, eta):
  """Song et al. 2021 eq. 12: x_s = alpha_s D + sqrt(sigma_s^2 - c^2) eps_hat + c z with
  c = eta sqrt(sigma_s^2 / sigma_t^2 (sigma_t^2 - alpha_t^2 / alpha_s^2 sigma_s^2))."""
  a_t, s_t, a_s, s_s = alpha[:-1], sigma[:-1], alpha[1:], sigma[1:]
  c = eta * np.sqrt(s_s**2 / s_t**2 * (s_t**2 - (a_t / a_s)**2 * s_s**2))
  direction = np.sqrt(np.maximum(s_s**2 - c**2, 0.0))
  return direction / s_t, (a_s - direction * a_t / s_t)[:, None], c


def _dpmpp_coefficients(alpha, sigma, order):
  """DPM-Solver++ multistep (Lu et al. 2022 Alg. 2 for order 2; order 3 as in the reference
  implementation's `multistep_dpm_solver_third_update`). Step i uses order min(order, i + 1),
  and first order on the step that lands on sigma = 0 (there h = inf and r = 0).
  Coefficients of D_i, D_{i-1}, D_{i-2} are read off by evaluating the update on unit vectors.
  """
  with np.errstate(divide="ignore"):
    lam = np.log(alpha) - np.log(sigma)
  n = len(alpha) - 1
  c_x, c_d = sigma[1:] / sigma[:-1], np.zeros((n, 3))
  m0, m1, m2 = np.eye(3)
  for i in range(n):
    a_t, h = alpha[i + 1], lam[i + 1] - lam[i]
    phi_1 = np.expm1(-h)
    k = 1 if sigma[i + 1] == 0 else min(order, i + 1)
    if k == 1:
      c_d[i] = -a_t * phi_1 * m0
    elif k == 2:
      r0 = (lam[i] - lam[i - 1]) / h
      c_d[i] = -a_t * phi_1 * ((1 + 1 / (2 * r0)) * m0 - 1 / (2 * r0) * m1)
    else:
      r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
      d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
      d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
      d2 = (d1_0 - d1_1) / (r0 + r1)
      phi_2 = phi_1 / h + 1.0
      phi_3 = phi_2 / h - 0.5
      c_d[i] = -a_t * phi_1 * m0 + a_t * phi_2 * d1 - a_t * phi_3 * d2
  return c_x, c_d, np.zeros(n)


def ddpm(denoise_fn: DenoiseFn, key: jax.Array, x_T: Any, cond: Any, cfg: SamplerConfig) -> Any:
  """DDPM ancestral sampling (Ho et al. 2020, Alg. 2). x_T: noise at the first grid time;
  returns x_0."""
  t, alpha, sigma = grid(cfg)
  return _multistep(denoise_fn, key, x_T, cond, t, *_ddpm_coefficients(alpha, sigma,
                                                                       cfg.ddpm_variance))


def ddim(denoise_fn: DenoiseFn, key: jax.Array, x_T: Any, cond: Any, cfg: SamplerConfig) -> Any:
  """DDIM (Song et al. 2021, eq. 12) with stochasticity cfg.eta."""
  t, alpha, sigma = grid(cfg)
  return _multistep(denoise_fn, key, x_T, cond, t, *_ddim_coefficients(alpha, sigma, cfg.eta))


def dpmpp_2m(denoise_fn: DenoiseFn, key: jax.Array, x_T: Any, cond: Any,
             cfg: SamplerConfig) -> Any:
  """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2); deterministic, key unused."""
  t, alpha, sigma = grid(cfg)
  return _multistep(denoise_fn, key, x_T, cond, t, *_dpmpp_coefficients(alpha, sigma, 2))


def dpmpp_3m(denoise_fn: DenoiseFn, key: jax.Array, x_T: Any, cond: Any,
             cfg: SamplerConfig) -> Any:
  """Third-order multistep DPM-Solver++; deterministic, key unused."""
  t, alpha, sigma = grid(cfg)
  return _multistep(denoise_fn, key, x_T, cond, t, *_dpmpp_coefficients(alpha, sigma, 3))


def _edm_sampler(denoise_fn: DenoiseFn, key, x_T, cond, cfg: SamplerConfig, second_order: bool):
  """Karras et al. 2022 Alg. 2 (Alg. 1 when s_churn = 0) with sigma(t) = t, s(t) = 1, run on
  x_hat = x / alpha with EDM sigmas sigma_hat = sigma / alpha; D(x_hat; sigma_hat) =
  denoise_fn(alpha x_hat, t(sigma_hat)). The step onto sigma = 0 is an Euler step (Alg. 1 line 6).
  """
  t, alpha, sigma = grid(cfg)
  n, schedule = cfg.num_steps, cfg.schedule
  s = sigma / alpha
  in_range = (s[:-1] >= cfg.s_tmin) & (s[:-1] <= cfg.s_tmax)
  gamma = np.where(in_range, min(cfg.s_churn / n, math.sqrt(2.0) - 1.0), 0.0)
  s_hat = s[:-1] * (1.0 + gamma)
  t_hat = np.where(gamma > 0, schedule.t_from_logsnr(-2.0 * np.log(s_hat)), t)
  a_hat = schedules.alpha_sigma(schedule, t_hat)[0]
  noise_std = cfg.s_noise * np.sqrt(s_hat**2 - s[:-1]**2)
  t_next, a_next = np.append(t[1:], 0.0), alpha[1:]
  keys = _step_keys(key, n, cfg.s_churn > 0)

  def denoise(x_hat, t_i, a_i):
    return denoise_fn(jax.tree.map(lambda v: a_i.astype(v.dtype) * v, x_hat), t_i, cond)

  def euler(x_hat, inputs):
    """Alg. 2 lines 4-8: churn, then an Euler step; returns (x_hat_i, x_{i+1}, d_i)."""
    k, std, th, ah, sh, sn = inputs[:6]
    if cfg.s_churn > 0:
      x_hat = _lincomb((jnp.ones_like(std), std), (x_hat, noise_like(k, x_hat)))
    d = jax.tree.map(lambda x, y: (x - y) / sh.astype(x.dtype), x_hat, denoise(x_hat, th, ah))
    return x_hat, _lincomb((jnp.ones_like(sh), sn - sh), (x_hat, d)), d

  def heun(x_hat, inputs):
    """Alg. 2 lines 9-11: second-order correction at sigma_{i+1} > 0."""
    sh, sn, tn, an = inputs[4:]
    x_prev, x_next, d = euler(x_hat, inputs)
    d2 = jax.tree.map(lambda x, y: (x - y) / sn.astype(x.dtype), x_next, denoise(x_next, tn, an))
    return _lincomb((jnp.ones_like(sh), 0.5 * (sn - sh), 0.5 * (sn - sh)), (x_prev, d, d2))

  dtype = _float_dtype(x_T)
  inputs = (keys,) + tuple(jnp.asarray(a, dtype)
                           for a in (noise_std, t_hat, a_hat, s_hat, s[1:], t_next, a_next))
  x_hat = jax.tree.map(lambda v: v / jnp.asarray(alpha[0], v.dtype), x_T)
  if second_order:
    head = jax.tree.map(lambda a: a[:-1], inputs)
    x_hat, _ = jax.lax.scan(lambda x, i: (heun(x, i), None), x_hat, head)
    return euler(x_hat, jax.tree.map(lambda a: a[-1], inputs))[1]
  x_hat, _ = jax.lax.scan(lambda x, i: (euler(x, i)[1], None), x_hat, inputs)
  return x_hat


def euler(denoise_fn: DenoiseFn, key: jax.Array, x_T: Any, cond: Any, cfg: SamplerConfig) -> Any:
  """EDM Euler sampler (Karras et al. 2022 Alg. 2 without lines 9-11), optional churn."""
  return _edm_sampler(denoise_fn, key, x_T, cond, cfg, second_order=False)


def heun(denoise_fn: DenoiseFn, key: jax.Array, x_T: Any, cond: Any, cfg: SamplerConfig) -> Any:
  """EDM Heun sampler (Karras et al. 2022 Alg. 1; Alg. 2 with s_churn > 0)."""
  return _edm_sampler(denoise_fn, key, x_T, cond, cfg, second_order=True)


# The sampler registry: name -> sampler (`config.sampling.sampler`).
SAMPLERS: dict[str, Callable[[DenoiseFn, jax.Array, Any, Any, SamplerConfig], Any]] = {
    "ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "dpmpp_3m": dpmpp_3m, "euler": euler,
    "heun": heun}


def sample(denoise_fn: DenoiseFn, key: jax.Array, x_T: Any, cond: Any, cfg: SamplerConfig) -> Any:
  """Runs the sampler named by cfg.name. Jit with `static_argnames=("denoise_fn", "cfg")` or
  close over them; x_T: noise at the first grid time (see `initial_noise`), any pytree;
  returns x_0 like x_T."""
  return SAMPLERS[cfg.name](denoise_fn, key, x_T, cond, cfg)
