"""Frame conditioning masks, inpainting/infilling, and long-video generation with motion frames.

Videos are `[B, T, H, W, C]`; a frame mask is bool `[B, T]` (True = frame is given/known).
Known frames reach the sampler two ways, both on by default:
  * model conditioning: cond['frames'] (clean frames, zeros where unknown) and cond['frame_mask'],
    for a model trained with motion-frame conditioning;
  * replacement (`inpaint_denoiser`): the x0-denoiser's prediction is overwritten by the known
    frames. Every sampler's last step returns the denoiser output, so known frames come out
    exactly, and the unknown frames are sampled consistently with them through the model.

`generate_long_video` makes N frames from windows of T_window frames: window w starts at
s_w = min(w (T_window - K), N - T_window), so consecutive windows overlap by K motion frames (the
last window overlaps more when N - T_window is not a multiple of T_window - K and always ends at
N). Each window is conditioned on the already generated frames it overlaps and sees
cond[key][:, s_w:s_w + T_window] for every time-indexed condition (default 'mel' [B, N, W, 80]).
The loop over windows is a `lax.scan`; each window is one `samplers.sample` call.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax.diffusion import parameterization, samplers

DenoiseFn = samplers.DenoiseFn


def frame_mask(batch_size: int, num_frames: int, known: Sequence[int]) -> jax.Array:
  """Bool mask [B, T], True at the frame indices in `known` (e.g. keyframes to infill between)."""
  known = np.asarray(known, int)
  if known.size and (known.min() < 0 or known.max() >= num_frames):
    raise ValueError(f"known frame indices {known.tolist()} out of range [0, {num_frames})")
  return jnp.broadcast_to(jnp.isin(jnp.arange(num_frames), known), (batch_size, num_frames))


def inpaint_denoiser(denoise_fn: DenoiseFn, known: jax.Array, mask: jax.Array) -> DenoiseFn:
  """x0-denoiser whose prediction equals `known` [B, T, ...] where `mask` [B, T] is True."""

  def denoise(x, t, cond):
    x0 = denoise_fn(x, t, cond)
    return jnp.where(parameterization.expand_to(mask, x0), known.astype(x0.dtype), x0)

  return denoise


def sample_window(denoise_fn: DenoiseFn, key: jax.Array, frames: jax.Array, mask: jax.Array,
                  cond: dict, cfg: samplers.SamplerConfig, replace: bool = True) -> jax.Array:
  """Samples one window [B, T, H, W, C] given clean `frames` (same shape) at `mask` [B, T].

  Sets cond['frames'] = frames * mask and cond['frame_mask'] = mask; with replace=True also uses
  `inpaint_denoiser`. Known frames are copied into the result. Jittable (cfg static).
  """
  m = parameterization.expand_to(mask, frames)
  frames = jnp.where(m, frames, 0)
  cond = {**cond, "frames": frames, "frame_mask": mask}
  fn = inpaint_denoiser(denoise_fn, frames, mask) if replace else denoise_fn
  k_init, k_sample = jax.random.split(key)
  out = samplers.sample(fn, k_sample, samplers.initial_noise(k_init, frames, cfg), cond, cfg)
  return jnp.where(m, frames, out)


def window_starts(num_frames: int, window: int, motion_frames: int) -> np.ndarray:
  """Start index of every window (see module docstring); validates the arguments."""
  if not 0 <= motion_frames < window:
    raise ValueError(f"need 0 <= motion_frames < window, got motion_frames={motion_frames}, "
                     f"window={window}")
  if num_frames < window:
    raise ValueError(f"num_frames={num_frames} is shorter than one window ({window} frames)")
  stride = window - motion_frames
  count = 1 + -(-(num_frames - window) // stride)
  return np.minimum(np.arange(count) * stride, num_frames - window)


def seam_frames(num_frames: int, window: int, motion_frames: int) -> np.ndarray:
  """Index of the first newly generated frame of every window after the first: window w
  conditions on the frames before s_{w-1} + window and generates the rest, so frame
  s_{w-1} + window is the first one that did not exist when it started (`[num_windows - 1]`,
  empty for a single window). The transitions into these frames are where windows can show
  seams (`gcm_jax.alignment.fidelity.seam_ratio`)."""
  return window_starts(num_frames, window, motion_frames)[:-1] + window


def generate_long_video(denoise_fn: DenoiseFn, key: jax.Array, cond: dict,
                        cfg: samplers.SamplerConfig, video_shape: Sequence[int], window: int,
                        motion_frames: int, time_keys: Sequence[str] = ("mel",),
                        replace: bool = True) -> jax.Array:
  """Generates a video of video_shape = (B, N, H, W, C) with overlapping windows.

  Args:
    denoise_fn: x0-denoiser `(x [B, window, H, W, C], t, cond) -> x0` (possibly guided).
    key: PRNG key; window w uses jax.random.split(key, num_windows)[w].
    cond: condition dict; entries named in time_keys have shape [B, >= N, ...] and are sliced per
      window along axis 1; other entries (text tokens, drop flags) are passed unchanged.
    cfg: sampler config used for every window.
    video_shape: (B, N, H, W, C), N >= window.
    window: frames per model call (the training length T).
    motion_frames: K, frames shared by consecutive windows, 0 <= K < window.
    time_keys: names of per-frame conditions to slice.
    replace: also use replacement (`inpaint_denoiser`) for the known frames.
  Returns:
    video [B, N, H, W, C]; overlapping frames are those of the window that generated them first.
  """
  batch, num_frames = video_shape[:2]
  starts = window_starts(num_frames, window, motion_frames)
  for name in time_keys:
    if name not in cond:
      raise KeyError(f"time-indexed condition {name!r} not in cond (keys: {sorted(cond)})")
    if cond[name].shape[1] < num_frames:
      raise ValueError(f"cond[{name!r}] covers {cond[name].shape[1]} frames but the video has "
                       f"{num_frames}; provide audio features for every output frame")

  def step(carry, inputs):
    video, done = carry
    start, k = inputs
    mask = jnp.broadcast_to(start + jnp.arange(window) < done, (batch, window))
    frames = jax.lax.dynamic_slice_in_dim(video, start, window, axis=1)
    cond_w = {**cond, **{name: jax.lax.dynamic_slice_in_dim(cond[name], start, window, axis=1)
                         for name in time_keys}}
    out = sample_window(denoise_fn, k, frames, mask, cond_w, cfg, replace)
    return (jax.lax.dynamic_update_slice_in_dim(video, out, start, axis=1), start + window), None

  video = jnp.zeros(video_shape, jnp.result_type(float))
  keys = jax.random.split(key, len(starts))
  (video, _), _ = jax.lax.scan(step, (video, jnp.int32(0)), (jnp.asarray(starts, jnp.int32), keys))
  return video
