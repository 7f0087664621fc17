"""A talking face's parts read from one frame alone: is there a head shaped like a head, with
two eyes and the mouth where a mouth goes? (`face_parts`, the `contract.GroundTruth.
face_structure` hook of the synthetic faces).

Nothing here reads the clip's keypoints or caption: the head is located from the frame's own
pixels, so a generated frame is judged by what it drew. The renderer (`renderer.draw`) paints
an elliptic head in a flat colour on a background (a +-6% vertical shade), two eyes (a white
ellipse with a dark pupil, 38% of the head's half-width either side of its axis and 25% of its
half-height above its centre; blinks close them for 2 frames in 4), and the mouth's interior
at 52% of the head's half-height below its centre.

  head mask   the largest connected region of pixels farther than HEAD_TOLERANCE from the
              background colour (the median of the `ground_truth.BACKGROUND_BORDER`-pixel
              image border), holes filled: the head with its eyes and mouth.
  ellipse     the head mask's moment ellipse: the ellipse with the mask's centroid and second
              moments (a filled ellipse is its own; semi-axes 2 sqrt(eigenvalues)).
  outline     IoU of the head mask with its moment ellipse: ~1 for an elliptic head, 0.83 for
              a square one (its moment circle has radius side / sqrt 3), lower for ragged blobs.
  eyes        in each eye window (the head's upper half, one side of its axis, in units of
              the ellipse's semi-axes: -0.7 < dy < 0, 0 < +-dx < 0.9), an eye white (a pixel
              closer to white than the face colour by WHITE_GAIN, or within NEAR_WHITE of
              white where the face itself is near white) with a pixel at least EYE_CONTRAST
              darker within R / 32 pixels, both away from the head's edge: both windows ->
              the eyes are present. The darker pixel is the pupil, or on a face darker than
              the white the face around it: at 32 px the renderer's pupil (1.4 px wide,
              anti-aliased) is not always darker than a green or brown face, so it is not
              required; the white is, except on a white face, where the pupil is the eye.
  mouth       the largest blob of mouth-interior pixels (`ground_truth.mouth_pixels`' colour
              test; at least MIN_MOUTH_PIXELS at 32 px, else no visible mouth: NaN): placed
              when its centroid lies in the lower half of the ellipse shrunk to MOUTH_INSIDE.

Calibration (16 test clips x 16 frames; generated: the quick start's 1000-step model at
32 px, whose heads have no eyes; tests/test_face_parts.py builds each case on the renderer):

  read-out                        ground truth 32 px / 64 px          generated 32 px
  eye contrast, worse eye         5th pct 0.57 / 1.78, median 1.03     median 0, 95th pct 0.17
  eyes present                    96-99% / 99% (the rest: blinks)      0%
  outline IoU                     mean 0.995 / 0.998, min 0.975        mean 0.90, min 0.68
  mouth placed (visible mouths)   100% / 100%                          98%

Renderer eyes at openness 1 / 0.7 (every face colour, head scale 0.9 and 1.05) read >= 0.66 /
>= 0.48 at 32 px and >= 1.78 / >= 1.69 at 64 px; mid-blink (openness 0.05) <= 0.14 / <= 0.27.
EYE_CONTRAST = 0.4 lies between them and above the generated eyes' 95th percentile.
"""
import numpy as np
from scipy import ndimage

from gcm_jax.data.talking_faces import ground_truth

HEAD_TOLERANCE = 0.3   # L2 RGB distance in [-1, 1] units from the background colour (~38/255)
MIN_HEAD_PIXELS = 10   # a smaller foreground is no head
WHITE_GAIN = 0.3       # an eye white is this much closer to white than the face colour ...
NEAR_WHITE = 0.25      # ... or, on a near-white face, within this of white
EYE_CONTRAST = 0.4     # the pupil's luminance below the eye white's (mean RGB, [-1, 1] units)
MOUTH_INSIDE = 0.9     # the mouth lies inside the head's moment ellipse shrunk to this
MIN_MOUTH_PIXELS = 3   # at 32 px; a smaller mouth-coloured blob is no visible mouth


def largest_region(mask: np.ndarray) -> np.ndarray:
  """bool `[R, R]`: the largest connected region of `mask` `[R, R]` (all False if none)."""
  labels, count = ndimage.label(mask)
  if count == 0:
    return np.zeros(mask.shape, bool)
  sizes = ndimage.sum(mask, labels, np.arange(1, count + 1))
  return labels == 1 + int(np.argmax(sizes))


def head_mask(frame: np.ndarray) -> np.ndarray:
  """bool `[R, R]`: the head of `frame` `[R, R, 3]` in [-1, 1] (module docstring): the
  largest connected region unlike the border's colour, holes filled (all False if none)."""
  border = ground_truth.border_mask(frame.shape[0])
  background = np.median(frame[border], axis=0)
  foreground = np.linalg.norm(frame - background, axis=-1) > HEAD_TOLERANCE
  return ndimage.binary_fill_holes(largest_region(foreground))


def mouth_blob(frame: np.ndarray) -> np.ndarray:
  """bool `[R, R]`: the largest connected region of mouth-interior pixels of `frame`
  (`ground_truth.mouth_pixels`), if it has at least MIN_MOUTH_PIXELS x (R / 32)^2 pixels;
  else none (a closed mouth, or a pupil's anti-aliased edge, which can match the colour)."""
  blob = largest_region(ground_truth.mouth_pixels(frame))
  if blob.sum() < MIN_MOUTH_PIXELS * (frame.shape[0] / 32) ** 2:
    return np.zeros_like(blob)
  return blob


