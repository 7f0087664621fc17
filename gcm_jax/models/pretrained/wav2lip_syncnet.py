"""Wav2Lip's expert lip-sync discriminator (`models/syncnet.py` `SyncNet_color`, github
Rudrabha/Wav2Lip; the network behind Wav2Lip's and LatentSync's sync loss) in Flax, and the
import of its published `lipsync_expert.pth`.

Inputs (channels-last here, torch's in brackets):

* faces `[N, 48, 96, 15]` (torch `[N, 15, 48, 96]`): the lower half (rows 48..95) of 5
  consecutive 96x96 face crops, the frames' *BGR* channels stacked frame by frame
  (frame 0 B, G, R, frame 1 B, ...), values in [0, 1] (Wav2Lip reads frames with
  `cv2.imread` and divides by 255). `face_input` builds it from RGB frames.
* mel `[N, 16, 80]`: 16 mel frames (80 Hz, 0.2 s) x 80 bins in Wav2Lip's normalization
  (`audio.melspectrogram`, symmetric [-4, 4]), the layout of its `crop_audio_window`; torch
  takes the transpose `[N, 1, 80, 16]`.

Both encoders are stacks of Conv2d -> BatchNorm2d (-> + input) -> ReLU blocks ending at
`[N, 1, 1, 512]`; the embeddings are L2-normalized (`F.normalize`, eps 1e-12). The sync
probability is their cosine similarity (in [0, 1]: both follow a ReLU) and the expert's loss
`BCE(cos, y)` (`color_syncnet_train.cosine_loss`).

Wav2Lip's generator training never calls `syncnet.eval()`, so its expert ran with batch
statistics; this port defaults to the running statistics (`use_running_average=True`).

Weights: `load_wav2lip_syncnet("lipsync_expert.pth")` (Wav2Lip's checkpoint `{"state_dict",
"optimizer", "global_step", "global_epoch"}`; the loader unwraps "state_dict" and a
DataParallel `module.` prefix) returns the module and `{"params", "batch_stats"}`.
`SyncNet_color()` takes no arguments, so there is no config to read: every width is fixed by
the architecture and checked against the tensors' shapes (each missing, unexpected and
mis-shaped tensor named).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import weights
from gcm_jax.models.pretrained import conv_bn

SYNC_FRAMES = 5     # Frames per window.
FACE_SIZE = 96      # Face crops are 96 x 96; the expert sees the lower half.
MEL_FRAMES = 16     # Mel frames per window (syncnet_mel_step_size).
NUM_MELS = 80
EMBED_DIM = 512
NORMALIZE_EPS = 1e-12   # F.normalize.
COSINE_EPS = 1e-8       # F.cosine_similarity.
LOG_FLOOR = -100.0      # nn.BCELoss clamps its logs here.

_c = conv_bn.conv_spec
FACE_ENCODER: tuple[conv_bn.ConvSpec, ...] = (
    _c(32, 7, 1, 3),
    _c(64, 5, (1, 2), 1), _c(64, 3, 1, 1, True), _c(64, 3, 1, 1, True),
    _c(128, 3, 2, 1), _c(128, 3, 1, 1, True), _c(128, 3, 1, 1, True), _c(128, 3, 1, 1, True),
    _c(256, 3, 2, 1), _c(256, 3, 1, 1, True), _c(256, 3, 1, 1, True),
    _c(512, 3, 2, 1), _c(512, 3, 1, 1, True), _c(512, 3, 1, 1, True),
    _c(512, 3, 2, 1), _c(512, 3, 1, 0), _c(512, 1, 1, 0),
)
AUDIO_ENCODER: tuple[conv_bn.ConvSpec, ...] = (
    _c(32, 3, 1, 1), _c(32, 3, 1, 1, True), _c(32, 3, 1, 1, True),
    _c(64, 3, (3, 1), 1), _c(64, 3, 1, 1, True), _c(64, 3, 1, 1, True),
    _c(128, 3, 3, 1), _c(128, 3, 1, 1, True), _c(128, 3, 1, 1, True),
    _c(256, 3, (3, 2), 1), _c(256, 3, 1, 1, True), _c(256, 3, 1, 1, True),
    _c(512, 3, 1, 0), _c(512, 1, 1, 0),
)
ENCODERS = {"face_encoder": FACE_ENCODER, "audio_encoder": AUDIO_ENCODER}


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORMALIZE_EPS)


def _check(name: str, x: jax.Array, shape: tuple[int, ...]) -> None:
  if tuple(x.shape[1:]) != shape:
    raise ValueError(f"{name} must be [N, {', '.join(map(str, shape))}], got {tuple(x.shape)}")


class SyncNetColor(nn.Module):
  """Wav2Lip's `SyncNet_color`: `(mel, faces)` -> unit `(audio_emb, face_emb)`, `[N, 512]` each.

  Set `use_running_average=False` for batch statistics (then `mutable=["batch_stats"]`).
  """
  use_running_average: bool = True

  def setup(self):
    self.face_encoder = [conv_bn.ConvBN(s, self.use_running_average) for s in FACE_ENCODER]
    self.audio_encoder = [conv_bn.ConvBN(s, self.use_running_average) for s in AUDIO_ENCODER]

  def embed_face(self, faces: jax.Array) -> jax.Array:
    """`[N, 48, 96, 15]` stacked lower-half BGR faces in [0, 1] -> unit `[N, 512]`."""
    _check("faces", faces, (FACE_SIZE // 2, FACE_SIZE, 3 * SYNC_FRAMES))
    for block in self.face_encoder:
      faces = block(faces)
    return _normalize(faces.reshape(faces.shape[0], -1))

  def embed_audio(self, mel: jax.Array) -> jax.Array:
    """`[N, 16, 80]` mel windows (time, bin) -> unit `[N, 512]`."""
    _check("mel", mel, (MEL_FRAMES, NUM_MELS))
    x = jnp.swapaxes(mel, 1, 2)[..., None]  # [N, 80, 16, 1], torch's [N, 1, 80, 16].
    for block in self.audio_encoder:
      x = block(x)
    return _normalize(x.reshape(x.shape[0], -1))

  def __call__(self, mel: jax.Array, faces: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(audio embeddings, face embeddings), as torch's `forward(audio_sequences, faces)`."""
    return self.embed_audio(mel), self.embed_face(faces)


