"""TFDS builder `talking_faces`: generated talking-face clips with espeak-ng speech.

Writes array_record files (no TensorFlow needed); read them with
`builder.as_data_source(split)`. Build from the command line (from the repo root):

  tfds build gcm_jax/data/talking_faces --data_dir=/tmp/tfds --file_format=array_record \
      --config=r32_t16

or with custom sizes: `--config='{"resolution": 32, "num_frames": 16, "num_train": 200}'`,
or from Python with `build(data_dir, resolution=32, num_frames=16, num_train=200, ...)`.
"""
from concurrent import futures
import dataclasses
import functools
import multiprocessing as mp
import os

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants
from tensorflow_datasets.core import file_adapters

from gcm_jax.data import audio
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import corpus
from gcm_jax.data.talking_faces import example as example_lib
from gcm_jax.data.talking_faces import renderer

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
VERSION = tfds.core.Version("1.0.0")


@dataclasses.dataclass(eq=False)
class TalkingFacesConfig(tfds.core.BuilderConfig):
  """Resolution, clip length, split sizes and seed; `name` is derived when left empty."""
  name: str = ""
  resolution: int = 32
  num_frames: int = 16
  num_train: int = 2000
  num_validation: int = 200
  num_test: int = 200
  seed: int = 0

  def __post_init__(self):
    if self.resolution not in renderer.RESOLUTIONS:
      raise ValueError(f"resolution must be one of {renderer.RESOLUTIONS}, got "
                       f"{self.resolution}")
    if self.num_frames < 1:
      raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
    if min(self.num_train, self.num_validation, self.num_test) < 0:
      raise ValueError("split sizes must be >= 0")
    if not self.name:
      self.name = (f"r{self.resolution}_t{self.num_frames}_n{self.num_train}_"
                   f"{self.num_validation}_{self.num_test}_s{self.seed}")
    if self.version is None:
      self.version = VERSION
    if self.description is None:
      self.description = (f"{self.resolution}x{self.resolution}, {self.num_frames} frames "
                          f"at 25 fps, {self.num_train}/{self.num_validation}/"
                          f"{self.num_test} train/validation/test clips")

  def num_examples(self, split: str) -> int:
    return {"train": self.num_train, "validation": self.num_validation,
            "test": self.num_test}[split]


def make_example(config: TalkingFacesConfig, split: str, index: int
                 ) -> example_lib.Example:
  """Example `index` of `split`: phrase, voice, rate, attributes drawn from (seed, split, index)."""
  phrases, voices = corpus.SPLITS[split]
  rng = np.random.default_rng([config.seed, SPLIT_IDS[split], index])
  phrase = phrases[rng.integers(len(phrases))]
  voice = voices[rng.integers(len(voices))]
  rate = int(corpus.RATES[rng.integers(len(corpus.RATES))])
  attributes = captions.sample_attributes(rng)
  return example_lib.generate_example(
      phrase, attributes, voice, rate, config.resolution, config.num_frames,
      seed=int(rng.integers(2 ** 31)))


def _make_features(config: TalkingFacesConfig, split: str, index: int) -> dict:
  return make_example(config, split, index).features()


