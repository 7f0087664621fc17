"""Every sampler / loss option of the config reaches SamplerConfig / LossConfig and changes results.

Fields: config.sampling.{sampler, num_steps, spacing, rho, eta, ddpm_variance, s_churn, s_tmin,
s_tmax, s_noise} -> `sampling.sampler_config`; config.diffusion.{schedule, parameterization,
loss_weighting, min_snr_gamma, noise_distribution, sigma_data, p_mean, p_std, time_shift} ->
`step.make_loss_config`.
"""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gcm_jax import sampling
from gcm_jax.configs import tiny
from gcm_jax.diffusion import losses, parameterization, samplers, schedules, toy
from gcm_jax.train import step


MIXTURE = toy.ring_mixture(num_modes=4, std=0.3)

# (config.sampling field, new value, sampler, other config.sampling values it needs to matter).
SAMPLING_CHANGES = [
    ("num_steps", 5, "ddim", {}),
    ("spacing", "logsnr", "ddim", {}),
    ("rho", 3.0, "ddim", {"spacing": "karras"}),
    ("eta", 0.5, "ddim", {}),
    ("ddpm_variance", "beta", "ddpm", {}),
    ("s_churn", 5.0, "heun", {}),
    ("s_tmin", 1.0, "heun", {"s_churn": 5.0}),
    ("s_tmax", 1.0, "heun", {"s_churn": 5.0}),
    ("s_noise", 0.5, "euler", {"s_churn": 5.0}),
]

# (config.diffusion key, LossConfig field, new value, other config.diffusion values it needs).
LOSS_CHANGES = [
    ("parameterization", "prediction", "eps", {}),
    ("loss_weighting", "weighting", "min_snr", {}),
    ("min_snr_gamma", "min_snr_gamma", 1.0, {"loss_weighting": "min_snr"}),
    ("noise_distribution", "noise_distribution", "lognormal", {}),
    ("sigma_data", "sigma_data", 1.0, {"parameterization": "edm"}),
    ("p_mean", "p_mean", 0.5, {"noise_distribution": "lognormal"}),
    ("p_std", "p_std", 0.5, {"noise_distribution": "lognormal"}),
    ("time_shift", "time_shift", 3.0, {}),
]


def sample_with(config):
  cfg = sampling.sampler_config(config)
  x_T = samplers.initial_noise(jax.random.key(1), jnp.zeros((16, 2)), cfg)
  x0 = samplers.sample(toy.exact_denoiser(MIXTURE, cfg.schedule), jax.random.key(0), x_T, None,
                       cfg)
  return cfg, np.asarray(x0)


def loss_with(config):
  cfg = step.make_loss_config(config.diffusion)
  x0 = jax.random.normal(jax.random.key(0), (8, 2, 4, 4, 3))
  model_fn = lambda x, t, c: 0.5 * x + parameterization.expand_to(t, x)
  terms = losses.denoising_terms(model_fn, jax.random.key(1), x0, None, cfg)
  return cfg, np.asarray(terms["per_example"])


def test_the_tables_cover_every_option():
  sampler_fields = {f.name for f in dataclasses.fields(samplers.SamplerConfig)}
  assert {c[0] for c in SAMPLING_CHANGES} == sampler_fields - {"name", "schedule"}
  loss_fields = {f.name for f in dataclasses.fields(losses.LossConfig)}
  assert {c[1] for c in LOSS_CHANGES} == loss_fields - {"schedule"}


def test_defaults_are_the_previous_behaviour():
  config = tiny.get_config()
  assert sampling.sampler_config(config) == samplers.SamplerConfig(
      "dpmpp_2m", 20, schedules.CosineSchedule())
  assert step.make_loss_config(config.diffusion) == losses.LossConfig(
      schedules.CosineSchedule(), prediction="v")


