"""LSE-D / LSE-C with syncnet_python's network, exactly as its `SyncNetInstance.evaluate`
(github joonson/syncnet_python; Wav2Lip's `evaluation/scores_LSE` copy, which the papers run,
adds the 224x224 resize), so the numbers compare with published tables when the network is
`syncnet_v2.model` (`gcm_jax.models.pretrained.syncnet_python.load_syncnet_python`).

The evaluation, step by step (T video frames at 25 fps, S audio samples at 16 kHz):

1. Frames: decoded uint8 images in BGR order (`cv2.imread`), each resized to 224x224 with
   `cv2.resize` (bilinear) when it is not already, then fed as float 0..255.
2. Audio: 16-bit PCM values (`scipy.io.wavfile.read`), not rescaled; 13 MFCCs at 100 Hz
   from `python_speech_features.mfcc` with its defaults (`mfcc` here, a float64
   transcription): pre-emphasis 0.97, 25 ms rectangular frames every 10 ms (zero-padded
   at the end), |rfft_512|^2 / 512, 26 triangular mel filters on 0..8 kHz, log, orthonormal
   DCT-II, first 13, lifter 22, coefficient 0 replaced by the log frame energy.
3. Windows: `min_length = min(T, S // 640)`, windows i = 0 .. min_length - 6 (syncnet_python's
   `lastframe = min_length - 5`, so one window fewer than fits); window i is frames i..i+4
   and MFCC frames 4i .. 4i+19.
4. Scores (`gcm_jax.models.sync_offsets.sync_scores`): `dists[i, j] = ||v_i - a_{i+j-15} +
   1e-6||` with zero audio embeddings outside the clip; `mdist = mean_i dists`; LSE-D =
   min mdist, LSE-C = median mdist - LSE-D, offset = 15 - argmin mdist.

Not reproduced: syncnet_python's face detection and crop (`run_pipeline.py`) and the JPEG
round trip of its frame extraction; give face-centred crops (the whole frame of a
talking-head video generated at face scale).
"""
import functools
from typing import Any, Callable, Union

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import video_io
from gcm_jax.models import sync_offsets
from gcm_jax.models.pretrained import syncnet_python as snp


SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS   # 640
MFCC_PER_FRAME = 4                       # 100 Hz MFCC / 25 fps.
VSHIFT = 15                              # run_syncnet.py's --vshift.
BATCH_SIZE = 20                          # run_syncnet.py's --batch_size.
PCM_SCALE = 32768.0                      # Float audio in [-1, 1) <-> int16 (wav_io.read_wav).


# --- MFCC: python_speech_features.mfcc -------------------------------------------------------

def _round_half_up(x: float) -> int:
  return int(np.floor(x + 0.5))


def _hz2mel(hz):
  return 2595 * np.log10(1 + hz / 700.)


def _mel2hz(mel):
  return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=8)
def mel_filterbank(nfilt: int = 26, nfft: int = 512, samplerate: int = SAMPLE_RATE,
                   lowfreq: float = 0.0, highfreq: Union[float, None] = None) -> np.ndarray:
  """`python_speech_features.get_filterbanks`: `[nfilt, nfft // 2 + 1]` float64 triangles."""
  highfreq = highfreq or samplerate / 2
  melpoints = np.linspace(_hz2mel(lowfreq), _hz2mel(highfreq), nfilt + 2)
  bins = np.floor((nfft + 1) * _mel2hz(melpoints) / samplerate)
  fbank = np.zeros([nfilt, nfft // 2 + 1])
  for j in range(nfilt):
    for i in range(int(bins[j]), int(bins[j + 1])):
      fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
    for i in range(int(bins[j + 1]), int(bins[j + 2])):
      fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
  fbank.setflags(write=False)
  return fbank


def _dct2_ortho(x: np.ndarray) -> np.ndarray:
  """`scipy.fftpack.dct(x, type=2, axis=1, norm='ortho')` of `[F, N]`."""
  n = x.shape[1]
  k = np.arange(n)[:, None]
  basis = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))  # [k, n]
  scale = np.full(n, np.sqrt(2.0 / n))
  scale[0] = np.sqrt(1.0 / n)
  return (x @ basis.T) * scale


