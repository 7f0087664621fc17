"""Attention primitives for the space-time DiT.

All attention goes through one kernel entry point, `attend`, which calls
`jax.nn.dot_product_attention` (cuDNN flash attention on GPU when
`implementation='cudnn'`, XLA elsewhere). The modules only differ in how they fold
the video token grid `[B, T, N, D]` into attention sequences:

* `SpatialSelfAttention`: each frame attends within itself (sequences of N).
* `TemporalSelfAttention`: each spatial patch attends across frames (sequences of T),
  with rotary position encoding of the frame index.
* `FullSelfAttention`: all T*N tokens attend to each other (the unfactorized baseline).
* `CrossAttention`: queries attend to a context (text tokens, or a frame's audio window).

Notation: B batch, T frames, N patches per frame, D model width, H heads, K head dim.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax.models import layers

Array = jax.Array


def attend(q: Array, k: Array, v: Array, mask: Optional[Array] = None,
           implementation: Optional[str] = None) -> Array:
  """Scaled dot-product attention.

  Args:
    q: queries `[B, Lq, H, K]`.
    k: keys `[B, Lk, H, K]`.
    v: values `[B, Lk, H, K]`.
    mask: optional boolean mask broadcastable to `[B, H, Lq, Lk]`; True = attend.
    implementation: None (let JAX choose), 'xla' or 'cudnn'.

  Returns:
    `[B, Lq, H, K]`.
  """
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


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