@pytest.mark.parametrize("field,value,sampler,needs", SAMPLING_CHANGES)
def test_each_sampling_field_reaches_the_sampler(field, value, sampler, needs):
  config = tiny.get_config()
  config.sampling.update(sampler=sampler, num_steps=8, **needs)
  base_cfg, base = sample_with(config)
  config.sampling[field] = value
  cfg, changed = sample_with(config)
  assert getattr(cfg, field) == value
  assert dataclasses.replace(cfg, **{field: getattr(base_cfg, field)}) == base_cfg
  assert np.max(np.abs(changed - base)) > 1e-3


@pytest.mark.parametrize("key,field,value,needs", LOSS_CHANGES)
def test_each_diffusion_field_reaches_the_loss(key, field, value, needs):
  config = tiny.get_config()
  config.diffusion.update(**needs)
  base_cfg, base = loss_with(config)
  config.diffusion[key] = value
  cfg, changed = loss_with(config)
  assert getattr(cfg, field) == value
  assert dataclasses.replace(cfg, **{field: getattr(base_cfg, field)}) == base_cfg
  assert np.max(np.abs(changed - base) / np.abs(base)) > 1e-3


@pytest.mark.parametrize("name", sorted(schedules.BY_NAME))
def test_schedule_name_reaches_sampler_and_loss(name):
  config = tiny.get_config()
  config.diffusion.schedule = name
  assert sampling.sampler_config(config).schedule == schedules.from_name(name)
  assert step.make_loss_config(config.diffusion).schedule == schedules.from_name(name)


def half_input(params, x, t, cond):
  """Stands in for the network: output = x_in / 2."""
  del params, t, cond
  return 0.5 * x


def test_sigma_data_reaches_the_sampling_denoiser():
  config = tiny.get_config()
  config.diffusion.parameterization = "edm"
  x = jnp.ones((2, 3))
  cond = {"drop_text": jnp.zeros((2,), bool), "drop_audio": jnp.zeros((2,), bool)}
  outputs = []
  for sigma_data in (0.5, 1.0):
    config.diffusion.sigma_data = sigma_data
    outputs.append(sampling.guided_denoiser(half_input, {}, config)(x, 0.5, cond))
  alpha, sigma = schedules.alpha_sigma(schedules.CosineSchedule(), 0.5)
  s = sigma / alpha  # EDM Table 1 at sigma_hat = s, with F(c_in x_hat) = c_in x_hat / 2.
  want = [sd**2 / (s**2 + sd**2) / alpha + s * sd / (s**2 + sd**2) / 2 / alpha for sd in (0.5, 1.0)]
  np.testing.assert_allclose(np.stack(outputs)[:, 0, 0], want, rtol=1e-5)


@pytest.mark.parametrize("section,field,allowed", [
    ("sampling", "spacing", tuple(schedules.SPACINGS)),
    ("sampling", "ddpm_variance", samplers.DDPM_VARIANCES),
    ("sampling", "sampler", tuple(samplers.SAMPLERS)),
    ("diffusion", "noise_distribution", losses.NOISE_DISTRIBUTIONS),
    ("diffusion", "schedule", tuple(schedules.BY_NAME)),
])
def test_unknown_names_raise_naming_the_field_and_the_allowed_values(section, field, allowed):
  config = tiny.get_config()
  config[section][field] = "bogus"
  build = (sampling.sampler_config if section == "sampling"
           else lambda c: step.make_loss_config(c.diffusion))
  with pytest.raises(ValueError, match=f"{field}.*'bogus'|'bogus'.*{field}") as err:
    build(config)
  assert all(repr(name) in str(err.value) for name in allowed), str(err.value)


def test_infinite_s_tmax_round_trips_through_json():
  config = tiny.get_config()
  assert config.sampling.s_tmax == math.inf
  loaded = ml_collections.ConfigDict(json.loads(config.to_json()))
  assert loaded.sampling.s_tmax == math.inf
  assert sampling.sampler_config(loaded) == sampling.sampler_config(config)
