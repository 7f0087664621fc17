"""A reference photo -> the square face crop the ingest would cut from a video frame of it.

`face_crop` runs the ingest's own code on one image: the frame scaled by libswscale (PyAV) to
`detect_size` pixels on its longer side, as the builder's detection pass does; the
`faces.DETECTORS` detector with the build's `min_face` (a cascade's scale ladder starts at the
smallest face, so the same search gives the same box); `faces.merge_overlapping` (one face
found at two scales is one box); then `faces.crop_window` (side = face size (1 + 2 margin),
centre `shift` face sizes below the box centre) and `faces.crop` (area resampling, edge
pixels repeated outside the image). Without a track there is no smoothing: the box is the
detection's. So a photo crop is framed like a training crop of the same face in a video.
Where that search finds nothing, it is run again down to the detector's smallest window (a
photo may frame the face smaller than a video frame the ingest keeps), so a small face is
reported as small rather than missing.

Which face (the ingest tracker's rule, `faces.track`): the largest. Other faces are ignored
when smaller than `second_face_ratio` (0.6) of it or overlapping it (background people, a
cascade's false detections); a face at least that large away from it is a second person, and
the photo is refused (the tracker cuts a track there too) rather than guessed.

Smallest face: `min_face x detect_size` pixels of the photo (0.15 x 320 = 48 px), the smallest
face the ingest keeps in a frame at its detection size. A smaller face is refused; a face
smaller than R / (1 + 2 margin) (75 px at R = 128) is upsampled into the crop, as small video
faces are.
"""
import dataclasses
import functools
import os
from typing import Any, Mapping, Union

import av
import cv2
import numpy as np

from gcm_jax.data.video_folder import faces

CASCADE_MIN_PX = 24  # The smallest window faces.py's cascades search (detector pixels).

@dataclasses.dataclass(frozen=True)
class CropSettings:
  """The build settings that frame a crop: the fields of `builder.Settings` of the same names
  and defaults (a test keeps them equal), so `CropSettings()` frames like a default build."""
  detector: str = "lbp"           # faces.DETECTORS
  detector_model: str = ""        # weights file of the detector, if it takes one
  detect_size: int = 320          # longer side of the image the detector sees
  min_face: float = 0.15          # the ingest's smallest face, fraction of the shorter side
  margin: float = 0.35            # crop side = face size (1 + 2 margin)
  shift: float = 0.1              # crop centre below the face centre, in face sizes
  second_face_ratio: float = 0.6  # another face this large (vs the largest) is a second person

  @classmethod
  def from_build(cls, settings: Union[Mapping[str, Any], Any]) -> "CropSettings":
    """From a build's settings: its staging/settings.json (a dict) or a `builder.Settings`
    (a model trained on a build should see reference crops framed like its clips)."""
    if isinstance(settings, Mapping):
      values = {f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings}
    else:
      values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)
                if hasattr(settings, f.name)}
    return cls(**values)

  @property
  def min_face_px(self) -> int:
    """The smallest face of a reference photo, in its pixels: min_face x detect_size."""
    return int(round(self.min_face * self.detect_size))


@functools.lru_cache(maxsize=8)
def _detector(name: str, model_path: str, min_face: float) -> faces.Detector:
  return faces.make_detector(name, model_path or None, min_face)


def detection_frame(image: np.ndarray, detect_size: int) -> tuple[np.ndarray, float]:
  """(uint8 [h, w, 3] the image as the detector sees it, source pixels per detector pixel):
  scaled by libswscale to `detect_size` on the longer side (never enlarged), even sides, as
  the builder's detection pass scales video frames."""
  h, w = image.shape[:2]
  scale = max(1.0, max(w, h) / detect_size)
  width = max(2, int(round(w / scale / 2)) * 2)
  height = max(2, int(round(h / scale / 2)) * 2)
  frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
  small = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
  return small, w / width


