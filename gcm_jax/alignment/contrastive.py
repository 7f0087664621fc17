"""Contrastive losses: symmetric InfoNCE (CLIP), triplet with margin, siamese distance loss.

Every loss works in two settings:

* **Global arrays under `jax.jit`** (`axis_name=None`, the default): pass the full `[N, D]`
  embeddings (they may be `jax.Array`s sharded with a `NamedSharding` over the batch); XLA
  inserts the collectives. This is what the train steps in this repo use.
* **Inside `jax.shard_map`** (`axis_name="data"` or a tuple such as `("data", "fsdp")`): pass
  the *local* `[n, D]` shard. Embeddings are all-gathered over `axis_name` (tiled, in device
  order along those mesh axes), each device computes the loss terms of its own rows against the
  global batch, and the terms are `psum`-ed, so every device returns the same *global* loss,
  equal to the unsharded one. The local batch `n` must be the same on every device.

All losses return a float32 scalar and are differentiable wrt the embeddings (and the
temperature). Shapes are checked eagerly with clear errors.
"""
from typing import Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax.models import encoders

AxisName = Optional[Union[str, Sequence[str]]]

# CLIP: temperature initialized to 0.07, logit scale clipped at 100.
INIT_LOGIT_SCALE = float(np.log(1.0 / 0.07))
MAX_LOGIT_SCALE = 100.0


class LogitScale(nn.Module):
  """Learnable CLIP temperature: a scalar `log_scale` param; returns `exp(log_scale)`.

  The returned multiplicative logit scale (1 / temperature) is clipped to `max_scale`, as in
  CLIP, so the loss cannot collapse the temperature.
  """
  init_value: float = INIT_LOGIT_SCALE
  max_scale: float = MAX_LOGIT_SCALE

  @nn.compact
  def __call__(self) -> jax.Array:
    log_scale = self.param("log_scale", nn.initializers.constant(self.init_value), ())
    return jnp.minimum(jnp.exp(log_scale), self.max_scale)


