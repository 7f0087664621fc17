"""Denoising losses: targets, weightings (uniform / min-SNR / EDM), masks, noise-level sampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.diffusion import losses, parameterization, schedules

SCHEDULES = [schedules.LinearSchedule(), schedules.CosineSchedule(), schedules.EDMSchedule()]
B = 6


def noised_inputs(key, x0, cfg):
  """Recomputes what denoising_loss draws from `key`: t [B], alpha, sigma [B, 1...], x_t."""
  k_t, k_eps = jax.random.split(key)
  t = losses.sample_times(k_t, x0.shape[0], cfg)
  alpha, sigma = schedules.alpha_sigma(cfg.schedule, t)
  a, s = parameterization.expand_to(alpha, x0), parameterization.expand_to(sigma, x0)
  return t, alpha, sigma, a * x0 + s * jax.random.normal(k_eps, x0.shape, x0.dtype), a, s


def model_with_x0_error(x0, delta, key, cfg):
  """A model_fn whose implied x0 prediction is x0 + delta (inverted through the param.)."""
  _, _, _, x_t, a, s = noised_inputs(key, x0, cfg)
  x0_hat = x0 + delta
  eps_hat = (x_t - a * x0_hat) / s
  out = parameterization.training_target(cfg.prediction, x0_hat, eps_hat, a, s, cfg.sigma_data)
  return lambda x_in, t, cond: out


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("weighting", losses.WEIGHTINGS)
def test_weighted_loss_in_x0_space_matches_definition(schedule, weighting):
  """min-SNR and EDM weightings are defined on the x0 error, so every parameterization gives
  the same value; uniform is the target-space MSE."""
  x0 = jax.random.normal(jax.random.key(0), (B, 3, 4))
  delta = 0.1 * jax.random.normal(jax.random.key(1), x0.shape)
  key = jax.random.key(2)
  values = []
  for prediction in parameterization.PREDICTIONS:
    cfg = losses.LossConfig(schedule, prediction, weighting, min_snr_gamma=5.0)
    loss, per_example = losses.denoising_loss(model_with_x0_error(x0, delta, key, cfg), key, x0,
                                              None, cfg)
    _, alpha, sigma, _, _, _ = noised_inputs(key, x0, cfg)
    snr, mse_x0 = np.asarray(alpha**2 / sigma**2), np.mean(np.asarray(delta)**2, axis=(1, 2))
    s_hat = np.asarray(sigma / alpha)
    ratio = {"eps": snr, "x0": 1.0, "v": (alpha**2 + sigma**2)**2 / sigma**2,
             "edm": (s_hat**2 + 0.25) / (0.5 * s_hat)**2}[prediction]
    want = {"uniform": ratio * mse_x0, "min_snr": np.minimum(snr, 5.0) * mse_x0,
            "v": (np.minimum(snr, 5.0) + 1.0) * mse_x0,
            "edm": (s_hat**2 + 0.25) / (0.5 * s_hat)**2 * mse_x0}[weighting]
    np.testing.assert_allclose(per_example, want, rtol=2e-3)
    np.testing.assert_allclose(loss, np.mean(want), rtol=2e-3)
    values.append(np.asarray(per_example))
  if weighting != "uniform":
    np.testing.assert_allclose(values[1:], [values[0]] * 3, rtol=2e-3)


def test_min_snr_weights_match_hang_et_al_for_vp():
  cfg_eps = losses.LossConfig(schedules.CosineSchedule(), "eps", "min_snr", min_snr_gamma=5.0)
  cfg_v = losses.LossConfig(schedules.CosineSchedule(), "v", "min_snr", min_snr_gamma=5.0)
  t = jnp.linspace(0.05, 0.95, 7)
  alpha, sigma = schedules.alpha_sigma(cfg_eps.schedule, t)
  snr = alpha**2 / sigma**2
  np.testing.assert_allclose(losses.loss_weight(cfg_eps, alpha, sigma),
                             jnp.minimum(snr, 5.0) / snr, rtol=1e-5)
  np.testing.assert_allclose(losses.loss_weight(cfg_v, alpha, sigma),
                             jnp.minimum(snr, 5.0) / (snr + 1), rtol=1e-5)


def test_v_weighting_is_the_v_mse_below_its_cap():
  """VP: v = alpha eps - sigma x0 has ||v_hat - v||^2 = ||x0_hat - x0||^2 / sigma^2 (at fixed
  x_t), so weighting "v" with the x0 prediction weighs the x0 error by 1 / sigma^2 while SNR <
  gamma, and with the v prediction it is the plain v-MSE (weight 1)."""
  t = jnp.linspace(0.05, 0.95, 7)
  for gamma in (1e6, 3.0):
    cfg_x0 = losses.LossConfig(schedules.CosineSchedule(), "x0", "v", min_snr_gamma=gamma)
    cfg_v = losses.LossConfig(schedules.CosineSchedule(), "v", "v", min_snr_gamma=gamma)
    alpha, sigma = schedules.alpha_sigma(cfg_x0.schedule, t)
    alpha, sigma = np.asarray(alpha, np.float64), np.asarray(sigma, np.float64)
    capped = alpha**2 / sigma**2 > gamma
    want_x0 = np.where(capped, gamma + 1.0, 1.0 / sigma**2)
    np.testing.assert_allclose(losses.loss_weight(cfg_x0, alpha, sigma), want_x0, rtol=1e-4)
    np.testing.assert_allclose(losses.loss_weight(cfg_v, alpha, sigma),
                               want_x0 * sigma**2, rtol=1e-4)
  assert capped.any() and not capped.all()


@pytest.mark.parametrize("prediction", parameterization.PREDICTIONS)
def test_perfect_model_has_zero_loss_and_mask_excludes_given_frames(prediction):
  cfg = losses.LossConfig(schedules.EDMSchedule(), prediction, "edm",
                          noise_distribution="lognormal")
  x0 = jax.random.normal(jax.random.key(0), (B, 5, 2, 2, 3))
  key = jax.random.key(1)
  perfect, _ = losses.denoising_loss(model_with_x0_error(x0, 0.0, key, cfg), key, x0, None, cfg)
  assert float(perfect) < 1e-8
  given = jnp.arange(5) < 2  # First two frames are conditioning frames.
  delta = jnp.where(given[None, :, None, None, None], 1.0, 0.0) * jnp.ones_like(x0)
  bad_on_given = model_with_x0_error(x0, delta, key, cfg)
  masked, _ = losses.denoising_loss(bad_on_given, key, x0, None, cfg,
                                    loss_mask=jnp.broadcast_to(~given, (B, 5)))
  unmasked, _ = losses.denoising_loss(bad_on_given, key, x0, None, cfg)
  assert float(masked) < 1e-8 < float(unmasked)


def test_model_sees_schedule_time_and_edm_input_scaling():
  seen = {}

  def model_fn(x_in, t, cond):
    seen.update(x_in=x_in, t=t)
    return jnp.zeros_like(x_in)

  x0 = jnp.ones((B, 4))
  for cfg in [losses.LossConfig(schedules.LinearSchedule()),
              losses.LossConfig(schedules.EDMSchedule(), "edm", "edm",
                                noise_distribution="lognormal")]:
    losses.denoising_loss(model_fn, jax.random.key(0), x0, None, cfg)
    t, alpha, sigma, x_t, _, _ = noised_inputs(jax.random.key(0), x0, cfg)
    np.testing.assert_allclose(seen["t"], cfg.schedule.model_time(t), rtol=1e-6)
    scale = 1.0 if cfg.prediction == "eps" else 1.0 / jnp.sqrt(sigma**2 + 0.25)
    np.testing.assert_allclose(seen["x_in"], parameterization.expand_to(scale, x_t) * x_t,
                               rtol=1e-5)
  np.testing.assert_allclose(seen["t"], jnp.log(sigma) / 4, rtol=1e-5)


def test_noise_level_distributions():
  cfg = losses.LossConfig(schedules.LinearSchedule(), noise_distribution="uniform")
  t = np.asarray(losses.sample_times(jax.random.key(0), 20_000, cfg))
  assert t.min() >= 1e-3 and t.max() <= 1.0 and abs(t.mean() - 0.5005) < 0.01
  cfg = losses.LossConfig(schedules.EDMSchedule(), noise_distribution="lognormal")
  log_sigma = np.log(schedules.EDMSchedule().sigma(
      np.asarray(losses.sample_times(jax.random.key(1), 20_000, cfg), np.float64)))
  assert abs(log_sigma.mean() + 1.2) < 0.03 and abs(log_sigma.std() - 1.2) < 0.03


def test_time_shift_moves_training_noise_levels_up():
  """Shift s: P(t <= x) = P(u <= x / (s - (s - 1) x)) for t = s u / (1 + (s - 1) u); s = 1 keeps
  the plain uniform draws bit for bit (runs from before the option reproduce)."""
  schedule = schedules.LinearSchedule()  # t in [1e-3, 1]
  key = jax.random.key(0)
  plain = losses.sample_times(key, 1000, losses.LossConfig(schedule))
  np.testing.assert_array_equal(
      plain, jax.random.uniform(key, (1000,), minval=schedule.t_min, maxval=schedule.t_max))
  shift = 3.0
  cfg = losses.LossConfig(schedules.CosineSchedule(), time_shift=shift)
  t = np.asarray(losses.sample_times(jax.random.key(1), 40_000, cfg), np.float64)
  assert t.min() >= 0.0 and t.max() <= 1.0
  for x in (0.1, 0.5, 0.9, 0.95, 0.99):
    want = x / (shift - (shift - 1.0) * x)
    assert abs(np.mean(t <= x) - want) < 0.01, x
  assert abs(np.mean(t > 0.95) - 0.136) < 0.01  # 13.6% of the draws above 0.95, not 5%


def test_loss_is_differentiable():
  cfg = losses.LossConfig(schedules.CosineSchedule(), "v", "min_snr")
  x0 = jax.random.normal(jax.random.key(0), (B, 4))
  grad = jax.jit(jax.grad(lambda w: losses.denoising_loss(
      lambda x, t, c: x @ w, jax.random.key(1), x0, None, cfg)[0]))(jnp.eye(4))
  assert grad.shape == (4, 4) and bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.abs(grad).sum()) > 0


def test_bad_config_errors():
  with pytest.raises(ValueError, match="unknown weighting 'p2'"):
    losses.LossConfig(schedules.EDMSchedule(), weighting="p2")
  with pytest.raises(ValueError, match="unknown prediction 'score'"):
    losses.LossConfig(schedules.EDMSchedule(), prediction="score")
  with pytest.raises(ValueError, match="noise_distribution"):
    losses.LossConfig(schedules.EDMSchedule(), noise_distribution="beta")
  with pytest.raises(ValueError, match="time_shift must be > 0"):
    losses.LossConfig(schedules.CosineSchedule(), time_shift=0.0)
  with pytest.raises(ValueError, match="shifts the 'uniform' noise distribution"):
    losses.LossConfig(schedules.EDMSchedule(), noise_distribution="lognormal", time_shift=2.0)


def test_float_loss_weights_give_the_weighted_mean_error():
  cfg = losses.LossConfig(schedules.CosineSchedule(), "x0", "uniform")
  x0 = jax.random.normal(jax.random.key(0), (B, 3, 4, 4, 1))
  key = jax.random.key(1)
  error = jax.random.normal(jax.random.key(2), x0.shape)
  weights = jax.random.uniform(jax.random.key(3), (B, 3, 4, 4))
  _, per_example = losses.denoising_loss(model_with_x0_error(x0, error, key, cfg), key, x0,
                                         None, cfg, loss_mask=weights)
  e2, w = np.asarray(error, np.float64)[..., 0]**2, np.asarray(weights, np.float64)
  expected = (e2 * w).sum((1, 2, 3)) / w.sum((1, 2, 3))
  np.testing.assert_allclose(per_example, expected, rtol=1e-5)


@pytest.mark.parametrize("prediction", parameterization.PREDICTIONS)
def test_denoising_terms_expose_the_x0_estimate_and_noise_level(prediction):
  cfg = losses.LossConfig(schedules.CosineSchedule(), prediction, "uniform")
  x0 = jax.random.normal(jax.random.key(0), (B, 3, 4))
  key = jax.random.key(1)
  delta = 0.25 * jax.random.normal(jax.random.key(2), x0.shape)
  terms = losses.denoising_terms(model_with_x0_error(x0, delta, key, cfg), key, x0, None, cfg)
  np.testing.assert_allclose(terms["x0_hat"], x0 + delta, atol=2e-4)
  t = noised_inputs(key, x0, cfg)[0]
  np.testing.assert_allclose(terms["logsnr"], cfg.schedule.logsnr(t), rtol=1e-4, atol=1e-4)
  loss, per_example = losses.denoising_loss(model_with_x0_error(x0, delta, key, cfg), key, x0,
                                            None, cfg)
  np.testing.assert_array_equal(per_example, terms["per_example"])
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-6)


@pytest.mark.parametrize("prediction", parameterization.PREDICTIONS)
def test_known_region_is_given_in_training_and_sampling(prediction):
  """With a known region (dubbing: the source outside the mask), the x0 estimate there is the
  known value in the loss and in the denoiser, the network's own elsewhere (blended by the keep
  weight in between), for every parameterization; compared with the composition in float64."""
  cfg = losses.LossConfig(schedules.CosineSchedule(), prediction, "uniform")
  x0 = jax.random.normal(jax.random.key(0), (B, 3, 4, 2))
  key = jax.random.key(1)
  delta = 0.5 * jax.random.normal(jax.random.key(2), x0.shape)
  keep = jnp.asarray(np.random.default_rng(3).choice([0.0, 0.25, 1.0], (B, 3, 4, 1)),
                     jnp.float32)
  known = jax.random.normal(jax.random.key(4), x0.shape)
  model_fn = model_with_x0_error(x0, delta, key, cfg)
  terms = losses.denoising_terms(model_fn, key, x0, None, cfg,
                                 known_fn=lambda cond: (known, keep))
  k64, x64 = np.asarray(keep, np.float64), np.asarray(x0 + delta, np.float64)
  expected = k64 * np.asarray(known, np.float64) + (1 - k64) * x64
  np.testing.assert_allclose(terms["x0_hat"], expected, atol=5e-4)
  # Known = the truth: the error is the network's inside the drawn region only.
  exact = losses.denoising_terms(model_fn, key, x0, None, cfg, known_fn=lambda c: (x0, keep))
  outside = losses.denoising_terms(model_fn, key, x0, None, cfg,
                                   loss_mask=jnp.broadcast_to(keep < 1, x0.shape))
  np.testing.assert_allclose(exact["x0_hat"], k64 * np.asarray(x0, np.float64) + (1 - k64) * x64,
                             atol=5e-4)
  assert float(exact["per_example"].sum()) < float(outside["per_example"].sum())
  t = jnp.full((B,), 0.4)
  denoise = parameterization.make_denoiser(lambda x, m, c: model_fn(x, m, c), cfg.schedule,
                                           prediction, known_fn=lambda cond: (known, keep))
  x0_hat = np.asarray(denoise(jnp.zeros_like(x0), t, None))
  plain = parameterization.make_denoiser(model_fn, cfg.schedule, prediction)(
      jnp.zeros_like(x0), t, None)
  np.testing.assert_array_equal(x0_hat[np.broadcast_to(k64 == 1, x0.shape)],
                                np.broadcast_to(known, x0.shape)[np.broadcast_to(k64 == 1,
                                                                                 x0.shape)])
  drawn = np.broadcast_to(k64 == 0, x0.shape)
  np.testing.assert_array_equal(x0_hat[drawn], np.asarray(plain)[drawn])
