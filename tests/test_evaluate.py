"""Evaluation helpers: color read-out is exact on ground-truth renders."""
import numpy as np

from gcm_jax import evaluate
from gcm_jax.alignment import train_syncnet
from gcm_jax.data.talking_faces import captions


def test_nearest_color_recovers_palette():
  palette = captions.COLOR_RGB.astype(np.float32) / 127.5 - 1.0
  np.testing.assert_array_equal(evaluate.nearest_color(palette), np.arange(len(palette)))
  np.testing.assert_array_equal(evaluate.nearest_color(palette * 0.97), np.arange(len(palette)))


def test_read_colors_on_ground_truth_clips():
  clips = train_syncnet.make_clips("test", 6, 8, 32, "center", 160, seed=3,
                                   keys=evaluate.EVAL_KEYS)
  face, background = evaluate.read_colors(clips["video"], clips["keypoints"])
  np.testing.assert_array_equal(face, clips["face_color"])
  np.testing.assert_array_equal(background, clips["background_color"])
  # Swapping the videos breaks the agreement: the read-out depends on the pixels.
  swapped, _ = evaluate.read_colors(clips["video"][::-1], clips["keypoints"])
  assert np.mean(swapped == clips["face_color"]) < 1.0


def test_condition_usage_of_an_untrained_model():
  """At init the model outputs 0, so x0_hat = alpha * x_t: colors are read from x_t at low
  noise whatever the text, and the audio changes nothing."""
  import jax  # pylint: disable=g-import-not-at-top
  from gcm_jax import generate  # pylint: disable=g-import-not-at-top
  from gcm_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from tests import train_utils  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  config.data.num_frames = 8
  model = trainer.make_model(config)
  inputs = trainer.example_inputs(config, batch_size=1)
  params = model.init(jax.random.PRNGKey(0), inputs["x"], inputs["t"], inputs["cond"])["params"]
  trained = generate.TrainedModel(config, trainer.make_apply_fn(config),
                                  jax.tree.map(np.asarray, params))
  clips = train_syncnet.make_clips("test", 4, 8, 32, "center", config.model.text_max_len,
                                   seed=3, keys=evaluate.EVAL_KEYS)
  rows = evaluate.condition_usage(trained, clips, (0.02, 0.98), jax.random.PRNGKey(0))
  assert [r["t"] for r in rows] == [0.02, 0.98]
  low, high = rows
  assert low["logsnr"] > high["logsnr"]
  for name in ("full", "no_text"):
    assert low[f"face_color_accuracy_{name}"] == 1.0
    assert low[f"background_color_accuracy_{name}"] == 1.0
  assert low["mouth_corr_full"] > 0.5
  for row in rows:
    assert row["mouth_corr_full"] == row["mouth_corr_shuffled_audio"]
