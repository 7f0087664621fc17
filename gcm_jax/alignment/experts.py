"""Lip-sync experts for the diffusion train step's lip-sync loss (`config.lipsync.expert`).

`EXPERTS[name]` loads a frozen sync network from the config's weights and applies its
lip-sync loss to the model's x0 estimate (`gcm_jax.train.step.lipsync_term`):

* "project": the SyncNet trained in this repo (`gcm_jax.models.syncnet`,
  `train_syncnet` workdir in `config.lipsync.syncnet_workdir`); it sees the video at its
  own resolution (32 px), RGB in [-1, 1].
* "wav2lip": Wav2Lip's expert discriminator `SyncNet_color`
  (`gcm_jax.models.pretrained.wav2lip_syncnet`, `lipsync_expert.pth` in
  `config.lipsync.expert_weights`), as Wav2Lip's `get_sync_loss` feeds it: a random
  5-frame window of each clip, every frame resized (bilinear) to 96x96, mapped to [0, 1],
  lower half, BGR, frames stacked on channels (`wav2lip_syncnet.face_input`); its mel
  window `[16, 80]` is the batch's per-frame window of the window's first frame (+2 frames
  with 'center' alignment, `syncnet.frame_offset_for_alignment`). Loss: BCE of the cosine
  similarity against 1 (Wav2Lip's `cosine_loss`; the probability clipped to
  [1e-7, 1 - 1e-7] as the project expert's `sync_bce`, where Wav2Lip clamps the log at
  -100: equal above 1e-7, and a finite gradient everywhere).

Audio timing vs Wav2Lip (`audio.melspectrogram` of Wav2Lip's hparams, which
`gcm_jax.data.audio` reproduces; `crop_audio_window`: mel frames
`int(80 * t / 25) .. + 16` for a window starting at video frame t): with
`config.data.mel_alignment = "start"` the batch's window is exactly Wav2Lip's; with
"center" it starts at `round(3.2 t)` instead of `floor(3.2 t)`, i.e. 0 or 1 mel frame
(12.5 ms, 0.3 video frames) later (tested in tests/test_lipsync_experts.py).
"""
import dataclasses
from typing import Any, Callable, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gcm_jax.alignment import sync_loss
from gcm_jax.models import syncnet as syncnet_lib
from gcm_jax.models import trained_syncnet
from gcm_jax.models.pretrained import wav2lip_syncnet as w2l


Expert = tuple[nn.Module, Any]  # (frozen sync network, its variables)


def wav2lip_lipsync_loss(net: w2l.SyncNetColor, variables: Any, video_x0: jax.Array,
                         mel: jax.Array, key: jax.Array, weight: Union[float, jax.Array] = 1.0,
                         *, audio_frame_offset: int = 2) -> jax.Array:
  """Wav2Lip's expert sync loss on the x0 estimate (jittable; gradients to `video_x0` only).

  Args:
    net, variables: from `w2l.load_wav2lip_syncnet` (running BatchNorm statistics).
    video_x0: `[B, T, H, W, 3]` RGB in [-1, 1], T >= 5, any H, W (resized to 96x96).
    mel: `[B, T, 16, 80]` per-frame mel windows (pipeline key 'mel').
    key: PRNG key choosing each clip's window.
    weight: scalar or `[B]` per-clip weight.
    audio_frame_offset: `syncnet.frame_offset_for_alignment(config.data.mel_alignment)`.

  Returns:
    Scalar: mean over clips of weight * BCE(cos(audio_emb, face_emb), 1).
  """
  syncnet_lib.check_video_mel(video_x0, mel)
  b, t = video_x0.shape[:2]
  weight = jnp.broadcast_to(jnp.asarray(weight, jnp.float32), (b,))
  starts = jax.random.randint(key, (b,), 0, t - syncnet_lib.SYNC_FRAMES + 1)
  frames = jax.vmap(lambda v, s: jax.lax.dynamic_slice_in_dim(
      v, s, syncnet_lib.SYNC_FRAMES, axis=0))(video_x0, starts)       # [B, 5, H, W, 3]
  size = (b, syncnet_lib.SYNC_FRAMES, w2l.FACE_SIZE, w2l.FACE_SIZE, 3)
  frames = jax.image.resize(frames.astype(jnp.float32), size, "linear")
  faces = w2l.face_input((frames + 1.0) / 2.0)                          # [B, 48, 96, 15]
  mel_t = jnp.clip(starts + audio_frame_offset, 0, t - 1)
  mel_win = mel[jnp.arange(b), mel_t].astype(jnp.float32)               # [B, 16, 80]
  audio_emb, face_emb = net.apply(jax.lax.stop_gradient(variables), mel_win, faces)
  p = w2l.sync_probability(audio_emb, face_emb)
  return jnp.mean(weight * sync_loss.sync_bce(p, 1.0))


@dataclasses.dataclass(frozen=True)
class LipSyncExpert:
  """One choice of `config.lipsync.expert`.

  Attributes:
    weights_field: the `config.lipsync` field naming its weights.
    weights_kind: "dir" or "file": what that field must name (config_validation).
    weights_help: what that is and where it comes from (for error messages).
    load: `config -> (module, variables)`.
    loss: `(module, variables, video_x0, mel, key, weight, *, audio_frame_offset) -> scalar`.
  """
  weights_field: str
  weights_kind: str
  weights_help: str
  load: Callable[[ml_collections.ConfigDict], Expert]
  loss: Callable[..., jax.Array]


def _load_project(config: ml_collections.ConfigDict) -> Expert:
  return trained_syncnet.load_matching_syncnet(config.lipsync.syncnet_workdir, config.data)


def _load_wav2lip(config: ml_collections.ConfigDict) -> Expert:
  return w2l.load_wav2lip_syncnet(config.lipsync.expert_weights)


EXPERTS: dict[str, LipSyncExpert] = {
    "project": LipSyncExpert(
        "syncnet_workdir", "dir", "a gcm_jax.train.train_syncnet workdir; train one with "
        "python -m gcm_jax.train.train_syncnet", _load_project, sync_loss.lipsync_loss),
    "wav2lip": LipSyncExpert(
        "expert_weights", "file", "Wav2Lip's lipsync_expert.pth (Wav2Lip's README, 'Expert "
        "Discriminator')", _load_wav2lip, wav2lip_lipsync_loss),
}
