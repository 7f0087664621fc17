"""Samplers vs float64 numpy transcriptions of the papers' algorithms.

The data distribution is a single Gaussian N(MU, S^2 I), whose exact denoiser is linear:
D(x; alpha, sigma) = MU + alpha S^2 / (alpha^2 S^2 + sigma^2) (x - alpha MU). The JAX samplers run
in float64 (jax.enable_x64) with the same per-step noise as the references, so agreement is to
rounding (rtol 1e-9); a float32 run is checked at rtol 2e-4.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.diffusion import parameterization, samplers, schedules, toy
from tests import diffusers_reference

MU, S = 0.7, 1.3
SHAPE = (5, 3)


def d_np(x, alpha, sigma):
  return MU + alpha * S**2 / (alpha**2 * S**2 + sigma**2) * (x - alpha * MU)


def make_denoiser(schedule):
  def denoise_fn(x, t, cond):
    del cond
    alpha, sigma = schedules.alpha_sigma(schedule, t)
    return d_np(x, alpha, sigma)
  return denoise_fn


def step_noise(key, cfg, x):
  keys = jax.random.split(key, cfg.num_steps)
  return [np.asarray(samplers.noise_like(k, jnp.asarray(x))) for k in keys]


def ddpm_reference(x, alpha, sigma, variance, z):
  """Ho et al. 2020 Alg. 2 in VP notation: abar = alpha^2, alpha_t = abar_t / abar_{t-1}."""
  abar = alpha**2
  for i in range(len(abar) - 1):
    a_t = abar[i] / abar[i + 1]
    beta_t = 1 - a_t
    eps = (x - np.sqrt(abar[i]) * d_np(x, alpha[i], sigma[i])) / np.sqrt(1 - abar[i])
    var = beta_t if variance == "beta" else (1 - abar[i + 1]) / (1 - abar[i]) * beta_t
    last = i == len(abar) - 2
    z_i = 0.0 if last else z[i]  # Alg. 2: z = 0 on the last step.
    x = (x - beta_t / np.sqrt(1 - abar[i]) * eps) / np.sqrt(a_t) + np.sqrt(var) * z_i
  return x


def ddim_reference(x, alpha, sigma, eta, z):
  """Song et al. 2021 eq. 12 (their alpha is abar = alpha^2)."""
  a = alpha**2
  for i in range(len(a) - 1):
    eps = (x - np.sqrt(a[i]) * d_np(x, alpha[i], sigma[i])) / np.sqrt(1 - a[i])
    s = eta * np.sqrt((1 - a[i + 1]) / (1 - a[i])) * np.sqrt(1 - a[i] / a[i + 1])
    x0 = (x - np.sqrt(1 - a[i]) * eps) / np.sqrt(a[i])
    x = np.sqrt(a[i + 1]) * x0 + np.sqrt(1 - a[i + 1] - s**2) * eps + s * z[i]
  return x


def dpmpp_2m_reference(x, alpha, sigma):
  """Lu et al. 2022 Alg. 2, first-order first step and first-order step onto sigma = 0."""
  lam = np.log(alpha[:-1] / sigma[:-1])
  prev = None
  for i in range(len(alpha) - 1):
    x_theta = d_np(x, alpha[i], sigma[i])
    if sigma[i + 1] == 0:
      x = x_theta  # h = inf: sigma_t / sigma_s = 0 and alpha_t (1 - e^-h) = 1.
    elif prev is None:
      h = lam[i + 1] - lam[i]
      x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * np.expm1(-h) * x_theta
    else:
      h, h_prev = lam[i + 1] - lam[i], lam[i] - lam[i - 1]
      r = h_prev / h
      d = (1 + 1 / (2 * r)) * x_theta - 1 / (2 * r) * prev
      x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * np.expm1(-h) * d
    prev = x_theta
  return x


def dpmpp_3m_reference(x, alpha, sigma):
  """DPM-Solver++ multistep order 3 as in dpm_solver_pytorch (multistep_dpm_solver_*_update)."""
  with np.errstate(divide="ignore"):
    lam = np.log(alpha / sigma)
  models = []
  for i in range(len(alpha) - 1):
    models.insert(0, d_np(x, alpha[i], sigma[i]))
    h = lam[i + 1] - lam[i]
    phi_1 = np.expm1(-h)
    order = 1 if sigma[i + 1] == 0 else min(3, i + 1)
    x_new = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * phi_1 * models[0]
    if order == 2:
      r0 = (lam[i] - lam[i - 1]) / h
      x_new -= 0.5 * alpha[i + 1] * phi_1 * (models[0] - models[1]) / r0
    elif order == 3:
      r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
      d1_0, d1_1 = (models[0] - models[1]) / r0, (models[1] - models[2]) / r1
      d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
      d2 = (d1_0 - d1_1) / (r0 + r1)
      phi_2 = phi_1 / h + 1.0
      phi_3 = phi_2 / h - 0.5
      x_new += alpha[i + 1] * phi_2 * d1 - alpha[i + 1] * phi_3 * d2
    x = x_new
  return x


def edm_reference(x, t, heun, s_churn, s_tmin, s_tmax, s_noise, z):
  """Karras et al. 2022 Alg. 2 (Alg. 1 when s_churn = 0) with D(x; t) for alpha = 1."""
  n = len(t) - 1
  for i in range(n):
    gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t[i] <= s_tmax else 0.0
    eps = s_noise * z[i]
    t_hat = t[i] + gamma * t[i]
    x_hat = x + np.sqrt(t_hat**2 - t[i]**2) * eps
    d = (x_hat - d_np(x_hat, 1.0, t_hat)) / t_hat
    x = x_hat + (t[i + 1] - t_hat) * d
    if heun and t[i + 1] != 0:
      d_prime = (x - d_np(x, 1.0, t[i + 1])) / t[i + 1]
      x = x_hat + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * d_prime)
  return x


def run(cfg, x_T, key):
  return np.asarray(jax.jit(lambda k, x: samplers.sample(make_denoiser(cfg.schedule), k, x, None,
                                                           cfg))(key, x_T))


def x_T_and_key(cfg, dtype=np.float64):
  x = np.random.default_rng(0).standard_normal(SHAPE).astype(dtype)
  _, sigma = schedules.alpha_sigma(cfg.schedule, float(cfg.schedule.t_max))
  return sigma * x, jax.random.key(42)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
@pytest.mark.parametrize("num_steps", [1, 30])
def test_ddpm_matches_ho_alg2(variance, num_steps):
  with jax.enable_x64(True):
    cfg = samplers.SamplerConfig("ddpm", num_steps, schedules.LinearSchedule(),
                                 ddpm_variance=variance)
    x_T, key = x_T_and_key(cfg)
    _, alpha, sigma = samplers.grid(cfg)
    want = ddpm_reference(x_T, alpha, sigma, variance, step_noise(key, cfg, x_T))
    np.testing.assert_allclose(run(cfg, x_T, key), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta,spacing", [(0.0, "time"), (0.5, "logsnr"), (1.0, "time")])
def test_ddim_matches_eq12(eta, spacing):
  with jax.enable_x64(True):
    cfg = samplers.SamplerConfig("ddim", 12, schedules.CosineSchedule(), spacing=spacing, eta=eta)
    x_T, key = x_T_and_key(cfg)
    _, alpha, sigma = samplers.grid(cfg)
    want = ddim_reference(x_T, alpha, sigma, eta, step_noise(key, cfg, x_T))
    np.testing.assert_allclose(run(cfg, x_T, key), want, rtol=1e-9, atol=1e-9)


def toy_eps_np(x, n):
  """A toy eps-prediction network of the diffusers timestep n (smooth, so a wrong n shows)."""
  return x * (0.4 + 0.2 * np.cos(n / 150)) + 0.1 * np.sin(n / 90)


def toy_eps_model(x_in, model_time, cond):
  """toy_eps_np as a gcm_jax model_fn: the STDiT sees n = time_scale (1000) * model_time [B]."""
  del cond
  n = parameterization.expand_to(1000.0 * model_time, x_in)
  return x_in * (0.4 + 0.2 * jnp.cos(n / 150)) + 0.1 * jnp.sin(n / 90)


@pytest.mark.parametrize("name,schedule_name,spacing,eta", [
    ("ddim", "scaled_linear", "leading", 0.0),
    ("ddim", "squaredcos_cap_v2", "trailing", 0.0),
    ("ddim", "linear_discrete", "leading", 0.5),
    ("ddpm", "scaled_linear", "leading", 0.0),
    ("ddpm", "squaredcos_cap_v2", "trailing", 0.0),
])
def test_discrete_schedule_sampling_matches_diffusers_scheduler_step(name, schedule_name, spacing,
                                                                     eta):
  """DDIMScheduler / DDPMScheduler (fixed_small) .step loops on diffusers' timesteps, with the
  same eps network (it sees the integer timestep there and 1000 * model_time here)."""
  with jax.enable_x64(True):
    cfg = samplers.SamplerConfig(name, 10, schedules.from_name(schedule_name), spacing=spacing,
                                 eta=eta)
    key = jax.random.key(3)
    x_T = np.asarray(samplers.initial_noise(key, jnp.zeros(SHAPE), cfg))
    alphabar = diffusers_reference.alphas_cumprod(diffusers_reference.BETAS[schedule_name]())
    timesteps = diffusers_reference.set_timesteps(spacing, 1000, 10)
    # x_T ~ N(0, 1 - alphabar at the first timestep) (diffusers: N(0, 1), ~ the same in VP).
    np.testing.assert_allclose(
        x_T, np.sqrt(1 - alphabar[timesteps[0]]) * np.asarray(samplers.noise_like(key, x_T)),
        rtol=1e-12)
    z = step_noise(key, cfg, x_T)
    x = x_T
    for i, n in enumerate(timesteps):
      eps = toy_eps_np(x, n)
      if name == "ddim":
        x = diffusers_reference.ddim_step(alphabar, 1000, 10, eps, n, x, eta, z[i])
      else:
        x = diffusers_reference.ddpm_step(alphabar, 1000, 10, eps, n, x, z[i])
    denoise_fn = parameterization.make_denoiser(toy_eps_model, cfg.schedule, "eps")
    got = jax.jit(lambda k, x: samplers.sample(denoise_fn, k, x, None, cfg))(key, x_T)
    np.testing.assert_allclose(got, x, rtol=1e-9, atol=1e-9)


def test_ddim_eta1_equals_ddpm_posterior_on_ve_schedule():
  with jax.enable_x64(True):
    a = samplers.SamplerConfig("ddim", 9, schedules.EDMSchedule(), eta=1.0)
    b = samplers.SamplerConfig("ddpm", 9, schedules.EDMSchedule())
    x_T, key = x_T_and_key(a)
    np.testing.assert_allclose(run(a, x_T, key), run(b, x_T, key), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,reference", [("dpmpp_2m", dpmpp_2m_reference),
                                            ("dpmpp_3m", dpmpp_3m_reference)])
@pytest.mark.parametrize("schedule,spacing", [(schedules.LinearSchedule(), "logsnr"),
                                              (schedules.CosineSchedule(), "time"),
                                              (schedules.EDMSchedule(), "karras")])
@pytest.mark.parametrize("num_steps", [1, 10])
def test_dpm_solver_pp_matches_reference(name, reference, schedule, spacing, num_steps):
  with jax.enable_x64(True):
    cfg = samplers.SamplerConfig(name, num_steps, schedule, spacing=spacing)
    x_T, key = x_T_and_key(cfg)
    _, alpha, sigma = samplers.grid(cfg)
    np.testing.assert_allclose(run(cfg, x_T, key), reference(x_T, alpha, sigma), rtol=1e-9,
                               atol=1e-9)


CHURN = [dict(), dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003),
         dict(s_churn=200.0)]


@pytest.mark.parametrize("name", ["euler", "heun"])
@pytest.mark.parametrize("churn", CHURN)
@pytest.mark.parametrize("num_steps", [1, 18])
def test_edm_samplers_match_karras_alg(name, churn, num_steps):
  with jax.enable_x64(True):
    cfg = samplers.SamplerConfig(name, num_steps, schedules.EDMSchedule(), **churn)
    x_T, key = x_T_and_key(cfg)
    _, _, sigma = samplers.grid(cfg)
    z = step_noise(key, cfg, x_T)
    args = (churn.get(k, d) for k, d in [("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", math.inf),
                                         ("s_noise", 1.0)])
    want = edm_reference(x_T, sigma, name == "heun", *args, z)
    np.testing.assert_allclose(run(cfg, x_T, key), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("churn", CHURN[:2])
def test_heun_on_vp_schedule_is_edm_alg_on_scaled_variables(churn):
  """On a VP schedule Alg. 2 runs on x_hat = x / alpha with sigma_hat = sigma / alpha."""
  with jax.enable_x64(True):
    cfg = samplers.SamplerConfig("heun", 8, schedules.LinearSchedule(), spacing="karras", **churn)
    x_T, key = x_T_and_key(cfg)
    _, alpha, sigma = samplers.grid(cfg)
    args = (churn.get(k, d) for k, d in [("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", math.inf),
                                         ("s_noise", 1.0)])
    want = edm_reference(x_T / alpha[0], sigma / alpha, True, *args, step_noise(key, cfg, x_T))
    np.testing.assert_allclose(run(cfg, x_T, key), want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", samplers.SAMPLERS)
def test_float32_agrees_with_float64_reference(name):
  schedule = schedules.EDMSchedule() if name in ("euler", "heun") else schedules.LinearSchedule()
  cfg = samplers.SamplerConfig(name, 16, schedule, eta=0.5, s_churn=10.0)
  x32, key = x_T_and_key(cfg, np.float32)
  got = run(cfg, x32, key)
  assert got.dtype == np.float32
  x, (_, alpha, sigma) = x32.astype(np.float64), samplers.grid(cfg)
  z = [v.astype(np.float64) for v in step_noise(key, cfg, x32)]
  want = {"ddpm": lambda: ddpm_reference(x, alpha, sigma, "posterior", z),
          "ddim": lambda: ddim_reference(x, alpha, sigma, 0.5, z),
          "dpmpp_2m": lambda: dpmpp_2m_reference(x, alpha, sigma),
          "dpmpp_3m": lambda: dpmpp_3m_reference(x, alpha, sigma),
          "euler": lambda: edm_reference(x, sigma, False, 10.0, 0.0, math.inf, 1.0, z),
          "heun": lambda: edm_reference(x, sigma, True, 10.0, 0.0, math.inf, 1.0, z)}[name]()
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("name", samplers.SAMPLERS)
def test_denoiser_called_nfe_times(name):
  cfg = samplers.SamplerConfig(name, 6, schedules.LinearSchedule(), eta=1.0, s_churn=5.0)
  calls = []

  def denoise_fn(x, t, cond):
    jax.debug.callback(lambda: calls.append(1))
    return make_denoiser(cfg.schedule)(x, t, cond)

  jax.block_until_ready(jax.jit(lambda k, x: samplers.sample(denoise_fn, k, x, None, cfg))(
      jax.random.key(0), jnp.ones(SHAPE)))
  assert len(calls) == samplers.nfe(cfg) == (11 if name == "heun" else 6)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "dpmpp_3m", "euler", "heun"])
def test_pytree_state_is_sampled_leafwise(name):
  cfg = samplers.SamplerConfig(name, 6, schedules.LinearSchedule(), spacing="logsnr")
  leaf_fn = make_denoiser(cfg.schedule)
  tree_fn = lambda x, t, c: jax.tree.map(lambda v: leaf_fn(v, t, c), x)
  x_T = {"a": jnp.linspace(-2.0, 2.0, 6).reshape(2, 3), "b": -jnp.ones((4,))}
  got = samplers.sample(tree_fn, None, x_T, None, cfg)
  for k, v in x_T.items():
    np.testing.assert_allclose(got[k], samplers.sample(leaf_fn, None, v, None, cfg), rtol=1e-6)
  assert not np.allclose(got["a"][0], got["a"][1])


def test_sampler_is_one_scan():
  cfg = samplers.SamplerConfig("dpmpp_2m", 25, schedules.EDMSchedule())
  jaxpr = jax.make_jaxpr(lambda x: samplers.sample(make_denoiser(cfg.schedule), None, x, None,
                                                   cfg))(jnp.ones(SHAPE))
  assert [e.primitive.name for e in jaxpr.eqns].count("scan") == 1


@pytest.mark.parametrize("name,spacing", [("dpmpp_2m", "logsnr"), ("heun", "karras"),
                                          ("ddpm", "time")])
def test_gaussian_mixture_samples_match_distribution(name, spacing):
  mixture = toy.ring_mixture()
  cfg = samplers.SamplerConfig(name, 200 if name == "ddpm" else 25, schedules.EDMSchedule(),
                               spacing=spacing)
  x_T = samplers.initial_noise(jax.random.key(0), jax.ShapeDtypeStruct((4000, 2), jnp.float32),
                               cfg)
  x0 = np.asarray(jax.jit(lambda k, x: samplers.sample(toy.exact_denoiser(mixture, cfg.schedule),
                                                       k, x, None, cfg))(jax.random.key(1), x_T))
  true = mixture.sample(np.random.default_rng(0), 4000)
  floor = toy.sliced_w2(mixture, true, num_projections=16)
  assert toy.sliced_w2(mixture, x0, num_projections=16) < 2.5 * floor
  nearest = np.argmin(np.linalg.norm(x0[:, None] - mixture.means, axis=-1), axis=1)
  np.testing.assert_allclose(np.bincount(nearest, minlength=8) / 4000, 1 / 8, atol=0.025)
  # The metric detects a wrongly scaled distribution.
  assert toy.sliced_w2(mixture, 1.3 * true, num_projections=16) > 3 * floor


def test_bad_config_errors():
  with pytest.raises(ValueError, match="num_steps"):
    samplers.SamplerConfig("ddim", 0)
  with pytest.raises(ValueError, match="unknown sampler 'plms'"):
    samplers.SamplerConfig("plms", 10)
  with pytest.raises(ValueError, match="spacing"):
    samplers.SamplerConfig("ddim", 10, spacing="quadratic")
  with pytest.raises(ValueError, match="ddpm_variance"):
    samplers.SamplerConfig("ddpm", 10, ddpm_variance="learned")
  with pytest.raises(ValueError, match=">= 0"):
    samplers.SamplerConfig("ddim", 10, eta=-1.0)
