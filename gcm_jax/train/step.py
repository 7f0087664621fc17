"""The pure train step: `(state, batch) -> (state, metrics)`.

Per example the step draws (from `fold_in(PRNGKey(seed), step)`, so a resumed run
replays the same randomness): the noise level and noise, classifier-free-guidance
condition dropout (text / audio independently plus jointly), and with probability
`p_motion_frames` a number k in [1, max_motion_frames] of leading frames given as
clean context (`cond['frames']`, `cond['frame_mask']`), which the loss then ignores.
This teaches the model the motion-frame conditioning used for long-video extension.

With `config.diffusion.mouth_loss_weight` w != 1, pixels in the mouth region (the batch
feature `mouth_region`, made by the input pipeline from the talking-faces keypoints)
weigh w times the others in the per-example mean: the mouth is ~1% of a 32 px frame, yet
it is the only part of the image the audio determines. `eye_loss_weight` does the same for
the eyes (`eye_region`, ~3% of a 32 px frame: unweighted, a short run draws no eyes,
docs/results.md "The quick start"), `masked_loss_weight` for a dubbing run's mask.
"""
import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gcm_jax.alignment import experts
from gcm_jax.alignment import sync_loss
from gcm_jax.diffusion import guidance
from gcm_jax.diffusion import losses
from gcm_jax.diffusion import schedules
from gcm_jax.models import autoencoder as ae
from gcm_jax.models import conditioning
from gcm_jax.models import control
from gcm_jax.models import diffusion_model
from gcm_jax.models import syncnet as syncnet_lib
from gcm_jax.runs import state as state_lib


# LossConfig fields read from config.diffusion under another name.
_LOSS_CONFIG_KEYS = {"prediction": "parameterization", "weighting": "loss_weighting"}


def make_loss_config(diffusion_config: Mapping[str, Any]) -> losses.LossConfig:
  """The LossConfig of `config.diffusion`: schedule from its name, prediction = parameterization,
  weighting = loss_weighting, every other field (min_snr_gamma, sigma_data, noise_distribution,
  p_mean, p_std) = diffusion_config[<field>]. Raises ValueError for unknown names. Fields a
  config lacks (a run saved before they existed) keep LossConfig's defaults.
  """
  keys = {f.name: _LOSS_CONFIG_KEYS.get(f.name, f.name)
          for f in dataclasses.fields(losses.LossConfig) if f.name != "schedule"}
  options = {name: diffusion_config[key] for name, key in keys.items() if key in diffusion_config}
  return losses.LossConfig(schedule=schedules.from_name(diffusion_config["schedule"]), **options)


def motion_frame_mask(key: jax.Array, batch_size: int, num_frames: int, p_motion: float,
                      max_motion: int) -> jax.Array:
  """Bool `[B, T]`: True for the k leading frames given as context (k = 0 w.p. 1 - p_motion)."""
  if max_motion >= num_frames:
    raise ValueError(f"max_motion_frames={max_motion} must be < num_frames={num_frames}")
  k_use, k_len = jax.random.split(key)
  use = jax.random.bernoulli(k_use, p_motion, (batch_size,))
  length = jax.random.randint(k_len, (batch_size,), 1, max_motion + 1) * use
  return jnp.arange(num_frames)[None, :] < length[:, None]


def target_key(config: ml_collections.ConfigDict) -> str:
  """The batch feature the model learns to generate: 'video' pixels, or 'latents' (scaled
  autoencoder latents `[B, T, R/f, R/f, C]`, `config.latent`)."""
  return "video" if config.get("latent", {}).get("source", "none") == "none" else "latents"