def find_face(image: np.ndarray, settings: CropSettings = CropSettings()) -> faces.Detection:
  """The photo's face (box in image pixels), chosen and checked as the module docstring says.

  Raises:
    ValueError: no face, a second face, or a face below `settings.min_face_px`.
  """
  h, w = image.shape[:2]
  small, scale = detection_frame(image, settings.detect_size)
  # The ingest's detector with its min_face: the same search (a cascade's scale ladder starts
  # at the smallest face), so the same box as on a video frame of this size.
  found = _detector(settings.detector, settings.detector_model, settings.min_face)(small)
  if not found:  # A face framed smaller than the ingest keeps? Down to the smallest window.
    found = _detector(settings.detector, settings.detector_model, 0.0)(small)
  found = faces.merge_overlapping(found, faces.TrackConfig().merge_iou)
  if not found:
    floor = (f", where it finds faces of {CASCADE_MIN_PX} px or more ({CASCADE_MIN_PX * scale:.0f}"
             f" px of the image)" if settings.detector in ("lbp", "haar") else "")
    raise ValueError(
        f"no face found in the {w}x{h} image by the {settings.detector!r} detector (searched at "
        f"{small.shape[1]}x{small.shape[0]}{floor}): use a photo with one clear, frontal face")
  found = sorted((faces.Detection(d.box * scale, None if d.landmarks is None
                                  else d.landmarks * scale, d.score) for d in found),
                 key=lambda d: d.size, reverse=True)
  face = found[0]
  others = [d for d in found[1:]
            if d.size >= settings.second_face_ratio * face.size
            and np.linalg.norm(d.center - face.center) > 0.5 * face.size]  # faces._second_face
  if others:
    sizes = ", ".join(f"{d.size:.0f}" for d in [face] + others)
    raise ValueError(
        f"{1 + len(others)} faces found in the {w}x{h} image (sizes {sizes} px): a reference "
        f"photo must show one person; crop it to the face to use (faces under "
        f"{settings.second_face_ratio:g} of the largest one's size are ignored)")
  if face.size < settings.min_face_px:
    raise ValueError(
        f"the face is {face.size:.0f} px in the {w}x{h} image, below the "
        f"{settings.min_face_px} px minimum of a reference photo (the ingest's smallest face: "
        f"min_face {settings.min_face:g} of its {settings.detect_size}-px detection frame): "
        f"use a larger photo or one closer to the face")
  return face


def face_crop(image: np.ndarray, resolution: int, settings: CropSettings = CropSettings()
              ) -> tuple[np.ndarray, np.ndarray]:
  """The face crop of a reference photo, framed as the ingest frames video crops.

  Args:
    image: uint8 [H, W, 3] RGB (`read_image`).
    resolution: R, the model's `config.data.resolution`.
    settings: the build's framing (`CropSettings.from_build`); default: a default build's.

  Returns:
    (uint8 [R, R, 3] the crop, float32 [4] its square (x0, y0, x1, y1) in image pixels: the
    convention of the ingest's `crop_box`, and what `paste.paste_back` takes).

  Raises:
    ValueError: a bad image, no face, several faces, a face too small (`find_face`).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
  face = find_face(image, settings)
  window = faces.crop_window(np.array([[*face.center, face.size]]), settings.margin,
                             settings.shift)[0]
  return faces.crop(image, window, resolution), window.astype(np.float32)


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, 3] RGB of an image file (any format OpenCV decodes: PNG, JPEG, WebP, BMP,
  TIFF, ...; EXIF orientation applied, alpha dropped, grey and 16-bit made 8-bit RGB).

  Raises:
    FileNotFoundError: no such file.
    ValueError: a folder, an empty file, not an image, or a damaged / truncated one.
  """
  if os.path.isdir(path):
    raise ValueError(f"{path} is a folder, not an image file")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no such image file: {path}")
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    raise ValueError(f"empty file (0 bytes): {path}")
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if bgr is None:
    if cv2.haveImageReader(path):
      raise ValueError(f"a damaged or truncated image that OpenCV cannot decode: {path} "
                       f"({len(data)} bytes)")
    raise ValueError(f"not an image format OpenCV reads: {path} ({len(data)} bytes, starting "
                     f"{data[:16]!r})")
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
