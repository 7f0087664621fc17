"""Decoding with PyAV (its wheel bundles FFmpeg): 25 fps frames and 16 kHz mono audio.

Time origin: the presentation time of the first video frame. Output frame `t` covers
`[t / 25, (t + 1) / 25)` s after the origin and shows the source frame on screen at the
middle of that interval, `origin + (t + 0.5) / 25` (from the presentation timestamps, so
any frame rate, including variable ones, becomes a constant 25 fps). Audio sample `s` is
the sound at `origin + s / 16000`, placed from the audio stream's own timestamps, so a
stream that starts before or after the video keeps its offset; sound before the origin is
dropped and missing sound is silence. Sample `640 t` is then the first sample of frame `t`
(the alignment convention of docs/data.md).
"""
import dataclasses
import os
from typing import Callable, Iterator, Optional

import av
import numpy as np

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS


class RejectError(Exception):
  """A video that cannot become clips; `reason` is one of `builder.REJECT_REASONS`."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class StreamInfo:
  """What `probe` reads from the container headers (no frame is decoded)."""
  width: int
  height: int
  video_codec: str
  audio_codec: str
  audio_rate: int
  audio_channels: int
  frame_rate: float = 0.0  # the video stream's average frame rate (0: the header has none)


# (offset, leading bytes, container) of the containers a video folder holds, to tell a
# damaged video from a file that is no video at all.
_SIGNATURES = ((4, b"ftyp", "MP4/QuickTime"), (4, b"moov", "MP4/QuickTime"),
               (4, b"mdat", "MP4/QuickTime"), (4, b"free", "MP4/QuickTime"),
               (4, b"wide", "MP4/QuickTime"), (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
               (0, b"RIFF", "RIFF (AVI)"), (0, b"OggS", "Ogg"), (0, b"FLV", "FLV"))


def unreadable_detail(path: str, error: Exception) -> str:
  """What is wrong with a file FFmpeg cannot open, for the reject's `detail`: empty, text or
  other non-video bytes, or a damaged container of a known kind (with FFmpeg's message)."""
  name = os.path.basename(path)
  why = getattr(error, "strerror", None) or str(error)
  try:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      head = f.read(64)
  except OSError as e:
    return f"cannot read {name}: {e.strerror or e}"
  if size == 0:
    return f"empty file (0 bytes): {name}"
  kind = next((k for at, magic, k in _SIGNATURES if head[at:at + len(magic)] == magic), None)
  if kind:
    return (f"a damaged or truncated {kind} file that PyAV cannot read: {name} ({size} bytes; "
            f"FFmpeg: {why})")
  try:
    text = head.decode("utf-8")
  except UnicodeDecodeError as e:  # Text whose 64th byte cuts a character is still text.
    text = head[:e.start].decode("utf-8") if e.start >= len(head) - 3 else None
  if text is not None and all(c.isprintable() or c.isspace() for c in text):
    start = f"a text file starting {text[:32]!r}"
  else:
    start = f"starts with bytes {head[:8].hex(' ')}"
  return (f"not a video container PyAV can read: {name} ({size} bytes, {start}; FFmpeg: "
          f"{why})")


def _open(path: str) -> av.container.InputContainer:
  try:
    return av.open(path, metadata_errors="ignore")
  except (av.error.FFmpegError, OSError) as e:
    raise RejectError("unreadable", unreadable_detail(path, e)) from e
  except UnicodeDecodeError as e:
    raise RejectError("unreadable", f"{type(e).__name__}: {e}") from e


def probe(path: str, require_audio: bool = True) -> StreamInfo:
  """Stream facts of `path`; raises RejectError (unreadable, no_video_stream, no_audio_stream,
  unsupported_codec). With `require_audio` False a file without an audio stream is fine (its
  audio fields are '' and 0)."""
  with _open(path) as container:
    if not container.streams.video:
      raise RejectError("no_video_stream")
    if require_audio and not container.streams.audio:
      raise RejectError("no_audio_stream")
    video = container.streams.video[0]
    sound = container.streams.audio[0] if container.streams.audio else None
    for stream in (video, sound) if sound else (video,):
      if stream.codec_context is None or not stream.codec_context.is_decoder:
        raise RejectError("unsupported_codec", f"no decoder for {stream.type} stream")
    rate = float(video.average_rate or video.guessed_rate or 0.0)
    return StreamInfo(video.codec_context.width, video.codec_context.height,
                      video.codec_context.name, sound.codec_context.name if sound else "",
                      sound.codec_context.sample_rate if sound else 0,
                      sound.codec_context.channels if sound else 0, rate)


def _decoded_frames(path: str) -> Iterator[tuple[float, Optional[float], av.VideoFrame]]:
  """(presentation time s, duration s or None, frame) in presentation order. A decoding error
  ends the stream (a truncated file keeps the frames before the damage)."""
  with _open(path) as container:
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # One core per worker process.
    rate = float(stream.average_rate or stream.guessed_rate or FPS)
    previous = None
    try:
      for frame in container.decode(stream):
        time = frame.time if frame.time is not None else (
            previous + 1 / rate if previous is not None else 0.0)
        if previous is not None and time <= previous:
          continue  # A repeated or out-of-order timestamp adds no picture.
        previous = time
        duration = (float(frame.duration * frame.time_base)
                    if frame.duration and frame.time_base else None)
        yield time, duration, frame
    except av.error.FFmpegError:
      return


def source_frames(path: str) -> Iterator[tuple[float, Optional[float], np.ndarray]]:
  """Every frame of `path` at its own rate and size: (presentation time s, duration s or None,
  uint8 [H, W, 3] RGB), in presentation order; the frames `frames_25fps` samples from (a
  repeated timestamp adds no frame, a decoding error ends the stream)."""
  for time, duration, frame in _decoded_frames(path):
    yield time, duration, frame.to_ndarray(format="rgb24")


class _Converted:
  """A decoded frame converted by libswscale on first use, then kept."""

  def __init__(self, frame: av.VideoFrame, width: Optional[int], height: Optional[int],
               fmt: str):
    self._frame, self._args, self._array = frame, (width, height, fmt), None

  def array(self) -> np.ndarray:
    if self._array is None:
      width, height, fmt = self._args
      self._array = self._frame.reformat(width=width, height=height, format=fmt).to_ndarray()
    return self._array


def frames_25fps(path: str, width: Optional[int] = None, height: Optional[int] = None,
                 fmt: str = "rgb24", wanted: Optional[Callable[[int], bool]] = None
                 ) -> Iterator[tuple[int, float, Optional[np.ndarray]]]:
  """Constant-25-fps frames of `path`: (t, origin s, frame).

  Frame `t` is the source frame on screen at `origin + (t + 0.5) / 25`, converted by libswscale
  to `fmt` at `width` x `height` (default: the source size): uint8 [H, W, 3] for 'rgb24',
  [H, W] for 'gray'; None (not converted) where `wanted(t)` is False. The last source frame
  is shown for its duration (else one average frame interval).
  """
  current = None  # (time, _Converted)
  origin = None
  t = 0
  fallback_step = 1.0 / FPS
  last_duration = None

  def output(frame: _Converted) -> Optional[np.ndarray]:
    return frame.array() if wanted is None or wanted(t) else None

  for time, duration, frame in _decoded_frames(path):
    if origin is None:
      origin = time
    if current is not None:
      while origin + (t + 0.5) / FPS < time:
        yield t, origin, output(current[1])
        t += 1
      fallback_step = time - current[0]
    current = (time, _Converted(frame, width, height, fmt))
    last_duration = duration
  if current is None:
    return
  end = current[0] + (last_duration or fallback_step)
  while origin + (t + 0.5) / FPS < end:
    yield t, origin, output(current[1])
    t += 1


def audio_16k(path: str, origin: float, num_samples: int) -> np.ndarray:
  """float32 [num_samples] mono 16 kHz audio; sample `s` is the sound at `origin + s / 16000`
  (stream timestamps); silence where the stream has none. Raises RejectError if the audio
  cannot be decoded at all."""
  resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
  chunks, start = [], None
  with _open(path) as container:
    stream = container.streams.audio[0]
    try:
      for frame in container.decode(stream):
        if start is None and frame.time is not None:
          start = frame.time
        frame.pts = None  # Let the resampler count samples; `start` places them.
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    except av.error.FFmpegError as e:
      if not chunks:
        raise RejectError("unreadable", f"audio: {e}") from e
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
  wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
  out = np.zeros(num_samples, np.float32)
  shift = int(round(((start or 0.0) - origin) * SAMPLE_RATE))  # Output index of wav[0].
  lo, hi = max(shift, 0), min(num_samples, shift + len(wav))
  if hi > lo:
    out[lo:hi] = wav[lo - shift:hi - shift]
  return out
