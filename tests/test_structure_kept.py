"""`ground_truth.structure_kept` (the talking faces' `contract.GroundTruth.structure_kept`):
did a dubbed frame keep the source's eyes and head outline? Its calibration cases on real
test clips: the source itself, the eyes painted over, shifts, blurs and JPEG-level noise; and
`identity.structure_rows` / `identity_rows` reading it into the preservation rows."""
import ml_collections
import numpy as np
import pytest

from gcm_jax.alignment import identity
from gcm_jax.data import datasets
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import ground_truth
from tests import train_utils

KEYS = ("video", "keypoints", "source_mask")


@pytest.fixture(scope="module", params=(32, 64))
def clips(request):
  return train_utils.talking_faces_clips("test", 4, 12, request.param, "center", 96, 0,
                                         keys=KEYS)


def _box_blur(video, k):
  p, r = k // 2, video.shape[-2]
  pad = np.pad(video, [(0, 0)] * (video.ndim - 3) + [(p, p), (p, p), (0, 0)], mode="edge")
  return sum(pad[..., i:i + r, j:j + r, :] for i in range(k) for j in range(k)) / k ** 2


def _shift_right(video, d):
  pad = np.pad(video, [(0, 0)] * (video.ndim - 2) + [(d, 0), (0, 0)], mode="edge")
  return pad[..., :video.shape[-2], :]


def _eyes_open(clips):
  """bool `[N, T]`: frames where both source eyes stand out from the face (no blink)."""
  face, _ = ground_truth.read_colors(clips["video"], clips["keypoints"])
  palette = captions.COLOR_RGB.astype(np.float32) / 127.5 - 1.0
  contrast = np.sum(np.square(clips["video"] - palette[face][:, None, None, None]), -1)
  patches = ground_truth.eye_patches(clips["keypoints"], clips["video"].shape[2])
  eye = np.sqrt(np.sum(contrast[:, :, None] * patches, axis=(-2, -1)))
  floor = ground_truth.EYE_CONTRAST_FLOOR * np.sqrt(np.sum(patches, axis=(-2, -1)))
  return np.all(eye > floor, axis=-1)


def test_the_source_itself_and_jpeg_level_noise_keep_everything(clips):
  source = clips["video"]
  kept = ground_truth.structure_kept(source, source, clips)
  assert kept["eyes"].shape == kept["outline"].shape == source.shape[:2]
  assert kept["eyes"].all() and kept["outline"].all()
  rng = np.random.default_rng(0)
  for level in (3, 10):  # JPEG-level noise, and more.
    noisy = np.clip(source + rng.uniform(-level, level, source.shape) / 127.5, -1, 1)
    kept = ground_truth.structure_kept(noisy, source, clips)
    assert kept["eyes"].all() and kept["outline"].all()


def test_eyes_painted_over_with_the_face_colour_are_gone(clips):
  source, r = clips["video"], clips["video"].shape[2]
  face, _ = ground_truth.read_colors(source, clips["keypoints"])
  palette = captions.COLOR_RGB.astype(np.float32) / 127.5 - 1.0
  patches = ground_truth.eye_patches(clips["keypoints"], r)          # [N, T, 2, R, R]
  is_open = _eyes_open(clips)
  assert is_open.mean() > 0.8  # Blinks are the rest.
  painted = np.where(patches.any(2)[..., None], palette[face][:, None, None, None], source)
  kept = ground_truth.structure_kept(painted, source, clips)
  assert not kept["eyes"][is_open].any()
  assert kept["outline"].all()  # The eyes lie inside the head: the silhouette is the same.
  # One eye painted over is enough to lose the eyes.
  one = np.where(patches[:, :, 0, ..., None], palette[face][:, None, None, None], source)
  assert not ground_truth.structure_kept(one, source, clips)["eyes"][is_open].any()


def test_a_shifted_or_blurred_frame_fails(clips):
  source, r = clips["video"], clips["video"].shape[2]
  is_open = _eyes_open(clips)
  shifted = ground_truth.structure_kept(_shift_right(source, 2), source, clips)
  assert not shifted["eyes"][is_open].any()
  assert not shifted["outline"].any()
  if r == 32:  # One pixel is already a lot of a 32-px head.
    assert not ground_truth.structure_kept(_shift_right(source, 1), source, clips)[
        "outline"].any()
  for k in (3, 5):
    blurred = ground_truth.structure_kept(_box_blur(source, k), source, clips)
    assert not blurred["eyes"][is_open].any()
    assert not (blurred["eyes"] & blurred["outline"])[is_open].any()


def test_frames_are_read_one_by_one(clips):
  """Damage in some frames shows in those frames only."""
  source = clips["video"]
  video = source.copy()
  video[:, ::3] = _shift_right(source[:, ::3], 2)
  kept = ground_truth.structure_kept(video, source, clips)
  damaged = np.zeros(source.shape[:2], bool)
  damaged[:, ::3] = True
  np.testing.assert_array_equal(kept["outline"], ~damaged)
  assert kept["eyes"][~damaged].all()
  # Without 'source_mask' in the clips the hook makes the same mask from the keypoints.
  again = ground_truth.structure_kept(video, source, {"keypoints": clips["keypoints"]})
  np.testing.assert_array_equal(again["outline"], kept["outline"])
  np.testing.assert_array_equal(again["eyes"], kept["eyes"])


def test_structure_rows_in_the_preservation_rows(clips):
  assert datasets.get("talking_faces").truth.structure_kept is ground_truth.structure_kept
  source = clips["video"]
  video = source.copy()
  video[:2, :6] = _shift_right(source[:2, :6], 2)   # A quarter of the frames lose both.
  video[2:, :3] = _box_blur(source[2:, :3], 5)      # An eighth lose the eyes.
  config = ml_collections.ConfigDict({"model": {"masked_source": True, "latent": False},
                                      "data": {"resolution": source.shape[2]}})
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(identity, "reconstruction_ceiling", lambda *args: None)
    rows = identity.identity_rows(config, clips, video, revoiced=source,
                                  structure_kept=ground_truth.structure_kept)["preservation"]
    plain = identity.identity_rows(config, clips, video)["preservation"]
  kept = ground_truth.structure_kept(video, source, clips)
  assert rows["ground_truth"] == {"eyes_kept": 1.0, "outline_kept": 1.0, "frames_kept": 1.0}
  assert rows["revoiced"]["frames_kept"] == 1.0  # The source given back.
  own = rows["own_audio"]
  assert own["eyes_kept"] == pytest.approx(np.mean(kept["eyes"]))
  assert own["outline_kept"] == pytest.approx(np.mean(kept["outline"]))
  assert own["frames_kept"] == pytest.approx(np.mean(kept["eyes"] & kept["outline"]))
  assert own["frames_kept"] <= 1 - 0.25 - 0.125 * _eyes_open(clips)[2:, :3].mean() + 1e-9
  assert own["psnr"] == plain["own_audio"]["psnr"]  # PSNR / SSIM as without the hook.
  # Without the hook: the rows as they were, no ground-truth row.
  assert "ground_truth" not in plain and "frames_kept" not in plain["own_audio"]
