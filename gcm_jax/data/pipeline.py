"""Input pipeline: TFDS array_record data source -> grain -> per-host batches -> global arrays.

`make_dataset(config, split, mesh)` returns a `DataIterator` whose `next()` is a dict of
global `jax.Array`s sharded along the batch axis over `batch_axes` of the mesh (see
docs/data.md for keys and shapes). The records are shuffled globally per epoch and cut
into global batches; each JAX process reads its `batch_size / process_count` rows of
every global batch (`GlobalOrderShard`), preprocesses them on the CPU (log-mel windows,
text tokens, video to [-1, 1]) and `jax.make_array_from_process_local_data` assembles the
global batch, which is therefore the same for any number of hosts.

Order is a pure function of (seed, split, number of batches consumed), the same on every
host: the iterator's `get_state()` bytes (grain's DataLoader state) saved with a checkpoint
by any host and passed to `set_state()` on every host resume exactly. `DataIterator` follows grain's iterator protocol, so
`grain.checkpoint.CheckpointHandler` / `CheckpointSave` can checkpoint it with orbax.
"""
import os
import typing
from typing import Any, Callable, Optional, Sequence

import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gcm_jax import config_rules
from gcm_jax import frozen_encoders
from gcm_jax.data import audio
from gcm_jax.data import contract
from gcm_jax.data import datasets
from gcm_jax.data import feature_cache
from gcm_jax.models import tokenizer
from gcm_jax.parallel import mesh as mesh_lib


SPLITS = ("train", "validation", "test")


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
               mel_alignment: audio.Alignment = "center", text_max_len: int = 128,
               dataset: Optional[contract.Dataset] = None, derived: Sequence[str] = (),
               reference_frames: int = 0) -> dict[str, np.ndarray]:
  """One record (`contract`: a TFDS record, `Example.features()`) -> model inputs (numpy, no
  batch axis).

  Returns:
    'video' float32 [T, R, R, 3] in [-1, 1]; 'mel' float32 [T, W, 80]; 'text_tokens' int32
    [L]; 'text_mask' bool [L]; 'audio' float32 [T * 640]; 'mask' bool [] (True: a real
    example); the `dataset`'s ground-truth `features` the record has (talking faces:
    'visemes' int32 [T], 'mouth_open' float32 [T], 'keypoints' float32 [T, K, 2],
    'face_color', 'background_color', 'motion' int32 []); the `derived` features the dataset
    makes ('mouth_region' / 'eye_region' / 'source_mask' bool [T, R, R], 'control_maps'
    float32 [T, R, R, C]); with `reference_frames` K > 0, 'reference' float32 [K, R, R, 3] in
    [-1, 1] (`contract.Dataset.reference`); and the frozen-encoder features cached with the
    record (`feature_cache`).
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
  # Byte tokens, unless a pretrained text encoder's features come with the record (their
  # text_max_len counts its tokens, not bytes); an empty caption (a real clip without
  # transcript) is all padding, which the model reads as the dropped text.
  tokens = (tokenizer.encode(caption, text_max_len)
            if "text_embeddings" not in features and caption.strip()
            else np.zeros((text_max_len,), np.int32))
  makers = dataset.derived if dataset is not None else {}
  missing = [name for name in derived if name not in makers]
  if missing:
    raise ValueError(f"this dataset cannot make {missing}; it makes {sorted(makers)}")
  reference = {}
  if reference_frames:
    if dataset is None or dataset.reference is None:
      raise ValueError("reference frames asked for, but this dataset has no `reference` "
                       "(gcm_jax.data.contract.Dataset)")
    frames = dataset.reference(features, reference_frames, video.shape[1])
    reference["reference"] = np.asarray(frames, np.float32) / 127.5 - 1.0
  return {
      "video": video.astype(np.float32) / 127.5 - 1.0,
      "mel": mel,
      "text_tokens": tokens,
      "text_mask": tokenizer.padding_mask(tokens),
      "audio": wav,
      **{k: np.asarray(features[k], dtype)
         for k, dtype in (dataset.features if dataset is not None else {}).items()
         if k in features},
      "mask": np.bool_(True),
      **{name: makers[name](features, video.shape[1]) for name in derived},
      **reference,
      # Frozen-encoder features cached for the record (`feature_cache`); a pretrained text
      # encoder's 'text_mask' (its tokens) replaces the byte tokens' one.
      **{k: np.asarray(features[k]) for k in frozen_encoders.ALL_KEYS if k in features},
  }


def load_clips(data_cfg: ml_collections.ConfigDict, split: str, num_clips: int,
               num_frames: int, seed: int, keys: Sequence[str], text_max_len: int,
               mel_window: int = 16, reference_frames: int = 0) -> dict[str, np.ndarray]:
  """Clips of `config.data.name`'s split for evaluation and SyncNet training
  (`contract.Dataset.clip_records`), preprocessed as the training batches are (`preprocess`).

  Returns:
    the `keys` a clip has, stacked (`[N, ...]`, N <= num_clips: a built split may have
    fewer); 'caption' is the clips' captions as str `[N]`; 'identity' the clips' people as
    str `[N]` (a record's 'identity' feature where it has one, else its index: every clip a
    person of its own, as the talking faces draw them); 'reference' `[N, K, R, R, 3]` if
    `keys` has it (K = `reference_frames`).
  """
  dataset = datasets.get(data_cfg.name)
  records = dataset.clip_records(data_cfg, split, num_clips, num_frames, seed)
  if not records:
    raise ValueError(f"the {data_cfg.name} {split} split has no clips")
  derived = [k for k in keys if k in dataset.derived]
  references = reference_frames if "reference" in keys else 0
  examples = [preprocess(r, mel_window, data_cfg.mel_alignment, text_max_len, dataset, derived,
                         references) for r in records]
  out = {k: np.stack([e[k] for e in examples]) for k in keys if k in examples[0]}
  if "caption" in keys:
    out["caption"] = np.array([contract.as_text(r["caption"]) for r in records])
  if "identity" in keys:
    out["identity"] = np.array([contract.as_text(r.get("identity", f"clip {i}"))
                                for i, r in enumerate(records)])
  return out


class _Preprocess(grain.transforms.Map):
  """grain transform wrapping `preprocess` with the config's settings (the dataset by name:
  its entry is looked up where the transform runs, so it pickles into grain's workers)."""

  def __init__(self, dataset_name: str, mel_window: int, mel_alignment: audio.Alignment,
               text_max_len: int, derived: Sequence[str], reference_frames: int = 0):
    self._dataset_name = dataset_name
    self._kwargs = dict(mel_window=mel_window, mel_alignment=mel_alignment,
                        text_max_len=text_max_len, derived=tuple(derived),
                        reference_frames=reference_frames)

  def map(self, element):
    return preprocess(element, dataset=datasets.get(self._dataset_name), **self._kwargs)


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


