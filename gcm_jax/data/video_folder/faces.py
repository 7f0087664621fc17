"""Face detection, tracking, box smoothing and square crops.

A detector maps an RGB frame uint8 `[H, W, 3]` to `Detection`s; `DETECTORS` names the
available ones (`make_detector(name, model_path)`):

* `lbp` (default): OpenCV's LBP frontal-face cascade (`lbpcascade_frontalface_opencv.xml`),
  shipped inside the scikit-image wheel and run by `skimage.feature.Cascade`. Needs nothing
  beyond the wheels, so it works offline; no landmarks. (opencv-python-headless 5.x dropped
  `cv2.CascadeClassifier` and its Haar files, so the cascade in scikit-image is the one
  that ships everywhere.)
* `haar`: OpenCV's Haar cascade (`cv2.CascadeClassifier`), where the installed OpenCV has it
  (4.x); `model_path` may name another cascade XML. No landmarks.
* `yunet`: OpenCV's YuNet CNN (`cv2.FaceDetectorYN`) from a user-supplied ONNX file
  (`model_path`, e.g. face_detection_yunet_2023mar.onnx); more accurate on profile and
  small faces, and gives 5 landmarks (eyes, nose tip, mouth corners).

`track` follows one face through the detections of a video and returns `Track`s: runs of
frames with one consistent face and smoothed boxes, cut where the face is lost, a second
large face appears or the scene cuts. Overlapping detections of one face (a cascade finds
it at two scales) are first merged into one box (`merge_overlapping`).
"""
import dataclasses
from typing import Callable, Optional, Sequence

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Detection:
  """A face: `box` float [4] (x0, y0, x1, y1) in pixels of the detector's input, and where the
  detector gives them `landmarks` float [5, 2] (x, y): right eye, left eye, nose tip, right
  and left mouth corner (YuNet's order)."""
  box: np.ndarray
  landmarks: Optional[np.ndarray] = None
  score: float = 1.0  # The detector's confidence where it gives one (YuNet), else 1.

  @property
  def center(self) -> np.ndarray:
    return 0.5 * (self.box[:2] + self.box[2:])

  @property
  def size(self) -> float:
    return float(np.sqrt((self.box[2] - self.box[0]) * (self.box[3] - self.box[1])))


Detector = Callable[[np.ndarray], list[Detection]]


def _lbp(model_path: Optional[str], min_face: float) -> Detector:
  import skimage.data  # pylint: disable=g-import-not-at-top  # Heavy; only where used.
  import skimage.feature  # pylint: disable=g-import-not-at-top
  cascade = skimage.feature.Cascade(model_path or skimage.data.lbp_frontal_face_cascade_filename())

  def detect(rgb: np.ndarray) -> list[Detection]:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    smallest = max(24, int(min_face * min(gray.shape)))
    found = cascade.detect_multi_scale(img=gray, scale_factor=1.2, step_ratio=1,
                                       min_size=(smallest, smallest), max_size=gray.shape,
                                       min_neighbor_number=3)
    return [Detection(np.array([d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]],
                               np.float32)) for d in found]
  return detect


def _haar(model_path: Optional[str], min_face: float) -> Detector:
  if not hasattr(cv2, "CascadeClassifier"):
    raise ValueError(f"detector 'haar' needs cv2.CascadeClassifier, which OpenCV "
                     f"{cv2.__version__} lacks (it is in opencv-python-headless 4.x); use 'lbp'")
  cascade = cv2.CascadeClassifier(
      model_path or cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

  def detect(rgb: np.ndarray) -> list[Detection]:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    smallest = max(24, int(min_face * min(gray.shape)))
    found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(smallest, smallest))
    return [Detection(np.array([x, y, x + w, y + h], np.float32)) for x, y, w, h in found]
  return detect


def _yunet(model_path: Optional[str], min_face: float) -> Detector:
  if not model_path:
    raise ValueError("detector 'yunet' needs --detector_model=PATH.onnx (OpenCV's YuNet)")
  model = cv2.FaceDetectorYN.create(model_path, "", (320, 320), 0.7)

  def detect(rgb: np.ndarray) -> list[Detection]:
    h, w = rgb.shape[:2]
    model.setInputSize((w, h))
    _, found = model.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = []
    for row in (found if found is not None else []):
      x, y, bw, bh = row[:4]
      if min(bw, bh) >= min_face * min(h, w):
        out.append(Detection(np.array([x, y, x + bw, y + bh], np.float32),
                             np.asarray(row[4:14], np.float32).reshape(5, 2), float(row[14])))
    return out
  return detect


# name -> factory(model_path or None, smallest face as a fraction of the shorter side).
DETECTORS: dict[str, Callable[[Optional[str], float], Detector]] = {
    "lbp": _lbp, "haar": _haar, "yunet": _yunet}


