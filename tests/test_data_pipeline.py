"""Tests for the TFDS builder and the grain -> global jax.Array pipeline (8 fake CPU devices)."""
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from gcm_jax.data import audio
from gcm_jax.data import pipeline
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import corpus
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


def test_hosts_read_disjoint_shards_in_lockstep(data_dir, mesh):
  # 6 validation examples over 4 hosts: shards of 2, 2, 1, 1; 5 epochs = 10 or 5 records,
  # 8 per host batch: hosts 2 and 3 run out after 1 batch and pad a second one.
  cfg = _config(data_dir, batch_size=32)
  counts, rows = [], []
  for host in range(4):
    batches = list(pipeline.make_dataset(cfg, "validation", mesh, num_epochs=5,
                                         process_index=host, process_count=4))
    assert len(batches) == 2
    masks = [np.asarray(b["mask"]) for b in batches]
    counts.append(sum(int(m.sum()) for m in masks))
    rows.append({a.tobytes() for b, m in zip(batches, masks) for a in np.asarray(b["audio"])[m]})
  assert counts == [10, 10, 5, 5]
  assert [len(r) for r in rows] == [2, 2, 1, 1] and len(set.union(*rows)) == 6
  cfg = _config(data_dir, batch_size=16)
  seen = []
  for host in range(2):
    it = pipeline.make_dataset(cfg, "train", mesh, num_epochs=1, process_index=host,
                               process_count=2)
    rows = set()
    for batch in it:
      mask = np.asarray(batch["mask"])
      assert batch["audio"].shape[0] == 8  # Per-host share of the 16-example batch.
      rows |= {arr.tobytes() for arr in np.asarray(batch["audio"])[mask]}
    assert len(rows) == 12
    seen.append(rows)
  assert not seen[0] & seen[1]


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


@pytest.mark.slow
def test_parallel_build_writes_the_same_data(tmp_path):
  sizes = dict(resolution=32, num_frames=4, num_train=20, num_validation=0, num_test=0)
  sources = [talking_faces.build(str(tmp_path / str(w)), num_workers=w, **sizes)
             .as_data_source("train") for w in (0, 2)]
  for a, b in zip(*sources):
    assert a["caption"] == b["caption"]
    np.testing.assert_array_equal(a["audio"], b["audio"])
    np.testing.assert_array_equal(a["video"], b["video"])


@pytest.mark.slow
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
