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
