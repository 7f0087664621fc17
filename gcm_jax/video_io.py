"""Writing videos with their audio track (mp4: H.264 video + AAC audio).

Uses the ffmpeg binary bundled in the `imageio-ffmpeg` wheel, so nothing has to be
installed system-wide.
"""
import os
import subprocess
import tempfile
import warnings
import wave

import imageio_ffmpeg
import numpy as np

FPS = 25
SAMPLE_RATE = 16000


def to_uint8(video: np.ndarray) -> np.ndarray:
  """Float video in [-1, 1] `[T, H, W, 3]` -> uint8 `[T, H, W, 3]` (uint8 passes through)."""
  video = np.asarray(video)
  if video.dtype == np.uint8:
    return video
  return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def write_wav(path: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
  """Writes mono float audio in [-1, 1] `[S]` as 16-bit PCM."""
  pcm = np.round(np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * 32767).astype("<i2")
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(sample_rate)
    f.writeframes(pcm.tobytes())


def write_mp4(path: str, video: np.ndarray, audio: np.ndarray | None = None,
              fps: int = FPS, sample_rate: int = SAMPLE_RATE, min_size: int = 128) -> str:
  """Writes `video` `[T, H, W, 3]` (float in [-1, 1] or uint8) with optional mono `audio` `[S]`.

  Small frames are enlarged by an integer nearest-neighbour factor so the shorter side
  is at least `min_size` pixels (and a multiple of 16, as H.264 players prefer).
  """
  frames = to_uint8(video)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"video must be [T, H, W, 3], got {frames.shape}")
  factor = max(1, -(-min_size // min(frames.shape[1:3])))
  frames = frames.repeat(factor, axis=1).repeat(factor, axis=2)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # ffmpeg is started with fork+exec; Python's warning about forking a multithreaded (JAX)
  # process does not apply to a child that immediately execs.
  with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    silent = os.path.join(tmp, "video.mp4")
    writer = imageio_ffmpeg.write_frames(
        silent, frames.shape[2:0:-1], fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=16, quality=8, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
      writer.send(np.ascontiguousarray(frame))
    writer.close()
    if audio is None:
      os.replace(silent, path)
      return path
    wav = os.path.join(tmp, "audio.wav")
    write_wav(wav, audio, sample_rate)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", silent, "-i", wav,
         "-c:v", "copy", "-c:a", "aac", "-shortest", path], check=True)
  return path
