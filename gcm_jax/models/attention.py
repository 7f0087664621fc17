"""Attention primitives for the space-time DiT.

All attention goes through one kernel entry point, `attend`, whose `implementation`
(`config.model.attention_impl`) picks the kernel:
  None          `jax.nn.dot_product_attention`, JAX chooses (XLA on CPU / TPU);
  'xla'         `jax.nn.dot_product_attention` XLA reference;
  'cudnn'       `jax.nn.dot_product_attention` cuDNN flash attention (GPU only);
  'pallas_tpu'  the Pallas splash (flash) attention kernel (TPU only), `splash_attention`.
The modules only differ in how they fold the video token grid `[B, T, N, D]` into
attention sequences:

* `SpatialSelfAttention`: each frame attends within itself (sequences of N).
* `TemporalSelfAttention`: each spatial patch attends across frames (sequences of T),
  with rotary position encoding of the frame index.
* `FullSelfAttention`: all T*N tokens attend to each other (the unfactorized baseline).
* `CrossAttention`: queries attend to a context (text tokens, or a frame's audio window).

Notation: B batch, T frames, N patches per frame, D model width, H heads, K head dim.
"""
import math
from typing import Optional

import flax.linen as nn
import jax
from jax.experimental.pallas.ops.tpu import splash_attention as splash
import jax.numpy as jnp

from gcm_jax.models import layers

Array = jax.Array

IMPLEMENTATIONS = (None, "xla", "cudnn", "pallas_tpu")
# Splash attention tiles sequences in blocks of (a multiple of) 128 tokens; sequences
# shorter than one block (temporal attention over T frames, a frame's audio window)
# gain nothing from tiling and use the XLA kernel instead.
SPLASH_BLOCK = 128
# Logical axes of q / k / v `[B, L, H, K]` (docs/models.md); they give the shard_map
# specs of the splash kernel under a mesh.
QKV_AXES = ("act_batch", None, "act_heads", None)


def attend(q: Array, k: Array, v: Array, mask: Optional[Array] = None,
           implementation: Optional[str] = None) -> Array:
  """Scaled dot-product attention.

  Args:
    q: queries `[B, Lq, H, K]`.
    k: keys `[B, Lk, H, K]`.
    v: values `[B, Lk, H, K]`.
    mask: optional boolean mask broadcastable to `[B, H, Lq, Lk]`; True = attend.
      'pallas_tpu' supports key padding masks (broadcastable to `[B, 1, 1, Lk]`) only.
    implementation: None (let JAX choose), 'xla', 'cudnn' (GPU) or 'pallas_tpu' (TPU).

  Returns:
    `[B, Lq, H, K]`.

  Raises:
    ValueError: unknown implementation, or 'pallas_tpu' on a backend other than TPU.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"expected one of {IMPLEMENTATIONS}")
  if implementation == "pallas_tpu":
    backend = jax.default_backend()
    if backend != "tpu":
      raise ValueError(f"attention_impl='pallas_tpu' (Pallas splash attention) runs only on "
                       f"TPU, but the JAX backend is {backend!r}; use None, 'xla' or "
                       f"'cudnn' (GPU)")
    return splash_attention(q, k, v, mask)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


def _key_padding(mask: Optional[Array], batch: int, kv_len: int) -> Optional[Array]:
  """A key padding mask bool `[B, Lk]` from `mask` broadcastable to `[B, 1, 1, Lk]` (or None)."""
  if mask is None:
    return None
  if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
    raise ValueError(f"attention_impl='pallas_tpu' supports key padding masks "
                     f"[B, 1, 1, Lk] only, got mask shape {mask.shape}")
  return jnp.broadcast_to(mask[:, 0, 0, :], (batch, kv_len))


def _padded_length(length: int) -> tuple[int, int]:
  """(length rounded up to a multiple of SPLASH_BLOCK, the block size used for it)."""
  padded = -(-length // SPLASH_BLOCK) * SPLASH_BLOCK
  block = next(b for b in (512, 256, SPLASH_BLOCK) if padded % b == 0)
  return padded, block


def _splash_local(q: Array, k: Array, v: Array, keep: Array, interpret: bool) -> Array:
  """Splash attention on one device's shard: q `[B, Lq, H, K]`, keep bool `[B, Lk]`."""
  b, lq, h, head_dim = q.shape
  lk = k.shape[1]
  lq_pad, block_q = _padded_length(lq)
  lk_pad, block_kv = _padded_length(lk)
  # Padded keys get segment id 1 (never attended by the queries' id 0); padded query
  # rows are computed against the real keys and dropped.
  kv_ids = jnp.pad(jnp.where(keep, 0, 1).astype(jnp.int32), ((0, 0), (0, lk_pad - lk)),
                   constant_values=1)
  q_ids = jnp.zeros((b, lq_pad), jnp.int32)

  def to_heads_major(x, length):  # [B, L, H, K] -> [B, H, L_pad, K]
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  scale = 1.0 / math.sqrt(head_dim)  # splash takes pre-scaled queries
  kernel = splash.make_splash_mha_single_device(
      splash.MultiHeadMask([splash.FullMask((lq_pad, lk_pad))] * h),
      block_sizes=splash.BlockSizes(
          block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv,
          block_q_dkv=block_q, block_kv_dkv=block_kv, block_kv_dkv_compute=block_kv,
          block_q_dq=block_q, block_kv_dq=block_kv),
      interpret=interpret)
  out = jax.vmap(kernel)(to_heads_major(q * jnp.asarray(scale, q.dtype), lq_pad),
                         to_heads_major(k, lk_pad), to_heads_major(v, lk_pad),
                         segment_ids=splash.SegmentIds(q=q_ids, kv=kv_ids))
  return out.transpose(0, 2, 1, 3)[:, :lq].astype(q.dtype)


