"""espeak-ng ctypes binding, run as a small single-threaded server process.

espeak-ng keeps synthesis state between calls (e.g. its pitch-flutter phase), so the same
request gives slightly different audio depending on what was said before. This server
initializes espeak-ng once and forks a child per request, so every request starts from the
same never-used state: same (text, voice, rate) -> same samples and timings, in any order.
It is a separate process (started by `speech.py` with this file as a script, importing
neither jax nor gcm_jax) because forking a multithreaded JAX process is unsafe.

Protocol on stdin/stdout: 8-byte little-endian length + pickle. Request:
(text, voice, rate). Response: (int16 samples, sample_rate, events) or an Exception, where
events are (type, audio_position_ms, text_position, length, phoneme_name) tuples.
"""
import ctypes
import os
import pickle
import struct
import sys

import espeakng_loader
import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_RAND_SEED = 1


class _EventId(ctypes.Union):
  _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
              ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", _EventId)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


def write_frame(stream, obj) -> None:
  """Writes one length-prefixed pickle frame and flushes."""
  data = pickle.dumps(obj)
  stream.write(struct.pack("<Q", len(data)) + data)
  stream.flush()


def read_frame(stream):
  """Reads one frame; raises EOFError if the stream ended."""
  header = stream.read(8)
  if len(header) < 8:
    raise EOFError("espeak-ng server stream closed")
  (size,) = struct.unpack("<Q", header)
  return pickle.loads(stream.read(size))


class Engine:
  """The espeak-ng library with phoneme events, synchronous output to a callback."""

  def __init__(self):
    self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self.lib.espeak_Initialize.restype = ctypes.c_int
    self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                           ctypes.c_int]
    self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                      ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                      ctypes.c_void_p, ctypes.c_void_p]
    self.sample_rate = self.lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
        _INITIALIZE_PHONEME_EVENTS)
    if self.sample_rate <= 0:
      raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate})")
    self._chunks: list[np.ndarray] = []
    self._events: list[tuple[int, int, int, int, str]] = []
    self._callback = _Callback(self._on_synth)  # Keep a reference alive.
    self.lib.espeak_SetSynthCallback(self._callback)

  def _on_synth(self, wav, num_samples, events) -> int:
    if num_samples > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      e = events[i]
      name = e.id.string.decode("utf-8", "replace") if e.type == _EVENT_PHONEME else ""
      self._events.append((e.type, e.audio_position, e.text_position, e.length, name))
      i += 1
    return 0

  def synth(self, text: str, voice: str, rate: int):
    """Returns (int16 samples, sample rate, event tuples) for one request."""
    if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
      raise ValueError(f"unknown espeak-ng voice {voice!r} (e.g. 'en-us', 'en-us+f3')")
    self.lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
    self.lib.espeak_ng_SetRandSeed(_RAND_SEED)
    self._chunks, self._events = [], []
    data = text.encode("utf-8")
    status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                   None, None)
    if status != _EE_OK:
      raise RuntimeError(f"espeak_Synth failed with status {status}")
    self.lib.espeak_Synchronize()
    wav = np.concatenate(self._chunks) if self._chunks else np.zeros((0,), np.int16)
    return wav, self.sample_rate, self._events


def serve(stdin, stdout) -> None:
  """Answers requests until stdin closes; each one in a fresh fork of the idle engine."""
  engine = Engine()
  while True:
    try:
      request = read_frame(stdin)
    except EOFError:
      return
    pid = os.fork()
    if pid == 0:
      try:
        response = engine.synth(*request)
      except Exception as e:  # pylint: disable=broad-except  # Sent to the client.
        response = e
      write_frame(stdout, response)
      os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
      write_frame(stdout, RuntimeError(f"espeak-ng synthesis crashed (wait status {status})"))


if __name__ == "__main__":
  serve(sys.stdin.buffer, sys.stdout.buffer)