class GlobalOrderShard:
  """This process's rows of every global batch of one global record order.

  The global order is the records of epoch 0, 1, ..., each epoch permuted by
  `np.random.default_rng([seed, epoch])` (or in file order without shuffling). Global batch g
  is positions [g B, (g + 1) B) of that order, and process p reads rows [p L, (p + 1) L)
  of each (L = B / process_count). So the global batches, and with them training, do not
  depend on the number of hosts, and every host's position (batches read) is the same: the
  iterator state saved by one host resumes all of them.

  With `num_epochs` the order ends after that many epochs (its last global batch may be
  short: some hosts then hold fewer rows, or none); without, it is endless.
  """

  _ENDLESS_BATCHES = 2**40  # Batches in an endless order (any run stops long before).

  def __init__(self, source, batch_size: int, process_index: int, process_count: int,
               seed: int, shuffle: bool, num_epochs: Optional[int]):
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if len(source) == 0:
      raise ValueError(f"the data source {source!r} has no records")
    self._source = source
    self._batch, self._rows = batch_size, batch_size // process_count
    self._first_row = process_index * self._rows
    self._seed, self._shuffle, self._num_epochs = seed, shuffle, num_epochs
    self._permutations: dict[int, np.ndarray] = {}
    if num_epochs is None:
      self._len = self._ENDLESS_BATCHES * self._rows
    else:
      full, rest = divmod(num_epochs * len(source), batch_size)
      self._len = full * self._rows + min(max(rest - self._first_row, 0), self._rows)

  def __len__(self) -> int:
    return self._len

  def __repr__(self) -> str:  # Host-independent: grain checks it when restoring a state.
    return (f"GlobalOrderShard({self._source!r}, batch_size={self._batch}, seed={self._seed}, "
            f"shuffle={self._shuffle}, num_epochs={self._num_epochs})")

  def _record_index(self, epoch: int, position: int) -> int:
    if not self._shuffle:
      return position
    if epoch not in self._permutations:
      if len(self._permutations) >= 2:
        self._permutations.pop(min(self._permutations))
      self._permutations[epoch] = np.random.default_rng(
          [self._seed, epoch]).permutation(len(self._source))
    return int(self._permutations[epoch][position])

  def __getitem__(self, index: int):
    if not 0 <= index < self._len:
      raise IndexError(f"record {index} out of range [0, {self._len})")
    batch, row = divmod(index, self._rows)
    epoch, position = divmod(batch * self._batch + self._first_row + row, len(self._source))
    return self._source[self._record_index(epoch, position)]


