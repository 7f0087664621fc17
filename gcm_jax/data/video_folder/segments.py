"""Scene cuts and the cutting of face tracks into fixed-length clips."""
import cv2
import numpy as np

THUMBNAIL = 32  # Side of the grey thumbnails compared for scene cuts.


def thumbnail(rgb: np.ndarray) -> np.ndarray:
  """float32 [32, 32] grey thumbnail (0..255) of an RGB frame uint8 [H, W, 3]."""
  gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
  return cv2.resize(gray, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA
                    ).astype(np.float32)


def is_cut(previous: np.ndarray, current: np.ndarray, threshold: float) -> bool:
  """A new shot starts at `current` when the mean absolute difference of the two thumbnails
  (after removing the change of mean brightness, so a fade or flash alone is no cut)
  exceeds `threshold` grey levels."""
  diff = (current - current.mean()) - (previous - previous.mean())
  return float(np.mean(np.abs(diff))) > threshold


def clip_starts(start: int, end: int, num_frames: int, stride: int) -> list[int]:
  """First frames of the clips of `num_frames` frames, `stride` apart, inside [start, end)."""
  return list(range(start, end - num_frames + 1, stride))
