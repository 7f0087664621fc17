"""Small building blocks shared by the DiT and the encoders.

Every parameter carries logical axis names (`nn.with_logical_partitioning`); the
config's `logical_axis_rules` map them to mesh axes (see gcm_jax/parallel).
Parameter axes: 'embed' (model width), 'mlp' (hidden width), 'heads', 'kv' (head dim),
'vocab', 'patch' (flattened patch pixels), 'cond' (conditioning width), 'modulation'.
Activation axes are prefixed 'act_'.
"""
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def partitioned(init, axes: Sequence[str]):
  """Wraps an initializer so the parameter is annotated with logical axis names."""
  return nn.with_logical_partitioning(init, tuple(axes))


class HeadProjection(nn.Module):
  """Linear map to or from attention heads, with logically named parameters.

  `to_heads=True`: `[..., D]` -> `[..., H, K]` (kernel `[D, H, K]`: 'embed', 'heads', 'kv').
  `to_heads=False`: `[..., H, K]` -> `[..., D]` (kernel `[H, K, D]`: 'heads', 'kv', 'embed').
  (Written out instead of `nn.DenseGeneral`, whose flat-then-reshape init breaks
  logical sharding constraints of rank-3 kernels.)
  """
  shape: tuple[int, ...]
  to_heads: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.to_heads:
      kernel_shape, axes, eq = (x.shape[-1],) + self.shape, ("embed", "heads", "kv"), "...d,dhk->...hk"
      init = nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
    else:
      kernel_shape, axes, eq = x.shape[-2:] + self.shape, ("heads", "kv", "embed"), "...hk,hkd->...d"
      init = nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)
    kernel = self.param("kernel", partitioned(init, axes), kernel_shape, self.param_dtype)
    bias = self.param("bias", partitioned(nn.initializers.zeros, axes[-len(self.shape):]),
                      self.shape, self.param_dtype)
    return jnp.einsum(eq, x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


def dense(features: int, axes: Sequence[str], name: str, dtype=jnp.float32,
          zero_init: bool = False) -> nn.Dense:
  """`nn.Dense` with logically named kernel `[in, out]` and bias `[out]`.

  `zero_init=True` gives the zero-initialized projections used by AdaLN-zero,
  the final layer and ControlNet branches.
  """
  kernel_init = nn.initializers.zeros if zero_init else nn.initializers.xavier_uniform()
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=partitioned(kernel_init, axes),
                  bias_init=partitioned(nn.initializers.zeros, axes[-1:]))


def layer_norm(name: str, use_scale_bias: bool = True, dtype=jnp.float32) -> nn.LayerNorm:
  """LayerNorm over the last axis; without scale/bias for AdaLN-modulated norms."""
  return nn.LayerNorm(epsilon=1e-6, use_scale=use_scale_bias, use_bias=use_scale_bias,
                      dtype=dtype, name=name,
                      scale_init=partitioned(nn.initializers.ones, ("embed",)),
                      bias_init=partitioned(nn.initializers.zeros, ("embed",)))


class Mlp(nn.Module):
  """Two-layer GELU MLP `[..., D]` -> `[..., D]` with hidden width `ratio * D`."""
  ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    h = dense(int(width * self.ratio), ("embed", "mlp"), "fc1", self.dtype)(x)
    h = nn.gelu(h, approximate=True)
    return dense(width, ("mlp", "embed"), "fc2", self.dtype)(h)


def sinusoidal_embedding(values: Array, dim: int, max_period: float = 10_000.0) -> Array:
  """Sinusoidal features of float `values` `[B]` -> `[B, dim]` (cos half, sin half)."""
  if dim % 2:
    raise ValueError(f"embedding dim must be even, got {dim}")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = values.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def sincos_2d_positions(grid_h: int, grid_w: int, dim: int) -> Array:
  """Fixed 2-D sin-cos position embedding `[grid_h * grid_w, dim]` (MAE / DiT)."""
  if dim % 4:
    raise ValueError(f"2-D sincos embedding needs dim divisible by 4, got {dim}")
  ys, xs = jnp.meshgrid(jnp.arange(grid_h), jnp.arange(grid_w), indexing="ij")
  emb_y = sinusoidal_embedding(ys.reshape(-1), dim // 2)
  emb_x = sinusoidal_embedding(xs.reshape(-1), dim // 2)
  return jnp.concatenate([emb_y, emb_x], axis=-1)

