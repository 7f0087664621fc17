"""Shared helpers for the training-system tests: a micro config and synthetic batches."""
import os

import ml_collections
import numpy as np

from gcm_jax.configs import tiny
from gcm_jax.data import pipeline
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory


def micro_config() -> ml_collections.ConfigDict:
  """The tiny config shrunk further so a train step compiles and runs in seconds."""
  config = tiny.get_config()
  config.model.update(width=32, depth=1, num_heads=2, patch_size=8, text_max_len=96)
  config.data.update(resolution=32, num_frames=4, num_train=16, num_validation=8, num_test=8,
                     batch_size=8)
  config.train.update(num_steps=4, warmup_steps=1)
  config.diffusion.update(max_motion_frames=1)
  config.checkpoint.update(every_steps=2, keep=5)
  config.log.update(every_steps=1, num_samples=0)
  return config


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, np.ndarray]:
  """A global batch with the pipeline's keys and shapes (random values)."""
  rng = np.random.default_rng(seed)
  b, t, r = config.data.batch_size, config.data.num_frames, config.data.resolution
  tokens = rng.integers(1, 257, (b, config.model.text_max_len)).astype(np.int32)
  tokens[:, 40:] = 0
  return {
      "video": rng.uniform(-1, 1, (b, t, r, r, 3)).astype(np.float32),
      "mel": rng.uniform(-4, 4, (b, t, config.model.mel_window, 80)).astype(np.float32),
      "text_tokens": tokens,
      "text_mask": tokens != 0,
      "mask": np.ones((b,), bool),
  }


def write_workdir(path: str, config: ml_collections.ConfigDict, state, step: int = 3) -> str:
  """Makes `path` a run_train.py-style workdir: `state` checkpointed at `step` + config.json."""
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(path, directory.CHECKPOINT_DIR),
                                             config.checkpoint)
  assert checkpointer.maybe_save(step, state, {"iterator": "{}"}, force=True)
  checkpointer.close()
  with open(os.path.join(path, directory.CONFIG_FILE), "w", encoding="utf-8") as f:
    f.write(config.to_json())
  return path


get_config = micro_config  # So run_train.py can load this file: --config=tests/train_utils.py


TALKING_FACES_KEYS = ("video", "mel", "mouth_open", "text_tokens", "text_mask")


def talking_faces_clips(split: str, num_clips: int, num_frames: int, resolution: int,
                        mel_alignment: str, text_max_len: int, seed: int,
                        keys: tuple[str, ...] = TALKING_FACES_KEYS) -> dict[str, np.ndarray]:
  """Fresh talking-faces clips of a split through the dataset contract
  (`pipeline.load_clips`), stacked: 'video' `[N, T, R, R, 3]`, 'mel' `[N, T, 16, 80]`, ..."""
  data = ml_collections.ConfigDict(dict(name="talking_faces", resolution=resolution,
                                        mel_alignment=mel_alignment))
  return pipeline.load_clips(data, split, num_clips, num_frames, seed, keys, text_max_len)
