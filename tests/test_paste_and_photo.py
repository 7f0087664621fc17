"""Paste-back of generated crops (`video_folder/paste.py`) and reference-photo crops
(`video_folder/photo.py`), with the faces of `tests/video_fixtures.py`."""
import dataclasses
import os

import cv2
import numpy as np
import PIL.Image
import pytest

from gcm_jax.data import contract
from gcm_jax.data.video_folder import builder
from gcm_jax.data.video_folder import captions
from gcm_jax.data.video_folder import decode
from gcm_jax.data.video_folder import faces
from gcm_jax.data.video_folder import paste
from gcm_jax.data.video_folder import photo
from tests import video_fixtures as vf

S = 64


def _resized_weight(frame_shape: tuple[int, ...], box: tuple[float, ...], weight: np.ndarray
                    ) -> np.ndarray:
  """float32 [H, W]: the weight as paste_back places it (0 outside the box)."""
  h, w = frame_shape[:2]
  x0, y0, x1, y1 = paste.paste_box(box)
  canvas = np.zeros((h + 2 * S * 4, w + 2 * S * 4), np.float32)
  resized = cv2.resize(weight, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
  canvas[y0 + 4 * S:y1 + 4 * S, x0 + 4 * S:x1 + 4 * S] = resized
  return canvas[4 * S:4 * S + h, 4 * S:4 * S + w]


@pytest.mark.parametrize("frame_hw, box", [
    ((120, 200), (60.3, 20.6, 130.3, 90.6)),       # inside a landscape frame
    ((120, 200), (-25.0, -30.4, 55.0, 49.6)),       # over the top-left corner
    ((120, 200), (150.2, 70.0, 230.2, 150.0)),      # over the bottom-right corner
    ((200, 90), (10.0, 150.0, 100.0, 240.0)),       # portrait frame, over the bottom and right
    ((90, 160), (-50.0, -40.0, 210.0, 220.0)),      # larger than the frame on every side
    ((90, 160), (300.0, 10.0, 360.0, 70.0)),        # wholly outside
    ((100, 100), (20.0, 30.0, 44.0, 54.0)),         # smaller than the crop (downscaled)
])
@pytest.mark.parametrize("region", ["lower_half", "whole", "mouth_box"])
def test_paste_back_changes_only_pixels_with_weight(frame_hw, box, region):
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
  crop = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
  mask = {"lower_half": contract.lower_half({"video": np.zeros((1, S, S, 3))}, S)[0],
          "whole": None, "mouth_box": (0.25, 0.6, 0.75, 0.9)}[region]
  weight = paste.feather_mask(S, mask, feather_px=6)
  out = paste.paste_back(frame, crop, box, weight)
  assert out.dtype == np.uint8 and out.shape == frame.shape
  placed = _resized_weight(frame.shape, box, weight)
  untouched = placed == 0
  np.testing.assert_array_equal(out[untouched], frame[untouched])  # Bit-identical.
  assert not np.any(out[untouched] != frame[untouched])
  # Where the weight is 1 the result is the crop resized to the box.
  x0, y0, x1, y1 = paste.paste_box(box)
  crop_px = np.zeros((frame.shape[0] + 8 * S, frame.shape[1] + 8 * S, 3), np.float32)
  crop_px[y0 + 4 * S:y1 + 4 * S, x0 + 4 * S:x1 + 4 * S] = cv2.resize(
      crop.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
  crop_px = crop_px[4 * S:4 * S + frame.shape[0], 4 * S:4 * S + frame.shape[1]]
  full = placed == 1.0
  if (placed > 0).sum() > 500:
    assert full.sum() > 50  # The test sees full-weight pixels.
  assert np.abs(out[full].astype(np.float32) - crop_px[full]).max(initial=0) <= 0.5 + 1e-3
  # In the band: between source and crop.
  band = (placed > 0) & (placed < 1)
  lo = np.minimum(frame, np.rint(crop_px)) - 1
  hi = np.maximum(frame, np.rint(crop_px)) + 1
  assert np.all((out[band] >= lo[band]) & (out[band] <= hi[band]))


def test_paste_back_inverts_the_ingest_crop():
  """A crop cut by faces.crop and pasted back with weight 1 lands where it came from (no
  half-pixel or axis mix-up): a smooth frame is restored within a few grey levels."""
  h, w = 150, 260
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  frame = np.stack([x * 0.9, y * 1.5, 0.5 * x + 0.4 * y], -1).clip(0, 255).astype(np.uint8)
  for window in [np.array([40.3, 20.7, 140.3, 120.7]), np.array([-30.0, 60.0, 90.0, 180.0])]:
    crop = faces.crop(frame, window, S)
    out = paste.paste_back(frame, crop, window, paste.feather_mask(S, None, 0))
    x0, y0, x1, y1 = paste.paste_box(window)
    inside = (slice(max(y0, 0) + 2, min(y1, h) - 2), slice(max(x0, 0) + 2, min(x1, w) - 2))
    diff = np.abs(out[inside].astype(int) - frame[inside])
    assert diff.mean() < 1.0 and diff.max() <= 4, (window, diff.mean(), diff.max())
  # A float crop in [-1, 1] (the model's output) pastes like its uint8 version.
  crop = faces.crop(frame, np.array([40.0, 20.0, 140.0, 120.0]), S)
  weight = paste.feather_mask(S, None, 5)
  as_float = crop.astype(np.float32) / 127.5 - 1.0
  from_float = paste.paste_back(frame, as_float, (40, 20, 140, 120), weight)
  from_uint8 = paste.paste_back(frame, crop, (40, 20, 140, 120), weight)
  assert np.abs(from_float.astype(int) - from_uint8).max() <= 1  # Float rounding at .5.


def test_feather_mask_is_zero_outside_one_inside_and_monotone():
  lower = np.zeros((S, S), bool)
  lower[S // 2:] = True
  weight = paste.feather_mask(S, lower, feather_px=8)
  assert weight.dtype == np.float32 and weight.shape == (S, S)
  assert np.all(weight[~lower] == 0.0)
  assert np.all(weight[lower] > 0.0)
  # 1 where the pixel centre is >= 8 px from the region's edge (its top and the crop border).
  assert np.all(weight[S // 2 + 8:S - 8, 8:S - 8] == 1.0)
  assert weight[S // 2 + 7:S - 8, 8:S - 8].min() < 1.0
  column = weight[S // 2:, S // 2]  # Down from the region's top edge, then up to the border.
  assert np.all(np.diff(column[:S // 4]) >= 0) and np.all(np.diff(column[S // 4:]) <= 0)
  assert column[0] > 0 and column[0] < 0.05
  row = weight[3 * S // 4, :S // 2]  # In from the crop's left border.
  assert np.all(np.diff(row) >= 0) and row[0] > 0 and row[-1] == 1.0
  band = row[(row > 0) & (row < 1)]
  assert len(band) == 8 and np.all(np.diff(band) > 0)  # Smooth: strictly rising over 8 px.
  # The whole crop: feathered at the crop border, symmetric.
  whole = paste.feather_mask(S, None, feather_px=4)
  np.testing.assert_array_equal(whole, whole[::-1])
  np.testing.assert_array_equal(whole, whole.T)
  assert whole[0, 0] > 0 and whole[4:-4, 4:-4].min() == 1.0
  # Hard mask, default width, a box region, and bad input.
  np.testing.assert_array_equal(paste.feather_mask(S, lower, 0), lower.astype(np.float32))
  assert np.all(paste.feather_mask(128, None)[8:-8, 8:-8] == 1.0)
  box = paste.feather_mask(S, (0.25, 0.5, 0.75, 1.0), feather_px=3)
  np.testing.assert_array_equal(box > 0, faces.mouth_region(np.array([0.25, 0.5, 0.75, 1.0]), S))
  with pytest.raises(ValueError, match="region must be a bool mask"):
    paste.feather_mask(S, np.ones((S, S + 1), bool))


def _face_image(monkeypatch, size: tuple[int, int], center: tuple[float, float],
                scale: float) -> np.ndarray:
  """uint8 [H, W, 3]: the fixtures' astronaut face at `center` (fractions of the image),
  `scale` x its photograph (its detected box is about 100 `scale` pixels)."""
  w, h = size
  monkeypatch.setattr(vf, "face_position",
                      lambda spec, t: (np.array([center[0] * w, center[1] * h]), scale))
  return vf.render(vf.Spec("photo", size=size, marker=None), 0.3, 0.2)


def test_photo_crop_is_framed_like_the_ingest_crop(monkeypatch, tmp_path):
  """A video of a still face through the builder's process_video, and face_crop on (a) one of
  its decoded frames and (b) photos of the same face at 2x and 4x the video's size."""
  def still(spec, t):
    w, h = spec.size
    return np.array([0.52 * w, 0.48 * h]), 0.6 * h / 192
  monkeypatch.setattr(vf, "face_position", still)
  spec = vf.Spec("person/still", duration=0.8, size=(320, 240), marker=None)
  path = vf.write(spec, str(tmp_path))
  settings = builder.Settings(resolution=S, num_frames=16)
  records = []
  builder.process_video(captions.Item("person/still.mp4", path, captions.Transcript()),
                        settings, builder.tools_for(settings), records.append)
  assert len(records) == 1
  boxes, clip = records[0]["crop_box"], records[0]["video"]
  t = 5  # A frame the detector ran on (every 5th).
  frame = next(f for i, _, f in decode.frames_25fps(path) if i == t)
  crop, box = photo.face_crop(frame, S, photo.CropSettings.from_build(settings))
  assert crop.shape == (S, S, 3) and crop.dtype == np.uint8 and box.dtype == np.float32
  assert np.abs(box - boxes[t]).max() < 3, (box, boxes[t])
  assert np.abs(crop.astype(int) - clip[t]).mean() < 8
  for k in (2, 4):  # Larger photos: detected on the same 320 x 240 frame, box scaled back.
    image = vf.render(dataclasses.replace(spec, size=(320 * k, 240 * k)), 0.2, 0.2)
    _, box = photo.face_crop(image, S)
    assert np.abs(box / k - boxes.mean(0)).max() < 4, (k, box / k, boxes.mean(0))
    side = box[2] - box[0]
    assert side == pytest.approx(box[3] - box[1]) and side > 0.5 * image.shape[0]


def test_photo_errors_and_the_largest_face(monkeypatch):
  no_face = vf.render(vf.Spec("x", face=False, marker=None), 0.3, 0.2)
  with pytest.raises(ValueError, match=r"^no face found in the 256x192 image by the 'lbp' "
                                       r"detector \(searched at 256x192, .*24 px"):
    photo.face_crop(no_face, S)
  two = vf.render(vf.Spec("x", second_face=True, marker=None), 0.3, 0.2)
  with pytest.raises(ValueError, match=r"^2 faces found in the 256x192 image \(sizes \d+, \d+ "
                                       r"px\): a reference photo must show one person"):
    photo.face_crop(two, S)
  tiny = _face_image(monkeypatch, (160, 120), (0.5, 0.5), 0.3)
  with pytest.raises(ValueError, match=r"^the face is \d\d px in the 160x120 image, below the "
                                       r"48 px minimum .*min_face 0.15 of its 320-px"):
    photo.face_crop(tiny, S)
  # One large face and one under 0.6 of its size: the large one is taken.
  big = _face_image(monkeypatch, (240, 240), (0.5, 0.5), 0.9)
  small = _face_image(monkeypatch, (160, 240), (0.5, 0.4), 0.45)
  both = np.concatenate([big, small], axis=1)
  sizes = sorted(d.size for d in faces.merge_overlapping(
      faces.make_detector("lbp", None, 0.15)(photo.detection_frame(both, 320)[0]), 0.4))
  assert len(sizes) == 2 and sizes[0] < 0.6 * sizes[1]  # The detector sees both.
  _, box = photo.face_crop(both, S)
  assert 0.5 * (box[0] + box[2]) == pytest.approx(120, abs=10)
  with pytest.raises(ValueError, match="image must be uint8"):
    photo.face_crop(big[..., 0], S)


def test_crop_settings_match_the_builder():
  defaults = builder.Settings()
  for field in dataclasses.fields(photo.CropSettings):
    assert getattr(photo.CropSettings(), field.name) == getattr(defaults, field.name), field.name
  built = builder.Settings(margin=0.5, shift=0.0, detect_size=480)
  expected = photo.CropSettings(margin=0.5, shift=0.0, detect_size=480)
  assert photo.CropSettings.from_build(built) == expected
  assert photo.CropSettings.from_build(dataclasses.asdict(built)) == expected
  assert expected.min_face_px == 72


def test_read_image(tmp_path):
  image = vf.render(vf.Spec("x", marker=None), 0.3, 0.2)
  good = str(tmp_path / "face.png")
  cv2.imwrite(good, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
  np.testing.assert_array_equal(photo.read_image(good), image)
  rotated = tmp_path / "rotated.jpg"  # A phone photo: EXIF orientation 6 (turn 90 deg right).
  pil = PIL.Image.fromarray(image)
  exif = pil.getexif()
  exif[0x0112] = 6
  pil.save(rotated, "JPEG", quality=95, exif=exif.tobytes())
  upright = photo.read_image(str(rotated))
  assert upright.shape == (256, 192, 3)
  assert np.abs(upright.astype(int) - np.rot90(image, -1)).mean() < 4
  with pytest.raises(FileNotFoundError, match="no such image file: .*missing.png"):
    photo.read_image(str(tmp_path / "missing.png"))
  with pytest.raises(ValueError, match="is a folder"):
    photo.read_image(str(tmp_path))
  empty = tmp_path / "empty.jpg"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match=r"^empty file \(0 bytes\)"):
    photo.read_image(str(empty))
  text = tmp_path / "notes.png"
  text.write_text("not a picture at all")
  with pytest.raises(ValueError, match=r"^not an image format OpenCV reads: .*b'not a pict"):
    photo.read_image(str(text))
  truncated = tmp_path / "cut.png"
  with open(good, "rb") as f:
    truncated.write_bytes(f.read()[:os.path.getsize(good) // 2])
  with pytest.raises(ValueError, match="^a damaged or truncated image"):
    photo.read_image(str(truncated))
