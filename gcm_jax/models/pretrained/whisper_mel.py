"""Whisper's own log-mel front end (openai-whisper `whisper.audio`), in numpy and JAX.

Conventions (openai-whisper `audio.py`, = transformers' `WhisperFeatureExtractor`):
16 kHz mono, STFT with n_fft = 400 (25 ms) and hop 160 (10 ms, 100 frames per second),
periodic Hann window, `center=True` with reflect padding of n_fft // 2, the last STFT frame
dropped (a clip of `N` samples has `N // 160` frames), power spectrum, Slaney mel filters
with Slaney (area) normalization from 0 Hz to 8 kHz (80 bins; 128 for large-v3),
`log10(max(x, 1e-10))`, floored at the clip's maximum - 8, then `(x + 4) / 4`.

The encoder takes exactly 30 s (`N_FRAMES` = 3000 mel frames). Shorter clips are zero-padded
in the audio domain before the mel (`pad_or_trim`, what Whisper was trained on); longer ones
are zero-padded to a whole number of 30 s windows (`pad_to_windows`) and cut into windows
after the mel, as openai-whisper's `transcribe` does, so the floor (maximum - 8) is the
clip's.

Layout: time-major `[..., frames, n_mels]` (what `flax.linen.Conv` takes), the transpose of
openai-whisper's `[n_mels, frames]`.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples per encoder window.
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per encoder window.
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second.


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
  """Slaney mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above."""
  hz = np.asarray(hz, np.float64)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
  log = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
  return np.where(hz >= min_log_hz, log, hz / f_sp)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
  """Inverse of `hz_to_mel`."""
  mel = np.asarray(mel, np.float64)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
  min_log_mel = min_log_hz / f_sp
  return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                  f_sp * mel)


@functools.cache
def mel_filters(n_mels: int) -> np.ndarray:
  """Slaney-normalized triangular mel filters `[n_mels, N_FFT // 2 + 1]` (float32).

  Same as `librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)` (0 Hz to 8 kHz), the
  matrix openai-whisper ships in `assets/mel_filters.npz`.
  """
  mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
  fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
  fdiff = np.diff(mel_f)
  ramps = mel_f[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
  weights = weights.astype(np.float32)
  weights.setflags(write=False)
  return weights


def num_frames(num_samples: int) -> int:
  """Mel frames for `num_samples` samples (`1 + N // 160` STFT frames, the last dropped)."""
  return num_samples // HOP_LENGTH


def num_windows(num_samples: int) -> int:
  """30 s encoder windows needed for `num_samples` samples (at least one)."""
  return max(1, -(-num_samples // N_SAMPLES))


def pad_to_windows(audio: np.ndarray) -> np.ndarray:
  """Zero-pads (never trims) `audio` `[..., N]` to `[..., num_windows(N) * N_SAMPLES]`."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim < 1 or audio.shape[-1] == 0:
    raise ValueError(f"audio must have shape [..., num_samples > 0], got {audio.shape}")
  pad = num_windows(audio.shape[-1]) * N_SAMPLES - audio.shape[-1]
  return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, pad)])


@functools.partial(jax.jit, static_argnames=("n_mels",))
def log_mel_spectrogram(audio: jax.Array, n_mels: int = 80) -> jax.Array:
  """Whisper's normalized log-mel spectrogram (openai-whisper `log_mel_spectrogram`).

  Args:
    audio: float audio `[..., N]` at 16 kHz, `N > 200` (the reflect padding).
    n_mels: 80, or 128 for large-v3.

  Returns:
    float32 `[..., N // 160, n_mels]`; the floor (maximum - 8) is taken per clip (over the
    last two axes).
  """
  audio = jnp.asarray(audio, jnp.float32)
  if audio.shape[-1] <= N_FFT // 2:
    raise ValueError(f"audio has {audio.shape[-1]} samples; reflect padding needs more "
                     f"than {N_FFT // 2}")
  pad = [(0, 0)] * (audio.ndim - 1) + [(N_FFT // 2, N_FFT // 2)]
  padded = jnp.pad(audio, pad, mode="reflect")
  idx = np.arange(num_frames(audio.shape[-1]))[:, None] * HOP_LENGTH + np.arange(N_FFT)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # Periodic Hann.
  spectrum = jnp.fft.rfft(padded[..., idx] * window.astype(np.float32), axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  mel = jnp.einsum("...tf,mf->...tm", power, mel_filters(n_mels),
                   precision=jax.lax.Precision.HIGHEST)
  log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
  log_spec = jnp.maximum(log_spec, jnp.max(log_spec, axis=(-2, -1), keepdims=True) - 8.0)
  return (log_spec + 4.0) / 4.0
