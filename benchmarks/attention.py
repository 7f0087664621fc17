"""Attention benchmark: factorized (spatial + temporal) vs full 3-D self-attention.

For T in {4, 8, 16, 32} frames of N patches (base config: D = 384, 6 heads, N = 64),
times forward + backward (gradients w.r.t. parameters and input) of the self-attention
sublayers of one block on `[1, T, N, D]` tokens: factorized = SpatialSelfAttention then
TemporalSelfAttention (sequences of N and of T); full3d = FullSelfAttention over all
T*N tokens. Reports median time (interleaved with the same-run float32 matmul ceiling),
cost-analysis FLOPs, achieved FLOP/s, the ratio to the ceiling, and the compiled
temp / peak bytes (memory analysis).

  python -m benchmarks.attention \
      [--frames 4,8,16,32] [--repeats 5] [--dtype float32] [--impl xla]
"""
import argparse
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import common
from gcm_jax.models import attention

KINDS = ("factorized", "full3d")


class SelfAttentionStack(nn.Module):
  """The self-attention sublayers of one DiT block (residual), `[B, T, N, D]` -> same."""
  kind: str
  num_heads: int
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(num_heads=self.num_heads, implementation=self.implementation, dtype=self.dtype)
    if self.kind == "factorized":
      x = x + attention.SpatialSelfAttention(**kw, name="spatial")(x)
      return x + attention.TemporalSelfAttention(**kw, name="temporal")(x)
    if self.kind == "full3d":
      return x + attention.FullSelfAttention(**kw, name="full")(x)
    raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


def compile_fwd_bwd(kind: str, frames: int, patches: int, width: int, num_heads: int,
                    dtype: str = "float32", implementation: Optional[str] = None,
                    batch: int = 1, compiler_options: common.CompilerOptions = None):
  """Compiles forward + backward of `SelfAttentionStack` on random `[batch, T, N, D]` tokens.

  Returns (compiled, params, x): `compiled(params, x)` gives the gradients w.r.t. both.
  """
  module = SelfAttentionStack(kind, num_heads, implementation, jnp.dtype(dtype))
  x = jax.random.normal(jax.random.key(0), (batch, frames, patches, width), jnp.float32)
  x = jax.device_put(x, jax.devices()[0])
  params = nn.meta.unbox(jax.jit(module.init)(jax.random.key(1), x))

  def loss(p, inputs):
    return jnp.sum(module.apply(p, inputs).astype(jnp.float32) ** 2)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile(
      compiler_options)
  return compiled, params, x


def measure(kind: str, frames: int, patches: int, width: int, num_heads: int, repeats: int,
            dtype: str = "float32", implementation: Optional[str] = None,
            ceiling: Optional[common.Ceiling] = None,
            compiler_options: common.CompilerOptions = None) -> dict[str, float]:
  """Times one configuration; returns `measure_against_ceiling` fields + memory bytes."""
  compiled, params, x = compile_fwd_bwd(kind, frames, patches, width, num_heads, dtype,
                                        implementation, compiler_options=compiler_options)
  result = common.measure_against_ceiling(lambda: compiled(params, x),
                                          common.cost_flops(compiled), repeats, ceiling)
  memory = common.memory_bytes(compiled)
  result["temp_bytes"], result["peak_bytes"] = memory["temp"], memory["peak"]
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--frames", default="4,8,16,32")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--impl", default=None, help="attention_impl (None = JAX default)")
  args = parser.parse_args()
  base = common.benchmark_config("base")
  m = base.model
  patches = (base.data.resolution // m.patch_size) ** 2
  ceiling = common.matmul_ceiling_fn()
  rows = []
  for frames in (int(f) for f in args.frames.split(",")):
    results = {kind: measure(kind, frames, patches, m.width, m.num_heads, args.repeats,
                             args.dtype, args.impl, ceiling) for kind in KINDS}
    for kind, r in results.items():
      rows.append([frames, kind, frames * patches, f"{r['seconds'] * 1e3:.2f}",
                   common.gflops(r["flops"]), common.gflops(r["flop_per_s"]),
                   common.gflops(r["ceiling_flop_per_s"]), f"{100 * r['ratio']:.1f}%",
                   f"{common.mib(r['temp_bytes']):.1f}", f"{common.mib(r['peak_bytes']):.1f}",
                   f"{r['seconds'] / results['factorized']['seconds']:.2f}x"])
  print(f"self-attention fwd+bwd, [1, T, N={patches}, D={m.width}], {m.num_heads} heads, "
        f"{args.dtype}, impl={args.impl}, median of {args.repeats} "
        f"({common.environment_line()})")
  print(common.format_table(
      ["T", "attention", "tokens", "ms", "GFLOP", "achieved GFLOP/s",
       "matmul ceiling GFLOP/s", "ratio", "temp MiB", "peak MiB", "time vs factorized"],
      rows))


if __name__ == "__main__":
  main()