class DataIterator:
  """Iterator of global batches with grain-compatible `get_state` / `set_state`.

  With `num_batches` set (finite iteration) every host yields exactly that many batches:
  a host whose rows run out first (or that has none) yields all-padding batches (mask
  False, zeros shaped like `padding_example()`), so hosts stay in lockstep.

  Keys in `device_keys` (default: all) become global `jax.Array`s sharded over the batch
  axis; the others stay this host's rows as numpy arrays `[batch_size / process_count, ...]`
  (e.g. the raw audio, which only the host that writes sample videos needs).
  """

  def __init__(self, loader: Optional[grain.DataLoader], sharding: NamedSharding,
               local_batch: int, num_batches: Optional[int],
               padding_example: Callable[[], dict[str, np.ndarray]],
               device_keys: Optional[Sequence[str]] = None):
    self._iterator = iter(loader) if loader is not None else None
    self._sharding = sharding
    self._local_batch = local_batch
    self.num_batches = num_batches  # Batches until exhaustion; None if infinite.
    self._padding_example = padding_example
    self._device_keys = device_keys
    self._yielded = 0

  def __iter__(self) -> "DataIterator":
    return self

  def _padding_batch(self) -> dict[str, np.ndarray]:
    return {k: np.zeros((self._local_batch,) + np.shape(v), np.asarray(v).dtype)
            for k, v in self._padding_example().items()}

  def _next_local(self) -> dict[str, np.ndarray]:
    if self.num_batches is not None and self._yielded >= self.num_batches:
      raise StopIteration
    try:
      if self._iterator is None:
        raise StopIteration
      local = _pad_batch(next(self._iterator), self._local_batch)
    except StopIteration:
      if self.num_batches is None:
        raise
      local = self._padding_batch()
    self._yielded += 1
    return local

  def __next__(self) -> dict[str, Any]:
    local = self._next_local()
    return {k: (jax.make_array_from_process_local_data(self._sharding, v)
                if self._device_keys is None or k in self._device_keys else v)
            for k, v in local.items()}

  def get_state(self) -> bytes:
    """Serialized position (JSON bytes, the same on every host); save it with the model
    checkpoint."""
    if self._iterator is None:
      raise ValueError("this host has no records of this split; there is no state to save")
    return self._iterator.get_state()

  def set_state(self, state: bytes) -> None:
    """Resumes from a `get_state()` value of an iterator built with the same config (on
    any host)."""
    if self._iterator is None:
      raise ValueError("this host has no records of this split; there is no state to set")
    self._iterator.set_state(state)


# The `config.data` fields every config that reads a dataset has (their checks; the entry
# points' tables include these).
DATA_RULES: tuple[config_rules.Rule, ...] = (
    config_rules.Rule("data.name", lambda name: name in datasets.DATASETS,
                      "a name in gcm_jax.data.datasets.DATASETS"),
    config_rules.text("data.data_dir"),
    config_rules.boolean("data.build_if_missing"),
    config_rules.integer("data.resolution", 16),  # The dataset's allowed sizes: Dataset.
    config_rules.integer("data.num_frames", 1),
    config_rules.integer("data.num_train", 1),
    config_rules.integer("data.num_validation", 0),
    config_rules.integer("data.num_test", 0),
    config_rules.integer("data.dataset_seed", 0),
    config_rules.integer("data.batch_size", 1),
    config_rules.integer("data.mel_window", 1),
    config_rules.one_of("data.mel_alignment", typing.get_args(audio.Alignment)),
    config_rules.integer("data.text_max_len", 1),
    config_rules.boolean("data.shuffle"),
    config_rules.integer("data.worker_count", 0),
)

