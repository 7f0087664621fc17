"""One talking-face example, generated directly (no TFDS): speech -> clip -> mouth -> video.

Clip selection: a clip is `num_frames / 25` s long. If the utterance's speech (first to last
non-pause phoneme) is shorter, the clip contains all of it at a random offset (silence pads
the rest); if longer, the clip is a random window inside the speech. `script` is the words
spoken in the clip (each word whose span lies at least half inside it, or the word with the
largest overlap), and the caption says that script.
"""
import dataclasses

import numpy as np

from gcm_jax.data import audio
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import renderer
from gcm_jax.data.talking_faces import speech
from gcm_jax.data.talking_faces import visemes

FPS = audio.FPS


@dataclasses.dataclass(frozen=True)
class Example:
  """A generated clip. Shapes: T = num_frames, S = T * 640, R = resolution, K = 8.

  Attributes:
    caption: attribute text + "says: " + script.
    script: words spoken in the clip.
    phrase: the full utterance the clip was cut from.
    voice, rate: espeak-ng voice and words per minute.
    attributes: the colors and motion the caption asks for.
    clip_start: clip start in seconds within the utterance.
    video: uint8 `[T, R, R, 3]`.
    audio: float32 `[S]` at 16 kHz; sample `640 t` is the start of frame `t`.
    visemes: int32 `[T]` viseme ids (visemes.VISEMES).
    mouth_open: float32 `[T]` 0 closed .. 1 wide open.
    keypoints: float32 `[T, K, 2]` (x, y) in [0, 1] (renderer.KEYPOINT_NAMES).
    phonemes: phoneme spans in clip time (seconds; may extend outside [0, T / 25]).
    frame_phonemes: `T` espeak-ng phoneme names at each frame's center time ('_' if none).
  """
  caption: str
  script: str
  phrase: str
  voice: str
  rate: int
  attributes: captions.Attributes
  clip_start: float
  video: np.ndarray
  audio: np.ndarray
  visemes: np.ndarray
  mouth_open: np.ndarray
  keypoints: np.ndarray
  phonemes: tuple[speech.Phoneme, ...]
  frame_phonemes: tuple[str, ...]

  def features(self) -> dict:
    """The TFDS feature dict of this example (see talking_faces.py)."""
    clip_len = len(self.mouth_open) / FPS
    inside = [p for p in self.phonemes if p.end > 0 and p.start < clip_len]
    return {
        "caption": self.caption, "script": self.script, "phrase": self.phrase,
        "voice": self.voice, "rate": self.rate,
        "face_color": self.attributes.face_color_id,
        "background_color": self.attributes.background_color_id,
        "motion": self.attributes.motion_id,
        "video": self.video, "audio": self.audio, "visemes": self.visemes,
        "mouth_open": self.mouth_open, "keypoints": self.keypoints,
        "frame_phonemes": list(self.frame_phonemes),
        "phonemes": {"name": [p.name for p in inside],
                     "start": np.array([p.start for p in inside], np.float32),
                     "end": np.array([p.end for p in inside], np.float32)},
    }


def _speech_span(utt: speech.Utterance) -> tuple[float, float]:
  spoken = [p for p in utt.phonemes if not speech.is_pause(p.name)]
  if not spoken:
    raise ValueError("espeak-ng produced no phonemes to speak")
  return spoken[0].start, spoken[-1].end


def _clip_script(words: tuple[speech.Word, ...], start: float, end: float) -> str:
  def overlap(w):
    return max(0.0, min(w.end, end) - max(w.start, start))
  if not words:
    raise ValueError("espeak-ng reported no words to put in the caption")
  inside = [w.text for w in words if overlap(w) >= 0.5 * max(w.end - w.start, 1e-6)]
  if inside:
    return " ".join(inside)
  return max(words, key=overlap).text


def _frame_phonemes(phonemes: tuple[speech.Phoneme, ...], num_frames: int) -> tuple[str, ...]:
  centers = (np.arange(num_frames) + 0.5) / FPS
  return tuple(next((p.name for p in phonemes if p.start <= c < p.end), "_") for c in centers)


def generate_example(phrase: str, attributes: captions.Attributes, voice: str = "en-us",
                     rate: int = 160, resolution: int = 32, num_frames: int = 16,
                     seed: int = 0, clip_start: float | None = None) -> Example:
  """Synthesizes, cuts, and renders one example.

  Args:
    phrase: English text to speak (non-empty).
    attributes: colors and head motion.
    voice: espeak-ng voice, e.g. 'en-us+f3'.
    rate: words per minute.
    resolution: 32, 64 or 128.
    num_frames: T >= 1 frames at 25 fps.
    seed: randomness of clip offset, head size and blinks.
    clip_start: clip start in seconds (may be negative: leading silence); random if None.

  Returns:
    `Example` (see its docstring for shapes).
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if resolution not in renderer.RESOLUTIONS:
    raise ValueError(f"resolution must be one of {renderer.RESOLUTIONS}, got {resolution}")
  rng = np.random.default_rng(seed)
  utt = speech.synthesize(phrase, voice, rate)
  clip_len = num_frames / FPS
  if clip_start is None:
    first, last = _speech_span(utt)
    if last - first <= clip_len:
      clip_start = first - rng.uniform(0, clip_len - (last - first))
    else:
      clip_start = rng.uniform(first, last - clip_len)
  start_sample = int(round(clip_start * audio.SAMPLE_RATE))
  clip_start = start_sample / audio.SAMPLE_RATE
  num_samples = num_frames * audio.SAMPLES_PER_VIDEO_FRAME
  lo, hi = max(0, -start_sample), max(0, start_sample + num_samples - len(utt.wav))
  wav = np.pad(utt.wav, (lo, hi))[start_sample + lo:start_sample + lo + num_samples]
  track = visemes.mouth_track(utt.phonemes, clip_start, num_frames, FPS)
  video, keypoints = renderer.render(attributes, track, resolution, rng)
  script = _clip_script(utt.words, clip_start, clip_start + clip_len)
  phonemes = tuple(speech.Phoneme(p.name, p.start - clip_start, p.end - clip_start)
                   for p in utt.phonemes)
  return Example(
      caption=captions.make_caption(attributes, script), script=script, phrase=phrase,
      voice=voice, rate=rate, attributes=attributes, clip_start=clip_start, video=video,
      audio=wav.astype(np.float32), visemes=track.visemes, mouth_open=track.openness,
      keypoints=keypoints, phonemes=phonemes,
      frame_phonemes=_frame_phonemes(phonemes, num_frames))
