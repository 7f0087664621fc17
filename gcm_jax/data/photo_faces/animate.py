"""A photograph animated into a talking clip: the face moved, scaled and tilted along a head
path, its mouth opened with the openness of espeak-ng speech (the talking-faces viseme track).

The one implementation behind the photo_faces source videos (`clips.py`) and the test videos
of `tests/video_fixtures.py` (the astronaut photograph).

* `Portrait`: where a face and its mouth are in its photo (photo pixels, x right, y down).
* `HeadPath`: where the face is in the frame at time t (centre, size, roll).
* `draw_mouth`: the mouth of openness o in [0, 1] drawn on the photo: a dark ellipse of
  half-axes (w, w (2 + 9 o) / 15), w = `Portrait.mouth_width`; with `lip_color` first a
  closed-lips ellipse over the photo's own mouth (a smile's teeth, an open mouth), feathered,
  so that o = 0 looks closed on any photo.
* `place`: the photo warped into the frame so that the face centre lands on the path's centre
  with the path's face size (edge pixels repeated outside the photo).
* `speech_take`: phrases spoken one after another by espeak-ng (16 kHz), with the phoneme and
  word times of the whole take and the per-frame mouth openness (`visemes.mouth_track`).
"""
import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np

from gcm_jax.data import audio as audio_lib
from gcm_jax.data.talking_faces import speech
from gcm_jax.data.talking_faces import visemes

MOUTH_COLOR = (70, 20, 30)  # RGB of the mouth's dark inside.
_SHIFT = 4                  # Fractional bits of cv2.ellipse's sub-pixel coordinates.


@dataclasses.dataclass(frozen=True)
class Portrait:
  """A face in a photo, in photo pixels.

  Attributes:
    face_center: (x, y) centre of the face box the default (`lbp`) detector finds.
    face_size: that box's side.
    mouth_center: (x, y) centre of the mouth.
    mouth_width: half the drawn mouth's width.
  """
  face_center: tuple[float, float]
  face_size: float
  mouth_center: tuple[float, float]
  mouth_width: float

  @classmethod
  def from_box(cls, box: Sequence[float], mouth_drop: float = 0.37,
               mouth_width: float = 0.18) -> "Portrait":
    """From a detector box (x0, y0, x1, y1): the mouth `mouth_drop` box sizes below the box
    centre, `mouth_width` box sizes wide on each side (the astronaut's: 30 and 15 px of its
    83-px box)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    size = float(np.sqrt((x1 - x0) * (y1 - y0)))
    center = (0.5 * (x0 + x1), 0.5 * (y0 + y1))
    return cls(center, size, (center[0], center[1] + mouth_drop * size), mouth_width * size)


def lip_color(photo: np.ndarray, portrait: Portrait) -> tuple[float, float, float]:
  """RGB of the closed-lips cover: the median skin colour between nose and mouth, a little
  darker and redder (only darker in a grey photo)."""
  x, y = portrait.mouth_center
  r = max(2, int(0.08 * portrait.face_size))
  cy = int(round(y - 0.2 * portrait.face_size))  # Between the nose and the upper lip.
  cx = int(round(x))
  patch = photo[max(0, cy - r):cy + r, max(0, cx - 2 * r):cx + 2 * r].reshape(-1, 3)
  skin = np.median(patch.astype(np.float64), axis=0)
  grey = np.ptp(photo[::4, ::4].astype(np.int16), axis=-1).mean() < 8
  factor = np.array([0.8, 0.8, 0.8]) if grey else np.array([0.9, 0.68, 0.68])
  return tuple(float(v) for v in np.clip(skin * factor, 0, 255))


def draw_mouth(photo: np.ndarray, portrait: Portrait, openness: float,
               lips: Optional[tuple[float, float, float]] = None) -> np.ndarray:
  """A copy of `photo` with the mouth `openness` (0 closed .. 1 wide) open; `lips` (an RGB,
  `lip_color`) first covers the photo's own mouth with closed lips (feathered edge)."""
  out = photo.copy()
  w = float(portrait.mouth_width)
  height = w * (2.0 + 9.0 * float(np.clip(openness, 0.0, 1.0))) / 15.0
  one = 1 << _SHIFT
  center = tuple(int(round(v * one)) for v in portrait.mouth_center)
  if lips is not None:
    mask = np.zeros(out.shape[:2], np.float32)
    axes = (int(round(1.3 * w * one)), int(round(max(0.55 * w, height + 0.25 * w) * one)))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, _SHIFT)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.12 * w))[..., None]
    out = np.round(out * (1 - mask) + np.array(lips, np.float32) * mask).astype(np.uint8)
  axes = (int(round(w * one)), int(round(height * one)))
  cv2.ellipse(out, center, axes, 0, 0, 360, MOUTH_COLOR, -1, cv2.LINE_AA, _SHIFT)
  return out


