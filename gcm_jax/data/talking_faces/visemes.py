"""espeak-ng phonemes -> visemes -> per-video-frame mouth shapes with coarticulation.

Each viseme has a target mouth openness (0 closed .. 1 wide open) and lip width
(-1 rounded/protruded .. 1 spread). The mouth trajectory is computed on a 1 ms grid:
targets are smoothed by a Gaussian (coarticulation: neighbouring phonemes blend), then
multiplied by a closure gate that is 0 during bilabials (p, b, m) and ramps back to 1 within
`GATE_RAMP` seconds, so lips really close on p/b/m however short they are. A video frame
shows the mean openness over its 40 ms exposure times the minimum gate over the central
half of the frame (any bilabial of >= 20 ms closes the mouth in at least one frame).
"""
import dataclasses

import numpy as np

from gcm_jax.data.talking_faces import speech


@dataclasses.dataclass(frozen=True)
class Viseme:
  name: str
  openness: float
  width: float


VISEMES = (
    Viseme("sil", 0.05, 0.0),
    Viseme("PBM", 0.0, 0.0),
    Viseme("FV", 0.12, 0.1),
    Viseme("TH", 0.25, 0.1),
    Viseme("DTN", 0.3, 0.2),
    Viseme("KG", 0.4, 0.0),
    Viseme("SH", 0.3, -0.6),
    Viseme("WR", 0.2, -0.8),
    Viseme("AA", 1.0, 0.2),
    Viseme("EH", 0.75, 0.5),
    Viseme("IY", 0.5, 0.8),
    Viseme("OH", 0.8, -0.6),
    Viseme("UW", 0.5, -0.9),
    Viseme("SCHWA", 0.55, 0.1),
)
NUM_VISEMES = len(VISEMES)
VISEME_IDS = {v.name: i for i, v in enumerate(VISEMES)}
SIL, PBM = VISEME_IDS["sil"], VISEME_IDS["PBM"]
VOWEL_VISEMES = frozenset(VISEME_IDS[n] for n in ("AA", "EH", "IY", "OH", "UW", "SCHWA"))

_CONSONANTS = {
    "p": "PBM", "b": "PBM", "m": "PBM",
    "f": "FV", "v": "FV",
    "T": "TH", "D": "TH",
    "S": "SH", "Z": "SH", "tS": "SH", "dZ": "SH",
    "w": "WR", "w#": "WR", "r": "WR", "r-": "WR", "R": "WR",
    "k": "KG", "g": "KG", "N": "KG", "h": "KG", "x": "KG",
    "j": "IY",
}
_VOWEL_BY_FIRST_CHAR = {"a": "AA", "A": "AA", "V": "AA", "0": "AA", "e": "EH", "E": "EH",
                        "i": "IY", "I": "IY", "o": "OH", "O": "OH", "u": "UW", "U": "UW",
                        "@": "SCHWA", "3": "SCHWA"}
SMOOTH_SIGMA = 0.015  # Coarticulation Gaussian, seconds.
GATE_RAMP = 0.010  # Lip release/approach around bilabials, seconds.
_DT = 0.001


def phoneme_to_viseme(name: str) -> int:
  """Viseme id of an espeak-ng phoneme mnemonic (stress marks already stripped).

  Pauses -> 'sil'; 'a#' (reduced vowel) -> 'SCHWA'; unknown consonants -> 'DTN'.
  """
  if speech.is_pause(name) or not name:
    return SIL
  if name in _CONSONANTS:
    return VISEME_IDS[_CONSONANTS[name]]
  if name.startswith("a#"):
    return VISEME_IDS["SCHWA"]
  if name[0] in _VOWEL_BY_FIRST_CHAR:
    return VISEME_IDS[_VOWEL_BY_FIRST_CHAR[name[0]]]
  return VISEME_IDS["DTN"]


@dataclasses.dataclass(frozen=True)
class MouthTrack:
  """Per-frame mouth state: `visemes` int32 `[T]`, `openness` and `width` float32 `[T]`."""
  visemes: np.ndarray
  openness: np.ndarray
  width: np.ndarray


def _gaussian_smooth(x: np.ndarray, sigma_steps: float) -> np.ndarray:
  radius = int(np.ceil(3 * sigma_steps))
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_steps) ** 2)
  k /= k.sum()
  return np.convolve(np.pad(x, radius, mode="edge"), k, mode="valid")


def mouth_track(phonemes: tuple[speech.Phoneme, ...], start_time: float, num_frames: int,
                fps: int = 25) -> MouthTrack:
  """Mouth state for `num_frames` video frames starting at `start_time` seconds.

  Frame `t` is exposed during `[start_time + t / fps, start_time + (t + 1) / fps)`. Times
  outside all phonemes are silence.
  """
  margin = 0.1
  t0, t1 = start_time - margin, start_time + num_frames / fps + margin
  n = int(round((t1 - t0) / _DT))
  grid = t0 + (np.arange(n) + 0.5) * _DT
  vis = np.full(n, SIL, np.int32)
  for p in phonemes:
    inside = (grid >= p.start) & (grid < p.end)
    vis[inside] = phoneme_to_viseme(p.name)
  closed = vis == PBM
  table_open = np.array([v.openness for v in VISEMES])
  table_width = np.array([v.width for v in VISEMES])
  sigma = SMOOTH_SIGMA / _DT
  openness = _gaussian_smooth(table_open[vis], sigma)
  width = _gaussian_smooth(table_width[vis], sigma)
  # Gate: distance (s) to the nearest closed sample, ramped over GATE_RAMP.
  idx = np.arange(n)
  closed_idx = np.flatnonzero(closed)
  if closed_idx.size:
    right = np.clip(np.searchsorted(closed_idx, idx), 0, closed_idx.size - 1)
    left = np.clip(right - 1, 0, closed_idx.size - 1)
    nearest = np.minimum(np.abs(closed_idx[right] - idx), np.abs(closed_idx[left] - idx)) * _DT
    gate = np.clip(nearest / GATE_RAMP, 0.0, 1.0)
  else:
    gate = np.ones(n)
  steps = int(round(1 / (fps * _DT)))
  offset = int(round(margin / _DT))
  frames = offset + np.arange(num_frames)[:, None] * steps + np.arange(steps)[None, :]
  central = frames[:, steps // 4: steps - steps // 4]
  frame_gate = gate[central].min(axis=1)
  frame_open = openness[frames].mean(axis=1) * frame_gate
  center_vis = vis[frames[:, steps // 2]]
  frame_vis = np.where(frame_gate == 0.0, PBM, center_vis)
  return MouthTrack(frame_vis.astype(np.int32), frame_open.astype(np.float32),
                    width[frames].mean(axis=1).astype(np.float32))