def _check_pair(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
  if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
    raise ValueError(
        f"{name_a} and {name_b} must both be [batch, dim] with equal shapes, got "
        f"{name_a}{tuple(a.shape)} and {name_b}{tuple(b.shape)}")


def _all_gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """[n, ...] local -> [N, ...] global (identity when `axis_name` is None)."""
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def _psum(x: jax.Array, axis_name: AxisName) -> jax.Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _row_offset(local_n: int, axis_name: AxisName) -> jax.Array:
  """Global index of this device's first row (0 when `axis_name` is None)."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return jax.lax.axis_index(axis_name) * local_n


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Normalizes the last axis to unit L2 norm (zero vectors stay zero)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
  """Exact Euclidean norm along `axis` whose gradient is 0 (not NaN) at x = 0."""
  sq = jnp.sum(x * x, axis=axis)
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def clip_loss(emb_a: jax.Array, emb_b: jax.Array, logit_scale: jax.Array, *,
              axis_name: AxisName = None, normalize: bool = True) -> jax.Array:
  """Symmetric InfoNCE (CLIP): mean of the a->b and b->a cross-entropies.

  With unit-normalized `a`, `b` over the global batch of N pairs and s = logit_scale:
  `logits = s * a @ b.T` [N, N], loss = (CE(logits, diag) + CE(logits.T, diag)) / 2,
  each cross-entropy averaged over the N rows.

  Args:
    emb_a: [n, D] embeddings of modality a (local shard if `axis_name` is set).
    emb_b: [n, D] embeddings of modality b; row i is the positive of `emb_a` row i.
    logit_scale: scalar multiplicative scale (1 / temperature), e.g. from `LogitScale`.
    axis_name: mesh axis (or axes) the batch is sharded over inside `shard_map`; None for
      global arrays.
    normalize: L2-normalize the embeddings first (CLIP); False if already normalized.

  Returns:
    Scalar float32 loss (the global-batch loss on every device).
  """
  _check_pair("emb_a", emb_a, "emb_b", emb_b)
  if jnp.ndim(logit_scale) != 0:
    raise ValueError(f"logit_scale must be a scalar, got shape {jnp.shape(logit_scale)}")
  a = emb_a.astype(jnp.float32)
  b = emb_b.astype(jnp.float32)
  if normalize:
    a, b = l2_normalize(a), l2_normalize(b)
  n = a.shape[0]
  all_a, all_b = _all_gather(a, axis_name), _all_gather(b, axis_name)
  labels = _row_offset(n, axis_name) + jnp.arange(n)
  logits_ab = logit_scale * a @ all_b.T  # this device's rows of the global [N, N] matrix
  logits_ba = logit_scale * b @ all_a.T  # this device's rows of its transpose
  rows = jnp.arange(n)

  def ce_sum(logits: jax.Array) -> jax.Array:
    return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - logits[rows, labels])

  total = _psum(ce_sum(logits_ab) + ce_sum(logits_ba), axis_name)
  return total / (2.0 * all_a.shape[0])


def clip_accuracy(emb_a: jax.Array, emb_b: jax.Array) -> jax.Array:
  """Top-1 retrieval accuracy a->b over a global batch: fraction of rows whose argmax is i.

  Args:
    emb_a, emb_b: [N, D] paired embeddings (global arrays).
  Returns:
    Scalar float32 in [0, 1].
  """
  _check_pair("emb_a", emb_a, "emb_b", emb_b)
  sims = l2_normalize(emb_a.astype(jnp.float32)) @ l2_normalize(emb_b.astype(jnp.float32)).T
  return jnp.mean((jnp.argmax(sims, axis=-1) == jnp.arange(sims.shape[0])).astype(jnp.float32))


def _distance(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
  """Distance along the last axis: 'euclidean' (L2) or 'cosine' (1 - cos)."""
  if metric == "euclidean":
    return safe_norm(x - y)
  if metric == "cosine":
    return 1.0 - jnp.sum(l2_normalize(x) * l2_normalize(y), axis=-1)
  raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")


def triplet_loss(anchor: jax.Array, positive: jax.Array, negative: Optional[jax.Array] = None,
                 *, margin: float = 0.2, metric: str = "euclidean",
                 axis_name: AxisName = None) -> jax.Array:
  """Triplet loss with margin: mean over the global batch of max(d(a,p) - d(a,n) + margin, 0).

  Args:
    anchor: [n, D] anchor embeddings.
    positive: [n, D] positives (row i matches anchor i).
    negative: [n, D] explicit negatives, or None for batch-hard mining: the negative of anchor
      i is the closest *other* positive in the global batch (all-gathered over `axis_name`).
      Batch-hard needs a global batch of at least 2.
    margin: hinge margin.
    metric: 'euclidean' or 'cosine' (1 - cosine similarity).
    axis_name: mesh axis (or axes) inside `shard_map`; None for global arrays.

  Returns:
    Scalar float32 loss.
  """
  _check_pair("anchor", anchor, "positive", positive)
  anchor, positive = anchor.astype(jnp.float32), positive.astype(jnp.float32)
  n = anchor.shape[0]
  d_pos = _distance(anchor, positive, metric)
  if negative is not None:
    _check_pair("anchor", anchor, "negative", negative)
    d_neg = _distance(anchor, negative.astype(jnp.float32), metric)
  else:
    all_pos = _all_gather(positive, axis_name)
    if all_pos.shape[0] < 2:
      raise ValueError("batch-hard triplet mining needs a global batch of at least 2")
    d_all = _distance(anchor[:, None, :], all_pos[None, :, :], metric)  # [n, N]
    own = (_row_offset(n, axis_name) + jnp.arange(n))[:, None] == jnp.arange(all_pos.shape[0])
    d_neg = jnp.min(jnp.where(own, jnp.inf, d_all), axis=-1)
  hinge = jnp.maximum(d_pos - d_neg + margin, 0.0)
  return _psum(jnp.sum(hinge), axis_name) / _psum(jnp.float32(n), axis_name)


def siamese_loss(emb_1: jax.Array, emb_2: jax.Array, same: jax.Array, *, margin: float = 1.0,
                 axis_name: AxisName = None) -> jax.Array:
  """Siamese (Hadsell et al. 2006) distance loss, as used to train the original SyncNet.

  With d = ||x1 - x2||_2 and y = 1 for matching (in-sync) pairs, 0 otherwise:
  `L = 1/(2N) * sum(y d^2 + (1 - y) max(margin - d, 0)^2)` over the global batch of N pairs.

  Args:
    emb_1, emb_2: [n, D] paired embeddings.
    same: [n] bool or {0,1} float labels.
    margin: distance beyond which negatives no longer contribute.
    axis_name: mesh axis (or axes) inside `shard_map`; None for global arrays.

  Returns:
    Scalar float32 loss.
  """
  _check_pair("emb_1", emb_1, "emb_2", emb_2)
  if same.shape != emb_1.shape[:1]:
    raise ValueError(f"same must be [batch]={emb_1.shape[:1]}, got {tuple(same.shape)}")
  diff = emb_1.astype(jnp.float32) - emb_2.astype(jnp.float32)
  d = safe_norm(diff)
  y = same.astype(jnp.float32)
  terms = y * jnp.sum(diff * diff, axis=-1) + (1.0 - y) * jnp.maximum(margin - d, 0.0) ** 2
  return _psum(jnp.sum(terms), axis_name) / (2.0 * _psum(jnp.float32(emb_1.shape[0]), axis_name))


class TextVideoCLIP(nn.Module):
  """Contrastive text-video model behind the text-video alignment score.

  Text tower: the repo's byte-token `TextEncoder` (gcm_jax/models/encoders.py), masked mean
  pooling, Dense. Video tower: a conv net on the clip's mean frame (appearance: colors) stacked
  with last-minus-first frame (head motion), global pooling, Dense. Both outputs are
  L2-normalized; trained with `clip_loss` and the learnable `LogitScale`.
  """
  embed_dim: int = 64
  text_width: int = 64
  text_layers: int = 1
  text_heads: int = 4
  text_max_len: int = 160
  video_widths: Sequence[int] = (32, 64)

  def setup(self):
    self.text_encoder = encoders.TextEncoder(self.text_width, self.text_layers, self.text_heads,
                                             self.text_max_len)
    self.text_proj = nn.Dense(self.embed_dim)
    self.video_convs = [nn.Conv(w, (3, 3), strides=(2, 2)) for w in self.video_widths]
    self.video_proj = nn.Dense(self.embed_dim)
    self.logit_scale = LogitScale()

  def embed_text(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """tokens int [B, L], mask bool [B, L] -> [B, D] unit embeddings."""
    h = self.text_encoder(tokens, mask)
    m = mask[..., None].astype(h.dtype)
    pooled = jnp.sum(h * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    return l2_normalize(self.text_proj(pooled))

  def embed_video(self, video: jax.Array) -> jax.Array:
    """video [B, T, H, W, 3] in [-1, 1] -> [B, D] unit embeddings."""
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f"video must be [B, T, H, W, 3], got {tuple(video.shape)}")
    x = jnp.concatenate([jnp.mean(video, axis=1), video[:, -1] - video[:, 0]], axis=-1)
    for conv in self.video_convs:
      x = nn.gelu(conv(x))
    return l2_normalize(self.video_proj(jnp.mean(x, axis=(1, 2))))

  def __call__(self, tokens: jax.Array, mask: jax.Array,
               video: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (text_emb [B, D], video_emb [B, D], logit_scale scalar)."""
    return self.embed_text(tokens, mask), self.embed_video(video), self.logit_scale()
