"""Keypoint maps vs the renderer: heatmap peaks, head layout and mouth region on real renders."""
import numpy as np

from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import generate_example
from gcm_jax.data.talking_faces import keypoint_maps


def test_keypoint_heatmap_peaks_at_keypoint():
  keypoints = np.array([[[[4.5 / 16, 12.5 / 16]]]])  # (x, y) at the center of pixel (4, 12)
  maps = keypoint_maps.keypoint_heatmaps(keypoints, 16, sigma_pixels=1.0)
  assert maps.shape == (1, 1, 16, 16, 1)
  y, x = np.unravel_index(np.argmax(maps[0, 0, :, :, 0]), (16, 16))
  assert (x, y) == (4, 12)
  np.testing.assert_allclose(maps[0, 0, 12, 4, 0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(maps[0, 0, 12, 5, 0], np.exp(-0.5), rtol=1e-5)  # one sigma away


def test_head_layout_matches_rendered_face():
  attributes = captions.Attributes("green", "purple", "left")
  ex = generate_example("the big bad wolf", attributes, resolution=64, num_frames=4, seed=1)
  layout = keypoint_maps.head_layout(ex.keypoints, 64)[..., 0]
  face_rgb = captions.COLOR_RGB[attributes.face_color_id].astype(float)
  bg_rgb = captions.COLOR_RGB[attributes.background_color_id].astype(float)
  video = ex.video.astype(float)
  is_face = (np.linalg.norm(video - face_rgb, axis=-1) < np.linalg.norm(video - bg_rgb, axis=-1))
  predicted = layout > 0.5
  iou = (is_face & predicted).sum() / (is_face | predicted).sum()
  assert iou > 0.85, iou


def test_mouth_region_covers_the_rendered_mouth_and_little_else():
  attributes = captions.Attributes("green", "purple", "still")
  ex = generate_example("papa bought a map", attributes, resolution=32, num_frames=25, seed=3)
  region = keypoint_maps.mouth_region(ex.keypoints, 32)
  inside_rgb = np.array([50, 10, 20], float)  # renderer._MOUTH_INSIDE
  mouth = np.linalg.norm(ex.video.astype(float) - inside_rgb, axis=-1) < 40
  assert mouth.sum() > 20  # the phrase opens the mouth in several frames
  assert not np.any(mouth & ~region), "mouth-interior pixels outside the region"
  assert region.mean() < 0.1  # a few percent of the image, not the whole face


def test_control_maps_stack_heatmaps_and_layout_for_any_leading_axes():
  ex = generate_example("hello", captions.Attributes("red", "blue", "left"), resolution=32,
                        num_frames=3, seed=2)
  maps = keypoint_maps.control_maps(ex.keypoints, 32)
  assert maps.shape == (3, 32, 32, keypoint_maps.NUM_CONTROL_CHANNELS) == (3, 32, 32, 9)
  assert maps.dtype == np.float32
  np.testing.assert_array_equal(maps[..., :8], keypoint_maps.keypoint_heatmaps(ex.keypoints, 32))
  np.testing.assert_array_equal(maps[..., 8:], keypoint_maps.head_layout(ex.keypoints, 32))
  batched = keypoint_maps.control_maps(np.stack([ex.keypoints[::-1], ex.keypoints]), 32)
  np.testing.assert_array_equal(batched[1], maps)
  np.testing.assert_array_equal(batched[0], maps[::-1])


def test_control_maps_of_a_test_clip_for_gcm_generate(tmp_path):
  from gcm_jax import wav_io  # pylint: disable=g-import-not-at-top
  from gcm_jax.data.talking_faces import control_maps  # pylint: disable=g-import-not-at-top
  from gcm_jax.data.talking_faces import talking_faces  # pylint: disable=g-import-not-at-top
  caption = control_maps.write_clip(str(tmp_path / "maps.npy"), "test", 1, 32, 6,
                                    audio_output=str(tmp_path / "voice.wav"))
  example = talking_faces.make_example(
      talking_faces.TalkingFacesConfig(resolution=32, num_frames=6), "test", 1)
  assert caption == example.caption and "says:" in caption
  maps = np.load(tmp_path / "maps.npy")
  np.testing.assert_array_equal(maps, keypoint_maps.control_maps(example.keypoints, 32))
  assert maps.shape == (6, 32, 32, 9)
  samples, rate = wav_io.read_wav(str(tmp_path / "voice.wav"))
  assert rate == 16000 and samples.shape[0] == 6 * 640