def data_source(data_cfg: ml_collections.ConfigDict, split: str):
  """The split's random-access records of dataset `data_cfg.name` (`datasets.DATASETS`)."""
  return datasets.get(data_cfg.name).source(data_cfg, split)


def with_frozen_features(config: ml_collections.ConfigDict, source, split: str):
  """`source` whose records carry the run's frozen-encoder features (as is without).

  The features are computed once per split and cached in the dataset's folder
  (`<dataset dir>/feature_cache/`, see `feature_cache`; a source that is not a TFDS one:
  `<data_dir>/<name>/feature_cache/`), by process 0 in a multi-host run
  (the others wait, then read; a process that sees no cache, host-local data_dir, computes
  its own identical copy).
  """
  if "model" not in config:  # A data-only config: the model's own encoders.
    return source
  encoders = frozen_encoders.FrozenEncoders(config)
  if not encoders.keys:
    return source
  info = getattr(source, "dataset_info", None)  # A TFDS source: its version folder.
  cache_root = os.path.join(info.data_dir if info is not None
                            else os.path.join(config.data.data_dir, config.data.name),
                            "feature_cache")
  load = lambda: feature_cache.load_or_compute(source, split, encoders, cache_root,
                                                config.data.num_frames)
  features = load() if jax.process_index() == 0 else None
  if jax.process_count() > 1:
    mesh_lib.wait_for_processes(f"gcm_jax.data.pipeline: {split} features cached")
    features = load()
  return feature_cache.WithFeatures(source, features)


def make_dataset(config: ml_collections.ConfigDict, split: str, mesh: Mesh,
                 batch_axes: Sequence[str] = ("data", "fsdp"), seed: int = 0,
                 num_epochs: int | None = None, shuffle: bool | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 device_keys: Optional[Sequence[str]] = None) -> DataIterator:
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
    process_index, process_count: this host's rows; default `jax.process_index()` /
      `jax.process_count()` (overridable to test multi-host sharding on one host).
    device_keys: the features that become global arrays (default all); the others stay
      host-local numpy rows. The dataset's `derived` features not among them are not
      computed.

  Returns:
    A `DataIterator` of dicts of global arrays `[batch_size, ...]` (and host-local rows).
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
  source = with_frozen_features(config, data_source(data_cfg, split), split)
  if shuffle is None:
    shuffle = split == "train" and data_cfg.shuffle
  shard = GlobalOrderShard(source, batch_size, process_index, process_count, seed, shuffle,
                           num_epochs)
  wanted = lambda key: device_keys is None or key in device_keys
  preprocess_op = _Preprocess(
      data_cfg.name, data_cfg.mel_window, data_cfg.mel_alignment, data_cfg.text_max_len,
      [k for k in datasets.get(data_cfg.name).derived if wanted(k)],
      config.get("model", {}).get("reference_frames", 0) if wanted("reference") else 0)
  loader = None
  if len(shard):  # A host can have no rows of a small finite split.
    loader = grain.DataLoader(
        data_source=shard,
        sampler=grain.samplers.IndexSampler(num_records=len(shard), shuffle=False,
                                            num_epochs=1, seed=seed),
        shard_options=grain.sharding.NoSharding(),
        operations=[preprocess_op,
                    grain.transforms.Batch(local_batch, drop_remainder=num_epochs is None)],
        worker_count=data_cfg.worker_count)
  num_batches = None
  if num_epochs is not None:  # The same on every host: the global batch count.
    num_batches = -(-num_epochs * len(source) // batch_size)
  return DataIterator(loader, sharding, local_batch, num_batches,
                      padding_example=lambda: preprocess_op.map(source[0]),
                      device_keys=device_keys)
