"""Procedural face renderer: head, eyes with blinks, nose, mouth shaped by the viseme track.

Everything is drawn with anti-aliased ellipses (coverage from an approximate signed
distance), vectorized over frames. Coordinates are normalized image coordinates in [0, 1]
(x to the right, y down); keypoints use the same convention, `[..., (x, y)]`.
"""
import numpy as np

from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import visemes

KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right",
                  "mouth_top", "mouth_bottom", "chin")
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
RESOLUTIONS = (32, 64, 128)
MOTION_AMPLITUDE = 0.12  # Head center travels +-this (normalized units) over the clip.
BLINK_PROFILE = np.array([0.5, 0.05, 0.05, 0.5])  # Eye openness during a 4-frame blink.
_EYE_WHITE = np.array([250, 250, 250], np.float32)
_PUPIL = np.array([20, 20, 30], np.float32)
_MOUTH_INSIDE = np.array([50, 10, 20], np.float32)
_LIP_TINT = np.array([170, 30, 60], np.float32)


def _coverage(x, y, cx, cy, rx, ry, pixel):
  """Anti-aliased coverage `[T, H, W, 1]` of ellipses with per-frame `[T]` parameters.

  Signed distance ~ max(g / |grad g|, distance to the bounding box) for
  g = (dx / rx)^2 + (dy / ry)^2 - 1; ellipses thinner
  than a pixel are faded by their thickness instead of drawn as hairlines.
  """
  cx, cy, rx, ry = (np.asarray(a, np.float32)[:, None, None] for a in (cx, cy, rx, ry))
  rx = np.maximum(rx, 1e-4)
  ry = np.maximum(ry, 1e-4)
  dx, dy = (x - cx) / rx, (y - cy) / ry
  g = dx ** 2 + dy ** 2 - 1.0
  grad = 2.0 * np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) + 1e-6
  box = np.maximum(np.abs(x - cx) - rx, np.abs(y - cy) - ry)  # Also a distance lower bound.
  cov = np.clip(0.5 - np.maximum(g / grad, box) / pixel, 0.0, 1.0)
  cov = cov * np.minimum(1.0, 2.0 * np.minimum(rx, ry) / pixel)
  return cov[..., None]


def blink_track(num_frames: int, rng: np.random.Generator, fps: int = 25) -> np.ndarray:
  """Eye openness `[T]` in [0, 1]: blinks every 1.5-4 s, the first within 2 s."""
  eye = np.ones(num_frames, np.float32)
  t = int(rng.uniform(0, 2.0) * fps)
  while t < num_frames:
    n = min(len(BLINK_PROFILE), num_frames - t)
    eye[t:t + n] = BLINK_PROFILE[:n]
    t += int(rng.uniform(1.5, 4.0) * fps)
  return eye


