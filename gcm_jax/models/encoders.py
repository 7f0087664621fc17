"""Condition encoders: text (byte tokens) and audio (per-frame log-mel windows).

Both are small pre-LN transformers trained jointly with the DiT.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax.models import layers
from gcm_jax.models import tokenizer
from gcm_jax.models.attention import MultiHeadAttention

Array = jax.Array


class TransformerLayer(nn.Module):
  """Pre-LN transformer layer on `[B, L, D]` with key padding mask `[B, L]` (True = real)."""
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    h = layers.layer_norm("norm1", dtype=self.dtype)(x)
    x = x + MultiHeadAttention(self.num_heads, dtype=self.dtype, name="attn")(
        h, mask=mask[:, None, None, :])
    h = layers.layer_norm("norm2", dtype=self.dtype)(x)
    return x + layers.Mlp(self.mlp_ratio, self.dtype, name="mlp")(h)


def _learned_positions(module: nn.Module, length: int, width: int) -> Array:
  return module.param("pos_embedding",
                      layers.partitioned(nn.initializers.normal(0.02), ("length", "embed")),
                      (length, width))


class TextEncoder(nn.Module):
  """Byte-token text encoder: tokens `[B, L]` int, mask `[B, L]` bool -> `[B, L, D]`.

  Padded positions are excluded as keys everywhere, so real-token outputs do not
  depend on what (or how much) padding follows them.
  """
  width: int
  num_layers: int
  num_heads: int
  max_len: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array) -> Array:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"text tokens must be int [B, L], got {tokens.dtype} {tokens.shape}")
    if mask.shape != tokens.shape:
      raise ValueError(f"text mask {mask.shape} must match tokens {tokens.shape}")
    if tokens.shape[1] > self.max_len:
      raise ValueError(f"text length {tokens.shape[1]} exceeds text_max_len {self.max_len}")
    x = nn.Embed(tokenizer.VOCAB_SIZE, self.width, dtype=self.dtype, name="embed",
                 embedding_init=layers.partitioned(nn.initializers.normal(0.02),
                                                   ("vocab", "embed")))(tokens)
    x = x + _learned_positions(self, self.max_len, self.width)[None, :tokens.shape[1]]
    for i in range(self.num_layers):
      x = TransformerLayer(self.num_heads, dtype=self.dtype, name=f"layer_{i}")(x, mask)
    return layers.layer_norm("final_norm", dtype=self.dtype)(x)


class AudioEncoder(nn.Module):
  """Per-frame audio encoder: log-mel windows `[B, T, W, M]` -> audio tokens `[B, T, W, D]`.

  Each video frame's window of W mel frames is encoded independently, so frame t's
  tokens carry only the sound around frame t.
  """
  width: int
  num_layers: int
  num_heads: int
  num_mels: int
  window: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, mel: Array) -> Array:
    if mel.ndim != 4 or mel.shape[2:] != (self.window, self.num_mels):
      raise ValueError(
          f"mel windows must be [B, T, W={self.window}, M={self.num_mels}], got {mel.shape}")
    b, t, w, m = mel.shape
    x = layers.dense(self.width, ("mel", "embed"), "input_proj", self.dtype)(
        mel.reshape(b * t, w, m))
    x = x + _learned_positions(self, w, self.width)[None]
    every = jnp.ones((b * t, w), bool)
    for i in range(self.num_layers):
      x = TransformerLayer(self.num_heads, dtype=self.dtype, name=f"layer_{i}")(x, every)
    x = layers.layer_norm("final_norm", dtype=self.dtype)(x)
    return x.reshape(b, t, w, self.width)
