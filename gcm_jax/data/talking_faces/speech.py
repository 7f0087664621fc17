"""Speech synthesis with espeak-ng (bundled by the `espeakng-loader` wheel) through ctypes.

`synthesize(text, voice, rate)` returns 16 kHz float audio plus the timing of every
phoneme and word, taken from espeak-ng's synthesis events (`espeakINITIALIZE_PHONEME_EVENTS`).
Phoneme names are espeak-ng mnemonics (e.g. 'p', "'A:", '@', 'aI', '_:' for a pause) with
stress marks stripped.
"""
import dataclasses
import os
import subprocess
import sys
import threading

import numpy as np

from gcm_jax.data import audio
from gcm_jax.data.talking_faces import espeak_server

_EVENT_WORD = 1
_EVENT_PHONEME = 7
_STRESS_MARKS = "',"
MIN_RATE, MAX_RATE = 80, 450  # espeak-ng words per minute.


@dataclasses.dataclass(frozen=True)
class Phoneme:
  """One phoneme: espeak-ng mnemonic and its time span in seconds."""
  name: str
  start: float
  end: float


@dataclasses.dataclass(frozen=True)
class Word:
  """One word of the input text and its time span in seconds (pauses excluded)."""
  text: str
  start: float
  end: float


@dataclasses.dataclass(frozen=True)
class Utterance:
  """Synthesized speech: `wav` float32 `[N]` at 16 kHz in [-1, 1], phoneme/word timings."""
  wav: np.ndarray
  phonemes: tuple[Phoneme, ...]
  words: tuple[Word, ...]

  @property
  def duration(self) -> float:
    return len(self.wav) / audio.SAMPLE_RATE


class _Client:
  """Talks to one `espeak_server` process (started lazily, one per process); thread-safe."""

  def __init__(self):
    self.lock = threading.Lock()
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(espeak_server.__file__)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

  def synth(self, text: str, voice: str, rate: int):
    """Returns (int16 samples, sample rate, event tuples); re-raises the server's errors."""
    with self.lock:
      try:
        espeak_server.write_frame(self.proc.stdin, (text, voice, rate))
        result = espeak_server.read_frame(self.proc.stdout)
      except (EOFError, BrokenPipeError) as e:
        _clients.pop(os.getpid(), None)  # The next call starts a new server.
        raise RuntimeError(f"the espeak-ng server process exited ({e})") from e
    if isinstance(result, Exception):
      raise result
    return result


_clients: dict[int, _Client] = {}


def _client() -> _Client:
  """This process's client (a forked worker must not share its parent's pipes)."""
  pid = os.getpid()
  if pid not in _clients:
    _clients[pid] = _Client()
  return _clients[pid]


def _strip_stress(name: str) -> str:
  return name.lstrip(_STRESS_MARKS)


def is_pause(name: str) -> bool:
  """Whether an espeak-ng phoneme mnemonic is a pause ('_', '_:', '_!', ...)."""
  return name.startswith("_")


def synthesize(text: str, voice: str = "en-us", rate: int = 160) -> Utterance:
  """Speaks `text` with espeak-ng.

  Args:
    text: the script; must contain something to say.
    voice: espeak-ng voice name, optionally with a variant ('en-us', 'en-gb-x-rp+f3').
    rate: speaking rate in words per minute, in [80, 450].

  Returns:
    `Utterance` with 16 kHz audio `[N]` (peak-normalized to 0.9) and timings in seconds.
    Deterministic: the same arguments always give the same samples (see espeak_server).
    A phoneme lasts until the next phoneme event (the last one until the end of audio).

  Raises:
    ValueError: empty/whitespace script, unknown voice, or rate out of range.
  """
  if not isinstance(text, str) or not text.strip():
    raise ValueError("script is empty: there is nothing to say")
  if not MIN_RATE <= rate <= MAX_RATE:
    raise ValueError(f"rate must be in [{MIN_RATE}, {MAX_RATE}] words/min, got {rate}")
  raw, sample_rate, events = _client().synth(text, voice, rate)
  if raw.size == 0:
    raise ValueError(f"espeak-ng produced no audio for {text!r}")
  wav = audio.resample(raw.astype(np.float32) / 32768.0, sample_rate)
  peak = float(np.abs(wav).max())
  if peak > 0:
    wav = wav * (0.9 / peak)
  duration = len(wav) / audio.SAMPLE_RATE
  phone_events = [(pos / 1000.0, _strip_stress(name)) for typ, pos, _, _, name in events
                  if typ == _EVENT_PHONEME]
  phonemes = tuple(
      Phoneme(name, start, phone_events[i + 1][0] if i + 1 < len(phone_events) else duration)
      for i, (start, name) in enumerate(phone_events))
  return Utterance(wav.astype(np.float32), phonemes, _words(text, events, phonemes))


def _words(text: str, events, phonemes: tuple[Phoneme, ...]) -> tuple[Word, ...]:
  """Word spans: from the word event to the next word event or pause phoneme."""
  word_events = [(pos / 1000.0, text_pos, length) for typ, pos, text_pos, length, _ in events
                 if typ == _EVENT_WORD]
  pause_starts = [p.start for p in phonemes if is_pause(p.name)]
  end_of_speech = max((p.end for p in phonemes if not is_pause(p.name)), default=0.0)
  words = []
  for i, (start, text_pos, length) in enumerate(word_events):
    end = word_events[i + 1][0] if i + 1 < len(word_events) else end_of_speech
    end = min([end] + [s for s in pause_starts if s > start])
    # text_position is 1-based, counted in characters of the input.
    word = text[text_pos - 1:text_pos - 1 + length]
    words.append(Word(word, start, max(end, start)))
  return tuple(words)
