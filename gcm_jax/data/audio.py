"""Log-mel audio front end with Wav2Lip's conventions, in numpy and JAX.

Conventions (DESIGN.md, Wav2Lip `hparams.py` / `audio.py` with librosa 0.7):
16 kHz mono, pre-emphasis 0.97 (`lfilter([1, -k], [1], x)`), STFT with n_fft = win = 800,
hop 200, periodic Hann window, `center=True` with reflect padding of n_fft // 2, magnitude
(not power) spectrum, 80 Slaney mel filters (librosa's default `htk=False`, area
normalization) between 55 and 7600 Hz, `20 log10(max(1e-5, x)) - 20` dB, then the
symmetric normalization `clip(8 (S + 100) / 100 - 4, -4, 4)`.

Mel frame `m` is centered on sample `m * 200`, i.e. time `m / 80` s; a clip of `S` samples
has `1 + S // 200` mel frames. At 25 fps a video frame lasts 3.2 mel frames.

The numpy functions (`melspectrogram`, float64 inside) are the reference; the JAX
functions (`melspectrogram_jax`) compute the same thing in float32 and jit/vmap over
leading batch dimensions.
"""
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 800
HOP_SIZE = 200
WIN_SIZE = 800
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
FPS = 25
MEL_FPS = SAMPLE_RATE / HOP_SIZE  # 80 mel frames per second.
MEL_FRAMES_PER_VIDEO_FRAME = MEL_FPS / FPS  # 3.2
SAMPLES_PER_VIDEO_FRAME = SAMPLE_RATE // FPS  # 640
SILENCE_VALUE = -MAX_ABS_VALUE  # Normalized log-mel value of digital silence.

Alignment = Literal["center", "start"]


def check_sample_rate(sample_rate: int) -> None:
  """Raises ValueError unless `sample_rate` is the front end's 16 kHz."""
  if sample_rate != SAMPLE_RATE:
    raise ValueError(
        f"audio must be sampled at {SAMPLE_RATE} Hz, got {sample_rate} Hz; call "
        f"gcm_jax.data.audio.resample(wav, {sample_rate}, {SAMPLE_RATE}) first")


def _check_wav(wav: np.ndarray) -> None:
  if wav.ndim < 1 or wav.shape[-1] == 0:
    raise ValueError(f"audio must have shape [..., num_samples > 0], got {wav.shape}")
  if wav.shape[-1] <= N_FFT // 2:
    raise ValueError(
        f"audio has {wav.shape[-1]} samples; reflect padding needs more than {N_FFT // 2}")


def resample(wav: np.ndarray, sample_rate_in: int, sample_rate_out: int = SAMPLE_RATE
             ) -> np.ndarray:
  """Band-limited (FFT) resampling of `wav` `[..., N]` to `[..., round(N * out / in)]`.

  The spectrum is truncated (downsampling) or zero-padded (upsampling), like
  `scipy.signal.resample`; the signal is treated as periodic, so callers pad with silence.
  """
  if sample_rate_in <= 0 or sample_rate_out <= 0:
    raise ValueError(f"sample rates must be positive, got {sample_rate_in}, {sample_rate_out}")
  wav = np.asarray(wav, np.float64)
  n_in = wav.shape[-1]
  if sample_rate_in == sample_rate_out:
    return wav.astype(np.float32)
  n_out = int(round(n_in * sample_rate_out / sample_rate_in))
  spec = np.fft.rfft(wav, axis=-1)
  n_bins = n_out // 2 + 1
  if n_bins <= spec.shape[-1]:
    spec = spec[..., :n_bins]
  else:
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, n_bins - spec.shape[-1])]
    spec = np.pad(spec, pad)
  if n_out % 2 == 0 and n_out < n_in:  # Halve the Nyquist bin for a real signal.
    spec[..., -1] *= 0.5
  return (np.fft.irfft(spec, n_out, axis=-1) * (n_out / n_in)).astype(np.float32)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
  """Slaney mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above."""
  hz = np.asarray(hz, np.float64)
  f_sp = 200.0 / 3
  min_log_hz = 1000.0
  logstep = np.log(6.4) / 27.0
  linear = hz / f_sp
  log = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
  return np.where(hz >= min_log_hz, log, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
  """Inverse of `hz_to_mel`."""
  mel = np.asarray(mel, np.float64)
  f_sp = 200.0 / 3
  min_log_hz = 1000.0
  min_log_mel = min_log_hz / f_sp
  logstep = np.log(6.4) / 27.0
  return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                  f_sp * mel)


@functools.cache
def mel_filterbank() -> np.ndarray:
  """Slaney-normalized triangular mel filters `[NUM_MELS, N_FFT // 2 + 1]` (float64).

  Same as `librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)`.
  """
  mel_f = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), NUM_MELS + 2))
  fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
  fdiff = np.diff(mel_f)
  ramps = mel_f[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  enorm = 2.0 / (mel_f[2:] - mel_f[:-2])
  weights = weights * enorm[:, None]
  weights.setflags(write=False)
  return weights


@functools.cache
def hann_window() -> np.ndarray:
  """Periodic Hann window `[WIN_SIZE]` (scipy `get_window('hann', 800, fftbins=True)`)."""
  n = np.arange(WIN_SIZE)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN_SIZE)
  window.setflags(write=False)
  return window


def num_mel_frames(num_samples: int) -> int:
  """Number of mel frames for `num_samples` audio samples (`center=True`)."""
  return 1 + num_samples // HOP_SIZE


def preemphasis(wav: np.ndarray) -> np.ndarray:
  """`y[n] = x[n] - 0.97 x[n-1]` along the last axis, zero initial state."""
  wav = np.asarray(wav, np.float64)
  out = wav.copy()
  out[..., 1:] -= PREEMPHASIS * wav[..., :-1]
  return out


