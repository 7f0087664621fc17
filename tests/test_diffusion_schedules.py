"""Schedules (alpha, sigma, log-SNR, grids, model time) and output parameterizations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.diffusion import parameterization, schedules

SCHEDULES = [schedules.LinearSchedule(), schedules.CosineSchedule(), schedules.EDMSchedule()]


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
  with pytest.raises(ValueError, match="unknown schedule 'sigmoid'"):
    schedules.from_name("sigmoid")
