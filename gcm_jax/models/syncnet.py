"""SyncNet: the audio and visual towers and the windows they read.

Conventions (Wav2Lip `SyncNet_color`, syncnet_python):

* Visual input: 5 consecutive frames, lower half of the face (rows `H//2:`), RGB in [-1, 1],
  `[B, 5, H - H//2, W, 3]`; the 5 frames are stacked on channels (15 channels).
* Audio input: 16 log-mel frames x 80 bins in [-4, 4] (0.2 s at 80 Hz), `[B, 16, 80]`, seen as a
  1-channel image of 80 (mel) x 16 (time), as in Wav2Lip.
* Both towers end with Dense -> ReLU -> L2 normalization (Wav2Lip), so the cosine similarity of a
  pair lies in [0, 1] and is read as the probability that the pair is in sync.
* The audio window of the 5-frame video window starting at frame t is `mel[:, t + a]`, where `mel`
  is the pipeline's per-frame windows `[B, T, 16, 80]` and
  `a = frame_offset_for_alignment(alignment)`.
  With 'center' alignment (`gcm_jax.data.audio.window_starts`, the pipeline default) the window of
  frame t + 2, the middle of the 5 frames, covers the same 0.2 s as the video window: a = 2;
  with Wav2Lip's 'start' alignment a = 0.

The loss built on it is `gcm_jax.alignment.sync_loss`; syncnet_python's read-out of its
embeddings (LSE-D, LSE-C, AV offset) is `gcm_jax.models.sync_offsets`.
"""
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

SYNC_FRAMES = 5      # video frames per SyncNet window
MEL_FRAMES = 16      # mel frames per SyncNet window (0.2 s at 80 Hz)
NUM_MELS = 80
MEL_SCALE = 4.0      # Wav2Lip mels are in [-4, 4]


def _groups(channels: int) -> int:
  return min(8, channels)


class _ConvBlock(nn.Module):
  """Conv -> GroupNorm -> ReLU, plus a residual conv when the shape is unchanged."""
  features: int
  strides: Tuple[int, int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), strides=self.strides)(x)
    x = nn.relu(nn.GroupNorm(_groups(self.features))(x))
    y = nn.Conv(self.features, (3, 3))(x)
    return nn.relu(x + nn.GroupNorm(_groups(self.features))(y))


class _Tower(nn.Module):
  """Conv stages -> global average pool -> Dense -> ReLU -> L2 normalize."""
  widths: Sequence[int]
  strides: Sequence[Tuple[int, int]]
  embed_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width, stride in zip(self.widths, self.strides):
      x = _ConvBlock(width, stride)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.relu(nn.Dense(self.embed_dim)(x))
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12))


