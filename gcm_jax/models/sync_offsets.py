"""syncnet_python's read-out of SyncNet window embeddings: LSE-D, LSE-C and the AV offset.

LSE-D / LSE-C / offset follow syncnet_python's `SyncNetInstance.evaluate` exactly:

1. Windows: for a clip of T frames, video windows start at i = 0 .. T-6 (syncnet_python's
   `lastframe = min_length - 5`, so T - 5 windows); window i is frames i..i+4 (lower half) and
   the audio window covering the same 0.2 s.
2. `calc_pdist`: the audio embeddings are zero-padded by `vshift` on both ends and
   `dists[i, j] = || v_i - a_pad[i + j] + 1e-6 ||_2` for j = 0 .. 2*vshift (torch's
   `pairwise_distance` adds eps = 1e-6 to the difference), i.e. video window i against audio
   window i + j - vshift.
3. `mdist[j] = mean_i dists[i, j]`; LSE-D = min_j mdist, LSE-C = median_j mdist - LSE-D,
   offset = vshift - argmin_j mdist.

Sign of the offset (as syncnet_python): video window i best matches audio window i - offset, so
offset = +k means the audio *leads* the video by k frames. Delaying the audio by k frames
(audio window t now holds what was at t - k) lowers the offset by k.

The embeddings are those of our SyncNet (`gcm_jax.models.syncnet`, unit-norm), not of the
original VoxCeleb SyncNet, so absolute LSE values are comparable across runs of this repo only.
"""
from typing import Dict, Tuple

import jax
import jax.numpy as jnp

from gcm_jax.models import syncnet as syncnet_lib


VSHIFT = 15
PDIST_EPS = 1e-6  # torch.nn.functional.pairwise_distance default.


def calc_pdist(video_emb: jax.Array, audio_emb: jax.Array, vshift: int = VSHIFT) -> jax.Array:
  """syncnet_python's `calc_pdist` for one clip.

  Args:
    video_emb: [N, D] embeddings of the N video windows.
    audio_emb: [N, D] embeddings of the N audio windows (same timing as the video windows).
    vshift: largest offset searched.

  Returns:
    [N, 2*vshift+1] distances; column j is offset j - vshift of the audio.
  """
  if video_emb.ndim != 2 or video_emb.shape != audio_emb.shape:
    raise ValueError(f"video_emb and audio_emb must both be [N, D], got "
                     f"{tuple(video_emb.shape)} and {tuple(audio_emb.shape)}")
  n = video_emb.shape[0]
  padded = jnp.pad(audio_emb, ((vshift, vshift), (0, 0)))
  idx = jnp.arange(n)[:, None] + jnp.arange(2 * vshift + 1)[None, :]  # [N, 2v+1]
  diff = video_emb[:, None, :] - padded[idx] + PDIST_EPS
  return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def sync_scores(video_emb: jax.Array, audio_emb: jax.Array,
                vshift: int = VSHIFT) -> Dict[str, jax.Array]:
  """LSE-D, LSE-C and AV offset of one clip from its window embeddings.

  Args:
    video_emb, audio_emb: [N, D] window embeddings (see `calc_pdist`).
    vshift: largest offset searched (15 in syncnet_python).

  Returns:
    {'lse_d': scalar, 'lse_c': scalar, 'offset': int32 scalar, 'mdist': [2*vshift+1]}.
  """
  mdist = jnp.mean(calc_pdist(video_emb, audio_emb, vshift), axis=0)
  minidx = jnp.argmin(mdist)
  lse_d = mdist[minidx]
  return {"lse_d": lse_d, "lse_c": jnp.median(mdist) - lse_d,
          "offset": (vshift - minidx).astype(jnp.int32), "mdist": mdist}


def window_embeddings(syncnet: syncnet_lib.SyncNet, syncnet_params, video: jax.Array,
                      mel: jax.Array, audio_frame_offset: int) -> Tuple[jax.Array, jax.Array]:
  """SyncNet embeddings of the T - 5 windows syncnet_python evaluates, for a batch of clips.

  Args:
    video: [B, T, H, W, 3] in [-1, 1] at the SyncNet's resolution, T >= 6.
    mel: [B, T, 16, 80] per-frame mel windows.
    audio_frame_offset: see `gcm_jax.models.syncnet`.

  Returns:
    (video_emb [B, T-5, D], audio_emb [B, T-5, D]).
  """
  syncnet_lib.check_video_mel(video, mel)
  b, t = video.shape[:2]
  if t < syncnet_lib.SYNC_FRAMES + 1:
    raise ValueError(f"syncnet_python evaluates T - 5 windows; need T >= 6, got T={t}")
  n = t - syncnet_lib.SYNC_FRAMES
  starts = jnp.arange(n)
  frames = syncnet_lib.lower_half(
      jnp.stack([video[:, starts + k] for k in range(syncnet_lib.SYNC_FRAMES)], axis=2))
  frames = frames.reshape(b * n, *frames.shape[2:])
  mel_idx = jnp.clip(starts + audio_frame_offset, 0, t - 1)
  mel_win = mel[:, mel_idx].reshape(b * n, *mel.shape[2:])
  v, a = syncnet.apply(syncnet_params, frames, mel_win)
  return v.reshape(b, n, -1), a.reshape(b, n, -1)


def lse_metrics(syncnet: syncnet_lib.SyncNet, syncnet_params, video: jax.Array, mel: jax.Array,
                *, audio_frame_offset: int = 2, vshift: int = VSHIFT) -> Dict[str, jax.Array]:
  """Per-clip LSE-D, LSE-C and AV offset of a batch of clips (jittable with static syncnet).

  Args:
    video: [B, T, H, W, 3] in [-1, 1] (generated or real), T >= 6.
    mel: [B, T, 16, 80] per-frame mel windows of the driving audio.

  Returns:
    {'lse_d': [B], 'lse_c': [B], 'offset': [B] int32, 'mdist': [B, 2*vshift+1]}.
  """
  v, a = window_embeddings(syncnet, syncnet_params, video, mel, audio_frame_offset)
  return jax.vmap(lambda v, a: sync_scores(v, a, vshift))(v, a)


def shift_mel_windows(mel: jax.Array, k: int, fill_value: float = -4.0) -> jax.Array:
  """Delays the audio by k frames: out[:, t] = mel[:, t - k] (k < 0 advances it).

  Args:
    mel: [B, T, W, 80] per-frame windows; frames shifted in from outside are `fill_value`
      (silence in Wav2Lip's normalization).
  """
  if mel.ndim != 4:
    raise ValueError(f"mel must be [B, T, W, 80], got {tuple(mel.shape)}")
  t = mel.shape[1]
  src = jnp.arange(t) - k
  valid = (src >= 0) & (src < t)
  out = mel[:, jnp.clip(src, 0, t - 1)]
  return jnp.where(valid[None, :, None, None], out, fill_value)
