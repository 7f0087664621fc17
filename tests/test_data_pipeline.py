"""Tests for the TFDS builder and the grain -> global jax.Array pipeline (8 fake CPU devices)."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from gcm_jax.data import audio
from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import corpus
from gcm_jax.data.talking_faces import keypoint_maps
from gcm_jax.data.talking_faces import talking_faces
from gcm_jax.models import tokenizer

SIZES = dict(resolution=32, num_frames=8, num_train=24, num_validation=6, num_test=4)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  talking_faces.build(path, **SIZES)
  return path


@pytest.fixture(scope="module")
def mesh():
  return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"))


def _config(data_dir, **overrides):
  cfg = pipeline.default_config()
  cfg.update(data_dir=data_dir, build_if_missing=False, batch_size=8, mel_window=16,
             dataset_seed=0, **{k: v for k, v in SIZES.items()})
  cfg.update(**overrides)
  return ml_collections.ConfigDict({"data": cfg})


def test_builder_writes_array_record_splits_without_tensorflow(data_dir):
  builder = talking_faces.get_builder(data_dir, **SIZES)
  assert builder.is_prepared()
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
      "train": 24, "validation": 6, "test": 4}
  record = builder.as_data_source("train")[0]
  assert record["video"].shape == (8, 32, 32, 3) and record["video"].dtype == np.uint8
  assert record["audio"].shape == (8 * 640,)
  assert record["keypoints"].shape == (8, 8, 2)
  assert len(record["frame_phonemes"]) == 8
  starts = np.asarray(record["phonemes"]["start"])
  assert len(record["phonemes"]["name"]) == len(starts) > 0 and (np.diff(starts) >= 0).all()
  assert "tensorflow" not in sys.modules


def test_builder_is_deterministic_and_holds_out_phrases_and_voices(data_dir):
  builder = talking_faces.get_builder(data_dir, **SIZES)
  for split in ("train", "validation"):
    source = builder.as_data_source(split)
    stored = {source[i]["caption"].decode(): source[i] for i in range(len(source))}
    regenerated = [talking_faces.make_example(builder.builder_config, split, i)
                   for i in range(len(source))]
    assert set(stored) == {ex.caption for ex in regenerated}
    ex = regenerated[0]
    np.testing.assert_array_equal(stored[ex.caption]["video"], ex.video)
    np.testing.assert_array_equal(stored[ex.caption]["audio"], ex.audio)
    phrases, voices = corpus.SPLITS[split]
    for record in stored.values():
      assert record["phrase"].decode() in phrases and record["voice"].decode() in voices


def test_batches_are_global_arrays_sharded_over_the_mesh(data_dir, mesh):
  it = pipeline.make_dataset(_config(data_dir), "train", mesh, seed=0)
  batch = next(it)
  b, t, r = 8, 8, 32
  expected = {
      "video": ((b, t, r, r, 3), np.float32), "mel": ((b, t, 16, 80), np.float32),
      "text_tokens": ((b, 128), np.int32), "text_mask": ((b, 128), np.bool_),
      "audio": ((b, t * 640), np.float32), "visemes": ((b, t), np.int32),
      "mouth_open": ((b, t), np.float32), "keypoints": ((b, t, 8, 2), np.float32),
      "face_color": ((b,), np.int32), "background_color": ((b,), np.int32),
      "motion": ((b,), np.int32), "mask": ((b,), np.bool_),
      "mouth_region": ((b, t, r, r), np.bool_), "control_maps": ((b, t, r, r, 9), np.float32),
      "source_mask": ((b, t, r, r), np.bool_), "eye_region": ((b, t, r, r), np.bool_),
  }
  assert set(batch) == set(expected)
  for key, (shape, dtype) in expected.items():
    arr = batch[key]
    assert isinstance(arr, jax.Array) and arr.shape == shape and arr.dtype == dtype, key
    assert arr.sharding.spec == PartitionSpec(("data", "fsdp")), key
    assert len(arr.addressable_shards) == 8
    assert {s.data.shape[0] for s in arr.addressable_shards} == {1}
  video = np.asarray(batch["video"])
  assert video.min() >= -1 and video.max() <= 1
  assert np.asarray(batch["mask"]).all()
  # The caption's colors are the attribute labels; mel windows come from the clip audio.
  for i in range(b):
    caption = tokenizer.decode(np.asarray(batch["text_tokens"][i]))
    attrs, _ = captions.parse_caption(caption)
    assert attrs.face_color_id == int(batch["face_color"][i])
    assert attrs.background_color_id == int(batch["background_color"][i])
    assert attrs.motion_id == int(batch["motion"][i])
    assert np.asarray(batch["text_mask"][i]).sum() == len(caption.encode())
  wav = np.asarray(batch["audio"][3])
  np.testing.assert_allclose(
      np.asarray(batch["mel"][3]), audio.frame_windows(audio.melspectrogram(wav), t, 16),
      atol=1e-5)


def test_keypoint_features_are_the_keypoint_maps_of_the_record(data_dir):
  record = talking_faces.get_builder(data_dir, **SIZES).as_data_source("test")[1]
  entry = datasets.DATASETS["talking_faces"]
  features = pipeline.preprocess(record, dataset=entry, derived=("mouth_region", "control_maps"))
  keypoints = np.asarray(record["keypoints"])
  np.testing.assert_array_equal(features["mouth_region"],
                                keypoint_maps.mouth_region(keypoints, 32))
  np.testing.assert_array_equal(features["control_maps"],
                                keypoint_maps.control_maps(keypoints, 32))
  assert features["mouth_region"].any() and features["control_maps"].max() > 0.5
  assert not set(entry.derived) & set(pipeline.preprocess(record, dataset=entry))
  assert set(entry.features) <= set(pipeline.preprocess(record, dataset=entry))


def test_keypoint_features_only_where_devices_need_them(data_dir, mesh):
  it = pipeline.make_dataset(_config(data_dir), "train", mesh, seed=0,
                             device_keys=("video", "mouth_region", "mask"))
  batch = next(it)
  assert "mouth_region" in batch and "control_maps" not in batch
  assert isinstance(batch["mouth_region"], jax.Array)
  assert isinstance(batch["audio"], np.ndarray)  # Host-local rows.


def test_same_seed_same_order_other_seed_differs(data_dir, mesh):
  cfg = _config(data_dir)
  it_a = pipeline.make_dataset(cfg, "train", mesh, seed=1)
  a = [np.asarray(next(it_a)["audio"]) for _ in range(2)]
  it_b = pipeline.make_dataset(cfg, "train", mesh, seed=1)
  b = [np.asarray(next(it_b)["audio"]) for _ in range(2)]
  c = np.asarray(next(pipeline.make_dataset(cfg, "train", mesh, seed=2))["audio"])
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c)


def test_restoring_state_resumes_with_the_same_batches(data_dir, mesh):
  cfg = _config(data_dir)
  it = pipeline.make_dataset(cfg, "train", mesh, seed=3)
  for _ in range(4):  # Crosses the 24-example epoch boundary (3 batches per epoch).
    next(it)
  state = it.get_state()
  assert isinstance(state, bytes)
  expected = [np.asarray(next(it)["video"]) for _ in range(3)]
  resumed = pipeline.make_dataset(cfg, "train", mesh, seed=3)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(np.asarray(next(resumed)["video"]), want)


def test_finite_epoch_pads_the_last_batch_and_drops_nothing(data_dir, mesh):
  it = pipeline.make_dataset(_config(data_dir), "validation", mesh, num_epochs=1)
  batches = list(it)
  assert len(batches) == it.num_batches == 1
  mask = np.asarray(batches[0]["mask"])
  assert mask.sum() == 6 and not mask[6:].any()
  assert (np.asarray(batches[0]["text_tokens"])[~mask] == 0).all()


def _host_rows(cfg, mesh, split, count, num_batches, **kwargs):
  """[batch][host] audio rows (host-local numpy) of `count` simulated hosts."""
  iterators = [pipeline.make_dataset(cfg, split, mesh, process_index=p, process_count=count,
                                     device_keys=(), **kwargs) for p in range(count)]
  return [[next(it) for it in iterators] for _ in range(num_batches)], iterators


def test_global_batches_do_not_depend_on_the_host_count(data_dir, mesh):
  """1, 2 or 4 hosts read the same global batches (their rows in host order), across the
  24-record epoch boundary (3 batches of 8 per epoch), and each epoch is a permutation."""
  cfg = _config(data_dir)
  per_count = {}
  for count in (1, 2, 4):
    batches, _ = _host_rows(cfg, mesh, "train", count, 7, seed=5)
    per_count[count] = [np.concatenate([b["audio"] for b in hosts]) for hosts in batches]
    assert all(b["audio"].shape[0] == 8 // count for hosts in batches for b in hosts)
  for count in (2, 4):
    for got, want in zip(per_count[count], per_count[1]):
      np.testing.assert_array_equal(got, want)
  source = talking_faces.get_builder(data_dir, **SIZES).as_data_source("train")
  records = {source[i]["audio"].tobytes() for i in range(len(source))}
  for epoch in range(2):
    rows = np.concatenate(per_count[1][3 * epoch:3 * epoch + 3])
    assert {r.tobytes() for r in rows} == records  # Every record once per epoch.
  assert not np.array_equal(per_count[1][0], per_count[1][3])  # Reshuffled per epoch.


def test_one_hosts_state_resumes_another_host(data_dir, mesh):
  cfg = _config(data_dir)
  (_, iterators) = _host_rows(cfg, mesh, "train", 2, 4, seed=7)
  state = iterators[0].get_state()
  assert state == iterators[1].get_state()
  expected = [next(iterators[1])["audio"] for _ in range(3)]
  resumed = pipeline.make_dataset(cfg, "train", mesh, seed=7, process_index=1, process_count=2,
                                  device_keys=())
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["audio"], want)


def test_hosts_stay_in_lockstep_and_drop_nothing_in_finite_epochs(data_dir, mesh):
  """6 validation records x 5 epochs = 30 rows in global batches of 8 over 4 hosts (2 rows
  each): 4 batches on every host; the last holds rows for hosts 0-2 only, host 3 pads."""
  cfg = _config(data_dir)
  batches, iterators = _host_rows(cfg, mesh, "validation", 4, 4, num_epochs=5)
  assert all(it.num_batches == 4 for it in iterators)
  for it in iterators:
    with pytest.raises(StopIteration):
      next(it)
  assert [sum(int(batches[i][h]["mask"].sum()) for i in range(4)) for h in range(4)] == [
      8, 8, 8, 6]
  assert not batches[3][3]["mask"].any() and not batches[3][3]["audio"].any()
  rows = [r for hosts in batches for b in hosts for r in b["audio"][b["mask"]]]
  source = talking_faces.get_builder(data_dir, **SIZES).as_data_source("validation")
  in_file_order = [source[i % 6]["audio"] for i in range(30)]
  np.testing.assert_array_equal(np.stack(rows), np.stack(in_file_order))


def test_device_keys_choose_what_goes_to_devices(data_dir, mesh):
  batch = next(pipeline.make_dataset(_config(data_dir), "train", mesh,
                                     device_keys=("video", "mask")))
  assert isinstance(batch["video"], jax.Array) and isinstance(batch["mask"], jax.Array)
  assert isinstance(batch["audio"], np.ndarray) and batch["audio"].shape == (8, 8 * 640)


def test_bad_config_raises_clear_errors(data_dir, mesh, tmp_path):
  with pytest.raises(ValueError, match="divisible"):
    pipeline.make_dataset(_config(data_dir, batch_size=6), "train", mesh)
  with pytest.raises(ValueError, match="split"):
    pipeline.make_dataset(_config(data_dir), "dev", mesh)
  with pytest.raises(ValueError, match="batch_axes"):
    pipeline.make_dataset(_config(data_dir), "train", mesh, batch_axes=("model",))
  with pytest.raises(FileNotFoundError, match="build"):
    pipeline.make_dataset(_config(str(tmp_path)), "train", mesh)
  with pytest.raises(ValueError, match="max_len"):
    next(pipeline.make_dataset(_config(data_dir, text_max_len=20), "train", mesh))


TINY = dict(resolution=32, num_frames=4, num_train=3, num_validation=1, num_test=1)
SHARD = "talking_faces-{}.array_record-00000-of-00001"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  """A complete tiny dataset; tests damage copies of it."""
  path = tmp_path_factory.mktemp("tiny")
  talking_faces.build(str(path), **TINY)
  return path


def _tiny_config(data_dir, build_if_missing=True):
  cfg = pipeline.default_config()
  cfg.update(data_dir=str(data_dir), build_if_missing=build_if_missing, **TINY)
  return ml_collections.ConfigDict({"data": cfg})


def _version_dir(data_dir) -> pathlib.Path:
  return pathlib.Path(talking_faces.get_builder(str(data_dir), **TINY).data_dir)


def _copy_tiny(tiny_dir, tmp_path) -> pathlib.Path:
  """Copies the tiny dataset to `tmp_path / 'tfds'`; returns the copy's versioned folder."""
  shutil.copytree(tiny_dir, tmp_path / "tfds")
  return _version_dir(tmp_path / "tfds")


