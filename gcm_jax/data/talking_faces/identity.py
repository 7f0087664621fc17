"""The person of a talking-faces clip, for identity conditioning: reference frames and the
dubbing mask.

A clip's person is what its renderer drew that the audio does not decide: the face and
background colors, the head's size and its path. `reference_frames` draws that person again
at other times of the same head path (the clip's motion, continued before and after it), with
its mouth at random openings and eyes open: the same person, never the clip's own frames or
mouth (as LatentSync draws its reference from another segment of the same video).
`source_mask` is the area dubbing regenerates: a box over the lower face from between nose
and mouth to the chin, the same size whatever the mouth does, so its shape says nothing of
the mouth.
"""
import zlib

import numpy as np

from gcm_jax.data import contract
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import renderer
from gcm_jax.data.talking_faces import visemes

# The mask box, in head radii from the head centre: x within +-MASK_HALF_WIDTH hrx, y from
# MASK_TOP hry (below the nose at 0.12, above the widest-open mouth's top at ~0.22) to
# MASK_BOTTOM hry (the chin is at 1).
MASK_HALF_WIDTH, MASK_TOP, MASK_BOTTOM = 0.75, 0.17, 1.05
_HRX_PER_HRY = 0.27 / 0.35  # The renderer's head ellipse.


def _attributes(record: contract.Record) -> captions.Attributes:
  return captions.Attributes(captions.COLOR_NAMES[int(record["face_color"])],
                             captions.COLOR_NAMES[int(record["background_color"])],
                             captions.MOTIONS[int(record["motion"])])


def _record_seed(record: contract.Record) -> int:
  """A seed that is the same every time this record is read (so runs resume exactly)."""
  return zlib.crc32(np.ascontiguousarray(record["keypoints"], np.float32).tobytes())


def reference_frames(record: contract.Record, num_frames: int, resolution: int) -> np.ndarray:
  """uint8 `[K, R, R, 3]`: the clip's person at K other times of its head path.

  The path is `renderer.head_centers` of the clip's motion over three clip lengths (the clip
  is the middle one); the reference times are drawn outside the clip's own third, the mouth
  openness uniform in [0, 0.7] and its width in [-0.3, 0.3].
  """
  keypoints = np.asarray(record["keypoints"], np.float32)
  length = len(keypoints)
  attributes = _attributes(record)
  center, scale = renderer.head_geometry(keypoints)
  path = renderer.head_centers(attributes.motion, 3 * length)
  path += center.mean(0) - path[length:2 * length].mean(0)  # The clip's own segment.
  rng = np.random.default_rng(_record_seed(record))
  outside = np.concatenate([np.arange(length), np.arange(2 * length, 3 * length)])
  times = rng.choice(outside, num_frames, replace=len(outside) < num_frames)
  track = visemes.MouthTrack(np.zeros(num_frames, np.int32),
                             rng.uniform(0, 0.7, num_frames).astype(np.float32),
                             rng.uniform(-0.3, 0.3, num_frames).astype(np.float32))
  video, _ = renderer.draw(attributes, path[times], float(scale.mean()), track,
                           np.ones(num_frames, np.float32), resolution)
  return video


def source_mask(record: contract.Record, resolution: int) -> np.ndarray:
  """bool `[T, R, R]`: per frame, the lower-face box that dubbing regenerates."""
  center, scale = renderer.head_geometry(np.asarray(record["keypoints"], np.float32))
  hry = 0.35 * scale[:, None]
  hrx = _HRX_PER_HRY * hry
  coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
  cx, cy = center[:, :1], center[:, 1:]
  rows = (coords >= cy + MASK_TOP * hry) & (coords <= cy + MASK_BOTTOM * hry)
  cols = np.abs(coords - cx) <= MASK_HALF_WIDTH * hrx
  return rows[:, :, None] & cols[:, None, :]
