"""The dataset contract (`gcm_jax.data.contract`), proved by a third dataset defined here only:
squares whose side follows a tone's loudness, captioned with their color. Registered with one
line (`datasets.DATASETS`), it trains the diffusion model (with the mouth-weighted loss on
the square), samples, evaluates with its own ground-truth hooks, and trains a SyncNet, with
no other file knowing it exists.
"""
import math

import jax
import ml_collections
import numpy as np
import pytest

from gcm_jax import evaluate
from gcm_jax import generate
from gcm_jax.configs import syncnet as syncnet_config
from gcm_jax.data import contract
from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.models import diffusion_model
from gcm_jax.train import train_syncnet
from gcm_jax.train import trainer
from tests import train_utils

COLORS = ("red", "green", "blue")
SAMPLES_PER_FRAME = 640  # 16 kHz audio under 25 fps video.
SPLIT_SEEDS = {"train": 0, "validation": 10**6, "test": 2 * 10**6}  # Disjoint record seeds.


def _sides(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """The square's side per frame, as a fraction of the image: float32 `[T]` in [0.2, 0.8]."""
  return rng.uniform(0.2, 0.8, num_frames).astype(np.float32)


def _boxes(sides: np.ndarray, resolution: int) -> np.ndarray:
  """bool `[T, R, R]`: the centred square of each frame."""
  half = np.round(sides * resolution / 2)[:, None]
  distance = np.abs(np.arange(resolution) + 0.5 - resolution / 2)[None]
  inside = distance <= half
  return inside[:, :, None] & inside[:, None, :]


def squares_record(seed: int, num_frames: int, resolution: int) -> dict[str, object]:
  """One clip: a colored square on grey whose side follows the tone's amplitude."""
  rng = np.random.default_rng(seed)
  color, sides = int(rng.integers(len(COLORS))), _sides(rng, num_frames)
  video = np.full((num_frames, resolution, resolution, 3), 64, np.uint8)
  video[_boxes(sides, resolution), color] = 255
  t = np.arange(num_frames * SAMPLES_PER_FRAME) / 16000
  audio = np.repeat(sides, SAMPLES_PER_FRAME) * np.sin(2 * np.pi * 440 * t)
  return {"video": video, "audio": audio.astype(np.float32), "caption": f"a {COLORS[color]} square",
          "side": sides, "color": np.int32(color)}


class SquaresSplit:
  """A split's records, made on demand: `len`, `[i]` and a repr stable across hosts."""

  def __init__(self, data_cfg: ml_collections.ConfigDict, split: str):
    self._split, self._frames, self._resolution = split, data_cfg.num_frames, data_cfg.resolution
    self._size = {"train": data_cfg.num_train, "validation": data_cfg.num_validation,
                  "test": data_cfg.num_test}[split]
    self._offset = SPLIT_SEEDS[split]

  def __len__(self) -> int:
    return self._size

  def __getitem__(self, i: int) -> dict[str, object]:
    return squares_record(self._offset + int(i), self._frames, self._resolution)

  def __repr__(self) -> str:
    return f"SquaresSplit({self._split}, {self._size}, {self._frames}, {self._resolution})"


def squares_clips(data_cfg, split, num_clips, num_frames, seed):
  """Fresh clips of any length (as the talking faces draw them), from `seed`."""
  offset = SPLIT_SEEDS[split] + 10**5 * seed
  return [squares_record(offset + i, num_frames, data_cfg.resolution) for i in range(num_clips)]


def read_color(videos: np.ndarray) -> np.ndarray:
  """int `[N]`: the brightest channel at the image centre (the square always covers it)."""
  r = videos.shape[2]
  centre = videos[:, :, r // 2 - 1:r // 2 + 1, r // 2 - 1:r // 2 + 1]
  return np.argmax(centre.mean(axis=(1, 2, 3)), axis=-1)


def color_match(videos: np.ndarray, clips) -> dict[str, float]:
  return {"square": float(np.mean(read_color(videos) == clips["color"]))}


def side_correlation(videos: np.ndarray, sides: np.ndarray) -> np.ndarray:
  """float `[N]`: Pearson correlation over time of the bright area with the tone's track."""
  area = (videos.max(axis=-1) > 0.25).mean(axis=(2, 3))
  out = []
  for a, s in zip(area, sides):
    ok = a.std() > 0 and s.std() > 0
    out.append(np.corrcoef(a, s)[0, 1] if ok else 0.0)
  return np.asarray(out)


SQUARES = contract.Dataset(
    description="colored squares whose side follows a tone",
    source=SquaresSplit,
    clips=squares_clips,
    features={"side": np.float32, "color": np.int32},
    derived={"mouth_region": lambda record, r: _boxes(np.asarray(record["side"]), r)},
    truth=contract.GroundTruth(
        keys=("side", "color"), caption_metric="square_color", caption_match=color_match,
        chance=1 / len(COLORS), mouth_track_key="side", mouth_correlation=side_correlation,
        paraphrases={"article": lambda caption: caption.replace("a ", "one ", 1)}),
)


@pytest.fixture(autouse=True)
def squares(monkeypatch):
  monkeypatch.setitem(datasets.DATASETS, "squares", SQUARES)  # The one line of a new dataset.


def _config() -> ml_collections.ConfigDict:
  config = train_utils.micro_config()
  config.data.name = "squares"
  config.model.text_max_len = config.data.text_max_len = 32
  config.diffusion.mouth_loss_weight = 2.0  # Reads the derived 'mouth_region'.
  config.train.num_steps = 2
  config.sampling.num_steps = 4
  return config


def test_hooks_read_the_records_ground_truth():
  """The hooks score the dataset's own clips as right and another clip's track / recolored
  frames as wrong: otherwise the evaluation below could not tell a model that uses its
  conditions."""
  clips = pipeline.load_clips(_config().data, "test", 6, 12, 0,
                              ("video", "side", "color", "mouth_region"), 32)
  assert color_match(clips["video"], clips) == {"square": 1.0}
  assert np.all(side_correlation(clips["video"], clips["side"]) > 0.95)
  assert np.mean(side_correlation(clips["video"], np.roll(clips["side"], 1, axis=0))) < 0.5
  assert color_match(clips["video"][..., ::-1], clips)["square"] < 1.0
  assert clips["mouth_region"].shape == (6, 12, 32, 32)
  np.testing.assert_array_equal(clips["mouth_region"], clips["video"].max(axis=-1) > 0.25)


def test_a_third_dataset_trains_samples_evaluates_and_trains_syncnet(tmp_path):
  config = _config()
  workdir = str(tmp_path / "run")
  trainer.train(config, workdir)
  trained = diffusion_model.load_trained(workdir)
  assert trained.config.data.name == "squares"

  record = squares_record(7, 6, 32)
  video, audio = generate.generate(trained, record["caption"], record["audio"], 16000,
                                   jax.random.PRNGKey(0), progress=False)
  assert video.shape == (6, 32, 32, 3) and np.all(np.isfinite(video))
  assert audio.shape == (6 * SAMPLES_PER_FRAME,)

  report = evaluate.evaluate(workdir, num_clips=4, clip_frames=8, noise_levels=(0.5,))
  assert report["dataset"] == "squares" and report["caption_metric"] == "square_color"
  assert report["caption_chance"] == pytest.approx(1 / 3)
  assert report["square_color"]["ground_truth"] == {"square": 1.0}
  assert report["ground_truth_matched"]["mouth_corr"] > 0.95
  assert set(report["paraphrased_captions"]) == {"article"}
  assert "face_structure" not in report  # Its ground truth has no face_structure hook.
  assert report["skipped"]["face_structure"].startswith("the squares registry entry's")
  usage = report["condition_usage"][0]
  assert {"square_square_color_full", "square_square_color_no_text", "mouth_corr_full",
          "mouth_corr_shuffled_audio"} <= set(usage)
  assert all(math.isfinite(v) for v in usage.values())
  assert "square_color" in evaluate.markdown_report(report)

  sync = syncnet_config.get_config()
  sync.data.update(name="squares", num_train_clips=8, num_eval_clips=4, num_frames=20,
                   eval_num_frames=20, text_max_len=32)
  sync.model.update(embed_dim=16, visual_widths=(8, 16), audio_widths=(8, 16))
  sync.train.update(batch_size=8, num_steps=2, log_every=1)
  sync.checkpoint.every_steps = 2
  sync.text_video.update(num_steps=1, batch_size=4, embed_dim=16, text_width=16,
                         video_widths=(8,))
  sync_report = train_syncnet.train_and_evaluate(sync, str(tmp_path / "syncnet"))
  assert sync_report is not None
  assert all(math.isfinite(v) for v in sync_report.values() if isinstance(v, float))


def test_cut_record_cuts_per_frame_features_only():
  record = squares_record(3, 8, 32)
  record["reference"] = np.zeros((8, 32, 32, 3), np.uint8)  # K = T reference frames.
  cut = contract.cut_record(record, 5)
  assert cut["video"].shape[0] == 5 and cut["side"].shape == (5,)
  assert cut["audio"].shape == (5 * SAMPLES_PER_FRAME,)
  assert cut["reference"].shape[0] == 8 and cut["color"] == record["color"]
  with pytest.raises(ValueError, match="asked for clips of 9 frames from records of 8"):
    contract.cut_record(record, 9)


def test_spread_clips_reach_every_part_of_the_split():
  """A built split keeps each video's clips together; evaluation's clips are spread over
  it (first and last record included, in order, no repeats), all of a short split."""
  records = [{"video": np.full((6, 2, 2, 3), i, np.uint8), "audio": np.zeros(6 * 640),
              "name": i} for i in range(10)]
  make = contract.spread_clips(lambda data_cfg, split: records)
  picked = make(None, "test", 4, 3, 0)
  assert [r["name"] for r in picked] == [0, 3, 6, 9]
  assert all(r["video"].shape == (3, 2, 2, 3) for r in picked)
  assert [r["name"] for r in make(None, "test", 50, 6, 0)] == list(range(10))