def _records(data_dir) -> dict[str, list[tuple[bytes, bytes, bytes]]]:
  builder = talking_faces.get_builder(str(data_dir), **TINY)
  sources = {split: builder.as_data_source(split) for split in pipeline.SPLITS}
  return {split: [(r["caption"], r["audio"].tobytes(), r["video"].tobytes())
                  for r in (source[i] for i in range(len(source)))]
          for split, source in sources.items()}


def _delete_info(version_dir):
  (version_dir / "dataset_info.json").unlink()


def _delete_shard(version_dir):
  (version_dir / SHARD.format("train")).unlink()


def _swap_shard(version_dir):  # A readable shard with 1 record where 3 are recorded.
  shutil.copy(version_dir / SHARD.format("validation"), version_dir / SHARD.format("train"))


def _truncate_shard(version_dir):
  os.truncate(version_dir / SHARD.format("train"), 100)


@pytest.mark.parametrize("damage,reason", [
    (_delete_info, "dataset_info.json is missing"),
    (_delete_shard, f"shard {SHARD.format('train')} is missing"),
    (_swap_shard, "holds 1 records, dataset_info.json says 3"),
    (_truncate_shard, "cannot be read"),
])
def test_incomplete_dataset_is_rebuilt_with_the_same_records(tiny_dir, mesh, tmp_path, caplog,
                                                             damage, reason):
  version_dir = _copy_tiny(tiny_dir, tmp_path)
  damage(version_dir)
  batch = next(pipeline.make_dataset(_tiny_config(tmp_path / "tfds"), "train", mesh,
                                     num_epochs=1))
  assert np.asarray(batch["mask"]).sum() == 3
  assert _records(tmp_path / "tfds") == _records(tiny_dir)
  warnings = [r.getMessage() for r in caplog.records if r.module == "talking_faces"]
  assert any(str(version_dir) in w and reason in w and "rebuilding" in w for w in warnings)