@dataclasses.dataclass(frozen=True)
class HeadPath:
  """Where the face is over a clip of `duration` s in a frame of `size` = (W, H) pixels.

  With phase = `phase` + 2 pi `cycles` t / duration: the face centre is at
  (W / 2 + `sway_x` W sin(phase), H / 2 + `sway_y` H sin(2 phase)), its size grows linearly
  from `face_start` to `face_end` of H, and it is tilted by `roll` sin(phase) degrees
  (counter-clockwise) about its centre.
  """
  face_start: float
  face_end: float
  sway_x: float = 0.12
  sway_y: float = 0.06
  phase: float = 0.0
  cycles: float = 1.0
  roll: float = 0.0

  def at(self, t: float, duration: float, size: tuple[int, int]
         ) -> tuple[np.ndarray, float, float]:
    """(face centre (x, y) in frame pixels, face size in frame pixels, roll in degrees)."""
    w, h = size
    phase = self.phase + 2 * np.pi * self.cycles * t / duration
    center = np.array([w / 2 + self.sway_x * w * np.sin(phase),
                       h / 2 + self.sway_y * h * np.sin(2 * phase)])
    face = (self.face_start + (self.face_end - self.face_start) * t / duration) * h
    return center, float(face), float(self.roll * np.sin(phase))


def place(photo: np.ndarray, portrait: Portrait, center: np.ndarray, scale: float,
          size: tuple[int, int], roll: float = 0.0) -> np.ndarray:
  """uint8 [H, W, 3]: `photo` scaled by `scale` (frame pixels per photo pixel) and tilted by
  `roll` degrees about the face centre, which lands on `center`; edge pixels repeat."""
  fx, fy = portrait.face_center
  if roll:
    matrix = cv2.getRotationMatrix2D((float(fx), float(fy)), roll, scale)
    matrix[:, 2] += np.asarray(center, np.float64) - (fx, fy)
  else:
    matrix = np.array([[scale, 0, center[0] - scale * fx], [0, scale, center[1] - scale * fy]])
  return cv2.warpAffine(photo, matrix, tuple(size), flags=cv2.INTER_AREA,
                        borderMode=cv2.BORDER_REPLICATE)


def render(photo: np.ndarray, portrait: Portrait, path: HeadPath, t: float, duration: float,
           size: tuple[int, int], openness: float,
           lips: Optional[tuple[float, float, float]] = None) -> np.ndarray:
  """The frame at time `t` of a clip: the mouth drawn (`draw_mouth`), then the photo placed on
  the path (`place`)."""
  center, face, roll = path.at(t, duration, size)
  return place(draw_mouth(photo, portrait, openness, lips), portrait, center,
               face / portrait.face_size, size, roll)


@dataclasses.dataclass(frozen=True)
class Take:
  """Speech of several phrases in a row: 16 kHz `wav` float32 [S], the phoneme and word times of
  the whole take (s), and `openness` float32 [num_frames]: the mouth of each 25 fps frame."""
  wav: np.ndarray
  phonemes: tuple[speech.Phoneme, ...]
  words: tuple[speech.Word, ...]
  openness: np.ndarray

  @property
  def duration(self) -> float:
    return len(self.wav) / audio_lib.SAMPLE_RATE


def speech_take(phrases: Sequence[str], voice: str, rate: int, lead: float = 0.3,
                gap: float = 0.4, tail: float = 0.3, fps: int = 25) -> Take:
  """`phrases` spoken by espeak-ng in a row: `lead` s of silence, the phrases `gap` s apart,
  `tail` s at the end (peak 0.9 per phrase, as `speech.synthesize` gives)."""
  sr = audio_lib.SAMPLE_RATE
  pieces, phonemes, words = [np.zeros(int(round(lead * sr)), np.float32)], [], []
  offset = lead
  for i, phrase in enumerate(phrases):
    if i:
      pieces.append(np.zeros(int(round(gap * sr)), np.float32))
      offset += gap
    utterance = speech.synthesize(phrase, voice, rate)
    pieces.append(utterance.wav.astype(np.float32))
    phonemes += [dataclasses.replace(p, start=p.start + offset, end=p.end + offset)
                 for p in utterance.phonemes]
    words += [dataclasses.replace(w, start=w.start + offset, end=w.end + offset)
              for w in utterance.words]
    offset += len(utterance.wav) / sr
  pieces.append(np.zeros(int(round(tail * sr)), np.float32))
  wav = np.concatenate(pieces)
  num_frames = int(len(wav) * fps // sr)
  wav = wav[:int(round(num_frames * sr / fps))]
  openness = visemes.mouth_track(tuple(phonemes), 0.0, num_frames, fps=fps).openness
  return Take(wav, tuple(phonemes), tuple(words), openness)


def srt_time(seconds: float) -> str:
  ms = int(round(seconds * 1000))
  return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def srt(words: Sequence[tuple[str, float, float]]) -> str:
  """A timed transcript: one SRT cue per (word, start s, end s)."""
  return "\n".join(f"{i + 1}\n{srt_time(s)} --> {srt_time(e)}\n{w}\n"
                   for i, (w, s, e) in enumerate(words))
