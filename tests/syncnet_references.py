"""Torch references for the published sync networks and syncnet_python's evaluation (test-only).

Re-implemented (not copied) in torch from the published sources, following their described
architectures (layer types, channel counts, kernel sizes, strides, paddings and order) and
evaluation algorithm, with their module names so the state-dict keys are the published ones:

* joonson/syncnet_python (MIT licence; github.com/joonson/syncnet_python): the SyncNet of
  `SyncNetModel.py` (class `S`: `netcnnaud`, `netfcaud`, `netcnnlip`, `netfclip`) and the
  offset search of `SyncNetInstance.py` (`calc_pdist`, `SyncNetInstance.evaluate`), starting
  from in-memory BGR uint8 frames and int16 PCM instead of its ffmpeg / cv2.imread /
  wavfile.read steps, with the 224x224 `cv2.resize` of Wav2Lip's
  `evaluation/scores_LSE/SyncNetInstance_calc_scores.py`.
* Rudrabha/Wav2Lip (github.com/Rudrabha/Wav2Lip): the conv + BatchNorm (+ residual) + ReLU
  block of `models/conv.py`, the expert `SyncNet_color` of `models/syncnet.py`
  (`face_encoder`, `audio_encoder`), the BCE-of-cosine loss of `color_syncnet_train.py` and
  the face slicing of `wav2lip_train.py`'s `get_sync_loss`.

Module registration order follows the published networks, so `randomize` / `calibrate` walk
the parameters in the published state-dict order.
"""
import cv2
import numpy as np
import python_speech_features
import torch
import torch.nn as nn
from torch.nn import functional as F


# --- syncnet_python's SyncNet ------------------------------------------------------------------
#
# Each stack is a flat nn.Sequential of conv, BatchNorm, ReLU and (where the stage has one) a
# max-pool, so the conv of stage k sits at the Sequential index the published keys use.

# (cin, cout, kernel, stride, padding, pool: (kernel, stride, padding) or None)
_AUDIO_STAGES = (
    (1, 64, (3, 3), 1, 1, ((1, 1), (1, 1), 0)),
    (64, 192, (3, 3), 1, 1, ((3, 3), (1, 2), 0)),
    (192, 384, (3, 3), 1, 1, None),
    (384, 256, (3, 3), 1, 1, None),
    (256, 256, (3, 3), 1, 1, ((3, 3), (2, 2), 0)),
    (256, 512, (5, 4), 1, 0, None),
)
_LIP_STAGES = (
    (3, 96, (5, 7, 7), (1, 2, 2), 0, ((1, 3, 3), (1, 2, 2), 0)),
    (96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    (256, 256, (1, 3, 3), 1, (0, 1, 1), None),
    (256, 256, (1, 3, 3), 1, (0, 1, 1), None),
    (256, 256, (1, 3, 3), 1, (0, 1, 1), ((1, 3, 3), (1, 2, 2), 0)),
    (256, 512, (1, 6, 6), 1, 0, None),
)


def _conv_stack(stages, conv, norm, pool):
  layers = []
  for cin, cout, kernel, stride, padding, pooling in stages:
    layers += [conv(cin, cout, kernel, stride=stride, padding=padding), norm(cout), nn.ReLU()]
    if pooling is not None:
      k, s, p = pooling
      layers.append(pool(k, stride=s, padding=p))
  return nn.Sequential(*layers)


def _embedding_head(width, out_dim):
  """Linear -> BatchNorm1d -> ReLU -> Linear (indices 0..3, as published)."""
  return nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
                       nn.Linear(width, out_dim))


