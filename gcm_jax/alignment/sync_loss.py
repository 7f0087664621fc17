"""The lip-sync loss of the diffusion train step: Wav2Lip's expert loss on SyncNet windows.

`lipsync_loss` scores random 5-frame windows of the denoised estimate against their audio
windows with a frozen SyncNet (`gcm_jax.models.syncnet`; Wav2Lip's cosine-BCE with label 1,
`sync_bce`), weighted per example by the noise level (`noise_level_weight`: the estimate is
only a face at low noise) and ramped in over training (`lipsync_weight_schedule`).
"""
from typing import Union

import jax
import jax.numpy as jnp

from gcm_jax.models import syncnet as syncnet_lib


BCE_EPS = 1e-7
NOISE_WEIGHTINGS = ("sigmoid", "min_snr", "none")  # See noise_level_weight.


def sync_bce(cos: jax.Array, label: Union[float, jax.Array]) -> jax.Array:
  """Wav2Lip's loss: BCE of the cosine similarity (read as a probability) against `label`.

  Args:
    cos: [...] cosine similarities in [0, 1].
    label: 1 for in-sync, 0 for off-sync; broadcastable to `cos`.
  Returns:
    [...] per-pair losses.
  """
  p = jnp.clip(cos, BCE_EPS, 1.0 - BCE_EPS)
  return -(label * jnp.log(p) + (1.0 - label) * jnp.log1p(-p))


def lipsync_loss(syncnet: syncnet_lib.SyncNet, syncnet_params, video_x0: jax.Array,
                 mel: jax.Array,
                 key: jax.Array, weight: Union[float, jax.Array] = 1.0, *,
                 audio_frame_offset: int = 2) -> jax.Array:
  """Wav2Lip expert lip-sync loss on the diffusion model's x0 estimate (jittable).

  For every clip one random 5-frame window (lower half) and its 16-frame mel window are cut,
  embedded by the frozen SyncNet (`stop_gradient` on its params), and the cosine similarity is
  pushed towards 1 with BCE. Gradients flow to `video_x0` only.

  Args:
    syncnet: the SyncNet module (static).
    syncnet_params: its variables (`{'params': ...}`), treated as constants.
    video_x0: [B, T, H, W, 3] one-step x0 estimate in [-1, 1]; resized to `syncnet.image_size`
      if needed.
    mel: [B, T, 16, 80] per-frame mel windows (pipeline key 'mel').
    key: PRNG key choosing the window per clip.
    weight: scalar or [B] per-clip weight, e.g. `schedule(step) * noise_level_weight(log_snr)`.
    audio_frame_offset: see `gcm_jax.models.syncnet`.

  Returns:
    Scalar: mean over clips of weight * BCE(cos, 1).
  """
  syncnet_lib.check_video_mel(video_x0, mel)
  b, t = video_x0.shape[:2]
  weight = jnp.broadcast_to(jnp.asarray(weight, jnp.float32), (b,))
  video_x0 = syncnet_lib.to_image_size(video_x0, syncnet.image_size)
  starts = jax.random.randint(key, (b,), 0, t - syncnet_lib.SYNC_FRAMES + 1)
  frames, mel_win = syncnet_lib.sync_windows(video_x0, mel, starts, audio_frame_offset)
  params = jax.lax.stop_gradient(syncnet_params)
  v, a = syncnet.apply(params, frames.astype(jnp.float32), mel_win.astype(jnp.float32))
  cos = jnp.sum(v * a, axis=-1)
  return jnp.mean(weight * sync_bce(cos, 1.0))


def noise_level_weight(log_snr: jax.Array, kind: str = "sigmoid", gamma: float = 5.0) -> jax.Array:
  """Per-example weight of the lip-sync loss from the noise level of the diffusion step.

    'sigmoid': sigmoid(log_snr) = SNR / (1 + SNR) (= alpha_bar for variance-preserving
      schedules): the x0 estimate is sharp only at low noise, so the weight goes to 0 as SNR -> 0.
    'min_snr': min(SNR, gamma) / gamma (Min-SNR clipping, saturates at 1 for SNR >= gamma).
    'none': 1 at every level. At high noise the mouth is hidden in x_t and only the audio
      can tell it, which is where the expert's gradient teaches the model to use the audio
      (at low noise the model copies the in-sync mouth from x_t and the loss is ~0 anyway).

  Args:
    log_snr: [B] log signal-to-noise ratio of each example's timestep.
  Returns:
    [B] weights in [0, 1].
  """
  if kind == "sigmoid":
    return jax.nn.sigmoid(log_snr)
  if kind == "min_snr":
    return jnp.minimum(jnp.exp(log_snr), gamma) / gamma
  if kind == "none":
    return jnp.ones_like(log_snr)
  raise ValueError(f"kind must be one of {NOISE_WEIGHTINGS}, got {kind!r}")


def lipsync_weight_schedule(step: jax.Array, max_weight: float, start_step: int,
                            ramp_steps: int) -> jax.Array:
  """Loss weight vs train step: 0 before `start_step`, linear ramp to `max_weight` over
  `ramp_steps` steps (a step function if `ramp_steps == 0`). Jittable in `step`."""
  progress = (jnp.asarray(step, jnp.float32) - start_step) / max(ramp_steps, 1)
  if ramp_steps == 0:
    progress = jnp.where(progress >= 0, 1.0, 0.0)
  return max_weight * jnp.clip(progress, 0.0, 1.0)