def face_input(frames: jax.Array) -> jax.Array:
  """RGB face windows `[N, 5, 96, 96, 3]` in [0, 1] -> the expert's `[N, 48, 96, 15]`.

  Flips to BGR, keeps the lower half (`x[:, H // 2:]`) and stacks the frames on channels.
  """
  _check("frames", frames, (SYNC_FRAMES, FACE_SIZE, FACE_SIZE, 3))
  x = frames[:, :, FACE_SIZE // 2:, :, ::-1]                  # [N, 5, 48, 96, 3] BGR
  n, t, h, w, c = x.shape
  return jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(n, h, w, t * c)


def sync_probability(audio_emb: jax.Array, face_emb: jax.Array) -> jax.Array:
  """`F.cosine_similarity` of `[N, D]` embeddings -> `[N]` (in [0, 1] for the expert's)."""
  dot = jnp.sum(audio_emb * face_emb, axis=-1)
  norms = jnp.sum(audio_emb ** 2, axis=-1) * jnp.sum(face_emb ** 2, axis=-1)
  return dot / jnp.sqrt(jnp.maximum(norms, COSINE_EPS ** 2))


def expert_loss(audio_emb: jax.Array, face_emb: jax.Array, y: jax.Array) -> jax.Array:
  """Wav2Lip's `cosine_loss`: mean BCE of `sync_probability` against labels `y` `[N]`."""
  p = sync_probability(audio_emb, face_emb)
  log_p = jnp.maximum(jnp.log(p), LOG_FLOOR)
  log_q = jnp.maximum(jnp.log1p(-p), LOG_FLOOR)
  return -jnp.mean(y * log_p + (1.0 - y) * log_q)


def example_inputs() -> tuple[np.ndarray, np.ndarray]:
  """One zero mel window `[1, 16, 80]` and one zero face window `[1, 48, 96, 15]`."""
  return (np.zeros((1, MEL_FRAMES, NUM_MELS), np.float32),
          np.zeros((1, FACE_SIZE // 2, FACE_SIZE, 3 * SYNC_FRAMES), np.float32))


def name_map() -> list[weights.Mapping]:
  """Variables-tree paths <- `SyncNet_color` state-dict keys (BatchNorm stats included)."""
  return [m for name, encoder in ENCODERS.items() for i in range(len(encoder))
          for m in conv_bn.conv_bn_map(f"{name}_{i}", f"{name}.{i}.conv_block.0",
                                       f"{name}.{i}.conv_block.1")]


def import_variables(state_dict: weights.StateDict, module: SyncNetColor,
                     source: str = "checkpoint") -> dict[str, Any]:
  """`{"params", "batch_stats"}` for `module` from a `SyncNet_color` state dict.

  A DataParallel `module.` prefix is removed first (as Wav2Lip's `load_checkpoint` does).

  Raises:
    WeightImportError: listing every missing, unexpected and mis-shaped tensor.
  """
  state = {k.removeprefix("module."): v for k, v in state_dict.items()}
  expected = weights.expected_variables(module, *example_inputs())
  return weights.import_params(state, name_map(), expected,
                               ignore=weights.BATCH_NORM_IGNORE, source=source)


def load_wav2lip_syncnet(path: str) -> tuple[SyncNetColor, dict[str, Any]]:
  """Loads Wav2Lip's `lipsync_expert.pth` (its "state_dict" is unwrapped by the reader).

  Returns:
    (module, variables): `module.apply(variables, mel, faces)` -> (audio_emb, face_emb).

  Raises:
    WeightImportError: unreadable file, or a state dict that does not fit (all listed).
  """
  module = SyncNetColor()
  return module, import_variables(weights.load_state_dict(path), module, source=path)
