"""Frozen-encoder features computed once per dataset split and cached beside the dataset.

A run with a pretrained text encoder or a frozen audio encoder (`gcm_jax.frozen_encoders`)
reads 'text_embeddings' / 'text_mask' / the audio encoder's windows ('whisper', 'wav2vec2')
for every record. They are computed on first
use for the whole split and stored as one `.npy` per feature under

  <cache_root>/<group>-<sha256(identity)[:16]>/<split>.<feature>.npy  (+ identity.txt)

where the identity names the encoder's weights, tokenizer, lengths and windowing, so a
different encoder (or the same one with other settings) never reads another's features.
Each file is written to a temporary name and renamed when complete: an interrupted
computation leaves no file that could be mistaken for a finished one. Reads are memory
mapped, so a large cache costs no host memory.
"""
import hashlib
import os
from typing import Any, Mapping, Sequence

import numpy as np
import tqdm

from gcm_jax import frozen_encoders
from gcm_jax.data import audio
from gcm_jax.data import contract

LATENTS = frozen_encoders.LATENTS_KEY


def group_dir(cache_root: str, group: str, identity: str) -> str:
  """The folder of one encoder group's features (see the module docstring)."""
  return os.path.join(cache_root, f"{group}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}")


def _compute(source: Sequence[Mapping[str, Any]], encoders: frozen_encoders.FrozenEncoders,
             group: str, num_frames: int, batch_size: int = 64) -> dict[str, np.ndarray]:
  """One group's features for every record of `source` (arrays `[N, ...]`)."""
  n = len(source)
  shapes = encoders.feature_shapes(num_frames)
  out = {k: np.zeros((n,) + shapes[k], bool if k.endswith("mask") else np.float32)
         for k in encoders.group_keys()[group]}
  desc = f"caching {group} features"
  if group == "text":
    for start in tqdm.trange(0, n, batch_size, desc=desc, unit="batch", leave=False):
      rows = range(start, min(start + batch_size, n))
      captions = [contract.as_text(source[i].get("caption", b"")) for i in rows]
      for key, value in encoders.encode_captions(captions).items():
        out[key][start:rows.stop] = value
  elif group == "latents":
    for start in tqdm.trange(0, n, batch_size // 8, desc=desc, unit="batch", leave=False):
      rows = range(start, min(start + batch_size // 8, n))
      videos = np.stack([np.asarray(source[i]["video"]) for i in rows])
      out[LATENTS][start:rows.stop] = encoders.encode_videos(videos)[LATENTS]
  else:
    for i in tqdm.trange(n, desc=desc, unit="clip", leave=False):
      wav = np.asarray(source[i]["audio"], np.float32)
      frames = wav.size // audio.SAMPLES_PER_VIDEO_FRAME
      for key, value in encoders.encode_voice(wav, frames).items():
        out[key][i] = value
  return out


def _write_atomic(path: str, array: np.ndarray) -> None:
  tmp = f"{path}.tmp-{os.getpid()}.npy"
  np.save(tmp, array)
  os.replace(tmp, path)


def load_or_compute(source: Sequence[Mapping[str, Any]], split: str,
                    encoders: frozen_encoders.FrozenEncoders, cache_root: str,
                    num_frames: int, compute: bool = True) -> dict[str, np.ndarray]:
  """`{feature: array [N, ...]}` for every feature `encoders` compute, for `source`'s records.

  Reads the cached files of this split when they exist and hold `len(source)` rows;
  otherwise computes (if `compute`, else raises FileNotFoundError naming the file) and
  writes them. Arrays are read-only memory maps.
  """
  features = {}
  group_keys = encoders.group_keys()
  for group, identity in encoders.identities().items():
    folder = group_dir(cache_root, group, identity)
    paths = {k: os.path.join(folder, f"{split}.{k}.npy") for k in group_keys[group]}
    arrays = {k: np.load(p, mmap_mode="r") for k, p in paths.items() if os.path.exists(p)}
    if len(arrays) < len(paths) or any(len(a) != len(source) for a in arrays.values()):
      if not compute:
        missing = [p for p in paths.values() if not os.path.exists(p)]
        raise FileNotFoundError(f"no complete {group} feature cache for split {split!r}: "
                                f"{missing or list(paths.values())}")
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, "identity.txt"), "w") as f:
        f.write(identity + "\n")
      for key, value in _compute(source, encoders, group, num_frames).items():
        _write_atomic(paths[key], value)
      arrays = {k: np.load(p, mmap_mode="r") for k, p in paths.items()}
    features.update(arrays)
  return features


class WithFeatures:
  """A random-access source whose records also carry cached features (`record[key] = a[i]`)."""

  def __init__(self, source: Sequence[Mapping[str, Any]], features: Mapping[str, np.ndarray]):
    self._source, self._features = source, dict(features)

  def __len__(self) -> int:
    return len(self._source)

  def __repr__(self) -> str:  # Stable across hosts and runs: grain checks it on restore.
    return f"WithFeatures({self._source!r}, {sorted(self._features)})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = dict(self._source[index])
    record.update({k: np.asarray(v[index]) for k, v in self._features.items()})
    return record

