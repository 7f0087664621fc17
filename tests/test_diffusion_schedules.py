"""Schedules (alpha, sigma, log-SNR, grids, model time) and output parameterizations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.diffusion import parameterization, schedules
from tests import diffusers_reference

DISCRETE_NAMES = ("squaredcos_cap_v2", "scaled_linear", "linear_discrete")
SCHEDULES = [schedules.LinearSchedule(), schedules.CosineSchedule(), schedules.EDMSchedule()] + [
    schedules.from_name(name) for name in DISCRETE_NAMES]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_logsnr_is_decreasing_and_inverse_is_exact(schedule):
  t = np.linspace(0.01, 1.0, 50)
  lam = schedule.logsnr(t)
  assert np.all(np.diff(lam) < 0)
  np.testing.assert_allclose(schedule.t_from_logsnr(lam), t, rtol=1e-10, atol=1e-12)
  alpha, sigma = schedules.alpha_sigma(schedule, t)
  np.testing.assert_allclose(np.log(alpha**2 / sigma**2), lam, rtol=1e-10, atol=1e-10)
  if schedule.variance_preserving:
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-12)
  else:
    np.testing.assert_array_equal(alpha, 1.0)
  j_alpha, _ = schedules.alpha_sigma(schedule, jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(j_alpha, alpha, rtol=1e-4)


def test_linear_schedule_matches_discrete_ddpm():
  beta = np.linspace(1e-4, 0.02, 1000)
  alphabar = np.cumprod(1 - beta)
  n = np.array([1, 10, 100, 500, 1000])
  alpha, _ = schedules.alpha_sigma(schedules.LinearSchedule(), n / 1000)
  np.testing.assert_allclose(alpha**2, alphabar[n - 1], rtol=2e-2, atol=1e-5)


def test_cosine_schedule_is_truncated_cos_squared():
  schedule = schedules.CosineSchedule(logsnr_min=-15, logsnr_max=15)
  np.testing.assert_allclose(schedule.logsnr(np.array([0.0, 1.0])), [15.0, -15.0], rtol=1e-10)
  t = np.linspace(0.1, 0.9, 5)  # Close to cos^2(pi t / 2) away from the truncated ends.
  np.testing.assert_allclose(schedules.alpha_sigma(schedule, t)[0]**2, np.cos(np.pi * t / 2)**2,
                             atol=2e-3)


def test_edm_time_grid_is_karras_eq5_and_model_time_is_c_noise():
  schedule, n = schedules.EDMSchedule(), 18
  i = np.arange(n)
  want = (80**(1 / 7) + i / (n - 1) * (0.002**(1 / 7) - 80**(1 / 7)))**7
  for spacing in ("time", "karras"):
    t = schedules.time_grid(schedule, n, spacing)
    np.testing.assert_allclose(schedules.alpha_sigma(schedule, t)[1], want, rtol=1e-10)
  np.testing.assert_allclose(schedule.model_time(t), np.log(want) / 4, rtol=1e-10)
  np.testing.assert_array_equal(schedules.LinearSchedule().model_time(t), t)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_grid_spacings(schedule):
  t = schedules.time_grid(schedule, 11, "time")
  np.testing.assert_allclose(np.diff(t), (schedule.t_min - schedule.t_max) / 10, rtol=1e-10)
  lam = schedule.logsnr(schedules.time_grid(schedule, 11, "logsnr"))
  np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-8)
  assert schedules.time_grid(schedule, 1, "karras") == pytest.approx([schedule.t_max])
  with pytest.raises(ValueError, match="num_steps must be >= 1"):
    schedules.time_grid(schedule, 0)
  with pytest.raises(ValueError, match="unknown spacing"):
    schedules.time_grid(schedule, 5, "sqrt")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", parameterization.PREDICTIONS)
def test_target_round_trips_to_x0(schedule, prediction):
  k1, k2 = jax.random.split(jax.random.key(0))
  x0, eps = jax.random.normal(k1, (4, 3)), jax.random.normal(k2, (4, 3))
  alpha, sigma = schedules.alpha_sigma(schedule, jnp.array([0.05, 0.3, 0.6, 0.95]))
  a, s = parameterization.expand_to(alpha, x0), parameterization.expand_to(sigma, x0)
  x_t = a * x0 + s * eps
  target = parameterization.training_target(prediction, x0, eps, a, s)
  np.testing.assert_allclose(parameterization.output_to_x0(prediction, target, x_t, a, s), x0,
                             rtol=2e-3, atol=2e-3)
  # ||d output||^2 = ratio ||d x0||^2 for a perturbation of the output.
  delta = 1e-2 * eps
  dx0 = parameterization.output_to_x0(prediction, target + delta, x_t, a, s) - x0
  ratio = parameterization.target_to_x0_error_ratio(prediction, a, s)
  np.testing.assert_allclose(jnp.sum(delta**2, 1),
                             (ratio * jnp.sum(dx0**2, 1, keepdims=True))[:, 0], rtol=2e-2)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_v_target_is_the_angular_velocity_of_x_t(schedule):
  """v (Salimans & Ho 2022, sec. 4) is d x_t / d phi on the circle x_t = cos(phi) x0 +
  sin(phi) eps, phi = atan(sigma / alpha); off the VP circle (EDM: alpha = 1) it is the
  same velocity of x_t / r times r = sqrt(alpha^2 + sigma^2). Reference: central finite
  differences in float64; the inverse must give back the x0 the sample was built from.
  """
  rng = np.random.default_rng(0)
  x0, eps = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  t = np.array([0.05, 0.3, 0.6, 0.95])
  alpha, sigma = (np.asarray(a, np.float64)[:, None] for a in schedules.alpha_sigma(schedule, t))
  phi, r = np.arctan2(sigma, alpha), np.hypot(alpha, sigma)
  on_circle = lambda angle: np.cos(angle) * x0 + np.sin(angle) * eps
  h = 1e-6
  want = r * (on_circle(phi + h) - on_circle(phi - h)) / (2 * h)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  v = parameterization.training_target("v", f32(x0), f32(eps), f32(alpha), f32(sigma))
  np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  x_t = alpha * x0 + sigma * eps
  np.testing.assert_allclose(
      parameterization.output_to_x0("v", f32(want), f32(x_t), f32(alpha), f32(sigma)), x0,
      rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", parameterization.PREDICTIONS)
def test_make_denoiser_calls_model_with_model_time_and_scaled_input(prediction):
  schedule = schedules.EDMSchedule() if prediction == "edm" else schedules.LinearSchedule()
  seen = {}

  def model_fn(x_in, t, cond):
    seen.update(x_in=x_in, t=t, cond=cond)
    return jnp.full_like(x_in, 0.25)

  x = jnp.ones((2, 3, 4))
  out = parameterization.make_denoiser(model_fn, schedule, prediction)(x, 0.5, {"c": 1})
  alpha, sigma = schedules.alpha_sigma(schedule, jnp.float32(0.5))
  assert seen["t"].shape == (2,) and seen["cond"] == {"c": 1}
  np.testing.assert_allclose(seen["t"], schedule.model_time(jnp.float32(0.5)), rtol=1e-6)
  scale = parameterization.model_input_scale(prediction, alpha, sigma)
  np.testing.assert_allclose(seen["x_in"], scale * x, rtol=1e-6)
  want = parameterization.output_to_x0(prediction, 0.25, x, alpha, sigma)
  np.testing.assert_allclose(out, jnp.broadcast_to(want, x.shape), rtol=1e-5)
  if prediction == "edm":
    np.testing.assert_allclose(scale, 1 / np.sqrt(float(sigma)**2 + 0.25), rtol=1e-5)
  with pytest.raises(ValueError, match="unknown prediction"):
    parameterization.make_denoiser(model_fn, schedule, "score")


def test_from_name_builds_each_schedule_and_rejects_unknown_names():
  assert isinstance(schedules.from_name("cosine"), schedules.CosineSchedule)
  assert isinstance(schedules.from_name("linear"), schedules.LinearSchedule)
  assert isinstance(schedules.from_name("edm"), schedules.EDMSchedule)
  for name in DISCRETE_NAMES:
    assert isinstance(schedules.from_name(name), schedules.DiscreteSchedule)
  with pytest.raises(ValueError, match="unknown schedule 'sigmoid'") as err:
    schedules.from_name("sigmoid")
  assert all(repr(name) in str(err.value) for name in schedules.BY_NAME)


@pytest.mark.parametrize("name", DISCRETE_NAMES)
def test_discrete_schedules_reproduce_diffusers_alphas_cumprod_at_every_step(name):
  schedule = schedules.from_name(name)
  alphabar = diffusers_reference.alphas_cumprod(diffusers_reference.BETAS[name]())
  n = np.arange(1000)
  alpha, sigma = schedules.alpha_sigma(schedule, n / 1000)
  np.testing.assert_allclose(alpha**2, alphabar, rtol=1e-12, atol=0)
  np.testing.assert_allclose(sigma**2, 1 - alphabar, rtol=1e-10, atol=0)
  assert schedule.t_min == 0 and schedule.t_max == 0.999
  # Step n is t = n / 1000; the STDiT embeds time_scale * model_time = 1000 t = n.
  np.testing.assert_allclose(1000 * schedule.model_time(n / 1000), n, rtol=0, atol=1e-10)
  np.testing.assert_allclose(schedule.t_from_logsnr(np.log(alphabar / (1 - alphabar))), n / 1000,
                             rtol=0, atol=1e-12)


def test_squaredcos_cap_v2_is_not_the_cosine_schedule():
  """The docs' distinction: Nichol & Dhariwal's offset cosine vs the offset-free truncated one."""
  alphabar = diffusers_reference.alphas_cumprod(diffusers_reference.BETAS["squaredcos_cap_v2"]())
  cosine = schedules.CosineSchedule().logsnr(np.arange(1000) / 1000)
  assert np.max(np.abs(cosine - np.log(alphabar / (1 - alphabar)))) > 4.0


@pytest.mark.parametrize("name", DISCRETE_NAMES)
def test_discrete_logsnr_is_linear_in_t_between_steps_and_continues_past_the_ends(name):
  schedule = schedules.from_name(name)
  alphabar = diffusers_reference.alphas_cumprod(diffusers_reference.BETAS[name]())
  lam = np.log(alphabar / (1 - alphabar))
  rng = np.random.default_rng(0)
  n, w = rng.integers(0, 999, 50), rng.uniform(0, 1, 50)
  t = (n + w) / 1000
  np.testing.assert_allclose(schedule.logsnr(t), (1 - w) * lam[n] + w * lam[n + 1],
                             rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(schedule.t_from_logsnr(schedule.logsnr(t)), t, rtol=0, atol=1e-12)
  # Beyond the table the end segments continue (EDM churn / log-normal noise levels).
  outside = np.array([-0.002, 0.9995, 1.0])
  want = np.where(outside < 0, lam[0] + 1000 * outside * (lam[1] - lam[0]),
                  lam[999] + (1000 * outside - 999) * (lam[999] - lam[998]))
  np.testing.assert_allclose(schedule.logsnr(outside), want, rtol=1e-12)
  np.testing.assert_allclose(schedule.t_from_logsnr(want), outside, rtol=0, atol=1e-12)
  j_lam = jax.jit(schedule.logsnr)(jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(j_lam, schedule.logsnr(t), rtol=1e-4, atol=1e-4)
  j_t = jax.jit(schedule.t_from_logsnr)(jnp.asarray(schedule.logsnr(t), jnp.float32))
  np.testing.assert_allclose(j_t, t, rtol=0, atol=1e-5)


def test_discrete_schedule_from_a_user_table():
  betas = np.geomspace(1e-3, 0.2, 50)
  schedule = schedules.DiscreteSchedule(betas)
  assert schedule == schedules.DiscreteSchedule(list(betas)) and hash(schedule) is not None
  assert schedule.num_train_timesteps == 50 and schedule.t_max == 49 / 50
  alpha, _ = schedules.alpha_sigma(schedule, np.arange(50) / 50)
  np.testing.assert_allclose(alpha**2, np.cumprod(1 - betas), rtol=1e-12, atol=0)
  linear = schedules.DiscreteSchedule.from_diffusers("linear", 50, 1e-3, 0.2)
  np.testing.assert_allclose(linear.betas, np.linspace(1e-3, 0.2, 50), rtol=1e-15)
  for bad in ([0.1], [0.1, 0.0], [0.1, 1.0], [[0.1, 0.2]]):
    with pytest.raises(ValueError, match="betas must be"):
      schedules.DiscreteSchedule(bad)
  with pytest.raises(ValueError, match="unknown beta_schedule 'sigmoid'.*squaredcos_cap_v2"):
    schedules.DiscreteSchedule.from_diffusers("sigmoid")


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("num_steps", [1, 7, 10, 50, 1000])
def test_leading_and_trailing_grids_are_diffusers_timesteps(spacing, num_steps):
  t = schedules.time_grid(schedules.from_name("scaled_linear"), num_steps, spacing)
  want = diffusers_reference.set_timesteps(spacing, 1000, num_steps)
  np.testing.assert_allclose(1000 * t, want, rtol=0, atol=1e-9)


def test_discrete_spacings_need_a_discrete_schedule_with_enough_steps():
  with pytest.raises(ValueError, match="spacing 'leading' needs a DiscreteSchedule"):
    schedules.time_grid(schedules.CosineSchedule(), 10, "leading")
  with pytest.raises(ValueError, match="num_steps=1001 exceeds"):
    schedules.time_grid(schedules.from_name("scaled_linear"), 1001, "trailing")
  with pytest.raises(ValueError, match="unknown spacing 'sqrt'.*'leading'.*'trailing'"):
    schedules.time_grid(schedules.CosineSchedule(), 5, "sqrt")
