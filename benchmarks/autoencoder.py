"""Autoencoder benchmark: encode / decode throughput of the KL autoencoder, per config and size.

For each row `config:resolution` (configs from `gcm_jax.models.autoencoder.CONFIGS`, random
weights), times the jitted `encode` (video `[1, F, R, R, 3]` -> posterior mean and log-variance)
and `decode` (latents `[1, F, R/8, R/8, 4]` -> video) of F frames, interleaved with the same-run
matmul ceiling (medians). Reports frames per second, cost-analysis FLOPs per frame, achieved
FLOP/s and the ratio to the ceiling.

  python -m benchmarks.autoencoder \
      [--rows tiny:64,tiny:128,sd-vae:64] [--frames 8] [--repeats 5] [--dtype float32]
"""
import argparse
from typing import Optional

import jax
import jax.numpy as jnp

from benchmarks import common
from gcm_jax.models import autoencoder

OPS = ("encode", "decode")
DEFAULT_ROWS = "tiny:64,tiny:128,sd-vae:64"


def compile_op(config: autoencoder.AutoencoderConfig, op: str, resolution: int, frames: int,
               dtype: str = "float32", compiler_options: common.CompilerOptions = None):
  """Compiles `op` ("encode" or "decode") of `AutoencoderKL(config)` on random inputs.

  Returns (compiled, params, x): `compiled(params, x)` runs it on `frames` frames of
  `resolution` x `resolution` pixels (decode: the matching latents).
  """
  if op not in OPS:
    raise ValueError(f"op must be one of {OPS}, got {op!r}")
  model = autoencoder.AutoencoderKL(config, jnp.dtype(dtype))
  device = jax.devices()[0]
  video_shape = (1, frames, resolution, resolution, config.in_channels)
  video = jax.random.uniform(jax.random.key(0), video_shape, jnp.float32, -1.0, 1.0)
  params = jax.jit(model.init)(jax.random.key(1), video)["params"]
  x = video if op == "encode" else jax.random.normal(jax.random.key(2),
                                                     model.latent_shape(video_shape))
  x, params = jax.device_put((x, params), device)
  fn = jax.jit(lambda p, inputs: model.apply({"params": p}, inputs, method=op))
  return fn.lower(params, x).compile(compiler_options), params, x


def measure(config: autoencoder.AutoencoderConfig, op: str, resolution: int, frames: int,
            repeats: int, dtype: str = "float32", ceiling: Optional[common.Ceiling] = None,
            compiler_options: common.CompilerOptions = None) -> dict[str, float]:
  """Times one row; returns `measure_against_ceiling` fields + frames_per_s."""
  compiled, params, x = compile_op(config, op, resolution, frames, dtype, compiler_options)
  result = common.measure_against_ceiling(lambda: compiled(params, x),
                                          common.cost_flops(compiled), repeats, ceiling)
  result["frames_per_s"] = frames / result["seconds"]
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default=DEFAULT_ROWS,
                      help="comma-separated config:resolution pairs")
  parser.add_argument("--frames", type=int, default=8, help="frames per call")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()
  ceiling = common.matmul_ceiling_fn()
  rows = []
  for row in args.rows.split(","):
    name, resolution = row.split(":")
    config = autoencoder.CONFIGS[name]
    params = sum(x.size for x in jax.tree.leaves(autoencoder.expected_params(config)))
    for op in OPS:
      r = measure(config, op, int(resolution), args.frames, args.repeats, args.dtype, ceiling)
      rows.append([name, f"{params / 1e6:.2f}M", f"{resolution}x{resolution}", op,
                   f"{r['frames_per_s']:.1f}", f"{r['seconds'] * 1e3:.1f}",
                   common.gflops(r["flops"] / args.frames), common.gflops(r["flop_per_s"]),
                   common.gflops(r["ceiling_flop_per_s"]), f"{100 * r['ratio']:.1f}%"])
  print(f"autoencoder encode / decode, {args.frames} frames per call, {args.dtype}, median of "
        f"{args.repeats} ({common.environment_line()})")
  print(common.format_table(
      ["config", "params", "pixels", "op", "frames/s", "ms/call", "GFLOP/frame",
       "achieved GFLOP/s", "matmul ceiling GFLOP/s", "ratio"], rows))


if __name__ == "__main__":
  main()