def make_detector(name: str, model_path: Optional[str] = None, min_face: float = 0.1
                  ) -> Detector:
  """The detector `name` of DETECTORS (`model_path`: its weights, if it takes a file)."""
  if name not in DETECTORS:
    raise ValueError(f"unknown detector {name!r}; expected one of {tuple(DETECTORS)}")
  return DETECTORS[name](model_path, min_face)


@dataclasses.dataclass(frozen=True)
class TrackConfig:
  """How detections become tracks (sizes are in face-box sizes, times in 25 fps frames)."""
  merge_iou: float = 0.4           # detections overlapping this much are one face (> 1: off)
  max_missed: int = 1              # consecutive detection frames without the face bridged
  max_jump: float = 0.5            # largest centre move between two detections
  max_scale_change: float = 1.4    # largest size ratio between two detections
  second_face_ratio: float = 0.6   # another face at least this large (vs the tracked) ...
  second_face_hits: int = 2        # ... in this many consecutive detections cuts
  smooth_sigma: float = 2.0        # Gaussian smoothing of centre and size over time


@dataclasses.dataclass
class Track:
  """Frames `[start, end)` with one face; `boxes` float [end - start, 3]: centre x, y and
  size in source pixels, smoothed; `landmarks` float [end - start, 5, 2] or None."""
  start: int
  end: int
  boxes: np.ndarray
  landmarks: Optional[np.ndarray] = None


def iou(a: np.ndarray, b: np.ndarray) -> float:
  """Intersection over union of two boxes (x0, y0, x1, y1)."""
  w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
  h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
  union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - w * h
  return w * h / union if union > 0 else 0.0


def merge_overlapping(detections: Sequence[Detection], min_iou: float) -> list[Detection]:
  """One detection per face: the detections overlapping the most confident remaining one by
  IoU >= `min_iou` (one face found at two scales or offsets, which cascades do) become their
  score-weighted mean box (and landmarks, where all have them), scored by the best."""
  left = sorted(detections, key=lambda d: (d.score, d.size), reverse=True)
  merged = []
  while left:
    group = [left[0]] + [d for d in left[1:] if iou(left[0].box, d.box) >= min_iou]
    left = [d for d in left[1:] if not any(d is g for g in group)]
    if len(group) == 1:
      merged.append(group[0])
      continue
    weights = np.array([max(d.score, 1e-6) for d in group])
    weights /= weights.sum()
    box = np.einsum("n,nc->c", weights, np.stack([d.box for d in group]))
    landmarks = None
    if all(d.landmarks is not None for d in group):
      landmarks = np.einsum("n,nkc->kc", weights, np.stack([d.landmarks for d in group]))
    merged.append(Detection(box.astype(np.float32), landmarks, group[0].score))
  return merged


def _matches(a: Detection, b: Detection, config: TrackConfig) -> bool:
  ratio = max(a.size, b.size) / max(min(a.size, b.size), 1e-6)
  jump = np.linalg.norm(a.center - b.center) / max(a.size, b.size)
  return ratio <= config.max_scale_change and jump <= config.max_jump