def mfcc(signal: np.ndarray, samplerate: int = SAMPLE_RATE, winlen: float = 0.025,
         winstep: float = 0.01, numcep: int = 13, nfilt: int = 26, nfft: int = 512,
         lowfreq: float = 0.0, highfreq: Union[float, None] = None, preemph: float = 0.97,
         ceplifter: int = 22, append_energy: bool = True) -> np.ndarray:
  """`python_speech_features.mfcc` (0.6, rectangular window) in float64.

  Args:
    signal: `[S]` samples, at the scale the reference sees (16-bit PCM values for
      syncnet_python: see `pcm16`).

  Returns:
    `[F, numcep]` with `F = 1 + ceil((S - frame_len) / frame_step)` (1 if S <= frame_len).
  """
  signal = np.asarray(signal, np.float64).reshape(-1)
  highfreq = highfreq or samplerate / 2
  signal = np.append(signal[0], signal[1:] - preemph * signal[:-1])
  frame_len = _round_half_up(winlen * samplerate)
  frame_step = _round_half_up(winstep * samplerate)
  slen = len(signal)
  numframes = 1 if slen <= frame_len else 1 + int(np.ceil((slen - frame_len) / frame_step))
  padded = np.concatenate([signal, np.zeros((numframes - 1) * frame_step + frame_len - slen)])
  idx = np.arange(frame_len)[None, :] + frame_step * np.arange(numframes)[:, None]
  pspec = np.abs(np.fft.rfft(padded[idx], nfft)) ** 2 / nfft       # [F, nfft // 2 + 1]
  energy = pspec.sum(axis=1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  feat = pspec @ mel_filterbank(nfilt, nfft, samplerate, lowfreq, highfreq).T
  feat = np.where(feat == 0, np.finfo(float).eps, feat)
  feat = _dct2_ortho(np.log(feat))[:, :numcep]
  if ceplifter > 0:
    feat = feat * (1 + (ceplifter / 2.) * np.sin(np.pi * np.arange(numcep) / ceplifter))
  if append_energy:
    feat[:, 0] = np.log(energy)
  return feat


# --- inputs ----------------------------------------------------------------------------------

def pcm16(audio: np.ndarray) -> np.ndarray:
  """Mono audio `[S]` -> float64 16-bit PCM values, what syncnet_python's `wavfile.read` gives.

  Integer audio is taken as PCM values; float audio as [-1, 1) (`wav_io.read_wav`'s scale),
  quantized as ffmpeg's `pcm_s16le` encoder does (`lrint(x * 32768)`, clipped).
  """
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono [S], got shape {audio.shape}")
  if np.issubdtype(audio.dtype, np.integer):
    return audio.astype(np.float64)
  return np.clip(np.rint(audio.astype(np.float64) * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1)


def frames_bgr224(video: np.ndarray) -> np.ndarray:
  """RGB video `[T, H, W, 3]` (uint8, or float in [-1, 1]) -> `[T, 224, 224, 3]` float32 BGR
  0..255, resized with `cv2.resize` (bilinear) when not 224x224, as Wav2Lip's scoring copy."""
  video = np.asarray(video)
  if video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f"video must be [T, H, W, 3], got shape {video.shape}")
  frames = video_io.to_uint8(video)[..., ::-1]
  size = (snp.FRAME_SIZE, snp.FRAME_SIZE)
  if frames.shape[1:3] != size:
    frames = np.stack([cv2.resize(np.ascontiguousarray(f), size) for f in frames])
  return frames.astype(np.float32)


def num_windows(num_frames: int, num_samples: int) -> int:
  """Windows syncnet_python evaluates: `min(T, S // 640) - 5`."""
  return min(num_frames, num_samples // SAMPLES_PER_FRAME) - snp.VIDEO_FRAMES


# --- embeddings and scores -------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _tower(net: snp.SyncNetPython, method: str) -> Callable[[Any, jax.Array], jax.Array]:
  return jax.jit(lambda variables, x: net.apply(variables, x, method=method))


def window_embeddings(net: snp.SyncNetPython, variables: Any, frames: np.ndarray,
                      mfcc_feat: np.ndarray, n: int,
                      batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
  """Embeddings of windows 0..n-1, built batch by batch (never all windows at once).

  Args:
    frames: `[T, 224, 224, 3]` from `frames_bgr224`.
    mfcc_feat: `[F, 13]` from `mfcc(pcm16(audio))`.
    n: number of windows (`num_windows`); window i is frames i..i+4 and MFCC frames
      4i..4i+19.
    batch_size: windows per call (each batch is zero-padded to it: one compiled shape).

  Returns:
    (video embeddings `[n, D]`, audio embeddings `[n, D]`), float32.
  """
  if n < 1:
    raise ValueError(f"LSE needs at least 6 frames and 0.24 s of audio ({snp.VIDEO_FRAMES + 1} "
                     f"frames at {FPS} fps); got {n + snp.VIDEO_FRAMES} usable frames")
  cc = np.asarray(mfcc_feat, np.float32).T                        # [13, F]
  step, width = MFCC_PER_FRAME, snp.MFCC_WINDOW
  video_fn, audio_fn = _tower(net, "embed_video"), _tower(net, "embed_audio")
  video_emb, audio_emb = [], []
  for start in range(0, n, batch_size):
    idx = range(start, min(n, start + batch_size))
    pad = batch_size - len(idx)
    lips = np.stack([frames[i:i + snp.VIDEO_FRAMES] for i in idx])
    mfccs = np.stack([cc[:, step * i:step * i + width] for i in idx])
    lips = np.concatenate([lips, np.zeros((pad,) + lips.shape[1:], np.float32)])
    mfccs = np.concatenate([mfccs, np.zeros((pad,) + mfccs.shape[1:], np.float32)])
    video_emb.append(np.asarray(video_fn(variables, lips))[:len(idx)])
    audio_emb.append(np.asarray(audio_fn(variables, mfccs))[:len(idx)])
  return np.concatenate(video_emb), np.concatenate(audio_emb)


def lse_syncnet_python(net: snp.SyncNetPython, variables: Any, video: np.ndarray,
                       audio_16k: np.ndarray, vshift: int = VSHIFT,
                       batch_size: int = BATCH_SIZE) -> dict[str, Any]:
  """LSE-D, LSE-C and AV offset of one clip, as syncnet_python's `SyncNetInstance.evaluate`.

  Args:
    net, variables: from `load_syncnet_python` (`syncnet_v2.model` for published numbers).
    video: `[T, H, W, 3]` RGB face crops at 25 fps, uint8 or float in [-1, 1].
    audio_16k: `[S]` mono audio at 16 kHz, int16 PCM or float in [-1, 1).
    vshift: largest offset searched, in frames.
    batch_size: windows per network call (does not change the result).

  Returns:
    {"lse_d": float, "lse_c": float, "offset": int (frames; + = audio leads video),
     "mdist": `[2 * vshift + 1]` mean distance per offset, "num_windows": int}.
  """
  frames = frames_bgr224(video)
  pcm = pcm16(audio_16k)
  n = num_windows(len(frames), len(pcm))
  v, a = window_embeddings(net, variables, frames, mfcc(pcm), n, batch_size)
  scores = sync_offsets.sync_scores(jnp.asarray(v), jnp.asarray(a), vshift)
  return {"lse_d": float(scores["lse_d"]), "lse_c": float(scores["lse_c"]),
          "offset": int(scores["offset"]), "mdist": np.asarray(scores["mdist"]),
          "num_windows": n}