class S(nn.Module):
  """syncnet_python's SyncNet: 5 lip frames [N, 3, 5, 224, 224] (BGR, 0..255) and 20 MFCC
  frames [N, 1, 13, 20] to `embedding_dim`-d embeddings (not normalised)."""

  def __init__(self, embedding_dim=1024):
    super().__init__()
    # Registration order = the published state-dict order.
    self.netcnnaud = _conv_stack(_AUDIO_STAGES, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
    self.netfcaud = _embedding_head(512, embedding_dim)
    self.netfclip = _embedding_head(512, embedding_dim)
    self.netcnnlip = _conv_stack(_LIP_STAGES, nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)

  def forward_aud(self, mfcc):
    return self.netfcaud(torch.flatten(self.netcnnaud(mfcc), 1))

  def forward_lip(self, frames):
    return self.netfclip(torch.flatten(self.netcnnlip(frames), 1))


# --- syncnet_python's offset search --------------------------------------------------------

def calc_pdist(feat1, feat2, vshift=10):
  """Distances [N, 2 * vshift + 1] from each `feat1[i]` to `feat2[i + k - vshift]`, k over the
  offsets, with zero vectors past either end of `feat2`."""
  num_offsets = 2 * vshift + 1
  padded = torch.cat([feat2.new_zeros(vshift, feat2.shape[1]), feat2,
                      feat2.new_zeros(vshift, feat2.shape[1])])
  rows = torch.arange(len(feat1))[:, None] + torch.arange(num_offsets)[None, :]
  shifted = padded[rows]                                             # [N, offsets, D]
  return F.pairwise_distance(feat1[:, None, :].expand_as(shifted), shifted)


def _embed_windows(net, frames, mfcc, num_windows, batch_size):
  """Lip and audio embeddings of windows t = 0 .. num_windows - 1: frames t .. t+4 and MFCC
  columns 4t .. 4t+19 (100 MFCC frames a second, 25 video frames a second)."""
  lip, aud = [], []
  for start in range(0, num_windows, batch_size):
    ts = range(start, min(num_windows, start + batch_size))
    lip.append(net.forward_lip(torch.stack([frames[:, t:t + 5] for t in ts])))
    aud.append(net.forward_aud(torch.stack([mfcc[:, :, 4 * t:4 * t + 20] for t in ts])))
  return torch.cat(lip), torch.cat(aud)


def evaluate(net, images, audio, vshift=15, batch_size=20):
  """syncnet_python's evaluation, from the loaded frames and audio on.

  images: list of BGR uint8 `[H, W, 3]` frames (what `cv2.imread` gives); audio: int16 `[S]`
  at 16 kHz (what `wavfile.read` gives). Each frame is resized to 224x224 (cv2, bilinear);
  the audio goes through `python_speech_features.mfcc` (13 coefficients, 100 frames a second);
  windows t < min(T, S // 640) - 5 are embedded; the offset with the smallest mean distance
  over the windows gives LSE-D (that distance) and LSE-C (median over offsets minus it).
  Returns (offset, conf, minval, mdist) as numpy values: offset = vshift - argmin.
  """
  net.eval()
  resized = np.stack([cv2.resize(img, (224, 224)) for img in images])    # [T, 224, 224, 3]
  frames = torch.from_numpy(resized.astype(np.float32)).permute(3, 0, 1, 2)  # [3, T, H, W]
  coefficients = python_speech_features.mfcc(audio, 16000)               # [F, 13]
  mfcc = torch.from_numpy(coefficients.T.astype(np.float32))[None]       # [1, 13, F]

  num_windows = min(len(images), len(audio) // 640) - 5
  with torch.no_grad():
    lip, aud = _embed_windows(net, frames, mfcc, num_windows, batch_size)
  mdist = calc_pdist(lip, aud, vshift=vshift).mean(dim=0)                # [offsets]
  minval, best = torch.min(mdist, 0)
  conf = torch.median(mdist) - minval
  return (vshift - best).numpy(), conf.numpy(), minval.numpy(), mdist.numpy()


# --- Wav2Lip's expert SyncNet_color --------------------------------------------------------

class ConvBlock(nn.Module):
  """conv -> BatchNorm (`conv_block.0`, `conv_block.1`), plus the input when `residual`, ->
  ReLU."""

  def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
    super().__init__()
    self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                    nn.BatchNorm2d(cout))
    self.residual = residual

  def forward(self, x):
    y = self.conv_block(x)
    return F.relu(y + x if self.residual else y)


# Stages: (cin, cout, stride of the entry 3x3 conv (padding 1), residual 3x3 convs after it).
_FACE_STAGES = ((32, 64, None, 2), (64, 128, 2, 3), (128, 256, 2, 2), (256, 512, 2, 2))
_MEL_STAGES = ((1, 32, 1, 2), (32, 64, (3, 1), 2), (64, 128, 3, 2), (128, 256, (3, 2), 2))


def _encoder(head, stages, tail):
  """ConvBlocks: `head` specs, then per stage its entry conv and residual convs, then `tail`
  specs; each spec is (cin, cout, kernel, stride, padding). Built in that order."""
  blocks = [ConvBlock(*spec) for spec in head]
  for cin, cout, stride, repeats in stages:
    if stride is not None:
      blocks.append(ConvBlock(cin, cout, 3, stride, 1))
    blocks += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(repeats)]
  blocks += [ConvBlock(*spec) for spec in tail]
  return nn.Sequential(*blocks)


