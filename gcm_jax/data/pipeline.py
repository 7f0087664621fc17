"""Input pipeline: TFDS array_record data source -> grain -> per-host batches -> global arrays.

`make_dataset(config, split, mesh)` returns a `DataIterator` whose `next()` is a dict of
global `jax.Array`s sharded along the batch axis over `batch_axes` of the mesh (see
docs/data.md for keys and shapes). Each JAX process reads a disjoint contiguous shard of the records
(`HostShard`), shuffles it with grain, preprocesses them on the CPU (log-mel
windows, text tokens, video to [-1, 1]) and batches `batch_size / process_count` of them;
`jax.make_array_from_process_local_data` assembles the global batch.

Order is a pure function of (seed, split, number of batches consumed): the iterator's
`get_state()` bytes (grain's DataLoader state) saved with a checkpoint and passed to
`set_state()` resume exactly. `DataIterator` follows grain's iterator protocol, so
`grain.checkpoint.CheckpointHandler` / `CheckpointSave` can checkpoint it with orbax.
"""
from typing import Any, Sequence

import grain
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gcm_jax.data import audio
from gcm_jax.data.talking_faces import talking_faces
from gcm_jax.models import tokenizer

SPLITS = ("train", "validation", "test")
DATASETS = ("talking_faces",)


def default_config() -> ml_collections.ConfigDict:
  """Proposed `config.data` fields with their defaults (documented in docs/data.md)."""
  return ml_collections.ConfigDict({
      "name": "talking_faces",
      "data_dir": "/tmp/tensorflow_datasets",
      "build_if_missing": True,
      "resolution": 32,
      "num_frames": 16,
      "num_train": 2000,
      "num_validation": 200,
      "num_test": 200,
      "dataset_seed": 0,
      "batch_size": 8,
      "mel_window": 16,
      "mel_alignment": "center",
      "text_max_len": 128,
      "shuffle": True,
      "worker_count": 0,
  })


def preprocess(features: dict[str, Any], mel_window: int = 16,
               mel_alignment: audio.Alignment = "center", text_max_len: int = 128
               ) -> dict[str, np.ndarray]:
  """One TFDS record (or `Example.features()`) -> model inputs (numpy, no batch axis).

  Returns:
    'video' float32 [T, R, R, 3] in [-1, 1]; 'mel' float32 [T, W, 80]; 'text_tokens' int32
    [L]; 'text_mask' bool [L]; 'audio' float32 [T * 640]; 'visemes' int32 [T];
    'mouth_open' float32 [T]; 'keypoints' float32 [T, K, 2]; 'face_color',
    'background_color', 'motion' int32 []; 'mask' bool [] (True: a real example).
  """
  caption = features["caption"]
  if isinstance(caption, bytes):
    caption = caption.decode("utf-8")
  video = np.asarray(features["video"])
  num_frames = video.shape[0]
  wav = np.asarray(features["audio"], np.float32)
  if wav.shape != (num_frames * audio.SAMPLES_PER_VIDEO_FRAME,):
    raise ValueError(f"audio has shape {wav.shape}, expected "
                     f"({num_frames * audio.SAMPLES_PER_VIDEO_FRAME},) for {num_frames} frames")
  mel = audio.frame_windows(audio.melspectrogram(wav), num_frames, mel_window, mel_alignment)
  tokens = tokenizer.encode(caption, text_max_len)
  return {
      "video": video.astype(np.float32) / 127.5 - 1.0,
      "mel": mel,
      "text_tokens": tokens,
      "text_mask": tokenizer.padding_mask(tokens),
      "audio": wav,
      "visemes": np.asarray(features["visemes"], np.int32),
      "mouth_open": np.asarray(features["mouth_open"], np.float32),
      "keypoints": np.asarray(features["keypoints"], np.float32),
      "face_color": np.int32(features["face_color"]),
      "background_color": np.int32(features["background_color"]),
      "motion": np.int32(features["motion"]),
      "mask": np.bool_(True),
  }