def splash_attention(q: Array, k: Array, v: Array, mask: Optional[Array] = None,
                     interpret: bool = False) -> Array:
  """Pallas TPU splash (flash) attention with the `attend` interface.

  q `[B, Lq, H, K]`, k / v `[B, Lk, H, K]`, mask None or a key padding mask
  broadcastable to `[B, 1, 1, Lk]` -> `[B, Lq, H, K]`. Sequences are padded to
  multiples of `SPLASH_BLOCK`; padding keys and masked keys are excluded through
  splash segment ids. If Lq or Lk is shorter than one block, the XLA kernel is used
  (nothing to tile). Under a mesh (`jax.set_mesh`) the kernel runs per shard in a
  `jax.shard_map` whose specs come from the logical axis rules (`QKV_AXES`).
  `interpret=True` runs the kernel in the Pallas interpreter (any backend; tests).

  Raises:
    ValueError: a mask other than a key padding mask.
  """
  keep = _key_padding(mask, q.shape[0], k.shape[1])
  if min(q.shape[1], k.shape[1]) < SPLASH_BLOCK:
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
  if keep is None:
    keep = jnp.ones((q.shape[0], k.shape[1]), bool)
  local = lambda q_, k_, v_, keep_: _splash_local(q_, k_, v_, keep_, interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return local(q, k, v, keep)
  spec = nn.logical_to_mesh_axes(QKV_AXES) or jax.sharding.PartitionSpec()
  keep_spec = jax.sharding.PartitionSpec(spec[0] if len(spec) else None, None)
  # check_vma=False: the Pallas kernel's outputs carry no varying-manual-axes types.
  return jax.shard_map(local, in_specs=(spec,) * 3 + (keep_spec,), out_specs=spec,
                       check_vma=False)(q, k, v, keep)


def rotary_embedding(x: Array, positions: Array, max_wavelength: float = 10_000.0) -> Array:
  """Rotary position embedding (RoFormer) applied to `x` `[B, L, H, K]` at `positions` `[L]`.

  The first and second halves of the head dimension are rotated as (real, imaginary)
  pairs, so attention scores depend only on position differences.
  """
  head_dim = x.shape[-1]
  if head_dim % 2:
    raise ValueError(f"rotary embedding needs an even head dim, got {head_dim}")
  half = head_dim // 2
  freqs = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, None] * freqs[None, :]  # [L, K/2]
  sin = jnp.sin(angles)[None, :, None, :]
  cos = jnp.cos(angles)[None, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head attention on flat sequences `[B, Lq, D]` x `[B, Lk, Dc]` -> `[B, Lq, D]`.

  Attributes:
    num_heads: number of heads H; the head dim is D // H.
    rotary: apply rotary position encoding to q and k (self-attention only).
    implementation: kernel choice passed to `attend`.
  """
  num_heads: int
  rotary: bool = False
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Optional[Array] = None,
               mask: Optional[Array] = None, positions: Optional[Array] = None) -> Array:
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
    head_dim = width // self.num_heads
    context = x if context is None else context

    def project(name, inputs):
      return layers.HeadProjection((self.num_heads, head_dim), True, self.dtype,
                                   self.param_dtype, name=name)(inputs)

    q, k, v = project("query", x), project("key", context), project("value", context)
    if self.rotary:
      if positions is None:
        positions = jnp.arange(x.shape[1])
      q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
    q = nn.with_logical_constraint(q, ("act_batch", "act_length", "act_heads", "act_kv"))
    out = attend(q, k, v, mask=mask, implementation=self.implementation)
    return layers.HeadProjection((width,), False, self.dtype, self.param_dtype,
                                 name="out")(out)


class SpatialSelfAttention(nn.Module):
  """Self-attention within each frame: `[B, T, N, D]` -> `[B, T, N, D]`."""
  num_heads: int
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, t, n, d = x.shape
    out = MultiHeadAttention(self.num_heads, implementation=self.implementation,
                             dtype=self.dtype, name="attn")(x.reshape(b * t, n, d))
    return out.reshape(b, t, n, d)


class TemporalSelfAttention(nn.Module):
  """Self-attention across frames for each patch: `[B, T, N, D]` -> `[B, T, N, D]`.

  Frame order enters only through rotary encoding of the frame index (`rotary=True`);
  without it the layer is permutation-equivariant over frames.
  """
  num_heads: int
  rotary: bool = True
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, t, n, d = x.shape
    seqs = x.transpose(0, 2, 1, 3).reshape(b * n, t, d)
    out = MultiHeadAttention(self.num_heads, rotary=self.rotary,
                             implementation=self.implementation, dtype=self.dtype,
                             name="attn")(seqs, positions=jnp.arange(t))
    return out.reshape(b, n, t, d).transpose(0, 2, 1, 3)


class FullSelfAttention(nn.Module):
  """Joint space-time self-attention over all T*N tokens: `[B, T, N, D]` -> same.

  Tokens carry rotary encoding of their frame index, as in the temporal layer.
  """
  num_heads: int
  rotary: bool = True
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, t, n, d = x.shape
    frame_index = jnp.repeat(jnp.arange(t), n)
    out = MultiHeadAttention(self.num_heads, rotary=self.rotary,
                             implementation=self.implementation, dtype=self.dtype,
                             name="attn")(x.reshape(b, t * n, d), positions=frame_index)
    return out.reshape(b, t, n, d)


class TextCrossAttention(nn.Module):
  """Every video token attends to the text: x `[B, T, N, D]`, text `[B, L, D]`, mask `[B, L]`."""
  num_heads: int
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, text: Array, text_mask: Array) -> Array:
    b, t, n, d = x.shape
    mask = text_mask[:, None, None, :]  # [B, 1, 1, L]
    out = MultiHeadAttention(self.num_heads, implementation=self.implementation,
                             dtype=self.dtype, name="attn")(
                                 x.reshape(b, t * n, d), context=text, mask=mask)
    return out.reshape(b, t, n, d)


class AudioCrossAttention(nn.Module):
  """Frame t attends only to its own audio window.

  x `[B, T, N, D]`, audio `[B, T, W, D]` (W audio tokens per frame) -> `[B, T, N, D]`.
  """
  num_heads: int
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, audio: Array) -> Array:
    b, t, n, d = x.shape
    if audio.shape[:2] != (b, t):
      raise ValueError(f"audio tokens {audio.shape} must be [B={b}, T={t}, W, D]")
    w = audio.shape[2]
    out = MultiHeadAttention(self.num_heads, implementation=self.implementation,
                             dtype=self.dtype, name="attn")(
                                 x.reshape(b * t, n, d),
                                 context=audio.reshape(b * t, w, audio.shape[-1]))
    return out.reshape(b, t, n, d)
