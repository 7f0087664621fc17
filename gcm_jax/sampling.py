"""Sampling videos from a trained network: apply function -> guided x0-denoiser -> sampler.

The network is a run's `apply_fn(params, x_t, t, cond)` (`diffusion_model.make_apply_fn`: the
STDiT, or for a ControlNet run the STDiT steered by `cond['control_maps']`).
`sample_videos` is a pure function of (params, cond, key); jit it once per shape.
"""
import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from gcm_jax import latents
from gcm_jax.diffusion import guidance
from gcm_jax.diffusion import losses
from gcm_jax.diffusion import parameterization
from gcm_jax.diffusion import samplers
from gcm_jax.diffusion import schedules
from gcm_jax.models import conditioning
from gcm_jax.models import control
from gcm_jax.models import diffusion_model


# SamplerConfig fields not read from config.sampling under their own name.
_NOT_SAMPLING_FIELDS = ("name", "schedule")


def sampler_config(config: ml_collections.ConfigDict) -> samplers.SamplerConfig:
  """The SamplerConfig of `config`: name = config.sampling.sampler, schedule from
  config.diffusion.schedule, every other field (num_steps, spacing, rho, eta, ddpm_variance,
  s_churn, s_tmin, s_tmax, s_noise) = config.sampling.<field>. Raises ValueError for unknown names.
  Fields a config lacks (a run saved before they existed) keep SamplerConfig's defaults, which
  are the behaviour of that time.
  """
  options = {f.name: config.sampling[f.name] for f in dataclasses.fields(samplers.SamplerConfig)
             if f.name not in _NOT_SAMPLING_FIELDS and f.name in config.sampling}
  return samplers.SamplerConfig(name=config.sampling.sampler,
                                schedule=schedules.from_name(config.diffusion.schedule),
                                **options)


def time_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The per-frame conditions `[B, T, ...]` of a run, cut per window in long videos (the
  reference frames are not per frame: every window sees all of them)."""
  source = ("source", "source_mask") if config.model.get("masked_source", False) else ()
  return (conditioning.audio_key(config.model),) + control.batch_keys(config) + source


def keep_all(config: ml_collections.ConfigDict, batch: int) -> dict[str, jax.Array]:
  """The run's condition-drop flags, all False `[B]` (guidance sets its own): text, audio
  and, with `model.reference_frames`, the reference."""
  names = ("drop_text", "drop_audio") + (
      ("drop_reference",) if config.model.get("reference_frames", 0) else ())
  return {name: jnp.zeros((batch,), bool) for name in names}


def denoiser(apply_fn: diffusion_model.ApplyFn, params: Any, config: ml_collections.ConfigDict
             ) -> parameterization.DenoiseFn:
  """x0-denoiser `(x_t, t, cond) -> x0` of the trained network (no guidance); a dubbing run
  with `diffusion.keep_source` gives the source outside the mask (`conditioning.known_source`)."""
  model_fn = lambda x, t, c: apply_fn(params, x, t, c)
  sigma_data = config.diffusion.get("sigma_data", losses.LossConfig.sigma_data)
  return parameterization.make_denoiser(
      model_fn, schedules.from_name(config.diffusion.schedule), config.diffusion.parameterization,
      sigma_data, known_fn=conditioning.known_source(config.diffusion))


def guided_denoiser(apply_fn: diffusion_model.ApplyFn, params: Any,
                    config: ml_collections.ConfigDict, with_text: bool = True
                    ) -> parameterization.DenoiseFn:
  """x0-denoiser `(x_t, t, cond) -> x0` with classifier-free guidance: nested over reference
  (`model.reference_frames` > 0 and `sampling.reference_scale` != 1), audio, text
  (`guidance.nested_guidance`). `with_text=False` (no caption: an empty text, which the model
  reads as the dropped one) leaves the text out of the guidance."""
  fn = denoiser(apply_fn, params, config)
  s = config.sampling
  keys, scales = ["drop_audio"], [s.audio_scale]
  if with_text:
    keys, scales = keys + ["drop_text"], scales + [s.text_scale]
  if config.model.get("reference_frames", 0) and s.get("reference_scale", 1.0) != 1.0:
    keys, scales = ["drop_reference"] + keys, [s.reference_scale] + scales
  return guidance.nested_guidance(fn, tuple(keys), tuple(scales))


def sample_videos(apply_fn: diffusion_model.ApplyFn, params: Any, cond: Mapping[str, jax.Array],
                  key: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """Generates videos `[B, T, H, W, C]` in [-1, 1] (pixel runs) for `cond` (`conditioning.cond_keys`:
  text tokens or embeddings, text_mask, mel or audio-encoder windows; and for a ControlNet run
  control_maps `[B, T, H, W, Cc]`).

  The video size comes from the audio windows (B, T), config.data.resolution and
  config.model.in_channels. A latent run (`config.latent`) samples latents `[B, T, R/f, R/f,
  C]` and returns them as they are: `latents.to_pixels(config)` decodes (outside this
  function, so the autoencoder's params stay an argument).
  """
  b, t = cond[conditioning.audio_key(config.model)].shape[:2]
  cond = {**keep_all(config, b), **cond}
  cfg = sampler_config(config)
  k_init, k_sample = jax.random.split(key)
  x_T = samplers.initial_noise(k_init, jnp.zeros(latents.diffusion_shape(config, b, t)), cfg)
  x0 = samplers.sample(guided_denoiser(apply_fn, params, config), k_sample, x_T, cond, cfg)
  return x0 if latents.enabled(config) else jnp.clip(x0, -1.0, 1.0)
