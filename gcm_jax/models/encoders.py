"""Condition encoders: text (byte tokens or frozen pretrained embeddings) and audio (per-frame
windows of log-mel frames or of frozen Whisper features).

All are small pre-LN transformers trained jointly with the DiT; pretrained encoders (MiniLM,
T5, CLIP, Whisper: `gcm_jax.models.pretrained`) run once, outside the model, and their
outputs enter through `EmbeddingTextEncoder` / `AudioEncoder`'s input projection.
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


class EmbeddingTextEncoder(nn.Module):
  """Frozen pretrained text embeddings `[B, L, E]` + mask `[B, L]` -> tokens `[B, L, D]`.

  A projection to the model width and `num_layers` trainable transformer layers (the
  embeddings already carry positions). Padded positions are never attended to.
  """
  width: int
  num_layers: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, embeddings: Array, mask: Array) -> Array:
    if embeddings.ndim != 3 or not jnp.issubdtype(embeddings.dtype, jnp.floating):
      raise ValueError(f"text embeddings must be float [B, L, E], got {embeddings.dtype} "
                       f"{embeddings.shape}")
    if mask.shape != embeddings.shape[:2]:
      raise ValueError(f"text mask {mask.shape} must match embeddings {embeddings.shape[:2]}")
    x = layers.dense(self.width, ("text_embed", "embed"), "input_proj", self.dtype)(
        embeddings.astype(self.dtype))
    for i in range(self.num_layers):
      x = TransformerLayer(self.num_heads, dtype=self.dtype, name=f"layer_{i}")(x, mask)
    return layers.layer_norm("final_norm", dtype=self.dtype)(x)


class AudioEncoder(nn.Module):
  """Per-frame audio encoder: windows `[B, T, W, M]` -> audio tokens `[B, T, W, D]`.

  The windows hold W log-mel frames of M bins, or W frozen Whisper feature frames of M
  dims. Each video frame's window is encoded independently, so frame t's tokens carry only
  the sound around frame t.
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
          f"audio windows must be [B, T, W={self.window}, M={self.num_mels}], got {mel.shape}")
    b, t, w, m = mel.shape
    x = layers.dense(self.width, ("mel", "embed"), "input_proj", self.dtype)(
        mel.reshape(b * t, w, m))
    x = x + _learned_positions(self, w, self.width)[None]
    every = jnp.ones((b * t, w), bool)
    for i in range(self.num_layers):
      x = TransformerLayer(self.num_heads, dtype=self.dtype, name=f"layer_{i}")(x, every)
    x = layers.layer_norm("final_norm", dtype=self.dtype)(x)
    return x.reshape(b, t, w, self.width)