def moment_ellipse(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The moment ellipse of `mask` `[R, R]`: (centre `[2]` (x, y) in pixels, covariance
  `[2, 2]` of its pixel centres). A filled ellipse's semi-axes are 2 sqrt(eigenvalues)."""
  points = np.stack(np.nonzero(mask)[::-1], -1) + 0.5
  return points.mean(0), np.cov(points.T, bias=True)


def ellipse_radius2(centre: np.ndarray, covariance: np.ndarray, size: int) -> np.ndarray:
  """`[R, R]`: every pixel centre's squared normalized radius in the moment ellipse
  (`(p - c)^T (4 covariance)^-1 (p - c)`, <= 1 inside)."""
  grid = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="xy"), -1)
  offset = grid - centre
  return np.einsum("hwi,ij,hwj->hw", offset, np.linalg.inv(4 * covariance), offset)


def _eye_contrast(frame: np.ndarray, head: np.ndarray, centre: np.ndarray,
                  semi_axes: np.ndarray) -> float:
  """The worse eye's contrast (module docstring): per eye window, the largest luminance drop
  from a whitish pixel to the darkest pixel within R / 32 pixels of it, both at least
  R / 32 + 1 pixels inside the head (not the head's edge); 0 if none."""
  r = frame.shape[0]
  ys, xs = np.mgrid[0:r, 0:r] + 0.5
  dx, dy = (xs - centre[0]) / semi_axes[0], (ys - centre[1]) / semi_axes[1]
  face = np.median(frame[head], axis=0)
  face_to_white = np.linalg.norm(face - 1.0)
  whitish = np.linalg.norm(frame - 1.0, axis=-1) < max(face_to_white - WHITE_GAIN, NEAR_WHITE)
  luminance = frame.mean(-1)
  reach = max(1, r // 32)
  # The white and the pupil lie inside the head, away from its edge (whose blend with the
  # background could be either).
  inner = ndimage.binary_erosion(head, iterations=reach + 1)
  darkest = ndimage.minimum_filter(np.where(inner, luminance, np.inf), size=2 * reach + 1)
  drop = np.where(np.isfinite(darkest), luminance - darkest, 0.0)
  contrasts = []
  for side in (-1.0, 1.0):
    window = inner & whitish & (dy > -0.7) & (dy < 0.0) & (side * dx > 0.0) & (side * dx < 0.9)
    contrasts.append(float(drop[window].max()) if window.any() else 0.0)
  return min(contrasts)


def frame_parts(frame: np.ndarray) -> dict[str, float]:
  """One frame `[R, R, 3]` in [-1, 1]: {'head': 1. if a head was found, 'outline_iou',
  'eye_contrast' (the worse eye's), 'mouth_placed' (1. if the mouth blob's centroid is in the
  lower half of the head, 0. if not, NaN without a visible mouth)}. Without a head (fewer
  than MIN_HEAD_PIXELS, or all on one line) all are 0 (the mouth NaN without a mouth)."""
  head = head_mask(frame)
  mouth = mouth_blob(frame)
  no_head = {"head": 0.0, "outline_iou": 0.0, "eye_contrast": 0.0,
             "mouth_placed": 0.0 if mouth.any() else float("nan")}
  if head.sum() < MIN_HEAD_PIXELS:
    return no_head
  centre, covariance = moment_ellipse(head)
  if np.linalg.det(covariance) <= 1e-9:
    return no_head
  radius2 = ellipse_radius2(centre, covariance, frame.shape[0])
  ellipse = radius2 <= 1.0
  lower = (radius2 <= MOUTH_INSIDE ** 2) & (np.arange(frame.shape[0])[:, None] + 0.5 > centre[1])
  return {"head": 1.0,
          "outline_iou": float(np.sum(head & ellipse) / np.sum(head | ellipse)),
          "eye_contrast": _eye_contrast(frame, head, centre, 2 * np.sqrt(np.diag(covariance))),
          "mouth_placed": _placed(mouth, lower)}


def _placed(mouth: np.ndarray, lower: np.ndarray) -> float:
  """1. if the mouth blob's centroid pixel is in `lower`, 0. if not, NaN without a mouth."""
  if not mouth.any():
    return float("nan")
  y, x = np.mean(np.nonzero(mouth), axis=1).astype(int)
  return float(lower[y, x])


def face_parts(videos: np.ndarray) -> dict[str, np.ndarray]:
  """Per frame of videos `[N, T, R, R, 3]` in [-1, 1] (`contract.GroundTruth.face_structure`):
  float `[N, T]` each of 'head', 'outline_iou', 'eye_contrast' (`frame_parts`) and bool
  `[N, T]` 'eyes' (eye contrast >= EYE_CONTRAST), and float `[N, T]` 'mouth_placed' (NaN
  where no mouth is visible)."""
  videos = np.asarray(videos, np.float32)
  if videos.ndim != 5 or videos.shape[-1] != 3:
    raise ValueError(f"videos must be [N, T, R, R, 3], got {videos.shape}")
  parts = [frame_parts(frame) for frame in videos.reshape((-1,) + videos.shape[2:])]
  out = {key: np.array([p[key] for p in parts]).reshape(videos.shape[:2]) for key in parts[0]}
  out["eyes"] = out["eye_contrast"] >= EYE_CONTRAST
  return out