@pytest.mark.parametrize("damage", [_delete_info, _delete_shard])
def test_incomplete_dataset_without_build_if_missing_names_the_folder_to_delete(
    tiny_dir, mesh, tmp_path, damage):
  version_dir = _copy_tiny(tiny_dir, tmp_path)
  damage(version_dir)
  with pytest.raises(FileNotFoundError, match=re.escape(f"delete {version_dir}, then")):
    pipeline.make_dataset(_tiny_config(tmp_path / "tfds", build_if_missing=False), "train",
                          mesh)
  assert version_dir.exists()  # Nothing is deleted without build_if_missing.


def test_interrupted_build_leftovers_are_deleted(tiny_dir, mesh, tmp_path):
  fresh = tmp_path / "fresh"
  complete = _copy_tiny(tiny_dir, tmp_path)
  other_config = fresh / "talking_faces" / "r32_t16" / "incomplete.XYZ789_1.0.0"
  other_config.mkdir(parents=True)
  leftovers = [_version_dir(fresh).parent / "incomplete.AB12CD_1.0.0",
               complete.parent / "incomplete.EF34GH_1.0.0"]
  for leftover in leftovers:
    leftover.mkdir(parents=True)
    (leftover / SHARD.format("train")).write_bytes(b"partial")
  for data_dir in (fresh, tmp_path / "tfds"):  # Not built yet; complete.
    pipeline.make_dataset(_tiny_config(data_dir), "train", mesh)
  assert not any(leftover.exists() for leftover in leftovers)
  assert other_config.exists()  # Another config's build is not touched.
  assert _records(fresh) == _records(tiny_dir)


