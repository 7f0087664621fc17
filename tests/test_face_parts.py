"""`face_parts` (the talking faces' `contract.GroundTruth.face_structure`): eyes, head outline
and mouth placement read from a frame alone, on faces drawn by the renderer with known eye
openness and mouth, and on hand-built heads (a box, a blank frame, a mouth moved up)."""
import math

import numpy as np
import pytest

from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import face_parts
from gcm_jax.data.talking_faces import renderer
from gcm_jax.data.talking_faces import visemes

# Every face colour once, on a background colour that differs from it.
PAIRS = tuple((face, captions.COLOR_NAMES[(i + 3) % captions.NUM_COLORS])
              for i, face in enumerate(captions.COLOR_NAMES))
NUM_FRAMES = 6


def _draw(face: str, background: str, resolution: int, eye_open: float,
          openness: float = 0.8, scale: float = 1.0) -> np.ndarray:
  """`[NUM_FRAMES, R, R, 3]` in [-1, 1]: the renderer's face moving right, the given eye
  openness and mouth opening in every frame."""
  attributes = captions.Attributes(face, background, "right")
  track = visemes.MouthTrack(np.zeros(NUM_FRAMES, np.int32),
                             np.full(NUM_FRAMES, openness, np.float32),
                             np.zeros(NUM_FRAMES, np.float32))
  video, _ = renderer.draw(attributes, renderer.head_centers("right", NUM_FRAMES), scale, track,
                           np.full(NUM_FRAMES, eye_open, np.float32), resolution)
  return video.astype(np.float32) / 127.5 - 1.0


@pytest.mark.parametrize("resolution", (32, 64))
def test_open_eyes_are_present_and_closed_ones_absent_for_every_face_colour(resolution):
  """Open eyes (renderer openness 1 and 0.7) read present on every palette face, white
  included, at the smallest and largest head scale the dataset draws; no eyes (openness 0)
  and eyes painted over with the face colour read absent."""
  for face, background in PAIRS:
    for scale in (0.9, 1.05):
      for openness in (1.0, 0.7):
        parts = face_parts.face_parts(_draw(face, background, resolution, openness,
                                            scale=scale)[None])
        assert parts["eyes"].all(), (face, background, scale, openness, parts["eye_contrast"])
      closed = face_parts.face_parts(_draw(face, background, resolution, 0.0, scale=scale)[None])
      assert not closed["eyes"].any(), (face, background, scale, closed["eye_contrast"])


@pytest.mark.parametrize("resolution", (32, 64))
def test_pupils_without_whites_are_no_eyes_but_on_a_white_face(resolution, monkeypatch):
  """The renderer made to paint the eye whites in the face colour (pupils only): absent on
  every face but the white one, whose face is as white as an eye white (there the pupil on
  it is an eye, as drawn)."""
  for face, background in PAIRS:
    monkeypatch.setattr(renderer, "_EYE_WHITE", captions.COLOR_RGB[
        captions.COLOR_NAMES.index(face)].astype(np.float32))
    parts = face_parts.face_parts(_draw(face, background, resolution, 1.0)[None])
    assert parts["eyes"].all() == (face == "white"), (face, background, parts["eye_contrast"])
    assert parts["eyes"].any() == (face == "white"), (face, background, parts["eye_contrast"])


@pytest.mark.parametrize("resolution", (32, 64))
def test_an_elliptic_head_fits_its_ellipse_and_a_box_reads_the_analytic_iou(resolution):
  """The renderer's head: IoU with its moment ellipse >= 0.97. A box (any aspect: the IoU is
  affine-invariant): the square's with its moment circle, radius side / sqrt(3), minus four
  caps at distance side / 2, = 0.826 (within 0.03 for pixelization)."""
  parts = face_parts.face_parts(_draw("pink", "blue", resolution, 1.0)[None])
  assert parts["outline_iou"].min() >= 0.97
  r2, d = 1 / 3, 0.5
  cap = r2 * math.acos(d / math.sqrt(r2)) - d * math.sqrt(r2 - d * d)
  inter = math.pi * r2 - 4 * cap
  want = inter / (math.pi * r2 + 1 - inter)
  assert want == pytest.approx(0.826, abs=1e-3)
  box = np.full((1, 1, resolution, resolution, 3), -0.5, np.float32)
  box[..., resolution // 4:resolution * 7 // 8, resolution // 4:resolution * 3 // 4, :] = 0.6
  iou = face_parts.face_parts(box)["outline_iou"]
  np.testing.assert_allclose(iou, want, atol=0.03)


def test_a_blank_frame_has_no_head_no_eyes_and_no_mouth():
  blank = np.full((1, 2, 32, 32, 3), 0.2, np.float32)
  parts = face_parts.face_parts(blank)
  assert not parts["head"].any() and not parts["eyes"].any()
  assert (parts["outline_iou"] == 0).all() and np.isnan(parts["mouth_placed"]).all()


def test_the_mouth_is_placed_in_the_lower_half_and_not_when_moved_up():
  """An open mouth reads placed (1) in every frame; the same mouth pasted onto the forehead
  (rows shifted up by 45% of the frame) reads 0; a closed mouth is not visible (NaN)."""
  video = _draw("yellow", "purple", 64, 1.0, openness=1.0)
  placed = face_parts.face_parts(video[None])["mouth_placed"]
  np.testing.assert_array_equal(placed, 1.0)
  shift = int(64 * 0.45)
  mouth = np.stack([face_parts.mouth_blob(frame) for frame in video])
  moved = video.copy()
  for t in range(NUM_FRAMES):
    ys, xs = np.nonzero(mouth[t])
    moved[t, ys - shift, xs] = video[t, ys, xs]
    moved[t, ys, xs] = video[t, ys - 3, xs]  # The face colour over the old mouth.
  np.testing.assert_array_equal(face_parts.face_parts(moved[None])["mouth_placed"], 0.0)
  closed = _draw("yellow", "purple", 64, 1.0, openness=0.0)
  assert np.isnan(face_parts.face_parts(closed[None])["mouth_placed"]).all()


def test_noise_at_jpeg_level_and_beyond_changes_no_read_out():
  rng = np.random.default_rng(0)
  video = np.stack([_draw(face, background, 32, 1.0) for face, background in PAIRS[:4]])
  clean = face_parts.face_parts(video)
  noisy = face_parts.face_parts(
      np.clip(video + rng.uniform(-10, 10, video.shape) / 127.5, -1, 1))
  np.testing.assert_array_equal(noisy["eyes"], clean["eyes"])
  np.testing.assert_allclose(noisy["outline_iou"], clean["outline_iou"], atol=0.03)
  np.testing.assert_array_equal(noisy["mouth_placed"], clean["mouth_placed"])


def test_bad_input_is_named():
  with pytest.raises(ValueError, match=r"videos must be \[N, T, R, R, 3\]"):
    face_parts.face_parts(np.zeros((2, 32, 32, 3)))