class _Preprocess(grain.transforms.Map):
  """grain transform wrapping `preprocess` with the config's settings."""

  def __init__(self, mel_window: int, mel_alignment: audio.Alignment, text_max_len: int):
    self._kwargs = dict(mel_window=mel_window, mel_alignment=mel_alignment,
                        text_max_len=text_max_len)

  def map(self, element):
    return preprocess(element, **self._kwargs)


def _pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads a short final batch to `size` with zeros; padded rows have mask False."""
  n = len(batch["mask"])
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str]) -> NamedSharding:
  """Sharding of a batch: leading axis over the mesh axes in `batch_axes` present in `mesh`."""
  axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  if not axes:
    raise ValueError(f"none of batch_axes {tuple(batch_axes)} is an axis of the mesh "
                     f"{mesh.axis_names}")
  return NamedSharding(mesh, PartitionSpec(axes))


class HostShard:
  """This host's contiguous slice of a random-access source (the first `n % count` hosts get
  one extra record), so every record belongs to exactly one host."""

  def __init__(self, source, process_index: int, process_count: int):
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    n = len(source)
    if n < process_count:
      raise ValueError(f"{n} records cannot be split over {process_count} processes")
    self._source = source
    self._start = process_index * (n // process_count) + min(process_index, n % process_count)
    self._len = n // process_count + (process_index < n % process_count)

  def __len__(self) -> int:
    return self._len

  def __repr__(self) -> str:  # Stable: grain checks it when restoring iterator state.
    return f"HostShard({self._source!r}, start={self._start}, len={self._len})"

  def __getitem__(self, index: int):
    if not 0 <= index < self._len:
      raise IndexError(f"record {index} out of range [0, {self._len})")
    return self._source[self._start + index]


class DataIterator:
  """Iterator of global batches with grain-compatible `get_state` / `set_state`.

  With `num_batches` set (finite iteration) every host yields exactly that many batches:
  a host whose shard runs out first yields all-padding batches (mask False), so hosts stay
  in lockstep.
  """

  def __init__(self, loader: grain.DataLoader, sharding: NamedSharding, local_batch: int,
               num_batches: int | None):
    self._iterator = iter(loader)
    self._sharding = sharding
    self._local_batch = local_batch
    self.num_batches = num_batches  # Batches until exhaustion; None if infinite.
    self._yielded = 0
    self._template: dict[str, np.ndarray] | None = None

  def __iter__(self) -> "DataIterator":
    return self

  def _next_local(self) -> dict[str, np.ndarray]:
    if self.num_batches is not None and self._yielded >= self.num_batches:
      raise StopIteration
    try:
      local = _pad_batch(next(self._iterator), self._local_batch)
    except StopIteration:
      if self.num_batches is None or self._template is None:
        raise
      local = {k: np.zeros_like(v) for k, v in self._template.items()}
    self._template = local
    self._yielded += 1
    return local

  def __next__(self) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self._sharding, v)
            for k, v in self._next_local().items()}

  def get_state(self) -> bytes:
    """Serialized position (JSON bytes); save it with the model checkpoint."""
    return self._iterator.get_state()

  def set_state(self, state: bytes) -> None:
    """Resumes from a `get_state()` value of an iterator built with the same config."""
    self._iterator.set_state(state)


def _prepared(builder: talking_faces.TalkingFaces, build_if_missing: bool
              ) -> talking_faces.TalkingFaces:
  """`builder` with complete data: (re)built if `build_if_missing`, else an error saying why."""
  if build_if_missing:
    return talking_faces.prepare(builder)
  reason = talking_faces.incomplete_reason(builder)
  if reason is None:
    return builder
  delete = f"delete {builder.data_path}, then " if builder.data_path.exists() else ""
  raise FileNotFoundError(
      f"dataset {builder.name}/{builder.builder_config.name} in {builder.data_dir_root} is "
      f"not usable: {reason}; {delete}set config.data.build_if_missing or run "
      f"gcm_jax.data.talking_faces.build(...)")


def _data_source(data_cfg: ml_collections.ConfigDict, split: str):
  """The split's random-access source, generating (or repairing) the dataset first if allowed.

  Multi-host: process 0 builds, all processes wait at a barrier; a process that still does
  not see complete data (host-local data_dir) builds its own identical copy.
  """
  if data_cfg.name not in DATASETS:
    raise ValueError(f"unknown dataset {data_cfg.name!r}; expected one of {DATASETS}")

  def get_builder():
    return talking_faces.get_builder(
        data_cfg.data_dir, data_cfg.resolution, data_cfg.num_frames, data_cfg.num_train,
        data_cfg.num_validation, data_cfg.num_test, data_cfg.dataset_seed)
  builder = None
  if jax.process_index() == 0 or not data_cfg.build_if_missing:
    builder = _prepared(get_builder(), data_cfg.build_if_missing)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("gcm_jax.data.pipeline: dataset built")
    builder = _prepared(get_builder(), data_cfg.build_if_missing)
  return builder.as_data_source(split)


def make_dataset(config: ml_collections.ConfigDict, split: str, mesh: Mesh,
                 batch_axes: Sequence[str] = ("data", "fsdp"), seed: int = 0,
                 num_epochs: int | None = None, shuffle: bool | None = None,
                 process_index: int | None = None, process_count: int | None = None
                 ) -> DataIterator:
  """Global-batch iterator over `split` of `config.data`.

  Args:
    config: experiment config with a `data` ConfigDict (fields: `default_config()`).
    split: 'train', 'validation' or 'test'.
    mesh: device mesh; batches are sharded along their leading axis over `batch_axes`.
    batch_axes: mesh axes of the batch dimension (names absent from the mesh are skipped).
    seed: shuffling seed.
    num_epochs: None = repeat forever (training); an int = that many passes, the last batch
      zero-padded with 'mask' False so no example is dropped (evaluation); every host then
      yields the same number of batches (`DataIterator.num_batches`).
    shuffle: defaults to `config.data.shuffle` for 'train', False otherwise.
    process_index, process_count: this host's shard; default `jax.process_index()` /
      `jax.process_count()` (overridable to test multi-host sharding on one host).

  Returns:
    A `DataIterator` of dicts of global arrays `[batch_size, ...]`.
  """
  data_cfg = config.data
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  sharding = batch_sharding(mesh, batch_axes)
  shards = int(np.prod([mesh.shape[a] for a in sharding.spec[0]]))
  batch_size = data_cfg.batch_size
  if batch_size % shards or batch_size % process_count:
    raise ValueError(f"config.data.batch_size={batch_size} must be divisible by the batch "
                     f"mesh size {shards} and the process count {process_count}")
  local_batch = batch_size // process_count
  source = _data_source(data_cfg, split)
  if shuffle is None:
    shuffle = split == "train" and data_cfg.shuffle
  shard = HostShard(source, process_index, process_count)
  sampler = grain.samplers.IndexSampler(num_records=len(shard), shuffle=shuffle,
                                        num_epochs=num_epochs, seed=seed)
  loader = grain.DataLoader(
      data_source=shard, sampler=sampler, shard_options=grain.sharding.NoSharding(),
      operations=[_Preprocess(data_cfg.mel_window, data_cfg.mel_alignment,
                              data_cfg.text_max_len),
                  grain.transforms.Batch(local_batch, drop_remainder=num_epochs is None)],
      worker_count=data_cfg.worker_count)
  num_batches = None
  if num_epochs is not None:  # The same on every host: the largest shard's batch count.
    num_batches = -(-num_epochs * -(-len(source) // process_count) // local_batch)
  return DataIterator(loader, sharding, local_batch, num_batches)
