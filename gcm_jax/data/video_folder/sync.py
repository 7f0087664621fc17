"""The optional SyncNet pass: per-clip audio-video offset and confidence.

An `Expert` maps clips (uint8 videos `[N, T, R, R, 3]`, their 16 kHz audio `[N, 640 T]`, the
largest offset to search) to `(offset int32 [N], confidence float32 [N])`. The offset is in
video frames, positive when the sound of frame `t` is found at frame `t + offset` (the audio
lags); the builder then takes the clip's audio `offset` frames later from the source, so
voice and lips line up, and drops clips whose |offset| or confidence is out of bounds.

`load_expert(workdir)` wraps the project's SyncNet (`gcm_jax.models.syncnet`, trained
by `python -m gcm_jax.train.train_syncnet --workdir=...`): clips are resized to its
resolution, the offset is syncnet_python's search of LSE-D over +-max_offset frames and the
confidence is LSE-C (median minus minimum distance; `gcm_jax.alignment.metrics`). Any other
model with the same signature can be passed to `builder.process_video` instead.
"""
import functools
import json
import os
from typing import Callable

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcm_jax.data import audio
from gcm_jax.models import sync_offsets
from gcm_jax.models import syncnet as syncnet_lib
from gcm_jax.models import trained_syncnet


Expert = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def load_expert(workdir: str) -> Expert:
  """The project's SyncNet saved in a train_syncnet `workdir` as an Expert (clips of any size
  are resized to the SyncNet's)."""
  report = os.path.join(workdir, trained_syncnet.REPORT_FILE)
  if not os.path.exists(report):
    raise FileNotFoundError(f"no trained SyncNet in {workdir!r} ({report} missing); train one "
                            f"with python -m gcm_jax.train.train_syncnet --workdir={workdir}")
  with open(report, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f)["config"])
  model, variables = trained_syncnet.load_syncnet(config, workdir)
  size = config.data.resolution
  alignment = config.data.mel_alignment
  frame_offset = syncnet_lib.frame_offset_for_alignment(alignment)

  @functools.cache
  def _scores(max_offset: int):
    return jax.jit(lambda v, video, mel: sync_offsets.lse_metrics(
        model, v, video, mel, audio_frame_offset=frame_offset, vshift=max_offset))

  def expert(videos: np.ndarray, clip_audio: np.ndarray, max_offset: int
             ) -> tuple[np.ndarray, np.ndarray]:
    t = videos.shape[1]
    small = np.stack([[cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip]
                      for clip in videos]).astype(np.float32) / 127.5 - 1.0
    mel = np.stack([audio.frame_windows(audio.melspectrogram(a), t, syncnet_lib.MEL_FRAMES,
                                        alignment) for a in clip_audio])
    lse = _scores(max_offset)(variables, jnp.asarray(small), jnp.asarray(mel))
    # syncnet_python's offset is minus the audio lag.
    return (-np.asarray(lse["offset"], np.int32), np.asarray(lse["lse_c"], np.float32))

  return expert