def head_centers(motion: str, num_frames: int) -> np.ndarray:
  """Head center `[T, 2]`: moves linearly by +-MOTION_AMPLITUDE in the motion's direction."""
  direction = np.array(captions.MOTION_DIRECTIONS[motion], np.float32)
  progress = np.linspace(-1.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
  return 0.5 + MOTION_AMPLITUDE * progress[:, None].astype(np.float32) * direction


def render(attributes: captions.Attributes, track: visemes.MouthTrack, resolution: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Draws a talking face.

  Args:
    attributes: face/background colors and head motion.
    track: per-frame mouth state `[T]` (openness, width).
    resolution: output height = width, one of RESOLUTIONS.
    rng: randomness for head size and blink times.

  Returns:
    video uint8 `[T, R, R, 3]` and keypoints float32 `[T, NUM_KEYPOINTS, 2]` in [0, 1].
  """
  if resolution not in RESOLUTIONS:
    raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
  num_frames = len(track.openness)
  scale = rng.uniform(0.9, 1.05)
  return draw(attributes, head_centers(attributes.motion, num_frames), scale, track,
              blink_track(num_frames, rng), resolution)


def head_geometry(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The head centre `[T, 2]` and scale `[T]` that `draw` drew `keypoints` `[T, K, 2]` with
  (from the nose and the chin: nose_y = cy + 0.12 hry, chin_y = cy + hry, hry = 0.35 scale)."""
  nose, chin = keypoints[:, KEYPOINT_NAMES.index("nose")], keypoints[:, -1]
  hry = (chin[:, 1] - nose[:, 1]) / 0.88
  return np.stack([nose[:, 0], chin[:, 1] - hry], -1), hry / 0.35


def draw(attributes: captions.Attributes, center: np.ndarray, scale: float,
         track: visemes.MouthTrack, eye_open: np.ndarray, resolution: int
         ) -> tuple[np.ndarray, np.ndarray]:
  """Draws the face with head centres `center` `[T, 2]`, head `scale`, mouth `track` and eye
  openness `eye_open` `[T]` in [0, 1]; returns video uint8 `[T, R, R, 3]` and keypoints
  float32 `[T, NUM_KEYPOINTS, 2]`."""
  num_frames = len(track.openness)
  pixel = 1.0 / resolution
  coords = (np.arange(resolution, dtype=np.float32) + 0.5) * pixel
  y, x = coords[None, :, None], coords[None, None, :]
  cx, cy = center[:, 0], center[:, 1]
  hrx, hry = 0.27 * scale, 0.35 * scale
  ex, ey = 0.16 * hrx, 0.13 * hry * eye_open
  eye_l, eye_r, eye_y = cx - 0.38 * hrx, cx + 0.38 * hrx, cy - 0.25 * hry
  nose_y = cy + 0.12 * hry
  mouth_y = cy + 0.52 * hry
  mouth_w = 0.42 * hrx * (1.0 + 0.3 * track.width)
  mouth_h = 0.28 * hry * track.openness
  lip = max(0.02 * scale, 0.9 * pixel)

  face_rgb = captions.COLOR_RGB[attributes.face_color_id].astype(np.float32)
  bg_rgb = captions.COLOR_RGB[attributes.background_color_id].astype(np.float32)
  shade = 1.0 - 0.12 * (y - 0.5)[..., None]  # Gentle vertical gradient.
  img = np.broadcast_to(bg_rgb * shade, (num_frames, resolution, resolution, 3)).copy()

  def paint(color, cov):
    img[...] = img + cov * (color - img)

  ones = np.ones(num_frames, np.float32)
  paint(face_rgb, _coverage(x, y, cx, cy, hrx * ones, hry * ones, pixel))
  for ex_c in (eye_l, eye_r):
    paint(_EYE_WHITE, _coverage(x, y, ex_c, eye_y, ex * ones, ey, pixel))
    paint(_PUPIL, _coverage(x, y, ex_c, eye_y, 0.5 * ex * ones, np.minimum(ey, 0.5 * ex), pixel))
  paint(0.75 * face_rgb, _coverage(x, y, cx, nose_y, 0.07 * hrx * ones, 0.05 * hry * ones, pixel))
  paint(0.5 * face_rgb + 0.5 * _LIP_TINT,
        _coverage(x, y, cx, mouth_y, mouth_w + lip, mouth_h + lip, pixel))
  paint(_MOUTH_INSIDE, _coverage(x, y, cx, mouth_y, mouth_w, mouth_h, pixel))

  keypoints = np.stack([
      np.stack([eye_l, eye_y], -1),
      np.stack([eye_r, eye_y], -1),
      np.stack([cx, nose_y], -1),
      np.stack([cx - mouth_w, mouth_y], -1),
      np.stack([cx + mouth_w, mouth_y], -1),
      np.stack([cx, mouth_y - mouth_h], -1),
      np.stack([cx, mouth_y + mouth_h], -1),
      np.stack([cx, cy + hry], -1),
  ], axis=1).astype(np.float32)
  video = np.clip(np.round(img), 0, 255).astype(np.uint8)
  return video, keypoints