def test_complete_dataset_is_not_rebuilt(tiny_dir, mesh, tmp_path, caplog):
  version_dir = _copy_tiny(tiny_dir, tmp_path)
  files = [version_dir, *version_dir.iterdir()]
  mtimes = [f.stat().st_mtime_ns for f in files]
  pipeline.make_dataset(_tiny_config(tmp_path / "tfds"), "train", mesh)
  assert [f.stat().st_mtime_ns for f in files] == mtimes
  assert sorted(version_dir.iterdir()) == sorted(files[1:])
  assert not [r for r in caplog.records if r.module == "talking_faces"]


def test_tfds_build_command_line_builds_the_module(tmp_path):
  package_dir = os.path.dirname(talking_faces.__file__)
  config = json.dumps({"resolution": 32, "num_frames": 4, "num_train": 3, "num_validation": 1,
                       "num_test": 1})
  subprocess.run([sys.executable, "-m", "gcm_jax.data.talking_faces.tfds_build", package_dir,
                  f"--data_dir={tmp_path}", "--file_format=array_record", f"--config={config}"],
                 check=True, capture_output=True)
  builder = talking_faces.get_builder(str(tmp_path), resolution=32, num_frames=4, num_train=3,
                                      num_validation=1, num_test=1)
  assert builder.is_prepared() and len(builder.as_data_source("train")) == 3


def test_parallel_build_writes_the_same_data(tmp_path):
  sizes = dict(resolution=32, num_frames=4, num_train=20, num_validation=0, num_test=0)
  sources = [talking_faces.build(str(tmp_path / str(w)), num_workers=w, **sizes)
             .as_data_source("train") for w in (0, 2)]
  for a, b in zip(*sources):
    assert a["caption"] == b["caption"]
    np.testing.assert_array_equal(a["audio"], b["audio"])
    np.testing.assert_array_equal(a["video"], b["video"])


def test_building_200_examples_gives_200_distinct_well_formed_clips(tmp_path):
  source = talking_faces.build(str(tmp_path), resolution=32, num_frames=16, num_train=200,
                               num_validation=0, num_test=0).as_data_source("train")
  assert len(source) == 200
  videos = set()
  for record in source:
    assert record["video"].shape == (16, 32, 32, 3) and record["audio"].shape == (16 * 640,)
    captions.parse_caption(record["caption"].decode())
    videos.add(record["video"].tobytes())
  assert len(videos) == 200