def make_conditioning(key: jax.Array, batch: Mapping[str, jax.Array],
                      diffusion_config: Mapping[str, Any],
                      model_config: Mapping[str, Any], target: str = "video"
                      ) -> dict[str, jax.Array]:
  """The model's `cond` dict for a training batch, with random dropout and motion frames
  (clean frames of `batch[target]`); the text and audio features are the ones
  `model_config`'s encoders read (`conditioning`); a model of a person takes the batch's
  reference frames (dropped with probability `p_drop_reference`) and, for dubbing, the clip
  itself as the masked source (`conditioning.identity_cond`)."""
  video = batch[target]
  b, t = video.shape[:2]
  k_drop, k_motion, k_reference = jax.random.split(key, 3)
  drop_text, drop_audio = guidance.drop_conditions(
      k_drop, b, diffusion_config["p_drop_text"], diffusion_config["p_drop_audio"],
      diffusion_config["p_drop_both"])
  passthrough = {k: batch[k] for k in (control.MAPS_KEY,) if k in batch}  # For control branches.
  return {
      **passthrough,
      **{k: batch[k] for k in conditioning.cond_keys(model_config)},
      **conditioning.identity_cond(model_config, batch, video),
      **({"drop_reference": jax.random.bernoulli(
          k_reference, diffusion_config["p_drop_reference"], (b,))}
         if model_config.get("reference_frames", 0) else {}),
      "drop_text": drop_text, "drop_audio": drop_audio, "frames": video,
      "frame_mask": motion_frame_mask(k_motion, b, t, diffusion_config["p_motion_frames"],
                                      diffusion_config["max_motion_frames"]),
  }


# Loss-weighted regions: (batch feature, bool `[B, T, H, W]` made by the input pipeline from
# the dataset's `derived` makers; its weight's field in config.diffusion).
WEIGHTED_REGIONS = (("mouth_region", "mouth_loss_weight"), ("eye_region", "eye_loss_weight"),
                    ("source_mask", "masked_loss_weight"))


def region_weights(diffusion_config: ml_collections.ConfigDict) -> dict[str, float]:
  """{batch feature: loss weight} of the `WEIGHTED_REGIONS` whose weight is not 1."""
  weights = {key: float(diffusion_config.get(field, 1.0)) for key, field in WEIGHTED_REGIONS}
  return {key: w for key, w in weights.items() if w != 1.0}