class TalkingFaces(tfds.core.GeneratorBasedBuilder):
  """Procedural talking faces saying English phrases with espeak-ng voices."""

  VERSION = VERSION
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      TalkingFacesConfig(name="r32_t16", resolution=32, num_frames=16),
      TalkingFacesConfig(name="r64_t16", resolution=64, num_frames=16),
      TalkingFacesConfig(name="r128_t16", resolution=128, num_frames=16, num_train=1000,
                         num_validation=100, num_test=100),
      TalkingFacesConfig(name="r64_t32", resolution=64, num_frames=32),
  ]
  DEFAULT_CONFIG_NAME = "r32_t16"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default probes `importlib_resources`, which this environment does not have.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    t, r = cfg.num_frames, cfg.resolution
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "caption": tfds.features.Text(),
            "script": tfds.features.Text(),
            "phrase": tfds.features.Text(),
            "voice": tfds.features.Text(),
            "rate": tfds.features.Scalar(np.int32),
            "face_color": tfds.features.ClassLabel(names=captions.COLOR_NAMES),
            "background_color": tfds.features.ClassLabel(names=captions.COLOR_NAMES),
            "motion": tfds.features.ClassLabel(names=captions.MOTIONS),
            "video": tfds.features.Tensor(shape=(t, r, r, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.ZLIB),
            "audio": tfds.features.Tensor(shape=(t * audio.SAMPLES_PER_VIDEO_FRAME,),
                                          dtype=np.float32),
            "visemes": tfds.features.Tensor(shape=(t,), dtype=np.int32),
            "mouth_open": tfds.features.Tensor(shape=(t,), dtype=np.float32),
            "keypoints": tfds.features.Tensor(shape=(t, renderer.NUM_KEYPOINTS, 2),
                                              dtype=np.float32),
            "frame_phonemes": tfds.features.Sequence(tfds.features.Text(), length=t),
            "phonemes": tfds.features.Sequence({"name": tfds.features.Text(),
                                                "start": np.float32, "end": np.float32}),
        }),
        homepage="https://github.com/espeak-ng/espeak-ng",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in SPLIT_IDS
            if self.builder_config.num_examples(split) > 0}

  def __init__(self, *, num_workers: int | None = None, **kwargs):
    """`num_workers`: generator processes; default one per CPU, at most one per 500 clips."""
    super().__init__(**kwargs)
    self._num_workers = num_workers

  def _generate_examples(self, split: str):
    num = self.builder_config.num_examples(split)
    workers = self._num_workers
    if workers is None:
      workers = min(os.cpu_count() or 1, num // 500)
    make = functools.partial(_make_features, self.builder_config, split)
    if workers <= 1:
      yield from enumerate(map(make, range(num)))
      return
    # Spawned (not forked) workers: forking a process that runs JAX threads is unsafe.
    with futures.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
      yield from enumerate(pool.map(make, range(num), chunksize=16))


def get_builder(data_dir: str, resolution: int = 32, num_frames: int = 16,
                num_train: int = 2000, num_validation: int = 200, num_test: int = 200,
                seed: int = 0, num_workers: int | None = None) -> TalkingFaces:
  """The builder for these settings (a predefined config when one matches, else custom)."""
  config = TalkingFacesConfig(resolution=resolution, num_frames=num_frames,
                              num_train=num_train, num_validation=num_validation,
                              num_test=num_test, seed=seed)
  for predefined in TalkingFaces.BUILDER_CONFIGS:
    if all(getattr(predefined, f) == getattr(config, f) for f in
           ("resolution", "num_frames", "num_train", "num_validation", "num_test", "seed")):
      config = predefined
  return TalkingFaces(config=config, data_dir=data_dir, file_format="array_record",
                      num_workers=num_workers)


def _split_problem(builder: TalkingFaces, split: str) -> str | None:
  """What is wrong with `split` in the builder's data folder; None if it looks complete."""
  expected = builder.builder_config.num_examples(split)
  if not expected:
    return None  # Empty splits are not written.
  if split not in builder.info.splits:
    return f"dataset_info.json does not list the {split} split"
  info = builder.info.splits[split]
  if info.num_examples != expected:
    return f"dataset_info.json lists {info.num_examples} {split} records, not {expected}"
  adapter = file_adapters.ADAPTER_FOR_FORMAT[builder.info.file_format]
  for shard, length in zip(info.filepaths, info.shard_lengths):
    if not shard.exists():
      return f"shard {shard.name} is missing"
    try:
      count = adapter.num_examples(shard)
    except RuntimeError as e:
      return f"shard {shard.name} cannot be read ({e})"
    if count != length:
      return f"shard {shard.name} holds {count} records, dataset_info.json says {length}"
  return None


def incomplete_reason(builder: TalkingFaces) -> str | None:
  """Why the builder's versioned data folder is not a complete dataset; None if it is.

  Cheap checks only (no record is decoded): the folder and its dataset_info.json exist, and
  every shard that dataset_info.json lists exists and holds the recorded number of records.
  """
  if not builder.data_path.exists():
    return "it is not built"
  if not (builder.data_path / constants.DATASET_INFO_FILENAME).exists():
    return f"{constants.DATASET_INFO_FILENAME} is missing"
  for split in SPLIT_IDS:
    problem = _split_problem(builder, split)
    if problem:
      return problem
  return None


def _remove_interrupted_builds(builder: TalkingFaces) -> None:
  """Deletes the `incomplete.*` folders that interrupted builds of this config left."""
  pattern = f"{constants.INCOMPLETE_PREFIX}*_{builder.version}"
  for path in builder.data_path.parent.glob(pattern):
    logging.warning("Deleting %s, left by an interrupted dataset build.", path)
    path.rmtree()


def prepare(builder: TalkingFaces) -> TalkingFaces:
  """Makes the builder's data complete and returns the builder.

  Deletes the folders of interrupted builds of this config, then builds the data unless it
  is complete (`incomplete_reason`); an incomplete versioned folder is deleted and rebuilt,
  with a warning. Deletes nothing outside `data_dir/talking_faces/<config>/`.
  """
  _remove_interrupted_builds(builder)
  reason = incomplete_reason(builder)
  if reason is None:
    return builder
  if builder.data_path.exists():
    logging.warning("Dataset %s is incomplete (%s); deleting and rebuilding it.",
                    builder.data_path, reason)
    builder.data_path.rmtree()
  builder.download_and_prepare()
  return builder


def build(data_dir: str, resolution: int = 32, num_frames: int = 16, num_train: int = 2000,
          num_validation: int = 200, num_test: int = 200, seed: int = 0,
          num_workers: int | None = None) -> TalkingFaces:
  """Generates the dataset into `data_dir` (`prepare`: no-op if complete); returns the builder.

  `num_workers` generator processes (default: one per CPU, at most one per 500 clips of a
  split); the data does not depend on it.
  """
  return prepare(get_builder(data_dir, resolution, num_frames, num_train, num_validation,
                             num_test, seed, num_workers))