def _face_encoder():
  # 15 channels (5 BGR frames) of the lower half face [48, 96]; the 5x5 entry conv of the
  # 64-channel stage has stride (1, 2) to square the map.
  head = [(15, 32, 7, 1, 3), (32, 64, 5, (1, 2), 1)]
  tail = [(512, 512, 3, 2, 1), (512, 512, 3, 1, 0), (512, 512, 1, 1, 0)]
  return _encoder(head, _FACE_STAGES, tail)


def _audio_encoder():
  # Mel [1, 80, 16].
  return _encoder([], _MEL_STAGES, [(256, 512, 3, 1, 0), (512, 512, 1, 1, 0)])


def _unit(x):
  return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class SyncNet_color(nn.Module):  # pylint: disable=invalid-name  (the published class name)
  """Wav2Lip's lip-sync expert: (mel [B, 1, 80, 16], faces [B, 15, 48, 96]) -> unit 512-d
  (audio, face) embeddings."""

  def __init__(self):
    super().__init__()
    self.face_encoder = _face_encoder()
    self.audio_encoder = _audio_encoder()

  def forward(self, audio_sequences, face_sequences):
    face = torch.flatten(self.face_encoder(face_sequences), 1)
    audio = torch.flatten(self.audio_encoder(audio_sequences), 1)
    return _unit(audio), _unit(face)


def cosine_loss(a, v, y):
  """Binary cross-entropy of the cosine similarity [B, 1] against the labels y [B, 1]."""
  return F.binary_cross_entropy(F.cosine_similarity(a, v)[:, None], y)


def sync_input(g, syncnet_T=5):  # pylint: disable=invalid-name
  """The expert's face input from `g` [B, 3, T, H, W] (BGR): the lower half of the first
  `syncnet_T` frames, their channels concatenated frame after frame -> [B, 3T, H//2, W]."""
  lower = g[:, :, :syncnet_T, g.shape[3] // 2:]
  b, c, t, h, w = lower.shape
  return lower.transpose(1, 2).reshape(b, t * c, h, w)


# --- random weights --------------------------------------------------------------------------

def randomize(net, seed=0, scale=0.1):
  """Perturbs every parameter and gives every BatchNorm random running statistics."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in net.parameters():
      p.add_(scale * torch.randn(p.shape, generator=g))
    for m in net.modules():
      if isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  return net


def calibrate(net, calls, seed=0):
  """Sets each BatchNorm's running mean to its batch mean over `calls` (zero-arg forward
  calls) and its running variance to the batch's second moment, then perturbs both, so
  activations stay O(1) at every depth (deep features of noise inputs barely vary across
  the batch: their variance alone would blow them up)."""
  g = torch.Generator().manual_seed(seed)
  norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
  for m in norms:
    m.reset_running_stats()
    m.momentum = None  # Cumulative average: one batch gives its own statistics.
  net.train()
  with torch.no_grad():
    for call in calls:
      call()
    for m in norms:
      m.momentum = 0.1
      m.running_var.add_(m.running_mean ** 2)
      m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn(m.running_mean.shape, generator=g))
      m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=g))
  return net.eval()