def _second_face(chosen: Detection, others: Sequence[Detection], config: TrackConfig) -> bool:
  return any(d is not chosen and d.size >= config.second_face_ratio * chosen.size
             and np.linalg.norm(d.center - chosen.center) > 0.5 * chosen.size for d in others)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian smoothing of x [N, C] along N, with edge padding."""
  if sigma <= 0:
    return x
  radius = int(3 * sigma)
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  k /= k.sum()
  padded = np.pad(x, [(radius, radius), (0, 0)], mode="edge")
  return np.stack([np.convolve(padded[:, i], k, mode="valid") for i in range(x.shape[1])],
                  axis=1)


def _make_track(run: list[tuple[int, Detection]], end: int, scale: float,
                config: TrackConfig) -> Track:
  frames = np.array([f for f, _ in run])
  keys = np.array([[*d.center, d.size] for _, d in run]) * scale
  t = np.arange(frames[0], end)
  boxes = np.stack([np.interp(t, frames, keys[:, i]) for i in range(3)], axis=1)
  landmarks = None
  if all(d.landmarks is not None for _, d in run):
    points = np.stack([d.landmarks for _, d in run]).reshape(len(run), 10) * scale
    landmarks = np.stack([np.interp(t, frames, points[:, i]) for i in range(10)], axis=1)
    landmarks = _smooth(landmarks, config.smooth_sigma).reshape(-1, 5, 2)
  return Track(int(frames[0]), end, _smooth(boxes, config.smooth_sigma), landmarks)


def track(detections: dict[int, list[Detection]], cuts: np.ndarray,
          scale: float = 1.0, config: TrackConfig = TrackConfig()
          ) -> tuple[list[Track], dict[str, int]]:
  """One face through the detections of a video.

  Args:
    detections: {frame: faces} for the frames the detector ran on.
    cuts: bool [frames in the video]; True where a new shot starts (the detector must have
      run there).
    scale: source pixels per detector pixel.

  Returns:
    the tracks (each spans its first to last detection), and counts of what ended tracks:
    'face_lost', 'second_face' (another face at least `second_face_ratio` as large, away
    from the tracked one, in `second_face_hits` consecutive detections: counted once per
    such stretch, also where it leaves no track, e.g. two people in view throughout),
    'scene_cut'; and 'spurious': faces found in one detection and never again (false
    detections), which make no track.
  """
  tracks, ends = [], {"face_lost": 0, "second_face": 0, "scene_cut": 0, "spurious": 0}
  run: list[tuple[int, Detection]] = []
  missed = second = 0

  def close(reason: Optional[str]):
    nonlocal run, missed
    if reason == "face_lost" and len(run) == 1:
      ends["spurious"] += 1
    elif run:
      tracks.append(_make_track(run, run[-1][0] + 1, scale, config))
      if reason:
        ends[reason] += 1
    run, missed = [], 0

  for f in sorted(detections):
    if run and cuts[run[-1][0] + 1:f + 1].any():
      close("scene_cut")
    faces = merge_overlapping(detections[f], config.merge_iou)
    if run:
      candidates = [d for d in faces if _matches(run[-1][1], d, config)]
    else:
      candidates = list(faces)
    if not candidates:
      missed += 1
      if run and missed > config.max_missed:
        close("face_lost")
      continue
    chosen = max(candidates, key=lambda d: d.size)
    second = second + 1 if _second_face(chosen, faces, config) else 0
    if second >= config.second_face_hits:  # Not a passing false detection: cut before it.
      if second == config.second_face_hits:  # Counted once per stretch with a second face.
        del run[len(run) - (config.second_face_hits - 1):]
        ends["second_face"] += 1
      close(None)
      continue
    run.append((f, chosen))
    missed = 0
  close(None)
  return tracks, ends


def crop_window(boxes: np.ndarray, margin: float, shift: float) -> np.ndarray:
  """Square crops float [N, 4] (x0, y0, x1, y1) in source pixels for boxes [N, 3] (centre x,
  y, size): side = size (1 + 2 margin), centre moved down by `shift` sizes (the chin)."""
  side = boxes[:, 2] * (1 + 2 * margin)
  cx, cy = boxes[:, 0], boxes[:, 1] + shift * boxes[:, 2]
  return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def crop(frame: np.ndarray, window: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 [R, R, 3]: the square `window` (x0, y0, x1, y1) of `frame` [H, W, 3], resampled
  with area averaging (edge pixels repeat outside the frame)."""
  x0, y0, x1, y1 = np.round(window).astype(int)
  h, w = frame.shape[:2]
  pad = max(0, -x0, -y0, x1 - w, y1 - h)
  if pad:
    frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
  patch = frame[y0:y1, x0:x1]
  interpolation = cv2.INTER_AREA if patch.shape[0] >= resolution else cv2.INTER_LINEAR
  return cv2.resize(patch, (resolution, resolution), interpolation=interpolation)


def mouth_boxes(windows: np.ndarray, landmarks: Optional[np.ndarray]) -> np.ndarray:
  """float [N, 4] (x0, y0, x1, y1) in [0, 1] of the crop: the mouth region of each frame.

  From the mouth-corner landmarks where the detector gives them (the corners widened by half
  the mouth width, from 0.5 width above to 0.7 width below), else the documented fallback:
  the lower half of the crop (Wav2Lip's SyncNet input).
  """
  n = len(windows)
  if landmarks is None:
    return np.tile(np.array([0.0, 0.5, 1.0, 1.0], np.float32), (n, 1))
  side = (windows[:, 2] - windows[:, 0])[:, None]
  corners = (landmarks[:, 3:5] - windows[:, None, :2]) / side[:, None]  # [N, 2, 2]
  width = np.abs(corners[:, 0, 0] - corners[:, 1, 0])
  cx, cy = corners[..., 0].mean(1), corners[..., 1].mean(1)
  box = np.stack([cx - width, cy - 0.5 * width, cx + width, cy + 0.7 * width], axis=1)
  return np.clip(box, 0.0, 1.0).astype(np.float32)


def mouth_region(mouth_boxes: np.ndarray, resolution: int) -> np.ndarray:
  """bool [..., R, R]: the pixels whose centres lie inside the mouth boxes [..., 4] (x0, y0, x1,
  y1 in [0, 1] of the crop; `mouth_boxes`), the batch feature of the mouth-weighted loss."""
  boxes = np.asarray(mouth_boxes, np.float32)
  centers = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
  inside_x = (centers >= boxes[..., 0, None]) & (centers <= boxes[..., 2, None])  # [..., R]
  inside_y = (centers >= boxes[..., 1, None]) & (centers <= boxes[..., 3, None])
  return inside_y[..., :, None] & inside_x[..., None, :]