class SyncNet(nn.Module):
  """Two towers mapping a 5-frame lower-face window and a 16-frame mel window to unit vectors.

  Attributes:
    image_size: (H, W) of the full face frames the model is trained on; `lipsync_loss` resizes
      other resolutions to it.
    embed_dim: embedding size D.
    visual_widths / audio_widths: channels per conv stage (each stage halves the resolution).
  """
  image_size: Tuple[int, int] = (32, 32)
  embed_dim: int = 128
  visual_widths: Sequence[int] = (32, 64, 128)
  audio_widths: Sequence[int] = (32, 64, 128, 128)

  def setup(self):
    self.visual = _Tower(self.visual_widths, [(2, 2)] * len(self.visual_widths), self.embed_dim)
    # 80 x 16 (mel x time): halve the mel axis first, then both.
    audio_strides = [(2, 1)] + [(2, 2)] * (len(self.audio_widths) - 1)
    self.audio = _Tower(self.audio_widths, audio_strides, self.embed_dim)

  def embed_video(self, frames: jax.Array) -> jax.Array:
    """[B, 5, h, W, 3] lower-half frames in [-1, 1] -> [B, D] unit embeddings."""
    if frames.ndim != 5 or frames.shape[1] != SYNC_FRAMES or frames.shape[-1] != 3:
      raise ValueError(f"frames must be [B, {SYNC_FRAMES}, h, W, 3], got {tuple(frames.shape)}")
    b, n, h, w, c = frames.shape
    x = jnp.transpose(frames, (0, 2, 3, 1, 4)).reshape(b, h, w, n * c)
    return self.visual(x)

  def embed_audio(self, mel: jax.Array) -> jax.Array:
    """[B, 16, 80] log-mel window in [-4, 4] -> [B, D] unit embeddings."""
    if mel.ndim != 3 or mel.shape[1:] != (MEL_FRAMES, NUM_MELS):
      raise ValueError(f"mel must be [B, {MEL_FRAMES}, {NUM_MELS}], got {tuple(mel.shape)}")
    x = jnp.swapaxes(mel / MEL_SCALE, 1, 2)[..., None]  # [B, 80, 16, 1]
    return self.audio(x)

  def __call__(self, frames: jax.Array, mel: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Returns (video_emb [B, D], audio_emb [B, D])."""
    return self.embed_video(frames), self.embed_audio(mel)


def lower_half(frames: jax.Array) -> jax.Array:
  """[..., H, W, C] -> [..., H - H//2, W, C]: the mouth region used by SyncNet."""
  return frames[..., frames.shape[-3] // 2:, :, :]


def sync_windows(video: jax.Array, mel: jax.Array, starts: jax.Array,
                 audio_frame_offset: int) -> Tuple[jax.Array, jax.Array]:
  """Cuts the SyncNet input pair starting at video frame `starts[b]` for every clip.

  Args:
    video: [B, T, H, W, 3] in [-1, 1].
    mel: [B, T, 16, 80] per-frame mel windows (pipeline key 'mel').
    starts: [B] int first frame of each 5-frame window, in [0, T - 5].
    audio_frame_offset: index shift from the first video frame to the matching mel window.

  Returns:
    frames [B, 5, H - H//2, W, 3] (lower half) and mel windows [B, 16, 80].
  """
  check_video_mel(video, mel)
  if starts.shape != video.shape[:1]:
    raise ValueError(f"starts must be [B]={video.shape[:1]}, got {tuple(starts.shape)}")
  frames = jax.vmap(
      lambda v, s: jax.lax.dynamic_slice_in_dim(v, s, SYNC_FRAMES, axis=0))(video, starts)
  mel_t = jnp.clip(starts + audio_frame_offset, 0, mel.shape[1] - 1)
  return lower_half(frames), mel[jnp.arange(mel.shape[0]), mel_t]


def to_image_size(video: jax.Array, image_size: Tuple[int, int]) -> jax.Array:
  """Video `[B, T, H, W, C]` resized to `image_size` (h, w) if it differs (bilinear, with
  antialiasing when downsampling: `jax.image.resize`), e.g. 64-px frames for a 32-px SyncNet."""
  b, t, h, w, c = video.shape
  if (h, w) == tuple(image_size):
    return video
  return jax.image.resize(video, (b, t, *image_size, c), "linear")


def check_video_mel(video: jax.Array, mel: jax.Array) -> None:
  """Raises ValueError unless video is [B, T, H, W, 3] and mel [B, T, 16, 80] with T >= 5."""
  if video.ndim != 5 or video.shape[-1] != 3:
    raise ValueError(f"video must be [B, T, H, W, 3], got {tuple(video.shape)}")
  if mel.ndim != 4 or mel.shape[2:] != (MEL_FRAMES, NUM_MELS) or mel.shape[:2] != video.shape[:2]:
    raise ValueError(f"mel must be [B, T, {MEL_FRAMES}, {NUM_MELS}] with the video's B, T="
                     f"{tuple(video.shape[:2])}, got {tuple(mel.shape)}")
  if video.shape[1] < SYNC_FRAMES:
    raise ValueError(f"need at least {SYNC_FRAMES} frames, got T={video.shape[1]}")


def frame_offset_for_alignment(mel_alignment: str) -> int:
  """Offset from a 5-frame window's first frame to its mel window, given how the pipeline
  aligns per-frame mel windows (`gcm_jax.data.audio.window_starts`): 'center' -> 2 (the window
  of the middle frame spans the 5 frames), 'start' (Wav2Lip) -> 0."""
  offsets = {"center": SYNC_FRAMES // 2, "start": 0}
  if mel_alignment not in offsets:
    raise ValueError(f"mel_alignment must be 'center' or 'start', got {mel_alignment!r}")
  return offsets[mel_alignment]