def stft_magnitude(wav: np.ndarray) -> np.ndarray:
  """|STFT| `[..., num_frames, N_FFT // 2 + 1]` of `wav` `[..., N]` (float64, librosa 0.7)."""
  pad = [(0, 0)] * (wav.ndim - 1) + [(N_FFT // 2, N_FFT // 2)]
  padded = np.pad(np.asarray(wav, np.float64), pad, mode="reflect")
  n_frames = num_mel_frames(wav.shape[-1])
  idx = np.arange(n_frames)[:, None] * HOP_SIZE + np.arange(N_FFT)[None, :]
  frames = padded[..., idx] * hann_window()
  return np.abs(np.fft.rfft(frames, axis=-1))


def amp_to_normalized_db(mel_amp: np.ndarray) -> np.ndarray:
  """Mel amplitudes -> Wav2Lip's normalized dB in [-4, 4]."""
  min_level = 10.0 ** (MIN_LEVEL_DB / 20)
  db = 20 * np.log10(np.maximum(min_level, mel_amp)) - REF_LEVEL_DB
  scaled = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS_VALUE
  return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def melspectrogram(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Normalized log-mel spectrogram (numpy reference).

  Args:
    wav: float audio `[..., N]` in [-1, 1] at 16 kHz, `N > 400`.
    sample_rate: sample rate of `wav`; anything but 16000 raises.

  Returns:
    float32 `[..., 1 + N // 200, 80]` (time-major, unlike Wav2Lip's `[80, time]`), in [-4, 4].
  """
  check_sample_rate(sample_rate)
  wav = np.asarray(wav)
  _check_wav(wav)
  mag = stft_magnitude(preemphasis(wav))
  # einsum, not `@`: a small BLAS matmul in the input pipeline spins OpenBLAS threads
  # against the XLA threads of the running train step (10x slower there).
  mel_amp = np.einsum("...f,mf->...m", mag, mel_filterbank())
  return amp_to_normalized_db(mel_amp).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("sample_rate",))
def melspectrogram_jax(wav: jax.Array, sample_rate: int = SAMPLE_RATE) -> jax.Array:
  """JAX version of `melspectrogram`: float32 `[..., N]` -> `[..., 1 + N // 200, 80]`."""
  check_sample_rate(sample_rate)
  _check_wav(wav)
  wav = jnp.asarray(wav, jnp.float32)
  emph = jnp.concatenate([wav[..., :1], wav[..., 1:] - PREEMPHASIS * wav[..., :-1]], axis=-1)
  pad = [(0, 0)] * (wav.ndim - 1) + [(N_FFT // 2, N_FFT // 2)]
  padded = jnp.pad(emph, pad, mode="reflect")
  n_frames = num_mel_frames(wav.shape[-1])
  idx = np.arange(n_frames)[:, None] * HOP_SIZE + np.arange(N_FFT)[None, :]
  frames = padded[..., idx] * jnp.asarray(hann_window(), jnp.float32)
  mag = jnp.abs(jnp.fft.rfft(frames, axis=-1))
  mel_amp = jnp.einsum("...f,mf->...m", mag, jnp.asarray(mel_filterbank(), jnp.float32),
                       precision=jax.lax.Precision.HIGHEST)
  min_level = 10.0 ** (MIN_LEVEL_DB / 20)
  db = 20 * jnp.log10(jnp.maximum(min_level, mel_amp)) - REF_LEVEL_DB
  scaled = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS_VALUE
  return jnp.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def window_starts(num_frames: int, window: int, alignment: Alignment = "center",
                  fps: int = FPS) -> np.ndarray:
  """First mel frame index `[num_frames]` of each video frame's window (may be < 0).

  'start' (Wav2Lip/SyncNet `crop_audio_window`): `int(80 * t / fps)`, the window covers
  the 0.2 s (for `window=16`) beginning at frame `t`. 'center': the window is centered on
  the middle of frame `t`, time `(t + 0.5) / fps`, i.e. starts at
  `round(80 * (t + 0.5) / fps) - window // 2`.
  """
  t = np.arange(num_frames)
  mel_per_frame = MEL_FPS / fps
  if alignment == "start":
    return np.floor(t * mel_per_frame + 1e-9).astype(np.int64)
  if alignment == "center":
    return np.floor((t + 0.5) * mel_per_frame + 0.5).astype(np.int64) - window // 2
  raise ValueError(f"alignment must be 'center' or 'start', got {alignment!r}")


def frame_windows(mel: np.ndarray, num_frames: int, window: int = 16,
                  alignment: Alignment = "center", fps: int = FPS) -> np.ndarray:
  """Per-video-frame mel windows.

  Args:
    mel: `[..., M, 80]` log-mel frames of the clip (80 Hz, frame m at m / 80 s).
    num_frames: number of video frames `T` of the clip.
    window: mel frames per window `W` (16 = 0.2 s).
    alignment: 'center' or 'start' (see `window_starts`).
    fps: video frame rate.

  Returns:
    `[..., T, W, 80]`; mel frames outside `[0, M)` are filled with the silence value -4.
  """
  if window <= 0:
    raise ValueError(f"window must be positive, got {window}")
  mel = np.asarray(mel)
  starts = window_starts(num_frames, window, alignment, fps)
  idx = starts[:, None] + np.arange(window)[None, :]
  lo = max(0, -int(idx.min()))
  hi = max(0, int(idx.max()) + 1 - mel.shape[-2])
  pad = [(0, 0)] * (mel.ndim - 2) + [(lo, hi), (0, 0)]
  padded = np.pad(mel, pad, constant_values=SILENCE_VALUE)
  return padded[..., idx + lo, :]