def loss_weights(batch: Mapping[str, jax.Array], frame_mask: jax.Array,
                 weights: Mapping[str, float], size: Optional[int] = None) -> jax.Array:
  """Per-pixel loss weights `[B, T, H, W]` (or `[B, T, 1, 1]` without region weighting).

  0 on the given context frames (`frame_mask` `[B, T]`), else 1, times `weights[key]` inside
  each region `batch[key]` (bool `[B, T, H, W]`; `region_weights`: the mouth, the eyes, the
  dubbing mask). With `size` (the latent grid of a latent run) a region is pooled to
  `[B, T, size, size]`: a latent cell is in it if any of its pixels is.
  """
  out = (~frame_mask).astype(jnp.float32)[:, :, None, None]
  fields = dict(WEIGHTED_REGIONS)
  for key, weight in weights.items():
    if key not in batch:
      raise ValueError(f"config.diffusion.{fields.get(key, key)} != 1 needs the batch feature "
                       f"{key!r} (bool [B, T, H, W], gcm_jax.data.pipeline.preprocess)")
    region = batch[key]
    if size is not None and region.shape[2] != size:
      b, t, h, w = region.shape
      region = region.reshape(b, t, size, h // size, size, w // size).any(axis=(3, 5))
    out = out * jnp.where(region, weight, 1.0)
  return out


def lipsync_term(expert: experts.Expert, key: jax.Array, x0_hat: jax.Array, logsnr: jax.Array,
                 batch: Mapping[str, jax.Array], cond: Mapping[str, jax.Array],
                 step: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """Scalar lip-sync loss of the expert `config.lipsync.expert` (`experts.EXPERTS`: the
  project SyncNet or Wav2Lip's SyncNet_color) on the x0 estimate `[B, T, H, W, 3]`.

  Per example weighted by `config.lipsync` (weight schedule over steps x noise-level
  weight), and 0 where the audio was dropped (CFG) or the example is padding.
  """
  cfg = config.lipsync
  weight = (sync_loss.lipsync_weight_schedule(step, cfg.weight, cfg.start_step,
                                                cfg.ramp_steps)
            * sync_loss.noise_level_weight(logsnr, cfg.noise_weighting)
            * (~cond["drop_audio"] & batch["mask"]).astype(jnp.float32))
  net, variables = expert
  return experts.EXPERTS[cfg.expert].loss(
      net, variables, x0_hat, batch["mel"], key, weight,
      audio_frame_offset=syncnet_lib.frame_offset_for_alignment(config.data.mel_alignment))


def sync_window(key: jax.Array, *per_frame: jax.Array) -> tuple[jax.Array, ...]:
  """One random window of `syncnet.SYNC_FRAMES` (5) consecutive frames per clip, the same
  frames of each array in `per_frame` (`[B, T, ...]`, e.g. the video and its per-frame mel
  windows `[B, T, 16, 80]`) -> `[B, 5, ...]` each. The experts' losses draw one window of a
  5-frame clip (start 0) and read its mel at the same frame offset as in the full clip, so a
  latent run decodes 5 frames per clip instead of T with the same loss distribution."""
  b, t = per_frame[0].shape[:2]
  starts = jax.random.randint(key, (b,), 0, t - syncnet_lib.SYNC_FRAMES + 1)
  cut = jax.vmap(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, syncnet_lib.SYNC_FRAMES,
                                                           axis=0))
  return tuple(cut(x, starts) for x in per_frame)


def decoded_pixel_loss(decoded: jax.Array, video: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean squared error of decoded x0 estimates `[k, F, H, W, 3]` against the clips' frames
  `video` (the same shape, [-1, 1]) over the clips with `mask` `[k]`: a scalar."""
  per_clip = jnp.mean(jnp.square(decoded - video), axis=(1, 2, 3, 4))
  weight = mask.astype(jnp.float32)
  return jnp.sum(per_clip * weight) / jnp.maximum(weight.sum(), 1.0)


def decode_latents(autoencoder: ae.AutoencoderKL, params: Any, latents: jax.Array
                   ) -> jax.Array:
  """Scaled latents `[B, T, h, w, C]` -> pixels `[B, T, H, W, 3]` clipped to [-1, 1], under
  `jax.checkpoint` (inside a loss, the backward pass recomputes the decoder)."""
  decode = jax.checkpoint(lambda p, z: autoencoder.apply(
      {"params": p}, ae.unscale_latents(z, autoencoder.config), method=ae.AutoencoderKL.decode))
  return jnp.clip(decode(params, latents), -1.0, 1.0)


def pixel_loss_weight(config: ml_collections.ConfigDict) -> float:
  """`config.latent.pixel_loss_weight` (0 in pixel runs and configs that predate it)."""
  return float(config.get("latent", {}).get("pixel_loss_weight", 0.0))


def batch_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The batch features `train_step` reads (the input pipeline sends only these to devices)."""
  audio = conditioning.audio_key(config.model)  # 'mel' itself always: the SyncNet reads it.
  keys = ((target_key(config), "mel") + conditioning.text_keys(config.model) + ("mask",)
          + ((audio,) if audio != "mel" else ()))
  if pixel_loss_weight(config) > 0 and target_key(config) != "video":
    keys += ("video",)  # The decoded pixel loss's reference frames.
  keys += tuple(region_weights(config.diffusion))
  return tuple(dict.fromkeys(keys + conditioning.identity_keys(config.model)
                             + control.batch_keys(config)))


def train_step(state: state_lib.TrainState, batch: Mapping[str, jax.Array],
               frozen: Mapping[str, Any], *, apply_fn: diffusion_model.ApplyFn,
               optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict,
               lipsync_net: Optional[nn.Module] = None,
               autoencoder: Optional[ae.AutoencoderKL] = None
               ) -> tuple[state_lib.TrainState, dict]:
  """One optimization step on a global batch (`batch['video']` `[B, T, H, W, 3]` etc.).

  `apply_fn(state.params, x_t, t, cond)` is the network (e.g. `model_apply_fn(model)`, or
  a base model plus ControlNet branch, `control.controlled_apply_fn`, which reads
  `cond['control_maps']` passed through from the batch). Examples with
  `batch['mask'] == False` (padding) do not contribute. `frozen` holds the variables of
  frozen networks, passed as an argument so that they are inputs of the compiled step, not
  constants baked into it:
  with `lipsync_net` (the module of `config.lipsync.expert`) and `frozen['lipsync']` its
  variables, the loss adds `lipsync_term` on the model's x0 estimate of the batch's first
  `config.lipsync.clips_per_step` clips (0: all; the batches are shuffled); in a latent run
  (`batch['latents']`, the `autoencoder` module with `frozen['autoencoder']` its params)
  the 5 frames of that estimate the expert sees (`sync_window`) are decoded to pixels first,
  under remat (the decoder's activations are recomputed in the backward pass, not stored).
  A latent run with `config.latent.pixel_loss_weight` > 0 adds that weight x
  `decoded_pixel_loss` of the same decoded frames against the clips' frames
  (`batch['video']`), with or without the lip-sync loss. Returns the new state and scalar
  metrics: loss, denoising_loss, lipsync_loss, pixel_loss, grad_norm, learning_rate,
  skipped_steps.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step)
  k_cond, k_loss, k_sync = jax.random.split(key, 3)
  target = batch[target_key(config)]
  cond = make_conditioning(k_cond, batch, config.diffusion, config.model, target_key(config))
  loss_cfg = make_loss_config(config.diffusion)
  example_weight = batch["mask"].astype(jnp.float32)
  pixel_weights = loss_weights(batch, cond["frame_mask"], region_weights(config.diffusion),
                               target.shape[2])

  pixel_weight = pixel_loss_weight(config)

  def loss_fn(params):
    model_fn = lambda x, t, c: apply_fn(params, x, t, c)
    terms = losses.denoising_terms(model_fn, k_loss, target, cond, loss_cfg,
                                   loss_mask=pixel_weights,
                                   known_fn=conditioning.known_source(config.diffusion))
    denoising = (jnp.sum(terms["per_example"] * example_weight)
                 / jnp.maximum(example_weight.sum(), 1.0))
    lipsync = pixel = jnp.zeros(())
    if lipsync_net is not None or (autoencoder is not None and pixel_weight > 0):
      k = config.lipsync.clips_per_step or target.shape[0]  # The batch's first k clips.
      x0_hat, logsnr = terms["x0_hat"][:k], terms["logsnr"][:k]
      sync_batch = {"mel": batch["mel"][:k], "mask": batch["mask"][:k]}
      sync_cond = {"drop_audio": cond["drop_audio"][:k]}
      if autoencoder is not None:  # Decode only the 5 frames the expert sees.
        window = (x0_hat, sync_batch["mel"]) + ((batch["video"][:k],) if pixel_weight else ())
        window = sync_window(jax.random.fold_in(k_sync, 1), *window)
        x0_hat, sync_batch["mel"] = window[:2]
        x0_hat = decode_latents(autoencoder, frozen["autoencoder"], x0_hat)
        if pixel_weight:
          pixel = pixel_weight * decoded_pixel_loss(x0_hat, window[2], sync_batch["mask"])
      if lipsync_net is not None:
        lipsync = lipsync_term((lipsync_net, frozen["lipsync"]), k_sync, x0_hat, logsnr,
                               sync_batch, sync_cond, state.step, config)
    return denoising + lipsync + pixel, (denoising, lipsync, pixel)

  (loss, (denoising, lipsync, pixel)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  new_state = state_lib.apply_gradients(state, grads, optimizer, config.train.ema_decay,
                                         config.train.ema_warmup)
  metrics = {
      "loss": loss,
      "denoising_loss": denoising,
      "lipsync_loss": lipsync,
      "pixel_loss": pixel,
      "grad_norm": optax.global_norm(grads),
      "learning_rate": state_lib.learning_rate_schedule(config.train)(state.step),
      "skipped_steps": state_lib.skipped_steps(new_state),
  }
  return new_state, metrics
